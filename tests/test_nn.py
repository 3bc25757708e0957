"""Finite-difference (float64) and torch-autograd checks of every hand-written backward in nn.py."""
import math

import numpy as np
import pytest
import torch

from pedagogy_lib import nn
from pedagogy_lib.gradcheck import check_module, compare, numerical_grad, rel_error

TOL = 1e-6
rng = np.random.default_rng(0)


def f64(*shape):
    return rng.standard_normal(shape)


def assert_all_small(errors, tol=TOL):
    bad = {k: v for k, v in errors.items() if not v < tol}
    assert not bad, f"gradient check failed: {bad}"


@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 7)])
def test_linear_fd(shape):
    lin = nn.Linear(7, 4, rng=np.random.default_rng(1), dtype=np.float64)
    assert_all_small(check_module(lin, f64(*shape)))


def test_layernorm_fd():
    ln = nn.LayerNorm(6, eps=1e-5, dtype=np.float64)
    ln.p["weight"] = f64(6)
    ln.p["bias"] = f64(6)
    assert_all_small(check_module(ln, f64(3, 4, 6)))


def test_gelu_fd_and_exact_form():
    x = np.linspace(-4, 4, 41)
    g = nn.GELU()
    y = g(x)
    assert np.allclose(y, torch.nn.functional.gelu(torch.from_numpy(x)).numpy(), atol=1e-14)
    assert_all_small(check_module(nn.GELU(), f64(4, 5)))


def test_embedding_fd_repeated_ids():
    emb = nn.Embedding(10, 4, rng=np.random.default_rng(2), dtype=np.float64)
    ids = np.array([[1, 2, 1], [9, 1, 0]])
    errs = check_module(emb, ids, max_entries=None)
    assert_all_small(errs)


def test_softmax_backward_fd():
    x = f64(3, 5)
    r = f64(3, 5)
    y = nn.softmax(x)
    num = numerical_grad(lambda: float((nn.softmax(x) * r).sum()), x)
    assert compare(nn.softmax_backward(y, r), num) < TOL


@pytest.mark.parametrize("with_padding", [False, True])
def test_attention_fd(with_padding):
    att = nn.SelfAttention(8, 2, rng=np.random.default_rng(3), dtype=np.float64)
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]]) if with_padding else np.ones((2, 4), int)
    errs = check_module(att, f64(2, 4, 8), mask, max_entries=None)
    # b_k adds q·b_k to every score of a row, and softmax ignores a constant shift, so
    # dL/db_k = 0 exactly: relative error is meaningless there, check it is ~0 instead.
    errs.pop("key.bias")
    assert np.abs(att.key.g["bias"]).max() < 1e-12
    assert_all_small(errs)


def test_attention_padding_does_not_leak():
    att = nn.SelfAttention(8, 2, rng=np.random.default_rng(3), dtype=np.float64)
    x = f64(1, 4, 8)
    mask = np.array([[1, 1, 0, 0]])
    y1 = att(x, mask)
    x2 = x.copy()
    x2[:, 2:] = 1e3 * f64(1, 2, 8)  # change only padded tokens
    y2 = att(x2, mask)
    assert np.allclose(y1[:, :2], y2[:, :2], atol=1e-12)


def test_cross_entropy_fd_and_torch():
    z = f64(6, 3)
    y = np.array([0, 2, 1, 1, 0, 2])
    loss, dz = nn.cross_entropy(z, y)
    num = numerical_grad(lambda: nn.cross_entropy(z, y)[0], z)
    assert compare(dz, num) < TOL
    tz = torch.from_numpy(z).requires_grad_()
    tl = torch.nn.functional.cross_entropy(tz, torch.from_numpy(y))
    tl.backward()
    assert abs(loss - tl.item()) < 1e-12 and np.allclose(dz, tz.grad.numpy(), atol=1e-14)


def test_mean_pool_backward_fd():
    h = f64(2, 5, 3)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    r = f64(2, 3)
    num = numerical_grad(lambda: float((nn.mean_pool(h, mask) * r).sum()), h)
    assert compare(nn.mean_pool_backward(r, mask, h.dtype), num) < TOL


def test_l2_normalize_each_row_as_torch():
    """Sentence embeddings (BertEncoder.encode) are unit rows: each example is normalised over
    its features, never across the batch; an all-zero row stays 0 (torch's F.normalize)."""
    x = np.random.default_rng(7).standard_normal((3, 5))  # its own draws: f64's stream stays as it was
    x[1] = 0.0
    y = nn.l2_normalize(x)
    assert np.allclose(np.linalg.norm(y, axis=-1), [1.0, 0.0, 1.0], rtol=0, atol=1e-15)
    assert np.allclose(y, torch.nn.functional.normalize(torch.from_numpy(x), dim=-1).numpy(), rtol=0, atol=1e-15)


def test_adamw_matches_torch_step_for_step():
    w = f64(4, 3)
    tw = torch.tensor(w.copy(), requires_grad=True)
    g = np.zeros_like(w)
    opt = nn.AdamW([(w, g)], lr=0.1, weight_decay=0.05)
    topt = torch.optim.AdamW([tw], lr=0.1, weight_decay=0.05)
    for step in range(5):
        grad = np.sin(w * (step + 1))
        g[...] = grad
        tw.grad = torch.from_numpy(grad.copy())
        opt.step()
        topt.step()
        assert np.allclose(w, tw.detach().numpy(), atol=1e-13), step


def test_layers_match_torch_autograd():
    """Linear → LayerNorm → GELU chain: same outputs and gradients as torch."""
    lin = nn.Linear(5, 6, rng=np.random.default_rng(4), dtype=np.float64)
    ln = nn.LayerNorm(6, eps=1e-12, dtype=np.float64)
    act = nn.GELU()
    x = f64(3, 5)
    r = f64(3, 6)
    y = act(ln(lin(x)))
    dx = lin.backward(ln.backward(act.backward(r)))
    tx = torch.tensor(x, requires_grad=True)
    tl = torch.nn.Linear(5, 6).double()
    with torch.no_grad():
        tl.weight.copy_(torch.from_numpy(lin.p["weight"]))
        tl.bias.copy_(torch.from_numpy(lin.p["bias"]))
    ty = torch.nn.functional.gelu(torch.nn.functional.layer_norm(tl(tx), (6,), eps=1e-12))
    (ty * torch.from_numpy(r)).sum().backward()
    assert np.allclose(y, ty.detach().numpy(), atol=1e-12)
    assert np.allclose(dx, tx.grad.numpy(), atol=1e-12)
    assert np.allclose(lin.g["weight"], tl.weight.grad.numpy(), atol=1e-12)


def test_freeze_skips_gradients_and_counts():
    lin = nn.Linear(3, 2, dtype=np.float64)
    lin.freeze(["weight"])
    lin(f64(4, 3))
    lin.backward(f64(4, 2))
    assert "weight" not in lin.g and "bias" in lin.g
    assert lin.num_parameters() == 8 and lin.num_parameters(trainable_only=True) == 2


# ---------------------------------------------------------------- bad input
def test_bad_inputs_raise_clear_errors():
    lin = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="last dimension must be 3"):
        lin(np.zeros((4, 5), np.float32))
    with pytest.raises(TypeError, match="float32 or float64"):
        lin(np.zeros((4, 3), np.int64))
    with pytest.raises(TypeError, match="numpy array"):
        lin([[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="positive"):
        nn.Linear(0, 2)
    with pytest.raises(ValueError, match="ids must lie"):
        nn.Embedding(5, 2)(np.array([[5]]))
    with pytest.raises(TypeError, match="integers"):
        nn.Embedding(5, 2)(np.array([[0.5]]))
    att = nn.SelfAttention(8, 2)
    x = np.zeros((2, 4, 8), np.float32)
    with pytest.raises(ValueError, match="mask has shape"):
        att(x, np.ones((2, 3)))
    with pytest.raises(ValueError, match="only 0 and 1"):
        att(x, 2 * np.ones((2, 4)))
    with pytest.raises(ValueError, match="no real token"):
        att(x, np.array([[1, 1, 0, 0], [0, 0, 0, 0]]))
    with pytest.raises(ValueError, match="divisible"):
        nn.SelfAttention(10, 3)
    with pytest.raises(ValueError, match="labels"):
        nn.cross_entropy(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(TypeError, match="float64"):
        numerical_grad(lambda: 0.0, np.zeros(3, np.float32))


def test_load_state_dict_rejects_and_leaves_state_unchanged():
    lin = nn.Linear(3, 2)
    before = {k: v.copy() for k, v in lin.state_dict().items()}
    bad_nan = {"weight": np.full((2, 3), np.nan), "bias": np.zeros(2)}
    with pytest.raises(ValueError, match="NaN"):
        lin.load_state_dict(bad_nan)
    with pytest.raises(ValueError, match="shape"):
        lin.load_state_dict({"weight": np.zeros((3, 2)), "bias": np.ones(2)})
    with pytest.raises(KeyError, match="missing"):
        lin.load_state_dict({"weight": np.zeros((2, 3))})
    for k, v in lin.state_dict().items():
        assert np.array_equal(v, before[k]), k


def test_rel_error_detects_wrong_gradient():
    # a deliberately wrong backward must fail the check: the test is able to fail
    lin = nn.Linear(4, 3, rng=np.random.default_rng(0), dtype=np.float64)
    orig = lin.backward
    lin.backward = lambda dy: 1.01 * orig(dy)
    errs = check_module(lin, f64(2, 4))
    assert max(errs.values()) > 1e-3
    assert rel_error(np.ones(3), np.ones(3)) == 0.0 and math.isclose(rel_error([1.0], [2.0]), 0.5)


def test_agreement_line_says_no_for_a_wrong_gradient():
    from pedagogy_lib.gradcheck import agreement_line
    assert agreement_line("Linear", {"weight": 1e-10, "input": 2e-9}).endswith("all within 1e-06: yes")
    line = agreement_line("Linear", {"weight": 1e-10, "input": 0.3})
    assert ": NO (worst: input" in line
    with pytest.raises(ValueError, match="no gradients"):
        agreement_line("Linear", {})


def test_pop_exact_zeros_removes_key_bias_and_reports_its_gradient():
    from pedagogy_lib.gradcheck import pop_exact_zeros
    att = nn.SelfAttention(8, 2, rng=np.random.default_rng(3), dtype=np.float64)
    errs = check_module(att, f64(2, 4, 8), np.ones((2, 4), int), max_entries=5)
    assert "key.bias" in errs
    largest = pop_exact_zeros(att, errs)
    assert "key.bias" not in errs and "key.weight" in errs and largest < 1e-12
    att.key.g["bias"][...] = 0.5  # a wrong backward would show up as a large |g|
    assert pop_exact_zeros(att, {"key.bias": 1.0}) == 0.5
