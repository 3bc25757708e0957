"""Chapter 08's experiment: every method on the same task, budget, seeds and training loop.

The arms are registry methods at their usual settings (``ARMS``: the arms every registry
record names in its ``compared`` field, in registry order: LoRA twice, on W_q, W_v and on
every linear layer; chapter 01's random subspace none); the route (load MiniLM, attach, head,
loop), the learning-rate protocol, the latency timer and the memory count are the runner's,
shared with every other chapter. Protocol (``runner.protocol``, chapter 08 Eqs. 8.1–8.7):
1. each arm's grid (three rates around the best one earlier runs found) at seeds 0 and 1;
   keep the rate with the best *mean validation* accuracy (ties → the smaller rate); while
   it sits at an edge, extend the grid by its own ratio (at most twice; a rate still at an
   edge is recorded as ``bracketed: False``);
2. seeds 2, 3, 4 at that rate: every arm sees the same five seeds (data order, head init),
   so the chapter compares arms by paired per-seed differences;
3. test accuracy on the whole test split per seed, trainable parameters (head excluded) and
   their share of MiniLM, seconds per epoch, training-step memory and inference latency
   (merged where the method allows it), timed afterwards, alone.

``python -m pedagogy_lib.book.ch08.experiment`` (= ``make compare``) runs the full protocol
and writes ``chapters/results/ch08_compare.json``; every finished run is also appended to
``build/ch08_runs.jsonl``, so an interrupted run resumes where it stopped. The CI budget
runs the same code path, smaller. The numbers do not depend on ``--jobs``: every run seeds
everything it uses.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict

import torch

from pedagogy_lib import data as D
from pedagogy_lib import results as R
from pedagogy_lib import runner
from pedagogy_lib.book.evidence.ch08 import RESULTS, load  # the stored file and its reader, shared
from pedagogy_lib.registry import Arm, compared_arms
from pedagogy_lib.runner import Budget
# the per-run budget of the first chapter 08 (1,024 training words, 2 epochs, batch 32), now
# with the whole validation and test splits, 5 seeds, rates chosen over 2 seeds and grids
# extended (at most twice) until bracketed
FULL = Budget(n_eval=None, seeds=(0, 1, 2, 3, 4), select_seeds=2, max_extensions=2)
CI = Budget(n_train=64, n_eval=64, epochs=1, batch_size=32, seeds=(0,), full_grid=False, latency_rounds=3)
RUN_LOG = R.RESULTS.parent.parent / "build" / "ch08_runs.jsonl"  # finished runs, for resuming

# every registry record's chapter 08 arms (``Method.compared``), in registry order: 15 arms,
# LoRA twice (W_q, W_v and every linear layer); chapter 01's random subspace is not compared
ARMS = compared_arms()


def check_arms(names) -> list[str]:
    names = list(ARMS) if names is None else list(names)
    unknown = [n for n in names if n not in ARMS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(ARMS)}")
    return names


def _summary(arm: Arm, res: dict, n_model: int) -> dict:
    """What the chapter reads per method: the search (grid, mean validation accuracy per rate,
    the chosen rate, bracketed or not), every seed's test accuracy, and the costs."""
    runs = res["runs"]
    accs = [r["test_acc"] for r in runs]
    return {"note": arm.note, **R.selection(res["selection"]),
            "seeds": [r["seed"] for r in runs], "test_acc": accs, "mean": statistics.fmean(accs),
            "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "trainable": runs[0]["trainable"], "pct": 100 * runs[0]["trainable"] / n_model,
            "sec_per_epoch": statistics.fmean(r["sec_per_epoch"] for r in runs),
            "cpu_s": sum(r["cpu_s"] for r in R.trained(res)),
            "memory": runs[0]["memory"]}


def compare(names=None, budget: Budget = FULL, progress: bool = True, jobs: int = 1, log=None) -> dict:
    """The protocol of the module docstring over ``jobs`` processes; returns a JSON-ready dict.
    ``log``: a JSON-lines file of finished runs, read first (runs found there are not trained
    again) and appended to, so an interrupted ``make compare`` resumes."""
    chosen = [ARMS[n] for n in check_arms(names)]
    n_model = sum(p.numel() for p in runner.fresh_minilm().net.parameters())
    task, t0 = D.polarity_task(), time.time()
    done, on_result = runner.run_log(log, budget, chosen)
    found = runner.protocol(chosen, task, budget, jobs=jobs, progress=progress, done=done, on_result=on_result)
    results = {a.label: _summary(a, found[a.label], n_model) for a in chosen}
    if progress:
        for n, r in results.items():
            print(f"{n:<11} lr={r['lr']:<7g} test={r['mean']:.3f}±{r['std']:.3f} (sd) "
                  f"{'bracketed' if r['bracketed'] else 'UNBRACKETED'} trainable={r['trainable']:>9,}", file=sys.stderr)
    for n, lat in runner.measure_latency(chosen, rounds=budget.latency_rounds).items():
        results[n].update(lat)  # step 3, alone on the machine
    return {"budget": _budget_record(budget) | {"n_val": len(task.val), "n_test": len(task.test)},
            "n_model": n_model, "methods": results, "jobs": jobs,
            "n_runs": sum(len(R.trained(found[a.label])) for a in chosen),
            "wall_s": time.time() - t0, "cpu_s_runs": sum(r["cpu_s"] for r in results.values()),
            "reused_runs": len(done),
            "versions": R.versions("torch", "numpy"),
            "threads": 1 if jobs > 1 else torch.get_num_threads()}


def append(names, budget: Budget = FULL, jobs: int = 1, log=None, path=RESULTS) -> dict:
    """Run the arms ``names``, one ``compare`` each, and add them to the stored comparison, which
    keeps every other arm as stored: same budget, seeds and protocol, so the new runs are paired
    with the old ones seed by seed. Refuses an empty list, an arm already stored and another
    budget, before anything trains. Each added arm's runs, wall and CPU seconds and processes are
    kept under ``appended`` (its step time is from this run, not comparable with the others')."""
    res = load(path)
    if not names:
        raise ValueError("--append: name the arms to add (--methods …)")
    names = check_arms(names)
    stored = sorted(set(names) & set(res["methods"]))
    if stored:
        raise ValueError(f"--append: {stored} are stored already; a full `make compare` reruns every arm")
    want = _budget_record(budget)
    # a file stored before every field was recorded ran the fields it lacks at Budget's defaults
    have = _budget_record(Budget()) | res["budget"]
    if want != {k: have.get(k) for k in want}:
        raise ValueError(f"--append: the budget {want} differs from the stored one {have}")
    for name in names:
        new = compare([name], budget, jobs=jobs, log=log)
        res["methods"][name] = new["methods"][name]
        res["n_runs"], res["cpu_s_runs"] = res["n_runs"] + new["n_runs"], res["cpu_s_runs"] + new["cpu_s_runs"]
        res.setdefault("appended", {})[name] = {k: new[k] for k in ("n_runs", "wall_s", "reused_runs", "jobs",
                                                                    "threads", "versions")}
        res["appended"][name]["cpu_s"] = new["methods"][name]["cpu_s"]  # wall_s excludes reused runs
    res["methods"] = {n: res["methods"][n] for n in ARMS if n in res["methods"]}
    return res


def _budget_record(budget: Budget) -> dict:
    """The budget as stored: every field, as JSON gives it back (lists, not tuples)."""
    return json.loads(json.dumps(asdict(budget)))


def save(res: dict, path=RESULTS):
    return R.save(res, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ci", action="store_true", help="the reduced CI budget (one seed, few steps)")
    ap.add_argument("--methods", nargs="*", default=None)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--jobs", type=runner.cli_count, default=os.cpu_count() or 1,
                    help="worker processes, one thread each (default: one per CPU core)")
    ap.add_argument("--log", default=str(RUN_LOG), help="finished runs (JSON lines): read to resume, appended to")
    ap.add_argument("--append", action="store_true",
                    help="run only --methods and add them to the stored results in --out (the others stay as stored)")
    ap.add_argument("--latency-only", action="store_true",
                    help="keep the accuracies in --out, measure the inference latency again")
    args = ap.parse_args(argv)
    try:  # an unknown name stops here, before the model loads
        check_arms(args.methods)
    except ValueError as e:
        ap.error(str(e))
    if args.latency_only:
        res = load(args.out)
        res["budget"]["latency_rounds"] = FULL.latency_rounds
        chosen = [ARMS[n] for n in check_arms(res["methods"])]
        for n, lat in runner.measure_latency(chosen, rounds=FULL.latency_rounds).items():
            res["methods"][n].update(lat)
    elif args.append:
        if not args.methods or args.ci:
            raise SystemExit("--append needs --methods and the full budget (not --ci)")
        res = append(args.methods, FULL, jobs=args.jobs, log=args.log, path=args.out)
    else:
        res = compare(args.methods, CI if args.ci else FULL, jobs=args.jobs, log=None if args.ci else args.log)
    print(save(res, args.out))


if __name__ == "__main__":
    main()
