"""Unseen inputs for chapter 07's quantisation, the QLoRA recipe's cross-checks and the file
formats (session 11, task b): NF4/FP4 bytes against bitsandbytes on a seeded sweep of sizes and
value patterns no other test draws (one huge outlier, exact code values, fp16/bf16-representable
weights, sizes below one block); double quantisation of equal block maxima; the recipe's NumPy
twin on peft adapters whose layers do not share one (r, α, rsLoRA); flags given as truthy
strings; a float offset beyond float32; peft round trips on target sets the other tests do not
use; export_merged leaving nothing half-written; parameter counts of odd-sized real models."""
import json
import os
import warnings

import numpy as np
import pytest

from pedagogy_lib import counting as C, quant as Q

torch = pytest.importorskip("torch")

from test_unseen_quant import BOOK, F, rng  # noqa: F401 (F: the bitsandbytes.functional fixture)


# ----------------------------------------------------------------------------- 4-bit bytes

def _pattern(kind, n, r):
    """float32 weights of n values drawn in one of the patterns below."""
    w = r.standard_normal(n).astype(np.float32)
    if kind == "one huge outlier":              # one block's scale set by a single value
        w[r.integers(0, n)] = np.float32(1e6)
    elif kind == "one non-zero value":          # every other block all zero
        w[:] = 0
        w[r.integers(0, n)] = -1.0
    elif kind == "exact code values":           # c_k · 2^e with the block max 1: x lands on a level
        code = BOOK["nf4"] if r.random() < 0.5 else BOOK["fp4"]
        w = code[r.integers(0, 16, n)] * np.float32(2.0 ** int(r.integers(-5, 5)))
        w[0] = np.float32(2.0 ** 4)
    elif kind == "fp16-representable":
        w = w.astype(np.float16).astype(np.float32)
    elif kind == "bf16-representable":
        w = torch.from_numpy(w).bfloat16().float().numpy()
    elif kind == "uniform with max 1":
        w = r.uniform(-1, 1, n).astype(np.float32)
        w[0] = 1.0
    elif kind == "negative zeros":
        w = np.where(r.random(n) < 0.5, np.float32(-0.0), w).astype(np.float32)
    return np.ascontiguousarray(w, np.float32)


KINDS = ["one huge outlier", "one non-zero value", "exact code values", "fp16-representable",
         "bf16-representable", "uniform with max 1", "negative zeros"]


@pytest.mark.parametrize("kind", KINDS)
def test_4bit_bytes_on_a_seeded_sweep_of_sizes_equal_bitsandbytes(F, kind):
    """Sizes from 1 to 2999 (odd ones, ones below one block) and random block sizes: packed
    bytes and absmax byte for byte (nf4 and fp4); with double quantisation the packed bytes
    and the restored block maxima (bnb's CPU 8-bit encoder is a lookup table, so compare values)."""
    r = rng(KINDS.index(kind))
    for _ in range(8):
        n, blocksize = int(r.integers(1, 3000)), int(r.choice(Q.BLOCKSIZES[:6]))
        w = _pattern(kind, n, r)
        for name, code in BOOK.items():
            p, s = F.quantize_4bit(torch.from_numpy(w.copy()), blocksize=blocksize, quant_type=name)
            packed, absmax = Q.quantize_4bit(w, code, blocksize)
            np.testing.assert_array_equal(packed, p.numpy().reshape(-1), err_msg=f"{name} n={n} B={blocksize}")
            np.testing.assert_array_equal(absmax, s.absmax.numpy())
        p, s = F.quantize_4bit(torch.from_numpy(w.copy()), blocksize=blocksize, quant_type="nf4",
                               compress_statistics=True)
        packed, absmax = Q.quantize_nf4(w, blocksize)
        np.testing.assert_array_equal(packed, p.numpy().reshape(-1))
        ours = Q.double_dequantize(*Q.double_quantize(absmax))
        theirs = (F.dequantize_blockwise(s.absmax, s.state2) + s.offset).numpy()
        step = np.diff(Q.dynamic_map().astype(np.float64)).max()
        assert np.abs(ours - theirs).max() <= step * np.abs(absmax - absmax.mean()).max() + 1e-6 * absmax.max()


@pytest.mark.parametrize("n_blocks", [1, 255, 256, 300])
def test_double_quantisation_of_equal_block_maxima_restores_them_exactly(F, n_blocks):
    """Every a_b equal: a_b - μ = 0 in every nested block. We store the code of 0 (scale 0 or
    1e-38), bitsandbytes' CPU kernel code 0 with scale 0; both restore μ exactly."""
    w = np.tile(np.concatenate([[np.float32(16)], np.full(63, np.float32(0.5))]), n_blocks)
    _, absmax = Q.quantize_nf4(w)
    q, absmax2, offset = Q.double_quantize(absmax)
    assert offset == 16.0 and (Q.dynamic_map()[q] == 0).all()
    np.testing.assert_array_equal(Q.double_dequantize(q, absmax2, offset), absmax)
    _, s = F.quantize_4bit(torch.from_numpy(w), blocksize=64, quant_type="nf4", compress_statistics=True)
    np.testing.assert_array_equal((F.dequantize_blockwise(s.absmax, s.state2) + s.offset).numpy(), absmax)


def test_double_dequantize_refuses_an_offset_beyond_float32():
    """1e39 is a finite Python float but float32's inf: every a_b came back inf, silently."""
    q, absmax2, _ = Q.double_quantize(np.ones(4, np.float32))
    for offset in (1e39, -3.5e38):
        with pytest.raises(ValueError, match="offset must be finite in float32"):
            Q.double_dequantize(q, absmax2, offset)
    np.testing.assert_array_equal(Q.double_dequantize(q, absmax2, 1.0), np.ones(4, np.float32))


# ----------------------------------------------------------------------------- recipe helpers

@pytest.mark.parametrize("flag", ["no", "False", 1, 0, None, np.bool_(False)])
def test_nf4_roundtrip_and_merge_4bit_refuse_a_flag_that_is_not_a_bool(flag):
    """double_quant="no" switched double quantisation on (a truthy string), 0 and None off."""
    from pedagogy_lib.torch_ref import recipe as R
    W = rng(1).standard_normal((3, 64)).astype(np.float32)
    for call in (lambda: R.nf4_roundtrip(W, flag), lambda: R.merge_4bit(W, 0 * W, double_quant=flag)):
        with pytest.raises(TypeError, match="double_quant must be True or False"):
            call()
    assert not np.array_equal(R.nf4_roundtrip(W, True), R.nf4_roundtrip(W, False))  # the flag matters


@pytest.fixture(scope="module")
def decoder_ckpt():
    pytest.importorskip("peft")
    pytest.importorskip("bitsandbytes")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from pedagogy_lib import decoder_io as IO
    folder = IO.checkpoint_dir()
    cfg, weights, _, _ = IO.read_checkpoint(folder)
    return folder, cfg, weights


@pytest.mark.parametrize("variant", [{"use_rslora": True}, {"alpha_pattern": {"v_proj": 3}},
                                     {"rank_pattern": {"q_proj": 2}, "alpha_pattern": {"up_proj": 5}}])
def test_numpy_twin_takes_each_layers_own_rank_alpha_and_rslora(decoder_ckpt, variant):
    """numpy_twin gave every layer the first layer's r and α without rsLoRA: with use_rslora
    the twin's logits were off by 104 % of their size, with an alpha_pattern by 50 %, and a
    rank_pattern failed in a NumPy broadcast. Now each layer takes its own setting."""
    from peft import LoraConfig, get_peft_model
    from pedagogy_lib.torch_ref import recipe as R
    folder, cfg, weights = decoder_ckpt
    model = R.load_4bit(folder, compute_dtype=torch.float32)
    torch.manual_seed(0)
    pm = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                          init_lora_weights=False, **variant)).eval()
    x = rng(11).integers(1, cfg.vocab_size, (2, 16))
    with torch.no_grad():
        ref = pm(input_ids=torch.from_numpy(x)).logits.float().numpy()
    ours = R.numpy_twin(pm, weights, cfg)
    assert np.abs(ours(x) - ref).max() < 1e-4 * np.abs(ref).max()


def test_numpy_twin_refuses_a_scaling_it_cannot_rebuild(decoder_ckpt):
    """peft's set_scale (or a DoRA layer) gives a function our LoRALinear(r, α, rsLoRA) is not."""
    from peft import LoraConfig, get_peft_model
    from pedagogy_lib.torch_ref import recipe as R
    folder, cfg, weights = decoder_ckpt
    pm = get_peft_model(R.load_4bit(folder, compute_dtype=torch.float32),
                        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"]))
    layer = next(m for n, m in pm.named_modules() if n.endswith("layers.1.self_attn.q_proj"))
    layer.scaling["default"] *= 3
    with pytest.raises(ValueError, match="layers.1.self_attn.q_proj.*scaling"):
        R.numpy_twin(pm, weights, cfg)


# ----------------------------------------------------------------------------- peft files

TINY_KW = dict(vocab_size=40, hidden_size=12, num_hidden_layers=2, num_attention_heads=3,
               intermediate_size=20, max_position_embeddings=16)


def _hf_twin(ours):
    """A transformers BertModel holding our tiny encoder's weights."""
    transformers = pytest.importorskip("transformers")
    hf = transformers.BertModel(transformers.BertConfig(hidden_act="gelu", hidden_dropout_prob=0.0,
                                                        attention_probs_dropout_prob=0.0, **TINY_KW)).eval()
    _, unexpected = hf.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()},
                                       strict=False)
    assert not unexpected
    return hf


@pytest.mark.parametrize("method, targets, extra", [
    ("lora", ("key",), dict(r=1, alpha=3.5)),
    ("lora", ("dense",), dict(r=12, alpha=2)),                                 # r = min(d_in, d_out)
    ("lora", r"encoder\.layer\.1\..*", dict(r=5, alpha=1e-3, rslora=True)),
    ("ia3", ("key", "value", "output.dense"), ("output.dense",)),
    ("ia3", ("query", "intermediate.dense"), ()),
])
def test_unusual_adapters_round_trip_through_peft(tmp_path, method, targets, extra):
    """Ours → peft's PeftModel gives our outputs; peft's save_pretrained → ours again gives them too."""
    peft = pytest.importorskip("peft")
    from pedagogy_lib import ia3, lora, peft_io
    from pedagogy_lib.bert import BertConfig, BertEncoder
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ours = BertEncoder(BertConfig(**TINY_KW), seed=0)
    hf = _hf_twin(ours)
    g = rng(2)
    if method == "lora":
        lora.attach_lora(ours, targets, **extra)
        layers, fmt, name = lora.lora_layers(ours), lora.PEFT_FORMAT, "lora_B"
    else:
        ia3.attach_ia3(ours, targets, extra)
        layers, fmt, name = ia3.ia3_layers(ours), ia3.PEFT_FORMAT, "ia3_l"
    for m in layers.values():
        m.p[name][...] += 0.3 * g.standard_normal(m.p[name].shape)
    peft_io.save_adapter(ours, tmp_path / "ours", fmt=fmt)
    ids = np.array([[1, 5, 7, 9, 2], [3, 4, 6, 0, 0]])
    mask = (ids > 0).astype(np.int64)
    pm = peft.PeftModel.from_pretrained(hf, str(tmp_path / "ours")).eval()
    with torch.no_grad():
        ref = pm(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()
    assert np.abs(ours(ids, mask) - ref).max() <= 1e-5
    pm.save_pretrained(str(tmp_path / "theirs"))
    back = BertEncoder(BertConfig(**TINY_KW), seed=0)
    assert peft_io.load_adapter(back, tmp_path / "theirs", fmt=fmt) == sorted(layers)
    assert np.abs(back(ids, mask) - ref).max() <= 1e-5


@pytest.mark.parametrize("case, match", [
    ("empty file", "not a valid safetensors"), ("truncated", "not a valid safetensors"),
    ("a whole model's weights", "unexpected"), ("float16 lora_A of the wrong shape", "has shape"),
    ("bool tensor", "expected floating point"), ("config without r", "r must be an int"),
    ("config with peft_type missing", "peft_type is None"),
])
def test_foreign_and_broken_adapter_files_are_refused_and_change_nothing(tmp_path, case, match):
    pytest.importorskip("safetensors")
    from safetensors.numpy import load_file, save_file
    from pedagogy_lib import lora, peft_io
    from pedagogy_lib.bert import BertConfig, BertEncoder
    src = BertEncoder(BertConfig(**TINY_KW), seed=0)
    lora.attach_lora(src, ("query",), r=2, alpha=4)
    peft_io.save_adapter(src, tmp_path)
    w, c = tmp_path / peft_io.WEIGHTS_NAME, tmp_path / peft_io.CONFIG_NAME
    key = "base_model.model.encoder.layer.0.attention.self.query.lora_A.weight"
    tensors, cfg = load_file(str(w)), json.loads(c.read_text())
    if case == "empty file":
        w.write_bytes(b"")
    elif case == "truncated":
        w.write_bytes(w.read_bytes()[:-7])
    elif case == "a whole model's weights":
        save_file({k: np.ascontiguousarray(v) for k, v in BertEncoder(BertConfig(**TINY_KW)).state_dict().items()}, str(w))
    elif case == "float16 lora_A of the wrong shape":
        save_file({**tensors, key: np.ones((12, 2), np.float16)}, str(w))
    elif case == "bool tensor":
        save_file({**tensors, key: np.ones((2, 12), bool)}, str(w))
    elif case == "config without r":
        c.write_text(json.dumps({k: v for k, v in cfg.items() if k != "r"}))
    elif case == "config with peft_type missing":
        c.write_text(json.dumps({k: v for k, v in cfg.items() if k != "peft_type"}))
    dst = BertEncoder(BertConfig(**TINY_KW), seed=0)
    before = {k: v.copy() for k, v in dst.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        peft_io.load_adapter(dst, tmp_path)
    after = dst.state_dict()
    assert not lora.lora_layers(dst) and sorted(after) == sorted(before)
    assert all(np.array_equal(after[k], before[k]) for k in before)


# ----------------------------------------------------------------------------- export

def test_export_merged_leaves_nothing_half_written(tmp_path):
    """config.json could not be written (here: a directory of that name), after model.safetensors
    had been: a weights file without its config stayed behind. Now both or neither; an earlier
    export in the same directory keeps its bytes."""
    from pedagogy_lib import export, lora
    from pedagogy_lib.bert import BertConfig, BertEncoder
    enc = BertEncoder(BertConfig(**TINY_KW), seed=5)
    lora.attach_lora(enc, ("query",), r=2, alpha=4)
    out = tmp_path / "out"
    (out / export.CONFIG_NAME).mkdir(parents=True)
    with pytest.raises(OSError):
        export.export_merged(enc, out)
    assert sorted(p.name for p in out.iterdir()) == [export.CONFIG_NAME]
    assert not any((out / export.CONFIG_NAME).iterdir())
    good = tmp_path / "good"
    export.export_merged(enc, good)
    old = {p.name: p.read_bytes() for p in good.iterdir()}
    lora.lora_layers(enc)["encoder.layer.0.attention.self.query"].p["lora_B"][...] = 1.0
    (good / export.CONFIG_NAME).unlink()
    (good / export.CONFIG_NAME).mkdir()     # the second file cannot be written this time
    with pytest.raises(OSError):
        export.export_merged(enc, good)
    assert (good / export.WEIGHTS_NAME).read_bytes() == old[export.WEIGHTS_NAME]
    assert sorted(p.name for p in good.iterdir()) == sorted(old)


def test_export_merged_into_a_file_path_names_it(tmp_path):
    from pedagogy_lib import export, lora
    from pedagogy_lib.bert import BertConfig, BertEncoder
    enc = BertEncoder(BertConfig(**TINY_KW), seed=5)
    lora.attach_lora(enc, ("query",), r=2, alpha=4)
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match="exists and is not a directory"):
        export.export_merged(enc, tmp_path / "f")
    assert (tmp_path / "f").read_text() == "x"


# ----------------------------------------------------------------------------- counting

def test_counts_of_odd_sized_real_models_equal_the_formulas():
    """Sizes that are no multiple of anything, biases on and off, tied and untied heads."""
    T = pytest.importorskip("transformers")
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        bert = T.BertModel(T.BertConfig(vocab_size=101, hidden_size=35, num_hidden_layers=3, num_attention_heads=7,
                                        intermediate_size=53, max_position_embeddings=17, type_vocab_size=3))
        assert n(bert) == C.total_params(C.ModelShape("b", 101, 35, 3, 7, 53, 17, 3))
        for tied in (True, False):
            for bias in (True, False):
                llama = T.LlamaForCausalLM(T.LlamaConfig(
                    vocab_size=97, hidden_size=36, intermediate_size=50, num_hidden_layers=3, num_attention_heads=3,
                    num_key_value_heads=3, tie_word_embeddings=tied, attention_bias=bias, mlp_bias=bias))
                shape = C.ModelShape("l", 97, 36, 3, 3, 50, 0, ffn_kind="swiglu", bias=bias, norm="rmsnorm",
                                     encoder=False, tied_head=tied)
                assert n(llama) == C.total_params(shape), (tied, bias)
        gpt2 = T.GPT2LMHeadModel(T.GPT2Config(vocab_size=91, n_embd=30, n_layer=2, n_head=5, n_positions=13,
                                              n_inner=47, bos_token_id=0, eos_token_id=0))
        assert n(gpt2) == C.total_params(C.ModelShape("g", 91, 30, 2, 5, 47, 13, encoder=False))
