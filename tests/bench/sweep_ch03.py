"""Chapter 03 sweep: adapters (Houlsby, Pfeiffer, parallel) vs LoRA (q,v) on VADER polarity.

Run:  OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python tests/bench/sweep_ch03.py
Writes chapters/results/ch03_accuracy.json (about 10 CPU-minutes at one thread).

Protocol: every method trains with the book's one loop (torch_ref.train) on a class-balanced
subsample of N_TRAIN training words. The learning rate of each method is chosen from LRS by
validation accuracy (seed 0); then each seed (a new subsample, a new head and adapter init,
a new order) trains once more at that rate and is scored on the whole test split.
"""
from __future__ import annotations

import copy
import pathlib
import platform
import sys
import time

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from pedagogy_lib import data  # noqa: E402
from pedagogy_lib.results import save  # noqa: E402
from pedagogy_lib.models import load_minilm  # noqa: E402
from pedagogy_lib.torch_ref import adapters as TA  # noqa: E402
from pedagogy_lib.torch_ref import lora as TL  # noqa: E402
from pedagogy_lib.torch_ref import train as T  # noqa: E402

OUT = ROOT / "chapters" / "results" / "ch03_accuracy.json"
N_TRAIN, EPOCHS, BATCH, HEAD_LR = 1024, 3, 32, 1e-3
LRS = (1e-3, 3e-3, 1e-2)
SEEDS = (0, 1, 2)
# name: (kind, size). Sizes chosen so that the first four have about LoRA r=8 (q,v)'s count;
# the others are the usual settings (Houlsby m=64) and the same m in two placements.
METHODS = {
    "LoRA r=8 (q,v)": ("lora", 8),
    "Houlsby m=8": ("houlsby", 8),
    "Pfeiffer m=16": ("pfeiffer", 16),
    "parallel m=16": ("parallel", 16),
    "Houlsby m=16": ("houlsby", 16),
    "Houlsby m=64": ("houlsby", 64),
    "Pfeiffer m=64": ("pfeiffer", 64),
}


def make_model(base_net, kind: str, size: int, seed: int):
    """A fresh Classifier whose trainable parameters are the method's (plus the head)."""
    net = copy.deepcopy(base_net)
    model = T.Classifier(net, seed=seed)
    T.freeze(model.encoder)
    if kind == "lora":
        TL.attach_lora(net, ("query", "value"), r=size, alpha=size, seed=seed)
    else:
        TA.attach_adapters(net.bert, kind, size, seed=seed)
    return model


def run(base_net, tok, task, kind, size, lr, seed, split):
    tr = data.subsample(task.train, N_TRAIN, seed)
    train = T.Batches(tok, tr.tokens, tr.labels, "cpu")
    ev = getattr(task, split)
    model = make_model(base_net, kind, size, seed)
    cfg = T.TrainConfig(lr=lr, epochs=EPOCHS, batch_size=BATCH, head_lr=HEAD_LR, seed=seed)
    t0 = time.process_time()
    T.train_classifier(model, train, None, cfg)
    acc = T.accuracy(model, T.Batches(tok, ev.tokens, ev.labels, "cpu"))
    return acc, T.count_trainable(model), time.process_time() - t0


def main():
    torch.manual_seed(0)
    mm = load_minilm("torch", device="cpu")
    task = data.polarity_task()
    results = {}
    for name, (kind, size) in METHODS.items():
        val = {}
        for lr in LRS:
            acc, n, sec = run(mm.net, mm.tokenizer, task, kind, size, lr, SEEDS[0], "val")
            val[f"{lr:g}"] = round(acc, 6)
            print(f"{name:16s} lr={lr:g} val={acc:.3f} ({sec:.0f} s)", flush=True)
        best = max(LRS, key=lambda lr: (val[f"{lr:g}"], -lr))
        test = []
        for seed in SEEDS:
            acc, n, sec = run(mm.net, mm.tokenizer, task, kind, size, best, seed, "test")
            test.append(round(acc, 6))
            print(f"{name:16s} lr={best:g} seed={seed} test={acc:.3f} ({sec:.0f} s)", flush=True)
        results[name] = {"kind": kind, "size": size, "trainable": n, "val_by_lr": val, "lr": best,
                         "test_by_seed": test, "test_mean": round(float(np.mean(test)), 6),
                         "test_std": round(float(np.std(test, ddof=1)), 6)}
    out = {
        "config": {"n_train": N_TRAIN, "epochs": EPOCHS, "batch_size": BATCH, "head_lr": HEAD_LR,
                   "lrs": list(LRS), "seeds": list(SEEDS), "schedule": "linear", "warmup": 0.06,
                   "n_val": len(task.val), "n_test": len(task.test), "task": "VADER polarity, threshold 0.6"},
        "results": results,
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__},
    }
    print(f"wrote {save(out, OUT)}")


if __name__ == "__main__":
    main()
