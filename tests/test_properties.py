"""Property-based tests (Hypothesis) for the formats and invariants readers rely on:

* 4-bit blockwise quantisation (NF4, FP4, Int4): the error bound of Eq. 7.5 on arbitrary
  shapes, block sizes and values (zeros, all-zero blocks, subnormals, outliers), and
  byte-for-byte agreement with bitsandbytes' quantize_4bit / dequantize_4bit;
* double quantisation: the round-trip bound of Eq. 7.8, and decoding bitsandbytes' own
  double-quantised bytes value-for-value (all-zero blocks included: issue 16, class 2);
* nibble packing: unpack ∘ pack = identity;
* LoRA: unmerge ∘ merge = identity within 2ε(|W| + |s·BA|) per entry (ε of the dtype);
* adapters: save → load is bit-exact; results: save → load gives the data back.

The profile is derandomised (examples are seeded from each test's source, not the clock;
Hypothesis' time-based heuristics can still vary which ones a loaded machine reaches, so
every bound must hold in general, not just on the examples seen here) and every example
has a deadline, so the suite is bounded in time.
"""
import math
import tempfile
import warnings
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.extra import numpy as hnp

from pedagogy_lib import lora, nn, peft_io, quant as Q, results as R
from pedagogy_lib.bert import BertConfig, BertEncoder
from pedagogy_lib.torch_ref import lora as tlora

# Hypothesis caches what it learns in ./.hypothesis; a test run must not write into the
# repository, so its home is a temporary directory, removed when the process ends.
_HOME = tempfile.TemporaryDirectory(prefix="hypothesis-")
set_hypothesis_home_dir(_HOME.name)

settings.register_profile("book", derandomize=True, deadline=timedelta(seconds=2), database=None,
                          max_examples=40, print_blob=False,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("book")

def f32(x):
    """x rounded to float32 (Hypothesis wants bounds that float32 can represent)."""
    return float(np.float32(x))


CODEBOOKS = {"nf4": Q.nf4_codebook(), "fp4": Q.fp4_codebook(), "int4": Q.int4_codebook()}
F32_MAX = float(np.finfo(np.float32).max)


def _bnb():
    return pytest.importorskip("bitsandbytes.functional")


def _bnb_reference_dequantize(packed, absmax, quant_type, blocksize, shape):
    """bitsandbytes' own reference (pure torch) 4-bit decode: code[q]·absmax per block."""
    try:
        from bitsandbytes.backends.default.ops import _dequantize_4bit_compute
        from bitsandbytes.backends.utils import _get_4bit_code
    except ImportError:  # pragma: no cover - a bitsandbytes without the reference path
        pytest.skip("this bitsandbytes has no reference 4-bit decode")
    eager = getattr(_dequantize_4bit_compute, "__wrapped__", _dequantize_4bit_compute)  # not torch.compile'd
    return eager(packed.reshape(-1), absmax, _get_4bit_code(quant_type, "cpu"), blocksize, shape,
                 torch.float32).numpy()


@pytest.fixture(scope="module", autouse=True)
def _warm_bitsandbytes():
    """Import and run bitsandbytes once, so its start-up does not count against a deadline."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import bitsandbytes.functional as F
        except ImportError:  # pragma: no cover
            return
        F.quantize_4bit(torch.ones(64), blocksize=64, quant_type="nf4")


# ----------------------------------------------------------------------------- strategies
def float32s(max_abs=1e30):
    """Finite float32 values: zeros, subnormals, ordinary values and large outliers."""
    return st.one_of(
        st.just(0.0), st.just(-0.0),
        st.floats(f32(-1e-39), f32(1e-39), width=32, allow_subnormal=True),          # subnormals
        st.floats(f32(-4.0), f32(4.0), width=32),
        st.floats(-f32(max_abs), f32(max_abs), width=32, allow_nan=False, allow_infinity=False),
    )


@st.composite
def weights(draw, max_size=700, max_abs=1e30):
    """A float32 weight of arbitrary length, with whole zero runs (all-zero blocks) and
    an optional outlier spliced in."""
    n = draw(st.integers(1, max_size))
    w = draw(hnp.arrays(np.float32, n, elements=float32s(max_abs)))
    if n > 1 and draw(st.booleans()):
        i, j = sorted(draw(st.lists(st.integers(0, n), min_size=2, max_size=2)))
        w[i:j] = 0
    if draw(st.booleans()):
        w[draw(st.integers(0, n - 1))] = draw(st.sampled_from([5.0, -300.0, 1e20]))
    return w


blocksizes = st.sampled_from(Q.BLOCKSIZES)


# ----------------------------------------------------------------------------- 4-bit
@given(weights(), blocksizes, st.sampled_from(sorted(CODEBOOKS)))
def test_4bit_round_trip_error_is_at_most_half_the_widest_gap_times_absmax(w, blocksize, name):
    code = CODEBOOKS[name]
    packed, absmax = Q.quantize_4bit(w, code, blocksize)
    w_hat = Q.dequantize_4bit(packed, absmax, w.shape, code, blocksize)
    assert packed.dtype == np.uint8 and packed.size == -(-w.size // 2)
    assert absmax.size == -(-w.size // blocksize) and (absmax >= 0).all()
    half_gap = np.diff(np.unique(code.astype(np.float64))).max() / 2
    a = np.repeat(absmax.astype(np.float64), blocksize)[: w.size]
    err = np.abs(w.astype(np.float64) - w_hat)
    # |w − ŵ| ≤ a_b·(widest gap)/2, plus float32 rounding of x·(1/a) and c·a. A block whose
    # largest |w| is below bitsandbytes' clamp 1e-38 (subnormal weights) is scaled by 1/1e-38,
    # not 1/a_b, so its codes land near 0: there the bound is |w − ŵ| ≤ a_b.
    bound = np.where(a >= float(Q.TINY), a * (half_gap + 1e-6), a) + 1e-44
    assert (err <= bound).all(), float((err - bound).max())
    assert np.isfinite(w_hat).all()


@given(weights(max_size=600, max_abs=1e6), blocksizes, st.sampled_from(["nf4", "fp4"]))
def test_4bit_bytes_equal_bitsandbytes(w, blocksize, name):
    F = _bnb()
    p, qs = F.quantize_4bit(torch.from_numpy(w.copy()), blocksize=blocksize, quant_type=name,
                            compress_statistics=False)
    packed, absmax = Q.quantize_4bit(w, CODEBOOKS[name], blocksize)
    assert np.array_equal(p.numpy().reshape(-1), packed)
    assert absmax.tobytes() == qs.absmax.numpy().tobytes()


@given(st.integers(1, 6), st.integers(1, 3), blocksizes, st.sampled_from(["nf4", "fp4"]), st.data())
def test_4bit_decoding_equals_bitsandbytes_bit_for_bit(rows, k, blocksize, name, data):
    """Row widths are multiples of 64 (bitsandbytes' native CPU dequantisation disagrees
    with its own reference path otherwise; see the format notes)."""
    F = _bnb()
    w = data.draw(hnp.arrays(np.float32, (rows, 64 * k), elements=float32s(1e6)))
    w[: rows // 2] = 0                                                    # all-zero blocks
    p, qs = F.quantize_4bit(torch.from_numpy(w.copy()), blocksize=blocksize, quant_type=name,
                            compress_statistics=False)
    ours = Q.dequantize_4bit(p.numpy().reshape(-1), qs.absmax.numpy(), w.shape, CODEBOOKS[name], blocksize)
    ref = _bnb_reference_dequantize(p, qs.absmax, name, blocksize, w.shape)
    assert ours.tobytes() == ref.tobytes()                              # bit for bit
    if w.shape[1] % blocksize == 0:  # bnb's native CPU kernel misreads blocks that straddle rows
        assert np.array_equal(ours, F.dequantize_4bit(p, qs).numpy())   # value for value


# ----------------------------------------------------------------------------- double quantisation
@given(hnp.arrays(np.float32, st.integers(1, 1200),
                  elements=st.one_of(st.just(0.0), st.floats(f32(0), f32(1e-30), width=32), st.floats(f32(0), f32(100), width=32))),
       blocksizes)
def test_double_quant_round_trip_bound(absmax, blocksize):
    q, absmax2, offset = Q.double_quantize(absmax, blocksize)
    back = Q.double_dequantize(q, absmax2, offset, blocksize)
    dyn = Q.dynamic_map().astype(np.float64)
    half_gap = np.diff(dyn).max() / 2
    s = np.repeat(absmax2.astype(np.float64), blocksize)[: absmax.size]
    # |a − â| ≤ s_g·(widest gap)/2 plus float32 rounding. A group whose largest centred
    # |a − μ| is below bitsandbytes' clamp 1e-38 is scaled by 1/1e-38, not 1/s_g, so its
    # codes land short of ±1 and decode to ≈ (a − μ)·s_g/1e-38: there add s_g·(1 − s_g/1e-38).
    clamp = np.where(s < float(Q.TINY), s * (1 - s / float(Q.TINY)), 0.0)
    tol = s * (half_gap + 1e-6) + clamp + 4 * np.spacing(np.float32(max(absmax.max(), abs(offset), 1e-38)))
    assert (np.abs(back.astype(np.float64) - absmax) <= tol).all()


@given(st.integers(1, 4), st.sampled_from([32, 64, 128]), st.sampled_from(["nf4", "fp4"]), st.data())
def test_bitsandbytes_double_quantised_bytes_decode_value_for_value(rows, blocksize, name, data):
    """Weights with all-zero rows and one outlier (issue 16's case: a restored absmax can be
    slightly negative; bitsandbytes multiplies by it as is, so do we)."""
    F = _bnb()
    w = data.draw(hnp.arrays(np.float32, (rows * 8, 64), elements=st.floats(f32(-0.1), f32(0.1), width=32)))
    w[data.draw(st.integers(0, rows * 8 - 1))] = 0
    w[: rows * 4] = 0
    w.reshape(-1)[data.draw(st.integers(0, w.size - 1))] = data.draw(st.sampled_from([5.0, -7.5, 40.0]))
    p, qs = F.quantize_4bit(torch.from_numpy(w.copy()), blocksize=blocksize, quant_type=name,
                            compress_statistics=True)
    absmax = Q.double_dequantize(qs.absmax.numpy(), qs.state2.absmax.numpy(), float(qs.offset),
                                 qs.state2.blocksize)
    bnb_absmax = (F.dequantize_blockwise(qs.absmax, qs.state2) + qs.offset).numpy()
    assert absmax.tobytes() == bnb_absmax.tobytes()
    ours = Q.dequantize_4bit(p.numpy().reshape(-1), absmax, w.shape, CODEBOOKS[name], blocksize)
    ref = _bnb_reference_dequantize(p, torch.from_numpy(bnb_absmax), name, blocksize, w.shape)
    assert ours.tobytes() == ref.tobytes()
    # bitsandbytes' native CPU kernel gives the same values where no block straddles two rows;
    # it may write +0.0 where code·(negative a_b) is -0.0, so compare values, not zero signs
    if w.shape[1] % blocksize == 0:
        assert np.array_equal(ours, F.dequantize_4bit(p, qs).numpy())


# ----------------------------------------------------------------------------- nibbles
@given(hnp.arrays(np.uint8, st.integers(0, 300), elements=st.integers(0, 15)))
def test_unpack_of_pack_is_identity(q):
    if q.size == 0:
        assert Q.pack_nibbles(q).size == 0
        return
    packed = Q.pack_nibbles(q)
    assert packed.size == -(-q.size // 2)
    assert np.array_equal(Q.unpack_nibbles(packed, q.size), q)
    assert np.array_equal(packed >> 4, q[0::2])                  # the first code in the high nibble


@given(st.lists(st.integers(-1000, 1000), min_size=1, max_size=20).filter(lambda v: min(v) < 0 or max(v) > 15))
def test_pack_refuses_any_code_outside_four_bits(codes):
    with pytest.raises(ValueError, match=r"\[0, 15\]"):
        Q.pack_nibbles(np.array(codes))


# ----------------------------------------------------------------------------- LoRA
@given(st.integers(1, 9), st.integers(1, 9), st.data(), st.sampled_from([np.float32, np.float64]),
       st.floats(0.125, 512), st.booleans())
def test_unmerge_of_merge_is_identity_within_two_epsilon(d_in, d_out, data, dtype, alpha, rslora):
    r = data.draw(st.integers(1, min(d_in, d_out)))
    vals = st.floats(f32(-10), f32(10), width=32 if dtype == np.float32 else 64)
    base = nn.Linear(d_in, d_out, rng=np.random.default_rng(0), dtype=dtype)
    base.p["weight"][...] = data.draw(hnp.arrays(dtype, (d_out, d_in), elements=vals))
    layer = lora.LoRALinear(base, r, alpha, rslora)
    layer.p["lora_A"][...] = data.draw(hnp.arrays(dtype, (r, d_in), elements=vals))
    layer.p["lora_B"][...] = data.draw(hnp.arrays(dtype, (d_out, r), elements=vals))
    W0 = base.p["weight"].copy()
    dW = np.abs(layer.delta_weight().astype(np.float64))
    layer.merge().unmerge()
    eps = np.finfo(dtype).eps
    assert (np.abs(base.p["weight"] - W0) <= 2 * eps * (np.abs(W0) + dW)).all()
    # the torch twin merges to the same values
    tb = torch.nn.Linear(d_in, d_out, dtype=torch.float64)
    with torch.no_grad():
        tb.weight.copy_(torch.from_numpy(W0.astype(np.float64)))
    tl = tlora.LoRALinear(tb, r, alpha, rslora)
    with torch.no_grad():
        tl.lora_A.copy_(torch.from_numpy(layer.p["lora_A"].astype(np.float64)))
        tl.lora_B.copy_(torch.from_numpy(layer.p["lora_B"].astype(np.float64)))
    tl.merge().unmerge()
    assert (np.abs(tb.weight.detach().numpy() - W0) <= 2 * np.finfo(np.float64).eps * (np.abs(W0) + dW)).all()


TINY = BertConfig(vocab_size=40, hidden_size=12, num_hidden_layers=2, num_attention_heads=3,
                  intermediate_size=20, max_position_embeddings=16)


@settings(max_examples=12)
@given(st.integers(1, 4), st.sampled_from([1, 2.5, 16, 1e6]), st.booleans(),
       st.sampled_from([("query", "value"), ("key",), ("dense",)]), st.data())
def test_adapter_save_then_load_is_bit_exact(r, alpha, rslora, targets, data):
    src = BertEncoder(TINY, seed=1, dtype=np.float32)
    lora.attach_lora(src, targets, r=r, alpha=alpha, rslora=rslora, seed=3)
    for m in lora.lora_layers(src).values():
        for k in ("lora_A", "lora_B"):
            m.p[k][...] = data.draw(hnp.arrays(np.float32, m.p[k].shape, elements=float32s(1.0)))
    dst = BertEncoder(TINY, seed=1, dtype=np.float32)
    with tempfile.TemporaryDirectory() as d:
        peft_io.save_adapter(src, d)
        assert sorted(p.name for p in Path(d).iterdir()) == [peft_io.CONFIG_NAME, peft_io.WEIGHTS_NAME]
        peft_io.load_adapter(dst, d)
    a, b = lora.lora_layers(src), lora.lora_layers(dst)
    assert a.keys() == b.keys()
    for p in a:
        assert (a[p].r, a[p].alpha, a[p].rslora, a[p].scaling) == (b[p].r, b[p].alpha, b[p].rslora, b[p].scaling)
        for k in ("lora_A", "lora_B"):
            assert a[p].p[k].tobytes() == b[p].p[k].tobytes()


# ----------------------------------------------------------------------------- results files
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**62, 2**62),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
json_values = st.recursive(json_scalars, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=6), kids, max_size=4)), max_leaves=20)


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_results_save_then_load_gives_the_data_back(data):
    with tempfile.TemporaryDirectory() as d:
        p = R.save(data, Path(d) / "r.json")
        assert R.load(p, "make x") == data
        assert [x.name for x in Path(d).iterdir()] == ["r.json"]


@given(st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda k: k != "runs"), json_values,
                       min_size=1, max_size=4),
       st.lists(st.dictionaries(st.text(max_size=5), json_scalars, max_size=4), max_size=5))
def test_save_runs_then_load_gives_the_data_back(head, runs):
    data = {**head, "runs": runs}
    with tempfile.TemporaryDirectory() as d:
        assert R.load(R.save_runs(data, Path(d) / "s.json"), "make x") == data


@given(st.dictionaries(st.text(max_size=5), json_values, max_size=3), st.sampled_from([math.nan, math.inf, -math.inf]))
def test_results_with_a_nonfinite_number_are_refused_and_nothing_is_written(data, bad):
    data = {**data, "bad": [1, {"x": bad}]}
    with tempfile.TemporaryDirectory() as d:
        with pytest.raises(ValueError, match=r"at bad\[1\]\.x is NaN/inf"):
            R.save(data, Path(d) / "r.json")
        assert list(Path(d).iterdir()) == []


def test_profile_is_derandomised_and_deadline_bounded():
    s = settings.get_profile("book")
    assert s.derandomize and s.deadline is not None and s.database is None
