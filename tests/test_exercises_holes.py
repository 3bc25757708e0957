"""Wrong answers that the chapters' checkers used to accept must now raise NotYet, and the
right answers must still pass. One test per hole listed in issue 14."""
import re

import numpy as np
import pytest

from pedagogy_lib import quant as Q
from pedagogy_lib.book.exercises import NotYet
from pedagogy_lib.book.ch02 import exercises as ch02
from pedagogy_lib.book.ch05 import exercises as ch05
from pedagogy_lib.book.ch06 import exercises as ch06
from pedagogy_lib.book.ch07 import exercises as ch07
from pedagogy_lib.book.ch08 import exercises as ch08


# ----------------------------------------------------------------------------- 02.1
def lora_backward(x, dy, W0, A, B, s):
    u = x @ A.T
    du = s * dy @ B
    return du.T @ x, s * dy.T @ u, dy @ W0 + du @ A


def test_02_1_a_hard_coded_scale_is_caught():
    ch02.check_lora_backward(lora_backward)
    with pytest.raises(NotYet):
        ch02.check_lora_backward(lambda x, dy, W0, A, B, s: lora_backward(x, dy, W0, A, B, 2.0))


# ----------------------------------------------------------------------------- 02.4
def pissa(W, r, s):
    U, S, Vt = np.linalg.svd(W, full_matrices=False)
    root = np.sqrt(S[:r] / s)
    A, B = root[:, None] * Vt[:r], U[:, :r] * root
    return A, B, W - s * B @ A


def pissa_asymmetric(W, r, s):
    U, S, Vt = np.linalg.svd(W, full_matrices=False)
    A, B = S[:r, None] * Vt[:r] / s, U[:, :r]          # all of Σ_r/s in A: not Eq. 2.12
    return A, B, W - s * B @ A


def test_02_4_the_asymmetric_split_is_caught():
    ch02.check_pissa_init(pissa)
    with pytest.raises(NotYet, match="Bᵀ B|diagonal of A Aᵀ"):
        ch02.check_pissa_init(pissa_asymmetric)


# ----------------------------------------------------------------------------- 02.5
def _match(path, targets, how):
    if isinstance(targets, str):
        return how(targets, path)
    return any(path == t or path.endswith("." + t) for t in targets)


def test_02_5_re_match_and_none_are_caught():
    ch02.check_target_match(lambda p, t: bool(_match(p, t, re.fullmatch)))
    with pytest.raises(NotYet):
        ch02.check_target_match(lambda p, t: bool(_match(p, t, re.match)))   # prefix match
    with pytest.raises(NotYet, match="not a bool"):
        ch02.check_target_match(lambda p, t: _match(p, t, re.fullmatch))     # a Match object or None


# ----------------------------------------------------------------------------- 06.4
def test_06_4_an_off_by_one_threshold_is_caught():
    def right(z, p):
        k = int(round(p * len(z)))                     # entries that must end up > 0
        zs = np.sort(z)
        if k == 0:                                     # p = 0: even the largest stays ≤ 0
            return -zs[-1] - 1.0
        return -(zs[len(z) - k - 1] + zs[len(z) - k]) / 2 if k < len(z) else -zs[0] + 1.0

    def off_by_one(z, p):
        return -np.sort(z)[int(round((1 - p) * len(z)))]   # the boundary value itself stays ≤ 0

    ch06.check_shift_for_fraction(right)
    with pytest.raises(NotYet, match="off-by-one|exactly"):
        ch06.check_shift_for_fraction(off_by_one)


# ----------------------------------------------------------------------------- 07.4
def test_07_4_halving_the_samples_in_place_is_caught():
    ch07.check_lloyd_max(lambda s, levels=16: Q.lloyd_max(s.copy(), levels))

    def halves_in_place(s, levels=16):
        s /= 2
        return Q.lloyd_max(s, levels)

    with pytest.raises(NotYet):
        ch07.check_lloyd_max(halves_in_place)


def test_07_4_a_correct_in_place_lloyd_max_passes_and_halving_is_noted():
    # book.exercises' contract: attempt hands over a copy, so sorting the samples in place is fine
    def sorts_in_place(s, levels=16):
        s.sort()
        return Q.lloyd_max(s, levels)

    ch07.check_lloyd_max(sorts_in_place)

    def halves_in_place(s, levels=16):
        s /= 2
        return Q.lloyd_max(s, levels)

    with pytest.raises(NotYet, match="changed its input argument 1 in place"):
        ch07.check_lloyd_max(halves_in_place)


def _dead_mutation_checks(fn) -> list[str]:
    """``given = x.copy()`` handed to ``attempt`` and then compared with ``x`` by np.array_equal:
    attempt hands the student a copy of ``given``, so that comparison can never see a change."""
    import ast

    copies = {a.targets[0].id: ast.unparse(a.value.func.value) for a in ast.walk(fn)
              if isinstance(a, ast.Assign) and isinstance(a.targets[0], ast.Name) and isinstance(a.value, ast.Call)
              and ast.unparse(a.value.func).endswith(".copy")}
    handed, compared = set(), []
    for call in (n for n in ast.walk(fn) if isinstance(n, ast.Call)):
        name, args = ast.unparse(call.func), [ast.unparse(a) for a in call.args]
        if name == "attempt":
            handed |= set(args)
        elif name.endswith("array_equal"):
            compared.append(set(args))
    return sorted(c for c, x in copies.items() if c in handed and {c, x} in compared)


def test_07_no_checker_compares_the_copy_it_handed_over():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(ch07))
    checkers = [f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name.startswith("check_")]
    assert len(checkers) == 6
    assert {f.name: _dead_mutation_checks(f) for f in checkers if _dead_mutation_checks(f)} == {}


# ----------------------------------------------------------------------------- 07.5, 07.6
def test_07_5_blockwise_nf4_checked_against_bitsandbytes():
    pytest.importorskip("bitsandbytes")
    ch07.check_nf4_blockwise(lambda w, bs: Q.quantize_nf4_plain(w, bs),
                             lambda p, a, n, bs: Q.dequantize_nf4_plain(p, a, (n,), bs))

    def ties_up(w, bs):  # a value on a midpoint goes to the UPPER level: wrong
        c = Q.nf4_codebook()
        mid = (c[:-1] + c[1:]) / np.float32(2)
        packed, absmax = Q.quantize_nf4_plain(w, bs)
        a = np.repeat(absmax, bs)[:w.size]
        q = np.searchsorted(mid, w / a, side="right")
        q = np.concatenate([q] + [[7]] * (w.size % 2))
        return ((q[0::2] << 4) | q[1::2]).astype(np.uint8), absmax

    def low_nibble_first(w, bs):
        packed, absmax = Q.quantize_nf4_plain(w, bs)
        return ((packed << 4) | (packed >> 4)).astype(np.uint8), absmax

    for wrong in (ties_up, low_nibble_first):
        with pytest.raises(NotYet):
            ch07.check_nf4_blockwise(wrong, lambda p, a, n, bs: Q.dequantize_nf4_plain(p, a, (n,), bs))

    def zeroes_its_input(w, bs):  # right bytes, then w overwritten: the checker's w is a different array
        out = Q.quantize_nf4_plain(w, bs)
        w[:] = 0
        return out

    ch07.check_nf4_blockwise(zeroes_its_input, lambda p, a, n, bs: Q.dequantize_nf4_plain(p, a, (n,), bs))


def test_07_6_equal_bytes_is_the_answer():
    with pytest.raises(NotYet, match="bytes"):
        ch07.check_bytes_vs_error({"bytes_fp4_over_nf4": 0.9, "mse_fp4_over_nf4": 1.76})


# ----------------------------------------------------------------------------- 05.4
def test_05_4_prompt_gradient():
    from pedagogy_lib.nn import LayerNorm

    def right(s, gamma, dy, m, eps):
        ln = LayerNorm(s.shape[-1], eps=eps, dtype=np.float64)
        ln.p["weight"] = gamma
        ln(s)
        return ln.backward(dy)[:, :m].sum(0)

    ch05.check_prompt_grad(right)
    with pytest.raises(NotYet, match="sum over the batch"):
        ch05.check_prompt_grad(lambda s, g, dy, m, eps: right(s, g, dy, m, eps) / s.shape[0] * 0 + right(s[:1], g, dy[:1], m, eps))
    with pytest.raises(NotYet, match="LayerNorm"):
        ch05.check_prompt_grad(lambda s, g, dy, m, eps: (dy * g)[:, :m].sum(0))


# ----------------------------------------------------------------------------- 08.3
def test_08_3_non_strict_and_tie_blind_dominance_are_caught():
    def front(pts, dominates):
        return sorted(a for a, p in pts.items() if not any(dominates(q, p) for b, q in pts.items() if b != a))

    strict = lambda q, p: (q[0] <= p[0] and q[1] > p[1]) or (q[0] < p[0] and q[1] >= p[1])  # noqa: E731
    non_strict = lambda q, p: q[0] <= p[0] and q[1] >= p[1]                                 # noqa: E731
    tie_blind = lambda q, p: q[0] < p[0] and q[1] > p[1]                                    # noqa: E731
    ch08.check_pareto(lambda pts: front(pts, strict))
    for wrong in (non_strict, tie_blind):
        with pytest.raises(NotYet):
            ch08.check_pareto(lambda pts, w=wrong: front(pts, w))


# ----------------------------------------------------------------------------- 08.4
def test_08_4_paired_difference():
    from scipy import stats

    def right(a, b):
        d = np.subtract(a, b)
        se = d.std(ddof=1) / np.sqrt(len(d))
        half = stats.t.ppf(0.975, len(d) - 1) * se
        lo, hi = d.mean() - half, d.mean() + half
        return d.mean(), se, lo, hi, "tie" if lo <= 0 <= hi else ("a" if lo > 0 else "b")

    def unpaired(a, b):
        se = np.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b))
        m = np.mean(a) - np.mean(b)
        half = stats.t.ppf(0.975, len(a) - 1) * se
        return m, se, m - half, m + half, "tie" if m - half <= 0 <= m + half else ("a" if m > 0 else "b")

    def normal_quantile(a, b):
        m, se, *_ = right(a, b)
        lo, hi = m - 1.96 * se, m + 1.96 * se
        return m, se, lo, hi, "tie" if lo <= 0 <= hi else ("a" if lo > 0 else "b")

    ch08.check_paired_difference(right)
    for wrong in (unpaired, normal_quantile):
        with pytest.raises(NotYet):
            ch08.check_paired_difference(wrong)


# ----------------------------------------------------------------------------- 08.5
def test_08_5_next_rate_extends_by_the_grids_own_ratio():
    def right(v):
        g = sorted(v)
        best = max(g, key=lambda x: (v[x], -x))
        if g[0] < best < g[-1]:
            return None
        return g[0] ** 2 / g[1] if best == g[0] else g[-1] ** 2 / g[-2]

    def times_ten(v):  # a fixed factor instead of the grid's ratio
        g = sorted(v)
        best = max(g, key=lambda x: (v[x], -x))
        return None if g[0] < best < g[-1] else (g[0] / 10 if best == g[0] else g[-1] * 10)

    def ties_to_larger(v):  # a flat curve read as "best at the top"
        g = sorted(v)
        best = max(g, key=lambda x: (v[x], x))
        return None if g[0] < best < g[-1] else (g[0] ** 2 / g[1] if best == g[0] else g[-1] ** 2 / g[-2])

    ch08.check_next_rate(right)
    for wrong in (times_ten, ties_to_larger, lambda v: None):
        with pytest.raises(NotYet):
            ch08.check_next_rate(wrong)


# ----------------------------------------------------------------------------- reasoning exercises
def test_reasoning_exercises_accept_the_answer_and_reject_a_near_miss():
    from pedagogy_lib import counting as C
    from pedagogy_lib.bitfit import bitfit_params
    from pedagogy_lib.book.ch00 import exercises as ch00
    from pedagogy_lib.book.ch03 import exercises as ch03
    from pedagogy_lib.book.ch04 import exercises as ch04

    ch00.check_customers_for_10x(11)
    ch03.check_m_matching_lora(8)
    ch04.check_prefix_tokens_matching_lora(16)
    frac = lambda s: bitfit_params(s) / C.total_params(s)  # noqa: E731
    ch06.check_bitfit_shrinks(frac(C.BERT_BASE) / frac(C.BERT_LARGE))
    ch02.check_break_even_rank(lambda a, b: -(-a * b // (a + b)))
    for check, wrong in ((ch00.check_customers_for_10x, 10), (ch00.check_customers_for_10x, 12),
                         (ch03.check_m_matching_lora, 9), (ch04.check_prefix_tokens_matching_lora, 8),
                         (ch06.check_bitfit_shrinks, frac(C.BERT_LARGE) / frac(C.BERT_BASE))):
        with pytest.raises(NotYet):
            check(wrong)
    with pytest.raises(NotYet):
        ch02.check_break_even_rank(lambda a, b: a * b // (a + b))   # rounds down


# ----------------------------------------------------------------------------- 02.7
def dora_dm(x, dy, W0, A, B, s, m, norm_of=lambda W0, V: V):
    V = W0 + s * B @ A
    z = x @ W0.T + s * (x @ A.T) @ B.T
    return (dy * z).sum(0) / np.sqrt((norm_of(W0, V) ** 2).sum(1))


def test_02_7_the_norm_of_w0_alone_is_caught():
    ch02.check_dora_magnitude_grad(dora_dm)
    for wrong in (lambda *a: dora_dm(*a, norm_of=lambda W0, V: W0),        # ‖W0‖ instead of ‖W0 + sBA‖
                  lambda x, dy, W0, A, B, s, m: (dy * (x @ W0.T + s * (x @ A.T) @ B.T)).sum(0),  # no 1/n
                  lambda *a: dora_dm(*a) * a[6]):                              # multiplied by m
        with pytest.raises(NotYet):
            ch02.check_dora_magnitude_grad(wrong)
