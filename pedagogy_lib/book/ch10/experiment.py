"""Chapter 10's experiment: PEFT methods on the decoder, two tasks, the book's protocol.

``python -m pedagogy_lib.book.ch10.experiment`` (part of ``make sweeps``) writes
``chapters/results/ch10_area.json`` and ``ch10_line.json``, and ``ch10_scale.json`` (full
fine-tuning and prompt tuning on the area task with ``stdlib-4m``; alone: ``--scale``). For
each task (``area``: classification through the frozen LM head; ``line``: header → first
docstring line) and each arm of ``registry.DECODER_ARMS`` (a registry record's decoder form, run
by ``runner.decoder_protocol``; this room only says which tasks, which arms, where results go):

1. every rate of the method's grid at seeds 0 and 1; the validation score (accuracy, or
   minus the mean response-token loss) averaged over the two seeds picks the rate, and the
   grid is extended once at most (twice in ``scale_study``) while the best rate sits at an edge
   (``stats.select_lr``); an arm still at an edge is stored with ``bracketed: False`` and
   judged on nothing;
2. seeds 2, 3 and 4 at the chosen rate; the five seeds' test scores are the result. A seed fixes the
   batch order and the adapter's initialisation, so runs of two methods at one seed are paired.

Every run trains for ``STEPS`` steps of ``BATCH`` examples (the same budget for every method)
on one thread. The real recipe (``qlora-recipe``: bitsandbytes 4-bit, peft,
PagedAdamW8bit, fp32 compute) is the slowest by far on a CPU; it uses the rate chosen for
``lora-all`` (the same adapter on the same base, up to 4-bit rounding) and runs its five seeds.

``--append --methods prefix ptuning-v2`` adds methods to the stored files without re-running
the others (their runs stay as stored; the seeds, batches and budget are the same, so the new
runs are paired with the old ones seed by seed). ``--more-seeds`` adds the seeds of ``SEEDS`` that
the stored files (with ``ch10_scale.json``) lack, at each method's stored rate (``tasks.add_seeds``):
seeds 3 and 4 were added this way to results stored with three.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
from tqdm import tqdm

from pedagogy_lib import decoder_io as IO, results as R, runner
from pedagogy_lib.book.ch10.tasks import BATCH, SEEDS, STEPS, add_seeds, decoder_task
from pedagogy_lib.registry import DECODER_ARMS

RESULTS = "ch10_{task}"   # one file per task: ch10_area.json, ch10_line.json
ARMS = list(DECODER_ARMS)  # every decoder arm of the registry, in its order
GRIDS = {label: a.grid for label, a in DECODER_ARMS.items() if a.rate_from is None}   # as stored in the results


def protocol(task: str, methods, tok, bar=None, out: dict | None = None, name=None, extensions: int = 1) -> dict:
    """``methods`` (arm labels) on ``task`` through ``runner.decoder_protocol``; with ``out``
    (stored results), append to it. ``name``: the checkpoint (the default if None)."""
    return runner.decoder_protocol(methods, decoder_task(task, tok), bar, out, name, extensions)


def append(task: str, methods, tok, redo: bool = False) -> dict:
    """Run ``methods`` and add their runs to the stored results of ``task``; the stored runs of
    every other method are kept as they are. Each new method's wall and CPU seconds are kept
    under ``appended``. ``redo``: first drop the runs of ``methods`` that an earlier append added
    (a method of the original run can never be redone this way)."""
    res = R.load(RESULTS.format(task=task), "python -m pedagogy_lib.book.ch10.experiment", keys=("runs", "selection"))
    added = set(res.get("appended", {}))
    if redo:
        original = sorted(set(methods) - added)
        if original:
            raise ValueError(f"{task}: {original} were not added by --append; --redo replaces appended methods only")
        res["runs"] = [r for r in res["runs"] if r["method"] not in methods]
        for m in methods:
            del res["selection"][m], res["grids"][m], res["appended"][m]
    clash = sorted(set(methods) & set(res["selection"]))
    if clash:
        raise ValueError(f"{task}: {clash} already stored; --append only adds methods (--redo replaces appended ones)")
    for m in methods:
        t0, c0 = time.perf_counter(), time.process_time()
        with tqdm(total=(2 * len(GRIDS[m]) + len(SEEDS) - 2) * STEPS[task], desc=f"ch10 {task} {m} (steps)", file=sys.stderr, disable=None) as bar:
            protocol(task, [m], tok, bar, out=res)
        res["grids"][m] = GRIDS[m]
        res.setdefault("appended", {})[m] = {"wall_seconds": time.perf_counter() - t0,
                                             "cpu_seconds": time.process_time() - c0,
                                             "versions": R.versions("torch", "numpy")}
        print(R.save(res, RESULTS.format(task=task)))   # after each method: a crash loses one method at most
    return res


def more_seeds(tok, tasks=("area", "line"), scale: bool = True) -> None:
    """Add the seeds of ``SEEDS`` that the stored ``ch10_{task}.json`` (and ``ch10_scale.json``)
    lack, at each method's chosen rate (``tasks.add_seeds``: the stored runs and rate searches
    are kept; one stored run is re-run first and must come back identical)."""
    todo = [(RESULTS.format(task=t), t, None) for t in tasks] + ([(SCALE, "area", "stdlib-4m")] if scale else [])
    for file, task, name in todo:
        res = R.load(file, "python -m pedagogy_lib.book.ch10.experiment", keys=("runs", "selection", "seeds"))
        t = decoder_task(task, tok)

        def run(m, lr, seed, bar):
            rec, model = runner.run_decoder(m, t, seed, lr, bar, name)
            if t.finish is not None:
                rec["test"] |= t.finish(model)   # the generations every run at a chosen rate carries
            return rec

        n = len(res["selection"]) * len(set(SEEDS) - set(res["seeds"])) + 1
        with tqdm(total=n * STEPS[task], desc=f"ch10 {file} more seeds (steps)", file=sys.stderr, disable=None) as bar:
            res = add_seeds(res, run, SEEDS, bar=bar)
        print(R.save(res, file))


SCALE = "ch10_scale"   # prompt tuning vs full fine-tuning on the area task at the larger size


def scale_study(tok, name: str = "stdlib-4m", methods=("full", "prompt"), extensions: int = 2) -> dict:
    """Lester et al.'s question at two sizes: the area task (frozen LM head) for ``methods`` on
    checkpoint ``name``, the same protocol, grids and seeds as the stored ``stdlib-1m`` runs; a
    grid may grow twice (prompt tuning's best rate on the larger model lies beyond one step)."""
    t0, c0 = time.perf_counter(), time.process_time()
    with tqdm(total=(6 + len(SEEDS) - 2) * len(methods) * STEPS["area"], desc=f"ch10 scale {name}", file=sys.stderr, disable=None) as bar:
        res = protocol("area", methods, tok, bar, name=name, extensions=extensions)
    res |= {"task": "area", "steps": STEPS["area"], "batch": BATCH, "seeds": list(SEEDS), "model": name,
            "grids": {m: GRIDS[m] for m in methods}, "extensions": extensions, "wall_seconds": time.perf_counter() - t0,
            "cpu_seconds": time.process_time() - c0,
            "versions": R.versions("torch", "numpy")}
    print(R.save(res, SCALE))
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", nargs="*", default=["area", "line"])
    ap.add_argument("--methods", nargs="*", default=None, help="default: every arm (with --append: required)")
    ap.add_argument("--append", action="store_true",
                    help="add --methods to the stored results, keeping every stored run (implies --no-studies)")
    ap.add_argument("--redo", action="store_true", help="with --append: replace methods an earlier --append added")
    ap.add_argument("--scale", action="store_true",
                    help="only the model-size study: full FT and prompt tuning on the area task with stdlib-4m")
    ap.add_argument("--more-seeds", action="store_true",
                    help="add the seeds of SEEDS missing from the stored results at each chosen rate (area, line, scale)")
    ap.add_argument("--no-studies", action="store_true", help="skip the QLoRA studies (studies.py)")
    args = ap.parse_args(argv)
    if args.append and not args.methods:
        ap.error("--append: name the methods to add (--methods …)")
    args.methods = ARMS if args.methods is None else args.methods
    bad = sorted(set(args.methods) - set(ARMS))
    if bad:
        ap.error(f"unknown methods {bad}; choose from {ARMS}")
    bad = sorted(set(args.tasks) - set(STEPS))
    if bad or not args.tasks:
        ap.error(f"unknown or no tasks {bad}; choose from {list(STEPS)}")
    if args.redo and not args.append:
        ap.error("--redo works with --append only")
    torch.set_num_threads(1)
    _, _, tok, _ = IO.read_checkpoint(IO.checkpoint_dir())
    if args.scale:
        scale_study(tok)
        return
    if args.more_seeds:
        more_seeds(tok, args.tasks)
        return
    if args.append:
        for task in args.tasks:
            append(task, args.methods, tok, redo=args.redo)
        return
    n_runs = sum(len(SEEDS) + (2 * len(GRIDS[m]) - 2 if DECODER_ARMS[m].rate_from is None else 0) for m in args.methods)
    for task in args.tasks:
        t0 = time.perf_counter()
        with tqdm(total=n_runs * STEPS[task], desc=f"ch10 {task} (steps)", file=sys.stderr, disable=None) as bar:
            res = protocol(task, args.methods, tok, bar)
        res |= {"task": task, "steps": STEPS[task], "batch": BATCH, "seeds": list(SEEDS), "grids": GRIDS,
                "model": IO.DEFAULT, "wall_seconds": time.perf_counter() - t0,
                "versions": R.versions("torch", "numpy")}
        print(R.save(res, RESULTS.format(task=task)))
    if "area" in args.tasks and {"full", "prompt"} <= set(args.methods):
        scale_study(tok)   # ch10_scale.json: the same two methods on stdlib-4m
    if not args.no_studies:
        from pedagogy_lib.book.ch10 import studies

        studies.main([])


if __name__ == "__main__":
    main()
