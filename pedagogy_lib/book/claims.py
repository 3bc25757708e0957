"""The claims ledger: every numeric or comparative claim of the article, with our value.

Each chapter keeps its own records in ``pedagogy_lib.book.chNN.claims.claims()``; this module only
gathers them, checks their form, and drops exact duplicates of an id (a claim that two chapters
both test keeps its first record, the chapter where it is measured most directly is listed first
in ``ORDER``).

A record is ``{id, sentence, chapter, claim, verdict, our_value, published_value, source}``, where
``our_value`` is a string that a function computed from measurements or arithmetic and
``sentence`` the stable id of the article sentence it judges (``book.sentences``). Several
chapters may add evidence to one sentence; they must agree on its verdict
(``disagreements``).
"""
from __future__ import annotations

import importlib
import textwrap
from functools import lru_cache

from pedagogy_lib.book.rules import VERDICTS

FIELDS = ("id", "sentence", "chapter", "claim", "verdict", "our_value", "published_value", "source")
ORDER = ("ch00", "ch01", "ch02", "ch03", "ch04", "ch05", "ch06", "ch07", "ch08", "ch10", "ch11")


def check_record(rec: dict) -> dict:
    """Raise a ValueError naming what is wrong with one ledger record."""
    if not isinstance(rec, dict):
        raise TypeError(f"a claim record must be a dict, got {type(rec).__name__}")
    missing = [f for f in FIELDS if f not in rec]
    if missing:
        raise ValueError(f"claim {rec.get('id', '?')!r} lacks fields {missing}")
    if rec["verdict"] not in VERDICTS:
        raise ValueError(f"claim {rec['id']!r}: verdict {rec['verdict']!r} is not one of {VERDICTS}")
    for f in ("id", "sentence", "claim", "our_value", "source"):
        if not str(rec[f]).strip():
            raise ValueError(f"claim {rec['id']!r}: field {f!r} is empty")
    return rec


def chapter_claims(chapter: str) -> list[dict]:
    """The records of one chapter (one of ``ORDER``); [] if the chapter keeps none yet."""
    if chapter not in ORDER:
        raise ValueError(f"unknown chapter {chapter!r}; expected one of {ORDER}")
    try:
        mod = importlib.import_module(f"pedagogy_lib.book.{chapter}.claims")
    except ModuleNotFoundError as e:
        if e.name == f"pedagogy_lib.book.{chapter}.claims":
            return []
        raise
    return [check_record(r) for r in mod.claims()]


@lru_cache(maxsize=1)
def _ledger() -> tuple:
    seen, out = set(), []
    for ch in ORDER:
        for rec in chapter_claims(ch):
            if rec["id"] not in seen:
                seen.add(rec["id"])
                out.append(rec)
    return tuple(out)


def ledger() -> list[dict]:
    return [dict(r) for r in _ledger()]


def by_sentence(records=None) -> dict[str, list[dict]]:
    """The records grouped by the article sentence they judge, in ledger order."""
    out: dict[str, list[dict]] = {}
    for r in (ledger() if records is None else records):
        out.setdefault(r["sentence"], []).append(r)
    return out


def disagreements(records=None) -> dict[str, dict[str, str]]:
    """{sentence: {claim id: verdict}} for every sentence whose records disagree (should be {})."""
    return {s: {r["id"]: r["verdict"] for r in rs} for s, rs in by_sentence(records).items()
            if len({r["verdict"] for r in rs}) > 1}


def sentence_verdicts(records=None) -> dict[str, str]:
    """One verdict per article sentence; raises ValueError naming any sentence judged twice
    with different verdicts."""
    bad = disagreements(records)
    if bad:
        raise ValueError(f"sentences with conflicting verdicts: {bad}")
    return {s: rs[0]["verdict"] for s, rs in by_sentence(records).items()}


def __getattr__(name):  # LEDGER is built on first use, not at import (it reads results files)
    if name == "LEDGER":
        return ledger()
    raise AttributeError(name)


def verdict_counts(records=None) -> dict[str, int]:
    records = ledger() if records is None else records
    return {v: sum(r["verdict"] == v for r in records) for v in VERDICTS}


def summary_table(records) -> str:
    """Verdict counts per chapter: one compact row per chapter plus a total (stable for nbval)."""
    short = {"holds": "holds", "approximately": "approx.", "wrong": "wrong",
             "not-reproduced-here": "not repr.", "untestable-here": "untestable"}
    head = f"{'chapter':8s}" + "".join(f"{short[v]:>11s}" for v in VERDICTS) + f"{'all':>6s}"

    def row(name: str, recs: list) -> str:
        counts = "".join(f"{sum(r['verdict'] == v for r in recs):>11d}" for v in VERDICTS)
        return f"{name:8s}{counts}{len(recs):>6d}"

    # by the record's chapter (its number): ch10's ids have no prefix
    mine = {ch: [r for r in records if r["chapter"] == ch[2:]] for ch in ORDER}
    return "\n".join([head, "-" * len(head)] + [row(ch, rs) for ch, rs in mine.items() if rs] + [row("all", records)])


def by_verdict(records, width: int = 96) -> str:
    """The claim ids grouped under each verdict, wrapped to ``width``: the whole ledger at a
    glance; ``claims.LEDGER`` (or a chapter's own claims section) has the full text."""
    out = []
    for v in VERDICTS:
        ids = [r["id"] for r in records if r["verdict"] == v]
        if ids:
            out.append(textwrap.fill(", ".join(ids), width, initial_indent=f"{v} ({len(ids)}): ",
                                     subsequent_indent="    ", break_on_hyphens=False))
    return "\n".join(out)
