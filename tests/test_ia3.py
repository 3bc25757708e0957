"""IA³ (chapter 06): finite differences for both hand-written backwards (Eqs. 6.7–6.8), the
identity at init, merge/unmerge (Eq. 6.9), the count (Eq. 6.10), targeting like peft, the
torch twin, and bad input."""
import numpy as np
import pytest
import torch

from pedagogy_lib import counting, ia3, nn
from pedagogy_lib.torch_ref.encoder import load_minilm_torch
from pedagogy_lib.bert import BertEncoder, SentenceEncoder
from pedagogy_lib.gradcheck import check_module
from pedagogy_lib.torch_ref import ia3 as tia3
from twin_checks import assert_twin_matches, padded_batch, tiny_config, torch_twin

CFG = tiny_config(16)
SHAPE = counting.ModelShape("tiny", 40, 12, 3, 3, 20, 16, 2)  # the same model, for counting.py


def base_linear(d_in=7, d_out=5, seed=1):
    return nn.Linear(d_in, d_out, rng=np.random.default_rng(seed), dtype=np.float64)


def randomize(layers, seed=0, scale=0.3):
    """l away from 1 (as after training), the same draw for NumPy and torch layers."""
    g = np.random.default_rng(seed)
    for path in sorted(layers):
        m = layers[path]
        v = 1 + scale * g.standard_normal(m.d_in if m.feedforward else m.d_out)
        if hasattr(m, "p"):
            m.p["ia3_l"][...] = v
        else:
            with torch.no_grad():
                m.ia3_l.copy_(torch.from_numpy(v))


def tiny_net(seed=1):
    return SentenceEncoder(BertEncoder(CFG, seed=seed, dtype=np.float64))


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("feedforward", [False, True])
@pytest.mark.parametrize("shape", [(6, 7), (2, 3, 7)])
@pytest.mark.parametrize("train_base", [False, True])
def test_ia3_backward_matches_finite_differences(feedforward, shape, train_base):
    layer = ia3.IA3Linear(base_linear(), feedforward)
    randomize({"x": layer})
    if train_base:
        layer.base_layer.unfreeze()
    x = np.random.default_rng(3).standard_normal(shape)
    errs = check_module(layer, x, max_entries=None)
    want = {"ia3_l", "input"} | ({"base_layer.weight", "base_layer.bias"} if train_base else set())
    assert set(errs) == want
    assert max(errs.values()) < 1e-8, errs


def test_whole_encoder_ia3_gradients_match_finite_differences():
    net = tiny_net()
    chosen = ia3.attach_ia3(net.bert)
    randomize(ia3.ia3_layers(net.bert))
    ids, mask = padded_batch(CFG.vocab_size)
    errs = check_module(net, ids, mask, max_entries=None)
    assert set(errs) == {f"bert.{p}.ia3_l" for p in chosen}
    assert max(errs.values()) < 1e-6, errs


# ----------------------------------------------------------------------------- init, merge
def test_identity_at_init_numpy_and_torch():
    net = tiny_net()
    tnet = torch_twin(net)
    tnet.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in net.named_parameters()})
    ids, mask = padded_batch(CFG.vocab_size)
    before, tbefore = net(ids, mask), tnet(torch.from_numpy(ids), torch.from_numpy(mask))
    ia3.attach_ia3(net.bert)
    tia3.attach_ia3(tnet.bert)
    assert all(np.all(m.p["ia3_l"] == 1) for m in ia3.ia3_layers(net.bert).values())
    assert np.array_equal(net(ids, mask), before)
    assert torch.equal(tnet(torch.from_numpy(ids), torch.from_numpy(mask)), tbefore)


@pytest.mark.parametrize("feedforward", [False, True])
def test_merge_unmerge_round_trip(feedforward):
    layer = ia3.IA3Linear(base_linear(), feedforward)
    randomize({"x": layer})
    W0, b0 = layer.base_layer.p["weight"].copy(), layer.base_layer.p["bias"].copy()
    x = np.random.default_rng(0).standard_normal((4, 7))
    y = layer(x)
    layer.merge()
    assert np.abs(layer(x) - y).max() < 1e-12
    b_want = b0 if feedforward else layer.p["ia3_l"] * b0
    assert np.array_equal(layer.base_layer.p["bias"], b_want)  # Eq. 6.9: b scales only on the output side
    with pytest.raises(RuntimeError, match="merged"):
        layer.backward(np.ones_like(y))
    with pytest.raises(RuntimeError, match="already merged"):
        layer.merge()
    layer.unmerge()
    assert np.abs(layer.base_layer.p["weight"] - W0).max() < 1e-15
    assert np.abs(layer.base_layer.p["bias"] - b0).max() < 1e-15
    with pytest.raises(RuntimeError, match="not merged"):
        layer.unmerge()


def test_merge_all_on_an_encoder_and_zero_l_is_refused():
    net = tiny_net()
    ia3.attach_ia3(net.bert)
    layers = ia3.ia3_layers(net.bert)
    randomize(layers)
    ids, mask = padded_batch(CFG.vocab_size)
    y = net(ids, mask)
    assert ia3.merge_all(net.bert) == list(layers)
    assert np.abs(net(ids, mask) - y).max() < 1e-12
    ia3.unmerge_all(net.bert)
    first = next(iter(layers.values()))
    first.p["ia3_l"][0] = 0.0
    snap = {k: v.copy() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match="zero"):
        ia3.merge_all(net.bert)
    assert all(np.array_equal(v, snap[k]) for k, v in net.state_dict().items())
    assert not any(m.merged for m in layers.values())


# ----------------------------------------------------------------------------- counts, targeting
def test_trainable_count_equals_the_formula():
    net = tiny_net()
    ia3.attach_ia3(net.bert)
    assert net.num_parameters(trainable_only=True) == ia3.ia3_params(SHAPE) == 3 * (2 * 12 + 20)
    # peft's default for BERT: the suffix "output.dense" also picks attention.output.dense (input side)
    other = tiny_net()
    chosen = ia3.attach_ia3(other.bert, ["key", "value", "output.dense"], ["output.dense"])
    assert sum(chosen.values()) == 6 and len(chosen) == 12
    assert other.num_parameters(trainable_only=True) == ia3.ia3_params(
        SHAPE, ("key", "value", "attn_out", "ffn_out"), ("attn_out", "ffn_out"))


def test_ia3_params_checks_its_arguments():
    with pytest.raises(ValueError, match="subset"):
        ia3.ia3_params(SHAPE, ("key", "value"), ("ffn_out",))
    with pytest.raises(ValueError, match="distinct"):
        ia3.ia3_params(SHAPE, ("key", "nope"), ())
    with pytest.raises(TypeError):
        ia3.ia3_params("BERT", ("key",), ())


def test_feedforward_follows_peft_rules():
    assert ia3.feedforward_matches("a.layer.0.output.dense", ["output.dense"])
    assert ia3.feedforward_matches("a.layer.0.attention.output.dense", ["output.dense"])  # endswith, no dot
    assert ia3.feedforward_matches("a.layer.0.myoutput.dense", ["output.dense"])
    assert not ia3.feedforward_matches("a.layer.0.attention.output.dense", ia3.PAPER_FEEDFORWARD)
    paths = {p: (1, 1) for p in ("encoder.layer.0.attention.self.key", "encoder.layer.0.output.dense",
                                              "encoder.layer.0.attention.output.dense")}
    assert ia3.plan(paths, ia3.PAPER_TARGETS) == {"encoder.layer.0.attention.self.key": False,
                                                      "encoder.layer.0.output.dense": True}
    assert ia3.plan(paths, ["key"], []) == {"encoder.layer.0.attention.self.key": False}


@pytest.mark.parametrize("targets,ff,err,msg", [
    (["nope"], [], ValueError, "match no Linear"),
    (["key"], ["output.dense"], ValueError, "subset"),
    (["key", "value"], r".*output\.dense", ValueError, "selects none"),
    ("(", [], ValueError, "does not compile"),
    (["key"], "(", ValueError, "does not compile"),
    (["key"], 3, TypeError, "feedforward"),
    ([], [], TypeError, "targets"),
])
def test_bad_targets_raise_and_leave_the_model_unchanged(targets, ff, err, msg):
    for lib, net in ((ia3, tiny_net()), (tia3, torch_twin(tiny_net()))):
        before = [n for n, _ in net.named_parameters()]
        with pytest.raises(err, match=msg):
            lib.attach_ia3(net.bert, targets, ff)
        assert [n for n, _ in net.named_parameters()] == before and not lib.ia3_layers(net)
        if lib is ia3:
            assert not any(m.frozen for _, m in net.named_modules())
        else:
            assert all(p.requires_grad for p in net.parameters())


def test_double_attach_and_bad_modules():
    net = tiny_net()
    ia3.attach_ia3(net.bert)
    with pytest.raises(ValueError, match="already carries"):
        ia3.attach_ia3(net.bert)
    with pytest.raises(TypeError, match="NumPy Module"):
        ia3.attach_ia3(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="nn.Linear"):
        ia3.IA3Linear(nn.LayerNorm(3))
    with pytest.raises(TypeError, match="feedforward"):
        ia3.IA3Linear(base_linear(), "yes")
    layer = ia3.IA3Linear(base_linear())
    with pytest.raises(ValueError, match="last dimension"):
        layer(np.ones((2, 6)))
    layer.p["ia3_l"][1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        layer.merge()
    assert not layer.merged


# ----------------------------------------------------------------------------- torch twin
def test_torch_twin_equals_numpy_outputs_gradients_and_merge():
    net = tiny_net()
    tnet = torch_twin(net)
    tnet.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in net.named_parameters()})
    assert ia3.attach_ia3(net.bert) == tia3.attach_ia3(tnet.bert)
    randomize(ia3.ia3_layers(net.bert))
    randomize(tia3.ia3_layers(tnet.bert))
    assert [n for n, p in tnet.named_parameters() if p.requires_grad] == [n for n, _ in net.named_grads()]
    ids, mask = padded_batch(CFG.vocab_size)
    assert_twin_matches(net, tnet, ids, mask, fwd_tol=1e-10, grad_tol=1e-10)
    ia3.merge_all(net.bert)
    tia3.merge_all(tnet.bert)
    tstate = tnet.state_dict()
    assert max(np.abs(tstate[k].numpy() - v).max() for k, v in net.state_dict().items()) < 1e-15
    tia3.unmerge_all(tnet.bert)
    with pytest.raises(RuntimeError, match="not merged"):
        tia3.unmerge_all(tnet.bert)


@pytest.mark.gpu
@pytest.mark.parametrize("feedforward", [False, True])
def test_torch_twin_runs_on_cuda_and_matches_cpu(feedforward):
    torch.manual_seed(0)
    layer = tia3.IA3Linear(torch.nn.Linear(11, 5), feedforward)
    randomize({"x": layer})
    x = torch.randn(4, 11, generator=torch.Generator().manual_seed(0))
    y_cpu = layer(x)
    layer.cuda()
    assert (layer(x.cuda()).cpu() - y_cpu).abs().max().item() < 1e-5
    layer.merge()
    assert (layer(x.cuda()).cpu() - y_cpu).abs().max().item() < 1e-5


def test_real_minilm_with_ia3_numpy_equals_torch():
    from pedagogy_lib.models import load_minilm

    a = load_minilm("numpy", dtype=np.float64)
    b = load_minilm_torch(dtype=torch.float64, device="cpu")
    ia3.attach_ia3(a.bert)
    tia3.attach_ia3(b.bert)
    randomize(ia3.ia3_layers(a.bert), seed=4, scale=0.2)
    randomize(tia3.ia3_layers(b.bert), seed=4, scale=0.2)
    texts = ["a lovely morning", "horrible", "ok"]
    assert np.abs(a.pooled(texts) - b.pooled(texts)).max() <= 1e-10
    assert np.abs(a.pooled(texts) - load_minilm("numpy", dtype=np.float64).pooled(texts)).max() > 1e-3


def test_training_moves_only_the_vectors():
    """The book's training loop on the real MiniLM: only l (and the head) move, one short epoch."""
    from pedagogy_lib import data
    from pedagogy_lib.torch_ref.train import Batches, Classifier, TrainConfig, count_trainable, train_classifier

    model = load_minilm_torch(device="cpu")
    frozen = {k: v.clone() for k, v in model.bert.state_dict().items()}
    tia3.attach_ia3(model.bert)
    clf = Classifier(model.net, seed=0)
    assert count_trainable(clf) == ia3.ia3_params(counting.minilm_shape()) == 6 * (2 * 384 + 1536)
    small = data.subsample(data.polarity_task().train, 64, seed=0)
    hist = train_classifier(clf, Batches(model.tokenizer, small.tokens, small.labels, "cpu"), None,
                            TrainConfig(lr=1e-2, epochs=1, batch_size=32, head_lr=1e-2))
    assert hist.steps == 2
    layers, state = tia3.ia3_layers(model.bert), model.bert.state_dict()
    for k, v in frozen.items():  # every pretrained weight, now under …base_layer where IA³ wraps it
        p, _, leaf = k.rpartition(".")
        assert torch.equal(state[f"{p}.base_layer.{leaf}" if p in layers else k], v), k
    moved = [float((m.ia3_l.detach() - 1).abs().max()) for m in layers.values()]
    assert min(moved) > 0


# ----------------------------------------------------------------------------- peft interop
SENTENCES = ["a lovely, quiet morning", "horrible", "ok then", "IA3 rescales keys and values"]
TINY_PEFT_KEY = "base_model.model.encoder.layer.0.attention.self.key.ia3_l"
TINY_FF_KEY = "base_model.model.encoder.layer.0.output.dense.ia3_l"


def _hf():
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("peft")
    transformers.logging.set_verbosity_error()
    from pedagogy_lib import checkpoint

    return transformers.BertModel.from_pretrained(str(checkpoint.model_dir())).eval()


def hf_embed(model, texts=SENTENCES):
    from pedagogy_lib import checkpoint

    ids, mask = checkpoint.Tokenizer()(texts)
    with torch.no_grad():
        h = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state
    w = torch.from_numpy(mask).to(h.dtype)[..., None]
    return torch.nn.functional.normalize((h * w).sum(1) / w.sum(1), dim=-1).numpy()


def peft_ia3(targets, feedforward, seed=0):
    """peft's IA³ on the real MiniLM with random vectors l ~ 1 + 0.3·N(0, 1)."""
    import peft

    pm = peft.get_peft_model(_hf(), peft.IA3Config(target_modules=targets, feedforward_modules=feedforward))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "ia3_l" in n:
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return pm.eval()


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_our_ia3_adapter_loads_in_peft_with_the_same_embeddings(tmp_path, backend):
    import json

    import peft
    from safetensors.numpy import load_file

    from pedagogy_lib import models, peft_io

    ours = (load_minilm_torch(device="cpu") if backend == "torch" else models.load_minilm())
    lib = ia3 if backend == "numpy" else tia3
    lib.attach_ia3(ours.bert)
    randomize(lib.ia3_layers(ours.bert), seed=5)
    peft_io.save_adapter(ours, tmp_path, "sentence-transformers/all-MiniLM-L6-v2", fmt=ia3.PEFT_FORMAT)
    cfg = json.loads((tmp_path / peft_io.CONFIG_NAME).read_text())
    assert cfg["peft_type"] == "IA3" and len(cfg["target_modules"]) == 18 and len(cfg["feedforward_modules"]) == 6
    w = load_file(str(tmp_path / peft_io.WEIGHTS_NAME))
    assert w["base_model.model.encoder.layer.0.attention.self.key.ia3_l"].shape == (384, 1)
    assert w["base_model.model.encoder.layer.0.output.dense.ia3_l"].shape == (1, 1536)
    hf = peft.PeftModel.from_pretrained(_hf(), str(tmp_path)).eval()
    ff = sorted(n.removeprefix("base_model.model.") for n, m in hf.named_modules()
                if hasattr(m, "is_feedforward") and m.is_feedforward)
    assert ff == sorted(p for p, m in lib.ia3_layers(ours.bert).items() if m.feedforward)
    ref = hf_embed(hf)
    assert np.abs(ours.encode(SENTENCES) - ref).max() <= 1e-5
    assert np.abs(ref - hf_embed(_hf())).max() > 1e-3  # the vectors matter


@pytest.mark.parametrize("targets,feedforward,n", [
    (ia3.PAPER_TARGETS, ia3.PAPER_FEEDFORWARD, 18),
    (["key", "value", "output.dense"], ["output.dense"], 24),  # peft's BERT default (+ attention.output.dense)
])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_peft_ia3_adapter_loads_into_ours_with_the_same_embeddings(tmp_path, targets, feedforward, n, backend):
    from pedagogy_lib import models, peft_io

    pm = peft_ia3(targets, feedforward)
    pm.save_pretrained(str(tmp_path))
    ref = hf_embed(pm)
    ours = (load_minilm_torch(device="cpu") if backend == "torch" else models.load_minilm())
    paths = peft_io.load_adapter(ours, tmp_path, fmt=ia3.PEFT_FORMAT)
    assert len(paths) == n
    assert np.abs(ours.encode(SENTENCES) - ref).max() <= 1e-5
    # peft's merge (merge_and_unload) gives the weights of our merge (Eq. 6.9)
    lib = ia3 if backend == "numpy" else tia3
    lib.merge_all(ours.bert)
    merged = pm.merge_and_unload().state_dict()
    mine = {k.replace(".base_layer", ""): (v if backend == "numpy" else v.numpy())
            for k, v in ours.bert.state_dict().items() if "ia3_l" not in k}
    assert max(np.abs(merged[k].numpy() - v).max() for k, v in mine.items()) <= 1e-6
    assert np.abs(ours.encode(SENTENCES) - ref).max() <= 1e-5


# ----------------------------------------------------------------------------- bad files
def tiny_ia3_saved(d):
    from pedagogy_lib import peft_io

    bert = BertEncoder(CFG, seed=0)
    ia3.attach_ia3(bert)
    randomize(ia3.ia3_layers(bert))
    peft_io.save_adapter(bert, d, fmt=ia3.PEFT_FORMAT)
    return bert


def test_tiny_round_trip_numpy_to_torch(tmp_path):
    from pedagogy_lib import peft_io

    src = tiny_ia3_saved(tmp_path)
    dst = torch_twin(SentenceEncoder(BertEncoder(CFG, seed=0))).bert
    dst.load_state_dict({k: torch.from_numpy(v.astype(np.float64)) for k, v in
                         BertEncoder(CFG, seed=0).named_parameters()})
    tia3.attach_ia3(dst)  # filled in place
    assert peft_io.load_adapter(dst, tmp_path, fmt=ia3.PEFT_FORMAT) == sorted(ia3.ia3_layers(src))
    ids, mask = padded_batch(CFG.vocab_size)
    y = dst(torch.from_numpy(ids), torch.from_numpy(mask)).detach().numpy()
    assert np.abs(src(ids, mask) - y).max() < 1e-5


def _edit(d, weights=None, **config):
    import json

    from safetensors.numpy import load_file, save_file

    from pedagogy_lib import peft_io

    if weights is not None:
        w = load_file(str(d / peft_io.WEIGHTS_NAME))
        weights(w)
        save_file(w, str(d / peft_io.WEIGHTS_NAME), metadata={"format": "pt"})
    if config:
        cfg = json.loads((d / peft_io.CONFIG_NAME).read_text())
        cfg.update(config)
        (d / peft_io.CONFIG_NAME).write_text(json.dumps(cfg))


BAD = {
    "wrong_shape": (dict(weights=lambda w: w.__setitem__(TINY_PEFT_KEY, np.ones((11, 1), np.float32))), "has shape"),
    "transposed": (dict(weights=lambda w: w.__setitem__(TINY_FF_KEY, np.ones((20, 1), np.float32))), "input"),
    "missing_key": (dict(weights=lambda w: w.pop(TINY_PEFT_KEY)), "missing"),
    "extra_key": (dict(weights=lambda w: w.__setitem__(TINY_PEFT_KEY.replace("key", "query"),
                                                       np.ones((12, 1), np.float32))), "unexpected"),
    "nan": (dict(weights=lambda w: w.__setitem__(TINY_PEFT_KEY, np.full((12, 1), np.nan, np.float32))), "NaN"),
    "inf": (dict(weights=lambda w: w.__setitem__(TINY_FF_KEY, np.full((1, 20), np.inf, np.float32))), "NaN/inf"),
    "int_dtype": (dict(weights=lambda w: w.__setitem__(TINY_PEFT_KEY, np.ones((12, 1), np.int32))), "dtype"),
    "unknown_target": (dict(target_modules=["key", "q_proj"], feedforward_modules=[]), "do not fit"),
    "lora_file": (dict(peft_type="LORA"), "peft_type"),
    "ff_not_subset": (dict(target_modules=["key"], feedforward_modules=["dense"]), "subset"),
    "ff_type": (dict(feedforward_modules=None), "feedforward_modules"),
    "fan_in_fan_out": (dict(fan_in_fan_out=True), "fan_in_fan_out"),
    "modules_to_save": (dict(modules_to_save=["classifier"]), "modules_to_save"),
    "bad_json": (None, "not valid JSON"),
    "not_safetensors": (None, "not a valid safetensors"),
    "only_pickle": (None, "never unpickled"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_ia3_adapters_are_refused_and_leave_the_model_unchanged(tmp_path, monkeypatch, case):
    import pickle

    from pedagogy_lib import peft_io

    tiny_ia3_saved(tmp_path)
    edits, match = BAD[case]
    if edits is not None:
        _edit(tmp_path, **edits)
    elif case == "bad_json":
        (tmp_path / peft_io.CONFIG_NAME).write_text("{target_modules: [")
    elif case == "not_safetensors":
        (tmp_path / peft_io.WEIGHTS_NAME).write_bytes(pickle.dumps({TINY_PEFT_KEY: np.ones((12, 1))}))
    else:
        (tmp_path / peft_io.WEIGHTS_NAME).rename(tmp_path / "adapter_model.bin")

    def no_unpickling(*a, **k):
        raise AssertionError("something tried to unpickle")

    for mod, name in ((pickle, "load"), (pickle, "loads"), (torch, "load")):
        monkeypatch.setattr(mod, name, no_unpickling)
    bert = BertEncoder(CFG, seed=0)
    snap = {k: v.copy() for k, v in bert.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        peft_io.load_adapter(bert, tmp_path, fmt=ia3.PEFT_FORMAT)
    now = bert.state_dict()
    assert sorted(now) == sorted(snap) and all(np.array_equal(now[k], snap[k]) for k in snap)
    assert not ia3.ia3_layers(bert) and not any(m.frozen for _, m in bert.named_modules())


def test_existing_layers_that_do_not_fit_are_refused(tmp_path):
    from pedagogy_lib import peft_io

    tiny_ia3_saved(tmp_path)
    other = BertEncoder(CFG, seed=0)
    ia3.attach_ia3(other, ["key", "value", "output.dense"], [])  # output.dense scaled on the output side
    with pytest.raises(ValueError, match="placed"):
        peft_io.load_adapter(other, tmp_path, fmt=ia3.PEFT_FORMAT)
    merged = BertEncoder(CFG, seed=0)
    ia3.attach_ia3(merged)
    ia3.merge_all(merged)
    snap = {k: v.copy() for k, v in merged.state_dict().items()}
    with pytest.raises(ValueError, match="merged"):
        peft_io.load_adapter(merged, tmp_path, fmt=ia3.PEFT_FORMAT)
    assert all(np.array_equal(v, snap[k]) for k, v in merged.state_dict().items())


def test_save_refuses_what_peft_cannot_express(tmp_path):
    from pedagogy_lib import peft_io

    with pytest.raises(ValueError, match="no IA³ layers"):
        peft_io.save_adapter(BertEncoder(CFG, seed=0), tmp_path, fmt=ia3.PEFT_FORMAT)
    bert = BertEncoder(CFG, seed=0)
    ia3.attach_ia3(bert)
    ia3.merge_all(bert)
    with pytest.raises(ValueError, match="merged"):
        peft_io.save_adapter(bert, tmp_path, fmt=ia3.PEFT_FORMAT)
    ia3.unmerge_all(bert)
    next(iter(ia3.ia3_layers(bert).values())).p["ia3_l"][0] = np.inf
    with pytest.raises(ValueError, match="NaN/inf"):
        peft_io.save_adapter(bert, tmp_path, fmt=ia3.PEFT_FORMAT)
    with pytest.raises(TypeError, match="dtype"):
        peft_io.save_adapter(bert, tmp_path, dtype=np.float16, fmt=ia3.PEFT_FORMAT)
    assert not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------- exercise 06.6
def _merge_right(W, b, l, feedforward):
    return (W * l[None, :], b) if feedforward else (W * l[:, None], b * l)


@pytest.mark.parametrize("wrong, message", [
    (lambda W, b, l, ff: (W * l[:, None], b) if ff else _merge_right(W, b, l, ff), "COLUMNS"),
    (lambda W, b, l, ff: _merge_right(W, b, l, ff) if ff else (W * l[None, :], b * l), "ROWS"),
    (lambda W, b, l, ff: (W * l[None, :], b * l) if ff else _merge_right(W, b, l, ff), "b stays"),
    (lambda W, b, l, ff: _merge_right(W, b, l, ff) if ff else (W * l[:, None], b), "scales the bias too"),
    (lambda W, b, l, ff: None, "a pair"),
    (lambda W, b, l, ff: (_merge_right(W, b, l, ff)[0] + 1e-3, _merge_right(W, b, l, ff)[1]), "differs"),
])
def test_exercise_merge_ia3_passes_the_merge_and_names_each_mistake(wrong, message, capsys):
    from pedagogy_lib.book.ch06 import exercises as ex
    from pedagogy_lib.book.exercises import NotYet

    ex.check_merge_ia3(_merge_right)
    assert "06.6 passed" in capsys.readouterr().out
    with pytest.raises(NotYet, match=message):
        ex.check_merge_ia3(wrong)
