"""The book's evidence protocol as arithmetic: paired differences over seeds with a
t-interval, ties, and learning-rate grids that must bracket their optimum.

Chapter 08 states the protocol as equations; every chapter's comparisons use it:

* Eq. 8.4  d_s = a_s − b_s for each seed s (the two runs of a pair share data order and init),
           d̄ = (1/n) Σ_s d_s
* Eq. 8.5  SE(d̄) = sd(d) / √n,  sd with n − 1 in the denominator
* Eq. 8.6  95 % interval  d̄ ± t_{0.975, n−1} · SE(d̄)
* Eq. 8.7  a difference whose interval contains 0 is a **tie**; otherwise the sign orders the pair.

A learning rate chosen from a grid is only trusted when the best point is not at an edge of
the grid (``bracketed``); ``select_lr`` extends the grid geometrically until it is, or gives up
after ``max_extensions`` and says so (Eqs. 8.1–8.2).
"""
from __future__ import annotations

import math
import numbers
from typing import Callable, Sequence

import numpy as np
from scipy import stats as _st


def _finite_vector(x, name: str) -> np.ndarray:
    if np.asarray(x).dtype.kind not in "biuf":  # "0.5" would be parsed, not refused
        raise TypeError(f"{name} must hold numbers, got dtype {np.asarray(x).dtype}")
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of numbers, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf: {a.tolist()}")
    return a


def _power_of_two_near(d: np.ndarray) -> float:
    """2^k with 2^k ≤ max|d| < 2^(k+1) (1 for all-zero or non-finite d). Dividing by it is exact,
    so d̄ and sd are unchanged for ordinary values; without it the squares of differences near
    1e200 overflow and those near 1e-300 underflow to 0 (a zero SE would turn a tie into an order)."""
    peak = float(np.abs(d).max())
    return math.ldexp(1.0, math.frexp(peak)[1] - 1) if 0 < peak < math.inf else 1.0


def paired(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict:
    """The paired difference a − b over seeds (Eqs. 8.4–8.7).

    Returns ``mean``, ``se``, ``lo``, ``hi`` (the ``level`` t-interval), ``n`` and ``tie``
    (True when the interval contains 0). Needs at least two pairs: with one, the spread of
    the difference is unknown and no interval exists."""
    a, b = _finite_vector(a, "a"), _finite_vector(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"paired runs need equal counts: a has {a.size}, b has {b.size}")
    if a.size < 2:
        raise ValueError(f"a paired interval needs at least 2 seeds, got {a.size}")
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0 < level < 1:
        raise ValueError(f"level must be a number in (0, 1), got {level!r}")
    d, n = a - b, a.size                              # Eq. 8.4: d_s = a_s − b_s
    u = _power_of_two_near(d)                         # d/u is near 1: (d − d̄)² neither over- nor underflows
    mean = float((d / u).mean()) * u                  # Eq. 8.4: d̄
    se = float((d / u).std(ddof=1)) * u / math.sqrt(n)  # Eq. 8.5: SE = sd(d)/√n
    if not (math.isfinite(mean) and math.isfinite(se)):  # e.g. 1e308 − (−1e308): no order
        raise ValueError(f"the differences a − b overflow float64: {d.tolist()}")
    half = float(_st.t.ppf(0.5 + level / 2, n - 1)) * se              # Eq. 8.6
    lo, hi = mean - half, mean + half
    return {"mean": mean, "se": se, "lo": lo, "hi": hi, "n": n, "level": level,
            "tie": bool(lo <= 0.0 <= hi)}                     # Eq. 8.7


def order(diff: dict, a: str = "a", b: str = "b") -> str:
    """One phrase for a ``paired`` result: 'a > b', 'a < b' or 'tie (a ≈ b)'."""
    if diff["tie"]:
        return f"tie ({a} ≈ {b})"
    return f"{a} > {b}" if diff["mean"] > 0 else f"{a} < {b}"


TIE_RTOL = 1e-12  # scores this close (relative to the best) are one score: float means of equal accuracies


def bracketed(grid: Sequence[float], scores: Sequence[float]) -> dict:
    """Where the best score sits on a sorted grid: ``best`` (its grid value), ``index`` and
    ``edge`` (None when an interior point wins, else 'low' or 'high'). Ties for best go to the
    lowest grid value, so a flat curve reads as unbracketed at the low edge; scores within
    ``TIE_RTOL`` of the best (relative) tie with it (a mean of equal accuracies, rounded differently)."""
    g, s = _finite_vector(grid, "grid"), _finite_vector(scores, "scores")
    if g.shape != s.shape or g.size == 0:
        raise ValueError(f"grid and scores need the same non-zero length, got {g.size} and {s.size}")
    if np.any(np.diff(g) <= 0):
        raise ValueError(f"grid must be strictly increasing, got {g.tolist()}")
    top = float(s.max())
    # Eq. 8.1's tie, up to the rounding of a float mean: (253 + 328)/331 and (254 + 327)/331 correct
    # over two seeds are one accuracy, but their means as floats differ in the last bit
    i = int(np.flatnonzero(s >= top - TIE_RTOL * abs(top))[0])  # first maximum = lowest grid value among ties
    edge = "low" if i == 0 else "high" if i == g.size - 1 else None
    return {"best": float(g[i]), "index": i, "edge": edge}


def paired_by_seed(a: dict, b: dict, level: float = 0.95) -> dict:
    """``paired`` for runs keyed by seed ({seed: score}): the pairs are matched by seed, never
    by position, and two runs with different seed sets are refused (Eq. 8.4 needs the same
    data order and initialisation on both sides of every pair)."""
    try:
        seeds, other = sorted(a), sorted(b)
    except TypeError:  # e.g. 0 and "1": seeds read from two kinds of file
        raise TypeError(f"seeds must be of one kind (ints): {list(a)} vs {list(b)}") from None
    if seeds != other:
        raise ValueError(f"paired runs need the same seeds: {seeds} vs {other}")
    return paired([a[s] for s in seeds], [b[s] for s in seeds], level) | {"seeds": seeds}


def extension(g: Sequence[float], edge: str) -> float:
    """The next rate beyond the ``edge`` of the sorted grid ``g``, by the grid's own ratio
    there (Eq. 8.2: η_1²/η_2 below, η_n²/η_{n−1} above)."""
    if len(g) < 2:
        raise ValueError(f"extending a grid needs >= 2 rates, got {list(g)}")
    if edge not in ("low", "high"):  # None (bracketed) has no side to extend
        raise ValueError(f"edge must be 'low' or 'high', got {edge!r}")
    return g[0] * g[0] / g[1] if edge == "low" else g[-1] * g[-1] / g[-2]


def lr_choice(scores: dict) -> dict:
    """The protocol's record of a search, from {rate: mean validation score}: the sorted
    ``grid``, its ``scores``, the ``chosen`` rate (best score; ties: the smaller rate), and
    whether it was ``bracketed`` (``edge`` None) or sits at the 'low'/'high' edge."""
    g = sorted(scores)
    where = bracketed(g, [scores[x] for x in g])
    return {"grid": g, "scores": [scores[x] for x in g], "chosen": where["best"],
            "bracketed": where["edge"] is None, "edge": where["edge"]}


def _diverged(score) -> bool:
    """A validation score that is no number to compare: NaN/±inf (a run that diverged) or None
    (how a stored record keeps one, JSON having no NaN)."""
    return score is None or not math.isfinite(score)


def ranked(scores: dict) -> tuple[dict, list]:
    """{rate: score} that ``lr_choice`` can rank, and the rates that diverged: a NaN/inf/None
    score becomes one below every finite score, so a diverged rate is never chosen (and, as the
    worst point, may bracket the best from its side). No finite score at all: ValueError."""
    bad = sorted(x for x, v in scores.items() if _diverged(v))
    if len(bad) == len(scores):
        raise ValueError(f"no learning rate to choose: every rate of {sorted(scores)} diverged or was never "
                         f"scored (validation scores {scores})")
    low = min(v for x, v in scores.items() if x not in bad)
    floor = low - min(max(1.0, abs(low)), 1e300)  # clearly below: low − 1.0 is low itself beyond 2^53
    return {x: floor if x in bad else v for x, v in scores.items()}, bad


def choice(scores: dict) -> dict:
    """``lr_choice`` of scores that may hold diverged runs (``ranked``): never chosen, their
    scores stored as None (JSON has no NaN) and their rates listed under ``diverged``."""
    ok, bad = ranked(scores)
    c = lr_choice(ok)
    if bad:
        c["scores"] = [None if x in bad else v for x, v in zip(c["grid"], c["scores"])]
        c["diverged"] = bad
    return c


def next_lr(scores: dict, extensions: int, max_extensions: int) -> float | None:
    """One step of the search: the rate to try next, or None when the search is over
    (bracketed, or ``max_extensions`` extensions already made)."""
    if max_extensions < 0:
        raise ValueError(f"max_extensions must be >= 0, got {max_extensions}")
    c = lr_choice(scores)
    if c["edge"] is None or extensions >= max_extensions:
        return None
    return extension(c["grid"], c["edge"])


def rate_grid(grid: Sequence[float], min_rates: int = 1) -> list[float]:
    """A learning-rate grid checked before anything trains: at least ``min_rates`` distinct
    rates, each a finite real > 0; returned sorted, as floats (a repeated rate would train
    every run twice and pair a seed with itself)."""
    if isinstance(grid, (str, bytes, dict)) or not hasattr(grid, "__iter__"):
        raise TypeError(f"a learning-rate grid must be a sequence of rates, got {type(grid).__name__} {grid!r}")
    grid = list(grid)
    for x in grid:
        if isinstance(x, bool) or not isinstance(x, numbers.Real) or not (math.isfinite(x) and x > 0):
            raise ValueError(f"a learning-rate grid holds finite rates > 0, got {x!r} in {list(grid)}")
    g = sorted(float(x) for x in grid)
    if len(set(g)) != len(g):
        raise ValueError(f"a learning-rate grid may not repeat a rate, got {list(grid)}")
    if len(g) < min_rates:
        raise ValueError(f"a learning-rate grid needs >= {min_rates} positive finite rates, got {list(grid)}"
                         + (" (a grid is extended by its own ratio, which takes two rates)" if min_rates == 2 else ""))
    return g


def select_lr(evaluate: Callable[[float], float], grid: Sequence[float],
              max_extensions: int = 2) -> dict:
    """Choose a learning rate by validation score, extending the grid until bracketed.

    ``evaluate(lr)`` returns the validation score to maximise (the caller averages it over
    ≥ 2 seeds). The grid is extended by its own ratio (last/second-to-last, or first/second)
    on the side where the best point sits, at most ``max_extensions`` times (``next_lr``;
    ``runner.protocol`` takes the same steps with training runs in parallel). The result
    (``lr_choice``) records the grid, the scores, the chosen rate and whether it was
    ``bracketed``; a result with ``bracketed=False`` must not carry a verdict."""
    if isinstance(max_extensions, bool) or not isinstance(max_extensions, numbers.Integral) or max_extensions < 0:
        raise ValueError(f"max_extensions must be an int >= 0, got {max_extensions!r}")  # before any run
    grid = rate_grid(grid, min_rates=2)
    scores = {lr: float(evaluate(lr)) for lr in grid}
    for done in range(max_extensions + 1):
        new = next_lr(ranked(scores)[0], done, max_extensions)
        if new is None:
            break
        scores[new] = float(evaluate(new))
    return choice(scores)   # lr_choice, with any diverged rate reported
