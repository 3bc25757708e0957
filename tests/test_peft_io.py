"""peft adapter files (chapter 02): ours load in HF peft, peft's load in ours (NumPy and torch),
with the same sentence embeddings; corrupt or foreign files are refused and change nothing."""
import dataclasses
import json
import pickle

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from pedagogy_lib import checkpoint, dora, lora, models, peft_io
from pedagogy_lib.bert import BertConfig, BertEncoder
from pedagogy_lib.torch_ref import lora as tlora
from pedagogy_lib.torch_ref.encoder import load_minilm_torch

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

SENTENCES = ["a lovely, quiet morning", "horrible", "ok then", "LoRA adds a low-rank update to W"]
TINY = BertConfig(vocab_size=40, hidden_size=12, num_hidden_layers=2, num_attention_heads=3,
                  intermediate_size=20, max_position_embeddings=16)


def hf_embed(model, tokenizer, texts=SENTENCES):
    """Mean-pooled, L2-normalised embeddings from a transformers/peft model (sentence-transformers' recipe)."""
    ids, mask = tokenizer(texts)
    with torch.no_grad():
        h = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state
    w = torch.from_numpy(mask).to(h.dtype)[..., None]
    return torch.nn.functional.normalize((h * w).sum(1) / w.sum(1), dim=-1).numpy()


def hf_base():
    return transformers.BertModel.from_pretrained(str(checkpoint.model_dir())).eval()


def randomize(layers, scale=0.05, seed=0):
    g = np.random.default_rng(seed)
    for m in layers.values():
        B = scale * g.standard_normal(tuple(m.p["lora_B"].shape) if hasattr(m, "p") else tuple(m.lora_B.shape))
        if hasattr(m, "p"):
            m.p["lora_B"][...] = B
        else:
            with torch.no_grad():
                m.lora_B.copy_(torch.from_numpy(B))


@pytest.fixture(scope="module")
def minilm():
    return models.load_minilm("numpy")


# ----------------------------------------------------------------------------- ours -> peft
@pytest.mark.parametrize("backend,rslora", [("numpy", False), ("torch", True)])
def test_our_adapter_loads_in_peft_with_the_same_embeddings(tmp_path, backend, rslora):
    ours = models.load_minilm() if backend == "numpy" else load_minilm_torch(device="cpu")
    lib = lora if backend == "numpy" else tlora
    lib.attach_lora(ours.bert, ("query", "value"), r=4, alpha=8, rslora=rslora, seed=1)
    randomize(lib.lora_layers(ours.bert))
    peft_io.save_adapter(ours, tmp_path, "sentence-transformers/all-MiniLM-L6-v2")

    text = (tmp_path / peft_io.CONFIG_NAME).read_text()
    cfg = json.loads(text)
    assert text == json.dumps(cfg, indent=2, sort_keys=True) + "\n"  # written like peft writes it
    assert (cfg["peft_type"], cfg["r"], cfg["lora_alpha"], cfg["use_rslora"]) == ("LORA", 4, 8, rslora)
    assert cfg["target_modules"] == ["query", "value"]
    with safe_open(str(tmp_path / peft_io.WEIGHTS_NAME), "np") as f:
        assert f.metadata() == {"format": "pt"}
        keys = set(f.keys())
    assert len(keys) == 24 and "base_model.model.encoder.layer.5.attention.self.value.lora_B.weight" in keys
    w = load_file(str(tmp_path / peft_io.WEIGHTS_NAME))
    assert w["base_model.model.encoder.layer.0.attention.self.query.lora_A.weight"].shape == (4, 384)
    assert w["base_model.model.encoder.layer.0.attention.self.query.lora_B.weight"].shape == (384, 4)

    hf = peft.PeftModel.from_pretrained(hf_base(), str(tmp_path)).eval()
    ref = hf_embed(hf, ours.tokenizer)
    got = ours.encode(SENTENCES)
    assert np.abs(got - ref).max() <= 1e-5
    assert np.abs(got - hf_embed(hf_base(), ours.tokenizer)).max() > 1e-3  # the adapter matters


def test_target_description_is_exact_for_peft(minilm):
    paths = lora.linear_paths(minilm.bert)
    qv = [p for p in paths if p.endswith(("query", "value"))]
    assert peft_io.describe_targets(qv, paths) == ["query", "value"]
    ffn = lora.match_targets(paths, r"encoder\.layer\.\d+\.(intermediate|output)\.dense")
    assert peft_io.describe_targets(ffn, paths) == sorted(ffn)          # "dense" would add more
    dense = lora.match_targets(paths, ("dense",))
    assert peft_io.describe_targets(dense, paths) == sorted(dense)      # BertModel's pooler.dense


def test_ffn_adapter_with_full_paths_loads_in_peft(tmp_path):
    ours = models.load_minilm("numpy")
    lora.attach_lora(ours.bert, r"encoder\.layer\.[0-1]\.(intermediate|output)\.dense", r=2, alpha=4)
    randomize(lora.lora_layers(ours.bert), scale=0.1)
    peft_io.save_adapter(ours, tmp_path)
    hf = peft.PeftModel.from_pretrained(hf_base(), str(tmp_path)).eval()
    adapted = sorted(n for n, m in hf.named_modules() if hasattr(m, "lora_A") and "default" in m.lora_A)
    assert [a.removeprefix("base_model.model.") for a in adapted] == sorted(lora.lora_layers(ours.bert))
    assert np.abs(ours.encode(SENTENCES) - hf_embed(hf, ours.tokenizer)).max() <= 1e-5


# ----------------------------------------------------------------------------- peft -> ours
@pytest.fixture(scope="module")
def peft_adapter(tmp_path_factory):
    """A peft adapter with random non-zero A and B, trained one step, rsLoRA, on (q, v, every dense)."""
    d = tmp_path_factory.mktemp("peft_made")
    tok = checkpoint.Tokenizer()
    torch.manual_seed(0)
    cfg = peft.LoraConfig(r=4, lora_alpha=16, target_modules=["query", "value", "dense"],
                          init_lora_weights=False, use_rslora=True)
    pm = peft.get_peft_model(hf_base(), cfg)
    ids, mask = tok(SENTENCES)
    opt = torch.optim.SGD([p for p in pm.parameters() if p.requires_grad], lr=0.1)
    pm.train()
    pm(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state.pow(2).mean().backward()
    opt.step()
    pm.eval()
    pm.save_pretrained(str(d))
    return d, hf_embed(pm, tok)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_peft_adapter_loads_into_ours_with_the_same_embeddings(peft_adapter, backend):
    d, ref = peft_adapter
    ours = models.load_minilm() if backend == "numpy" else load_minilm_torch(device="cpu")
    paths = peft_io.load_adapter(ours, d)
    assert len(paths) == 6 * 5  # q, v and the three dense layers; BertModel's pooler.dense is skipped
    assert np.abs(ours.encode(SENTENCES) - ref).max() <= 1e-5
    layer = (lora if backend == "numpy" else tlora).lora_layers(ours.bert)[paths[0]]
    assert layer.scaling == pytest.approx(16 / 2)  # α/√r with rsLoRA


def test_numpy_to_torch_through_a_file_and_into_existing_layers(tmp_path):
    a = models.load_minilm("numpy")
    lora.attach_lora(a.bert, ("key", "attention.output.dense"), r=3, alpha=6)
    randomize(lora.lora_layers(a.bert), seed=3)
    peft_io.save_adapter(a, tmp_path)
    b = load_minilm_torch(device="cpu")
    tlora.attach_lora(b.bert, ("key", "attention.output.dense"), r=3, alpha=6, seed=9)  # filled in place
    peft_io.load_adapter(b, tmp_path)
    assert np.abs(a.encode(SENTENCES) - b.encode(SENTENCES)).max() <= 1e-5


# ----------------------------------------------------------------------------- bad files
def tiny_saved(tmp_path, **kw):
    bert = BertEncoder(TINY, seed=0)
    lora.attach_lora(bert, ("query", "value"), r=2, alpha=4, **kw)
    randomize(lora.lora_layers(bert))
    peft_io.save_adapter(bert, tmp_path)
    return bert


def fresh_tiny():
    return BertEncoder(TINY, seed=0)


def snapshot(bert):
    return {k: v.copy() for k, v in bert.state_dict().items()}


def unchanged(bert, snap):
    now = bert.state_dict()
    return (not lora.lora_layers(bert) and sorted(now) == sorted(snap)
            and all(np.array_equal(now[k], snap[k]) for k in snap) and not any(m.frozen for _, m in bert.named_modules()))


def edit_weights(d, fn):
    w = load_file(str(d / peft_io.WEIGHTS_NAME))
    fn(w)
    save_file(w, str(d / peft_io.WEIGHTS_NAME), metadata={"format": "pt"})


def edit_config(d, **changes):
    cfg = json.loads((d / peft_io.CONFIG_NAME).read_text())
    cfg.update(changes)
    (d / peft_io.CONFIG_NAME).write_text(json.dumps(cfg))


KEY = "base_model.model.encoder.layer.0.attention.self.query.lora_A.weight"


def test_tiny_round_trip(tmp_path):
    src = tiny_saved(tmp_path)
    dst = fresh_tiny()
    assert peft_io.load_adapter(dst, tmp_path) == sorted(lora.lora_layers(src))
    ids = np.array([[1, 2, 3, 4]])
    mask = np.ones_like(ids)
    assert np.array_equal(src(ids, mask), dst(ids, mask))


@pytest.mark.parametrize("case,match", [
    ("wrong_shape", "has shape"), ("missing_key", "missing"), ("extra_key", "unexpected"),
    ("nan", "NaN"), ("int_dtype", "dtype"), ("unknown_target", "do not fit"),
    ("foreign_type", "peft_type"), ("fan_in_fan_out", "fan_in_fan_out"), ("dora", "use_dora"),
    ("rank_pattern", "rank_pattern"), ("pissa", "rewrites the base"), ("bad_r", "r must be"),
    ("r_mismatch", "has shape"), ("alpha", "lora_alpha"), ("bad_json", "not valid JSON"),
    ("not_safetensors", "not a valid safetensors"), ("only_pickle", "never unpickled"),
])
def test_bad_adapters_are_refused_and_leave_the_model_unchanged(tmp_path, monkeypatch, case, match):
    tiny_saved(tmp_path)
    w = tmp_path / peft_io.WEIGHTS_NAME
    if case == "wrong_shape":
        edit_weights(tmp_path, lambda d: d.__setitem__(KEY, np.ones((2, 11), np.float32)))
    elif case == "missing_key":
        edit_weights(tmp_path, lambda d: d.pop(KEY))
    elif case == "extra_key":
        edit_weights(tmp_path, lambda d: d.__setitem__("base_model.model.encoder.layer.0.attention.self.key.lora_A.weight",
                                                       np.ones((2, 12), np.float32)))
    elif case == "nan":
        edit_weights(tmp_path, lambda d: d.__setitem__(KEY, np.full((2, 12), np.nan, np.float32)))
    elif case == "int_dtype":
        edit_weights(tmp_path, lambda d: d.__setitem__(KEY, np.ones((2, 12), np.int32)))
    elif case == "unknown_target":
        edit_config(tmp_path, target_modules=["query", "q_proj"])
    elif case == "foreign_type":
        edit_config(tmp_path, peft_type="PREFIX_TUNING")
    elif case == "fan_in_fan_out":
        edit_config(tmp_path, fan_in_fan_out=True)
    elif case == "dora":
        edit_config(tmp_path, use_dora=True)
    elif case == "rank_pattern":
        edit_config(tmp_path, rank_pattern={"query": 4})
    elif case == "pissa":
        edit_config(tmp_path, init_lora_weights="pissa_niter_4")
    elif case == "bad_r":
        edit_config(tmp_path, r=0)
    elif case == "r_mismatch":
        edit_config(tmp_path, r=3)
    elif case == "alpha":
        edit_config(tmp_path, lora_alpha=float("nan"))
    elif case == "bad_json":
        (tmp_path / peft_io.CONFIG_NAME).write_text("{r: 8")
    elif case == "not_safetensors":
        w.write_bytes(pickle.dumps({KEY: np.ones((2, 12))}))
    elif case == "only_pickle":
        w.rename(tmp_path / "adapter_model.bin")

    def no_unpickling(*a, **k):
        raise AssertionError("something tried to unpickle")

    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(torch, "load", no_unpickling)
    bert = fresh_tiny()
    snap = snapshot(bert)
    with pytest.raises(ValueError, match=match):
        peft_io.load_adapter(bert, tmp_path)
    assert unchanged(bert, snap)


def test_loading_into_a_model_with_other_lora_layers_is_refused(tmp_path):
    tiny_saved(tmp_path)
    bert = fresh_tiny()
    lora.attach_lora(bert, ("key",), r=2, alpha=4)
    before = {k: v.copy() for k, v in bert.state_dict().items()}
    with pytest.raises(ValueError, match="already has LoRA"):
        peft_io.load_adapter(bert, tmp_path)
    other = fresh_tiny()
    lora.attach_lora(other, ("query", "value"), r=2, alpha=5)  # same modules, other α
    with pytest.raises(ValueError, match="cannot take this adapter"):
        peft_io.load_adapter(other, tmp_path)
    assert all(np.array_equal(v, before[k]) for k, v in bert.state_dict().items())


def test_missing_files_and_bad_models(tmp_path):
    with pytest.raises(FileNotFoundError):
        peft_io.load_adapter(fresh_tiny(), tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        peft_io.load_adapter(fresh_tiny(), tmp_path)
    tiny_saved(tmp_path)
    with pytest.raises(TypeError, match="encoder"):
        peft_io.load_adapter(object(), tmp_path)


def test_save_refuses_what_peft_cannot_express(tmp_path):
    with pytest.raises(ValueError, match="no LoRA layers"):
        peft_io.save_adapter(fresh_tiny(), tmp_path)
    bert = fresh_tiny()
    lora.attach_lora(bert, ("query",), r=2, alpha=4)
    lora.attach_lora(bert, ("value",), r=3, alpha=4)
    with pytest.raises(ValueError, match="differ in"):
        peft_io.save_adapter(bert, tmp_path)
    bert = fresh_tiny()
    lora.attach_lora(bert, ("query",), r=2, alpha=4, init="pissa")
    with pytest.raises(ValueError, match="PiSSA"):
        peft_io.save_adapter(bert, tmp_path)
    assert not (tmp_path / peft_io.WEIGHTS_NAME).exists()


# ----------------------------------------------------------------------------- a new format, no edit of peft_io
def toy_layers(model):
    """LoRA layers carrying a magnitude vector (d_out,): a DoRA-shaped stand-in (NumPy only)."""
    return {p: m for p, m in lora.lora_layers(model).items() if "magnitude" in m.p}


def attach_toy(model, paths, s):
    lora.attach_lora(model, paths, r=s.r, alpha=s.alpha, rslora=s.rslora)
    for m in lora.lora_layers(model).values():
        m.p["magnitude"] = np.ones(m.d_out, np.float32)


# LoRA's format plus one tensor per layer and a config flag, defined here, outside peft_io
TOY = dataclasses.replace(
    lora.PEFT_FORMAT, name="toy DoRA", module=__name__, layers="toy_layers",
    tensors={**lora.PEFT_FORMAT.tensors, "lora_magnitude_vector": "magnitude"},
    shape=lambda name, s, d_in, d_out: (d_out,) if name == "magnitude" else lora.PEFT_FORMAT.shape(name, s, d_in, d_out),
    fixed={**lora.PEFT_FORMAT.fixed, "use_dora": True},
    attach=lambda lib, model, settings: lib.attach_toy(model, tuple(settings), next(iter(settings.values()))))


def test_a_new_format_round_trips_without_editing_peft_io(tmp_path):
    src = fresh_tiny()
    attach_toy(src, ("query", "value"), lora.PeftSetting(2, 4.0, False))
    randomize(lora.lora_layers(src))
    for i, m in enumerate(toy_layers(src).values()):
        m.p["magnitude"][...] = np.arange(m.d_out) + i
    peft_io.save_adapter(src, tmp_path / "toy", fmt=TOY)
    cfg = json.loads((tmp_path / "toy" / peft_io.CONFIG_NAME).read_text())
    assert (cfg["peft_type"], cfg["use_dora"], cfg["r"]) == ("LORA", True, 2)
    w = load_file(str(tmp_path / "toy" / peft_io.WEIGHTS_NAME))
    assert len(w) == 2 * 2 * 3 and w[KEY.replace("lora_A.weight", "lora_magnitude_vector")].shape == (12,)
    dst = fresh_tiny()
    assert peft_io.load_adapter(dst, tmp_path / "toy", fmt=TOY) == sorted(toy_layers(src))
    assert all(np.array_equal(toy_layers(dst)[p].p[k], m.p[k])
               for p, m in toy_layers(src).items() for k in ("lora_A", "lora_B", "magnitude"))
    # each reader refuses the other's file by the config flag, and the model stays as it was
    tiny_saved(tmp_path / "plain")
    for d, fmt in ((tmp_path / "toy", peft_io.LORA), (tmp_path / "plain", TOY)):
        bert = fresh_tiny()
        snap = snapshot(bert)
        with pytest.raises(ValueError, match="use_dora"):
            peft_io.load_adapter(bert, d, fmt=fmt)
        assert unchanged(bert, snap)


def test_peft_io_imports_no_method_module_but_its_default():
    """No table of methods in peft_io: a new method's format reaches it only through ``fmt``."""
    from test_layers import LIB, imports_of

    assert imports_of(LIB / "peft_io.py") <= {
        "pedagogy_lib.checks", "pedagogy_lib.checkpoint", "pedagogy_lib.nn", "pedagogy_lib.peft_format",
        "pedagogy_lib.lora", "pedagogy_lib.torch_ref.lora"}   # LoRA: the default format and the Linear walk


@pytest.mark.parametrize("fmt", [dora, "LORA", None])
def test_a_wrong_fmt_is_named_before_anything_happens(tmp_path, fmt):
    """``fmt=dora`` (the module, not ``dora.PEFT_FORMAT``), a string or None: a TypeError that
    says what was passed, from save, load and read alike, and the model is unchanged."""
    tiny_saved(tmp_path / "plain")
    bert = fresh_tiny()
    snap = snapshot(bert)
    for call in (lambda: peft_io.save_adapter(bert, tmp_path / "out", fmt=fmt),
                 lambda: peft_io.load_adapter(bert, tmp_path / "plain", fmt=fmt),
                 lambda: peft_io.read_adapter(tmp_path / "plain", fmt=fmt)):
        with pytest.raises(TypeError, match="PeftFormat.*got (the module pedagogy_lib.dora|str|NoneType)"):
            call()
    assert unchanged(bert, snap) and not (tmp_path / "out").exists()
