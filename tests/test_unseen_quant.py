"""Unseen inputs for chapter 07's quantisation and the QLoRA path (session 9, task U3):
NF4/FP4 bytes against bitsandbytes (CPU) on sizes around every block size, special values
and half-precision inputs; double quantisation of absmax counts that are not a multiple
of 256; block sizes refused with a message; the QLoRA linear against a float64 reference
on shapes the other tests do not use; bnb layers stored in a float ``quant_storage``;
inputs that used to slip through (a NaN under a mask, a float block size, NaN in
``nearest_code``)."""
import dataclasses
import math
import warnings

import numpy as np
import pytest

from pedagogy_lib import counting as C, quant as Q

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

BOOK = {"nf4": Q.nf4_codebook(), "fp4": Q.fp4_codebook()}
F32_MAX = np.finfo(np.float32).max


def rng(seed):
    return np.random.default_rng(seed)


@pytest.fixture(scope="module")
def F():
    pytest.importorskip("bitsandbytes")
    from pedagogy_lib.torch_ref.qlora import bnb
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bnb().functional


@pytest.fixture(scope="module")
def QL():
    pytest.importorskip("bitsandbytes")
    from pedagogy_lib.torch_ref import qlora
    return qlora


def _bnb_reference_dequantize(packed, absmax, quant_type, blocksize, shape):
    """bitsandbytes' pure-torch 4-bit decode (its native CPU one scrambles some shapes)."""
    from bitsandbytes.backends.default.ops import _dequantize_4bit_compute
    from bitsandbytes.backends.utils import _get_4bit_code
    eager = getattr(_dequantize_4bit_compute, "__wrapped__", _dequantize_4bit_compute)
    return eager(packed.reshape(-1), absmax, _get_4bit_code(quant_type, "cpu"), blocksize, shape,
                 torch.float32).numpy()


def _special_inputs():
    r = rng(11)
    return {
        "all zero": np.zeros(200, np.float32),
        "one value": np.array([-3.5], np.float32),
        "one zero": np.zeros(1, np.float32),
        "float32 max": np.array([F32_MAX, -F32_MAX, 1.0] * 70, np.float32),
        "all float32 max": np.full(129, -F32_MAX, np.float32),
        "subnormal": (r.standard_normal(301) * 1e-40).astype(np.float32),
        "smallest subnormal": np.full(67, np.float32(1.4e-45)),
        "mixed scales": np.concatenate([np.zeros(64), r.standard_normal(10) * 1e-42, [F32_MAX],
                                        r.standard_normal(100)]).astype(np.float32),
        "negative zero": -np.zeros(65, np.float32),
        "near 1e37": (r.standard_normal(1000) * 1e37).astype(np.float32),
    }


# ----------------------------------------------------------------------------- 4-bit bytes

@pytest.mark.parametrize("blocksize", Q.BLOCKSIZES)
def test_4bit_bytes_around_every_block_size_equal_bitsandbytes(F, blocksize):
    """Sizes one below/above a block, a block and a half plus one (odd: nibble padding),
    and a 3-D tensor whose size is no multiple of anything; NF4 and FP4; bytes, absmax and
    the decoded weight equal bitsandbytes'."""
    r = rng(blocksize)
    shapes = [(blocksize - 1,), (blocksize + 1,), (3 * blocksize // 2 + 1,), (3, 5, 7)]
    for shape in shapes:
        w = r.standard_normal(shape).astype(np.float32)
        for name, code in BOOK.items():
            p, s = F.quantize_4bit(torch.from_numpy(w.copy()), blocksize=blocksize, quant_type=name)
            packed, absmax = Q.quantize_4bit(w, code, blocksize)
            np.testing.assert_array_equal(packed, p.numpy().reshape(-1))
            np.testing.assert_array_equal(absmax, s.absmax.numpy())
            np.testing.assert_array_equal(Q.dequantize_4bit(packed, absmax, shape, code, blocksize),
                                          _bnb_reference_dequantize(p, s.absmax, name, blocksize, shape))


@pytest.mark.parametrize("label", sorted(_special_inputs()))
def test_4bit_bytes_of_special_values_equal_bitsandbytes(F, label):
    w = _special_inputs()[label]
    for blocksize in (32, 64, 4096):
        for name, code in BOOK.items():
            p, s = F.quantize_4bit(torch.from_numpy(w.copy()), blocksize=blocksize, quant_type=name)
            packed, absmax = Q.quantize_4bit(w, code, blocksize)
            np.testing.assert_array_equal(packed, p.numpy().reshape(-1))
            np.testing.assert_array_equal(absmax, s.absmax.numpy())
            ours = Q.dequantize_4bit(packed, absmax, w.shape, code, blocksize)
            assert np.isfinite(ours).all()
            np.testing.assert_array_equal(ours, _bnb_reference_dequantize(p, s.absmax, name, blocksize,
                                                                          w.shape))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_input_is_refused_and_its_float32_cast_gives_bnbs_bytes(F, dtype):
    """bitsandbytes takes fp16/bf16 and computes in float32; we refuse a silent cast, and
    the explicit float32 cast gives exactly bitsandbytes' bytes and absmax."""
    t = torch.from_numpy(rng(3).standard_normal(257).astype(np.float32)).to(getattr(torch, dtype))
    w = t.float().numpy()
    if dtype == "float16":
        with pytest.raises(TypeError, match="float32, got float16"):
            Q.quantize_nf4(w.astype(np.float16))
    for name, code in BOOK.items():
        for blocksize in (32, 128):
            p, s = F.quantize_4bit(t, blocksize=blocksize, quant_type=name)
            packed, absmax = Q.quantize_4bit(w, code, blocksize)
            np.testing.assert_array_equal(packed, p.numpy().reshape(-1))
            np.testing.assert_array_equal(absmax, s.absmax.float().numpy())


# ----------------------------------------------------------------------------- block sizes

@pytest.mark.parametrize("blocksize", [0, 16, 63, -64, 8192, 64.0, True, None, "64"])
def test_block_sizes_bitsandbytes_refuses_are_refused_with_a_message(F, QL, blocksize):
    w, a = np.ones(128, np.float32), np.ones(2, np.float32)
    calls = [lambda: Q.quantize_nf4(w, blocksize), lambda: Q.quantize_nf4_plain(w, blocksize),
             lambda: Q.dequantize_nf4(np.zeros(64, np.uint8), a, (128,), blocksize),
             lambda: Q.quantize_blockwise_8bit(w, None, blocksize), lambda: Q.double_quantize(a, blocksize),
             lambda: Q.bits_per_param(128, blocksize)]
    for call in calls:
        with pytest.raises(ValueError, match="blocksize must be one of"):
            call()
    if blocksize not in (64.0, True, None, "64"):
        with pytest.raises(ValueError, match="blocksize"):
            F.quantize_4bit(torch.ones(128), blocksize=blocksize, quant_type="nf4")


@pytest.mark.parametrize("blocksize", [64.0, np.float32(64), torch.tensor(64)])
def test_quantize_linears_refuses_a_non_int_block_size_before_changing_the_model(QL, blocksize):
    """64.0 == 64, so `64.0 in BLOCKSIZES` passed: the model's Linears were replaced and
    only the later .to() failed, inside bitsandbytes (a RuntimeError about the op's schema)."""
    model = nn.Sequential(nn.Linear(64, 64))
    with pytest.raises(ValueError, match="blocksize must be one of"):
        QL.quantize_linears(model, "all-linear", blocksize=blocksize)
    assert type(model[0]) is nn.Linear


def test_quantize_linears_takes_a_numpy_int_block_size(QL):
    model = nn.Sequential(nn.Linear(128, 64))
    QL.quantize_linears(model, "all-linear", blocksize=np.int64(128))
    QL.to_device(model, "cpu")
    assert QL.read_quant_state(model[0]).blocksize == 128


# ----------------------------------------------------------------------------- double quantisation

@pytest.mark.parametrize("n_blocks", [1, 2, 257, 300, 513])
def test_double_quantisation_of_counts_not_a_multiple_of_256(F, n_blocks):
    """Absmax counts with a partial last group of 256 (and one with a single value):
    our 8-bit codes and group scales equal bitsandbytes' reference quantiser; bitsandbytes'
    own double-quantised bytes decode value for value; the round trip stays within half
    a dynamic-map step of each group's scale."""
    r = rng(n_blocks)
    n = 64 * n_blocks - (31 if n_blocks > 1 else 0)
    w = (r.standard_normal(n) * r.uniform(0.01, 3, n)).astype(np.float32)
    if n_blocks > 3:
        w[:64] = 0                                                   # an all-zero block
    _, absmax = Q.quantize_nf4(w)
    q, absmax2, offset = Q.double_quantize(absmax)
    assert q.size == n_blocks and absmax2.size == -(-n_blocks // 256)
    # bnb's pure-torch quantize_blockwise (its native CPU kernel uses a lookup table that
    # rounds values within ~1e-5 of a midpoint the other way)
    centred = torch.from_numpy(absmax - np.float32(offset))
    code = torch.from_numpy(Q.dynamic_map())
    rq, ra = _reference_blockwise(centred, code, 256)
    np.testing.assert_array_equal(q, rq)
    np.testing.assert_array_equal(absmax2, ra)
    back = Q.double_dequantize(q, absmax2, offset)
    step = np.diff(Q.dynamic_map().astype(np.float64)).max() / 2
    bound = np.repeat(absmax2.astype(np.float64), 256)[:n_blocks] * step + 1e-6 * absmax.max()
    assert (np.abs(back - absmax) <= bound).all()
    p, s = F.quantize_4bit(torch.from_numpy(w), blocksize=64, quant_type="nf4", compress_statistics=True)
    theirs = (F.dequantize_blockwise(s.absmax, s.state2) + s.offset).numpy()
    ours = Q.double_dequantize(s.absmax.numpy(), s.state2.absmax.numpy(), float(s.offset))
    np.testing.assert_array_equal(ours, theirs)


def _reference_blockwise(A, code, blocksize):
    """bitsandbytes' default (pure torch) quantize_blockwise, backends/default/ops.py."""
    A = A.reshape(-1).float()
    n, rem = A.numel(), A.numel() % blocksize
    full = n - rem
    blocks = A[:full].reshape(-1, blocksize)
    absmax = blocks.abs().max(dim=-1)[0]
    scaled = torch.clamp(blocks * (1.0 / absmax.clamp(min=1e-38).view(-1, 1)), -1, 1).reshape(-1)
    if rem:
        am = A[full:].abs().max().clamp(min=1e-38)
        absmax = torch.cat([absmax, am.unsqueeze(0)])
        scaled = torch.cat([scaled, torch.clamp(A[full:] / am, -1, 1)])
    q = torch.bucketize(scaled, (code[:-1] + code[1:]) / 2, out_int32=True).to(torch.uint8)
    return q.numpy(), absmax.numpy()


def test_double_quantisation_of_float32_max_stays_finite():
    """μ is the float64 mean rounded once, so absmax = float32 max survives (torch's float32
    mean overflows here and bitsandbytes restores NaN)."""
    a = np.full(3, F32_MAX, np.float32)
    back = Q.double_dequantize(*Q.double_quantize(a))
    np.testing.assert_array_equal(back, a)


# ----------------------------------------------------------------------------- things that slipped through

@pytest.mark.parametrize("call", [
    lambda w: Q.quantize_nf4(w), lambda w: Q.quantize_nf4_plain(w), lambda w: Q.absmax_normalize(w),
    lambda w: Q.quantize_blockwise_8bit(w), lambda w: Q.double_quantize(np.abs(w)),
    lambda w: Q.quantize_4bit(w, Q.fp4_codebook(), 32),
])
def test_a_nan_hidden_under_a_mask_is_refused(call):
    """A masked array's NaN passed the NaN/inf check (NumPy's isfinite honours the mask)
    but was encoded all the same: absmax NaN, every code 0 (the level -1)."""
    w = np.ones(64, np.float32)
    w[3] = np.nan
    masked = np.ma.masked_invalid(w)
    with pytest.raises(ValueError, match="1 NaN/inf"):
        call(masked)
    clean = np.ma.masked_array(rng(1).standard_normal(100).astype(np.float32), mask=[True] + [False] * 99)
    np.testing.assert_array_equal(Q.quantize_nf4(clean)[0], Q.quantize_nf4(clean.data)[0])  # the raw data


@pytest.mark.parametrize("x, code, what", [
    (np.array([0.5, np.nan]), Q.nf4_codebook(), "x contains 1"),
    (np.array([np.inf, -np.inf, 0.0]), Q.nf4_codebook(), "x contains 2"),
    ([0.1], np.where(Q.nf4_codebook() == 1, np.nan, Q.nf4_codebook()), "code contains 1"),
])
def test_nearest_code_refuses_nan_and_inf(x, code, what):
    """NaN used to come back as code 15 (searchsorted sorts NaN last)."""
    with pytest.raises(ValueError, match=what):
        Q.nearest_code(x, code)
    assert Q.nearest_code([0.0, 0.9, -1.0], Q.nf4_codebook()).tolist() == [7, 15, 0]


# ----------------------------------------------------------------------------- the QLoRA linear

def _qlora_linear(QL, d_in, d_out, quant_type, double_quant, seed=0):
    from pedagogy_lib.torch_ref.lora import attach_lora
    torch.manual_seed(seed)
    lin = nn.Linear(d_in, d_out)
    w0 = lin.weight.detach().numpy().copy()
    model = nn.Sequential(lin)
    QL.quantize_linears(model, "all-linear", quant_type=quant_type, double_quant=double_quant)
    attach_lora(model, "all-linear", r=3, alpha=6, seed=seed)
    QL.to_device(model, "cpu")
    with torch.no_grad():
        model[0].lora_B.normal_()               # B = 0 at init would hide the LoRA path
    return model[0], w0


@pytest.mark.parametrize("d_in, d_out", [(64, 192), (320, 64)])
@pytest.mark.parametrize("quant_type, double_quant", [("nf4", True), ("fp4", False)])
def test_qlora_linear_against_a_float64_reference(QL, d_in, d_out, quant_type, double_quant):
    """Eqs. 7.10-7.11 on shapes the other tests do not use, batch 1 and a 3-D batch: the
    output and the gradients of x, A and B equal float64 autograd on our dequantisation of
    the stored bytes (the weight bitsandbytes computes with, checked too); no gradient
    reaches the 4-bit base."""
    layer, w0 = _qlora_linear(QL, d_in, d_out, quant_type, double_quant)
    base = layer.base_layer
    c = QL.crosscheck(base, w0)
    assert c["dequant_identical"] and c["packed_identical"]
    W = torch.from_numpy(QL.read_quant_state(base).dequantize()).double()
    for shape in [(1, d_in), (2, 3, d_in)]:
        x = torch.randn(*shape, requires_grad=True)
        y = layer(x)
        g = torch.randn_like(y)
        y.backward(g)
        x64 = x.detach().double().requires_grad_()
        A64 = layer.lora_A.detach().double().requires_grad_()
        B64 = layer.lora_B.detach().double().requires_grad_()
        y64 = x64 @ W.T + base.bias.detach().double() + layer.scaling * (x64 @ A64.T) @ B64.T
        y64.backward(g.double())
        for ours, ref in [(y.detach(), y64.detach()), (x.grad, x64.grad),
                          (layer.lora_A.grad, A64.grad), (layer.lora_B.grad, B64.grad)]:
            assert ours.dtype == torch.float32
            np.testing.assert_allclose(ours.double().numpy(), ref.numpy(), rtol=0,
                                       atol=1e-5 * float(ref.abs().max()))
        layer.lora_A.grad = layer.lora_B.grad = None
        assert base.weight.grad is None and not base.weight.requires_grad


@pytest.mark.parametrize("storage", ["float32", "bfloat16", "float16", "int8"])
def test_read_quant_state_reads_bytes_kept_in_a_float_quant_storage(QL, storage):
    """bitsandbytes can keep the 4-bit bytes in a float container (quant_storage; chapter
    11 uses float32 so FSDP can shard them) and reads them back with .view(uint8).
    read_quant_state copied the container as is: float32/float16/int8 were then refused
    ("packed must be uint8") and bfloat16 failed inside NumPy."""
    bnb = QL.bnb()
    torch.manual_seed(4)
    lin = nn.Linear(128, 64)
    dt = getattr(torch, storage)
    q = bnb.nn.Linear4bit(128, 64, compute_dtype=torch.float32, compress_statistics=True,
                          quant_type="nf4", quant_storage=dt, device="meta")
    q.weight = bnb.nn.Params4bit(lin.weight.detach(), requires_grad=False, blocksize=64,
                                 compress_statistics=True, quant_type="nf4", quant_storage=dt, module=q)
    q.bias = nn.Parameter(lin.bias.detach().clone())
    q.support_avx512bf16_for_cpu = False
    q = q.to("cpu")
    assert q.weight.data.dtype == dt
    s = QL.read_quant_state(q)
    assert s.packed.dtype == np.uint8 and s.packed.size == 128 * 64 // 2
    packed, _ = Q.quantize_nf4(lin.weight.detach().numpy())
    np.testing.assert_array_equal(s.packed, packed)
    np.testing.assert_array_equal(s.dequantize(), QL.bnb_computed_weight(q))


def test_stored_weight_refuses_corrupt_fields(QL):
    model = nn.Sequential(nn.Linear(128, 64))
    QL.quantize_linears(model, "all-linear")
    QL.to_device(model, "cpu")
    s = QL.read_quant_state(model[0])
    bad = [(dict(packed=s.packed[:-1]), ValueError, "4096 bytes"),
           (dict(packed=s.packed.view(np.int8)), TypeError, "uint8, got int8"),
           (dict(packed=s.packed.astype(np.float32)), TypeError, "uint8, got float32"),
           (dict(absmax=s.absmax.astype(np.float32)), TypeError, "uint8"),
           (dict(absmax2=np.append(s.absmax2, s.absmax2)), ValueError, "block constants"),
           (dict(shape=(64, 130)), ValueError, "bytes for this shape"),
           (dict(offset=float("nan")), ValueError, "finite"),
           (dict(quant_type="int4"), ValueError, "quant_type"),   # used to decode as FP4
           (dict(blocksize=48), ValueError, "blocksize")]
    for change, error, match in bad:
        with pytest.raises(error, match=match):
            dataclasses.replace(s, **change).dequantize()


# ----------------------------------------------------------------------------- memory arithmetic

def test_qlora_memory_and_paging_by_hand_on_an_unseen_shape():
    """qlora_memory_gb and simulate_paging against a hand calculation on a model shape and
    a memory trace no other test uses."""
    S = C.ModelShape("unseen", vocab=32768, hidden=3072, layers=7, heads=24, ffn=8192, max_pos=0,
                     ffn_kind="swiglu", bias=False, norm="rmsnorm", encoder=False, tied_head=False)
    d, L, f, V, r, tokens = 3072, 7, 8192, 32768, 16, 3000
    lin = L * (4 * d * d + 3 * d * f)
    n = 2 * V * d + lin + (2 * L + 1) * d
    lora = L * r * (4 * 2 * d + 2 * (d + f) + (f + d))
    hand = {"base 4-bit": lin * (4 + 8 / 64 + 32 / (64 * 256)) / 8, "base 16-bit": (n - lin) * 2,
            "LoRA weights": 2 * lora, "LoRA gradients": 2 * lora, "Adam states": 8 * lora,
            "activations": tokens * L * d * 2}
    got = C.qlora_memory_gb(S, r=r, tokens=tokens, unit="GiB")
    for k, v in hand.items():
        assert math.isclose(got[k], v / 2**30, rel_tol=1e-12), k
    assert math.isclose(got["qlora_total"], sum(hand.values()) / 2**30, rel_tol=1e-12)
    assert got["full_16bit"] == pytest.approx(12 * n / 2**30, rel=1e-12)
    # capacity 20 pages; weights + grads 7; state 6; activations per step:
    p = C.simulate_paging(20, 5, 2, 6, [1, 8, 10, 14, 2], page=1)
    # room for state = max(20 - 7 - a, 0) = 12, 5, 3, 0, 11 → evicted max(6 - room, 0)
    assert p["evicted"].tolist() == p["fetched"].tolist() == [0, 1, 3, 6, 0]
    assert p["resident_state"].tolist() == [6, 5, 3, 0, 6]
    assert p["oom_unpaged"].tolist() == [False, True, True, True, False]
    assert p["oom_paged"].tolist() == [False, False, False, True, False]


def test_nf4_roundtrip_and_merge_name_the_unknown_code():
    """An unknown code name used to raise a bare KeyError('nf3')."""
    from pedagogy_lib.torch_ref import recipe as R
    W = rng(9).standard_normal((2, 64)).astype(np.float32)
    for call in (lambda: R.nf4_roundtrip(W, code="nf3"), lambda: R.merge_4bit(W, 0 * W, code="NF4")):
        with pytest.raises(KeyError, match="code must be one of"):
            call()
    np.testing.assert_array_equal(R.nf4_roundtrip(W, False, "int4"),
                                  Q.dequantize_4bit(*Q.quantize_4bit(W, Q.int4_codebook()), W.shape,
                                                    Q.int4_codebook()))


def test_plain_decoder_takes_a_negative_absmax_restored_by_double_quantisation():
    """An all-zero block's a = 0 comes back from double quantisation as d[r]·s + μ < 0; the
    readable decoder used to refuse it while the fast one (and bitsandbytes) decode it."""
    r = rng(0)
    w = (r.standard_normal((255, 64)) * np.abs(r.standard_normal((255, 1)))).astype(np.float32)
    w[0] = 0
    p, a = Q.quantize_nf4(w)
    a2 = Q.double_dequantize(*Q.double_quantize(a))
    assert a2.min() < 0
    np.testing.assert_array_equal(Q.dequantize_nf4_plain(p, a2, w.shape), Q.dequantize_nf4(p, a2, w.shape))
    with pytest.raises(ValueError, match="absmax must be >= 0"):
        Q.double_quantize(a2)  # encoding still needs block maxima


@pytest.mark.parametrize("kw", [{"double_quant": "no"}, {"double_quant": 1}, {"dtype": torch.float64}])
def test_quantize_linears_refuses_before_replacing_anything(QL, kw):
    """double_quant="no" used to switch DQ on (a truthy string); a float64 Linear used to be
    replaced first and then fail inside bitsandbytes' .to()."""
    model = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 64)).to(kw.get("dtype", torch.float32))
    before = [type(m) for m in model]
    with pytest.raises(TypeError, match="double_quant|bitsandbytes quantises only"):
        QL.quantize_linears(model, targets=["0", "1"], double_quant=kw.get("double_quant", True))
    assert [type(m) for m in model] == before


def test_merge_4bit_refuses_a_delta_of_another_shape_or_with_nan():
    from pedagogy_lib.torch_ref import recipe as R
    W = rng(10).standard_normal((4, 64)).astype(np.float32)
    for delta in (np.zeros(64), np.zeros((64, 4)), np.full((4, 64), np.nan)):
        with pytest.raises(ValueError, match="delta must be finite"):
            R.merge_4bit(W, delta)
    assert R.merge_4bit(W, np.zeros_like(W))["weight"].shape == W.shape
