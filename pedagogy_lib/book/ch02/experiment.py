"""Chapter 02's sweeps, too slow for the notebook: learning rate, placement, rank.

    python -m pedagogy_lib.book.ch02.experiment [--jobs 2] [--quick]

writes ``chapters/results/ch02_sweeps.json``, which the chapter and ``make figures`` read
(``--quick``: a tiny smoke run, written to the temp directory). Every run is ``runner.run``
of a registry arm on MiniLM + the VADER polarity task (``BUDGET``): a class-balanced
subsample of N_TRAIN training words (the same for every seed), EPOCHS epochs, batch 32, cosine
schedule, head learning rate HEAD_LR, scored on the whole validation and test splits.

Stages (``runner.protocol``, chapter 08's Eqs. 8.1–8.7; every later stage starts from the LoRA
rate that stage A chose):
  A  learning rate: probe, LoRA (q,v, r=8, α=8) and full fine-tuning, each grid at SEEDS; the
     rate with the best mean validation accuracy (a grid whose best rate sits at an edge is
     extended, at most MAX_EXTENSIONS times)
  B  every EVAL_SEED for each method at its chosen rate (main comparison)
  C  placement at a fixed budget (the q,v r=8 parameter count) plus two same-rank settings,
     each arm with its own grid (``stage_c_grid``: stage A's LoRA rate and its two neighbours in
     the grid stage A searched, LRS["lora"] plus any extension), chosen and extended
     as in stage A, then every EVAL_SEED at its chosen rate (issue #13: no order between arms
     may rest on a rate tuned for only one of them)
  D  rank sweep r ∈ RANKS on (q,v) at fixed α=8, with s = α/r and with rsLoRA's s = α/√r, every
     rank at stage A's LoRA rate (the claim it tests is about one fixed rate)
Every finished run is appended to build/ch02_runs.jsonl (``runner.run_log``), so an
interrupted sweep resumes; the runs of the stored results file are reused too (``reuse``), so a
rerun trains only the (arm, rate, seed) runs it lacks. One thread per process; ``--jobs`` processes at once.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pedagogy_lib import checkpoint, data, lora, runner, stats
from pedagogy_lib import results as R
from pedagogy_lib.bert import BertConfig, BertEncoder
from pedagogy_lib.registry import Arm
from pedagogy_lib.torch_ref import lora as TL

RESULTS = R.RESULTS
OUT = RESULTS / "ch02_sweeps.json"
RUN_LOG = RESULTS.parent.parent / "build" / "ch02_runs.jsonl"  # finished runs, for resuming
N_TRAIN, EPOCHS, BATCH, HEAD_LR, MAX_EXTENSIONS = 2048, 2, 32, 1e-3, 2
SEEDS = (0, 1)                   # the learning rate is chosen on these (stage A)
EVAL_SEEDS = (0, 1, 2, 3, 4)     # every comparison (stages B–D) is paired over these
BUDGET = runner.Budget(n_train=N_TRAIN, n_eval=None, epochs=EPOCHS, batch_size=BATCH, seeds=EVAL_SEEDS,
                       head_lr=HEAD_LR, schedule="cosine", select_seeds=len(SEEDS), max_extensions=MAX_EXTENSIONS)
LRS = {"probe": [1e-3, 3e-3, 1e-2, 3e-2],
       "lora": [3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2],
       "full": [1e-5, 3e-5, 1e-4, 3e-4, 1e-3]}
RANKS = [1, 2, 4, 8, 16, 64]
ALPHA = 8
QV = ["query", "value"]
FFN = r"encoder\.layer\.\d+\.(intermediate|output)\.dense"  # not attention.output.dense
PLACEMENTS = {  # name: targets; r is chosen to spend the (q,v) r=8 budget
    "q": ["query"], "v": ["value"], "q,v": QV,
    "q,k,v,o": ["query", "key", "value", "attention.output.dense"],
    "FFN only": FFN, "all linear": "all-linear",
}
SAME_RANK = {"q,k,v,o": PLACEMENTS["q,k,v,o"], "all linear": "all-linear"}  # at r=8


# ------------------------------------------------------- stored results
def load_sweeps(path=OUT) -> dict:
    """The finished sweep (its ``summary`` is written last: a sweep cut short has none)."""
    return R.load(path, "python -m pedagogy_lib.book.ch02.experiment (it resumes)", keys=("summary",),
                  what="finished chapter 02 sweep")


def load_json(name: str) -> dict:
    command = "python -m pedagogy_lib.book.ch02.experiment" if "sweeps" in name else "tests/bench/bench_lora.py"
    return R.load(RESULTS / name, command)


def by_seed(setting: dict, key: str = "test_acc") -> dict:
    """{seed: accuracy in points} of one summarised setting (``_stats``): what pairs by seed."""
    if len(setting["seeds"]) != len(setting[key]):
        raise ValueError(f"by_seed: {len(setting['seeds'])} seeds but {len(setting[key])} values of {key!r}")
    return {int(s): 100 * float(a) for s, a in zip(setting["seeds"], setting[key])}


def paired(a: dict, b: dict, key: str = "test_acc") -> dict:
    """a − b in points, matched by seed (chapter 08, Eqs. 8.4–8.7; ``stats.paired_by_seed``):
    mean, SE, 95 % t-interval with n − 1 degrees of freedom, n, and ``tie``."""
    return stats.paired_by_seed(by_seed(a, key), by_seed(b, key))


def gain(a: dict, b: dict, key: str = "test_acc") -> dict:
    """{seed: a − b in points}: one setting's gain over another, seed by seed (to pair two gains)."""
    x, y = by_seed(a, key), by_seed(b, key)
    if set(x) != set(y):
        raise ValueError(f"gain: the two settings need the same seeds, got {sorted(x)} and {sorted(y)}")
    return {s: x[s] - y[s] for s in x}


# ------------------------------------------------------------------ the sweeps
def lora_arm(targets=QV, r: int = 8, rslora: bool = False, lrs=None) -> Arm:
    """The registry's ``lora`` at α = ALPHA; one label per setting, so a setting two stages share runs once."""
    name = next((k for k, t in PLACEMENTS.items() if t == targets), str(targets))
    return Arm(f"lora {name} r={r}" + (" rsLoRA" if rslora else ""), "lora",
               {"targets": targets, "r": r, "alpha": ALPHA, "rslora": rslora}, None if lrs is None else tuple(lrs))


def report(clf) -> dict:
    """What a run adds to the runner's record: the encoder's own size, and for LoRA the number
    of adapted matrices and their mean ‖s·BA‖_F."""
    out = {"total": sum(p.numel() for n, p in clf.encoder.named_parameters() if "lora_" not in n)}
    layers = TL.lora_layers(clf.encoder.bert)
    if layers:
        with torch.no_grad():
            out |= {"n_matrices": len(layers),
                    "delta_norm": float(np.mean([float(m.delta_weight().norm()) for m in layers.values()]))}
    return out


RUN = functools.partial(runner.run, report=report)  # every run of the sweep (picklable, for --jobs)


def live_run(train, val, lr: float, seed: int = 0):
    """The chapter's one live run: LoRA q,v r=8 at BUDGET on ``train``, scored on ``val``;
    returns (record, the trained MiniLM)."""
    return runner.run(lora_arm(), None, BUDGET, seed, lr, data=(train, val, val), report=report, return_model=True)


@functools.lru_cache(maxsize=1)
def _linear_shapes() -> dict:
    return lora.linear_paths(BertEncoder(BertConfig.from_dict(checkpoint.load_config())))


def budget_rank(targets, budget: int) -> int:
    """The rank whose parameter count on MiniLM is closest to ``budget``."""
    shapes = _linear_shapes()
    return min(range(1, 65), key=lambda r: abs(lora.lora_params(shapes, r, targets) - budget))


def stored(arm: Arm, r: dict, b: runner.Budget) -> dict:
    """A runner record as the results file keeps it: the run's settings under "spec" and its
    final loss over the last 10 steps."""
    spec = {"method": arm.method, "lr": r["lr"], "seed": r["seed"], "n_train": b.n_train, "epochs": b.epochs,
            "n_eval": b.n_eval, **(arm.opts if arm.method == "lora" else {})}
    keep = ("cpu_s", "val_acc", "test_acc", "trainable", "total", "n_matrices", "delta_norm")
    return {"spec": spec, "final_loss": float(np.mean(r["losses"][-10:])), **{k: r[k] for k in keep if k in r}}


def _mean(runs, key="test_acc"):
    return sum(r[key] for r in runs) / len(runs)


def _stats(runs) -> dict:
    """Accuracies and their means over one setting's seeds (and ‖s·BA‖ for LoRA)."""
    return {"test_acc": [r["test_acc"] for r in runs], "val_acc": [r["val_acc"] for r in runs],
            "mean_test": _mean(runs), "mean_val": _mean(runs, "val_acc"), "trainable": runs[0]["trainable"],
            "final_loss": _mean(runs, "final_loss"), "seeds": [r["spec"]["seed"] for r in runs],
            **({"delta_norm": _mean(runs, "delta_norm"), "r": runs[0]["spec"]["r"]}
               if runs[0]["spec"]["method"] == "lora" else {})}


def base_arms(lrs=LRS) -> dict:
    """Stages A and B: {method: arm} over its grid of ``lrs``."""
    return {"probe": Arm("probe", "probe", lrs=tuple(lrs["probe"])), "lora": lora_arm(lrs=lrs["lora"]),
            "full": Arm("full", "full", lrs=tuple(lrs["full"]))}


def stage_c_grid(grid, lr: float) -> tuple:
    """Stage C's grid: the rate ``lr`` stage A chose from its ``grid`` and that rate's
    neighbours in it (1e-3, 3e-3, 1e-2 around 3e-3). Pass the grid stage A *searched*
    (its extensions included): a rate chosen at an extension is on no starting grid."""
    g = sorted(grid)
    if lr not in g:
        raise ValueError(f"stage_c_grid: the chosen rate {lr:g} is not on the grid {g}")
    i = g.index(lr)
    return tuple(g[max(i - 1, 0):i + 2])


def stages(lr: float, budget: int, ranks=RANKS, grid=None) -> dict:
    """Stages C and D: each placement and same-rank arm over its own ``grid`` (``stage_c_grid``;
    None: the one rate ``lr``), every rank arm at the rate ``lr`` stage A chose for LoRA q,v r=8."""
    one, c = (lr,), tuple(grid or (lr,))
    return {"placement": {k: lora_arm(t, 8 if k == "q,v" else budget_rank(t, budget), lrs=c)
                          for k, t in PLACEMENTS.items()},
            "same_rank": {k: lora_arm(t, 8, lrs=c) for k, t in SAME_RANK.items()},
            "rank": {("rslora" if rs else "alpha_over_r"): {str(r): lora_arm(QV, r, rs, one) for r in ranks}
                     for rs in (False, True)}}


def reuse(doc: dict | None, arms, budget: runner.Budget) -> dict:
    """The runs of a stored results file ``doc`` (None: none) that belong to ``arms``, as
    ``runner.protocol``'s ``done`` {(label, lr, seed): record}: what a rerun need not train."""
    if doc is None:
        return {}
    by_spec = {json.dumps(r["spec"], sort_keys=True): r for r in doc["runs"]}
    out = {}
    for arm in arms:
        for lr, seed in {(r["spec"]["lr"], r["spec"]["seed"]) for r in doc["runs"]}:
            spec = stored(arm, {"lr": lr, "seed": seed, "losses": [0.0]}, budget)["spec"]
            r = by_spec.get(json.dumps(spec, sort_keys=True))
            if r is not None:
                rec = {k: v for k, v in r.items() if k not in ("spec", "final_loss")}
                out[(arm.label, lr, seed)] = {**rec, "method": arm.label, "lr": lr, "seed": seed,
                                              "losses": [r["final_loss"]]}
    return out


def _chosen(res: dict) -> dict:
    """A stage-C arm's own search: its grid's mean validation at the selection seeds, the
    chosen rate, whether that rate is bracketed, the extensions made."""
    sel = res["selection"]
    return {"lr": sel["chosen"], "val_by_lr": {f"{lr:g}": v for lr, v in zip(sel["grid"], sel["scores"])},
            "bracketed": sel["bracketed"], "extensions": sel["extensions"]}


def sweep(budget=BUDGET, lrs=LRS, ranks=RANKS, jobs: int = 1, log=RUN_LOG, run_fn=RUN, progress=True,
          previous: dict | None = None) -> dict:
    """Stages A–D of the module docstring; returns the results file's "runs" and "summary".
    ``run_fn`` replaces ``RUN`` (tests); the runs of ``previous`` (a stored results file) are
    reused (``reuse``)."""
    task = data.polarity_task(seed=0)
    base = base_arms(lrs)
    done, on_result = runner.run_log(log, budget, base.values())  # stages C/D's labels name their options
    go = lambda arms, b: runner.protocol(arms, task, b, jobs, progress, run_fn, done, on_result)  # noqa: E731
    done |= reuse(previous, base.values(), budget)
    ab = go(base.values(), budget)                                     # A and B
    for label, f in ab.items():  # the q,v r=8 runs of stage A are stage C's and D's too
        done |= {(label, r["lr"], r["seed"]): r for r in f["trials"] + f["runs"]}
    best = {m: ab[a.label]["selection"]["chosen"] for m, a in base.items()}
    qv = ab[base["lora"].label]["runs"][0]  # LoRA q,v r=8 at its rate, seed 0: the budget of stage C
    searched = ab[base["lora"].label]["selection"]["grid"]  # lrs["lora"] and any extension stage A made
    cd = stages(best["lora"], qv["trainable"], ranks, stage_c_grid(searched, best["lora"]))
    c_arms = {a.label: a for g in (cd["placement"], cd["same_rank"]) for a in g.values()}
    d_arms = {a.label: a for g in cd["rank"].values() for a in g.values()}
    done |= reuse(previous, [*c_arms.values(), *d_arms.values()], budget)
    found_c = go(c_arms.values(), budget)                               # C: each arm its own grid
    found_d = go(d_arms.values(), dataclasses.replace(budget, max_extensions=0))  # D: one rate each
    arms = c_arms | d_arms | {a.label: a for a in base.values()}
    every = {(label, r["lr"], r["seed"]): stored(arms[label], r, budget)
             for res in (ab, found_c, found_d) for label, f in res.items() for r in f["trials"] + f["runs"]}
    rec = lambda arm, res: _stats([every[arm.label, r["lr"], r["seed"]] for r in res[arm.label]["runs"]])  # noqa: E731
    lr_sweep = {m: {f"{lr:g}": _stats([every[a.label, lr, s] for s in budget.seeds[:budget.select_seeds]])
                    for lr in ab[a.label]["selection"]["grid"]} for m, a in base.items()}
    summary = {"best_lr": best, "total_params": qv["total"], "budget": qv["trainable"],
               "lr_sweep": lr_sweep, "main": {m: {"lr": best[m], **rec(a, ab)} for m, a in base.items()},
               **{k: {n: {**rec(a, found_c), **_chosen(found_c[a.label])} for n, a in cd[k].items()}
                  for k in ("placement", "same_rank")},
               "rank": {k: {n: rec(a, found_d) for n, a in g.items()} for k, g in cd["rank"].items()}}
    return {"runs": sorted(every.values(), key=lambda r: json.dumps(r["spec"], sort_keys=True)), "summary": summary}


def config(b: runner.Budget = BUDGET, lrs=LRS, ranks=RANKS, quick: bool = False) -> dict:
    """The settings the results file records."""
    return {"n_train": b.n_train, "epochs": b.epochs, "batch_size": b.batch_size, "head_lr": b.head_lr,
            "schedule": b.schedule, "warmup": 0.06, "seeds": list(b.seeds[:b.select_seeds]),
            "eval_seeds": list(b.seeds), "max_extensions": b.max_extensions, "lrs": lrs, "ranks": ranks,
            "alpha": ALPHA, "placements": PLACEMENTS, "same_rank": SAME_RANK, "quick": quick,
            "stage_c_lrs": "stage_c_grid(lrs['lora'], the rate stage A chose), extended as stage A's",
            "stage_d_lrs": "the rate stage A chose for LoRA q,v r=8",
            "data": "data.polarity_task(seed=0); subsample(train, n_train, 0); "
                    + ("val and test subsampled to 64" if quick else "full val and test splits")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=runner.cli_count, default=1)
    ap.add_argument("--quick", action="store_true", help="tiny smoke run, written to the temp dir")
    args = ap.parse_args(argv)
    budget, lrs, ranks, out, log = BUDGET, LRS, RANKS, OUT, RUN_LOG
    if args.quick:  # a smoke test of the whole pipeline, written outside the repository, no run log
        budget = dataclasses.replace(BUDGET, n_train=64, n_eval=64, epochs=1, seeds=(0,), select_seeds=1,
                                     max_extensions=0)
        lrs, ranks, log = {k: v[:1] for k, v in LRS.items()}, [1, 8, 16], None
        out = Path(tempfile.gettempdir()) / "ch02_sweeps_quick.json"
    t0 = time.time()
    previous = None if args.quick or not out.exists() else json.loads(out.read_text())
    res = sweep(budget, lrs, ranks, args.jobs, log, previous=previous)
    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
                "threads_per_run": 1}
    doc = {"about": "chapter 02 sweeps; regenerate with python -m pedagogy_lib.book.ch02.experiment",
           "config": config(budget, lrs, ranks, args.quick), **res, "versions": versions}
    print(f"wrote {R.save(doc, out)} in {time.time() - t0:.0f} s")
    print(json.dumps({k: res["summary"][k] for k in ("best_lr", "budget")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
