"""Checkers for chapter 02's exercises (LoRA). Each tries the student's function on several
random shapes and compares it with the library, naming what is wrong and hinting why."""
from __future__ import annotations

import numpy as np

from pedagogy_lib import dora, lora, nn
from pedagogy_lib.book.exercises import (attempt, changed_inputs, expect, expect_close, expect_shape, guard_checkers,
                                         items, passed, to_numpy, whole_number)

SHAPES = [(2, 7, 5, 3), (1, 16, 16, 1), (3, 9, 12, 4)]  # (batch, d_in, d_out, r)


def _layer(d_in, d_out, r, s_alpha, seed):
    """A LoRA layer with random non-zero A and B, in float64."""
    g = np.random.default_rng(seed)
    layer = lora.LoRALinear(nn.Linear(d_in, d_out, rng=g, dtype=np.float64), r, s_alpha, rng=g)
    layer.p["lora_B"] = g.standard_normal((d_out, r))
    return layer


def check_lora_backward(fn) -> None:
    """fn(x, dy, W0, A, B, s) -> (dA, dB, dx) for y = x W0ᵀ + s (x Aᵀ) Bᵀ, x of shape (n, d_in)."""
    for i, (n, d_in, d_out, r) in enumerate(SHAPES):
        layer = _layer(d_in, d_out, r, (2.0, 0.75, 3.5)[i] * r, seed=i)  # s differs per case
        g = np.random.default_rng(10 + i)
        x, dy = g.standard_normal((n, d_in)), g.standard_normal((n, d_out))
        layer(x)
        dx = layer.backward(dy)
        out = attempt(fn, x.copy(), dy.copy(), layer.base_layer.p["weight"].copy(), layer.p["lora_A"].copy(),
                      layer.p["lora_B"].copy(), layer.scaling)
        case = f" [x {x.shape}, W0 {(d_out, d_in)}, r={r}, s={layer.scaling:g}]"
        dA, dB, dx_s = items(out, 3, "(dA, dB, dx)")
        expect_shape(dA, (r, d_in), "dA (it has A's shape, (r, d_in))" + case)
        expect_shape(dB, (d_out, r), "dB (it has B's shape, (d_out, r))" + case)
        expect_shape(dx_s, (n, d_in), "dx" + case)
        expect_close(dB, layer.g["lora_B"], "dB = s·dyᵀ(x Aᵀ)" + case, rtol=1e-9, atol=1e-12)
        expect_close(dA, layer.g["lora_A"], "dA = s·(dy B)ᵀ x  (did you forget s, or B?)" + case, rtol=1e-9, atol=1e-12)
        expect_close(dx_s, dx, "dx = dy W₀ + s·(dy B) A  (both paths reach x)" + case, rtol=1e-9, atol=1e-12)
    passed("02.1 LoRA backward", "dA, dB and dx match the hand-written backward on 3 shapes and 3 scales s")


def check_unmerge(fn) -> None:
    """fn(W_merged, A, B, s) -> W0, without changing W_merged."""
    for i, (_, d_in, d_out, r) in enumerate(SHAPES):
        layer = _layer(d_in, d_out, r, 4.0, seed=20 + i)
        W0 = layer.base_layer.p["weight"].copy()
        layer.merge()
        W_merged = layer.base_layer.p["weight"].copy()
        got = attempt(fn, W_merged, layer.p["lora_A"].copy(), layer.p["lora_B"].copy(), layer.scaling)
        case = f" [W_merged {W0.shape}, r={r}, s={layer.scaling:g}]"
        expect_shape(got, W0.shape, "the unmerged weight" + case)
        expect("argument 1" not in changed_inputs(),
               "your function changed W_merged in place: return a new array (W_merged - ...)")
        expect_close(got, W0, "W₀ = W_merged − s·B A" + case, rtol=1e-12, atol=1e-12)
    passed("02.2 unmerge", "W₀ recovered to rounding on 3 shapes")


def check_lora_count(fn) -> None:
    """fn(d_in, d_out, r) -> (trainable LoRA parameters, fraction of the d_out×d_in matrix)."""
    for d_in, d_out, r in ((4096, 4096, 8), (4096, 11008, 16), (384, 1536, 1), (768, 768, 8)):
        out = attempt(fn, d_in, d_out, r)
        count, frac = items(out, 2, "(count, fraction)")
        want = r * (d_in + d_out)
        expect(whole_number(count, f"the count for d_in={d_in}, d_out={d_out}, r={r}") == want,
               f"for d_in={d_in}, d_out={d_out}, r={r} the count {count} is not A's and B's parameters "
               f"(hint: A is r×d_in and B is d_out×r)")
        expect_close(frac, want / (d_in * d_out), f"the fraction for {d_in}×{d_out}, r={r}", rtol=1e-9)
    passed("02.3 counting", f"r=8 on a 4096×4096 matrix trains {8 * 8192:,} parameters, "
                            f"{100 * 8 * 8192 / 4096 ** 2:.3f}% of it")


def check_pissa_init(fn) -> None:
    """fn(W, r, s) -> (A, B, W_res) with s·B A the best rank-r approximation of W and W_res = W − s·B A."""
    for i, (_, d_in, d_out, r) in enumerate(SHAPES):
        W = np.random.default_rng(30 + i).standard_normal((d_out, d_in))
        s = 2.0 / r
        out = attempt(fn, W.copy(), r, s)
        A, B, W_res = (np.asarray(to_numpy(a)) for a in items(out, 3, "(A, B, W_res)"))
        case = f" [W {W.shape}, r={r}, s={s:g}]"
        expect_shape(A, (r, d_in), "A" + case)
        expect_shape(B, (d_out, r), "B" + case)
        expect_shape(W_res, W.shape, "W_res" + case)
        U, S, Vt = np.linalg.svd(W, full_matrices=False)
        best = (U[:, :r] * S[:r]) @ Vt[:r]
        expect_close(s * (np.asarray(B) @ np.asarray(A)), best,
                     "s·B A (it should be the rank-r SVD truncation U_r Σ_r V_rᵀ; did you divide Σ by s?)" + case,
                     rtol=1e-8, atol=1e-10)
        expect_close(W_res, W - best, "W_res = W − s·B A" + case, rtol=1e-8, atol=1e-10)
        AtA = np.asarray(A) @ np.asarray(A).T
        expect_close(AtA, np.diag(np.diag(AtA)).astype(np.float64), "the off-diagonal of A Aᵀ "
                     "(the rows of A should be orthogonal: scaled right singular vectors)" + case, atol=1e-8)
        expect_close(np.diag(AtA), S[:r] / s, "the diagonal of A Aᵀ (Eq. 2.12 splits Σ_r/s evenly: "
                     "A = √(Σ_r/s) V_rᵀ and B = U_r √(Σ_r/s), not all of Σ into one factor)" + case, rtol=1e-8, atol=1e-10)
        BtB = np.asarray(B).T @ np.asarray(B)
        expect_close(BtB, np.diag(S[:r] / s), "Bᵀ B (it should equal A Aᵀ = Σ_r/s: the same √(Σ_r/s) "
                     "in both factors)" + case, rtol=1e-8, atol=1e-10)
    passed("02.4 PiSSA init", "s·BA is the best rank-r approximation and W_res + s·BA = W")


def check_target_match(fn) -> None:
    """fn(path, targets) -> bool with peft's rule: a list matches path == t or path ending in '.t';
    a string is a regular expression that must match the whole path."""
    cases = [
        ("encoder.layer.0.attention.self.query", ["query", "value"], True),
        ("encoder.layer.0.attention.self.query", ["uery"], False),
        ("encoder.layer.0.attention.self.query", ["self.query"], True),
        ("encoder.layer.0.attention.output.dense", ["output.dense"], True),
        ("encoder.layer.0.output.dense", ["attention.output.dense"], False),
        ("query", ["query"], True),
        ("encoder.layer.3.output.dense", r"encoder\.layer\.\d+\.output\.dense", True),
        ("encoder.layer.3.attention.output.dense", r"encoder\.layer\.\d+\.output\.dense", False),
        ("encoder.layer.3.attention.self.query", r"query", False),   # full match, not search
        ("encoder.layer.3.output.dense_act", r"encoder\.layer\.\d+\.output\.dense", False),  # nor a prefix
        ("encoder.layer.11.attention.self.value", r"encoder\.layer\.1\d?\.attention\.self\.(query|value)", True),
    ]
    # a list entry matches a dotted SUFFIX, not a component in the middle (the count shown stays 11)
    middle = [("encoder.layer.0.attention.self.query", ["attention"], False),
              ("encoder.layer.10.attention.self.query", ["layer.10"], False)]
    for path, targets, want in cases + middle:
        got = attempt(fn, path, targets)
        expect(isinstance(got, (bool, np.bool_)),
               f"return True or False, got {got!r} ({type(got).__name__}): a re.Match object or None "
               "is not a bool; wrap it in bool(...)")
        expect(bool(got) == want, f"{path!r} with targets {targets!r} should give {want}, got {bool(got)}"
               + (" (a list entry must match a whole dotted suffix of the path: path == name or "
                  "path.endswith('.' + name))" if not want and not isinstance(targets, str) else "")
               + (" (a string is a regex that must match the WHOLE path: re.fullmatch)"
                  if isinstance(targets, str) else ""))
    passed("02.5 peft targeting", f"{len(cases)} paths matched like peft")


def check_break_even_rank(fn) -> None:
    """fn(d_in, d_out) -> the smallest rank r at which LoRA's A and B hold at least as many
    numbers as the d_out×d_in matrix itself (Eq. 2.7 reaches 1)."""
    rng = np.random.default_rng()  # unseeded: five fresh shapes each run, beyond the four fixed ones
    cases = [(384, 384), (384, 1536), (4096, 11008), (1, 7)] + [
        (int(rng.integers(1, 5000)), int(rng.integers(1, 5000))) for _ in range(5)]
    for d_in, d_out in cases:
        got = whole_number(attempt(fn, d_in, d_out), f"the rank for {d_in}×{d_out}")
        want = -(-d_in * d_out // (d_in + d_out))
        expect(got == want, f"for d_in={d_in}, d_out={d_out}: r(d_in + d_out) ≥ d_in·d_out first at "
               f"r = {want}, you said {got} (round up, in integers)")
    passed("02.6 break-even rank", "a square 384×384 matrix breaks even at r = 192 = d/2, far above any useful rank")


def check_dora_magnitude_grad(fn) -> None:
    """fn(x, dy, W0, A, B, s, m) -> dL/dm for y = (m/n) ⊙ (x W0ᵀ + s (x Aᵀ) Bᵀ) + b, n = ‖W0 + s·BA‖ per row."""
    for i, (n, d_in, d_out, r) in enumerate(SHAPES):
        g = np.random.default_rng(40 + i)
        layer = dora.DoRALinear(nn.Linear(d_in, d_out, rng=g, dtype=np.float64), r, 2.0 * r, rng=g)
        layer.p["lora_B"][...] = g.standard_normal((d_out, r))
        layer.p[dora.MAGNITUDE] *= 1 + 0.3 * g.standard_normal(d_out)
        x, dy = g.standard_normal((n, d_in)), g.standard_normal((n, d_out))
        layer(x)
        layer.backward(dy)
        got = attempt(fn, x.copy(), dy.copy(), layer.base_layer.p["weight"].copy(), layer.p["lora_A"].copy(),
                      layer.p["lora_B"].copy(), layer.scaling, layer.p[dora.MAGNITUDE].copy())
        case = f" [x {x.shape}, W0 {(d_out, d_in)}, r={r}]"
        expect_shape(got, (d_out,), "dm (one number per output row)" + case)
        expect_close(got, layer.g[dora.MAGNITUDE], "dm = Σ_rows (dy ⊙ z) / n with z = x W0ᵀ + s (x Aᵀ) Bᵀ and "
                     "n the row norms of W0 + s·BA, not of W0 (did you divide by n, and sum over the batch?)" + case,
                     rtol=1e-9, atol=1e-12)
    passed("02.7 DoRA magnitude gradient", "dm matches the layer's backward on 3 shapes, in both modes alike")


__all__ = ["check_break_even_rank", "check_dora_magnitude_grad", "check_lora_backward", "check_lora_count", "check_pissa_init",
           "check_target_match", "check_unmerge"]


guard_checkers(globals())  # every check_* answers a malformed attempt with NotYet
