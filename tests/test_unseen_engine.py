"""Unseen inputs for the engine (nn, bert, gradcheck, the torch twin and its training loop),
low rank, statistics, counting and scaling: shapes, dtypes and arguments the other tests do
not use, each judged against an independent reference (torch autograd in float64, scipy,
a built model's parameter count) or against the rule "refuse bad input, change nothing"."""

import numpy as np
import pytest
import scipy.stats
import torch

from pedagogy_lib import counting as C
from pedagogy_lib import gradcheck, lowrank, nn, scaling, stats
from pedagogy_lib.bert import BertConfig, BertEncoder, SentenceEncoder
from pedagogy_lib.torch_ref import encoder as TE
from pedagogy_lib.torch_ref import train as T


def _cfg(V=7, d=5, L=1, h=1, f=3, P=6, types=1):
    return BertConfig(vocab_size=V, hidden_size=d, num_hidden_layers=L, num_attention_heads=h,
                      intermediate_size=f, max_position_embeddings=P, type_vocab_size=types)


def _masks(B, T_):
    full = np.ones((B, T_), np.int64)
    out = {"full": full}
    if T_ > 1:
        end, start, one = full.copy(), full.copy(), np.zeros((B, T_), np.int64)
        end[0, -1] = 0                      # padding at the end of row 0
        start[-1, 0] = 0                    # padding at the start of the last row
        one[:, T_ // 2] = 1                 # a single real token in the middle
        out |= {"pad end": end, "pad start": start.astype(bool), "one token": one}
    return out


# ----------------------------------------------------------------- backward vs torch autograd
@pytest.mark.parametrize("cfg,B,T_", [(_cfg(d=5, h=1, f=3), 1, 1), (_cfg(d=6, h=3, L=2, f=1), 1, 4),
                                      (_cfg(d=9, h=3, f=7, P=5), 3, 5)])
def test_bert_backward_matches_torch_autograd_on_odd_shapes_and_masks(cfg, B, T_):
    """Every hand-written gradient of BertEncoder + mean pooling equals torch autograd through
    the twin (float64), on heads of 1, odd widths, batch/sequence 1 and padding at either end."""
    rng = np.random.default_rng(0)
    net = SentenceEncoder(BertEncoder(cfg, seed=3, dtype=np.float64))
    twin = TE.SentenceEncoder(TE.build_encoder(cfg, net.bert.state_dict(), torch.float64, "cpu"))
    ids = rng.integers(0, cfg.vocab_size, (B, T_))
    for name, mask in _masks(B, T_).items():
        y = net(ids, mask)
        r = rng.standard_normal(y.shape)
        net.bert.zero_grad()
        net.backward(r)
        twin.zero_grad()
        yt = twin(torch.from_numpy(ids), torch.from_numpy(mask))
        (yt * torch.from_numpy(r)).sum().backward()
        assert gradcheck.rel_error(y, yt.detach().numpy()) < 1e-12, name
        tgrads = dict(twin.bert.named_parameters())
        for k, g in net.bert.named_grads():
            tg = tgrads[k].grad
            if k.endswith("key.bias"):      # exactly zero (softmax ignores a per-row shift)
                assert np.abs(g).max() < 1e-12, (name, k)
                continue
            assert tg is not None and gradcheck.rel_error(g, tg.numpy()) < 1e-9, (name, k)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept_through_forward_backward_and_adamw(dtype):
    net = SentenceEncoder(BertEncoder(_cfg(d=6, h=2, L=2), dtype=dtype))
    y = net(np.array([[1, 2, 3], [4, 5, 0]]), np.array([[1, 1, 1], [1, 1, 0]]))
    net.bert.zero_grad()
    net.backward(np.ones_like(y))
    opt = nn.AdamW(net.params_and_grads(), lr=1e-2)
    opt.step()
    assert y.dtype == dtype
    assert {g.dtype for _, g in net.named_grads()} == {np.dtype(dtype)}
    assert {p.dtype for _, p in net.named_parameters()} == {np.dtype(dtype)}
    assert {m.dtype for m in opt.m + opt.v} == {np.dtype(dtype)}


@pytest.mark.parametrize("dtype,tdtype,tol", [(np.float32, torch.float32, 1e-6), (np.float64, torch.float64, 1e-14)])
def test_adamw_matches_torch_with_other_hyperparameters(dtype, tdtype, tol):
    rng = np.random.default_rng(1)
    p = rng.standard_normal((3, 2)).astype(dtype)
    g = np.zeros_like(p)
    opt = nn.AdamW([(p, g)], lr=0.1, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.3)
    pt = torch.tensor(p.copy(), dtype=tdtype, requires_grad=True)
    ot = torch.optim.AdamW([pt], lr=0.1, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.3)
    for step in range(6):
        grad = (rng.standard_normal(p.shape) * (step % 3)).astype(dtype)  # zero grads included
        g[...] = grad
        opt.step()
        pt.grad = torch.from_numpy(grad.copy())
        ot.step()
    assert p.dtype == dtype and np.abs(p - pt.detach().numpy()).max() < tol


@pytest.mark.parametrize("kw", [dict(lr=0.0), dict(lr=float("nan")), dict(lr=float("inf")),
                                dict(betas=(1.5, 0.9)), dict(betas=(0.9, float("nan"))), dict(betas=(0.9,)),
                                dict(eps=-1e-8), dict(weight_decay=-0.1)])
def test_adamw_refuses_what_torch_refuses(kw):
    with pytest.raises(ValueError, match="AdamW"):
        nn.AdamW([], **kw)


@pytest.mark.parametrize("make,match", [(lambda: nn.SelfAttention(6, -3), "heads"),
                                        (lambda: nn.SelfAttention(6, 0), "heads"),
                                        (lambda: nn.Embedding(0, 3), "Embedding"),
                                        (lambda: nn.LayerNorm(0), "LayerNorm"),
                                        (lambda: nn.LayerNorm(3, eps=-1e-5), "eps"),
                                        (lambda: nn.LayerNorm(3, eps=float("nan")), "eps")])
def test_layer_sizes_are_checked(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_cross_entropy_refuses_an_empty_batch():
    with pytest.raises(ValueError, match="empty batch"):
        nn.cross_entropy(np.zeros((0, 3)), np.zeros(0, np.int64))


def test_load_state_dict_refuses_complex_and_strings_and_changes_nothing():
    net = BertEncoder(_cfg(d=6, h=3), dtype=np.float64)
    before = {k: v.copy() for k, v in net.state_dict().items()}
    for bad in (np.ones(6, complex), np.array(["a"] * 6)):
        weights = {k: v + 1.0 for k, v in before.items()} | {"embeddings.LayerNorm.weight": bad}
        with pytest.raises(TypeError, match="embeddings.LayerNorm.weight"):
            net.load_state_dict(weights)
        assert all(np.array_equal(v, net.state_dict()[k]) for k, v in before.items())


# ----------------------------------------------------------------- gradcheck
def test_numerical_grad_refuses_a_check_that_cannot_fail():
    x = np.ones(3)
    for kw in (dict(eps=0.0), dict(eps=float("nan")), dict(max_entries=0), dict(max_entries=-2)):
        with pytest.raises((ValueError, TypeError)):
            gradcheck.numerical_grad(lambda: float(x.sum()), x, **kw)
    # a wrong gradient must not pass: ε = 0 used to give NaN = "not probed" = error 0
    assert gradcheck.compare(np.zeros(3), gradcheck.numerical_grad(lambda: float((x ** 2).sum()), x)) > 0.5


def test_numerical_grad_restores_x_when_f_raises():
    x = np.arange(3.0)
    calls = []

    def f():
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return 0.0

    with pytest.raises(RuntimeError):
        gradcheck.numerical_grad(f, x)
    assert np.array_equal(x, np.arange(3.0))


def test_compare_refuses_a_missing_or_misshaped_gradient():
    numeric = np.ones((2, 3))
    with pytest.raises(ValueError, match="no analytic gradient"):
        gradcheck.compare(None, numeric)
    with pytest.raises(ValueError, match="shape"):
        gradcheck.compare(np.ones(3), numeric)


# ----------------------------------------------------------------- the torch twin and its loop
def test_load_numpy_weights_checks_everything_before_copying():
    cfg = _cfg(d=6, h=3)
    w = BertEncoder(cfg, dtype=np.float64).state_dict()
    model = TE.build_encoder(cfg, w, torch.float64, "cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ones = {k: np.ones_like(v) for k, v in w.items()}
    for bad, exc in [(ones | {"extra": np.ones(1)}, KeyError),
                     (ones | {"embeddings.LayerNorm.weight": np.ones(5)}, ValueError),
                     (ones | {"embeddings.LayerNorm.weight": np.full(6, np.nan)}, ValueError)]:
        with pytest.raises(exc):
            TE.load_numpy_weights(model, bad, "encoder")
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_torch_twin_refuses_the_masks_the_numpy_twin_refuses():
    cfg = _cfg(d=6, h=3)
    net = BertEncoder(cfg)
    twin = TE.SentenceEncoder(TE.build_encoder(cfg, None, torch.float32, "cpu"))
    ids = np.array([[1, 2], [3, 4]])
    for mask, match in [([[1, 1], [0, 0]], "no real token"), ([[1, 2], [1, 1]], "only 0 and 1")]:
        with pytest.raises(ValueError, match=match):
            net(ids, np.array(mask))
        with pytest.raises(ValueError, match=match):
            twin(torch.from_numpy(ids), torch.tensor(mask))


@pytest.mark.parametrize("kw", [dict(lr=float("nan")), dict(lr=float("inf")), dict(head_lr=0.0),
                                dict(head_lr=-1e-3), dict(epochs=1.5), dict(batch_size=True),
                                dict(warmup=-0.1), dict(warmup=float("nan")), dict(weight_decay=-1.0),
                                dict(seed=-1)])
def test_train_config_refuses_bad_values(kw):
    with pytest.raises((ValueError, TypeError)):
        T.TrainConfig(**kw)


def test_train_config_accepts_the_book_settings():
    T.TrainConfig(lr=np.float64(3e-3), epochs=np.int64(2), batch_size=32, head_lr=1e-3, warmup=0.0,
                  schedule="cosine", weight_decay=0.01)


def _no_tokenizer(texts):
    raise AssertionError("the arguments should have been refused before tokenising")


@pytest.mark.parametrize("tokens,labels", [(["a", "b"], [0.5, 1.7]), (["a"], [[0]]), (["a", "b"], [0, -1]),
                                           ("ab", [0, 1])])
def test_batches_refuses_labels_that_are_not_class_indices(tokens, labels):
    with pytest.raises((ValueError, TypeError)):
        T.Batches(_no_tokenizer, tokens, labels, "cpu")


# ----------------------------------------------------------------- statistics
@pytest.mark.parametrize("n", [2, 3, 7])
@pytest.mark.parametrize("level", [0.5, 0.9, 0.99])
def test_paired_interval_equals_scipy_ttest_rel(n, level):
    rng = np.random.default_rng(n)
    a, b = rng.normal(0.8, 0.05, n), rng.normal(0.8, 0.05, n)
    got = stats.paired(a, b, level)
    ci = scipy.stats.ttest_rel(a, b).confidence_interval(level)
    assert got["lo"] == pytest.approx(ci.low, abs=1e-12) and got["hi"] == pytest.approx(ci.high, abs=1e-12)


def test_paired_constant_differences_and_overflow():
    same = stats.paired([0.5, 0.7, 0.9], [0.5, 0.7, 0.9])
    assert same["tie"] and same["se"] == 0.0
    with pytest.raises(ValueError, match="overflow"):
        with np.errstate(over="ignore", invalid="ignore"):
            stats.paired([1e308, -1e308], [-1e308, 1e308])   # used to give NaN and "a < b"


def test_extension_refuses_an_unknown_edge():
    with pytest.raises(ValueError, match="edge"):
        stats.extension([1e-3, 1e-2], None)   # used to extend the high edge


# ----------------------------------------------------------------- low rank
@pytest.mark.parametrize("shape,rank", [((1, 6), 1), ((6, 1), 1), ((6, 4), 2), ((3, 8), 2)])
def test_eckart_young_on_thin_and_rank_deficient_matrices(shape, rank):
    rng = np.random.default_rng(0)
    W = rng.standard_normal((shape[0], rank)) @ rng.standard_normal((rank, shape[1]))
    s = lowrank.singular_values(W)
    assert s.size == min(shape) and lowrank.rank_for_energy(s, 1.0) == rank
    for k in range(min(shape) + 1):
        Wk = lowrank.best_rank_k(W, k)
        assert np.linalg.matrix_rank(Wk) <= k
        assert np.linalg.norm(W - Wk) == pytest.approx(lowrank.rank_k_error(W, k), abs=1e-9)


def test_marchenko_pastur_grid_and_amplification_rank_are_checked():
    with pytest.raises(ValueError, match="grid"):
        lowrank.marchenko_pastur_singular_values((3, 4), 1.0, grid=1)   # used to return NaN
    with pytest.raises(ValueError, match="r must"):
        lowrank.amplification_factor(np.ones((3, 3)), np.eye(3), 0)


# ----------------------------------------------------------------- counting and scaling
@pytest.mark.parametrize("V,d,L,h,f,P,types", [(7, 3, 1, 1, 5, 4, 1), (11, 6, 2, 3, 1, 9, 2), (5, 9, 3, 3, 7, 1, 3)])
def test_counting_matches_a_built_encoder(V, d, L, h, f, P, types):
    cfg = dict(vocab_size=V, hidden_size=d, num_hidden_layers=L, num_attention_heads=h,
               intermediate_size=f, max_position_embeddings=P, type_vocab_size=types)
    shape = C.shape_from_bert_config(cfg)
    built = BertEncoder(BertConfig(**cfg)).num_parameters()
    assert built == C.total_params(shape) - C.param_breakdown(shape)["pooler"]  # ours has no pooler


def test_heads_that_do_not_divide_the_width_are_refused_everywhere():
    with pytest.raises(ValueError, match="divisible"):
        BertConfig(hidden_size=10, num_attention_heads=3)
    with pytest.raises(ValueError, match="divisible"):
        C.ModelShape("x", 10, 10, 1, 3, 4, 0)
    with pytest.raises(ValueError, match="divide"):
        scaling.llama_counts(100, 10, 1, 3, 3, 7)   # used to floor the head size silently
    with pytest.raises(ValueError, match="divide"):
        scaling.llama_counts(100, 12, 1, 4, 3, 7)
    with pytest.raises(ValueError):
        scaling.llama_counts(100, 12, -1, 4, 4, 7)


@pytest.mark.parametrize("n,text", [(999.9, "1k"), (999_499, "999k"), (999_950, "1M"), (999_999_999, "1B"),
                                    (22_713_216, "22.7M"), (12, "12")])
def test_human_rounds_into_the_next_unit(n, text):
    assert C.human(n) == text   # 999,950 was "1e+03k"


@pytest.mark.parametrize("bad", [lambda: scaling.step_time(2, float("nan"), 1, 0, 0),
                                 lambda: scaling.step_time(2, 1.0, -5, 0, 1),
                                 lambda: scaling.step_time(2, 1.0, 1, float("nan"), 0),
                                 lambda: scaling.ring_bytes_per_rank(float("nan"), 2),
                                 lambda: scaling.min_ranks(10, 1, float("nan")),
                                 lambda: scaling.max_params_qlora(2, float("inf"), 1, 1),
                                 lambda: scaling.fit_alpha_beta([1, 2, 3], [1, float("nan"), 3]),
                                 lambda: scaling.zero_per_rank(10, 5, 2, True),
                                 lambda: C.customer_storage_gb(0, 0, 1)])
def test_scaling_refuses_nan_and_negative_sizes(bad):
    with pytest.raises(ValueError):
        bad()


def test_select_lr_checks_max_extensions_before_any_run():
    runs = []
    with pytest.raises(ValueError, match="max_extensions"):
        stats.select_lr(lambda lr: runs.append(lr) or 1.0, [1e-3, 1e-2], max_extensions=-1)
    assert runs == []   # the grid used to be trained first, then refused


def test_subspace_lr_takes_numpy_ints():
    from pedagogy_lib.torch_ref.subspace import subspace_lr

    assert subspace_lr(1.0, np.int64(4)) == 0.5   # was refused: "d must be a positive int"
    with pytest.raises(ValueError):
        subspace_lr(True, 4)


@pytest.mark.parametrize("x, sig, want", [(0.000999999, 2, "0.10%"), (0.0999, 2, "10%"), (0.00999, 2, "1.0%"),
                                          (0.002366, 2, "0.24%"), (0.00099949, 3, "0.0999%"),
                                          (0.0009999, 3, "0.100%")])
def test_pct_keeps_its_significant_figures_across_a_decade(x, sig, want):
    """pct(0.000999999) used to print '0.100%' (three figures where two were asked)."""
    from pedagogy_lib.counting import pct
    assert pct(x, sig) == want


def test_rel_error_refuses_shapes_that_would_broadcast():
    """rel_error(ones(3), ones((2, 3))) used to return 0 by broadcasting."""
    from pedagogy_lib.gradcheck import rel_error
    with pytest.raises(ValueError, match="shapes differ"):
        rel_error(np.ones(3), np.ones((2, 3)))
    assert rel_error(np.ones(3), np.ones(3)) == 0.0


def test_finite_array_sees_a_nan_hidden_under_a_mask():
    from pedagogy_lib import checks
    x = np.ma.masked_invalid(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="NaN/inf"):
        checks.finite_array(x, "x")
