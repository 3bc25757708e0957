"""Chapter 06 sweep: a learning curve of BitFit against LoRA (q,v), full fine-tuning and a
linear probe, over training-set sizes, on VADER polarity.

Run:  OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m pedagogy_lib.book.ch06.experiment [--methods NAME ...]
Writes chapters/results/ch06_learning_curve.json (about 40 CPU-minutes at one thread).
Each finished run is cached in build/sweep_cache/ch06.json, so an interrupted sweep resumes,
and two processes given different --methods can share the work; the JSON is written once
every run is in the cache.

Protocol: the book's one training loop (torch_ref.train). Each method's learning rate is
chosen from its grid by validation accuracy at n = LR_N, seed 0; then for every size n and
seed, a class-balanced subsample of n training words (drawn with that seed) trains for
max(MIN_EPOCHS, ⌈MIN_STEPS·batch/n⌉) epochs — so small sets still get MIN_STEPS updates —
and is scored on the whole test split.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import time

import numpy as np
import torch

from pedagogy_lib import data
from pedagogy_lib.results import save
from pedagogy_lib.models import load_minilm
from pedagogy_lib.torch_ref import bitfit as TB
from pedagogy_lib.torch_ref import lora as TL
from pedagogy_lib.torch_ref import train as T
from pedagogy_lib import results as R

OUT = R.RESULTS / "ch06_learning_curve.json"
CACHE = R.RESULTS.parent.parent / "build" / "sweep_cache" / "ch06.json"
SIZES = (64, 128, 256, 512, 1024, 2048)
SEEDS = (0, 1, 2)
BATCH, MIN_EPOCHS, MIN_STEPS, HEAD_LR, LR_N = 32, 3, 60, 1e-3, 512
METHODS = {  # name: learning-rate grid of the body (the probe's grid is its head's)
    "BitFit": (3e-3, 1e-2, 3e-2),
    "BitFit (b_q, b_m2)": (3e-3, 1e-2, 3e-2),
    "LoRA r=8 (q,v)": (1e-3, 3e-3, 1e-2),
    "full FT": (2e-5, 5e-5, 1e-4),
    "probe": (3e-3, 1e-2, 3e-2),
}


def make_model(base_net, name: str, seed: int):
    net = copy.deepcopy(base_net)
    model = T.Classifier(net, seed=seed)
    if name == "BitFit":
        TB.apply_bitfit(model)
    elif name == "BitFit (b_q, b_m2)":
        TB.apply_bitfit(model, ("b_q", "b_m2"))
    elif name == "LoRA r=8 (q,v)":
        T.freeze(model.encoder)
        TL.attach_lora(net, ("query", "value"), r=8, alpha=8, seed=seed)
    elif name == "probe":
        T.freeze(model.encoder)
    elif name != "full FT":
        raise ValueError(name)
    return model


def epochs_for(n: int) -> int:
    return max(MIN_EPOCHS, math.ceil(MIN_STEPS * BATCH / n))


def _cache() -> dict:
    return json.loads(CACHE.read_text()) if CACHE.exists() else {}


def run(mm, task, name, lr, n, seed, split):
    """(accuracy, trainable, steps, seconds), from the cache when this run was done before."""
    key = f"{name}|lr={lr:g}|n={n}|seed={seed}|{split}"
    hit = _cache().get(key)
    if hit is not None:
        return hit["acc"], hit["trainable"], hit["steps"], 0.0
    out = _run(mm, task, name, lr, n, seed, split)
    cache = _cache()  # re-read: another process may have added runs meanwhile
    cache[key] = {"acc": out[0], "trainable": out[1], "steps": out[2]}
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    tmp = CACHE.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
    os.replace(tmp, CACHE)
    return out


def _run(mm, task, name, lr, n, seed, split):
    tr = data.subsample(task.train, n, seed)
    train = T.Batches(mm.tokenizer, tr.tokens, tr.labels, "cpu")
    ev = getattr(task, split)
    model = make_model(mm.net, name, seed)
    head_lr = lr if name == "probe" else HEAD_LR
    cfg = T.TrainConfig(lr=lr, epochs=epochs_for(n), batch_size=BATCH, head_lr=head_lr, seed=seed)
    t0 = time.process_time()
    hist = T.train_classifier(model, train, None, cfg)
    acc = T.accuracy(model, T.Batches(mm.tokenizer, ev.tokens, ev.labels, "cpu"))
    return acc, T.count_trainable(model), hist.steps, time.process_time() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    chosen = ap.parse_args().methods
    mm = load_minilm("torch", device="cpu")
    task = data.polarity_task()
    results = {}
    for name in chosen:
        grid = METHODS[name]
        val = {}
        for lr in grid:
            acc, n_tr, steps, sec = run(mm, task, name, lr, LR_N, SEEDS[0], "val")
            val[f"{lr:g}"] = round(acc, 6)
            print(f"{name:20s} lr={lr:g} val={acc:.3f} ({sec:.0f} s)", flush=True)
        best = max(grid, key=lambda lr: (val[f"{lr:g}"], -lr))
        curve = {}
        for n in SIZES:
            accs = []
            for seed in SEEDS:
                acc, n_tr, steps, sec = run(mm, task, name, best, n, seed, "test")
                accs.append(round(acc, 6))
                print(f"{name:20s} n={n} seed={seed} test={acc:.3f} steps={steps} ({sec:.0f} s)", flush=True)
            curve[str(n)] = {"test_by_seed": accs, "mean": round(float(np.mean(accs)), 6),
                             "std": round(float(np.std(accs, ddof=1)), 6), "steps": steps}
        results[name] = {"trainable": n_tr, "lr": best, "val_by_lr": val, "curve": curve}
    if list(results) != list(METHODS):
        print(f"done: {list(results)}; run the other methods (or no --methods) to write {OUT}")
        return
    out = {
        "config": {"sizes": list(SIZES), "seeds": list(SEEDS), "batch_size": BATCH, "min_epochs": MIN_EPOCHS,
                   "min_steps": MIN_STEPS, "head_lr": HEAD_LR, "lr_selected_at_n": LR_N,
                   "lr_grids": {k: list(v) for k, v in METHODS.items()}, "schedule": "linear",
                   "warmup": 0.06, "n_val": len(task.val), "n_test": len(task.test),
                   "task": "VADER polarity, threshold 0.6"},
        "results": results,
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__},
    }
    print(f"wrote {save(out, OUT)}")


if __name__ == "__main__":
    main()
