"""Checkers for chapter 07's exercises: the NF4 codebook from quantiles, packing two codes
per byte, the saving of double quantisation, a Lloyd–Max quantiser, blockwise NF4 byte for
byte against bitsandbytes, and what FP4 and NF4 cost in bytes and in error."""
from __future__ import annotations

import numpy as np

from pedagogy_lib import counting as C
from pedagogy_lib import quant as Q
from pedagogy_lib.book.exercises import (NotYet, attempt, expect, expect_close, expect_shape, guard_checkers, items,
                                         passed, to_numpy)


def check_nf4_codebook(nf4_levels) -> None:
    """``nf4_levels(offset)`` → the 16 NF4 levels (Eq. 7.1), sorted, for any offset in (½, 1)."""
    for offset in (0.9677083, 0.95, 0.99):
        got = attempt(nf4_levels, offset)
        expect_shape(got, (16,), f"nf4_levels({offset})")
        got = np.asarray(got, dtype=np.float64)
        expect(np.all(np.diff(got) > 0), "the levels must be sorted ascending and distinct")
        expect((got == 0).sum() == 1 and got[7] == 0,
               "there must be exactly one exact zero, at index 7 (7 negative levels below it)")
        expect((got > 0).sum() == 8, f"expected 8 positive levels, got {(got > 0).sum()}: the positive "
               "side takes 9 grid points from offset down to ½ and drops the ½ (Φ⁻¹(½) = 0)")
        expect(got.max() == 1, "divide by the largest level so the top level is exactly 1")
        want = Q.nf4_codebook_from_quantiles(offset, float32_grid=False)
        expect_close(got, want, f"nf4_levels({offset})", rtol=0, atol=3e-7)
    gap = np.abs(np.asarray(nf4_levels(0.9677083), np.float64) - Q.nf4_codebook()).max()
    passed("07.1 NF4 codebook", f"max |yours − bitsandbytes' table| = {gap:.1e}")


def check_pack_nibbles(pack, unpack) -> None:
    """``pack(q)`` → uint8 bytes, two 4-bit codes each, first code in the HIGH nibble, an odd
    count padded with a zero low nibble (Eq. 7.7); ``unpack(packed, n)`` → the n codes back."""
    got = attempt(pack, np.array([1, 2, 3], np.uint8))
    expect(got is not None, "pack returned None: did it forget to `return`?")
    got = np.asarray(got)
    expect(got.dtype == np.uint8, f"pack must return uint8 bytes, got {got.dtype}")
    if got.tolist() == [0x21, 0x03]:
        raise NotYet("pack([1, 2, 3]) gave [0x21, 0x03]: the nibbles are swapped; bitsandbytes puts "
                     "the FIRST code in the HIGH nibble: byte = q[2i] << 4 | q[2i+1]")
    expect(got.tolist() == [0x12, 0x30], f"pack([1, 2, 3]) should be [0x12, 0x30], got "
           f"{[hex(b) for b in got.tolist()]}")
    rng = np.random.default_rng(7)
    for n in (1, 2, 63, 64, 1001):
        q = rng.integers(0, 16, n).astype(np.uint8)
        want = Q.pack_nibbles(q)
        packed = np.asarray(attempt(pack, q))
        expect_shape(packed, ((n + 1) // 2,), f"pack of {n} codes")
        expect(np.array_equal(packed, want), f"pack of {n} random codes differs from Eq. 7.7")
        back = np.asarray(attempt(unpack, want, n))
        expect_shape(back, (n,), f"unpack(packed, {n})")
        expect(np.array_equal(back, q), f"unpack(pack(q), {n}) does not give q back")
    passed("07.2 nibble packing")


def check_dq_saving(dq_saving) -> None:
    """``dq_saving(blocksize, nested_blocksize)`` → bits per parameter that double
    quantisation saves: 32/B − (8/B + 32/(B·B₂)) (Eq. 7.9)."""
    for b, b2 in ((64, 256), (32, 256), (128, 256), (64, 128), (4096, 4096)):
        got = attempt(dq_saving, b, b2)
        want = Q.bits_per_param(blocksize=b) - Q.bits_per_param(blocksize=b, double_quant=True,
                                                                  nested_blocksize=b2)
        if got is not None and np.isclose(float(got), 32 / b):
            raise NotYet(f"dq_saving({b}, {b2}) = 32/{b}: that is the whole absmax cost; DQ still "
                         "stores an 8-bit code per block plus one fp32 scale per nested block")
        expect_close(got, want, f"dq_saving({b}, {b2})", rtol=1e-12, atol=1e-12)
    n65 = C.total_params(C.LLAMA_65B)
    saving = float(attempt(dq_saving, 64, 256))
    passed("07.3 double-quantisation saving",
           f"{saving:.3f} bits/param = {saving * n65 / 8 / 1e9:.2f} GB on LLaMA-65B")


def check_lloyd_max(lloyd_max) -> None:
    """``lloyd_max(samples, levels)`` → sorted levels that (locally) minimise the MSE."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((64, 1024)).astype(np.float32)
    x = Q.absmax_normalize(w)
    for levels in (4, 16):
        ref = Q.lloyd_max(x, levels).astype(np.float64)
        # attempt hands lloyd_max a copy of x: a correct function that sorts its samples in place
        # passes, and a wrong answer's message notes an input changed in place (book.exercises)
        got = attempt(lloyd_max, x, levels)
        expect_shape(got, (levels,), f"lloyd_max(x, {levels})")
        c = np.asarray(to_numpy(got), np.float64)  # as returned: the statement asks for sorted levels
        expect(np.all(np.isfinite(c)), "the levels contain NaN/inf: an empty cell divided by zero?")
        expect(np.all(np.diff(c) > 0), "the levels must be distinct and returned sorted, ascending (np.sort)")
        mse = lambda lv: np.mean((x - lv[Q.nearest_code(x, lv.astype(np.float32))]) ** 2)  # noqa: E731
        mine, best = mse(c), mse(ref)
        expect(mine <= best * 1.002, f"with {levels} levels your MSE is {mine:.4g}, the optimum about "
               f"{best:.4g}: iterate longer, or check the two steps (thresholds = midpoints of the "
               "levels; each level = mean of the samples in its cell)")
        cell = Q.nearest_code(x, c.astype(np.float32))
        means = np.array([x[cell == k].mean() if (cell == k).any() else c[k] for k in range(levels)])
        expect(np.abs(means - c).max() < 2e-3, "at a Lloyd–Max fixed point each level is the mean "
               f"of its cell; yours is off by {np.abs(means - c).max():.2g}")
    nf4 = mse(Q.nf4_codebook().astype(np.float64))
    passed("07.4 Lloyd–Max", f"on this sample NF4's MSE is {nf4 / best:.3f}× the 16-level optimum")


def _bnb_nf4(w, blocksize):
    """bitsandbytes' own NF4 bytes and scales (the reference of 07.5)."""
    import torch

    from pedagogy_lib.torch_ref.qlora import bnb
    p, s = bnb().functional.quantize_4bit(torch.from_numpy(np.ascontiguousarray(w)), quant_type="nf4",
                                          blocksize=blocksize, compress_statistics=False)
    return p.numpy().reshape(-1), s.absmax.numpy()


def _nf4_cases():
    """Random cases with varying size, blocksize and scale, plus exact midpoint ties."""
    rng = np.random.default_rng(int(np.random.default_rng().integers(1 << 30)))
    mid = (Q.nf4_codebook()[:-1] + Q.nf4_codebook()[1:]) / np.float32(2)
    ties = np.concatenate([mid, -mid, [1.0], np.zeros(17)]).astype(np.float32)
    cases = [(ties, 64), (np.concatenate([ties, ties[:9]]) * np.float32(4), 32)]
    for n, bs in [(int(rng.integers(1, 40)), 32), (int(rng.integers(200, 2000)) | 1, 64),
                  (int(rng.integers(2000, 9000)), 128), (64 * int(rng.integers(2, 20)), 64)]:
        cases.append(((rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 1)).astype(np.float32), bs))
    cases[-1][0][:64] = 0  # an all-zero block
    return cases


def check_nf4_blockwise(quantize, dequantize) -> None:
    """``quantize(w, blocksize)`` → (packed uint8 of length ⌈n/2⌉, absmax float32 of length
    ⌈n/B⌉), byte for byte what bitsandbytes stores; ``dequantize(packed, absmax, n,
    blocksize)`` → the n decoded float32 values (Eq. 7.6)."""
    for w, bs in _nf4_cases():
        got = attempt(quantize, w, bs)  # on a copy of w: changing it in place is no error (book.exercises)
        packed, absmax = (np.asarray(to_numpy(a)) for a in items(got, 2, "(packed, absmax) from quantize"))
        want_p, want_a = _bnb_nf4(w, bs)
        expect_shape(packed, want_p.shape, f"packed bytes of {w.size} values")
        expect(packed.dtype == np.uint8, f"packed must be uint8, got {packed.dtype}")
        expect_shape(absmax, want_a.shape, f"absmax of {w.size} values at blocksize {bs}")
        expect(np.array_equal(absmax.astype(np.float32), want_a), f"absmax differs from bitsandbytes' "
               f"(n={w.size}, blocksize {bs}): the largest |w| per block, and for the last partial "
               "block at least 1e-38")
        wrong = np.flatnonzero(packed != want_p)
        expect(wrong.size == 0, f"{wrong.size} of {packed.size} bytes differ from bitsandbytes' (first at "
               f"byte {wrong[:1].tolist()}, n={w.size}, blocksize {bs}): first code in the high nibble, "
               "ties at a midpoint go to the lower level, odd length padded with the code of 0.0 (7)")
        decoded = attempt(dequantize, want_p.copy(), want_a.copy(), w.size, bs)
        decoded = np.asarray(to_numpy(decoded))
        if decoded.dtype == np.float64:  # code·absmax of two float32 is exact in float64: rounded, float32's product
            decoded = decoded.astype(np.float32)
        expect_close(decoded.reshape(-1), Q.dequantize_nf4(want_p, want_a, (w.size,), bs),
                     f"dequantize of {w.size} values", rtol=0, atol=0)
    passed("07.5 blockwise NF4", "every byte and every scale equals bitsandbytes', on random cases and ties")


def check_bytes_vs_error(answer) -> None:
    """``answer`` = {"bytes_fp4_over_nf4": ..., "mse_fp4_over_nf4": ...} measured on
    ``np.random.default_rng(0).standard_normal((384, 1536)).astype(np.float32)``, blocksize 64."""
    expect(isinstance(answer, dict), f"answer should be a dict, got {type(answer).__name__}")
    for key in ("bytes_fp4_over_nf4", "mse_fp4_over_nf4"):
        expect(key in answer and answer[key] is not None, f"answer needs a number under {key!r}")
    w = np.random.default_rng(0).standard_normal((384, 1536)).astype(np.float32)
    mse = {}
    for name, code in (("nf4", Q.nf4_codebook()), ("fp4", Q.fp4_codebook())):
        p, a = Q.quantize_4bit(w, code)
        mse[name] = float(np.mean((Q.dequantize_4bit(p, a, w.shape, code) - w) ** 2))
    expect(float(answer["bytes_fp4_over_nf4"]) == 1.0, "count the stored bytes again: both types keep "
           "two 4-bit codes per byte and one float32 absmax per block")
    want = mse["fp4"] / mse["nf4"]
    # 1e-4: float32 vs float64 arithmetic moves the ratio by ~1e-7, another Gaussian draw (seed 1) by 4e-4
    expect(abs(float(answer["mse_fp4_over_nf4"]) - want) <= 1e-4 * want,
           f"the error ratio should be measured on the given matrix; yours is {answer['mse_fp4_over_nf4']}")
    passed("07.6 bytes vs error", f"same bytes, FP4's squared error is {want:.2f}× NF4's")


__all__ = ["check_bytes_vs_error", "check_dq_saving", "check_lloyd_max", "check_nf4_blockwise",
           "check_nf4_codebook", "check_pack_nibbles"]


guard_checkers(globals())  # every check_* answers a malformed attempt with NotYet
