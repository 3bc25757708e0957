"""LoRA (chapter 02): finite differences for the hand-written backward, ΔW = 0 at init,
merge/unmerge both ways, targeting like peft, bad input, and NumPy ↔ torch equality."""
import math

import numpy as np
import pytest
import torch

from pedagogy_lib import lora, nn
from pedagogy_lib.bert import BertConfig, BertEncoder, SentenceEncoder
from pedagogy_lib.gradcheck import check_module, compare, numerical_grad, rel_error
from pedagogy_lib.torch_ref import lora as tlora
from pedagogy_lib.torch_ref.encoder import SentenceEncoder as TSentenceEncoder, build_encoder

TINY = BertConfig(vocab_size=40, hidden_size=12, num_hidden_layers=2, num_attention_heads=3,
                  intermediate_size=20, max_position_embeddings=16)


def base_linear(d_in=7, d_out=5, dtype=np.float64, seed=1):
    return nn.Linear(d_in, d_out, rng=np.random.default_rng(seed), dtype=dtype)


def trained_like(layer, seed=2, scale=0.3):
    """Give B (and A) random non-zero values, as after some training."""
    g = np.random.default_rng(seed)
    for k in ("lora_A", "lora_B"):
        layer.p[k][...] = scale * g.standard_normal(layer.p[k].shape)
    return layer


def tiny_bert(dtype=np.float64, seed=0):
    return BertEncoder(TINY, seed=seed, dtype=dtype)


def batch(T=5, B=2, seed=0):
    g = np.random.default_rng(seed)
    ids = g.integers(0, TINY.vocab_size, (B, T))
    mask = np.ones((B, T), np.int64)
    mask[1, T - 2:] = 0
    return ids, mask


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("rslora", [False, True])
@pytest.mark.parametrize("shape", [(6, 7), (2, 3, 7)])
def test_lora_backward_matches_finite_differences(rslora, shape):
    layer = trained_like(lora.LoRALinear(base_linear(), r=3, alpha=5, rslora=rslora))
    x = np.random.default_rng(3).standard_normal(shape)
    errs = check_module(layer, x, max_entries=None)
    assert set(errs) == {"lora_A", "lora_B", "input"}  # W₀ and b are frozen: no gradient
    assert max(errs.values()) < 1e-7, errs
    assert "weight" not in layer.base_layer.g and "bias" not in layer.base_layer.g


def test_gradient_of_A_is_zero_at_init_but_B_is_not():
    """B = 0 ⇒ dA = (s·dy B)ᵀ x = 0 on the first step; only B moves first."""
    layer = lora.LoRALinear(base_linear(), r=2, alpha=4)
    x = np.random.default_rng(0).standard_normal((4, 7))
    layer(x)
    layer.backward(np.ones((4, 5)))
    assert np.all(layer.g["lora_A"] == 0) and np.abs(layer.g["lora_B"]).max() > 0


def test_whole_encoder_lora_gradients_match_finite_differences():
    bert = tiny_bert()
    lora.attach_lora(bert, ("query", "value", "output.dense"), r=2, alpha=3, seed=1)
    for m in lora.lora_layers(bert).values():
        trained_like(m, scale=0.2)
    net = SentenceEncoder(bert)
    ids, mask = batch()
    r = np.random.default_rng(5).standard_normal((2, TINY.hidden_size))
    loss = lambda: float((net(ids, mask) * r).sum())  # noqa: E731
    net.zero_grad()
    net(ids, mask)
    net.backward(r)
    grads = dict(net.named_grads())
    params = dict(net.named_parameters())
    assert set(grads) == {k for k in params if k.endswith(("lora_A", "lora_B"))}
    for name in ("bert.encoder.layer.0.attention.self.query.lora_A",
                 "bert.encoder.layer.1.attention.self.value.lora_B",
                 "bert.encoder.layer.0.output.dense.lora_A",
                 "bert.encoder.layer.1.attention.output.dense.lora_B"):
        num = numerical_grad(loss, params[name], max_entries=12)
        assert compare(grads[name], num) < 1e-6, name


# ----------------------------------------------------------------------------- init
@pytest.mark.parametrize("init", ["kaiming-uniform", "gaussian"])
def test_init_starts_exactly_at_the_pretrained_function(init):
    base = base_linear(dtype=np.float32)
    x = np.random.default_rng(0).standard_normal((3, 4, 7)).astype(np.float32)
    before = base(x).copy()
    layer = lora.LoRALinear(base, r=4, alpha=16, init=init, rng=np.random.default_rng(0))
    assert np.all(layer.p["lora_B"] == 0) and np.all(layer.delta_weight() == 0)
    assert np.array_equal(layer(x), before)  # bit-for-bit: adding exact zeros
    assert layer.p["lora_A"].dtype == np.float32 and layer.p["lora_A"].shape == (4, 7)


def test_init_distributions_follow_peft():
    g = np.random.default_rng(0)
    A = lora.init_A(8, 4096, "kaiming-uniform", g)
    bound = 1 / math.sqrt(4096)
    assert np.abs(A).max() <= bound and abs(A.std() / (bound / math.sqrt(3)) - 1) < 0.02
    G = lora.init_A(8, 4096, "gaussian", g, np.float64)
    assert abs(G.std() * 8 - 1) < 0.02 and abs(G.mean()) < 0.01
    with pytest.raises(ValueError, match="unknown init"):
        lora.init_A(8, 16, "pissa", g)


@pytest.mark.parametrize("rslora", [False, True])
def test_pissa_keeps_the_function_and_holds_the_top_singular_directions(rslora):
    base = base_linear(9, 6, seed=4)
    W0 = base.p["weight"].copy()
    x = np.random.default_rng(1).standard_normal((5, 9))
    y0 = base(x).copy()
    layer = lora.LoRALinear(base, r=2, alpha=3, rslora=rslora, init="pissa")
    U, S, Vt = np.linalg.svd(W0)
    best = (U[:, :2] * S[:2]) @ Vt[:2]
    assert np.abs(layer.delta_weight() - best).max() < 1e-12       # s·BA = rank-2 truncation
    assert np.abs(layer.base_layer.p["weight"] + layer.delta_weight() - W0).max() < 1e-12
    assert np.abs(layer(x) - y0).max() < 1e-12
    assert np.linalg.svd(layer.base_layer.p["weight"], compute_uv=False)[0] == pytest.approx(S[2])


def test_pissa_factors_rejects_bad_input():
    W = np.ones((4, 3))
    with pytest.raises(ValueError, match="1 <= r <= min"):
        lora.pissa_factors(W, 4, 1.0)
    with pytest.raises(ValueError, match="scaling"):
        lora.pissa_factors(W, 2, 0.0)
    with pytest.raises(ValueError, match="NaN"):
        lora.pissa_factors(np.full((3, 3), np.nan), 1, 1.0)
    with pytest.raises(ValueError, match="matrix"):
        lora.pissa_factors(np.ones((2, 3, 3)), 1, 1.0)


# ----------------------------------------------------------------------------- merge
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-13), (np.float32, 2e-6)])
def test_merge_unmerge_round_trip_both_ways(dtype, tol):
    base = base_linear(16, 12, dtype=dtype)
    W0 = base.p["weight"].copy()
    layer = trained_like(lora.LoRALinear(base, r=4, alpha=8))
    for k in layer.p:
        layer.p[k] = layer.p[k].astype(dtype)
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(dtype)
    y = layer(x).copy()
    # merge then unmerge
    layer.merge()
    W_merged = layer.base_layer.p["weight"].copy()
    assert rel_error(layer(x), y) < tol
    plain = nn.Linear(16, 12, dtype=dtype)
    plain.p = {"weight": W_merged, "bias": base.p["bias"]}
    assert np.array_equal(layer(x), plain(x))  # merged: literally a plain Linear
    with pytest.raises(RuntimeError, match="already merged"):
        layer.merge()
    assert np.array_equal(layer.base_layer.p["weight"], W_merged)  # refused: unchanged
    with pytest.raises(RuntimeError, match="unmerge"):
        layer.backward(np.ones_like(y))
    layer.unmerge()
    assert rel_error(layer.base_layer.p["weight"], W0) < tol
    assert rel_error(layer(x), y) < tol
    with pytest.raises(RuntimeError, match="not merged"):
        layer.unmerge()
    # and the other way: unmerge(merge(W)) then merge again gives the merged weight back
    layer.merge()
    assert rel_error(layer.base_layer.p["weight"], W_merged) < tol


def test_merge_all_and_unmerge_all_on_an_encoder():
    bert = tiny_bert()
    paths = lora.attach_lora(bert, "all-linear", r=2, alpha=4, seed=3)
    for m in lora.lora_layers(bert).values():
        trained_like(m, scale=0.1)
    ids, mask = batch()
    h = bert(ids, mask).copy()
    assert lora.merge_all(bert) == paths
    assert np.abs(bert(ids, mask) - h).max() < 1e-12
    with pytest.raises(RuntimeError, match="already merged"):
        lora.merge_all(bert)
    assert lora.unmerge_all(bert) == paths
    with pytest.raises(RuntimeError, match="not merged"):
        lora.unmerge_all(bert)
    assert np.abs(bert(ids, mask) - h).max() < 1e-12


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("r,err", [(0, ValueError), (-1, ValueError), (6, ValueError),
                                   (2.0, TypeError), (True, TypeError), ("2", TypeError)])
def test_bad_rank(r, err):
    with pytest.raises(err, match="rank"):
        lora.LoRALinear(base_linear(7, 5), r=r, alpha=1)


@pytest.mark.parametrize("alpha,err", [(0, ValueError), (-2, ValueError), (float("nan"), ValueError),
                                       (float("inf"), ValueError), (True, TypeError), ("8", TypeError)])
def test_bad_alpha(alpha, err):
    with pytest.raises(err, match="alpha"):
        lora.LoRALinear(base_linear(), r=2, alpha=alpha)


def test_other_bad_arguments_and_inputs():
    with pytest.raises(TypeError, match="nn.Linear"):
        lora.LoRALinear(nn.LayerNorm(4), r=1, alpha=1)
    with pytest.raises(ValueError, match="unknown init"):
        lora.LoRALinear(base_linear(), r=1, alpha=1, init="zeros")
    with pytest.raises(TypeError, match="rslora"):
        lora.LoRALinear(base_linear(), r=1, alpha=1, rslora=1)
    with pytest.raises(TypeError, match="Generator"):
        lora.LoRALinear(base_linear(), r=1, alpha=1, rng=0)
    layer = lora.LoRALinear(base_linear(), r=1, alpha=1)
    with pytest.raises(ValueError, match="last dimension must be 7"):
        layer(np.ones((2, 6)))
    with pytest.raises(TypeError, match="float32 or float64"):
        layer(np.ones((2, 7), dtype=np.int64))
    assert lora.scaling(4, 8) == 2 and lora.scaling(4, 8, rslora=True) == 4


# ----------------------------------------------------------------------------- targeting
def test_attach_lora_qv_replaces_exactly_those_and_freezes_the_rest():
    bert = tiny_bert()
    shapes = lora.linear_paths(bert)
    paths = lora.attach_lora(bert, r=4, alpha=8)
    assert paths == [f"encoder.layer.{i}.attention.self.{n}" for i in range(2) for n in ("query", "value")]
    assert all(isinstance(nn.get_submodule(bert, p), lora.LoRALinear) for p in paths)
    trainable = dict(bert.named_parameters(trainable_only=True))
    assert sorted(trainable) == sorted(f"{p}.{k}" for p in paths for k in ("lora_A", "lora_B"))
    assert bert.num_parameters(trainable_only=True) == lora.lora_params(shapes, 4, ("query", "value")) \
        == 2 * 2 * 4 * (12 + 12)
    assert "encoder.layer.0.attention.self.query.base_layer.weight" in dict(bert.named_parameters())


@pytest.mark.parametrize("targets,n", [
    (("dense",), 6),                                   # peft suffix rule: 3 per layer
    (("self.query",), 2), (("attention.output.dense",), 2),
    (r"encoder\.layer\.\d+\.(intermediate|output)\.dense", 4),  # FFN only (regex, full match)
    ("all-linear", 12), (("encoder.layer.1.attention.self.key",), 1)])
def test_peft_style_matching(targets, n):
    bert = tiny_bert()
    assert len(lora.attach_lora(bert, targets, r=2, alpha=2)) == n


@pytest.mark.parametrize("targets,err,msg", [
    (("query", "nope"), ValueError, "match no Linear"),
    (("uery",), ValueError, "match no Linear"),           # suffix must start at a dot
    (("attention",), ValueError, "match no Linear"),      # a module, but not a Linear
    ("q[", ValueError, "does not compile"),
    ((), TypeError, "non-empty"), ("", ValueError, "match no Linear"), ((".query",), ValueError, "dotted"),
    ((3,), ValueError, "dotted")])
def test_bad_targets_raise_and_leave_the_model_unchanged(targets, err, msg):
    bert = tiny_bert()
    before = {k: v.copy() for k, v in bert.state_dict().items()}
    with pytest.raises(err, match=msg):
        lora.attach_lora(bert, targets, r=2, alpha=2)
    after = bert.state_dict()
    assert sorted(after) == sorted(before) and all(np.array_equal(after[k], before[k]) for k in before)
    assert not lora.lora_layers(bert) and not any(m.frozen for _, m in bert.named_modules())


def test_rank_too_large_for_one_matrix_and_double_attach_leave_model_unchanged():
    bert = tiny_bert()
    with pytest.raises(ValueError, match="min\\(d_in, d_out\\) = 12"):
        lora.attach_lora(bert, "all-linear", r=13, alpha=1)   # 12 < 13 ≤ 20
    assert not lora.lora_layers(bert)
    lora.attach_lora(bert, ("query",), r=2, alpha=2)
    with pytest.raises(ValueError, match="already carry LoRA"):
        lora.attach_lora(bert, ("query", "key"), r=2, alpha=2)
    assert len(lora.lora_layers(bert)) == 2 and isinstance(bert.layers[0].attention.self.key, nn.Linear)
    with pytest.raises(ValueError, match="unknown init"):
        lora.attach_lora(bert, ("key",), r=2, alpha=2, init="nope")
    with pytest.raises(ValueError, match="alpha"):
        lora.attach_lora(bert, ("key",), r=2, alpha=0)


def test_lora_params_matches_published_arithmetic():
    shapes = {f"l{i}.{n}": (4096, 4096) for i in range(2) for n in ("q", "k")}
    assert lora.lora_params(shapes, 8, ("q",)) == 2 * 8 * 8192
    assert lora.lora_params({"q": (4096, 4096)}, 8, ("q",)) / 4096 ** 2 == pytest.approx(0.0039062, rel=1e-4)
    with pytest.raises(ValueError, match="rank"):
        lora.lora_params({"q": (4, 4)}, 5, ("q",))


def test_lora_cost():
    c = lora.lora_cost(10, 6, 4, 2)
    assert c["base_forward"] == 240 and c["factored_forward"] == 10 * 2 * 10
    assert c["factored_backward"] == 400 and c["factored_floats"] == 20
    assert c["dense_forward"] == 4 * 2 * 6 and c["dense_backward"] == 240 + 96
    assert c["dense_floats"] == 48 and c["merged_forward"] == 0
    with pytest.raises(ValueError, match="n must be a positive int"):
        lora.lora_cost(0, 6, 4, 2)
    with pytest.raises(ValueError, match="rank"):
        lora.lora_cost(3, 6, 4, 5)


# ----------------------------------------------------------------------------- torch twin
def twin(dtype_np, dtype_t, rslora=False, seed=0):
    base = base_linear(11, 9, dtype=dtype_np, seed=seed)
    tbase = torch.nn.Linear(11, 9).to(dtype_t)
    with torch.no_grad():
        tbase.weight.copy_(torch.from_numpy(base.p["weight"]))
        tbase.bias.copy_(torch.from_numpy(base.p["bias"]))
    a = trained_like(lora.LoRALinear(base, r=3, alpha=6, rslora=rslora, rng=np.random.default_rng(seed)))
    b = tlora.LoRALinear(tbase, r=3, alpha=6, rslora=rslora, rng=np.random.default_rng(seed))
    with torch.no_grad():
        b.lora_A.copy_(torch.from_numpy(a.p["lora_A"]))
        b.lora_B.copy_(torch.from_numpy(a.p["lora_B"]))
    return a, b


@pytest.mark.parametrize("rslora", [False, True])
@pytest.mark.parametrize("dtype_np,dtype_t,tol", [(np.float64, torch.float64, 1e-13),
                                                  (np.float32, torch.float32, 1e-6)])
def test_torch_twin_equals_numpy_outputs_and_gradients(rslora, dtype_np, dtype_t, tol):
    a, b = twin(dtype_np, dtype_t, rslora)
    x = np.random.default_rng(4).standard_normal((2, 5, 11)).astype(dtype_np)
    dy = np.random.default_rng(5).standard_normal((2, 5, 9)).astype(dtype_np)
    xt = torch.from_numpy(x).requires_grad_(True)
    y = a(x)
    yt = b(xt)
    dx = a.backward(dy)
    yt.backward(torch.from_numpy(dy))
    assert rel_error(y, yt.detach().numpy()) < tol
    assert rel_error(a.g["lora_A"], b.lora_A.grad.numpy()) < tol
    assert rel_error(a.g["lora_B"], b.lora_B.grad.numpy()) < tol
    assert rel_error(dx, xt.grad.numpy()) < tol
    assert b.base_layer.weight.grad is None and not b.base_layer.weight.requires_grad
    a.merge()
    b.merge()
    assert rel_error(a.base_layer.p["weight"], b.base_layer.weight.detach().numpy()) < tol
    assert rel_error(a(x), b(torch.from_numpy(x)).detach().numpy()) < tol
    with pytest.raises(RuntimeError, match="already merged"):
        b.merge()
    b.unmerge()
    with pytest.raises(RuntimeError, match="not merged"):
        b.unmerge()


def test_torch_twin_same_seed_same_adapter_and_same_targets():
    bert = tiny_bert(np.float32)
    tbert = build_encoder(TINY, bert.state_dict(), dtype=torch.float32, device="cpu")
    p_np = lora.attach_lora(bert, ("query", "dense"), r=3, alpha=6, seed=7)
    p_t = tlora.attach_lora(tbert, ("query", "dense"), r=3, alpha=6, seed=7)
    assert p_np == p_t
    for p in p_np:
        assert np.array_equal(lora.lora_layers(bert)[p].p["lora_A"],
                              tlora.lora_layers(tbert)[p].lora_A.detach().numpy())
    trainable = [n for n, p in tbert.named_parameters() if p.requires_grad]
    assert sorted(trainable) == sorted(f"{p}.{k}" for p in p_t for k in ("lora_A", "lora_B"))
    for bad, err in ((("nothing",), ValueError), (("query",), ValueError)):  # second: already LoRA
        with pytest.raises(err):
            tlora.attach_lora(tbert, bad, r=2, alpha=2)
    with pytest.raises(TypeError, match="torch.nn.Linear"):
        tlora.LoRALinear(torch.nn.LayerNorm(3), r=1, alpha=1)


def test_torch_twin_attach_passes_rslora_on():
    for rslora, s in ((False, 2.0), (True, 4.0)):   # α/r or α/√r with α = 8, r = 4
        bert = tiny_bert(np.float32)
        tbert = build_encoder(TINY, bert.state_dict(), dtype=torch.float32, device="cpu")
        lora.attach_lora(bert, ("query",), r=4, alpha=8, rslora=rslora)
        tlora.attach_lora(tbert, ("query",), r=4, alpha=8, rslora=rslora)
        assert {m.scaling for m in lora.lora_layers(bert).values()} == {s}
        assert {m.scaling for m in tlora.lora_layers(tbert).values()} == {s}


def test_real_minilm_with_lora_numpy_equals_torch(init="pissa"):
    """All six layers of the real MiniLM with LoRA on (q, v), float64: embeddings and every
    LoRA gradient agree between the hand-written backward and torch autograd. PiSSA, so that
    the SVD path of both backends is compared too (A ≠ 0 and B ≠ 0 from the start)."""
    from pedagogy_lib import checkpoint

    cfg = BertConfig.from_dict(checkpoint.load_config())
    w = {k: v.astype(np.float64) for k, v in checkpoint.load_weights().items() if not k.startswith("pooler.")}
    net = SentenceEncoder(BertEncoder(cfg, dtype=np.float64).load_state_dict(w))
    tnet = TSentenceEncoder(build_encoder(cfg, w, dtype=torch.float64, device="cpu"))
    lora.attach_lora(net.bert, r=4, alpha=8, init=init, seed=0)
    tlora.attach_lora(tnet.bert, r=4, alpha=8, init=init, seed=0)
    g = np.random.default_rng(0)
    for p, m in lora.lora_layers(net.bert).items():
        m.p["lora_B"] = m.p["lora_B"] + 0.02 * g.standard_normal(m.p["lora_B"].shape)
        with torch.no_grad():
            tlora.lora_layers(tnet.bert)[p].lora_B.copy_(torch.from_numpy(m.p["lora_B"]))
    ids = np.array([[101, 2023, 2003, 2307, 102], [101, 6659, 102, 0, 0]])
    mask = (ids > 0).astype(np.int64)
    r = g.standard_normal((2, cfg.hidden_size))
    pooled = net(ids, mask)
    net.backward(r)
    tpooled = tnet(torch.from_numpy(ids), torch.from_numpy(mask))
    (tpooled * torch.from_numpy(r)).sum().backward()
    assert rel_error(pooled, tpooled.detach().numpy()) < 1e-12
    tgrads = {n: p.grad.numpy() for n, p in tnet.named_parameters() if p.requires_grad}
    grads = dict(net.named_grads())
    assert sorted(grads) == sorted(tgrads) and len(grads) == 24
    assert max(rel_error(grads[k], tgrads[k]) for k in grads) < 1e-10


@pytest.mark.gpu
def test_torch_twin_runs_on_cuda_and_matches_cpu():
    a, b = twin(np.float32, torch.float32)
    x = torch.randn(4, 11, generator=torch.Generator().manual_seed(0))
    y_cpu = b(x)
    b.cuda()
    y_gpu = b(x.cuda()).cpu()
    assert (y_cpu - y_gpu).abs().max().item() < 1e-5
    b.merge()
    assert (b(x.cuda()).cpu() - y_cpu).abs().max().item() < 1e-5


# ----------------------------------------------------------------------------- exercises
def test_exercise_checkers_accept_solutions_and_reject_mistakes():
    import re as _re

    from pedagogy_lib.book.exercises import NotYet
    from pedagogy_lib.book.ch02 import exercises as ex

    def backward(x, dy, W0, A, B, s):
        du = s * dy @ B
        return du.T @ x, s * dy.T @ (x @ A.T), dy @ W0 + du @ A

    def backward_no_s(x, dy, W0, A, B, s):
        dA, dB, dx = backward(x, dy, W0, A, B, s)
        return dA / s, dB, dx

    def backward_lora_only(x, dy, W0, A, B, s):
        dA, dB, _ = backward(x, dy, W0, A, B, s)
        return dA, dB, (s * dy @ B) @ A

    ex.check_lora_backward(backward)
    for wrong in (backward_no_s, backward_lora_only, lambda *a: (_ for _ in ()).throw(NotImplementedError)):
        with pytest.raises(NotYet):
            ex.check_lora_backward(wrong)

    ex.check_unmerge(lambda W, A, B, s: W - s * B @ A)
    with pytest.raises(NotYet, match="differs"):
        ex.check_unmerge(lambda W, A, B, s: W - B @ A)

    def in_place(W, A, B, s):
        W -= s * B @ A
        return W

    with pytest.raises(NotYet, match="in place"):
        ex.check_unmerge(in_place)

    ex.check_lora_count(lambda i, o, r: (r * (i + o), r * (i + o) / (i * o)))
    with pytest.raises(NotYet):
        ex.check_lora_count(lambda i, o, r: (2 * r * i, 2 * r * i / (i * o)))

    def pissa(W, r, s):
        A, B, W_res = lora.pissa_factors(W, r, s)
        return A, B, W_res

    ex.check_pissa_init(pissa)
    with pytest.raises(NotYet, match="SVD truncation"):
        ex.check_pissa_init(lambda W, r, s: (lambda A, B, R: (A, B * s, R))(*lora.pissa_factors(W, r, s)))

    ex.check_target_match(lambda p, t: lora.target_matches(p, t))
    with pytest.raises(NotYet):
        ex.check_target_match(lambda p, t: any(p.endswith(x) for x in t) if not isinstance(t, str) else True)
    with pytest.raises(NotYet, match="WHOLE"):
        ex.check_target_match(lambda p, t: lora.target_matches(p, t) if not isinstance(t, str)
                              else _re.search(t, p) is not None)


# ----------------------------------------------------------------------------- verdicts
def _synthetic_sweeps(qv=0.90, ffn=0.88, all_r8=0.90, lr_lora=3e-4, lr_full=1e-5, qkvo_gain=0.002, tuned=False):
    """A small, made-up sweep summary with the real file's structure, to test verdict rules.
    ``tuned``: every placement, same-rank and rank arm has its own bracketed grid (the stored sweep
    runs them at q,v's rate only, so their orders get no verdict)."""
    def st(m, r=8, trainable=73728, dn=1.0, loss=0.3):
        grid = {"val_by_lr": {1e-4: m - 0.05, lr_lora: m, 1e-2: m - 0.05}} if tuned else {}
        return {"test_acc": [m - 0.001, m + 0.001], "val_acc": [m, m], "mean_test": m, "mean_val": m,
                "trainable": trainable, "r": r, "delta_norm": dn, "final_loss": loss, "seeds": [0, 1], **grid}
    ranks = {str(r): st(0.9, r, dn=1 / r ** 0.5) for r in (1, 2, 4, 8, 16, 64)}
    rs = {str(r): st(0.9 + (0.01 if r == 64 else 0), r, dn=1.0, loss=0.2) for r in (1, 2, 4, 8, 16, 64)}
    lrs = {f"{x:g}": st(0.9 if x == lr_lora else 0.85) for x in (1e-4, 3e-4, 1e-3)}
    return {"config": {"seeds": [0, 1], "epochs": 2, "n_train": 2048},
            "summary": {"best_lr": {"probe": 1e-2, "lora": lr_lora, "full": lr_full}, "budget": 73728,
                        "total_params": 22713216,
                        "main": {"probe": st(0.85), "lora": st(qv), "full": st(0.91)},
                        "lr_sweep": {"lora": lrs},
                        "placement": {"q": st(0.88, 16), "v": st(0.88, 16), "q,v": st(qv),
                                      "q,k,v,o": st(0.88, 4), "FFN only": st(ffn, 3), "all linear": st(0.9, 2)},
                        "same_rank": {"q,k,v,o": st(qv + qkvo_gain, trainable=147456), "all linear": st(all_r8)},
                        "rank": {"alpha_over_r": ranks, "rslora": rs}}}


def test_verdict_rules_follow_the_data():
    from pedagogy_lib.book.ch02 import claims as V
    from pedagogy_lib.book.ch02 import studies as ST

    lat = {"cases": [{"model": "MiniLM", "backend": "torch", "ratio": {"merged": 1.01, "unmerged": 1.1}},
                     {"backend": "torch", "d": 384, "ratio": {"merged": 0.99, "unmerged": 1.5}}]}
    fixed = {"init": ST.init_check(), "merge": ST.merge_check(), "scaling": ST.scaling_study(steps=20), "latency": lat}
    recs = {r["id"]: r for r in V.claims({**fixed, "sweeps": _synthetic_sweeps()})}
    assert all(r["verdict"] in ("holds", "approximately", "wrong", "not-reproduced-here", "untestable-here") for r in recs.values())
    assert recs["ch02-d4096-r8"]["verdict"] == "holds" and recs["ch02-init-zero"]["verdict"] == "holds"
    assert recs["ch02-bit-for-bit"]["verdict"] == "approximately"
    assert recs["ch02-placement"]["verdict"] == "untestable-here" and recs["ch02-lr"]["verdict"] == "holds"
    tuned = {r["id"]: r for r in V.claims({**fixed, "sweeps": _synthetic_sweeps(tuned=True)})}
    assert tuned["ch02-placement"]["verdict"] == "holds"  # the same accuracies, every rival on its own grid
    assert recs["ch02-merge-latency"]["verdict"] == "holds"
    bad = {r["id"]: r for r in V.claims({**fixed, "sweeps": _synthetic_sweeps(qv=0.85, lr_full=1e-3),
                                         "latency": {"cases": [{**c, "ratio": {"merged": 1.3, "unmerged": 1.3}}
                                                               for c in lat["cases"]]}})}
    # q,v resolved below its rivals: the opposite of GPT-3's order (Table 5), so not-reproduced-here (rules.py)
    assert bad["ch02-placement"]["verdict"] == "not-reproduced-here" and bad["ch02-lr"]["verdict"] != "holds"
    assert bad["ch02-merge-latency"]["verdict"] == "wrong"
    # the α/r step size falls like 1/√r in the toy, so that claim cannot "hold"
    assert recs["ch02-alpha-over-r"]["verdict"] in ("approximately", "wrong")
    glue = V.glue_gaps()
    assert glue["printed"] == pytest.approx(0.8) and glue["rte"] == pytest.approx(7.9)


def test_claim_rules_with_new_branches(monkeypatch):
    from pedagogy_lib.book.ch02 import claims as V
    from pedagogy_lib.book.ch02 import studies as ST

    lat = {"threads": 4, "cases": [{"model": "MiniLM", "backend": "torch", "ratio": {"merged": 1.01, "unmerged": 1.1}}]}
    fixed = {"init": ST.init_check(), "merge": ST.merge_check(), "scaling": ST.scaling_study(steps=20), "latency": lat}

    def verdicts(tuned=True, **kw):
        return {r["id"]: r for r in V.claims({**fixed, "sweeps": _synthetic_sweeps(tuned=tuned, **kw)})}

    recs = verdicts()  # the synthetic seeds move together: paired intervals of zero width
    assert "torch, 4 threads" in recs["ch02-merge-latency"]["our_value"]
    assert recs["ch02-never-BA"]["verdict"] == "holds"
    # a marginal improvement: the paired interval of q,k,v,o − q,v inside [0, 1] point holds, a tie
    # overlapping it is approximately, a gain past 1 point is wrong, a resolved loss (the opposite of
    # GPT-3's order) is not-reproduced-here (rules.py; the synthetic seeds move together, so the
    # interval has zero width unless the seeds are spread)
    assert recs["ch02-qkvo-marginal"]["verdict"] == "holds"
    assert verdicts(qkvo_gain=-0.002)["ch02-qkvo-marginal"]["verdict"] == "not-reproduced-here"
    assert verdicts(qkvo_gain=-0.05)["ch02-qkvo-marginal"]["verdict"] == "not-reproduced-here"
    assert verdicts(qkvo_gain=0.02)["ch02-qkvo-marginal"]["verdict"] == "wrong"
    spread = _synthetic_sweeps(tuned=True)
    spread["summary"]["same_rank"]["q,k,v,o"]["test_acc"] = [0.89, 0.912]  # −0.9 and +1.1 points: a tie
    tie = {r["id"]: r for r in V.claims({**fixed, "sweeps": spread})}["ch02-qkvo-marginal"]
    assert tie["verdict"] == "approximately" and "tie (q,k,v,o ≈ q,v)" in tie["our_value"]
    # q,k,v,o at q,v's rate (untuned): only a gain counts, as a lower bound; a loss or a tie is no verdict
    assert verdicts(tuned=False)["ch02-qkvo-marginal"]["verdict"] == "approximately"
    assert verdicts(tuned=False, qkvo_gain=0.02)["ch02-qkvo-marginal"]["verdict"] == "wrong"
    assert verdicts(tuned=False, qkvo_gain=-0.05)["ch02-qkvo-marginal"]["verdict"] == "untestable-here"
    assert verdicts(tuned=False, qv=0.85)["ch02-qv-canonical"]["verdict"] == "approximately"
    # q,v canonical: Table 5 has all four above q,v on MNLI; our sweep backs q,v unless it is beaten
    assert recs["ch02-qv-canonical"]["verdict"] == "approximately"
    assert verdicts(qv=0.85)["ch02-qv-canonical"]["verdict"] == "wrong"
    # 0.24% rounds right; the table's gap is +0.8 (not within 0.1) but −0.11 without RTE (within 0.15)
    assert recs["ch02-roberta-0.24"]["verdict"] == "approximately"
    assert "not within ±0.1" in recs["ch02-roberta-0.24"]["our_value"]
    monkeypatch.setattr(V, "TABLE5_ALL", V.TABLE5_QV)
    assert verdicts()["ch02-qv-canonical"]["verdict"] == "holds"
    monkeypatch.setattr(V, "GLUE_PRINTED_AVG", {"FT": 86.4, "LoRA": 86.45})
    monkeypatch.setattr(V, "GLUE_ROB_BASE", {"FT": V.GLUE_ROB_BASE["FT"], "LoRA": V.GLUE_ROB_BASE["FT"]})
    assert verdicts()["ch02-roberta-0.24"]["verdict"] == "holds"
    monkeypatch.setattr(V, "GLUE_PRINTED_AVG", {"FT": 86.4, "LoRA": 88.4})
    monkeypatch.setattr(V, "GLUE_ROB_BASE", {"FT": V.GLUE_ROB_BASE["FT"],
                                             "LoRA": tuple(x + 1 for x in V.GLUE_ROB_BASE["FT"])})
    assert verdicts()["ch02-roberta-0.24"]["verdict"] == "wrong"
    # bit-for-bit: identical holds; plain-equal but far from the unmerged output is wrong
    bad_merge = {**fixed["merge"], "identical": False, "plain_identical": True, "ulps": 1e3}
    assert {r["id"]: r for r in V.claims({**fixed, "merge": bad_merge, "sweeps": _synthetic_sweeps()})}[
        "ch02-bit-for-bit"]["verdict"] == "wrong"
    same = {**fixed["merge"], "identical": True, "roundtrip_identical": True}
    rec = {r["id"]: r for r in V.claims({**fixed, "merge": same, "sweeps": _synthetic_sweeps()})}["ch02-bit-for-bit"]
    assert rec["verdict"] == "holds" and "≠" not in rec["our_value"] and "rounds differently" not in rec["our_value"]


def _ch02_verdicts(**kw):
    from pedagogy_lib.book.ch02 import claims as V
    from pedagogy_lib.book.ch02 import studies as ST

    lat = {"cases": [{"model": "MiniLM", "backend": "torch", "ratio": {"merged": 1.01, "unmerged": 1.1}}]}
    fixed = {"init": ST.init_check(), "merge": ST.merge_check(), "scaling": ST.scaling_study(steps=20), "latency": lat}
    return {r["id"]: r for r in V.claims({**fixed, "sweeps": _synthetic_sweeps(**kw)})}


@pytest.mark.parametrize("kw, cid", [
    ({"qv": 0.85, "tuned": True}, "ch02-placement"),           # every rival on its own grid resolved above q,v
    ({"qv": 0.85}, "ch02-placement"),                          # rivals at q,v's rate, which favours q,v, still above
    ({"qkvo_gain": -0.02, "tuned": True}, "ch02-qkvo-marginal"),  # q,k,v,o resolved below q,v
])
def test_an_order_opposite_to_gpt3s_is_not_reproduced_here(kw, cid):
    """rules.py: the placement claims were measured on GPT-3 (Table 5); the opposite order resolved on
    our one task is not-reproduced-here, never wrong (the old rules said wrong)."""
    rec = _ch02_verdicts(**kw)[cid]
    assert rec["verdict"] == "not-reproduced-here" and "→ not-reproduced-here" in rec["our_value"]


def test_a_rank_above_r8_is_not_reproduced_here():
    """ch02-rank-advice ("start at r = 8", GPT-3 Table 6): a rank resolved above r=8 even at r=8's own
    rate is the opposite order on our one task: not-reproduced-here (rules.py), not wrong."""
    from pedagogy_lib.book.ch02 import claims as V

    c = V.context({"sweeps": _synthetic_sweeps()})
    assert V._rank_advice(c)[0] == "untestable-here"  # ranks at r=8's rate only, none ahead: no evidence
    c.ranks["16"]["test_acc"] = [a + 0.02 for a in c.ranks["16"]["test_acc"]]  # r=16 two points ahead
    verdict, ours = V._rank_advice(c)
    assert verdict == "not-reproduced-here" and "r = 16 beats r=8" in ours and "rule:" in ours


def test_lr_ratio_of_one_decade_is_ten_up_to_rounding():
    """ch02-lr: 3e-4 / 3e-5 = 9.999999999999998 in floats; rates one decade apart are 10× (the old
    ``10 <= ratio`` read it as below 10, and the verdict fell from holds to approximately)."""
    from pedagogy_lib.book.ch02 import claims as V

    rec = _ch02_verdicts(lr_lora=3e-4, lr_full=3e-5)["ch02-lr"]
    assert rec["verdict"] == "holds" and "(ratio 10)" in rec["our_value"]
    assert 3e-4 / 3e-5 < 10 and V._decades_apart(3e-4 / 3e-5) and V._decades_apart(3e-4 / 3e-6)
    assert not V._decades_apart(9.99) and not V._decades_apart(100.01)


def test_an_unbracketed_rate_gets_no_accuracy_verdict():
    from pedagogy_lib.book.ch02 import claims as V
    from pedagogy_lib.book.ch02 import studies as ST

    lat = {"cases": [{"model": "MiniLM", "backend": "torch", "ratio": {"merged": 1.01, "unmerged": 1.1}}]}
    fixed = {"init": ST.init_check(), "merge": ST.merge_check(), "scaling": ST.scaling_study(steps=20), "latency": lat}
    edge = {r["id"]: r for r in V.claims({**fixed, "sweeps": _synthetic_sweeps(lr_lora=1e-3)})}  # top of its grid
    for cid in ("ch02-placement", "ch02-qkvo-marginal", "ch02-lr", "ch02-rank-advice", "ch02-rslora", "ch02-alpha-over-r"):
        assert edge[cid]["verdict"] == "untestable-here", cid
        assert "highest rate of its grid" in edge[cid]["our_value"], cid
    # the paper's table alone: it uses q,v, with q,v below all four on MNLI → approximately
    assert edge["ch02-qv-canonical"]["verdict"] == "approximately"
    assert edge["ch02-merge-latency"]["verdict"] == "holds"  # not an accuracy claim


def test_pairs_are_matched_by_seed_not_position():
    from pedagogy_lib.book.ch02 import experiment as E

    a = {"seeds": [0, 1], "test_acc": [0.90, 0.80]}
    b = {"seeds": [1, 0], "test_acc": [0.80, 0.90]}  # the same runs, stored in the other order
    d = E.paired(a, b)
    assert d["mean"] == 0 and d["se"] == 0 and d["tie"] and d["seeds"] == [0, 1]
    assert E.gain(a, b) == {0: 0.0, 1: 0.0}
    with pytest.raises(ValueError, match="same seeds"):
        E.paired(a, {"seeds": [0, 2], "test_acc": [0.9, 0.8]})
    with pytest.raises(ValueError, match="2 seeds but 1"):
        E.by_seed({"seeds": [0, 1], "test_acc": [0.9]})
    t = E.paired({"seeds": [0, 1, 2], "test_acc": [0.91, 0.92, 0.95]}, {"seeds": [0, 1, 2], "test_acc": [0.90, 0.90, 0.90]})
    assert t["mean"] == pytest.approx(2.667, abs=1e-3) and t["n"] == 3  # points; t with 2 dof: 4.30 × SE
    assert t["hi"] - t["mean"] == pytest.approx(4.303 * t["se"], rel=1e-3)


def test_chapter_figures_build_from_data(tmp_path, monkeypatch):
    from pedagogy_lib.book import figures
    from pedagogy_lib.book.ch02 import experiment as E
    from pedagogy_lib.book.ch02 import studies as ST
    from pedagogy_lib.book.ch02 import figures as F

    monkeypatch.setattr(figures, "FIGURES_DIR", tmp_path)
    doc = _synthetic_sweeps()
    doc["config"]["head_lr"] = 1e-3
    doc["summary"]["lr_sweep"] |= {"probe": doc["summary"]["lr_sweep"]["lora"], "full": doc["summary"]["lr_sweep"]["lora"]}
    for build, data in ((F.scaling, ST.scaling_study(ranks=(1, 4), steps=5)), (F.lr_sensitivity, doc),
                        (F.placement, doc), (F.rank, doc)):
        assert build(data).axes
    assert list(tmp_path.iterdir()) == []  # builders only plot; make figures writes
    with pytest.raises(FileNotFoundError, match="book.ch02.experiment"):
        E.load_sweeps(tmp_path / "missing.json")
