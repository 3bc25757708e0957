"""Hugging Face interop: merged exports that AutoModel / SentenceTransformer load with our
numbers, adapter files that AutoPeftModel loads, and transformers' own adapter API
(add_adapter, load_adapter, active_adapters) working with the locked transformers/peft pair."""
import json

import numpy as np
import pytest
import torch

from pedagogy_lib import adapters, bitfit, checkpoint, export, ia3, lora, models, peft_io, prefix
from pedagogy_lib.torch_ref.encoder import load_minilm_torch
from pedagogy_lib.bert import BertConfig, BertEncoder
from pedagogy_lib.torch_ref import lora as tlora
from test_peft_io import hf_embed  # mean-pooled, normalised embeddings of a transformers model

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")
sentence_transformers = pytest.importorskip("sentence_transformers")

SENTENCES = ["a quiet, lovely morning", "this is horrible", "ok", "LoRA merges into W after training"]
TINY = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=24, max_position_embeddings=20)
TOL = 1e-5


def randomize_lora(layers, seed=0, scale=0.05):
    g = np.random.default_rng(seed)
    for m in layers.values():
        if hasattr(m, "p"):
            m.p["lora_B"][...] = scale * g.standard_normal(m.p["lora_B"].shape)
        else:
            with torch.no_grad():
                m.lora_B.copy_(torch.from_numpy(scale * g.standard_normal(tuple(m.lora_B.shape))))


def lora_minilm(backend, seed=1, rslora=False, targets=("query", "value")):
    m = (load_minilm_torch(device="cpu") if backend == "torch" else models.load_minilm())
    lib = lora if backend == "numpy" else tlora
    lib.attach_lora(m.bert, targets, r=4, alpha=8, rslora=rslora, seed=seed)
    randomize_lora(lib.lora_layers(m.bert), seed)
    return m


def weights_of(model):
    return {k: (v.detach().cpu().numpy() if hasattr(v, "detach") else v).copy()
            for k, v in model.bert.state_dict().items()}


# ---- export_merged ----------------------------------------------------------------------


@pytest.mark.parametrize("backend,rslora", [("numpy", False), ("torch", True)])
def test_merged_minilm_loads_in_automodel_and_sentence_transformers_with_our_embeddings(tmp_path, backend, rslora):
    ours = lora_minilm(backend, rslora=rslora, targets=("query", "value", "dense"))
    before = weights_of(ours)
    out = export.export_merged(ours, tmp_path / "merged")
    after = weights_of(ours)
    assert all(np.array_equal(before[k], after[k]) for k in before)  # the model is untouched
    want = ours.encode(SENTENCES)

    hf = transformers.AutoModel.from_pretrained(str(out)).eval()
    assert type(hf).__name__ == "BertModel"
    assert np.abs(hf_embed(hf, ours.tokenizer, SENTENCES) - want).max() <= TOL
    base = transformers.AutoModel.from_pretrained(str(checkpoint.model_dir())).eval()
    assert np.abs(hf_embed(base, ours.tokenizer, SENTENCES) - want).max() > 1e-3  # the merge mattered
    for k, v in base.pooler.state_dict().items():
        assert torch.equal(hf.pooler.state_dict()[k], v)  # the pooler is the checkpoint's

    st = sentence_transformers.SentenceTransformer(str(out), device="cpu")
    assert np.abs(st.encode(SENTENCES, convert_to_numpy=True) - want).max() <= TOL
    tok = transformers.AutoTokenizer.from_pretrained(str(out))
    ids, _ = ours.tokenizer(SENTENCES[:1])
    assert tok(SENTENCES[0])["input_ids"] == ids[0].tolist()


def test_a_merged_layer_is_exported_once_not_twice(tmp_path):
    ours = lora_minilm("torch", seed=3)
    want = ours.encode(SENTENCES)
    tlora.merge_all(ours.bert)
    out = export.export_merged(ours, tmp_path / "m")
    hf = transformers.AutoModel.from_pretrained(str(out)).eval()
    assert np.abs(hf_embed(hf, ours.tokenizer, SENTENCES) - want).max() <= TOL


def test_merged_state_is_w0_plus_s_b_a():
    ours = lora_minilm("numpy", seed=2)
    state = export.merged_state(ours)
    layer = lora.lora_layers(ours.bert)["encoder.layer.3.attention.self.value"]
    W0 = layer.base_layer.p["weight"].astype(np.float64)
    BA = layer.p["lora_B"].astype(np.float64) @ layer.p["lora_A"].astype(np.float64)
    got = state["encoder.layer.3.attention.self.value.weight"]
    assert np.abs(got - (W0 + layer.scaling * BA)).max() <= 1e-6
    assert not any("lora" in k or "base_layer" in k for k in state)


def test_bitfit_and_a_small_random_encoder_export_as_plain_bert(tmp_path):
    enc = BertEncoder(TINY, seed=5)
    bitfit.apply_bitfit(enc)
    g = np.random.default_rng(0)
    for name, v in enc.named_parameters():
        if name.endswith("bias"):
            v[...] = 0.1 * g.standard_normal(v.shape)
    out = export.export_merged(enc, tmp_path / "tiny")
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"]) == (16, 4, 2)
    assert not (out / "modules.json").exists() and not (out / "tokenizer.json").exists()  # not MiniLM
    hf = transformers.AutoModel.from_pretrained(str(out)).eval()
    ids = g.integers(1, TINY.vocab_size, size=(3, 7))
    mask = np.ones_like(ids)
    mask[1, 5:] = 0
    with torch.no_grad():
        h = hf(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()
    ours = enc(ids, mask)
    keep = mask.astype(bool)
    assert np.abs(h[keep] - ours[keep]).max() <= 1e-4


def test_models_that_a_bertmodel_cannot_hold_are_refused_before_writing(tmp_path):
    with_adapters = models.load_minilm("numpy")
    adapters.attach_adapters(with_adapters.bert, "houlsby", m=8)
    with pytest.raises(ValueError, match="parameters a BertModel does not"):
        export.export_merged(with_adapters, tmp_path / "a")
    with_prefix = models.load_minilm("numpy")
    prefix.attach_prefix(with_prefix.bert, m=4)
    with pytest.raises(ValueError, match="BertModel"):
        export.export_merged(with_prefix, tmp_path / "p")
    with pytest.raises(TypeError, match="encoder"):
        export.export_merged("not a model", tmp_path / "s")
    broken = lora_minilm("numpy")
    lora.lora_layers(broken.bert)["encoder.layer.0.attention.self.query"].p["lora_B"][0, 0] = np.nan
    with pytest.raises(ValueError, match="not finite"):
        export.export_merged(broken, tmp_path / "n")
    assert not any(tmp_path.iterdir())  # nothing written for any of them


# ---- peft files and transformers' adapter API -------------------------------------------


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    ours = lora_minilm("numpy", seed=4)
    d = peft_io.save_adapter(ours, tmp_path_factory.mktemp("adapter") / "a", str(checkpoint.model_dir()))
    return d, ours


def test_auto_peft_model_loads_our_adapter_with_our_embeddings(adapter_dir):
    d, ours = adapter_dir
    cfg = json.loads((d / peft_io.CONFIG_NAME).read_text())
    assert cfg["auto_mapping"]["base_model_class"] == "BertModel"
    model = peft.AutoPeftModel.from_pretrained(str(d)).eval()
    assert type(model.get_base_model()).__name__ == "BertModel"
    assert np.abs(hf_embed(model, ours.tokenizer, SENTENCES) - ours.encode(SENTENCES)).max() <= TOL
    assert peft_io.read_adapter(d)[0]["r"] == 4  # and our own reader still takes the file


def test_auto_peft_model_loads_our_ia3_adapter_too(tmp_path):
    ours = models.load_minilm("numpy")
    ia3.attach_ia3(ours.bert)
    g = np.random.default_rng(6)
    for layer in ia3.ia3_layers(ours.bert).values():
        for k, v in layer.p.items():
            v[...] = 1 + 0.3 * g.standard_normal(v.shape)
    d = peft_io.save_adapter(ours, tmp_path / "ia3", str(checkpoint.model_dir()), fmt=ia3.PEFT_FORMAT)
    model = peft.AutoPeftModel.from_pretrained(str(d)).eval()
    got = hf_embed(model, ours.tokenizer, SENTENCES)
    assert np.abs(got - ours.encode(SENTENCES)).max() <= TOL
    assert np.abs(got - models.load_minilm("numpy").encode(SENTENCES)).max() > 1e-3  # the vectors matter


def test_transformers_adapter_api_load_add_and_switch(adapter_dir):
    d, ours = adapter_dir
    hf = transformers.AutoModel.from_pretrained(str(checkpoint.model_dir())).eval()
    base = hf_embed(hf, ours.tokenizer, SENTENCES)
    hf.load_adapter(str(d), adapter_name="ours")
    assert hf.active_adapters() == ["ours"]
    assert np.abs(hf_embed(hf, ours.tokenizer, SENTENCES) - ours.encode(SENTENCES)).max() <= TOL
    hf.add_adapter(peft.LoraConfig(r=2, target_modules=["query"], init_lora_weights=True), adapter_name="fresh")
    hf.set_adapter("fresh")
    assert hf.active_adapters() == ["fresh"]
    assert np.abs(hf_embed(hf, ours.tokenizer, SENTENCES) - base).max() <= TOL  # B = 0: the base model again
    hf.disable_adapters()
    assert np.abs(hf_embed(hf, ours.tokenizer, SENTENCES) - base).max() <= TOL


def test_sentence_transformers_adapter_api(adapter_dir):
    d, ours = adapter_dir
    st = sentence_transformers.SentenceTransformer(str(checkpoint.model_dir()), device="cpu")
    st.load_adapter(str(d), adapter_name="ours")
    assert st.active_adapters() == ["ours"]
    assert np.abs(st.encode(SENTENCES, convert_to_numpy=True) - ours.encode(SENTENCES)).max() <= TOL
