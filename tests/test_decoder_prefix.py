"""Prefix-tuning and P-Tuning v2 on the decoder (chapter 10, Eqs. 10.6–10.9): the NumPy
backward against finite differences, the torch twin against the NumPy original, the
positions convention (a prefix made of a KV cache is those tokens typed first), folding,
the KV cache, and bad input."""
import numpy as np
import pytest
import torch

from pedagogy_lib import decoder as D, decoder_io as IO, decoder_prefix as DP
from pedagogy_lib.gradcheck import compare, numerical_grad
from pedagogy_lib.nn import get_submodule
from pedagogy_lib.torch_ref import decoder_peft as P
from pedagogy_lib.torch_ref.decoder import build_decoder
from test_decoder_peft import build, train_briefly


def tiny(seed=1):
    """Grouped-query heads (4 query heads share 2 kv heads) and RoPE, as stdlib-4m has."""
    cfg = D.DecoderConfig(vocab_size=19, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16)
    return D.Decoder(cfg, seed=seed, dtype=np.float64, std=0.3)


@pytest.mark.parametrize("hidden", [None, 5], ids=["ptuning-v2", "prefix-mlp"])
def test_prefix_gradients_match_finite_differences(hidden):
    """Eq. 10.8: the hand-written prefix gradients (through the MLP for prefix-tuning) of the
    response-masked loss, against central differences; nothing of the decoder trains."""
    model = DP.PrefixedDecoder(tiny(), m=3, hidden=hidden, seed=2)
    rng = np.random.default_rng(0)
    for _, p in model.named_parameters(trainable_only=True):
        p[...] += 0.3 * rng.standard_normal(p.shape)
    ids = rng.integers(0, 19, (2, 9))
    mask = np.zeros((2, 8), np.int64)
    mask[:, 3:] = 1

    def loss():
        return D.next_token_loss(model(ids), ids, mask)[0]

    model.zero_grad()
    model.backward(D.next_token_loss(model(ids), ids, mask)[1])
    trained = dict(model.named_parameters(trainable_only=True))
    want = {"key", "value"} if hidden is None else {"weight", "bias"}
    assert trained and {n.rsplit(".", 1)[1] for n in trained} == want
    assert not any(n.startswith("net.") and "prefix" not in n for n in trained)
    for name, p in trained.items():
        owner, leaf = name.rsplit(".", 1)
        num = numerical_grad(loss, p, max_entries=15)
        assert compare(get_submodule(model, owner).g[leaf], num) < 1e-6, name


def test_a_prefix_made_of_a_kv_cache_is_those_tokens_typed_first():
    """Eq. 10.7: prefix keys rotated at 0…m−1, real tokens at m…m+T−1; with the cache of
    tokens u as the prefix, the logits of x are the plain decoder's on [u; x], sliced."""
    model = DP.PrefixedDecoder(tiny(), m=4, seed=5)
    u = DP.sampled_rows(19, 4, 5)
    x = np.random.default_rng(1).integers(0, 19, (2, 7))
    full = tiny().forward(np.concatenate([np.tile(u, (2, 1)), x], 1))[:, 4:]   # the same weights, no prefix
    assert np.abs(model(x) - full).max() < 1e-12


def test_kv_cache_with_a_prefix_equals_the_full_forward():
    """Incremental decoding with the prefix (the cache holds the real tokens only)."""
    model = DP.PrefixedDecoder(tiny(), m=3, hidden=4, seed=0)
    x = np.random.default_rng(2).integers(0, 19, (1, 6))
    full = model(x)
    cache = model.net.new_cache()
    first = model.net.forward(x[:, :4], model.m, cache)
    step = model.net.forward(x[:, 4:5], model.m + 4, cache)
    assert np.abs(first - full[:, :4]).max() < 1e-12 and np.abs(step[:, 0] - full[:, 4]).max() < 1e-12
    with pytest.raises(RuntimeError, match="full-sequence"):
        model.backward(np.ones_like(step))


def test_fold_keeps_the_logits_bit_for_bit_and_only_the_prefix():
    model = DP.PrefixedDecoder(tiny(), m=3, hidden=6, seed=0)
    x = np.random.default_rng(3).integers(0, 19, (2, 5))
    before, n_mlp = model(x), model.num_parameters(trainable_only=True)
    model.fold()
    cfg = model.net.config
    assert np.array_equal(model(x), before)
    assert model.num_parameters(trainable_only=True) == 2 * cfg.num_hidden_layers * 3 * DP.kv_width(cfg) < n_mlp
    with pytest.raises(ValueError, match="nothing to fold"):
        model.fold()


@pytest.mark.parametrize("hidden", [None, 64], ids=["ptuning-v2", "prefix-mlp"])
def test_torch_twin_equals_numpy_on_the_gqa_checkpoint(hidden):
    """stdlib-4m (8 query / 4 kv heads, RoPE) in float64: the torch PrefixedDecoder and ours
    start from the same prefix, give the same logits and the same prefix gradients."""
    cfg, weights, _, _ = IO.read_checkpoint(IO.checkpoint_dir("stdlib-4m"))
    assert cfg.num_key_value_heads < cfg.num_attention_heads
    net = D.Decoder(cfg, dtype=np.float64)
    net.load_state_dict({k: v.astype(np.float64) for k, v in weights.items()})
    ours = DP.PrefixedDecoder(net, m=5, hidden=hidden, seed=7)
    twin = P.PrefixedDecoder(build_decoder(cfg, weights, dtype=torch.float64), m=5, hidden=hidden, seed=7)
    assert np.abs(ours.prefix_tensors() - twin.prefix_tensors().detach().numpy()).max() < 1e-10
    rng = np.random.default_rng(8)
    ids = rng.integers(1, cfg.vocab_size, (2, 11))
    mask = np.zeros((2, 10), np.int64)
    mask[:, 4:] = 1
    logits = ours(ids)
    ours.zero_grad()
    ours.backward(D.next_token_loss(logits, ids, mask)[1])
    t_logits = twin(torch.from_numpy(ids))
    P.masked_loss(t_logits, torch.from_numpy(ids), torch.from_numpy(mask)).backward()
    assert np.abs(logits - t_logits.detach().numpy()).max() < 1e-9
    mine = dict(ours.named_grads())
    for name, p in twin.named_parameters():
        if not p.requires_grad:
            continue
        if hidden is None:   # (L, 2, m, w) against layer ℓ's Prefix key / value
            g = np.stack([np.stack([mine[f"net.model.layers.{i}.self_attn.prefix.{kv}"] for kv in ("key", "value")])
                          for i in range(cfg.num_hidden_layers)])
        else:
            g = mine[f"prefix_encoder.{name}"]
        assert np.abs(g - p.grad.numpy()).max() < 1e-9 * max(1.0, np.abs(g).max()), name


def test_bad_input_is_refused_and_changes_nothing():
    net = tiny()
    for m in (0, -2, 2.5, "3", True):
        with pytest.raises((ValueError, TypeError), match="prefix length m"):
            DP.PrefixedDecoder(net, m=m)
    with pytest.raises(ValueError, match="MLP hidden size"):
        DP.PrefixedDecoder(net, m=2, hidden=0)
    with pytest.raises(ValueError, match="no room"):
        DP.PrefixedDecoder(net, m=16)
    assert all(layer.self_attn.prefix is None for layer in net.model.layers)
    assert net.num_parameters(trainable_only=True) == net.num_parameters()   # nothing frozen yet
    model = DP.PrefixedDecoder(net, m=2, seed=0)
    with pytest.raises(ValueError, match="already has a prefix"):
        DP.PrefixedDecoder(net, m=2)
    before = model.prefix_tensors().copy()
    good = np.zeros_like(before)
    bad_nan = good.copy()
    bad_nan[1, 0, 1, 3] = np.nan
    for bad, msg in ((good[:, :, :1], "got shape"), (good[..., :-1], "got shape"), (bad_nan, "NaN"),
                     (good.tolist(), "numpy array")):
        with pytest.raises((ValueError, TypeError), match=msg):
            model.load_prefix(bad)
        assert np.array_equal(model.prefix_tensors(), before)
    with pytest.raises(ValueError, match="positions exceed"):
        model(np.zeros((1, 15), np.int64))   # 2 prefix + 15 real positions > 16
    with pytest.raises(TypeError, match="Decoder"):
        DP.PrefixedDecoder(object(), m=2)
    with pytest.raises(ValueError, match="prefix length m"):
        P.PrefixedDecoder(build_decoder(net.config), m=0)


@pytest.mark.parametrize("method", ["prefix", "ptuning-v2"])
def test_training_moves_only_the_prefix_and_lowers_the_loss(method):
    net, before, losses = train_briefly(method)
    assert losses[-1] < losses[0]
    for n, p in net.named_parameters():
        assert torch.equal(p, before[n]) == n.startswith("net."), n
    cfg = net.config
    folded = cfg.num_hidden_layers * 2 * P.PREFIX_TOKENS * cfg.num_key_value_heads * cfg.head_dim
    assert (P.trainable(net) == folded) == (method == "ptuning-v2")


def test_ptuning_v2_starts_as_the_soft_prompt_does():
    """Both arms start from the same 16 sampled tokens (the chapter's claim): before training,
    P-Tuning v2 and prompt tuning are the same function of the input."""
    x = torch.randint(1, 2000, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = build("ptuning-v2", seed=4)(x), build("prompt", seed=4)(x)
    assert torch.allclose(a, b, atol=1e-4)
    with torch.no_grad():
        assert not torch.allclose(build("ptuning-v2", seed=5)(x), b, atol=1e-2)
