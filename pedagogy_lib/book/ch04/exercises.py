"""Checkers for chapter 04 (prefix-tuning).  Each calls the student's function on several
random shapes, not only the one in the statement, compares with ``pedagogy_lib.prefix``
(or with finite differences), and names the likely mistake when it recognises one."""
from __future__ import annotations

import math

import numpy as np

from pedagogy_lib import prefix as px
from pedagogy_lib.book.exercises import (NotYet, attempt, expect, expect_close, expect_shape, guard_checkers, passed,
                                         whole_number)
from pedagogy_lib.gradcheck import numerical_grad
from pedagogy_lib.nn import softmax

_SHAPES = [(1, 1, 2), (4, 3, 8), (7, 5, 16), (2, 9, 4)]  # (T, m, d_h)


def _head(T, m, dh, seed):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((T, dh)) for _ in range(3))
    pk, pv = 1.5 * rng.standard_normal((m, dh)), rng.standard_normal((m, dh))
    return q, k, v, pk, pv


def _pair(out, name, n=2):
    if not isinstance(out, (tuple, list)) or len(out) != n:
        raise NotYet(f"{name} should return a tuple of {n} arrays, got {type(out).__name__}")
    return out


# ------------------------------------------------------------------ 04.1 the convex mix
def check_convex_mix(fn) -> None:
    """fn(q, k, v, pk, pv) -> (lam (T,), out (T, d_h)) for one head without padding (Eq. 4.3)."""
    for i, (T, m, dh) in enumerate(_SHAPES):
        q, k, v, pk, pv = _head(T, m, dh, i)
        lam, out = _pair(attempt(fn, q, k, v, pk, pv), "convex_mix")
        expect_shape(lam, (T,), "lam")
        expect_shape(out, (T, dh), "out")
        want_lam, a_x, a_p = px.prefix_attention_parts(q, k, v, pk, pv)
        full = softmax(q @ np.concatenate([pk, k]).T / math.sqrt(dh)) @ np.concatenate([pv, v])
        lam = np.asarray(lam, np.float64)
        if np.allclose(lam, 1 - want_lam, atol=1e-9) and not np.allclose(lam, want_lam, atol=1e-9):
            raise NotYet("lam is the weight on the real tokens; λ is the total softmax weight on the PREFIX keys")
        if np.allclose(lam, want_lam * math.sqrt(dh), rtol=1e-6) and dh > 1:
            raise NotYet("lam is off by √d_h: scale the scores q·k by 1/√d_h before the softmax")
        expect_close(lam, want_lam, f"lam (T={T}, m={m}, d_h={dh})", rtol=1e-6, atol=1e-9)
        expect_close(out, full, f"out (T={T}, m={m}, d_h={dh}) vs attention over [P_k; K]", rtol=1e-6, atol=1e-9)
    passed("04.1", "a prefix mixes the head's own attention with attention over the prefix")


# ------------------------------------------------------------------ 04.2 prefix gradients
def _reference_grads(q, k, v, pk, pv, dO):
    """dL/dP_k, dL/dP_v through softmax([q P_kᵀ, q Kᵀ]/√d_h)·[P_v; V] (Eq. 4.4)."""
    m, dh = pk.shape[0], q.shape[1]
    K, V = np.concatenate([pk, k]), np.concatenate([pv, v])
    A = softmax(q @ K.T / math.sqrt(dh))
    dV = A.T @ dO
    dA = dO @ V.T
    dS = A * (dA - (dA * A).sum(1, keepdims=True)) / math.sqrt(dh)
    return (dS.T @ q)[:m], dV[:m]


def check_prefix_grads(fn) -> None:
    """fn(q, k, v, pk, pv, dO) -> (dpk, dpv): gradients of L = Σ out ⊙ dO w.r.t. the prefix."""
    for i, (T, m, dh) in enumerate(_SHAPES):
        q, k, v, pk, pv = _head(T, m, dh, 10 + i)
        dO = np.random.default_rng(20 + i).standard_normal((T, dh))
        dpk, dpv = _pair(attempt(fn, q, k, v, pk, pv, dO), "prefix_grads")
        expect_shape(dpk, (m, dh), "dpk")
        expect_shape(dpv, (m, dh), "dpv")
        want_k, want_v = _reference_grads(q, k, v, pk, pv, dO)
        if i == 1:  # the reference itself, against central differences
            loss = lambda: float((softmax(q @ np.concatenate([pk, k]).T / math.sqrt(dh))  # noqa: E731
                                  @ np.concatenate([pv, v]) * dO).sum())
            assert np.allclose(numerical_grad(loss, pk), want_k, atol=1e-7)
        if np.allclose(np.asarray(dpk, float), want_k * math.sqrt(dh), rtol=1e-6):
            raise NotYet("dpk is √d_h too large: the scores were divided by √d_h, so is their gradient")
        expect_close(dpv, want_v, f"dpv (T={T}, m={m}, d_h={dh})", rtol=1e-6, atol=1e-9)
        expect_close(dpk, want_k, f"dpk (T={T}, m={m}, d_h={dh})", rtol=1e-6, atol=1e-9)
    passed("04.2", "dP_v = Aᵀ dO and dP_k = dSᵀ Q, restricted to the m prefix rows")


# ------------------------------------------------------------------ 04.3 folding the MLP
def check_fold_mlp(fn) -> None:
    """fn(E, W1, b1, W2, b2, n_layers) -> (L, 2, m, d) prefix tensors (Eqs. 4.5–4.6)."""
    for seed, (m, d, L, h, de) in enumerate([(2, 4, 1, 3, 4), (3, 6, 2, 5, 4), (5, 8, 3, 7, 2)]):
        mlp = px.PrefixMLP(m, d, L, h, de, rng=np.random.default_rng(seed), dtype=np.float64)
        E = mlp.embedding.p["weight"]
        (W1, b1), (W2, b2) = ((lin.p["weight"], lin.p["bias"]) for lin in (mlp.transform[0], mlp.transform[2]))
        got = attempt(fn, E.copy(), W1.copy(), b1.copy(), W2.copy(), b2.copy(), L)
        expect_shape(got, (L, 2, m, d), f"fold_mlp(m={m}, d={d}, L={L})")
        want = np.stack([np.stack(mlp.layer_prefix(layer)[:2]) for layer in range(L)])
        got = np.asarray(got, np.float64)
        if not np.allclose(got, want):
            if np.allclose(got, want[:, ::-1]):
                raise NotYet("keys and values are swapped: in each layer's 2d block the keys come first")
            if np.allclose(got, mlp().reshape(m, 2, L, d).transpose(2, 1, 0, 3)):
                raise NotYet("wrong layout: the 2Ld columns are [layer 0 key, layer 0 value, layer 1 key, ...]")
        expect_close(got, want, f"fold_mlp(m={m}, d={d}, L={L})", rtol=1e-9, atol=1e-12)
    passed("04.3", "after folding, only the m×d×L×2 tensors remain")


def check_prefix_tokens_matching_lora(answer) -> None:
    """``answer``: the number m of prefix tokens at which a folded prefix on MiniLM
    (m·d·L·2 numbers, Eq. 4.7) equals LoRA r = 8 on q and v (r·2d per matrix, 2 matrices a layer)."""
    from pedagogy_lib import counting as C
    from pedagogy_lib import lora as L

    shape, m = C.minilm_shape(), whole_number(answer, "m")
    lora = L.lora_params(shape, 8)
    expect(m >= 1 and px.num_prefix_params(m, shape.hidden, shape.layers) == lora,
           f"m = {m} prefix tokens ship {px.num_prefix_params(max(m, 1), shape.hidden, shape.layers):,} numbers, LoRA ships {lora:,}: "
           "write both counts per layer and per unit of d first")
    passed("04.4 equal budgets", f"m = {m} = 2r: per layer a prefix ships 2md numbers, LoRA on q, v 4rd; "
           "the width d cancels, so this holds for every model size")


guard_checkers(globals())  # every check_* answers a malformed attempt with NotYet
