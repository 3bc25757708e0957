"""Checkers for chapter 08's exercises (the comparison protocol and its statistics)."""
import statistics

import numpy as np

from pedagogy_lib.book.exercises import guard_checkers
from pedagogy_lib.book.exercises import NotYet, attempt, expect, expect_close, passed


def check_mean_std(fn) -> None:
    """fn(accs) -> (mean, sample std) — the statistics the results table reports."""
    cases = [[0.8, 0.82, 0.79], [0.5, 0.5], [0.91, 0.88, 0.9, 0.87]]
    for accs in cases:
        got = attempt(fn, list(accs))
        expect(isinstance(got, tuple) and len(got) == 2, "return a pair (mean, std)")
        want = (statistics.fmean(accs), statistics.stdev(accs))
        if abs(got[1] - float(np.std(accs))) < 1e-12 and abs(want[1] - got[1]) > 1e-12:
            raise NotYet("that is the population std (divides by n); with 3 seeds use the sample std "
                         "(divides by n − 1), as statistics.stdev does")
        expect_close(got, want, f"(mean, std) of {accs}", rtol=1e-9, atol=1e-12)
    passed("8.1", "mean and sample standard deviation")


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
    passed("8.2", "learning rate chosen on validation, ties to the smaller rate")


def check_pareto(fn) -> None:
    """fn(points: dict[name, (trainable, accuracy)]) -> sorted names on the Pareto front
    (no other method has ≤ parameters and > accuracy, or < parameters and ≥ accuracy)."""
    pts = {"a": (10, 0.80), "b": (100, 0.85), "c": (50, 0.79), "d": (1000, 0.85), "e": (5, 0.60)}
    want = ["a", "b", "e"]
    got = attempt(fn, dict(pts))
    expect(got is not None, "return a list of names")
    got = sorted(got)
    if "d" in got:
        raise NotYet("'d' ties 'b' on accuracy with 10× the parameters: it is dominated")
    if "c" in got:
        raise NotYet("'c' has more parameters than 'a' and lower accuracy: it is dominated")
    expect(got == want, f"the front is {want}, you returned {got}")
    passed("8.3", "Pareto front of trainable parameters vs accuracy")


guard_checkers(globals())  # every check_* answers a malformed attempt with NotYet
