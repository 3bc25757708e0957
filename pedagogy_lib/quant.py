"""Chapter 07: 4-bit NormalFloat (NF4), FP4, Int4, blockwise absmax quantisation and
double quantisation, in NumPy, byte-compatible with bitsandbytes 0.50.2.

Equations (numbered as in chapter 07):

  Eq. 7.1  c_k = Φ⁻¹(p_k) / max_j Φ⁻¹(p_j)
                                        NF4 levels: standard-normal quantiles, scaled so
                                        the largest is exactly 1.
  Eq. 7.2  a_b = max_{i ∈ b} |w_i|      one absmax constant per block of B weights
  Eq. 7.3  x_i = w_i / a_b              the block's values scaled into [-1, 1]
  Eq. 7.4  m_k = (c_(k) + c_(k+1)) / 2  midpoints between neighbouring sorted levels
  Eq. 7.5  q_i = #{k : m_k < x_i}       nearest level; a value on a midpoint goes down
  Eq. 7.6  ŵ_i = c[q_i] · a_b           dequantisation
  Eq. 7.7  byte_j = q_2j << 4 | q_2j+1  two 4-bit codes per byte, first in the high nibble
  Eq. 7.8  μ = mean_b a_b ;  a_b ≈ d[r_b] · s_g + μ
                                        double quantisation: the absmax constants, centred,
                                        stored as 8-bit codes r_b of the dynamic map d with
                                        one float32 scale s_g per group of 256 blocks.
  Eq. 7.9  bits/param = 4 + 32/B            (NF4)
                      = 4 + 8/B + 32/(B·256) (NF4 + double quantisation)

Contract: every array is a NumPy array; weights, absmax and codebooks are float32 (other
float dtypes are rejected with a TypeError instead of silently converted, because a silent
float64→float32 cast changes the values being quantised); packed codes are uint8.
Nothing here keeps state: a call that raises changes nothing.
"""
import numpy as np
from scipy.special import ndtr, ndtri  # Φ and Φ⁻¹ of the standard normal

from . import checks

BLOCKSIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)  # what bitsandbytes accepts
TINY = np.float32(1e-38)  # bitsandbytes clamps absmax to this before taking 1/absmax
_CHUNK = 1 << 16  # values per chunk: a chunk's temporaries stay in cache


# ----------------------------------------------------------------------------- codebooks

def nf4_codebook():
    """The 16 NF4 levels exactly as bitsandbytes ships them (Eq. 7.1), sorted, index 7 = 0."""
    return np.array([
        -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
        -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
        0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
        0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], dtype=np.float32)


def _linspace_f32(start, stop, num):
    """torch.linspace in float32: start + step·i for the first half, stop - step·(num-1-i)
    for the second, each a single rounding (a fused multiply-add)."""
    start, stop = np.float32(start), np.float32(stop)
    step = np.float64((stop - start) / np.float32(num - 1))
    i = np.arange(num)
    lower = np.float64(start) + step * i
    upper = np.float64(stop) - step * (num - 1 - i)
    return np.where(i < num // 2, lower, upper).astype(np.float32)


def nf4_codebook_from_quantiles(offset=0.9677083, float32_grid=True):
    """Build NF4 from standard-normal quantiles (Eq. 7.1), the way bitsandbytes'
    `create_normal_map` does: 8 positive levels Φ⁻¹(p) for p on an even grid from `offset`
    down to ½ (½ itself dropped), 7 negative levels likewise, an exact zero, all divided
    by the largest so that the top level is exactly 1.

    Why 8 + 7 + zero: 16 codes split symmetrically give either no exact zero (8 + 8) or
    15 levels and a wasted code. NF4 keeps an exact zero (zero weights and the padding
    nibble decode exactly) and spends the 16th code on one more positive level.

    Why offset = 0.9677083: Φ⁻¹(1) = ∞, so the outermost level must sit at a quantile
    below 1. The centre of the last of n equal-probability bins is 1 - 1/(2n); the offset
    is that value averaged between n = 15 (the non-zero levels) and n = 16 (all codes):
    ½[(1 - 1/30) + (1 - 1/32)] = 0.96770833…, i.e. Φ⁻¹ ≈ 1.85 standard deviations
    (bitsandbytes' docstring calls the choice empirical).

    float32_grid=True rounds the probability grid to float32 the way torch.linspace does,
    which reproduces the shipped literals bit for bit. float32_grid=False uses a float64
    grid (the maths without that rounding): within 1.2e-7 of them. (A NumPy float32
    linspace, rounded from float64, moves one level by 2.4e-7.)
    """
    if not 0.5 < offset < 1:
        raise ValueError(f"offset must lie in (0.5, 1), got {offset}")
    if float32_grid:
        p_pos, p_neg = _linspace_f32(offset, 0.5, 9)[:-1], _linspace_f32(offset, 0.5, 8)[:-1]
    else:
        p_pos, p_neg = np.linspace(offset, 0.5, 9)[:-1], np.linspace(offset, 0.5, 8)[:-1]
    levels = np.concatenate([ndtri(p_pos.astype(np.float64)),
                             -ndtri(p_neg.astype(np.float64)), [0.0]])
    levels = np.sort(levels.astype(np.float32))
    return levels / levels.max()


def fp4_codebook():
    """bitsandbytes' FP4, in bit-pattern order: nibble = s·8 + e·2 + m (1 sign, 2 exponent,
    1 mantissa bit). Its exponent runs backwards and its subnormal is tiny:
    |v| = m·2⁻⁴ if e = 0, else (1 + m/2)·2^(4-e), giving {0, 1/16, 2, 3, 4, 6, 8, 12};
    divided by 12 so the largest is 1. (OCP's E2M1 has the same normals but 1, not 1/16,
    as its subnormal.) Codes 0 and 8 both hold +0.0, bit for bit as bitsandbytes' table
    (it writes the negative zero as the integer -0, which is +0), so a decoded code 8 is
    +0.0 there and here."""
    nibble = np.arange(16)
    s, e, m = nibble >> 3, (nibble >> 1) & 3, nibble & 1
    magnitude = np.where(e == 0, m * 2.0 ** -4, (1 + m / 2) * 2.0 ** (4 - e))
    values = np.where(s == 1, -magnitude, magnitude).astype(np.float32) + np.float32(0)  # -0 → +0
    return values / np.float32(12)


def int4_codebook():
    """Symmetric Int4 in sign-magnitude order: nibble = s·8 + k, value = (-1)^s · k/7,
    so 15 distinct levels (codes 0 and 8 are ±0). bitsandbytes 0.50.2 names this type
    "int4" but its get_4bit_type("int4") raises (it divides an integer tensor in place);
    its intended table is the same 15 levels in another nibble order."""
    nibble = np.arange(16)
    k = (nibble & 7).astype(np.float32)
    return np.where(nibble >= 8, -k, k) / np.float32(7)


def dynamic_map(signed=True, max_exponent_bits=7, total_bits=8):
    """bitsandbytes' 8-bit dynamic map (`create_dynamic_map`), used for the absmax codes of
    double quantisation (Eq. 7.8): for each decade 10^(i-6), i = 0…6, the midpoints of an
    even float32 grid on [0.1, 1] with 2^i points (2^(i+1) if unsigned), both signs, plus
    0 and 1; sorted, 256 float32 values."""
    values = [np.float32(0.0), np.float32(1.0)]
    for i in range(max_exponent_bits):
        n = 2 ** (i + total_bits - 1 - max_exponent_bits + (0 if signed else 1))
        edges = _linspace_f32(0.1, 1.0, n + 1)
        decade = np.float32(10.0 ** (i - max_exponent_bits + 1))
        means = decade * ((edges[:-1] + edges[1:]) / np.float32(2))
        values += list(means) + (list(-means) if signed else [])
    values += [np.float32(0.0)] * (256 - len(values))
    return np.sort(np.array(values, dtype=np.float32))


# ----------------------------------------------------------------------------- checks

def _check_float32(name, a):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(a).__name__}")
    a = np.asarray(a)  # a subclass's raw data (a masked array's masked NaN too): what is encoded
    if a.dtype != np.float32:
        raise TypeError(f"{name} must be float32, got {a.dtype}; convert explicitly with "
                        f".astype(np.float32)")
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains {np.count_nonzero(~np.isfinite(a))} NaN/inf values")
    return np.ascontiguousarray(a).reshape(-1)


def _check_blocksize(blocksize):
    if isinstance(blocksize, bool) or not isinstance(blocksize, (int, np.integer)) \
            or blocksize not in BLOCKSIZES:
        raise ValueError(f"blocksize must be one of {BLOCKSIZES}, got {blocksize!r}")
    return int(blocksize)


def _check_code(code, levels):
    code = _check_float32("code", code)
    if code.size != levels:
        raise ValueError(f"code must hold {levels} levels, got shape {code.shape}")
    if np.abs(code).max() > 1:
        raise ValueError("code levels must lie in [-1, 1]")
    return code


def _check_shape(shape):
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"shape must be a tuple of ints, got {type(shape).__name__}")
    shape = tuple(shape)
    if any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1
                        for d in shape):
        raise ValueError(f"shape must be a tuple of positive ints, got {shape!r}")
    return tuple(int(d) for d in shape), int(np.prod(shape))


def _check_codes(name, q, expected_len=None):
    """uint8 codes, 1-D (bitsandbytes' (k, 1) layout of packed weights is accepted too)."""
    if not isinstance(q, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(q).__name__}")
    if q.dtype != np.uint8:
        raise TypeError(f"{name} must be uint8, got {q.dtype}")
    if q.ndim == 2 and q.shape[1] == 1:
        q = q[:, 0]
    if q.ndim != 1 or q.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {q.shape}")
    if expected_len is not None and q.size != expected_len:
        raise ValueError(f"{name} must hold {expected_len} bytes for this shape, got {q.size}")
    return np.ascontiguousarray(q)


def _check_absmax(absmax, expected_len=None, decode=False):
    """Block constants: 1-D finite float32. Encoding (double_quantize) needs a_b >= 0, the
    maxima of |w|. Decoding takes any finite a_b, as bitsandbytes does: double quantisation
    restores an all-zero block's a_b = 0 as d[r]·s + μ, which rounds to about -1e-9, and
    bitsandbytes multiplies by it as stored (the block's codes all decode to ±0 anyway)."""
    if isinstance(absmax, np.ndarray) and absmax.ndim != 1:
        raise ValueError(f"absmax must be 1-D, got shape {absmax.shape}")
    absmax = _check_float32("absmax", absmax)
    if expected_len is not None and absmax.size != expected_len:
        raise ValueError(f"absmax must hold {expected_len} block constants, got {absmax.size}")
    if not decode and (absmax < 0).any():
        raise ValueError(f"absmax must be >= 0 (block maxima of |w|), got {absmax.min()!r}")
    return absmax


# ----------------------------------------------------------------------------- encoding

def _sorted_midpoints(code):
    """Eq. 7.4 on the sorted levels, and `order` mapping a sorted position back to a code
    index (identity for NF4; FP4 and Int4 are stored in bit-pattern order)."""
    order = np.argsort(code, kind="stable")
    s = code[order]
    return (s[:-1] + s[1:]) / np.float32(2), order.astype(np.uint8)


def nearest_code(x, code):
    """Eq. 7.5: the index of the level nearest to each x; on a midpoint, the lower level
    (bitsandbytes' rule). Counting the midpoints strictly below x gives the sorted index.
    NaN/inf in x or the code are refused: NaN has no nearest level."""
    x, code = np.asarray(x), np.asarray(code, dtype=np.float32)
    for name, a in (("x", x), ("code", code)):
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise ValueError(f"nearest_code: {name} contains "
                             f"{np.count_nonzero(~np.isfinite(a))} NaN/inf values")
    mid, order = _sorted_midpoints(code)
    return order[np.searchsorted(mid, x, side="left")]


def _count_below(x, mid, out, scratch):
    """Eq. 7.5 for ≤ 15 midpoints: Σ_k [x > m_k], as 15 in-place comparisons (far faster
    than a binary search per value)."""
    out.fill(0)
    for m in mid:
        np.greater(x, m, out=scratch)
        out += scratch


def _encode_full_blocks(blocks, mid, order, absmax_out, q_out):
    """Eqs. 7.2-7.5 on whole blocks, chunk by chunk. No clamp to [-1, 1] is needed: |x|
    exceeds 1 by at most a rounding error, and every midpoint lies inside [-1, 1]."""
    rows = max(1, _CHUNK // blocks.shape[1])
    x = np.empty((rows, blocks.shape[1]), np.float32)
    gt = np.empty(x.shape, bool)
    for r in range(0, len(blocks), rows):
        w, a = blocks[r:r + rows], absmax_out[r:r + rows]
        xr, gr, qr = x[:len(w)], gt[:len(w)], q_out[r:r + rows]
        np.abs(w, out=xr)
        xr.max(axis=1, out=a)                                    # Eq. 7.2
        inv = np.float32(1) / np.maximum(a, TINY)                # bnb: x·(1/a), not x/a
        np.multiply(w, inv[:, None], out=xr)                     # Eq. 7.3
        _count_below(xr, mid, qr, gr)                            # Eq. 7.5
    if len(order) and not (order == np.arange(len(order))).all():
        q_out[...] = order[q_out]


def pack_nibbles(q):
    """Eq. 7.7: two 4-bit codes per byte, the first in the high nibble. An odd count gets
    a zero low nibble here; quantize_4bit pads with the code of 0.0 itself (0b0111 for NF4).
    Codes must be integers in [0, 15]: a larger code would wrap into the other nibble, a
    float would be truncated, so both are refused."""
    q = np.asarray(q)
    if q.dtype == bool or q.dtype.kind not in "iu":
        raise TypeError(f"pack_nibbles: codes must be integers in [0, 15], got dtype {q.dtype}")
    if q.size and (q.min() < 0 or q.max() > 15):
        raise ValueError(f"pack_nibbles: codes must lie in [0, 15] (4 bits), got values in "
                         f"[{q.min()}, {q.max()}]")
    q = q.astype(np.uint8).reshape(-1)
    if q.size % 2:
        q = np.append(q, np.uint8(0))
    return (q[0::2] << 4) | q[1::2]


def unpack_nibbles(packed, n):
    """Inverse of Eq. 7.7: the first n 4-bit codes, high nibble first."""
    packed = _check_codes("packed", packed)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= 2 * packed.size:
        raise ValueError(f"n must be an int in [0, {2 * packed.size}], got {n!r}")
    q = np.empty(2 * packed.size, np.uint8)
    q[0::2], q[1::2] = packed >> 4, packed & 15
    return q[:n]


# ----------------------------------------------------------------------------- 4-bit

def quantize_4bit(w, code, blocksize=64):
    """Blockwise absmax quantisation to a 16-level codebook (Eqs. 7.2-7.5, 7.7).

    Flattens w row-major and returns (packed uint8 of length ⌈n/2⌉, absmax float32 of
    length ⌈n/B⌉), following bitsandbytes' quantize_4bit rules: full blocks scale by
    x·(1/max(a, 1e-38)) and store a unclamped; the last partial block divides by
    a = max(a, 1e-38) and stores that clamped a; an odd count is padded with the code
    of 0.0.
    """
    x = _check_float32("w", w)
    code, blocksize = _check_code(code, 16), _check_blocksize(blocksize)
    mid, order = _sorted_midpoints(code)
    n = x.size
    full = n - n % blocksize
    q = np.empty(n + n % 2, np.uint8)
    absmax = np.empty(-(-n // blocksize), np.float32)
    _encode_full_blocks(x[:full].reshape(-1, blocksize), mid, order,
                        absmax[:full // blocksize], q[:full].reshape(-1, blocksize))
    if full < n:  # the last, partial block
        a = max(np.abs(x[full:]).max(), TINY)
        absmax[-1] = a
        q[full:n] = order[np.searchsorted(mid, x[full:] / a, side="left")]
    if n % 2:
        q[n] = order[np.searchsorted(mid, np.float32(0), side="left")]
    return pack_nibbles(q), absmax


def _byte_table(code):
    """For each of the 256 bytes, the pair (c[high nibble], c[low nibble]) as float32."""
    byte = np.arange(256)
    return np.stack([code[byte >> 4], code[byte & 15]], axis=1).astype(np.float32)


def dequantize_4bit(packed, absmax, shape, code, blocksize=64):
    """Eq. 7.6: ŵ = c[q]·a_b in float32, returned with `shape` (row-major)."""
    shape, n = _check_shape(shape)
    code, blocksize = _check_code(code, 16), _check_blocksize(blocksize)
    packed = _check_codes("packed", packed, -(-n // 2))
    absmax = _check_absmax(absmax, -(-n // blocksize), decode=True)
    # Each byte decodes to two float32 = one 64-bit word: gather whole words.
    table = _byte_table(code).view(np.uint64).reshape(-1)
    out = np.empty(2 * packed.size, np.float32)
    words = out.view(np.uint64)
    full = n - n % blocksize
    blocks, scales = out[:full].reshape(-1, blocksize), absmax[:full // blocksize, None]
    rows = max(1, _CHUNK // blocksize)
    for r in range(0, len(blocks), rows):  # chunks, so the product reads from cache
        half = slice(r * blocksize // 2, (r + rows) * blocksize // 2)
        table.take(packed[half], out=words[half], mode="clip")        # c[q]
        blocks[r:r + rows] *= scales[r:r + rows]                      # · a_b
    if full < n:
        words[full // 2:] = table[packed[full // 2:]]
        out[full:n] *= absmax[-1]
    return out[:n].reshape(shape)


def quantize_nf4(w, blocksize=64):
    """NF4 (Eqs. 7.1-7.5, 7.7), byte-identical to bitsandbytes.functional.quantize_4bit(
    torch.from_numpy(w), quant_type="nf4", blocksize=blocksize,
    compress_statistics=False) (packed flattened) on its CPU backend. Its CUDA kernel scales
    a little differently and put 3 of 28.8M values, each within 2 float32 ulps of a midpoint,
    one level away (tests/gpu/nf4_cuda_ties.py). Returns (packed uint8, absmax float32)."""
    return quantize_4bit(w, nf4_codebook(), blocksize)


def dequantize_nf4(packed, absmax, shape, blocksize=64):
    """Eq. 7.6 with the NF4 codebook; float32, equal to bitsandbytes' dequantize_4bit."""
    return dequantize_4bit(packed, absmax, shape, nf4_codebook(), blocksize)


def quantize_nf4_plain(w, blocksize=64):
    """Eqs. 7.2-7.5 and 7.7 written to be read: one block at a time, no speed tricks.
    Same bytes and scales as `quantize_nf4` (and bitsandbytes); tests/test_quant.py checks it."""
    w, blocksize = _check_float32("w", w).reshape(-1), _check_blocksize(blocksize)
    c = nf4_codebook()                                         # sorted levels, c[7] = 0
    m = (c[:-1] + c[1:]) / np.float32(2)                       # Eq. 7.4: 15 midpoints
    codes, scales = [], []
    for start in range(0, w.size, blocksize):
        block = w[start:start + blocksize]
        a = np.abs(block).max()                                # Eq. 7.2
        if block.size == blocksize:                            # bitsandbytes: full blocks
            x = block * (np.float32(1) / max(a, TINY))         # multiply by 1/a (Eq. 7.3) ...
        else:                                                  # ... the partial last block
            a = max(a, TINY)                                   # divides and keeps the clamped a
            x = block / a
        codes.append(np.searchsorted(m, x, side="left"))       # Eq. 7.5: midpoints below x
        scales.append(a)
    q = np.concatenate(codes + [[7]] * (w.size % 2))           # odd length: pad with code of 0.0
    return ((q[0::2] << 4) | q[1::2]).astype(np.uint8), np.array(scales, np.float32)  # Eq. 7.7


def dequantize_nf4_plain(packed, absmax, shape, blocksize=64):
    """Eq. 7.6 written to be read: unpack the nibbles, look up the level, times the block's a."""
    shape, n = _check_shape(shape)
    blocksize = _check_blocksize(blocksize)
    packed = _check_codes("packed", packed, -(-n // 2))
    absmax = _check_absmax(absmax, -(-n // blocksize), decode=True)  # DQ may restore a₀ < 0
    q = np.stack([packed >> 4, packed & 15], axis=1).reshape(-1)[:n]     # Eq. 7.7 undone
    return (nf4_codebook()[q] * np.repeat(absmax, blocksize)[:n]).reshape(shape)  # Eq. 7.6


def normal_code_probabilities(code, scale):
    """P(code k) when w ~ N(0, 1) is quantised as x = w / scale with nearest-level
    encoding (Eqs. 7.4-7.5): the normal mass between neighbouring midpoints, in code order.
    For NF4 the natural scale is Φ⁻¹(0.9677083), which puts the level ±1 where Eq. 7.1 put it."""
    code = _check_code(code, 16).astype(np.float64)
    if not (np.isscalar(scale) and np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    order = np.argsort(code, kind="stable")
    s = code[order]
    edges = np.concatenate([[-np.inf], (s[:-1] + s[1:]) / 2 * scale, [np.inf]])
    p = np.empty(code.size)
    p[order] = np.diff(ndtr(edges))
    return p


# ----------------------------------------------------------------------------- 8-bit and DQ

def _scale_blocks(x, blocksize):
    """Eqs. 7.2-7.3 the simple way (quantize_4bit does the same, in chunks): returns
    (x scaled per block, absmax). bnb's rules: full blocks x·(1/max(a, 1e-38)) with a
    stored as is; the partial last block x/a with a = max(a, 1e-38) stored."""
    n, full = x.size, x.size - x.size % blocksize
    blocks = x[:full].reshape(-1, blocksize)
    absmax = np.abs(blocks).max(axis=1)
    scaled = [(blocks * (np.float32(1) / np.maximum(absmax, TINY))[:, None]).reshape(-1)]
    if full < n:
        a = max(np.abs(x[full:]).max(), TINY)
        absmax = np.append(absmax, a)
        scaled.append(x[full:] / a)
    return np.concatenate(scaled), absmax.astype(np.float32)


def quantize_blockwise_8bit(x, code=None, blocksize=256):
    """Blockwise absmax quantisation to a 256-level codebook (default: the dynamic map),
    the rules of bitsandbytes' quantize_blockwise reference path: exact nearest level,
    ties to the lower one. Returns (q uint8 of length n, absmax float32 of length ⌈n/B⌉)."""
    x = _check_float32("x", x)
    code = _check_code(dynamic_map() if code is None else code, 256)
    blocksize = _check_blocksize(blocksize)
    mid, order = _sorted_midpoints(code)
    scaled, absmax = _scale_blocks(x, blocksize)
    return order[np.searchsorted(mid, scaled, side="left")], absmax    # Eq. 7.5


def dequantize_blockwise_8bit(q, absmax, code=None, blocksize=256):
    """Eq. 7.6 for 8-bit codes: d[q]·a_b in float32, 1-D."""
    code = _check_code(dynamic_map() if code is None else code, 256)
    blocksize = _check_blocksize(blocksize)
    q = _check_codes("q", q)
    absmax = _check_absmax(absmax, -(-q.size // blocksize), decode=True)
    out = code[q]
    full = q.size - q.size % blocksize
    out[:full].reshape(-1, blocksize)[...] *= absmax[:full // blocksize, None]
    out[full:] *= absmax[-1]
    return out


def double_quantize(absmax, blocksize=256):
    """Eq. 7.8: quantise the absmax constants themselves, as bitsandbytes'
    compress_statistics=True does: centre them on their mean μ, then 8-bit dynamic-map
    blockwise quantisation in blocks of 256. Returns (q uint8, absmax2 float32, μ float).

    μ is the correctly rounded float32 mean (float64 sum); bitsandbytes uses torch's
    float32 reduction, which can differ from it in the last bit."""
    absmax = _check_absmax(absmax)
    offset = np.float32(absmax.mean(dtype=np.float64))
    q, absmax2 = quantize_blockwise_8bit(absmax - offset, dynamic_map(), blocksize)
    return q, absmax2, float(offset)


def double_dequantize(q, absmax2, offset, blocksize=256):
    """Eq. 7.8 back: a_b ≈ d[r_b]·s_g + μ, in float32."""
    if isinstance(offset, bool) or not isinstance(offset, (float, int, np.floating, np.integer)):
        raise TypeError(f"offset must be a float, got {type(offset).__name__}")
    if not np.isfinite(offset) or abs(float(offset)) > float(np.finfo(np.float32).max):  # μ is stored as float32
        raise ValueError(f"offset must be finite in float32 (|μ| <= 3.4e38), got {offset}")
    return dequantize_blockwise_8bit(q, absmax2, dynamic_map(), blocksize) + np.float32(offset)


# ----------------------------------------------------------------------------- storage

def bits_per_param(n_params=None, blocksize=64, double_quant=False, nested_blocksize=256):
    """Eq. 7.9, storage per weight in bits. n_params=None gives the large-tensor limit
    (4 + 32/64 = 4.5; with DQ 4 + 8/64 + 32/(64·256) ≈ 4.127); an integer gives the exact
    cost of one tensor of that size, counting the padding nibble, the partial blocks and
    (with DQ) the float32 offset μ. The codebooks are shared constants and not counted."""
    blocksize = _check_blocksize(blocksize)
    if double_quant:
        nested_blocksize = _check_blocksize(nested_blocksize)
    if n_params is None:
        if not double_quant:
            return 4 + 32 / blocksize
        return 4 + 8 / blocksize + 32 / (blocksize * nested_blocksize)
    n_params = checks.positive_int(n_params, "n_params")
    blocks = -(-n_params // blocksize)
    bits = 8 * -(-n_params // 2)                                   # packed codes
    if double_quant:
        bits += 8 * blocks + 32 * -(-blocks // nested_blocksize) + 32  # r_b, s_g, μ
    else:
        bits += 32 * blocks                                        # a_b
    return bits / n_params


def measured_bits_per_param(n_params, *arrays):
    """Storage per weight measured from the byte counts of the arrays actually stored
    (packed codes, absmax, and for DQ the 8-bit codes, absmax2 and np.float32(offset))."""
    n_params = checks.positive_int(n_params, "n_params")
    return 8 * sum(np.asarray(a).nbytes for a in arrays) / n_params


# ----------------------------------------------------------------------------- error study

def absmax_normalize(w, blocksize=64):
    """The values x = w/a_b of Eq. 7.3 (as quantize_4bit computes them), flattened: the
    data a 16-level quantiser actually sees."""
    return _scale_blocks(_check_float32("w", w), _check_blocksize(blocksize))[0]


def quantization_mse(w, code, blocksize=64):
    """Mean squared reconstruction error E[(w - ŵ)²] of 4-bit blockwise quantisation."""
    packed, absmax = quantize_4bit(w, code, blocksize)
    w_hat = dequantize_4bit(packed, absmax, w.shape, code, blocksize)
    return float(np.mean((w.astype(np.float64) - w_hat) ** 2))


def code_entropy(w, code, blocksize=64):
    """Entropy H = -Σ p_k log2 p_k (bits) of the 4-bit codes used for w: how much of the
    4 bits the code actually carries (4 would mean every level equally used)."""
    packed, _ = quantize_4bit(w, code, blocksize)
    p = np.bincount(unpack_nibbles(packed, w.size), minlength=16) / w.size
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def lloyd_max(samples, levels=16, iters=1000, init=None, tol=1e-9):
    """The MSE-optimal scalar quantiser for `samples` (Lloyd-Max): alternate
    thresholds = midpoints of the levels (Eq. 7.4) and levels = mean of the samples in
    each cell, until no level moves by more than tol. Deterministic: the default start is
    the samples' (k+½)/levels quantiles. Returns sorted float32 levels.

    Cell means come from prefix sums over the sorted samples, so an iteration costs
    O(levels·log n) after one sort."""
    s = np.sort(_check_float32("samples", samples).astype(np.float64))
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) \
            or not 2 <= levels <= s.size:
        raise ValueError(f"levels must be an int in [2, {s.size}], got {levels!r}")
    if init is None:
        c = np.quantile(s, (np.arange(levels) + 0.5) / levels)
    else:
        c = np.sort(_check_float32("init", init).astype(np.float64))
        if c.size != levels:
            raise ValueError(f"init must hold {levels} levels, got {c.size}")
    prefix = np.concatenate([[0.0], np.cumsum(s)])
    for _ in range(iters):
        # samples ≤ a midpoint go to the lower level, as in Eq. 7.5
        below = np.searchsorted(s, (c[:-1] + c[1:]) / 2, side="right")
        edges = np.concatenate([[0], below, [s.size]])
        count = np.diff(edges)
        sums = prefix[edges[1:]] - prefix[edges[:-1]]
        new = np.where(count > 0, sums / np.maximum(count, 1), c)  # an empty cell keeps its level
        moved = np.abs(new - c).max()
        c = new
        if moved < tol:
            break
    return np.sort(c.astype(np.float32))
