"""Chapter 04 sweep: prefix-tuning on VADER polarity, trained directly vs through the MLP.

Run:  OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m pedagogy_lib.book.ch04.experiment
Writes chapters/results/ch04_prefix.json (about 22 CPU-minutes at one thread).

Protocol (the same loop and budget as chapter 03's sweep): the book's training loop
(torch_ref.train) on a class-balanced subsample of N_TRAIN training words, EPOCHS epochs,
batch 32, head learning rate HEAD_LR.  Each run is scored on the whole validation and
test splits, and its per-step training loss is kept.

1. Learning-rate grid at m = M_GRID, every seed: direct prefix (P_k, P_v trained as they
   are, N(0, 1) init as in peft / P-Tuning v2) and the MLP reparameterisation (hidden
   size HIDDEN, shared by all layers).  The rate with the best mean validation accuracy
   is each arm's rate from then on.  Seeds differ in subsample, prefix init, head init
   and order, so the spread over seeds is the spread a user would see.
2. Prefix length m in LENGTHS, both arms, every seed, at the chosen rates.
3. LoRA r=8 on (query, value), alpha = 8, on the same protocol (rate from LORA_LRS by
   mean validation accuracy), for the "prefix lags LoRA" claim.
"""
from __future__ import annotations

import copy
import pathlib
import platform
import sys
import time

import numpy as np
import torch

from pedagogy_lib import data
from pedagogy_lib.results import save_runs
from pedagogy_lib.models import load_minilm
from pedagogy_lib.torch_ref import lora as TL
from pedagogy_lib.torch_ref import prefix as TP
from pedagogy_lib.torch_ref import train as T
from pedagogy_lib import results as R

OUT = R.RESULTS / "ch04_prefix.json"
N_TRAIN, EPOCHS, BATCH, HEAD_LR = 1024, 3, 32, 1e-3
SEEDS = (0, 1, 2)
HIDDEN = 512                      # Li & Liang's MLP width
M_GRID = 10
LRS = {"direct": (1e-3, 3e-3, 1e-2, 3e-2, 1e-1), "mlp": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2),
       "lora": (3e-4, 1e-3, 3e-3)}
LENGTHS = (1, 5, 10, 20, 50)


def make_model(base_net, arm: str, m: int, seed: int):
    net = copy.deepcopy(base_net)
    model = T.Classifier(net, seed=seed)
    T.freeze(model.encoder)
    if arm == "direct":
        TP.attach_prefix(net, m, reparam=None, seed=seed)
    elif arm == "mlp":
        TP.attach_prefix(net, m, reparam=HIDDEN, seed=seed)
    elif arm == "lora":
        TL.attach_lora(net, ("query", "value"), r=8, alpha=8, seed=seed)
    else:
        raise ValueError(arm)
    return model


def run(base_net, tok, task, splits, arm, m, lr, seed):
    tr = data.subsample(task.train, N_TRAIN, seed)
    model = make_model(base_net, arm, m, seed)
    cfg = T.TrainConfig(lr=lr, epochs=EPOCHS, batch_size=BATCH, head_lr=HEAD_LR, seed=seed)
    t0 = time.process_time()
    hist = T.train_classifier(model, T.Batches(tok, tr.tokens, tr.labels, "cpu"), None, cfg)
    val, test = (T.accuracy(model, splits[s]) for s in ("val", "test"))
    rec = {"arm": arm, "m": m, "lr": lr, "seed": seed, "val": round(val, 6), "test": round(test, 6),
           "trainable": T.count_trainable(model), "losses": [round(x, 5) for x in hist.losses],
           "cpu_s": round(time.process_time() - t0, 1)}
    print(f"{arm:6s} m={m:3d} lr={lr:g} seed={seed} val={val:.3f} test={test:.3f} "
          f"final-loss={np.mean(hist.losses[-8:]):.3f} ({rec['cpu_s']:.0f} s)", flush=True)
    return rec


def best_lr(runs, arm):
    by = {}
    for r in runs:
        if r["arm"] == arm:
            by.setdefault(r["lr"], []).append(r["val"])
    return max(by, key=lambda lr: (np.mean(by[lr]), -lr))


def main():
    torch.manual_seed(0)
    mm = load_minilm("torch", device="cpu")
    task = data.polarity_task()
    splits = {s: T.Batches(mm.tokenizer, getattr(task, s).tokens, getattr(task, s).labels, "cpu")
              for s in ("val", "test")}
    runs = []
    for arm in ("direct", "mlp", "lora"):
        for lr in LRS[arm]:
            for seed in SEEDS:
                runs.append(run(mm.net, mm.tokenizer, task, splits, arm, M_GRID, lr, seed))
    lr = {arm: best_lr(runs, arm) for arm in LRS}
    for arm in ("direct", "mlp"):
        for m in LENGTHS:
            if m == M_GRID:
                continue
            for seed in SEEDS:
                runs.append(run(mm.net, mm.tokenizer, task, splits, arm, m, lr[arm], seed))
    out = {
        "config": {"n_train": N_TRAIN, "epochs": EPOCHS, "batch_size": BATCH, "head_lr": HEAD_LR,
                   "seeds": list(SEEDS), "lrs": {k: list(v) for k, v in LRS.items()}, "m_grid": M_GRID,
                   "lengths": list(LENGTHS), "mlp_hidden": HIDDEN, "direct_init": "N(0, 1)",
                   "lora": "r=8, alpha=8, (query, value)", "schedule": "linear", "warmup": 0.06,
                   "n_val": len(task.val), "n_test": len(task.test), "task": "VADER polarity, threshold 0.6"},
        "chosen_lr": lr,
        "runs": runs,
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__},
    }
    print(f"wrote {save_runs(out, OUT)}")


if __name__ == "__main__":
    main()
