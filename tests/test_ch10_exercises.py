"""Chapter 10's exercise checkers accept the right answers and reject the usual wrong ones."""
import numpy as np
import pytest

from pedagogy_lib import quant as Q, stats
from pedagogy_lib.book.ch10 import exercises as ex
from pedagogy_lib.book.exercises import NotYet


def mask(n_p, n_r):
    m = np.zeros(n_p + n_r + 1, np.int64)
    m[n_p:] = 1
    return m


def test_10_1_mask_off_by_one_and_missing_eos_are_caught():
    ex.check_response_mask(mask)
    with pytest.raises(NotYet, match="off by one the other way"):  # one step early
        ex.check_response_mask(lambda p, r: np.concatenate([mask(p, r)[1:], [0]]))
    with pytest.raises(NotYet, match="not n_prompt . 1"):  # one step late: [0]*(p+1) + [1]*r
        ex.check_response_mask(lambda p, r: np.array([0] * (p + 1) + [1] * r))
    with pytest.raises(NotYet, match="closing"):
        ex.check_response_mask(lambda p, r: np.concatenate([mask(p, r)[:-1], [0]]))
    with pytest.raises(NotYet):
        ex.check_response_mask(lambda p, r: np.ones(p + r + 1))     # the prompt graded too


def merge(packed, absmax, shape, A, B, s):
    return Q.dequantize_nf4(packed, absmax, shape) + s * (B @ A)


def test_10_2_merging_without_the_scale_or_without_dequantising_is_caught():
    ex.check_merge_dequantised(merge)
    with pytest.raises(NotYet, match="scaling"):
        ex.check_merge_dequantised(lambda p, a, sh, A, B, s: Q.dequantize_nf4(p, a, sh) + B @ A)
    with pytest.raises(NotYet):
        ex.check_merge_dequantised(lambda p, a, sh, A, B, s: s * (B @ A))      # the base forgotten


def test_10_3_loss_difference_and_unpaired_se_are_caught():
    ex.check_ppl_difference(lambda a, b: stats.paired(np.exp(a), np.exp(b)))
    with pytest.raises(NotYet, match="exp"):
        ex.check_ppl_difference(lambda a, b: stats.paired(a, b))

    def unpaired(a, b):
        d = stats.paired(np.exp(a), np.exp(b))
        se = np.sqrt(np.var(np.exp(a), ddof=1) / len(a) + np.var(np.exp(b), ddof=1) / len(b))
        return d | {"se": se}

    with pytest.raises(NotYet, match="paired"):
        ex.check_ppl_difference(unpaired)
