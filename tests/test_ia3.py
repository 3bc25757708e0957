"""IA³ (chapter 06): finite differences for both hand-written backwards (Eqs. 6.7–6.8), the
identity at init, merge/unmerge (Eq. 6.9), the count (Eq. 6.10), targeting like peft, the
torch twin, and bad input."""
import numpy as np
import pytest
import torch

from pedagogy_lib import counting, ia3, nn
from pedagogy_lib.bert import BertConfig, BertEncoder, SentenceEncoder
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
    assert net.num_parameters(trainable_only=True) == counting.ia3_params(SHAPE) == 3 * (2 * 12 + 20)
    # peft's default for BERT: the suffix "output.dense" also picks attention.output.dense (input side)
    other = tiny_net()
    chosen = ia3.attach_ia3(other.bert, ["key", "value", "output.dense"], ["output.dense"])
    assert sum(chosen.values()) == 6 and len(chosen) == 12
    assert other.num_parameters(trainable_only=True) == counting.ia3_params(
        SHAPE, ("key", "value", "attn_out", "ffn_out"), ("attn_out", "ffn_out"))


def test_counting_ia3_params_checks_its_arguments():
    with pytest.raises(ValueError, match="subset"):
        counting.ia3_params(SHAPE, ("key", "value"), ("ffn_out",))
    with pytest.raises(ValueError, match="distinct"):
        counting.ia3_params(SHAPE, ("key", "nope"), ())
    with pytest.raises(TypeError):
        counting.ia3_params("BERT", ("key",), ())


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


def test_real_minilm_with_ia3_numpy_equals_torch():
    from pedagogy_lib.models import load_minilm

    a = load_minilm("numpy", dtype=np.float64)
    b = load_minilm("torch", dtype=torch.float64, device="cpu")
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
    from pedagogy_lib.models import load_minilm
    from pedagogy_lib.torch_ref.train import Batches, Classifier, TrainConfig, count_trainable, train_classifier

    model = load_minilm("torch", device="cpu")
    frozen = {k: v.clone() for k, v in model.bert.state_dict().items()}
    tia3.attach_ia3(model.bert)
    clf = Classifier(model.net, seed=0)
    assert count_trainable(clf) == counting.ia3_params(counting.minilm_shape()) == 6 * (2 * 384 + 1536)
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
