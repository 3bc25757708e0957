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
from pedagogy_lib.torch_ref.encoder import load_minilm_torch
from pedagogy_lib.torch_ref import bitfit as TB
from pedagogy_lib.torch_ref import lora as TL
from pedagogy_lib.torch_ref import train as T
from torch import nn
from pedagogy_lib import results as R

OUT = R.RESULTS / "ch06_learning_curve.json"
CACHE = R.RESULTS.parent.parent / "build" / "sweep_cache" / "ch06.json"
SIZES = (64, 128, 256, 512, 1024, 2048)
SEEDS = (0, 1, 2)
BATCH, MIN_EPOCHS, MIN_STEPS, HEAD_LR, LR_N = 32, 3, 60, 1e-3, 512
ARMS = {  # name: learning-rate grid of the body (the probe's grid is its head's)
    "BitFit": (3e-3, 1e-2, 3e-2),
    "BitFit (b_q, b_m2)": (3e-3, 1e-2, 3e-2),
    "LoRA r=8 (q,v)": (1e-3, 3e-3, 1e-2),
    "full FT": (2e-5, 5e-5, 1e-4),
    "probe": (3e-3, 1e-2, 3e-2),
}


# ------------------------------------------------------- stored results, analysis
def load(name: str) -> dict:
    return R.load(name, "python -m pedagogy_lib.book.ch06.experiment")


def preactivation_data(bert_before, bert_after, tokenizer, tokens, layer: int) -> dict:
    """GELU inputs of block ``layer`` (Eq. 6.3) at the real tokens of ``tokens``, before and
    after training, plus the change of that block's b_m2 (the GELU's own bias)."""
    import torch

    ids, mask = (torch.from_numpy(a) for a in tokenizer(list(tokens)))
    dev = next(bert_before.parameters()).device
    ids, mask = ids.to(dev), mask.to(dev)
    z0 = pre_activations(bert_before, ids, mask, layer).cpu().numpy()
    z1 = pre_activations(bert_after, ids, mask, layer).cpu().numpy()
    b0 = bert_before.encoder.layer[layer].intermediate.dense.bias.detach().cpu().numpy()
    b1 = bert_after.encoder.layer[layer].intermediate.dense.bias.detach().cpu().numpy()
    ffn = b0.size
    on0, on1 = (z0.reshape(-1, ffn) > 0).mean(0), (z1.reshape(-1, ffn) > 0).mean(0)
    return {"layer": layer, "before": z0, "after": z1, "delta_b": b1 - b0,
            "on_before": on0, "on_after": on1}


def _default_preactivation_data() -> dict:
    """Chapter 06's live run, repeated: BitFit on 512 training words (seed 0) with the
    learning rate and epochs the sweep uses at that size; the last block on 256 val words."""
    from pedagogy_lib import data
    from pedagogy_lib.torch_ref import bitfit as TB
    from pedagogy_lib.torch_ref import train as T

    curve, n = load("ch06_learning_curve"), 512
    c = curve["config"]
    epochs = max(c["min_epochs"], -(-c["min_steps"] * c["batch_size"] // n))
    mm = load_minilm_torch(device="cpu")
    task = data.polarity_task()
    tr = data.subsample(task.train, n, 0)
    model = T.Classifier(copy.deepcopy(mm.net), seed=0)
    TB.apply_bitfit(model)
    cfg = T.TrainConfig(lr=curve["results"]["BitFit"]["lr"], epochs=epochs, batch_size=c["batch_size"],
                        head_lr=c["head_lr"], seed=0)
    T.train_classifier(model, T.Batches(mm.tokenizer, tr.tokens, tr.labels, "cpu"), None, cfg)
    val = data.subsample(task.val, 256, 0)
    return preactivation_data(mm.bert, model.encoder.bert, mm.tokenizer, val.tokens,
                              mm.bert.config.num_hidden_layers - 1)


def load_results() -> dict:
    return {"curve": load("ch06_learning_curve")}


@torch.no_grad()
def pre_activations(bert: nn.Module, ids: torch.Tensor, mask: torch.Tensor, layer: int) -> torch.Tensor:
    """The FFN pre-activations W₁h₁ + b_m2 (the GELU's input) of block ``layer`` at the
    real tokens, flattened: what a BitFit shift of b_m2 moves (Eq. 6.3)."""
    blocks = bert.encoder.layer
    if not 0 <= layer < len(blocks):
        raise ValueError(f"layer must lie in [0, {len(blocks)}), got {layer}")
    seen = []
    handle = blocks[layer].intermediate.dense.register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        bert(ids, mask)
    finally:
        handle.remove()
    z = seen[0]
    return z[:, z.shape[1] - ids.shape[1]:][mask.bool()].reshape(-1)


PRE_BINS = np.linspace(-6, 4, 81)  # the histogram of GELU inputs in "06_preactivation"
PRE_OUT = R.RESULTS / "ch06_preactivation.json"


def preactivation_summary(d: dict) -> dict:
    """What "06_preactivation" plots, small enough to store: densities of the GELU inputs
    before and after on ``PRE_BINS``, and per unit Δb_m2 and the firing fractions."""
    if "density_before" in d:
        return d
    dens = {k: np.histogram(d[k], PRE_BINS, density=True)[0] for k in ("before", "after")}
    sig = lambda a: [float(f"{x:.6g}") for x in np.asarray(a, np.float64)]  # noqa: E731
    return {"layer": int(d["layer"]), "bins": sig(PRE_BINS), "density_before": sig(dens["before"]),
            "density_after": sig(dens["after"]), "delta_b": sig(d["delta_b"]),
            "on_before": sig(d["on_before"]), "on_after": sig(d["on_after"])}


def preactivation_study():
    """Chapter 06's live BitFit run, repeated and summarised into ``PRE_OUT``."""
    return R.save(preactivation_summary(_default_preactivation_data()), PRE_OUT)


# ------------------------------------------------------------------ the sweep
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
    ap.add_argument("--methods", nargs="*", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--part", choices=("curve", "preactivation", "all"), default="all")
    args = ap.parse_args()
    if args.part in ("preactivation", "all"):
        print(f"wrote {preactivation_study()}")
    if args.part in ("curve", "all"):
        learning_curve_sweep(args.methods)


def learning_curve_sweep(chosen):
    mm = load_minilm_torch(device="cpu")
    task = data.polarity_task()
    results = {}
    for name in chosen:
        grid = ARMS[name]
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
    if list(results) != list(ARMS):
        print(f"done: {list(results)}; run the other methods (or no --methods) to write {OUT}")
        return
    out = {
        "config": {"sizes": list(SIZES), "seeds": list(SEEDS), "batch_size": BATCH, "min_epochs": MIN_EPOCHS,
                   "min_steps": MIN_STEPS, "head_lr": HEAD_LR, "lr_selected_at_n": LR_N,
                   "lr_grids": {k: list(v) for k, v in ARMS.items()}, "schedule": "linear",
                   "warmup": 0.06, "n_val": len(task.val), "n_test": len(task.test),
                   "task": "VADER polarity, threshold 0.6"},
        "results": results,
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__},
    }
    print(f"wrote {save(out, OUT)}")


if __name__ == "__main__":
    main()
