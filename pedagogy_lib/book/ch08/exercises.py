"""Checkers for chapter 08's exercises (the comparison protocol and its statistics)."""
import statistics

import numpy as np

from pedagogy_lib import stats
from pedagogy_lib.book.exercises import (NotYet, attempt, expect, expect_close, guard_checkers, items, passed,
                                         refuse_known_mistakes, to_numpy)


def check_mean_std(fn) -> None:
    """fn(accs) -> (mean, sample std) — the statistics the results table reports."""
    cases = [[0.8, 0.82, 0.79], [0.5, 0.5], [0.91, 0.88, 0.9, 0.87]]
    for accs in cases:
        got = attempt(fn, list(accs))
        if isinstance(to_numpy(got), np.ndarray):  # an array [mean, std] is a pair too
            got = list(to_numpy(got))
        got = [float(v) for v in items(got, 2, "a pair (mean, std)")]
        want = (statistics.fmean(accs), statistics.stdev(accs))
        if abs(got[1] - float(np.std(accs))) < 1e-12 and abs(want[1] - got[1]) > 1e-12:
            raise NotYet("that is the population std (divides by n); with 3 seeds use the sample std "
                         "(divides by n − 1), as statistics.stdev does")
        expect_close(got, want, f"(mean, std) of {accs}", rtol=1e-9, atol=1e-12)
    passed("08.1", "mean and sample standard deviation")


def check_select_lr(fn) -> None:
    """fn(val_by_lr: dict[float, float]) -> the chosen lr (best val accuracy, ties → smaller lr)."""
    cases = [({1e-3: 0.8, 3e-3: 0.85}, 3e-3), ({1e-3: 0.85, 3e-3: 0.85}, 1e-3),
             ({3e-2: 0.7, 1e-2: 0.7, 3e-3: 0.6}, 1e-2)]
    for grid, want in cases:
        got = attempt(fn, dict(grid))
        if got != want and grid.get(got) == max(grid.values()):
            raise NotYet(f"for {grid} you picked {got}; on a tie the protocol keeps the smaller rate ({want})")
        expect(got == want, f"for {grid} the protocol picks {want}, you picked {got}; select on validation "
                            "accuracy, never on test accuracy")
    passed("08.2", "learning rate chosen on validation, ties to the smaller rate")


def _pareto_front(pts):
    """Names no other point dominates: fewer-or-equal parameters and strictly higher accuracy,
    or strictly fewer parameters and equal-or-higher accuracy (exact ties dominate nobody)."""
    return sorted(a for a, (n, acc) in pts.items()
                  if not any((m <= n and b_acc > acc) or (m < n and b_acc >= acc)
                             for b, (m, b_acc) in pts.items() if b != a))


def _names(got):
    """The names an answer lists (a list, tuple, set or array of str), sorted; None stays None."""
    if got is None:
        return None
    if isinstance(got, str):
        raise NotYet(f"return a list of names, got the string {got!r:.60}")
    return sorted(str(n) for n in got)


def _pareto_cases(fn):
    """Ties on one coordinate, exact duplicates, and random points drawn from few values."""
    tie = {"p": (100, 0.85), "q": (100, 0.84), "r": (50, 0.70), "s": (50, 0.70), "t": (20, 0.70)}
    expect(_names(attempt(fn, dict(tie))) == _pareto_front(tie),
           "same parameters and lower accuracy is dominated ('q' by 'p'); an exact duplicate is not "
           "(neither strictly beats the other), but a point with fewer parameters and equal accuracy "
           f"dominates both ('t' beats 'r' and 's'); the front here is {_pareto_front(tie)}")
    dup = {"u": (5, 0.6), "v": (5, 0.6), "w": (9, 0.7)}
    expect(_names(attempt(fn, dict(dup))) == ["u", "v", "w"],
           "two methods with identical parameters and accuracy do not dominate each other: keep both")
    rng = np.random.default_rng(int(np.random.default_rng().integers(1 << 30)))
    for _ in range(20):
        pts = {f"m{i}": (int(rng.choice([10, 20, 50, 100])), float(rng.choice([0.7, 0.8, 0.9])))
               for i in range(int(rng.integers(2, 9)))}
        got = _names(attempt(fn, dict(pts)))
        expect(got == _pareto_front(pts), f"on {pts} the front is {_pareto_front(pts)}, you returned {got}")


def check_pareto(fn) -> None:
    """fn(points: dict[name, (trainable, accuracy)]) -> the names on the Pareto front, in any
    order (no other method has ≤ parameters and > accuracy, or < parameters and ≥ accuracy)."""
    pts = {"a": (10, 0.80), "b": (100, 0.85), "c": (50, 0.79), "d": (1000, 0.85), "e": (5, 0.60)}
    want = ["a", "b", "e"]
    _pareto_cases(fn)
    got = _names(attempt(fn, dict(pts)))
    expect(got is not None, "return a list of names")
    if "d" in got:
        raise NotYet("'d' ties 'b' on accuracy with 10× the parameters: it is dominated")
    if "c" in got:
        raise NotYet("'c' has more parameters than 'a' and lower accuracy: it is dominated")
    expect(got == want, f"the front is {want}, you returned {got}")
    passed("08.3", "Pareto front of trainable parameters vs accuracy")


def _paired_reference(a, b):
    d = stats.paired(a, b)  # Eqs. 8.4–8.7, the library's
    return d["mean"], d["se"], d["lo"], d["hi"], "tie" if d["tie"] else ("a" if d["lo"] > 0 else "b")


def check_paired_difference(fn) -> None:
    """fn(a, b) -> (mean difference, its standard error, low, high, verdict) for per-seed
    accuracies a[s], b[s] of two methods run on the same seeds: the paired difference
    d_s = a_s − b_s, SE = sd(d)/√S, a 95% t-interval, and "a", "b" or "tie" (interval
    contains 0)."""
    rng = np.random.default_rng(int(np.random.default_rng().integers(1 << 30)))
    seed_effect = rng.normal(0, 0.02, 5)
    cases = [([0.90, 0.88, 0.91], [0.89, 0.86, 0.90]),        # small but consistent: a wins
             ([0.90, 0.84, 0.93], [0.89, 0.86, 0.90]),        # same means, noisy: a tie
             (list(0.85 + seed_effect + rng.normal(0, 0.003, 5)), list(0.86 + seed_effect + rng.normal(0, 0.003, 5)))]
    for a, b in cases:
        got = items(attempt(fn, list(a), list(b)), 5, "(mean, se, low, high, verdict)")
        want = _paired_reference(a, b)
        unpaired = np.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b))
        refuse_known_mistakes(got[1], want[1], {unpaired: "that SE treats the two methods as independent; the seeds "
                                                          "pair them: take d_s = a_s − b_s first, then sd(d)/√S"},
                              "the SE", atol=1e-9)
        if abs(float(got[3]) - (want[0] + 1.96 * want[1])) < 1e-9:
            raise NotYet(f"with {len(a)} seeds use the t quantile with {len(a) - 1} degrees of freedom, not 1.96")
        expect_close(np.array(got[:4], np.float64), np.array(want[:4]), f"(mean, se, low, high) for a={np.round(a, 3).tolist()}",
                     rtol=1e-6, atol=1e-9)
        expect(got[4] == want[4], f"the interval [{want[2]:.4f}, {want[3]:.4f}] gives verdict {want[4]!r}, you said {got[4]!r}")
    passed("08.4 paired difference", "per-seed differences, their SE and a t-interval; 0 inside means a tie")


def _next_rate_reference(val_by_lr: dict):
    return stats.next_lr({float(k): float(v) for k, v in val_by_lr.items()}, 0, 1)


def check_next_rate(fn) -> None:
    """fn(val_by_lr: dict[float, float]) -> the rate Eq. 8.2 adds to the grid, or None when the
    chosen rate (Eq. 8.1, ties to the smaller rate) is an interior point."""
    cases = [{1e-3: 0.80, 3e-3: 0.85, 1e-2: 0.82},          # bracketed: nothing to add
             {3e-3: 0.85, 1e-3: 0.80},                       # best at the top: η_n²/η_{n−1}
             {1e-3: 0.86, 3e-3: 0.85, 1e-2: 0.80},           # best at the bottom: η_1²/η_2
             {1e-4: 0.7, 1e-3: 0.8, 2e-3: 0.9},              # the grid's own ratio at that end (2), not 3 or 10
             {1e-3: 0.85, 3e-3: 0.85, 1e-2: 0.85}]           # flat: the tie goes to the smallest rate, an edge
    for grid in cases:
        want, got = _next_rate_reference(grid), to_numpy(attempt(fn, dict(grid)), scalar=True)
        if got is not None and (not isinstance(got, (int, float, np.integer, np.floating)) or isinstance(got, bool)):
            raise NotYet(f"the answer has the wrong type or shape: a rate is a number or None, got {type(got).__name__} {got!r:.40}")
        if want is None:
            expect(got is None, f"for {grid} the best rate is inside the grid: return None, you returned {got}")
            continue
        expect(got is not None, f"for {grid} the best rate sits at an edge: return the rate to add")
        if grid == cases[-1] and abs(float(got) - want) > 1e-6 * want:  # 1e-6: a float32 rate is right too
            raise NotYet("on a flat curve Eq. 8.1 keeps the smallest rate, which is the low edge: extend downwards")
        expect_close(float(got), want, f"the rate to add for {grid}", rtol=1e-9, atol=0.0)
    passed("08.5", "a grid extended at the edge where its best rate sits, by its own ratio")


guard_checkers(globals())  # every check_* answers a malformed attempt with NotYet
