"""Chapter 10's experiment: PEFT methods on the decoder, two tasks, the book's protocol.

``python -m pedagogy_lib.book.ch10.experiment`` (part of ``make sweeps``) writes
``chapters/results/ch10_area.json`` and ``ch10_line.json``. For each task (``area``: classification through the
frozen LM head; ``line``: header → first docstring line) and each method of
``torch_ref.decoder_peft.METHODS``:

1. every rate of the method's grid at seeds 0 and 1; the validation score (accuracy, or
   minus the mean response-token loss) averaged over the two seeds picks the rate, and the
   grid is extended until the best rate is not at an edge (``stats.select_lr``);
2. seed 2 at the chosen rate; the three seeds' test scores are the result. A seed fixes the
   batch order and the adapter's initialisation, so runs of two methods at one seed are paired.

Every run trains for ``STEPS`` steps of ``BATCH`` examples (the same budget for every method)
on one thread. The real recipe (``qlora-recipe``: bitsandbytes 4-bit, peft,
PagedAdamW8bit, fp32 compute) is the slowest by far on a CPU; it uses the rate chosen for
``lora-all`` (the same adapter on the same base, up to 4-bit rounding) and runs its three seeds.
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
         "ia3": (3e-3, 1e-2, 3e-2), "prompt": (3e-3, 1e-2, 3e-2), "qlora-ours": (1e-3, 3e-3, 1e-2)}


def run(task, method, lr, seed, d, tok, bar=None) -> tuple[dict, torch.nn.Module]:
    """One training run; its record (validation and test scores) and the trained model."""
    torch.manual_seed(seed)
    model = P.build(method, seed)
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


def protocol(task: str, methods, tok, bar=None) -> dict:
    d = prepare(task, tok)
    base = P.build("lora-qv", 0)   # B = 0: the pretrained model itself (zero-shot)
    out = {"zero_shot": {"test": evaluate(task, base, d, "test", tok, generate=True),
                         "val": evaluate(task, base, d, "val", tok)},
           "sizes": {s: len(d["examples"][s]) for s in ("train", "val", "test")}, "runs": [], "selection": {}}
    for method in methods:
        if method == "qlora-recipe":
            lr = out["selection"]["lora-all"]["chosen"]
            out["selection"][method] = {"chosen": lr, "borrowed_from": "lora-all"}
            out["runs"] += add_generations(task, [run(task, method, lr, s, d, tok, bar) for s in SEEDS], d, tok)
            continue
        tried = {}

        def val_score(lr):
            tried[lr] = [run(task, method, lr, s, d, tok, bar) for s in SEEDS[:2]]
            return float(np.mean([score(task, r["val"]) for r, _ in tried[lr]]))

        sel = stats.select_lr(val_score, GRIDS[method], max_extensions=1)
        out["selection"][method] = sel
        for lr in sorted(tried):
            if lr == sel["chosen"]:
                tried[lr].append(run(task, method, lr, SEEDS[2], d, tok, bar))
                out["runs"] += add_generations(task, tried[lr], d, tok)
            else:
                out["runs"] += [r for r, _ in tried[lr]]
        tried.clear()
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="*", default=["area", "line"])
    ap.add_argument("--methods", nargs="*", default=list(P.METHODS))
    ap.add_argument("--no-studies", action="store_true", help="skip the QLoRA studies (studies.py)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    _, _, tok, _ = IO.read_checkpoint(IO.checkpoint_dir())
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
    if not args.no_studies:
        from pedagogy_lib.book.ch10 import studies

        studies.main([])


if __name__ == "__main__":
    main()
