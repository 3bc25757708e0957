"""Chapter 08's harness: every method on the same task, budget, seeds and training loop.

A *method* is a function that takes a freshly loaded torch MiniLM and decides what is
trainable (freezing the rest, inserting modules where it needs them). Everything else is
shared: the head, the loop (``torch_ref.train``), the data split, the learning-rate
selection, the measurements. That sharing is the whole point: differences between rows
are then differences between methods, not between scripts.

Protocol (``compare``):
1. for each method, train seed 0 at each learning rate of its grid, keep the rate with the
   best *validation* accuracy (ties → the smaller rate); the two-point grids sit where the
   chapters' wider sweeps (ch02–ch06) found each method's best rate;
2. train the remaining seeds at that rate;
3. report test accuracy mean ± std over seeds, trainable parameters (head excluded) and
   their share of MiniLM, seconds per epoch, training-state memory and inference latency
   (merged where the method allows it).

``python -m pedagogy_lib.compare`` (= ``make compare``) runs the full protocol and writes
``chapters/results/ch08_compare.json``; the CI budget runs the same code path, smaller.
Runs are independent, so they are spread over ``jobs`` worker processes of one thread each
(the numbers do not depend on ``jobs``: every run seeds everything it uses); the latency
comparison runs afterwards, alone.
"""
from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import platform
import statistics
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import data as D
from . import results as R
from .prefix import vocab_candidates
from .models import load_minilm
from .torch_ref import adapters as TA, bitfit as TB, lora as TL, prefix as TP
from .torch_ref.train import Batches, Classifier, TrainConfig, accuracy, count_trainable, train_classifier

RESULTS = R.RESULTS / "ch08_compare.json"


@dataclass(frozen=True)
class Budget:
    n_train: int = 1024
    n_eval: int = 500          # validation and test subsamples (class-balanced, fixed seed)
    epochs: int = 2
    batch_size: int = 32
    seeds: tuple = (0, 1, 2)
    full_grid: bool = True     # False: only the first learning rate of each grid (CI)
    latency_rounds: int = 61   # rounds of the latency comparison (step 3)

    def __post_init__(self):
        if (self.n_train < 2 or self.n_eval < 2 or self.epochs < 1 or self.batch_size < 1 or not self.seeds
                or self.latency_rounds < 1):
            raise ValueError(f"invalid budget {self}")


FULL = Budget()
CI = Budget(n_train=64, n_eval=64, epochs=1, batch_size=32, seeds=(0,), full_grid=False, latency_rounds=3)


@dataclass(frozen=True)
class Method:
    name: str
    setup: Callable  # (torch MiniLM, seed) -> None; freezes/inserts as the method requires
    lrs: tuple       # grid searched on validation; the first entry is the usual default
    mergeable: bool = False
    note: str = ""


def _freeze_all(model):
    for p in model.net.parameters():
        p.requires_grad_(False)


def _qlora(model, seed):
    """NF4 + double quantisation of every linear layer, then LoRA (q,v) on top. LoRA goes on
    before ``to_device``: bitsandbytes quantises a Linear4bit when it is moved."""
    from .torch_ref import qlora

    qlora.quantize_linears(model.bert, "all-linear")
    TL.attach_lora(model.bert, ("query", "value"), r=8, alpha=16, seed=seed)
    qlora.to_device(model.net)


METHODS: dict[str, Method] = {m.name: m for m in [
    Method("probe", lambda m, s: _freeze_all(m), (1e-2, 3e-2), note="frozen encoder, head only"),
    Method("full", lambda m, s: None, (5e-5, 1e-4), note="every weight"),
    Method("lora_qv", lambda m, s: TL.attach_lora(m.bert, ("query", "value"), r=8, alpha=16, seed=s),
           (1e-3, 3e-3), mergeable=True, note="r=8, α=16 on W_q, W_v"),
    Method("lora_all", lambda m, s: TL.attach_lora(m.bert, "all-linear", r=8, alpha=16, seed=s),
           (1e-3, 3e-3), mergeable=True, note="r=8, α=16 on every linear layer"),
    Method("houlsby", lambda m, s: TA.attach_adapters(m.bert, "houlsby", 16, seed=s), (1e-3, 3e-3),
           note="m=16, two adapters per block"),
    Method("pfeiffer", lambda m, s: TA.attach_adapters(m.bert, "pfeiffer", 32, seed=s), (1e-3, 3e-3),
           note="m=32, one adapter per block"),
    Method("prefix", lambda m, s: TP.attach_prefix(m.bert, 10, reparam=128, seed=s), (1e-3, 3e-3),
           note="m=10 virtual tokens, MLP reparameterisation (folded for inference)"),
    Method("prompt", lambda m, s: TP.attach_prompt(m.bert, 10, init="vocab", seed=s,
                                                   candidates=vocab_candidates(m.tokenizer.tok.get_vocab())),
           (1e-2, 3e-2), note="m=10 soft prompt at the input, init from the 5,000 first whole-word tokens"),
    Method("ptuning_v2", lambda m, s: TP.attach_ptuning_v2(m.bert, 10, seed=s), (3e-3, 1e-2),
           note="m=10 per-layer keys/values, no reparameterisation"),
    Method("bitfit", lambda m, s: TB.apply_bitfit(m.bert), (3e-3, 1e-2), note="biases + LayerNorm β"),
    Method("qlora", _qlora, (1e-3, 3e-3), note="NF4+DQ base (bitsandbytes Linear4bit), LoRA r=8 on W_q, W_v"),
]}


def check_methods(names) -> list[str]:
    names = list(METHODS) if names is None else list(names)
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    return names


def splits(budget: Budget):
    task = D.polarity_task()
    return (D.subsample(task.train, min(budget.n_train, len(task.train)), seed=0),
            D.subsample(task.val, min(budget.n_eval, len(task.val)), seed=0),
            D.subsample(task.test, min(budget.n_eval, len(task.test)), seed=0))


def training_state_bytes(clf: torch.nn.Module, batch) -> dict[str, int]:
    """Bytes a training step holds: weights as stored, grads and AdamW's two moments of the
    trainable parameters, and the activations autograd saves for backward (one batch)."""
    params = list(clf.parameters())
    trainable = [p for p in params if p.requires_grad]
    weights = sum(p.numel() * p.element_size() for p in params)
    weights += sum(b.numel() * b.element_size() for b in clf.buffers())
    grads = sum(p.numel() * p.element_size() for p in trainable)
    saved: dict[int, int] = {}

    def pack(t):
        if not any(t is p for p in params):  # parameters are counted once, above
            saved[id(t)] = t.numel() * t.element_size()
        return t

    ids, mask, y = batch
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = torch.nn.functional.cross_entropy(clf(ids, mask), y)
    loss.backward()
    clf.zero_grad(set_to_none=True)
    return {"weights": weights, "grads": grads, "adam": 2 * grads, "activations": sum(saved.values()),
            "total": weights + 3 * grads + sum(saved.values())}


def latency_model(name: str, seed: int = 0):
    """The inference-time network of a method: LoRA merged, prefix MLP folded, the rest as
    inserted. Built fresh (untrained): the trained values do not change the work done."""
    meth = METHODS[check_methods([name])[0]]
    model = load_minilm("torch")
    meth.setup(model, seed)
    if meth.mergeable:
        TL.merge_all(model.bert)
    if meth.name == "prefix":
        TP.fold(model.bert)
    return model.bert.eval()


def run(method: str, lr: float, seed: int, budget: Budget = FULL, data=None, measure: bool = False) -> dict:
    """Train one (method, lr, seed) and return plain numbers (``measure``: add training memory)."""
    meth = METHODS[check_methods([method])[0]]
    if not (isinstance(lr, float) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"learning rate must be a positive float, got {lr!r}")
    train, val, test = data or splits(budget)
    torch.manual_seed(seed)
    model = load_minilm("torch")
    meth.setup(model, seed)
    clf = Classifier(model.net, seed=seed)
    dev = next(clf.parameters()).device
    b = [Batches(model.tokenizer, s.tokens, s.labels, dev) for s in (train, val, test)]
    cfg = TrainConfig(lr=lr, epochs=budget.epochs, batch_size=budget.batch_size, seed=seed,
                      head_lr=max(lr, 1e-3))
    hist = train_classifier(clf, b[0], b[1], cfg)
    out = {"method": method, "lr": lr, "seed": seed, "val_acc": hist.val_acc[-1],
           "test_acc": accuracy(clf, b[2]), "trainable": count_trainable(clf),
           "sec_per_epoch": hist.seconds / budget.epochs, "final_loss": float(np.mean(hist.losses[-5:]))}
    if measure:
        out["memory"] = training_state_bytes(clf, next(b[0].epoch(budget.batch_size, None)))
    return out


def measure_latency(names, batch: int = 32, seq_len: int = 8, rounds: int = 61) -> dict[str, dict]:
    """Step 3: each method's inference network against the plain model, timed in turn over
    many short rounds (``adapters.time_forward``: median of paired per-round ratios).
    "probe" *is* the plain model, timed a second time, so its ratio's distance from 1 is the
    noise floor of the measurement. Returns {name: {"latency_ratio", "latency_q1", "latency_q3"}}."""
    names = check_methods(names)
    nets = {n: latency_model(n) for n in names}
    lat = TA.time_forward({"none": latency_model("probe"), **nets}, batch=batch, seq_len=seq_len, rounds=rounds)
    return {n: {"latency_ratio": lat[n]["ratio"], "latency_q1": lat[n]["ratio_q1"],
                "latency_q3": lat[n]["ratio_q3"]} for n in names}


def _one_thread():
    torch.set_num_threads(1)


class _Runner:
    """Runs ``run`` calls in this process (jobs=1) or in a pool of one-thread workers."""

    def __init__(self, jobs: int):
        if not (isinstance(jobs, int) and jobs >= 1):
            raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
        self.pool = None if jobs == 1 else ProcessPoolExecutor(
            jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_one_thread)

    def submit(self, *args, **kw):
        if self.pool is not None:
            return self.pool.submit(run, *args, **kw)
        f = Future()
        f.set_result(run(*args, **kw))
        return f

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


def _summary(meth: Method, grid, trials: list[dict], runs: list[dict], n_model: int) -> dict:
    best = runs[0]
    accs = [r["test_acc"] for r in runs]
    return {"note": meth.note, "lr_grid": list(grid), "lr": best["lr"],
            "val_by_lr": {f"{t['lr']:g}": t["val_acc"] for t in trials},
            "test_acc": accs, "mean": statistics.fmean(accs),
            "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "trainable": best["trainable"], "pct": 100 * best["trainable"] / n_model,
            "sec_per_epoch": statistics.fmean(r["sec_per_epoch"] for r in runs),
            "memory": best["memory"]}


def compare(names=None, budget: Budget = FULL, progress: bool = True, jobs: int = 1) -> dict:
    """The protocol of the module docstring over ``jobs`` processes; returns a JSON-ready dict."""
    names = check_methods(names)
    data = splits(budget) if jobs == 1 else None  # workers rebuild the (deterministic) split
    n_model = sum(p.numel() for p in load_minilm("torch").net.parameters())
    grids = {n: METHODS[n].lrs if budget.full_grid else METHODS[n].lrs[:1] for n in names}
    runner, t0 = _Runner(jobs), time.perf_counter()
    try:
        # step 1: every grid point at seed 0; step 2 is queued as each method's grid finishes
        pending = {runner.submit(n, lr, budget.seeds[0], budget, data, measure=True): ("grid", n)
                   for n in names for lr in grids[n]}
        trials = {n: [] for n in names}
        extra = {n: [] for n in names}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                kind, n = pending.pop(f)
                (trials if kind == "grid" else extra)[n].append(f.result())
                if kind == "grid" and len(trials[n]) == len(grids[n]):
                    # step 2: the other seeds at the rate chosen on validation
                    best = max(trials[n], key=lambda r: (r["val_acc"], -r["lr"]))
                    for s in budget.seeds[1:]:
                        pending[runner.submit(n, best["lr"], s, budget, data)] = ("seed", n)
                if progress:
                    r = (trials if kind == "grid" else extra)[n][-1]
                    print(f"{n:<11} lr={r['lr']:<7g} seed={r['seed']} val={r['val_acc']:.3f}  "
                          f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
    finally:
        runner.close()
    results = {}
    for n in names:
        ts = sorted(trials[n], key=lambda r: r["lr"])
        best = max(ts, key=lambda r: (r["val_acc"], -r["lr"]))
        runs = [best] + sorted(extra[n], key=lambda r: r["seed"])
        results[n] = _summary(METHODS[n], grids[n], ts, runs, n_model)
        if progress:
            r = results[n]
            print(f"{n:<11} lr={r['lr']:<7g} test={r['mean']:.3f}±{r['std']:.3f} "
                  f"trainable={r['trainable']:>9,} ({r['pct']:.3f}%)", file=sys.stderr)
    # step 3: inference latency, alone on the machine
    for n, lat in measure_latency(names, rounds=budget.latency_rounds).items():
        results[n].update(lat)
    return {"budget": asdict(budget), "n_model": n_model, "methods": results, "jobs": jobs,
            "versions": {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()},
            "threads": 1 if jobs > 1 else torch.get_num_threads()}


def save(res: dict, path=RESULTS) -> Path:
    return R.save(res, path)


def load(path=RESULTS) -> dict:
    return R.load(path, "`make compare`", keys=("methods", "budget"), what="compare results")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ci", action="store_true", help="the reduced CI budget (one seed, few steps)")
    ap.add_argument("--methods", nargs="*", default=None)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                    help="worker processes, one thread each (default: one per CPU core)")
    ap.add_argument("--latency-only", action="store_true",
                    help="keep the accuracies in --out, measure the inference latency again")
    args = ap.parse_args(argv)
    if args.latency_only:
        res = load(args.out)
        res["budget"]["latency_rounds"] = FULL.latency_rounds
        for n, lat in measure_latency(list(res["methods"]), rounds=FULL.latency_rounds).items():
            res["methods"][n].update(lat)
    else:
        res = compare(args.methods, CI if args.ci else FULL, jobs=args.jobs)
    print(save(res, args.out))


if __name__ == "__main__":
    main()
