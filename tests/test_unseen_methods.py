"""Unseen inputs for the PEFT methods and their peft files (session 9, task U2).

Each method's backward against torch autograd on shapes the other tests do not use (batch 1,
one token, r = 1 and r = min(d_in, d_out), non-square layers, prefix length 1, padded masks),
in float64 and float32 (dtype kept); merge cycles; and the refusals added here: an IA³ merge
that overflows or underflows, peft LoRA configs describing another function (LoRA variants,
a bad lora_dropout, layers_to_transform=0), unchecked seeds and flags, a soft prompt with no
position left for a token. Each refusal leaves the model (or the layer) as it was.
"""
import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from pedagogy_lib import adapters, dora, ia3, lora, peft_io
from pedagogy_lib import prefix as px
from pedagogy_lib import prompt as pt
from pedagogy_lib.bert import BertConfig, BertEncoder
from pedagogy_lib.nn import Linear
from pedagogy_lib.torch_ref import adapters as tad
from pedagogy_lib.torch_ref import dora as tdora
from pedagogy_lib.torch_ref import ia3 as tia3
from pedagogy_lib.torch_ref import lora as tlora
from pedagogy_lib.torch_ref import prefix as tpx
from pedagogy_lib.torch_ref import prompt as tpt
from pedagogy_lib.torch_ref.encoder import build_encoder
from twin_checks import assert_twin_matches, tiny_config, tiny_encoder, torch_twin

TINY = BertConfig(vocab_size=40, hidden_size=12, num_hidden_layers=2, num_attention_heads=3,
                  intermediate_size=20, max_position_embeddings=16)
DTYPES = [(np.float64, torch.float64, 1e-11), (np.float32, torch.float32, 2e-5)]


def twin_linear(lin, tdtype):
    t = torch.nn.Linear(lin.d_in, lin.d_out).to(tdtype)
    with torch.no_grad():
        t.weight.copy_(torch.from_numpy(lin.p["weight"]))
        t.bias.copy_(torch.from_numpy(lin.p["bias"]))
    return t


def set_both(layer, tlayer, rng, low=-1.0, high=1.0):
    """Random values for every trainable tensor, the same in the NumPy layer and its twin."""
    for name, v in layer.p.items():
        v[...] = rng.uniform(low, high, v.shape)
        with torch.no_grad():
            getattr(tlayer, name).copy_(torch.from_numpy(v))


def check_against_autograd(layer, tlayer, x, dtype, tol):
    """Output, dx and every parameter gradient of the NumPy layer equal torch autograd's; the
    NumPy side keeps the dtype everywhere."""
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    y, yt = layer(x), tlayer(xt)
    dy = np.random.default_rng(9).standard_normal(y.shape).astype(dtype)
    (yt * torch.from_numpy(dy)).sum().backward()
    dx = layer.backward(dy)
    assert y.dtype == dx.dtype == dtype and dx.shape == x.shape
    assert np.abs(y - yt.detach().numpy()).max() < tol
    assert np.abs(dx - xt.grad.numpy()).max() < tol
    tgrads = dict(tlayer.named_parameters())
    for name, g in layer.named_grads():
        assert g is not None and g.dtype == dtype, name
        assert np.abs(g - tgrads[name].grad.numpy()).max() < tol, name


SHAPES = [((1,), 5, 3), ((1, 1), 3, 5), ((2, 3), 7, 1), ((), 4, 4)]  # (leading dims of x, d_in, d_out)


# ----------------------------------------------------------------------------- backward vs autograd
@pytest.mark.parametrize("dtype,tdtype,tol", DTYPES)
@pytest.mark.parametrize("kind", ["lora", "rslora", "dora-detached", "dora-exact"])
def test_lora_and_dora_backward_equal_autograd_on_unseen_shapes(kind, dtype, tdtype, tol):
    rng = np.random.default_rng(0)
    for lead, d_in, d_out in SHAPES:
        for r in sorted({1, min(d_in, d_out)}):
            base = Linear(d_in, d_out, rng=np.random.default_rng(1), dtype=dtype)
            tbase = twin_linear(base, tdtype)
            if kind.startswith("dora"):
                exact = kind == "dora-exact"
                layer = dora.DoRALinear(base, r, 3.0, detach_norm=not exact)
                tlayer = tdora.DoRALinear(tbase, r, 3.0, detach_norm=not exact)
            else:
                layer = lora.LoRALinear(base, r, 3.0, rslora=kind == "rslora")
                tlayer = tlora.LoRALinear(tbase, r, 3.0, rslora=kind == "rslora")
            set_both(layer, tlayer, rng, 0.5, 1.5)
            check_against_autograd(layer, tlayer, rng.standard_normal(lead + (d_in,)).astype(dtype), dtype, tol)


@pytest.mark.parametrize("dtype,tdtype,tol", DTYPES)
def test_ia3_and_adapter_backward_equal_autograd_on_unseen_shapes(dtype, tdtype, tol):
    rng = np.random.default_rng(1)
    for lead, d_in, d_out in SHAPES:
        for ff in (False, True):
            base = Linear(d_in, d_out, rng=np.random.default_rng(1), dtype=dtype)
            layer, tlayer = ia3.IA3Linear(base, ff), tia3.IA3Linear(twin_linear(base, tdtype), ff)
            set_both(layer, tlayer, rng, 0.5, 2.0)
            check_against_autograd(layer, tlayer, rng.standard_normal(lead + (d_in,)).astype(dtype), dtype, tol)
        d, m = d_in, d_out  # a bottleneck wider than d (d_out > d_in) and m = 1 included
        for act in adapters.ACTIVATIONS:
            for cls, tcls, kw in ((adapters.Adapter, tad.Adapter, {}),
                                  (adapters.ParallelAdapter, tad.ParallelAdapter, {"scale": 2.5})):
                layer = cls(d, m, act, init_scale=0.5, rng=np.random.default_rng(3), dtype=dtype, **kw)
                tlayer = tcls(d, m, act, init_scale=0.5, **kw).to(tdtype)
                tad.copy_from_numpy(tlayer, layer)
                check_against_autograd(layer, tlayer, rng.standard_normal(lead + (d,)).astype(dtype), dtype, tol)


def one_token_and_padded(vocab):
    rng = np.random.default_rng(5)
    yield rng.integers(0, vocab, (1, 1)), np.ones((1, 1), np.int64)
    mask = np.ones((3, 5), np.int64)
    mask[0, 1:] = 0  # one real token, then padding
    mask[1, 3:] = 0
    yield rng.integers(0, vocab, (3, 5)), mask


@pytest.mark.parametrize("kind", ["prefix", "prefix-mlp", "prompt", "prompt-vocab", "deep"])
def test_virtual_tokens_of_length_one_equal_autograd_with_one_token_and_padding(kind):
    cfg = tiny_config(16)
    for ids, mask in one_token_and_padded(cfg.vocab_size):
        net = tiny_encoder(cfg)
        tnet = torch_twin(net)
        tnet.load_state_dict({k: torch.from_numpy(v) for k, v in net.state_dict().items()})
        for mod, model in ((px if kind.startswith("prefix") else pt, net),
                           (tpx if kind.startswith("prefix") else tpt, tnet)):
            if kind == "prefix":
                mod.attach_prefix(model, 1, seed=3)
            elif kind == "prefix-mlp":
                mod.attach_prefix(model, 1, reparam=1, d_embed=3, seed=3)
            elif kind == "deep":
                mod.attach_deep_prompt(model, 1, seed=3, std=0.5)
            else:
                mod.attach_prompt(model, 1, init="vocab" if kind == "prompt-vocab" else "random", seed=3)
        ours, theirs = net.state_dict(), tnet.state_dict()
        assert ours.keys() == theirs.keys() and all(np.array_equal(ours[k], theirs[k].numpy()) for k in ours)
        assert_twin_matches(net, tnet, ids, mask, 1e-12, 1e-11)


# ----------------------------------------------------------------------------- merge cycles
@pytest.mark.parametrize("kind", ["lora", "dora", "ia3-out", "ia3-in"])
def test_merge_unmerge_merge_cycles_keep_the_function_and_the_twins_equal(kind):
    rng = np.random.default_rng(2)
    base = Linear(5, 3, rng=np.random.default_rng(1), dtype=np.float64)
    tbase = twin_linear(base, torch.float64)
    layer, tlayer = {"lora": lambda: (lora.LoRALinear(base, 3, 2.0), tlora.LoRALinear(tbase, 3, 2.0)),
                     "dora": lambda: (dora.DoRALinear(base, 1, 2.0), tdora.DoRALinear(tbase, 1, 2.0)),
                     "ia3-out": lambda: (ia3.IA3Linear(base), tia3.IA3Linear(tbase)),
                     "ia3-in": lambda: (ia3.IA3Linear(base, True), tia3.IA3Linear(tbase, True))}[kind]()
    set_both(layer, tlayer, rng, 0.5, 1.5)
    x = rng.standard_normal((1, 5))
    y0, W0 = layer(x), base.p["weight"].copy()
    for _ in range(3):
        for m in (layer, tlayer):
            m.merge()
        W = base.p["weight"].copy()
        assert np.abs(layer(x) - y0).max() < 1e-12
        assert np.abs(tlayer(torch.from_numpy(x)).detach().numpy() - y0).max() < 1e-12
        assert np.abs(tbase.weight.detach().numpy() - W).max() < 1e-12
        for m in (layer, tlayer):
            with pytest.raises(RuntimeError, match="already merged"):
                m.merge()
        assert np.array_equal(base.p["weight"], W)
        for m in (layer, tlayer):
            m.unmerge()
            with pytest.raises(RuntimeError, match="not merged"):
                m.unmerge()
        assert np.abs(base.p["weight"] - W0).max() < 1e-12 and np.abs(layer(x) - y0).max() < 1e-12


@pytest.mark.parametrize("feedforward", [False, True])
@pytest.mark.parametrize("l", [1e38, 1e-44])
def test_ia3_merge_that_overflows_or_underflows_is_refused_and_w_kept(feedforward, l):
    """float32: 10·1e38 overflows to inf, 10·1e-44 underflows; either way W₀ could never be
    divided out again (before the fix merge wrote inf or lost W₀'s bits, and unmerge kept them)."""
    base = Linear(3, 2, dtype=np.float32)
    base.p["weight"][...], base.p["bias"][...] = 10.0, 10.0
    tbase = twin_linear(base, torch.float32)
    layer, tlayer = ia3.IA3Linear(base, feedforward), tia3.IA3Linear(tbase, feedforward)
    layer.p["ia3_l"][...] = l
    with torch.no_grad():
        tlayer.ia3_l.fill_(l)
    before = {k: v.copy() for k, v in base.p.items()}
    with pytest.raises(ValueError, match="overflow or underflow"):
        layer.merge()
    with pytest.raises(ValueError, match="overflow or underflow"):
        tlayer.merge()
    assert not layer.merged and not tlayer.merged
    assert all(np.array_equal(base.p[k], before[k]) for k in before)
    assert torch.equal(tbase.weight, torch.from_numpy(before["weight"]))


def test_ia3_merge_all_is_all_or_none_when_one_layer_would_underflow():
    net = BertEncoder(TINY, seed=0)
    ia3.attach_ia3(net)
    layers = ia3.ia3_layers(net)
    last = list(layers.values())[-1]
    last.p["ia3_l"][...] = 1e-44  # only the last layer underflows: the first ones must not be merged
    before = {k: v.copy() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match="overflow or underflow"):
        ia3.merge_all(net)
    assert not any(m.merged for m in layers.values())
    assert all(np.array_equal(v, before[k]) for k, v in net.state_dict().items())


# ----------------------------------------------------------------------------- checked arguments
def snapshot(model):
    return ({k: v.copy() for k, v in model.state_dict().items()},
            [(p, type(m).__name__, sorted(m.frozen)) for p, m in model.named_modules()])


def tsnapshot(model):
    return ({k: v.detach().clone() for k, v in model.state_dict().items()},
            [(n, p.requires_grad) for n, p in model.named_parameters()], repr(model))


def same(a, b):
    return a[0].keys() == b[0].keys() and all(np.array_equal(a[0][k], b[0][k]) for k in a[0]) and a[1] == b[1]


def tsame(a, b):
    return a[0].keys() == b[0].keys() and all(torch.equal(a[0][k], b[0][k]) for k in a[0]) and a[1:] == b[1:]


@pytest.mark.parametrize("call,err,match", [
    (lambda m: ia3.attach_ia3(m, freeze_base="no"), TypeError, "freeze_base"),
    (lambda m: pt.load_prompt(m, np.zeros((17, 12))), ValueError, "leaves no position"),
])
def test_numpy_arguments_are_checked_before_the_model_changes(call, err, match):
    net = BertEncoder(TINY, seed=0)
    before = snapshot(net)
    with pytest.raises(err, match=match):
        call(net)
    assert same(before, snapshot(net))


@pytest.mark.parametrize("call,err,match", [
    (lambda m: tad.attach_adapters(m, "houlsby", 2, seed=-1), ValueError, "seed"),  # torch's manual_seed took it
    (lambda m: tad.attach_adapters(m, "parallel", 2, seed=True), TypeError, "seed"),
    (lambda m: tia3.attach_ia3(m, freeze_base="no"), TypeError, "freeze_base"),
])
def test_torch_arguments_are_checked_before_the_model_changes(call, err, match):
    net = build_encoder(TINY, None, dtype=torch.float32, device="cpu")
    before = tsnapshot(net)
    with pytest.raises(err, match=match):
        call(net)
    assert tsame(before, tsnapshot(net))


@pytest.mark.parametrize("load", [lambda m: px.load_prefix(m, np.full((2, 2, 1, 12), 1e39)),
                                  lambda m: pt.load_prompt(m, np.full((1, 12), 1e39))])
def test_float64_virtual_tokens_beyond_float32_are_refused_before_the_model_changes(load):
    """Finite in float64, inf in the float32 model: load_prefix used to freeze the model and then
    fail; load_prompt installed an inf prompt."""
    net = BertEncoder(TINY, seed=0)
    before = snapshot(net)
    with pytest.raises(ValueError, match="cast to the model's float32: contains .* NaN/inf"):
        load(net)
    assert same(before, snapshot(net)) and net.embeddings.prompt is None


@pytest.mark.parametrize("shape", [(0, 12), (2, 0)])
def test_from_peft_layout_names_an_empty_table(shape):
    with pytest.raises(ValueError, match="prompt_embeddings must be"):
        px.from_peft_layout(np.zeros(shape), 3)


def test_a_loaded_prompt_that_leaves_one_position_still_runs():
    net = pt.load_prompt(BertEncoder(TINY, seed=0), np.zeros((15, 12)))
    assert net(np.array([[3]]), np.array([[1]])).shape == (1, 16, 12)


# ----------------------------------------------------------------------------- peft configs
def saved_tiny(tmp_path, method=lora):
    bert = BertEncoder(TINY, seed=0)
    (lora.attach_lora if method is lora else dora.attach_dora)(bert, ("query", "value"), r=2, alpha=4)
    for m in (lora.lora_layers if method is lora else dora.dora_layers)(bert).values():
        m.p["lora_B"][...] = 0.1
    peft_io.save_adapter(bert, tmp_path, fmt=method.PEFT_FORMAT)
    return bert


@pytest.mark.parametrize("change,match", [
    ({"alora_invocation_tokens": [5, 6]}, "alora_invocation_tokens"),   # the update only after these tokens
    ({"arrow_config": {"top_k": 2}}, "arrow_config"),
    ({"kasa_config": {}}, "kasa_config"),                                # {} is an active KaSA config in peft
    ({"use_bdlora": {"nblocks": 2}}, "use_bdlora"),
    ({"monteclora_config": {}}, "monteclora_config"),
    ({"layer_replication": [[0, 2], [1, 2]]}, "layer_replication"),
    ({"lora_dropout": "0.1"}, "lora_dropout"),
    ({"lora_dropout": 1.5}, "lora_dropout"),
    ({"lora_dropout": None}, "lora_dropout"),
    ({"layers_to_transform": 0}, "layers_to_transform"),                 # peft reads 0 as [0]
])
@pytest.mark.parametrize("method", [lora, dora])  # DoRA files are read by LoRA's rules too
def test_peft_lora_configs_of_another_function_are_refused(tmp_path, change, match, method):
    saved_tiny(tmp_path, method)
    cfg = json.loads((tmp_path / peft_io.CONFIG_NAME).read_text())
    cfg.update(change)
    (tmp_path / peft_io.CONFIG_NAME).write_text(json.dumps(cfg))
    bert = BertEncoder(TINY, seed=0)
    before = snapshot(bert)
    with pytest.raises(ValueError, match=match):
        peft_io.load_adapter(bert, tmp_path, fmt=method.PEFT_FORMAT)
    assert same(before, snapshot(bert))


@pytest.mark.parametrize("change", [{"lora_dropout": 0.05}, {"lora_dropout": 1}, {"layer_replication": None},
                                    {"alora_invocation_tokens": None, "use_bdlora": None, "kasa_config": None},
                                    {"layers_to_transform": []}])
def test_peft_lora_configs_peft_writes_still_load(tmp_path, change):
    src = saved_tiny(tmp_path)
    cfg = json.loads((tmp_path / peft_io.CONFIG_NAME).read_text())
    cfg.update(change)
    (tmp_path / peft_io.CONFIG_NAME).write_text(json.dumps(cfg))
    dst = BertEncoder(TINY, seed=0)
    peft_io.load_adapter(dst, tmp_path)
    ids, mask = np.array([[1, 2, 3]]), np.ones((1, 3), np.int64)
    assert np.array_equal(src(ids, mask), dst(ids, mask))


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("method,key", [(lora, "attention.self.query.lora_A.weight"),
                                        (dora, "attention.self.value.lora_magnitude_vector"),
                                        (ia3, "attention.self.key.ia3_l")])
def test_float64_file_values_beyond_the_float32_model_are_refused(tmp_path, method, key, backend):
    """1e39 is finite in a float64 file but inf in the float32 model: before the fix it loaded,
    and every output was NaN."""
    from safetensors.numpy import save_file

    bert = BertEncoder(TINY, seed=0)
    {lora: lora.attach_lora, dora: dora.attach_dora, ia3: ia3.attach_ia3}[method](bert)
    peft_io.save_adapter(bert, tmp_path, dtype=np.float64, fmt=method.PEFT_FORMAT)
    w = load_file(str(tmp_path / peft_io.WEIGHTS_NAME))
    k = f"{peft_io.PREFIX}encoder.layer.0.{key}"
    w[k] = np.full_like(w[k], 1e39)
    save_file(w, str(tmp_path / peft_io.WEIGHTS_NAME), metadata={"format": "pt"})
    if backend == "numpy":
        model, snap, eq = BertEncoder(TINY, seed=0), snapshot, same
    else:
        model, snap, eq = build_encoder(TINY, None, dtype=torch.float32, device="cpu"), tsnapshot, tsame
    before = snap(model)
    with pytest.raises(ValueError, match="would load as inf"):
        peft_io.load_adapter(model, tmp_path, fmt=method.PEFT_FORMAT)
    assert eq(before, snap(model))


NESTED = r"(\w+\.)+output\.dense"  # fast here, but the shape of (.+)+z, which made re.fullmatch hang


def test_ia3_feedforward_regex_is_bounded_in_files_and_in_attach(tmp_path):
    """target_modules regexes were bounded (checks.bounded_regex), feedforward_modules were not:
    a hostile adapter_config.json with "(.+)+z" hung the loader."""
    bert = BertEncoder(TINY, seed=0)
    before = snapshot(bert)
    with pytest.raises(ValueError, match="nests a repeat"):
        ia3.attach_ia3(bert, feedforward=NESTED)
    assert same(before, snapshot(bert))
    ia3.attach_ia3(bert)
    peft_io.save_adapter(bert, tmp_path, fmt=ia3.PEFT_FORMAT)
    cfg = json.loads((tmp_path / peft_io.CONFIG_NAME).read_text())
    cfg["feedforward_modules"] = NESTED
    (tmp_path / peft_io.CONFIG_NAME).write_text(json.dumps(cfg))
    fresh = BertEncoder(TINY, seed=0)
    before = snapshot(fresh)
    with pytest.raises(ValueError, match="feedforward regex.*nests a repeat"):
        peft_io.load_adapter(fresh, tmp_path, fmt=ia3.PEFT_FORMAT)
    assert same(before, snapshot(fresh))


@pytest.mark.parametrize("tdtype", [torch.bfloat16, torch.float8_e4m3fn, torch.float16])
def test_narrow_float_adapter_files_load_as_float32(tmp_path, tdtype):
    """peft saves adapters in the training dtype (often bf16): NumPy's safetensors loader raises
    TypeError for bf16, which skipped the torch fallback meant for it."""
    from safetensors.torch import load_file as tload, save_file as tsave

    src = saved_tiny(tmp_path)
    w = tload(str(tmp_path / peft_io.WEIGHTS_NAME))
    narrow = {k: v.to(tdtype) for k, v in w.items()}
    tsave(narrow, str(tmp_path / peft_io.WEIGHTS_NAME), metadata={"format": "pt"})
    dst = BertEncoder(TINY, seed=0)
    peft_io.load_adapter(dst, tmp_path)
    for path, m in lora.lora_layers(dst).items():
        for name in ("lora_A", "lora_B"):
            want = narrow[f"{peft_io.PREFIX}{path}.{name}.weight"].float().numpy()
            assert m.p[name].dtype == np.float32 and np.array_equal(m.p[name], want)
    assert lora.lora_layers(src).keys() == lora.lora_layers(dst).keys()


def test_a_bf16_torch_model_saves_and_loads_its_adapter(tmp_path):
    """torch's .numpy() has no bfloat16: save_adapter failed with 'unsupported ScalarType BFloat16'."""
    src = build_encoder(TINY, None, dtype=torch.bfloat16, device="cpu")
    tlora.attach_lora(src, r=2, alpha=4)
    with torch.no_grad():
        for m in tlora.lora_layers(src).values():
            m.lora_B.fill_(0.375)
    peft_io.save_adapter(src, tmp_path)
    dst = build_encoder(TINY, None, dtype=torch.bfloat16, device="cpu")
    assert peft_io.load_adapter(dst, tmp_path) == sorted(tlora.lora_layers(src))
    for p, m in tlora.lora_layers(dst).items():
        assert torch.equal(m.lora_A, tlora.lora_layers(src)[p].lora_A) and bool((m.lora_B == 0.375).all())


def test_a_bf16_torch_model_has_a_merged_state():
    """export.merged_state called torch's .numpy() on bfloat16 tensors too."""
    from pedagogy_lib import export

    model = build_encoder(TINY, None, dtype=torch.bfloat16, device="cpu")
    tlora.attach_lora(model, r=2, alpha=4)
    W = model.encoder.layer[0].attention.self.query.base_layer.weight.float().numpy()
    state = export.merged_state(model)
    assert np.array_equal(state["encoder.layer.0.attention.self.query.weight"], W)  # B = 0: W₀ exactly
    assert all(v.dtype == np.float32 for v in state.values())


# ----------------------------------------------------------------------------- HF peft round trips
def test_round_trips_with_hf_peft_for_unused_ranks_alphas_and_targets(tmp_path):
    """Ours → peft with r = 1, a fractional α and targets the other tests do not use; peft → ours
    (NumPy and torch) with r = 1, α = 3 on ["key", "dense"]: the same embeddings."""
    peft = pytest.importorskip("peft")
    pytest.importorskip("transformers")
    from pedagogy_lib import models
    from pedagogy_lib.torch_ref.encoder import load_minilm_torch
    from test_peft_io import hf_base, hf_embed  # sentence-transformers' pooling, written once

    texts = ["a lovely, quiet morning", "horrible", "ok"]

    ours = models.load_minilm("numpy")
    lora.attach_lora(ours.bert, ("key", "intermediate.dense"), r=1, alpha=0.5, seed=4)
    g = np.random.default_rng(0)
    for m in lora.lora_layers(ours.bert).values():
        m.p["lora_B"][...] = 0.05 * g.standard_normal(m.p["lora_B"].shape)
    peft_io.save_adapter(ours, tmp_path / "ours")
    assert json.loads((tmp_path / "ours" / peft_io.CONFIG_NAME).read_text())["lora_alpha"] == 0.5
    hf = peft.PeftModel.from_pretrained(hf_base(), str(tmp_path / "ours")).eval()
    assert np.abs(ours.encode(texts) - hf_embed(hf, ours.tokenizer, texts)).max() < 1e-5
    assert np.abs(ours.encode(texts) - hf_embed(hf_base(), ours.tokenizer, texts)).max() > 1e-4  # it matters

    torch.manual_seed(0)
    cfg = peft.LoraConfig(r=1, lora_alpha=3, target_modules=["key", "dense"], init_lora_weights=False)
    pm = peft.get_peft_model(hf_base(), cfg).eval()
    pm.save_pretrained(str(tmp_path / "theirs"))
    ref = hf_embed(pm, ours.tokenizer, texts)
    for model in (models.load_minilm("numpy"), load_minilm_torch(device="cpu")):
        assert len(peft_io.load_adapter(model, tmp_path / "theirs")) == 6 * 4  # pooler.dense skipped
        assert np.abs(model.encode(texts) - ref).max() < 1e-5
    w = load_file(str(tmp_path / "theirs" / peft_io.WEIGHTS_NAME))
    assert w["base_model.model.encoder.layer.0.attention.self.key.lora_A.weight"].shape == (1, 384)


@pytest.mark.parametrize("m", [16, 17])
def test_attach_prompt_that_leaves_no_position_is_refused_before_freezing(m):
    """m ≥ max_position_embeddings used to freeze the model and install a prompt no forward could run."""
    net = BertEncoder(TINY, seed=0)
    before = snapshot(net)
    with pytest.raises(ValueError, match="leaves no position for a token"):
        pt.attach_prompt(net, m)
    assert same(before, snapshot(net)) and net.embeddings.prompt is None
    tnet = build_encoder(TINY, net.state_dict())
    tbefore = tsnapshot(tnet)
    with pytest.raises(ValueError, match="leaves no position for a token"):
        tpt.attach_prompt(tnet, m)
    assert tsame(tbefore, tsnapshot(tnet)) and tnet.embeddings.prompt is None


@pytest.mark.parametrize("kw", [{"seed": -1}, {"seed": True}, {"freeze_base": "x"}, {"freeze_base": 1}])
def test_attach_adapters_checks_seed_and_freeze_base_before_changing_the_model(kw):
    """NumPy's attach_adapters used to take seed=True and freeze_base="x" (freezing anyway), and
    seed=-1 failed inside NumPy without naming the argument."""
    net = BertEncoder(TINY, seed=0)
    before = snapshot(net)
    with pytest.raises((TypeError, ValueError), match="seed|freeze_base"):
        adapters.attach_adapters(net, "houlsby", 4, **kw)
    assert same(before, snapshot(net))
    tnet = build_encoder(TINY, net.state_dict())
    tbefore = tsnapshot(tnet)
    with pytest.raises((TypeError, ValueError), match="seed|freeze_base"):
        tad.attach_adapters(tnet, "houlsby", 4, **kw)
    assert tsame(tbefore, tsnapshot(tnet))


@pytest.mark.parametrize("call", [lambda: lora.scaling(8, 16, rslora="yes"),
                                  lambda: ia3.IA3Linear(Linear(3, 4), feedforward=1),
                                  lambda: dora.DoRALinear(Linear(3, 4), r=2, alpha=4, detach_norm="no")])
def test_flags_take_only_true_or_false(call):
    with pytest.raises(TypeError, match="must be True or False"):
        call()
