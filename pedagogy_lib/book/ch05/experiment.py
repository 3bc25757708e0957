"""Chapter 05 sweep: prompt tuning vs P-Tuning v2 vs LoRA vs full fine-tuning on VADER.

Run:  OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m pedagogy_lib.book.ch05.experiment
Writes chapters/results/ch05_prompt.json (about 25 CPU-minutes at one thread).

Protocol (chapter 03's): the book's training loop (torch_ref.train) on a class-balanced
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

import copy
import math
import platform
import time

import numpy as np
import torch

from pedagogy_lib import data
from pedagogy_lib.results import save_runs
from pedagogy_lib.torch_ref.encoder import load_minilm_torch
from pedagogy_lib.prefix import vocab_candidates
from pedagogy_lib.torch_ref import lora as TL
from pedagogy_lib.torch_ref import prefix as TP
from pedagogy_lib.torch_ref import train as T
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


def gap(s: dict, a: str, b: str) -> tuple[float, float]:
    """Points by which method a trails method b on test accuracy, with the standard error
    of the difference of the two seed means."""
    (ma, sa), (mb, sb) = s["methods"][a]["test"], s["methods"][b]["test"]
    na, nb = s["methods"][a]["n"], s["methods"][b]["n"]
    return 100 * (mb - ma), 100 * math.sqrt(sa ** 2 / na + sb ** 2 / nb)


# ------------------------------------------------------------------ the sweep


def make_model(base_net, method: str, seed: int, candidates):
    net = copy.deepcopy(base_net)
    model = T.Classifier(net, seed=seed)
    if method != "full-ft":
        T.freeze(model.encoder)
    if method.startswith("prompt-"):
        TP.attach_prompt(net, M, init=method.split("-")[1], candidates=candidates, seed=seed)
    elif method == "deep-prompt":
        TP.attach_deep_prompt(net, M, seed=seed)
    elif method == "ptuning-v2":
        TP.attach_ptuning_v2(net, M, seed=seed)
    elif method == "lora":
        TL.attach_lora(net, ("query", "value"), r=8, alpha=8, seed=seed)
    return model


def run(base_net, tok, task, splits, candidates, method, lr, seed, epochs=EPOCHS):
    tr = data.subsample(task.train, N_TRAIN, seed)
    model = make_model(base_net, method, seed, candidates)
    cfg = T.TrainConfig(lr=lr, epochs=epochs, batch_size=BATCH, head_lr=HEAD_LR, seed=seed)
    t0 = time.process_time()
    hist = T.train_classifier(model, T.Batches(tok, tr.tokens, tr.labels, "cpu"), None, cfg)
    val, test = (T.accuracy(model, splits[s]) for s in ("val", "test"))
    rec = {"method": method, "lr": lr, "seed": seed, "epochs": epochs, "val": round(val, 6),
           "test": round(test, 6), "trainable": T.count_trainable(model),
           "losses": [round(x, 5) for x in hist.losses], "cpu_s": round(time.process_time() - t0, 1)}
    print(f"{method:13s} lr={lr:g} seed={seed} epochs={epochs} val={val:.3f} test={test:.3f} "
          f"final-loss={np.mean(hist.losses[-8:]):.3f} ({rec['cpu_s']:.0f} s)", flush=True)
    return rec


def main():
    torch.manual_seed(0)
    mm = load_minilm_torch(device="cpu")
    task = data.polarity_task()
    splits = {s: T.Batches(mm.tokenizer, getattr(task, s).tokens, getattr(task, s).labels, "cpu")
              for s in ("val", "test")}
    candidates = vocab_candidates(mm.tokenizer.tok.get_vocab())
    go = lambda method, lr, seed, epochs=EPOCHS: run(  # noqa: E731
        mm.net, mm.tokenizer, task, splits, candidates, method, lr, seed, epochs)
    runs, chosen = [], {}
    for method, grid in LRS.items():
        grid_runs = [go(method, lr, SEEDS[0]) for lr in grid]
        best = max(grid_runs, key=lambda r: (r["val"], -r["lr"]))
        chosen[method] = best["lr"]
        runs += grid_runs + [go(method, best["lr"], seed) for seed in SEEDS[1:]]
    for method in ("prompt-random", "ptuning-v2"):
        runs.append(go(method, chosen[method], SEEDS[0], LONG_EPOCHS))
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
