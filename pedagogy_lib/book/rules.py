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

One rule for an order opposite to the claim's. Where the article claims an order or a small gap
measured in another regime (RoBERTa/GPT-3 on GLUE, GPT-2 on E2E generation…) and our paired
interval resolves the opposite order on our one task (it excludes 0 on the other side), the
verdict is ``not-reproduced-here``, never ``wrong``: our regime (a 22.7M encoder, a one-word task
with a trainable head) differs from the claim's, so the opposite order does not refute it. A tie
(the interval contains 0, its edge included: [−1, 0] is a tie) is never an order. ``wrong`` stays
for what our setting measures directly (arithmetic, counts, a gap in the claimed direction but
outside its stated band). Chapter 02 (``ch02-placement``, ``ch02-qkvo-marginal``, ``ch02-rank-advice``),
chapter 06 (``ch06-vs-lora``) and chapter 08 (``ch08-prefix-small-drop``) apply it; so does
``sentences.prefix_vs_full``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from pedagogy_lib import checks, stats

# not-reproduced-here: we measured, the result differs from the claim, but our regime (a 22.7M
# encoder, a one-word task with a trainable head, classification not generation) differs from
# the claim's, so the difference does not refute it
VERDICTS = ("holds", "approximately", "wrong", "not-reproduced-here", "untestable-here")


def record(chapter: str, id_: str, claim: str, verdict: str, our_value: str, published_value: str,
           source: str, sentence: str | None = None) -> dict:
    """One claim record of the ledger (``pedagogy_lib.book.claims``); chapters bind their number.
    ``sentence`` is the stable id of the article sentence the record judges (``book.sentences``);
    several chapters may add evidence to one sentence, and then their verdicts must agree."""
    if verdict not in VERDICTS:
        raise ValueError(f"claim {id_!r}: verdict {verdict!r} is not one of {VERDICTS}")
    return {"id": id_, "sentence": sentence or id_, "chapter": chapter, "claim": claim, "verdict": verdict,
            "our_value": our_value, "published_value": published_value, "source": source}


def table(records: list[dict]) -> str:
    """Fixed-width text: verdict and claim, then our value and the published one."""
    return "\n".join(f"[{r['verdict']}] {r['claim']}\n"
                     f"    ours:      {r['our_value']}\n"
                     f"    published: {r['published_value']}  ({r['source']})" for r in records)


# How a computed number is held against a stated one. Shared by the chapters' verdicts so
# that "about X" means the same everywhere.
ABOUT_HOLDS = 0.05  # "about X": within 5% of X holds,
ABOUT_APPROX = 0.20  # within 20% approximately, further off wrong
# from the strongest support for a claim to the weakest: a difference explained by our regime
# (not-reproduced-here) says less against a claim than a refutation (wrong); untestable-here (no
# evidence at all) is weaker than both
VERDICT_ORDER = ("holds", "approximately", "not-reproduced-here", "wrong", "untestable-here")
NOT_HERE = "not-reproduced-here"


def _evidence(**values) -> None:
    """No verdict rests on NaN/inf: a diverged or missing number is refused by name (NaN fails
    every comparison, so a rule would read it as whichever branch its tests fall through to)."""
    for name, x in values.items():
        checks.finite_real(x, name)


def _diff(d: dict) -> dict:
    """A paired difference (``stats.paired``) whose mean and interval are finite numbers, lo <= hi."""
    _evidence(mean=d["mean"], lo=d["lo"], hi=d["hi"])
    if d["lo"] > d["hi"]:
        raise ValueError(f"a paired interval needs lo <= hi, got [{d['lo']}, {d['hi']}]")
    return d


def _margin(margin: float) -> float:
    if checks.finite_real(margin, "margin") < 0:
        raise ValueError(f"margin must be >= 0 points, got {margin}")
    return margin


def rel_gap(ours: float, stated: float) -> float:
    """|ours − stated| / stated."""
    _evidence(ours=ours, stated=stated)
    if not stated:
        raise ValueError("stated must be non-zero")
    return abs(ours - stated) / abs(stated)


def graded(holds: bool, approximately: bool = False, otherwise: str = "wrong") -> str:
    """The verdict ladder most rules end on: "holds" when the claim's own test passes,
    "approximately" when only its weaker reading does, else ``otherwise`` ("wrong", or
    ``NOT_HERE`` where a difference is explained by our regime)."""
    return "holds" if holds else "approximately" if approximately else otherwise


def about_verdict(ours: float, stated: float, holds_tol: float = ABOUT_HOLDS,
                  approx_tol: float = ABOUT_APPROX) -> str:
    """Verdict on a claim "about `stated`" (e.g. "about 700 GB") given our computed value:
    "holds" within `holds_tol` (relative), "approximately" within `approx_tol`, else "wrong"."""
    g = rel_gap(ours, stated)
    return graded(g <= holds_tol, g <= approx_tol)


def worst_verdict(*verdicts: str, default: str | None = None) -> str:
    """The weakest of several verdicts, in ``VERDICT_ORDER`` (holds < approximately <
    not-reproduced-here < wrong < untestable-here); none at all: ``default`` (e.g.
    "untestable-here" when no measurement fell in the rule's range), an error if it is None."""
    for v in verdicts:
        if v not in VERDICT_ORDER:
            raise ValueError(f"verdict {v!r} is not one of {VERDICT_ORDER}")
    if not verdicts and default is None:
        raise ValueError("worst_verdict needs at least one verdict or a default")
    return max(verdicts, key=VERDICT_ORDER.index, default=default)


def interval_verdict(lo: float, hi: float, a: float, b: float) -> str:
    """Our computed range [lo, hi] against a stated interval [a, b]: inside holds,
    overlapping approximately, disjoint wrong."""
    _evidence(lo=lo, hi=hi)
    if lo > hi or not a <= b:  # a or b may be ±inf (an open side); never NaN
        raise ValueError(f"interval_verdict needs lo <= hi and a <= b, got [{lo}, {hi}] against [{a}, {b}]")
    return graded(a <= lo and hi <= b, lo <= b and hi >= a)


def rounded_verdict(ours: float, stated: str, approx_tol: float = ABOUT_APPROX) -> str:
    """A stated figure such as "0.24" against our value in the same unit: "holds" if ours
    rounds to it at the stated number of decimals, "approximately" if within `approx_tol`
    (relative), else "wrong"."""
    _evidence(ours=ours, stated=float(stated))   # "nan" == f"{nan:.0f}": no verdict on it
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


# --- measured differences: the protocol of chapter 08 (Eqs. 8.4–8.7, ``pedagogy_lib.stats``)
def paired_points(a: Sequence[float], b: Sequence[float]) -> dict:
    """The paired difference a − b over seeds, accuracies given as fractions, result in points:
    mean, SE, the 95 % t-interval [lo, hi] and ``tie`` (the interval contains 0)."""
    return stats.paired(100 * np.asarray(a, dtype=np.float64), 100 * np.asarray(b, dtype=np.float64))


def points_by_seed(r: dict, key: str = "test_acc", scale: float = 100.0, seeds=None) -> dict:
    """{seed: accuracy × ``scale``} of one arm's stored results: ``r[key]`` (fractions; ``scale``
    100 gives points, 1 keeps fractions) against ``r["seeds"]`` (or ``seeds`` where the record
    names none). Runs of one seed share data order and head init across arms, so arms pair by seed
    (``stats.paired_by_seed``)."""
    seeds = r.get("seeds", seeds)
    if seeds is None or len(seeds) != len(r[key]):
        raise ValueError(f"points_by_seed: {len(r[key])} values of {key!r} need as many seeds, got {seeds!r}")
    return {s: scale * a for s, a in zip(seeds, r[key])}


def ci_text(d: dict, a: str = "a", b: str = "b") -> str:
    """'a − b = +1.2 points, 95 % CI [−0.1, +2.5], paired over 3 seeds: tie (a ≈ b)'."""
    return (f"{a} − {b} = {d['mean']:+.1f} points, 95 % CI [{d['lo']:+.1f}, {d['hi']:+.1f}], paired over "
            f"{d['n']} seeds: {stats.order(d, a, b)}")


def band_verdict(d: dict, lo: float = -math.inf, hi: float = math.inf) -> str:
    """A claim "the difference lies in [lo, hi] points" against a paired difference ``d``:
    holds when the whole 95 % interval lies in the band, approximately when only the mean
    does, wrong when the mean lies outside it."""
    _diff(d)
    if not lo <= hi:
        raise ValueError(f"band_verdict needs lo <= hi, got [{lo}, {hi}]")
    return graded(lo <= d["lo"] and d["hi"] <= hi, lo <= d["mean"] <= hi)


def match_verdict(d: dict, margin: float) -> str:
    """A claim "a matches b (within ``margin`` points)": holds when the 95 % interval lies inside
    ±margin, approximately when it contains 0 but is wider (a tie we cannot resolve), wrong
    when it excludes 0 (an order, not a match)."""
    _diff(d), _margin(margin)
    if not d["tie"]:
        return "wrong"
    return "holds" if -margin <= d["lo"] and d["hi"] <= margin else "approximately"


def within_verdict(d: dict, margin: float, differs: str = "wrong") -> str:
    """A claim "a matches b" with a stated tolerance of ``margin`` points, against a paired
    difference ``d``: holds when the whole 95 % interval lies inside ±margin (whether or not it
    contains 0), approximately when it is a tie too wide to say (contains 0, leaves the band),
    ``differs`` when it excludes 0 and leaves the band (a measured difference larger than the
    claim allows; ``not-reproduced-here`` where our regime differs from the claim's)."""
    _diff(d), _margin(margin)
    return graded(-margin <= d["lo"] and d["hi"] <= margin, d["tie"], differs)


# issue #13: a final comparison rests on >= 5 seeds; fewer (n = 3, or one seed / one evaluation
# with no interval) can show agreement but not hold a claim
MIN_SEEDS = 5


def few_seeds(verdict: str, n: int, min_n: int = MIN_SEEDS) -> str:
    """``verdict`` capped for thin evidence: "holds" resting on fewer than ``min_n`` paired seeds
    becomes "approximately"; every other verdict is kept."""
    checks.nonneg_int(n, "n (paired seeds)")
    return "approximately" if verdict == "holds" and n < min_n else verdict


def unbracketed(grids: dict[str, dict]) -> dict[str, str]:
    """{arm: 'low'|'high'} for every arm whose validation-best learning rate sits at an edge of
    its grid (``stats.bracketed``); ``grids``: arm -> {lr: mean validation score}. No verdict
    may rest on such an arm: its optimum may lie outside the grid."""
    out = {}
    for arm, scores in grids.items():
        lrs = sorted(scores, key=float)
        if len(lrs) < 2:
            out[arm] = "no grid"
            continue
        scored = {float(x): scores[x] for x in lrs}
        if len(scored) != len(lrs):
            raise ValueError(f"{arm}: a rate is listed twice in {lrs}")
        edge = stats.choice(scored)["edge"]   # a diverged rate (NaN, or None as stored) is never the best
        if edge:
            out[arm] = edge
    return out


def unbracketed_text(edges: dict[str, str]) -> str:
    """'untested: Houlsby's best rate is the lowest of its grid (extend it below)…'."""
    side = {"low": "lowest rate of its grid (extend the grid below it)",
            "high": "highest rate of its grid (extend the grid above it)", "no grid": "only rate tried"}
    return "; ".join(f"{arm}: the validation-best rate is the {side[e]}" for arm, e in edges.items())


def no_verdict_text(edges: dict[str, str], on: str = "") -> str:
    """'no verdict on accuracy: <unbracketed_text(edges)>; as measured, ': how a record that judges
    nothing on an unbracketed rate (the evidence protocol) opens before it reports the numbers;
    '' when ``edges`` is empty. ``on``: what the verdict is withheld on ("on accuracy"), if not all."""
    if not edges:
        return ""
    return f"no verdict{' ' + on if on else ''}: {unbracketed_text(edges)}; as measured, "


@dataclass(frozen=True)
class Claim:
    id: str
    chapter: str
    text: str
    published: str
    source: str
    rule: Callable  # (measurements) -> (verdict, our value)
    sentence: str = ""


class Claims:
    """One chapter's claims, in the order they were registered."""

    def __init__(self, chapter: str):
        self.chapter, self.items = chapter, []

    def rule(self, id_: str, text: str, published: str, source: str, sentence: str | None = None):
        """Decorator: register ``fn(measurements) -> (verdict, our_value)`` as the rule of a claim.
        ``sentence``: the article sentence's id in ``book.sentences`` (default: the claim's id)."""
        if any(c.id == id_ for c in self.items):
            raise ValueError(f"claim {id_!r} is registered twice")

        def decorate(fn):
            self.items.append(Claim(id_, self.chapter, text, published, source, fn, sentence or id_))
            return fn

        return decorate

    def judge(self, measurements) -> list[dict]:
        """Every claim's record: its rule applied to the chapter's measurements."""
        return [record(self.chapter, c.id, c.text, *c.rule(measurements), c.published, c.source, c.sentence)
                for c in self.items]
