"""The shared machinery of the claims: the record constructor, the verdict rules every
chapter uses, and ``Claims``, a chapter's claims as data.

A claim is data (its id, the article's sentence, the published value and its source) plus
one short rule: a function of the chapter's measurements that returns (verdict, our value).
Rules are registered with a decorator, as figures are:

    CLAIMS = Claims("05")

    @CLAIMS.rule("ch05-ptv2-fraction", "P-Tuning v2 trains about 0.1% of the parameters.",
                 published="0.1%–3%", source="Liu et al. 2022, abstract")
    def _ptv2_fraction(m):          # m: what ``context(results)`` measured
        ...
        return verdict, our_value

    def claims(results=None):
        return CLAIMS.judge(context(results))
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

VERDICTS = ("holds", "approximately", "wrong", "not-reproduced-here", "untestable-here")


def record(chapter: str, id_: str, claim: str, verdict: str, our_value: str, published_value: str,
           source: str) -> dict:
    """One claim record of the ledger (``pedagogy_lib.book.claims``); chapters bind their number."""
    assert verdict in VERDICTS, verdict
    return {"id": id_, "chapter": chapter, "claim": claim, "verdict": verdict, "our_value": our_value,
            "published_value": published_value, "source": source}


def table(records: list[dict]) -> str:
    """Fixed-width text: verdict and claim, then our value and the published one."""
    lines = []
    for r in records:
        lines.append(f"[{r['verdict']}] {r['claim']}")
        lines.append(f"    ours:      {r['our_value']}")
        lines.append(f"    published: {r['published_value']}  ({r['source']})")
    return "\n".join(lines)


# How a computed number is held against a stated one. Shared by the chapters' verdicts so
# that "about X" means the same everywhere.
ABOUT_HOLDS = 0.05  # "about X": within 5% of X holds,
ABOUT_APPROX = 0.20  # within 20% approximately, further off wrong
VERDICT_ORDER = ("holds", "approximately", "wrong")


def rel_gap(ours: float, stated: float) -> float:
    """|ours − stated| / stated."""
    if not stated:
        raise ValueError("stated must be non-zero")
    return abs(ours - stated) / abs(stated)


def about_verdict(ours: float, stated: float, holds_tol: float = ABOUT_HOLDS,
                  approx_tol: float = ABOUT_APPROX) -> str:
    """Verdict on a claim "about `stated`" (e.g. "about 700 GB") given our computed value:
    "holds" within `holds_tol` (relative), "approximately" within `approx_tol`, else "wrong"."""
    g = rel_gap(ours, stated)
    return "holds" if g <= holds_tol else ("approximately" if g <= approx_tol else "wrong")


def worst_verdict(*verdicts: str) -> str:
    """The weakest of several verdicts (holds < approximately < wrong)."""
    return max(verdicts, key=VERDICT_ORDER.index)


def interval_verdict(lo: float, hi: float, a: float, b: float) -> str:
    """Our computed range [lo, hi] against a stated interval [a, b]: inside holds,
    overlapping approximately, disjoint wrong."""
    if a <= lo and hi <= b:
        return "holds"
    return "approximately" if lo <= b and hi >= a else "wrong"


def rounded_verdict(ours: float, stated: str, approx_tol: float = ABOUT_APPROX) -> str:
    """A stated figure such as "0.24" against our value in the same unit: "holds" if ours
    rounds to it at the stated number of decimals, "approximately" if within `approx_tol`
    (relative), else "wrong"."""
    decimals = len(stated.split(".")[1]) if "." in stated else 0
    if f"{ours:.{decimals}f}" == stated:
        return "holds"
    return "approximately" if rel_gap(ours, float(stated)) <= approx_tol else "wrong"


def _about_band(stated: str) -> tuple[float, float]:
    """The values that round to `stated` at its last decimal: "0.1" -> (0.05, 0.15)."""
    decimals = len(stated.split(".")[1]) if "." in stated else 0
    half = 0.5 * 10.0 ** -decimals
    return float(stated) - half, float(stated) + half


def _above_by(x: float, bound: float) -> str:
    if x <= bound:
        return f"below {bound:g}"
    return f"just above {bound:g}" if x <= bound * (1 + ABOUT_HOLDS) else f"above {bound:g}"


@dataclass(frozen=True)
class Claim:
    id: str
    chapter: str
    text: str
    published: str
    source: str
    rule: Callable  # (measurements) -> (verdict, our value)


class Claims:
    """One chapter's claims, in the order they were registered."""

    def __init__(self, chapter: str):
        self.chapter, self.items = chapter, []

    def rule(self, id_: str, text: str, published: str, source: str):
        """Decorator: register ``fn(measurements) -> (verdict, our_value)`` as the rule of a claim."""
        if any(c.id == id_ for c in self.items):
            raise ValueError(f"claim {id_!r} is registered twice")

        def decorate(fn):
            self.items.append(Claim(id_, self.chapter, text, published, source, fn))
            return fn

        return decorate

    def judge(self, measurements) -> list[dict]:
        """Every claim's record: its rule applied to the chapter's measurements."""
        return [record(self.chapter, c.id, c.text, *c.rule(measurements), c.published, c.source)
                for c in self.items]
