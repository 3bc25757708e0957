"""Chapter 10's experiment: PEFT methods on the decoder, two tasks, the book's protocol.

``python -m pedagogy_lib.book.ch10.experiment`` (part of ``make sweeps``) writes
``chapters/results/ch10_area.json`` and ``ch10_line.json``, and ``ch10_scale.json`` (full
fine-tuning and prompt tuning on the area task with ``stdlib-4m``; alone: ``--scale``). For
each task (``area``: classification through the frozen LM head; ``line``: header → first
docstring line) and each method of ``torch_ref.decoder_peft.METHODS``:

1. every rate of the method's grid at seeds 0 and 1; the validation score (accuracy, or
   minus the mean response-token loss) averaged over the two seeds picks the rate, and the
   grid is extended until the best rate is not at an edge (``stats.select_lr``);
2. seed 2 at the chosen rate; the three seeds' test scores are the result. A seed fixes the
   batch order and the adapter's initialisation, so runs of two methods at one seed are paired.

Every run trains for ``STEPS`` steps of ``BATCH`` examples (the same budget for every method)
on one thread. The real recipe (``qlora-recipe``: bitsandbytes 4-bit, peft,
PagedAdamW8bit, fp32 compute) is the slowest by far on a CPU; it uses the rate chosen for
``lora-all`` (the same adapter on the same base, up to 4-bit rounding) and runs its three seeds.

``--append --methods prefix ptuning-v2`` adds methods to the stored files without re-running
the others (their runs stay as stored; the seeds, batches and budget are the same, so the new
runs are paired with the old ones seed by seed).
"""
from __future__ import annotations

import argparse
import platform
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from pedagogy_lib import decoder_io as IO, results as R, stats
from pedagogy_lib.book.ch10.tasks import (BATCH, SEEDS, STEPS, evaluate, generations, line_scores,  # noqa: F401
                                          prepare, score)
from pedagogy_lib.torch_ref import decoder_peft as P

RESULTS = "ch10_{task}"   # one file per task: ch10_area.json, ch10_line.json
GRIDS = {"full": (1e-4, 3e-4, 1e-3), "lora-qv": (1e-3, 3e-3, 1e-2), "lora-all": (1e-3, 3e-3, 1e-2),
         "ia3": (3e-3, 1e-2, 3e-2), "prompt": (3e-3, 1e-2, 3e-2), "qlora-ours": (1e-3, 3e-3, 1e-2),
         "prefix": (1e-3, 3e-3, 1e-2), "ptuning-v2": (3e-3, 1e-2, 3e-2, 1e-1, 3e-1)}


def run(task, method, lr, seed, d, tok, bar=None, name=None) -> tuple[dict, torch.nn.Module]:
    """One training run (on checkpoint ``name``, the default if None); its record (validation and
    test scores) and the trained model."""
    torch.manual_seed(seed)
    model = P.build(method, seed, name=name)
    t0 = time.perf_counter()
    losses = P.train(model, *d["train"], lr=lr, steps=STEPS[task], batch_size=BATCH, seed=seed,
                     paged8=method == "qlora-recipe", progress=bar)
    rec = {"task": task, "method": method, "lr": lr, "seed": seed, "trainable": P.trainable(model),
           "seconds": time.perf_counter() - t0, "final_loss": float(np.mean(losses[-10:])),
           "val": evaluate(task, model, d, "val", tok), "test": evaluate(task, model, d, "test", tok)}
    return rec, model


def add_generations(task, recs_models, d, tok) -> list[dict]:
    """Greedy generations (exact match, ROUGE-L) for the runs at the chosen rate only."""
    for rec, model in recs_models:
        if task == "line":
            rec["test"] |= generations(model, d["examples"]["test"], tok)
    return [rec for rec, _ in recs_models]


def protocol(task: str, methods, tok, bar=None, out: dict | None = None, name=None, extensions: int = 1) -> dict:
    """Run ``methods`` through the protocol; with ``out`` (stored results), append to it.
    ``name``: the checkpoint (the default if None); ``extensions``: how often a grid may grow."""
    d = prepare(task, tok)
    if out is None:
        base = P.build("lora-qv", 0, name=name)   # B = 0: the pretrained model itself (zero-shot)
        out = {"zero_shot": {"test": evaluate(task, base, d, "test", tok, generate=True),
                             "val": evaluate(task, base, d, "val", tok)},
               "sizes": {s: len(d["examples"][s]) for s in ("train", "val", "test")}, "runs": [], "selection": {}}
    for method in methods:
        if method == "qlora-recipe":
            lr = out["selection"]["lora-all"]["chosen"]
            out["selection"][method] = {"chosen": lr, "borrowed_from": "lora-all"}
            out["runs"] += add_generations(task, [run(task, method, lr, s, d, tok, bar, name) for s in SEEDS], d, tok)
            continue
        tried = {}

        def val_score(lr):
            tried[lr] = [run(task, method, lr, s, d, tok, bar, name) for s in SEEDS[:2]]
            return float(np.mean([score(task, r["val"]) for r, _ in tried[lr]]))

        sel = stats.select_lr(val_score, GRIDS[method], max_extensions=extensions)
        out["selection"][method] = sel
        for lr in sorted(tried):
            if lr == sel["chosen"]:
                tried[lr].append(run(task, method, lr, SEEDS[2], d, tok, bar, name))
                out["runs"] += add_generations(task, tried[lr], d, tok)
            else:
                out["runs"] += [r for r, _ in tried[lr]]
        tried.clear()
    return out


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
        with tqdm(total=(2 * len(GRIDS[m]) + 3) * STEPS[task], desc=f"ch10 {task} {m} (steps)", file=sys.stderr, disable=None) as bar:
            protocol(task, [m], tok, bar, out=res)
        res["grids"][m] = GRIDS[m]
        res.setdefault("appended", {})[m] = {"wall_seconds": time.perf_counter() - t0,
                                             "cpu_seconds": time.process_time() - c0,
                                             "versions": {"torch": torch.__version__, "numpy": np.__version__,
                                                          "python": platform.python_version()}}
        print(R.save(res, RESULTS.format(task=task)))   # after each method: a crash loses one method at most
    return res


SCALE = "ch10_scale"   # prompt tuning vs full fine-tuning on the area task at the larger size


def scale_study(tok, name: str = "stdlib-4m", methods=("full", "prompt"), extensions: int = 2) -> dict:
    """Lester et al.'s question at two sizes: the area task (frozen LM head) for ``methods`` on
    checkpoint ``name``, the same protocol, grids and seeds as the stored ``stdlib-1m`` runs; a
    grid may grow twice (prompt tuning's best rate on the larger model lies beyond one step)."""
    t0, c0 = time.perf_counter(), time.process_time()
    with tqdm(total=7 * len(methods) * STEPS["area"], desc=f"ch10 scale {name}", file=sys.stderr, disable=None) as bar:
        res = protocol("area", methods, tok, bar, name=name, extensions=extensions)
    res |= {"task": "area", "steps": STEPS["area"], "batch": BATCH, "seeds": list(SEEDS), "model": name,
            "grids": {m: GRIDS[m] for m in methods}, "extensions": extensions, "wall_seconds": time.perf_counter() - t0,
            "cpu_seconds": time.process_time() - c0,
            "versions": {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()}}
    print(R.save(res, SCALE))
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="*", default=["area", "line"])
    ap.add_argument("--methods", nargs="*", default=list(P.METHODS))
    ap.add_argument("--append", action="store_true",
                    help="add --methods to the stored results, keeping every stored run (implies --no-studies)")
    ap.add_argument("--redo", action="store_true", help="with --append: replace methods an earlier --append added")
    ap.add_argument("--scale", action="store_true",
                    help="only the model-size study: full FT and prompt tuning on the area task with stdlib-4m")
    ap.add_argument("--no-studies", action="store_true", help="skip the QLoRA studies (studies.py)")
    args = ap.parse_args(argv)
    bad = sorted(set(args.methods) - set(P.METHODS))
    if bad:
        ap.error(f"unknown methods {bad}; choose from {P.METHODS}")
    torch.set_num_threads(1)
    _, _, tok, _ = IO.read_checkpoint(IO.checkpoint_dir())
    if args.scale:
        scale_study(tok)
        return
    if args.append:
        for task in args.tasks:
            append(task, args.methods, tok, redo=args.redo)
        return
    n_runs = sum(7 if m != "qlora-recipe" else 3 for m in args.methods)
    for task in args.tasks:
        t0 = time.perf_counter()
        with tqdm(total=n_runs * STEPS[task], desc=f"ch10 {task} (steps)", file=sys.stderr, disable=None) as bar:
            res = protocol(task, args.methods, tok, bar)
        res |= {"task": task, "steps": STEPS[task], "batch": BATCH, "seeds": list(SEEDS), "grids": GRIDS,
                "model": IO.DEFAULT, "wall_seconds": time.perf_counter() - t0,
                "versions": {"torch": torch.__version__, "numpy": np.__version__,
                             "python": platform.python_version()}}
        print(R.save(res, RESULTS.format(task=task)))
    if "area" in args.tasks and {"full", "prompt"} <= set(args.methods):
        scale_study(tok)   # ch10_scale.json: the same two methods on stdlib-4m
    if not args.no_studies:
        from pedagogy_lib.book.ch10 import studies

        studies.main([])


if __name__ == "__main__":
    main()
