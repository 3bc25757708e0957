"""The evidence protocol (pedagogy_lib.stats): paired t-intervals agree with SciPy's paired
t-test, ties are called ties, and learning-rate grids are extended until bracketed."""
import math

import numpy as np
import pytest
from scipy import stats as st

from pedagogy_lib import stats


@pytest.mark.parametrize("seed", range(5))
def test_paired_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 12))
    a = rng.normal(0.9, 0.02, n)
    b = a - rng.normal(rng.normal(0, 0.01), 0.01, n)
    r = stats.paired(a, b)
    t = st.ttest_rel(a, b)
    assert r["n"] == n
    assert math.isclose(r["mean"] / r["se"], t.statistic, rel_tol=1e-10)
    lo, hi = t.confidence_interval(0.95)
    assert math.isclose(r["lo"], lo, rel_tol=1e-10, abs_tol=1e-14)
    assert math.isclose(r["hi"], hi, rel_tol=1e-10, abs_tol=1e-14)
    assert r["tie"] == (t.pvalue >= 0.05)


def test_tie_and_order():
    same = stats.paired([0.90, 0.91, 0.92], [0.905, 0.905, 0.915])
    assert same["tie"] and stats.order(same, "lora", "full") == "tie (lora ≈ full)"
    apart = stats.paired([0.90, 0.91, 0.92], [0.80, 0.815, 0.82])
    assert not apart["tie"] and stats.order(apart, "lora", "full") == "lora > full"
    below = stats.paired([0.80, 0.815, 0.82], [0.90, 0.91, 0.92])
    assert stats.order(below, "x", "y") == "x < y"


def test_identical_runs_are_a_tie():
    """Every difference 0: the interval is the single point [0, 0], and a closed interval that
    contains 0 is a tie (Eq. 8.7), never an order."""
    same = stats.paired([0.90, 0.91, 0.92], [0.90, 0.91, 0.92])
    assert same["lo"] == same["hi"] == 0.0
    assert same["tie"] and stats.order(same, "a", "b") == "tie (a ≈ b)"


def test_pairing_matters():
    """Unpaired, these two arms overlap; paired (shared seed effects), one is always better."""
    seed_effect = np.array([0.0, 0.05, -0.04, 0.03, -0.02])
    a, b = 0.9 + seed_effect + 0.003, 0.9 + seed_effect
    assert not stats.paired(a, b)["tie"]
    assert st.ttest_ind(a, b).pvalue > 0.5  # an unpaired test would call it a tie


@pytest.mark.parametrize("a, b, match", [
    ([1.0], [0.5], "at least 2"),
    ([1.0, 2.0], [1.0], "equal counts"),
    ([1.0, float("nan")], [1.0, 2.0], "NaN"),
    ([[1.0, 2.0]], [[1.0, 2.0]], "1-D"),
    ([1.0, float("inf")], [1.0, 2.0], "inf"),
])
def test_paired_refuses(a, b, match):
    with pytest.raises(ValueError, match=match):
        stats.paired(a, b)


def test_paired_level():
    with pytest.raises(ValueError, match="level"):
        stats.paired([1, 2], [0, 1], level=1.0)
    wide, narrow = stats.paired([1, 2, 4], [0, 1, 1], 0.99), stats.paired([1, 2, 4], [0, 1, 1], 0.5)
    assert wide["hi"] - wide["lo"] > narrow["hi"] - narrow["lo"]


@pytest.mark.parametrize("scores, edge", [([1, 3, 2], None), ([3, 2, 1], "low"), ([1, 2, 3], "high"),
                                          ([2, 2, 1], "low"), ([1, 2], "high")])
def test_bracketed(scores, edge):
    assert stats.bracketed([1e-4, 1e-3, 1e-2][: len(scores)], scores)["edge"] == edge


def test_bracketed_refuses_unsorted():
    with pytest.raises(ValueError, match="strictly increasing"):
        stats.bracketed([1e-3, 1e-4], [1, 2])


def test_select_lr_extends_until_bracketed():
    peak = 3e-2
    calls = []

    def val(lr):
        calls.append(lr)
        return -abs(math.log10(lr) - math.log10(peak))

    r = stats.select_lr(val, [1e-4, 1e-3], max_extensions=5)
    # 1e-3 wins at the high edge -> 1e-2 added, wins again -> 1e-1 added, loses: bracketed
    assert r["bracketed"] and r["edge"] is None
    assert np.allclose(r["grid"], [1e-4, 1e-3, 1e-2, 1e-1], rtol=1e-9)
    assert math.isclose(r["chosen"], 1e-2, rel_tol=1e-9)
    assert len(calls) == len(r["grid"])


def test_select_lr_gives_up_and_says_so():
    r = stats.select_lr(lambda lr: lr, [1e-4, 1e-3, 1e-2], max_extensions=1)
    assert not r["bracketed"] and r["edge"] == "high" and len(r["grid"]) == 4
    assert math.isclose(r["grid"][-1], 1e-1, rel_tol=1e-9)


def test_select_lr_refuses_bad_grid():
    for grid in ([1e-3], [0.0, 1e-3], [1e-3, float("inf")]):
        with pytest.raises(ValueError, match="grid"):
            stats.select_lr(lambda lr: 0.0, grid)
