"""Chapter 09's decoder: every hand-written backward against finite differences (float64),
the KV cache against full recomputation, the torch twin against the NumPy reference, and
both against transformers' Llama on the same weights."""
import numpy as np
import pytest
import torch

from pedagogy_lib import decoder as D
from pedagogy_lib.gradcheck import check_module, compare, numerical_grad
from pedagogy_lib.torch_ref import decoder as TD

TOL = 1e-6


def tiny(tie=True, kv=2, seed=1, dtype=np.float64, **kw):
    cfg = D.DecoderConfig(vocab_size=23, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=kv, max_position_embeddings=12,
                          tie_word_embeddings=tie, **kw)
    model = D.Decoder(cfg, seed=seed, dtype=dtype, std=0.3)
    rng = np.random.default_rng(seed + 7)
    for name, p in model.named_parameters():  # non-trivial norm gains
        if "norm" in name:
            p += 0.3 * rng.standard_normal(p.shape)
    return model


def assert_small(errors, tol=TOL):
    bad = {k: v for k, v in errors.items() if not v < tol}
    assert errors and not bad, bad


# ------------------------------------------------------------------ pieces
def test_rmsnorm_backward_fd():
    norm = D.RMSNorm(7, eps=1e-5, dtype=np.float64)
    norm.p["weight"] += np.random.default_rng(0).standard_normal(7)
    x = np.random.default_rng(1).standard_normal((3, 4, 7)) * 2
    assert_small(check_module(norm, x, max_entries=None))


def test_rope_is_a_rotation_with_relative_scores():
    rng = np.random.default_rng(0)
    q, k = rng.standard_normal(8), rng.standard_normal(8)
    cos, sin = D.rope_tables(np.arange(40), 8)
    rq, rk = D.apply_rope(q, cos, sin), D.apply_rope(k, cos, sin)
    assert np.allclose(np.linalg.norm(rq, axis=1), np.linalg.norm(q))      # norms kept
    s = rq @ rk.T   # score depends only on m − n (Eq. 9.5)
    for shift in (1, 5, 17):
        assert np.allclose(np.diag(s, shift)[: 40 - shift - 5], np.diag(s, shift)[5: 40 - shift])
    dy = rng.standard_normal((40, 8))
    x = rng.standard_normal((40, 8))
    # the backward is the transpose: <dy, R x> = <Rᵀ dy, x>
    assert np.isclose((dy * D.apply_rope(x, cos, sin)).sum(), (D.apply_rope_backward(dy, cos, sin) * x).sum())


def test_swiglu_backward_fd():
    cfg = D.DecoderConfig(vocab_size=5, hidden_size=8, intermediate_size=10, num_attention_heads=2,
                          num_key_value_heads=2)
    mlp = D.SwiGLU(cfg, np.random.default_rng(0), np.float64, 0.5, 0.5)
    x = np.random.default_rng(1).standard_normal((2, 3, 8))
    assert_small(check_module(mlp, x, max_entries=None))


@pytest.mark.parametrize("kv", [4, 2, 1])
def test_attention_backward_fd(kv):
    cfg = D.DecoderConfig(vocab_size=5, hidden_size=16, intermediate_size=8, num_attention_heads=4,
                          num_key_value_heads=kv)
    att = D.CausalSelfAttention(cfg, np.random.default_rng(0), np.float64, 0.4, 0.4)
    x = np.random.default_rng(1).standard_normal((2, 5, 16))
    assert_small(check_module(att, x, max_entries=60))


def test_causal_mask_gives_zero_gradient_to_the_future():
    model = tiny()
    ids = np.random.default_rng(0).integers(0, 23, (1, 8))
    x = np.random.default_rng(1).standard_normal((1, 8, 16))
    layer = model.model.layers[0]
    y = layer(x)
    dy = np.zeros_like(y)
    dy[0, 3] = 1.0        # a loss on position 3 only
    dx = layer.backward(dy)
    assert np.abs(dx[0, 4:]).max() == 0.0 and np.abs(dx[0, :4]).max() > 0
    del ids


@pytest.mark.parametrize("tie,kv", [(True, 2), (False, 4)])
def test_decoder_loss_backward_fd(tie, kv):
    model = tiny(tie, kv)
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 23, (2, 9))
    mask = (rng.random((2, 8)) < 0.7).astype(np.int64)
    mask[0, 0] = 1
    loss_fn = lambda: D.next_token_loss(model(ids), ids, mask)[0]  # noqa: E731
    model.zero_grad()
    loss, dlogits = D.next_token_loss(model(ids), ids, mask)
    model.backward(dlogits)
    params = dict(model.named_parameters())
    errors = {n: compare(g, numerical_grad(loss_fn, params[n], max_entries=25)) for n, g in model.named_grads()}
    assert len(errors) == len(params) == (9 * 2 + 2 + (not tie))
    assert_small(errors)


def test_next_token_loss_gradient_fd_and_mask():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 5, 7))
    ids = rng.integers(0, 7, (2, 5))
    mask = np.array([[0, 1, 1, 0], [1, 0, 0, 1]])
    loss, d = D.next_token_loss(logits, ids, mask)
    num = numerical_grad(lambda: D.next_token_loss(logits, ids, mask)[0], logits)
    assert compare(d, num) < 1e-8
    assert np.all(d[0, 0] == 0) and np.all(d[:, -1] == 0)   # masked and last positions: no gradient
    for bad_mask in (np.zeros((2, 4)), np.ones((2, 5)), np.full((2, 4), 2)):
        with pytest.raises(ValueError, match="mask"):
            D.next_token_loss(logits, ids, bad_mask)


def test_kv_cache_equals_recomputation():
    model = tiny(dtype=np.float64)
    ids = np.array([3, 1, 4, 1, 5])
    full = model(np.array([[3, 1, 4, 1, 5, 9, 2]]))
    cache = model.new_cache()
    step = np.concatenate([model(ids[None], 0, cache), model(np.array([[9]]), 5, cache),
                           model(np.array([[2]]), 6, cache)], axis=1)
    assert np.abs(step - full).max() < 1e-12
    assert np.array_equal(D.generate(model, ids, 7), D.generate(model, ids, 7, use_cache=False))


# ------------------------------------------------------------------ torch twin
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-5)])
@pytest.mark.parametrize("tie,kv", [(True, 2), (False, 4)])
def test_torch_twin_equals_numpy(dtype, tol, tie, kv):
    model = tiny(tie, kv, dtype=dtype)
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    twin = TD.build_decoder(model.config, model.state_dict(), dtype=tdtype)
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 23, (3, 10))
    mask = (rng.random((3, 9)) < 0.8).astype(np.int64)
    mask[:, 0] = 1
    model.zero_grad()
    loss, dlogits = D.next_token_loss(model(ids), ids, mask)
    model.backward(dlogits)
    tids = torch.from_numpy(ids)
    tloss = TD.next_token_loss(twin(tids), tids, torch.from_numpy(mask))
    tloss.backward()
    assert abs(tloss.item() - loss) <= tol * max(1.0, abs(loss))
    tg = {n: p.grad.numpy() for n, p in twin.named_parameters()}
    assert set(tg) == {n for n, _ in model.named_grads()}
    for name, g in model.named_grads():
        scale = max(1.0, np.abs(g).max())
        assert np.abs(tg[name] - g).max() <= tol * scale, name
    with torch.no_grad():
        assert np.abs(twin(tids).numpy() - model(ids)).max() <= tol * 10
    p = np.array([4, 8, 15])
    assert np.array_equal(TD.generate(twin, torch.from_numpy(p), 6).numpy(), D.generate(model, p, 6))
    assert np.array_equal(TD.generate(twin, torch.from_numpy(p), 6, use_cache=False).numpy(),
                          D.generate(model, p, 6))


# ------------------------------------------------------------------ bad input
def test_bad_ids_are_refused():
    model = tiny()
    for bad, msg in ((np.array([[0, 23]]), r"\[0, 23\)"), (np.array([[-1]]), r"\[0, 23\)"),
                     (np.zeros((1, 0), int), "empty"), (np.zeros((1, 13), int), "context"),
                     (np.array([[0.5]]), "integers"), (np.array([1, 2]), "shape")):
        with pytest.raises(ValueError, match=msg):
            model(bad)
    with pytest.raises(ValueError, match="context"):
        D.generate(model, np.array([1, 2, 3]), 10)
    with pytest.raises(ValueError, match="1-D"):
        D.generate(model, np.array([[1, 2, 3]]), 1)


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        D.DecoderConfig(hidden_size=10, num_attention_heads=4)
    with pytest.raises(ValueError, match="evenly"):
        D.DecoderConfig(num_attention_heads=4, num_key_value_heads=3)
    with pytest.raises(ValueError, match="positive integer"):
        D.DecoderConfig(vocab_size=0)


# ------------------------------------------------------------------ chapter 09's exercise checkers
def test_exercise_checkers_pass_the_library_and_refuse_wrong_answers():
    from pedagogy_lib.book.ch09 import exercises as ex
    from pedagogy_lib.decoder_io import expected_shapes
    from pedagogy_lib.book.exercises import NotYet

    def rope(x, pos, theta):
        return D.apply_rope(x, *D.rope_tables(pos, x.shape[-1], theta))

    def rope_backwards_turn(x, pos, theta):
        return D.apply_rope(x, *D.rope_tables(-np.asarray(pos), x.shape[-1], theta))

    def causal(Q, K, V, dO):
        return ex._attention_grads(Q, K, V, dO, causal=True)

    def leaky(Q, K, V, dO):
        return ex._attention_grads(Q, K, V, dO, causal=False)

    def rms(x, w, dy, eps):
        norm = D.RMSNorm(x.shape[-1], eps, np.float64)
        norm.p["weight"][...] = w
        norm(x)
        return norm.backward(dy), norm.g["weight"]

    def rms_frozen_r(x, w, dy, eps):
        r = 1 / np.sqrt((x * x).mean(-1, keepdims=True) + eps)
        return dy * w * r, (dy * x * r).reshape(-1, x.shape[-1]).sum(0)

    def count(V, d, f, L, h, hkv, tied):
        cfg = D.DecoderConfig(vocab_size=V, hidden_size=d, intermediate_size=f, num_hidden_layers=L,
                              num_attention_heads=h, num_key_value_heads=hkv, tie_word_embeddings=tied)
        return sum(int(np.prod(s)) for s in expected_shapes(cfg).values())

    def count_no_gqa(V, d, f, L, h, hkv, tied):
        return count(V, d, f, L, h, h, tied)

    for check, right, wrong, hint in ((ex.check_rope, rope, rope_backwards_turn, "−angle"),
                                      (ex.check_causal_backward, causal, leaky, "mask"),
                                      (ex.check_rmsnorm_backward, rms, rms_frozen_r, "depends on x"),
                                      (ex.check_llama_params, count, count_no_gqa, "grouped-query")):
        check(right)
        with pytest.raises(NotYet, match=hint):
            check(wrong)
