"""Chapter 10's computations on the stored results: the methods table, paired differences,
the studies. The runs themselves live in ``experiment.py`` and ``studies.py`` (``make sweeps``).
The loaders, the table and the paired differences that other chapters judge on live in the
shared ``book.evidence.ch10`` (below every room) and are re-exported here."""
from __future__ import annotations

import numpy as np

from pedagogy_lib import results as R, stats
from pedagogy_lib.book.evidence.ch10 import (chosen_runs, load, load_gpu, load_scale, load_studies, methods,
                                             paired_gain, prompt_gaps, table, value)

__all__ = ["LABELS", "chosen_runs", "load", "load_gpu", "load_scale", "load_studies", "load_vader", "methods",
           "paired_gain", "placement_gain", "prompt_gaps", "rank_curve", "table", "vader_rows", "value"]

LABELS = {"zero-shot": "zero-shot (no training)", "full": "full fine-tuning", "lora-qv": "LoRA (q, v)",
          "lora-all": "LoRA (all linear)", "ia3": "IA³ (k, v, down)", "prompt": "prompt tuning (16 tokens)",
          "qlora-ours": "QLoRA, our NF4+DQ base", "qlora-recipe": "QLoRA, the real recipe",
          "prefix": "prefix (MLP, 16 slots)", "ptuning-v2": "P-Tuning v2 (16 slots)"}


def placement_gain(st: dict) -> dict:
    """All-linear minus q,v-only under the 4-bit base: test-loss reduction, paired by seed."""
    by = {lab: {r["seed"]: r["test"]["loss"] for r in st["placement"] if r["label"] == lab} for lab in ("qv", "all")}
    return stats.paired_by_seed(by["qv"], by["all"])


def rank_curve(st: dict) -> dict:
    """{r: mean test loss over seeds} of the rank sweep."""
    out = {}
    for r in st["rank"]:
        out.setdefault(r["r"], []).append(r["test"]["loss"])
    return {k: float(np.mean(v)) for k, v in sorted(out.items())}


def load_vader() -> dict:
    return R.load("ch10_vader", "python -m pedagogy_lib.book.ch10.studies --vader (make sweeps)",
                  keys=("runs", "selection", "zero_shot", "majority"), what="chapter 10 VADER results")


def vader_rows(v: dict) -> list[dict]:
    """Per method at its chosen rate: test and training-word accuracy, mean and sd over seeds."""
    rows = []
    for m, sel in v["selection"].items():
        runs = [r for r in v["runs"] if r["method"] == m and r["lr"] == sel["chosen"]]
        t, tr = [r["test"] for r in runs], [r["train"] for r in runs]
        rows.append({"method": m, "lr": sel["chosen"], "bracketed": sel["bracketed"], "n": len(runs),
                     "test": float(np.mean(t)), "test_sd": float(np.std(t, ddof=1)), "train": float(np.mean(tr))})
    return rows
