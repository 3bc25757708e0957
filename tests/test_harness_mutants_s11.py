"""The experiment harness under mutation (session 11): each test here pins a behaviour of
``stats``, ``runner``, ``registry`` or ``results`` that a one-token change of the code
(``<`` for ``<=``, a slice off by one, a dropped ``not``…) left every other test passing.
Nothing trains: runs are synthetic, as in tests/test_protocol.py."""
import json
import math
import statistics

import numpy as np
import pytest

from pedagogy_lib import registry as RG
from pedagogy_lib import results as R
from pedagogy_lib import runner, stats
from pedagogy_lib.registry import Arm
from pedagogy_lib.runner import Budget

NAN = float("nan")
N_VAL = 331  # chapter 08's validation split: accuracies are k / 331


def fake(val, calls=None, test=None):
    """A run function: validation accuracy ``val(lr, seed)``, test accuracy ``test(lr, seed)``
    (default val + seed/100); every call recorded in ``calls`` as (label, lr, seed, measure)."""
    def run_fn(arm, task, budget, seed, lr, data=None, measure=False):
        if calls is not None:
            calls.append((arm.label, lr, seed, measure))
        v = val(lr, seed)
        return {"method": arm.label, "lr": lr, "seed": seed, "val_acc": v,
                "test_acc": test(lr, seed) if test else v + seed / 100, "trainable": 1, "sec_per_epoch": 0.0,
                "cpu_s": 0.0, "losses": []}
    return run_fn


def proto(arms, budget, val, calls=None, **kw):
    return runner.protocol(arms, None, budget, progress=False, run_fn=fake(val, calls), **kw)


# ----------------------------------------------------------------------------- Eq. 8.1's tie (a bug fixed here)
def test_equal_accuracies_tie_even_when_their_float_means_differ_in_the_last_bit():
    """581 of 662 validation answers right at 1e-2 (253 + 328) and at 3e-2 (254 + 327): one mean
    accuracy, so Eq. 8.1 keeps the smaller rate. As floats the second mean is 1 ulp larger, and
    the search used to pick 3e-2, at the grid's edge, and extend the grid for nothing."""
    assert statistics.fmean([253 / N_VAL, 328 / N_VAL]) < statistics.fmean([254 / N_VAL, 327 / N_VAL])
    table = {(0.01, 0): 253, (0.01, 1): 328, (0.03, 0): 254, (0.03, 1): 327}
    b = Budget(n_train=8, n_eval=8, seeds=(0, 1, 2), select_seeds=2, max_extensions=2)
    calls = []
    sel = proto([Arm("p", "probe", lrs=(3e-3, 1e-2, 3e-2))], b,
                lambda lr, s: table.get((lr, s), 200) / N_VAL, calls)["p"]["selection"]
    assert sel["chosen"] == 1e-2 and sel["bracketed"] and sel["extensions"] == 0
    assert len(calls) == 3 * 2 + 1
    # the same through stats.select_lr (the decoder's search) and on stored scores
    assert stats.select_lr(lambda lr: {1e-2: 581 / 662, 3e-2: 0.8776435045317221}.get(lr, 0.5),
                           [3e-3, 1e-2, 3e-2], 1)["chosen"] == 1e-2
    assert stats.bracketed([1.0, 2.0], [0.877643504531722, 0.8776435045317221])["index"] == 0
    # a real difference, however small for an accuracy (one answer in 10^6), still orders
    assert stats.bracketed([1.0, 2.0], [0.5, 0.5 + 1e-6])["index"] == 1
    assert stats.bracketed([1.0, 2.0, 3.0], [-2.0, -1.0, -1.0 - 1e-9])["index"] == 1


@pytest.mark.parametrize("score", [2.0 ** 54, 1e13, -1e20, -1e300])
def test_a_diverged_rate_stays_below_scores_of_any_size(score):
    """``ranked`` put a diverged rate at min − 1.0, which is the minimum itself beyond 2^53: a
    diverged smaller rate then tied with the best and, as the smaller, was chosen."""
    c = stats.choice({1e-3: NAN, 1e-2: score, 1e-1: score})
    assert c["chosen"] == 1e-2 and c["diverged"] == [1e-3] and c["scores"][0] is None
    ok, bad = stats.ranked({1e-3: None, 1e-2: score})
    assert bad == [1e-3] and ok[1e-3] < score and math.isfinite(ok[1e-3])
