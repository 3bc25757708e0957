"""Unseen inputs for Part I's engine and methods (session 11, task a).

The fixes first, each with the input that showed the bug:

* ``nn.Module.load_state_dict`` and ``torch_ref.encoder.load_numpy_weights`` checked a value
  for NaN/inf before the cast into the model's dtype: a float64 1e39 loaded as inf into a
  float32 model;
* ``Module.freeze("weight")`` / ``unfreeze("bias")`` read the string as its letters and
  silently froze (unfroze) nothing;
* ``nn.Linear(True, 3)`` and ``nn.Linear(2.0, 3)`` failed inside NumPy with no name;
* the backward of LoRA, DoRA and IA³ after a merged forward (then ``unmerge``) mixed the
  input of that merged pass with what an older unmerged pass had kept: a wrong gradient,
  silently;
* ``stats.paired`` took (d − d̄)² unscaled: differences of 1e200 "overflowed" and of 1e-300
  gave SE = 0 and an order instead of a tie; a level of "0.9" failed with a bare TypeError.

Then probes that found nothing, kept as tests: the NumPy encoder against its torch twin with
one head, head size 1 and width 1, with long virtual-token prefixes; hand-written backward
against float64 finite differences on odd widths, rank min(d_in, d_out) and transposed or
Fortran-ordered inputs; merge refusals leaving weights bitwise equal; NumPy integer ranks.
"""
import numpy as np
import pytest
import torch

from pedagogy_lib import dora, ia3, lora, nn, stats
from pedagogy_lib import gradcheck as gc
from pedagogy_lib import prefix as px
from pedagogy_lib import prompt as pt
from pedagogy_lib.bert import BertConfig, BertEncoder
from pedagogy_lib.torch_ref import dora as tdora
from pedagogy_lib.torch_ref import ia3 as tia3
from pedagogy_lib.torch_ref import lora as tlora
from pedagogy_lib.torch_ref import prefix as tpx
from pedagogy_lib.torch_ref import prompt as tpt
from pedagogy_lib.torch_ref.encoder import build_encoder, load_numpy_weights
from twin_checks import assert_twin_matches, tiny_encoder, torch_twin


def snapshot(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def same_bits(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)


def small_config(d=6, heads=2, max_positions=12):
    return BertConfig(vocab_size=11, hidden_size=d, num_hidden_layers=1, num_attention_heads=heads,
                      intermediate_size=5, max_position_embeddings=max_positions)


# ----------------------------------------------------------------------------- load into a narrower dtype
def test_load_state_dict_judges_values_in_the_models_dtype():
    lin = nn.Linear(3, 2)                                   # float32
    before = snapshot(lin)
    big = {"weight": np.full((2, 3), 1e39), "bias": np.zeros(2)}   # finite in float64, inf in float32
    with pytest.raises(ValueError, match=r"weight cast to the model's float32.*NaN/inf"):
        lin.load_state_dict(big)
    assert same_bits(snapshot(lin), before)
    wide = nn.Linear(3, 2, dtype=np.float64).load_state_dict(big)  # a float64 model holds it
    assert np.all(wide.p["weight"] == 1e39)


def test_torch_load_numpy_weights_judges_values_in_the_models_dtype():
    cfg = small_config()
    weights = {k: v.astype(np.float64) for k, v in BertEncoder(cfg).state_dict().items()}
    weights["embeddings.word_embeddings.weight"][0, 0] = 1e39
    model = build_encoder(cfg, None, dtype=torch.float32, device="cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="word_embeddings.weight has values beyond the range"):
        load_numpy_weights(model, weights, "encoder")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    wide = build_encoder(cfg, weights, dtype=torch.float64, device="cpu")
    assert wide.embeddings.word_embeddings.weight[0, 0].item() == 1e39


# ----------------------------------------------------------------------------- freeze by name, sizes
@pytest.mark.parametrize("call", ["freeze", "unfreeze"])
def test_freeze_and_unfreeze_refuse_a_bare_string(call):
    lin = nn.Linear(3, 2)
    lin.freeze(["bias"])
    frozen, grads = set(lin.frozen), dict(lin.g)
    with pytest.raises(TypeError, match=rf"{call}: names must be a list.*\['weight'\]"):
        getattr(lin, call)("weight")                         # used to act on {'w','e','i','g','h','t'}
    assert lin.frozen == frozen and lin.g == grads
    getattr(lin, call)(["weight"])                           # the list form still works
    assert ("weight" in lin.frozen) == (call == "freeze")


@pytest.mark.parametrize("d_in,err", [(True, TypeError), (2.0, TypeError), (np.float64(3), TypeError), (0, ValueError)])
def test_linear_sizes_are_ints_and_name_themselves(d_in, err):
    with pytest.raises(err, match="Linear: d_in"):
        nn.Linear(d_in, 3)
    with pytest.raises(err, match="Linear: d_out"):
        nn.Linear(3, d_in)


def test_linear_takes_numpy_int_sizes_as_ints():
    lin = nn.Linear(np.int64(7), np.uint8(13), dtype=np.float64)
    assert type(lin.d_in) is int and type(lin.d_out) is int and lin.p["weight"].shape == (13, 7)


# ----------------------------------------------------------------------------- backward after a merged pass
LAYERS = {
    "lora": lambda b: lora.LoRALinear(b, 2, 3.0, rslora=True),
    "dora": lambda b: dora.DoRALinear(b, 2, 3.0, detach_norm=False),
    "ia3-output": lambda b: ia3.IA3Linear(b),
    "ia3-input": lambda b: ia3.IA3Linear(b, feedforward=True),
}


def trained_layer(kind, d_in=5, d_out=7):
    layer = LAYERS[kind](nn.Linear(d_in, d_out, dtype=np.float64, rng=np.random.default_rng(1)))
    rng = np.random.default_rng(2)
    for v in layer.p.values():
        v[...] = rng.uniform(0.5, 1.5, v.shape)             # away from init, l and m away from 0
    return layer


@pytest.mark.parametrize("kind", list(LAYERS))
def test_backward_after_a_merged_forward_is_refused(kind):
    rng = np.random.default_rng(0)
    x_old, x_new, dy = rng.standard_normal((2, 5)), rng.standard_normal((3, 5)), rng.standard_normal((3, 7))
    layer = trained_layer(kind)
    layer(x_old)                 # an unmerged pass keeps x_old's activations
    layer.merge()
    layer(x_new)                 # a merged pass (evaluation) on another batch
    layer.unmerge()
    before = {k: v.copy() for k, v in layer.g.items()}
    with pytest.raises(RuntimeError, match="last forward ran merged"):
        layer.backward(dy)       # used to mix x_old's kept values with x_new's
    assert layer.g.keys() == before.keys()
    # forward again: the backward is that of x_new, equal to a layer that was never merged
    fresh = trained_layer(kind)
    for lay in (layer, fresh):
        lay.zero_grad()
        lay(x_new)
    dx, dx_fresh = layer.backward(dy), fresh.backward(dy)
    assert np.abs(dx - dx_fresh).max() < 1e-12
    for (name, g), (_, g_fresh) in zip(layer.named_grads(), fresh.named_grads()):
        assert np.abs(g - g_fresh).max() < 1e-12, name


@pytest.mark.parametrize("kind", list(LAYERS))
def test_merge_then_unmerge_without_a_merged_pass_keeps_the_backward(kind):
    rng = np.random.default_rng(3)
    x, dy = rng.standard_normal((4, 5)), rng.standard_normal((4, 7))
    layer, fresh = trained_layer(kind), trained_layer(kind)
    layer(x)
    layer.merge().unmerge()      # nothing ran merged: what the pass kept still holds
    fresh(x)
    assert np.abs(layer.backward(dy) - fresh.backward(dy)).max() < 1e-12


# ----------------------------------------------------------------------------- paired intervals
def test_paired_is_scale_free_far_from_one():
    big = stats.paired([1e200, 3e200], [0.0, 0.0])          # used to say "overflow float64"
    assert big["tie"] and big["se"] == pytest.approx(1e200)
    tiny = stats.paired([1e-300, 2e-300], [0.0, 0.0])       # used to give se = 0 and "a > b"
    assert tiny["tie"] and tiny["se"] == pytest.approx(5e-301)
    one = stats.paired([1.0, 2.0], [0.0, 0.0])
    for scale in (2.0 ** 700, 2.0 ** -700):
        far = stats.paired([scale, 2 * scale], [0.0, 0.0])
        assert far["tie"] == one["tie"]
        for k in ("mean", "se", "lo", "hi"):
            assert far[k] == pytest.approx(one[k] * scale, rel=1e-12)


def test_paired_on_ordinary_scores_is_the_plain_formula_bit_for_bit():
    """The scaling is by a power of two: the chapters' stored intervals do not move."""
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 10):
        a, b = rng.uniform(0.4, 0.95, n), rng.uniform(0.4, 0.95, n)
        d = a - b
        got = stats.paired(a, b)
        assert got["mean"] == float(d.mean()) and got["se"] == float(d.std(ddof=1) / np.sqrt(n))


@pytest.mark.parametrize("level", ["0.9", None, True, float("nan"), 1.0])
def test_paired_names_a_level_that_is_not_a_probability(level):
    with pytest.raises(ValueError, match="level must be a number in"):
        stats.paired([0.5, 0.6], [0.4, 0.6], level=level)


def test_paired_with_two_seeds_and_zero_variance():
    two = stats.paired([0.8, 0.9], [0.7, 0.7])
    assert two["n"] == 2 and two["lo"] < two["mean"] < two["hi"]
    same = stats.paired([0.8, 0.8], [0.8, 0.8])               # identical runs: a tie at 0
    assert same["tie"] and same["lo"] == same["hi"] == 0.0
    with pytest.raises(ValueError, match="NaN or inf"):
        stats.paired([0.8, float("nan")], [0.8, 0.8])


# ----------------------------------------------------------------------------- probes that found nothing
def attach_both(kind, net, tnet, m):
    numpy_mod, torch_mod = {"prefix": (px, tpx), "mlp": (px, tpx), "deep": (pt, tpt), "prompt": (pt, tpt)}[kind]
    for mod, model in ((numpy_mod, net), (torch_mod, tnet)):
        if kind == "prefix":
            mod.attach_prefix(model, m, seed=3)
        elif kind == "mlp":
            mod.attach_prefix(model, m, reparam=2, seed=3)
        elif kind == "deep":
            mod.attach_deep_prompt(model, m, seed=3)
        else:
            mod.attach_prompt(model, m, seed=3)


@pytest.mark.parametrize("d,heads", [(6, 1), (6, 6), (1, 1)])   # one head; head size 1; width 1
@pytest.mark.parametrize("kind,m,B,T", [("prefix", 1, 1, 1), ("prefix", 30, 2, 3), ("mlp", 30, 1, 2),
                                        ("deep", 30, 2, 1), ("prompt", 11, 1, 1)])
def test_encoder_twins_agree_on_degenerate_heads_and_long_virtual_tokens(d, heads, kind, m, B, T):
    """A prompt of 11 with 1 token fills all 12 positions; prefixes take no position at all."""
    net = tiny_encoder(small_config(d, heads))
    tnet = torch_twin(net)
    tnet.load_state_dict({k: torch.from_numpy(v) for k, v in net.state_dict().items()})
    attach_both(kind, net, tnet, m)
    ids = np.random.default_rng(0).integers(0, 11, (B, T))
    mask = np.ones((B, T), np.int64)
    mask[0, T - 1:] = 0 if T > 1 else 1
    assert_twin_matches(net, tnet, ids, mask, 1e-12, 1e-10)


@pytest.mark.parametrize("d,heads,m", [(1, 1, 1), (7, 7, 40), (7, 1, 40), (13, 13, 1)])
def test_attention_backward_against_finite_differences_with_one_head_or_head_size_one(d, heads, m):
    rng = np.random.default_rng(d + m)
    att = nn.SelfAttention(d, heads, rng=np.random.default_rng(1), dtype=np.float64)
    att.prefix = pt.DeepPrompt(att, m, np.random.default_rng(2)) if m > 1 else px.Prefix(m, d, rng, np.float64)
    x = np.asfortranarray(rng.standard_normal((2, 3, d)))
    mask = np.array([[1, 1, 0], [1, 1, 1]])
    errors = gc.check_module(att, x, mask)
    gc.pop_exact_zeros(att, errors)
    assert errors and max(errors.values()) < 1e-6, errors


@pytest.mark.parametrize("kind", list(LAYERS))
@pytest.mark.parametrize("d_in,d_out", [(7, 13), (13, 7), (33, 2)])
def test_method_backward_against_finite_differences_on_transposed_input_at_full_rank(kind, d_in, d_out):
    r = min(d_in, d_out)
    base = nn.Linear(d_in, d_out, dtype=np.float64, rng=np.random.default_rng(5))
    layer = {"lora": lambda: lora.LoRALinear(base, r, 3.0, rslora=True),
             "dora": lambda: dora.DoRALinear(base, r, 3.0, detach_norm=False),
             "ia3-output": lambda: ia3.IA3Linear(base),
             "ia3-input": lambda: ia3.IA3Linear(base, feedforward=True)}[kind]()
    rng = np.random.default_rng(6)
    for v in layer.p.values():
        v[...] = rng.uniform(0.5, 1.5, v.shape)
    x = rng.standard_normal((d_in, 2, 3)).transpose(1, 2, 0)   # non-contiguous (2, 3, d_in)
    errors = gc.check_module(layer, x)
    assert set(errors) >= {"input"} | set(layer.p) and max(errors.values()) < 1e-6, errors


NUMPY_ATTACH = {"lora": lora.attach_lora, "dora": dora.attach_dora}
TORCH_ATTACH = {"lora": tlora.attach_lora, "dora": tdora.attach_dora}


@pytest.mark.parametrize("kind", ["lora", "dora"])
def test_numpy_integer_ranks_are_ints_and_bools_floats_are_refused_before_changes(kind):
    net = BertEncoder(small_config(6, 2))
    before = snapshot(net)
    for bad, err in ((True, TypeError), (2.0, TypeError), (np.float32(2), TypeError), (7, ValueError),
                     (0, ValueError), (np.int64(-1), ValueError)):
        with pytest.raises(err, match="rank r"):
            NUMPY_ATTACH[kind](net, r=bad)
        assert same_bits(snapshot(net), before) and not net.frozen
    with pytest.raises(ValueError, match="nothing|match no Linear"):
        NUMPY_ATTACH[kind](net, targets=("querry",), r=2)
    assert same_bits(snapshot(net), before)
    NUMPY_ATTACH[kind](net, r=np.int16(6))                     # r = min(d_in, d_out) as a NumPy int
    layers = (lora.lora_layers if kind == "lora" else dora.dora_layers)(net)
    assert all(type(m.r) is int and m.r == 6 for m in layers.values())
    tnet = build_encoder(small_config(6, 2), None, dtype=torch.float64, device="cpu")
    TORCH_ATTACH[kind](tnet, r=np.uint8(1))
    assert all(m.r == 1 for m in tnet.modules() if hasattr(m, "lora_A"))


@pytest.mark.parametrize("kind", list(LAYERS))
def test_merge_twice_and_unmerge_unmerged_leave_the_weights_bitwise_equal(kind):
    layer = trained_layer(kind)
    before = snapshot(layer)
    with pytest.raises(RuntimeError, match="not merged"):
        layer.unmerge()
    assert same_bits(snapshot(layer), before)
    layer.merge()
    merged = snapshot(layer)
    with pytest.raises(RuntimeError, match="already merged"):
        layer.merge()
    assert same_bits(snapshot(layer), merged)
    x = np.random.default_rng(4).standard_normal((1, 1, 5))    # batch 1, one token
    y_merged = layer(x)
    layer.unmerge()
    assert np.abs(layer(x) - y_merged).max() < 1e-12
    assert all(np.abs(v - before[k]).max() < 1e-12 for k, v in snapshot(layer).items())


@pytest.mark.parametrize("kind", ["lora", "dora", "ia3"])
def test_torch_twins_merge_twice_is_refused_with_weights_bitwise_equal(kind):
    base = torch.nn.Linear(5, 7).double()
    layer = {"lora": lambda: tlora.LoRALinear(base, 1, 2.0), "dora": lambda: tdora.DoRALinear(base, 5, 2.0),
             "ia3": lambda: tia3.IA3Linear(base, feedforward=True)}[kind]()
    with torch.no_grad():
        for p in layer.parameters():
            if p.requires_grad:
                p.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(0))
    with pytest.raises(RuntimeError, match="not merged"):
        layer.unmerge()
    layer.merge()
    merged = {k: v.clone() for k, v in layer.state_dict().items()}
    with pytest.raises(RuntimeError, match="already merged"):
        layer.merge()
    assert all(torch.equal(v, merged[k]) for k, v in layer.state_dict().items())


@pytest.mark.parametrize("layer_dtype,x_dtype", [(np.float64, np.float32), (np.float32, np.float64)])
@pytest.mark.parametrize("kind", list(LAYERS))
def test_mixed_precision_input_computes_wide_and_keeps_gradients_in_the_layers_dtype(kind, layer_dtype, x_dtype):
    layer = LAYERS[kind](nn.Linear(5, 7, dtype=layer_dtype, rng=np.random.default_rng(1)))
    x = np.random.default_rng(0).standard_normal((2, 5)).astype(x_dtype)
    y = layer(x)
    dx = layer.backward(np.ones_like(y))
    assert y.dtype == dx.dtype == np.float64
    assert all(g.dtype == layer_dtype for _, g in layer.named_grads())


# ----------------------------------------------------------------------------- training loop
def test_train_classifier_refuses_labels_beyond_the_head_before_any_step():
    """A label 2 for a 2-class head used to fail in cross_entropy only when its batch came up,
    after the earlier batches had already trained the model."""
    from pedagogy_lib.torch_ref import train as T
    from pedagogy_lib.torch_ref.encoder import SentenceEncoder

    cfg = small_config()
    clf = T.Classifier(SentenceEncoder(build_encoder(cfg, None, dtype=torch.float64, device="cpu")))

    def tokenizer(texts):
        ids = np.array([[1 + len(t) % 9, 2] for t in texts])
        return ids, np.ones_like(ids)

    ok = T.Batches(tokenizer, ["a", "bb", "ccc", "dd"], [0, 1, 0, 1], "cpu")
    bad = T.Batches(tokenizer, ["a", "bb", "ccc", "dd"], [0, 1, 0, 2], "cpu")   # the 2 is in the last batch
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    for train, val in ((bad, None), (ok, bad)):
        with pytest.raises(ValueError, match=r"labels reach 2, but the head has 2 classes"):
            T.train_classifier(clf, train, val, T.TrainConfig(epochs=1, batch_size=2, lr=1e-2))
        assert all(torch.equal(v, before[k]) for k, v in clf.state_dict().items())
    T.train_classifier(clf, ok, ok, T.TrainConfig(epochs=1, batch_size=2, lr=1e-2))   # valid labels train
    assert any(not torch.equal(v, before[k]) for k, v in clf.state_dict().items())
