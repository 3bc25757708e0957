"""Checkers for chapter 05 (prompt tuning, deep prompts, P-Tuning v2).  Each calls the
student's function on several inputs, compares with ``pedagogy_lib.prefix`` /
``pedagogy_lib.counting``, and names the likely mistake when it recognises one."""
from __future__ import annotations

import numbers

import numpy as np

from pedagogy_lib import counting as C
from pedagogy_lib import prefix as PX
from pedagogy_lib import prompt as PT
from pedagogy_lib.book.exercises import (NotYet, attempt, expect, expect_close, expect_shape, guard_checkers, items,
                                         number, passed, to_numpy)
from pedagogy_lib.nn import SelfAttention


# ------------------------------------------------------------------ 05.1 deep prompt = tied prefix
def check_deep_prompt_to_prefix(fn) -> None:
    """fn(P, Wk, bk, Wv, bv) -> (pk, pv): the keys and values a hidden-state prompt offers (Eq. 5.3)."""
    for seed, (m, d) in enumerate([(1, 4), (3, 6), (5, 12)]):
        rng = np.random.default_rng(seed)
        att = SelfAttention(d, 2, rng, np.float64)
        deep = PT.DeepPrompt(att, m, rng)
        P = deep.p["weight"]
        Wk, bk, Wv, bv = (att.key.p["weight"], att.key.p["bias"], att.value.p["weight"], att.value.p["bias"])
        pk, pv = items(attempt(fn, P.copy(), Wk.copy(), bk.copy(), Wv.copy(), bv.copy()), 2, "(pk, pv)")
        expect_shape(pk, (m, d), "pk")
        expect_shape(pv, (m, d), "pv")
        want_k, want_v = (x[0] for x in deep(1))
        got = np.asarray(pk, float)
        if not np.allclose(got, want_k):
            if np.allclose(got, P @ Wk + bk):
                raise NotYet("a Linear computes x Wᵀ + b (weight is (d_out, d_in)); you used x W + b")
            if np.allclose(got, P @ Wk.T):
                raise NotYet("the key projection has a bias: P W_kᵀ + b_k")
        expect_close(pk, want_k, f"pk (m={m}, d={d})", rtol=1e-9, atol=1e-12)
        expect_close(pv, want_v, f"pv (m={m}, d={d})", rtol=1e-9, atol=1e-12)
    passed("05.1", "a deep prompt is a prefix whose keys and values are tied by W_k and W_v")


# ------------------------------------------------------------------ 05.2 vocabulary init
def check_vocab_init(fn) -> None:
    """fn(table, candidates, m, rng) -> (m, d) rows of table, from m distinct candidate ids."""
    for seed, (V, d, m, n_cand) in enumerate([(20, 3, 2, 5), (100, 8, 10, 10), (50, 4, 7, 30)]):
        table = np.random.default_rng(100 + seed).standard_normal((V, d))
        cand = np.sort(np.random.default_rng(200 + seed).choice(V, n_cand, replace=False))
        P = attempt(fn, table.copy(), cand.copy(), m, np.random.default_rng(seed))
        expect_shape(P, (m, d), f"prompt (m={m}, d={d})")
        P = np.asarray(to_numpy(P))
        # rows copied in a narrower float dtype (float32) are the table's rows rounded to that dtype
        rounded = table.astype(P.dtype) if P.dtype.kind == "f" and P.dtype.itemsize < 8 else table
        P, rounded = P.astype(np.float64), rounded.astype(np.float64)
        rows = [np.flatnonzero((np.abs(rounded - r) < 1e-12).all(1)) for r in P]
        expect(all(len(r) == 1 for r in rows), "every prompt row must be a row of the embedding table "
                                                "(copy table[id], don't draw random numbers)")
        ids = [int(r[0]) for r in rows]
        expect(set(ids) <= set(cand.tolist()), f"ids {sorted(set(ids) - set(cand.tolist()))} are not among the candidates")
        expect(len(set(ids)) == m, "two prompt tokens start from the same id: sample without replacement")
    draw = lambda s: tuple(np.asarray(attempt(fn, table, cand, m, np.random.default_rng(s))).ravel())  # noqa: E731
    seen = {draw(s) for s in range(4)}
    expect(len(seen) > 1, "the result ignores rng: draw the ids with rng (different seeds, different prompts)")
    expect(draw(0) == draw(0), "the same rng seed gave two different prompts: draw the ids with the `rng` "
           "you are given (rng.choice), not with np.random, so a run can be repeated")
    passed("05.2", "each virtual token starts as a real word")


# ------------------------------------------------------------------ 05.3 fractions
_SHAPES = ("MiniLM-L6", "BERT-base", "RoBERTa-large", "LLaMA-7B", "GPT-3 175B")


def check_trainable_fractions(fn) -> None:
    """fn(shape, m) -> {"prompt", "deep", "ptuning_v2"} as fractions of total_params(shape)."""
    shapes = C.shapes()
    for name in _SHAPES:
        s = shapes[name]
        for m in (1, 20, 100):
            got = attempt(fn, s, m)
            if not isinstance(got, dict) or not {"prompt", "deep", "ptuning_v2"} <= set(got):  # extra keys are fine
                raise NotYet(f"return a dict with keys 'prompt', 'deep', 'ptuning_v2'; got {got!r:.80}")
            n = C.total_params(s)
            want = {"prompt": m * s.hidden / n, "deep": m * s.hidden * s.layers / n,
                    "ptuning_v2": 2 * m * s.hidden * s.layers / n}
            for k, w in want.items():
                g = to_numpy(got[k], scalar=True)  # a torch or 0-d NumPy number is a number too
                if not isinstance(g, numbers.Real) or isinstance(g, (bool, np.bool_)):
                    raise NotYet(f"{k} should be a number, got {type(g).__name__}")
                if abs(g - 100 * w) <= 1e-9 * 100 * w:
                    raise NotYet(f"{k} for {name} is in percent; return a fraction (0.001, not 0.1)")
                if k == "ptuning_v2" and abs(g - w / 2) <= 1e-12:
                    raise NotYet("P-Tuning v2 trains keys AND values at every layer: m·d·L·2")
                expect_close(g, w, f"{k} for {name}, m={m}", rtol=1e-9, atol=0)
    m20 = PT.num_prompt_params(20, shapes["GPT-3 175B"].hidden) / C.total_params(shapes["GPT-3 175B"])
    passed("05.3", f"20 prompt tokens are {100 * m20:.6f}% of GPT-3")


# ------------------------------------------------------------------ 05.4 the Eq. 5.2 backward
def check_prompt_grad(fn) -> None:
    """fn(s, gamma, dy, m, eps) -> dP (m, d): the gradient of the soft prompt, given the
    embedding sum s = x̃ + E_pos + E_type (B, m+T, d) that enters the LayerNorm, its gain γ,
    and dy = dL/de (B, m+T, d) at the LayerNorm's output (Eqs. 5.1-5.2 with Eq. 0.15)."""
    from pedagogy_lib.nn import LayerNorm

    rng = np.random.default_rng(int(np.random.default_rng().integers(1 << 30)))
    for B, m, T, d in ((1, 2, 3, 4), (3, 5, 4, 6), (int(rng.integers(2, 5)), int(rng.integers(1, 6)),
                                                    int(rng.integers(1, 6)), int(rng.integers(3, 9)))):
        eps = float(rng.choice([1e-12, 1e-5]))
        s, dy = rng.standard_normal((B, m + T, d)), rng.standard_normal((B, m + T, d))
        gamma = rng.standard_normal(d)
        ln = LayerNorm(d, eps=eps, dtype=np.float64)
        ln.p["weight"] = gamma.copy()
        ln(s)
        want = ln.backward(dy)[:, :m].sum(0)                      # Eq. 5.2 after Eq. 0.15
        got = attempt(fn, s, gamma, dy, m, eps)   # on copies: s, gamma, dy stay as they are
        expect_shape(got, (m, d), "dP")
        only_first = ln.backward(dy)[0, :m]
        if B > 1 and np.allclose(got, only_first):
            raise NotYet("the same prompt is prepended to every example: sum over the batch")
        if np.allclose(got, (dy * gamma)[:, :m].sum(0)):
            raise NotYet("dP must go back through the LayerNorm (Eq. 0.15), not just through γ")
        expect_close(got, want, f"dP for B={B}, m={m}, T={T}, d={d}", rtol=1e-9, atol=1e-12)
    passed("05.4 prompt gradient", "Eq. 5.2 through the embedding LayerNorm, summed over the batch")


def check_ptv2_over_prompt(answer) -> None:
    """``answer``: how many times more numbers P-Tuning v2 trains than prompt tuning on MiniLM
    at the same number m of virtual tokens (Eqs. 5.2 and 5.4)."""
    expect(answer is not None, "set `answer` to a number")
    shape = C.minilm_shape()
    want = PX.num_prefix_params(20, shape.hidden, shape.layers) / PT.num_prompt_params(20, shape.hidden)
    ratio = number(answer, "`answer`")
    if abs(ratio - shape.layers) < 1e-9:
        raise NotYet("P-Tuning v2 trains a key AND a value vector per token and layer")
    expect(abs(ratio - want) < 1e-9, f"count both per token: prompt tuning d numbers, P-Tuning v2 "
           f"d·L·2; you gave {answer}")
    passed("05.5 per-layer prompts", f"{want:g}× = 2L, whatever m and d are: depth, not width, sets the gap")


guard_checkers(globals())  # every check_* answers a malformed attempt with NotYet
