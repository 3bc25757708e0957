"""Adversarial answers to the chapters' exercise checkers (s11): wrong answers that used to pass
(a one-element array for a number, an answer wrong only at an edge the statement covers, a
measurement on another matrix than the one given) must get a NotYet, and right answers written
differently (float32 rows, float64 decoded values, an extra dict key) must pass. Each test failed
on the checker before its fix."""
import numpy as np
import pytest

from pedagogy_lib import counting as C
from pedagogy_lib import quant as Q
from pedagogy_lib.book.exercises import NotYet
from pedagogy_lib.book.ch01 import exercises as ch01
from pedagogy_lib.book.ch05 import exercises as ch05
from pedagogy_lib.book.ch06 import exercises as ch06
from pedagogy_lib.book.ch07 import exercises as ch07


# ------------------------------------------------------------------ 01.3: one d, not an array of one
def d90(ds, accs, full_acc):
    reached = [d for d, a in zip(ds, accs) if a >= 0.9 * full_acc]
    return min(reached) if reached else None


def test_01_3_a_one_element_array_is_not_a_dimension():
    ch01.check_d90(d90)
    ch01.check_d90(lambda *a: None if d90(*a) is None else np.int64(d90(*a)))   # a NumPy integer is one
    with pytest.raises(NotYet, match="whole number"):                          # was: `[100] == 100` is truthy
        ch01.check_d90(lambda *a: None if d90(*a) is None else np.array([d90(*a)]))


# ------------------------------------------------------------------ 05.2, 05.3: right answers written differently
def test_05_2_prompt_rows_copied_as_float32_pass():
    ch05.check_vocab_init(lambda t, c, m, rng: t[rng.choice(c, m, replace=False)].astype(np.float32))
    with pytest.raises(NotYet, match="row of the embedding table"):          # rounding is all it forgives
        ch05.check_vocab_init(lambda t, c, m, rng: t[rng.choice(c, m, replace=False)] * (1 + 1e-6))


def trainable_fractions(shape, m):
    n, d, L = C.total_params(shape), shape.hidden, shape.layers
    return {"prompt": m * d / n, "deep": m * d * L / n, "ptuning_v2": 2 * m * d * L / n}


def test_05_3_an_extra_key_passes_and_a_missing_one_does_not():
    ch05.check_trainable_fractions(lambda s, m: trainable_fractions(s, m) | {"total": C.total_params(s)})
    with pytest.raises(NotYet, match="keys"):
        ch05.check_trainable_fractions(lambda s, m: {k: v for k, v in trainable_fractions(s, m).items() if k != "deep"})


# ------------------------------------------------------------------ 06.4: the ends p = 0 and p = 1
def test_06_4_a_shift_wrong_at_p_0_or_p_1_is_caught():
    def right(z, p):
        z = np.sort(z)
        k = int(round((1 - p) * len(z)))               # entries that stay ≤ 0
        lo = z[k - 1] if k > 0 else z[0] - 1.0
        hi = z[k] if k < len(z) else z[-1] + 1.0
        return -(lo + hi) / 2

    def all_on_at_p_0(z, p):                           # k = 0 falls back to "everything positive"
        k, zs = int(round(p * len(z))), np.sort(z)
        return -(zs[len(z) - k - 1] + zs[len(z) - k]) / 2 if 0 < k < len(z) else -zs[0] + 1.0

    def wraps_at_p_1(z, p):                            # index k − 1 = −1 at p = 1: the largest entry
        return -np.sort(z)[int(round((1 - p) * len(z))) - 1]

    ch06.check_shift_for_fraction(right)
    for wrong, n_pos in ((all_on_at_p_0, "yours gives 9"), (wraps_at_p_1, "yours gives 0")):
        with pytest.raises(NotYet, match=n_pos):
            ch06.check_shift_for_fraction(wrong)


# ------------------------------------------------------------------ 07.5: float64 decoded values are right
def test_07_5_a_float64_dequantize_passes():
    pytest.importorskip("bitsandbytes")

    def dequantize64(packed, absmax, n, blocksize):     # code · absmax in float64: exact, then nothing lost
        codes = np.empty(2 * packed.size, np.uint8)
        codes[0::2], codes[1::2] = packed >> 4, packed & 15
        return Q.nf4_codebook().astype(np.float64)[codes[:n]] * np.repeat(absmax.astype(np.float64), blocksize)[:n]

    ch07.check_nf4_blockwise(lambda w, bs: Q.quantize_nf4_plain(w, bs), dequantize64)
    with pytest.raises(NotYet, match="dequantize"):     # a float64 answer off by more than float32 rounding is not
        ch07.check_nf4_blockwise(lambda w, bs: Q.quantize_nf4_plain(w, bs),
                                 lambda *a: dequantize64(*a) * (1 + 1e-6))


# ------------------------------------------------------------------ 07.6: measured on the given matrix
def _mse_ratio(W, blocksize=64):
    mse = {}
    for name, code in (("nf4", Q.nf4_codebook()), ("fp4", Q.fp4_codebook())):
        packed, absmax = Q.quantize_4bit(W, code, blocksize=blocksize)
        mse[name] = float(np.mean((Q.dequantize_4bit(packed, absmax, W.shape, code, blocksize=blocksize) - W) ** 2))
    return mse["fp4"] / mse["nf4"]


def test_07_6_a_ratio_measured_on_another_matrix_is_caught():
    given = np.random.default_rng(0).standard_normal((384, 1536)).astype(np.float32)
    ch07.check_bytes_vs_error({"bytes_fp4_over_nf4": 1, "mse_fp4_over_nf4": _mse_ratio(given)})
    ch07.check_bytes_vs_error({"bytes_fp4_over_nf4": 1.0, "mse_fp4_over_nf4": np.float32(_mse_ratio(given))})
    other = np.random.default_rng(1).standard_normal((384, 1536)).astype(np.float32)   # 1.7607 against 1.7599
    with pytest.raises(NotYet, match="given matrix"):
        ch07.check_bytes_vs_error({"bytes_fp4_over_nf4": 1.0, "mse_fp4_over_nf4": _mse_ratio(other)})


# ------------------------------------------------------------------ 07.4: sorted, as the statement asks
def test_07_4_levels_returned_unsorted_are_caught():
    ch07.check_lloyd_max(lambda s, levels=16: Q.lloyd_max(s, levels).astype(np.float32))
    with pytest.raises(NotYet, match="sorted"):      # was: the checker sorted them itself
        ch07.check_lloyd_max(lambda s, levels=16: Q.lloyd_max(s, levels)[::-1].copy())
