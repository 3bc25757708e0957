"""DoRA (chapter 02, §11): finite differences for both backward modes, W' = W₀ at init,
merge/unmerge, bad input, the count, NumPy ↔ torch equality, and HF peft (embeddings,
one step's gradients, and its adapter files both ways)."""
import json

import numpy as np
import pytest
import torch

from pedagogy_lib import checkpoint, counting, dora, lora, models, nn, peft_io
from pedagogy_lib.gradcheck import check_module, compare, numerical_grad, rel_error
from pedagogy_lib.torch_ref import dora as tdora
from pedagogy_lib.torch_ref.encoder import load_minilm_torch

SENTENCES = ["a lovely, quiet morning", "horrible", "ok then", "DoRA rescales each row of W"]
MAG = dora.MAGNITUDE


def layer64(detach_norm, d_in=7, d_out=5, r=3, seed=1):
    """A float64 DoRA layer as after some training: B ≠ 0 and m ≠ ‖W₀‖."""
    g = np.random.default_rng(seed)
    layer = dora.DoRALinear(nn.Linear(d_in, d_out, rng=g, dtype=np.float64), r, 5.0, rng=g,
                            detach_norm=detach_norm)
    layer.p["lora_B"][...] = 0.3 * g.standard_normal((d_out, r))
    layer.p[MAG] *= 1 + 0.2 * g.standard_normal(d_out)
    return layer


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("shape", [(6, 7), (2, 3, 7)])
def test_exact_backward_matches_finite_differences(shape):
    layer = layer64(detach_norm=False)
    x = np.random.default_rng(3).standard_normal(shape)
    errs = check_module(layer, x, max_entries=None)
    assert set(errs) == {"lora_A", "lora_B", MAG, "input"}  # W₀ and b are frozen
    assert max(errs.values()) < 1e-7, errs


def test_detached_backward_is_the_gradient_with_the_norm_frozen():
    """peft's mode = finite differences of a function whose n is held at its current value."""
    layer = layer64(detach_norm=True)
    x = np.random.default_rng(4).standard_normal((6, 7))
    dy = np.random.default_rng(5).standard_normal((6, 5))
    layer(x)
    dx = layer.backward(dy)
    n_frozen = dora.row_norm(layer.direction()).copy()
    W0, b, s = layer.base_layer.p["weight"], layer.base_layer.p["bias"], layer.scaling

    def loss_frozen():  # Eq. 2.9 with n a constant
        z = x @ W0.T + s * (x @ layer.p["lora_A"].T) @ layer.p["lora_B"].T
        return float(((layer.p[MAG] / n_frozen * z + b) * dy).sum())

    for name in ("lora_A", "lora_B", MAG):
        assert compare(layer.g[name], numerical_grad(loss_frozen, layer.p[name])) < 1e-7, name
    assert compare(dx, numerical_grad(loss_frozen, x)) < 1e-7
    exact = layer64(detach_norm=False)
    exact(x)
    exact.backward(dy)
    assert rel_error(exact.g[MAG], layer.g[MAG]) < 1e-12             # dm is the same in both modes
    assert rel_error(exact.g["lora_B"], layer.g["lora_B"]) > 1e-3     # dB is not


def test_starts_at_the_pretrained_weight_and_merges_to_one_matrix():
    g = np.random.default_rng(0)
    base = nn.Linear(9, 6, rng=g, dtype=np.float64)
    W0 = base.p["weight"].copy()
    x = g.standard_normal((4, 9))
    y0 = base(x)
    layer = dora.DoRALinear(base, r=2, alpha=4)
    assert np.allclose(layer.weight(), W0, rtol=0, atol=1e-15)           # m = ‖W₀‖: W' = W₀
    assert np.abs(layer(x) - y0).max() < 1e-14
    layer.p["lora_B"][...] = g.standard_normal((6, 2))
    layer.p[MAG] *= 1.5
    y = layer(x)
    layer.merge()
    assert np.abs(layer(x) - y).max() < 1e-12                            # merged = unmerged output
    assert np.allclose(dora.row_norm(layer.base_layer.p["weight"]), layer.p[MAG])  # ‖W'_i‖ = m_i
    with pytest.raises(RuntimeError, match="already merged"):
        layer.merge()
    with pytest.raises(RuntimeError, match="merged"):
        layer.backward(np.ones((4, 6)))
    layer.unmerge()
    assert np.abs(layer.base_layer.p["weight"] - W0).max() < 1e-13
    with pytest.raises(RuntimeError, match="not merged"):
        layer.unmerge()


def test_merge_all_on_an_encoder_keeps_the_embeddings():
    mm = models.load_minilm("numpy")
    dora.attach_dora(mm.bert, ("query", "value"), r=4, alpha=8, seed=1)
    g = np.random.default_rng(2)
    for m in dora.dora_layers(mm.bert).values():
        m.p["lora_B"][...] = 0.05 * g.standard_normal(m.p["lora_B"].shape)
    before = mm.encode(SENTENCES)
    assert len(dora.merge_all(mm.bert)) == 12
    assert np.abs(mm.encode(SENTENCES) - before).max() < 1e-5
    dora.unmerge_all(mm.bert)
    assert np.abs(mm.encode(SENTENCES) - before).max() < 1e-5


# ----------------------------------------------------------------------------- bad input
def test_bad_arguments_and_inputs_leave_state_unchanged():
    base = nn.Linear(7, 5, rng=np.random.default_rng(0), dtype=np.float64)
    for r, err in ((0, ValueError), (6, ValueError), (2.0, TypeError), (True, TypeError)):
        with pytest.raises(err, match="rank"):
            dora.DoRALinear(base, r, 4)
    with pytest.raises(TypeError, match="detach_norm"):
        dora.DoRALinear(base, 2, 4, detach_norm=1)
    with pytest.raises(ValueError, match="unknown init"):
        dora.DoRALinear(base, 2, 4, init="pissa")
    zero = nn.Linear(7, 5, dtype=np.float64)
    zero.p["weight"][2] = 0
    with pytest.raises(ValueError, match="zero"):
        dora.DoRALinear(zero, 2, 4)
    layer = layer64(detach_norm=False)
    with pytest.raises(ValueError, match="last dimension"):
        layer(np.ones((2, 6)))
    with pytest.raises(TypeError, match="float32 or float64"):
        layer(np.ones((2, 7), np.int64))
    x = np.ones((2, 7))
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        layer(x)
    layer(np.ones((2, 7)))
    with pytest.raises(ValueError, match="last dimension"):
        layer.backward(np.ones((2, 4)))
    assert not layer.g
    W = layer.base_layer.p["weight"].copy()
    layer.p["lora_B"][0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN/inf"):
        layer.merge()
    assert np.array_equal(layer.base_layer.p["weight"], W) and not layer.merged


def test_attach_checks_everything_before_changing_the_model():
    mm = models.load_minilm("numpy")
    before = {k: v.copy() for k, v in mm.bert.state_dict().items()}
    for kw, err in (({"targets": ("nope",)}, ValueError), ({"r": 400}, ValueError), ({"alpha": -1}, ValueError),
                    ({"seed": -1}, ValueError), ({"detach_norm": "yes"}, TypeError)):
        with pytest.raises(err):
            dora.attach_dora(mm.bert, **kw)
    assert not dora.dora_layers(mm.bert)
    assert sorted(mm.bert.state_dict()) == sorted(before)
    assert all(not m.frozen for _, m in mm.bert.named_modules())
    dora.attach_dora(mm.bert, r=2)
    with pytest.raises(ValueError, match="already carry DoRA"):
        dora.attach_dora(mm.bert, r=2)


def test_count_is_loras_plus_one_magnitude_per_output_row():
    mm = models.load_minilm("numpy")
    dora.attach_dora(mm.bert, ("query", "value"), r=8, alpha=16)
    shape = counting.minilm_shape()
    n = mm.bert.num_parameters(trainable_only=True)
    assert n == dora.dora_params(shape, 8, ("query", "value")) == lora.lora_params(shape, 8) + 6 * 2 * 384
    L, d, f = 6, 384, 1536
    assert dora.dora_params(shape, 2, "all-linear") == L * (2 * (4 * 2 * d + 2 * (d + f)) + 4 * d + f + d)
    assert dora.dora_params(counting.ROBERTA_BASE, 8, ("q_proj", "v")) == 12 * 2 * (8 * 1536 + 768)
    # one magnitude per OUTPUT row: d_out, which the square attention matrices cannot tell from d_in
    assert dora.dora_params(shape, 2, ("ffn_in",)) == lora.lora_params(shape, 2, ("ffn_in",)) + L * f
    assert dora.dora_params(shape, 2, ("ffn_out",)) == lora.lora_params(shape, 2, ("ffn_out",)) + L * d
    with pytest.raises(ValueError):
        dora.dora_params(shape, 8, ("nope",))
    # a real model's {path: (d_in, d_out)}, as lora.lora_params takes it: the same count
    paths = lora.linear_paths(models.load_minilm("numpy").bert)
    assert dora.dora_params(paths, 8, ("query", "value")) == n
    assert dora.dora_params({"q": (4, 6)}, 2, ("q",)) == 2 * (4 + 6) + 6
    with pytest.raises(ValueError):
        dora.dora_params({"q": (4, 6)}, 5, ("q",))   # r > min(d_in, d_out)


# ----------------------------------------------------------------------------- torch twin
def twin(detach_norm, dtype_np=np.float64, dtype_t=torch.float64):
    a = layer64(detach_norm, d_in=11, d_out=9)
    tbase = torch.nn.Linear(11, 9).to(dtype_t)
    with torch.no_grad():
        tbase.weight.copy_(torch.from_numpy(a.base_layer.p["weight"]))
        tbase.bias.copy_(torch.from_numpy(a.base_layer.p["bias"]))
    b = tdora.DoRALinear(tbase, 3, 5.0, rng=np.random.default_rng(1), detach_norm=detach_norm)
    with torch.no_grad():
        for k in ("lora_A", "lora_B", MAG):
            getattr(b, k).copy_(torch.from_numpy(a.p[k]))
    return a, b


@pytest.mark.parametrize("detach_norm", [True, False])
def test_torch_twin_equals_numpy_outputs_and_gradients(detach_norm):
    a, b = twin(detach_norm)
    x = np.random.default_rng(4).standard_normal((2, 5, 11))
    dy = np.random.default_rng(5).standard_normal((2, 5, 9))
    xt = torch.from_numpy(x).requires_grad_(True)
    y, yt = a(x), b(xt)
    dx = a.backward(dy)
    yt.backward(torch.from_numpy(dy))
    assert rel_error(y, yt.detach().numpy()) < 1e-12
    for k in ("lora_A", "lora_B", MAG):
        assert rel_error(a.g[k], getattr(b, k).grad.numpy()) < 1e-10, k
    assert rel_error(dx, xt.grad.numpy()) < 1e-12
    a.merge()
    b.merge()
    assert rel_error(a.base_layer.p["weight"], b.base_layer.weight.detach().numpy()) < 1e-12
    b.unmerge()
    a.unmerge()
    assert rel_error(a.base_layer.p["weight"], b.base_layer.weight.detach().numpy()) < 1e-12


def test_same_seed_same_adapter_in_both_frameworks():
    a, b = models.load_minilm("numpy"), load_minilm_torch(device="cpu")
    pa = dora.attach_dora(a.bert, ("query", "dense"), r=3, alpha=6, seed=7)
    pb = tdora.attach_dora(b.bert, ("query", "dense"), r=3, alpha=6, seed=7)
    assert pa == pb
    la, lb = dora.dora_layers(a.bert), tdora.dora_layers(b.bert)
    for p in pa:
        for k in ("lora_A", MAG):
            assert rel_error(la[p].p[k], getattr(lb[p], k).detach().numpy()) < 1e-6, (p, k)
    assert np.abs(a.encode(SENTENCES) - b.encode(SENTENCES)).max() < 1e-5
    lora_a = models.load_minilm("numpy")
    lora.attach_lora(lora_a.bert, ("query", "dense"), r=3, alpha=6, seed=7)
    assert np.array_equal(lora.lora_layers(lora_a.bert)[pa[0]].p["lora_A"], la[pa[0]].p["lora_A"])  # LoRA's A


# ----------------------------------------------------------------------------- HF peft
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")


def hf_base():
    return transformers.BertModel.from_pretrained(str(checkpoint.model_dir())).eval()


def hf_embed(model, tokenizer, texts=SENTENCES):
    ids, mask = tokenizer(texts)
    h = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state
    w = torch.from_numpy(mask).to(h.dtype)[..., None]
    return torch.nn.functional.normalize((h * w).sum(1) / w.sum(1), dim=-1)


def ours_torch_embed(mm, texts=SENTENCES):
    ids, mask = mm.tokenize(texts)
    return torch.nn.functional.normalize(mm.net(torch.from_numpy(ids), torch.from_numpy(mask)), dim=-1)


def randomize_dora(layers, seed=0):
    g = np.random.default_rng(seed)
    for m in layers.values():
        B = 0.05 * g.standard_normal((m.d_out, m.r))
        scale = 1 + 0.1 * g.standard_normal(m.d_out)
        if hasattr(m, "p"):
            m.p["lora_B"][...] = B
            m.p[MAG] *= scale
        else:
            with torch.no_grad():
                m.lora_B.copy_(torch.from_numpy(B))
                m.lora_magnitude_vector.mul_(torch.from_numpy(scale).float())


@pytest.fixture(scope="module")
def peft_dora():
    """A peft DoRA model on MiniLM (q, v, r=4, α=8) with random A, B and perturbed m."""
    torch.manual_seed(0)
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], use_dora=True,
                          init_lora_weights=False)
    pm = peft.get_peft_model(hf_base(), cfg)
    with torch.no_grad():
        for k, v in pm.named_parameters():
            if "magnitude" in k:
                v.mul_(1 + 0.1 * torch.randn_like(v))
    return pm.eval()


def test_peft_state_into_ours_same_embeddings_and_same_gradients(peft_dora):
    ours = load_minilm_torch(device="cpu")
    tdora.attach_dora(ours.bert, ("query", "value"), r=4, alpha=8)
    layers = tdora.dora_layers(ours.bert)
    names = {"lora_A": "lora_A.default.weight", "lora_B": "lora_B.default.weight",
             MAG: "lora_magnitude_vector.default.weight"}
    theirs = dict(peft_dora.named_parameters())
    with torch.no_grad():
        for p, m in layers.items():
            for k, key in names.items():
                getattr(m, k).copy_(theirs[f"base_model.model.{p}.{key}"])
    ref = hf_embed(peft_dora, ours.tokenizer)
    got = ours_torch_embed(ours)
    assert (got - ref).abs().max().item() <= 1e-5
    peft_dora.zero_grad()
    ref.pow(3).sum().backward()
    got.pow(3).sum().backward()
    for p, m in layers.items():
        for k, key in names.items():
            g_theirs, g_ours = theirs[f"base_model.model.{p}.{key}"].grad, getattr(m, k).grad
            assert rel_error(g_ours.numpy(), g_theirs.numpy()) < 1e-4, (p, k)


def test_our_state_into_peft_same_embeddings():
    ours = models.load_minilm("numpy")
    dora.attach_dora(ours.bert, ("query", "value"), r=4, alpha=8, seed=3)
    randomize_dora(dora.dora_layers(ours.bert), seed=4)
    pm = peft.get_peft_model(hf_base(), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"],
                                                       use_dora=True)).eval()
    own = dict(pm.named_parameters())
    with torch.no_grad():
        for p, m in dora.dora_layers(ours.bert).items():
            own[f"base_model.model.{p}.lora_A.default.weight"].copy_(torch.from_numpy(m.p["lora_A"]))
            own[f"base_model.model.{p}.lora_B.default.weight"].copy_(torch.from_numpy(m.p["lora_B"]))
            own[f"base_model.model.{p}.lora_magnitude_vector.default.weight"].copy_(torch.from_numpy(m.p[MAG]))
    with torch.no_grad():
        ref = hf_embed(pm, ours.tokenizer).numpy()
    assert np.abs(ours.encode(SENTENCES) - ref).max() <= 1e-5


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_peft_files_round_trip_both_ways(tmp_path, peft_dora, backend):
    peft_dora.save_pretrained(str(tmp_path / "theirs"))
    with torch.no_grad():
        ref = hf_embed(peft_dora, checkpoint.Tokenizer()).numpy()
    ours = models.load_minilm("numpy") if backend == "numpy" else load_minilm_torch(device="cpu")
    paths = peft_io.load_adapter(ours, tmp_path / "theirs", fmt=dora.PEFT_FORMAT)
    assert len(paths) == 12
    assert np.abs(ours.encode(SENTENCES) - ref).max() <= 1e-5                  # peft saves -> we load
    peft_io.save_adapter(ours, tmp_path / "ours", "sentence-transformers/all-MiniLM-L6-v2", fmt=dora.PEFT_FORMAT)
    cfg = json.loads((tmp_path / "ours" / "adapter_config.json").read_text())
    assert (cfg["peft_type"], cfg["use_dora"], cfg["r"], cfg["target_modules"]) == ("LORA", True, 4, ["query", "value"])
    hf = peft.PeftModel.from_pretrained(hf_base(), str(tmp_path / "ours")).eval()
    with torch.no_grad():
        assert np.abs(hf_embed(hf, ours.tokenizer).numpy() - ref).max() <= 1e-5  # we save -> peft loads


def test_bad_dora_files_are_refused_and_change_nothing(tmp_path):
    ours = models.load_minilm("numpy")
    dora.attach_dora(ours.bert, ("query", "value"), r=2, alpha=4)
    peft_io.save_adapter(ours, tmp_path, fmt=dora.PEFT_FORMAT)
    cfg_path = tmp_path / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    fresh = models.load_minilm("numpy")
    with pytest.raises(ValueError, match="use_dora"):           # a DoRA file is not a LoRA file
        peft_io.load_adapter(fresh, tmp_path)
    for change, msg in (({"use_dora": False}, "use_dora"), ({"r": 3}, "shape"), ({"target_modules": ["key"]}, "missing")):
        cfg_path.write_text(json.dumps({**cfg, **change}))
        with pytest.raises(ValueError, match=msg):
            peft_io.load_adapter(fresh, tmp_path, fmt=dora.PEFT_FORMAT)
    assert not dora.dora_layers(fresh.bert) and not lora.lora_layers(fresh.bert)
    assert all(not m.frozen for _, m in fresh.bert.named_modules())
    with pytest.raises(ValueError, match="no DoRA layers"):
        peft_io.save_adapter(fresh, tmp_path / "none", fmt=dora.PEFT_FORMAT)


def test_the_torch_layer_refuses_a_foreign_rng_like_the_numpy_one():
    for mod in (dora, tdora):
        base = nn.Linear(5, 4) if mod is dora else torch.nn.Linear(5, 4)
        with pytest.raises(TypeError, match="numpy Generator"):
            mod.DoRALinear(base, 2, 4.0, rng=42)
