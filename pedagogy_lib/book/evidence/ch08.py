"""Chapter 08's stored comparison (``ch08_compare.json``, ``make compare``) as the other chapters
read it: the file, and whether a verdict may rest on a method (its rate bracketed, Eq. 8.2).
Per-seed accuracies in points: ``book.rules.points_by_seed``.

A shared book-level module: it reads the file through ``pedagogy_lib.results`` and imports no
room (``tests/test_layers.py``). Chapter 08's room uses these same two (``ch08.experiment.load``
and ``ch08.table.judged`` are re-exports).
"""
from __future__ import annotations

from pedagogy_lib import results as R

RESULTS = R.RESULTS / "ch08_compare.json"


def load(path=RESULTS) -> dict:
    return R.load(path, "`make compare`", keys=("methods", "budget"), what="compare results")


def judged(res: dict, name: str) -> bool:
    """Whether a verdict may rest on this method: its learning rate was bracketed (Eq. 8.2)."""
    return res["methods"][name].get("bracketed", True)
