"""Checkers for chapter 09's exercises (the decoder). Each compares with the library on
several inputs and names the likely mistake."""
from __future__ import annotations

import numpy as np

from pedagogy_lib import decoder as D, decoder_io as IO
from pedagogy_lib.book.exercises import (NotYet, attempt, expect, expect_close, expect_shape, guard_checkers, passed,
                                         refuse_known_mistakes)


# ------------------------------------------------------------------ 09.1 RoPE
def check_rope(fn) -> None:
    """fn(x, positions, theta) -> x rotated as in Eq. 9.4, for x of shape (T, d_h)."""
    rng = np.random.default_rng(0)
    for T, dh, theta in ((5, 8, 10000.0), (3, 4, 100.0), (7, 16, 500000.0)):
        x, pos = rng.standard_normal((T, dh)), np.arange(3, 3 + T)
        got = attempt(fn, x, pos, theta)
        want = D.apply_rope(x, *D.rope_tables(pos, dh, theta))
        expect_shape(got, (T, dh), f"rope for x of shape {(T, dh)}")
        got = np.asarray(got, float)
        inter = x.copy()   # the interleaved layout: pairs (x_0, x_1), (x_2, x_3), ...
        ang = pos[:, None] * theta ** (-np.arange(0, dh, 2) / dh)
        inter[:, 0::2] = x[:, 0::2] * np.cos(ang) - x[:, 1::2] * np.sin(ang)
        inter[:, 1::2] = x[:, 1::2] * np.cos(ang) + x[:, 0::2] * np.sin(ang)
        if np.allclose(got, inter) and not np.allclose(got, want):
            raise NotYet("you rotate neighbouring pairs (x₀, x₁), (x₂, x₃)…: Llama pairs x_i with "
                         "x_{i+d/2} (first half with second half), Eq. 9.4")
        if np.allclose(got, D.apply_rope(x, *D.rope_tables(-pos, dh, theta))):
            raise NotYet("you turn by −angle: rotate_half(x) = (−x₂, x₁), and it is *added* times sin")
        expect(np.allclose(np.linalg.norm(got, axis=1), np.linalg.norm(x, axis=1)),
               "a rotation keeps every vector's length; yours changes it")
        expect_close(got, want, f"rope(x, positions {pos.tolist()}, theta={theta:g})", rtol=1e-9, atol=1e-12)
    passed("09.1", "q·k now depends on the positions only through their difference (Eq. 9.5)")


# ------------------------------------------------------------------ 09.2 causal attention backward
def _attention_grads(Q, K, V, dO, causal: bool = True):
    """(dQ, dK, dV) of one head of Eq. 9.6 (without the mask when ``causal`` is False)."""
    T, dh = Q.shape
    S = Q @ K.T / np.sqrt(dh)
    if causal:
        S = np.where(D.causal_mask(T, T), S, -np.inf)
    A = np.exp(S - S.max(1, keepdims=True))
    A /= A.sum(1, keepdims=True)
    dA = dO @ V.T
    dS = A * (dA - (dA * A).sum(1, keepdims=True)) / np.sqrt(dh)
    return dS @ K, dS.T @ Q, A.T @ dO


def check_causal_backward(fn) -> None:
    """fn(Q, K, V, dO) -> (dQ, dK, dV) for one head of O = softmax(QKᵀ/√d_h + M) V (Eq. 9.6)."""
    rng = np.random.default_rng(1)
    for T, dh in ((4, 3), (6, 8), (1, 2)):
        Q, K, V, dO = (rng.standard_normal((T, dh)) for _ in range(4))
        got = attempt(fn, Q, K, V, dO)
        if got is None or len(got) != 3:
            raise NotYet("return the three gradients (dQ, dK, dV)")
        want = _attention_grads(Q, K, V, dO)
        names = ("dQ", "dK", "dV")
        for g, name in zip(got, names):
            expect_shape(g, (T, dh), f"{name} for T={T}, d_h={dh}")
        leaked = _attention_grads(Q, K, V, dO, causal=False)   # gradient through the scores above the diagonal
        if T > 1 and np.allclose(got[0], leaked[0]) and not np.allclose(got[0], want[0]):
            raise NotYet("your gradients are those of attention without the mask: set the scores above the "
                         "diagonal to −∞ before the softmax, so A (and hence dS) is 0 there")
        for g, w, name in zip(got, want, names):
            expect_close(g, w, f"{name} for T={T}, d_h={dh}", rtol=1e-8, atol=1e-10)
    passed("09.2", "masked scores have A = 0, so no gradient flows from the future")


# ------------------------------------------------------------------ 09.3 RMSNorm backward
def check_rmsnorm_backward(fn) -> None:
    """fn(x, w, dy, eps) -> (dx, dw) for y = w ⊙ x / √(mean(x²) + ε) over the last axis (Eq. 9.3)."""
    rng = np.random.default_rng(2)
    for shape in ((4, 6), (2, 3, 5), (1, 8)):
        x, dy = rng.standard_normal(shape) * 3, rng.standard_normal(shape)
        w = rng.standard_normal(shape[-1])
        norm = D.RMSNorm(shape[-1], 1e-5, np.float64)
        norm.p["weight"][...] = w
        norm(x)
        want_dx = norm.backward(dy)
        got = attempt(fn, x, w, dy, 1e-5)
        if got is None or len(got) != 2:
            raise NotYet("return the pair (dx, dw)")
        dx, dw = got
        expect_shape(dw, (shape[-1],), f"dw for x of shape {shape}")
        expect_close(dw, norm.g["weight"], f"dw for x of shape {shape}", rtol=1e-9, atol=1e-12)
        r = 1 / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-5)
        if np.allclose(dx, dy * w * r):
            raise NotYet("dx = r(ŵ − x̂·mean(ŵ ⊙ x̂)) with ŵ = dy ⊙ w: the normaliser r depends on x too")
        expect_close(dx, want_dx, f"dx for x of shape {shape}", rtol=1e-9, atol=1e-12)
    passed("09.3", "one term fewer than LayerNorm's backward: nothing was centred")


# ------------------------------------------------------------------ 09.4 counting
def check_llama_params(fn) -> None:
    """fn(V, d, f, L, h, h_kv, tied) -> number of parameters of a Llama decoder (Eq. 9.15)."""
    cases = [(2048, 128, 384, 4, 4, 4, True), (2048, 256, 704, 5, 8, 4, True),
             (32000, 4096, 11008, 32, 32, 32, False), (100, 64, 128, 3, 8, 2, False)]
    for V, d, f, L, h, hkv, tied in cases:
        cfg = D.DecoderConfig(vocab_size=V, hidden_size=d, intermediate_size=f, num_hidden_layers=L,
                              num_attention_heads=h, num_key_value_heads=hkv, tie_word_embeddings=tied)
        want = sum(int(np.prod(s)) for s in IO.expected_shapes(cfg).values())
        call = f"llama_params(V={V}, d={d}, f={f}, L={L}, h={h}, h_kv={hkv}, tied={tied})"
        got = attempt(fn, V, d, f, L, h, hkv, tied)
        dh = d // h
        refuse_known_mistakes(got, want, {
            want + 2 * L * (d - hkv * dh) * d: "k_proj and v_proj map d → h_kv·d_h (grouped-query heads), not d → d",
            want + (V * d if tied else -V * d): "a tied head reuses the embedding matrix (no extra V·d); "
                                                "an untied one adds it",
            want - (2 * L + 1) * d: "count the RMSNorm gains (two per block and a final one, d each)"}, call)
        expect(got == want, f"{call} = {got:,}, expected {want:,}")
    passed("09.4", "LLaMA-7B: 6,738,415,616 — and not one bias among them")


guard_checkers(globals())  # every check_* answers a malformed attempt with NotYet
