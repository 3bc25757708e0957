"""Checkers for chapter 10's exercises (PEFT on the decoder). Each compares with the library on
several inputs and names the likely mistake."""
from __future__ import annotations

import numpy as np

from pedagogy_lib import quant, stats
from pedagogy_lib.book.exercises import (NotYet, attempt, expect, expect_close, expect_shape, guard_checkers, passed,
                                         refuse_known_mistakes)


# ------------------------------------------------------------------ 10.1 the response-only mask
def _mask(n_prompt: int, n_response: int) -> np.ndarray:
    """ids = [eos] + n_prompt prompt tokens + n_response response tokens + [eos]; the mask over
    the len(ids) − 1 targets keeps the response tokens and the closing eos (Eq. 10.1)."""
    m = np.zeros(n_prompt + n_response + 1, np.int64)
    m[n_prompt:] = 1
    return m


def check_response_mask(fn) -> None:
    """fn(n_prompt, n_response) -> 0/1 mask over the next-token targets of
    [<|endoftext|>] + prompt + response + [<|endoftext|>]."""
    for n_p, n_r in ((3, 2), (1, 1), (10, 4), (0, 3)):
        want = _mask(n_p, n_r)
        got = attempt(fn, n_p, n_r)
        expect_shape(got, want.shape, f"the mask for {n_p} prompt and {n_r} response tokens "
                                      f"(one entry per target: len(ids) − 1 = {want.size})")
        got = np.asarray(got)
        if np.array_equal(got, np.concatenate([[0], want[:-1]])):  # one step late
            raise NotYet("off by one: target t is ids[t+1], so the first response token is predicted at "
                         "position n_prompt (the last prompt token), not n_prompt + 1")
        if np.array_equal(got, np.concatenate([want[1:], [0]])):  # one step early
            raise NotYet("off by one the other way: target t is ids[t+1], so position n_prompt − 1 predicts the "
                         "last prompt token (context, not graded); the response starts at position n_prompt")
        if np.array_equal(got, np.concatenate([want[:-1], [0]])):
            raise NotYet("the closing <|endoftext|> is a target too: without it the model never learns to stop")
        expect(np.array_equal(got, want), f"mask for ({n_p}, {n_r}) is {got.tolist()}, expected {want.tolist()}")
    passed("10.1", "only the response (and the stop token) is graded; the prompt is context")


# ------------------------------------------------------------------ 10.2 merge into a dequantised base
def check_merge_dequantised(fn) -> None:
    """fn(packed, absmax, shape, A, B, s) -> W = dequant_NF4(packed, absmax) + s·B A (float32)."""
    rng = np.random.default_rng(3)
    for (d_out, d_in), r, s in (((64, 128), 4, 2.0), ((128, 64), 8, 0.5), ((32, 64), 1, 16.0)):
        W = rng.standard_normal((d_out, d_in)).astype(np.float32) * 0.05
        packed, absmax = quant.quantize_nf4(W)
        A = rng.standard_normal((r, d_in)).astype(np.float32)
        B = rng.standard_normal((d_out, r)).astype(np.float32) * 0.01
        base = quant.dequantize_nf4(packed, absmax, (d_out, d_in))
        want = base + s * (B @ A)
        got = attempt(fn, packed, absmax, (d_out, d_in), A, B, s)
        expect_shape(got, want.shape, f"the merged weight for a {d_out}×{d_in} layer")
        got = np.asarray(got, np.float64)
        if np.allclose(got, W + s * (B @ A), atol=1e-6) and not np.allclose(got, want, atol=1e-6):
            raise NotYet("you merged into the original float weight; a QLoRA model only has the 4-bit codes: "
                         "dequantise them first (quant.dequantize_nf4)")
        if np.allclose(got, base + B @ A, atol=1e-6) and s != 1:
            raise NotYet("the update is s·B A: multiply by the scaling s = α/r")
        expect_close(got, want, f"merged weight ({d_out}×{d_in}, r={r}, s={s})", rtol=1e-5, atol=1e-6)
    passed("10.2", "W = Ŵ + s·BA in float; storing it as 4 bits again would round a second time (§3)")


# ------------------------------------------------------------------ 10.3 a perplexity difference with its SE
def check_ppl_difference(fn) -> None:
    """fn(loss_a, loss_b) -> dict(mean, se, lo, hi, tie) of the per-seed perplexity difference
    exp(loss_a) − exp(loss_b) (Eqs. 8.4–8.7 on Eq. 9.14)."""
    cases = [([3.10, 3.12, 3.08], [3.20, 3.19, 3.23]), ([3.0, 3.1, 3.05], [3.02, 3.04, 3.11]),
             ([2.5, 2.6], [2.7, 2.9]), ([4.0, 4.1, 3.9, 4.05], [4.0, 4.12, 3.93, 4.0])]
    for a, b in cases:
        want = stats.paired(np.exp(a), np.exp(b))
        got = attempt(fn, list(a), list(b))
        expect(isinstance(got, dict) and {"mean", "se", "lo", "hi", "tie"} <= set(got),
               "return a dict with keys mean, se, lo, hi, tie")
        loss_diff = stats.paired(a, b)["mean"]
        refuse_known_mistakes(got["mean"], want["mean"], {loss_diff: "that is the difference of the losses; perplexity "
                              "is exp(loss) per seed, then differences"}, "the mean difference", atol=1e-9)
        unpaired_se = np.sqrt(np.var(np.exp(a), ddof=1) / len(a) + np.var(np.exp(b), ddof=1) / len(b))
        refuse_known_mistakes(got["se"], want["se"], {unpaired_se: "the runs are paired by seed: take the SE of the "
                              "per-seed differences, not the two groups' SEs combined"}, "its SE", atol=1e-9)
        expect_close([got["mean"], got["se"], got["lo"], got["hi"]], [want["mean"], want["se"], want["lo"], want["hi"]],
                     f"the perplexity difference of {a} and {b}", rtol=1e-6, atol=1e-9)
        expect(bool(got["tie"]) == want["tie"], f"tie should be {want['tie']} for the interval "
                                                f"[{want['lo']:.3f}, {want['hi']:.3f}]")
    passed("10.3", "a t-interval on n − 1 degrees of freedom; an interval containing 0 is a tie")


guard_checkers(globals())  # every check_* answers a malformed attempt with NotYet
