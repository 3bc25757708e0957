"""Chapter 03's experiment: adapters (Houlsby, Pfeiffer, parallel) vs LoRA (q,v) on VADER polarity.

Run:  python -m pedagogy_lib.book.ch03.experiment   (``make sweeps``; about 25 CPU-minutes, one thread:
24 measured for 7 arms × 5 seeds and the grid runs, 56 min wall on the shared 2-core machine)
Writes chapters/results/ch03_accuracy.json; every finished run is also appended to
build/ch03_runs.jsonl, so an interrupted sweep resumes where it stopped (``--fresh``: retrain).

Protocol (``runner.protocol``, chapter 08's: Eqs. 8.1–8.7): every arm trains with the book's
one loop on a class-balanced subsample of 1,024 training words, 3 epochs, head learning rate
1e-3. Each arm's rate is the one of its grid with the best validation accuracy (the whole
validation split) averaged over seeds 0 and 1; while it sits at an edge of the grid the grid
is extended by its own ratio (at most twice; a rate still at an edge is stored with
``bracketed: False`` and carries no verdict). Then seeds 2, 3, 4 at that rate: every arm sees
the same five seeds (subsample, head and adapter init, order), so arms compare by paired
per-seed differences on the whole test split. Arms run one after the other, so a cut sweep
(``--arms``) still has whole arms.
``latency_variants`` builds the networks chapter 03 and ``bench_adapters`` time.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pedagogy_lib import adapters, counting, data, lora, runner, stats
from pedagogy_lib import results as R
from pedagogy_lib.adapters import PLACEMENTS
from pedagogy_lib.book.rules import points_by_seed, unbracketed
from pedagogy_lib.registry import Arm, arms
from pedagogy_lib.torch_ref import adapters as TA
from pedagogy_lib.torch_ref import lora as TL

OUT = R.RESULTS / "ch03_accuracy.json"
LRS = (1e-3, 3e-3, 1e-2)
# chapter 08's protocol (5 seeds, rates chosen over 2, grids extended at most twice) with
# chapter 03's per-run budget (1,024 words, 3 epochs, head rate 1e-3, a subsample per seed)
BUDGET = runner.Budget(n_train=1024, n_eval=None, epochs=3, batch_size=32, seeds=(0, 1, 2, 3, 4), head_lr=1e-3,
                       resample=True, select_seeds=2, max_extensions=2)
RUN_LOG = R.RESULTS.parent.parent / "build" / "ch03_runs.jsonl"  # finished runs, for resuming
# Sizes chosen so that the first four have about LoRA r=8 (q,v)'s count; the others are the
# usual settings (Houlsby m=64) and the same m in two placements.
LORA = "LoRA r=8 (q,v)"  # the arm every adapter is paired with
ARMS = arms(Arm(LORA, "lora", {"r": 8, "alpha": 8}, LRS),
            *[Arm(f"{label} m={m}", kind, {"m": m}, LRS)
              for label, kind, m in (("Houlsby", "houlsby", 8), ("Pfeiffer", "pfeiffer", 16),
                                     ("parallel", "parallel", 16), ("Houlsby", "houlsby", 16),
                                     ("Houlsby", "houlsby", 64), ("Pfeiffer", "pfeiffer", 64))])


# ---------------------------------------------------------- stored results, checks
def load(name: str) -> dict:
    """A chapter-03 results file, e.g. load("ch03_latency")."""
    return R.load(name, "python -m pedagogy_lib.book.ch03.experiment or bench_adapters.py")


def params_data(ms=(4, 8, 16, 32, 64, 128, 256), ranks=(4, 8, 16)) -> dict:
    """Adapter counts (Eq. 3.5) per placement and m, and LoRA (q,v) counts, for MiniLM."""
    s = counting.minilm_shape()
    return {"model": s.name, "ms": list(ms), "ranks": list(ranks), "total": counting.total_params(s),
            "adapters": {p: [adapters.adapter_params(s.hidden, m, p, s.layers) for m in ms]
                         for p in adapters.PLACEMENTS},
            "lora": {r: lora.lora_params(s, r) for r in ranks}}


def load_results() -> dict:
    """{"latency": ch03_latency.json, "accuracy": ch03_accuracy.json}."""
    return {key: load(f"ch03_{key}") for key in ("latency", "accuracy")}


# ------------------------------------- the sweep's arms paired by seed (claims and figures)
def by_seed(acc: dict, name: str, split: str = "test") -> dict[int, float]:
    """{seed: accuracy in points} of one arm at its chosen rate (``split`` "test" or "val"):
    runs of one seed share subsample, head init and order across arms, so arms pair by seed."""
    return points_by_seed(acc["results"][name], f"{split}_by_seed", seeds=acc["config"]["seeds"])


def versus(acc: dict, a: str, b: str = LORA, split: str = "test") -> dict:
    """The paired difference a − b in points over the seeds both ran (Eqs. 8.4–8.7):
    mean, SE, 95 % t-interval, ``tie`` (the interval contains 0)."""
    return stats.paired_by_seed(by_seed(acc, a, split), by_seed(acc, b, split))


def edges(acc: dict) -> dict[str, str]:
    """{arm: 'low'|'high'} for each arm whose chosen rate sits at an edge of its (extended)
    grid: no verdict may rest on it (``stats.bracketed`` on the stored mean validation scores)."""
    return unbracketed({n: r["val_by_lr"] for n, r in acc["results"].items()})


def identity_deviation(d: int = 384, m: int = 64, init_scale: float = 1e-3, seed: int = 0) -> dict:
    """max |Adapter(h) − h| at init for h ~ N(0, 1), with W_up = 0 and W_up ~ N(0, init_scale²)."""
    h = np.random.default_rng(seed).standard_normal((64, d))
    exact = adapters.Adapter(d, m, init_scale=0.0, rng=np.random.default_rng(seed))
    near = adapters.Adapter(d, m, init_scale=init_scale, rng=np.random.default_rng(seed))
    return {"exact": float(np.abs(exact(h) - h).max()), "near": float(np.abs(near(h) - h).max()),
            "init_scale": init_scale}


# ------------------------------------------------------------------ the sweep
def _row(arm: Arm, found: dict) -> dict:
    """What the chapter reads per arm: the search (grid with its extensions, mean validation
    accuracy per rate over the selection seeds, the chosen rate, bracketed or not) and every
    seed's validation and test accuracy at the chosen rate."""
    runs = found["runs"]
    test = [round(r["test_acc"], 6) for r in runs]
    return {"kind": arm.method, "size": arm.opts.get("r", arm.opts.get("m")),
            "trainable": runs[-1]["trainable"], **R.selection(found["selection"], 6),
            "seeds": [r["seed"] for r in runs], "val_by_seed": [round(r["val_acc"], 6) for r in runs],
            "test_by_seed": test, "test_mean": round(float(np.mean(test)), 6),
            "test_std": round(float(np.std(test, ddof=1)), 6),
            "cpu_s": round(sum(r["cpu_s"] for r in R.trained(found)), 1)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arms", nargs="*", default=list(ARMS), help=f"a subset of {list(ARMS)}")
    ap.add_argument("--jobs", type=runner.cli_count, default=1, help="worker processes, one thread each")
    ap.add_argument("--log", default=str(RUN_LOG), help="finished runs (JSON lines): read to resume, appended to")
    ap.add_argument("--fresh", action="store_true", help="ignore the run log, train everything again")
    args = ap.parse_args(argv)
    unknown = [a for a in args.arms if a not in ARMS]
    if unknown:
        raise SystemExit(f"unknown arm(s) {unknown}; choose from {list(ARMS)}")
    task, t0 = data.polarity_task(), time.time()
    done, on_result = runner.run_log(Path(args.log), BUDGET, ARMS.values())  # finished runs of this budget, and the logger
    done = {} if args.fresh else done
    found = {}
    for label in args.arms:  # one arm at a time: a cut sweep still has whole arms
        found |= runner.protocol([ARMS[label]], task, BUDGET, jobs=args.jobs, done=done, on_result=on_result)
        print(f"{label}: done, {time.time() - t0:.0f} s wall", file=sys.stderr, flush=True)
    out = {
        "config": {"n_train": BUDGET.n_train, "epochs": BUDGET.epochs, "batch_size": BUDGET.batch_size,
                   "head_lr": BUDGET.head_lr, "lrs": list(LRS), "seeds": list(BUDGET.seeds),
                   "select_seeds": BUDGET.select_seeds, "max_extensions": BUDGET.max_extensions,
                   "schedule": "linear", "warmup": 0.06, "n_val": len(task.val), "n_test": len(task.test),
                   "task": "VADER polarity, threshold 0.6"},
        "results": {label: _row(arm, found[label]) for label, arm in ARMS.items() if label in found},
        "cpu_s_runs": round(sum(_row(ARMS[n], found[n])["cpu_s"] for n in args.arms), 1),
        "reused_runs": len(done), "wall_s": round(time.time() - t0, 1),
        "versions": R.versions("numpy", "torch"),
    }
    print(f"wrote {R.save(out, OUT)}")


def latency_variants(bert: nn.Module, m: int = 64, r: int = 8, seed: int = 0) -> dict[str, nn.Module]:
    """Copies of one torch encoder, ready to time: no adapter, each placement with bottleneck
    m, and LoRA (q,v) of rank r unmerged and merged (merged, then unwrapped to plain
    Linears, as ``merge_and_unload`` leaves it). Adapter and B weights are small but nonzero.
    """
    out = {"none": copy.deepcopy(bert)}
    for placement in PLACEMENTS:
        b = copy.deepcopy(bert)
        TA.attach_adapters(b, placement, m, init_scale=1e-2, seed=seed)
        out[placement] = b
    lora = copy.deepcopy(bert)
    TL.attach_lora(lora, ("query", "value"), r=r, alpha=r, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in TL.lora_layers(lora).values():
            layer.lora_B.copy_(1e-2 * torch.randn(layer.lora_B.shape, generator=gen))
    merged = copy.deepcopy(lora)
    TL.merge_all(merged)
    for path, layer in TL.lora_layers(merged).items():
        merged.set_submodule(path, layer.base_layer)  # W₀ + sBA is now just a Linear
    out["LoRA unmerged"], out["LoRA merged"] = lora, merged
    for model in out.values():
        model.eval().requires_grad_(False)
    return out


if __name__ == "__main__":
    main()
