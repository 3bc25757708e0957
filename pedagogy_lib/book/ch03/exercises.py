"""Checkers for chapter 03's exercises (adapters). Each calls the student's function on
several inputs, compares with `pedagogy_lib.adapters`, and names the likely mistake when
the answer matches a known wrong formula."""
from __future__ import annotations

import numpy as np

from pedagogy_lib import adapters as A
from pedagogy_lib.book.exercises import (NotYet, attempt, expect, expect_close, expect_shape, guard_checkers, items,
                                         passed, refuse_known_mistakes, whole_number)


# ------------------------------------------------------------------ 03.1 counting
_COUNT_CASES = [(384, 16, "pfeiffer", 6), (768, 64, "houlsby", 12), (1024, 8, "parallel", 24),
                (10, 3, "houlsby", 1), (1024, 256, "pfeiffer", 24)]


def check_adapter_params(fn) -> None:
    """fn(d, m, placement, layers) -> trainable parameters of the adapters (Eq. 3.5)."""
    for d, m, placement, layers in _COUNT_CASES:
        call = f"adapter_params(d={d}, m={m}, {placement!r}, layers={layers})"
        got = whole_number(attempt(fn, d, m, placement, layers), f"{call} (a parameter count)")
        want = A.adapter_params(d, m, placement, layers)
        k = A.ADAPTERS_PER_LAYER[placement]
        hints = {
            layers * k * 2 * m * d: "that leaves out the biases b_down (m) and b_up (d)",
            layers * (2 * m * d + m + d): "Houlsby puts two adapters in every block",
            layers * 2 * (2 * m * d + m + d): "only Houlsby has two adapters per block",
            k * (2 * m * d + m + d): "that is one block; multiply by the number of layers",
            layers * k * (m * d + m + d): "W_down (m×d) and W_up (d×m) are two matrices: 2md weights",
        }
        refuse_known_mistakes(got, want, hints, call)
        expect(got == want, f"{call} = {got:,}, expected {want:,}")
    passed("03.1", "Houlsby m=64 on BERT-base trains "
                   f"{A.adapter_params(768, 64, 'houlsby', 12):,} parameters")


# ------------------------------------------------------------------ 03.2 forward
def _weights(d, m, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((m, d)) / np.sqrt(d), rng.standard_normal(m) * 0.1,
            rng.standard_normal((d, m)) * 0.3, rng.standard_normal(d) * 0.1)


def _library_adapter(W_down, b_down, W_up, b_up):
    m, d = W_down.shape
    a = A.Adapter(d, m, "relu", dtype=np.float64)
    a.down.p.update(weight=W_down.copy(), bias=b_down.copy())
    a.up.p.update(weight=W_up.copy(), bias=b_up.copy())
    return a


def check_adapter_forward(fn) -> None:
    """fn(h, W_down, b_down, W_up, b_up) -> h + W_up ReLU(W_down h + b_down) + b_up, row-wise."""
    for shape, m, seed in (((5, 8), 3, 0), ((2, 4, 12), 5, 1), ((1, 6), 1, 2)):
        W_down, b_down, W_up, b_up = _weights(shape[-1], m, seed)
        h = np.random.default_rng(seed + 10).standard_normal(shape)
        got = attempt(fn, h.copy(), W_down, b_down, W_up, b_up)
        expect_shape(got, shape, f"adapter_forward on h of shape {shape}")
        want = _library_adapter(W_down, b_down, W_up, b_up)(h)
        if np.allclose(np.asarray(got), want - h):
            raise NotYet("the output is the bottleneck alone: Eq. 3.1 adds it to h (the residual)")
        if np.allclose(np.asarray(got), h + (h @ W_down.T + b_down) @ W_up.T + b_up):
            raise NotYet("no non-linearity: apply ReLU to W_down h + b_down before W_up")
        expect_close(got, want, f"adapter_forward on h of shape {shape}", rtol=1e-9, atol=1e-12)
    passed("03.2")


# ------------------------------------------------------------------ 03.3 backward
def check_adapter_backward(fn) -> None:
    """fn(h, dy, W_down, b_down, W_up) -> (dh, dW_down, db_down, dW_up, db_up) for Eq. 3.1 with ReLU."""
    for shape, m, seed in (((6, 8), 3, 0), ((2, 3, 10), 4, 1)):
        W_down, b_down, W_up, b_up = _weights(shape[-1], m, seed)
        rng = np.random.default_rng(seed + 20)
        h, dy = rng.standard_normal(shape), rng.standard_normal(shape)
        out = items(attempt(fn, h.copy(), dy.copy(), W_down, b_down, W_up), 5, "(dh, dW_down, db_down, dW_up, db_up)")
        a = _library_adapter(W_down, b_down, W_up, b_up)
        a(h)
        dh = a.backward(dy)
        want = (dh, a.down.g["weight"], a.down.g["bias"], a.up.g["weight"], a.up.g["bias"])
        names = ("dh", "dW_down", "db_down", "dW_up", "db_up")
        if np.shape(out[0]) == shape and np.allclose(np.asarray(out[0]), dh - dy):
            raise NotYet("dh misses the residual's share: y = h + u(h), so dh = dy + (du/dh)ᵀ dy")
        for got, w, name in zip(out, want, names):
            expect_shape(got, w.shape, name)
            expect_close(got, w, f"{name} (h of shape {shape})", rtol=1e-9, atol=1e-12)
    passed("03.3", "matches the library backward, which matches finite differences")


# ------------------------------------------------------------------ 03.4 FLOPs
def check_flop_overhead(fn) -> None:
    """fn(d, ffn, m, placement, seq_len) -> extra FLOPs per block as a fraction (Eq. 3.6)."""
    for d, ffn, m, placement, T in ((384, 1536, 64, "houlsby", 128), (1024, 4096, 64, "houlsby", 128),
                                    (768, 3072, 48, "pfeiffer", 8), (4096, 11008, 16, "parallel", 512)):
        call = f"flop_overhead({d}, {ffn}, {m}, {placement!r}, seq_len={T})"
        got = attempt(fn, d, ffn, m, placement, T)
        want = A.flop_overhead(d, ffn, m, placement, T)
        k = A.ADAPTERS_PER_LAYER[placement]
        if got is not None and np.isclose(float(got), 100 * want):
            raise NotYet(f"{call} = {got}: return a fraction, not a percentage")
        if got is not None and np.isclose(float(got), k * 4 * m * d / (2 * (4 * d * d + 2 * d * ffn))):
            raise NotYet(f"{call}: the block's FLOPs also include attention's QKᵀ and AV, 4·T·d per token")
        expect_close(got, want, call, rtol=1e-9, atol=0)
    passed("03.4", f"Houlsby m=64 adds {100 * A.flop_overhead(1024, 4096, 64, 'houlsby'):.1f}% of a "
                   "BERT-large block's FLOPs")


def check_m_matching_lora(answer) -> None:
    """``answer``: the smallest bottleneck m at which Houlsby adapters (two per layer) on
    MiniLM train at least as many numbers as LoRA r = 8 on q and v (Eq. 3.5 vs Eq. 2.7)."""
    from pedagogy_lib import counting as C
    from pedagogy_lib import lora as L

    shape, m = C.minilm_shape(), whole_number(answer, "m")
    lora = L.lora_params(shape, 8)
    houlsby = lambda k: A.adapter_params(shape.hidden, k, "houlsby", shape.layers)  # noqa: E731
    expect(m >= 1 and houlsby(m) >= lora, f"at m = {m} the adapters train {houlsby(max(m, 1)):,} < LoRA's {lora:,}")
    expect(m == 1 or houlsby(m - 1) < lora, f"m = {m - 1} already reaches LoRA's {lora:,}: find the smallest")
    passed("03.5 equal budgets", f"m = {m}: per layer two adapters cost 2(2md + m + d), LoRA r = 8 on q, v "
           "costs 4rd, so m ≈ r once d is large")


guard_checkers(globals())  # every check_* answers a malformed attempt with NotYet
