"""Chapter 08's experiment: every method on the same task, budget, seeds and training loop.

The arms are registry methods at their usual settings (``ARMS``); the route (load MiniLM,
attach, head, loop), the learning-rate protocol, the latency timer and the memory count
are the runner's, shared with every other chapter. Protocol (``runner.protocol``):
1. each arm's grid at seed 0; keep the rate with the best *validation* accuracy (ties → the
   smaller rate); the two-point grids sit where chapters 02–06 found each method's best rate;
2. the remaining seeds at that rate;
3. test accuracy mean ± std over seeds, trainable parameters (head excluded) and their
   share of MiniLM, seconds per epoch, training-step memory and inference latency (merged
   where the method allows it), timed afterwards, alone.

``python -m pedagogy_lib.book.ch08.experiment`` (= ``make compare``) runs the full protocol
and writes ``chapters/results/ch08_compare.json``; the CI budget runs the same code path,
smaller. The numbers do not depend on ``--jobs``: every run seeds everything it uses.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
from dataclasses import asdict

import numpy as np
import torch

from pedagogy_lib import data as D
from pedagogy_lib import results as R
from pedagogy_lib import runner
from pedagogy_lib.registry import Arm, arms
from pedagogy_lib.runner import Budget

RESULTS = R.RESULTS / "ch08_compare.json"
FULL = Budget()
CI = Budget(n_train=64, n_eval=64, epochs=1, batch_size=32, seeds=(0,), full_grid=False, latency_rounds=3)

ARMS = arms(
    Arm("probe", "probe", note="frozen encoder, head only"),
    Arm("full", "full", note="every weight"),
    Arm("lora_qv", "lora", note="r=8, α=16 on W_q, W_v"),
    Arm("lora_all", "lora", {"targets": "all-linear"}, note="r=8, α=16 on every linear layer"),
    Arm("houlsby", "houlsby", note="m=16, two adapters per block"),
    Arm("pfeiffer", "pfeiffer", note="m=32, one adapter per block"),
    Arm("prefix", "prefix", note="m=10 virtual tokens, MLP reparameterisation (folded for inference)"),
    Arm("prompt", "prompt", note="m=10 soft prompt at the input, init from the 5,000 first whole-word tokens"),
    Arm("ptuning_v2", "ptuning_v2", note="m=10 per-layer keys/values, no reparameterisation"),
    Arm("bitfit", "bitfit", note="biases + LayerNorm β"),
    Arm("ia3", "ia3", note="l_k, l_v and l_ff (FFN hidden), started at 1"),
    Arm("qlora", "qlora", note="NF4+DQ base (bitsandbytes Linear4bit), LoRA r=8 on W_q, W_v"),
)


def check_arms(names) -> list[str]:
    names = list(ARMS) if names is None else list(names)
    unknown = [n for n in names if n not in ARMS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(ARMS)}")
    return names


def _summary(arm: Arm, budget: Budget, res: dict, n_model: int) -> dict:
    best, runs = res["runs"][0], res["runs"]
    accs = [r["test_acc"] for r in runs]
    return {"note": arm.note, "lr_grid": list(runner.grid(arm, budget)), "lr": best["lr"],
            "val_by_lr": {f"{t['lr']:g}": t["val_acc"] for t in res["trials"]},
            "test_acc": accs, "mean": statistics.fmean(accs),
            "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "trainable": best["trainable"], "pct": 100 * best["trainable"] / n_model,
            "sec_per_epoch": statistics.fmean(r["sec_per_epoch"] for r in runs),
            "memory": best["memory"]}


def compare(names=None, budget: Budget = FULL, progress: bool = True, jobs: int = 1) -> dict:
    """The protocol of the module docstring over ``jobs`` processes; returns a JSON-ready dict."""
    chosen = [ARMS[n] for n in check_arms(names)]
    n_model = sum(p.numel() for p in runner.fresh_minilm().net.parameters())
    found = runner.protocol(chosen, D.polarity_task(), budget, jobs=jobs, progress=progress)
    results = {a.label: _summary(a, budget, found[a.label], n_model) for a in chosen}
    if progress:
        for n, r in results.items():
            print(f"{n:<11} lr={r['lr']:<7g} test={r['mean']:.3f}±{r['std']:.3f} "
                  f"trainable={r['trainable']:>9,} ({r['pct']:.3f}%)", file=sys.stderr)
    for n, lat in runner.measure_latency(chosen, rounds=budget.latency_rounds).items():
        results[n].update(lat)  # step 3, alone on the machine
    return {"budget": _budget_record(budget), "n_model": n_model, "methods": results, "jobs": jobs,
            "versions": {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()},
            "threads": 1 if jobs > 1 else torch.get_num_threads()}


def _budget_record(budget: Budget) -> dict:
    """The budget as stored (the fields chapter 08 reads; the defaults of the others)."""
    keep = ("n_train", "n_eval", "epochs", "batch_size", "seeds", "full_grid", "latency_rounds")
    return {k: v for k, v in asdict(budget).items() if k in keep}


def save(res: dict, path=RESULTS):
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
        chosen = [ARMS[n] for n in check_arms(res["methods"])]
        for n, lat in runner.measure_latency(chosen, rounds=FULL.latency_rounds).items():
            res["methods"][n].update(lat)
    else:
        res = compare(args.methods, CI if args.ci else FULL, jobs=args.jobs)
    print(save(res, args.out))


if __name__ == "__main__":
    main()
