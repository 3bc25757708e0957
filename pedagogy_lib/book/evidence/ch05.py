"""Chapter 05's stored sweep (``ch05_prompt.json``) as every chapter reads it: each arm's
test accuracy by seed at its chosen rate, the paired differences (Eqs. 8.4–8.7), whether a
rate is bracketed, and the chapter's evidence on "prompt tuning leaves 3–4 points", which
chapter 08's record and the shared sentence judge (``book.sentences``) read too.

A shared book-level module: it reads the file through ``pedagogy_lib.results`` and imports no
room (``tests/test_layers.py``); the room's ``ch05.experiment`` re-exports these.
"""
from __future__ import annotations

import math

from pedagogy_lib import results as R, stats

PATH = R.RESULTS / "ch05_prompt.json"
ARMS = ("probe", "prompt-random", "prompt-vocab", "deep-prompt", "ptuning-v2", "lora", "full-ft")


def load_results(path=None) -> dict:
    return R.load(path or PATH, "python -m pedagogy_lib.book.ch05.experiment", keys=("arms", "runs", "config"),
                  what="chapter 05 sweep")


def methods(sweep: dict) -> list[str]:
    """The arms the stored sweep holds, in the chapter's order (a cut sweep may lack some)."""
    return [k for k in ARMS if k in sweep["arms"]]


def at_rate(sweep: dict, meth: str, epochs: int) -> dict:
    """{seed: run} of one method at its chosen rate and the given budget (epochs)."""
    lr = sweep["chosen_lr"][meth]
    return {r["seed"]: r for r in sweep["runs"] if r["method"] == meth and r["epochs"] == epochs
            and math.isclose(r["lr"], lr)}


def by_seed(sweep: dict, meth: str, long: bool = False) -> dict:
    """{seed: test accuracy} of one method at its chosen rate, at the main budget or the longer
    one (``long``), over the seeds the config names for it (a missing run is an error). The runs
    of one seed share the training subsample, its order and the head's init across methods and
    budgets: they pair."""
    cfg = sweep["config"]
    seeds, epochs = (cfg["long_seeds"], cfg["long_epochs"]) if long else (cfg["seeds"], cfg["epochs"])
    runs = at_rate(sweep, meth, epochs)
    missing = [s for s in seeds if s not in runs]
    if missing:
        raise ValueError(f"{meth}: no run at its chosen rate for seed(s) {missing} ({epochs} epochs)")
    return {s: runs[s]["test"] for s in seeds}


def pair(sweep: dict, a: str, b: str, long: bool = False) -> dict:
    """Test accuracy of a minus b in points, paired by seed (Eqs. 8.4–8.7, ``stats.paired_by_seed``):
    mean, SE, the 95 % t-interval [lo, hi] and ``tie``."""
    pts = lambda d: {s: 100 * x for s, x in d.items()}  # noqa: E731
    return stats.paired_by_seed(pts(by_seed(sweep, a, long)), pts(by_seed(sweep, b, long)))


def val_grid(sweep: dict, meth: str) -> dict:
    """{lr: mean validation accuracy over the selection seeds}: the grid (extensions included)
    the method's rate was chosen from."""
    return {float(lr): v for lr, v in sweep["arms"][meth]["val_by_lr"].items()}


def bracketed(sweep: dict, meth: str) -> bool | None:
    """Whether the method's chosen rate has a grid point on both sides (None: a sweep stored
    before the probe's head rate was searched)."""
    return sweep["arms"][meth]["bracketed"]


def unbracketed_arms(sweep: dict, meths=None) -> list[str]:
    """The methods whose chosen rate sits at an edge of its (extended) grid: no verdict rests on them."""
    return [k for k in (meths or methods(sweep)) if bracketed(sweep, k) is False]


PROMPTS = ("prompt-random", "prompt-vocab")  # the shallow prompts (input embeddings only)


def best_prompt(sweep: dict) -> str | None:
    """The shallow prompt arm with the best validation accuracy over its grid (None: not in the sweep)."""
    mine = [k for k in PROMPTS if k in sweep["arms"]]
    best = lambda k: max(v for v in val_grid(sweep, k).values() if v is not None)  # noqa: E731  (None: diverged)
    return max(mine, key=best) if mine else None


def prompt_gap(sweep: dict) -> tuple[str, dict | None] | None:
    """This chapter's evidence on "prompt tuning leaves 3–4 points": (label, full FT − the shallow
    prompt best on validation, points, paired by seed), the difference None when either rate sits
    at an edge of its grid (no verdict rests on it); None when the sweep holds no prompt arm."""
    p = best_prompt(sweep)
    if p is None or "full-ft" not in sweep["arms"]:
        return None
    label = f"chapter 05, {p} (m={sweep['config']['m']})"
    return label, (None if unbracketed_arms(sweep, (p, "full-ft")) else pair(sweep, "full-ft", p))
