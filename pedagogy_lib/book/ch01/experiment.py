"""Chapter 01's intrinsic-dimension sweep, too slow for the notebook.

    python -m pedagogy_lib.book.ch01.experiment [--quick]

writes ``chapters/results/ch01_intrinsic_dim.json``, which the chapter, ``make figures``
and ``pedagogy_lib.book.ch01.claims`` read. Every run is MiniLM + the VADER polarity task
with ``torch_ref.subspace.Recipe()`` (a class-balanced subsample of 1,024 training words,
2 epochs, batch 32, AdamW with linear decay), scored on the whole val and test splits:

  A  full fine-tuning (every parameter trainable), SEEDS: the reference accuracy
  B  random-subspace training θ = θ0 + P z with a sparse P over the transformer layers
     and the head (10.6M numbers), d in DS; seed 0 tries every η in Recipe.etas
     (lr = η/√d) and keeps, per d, the η with the best *validation* accuracy
  C  the other SEEDS at that η (a new P, head init and data order per seed)

The test accuracies give the curve and d90 (eq. 1.11). Runs are cached by their settings
in the JSON, so an interrupted sweep resumes. Seeded; low bits of the accuracies can
differ with the thread count or machine. One thread: OMP_NUM_THREADS=1 (``make bench``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import platform
import sys
import tempfile
import time

from pedagogy_lib import results as R

OUT = R.RESULTS / "ch01_intrinsic_dim.json"
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DS = (10, 30, 100, 300, 1000, 3000, 10000)
SEEDS = (0, 1, 2)


def _versions():
    import numpy
    import torch

    return {"python": platform.python_version(), "numpy": numpy.__version__, "torch": torch.__version__}


def _save(res):
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=OUT.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(res, f, indent=1, sort_keys=True)
        f.write("\n")
    os.chmod(tmp, 0o644)  # mkstemp makes it private; the result is a shared, committed file
    os.replace(tmp, OUT)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="two d values, one seed, one η (smoke test)")
    args = ap.parse_args(argv)

    import torch

    from pedagogy_lib.checkpoint import Tokenizer
    from pedagogy_lib.torch_ref.subspace import (Recipe, full_finetune, subspace_finetune,
                                                 subspace_names, vader_batches)
    from pedagogy_lib.torch_ref.train import accuracy

    recipe = Recipe()
    ds, seeds, etas = (DS, SEEDS, recipe.etas) if not args.quick else ((10, 100), (0,), (1.0,))
    config = json.loads(json.dumps({"recipe": dataclasses.asdict(recipe), "ds": list(ds), "seeds": list(seeds),
                                    "etas": list(etas), "quick": args.quick}))  # as it reads back from the file
    res = json.loads(OUT.read_text()) if OUT.exists() else {}
    if res.get("config") != config:
        res = {"config": config, "full": {}, "subspace": {}}
    res["versions"] = _versions()
    device = "cpu" if not torch.cuda.is_available() else "cuda"
    res["device"] = device
    train, test = vader_batches(recipe, Tokenizer(), device)
    _, val = vader_batches(recipe, Tokenizer(), device, split="val")
    res["n_test"], res["n_val"] = len(test), len(val)
    res["majority_test"] = max(test.labels.mean(), 1 - test.labels.mean())

    def run(key, table, fn):
        if key in res[table]:
            return res[table][key]
        t0 = time.perf_counter()
        model, test_acc = fn()
        out = {"test_acc": test_acc, "val_acc": accuracy(model, val),
               "seconds": round(time.perf_counter() - t0, 1)}
        res[table][key] = out
        _save(res)
        print(f"{table:8s} {key:28s} val {out['val_acc']:.3f} test {test_acc:.3f} ({out['seconds']} s)",
              flush=True)
        return out

    for seed in seeds:  # A
        run(f"seed={seed}", "full", lambda: full_finetune(recipe, seed, train, test, device))
    best = {}
    for d in ds:  # B
        for eta in etas:
            run(f"d={d} eta={eta} seed={seeds[0]}", "subspace",
                lambda: subspace_finetune(recipe, d, eta, seeds[0], train, test, device))
        best[d] = max(etas, key=lambda e: (res["subspace"][f"d={d} eta={e} seed={seeds[0]}"]["val_acc"], -e))
    res["best_eta"] = {str(d): e for d, e in best.items()}
    for seed in seeds[1:]:  # C
        for d in ds:
            run(f"d={d} eta={best[d]} seed={seed}", "subspace",
                lambda: subspace_finetune(recipe, d, best[d], seed, train, test, device))
    from pedagogy_lib.models import load_minilm
    from pedagogy_lib.torch_ref.train import Classifier

    model = Classifier(load_minilm("torch", device="cpu").net)
    names = subspace_names(model)
    params = dict(model.named_parameters())
    res["D"] = sum(params[n].numel() for n in names)
    res["n_tensors"] = len(names)
    res["total_params"] = sum(p.numel() for n, p in params.items() if not n.startswith("head."))
    _save(res)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
