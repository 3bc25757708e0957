"""The exercise checkers on answers the book never tried: right answers written differently
(a list for a tuple, float32, NumPy or torch scalars, an in-place pack) must pass; plausible
wrong answers (text, a non-whole count, np.random instead of the rng given, '' for None) must
get a NotYet, never a crash from the checker's own code. Each test failed before its fix."""
import math
import statistics
from fractions import Fraction

import numpy as np
import pytest
import torch

from pedagogy_lib import counting as C
from pedagogy_lib import scaling as S
from pedagogy_lib.bitfit import bitfit_params
from pedagogy_lib.book.exercises import NotYet, expect_close
from pedagogy_lib.book.ch00 import exercises as ch00
from pedagogy_lib.book.ch01 import exercises as ch01
from pedagogy_lib.book.ch02 import exercises as ch02
from pedagogy_lib.book.ch03 import exercises as ch03
from pedagogy_lib.book.ch04 import exercises as ch04
from pedagogy_lib.book.ch05 import exercises as ch05
from pedagogy_lib.book.ch06 import exercises as ch06
from pedagogy_lib.book.ch07 import exercises as ch07
from pedagogy_lib.book.ch08 import exercises as ch08
from pedagogy_lib.book.ch11 import exercises as ch11


# ------------------------------------------------------------------ reference answers (the solution cells)
def lora_backward(x, dy, W0, A, B, s):
    du = s * dy @ B
    return du.T @ x, s * dy.T @ (x @ A.T), dy @ W0 + du @ A


def lora_count(d_in, d_out, r):
    n = r * (d_in + d_out)
    return n, n / (d_in * d_out)


def pissa(W, r, s):
    U, S_, Vt = np.linalg.svd(W, full_matrices=False)
    root = np.sqrt(S_[:r] / s)
    A, B = root[:, None] * Vt[:r], U[:, :r] * root
    return A, B, W - s * (B @ A)


def mean_std(accs):
    return statistics.fmean(accs), statistics.stdev(accs)


def paired_difference(a, b):
    from scipy import stats

    d = np.asarray(a, float) - np.asarray(b, float)
    se = d.std(ddof=1) / np.sqrt(d.size)
    half = stats.t.ppf(0.975, d.size - 1) * se
    lo, hi = d.mean() - half, d.mean() + half
    return d.mean(), se, lo, hi, "tie" if lo <= 0 <= hi else ("a" if lo > 0 else "b")


def pareto(points):
    def dominated(a):
        pa, aa = points[a]
        return any((pb <= pa and ab > aa) or (pb < pa and ab >= aa) for b, (pb, ab) in points.items() if b != a)
    return sorted(n for n in points if not dominated(n))


def next_rate(v):
    g = sorted(v)
    best = max(g, key=lambda lr: (v[lr], -lr))
    if g[0] < best < g[-1]:
        return None
    return g[0] ** 2 / g[1] if best == g[0] else g[-1] ** 2 / g[-2]


def trainable_fractions(shape, m):
    n, d, L = C.total_params(shape), shape.hidden, shape.layers
    return {"prompt": m * d / n, "deep": m * d * L / n, "ptuning_v2": 2 * m * d * L / n}


def largest_fit(n_gpus, gpu_gb, headroom_gb):
    fam = S.family()
    ok = [k for k, c in fam.items() if S.qlora_sharded_gb(c, n_gpus)["total"] + headroom_gb <= gpu_gb]
    return max(ok, key=lambda k: fam[k]["params"]) if ok else None


def unpack(packed, n):
    q = np.empty(2 * packed.size, np.uint8)
    q[0::2], q[1::2] = packed >> 4, packed & 0x0F
    return q[:n]


# ------------------------------------------------------------------ a list where a tuple is natural
@pytest.mark.parametrize("check, answer", [
    (ch02.check_lora_backward, lora_backward), (ch02.check_lora_count, lora_count),
    (ch02.check_pissa_init, pissa), (ch08.check_mean_std, mean_std),
    (ch08.check_paired_difference, paired_difference)], ids=["02.1", "02.3", "02.4", "08.1", "08.4"])
def test_a_list_instead_of_a_tuple_passes(check, answer):
    check(answer)
    check(lambda *a: list(answer(*a)))


def test_arrays_and_tensors_where_the_statement_says_pair_or_list_pass():
    ch08.check_mean_std(lambda a: np.array(mean_std(a)))                       # [mean, std] as one array
    ch08.check_mean_std(lambda a: (torch.tensor(a, dtype=torch.float64).mean(), torch.tensor(a, dtype=torch.float64).std()))
    ch08.check_pareto(lambda p: np.array(pareto(p)))                           # names as an array of str
    ch08.check_next_rate(lambda v: None if next_rate(v) is None else torch.tensor(next_rate(v), dtype=torch.float64))
    for wrap in (np.array, lambda x: torch.tensor(x, dtype=torch.float64)):   # 0-d array / tensor values
        ch05.check_trainable_fractions(lambda s, m: {k: wrap(v) for k, v in trainable_fractions(s, m).items()})
    ch02.check_pissa_init(lambda W, r, s: tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in pissa(W, r, s)))


# ------------------------------------------------------------------ float32 answers at float32 precision
def test_float32_scalars_pass_a_float64_tolerance():
    ch00.check_mixed_adam_gb(lambda n: np.float32(n * 16 / 1e9))
    ch00.check_bitfit_fraction(lambda s: np.float32(bitfit_params(s) / C.total_params(s)))
    ch01.check_effective_rank(lambda s: np.float32(np.exp(-np.sum((p := s[s > 0] / s.sum()) * np.log(p)))))
    ch03.check_flop_overhead(lambda d, f, m, pl, T: np.float32(
        {"houlsby": 2, "pfeiffer": 1, "parallel": 1}[pl] * 4 * m * d / (2 * (4 * d * d + 2 * d * f) + 4 * T * d)))
    ch05.check_trainable_fractions(lambda s, m: {k: np.float32(v) for k, v in trainable_fractions(s, m).items()})
    ch08.check_mean_std(lambda a: tuple(np.float32(v) for v in mean_std(a)))
    ch08.check_next_rate(lambda v: None if next_rate(v) is None else np.float32(next_rate(v)))


def test_float32_arrays_pass_and_a_float32_rank_k_matrix_has_rank_k():
    f32 = lambda f: lambda *a: tuple(np.asarray(v, np.float32) for v in f(*a))  # noqa: E731
    ch02.check_lora_backward(f32(lora_backward))
    ch02.check_pissa_init(f32(pissa))                  # the off-diagonal of A Aᵀ is float32 rounding, not 0

    def rank_k_f32(W, k):
        U, s, Vt = np.linalg.svd(W.astype(np.float32), full_matrices=False)
        return (U[:, :k] * s[:k]) @ Vt[:k]
    ch01.check_rank_k_approx(rank_k_f32)               # was "has rank 4 > 1": float64's rank tolerance


def test_float32_widening_stays_far_below_a_real_mistake():
    want = np.linspace(1, 2, 7)
    expect_close(want.astype(np.float32), want, "w", rtol=1e-12, atol=0)
    with pytest.raises(NotYet):
        expect_close((want * (1 + 1e-4)).astype(np.float32), want, "w", rtol=1e-12, atol=0)
    with pytest.raises(NotYet):                          # float16 is not widened
        expect_close(want.astype(np.float16), want, "w", rtol=1e-9, atol=0)
    with pytest.raises(NotYet):                          # a float64 answer keeps the tight tolerance
        expect_close(want * (1 + 1e-7), want, "w", rtol=1e-9, atol=0)


# ------------------------------------------------------------------ crashes become NotYet
@pytest.mark.parametrize("check", [ch00.check_customers_for_10x, ch01.check_noise_k90,
                                   ch03.check_m_matching_lora, ch04.check_prefix_tokens_matching_lora])
def test_an_infinite_whole_number_is_a_notyet_not_an_overflow(check):
    with pytest.raises(NotYet, match="whole number"):
        check(float("inf"))


def test_a_correct_in_place_pack_passes():
    def pack_in_place(q):                               # right bytes, but it overwrites its input
        if q.size % 2:
            q = np.append(q, np.uint8(0))
        q[0::2] <<= 4
        q[0::2] |= q[1::2]
        return q[0::2].copy()
    ch07.check_pack_nibbles(pack_in_place, unpack)      # was ValueError from the checker's own reference


def test_a_fraction_answer_reaches_the_passed_line():
    ch07.check_dq_saving(lambda b, b2: Fraction(24, b) - Fraction(32, b * b2))


# ------------------------------------------------------------------ holes: wrong answers that passed
@pytest.mark.parametrize("check, answer", [
    (ch11.check_allreduce_bytes, lambda n, b, N: str(2 * (N - 1) / N * n * b)),
    (ch00.check_lora_count, lambda s, r, t: str(sum(r * sum(C.linear_shapes(s)[x]) for x in t) * s.layers)),
    (ch03.check_adapter_params, lambda d, m, p, L: str(L * {"houlsby": 2}.get(p, 1) * (2 * m * d + m + d))),
    (ch06.check_shift_for_fraction, lambda z, p: str(-np.quantile(z, 1 - p))),
], ids=["11.1", "00.2", "03.1", "06.4"])
def test_text_that_spells_the_number_is_not_an_answer(check, answer):
    with pytest.raises(NotYet):
        check(answer)


def test_text_is_not_a_number_for_the_reasoning_answers():
    with pytest.raises(NotYet, match="whole number"):
        ch00.check_customers_for_10x("11")


def test_02_3_a_count_that_is_not_whole_is_caught():
    with pytest.raises(NotYet, match="whole number"):
        ch02.check_lora_count(lambda i, o, r: (r * (i + o) + 0.5, r * (i + o) / (i * o)))


def test_05_2_np_random_instead_of_the_rng_given_is_caught():
    ch05.check_vocab_init(lambda t, c, m, rng: t[rng.choice(c, m, replace=False)])
    with pytest.raises(NotYet, match="same rng seed"):
        ch05.check_vocab_init(lambda t, c, m, rng: t[np.random.choice(c, m, replace=False)])


def test_11_3_nothing_fits_must_be_none():
    ch11.check_largest_fit(largest_fit)
    with pytest.raises(NotYet, match="None"):
        ch11.check_largest_fit(lambda *a: largest_fit(*a) or "")         # '' is not None
    with pytest.raises(NotYet):
        ch11.check_largest_fit(lambda *a: largest_fit(*a) or "LLaMA-7B")  # the smallest always "fits"


def test_06_5_a_rounded_ratio_is_not_told_it_equals_the_answer():
    frac = lambda s: bitfit_params(s) / C.total_params(s)  # noqa: E731
    given = round(frac(C.BERT_BASE) / frac(C.BERT_LARGE), 2)
    with pytest.raises(NotYet) as info:
        ch06.check_bitfit_shrinks(given)
    shown = float(str(info.value).split("should be ")[1].split()[0])  # to 1e-7, not rounded like the "1.15" given
    assert math.isclose(shown, frac(C.BERT_BASE) / frac(C.BERT_LARGE), rel_tol=1e-7)


# ------------------------------------------------------------------ messages name the case
def test_02_messages_name_the_shapes_and_scale_of_the_failing_case():
    with pytest.raises(NotYet, match=r"\[x \(2, 7\), W0 \(5, 7\), r=3, s=2\]"):
        ch02.check_lora_backward(lambda x, dy, W0, A, B, s: (lambda o: (o[0] / s, o[1], o[2]))(lora_backward(x, dy, W0, A, B, s)))
    with pytest.raises(NotYet, match=r"\[W \(5, 7\), r=3, s=0.666667\]"):
        ch02.check_pissa_init(lambda W, r, s: pissa(W, r, s)[:2] + (W,))


@pytest.mark.parametrize("check", [ch01.check_d90, ch06.check_bitfit_count, ch06.check_select_qm2,
                                   ch08.check_select_lr], ids=["01.3", "06.1", "06.3", "08.2"])
def test_a_torch_vector_where_a_number_or_names_are_due_is_a_notyet(check):
    with pytest.raises(NotYet, match="wrong type or shape"):   # was RuntimeError from torch, raised in the checker
        check(lambda *a: torch.zeros(2))


def test_02_5_a_target_in_the_middle_of_the_path_is_caught():
    import re

    def component_anywhere(path, targets):   # '.attention.' inside the path is not peft's suffix rule
        if isinstance(targets, str):
            return re.fullmatch(targets, path) is not None
        return any("." + t + "." in "." + path + "." for t in targets)
    with pytest.raises(NotYet, match="suffix"):
        ch02.check_target_match(component_anywhere)


def test_06_3_a_one_digit_layer_pattern_is_caught():
    import re

    def one_digit(names):                    # right on 2 or 3 layers, misses layer.10 and layer.11 of BERT-base
        return [n for n in names if re.fullmatch(r".*layer\.\d\.(attention\.self\.query|intermediate\.dense)\.bias", n)]
    with pytest.raises(NotYet, match=r"12 layers.*missing \['encoder\.layer\.10\."):
        ch06.check_select_qm2(one_digit)


def test_a_malformed_answer_shows_no_traceback_into_the_checker():
    with pytest.raises(NotYet, match="wrong type or shape") as info:
        ch08.check_select_lr(lambda v: [[1]])
    assert info.value.__cause__ is None and info.value.__suppress_context__   # the message says it all


def test_05_5_and_06_5_refuse_a_number_spelled_as_text():
    """A reasoning answer must be a number: "12" spells the right ratio but is text (as chapter 00's
    checkers refuse it); the same value as a number passes."""
    right = 2 * C.minilm_shape().layers
    ch05.check_ptv2_over_prompt(right)
    for text in (str(right), str(right).encode()):
        with pytest.raises(NotYet, match="text"):
            ch05.check_ptv2_over_prompt(text)
    frac = lambda s: bitfit_params(s) / C.total_params(s)  # noqa: E731
    ratio = frac(C.BERT_BASE) / frac(C.BERT_LARGE)
    ch06.check_bitfit_shrinks(ratio)
    with pytest.raises(NotYet, match="text"):
        ch06.check_bitfit_shrinks(repr(ratio))
