"""Chapter 05 sweep: prompt tuning vs P-Tuning v2 vs LoRA vs full fine-tuning on VADER.

Run:  OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m pedagogy_lib.book.ch05.experiment
Writes chapters/results/ch05_prompt.json (about 25 CPU-minutes at one thread).

Protocol (chapter 03's, through ``runner.protocol``): the book's training loop (torch_ref.train) on a class-balanced
subsample of N_TRAIN training words, EPOCHS epochs, batch 32, head learning rate HEAD_LR.
Each method's learning rate is chosen from its grid by validation accuracy at seed 0;
seeds 1 and 2 (new subsample, init, head and order) then train at that rate.  Every run
is scored on the whole validation and test splits.

Methods (m = 20 virtual tokens everywhere):
* probe        – only the linear head trains (the floor every method starts from);
* prompt-random, prompt-vocab – prompt tuning, U(−0.5, 0.5) init vs 20 of the 5,000 most
  common whole-word tokens;
* deep-prompt  – a hidden-state prompt at every layer's input (m×d×L, keys and values
  tied through W_k, W_v);
* ptuning-v2   – per-layer keys and values trained directly (m×d×L×2);
* lora         – r = 8 on (query, value), alpha = 8;
* full-ft      – every weight.
Then a longer budget (LONG_EPOCHS, seed 0, chosen rate) for prompt-random and ptuning-v2:
is the prompt-tuning gap a matter of steps?
"""
from __future__ import annotations

import dataclasses
import math
import platform

import numpy as np
import torch

from pedagogy_lib import data, runner
from pedagogy_lib.registry import Arm, arms
from pedagogy_lib.results import save_runs
from pedagogy_lib import results as R
from pedagogy_lib.results import mean_sd

RESULTS = R.RESULTS
OUT = RESULTS / "ch05_prompt.json"
N_TRAIN, EPOCHS, BATCH, HEAD_LR, LONG_EPOCHS = 1024, 3, 32, 1e-3, 10
SEEDS = (0, 1, 2)
M = 20
LRS = {
    "probe": (1e-3,),
    "prompt-random": (1e-2, 3e-2, 1e-1, 3e-1),
    "prompt-vocab": (1e-2, 3e-2, 1e-1, 3e-1),
    "deep-prompt": (1e-3, 3e-3, 1e-2, 3e-2),
    "ptuning-v2": (3e-3, 1e-2, 3e-2, 1e-1),
    "lora": (3e-4, 1e-3, 3e-3),
    "full-ft": (3e-5, 1e-4, 3e-4),
}


# ------------------------------------------------------- stored results, analysis
PATH = RESULTS / "ch05_prompt.json"


ARMS = ("probe", "prompt-random", "prompt-vocab", "deep-prompt", "ptuning-v2", "lora", "full-ft")


LABELS = {"probe": "linear probe (head only)", "prompt-random": "prompt tuning, random init",
          "prompt-vocab": "prompt tuning, vocab init", "deep-prompt": "deep prompt (m·d·L)",
          "ptuning-v2": "P-Tuning v2 (m·d·L·2)", "lora": "LoRA r=8 (q,v)", "full-ft": "full fine-tuning"}


def load_results(path=None) -> dict:
    return R.load(path or PATH, "python -m pedagogy_lib.book.ch05.experiment")


def summary(sweep: dict) -> dict:
    """Per method at its chosen rate and the main budget: test/val mean ± sd over seeds,
    trainable count; plus the long-budget runs."""
    cfg, lr = sweep["config"], sweep["chosen_lr"]
    out = {"methods": {}, "long": {}, "lr": lr}
    for meth in ARMS:
        rs = [r for r in sweep["runs"] if r["method"] == meth and r["epochs"] == cfg["epochs"]
              and math.isclose(r["lr"], lr[meth])]
        out["methods"][meth] = {"test": mean_sd([r["test"] for r in rs]), "val": mean_sd([r["val"] for r in rs]),
                                "trainable": rs[0]["trainable"], "n": len(rs),
                                "loss_curve": np.mean([r["losses"] for r in rs], 0).tolist()}
    for r in sweep["runs"]:
        if r["epochs"] != cfg["epochs"]:
            out["long"][r["method"]] = {"test": r["test"], "val": r["val"], "epochs": r["epochs"],
                                        "losses": r["losses"]}
    return out


def by_seed(sweep: dict, meth: str) -> list[float]:
    """Test accuracy of one method at its chosen rate and the main budget, in seed order (the
    runs of one seed share the training subsample and its order across methods: paired)."""
    cfg, lr = sweep["config"], sweep["chosen_lr"][meth]
    rs = {r["seed"]: r["test"] for r in sweep["runs"] if r["method"] == meth and r["epochs"] == cfg["epochs"]
          and math.isclose(r["lr"], lr)}
    return [rs[seed] for seed in cfg["seeds"]]


def val_grid(sweep: dict, meth: str) -> dict:
    """{lr: validation accuracy at the selection seed}: the grid the method's rate was chosen from."""
    cfg = sweep["config"]
    seed = cfg["seeds"][0]
    return {r["lr"]: r["val"] for r in sweep["runs"] if r["method"] == meth and r["epochs"] == cfg["epochs"]
            and r["seed"] == seed}


def gap(s: dict, a: str, b: str) -> tuple[float, float]:
    """Points by which method a trails method b on test accuracy, with the standard error
    of the difference of the two seed means."""
    (ma, sa), (mb, sb) = s["methods"][a]["test"], s["methods"][b]["test"]
    na, nb = s["methods"][a]["n"], s["methods"][b]["n"]
    return 100 * (mb - ma), 100 * math.sqrt(sa ** 2 / na + sb ** 2 / nb)


# ------------------------------------------------------------------ the sweep
BUDGET = runner.Budget(n_train=N_TRAIN, n_eval=None, epochs=EPOCHS, batch_size=BATCH, seeds=SEEDS, head_lr=HEAD_LR,
                       resample=True)
_SETTINGS = {"probe": ("probe", {}), "prompt-random": ("prompt", {"m": M, "init": "random"}),
             "prompt-vocab": ("prompt", {"m": M, "init": "vocab"}), "deep-prompt": ("deep_prompt", {"m": M}),
             "ptuning-v2": ("ptuning_v2", {"m": M}), "lora": ("lora", {"r": 8, "alpha": 8}), "full-ft": ("full", {})}
SWEEP = arms(*[Arm(name, _SETTINGS[name][0], _SETTINGS[name][1], LRS[name]) for name in LRS])


def _record(r: dict, epochs: int) -> dict:
    return {"method": r["method"], "lr": r["lr"], "seed": r["seed"], "epochs": epochs, "val": round(r["val_acc"], 6),
            "test": round(r["test_acc"], 6), "trainable": r["trainable"],
            "losses": [round(x, 5) for x in r["losses"]], "cpu_s": round(r["cpu_s"], 1)}


def main(jobs: int = 1):
    task = data.polarity_task()
    found = runner.protocol(SWEEP.values(), task, BUDGET, jobs=jobs)
    runs = [_record(r, EPOCHS) for name in SWEEP for r in found[name]["trials"] + found[name]["runs"][1:]]
    chosen = {name: found[name]["runs"][0]["lr"] for name in SWEEP}
    long = dataclasses.replace(BUDGET, epochs=LONG_EPOCHS)
    runs += [_record(runner.run(SWEEP[name], task, long, SEEDS[0], chosen[name]), LONG_EPOCHS)
             for name in ("prompt-random", "ptuning-v2")]
    out = {
        "config": {"n_train": N_TRAIN, "epochs": EPOCHS, "long_epochs": LONG_EPOCHS, "batch_size": BATCH,
                   "head_lr": HEAD_LR, "seeds": list(SEEDS), "m": M, "lrs": {k: list(v) for k, v in LRS.items()},
                   "prompt_random_init": "U(-0.5, 0.5)", "prompt_vocab_init": "20 of the first 5,000 whole-word tokens",
                   "prefix_init": "N(0, 1)", "lora": "r=8, alpha=8, (query, value)",
                   "schedule": "linear", "warmup": 0.06, "selection": "val accuracy at seed 0",
                   "n_val": len(task.val), "n_test": len(task.test), "task": "VADER polarity, threshold 0.6"},
        "chosen_lr": chosen,
        "runs": runs,
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__},
    }
    print(f"wrote {save_runs(out, OUT)}")


if __name__ == "__main__":
    main()
