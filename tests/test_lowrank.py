"""Chapter 01 library: spectra, Eckart–Young, principal angles, Marchenko–Pastur, random
subspaces (finite differences in float64) and the torch twin of the subspace trainer."""
import json
import math

import numpy as np
import pytest
import scipy.linalg
import torch

from pedagogy_lib import lowrank as lr
from pedagogy_lib import nn
from pedagogy_lib.bert import BertConfig, BertEncoder, SentenceEncoder
from pedagogy_lib.gradcheck import compare, numerical_grad, rel_error

SHAPES = [(7, 5), (5, 7), (12, 12), (30, 4), (1, 6)]


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


# ---------------------------------------------------------------- Eckart–Young (1.3)
@pytest.mark.parametrize("shape", SHAPES)
def test_eckart_young_errors_match_the_tail_of_the_spectrum(shape):
    W = rand(*shape, seed=sum(shape))
    s = lr.singular_values(W)
    assert np.allclose(s, np.linalg.svd(W, compute_uv=False))
    for k in range(min(shape) + 1):
        Wk = lr.best_rank_k(W, k)
        assert np.linalg.matrix_rank(Wk) == k
        fro = np.linalg.norm(W - Wk)
        spec = np.linalg.norm(W - Wk, 2)
        assert math.isclose(fro, lr.rank_k_error(W, k), rel_tol=1e-9, abs_tol=1e-12)
        assert math.isclose(fro**2, np.sum(s[k:] ** 2), rel_tol=1e-9, abs_tol=1e-12)
        assert math.isclose(spec, lr.rank_k_error(W, k, "spectral"), rel_tol=1e-9, abs_tol=1e-12)
        want = s[k] if k < len(s) else 0.0
        assert math.isclose(lr.rank_k_error(W, k, "spectral"), want, abs_tol=1e-12)


def test_no_rank_k_matrix_beats_the_truncated_svd():
    W = rand(9, 6, seed=3)
    rng = np.random.default_rng(4)
    for k in (1, 2, 4):
        best = lr.rank_k_error(W, k)
        U, s, V = lr.top_singular_vectors(W, k)
        for _ in range(200):  # random rank-k matrices and small perturbations of W_k
            M = rng.standard_normal((9, k)) @ rng.standard_normal((k, 6))
            assert np.linalg.norm(W - M) >= best - 1e-12
            Up = U + 0.05 * rng.standard_normal(U.shape)
            assert np.linalg.norm(W - (Up * s) @ V.T) >= best - 1e-12


def test_top_singular_vectors_are_orthonormal_and_reconstruct():
    W = rand(8, 5, seed=5)
    U, s, V = lr.top_singular_vectors(W, 5)
    assert np.allclose(U.T @ U, np.eye(5)) and np.allclose(V.T @ V, np.eye(5))
    assert np.allclose((U * s) @ V.T, W)
    assert lr.top_singular_vectors(W, 0)[0].shape == (8, 0)


# ------------------------------------------------------------- spectra summaries
def test_energy_and_rank_for_energy_on_a_known_spectrum():
    s = np.array([1.0, 3.0, 2.0])  # order does not matter: sorted inside
    assert math.isclose(lr.energy_top_k(s, 1), 9 / 14)
    assert math.isclose(lr.energy_top_k(s, 0), 0.0) and math.isclose(lr.energy_top_k(s, 3), 1.0)
    assert lr.rank_for_energy(s, 0.9) == 2  # 9/14 = 0.64 < 0.9 ≤ 13/14
    assert lr.rank_for_energy(s, 9 / 14) == 1
    assert lr.rank_for_energy(s, 1.0) == 3
    assert lr.rank_for_energy(np.array([2.0, 0.0, 0.0]), 1.0) == 1


def test_effective_and_stable_rank():
    assert math.isclose(lr.effective_rank(np.ones(17)), 17.0)
    assert math.isclose(lr.effective_rank(np.array([5.0, 0.0, 0.0])), 1.0)
    s = np.array([4.0, 2.0, 1.0, 1.0])
    p = s / s.sum()
    assert math.isclose(lr.effective_rank(s), math.exp(-(p * np.log(p)).sum()))
    assert math.isclose(lr.effective_rank(3 * s), lr.effective_rank(s))  # scale-free
    assert 1 <= lr.effective_rank(s) <= 4
    assert math.isclose(lr.stable_rank(s), 22 / 16)
    W = np.outer(rand(6), rand(4, seed=1))  # rank one
    assert math.isclose(lr.effective_rank(lr.singular_values(W)), 1.0, rel_tol=1e-9)


# ------------------------------------------------------------ principal angles (1.7)
@pytest.mark.parametrize("n,p,q", [(10, 3, 3), (20, 2, 5), (20, 6, 4), (5, 5, 2)])
def test_principal_angles_match_scipy(n, p, q):
    A, B = rand(n, p, seed=n + p), rand(n, q, seed=n + q + 1)
    ours = lr.principal_angles(A, B)
    assert ours.shape == (min(p, q),)
    assert np.all(np.diff(ours) >= -1e-12)  # ascending
    assert np.allclose(ours, np.sort(scipy.linalg.subspace_angles(A, B)), atol=1e-10)
    assert np.allclose(ours, lr.principal_angles(B, A))


def test_principal_angles_known_values_and_small_angles():
    a = 0.3
    A = np.array([[1.0], [0.0]])
    B = np.array([[math.cos(a)], [math.sin(a)]])
    assert math.isclose(lr.principal_angles(A, B)[0], a, rel_tol=1e-12)
    tiny = 1e-9  # arccos alone would return 0 or ~1.5e-8 here
    B = np.array([[math.cos(tiny)], [math.sin(tiny)]])
    assert math.isclose(lr.principal_angles(A, B)[0], tiny, rel_tol=1e-6)
    X = rand(8, 3)
    assert np.allclose(lr.principal_angles(X, X @ rand(3, 3, seed=2)), 0, atol=1e-7)  # same span
    E = np.eye(6)
    assert np.allclose(lr.principal_angles(E[:, :2], E[:, 2:5]), math.pi / 2)
    assert math.isclose(lr.subspace_similarity(E[:, :2], E[:, 2:5]), 0.0, abs_tol=1e-20)
    assert math.isclose(lr.subspace_similarity(X, X @ rand(3, 3, seed=2)), 1.0)


def test_subspace_similarity_of_random_subspaces():
    n, p = 400, 8  # E cos² = p/n for independent random p-dim subspaces of R^n
    sims = [lr.subspace_similarity(rand(n, p, seed=i), rand(n, p, seed=100 + i)) for i in range(20)]
    assert abs(np.mean(sims) - p / n) < 0.3 * p / n


def test_amplification_factor():
    rng = np.random.default_rng(0)
    U, _ = np.linalg.qr(rng.standard_normal((10, 10)))
    V, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    s = np.array([10.0, 5, 2, 1, 0.5, 0.2, 0.1, 0.05])
    W0 = (U[:, :8] * s) @ V.T
    along_top = 3 * np.outer(U[:, 0], V[:, 0])  # ΔW along W0's strongest direction
    along_weak = 3 * np.outer(U[:, 7], V[:, 7])  # … and along its weakest one
    assert math.isclose(lr.amplification_factor(W0, along_top, 1), 3 / 10)
    assert math.isclose(lr.amplification_factor(W0, along_weak, 1), 3 / 0.05)
    Ur, _, Vr = lr.top_singular_vectors(along_weak, 1)
    assert math.isclose(lr.projection_norm(W0, Ur, Vr), 0.05)


# ------------------------------------------------------------- Marchenko–Pastur (1.8)
@pytest.mark.parametrize("shape,var", [((1200, 300), 0.04), ((300, 1200), 2.0), ((600, 600), 1.0)])
def test_marchenko_pastur_predicts_a_gaussian_spectrum(shape, var):
    X = rand(*shape, seed=7) * math.sqrt(var)
    s = lr.singular_values(X)
    lo, hi = lr.marchenko_pastur_edges(shape, var)
    assert abs(s[0] / hi - 1) < 0.03
    if lo > 0:
        assert abs(s[-1] / lo - 1) < 0.1
    mp = lr.marchenko_pastur_singular_values(shape, var)
    assert mp.shape == (min(shape),) and np.all(np.diff(mp) <= 0)
    assert np.median(np.abs(s / mp - 1)) < 0.01
    assert np.all(mp <= hi + 1e-9) and np.all(mp >= lo - 1e-9)


def test_gaussian_like_has_the_shape_and_mean_square():
    W = rand(200, 100) * 0.1 + 0.05
    G = lr.gaussian_like(W, seed=3)
    assert G.shape == W.shape
    assert abs(np.mean(G**2) / np.mean(W**2) - 1) < 0.05
    assert np.array_equal(G, lr.gaussian_like(W, seed=3))


# ----------------------------------------------------------- projections (1.9, 1.10)
def test_fwht_is_the_sylvester_hadamard_matrix():
    for n in (1, 2, 8, 64):
        assert np.allclose(lr.fwht(np.eye(n)), scipy.linalg.hadamard(n))
    x = rand(3, 16)
    assert np.allclose(lr.fwht(x), x @ scipy.linalg.hadamard(16).T)
    with pytest.raises(ValueError, match="power-of-two"):
        lr.fwht(np.ones(6))


@pytest.mark.parametrize("kind", sorted(lr.KINDS))
@pytest.mark.parametrize("D,d", [(37, 5), (64, 8), (10, 20), (1000, 3), (1, 1)])
def test_projection_and_its_transpose_are_one_matrix(kind, D, d):
    P = lr.make_projection(kind, D, d, seed=1)
    M = P.matrix()
    assert M.shape == (D, d)
    z, g = rand(d, seed=2), rand(D, seed=3)
    assert np.allclose(P(z), M @ z, atol=1e-12)
    assert np.allclose(P.T(g), M.T @ g, atol=1e-12)  # the adjoint really is Pᵀ
    again = lr.make_projection(kind, D, d, seed=1).matrix()
    assert np.array_equal(M, again)  # seeded
    if D * d > 4:
        assert not np.allclose(M, lr.make_projection(kind, D, d, seed=2).matrix())


def test_projection_columns_have_unit_norm():
    assert np.allclose(np.linalg.norm(lr.make_projection("dense", 50, 7).matrix(), axis=0), 1)
    S = lr.make_projection("sparse", 60, 12).matrix()  # 12 divides 60: exactly unit
    assert np.allclose(np.linalg.norm(S, axis=0), 1)
    assert np.allclose(S.T @ S, np.eye(12))  # disjoint supports: orthonormal columns
    assert np.all(np.count_nonzero(S, axis=1) == 1)
    F = lr.make_projection("fastfood", 64, 6).matrix()  # block n = 8 divides 64
    assert np.allclose(np.linalg.norm(F, axis=0), 1)
    for kind in lr.KINDS:  # ‖Pz‖ ≈ ‖z‖ for a long random P
        P = lr.make_projection(kind, 4096, 16, seed=5)
        z = rand(16, seed=6)
        assert abs(np.linalg.norm(P(z)) / np.linalg.norm(z) - 1) < 0.15


def _mlp(seed=0):
    net = nn.Sequential(nn.Linear(5, 6, rng=np.random.default_rng(seed), dtype=np.float64),
                        nn.GELU(), nn.Linear(6, 3, rng=np.random.default_rng(seed + 1), dtype=np.float64))
    x = rand(9, 5, seed=seed + 2)
    y = np.random.default_rng(seed).integers(0, 3, 9)
    return net, x, y


@pytest.mark.parametrize("kind", sorted(lr.KINDS))
def test_subspace_gradient_matches_finite_differences(kind):
    net, x, y = _mlp()
    theta0 = {n: v.copy() for n, v in net.named_parameters()}
    sub = lr.RandomSubspace(theta0, d=7, kind=kind, seed=3)
    assert sub.D == net.num_parameters()
    z = 0.3 * rand(7, seed=4)

    def loss():
        sub.load_into(net, z)
        return nn.cross_entropy(net(x), y)[0]

    sub.load_into(net, z)
    net.zero_grad()
    _, dlogits = nn.cross_entropy(net(x), y)
    net.backward(dlogits)
    grads = dict(net.named_grads())
    analytic = sub.grad_z(grads)
    assert compare(analytic, numerical_grad(loss, z)) < 1e-7
    flat = np.concatenate([grads[n].ravel() for n in sub.names])
    assert np.allclose(analytic, sub.matrix().T @ flat)  # eq. 1.10 literally


def test_subspace_starts_at_theta0_and_moves_linearly():
    net, _, _ = _mlp()
    theta0 = dict(net.named_parameters())
    sub = lr.RandomSubspace(theta0, d=4, kind="dense", seed=0)
    at0 = sub.theta(np.zeros(4))
    assert all(np.array_equal(at0[n], theta0[n]) for n in theta0)
    z1, z2 = rand(4, seed=1), rand(4, seed=2)
    flat = lambda t: np.concatenate([t[n].ravel() - theta0[n].ravel() for n in sub.names])  # noqa: E731
    assert np.allclose(flat(sub.theta(z1 + z2)), flat(sub.theta(z1)) + flat(sub.theta(z2)))
    theta0["0.weight"][...] = 99.0  # the subspace keeps its own copy of θ0
    assert not np.any(sub.theta(np.zeros(4))["0.weight"] == 99.0)


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("bad", [np.ones(5), np.ones((2, 3, 4)), np.ones((0, 3))])
def test_non_matrices_are_rejected(bad):
    with pytest.raises(ValueError):
        lr.singular_values(bad)
    with pytest.raises(ValueError):
        lr.best_rank_k(bad, 1)


def test_bad_matrices_and_ranks():
    W = rand(4, 6)
    with pytest.raises(TypeError, match="numpy array"):
        lr.singular_values([[1.0, 2.0]])
    with pytest.raises(TypeError, match="real"):
        lr.singular_values(np.ones((2, 2), dtype=complex))
    for bad in (np.nan, np.inf):
        Wb = W.copy()
        Wb[1, 2] = bad
        with pytest.raises(ValueError, match="NaN"):
            lr.singular_values(Wb)
        with pytest.raises(ValueError, match="NaN"):
            lr.rank_k_error(Wb, 1)
    with pytest.raises(ValueError, match="larger than the rank"):
        lr.best_rank_k(W, 5)
    with pytest.raises(ValueError, match="larger than the rank"):
        lr.rank_k_error(W, 7)
    with pytest.raises(ValueError, match="larger than the rank"):
        lr.top_singular_vectors(W, 5)
    with pytest.raises(ValueError):
        lr.best_rank_k(W, -1)
    with pytest.raises(TypeError):
        lr.best_rank_k(W, 1.5)
    with pytest.raises(TypeError):
        lr.best_rank_k(W, True)
    with pytest.raises(ValueError, match="norm"):
        lr.rank_k_error(W, 1, norm="nuclear")
    with pytest.raises(ValueError, match="same shape"):
        lr.amplification_factor(W, rand(6, 4), 1)


def test_bad_spectra():
    with pytest.raises(ValueError, match="zero"):
        lr.effective_rank(np.zeros(3))
    with pytest.raises(ValueError, match="≥ 0"):
        lr.energy_top_k(np.array([1.0, -0.5]), 1)
    with pytest.raises(ValueError, match="NaN"):
        lr.effective_rank(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="1-D"):
        lr.stable_rank(np.ones((2, 2)))
    with pytest.raises(ValueError):
        lr.energy_top_k(np.ones(3), 4)
    for frac in (0, 1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match="frac"):
            lr.rank_for_energy(np.ones(3), frac)


def test_bad_subspace_arguments():
    with pytest.raises(ValueError, match="same space"):
        lr.principal_angles(rand(5, 2), rand(6, 2))
    with pytest.raises(ValueError, match="dependent"):
        lr.principal_angles(np.ones((5, 2)), rand(5, 2))
    with pytest.raises(ValueError, match="cannot be independent"):
        lr.principal_angles(rand(3, 4), rand(3, 2))
    with pytest.raises(ValueError):
        lr.marchenko_pastur_edges((10,), 1.0)
    with pytest.raises(ValueError):
        lr.marchenko_pastur_edges((10, 0), 1.0)
    with pytest.raises(ValueError, match="var"):
        lr.marchenko_pastur_singular_values((10, 5), 0.0)
    with pytest.raises(ValueError, match="var"):
        lr.marchenko_pastur_singular_values((10, 5), float("nan"))


@pytest.mark.parametrize("d", [0, -3])
def test_projection_dimension_must_be_positive(d):
    for kind in lr.KINDS:
        with pytest.raises(ValueError, match="projection dimension"):
            lr.make_projection(kind, 10, d)
    with pytest.raises(ValueError, match="projection dimension"):
        lr.RandomSubspace({"w": np.ones(3)}, d)
    with pytest.raises(ValueError, match="projection dimension"):
        lr.projection_blocks([5], d)


def test_bad_projection_arguments():
    with pytest.raises(TypeError, match="projection dimension"):
        lr.make_projection("dense", 10, 2.0)
    with pytest.raises(ValueError, match="unknown projection kind"):
        lr.make_projection("gaussian", 10, 2)
    with pytest.raises(ValueError, match="D"):
        lr.make_projection("sparse", 0, 2)
    with pytest.raises(ValueError, match="use kind='sparse'"):
        lr.make_projection("dense", 10_000_000, 100)
    P = lr.make_projection("sparse", 10, 3)
    with pytest.raises(ValueError, match="shape"):
        P(np.ones(4))
    with pytest.raises(ValueError, match="NaN"):
        P(np.array([1.0, np.nan, 0.0]))
    with pytest.raises(ValueError, match="shape"):
        P.T(np.ones(3))
    with pytest.raises(TypeError):
        P(np.ones(3, dtype=int))
    with pytest.raises(TypeError):
        lr.RandomSubspace({}, 2)
    with pytest.raises(ValueError, match="NaN"):
        lr.RandomSubspace({"w": np.array([1.0, np.nan])}, 1)
    sub = lr.RandomSubspace({"w": np.ones((2, 3))}, 2)
    with pytest.raises(KeyError):
        sub.grad_z({"v": np.ones((2, 3))})
    with pytest.raises(ValueError, match="shape"):
        sub.grad_z({"w": np.ones(6)})
    net, _, _ = _mlp()
    with pytest.raises(KeyError, match="no parameters"):
        sub.load_into(net, np.zeros(2))


# ------------------------------------------------------------------- torch twin
def _tiny_models(seed=0):
    from pedagogy_lib.torch_ref.encoder import SentenceEncoder as TSentence, build_encoder
    from pedagogy_lib.torch_ref.train import Classifier

    cfg = BertConfig(vocab_size=13, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=12, max_position_embeddings=8)
    np_bert = BertEncoder(cfg, seed=seed, dtype=np.float64)
    t_bert = build_encoder(cfg, np_bert.state_dict(), torch.float64, "cpu")
    # build_encoder loads into float32 before casting: copy the rounded weights back
    np_bert.load_state_dict({k: v.numpy() for k, v in t_bert.state_dict().items()})
    t_model = Classifier(TSentence(t_bert), seed=seed)
    head = nn.Linear(8, 2, dtype=np.float64)
    head.p["weight"][...] = t_model.head.weight.detach().numpy()
    head.p["bias"][...] = t_model.head.bias.detach().numpy()
    return SentenceEncoder(np_bert), head, t_model


@pytest.mark.parametrize("kind", sorted(lr.KINDS))
def test_torch_subspace_equals_numpy(kind):
    from pedagogy_lib.torch_ref.subspace import SubspaceModel

    np_enc, np_head, t_model = _tiny_models()
    t_names = [n for n, _ in t_model.named_parameters()
               if n.startswith("encoder.bert.encoder.") or n.startswith("head.")]
    np_names = [n.removeprefix("encoder.") for n in t_names]  # numpy: "bert.encoder..." / "head..."
    np_params = {**dict(np_enc.named_parameters()),
                 **{f"head.{k}": v for k, v in np_head.named_parameters()}}
    sub_np = lr.RandomSubspace({n: np_params[n] for n in np_names}, d=6, kind=kind, seed=11)
    sub_t = SubspaceModel(t_model, t_names, d=6, kind=kind, seed=11)
    assert sub_t.D == sub_np.D and [n for n, p in sub_t.named_parameters() if p.requires_grad] == ["z"]

    z = 0.2 * rand(6, seed=1)
    with torch.no_grad():
        sub_t.z.copy_(torch.from_numpy(z))
    th_np, th_t = sub_np.theta(z), sub_t.theta()
    for nt, nn_ in zip(t_names, np_names):
        assert np.allclose(th_t[nt].detach().numpy(), th_np[nn_], rtol=0, atol=1e-13), nt

    ids = np.array([[1, 5, 7, 0], [2, 3, 0, 0], [4, 4, 9, 12]])
    mask = (ids > 0).astype(np.int64)
    y = np.array([0, 1, 1])
    # torch: autograd through θ0 + P z
    loss_t = torch.nn.functional.cross_entropy(sub_t(torch.from_numpy(ids), torch.from_numpy(mask)),
                                               torch.from_numpy(y))
    loss_t.backward()
    # NumPy: hand-written backward, then Pᵀ
    for n, v in th_np.items():
        np_params[n][...] = v
    np_enc.zero_grad()
    np_head.zero_grad()
    loss_n, dlog = nn.cross_entropy(np_head(np_enc(ids, mask)), y)
    np_enc.backward(np_head.backward(dlog))
    grads = {**dict(np_enc.named_grads()), **{f"head.{k}": g for k, g in np_head.named_grads()}}
    gz = sub_np.grad_z(grads)
    assert abs(loss_t.item() - loss_n) < 1e-12
    assert rel_error(sub_t.z.grad.numpy(), gz) < 1e-10


def test_torch_fwht_and_subspace_errors():
    from pedagogy_lib.torch_ref.subspace import SubspaceModel, fwht, subspace_lr

    x = torch.from_numpy(rand(2, 32))
    assert np.allclose(fwht(x).numpy(), lr.fwht(x.numpy()))
    _, _, t_model = _tiny_models()
    with pytest.raises(KeyError):
        SubspaceModel(t_model, ["nope"], 3)
    with pytest.raises(ValueError, match="projection dimension"):
        SubspaceModel(t_model, ["head.bias"], 0)
    with pytest.raises(ValueError, match="twice"):
        SubspaceModel(t_model, ["head.bias", "head.bias"], 2)
    assert math.isclose(subspace_lr(1.0, 100), 0.1)
    with pytest.raises(ValueError):
        subspace_lr(1.0, 0)


# ------------------------------------------------------------------ d90 (1.11)
def test_threshold_dimension():
    assert lr.threshold_dimension([10, 100, 1000], [0.6, 0.85, 0.9], 0.92) == 100
    assert lr.threshold_dimension(np.array([1000, 10, 100]), [0.9, 0.6, 0.85], 0.92) == 100  # unsorted
    assert lr.threshold_dimension([10, 100], [0.5, 0.6], 0.95) is None
    assert lr.threshold_dimension([10, 30], [0.9, 0.95], 1.0) == 10  # exactly 90% counts
    assert lr.threshold_dimension([10, 30], [0.5, 0.95], 1.0, frac=1.0) is None
    with pytest.raises(ValueError):
        lr.threshold_dimension([10, 30], [0.5], 1.0)
    with pytest.raises(ValueError):
        lr.threshold_dimension([0, 30], [0.5, 0.6], 1.0)
    with pytest.raises(ValueError):
        lr.threshold_dimension([10.5, 30], [0.5, 0.6], 1.0)
    with pytest.raises(ValueError):
        lr.threshold_dimension([10, 30], [0.5, np.nan], 1.0)
    with pytest.raises(ValueError):
        lr.threshold_dimension([10, 30], [0.5, 0.6], 1.0, frac=0)


# ------------------------------------------- chapter data, figures, verdicts
def test_update_stats_on_a_planted_low_rank_update():
    from pedagogy_lib.book.ch01 import experiment as E

    rng = np.random.default_rng(0)
    W0 = rng.standard_normal((60, 40)) / 8
    U0, s0, V0t = np.linalg.svd(W0, full_matrices=False)
    dW = 0.05 * np.outer(U0[:, -1], V0t[-1]) + 0.03 * np.outer(U0[:, -2], V0t[-2])  # W0's weakest directions
    st = E.update_stats(W0, W0 + dW, k=2)
    assert math.isclose(st["E_k_dW"], 1.0) and st["k90_dW"] <= 2
    assert st["sim_left"] < 1e-20 and math.isclose(st["min_angle_deg"], 90.0)
    assert math.isclose(st["proj_dW"], np.sqrt(s0[-1] ** 2 + s0[-2] ** 2), rel_tol=1e-9)
    assert st["turn_deg"] < 1e-6  # adding to the weakest directions leaves the top-2 subspace alone
    assert math.isclose(st["rel_norm"], np.linalg.norm(dW) / np.linalg.norm(W0))


def test_figures_and_claims_from_saved_results():
    from matplotlib.figure import Figure

    from pedagogy_lib.book.ch01 import claims as V
    from pedagogy_lib.book.ch01 import experiment as E
    from pedagogy_lib.book.ch01 import figures as F

    spec = E.spectra_data()
    assert len(spec["matrices"]) == 36
    q0 = spec["matrices"]["encoder.layer.0.attention.self.query.weight"]
    assert q0["shape"] == (384, 384) and q0["k90"] <= 384 and q0["E_k"] > q0["E_k_mp"]
    assert isinstance(F.spectra(spec), Figure) and isinstance(F.intrinsic(), Figure)
    assert isinstance(F.update(), Figure)  # from the stored ch01_update.json, no fine-tuning
    rng = np.random.default_rng(1)
    W0 = {k: v for k, v in E.weight_matrices().items() if k.startswith("encoder.layer.0.")}  # one layer: fast
    W1 = {k: v + 1e-3 * np.outer(rng.standard_normal(v.shape[0]), rng.standard_normal(v.shape[1]))
          for k, v in W0.items()}
    upd = E.update_data(W0, W1)
    assert len(upd["matrices"]) == 6
    F.update(upd)
    assert all(math.isclose(m["E_k_dW"], 1.0) for m in upd["matrices"].values())  # rank-one updates
    records = V.claims({"spectra": spec})  # update and sweep from chapters/results/
    assert {r["verdict"] for r in records} <= {"holds", "approximately", "wrong", "untestable-here"}
    assert len({r["id"] for r in records}) == len(records) >= 5
    assert all(r["chapter"] == "01" and r["our_value"] and r["published_value"] for r in records)
    spectra_claim = next(r for r in records if r["id"] == "ch01-spectra-decay")
    assert spectra_claim["verdict"] == "wrong"  # MiniLM's attention spectra: E_8 well below one half
    assert V.table(records).count("[") >= len(records)


NOISE = (0.0, 0.004, -0.004, 0.002, -0.002)  # per seed: paired intervals of about ±0.4 points


def _fake_sweep(curve, full=0.90, unbracketed=(), ds=(10, 100, 300, 1000, 3000)):
    """A made-up sweep in the stored format: five seeds, one arm per d, full FT flat at ``full``."""
    seeds = list(range(len(NOISE)))

    def arm(accs, d=None):
        return {"d": d, "seeds": seeds, "test_by_seed": list(accs), "eta": 1.0, "lr": 1e-2,
                "bracketed": d not in unbracketed, "edge": "high" if d in unbracketed else None}

    arms = {"full FT": arm([full] * len(seeds))}
    arms |= {f"d={d}": arm([a + n for n in NOISE], d) for d, a in zip(ds, curve)}
    return {"config": {"ds": list(ds), "frac": 0.9}, "arms": arms, "majority_test": 0.5, "D": 10**6,
            "n_test": 500, "total_params": 2 * 10**7}


def _fake_ch01(turn=1.0, sim=2.0, proj=0.08, rel=0.01, concentrated=True, curve=None, full=0.90, unbracketed=()):
    """Made-up inputs for verdicts.ch01.claims: spectra, update statistics and a sweep."""
    spec = {"k": 8, "matrices": {f"m{i}": {
        "type": "query", "shape": (384, 384), "E_k": 0.15, "E_k_mp": 0.08, "k90": 150, "k90_mp": 190,
        "erank": 270.0, "erank_mp": 300.0} for i in range(4)}}
    upd = {"k": 8, "matrices": {f"m{i}": {
        "E_k_dW": 0.6 if concentrated else 0.1, "E_k_W0": 0.15, "k90_dW": 50, "k90_W0": 160,
        "rel_norm": rel, "turn_deg": turn, "sim_left": sim * 8 / 384, "sim_random_left": 8 / 384,
        "proj_dW": proj, "proj_W0": 1.0, "proj_random": 0.05} for i in range(4)}}
    sweep = _fake_sweep(curve or [0.5, 0.85, 0.87, 0.885, 0.895], full, unbracketed)
    return {"spectra": spec, "update": upd, "intrinsic": sweep}


@pytest.mark.parametrize("curve, unbracketed, verdict", [
    ([0.5, 0.85, 0.87, 0.885, 0.895], (), "approximately"),  # 10 < d90 ≤ 100; matches only at 3000
    ([0.5, 0.85, 0.87, 0.895, 0.90], (), "holds"),  # at d = 1000 the interval of (sub − full) is above −1 point
    ([0.1, 0.2, 0.3, 0.82, 0.85], (), "wrong"),  # every d ≤ 500 clearly below the bar, never within a point
    ([0.5, 0.6, 0.81, 0.86, 0.87], (), "untestable-here"),  # d = 300 ties with the bar: no order read into it
    ([0.5, 0.85, 0.87, 0.885, 0.895], (100, 300), "untestable-here"),  # the deciding grids unbracketed
    ([0.1, 0.2, 0.3, 0.82, 0.85], (300,), "untestable-here"),  # "wrong" needs every grid up to 1000 bracketed
    ([0.5, 0.85, 0.87, 0.895, 0.90], (None,), "untestable-here"),  # "holds" data, but full FT's rate (the reference) unbracketed
])
def test_ch01_intrinsic_dim_claim_rule(curve, unbracketed, verdict):
    from pedagogy_lib.book.ch01 import claims as V

    rec = {r["id"]: r for r in V.claims(_fake_ch01(curve=curve, unbracketed=unbracketed))}["ch01-intrinsic-dim"]
    assert rec["verdict"] == verdict and "at d = 1,000" in rec["our_value"]
    assert ("unbracketed" in rec["our_value"]) == bool(unbracketed)


def test_ch01_d90_interval_reads_ties_and_edges():
    from pedagogy_lib.book.ch01 import experiment as E

    it = E.intrinsic_summary(_fake_sweep([0.5, 0.81, 0.87, 0.885, 0.895]))  # d = 100 ties with the bar (0.81)
    assert it["vs_bar"][100]["tie"] and (it["d90_lo"], it["d90_hi"]) == (10, 300)
    assert E.d90_interval_text(it) == "10 < d90 ≤ 300 (undecided between: d = 100)"
    assert E.d90_text(it) == "10 < d90 ≤ 100"  # the seed mean alone reaches the bar at 100
    it = E.intrinsic_summary(_fake_sweep([0.5, 0.85, 0.87, 0.885, 0.895], unbracketed=(10,)))
    assert (it["d90_lo"], it["d90_hi"]) == (None, 100) and E.d90_interval_text(it).startswith("d90 ≤ 100")
    it = E.intrinsic_summary(_fake_sweep([0.1, 0.2, 0.3, 0.4, 0.5]))
    assert it["d90_hi"] is None and E.d90_interval_text(it).endswith("d90 > 3000")


@pytest.mark.parametrize("kw, verdict, phrase", [
    ({}, "approximately", "adds new directions rather than rotating"),
    ({"turn": 12.0}, "holds", "turns W0's top directions by mixing in new ones"),
    ({"proj": 0.8}, "approximately", "reweights W0's existing top directions"),
    ({"sim": 20.0}, "approximately", "reweights W0's existing top directions"),  # aligned is no rotation either
    ({"turn": 12.0, "sim": 20.0}, "holds", "within the directions W0 already emphasises"),
    ({"rel": 0.2}, "wrong", "not small"),
    ({"concentrated": False}, "wrong", "only 0/4 matrices"),
])
def test_ch01_small_slice_claim_rule(kw, verdict, phrase):
    from pedagogy_lib.book.ch01 import claims as V

    rec = {r["id"]: r for r in V.claims(_fake_ch01(**kw))}["ch01-small-slice"]
    assert rec["verdict"] == verdict and phrase in rec["our_value"]
    if {"turn", "sim", "proj"} & set(kw):  # turned or aligned: the sentence must not say otherwise
        assert "rather than rotating existing ones" not in rec["our_value"]


@pytest.mark.parametrize("as_text", [str, lambda x: np.array(str(x)), lambda x: str(x).encode()])
def test_ch01_effective_rank_checker_refuses_a_number_given_as_text(as_text):
    """Text is never a number (``book.exercises``): the checker read "5.000000000000001" with float()."""
    from pedagogy_lib.book.ch01 import exercises as ex
    from pedagogy_lib.book.exercises import NotYet

    with pytest.raises(NotYet, match="text"):
        ex.check_effective_rank(lambda s: as_text(lr.effective_rank(s)))
    ex.check_effective_rank(lambda s: np.array(lr.effective_rank(s)))  # a 0-d array is a number


# ------------------------------------------- chapter 01's sweep on the runner (issues #12, #13)
def _fake_run(arm, task, budget, seed, lr, data=None, measure=False):
    """A made-up run: validation peaks at η = 0.3 (lr·√d) for every d, at 1e-4 for full FT."""
    import math as m

    d = arm.opts.get("d")
    x = m.log10(lr * m.sqrt(d) / 0.3) if d else m.log10(lr / 1e-4)
    acc = 0.9 - 0.05 * x * x - (0.3 / d if d else 0.0) + 0.001 * seed
    return {"method": arm.label, "lr": lr, "seed": seed, "val_acc": acc, "test_acc": acc, "cpu_s": 1.0, "trainable": d}


def test_ch01_sweep_follows_the_protocol_and_records_every_arm(tmp_path):
    from pedagogy_lib.book.ch01 import experiment as E

    res = E.intrinsic_sweep((10, 100), log=tmp_path / "runs.jsonl", progress=False, run_fn=_fake_run)
    assert set(res["arms"]) == {"full FT", "d=10", "d=100"}
    for label, a in res["arms"].items():
        assert a["seeds"] == list(E.SEEDS) and a["select_seeds"] == [0, 1] and a["bracketed"], label
        assert a["lr"] in a["lr_grid"] and len(a["test_by_seed"]) == len(E.SEEDS)
    assert res["arms"]["d=100"]["eta"] == 0.3 and res["arms"]["full FT"]["lr"] == 1e-4
    assert res["arms"]["d=10"]["lr_grid"] == list(E.subspace_arm(10).grid)  # lr = η/√d
    n = 3 * 3 * 2 + 3 * 3  # three rates × seeds 0-1, then seeds 2-4, for three arms
    assert res["n_new"] == n == len(res["runs"]) and res["cpu_s_new"] == n
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == n  # every run logged: a rerun resumes
    again = E.intrinsic_sweep((10, 100), log=tmp_path / "runs.jsonl", progress=False, run_fn=_fake_run)
    assert again["n_new"] == 0 and again["arms"] == res["arms"]


def test_ch01_edge_grids_are_extended_and_stored_runs_reused_only_when_verified(monkeypatch):
    from pedagogy_lib.book.ch01 import experiment as E

    edge = lambda arm, *a, **k: _fake_run(arm, *a, **k) | (  # noqa: E731
        {"val_acc": a[3]} if arm.opts.get("d") else {})  # subspace: higher rate, higher validation
    found = E.runner.protocol([E.subspace_arm(100)], None, E.BUDGET, progress=False, run_fn=edge)
    sel = found["d=100"]["selection"]
    assert sel["extensions"] == E.BUDGET.max_extensions and not sel["bracketed"] and sel["edge"] == "high"
    old = {"runs": [{"method": "full FT", "lr": 1e-4, "seed": 0, "val_acc": 0.88, "test_acc": 0.91},
                    {"method": "d=10", "lr": E.subspace_lr(0.3, 10), "seed": 0, "val_acc": 0.68, "test_acc": 0.71}]}
    assert "runs" in json.loads(E.OUT.read_text())  # the stored sweep is in this format (no older one is read)
    stored = E._stored_runs(old)
    assert set(stored) == {("full FT", 1e-4, 0), ("d=10", E.subspace_lr(0.3, 10), 0)}
    same = lambda arm, task, b, seed, lr: {"method": arm.label, "lr": lr, "seed": seed,  # noqa: E731
                                           **{k: v for k, v in stored[(arm.label, lr, seed)].items() if k.endswith("acc")}}
    monkeypatch.setattr(E.runner, "run", same)
    assert E.verify(stored, {}, None, lambda *a: None)["identical"]
    monkeypatch.setattr(E.runner, "run", lambda *a, **k: same(*a, **k) | {"test_acc": 0.5})
    assert not E.verify(stored, {}, None, lambda *a: None)["identical"]
    other = {("d=30", 0.05, 3): stored[("d=10", E.subspace_lr(0.3, 10), 0)]}  # holds none of the VERIFY runs
    assert E.verify(other, {}, None, lambda *a: None) == {"runs": [], "identical": False}  # nothing checked, nothing reused


def test_ch01_stored_sweep_is_on_the_protocol():
    from pedagogy_lib.book.ch01 import experiment as E

    res = E.load_intrinsic()
    b = res["config"]["budget"]
    assert b["seeds"] == list(E.SEEDS) and b["select_seeds"] == 2 and b["n_eval"] is None
    assert set(res["arms"]) == {"full FT", *(f"d={d}" for d in res["config"]["ds"])}
    for label, a in res["arms"].items():
        assert a["seeds"] == b["seeds"] and a["lr"] in a["lr_grid"], label
        inner = a["lr_grid"][0] < a["lr"] < a["lr_grid"][-1]
        assert a["bracketed"] == inner, label  # the flag agrees with the grid
    assert res["verify"]["identical"] and res["n_test"] == 1322 and res["n_new"] + res["n_reused"] == len(res["runs"])


def test_ch01_verification_retrains_count_as_new_not_reused(tmp_path, monkeypatch):
    # verify() retrains (and logs) the VERIFY runs; the old count took "before" after that, so
    # the retrained runs were counted as reused (the stored file said 42 new / 38 reused for 44 / 36)
    from pedagogy_lib.book.ch01 import experiment as E

    first = E.intrinsic_sweep((10, 100), log=tmp_path / "a.jsonl", progress=False, run_fn=_fake_run)
    out = tmp_path / "stored.json"
    out.write_text(json.dumps(first))
    monkeypatch.setattr(E, "OUT", out)
    monkeypatch.setattr(E.runner, "run", _fake_run)  # verify and the protocol train through runner.run
    monkeypatch.setattr(E, "_sizes", lambda task: {})
    again = E.intrinsic_sweep((10, 100), log=tmp_path / "b.jsonl", progress=False)
    assert again["verify"]["identical"] and len(again["verify"]["runs"]) == 2
    assert again["n_new"] == 2 and again["n_reused"] == len(again["runs"]) - 2


def test_ch01_provenance_is_read_off_the_runs():
    from pedagogy_lib.book.ch01 import experiment as E

    runs = [{"cpu_s": 2.0}, {"cpu_s": 3.5}, {"source": "three-seed sweep (verified)"}]
    assert E.provenance({"runs": runs}) == {"trained": 2, "carried": 1, "cpu_s": 5.5}
    stored = E.provenance(E.load_intrinsic())
    assert stored["trained"] + stored["carried"] == len(E.load_intrinsic()["runs"])
