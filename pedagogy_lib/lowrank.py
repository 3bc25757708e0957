"""Low rank, measured (chapter 01): spectra, best rank-k approximation, subspaces, and
training in a random subspace θ = θ0 + P z.

Equations (numbers as in chapter 01):

    (1.1)  W = U Σ Vᵀ = Σ_i σ_i u_i v_iᵀ,   σ_1 ≥ σ_2 ≥ … ≥ 0          (SVD)
    (1.2)  W_k = Σ_{i≤k} σ_i u_i v_iᵀ                                  (truncated SVD)
    (1.3)  ‖W − W_k‖_F² = Σ_{i>k} σ_i²,   ‖W − W_k‖_2 = σ_{k+1}         (Eckart–Young)
    (1.4)  E_k = Σ_{i≤k} σ_i² / Σ_i σ_i²                               (energy in the top k)
    (1.5)  k_90 = min{k : E_k ≥ 0.9}                                   (rank for 90% energy)
    (1.6)  erank = exp(−Σ_i p_i log p_i),  p_i = σ_i / Σ_j σ_j          (Roy & Vetterli 2007)
    (1.7)  cos θ_i = σ_i(Q_Aᵀ Q_B)                                      (principal angles)
    (1.8)  σ ∈ s·[√m − √n, √m + √n]  for an m×n Gaussian, entry std s, m ≥ n
                                                                       (Marchenko–Pastur edges)
    (1.9)  θ = θ0 + P z,   P ∈ R^{D×d},  z ∈ R^d                         (random subspace)
    (1.10) ∂L/∂z = Pᵀ ∂L/∂θ                                            (chain rule through 1.9)
    (1.11) d90 = min{d : acc(d) ≥ 0.9 · acc(full fine-tuning)}          (intrinsic dimension)

Everything is NumPy; the PyTorch twin of (1.9)–(1.10) is ``torch_ref/subspace.py`` and
builds its projections with the code below, so both use the very same P.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from . import checks

__all__ = [
    "singular_values", "energy_top_k", "rank_for_energy", "effective_rank", "stable_rank",
    "best_rank_k", "rank_k_error", "top_singular_vectors", "principal_angles",
    "subspace_similarity", "projection_norm", "amplification_factor",
    "marchenko_pastur_edges", "marchenko_pastur_singular_values", "gaussian_like",
    "threshold_dimension", "fwht", "Projection", "DenseProjection", "SparseProjection", "FastfoodProjection",
    "KINDS", "make_projection", "projection_blocks", "RandomSubspace",
]

DENSE_MAX_ENTRIES = 50_000_000  # 400 MB of float64: beyond this use "sparse" or "fastfood"


# ------------------------------------------------------------------------------ checks
def _matrix(W, name: str = "W") -> np.ndarray:
    """A finite, non-empty 2-D real array, as float64 (the SVD wants one precision)."""
    if not isinstance(W, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(W).__name__}")
    if W.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D matrix, got an array of shape {W.shape}")
    if W.size == 0:
        raise ValueError(f"{name}: the matrix is empty (shape {W.shape})")
    if not (np.issubdtype(W.dtype, np.floating) or np.issubdtype(W.dtype, np.integer)):
        raise TypeError(f"{name}: expected real numbers, got dtype {W.dtype}")
    if not np.all(np.isfinite(W)):
        bad = int(W.size - np.count_nonzero(np.isfinite(W)))
        raise ValueError(f"{name}: contains {bad} NaN/inf value(s)")
    return W.astype(np.float64, copy=False)


def _spectrum(s, name: str = "s") -> np.ndarray:
    """Singular values: 1-D, finite, ≥ 0, not all zero; returned sorted descending."""
    if not isinstance(s, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array of singular values, got {type(s).__name__}")
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D array of singular values, got shape {s.shape}")
    s = s.astype(np.float64, copy=False)
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{name}: contains NaN/inf")
    if np.any(s < 0):
        raise ValueError(f"{name}: singular values are ≥ 0, got a minimum of {s.min():g}")
    if not np.any(s > 0):
        raise ValueError(f"{name}: all singular values are zero (the zero matrix has no spectrum to normalise)")
    return np.sort(s)[::-1]


def _int(x, name: str, lo: int, hi: int | None = None) -> int:
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(x).__name__}")
    if x < lo or (hi is not None and x > hi):
        raise ValueError(f"{name} must lie in [{lo}, {'∞' if hi is None else hi}], got {x}")
    return int(x)


def _rank_k(W: np.ndarray, k, name: str = "k") -> int:
    """k may not exceed the largest rank an m×n matrix can have, min(m, n)."""
    kmax = min(W.shape)
    if isinstance(k, numbers.Integral) and not isinstance(k, bool) and k > kmax:
        raise ValueError(f"{name}={k} is larger than the rank of a {W.shape[0]}×{W.shape[1]} matrix "
                         f"(at most min(m, n) = {kmax})")
    return _int(k, name, 0, kmax)


def _vector(x, n: int, name: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(x).__name__}")
    if x.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},), got {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{name}: expected floats, got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: contains NaN/inf")
    return x.astype(np.float64, copy=False)


# ------------------------------------------------------------------------------ spectra
def singular_values(W) -> np.ndarray:
    """σ_1 ≥ … ≥ σ_min(m,n) of W (eq. 1.1)."""
    return np.linalg.svd(_matrix(W), compute_uv=False)


def energy_top_k(s, k: int) -> float:
    """E_k = Σ_{i≤k} σ_i² / Σ σ_i²: the share of ‖W‖_F² in the top k directions (eq. 1.4)."""
    s = _spectrum(s)
    k = _int(k, "k", 0, s.size)
    e = s**2
    return float(e[:k].sum() / e.sum())


def rank_for_energy(s, frac: float = 0.9) -> int:
    """k_frac = smallest k whose top-k directions hold ≥ frac of ‖W‖_F² (eq. 1.5)."""
    s = _spectrum(s)
    if isinstance(frac, bool) or not isinstance(frac, numbers.Real) or not 0 < frac <= 1:
        raise ValueError(f"frac must be a number in (0, 1], got {frac!r}")
    cum = np.cumsum(s**2) / np.sum(s**2)
    # the tolerance absorbs rounding in the cumulative sum (frac = 1 must give the rank)
    return int(np.searchsorted(cum, frac - 1e-12) + 1)


def effective_rank(s) -> float:
    """Roy & Vetterli's effective rank exp(H(p)), p_i = σ_i / Σ σ_j (eq. 1.6).

    It is 1 for a rank-one matrix and n for n equal singular values; in between it counts
    how many directions the spectrum is "spread" over.
    """
    s = _spectrum(s)
    p = s / s.sum()
    p = p[p > 0]  # 0 log 0 = 0
    return float(np.exp(-np.sum(p * np.log(p))))


def stable_rank(s) -> float:
    """‖W‖_F² / ‖W‖_2² = Σ σ_i² / σ_1², a rank that small singular values barely move."""
    s = _spectrum(s)
    return float(np.sum(s**2) / s[0] ** 2)


# ----------------------------------------------------------- best rank-k approximation
def top_singular_vectors(W, k: int):
    """(U_k, σ_1..k, V_k): the top-k left/right singular vectors as columns (eq. 1.1)."""
    W = _matrix(W)
    k = _rank_k(W, k)
    U, s, Vt = np.linalg.svd(W, full_matrices=False)
    return U[:, :k], s[:k], Vt[:k].T


def best_rank_k(W, k: int) -> np.ndarray:
    """W_k = U_k Σ_k V_kᵀ, the closest rank-k matrix in Frobenius and spectral norm (eq. 1.2)."""
    U, s, V = top_singular_vectors(W, k)
    return (U * s) @ V.T


def rank_k_error(W, k: int, norm: str = "fro") -> float:
    """Eckart–Young: ‖W − W_k‖ predicted from the spectrum alone (eq. 1.3).

    norm="fro": sqrt(Σ_{i>k} σ_i²);  norm="spectral": σ_{k+1} (0 when k = min(m, n)).
    """
    W = _matrix(W)
    k = _rank_k(W, k)
    s = np.linalg.svd(W, compute_uv=False)
    if norm == "fro":
        return float(np.sqrt(np.sum(s[k:] ** 2)))
    if norm == "spectral":
        return float(s[k]) if k < s.size else 0.0
    raise ValueError(f"norm must be 'fro' or 'spectral', got {norm!r}")


# ----------------------------------------------------------------------- subspaces
def _orthonormal_basis(A, name: str) -> np.ndarray:
    """Q with orthonormal columns spanning the columns of A; A must have full column rank."""
    A = _matrix(A, name)
    n, p = A.shape
    if p > n:
        raise ValueError(f"{name}: {p} basis vectors in R^{n} cannot be independent; pass an n×p basis with p ≤ n")
    U, s, _ = np.linalg.svd(A, full_matrices=False)
    if s[-1] <= s[0] * max(A.shape) * np.finfo(np.float64).eps:
        raise ValueError(f"{name}: the columns are linearly dependent (not a basis of a {p}-dimensional subspace)")
    return U


def principal_angles(A, B) -> np.ndarray:
    """Principal angles (radians, ascending) between span(A) and span(B) (eq. 1.7).

    cos θ_i are the singular values of Q_Aᵀ Q_B. Near 0 the arccos is ill-conditioned, so
    angles with cos² ≥ ½ are taken from their sines instead, the singular values of the
    part of Q_B outside span(A) (Knyazev & Argentati 2002). Returns min(p, q) angles.
    """
    QA, QB = _orthonormal_basis(A, "A"), _orthonormal_basis(B, "B")
    if QA.shape[0] != QB.shape[0]:
        raise ValueError(f"A and B must live in the same space: {QA.shape[0]} vs {QB.shape[0]} rows")
    if QA.shape[1] < QB.shape[1]:  # make A the larger one; the angles are symmetric
        QA, QB = QB, QA
    M = QA.T @ QB
    cos = np.clip(np.linalg.svd(M, compute_uv=False), 0.0, 1.0)  # descending
    sin = np.linalg.svd(QB - QA @ M, compute_uv=False)[::-1]  # ascending, same order as the angles
    sin = np.clip(sin[: cos.size], 0.0, 1.0)
    return np.where(cos**2 >= 0.5, np.arcsin(sin), np.arccos(cos))


def subspace_similarity(A, B) -> float:
    """‖Q_Aᵀ Q_B‖_F² / min(p, q) = mean cos² of the principal angles, in [0, 1].

    The normalised subspace similarity φ of the LoRA paper (§7): 1 when one span contains
    the other, about max(p, q)/n for two random subspaces of R^n.
    """
    return float(np.mean(np.cos(principal_angles(A, B)) ** 2))


def projection_norm(W, U, V) -> float:
    """‖Uᵀ W V‖_F: how much of W lives between the column spaces of U and V."""
    W, U, V = _matrix(W), _matrix(U, "U"), _matrix(V, "V")
    if U.shape[0] != W.shape[0] or V.shape[0] != W.shape[1]:
        raise ValueError(f"U must have {W.shape[0]} rows and V {W.shape[1]}; got {U.shape}, {V.shape}")
    return float(np.linalg.norm(U.T @ W @ V))


def amplification_factor(W0, dW, r: int) -> float:
    """‖ΔW‖_F / ‖U_rᵀ W0 V_r‖_F with U_r, V_r the top-r singular vectors of ΔW (LoRA §7).

    Large when ΔW points along directions that W0 barely uses, i.e. when the update
    amplifies features the pretrained matrix had not emphasised.
    """
    W0, dW = _matrix(W0, "W0"), _matrix(dW, "dW")
    if W0.shape != dW.shape:
        raise ValueError(f"W0 and dW must have the same shape, got {W0.shape} and {dW.shape}")
    r = _int(r, "r", 1, min(dW.shape))  # r = 0 keeps no direction: the factor would be ‖ΔW‖/0
    U, _, V = top_singular_vectors(dW, r)
    inside = projection_norm(W0, U, V)
    if inside == 0:
        raise ValueError("W0 has no component in the top directions of dW: the factor is infinite")
    return float(np.linalg.norm(dW)) / inside


# -------------------------------------------------------------- Marchenko–Pastur
def _shape_var(shape, var):
    if not (isinstance(shape, tuple) and len(shape) == 2):
        raise ValueError(f"shape must be a (rows, cols) tuple, got {shape!r}")
    m, n = (_int(x, "shape entry", 1) for x in shape)
    if isinstance(var, bool) or not isinstance(var, numbers.Real) or not (math.isfinite(var) and var > 0):
        raise ValueError(f"var must be a positive finite number, got {var!r}")
    return max(m, n), min(m, n), float(var)


def marchenko_pastur_edges(shape, var: float) -> tuple[float, float]:
    """Bulk edges s·(√m ∓ √n) of the singular values of an m×n matrix with i.i.d.
    zero-mean entries of variance var = s² (eq. 1.8; m ≥ n after swapping)."""
    m, n, var = _shape_var(shape, var)
    s = math.sqrt(var)
    return s * (math.sqrt(m) - math.sqrt(n)), s * (math.sqrt(m) + math.sqrt(n))


def marchenko_pastur_singular_values(shape, var: float, grid: int = 4001) -> np.ndarray:
    """The min(m, n) singular values a large Gaussian m×n matrix is expected to have,
    descending: the (i − ½)/n upper quantiles of the Marchenko–Pastur law.

    Eigenvalues λ of XᵀX/m (c = n/m ≤ 1) have density √((λ₊−λ)(λ−λ₋)) / (2π var c λ) on
    [λ₋, λ₊] = var(1 ∓ √c)²; singular values of X are √(mλ). With λ = λ₋ + (λ₊−λ₋)sin²φ the
    integrand is smooth on φ ∈ [0, π/2] (even for c = 1), so a trapezoid CDF is accurate.
    """
    m, n, var = _shape_var(shape, var)
    grid = _int(grid, "grid", 2)  # one point has no trapezoid: the CDF would be 0/0
    c = n / m
    lo, hi = var * (1 - math.sqrt(c)) ** 2, var * (1 + math.sqrt(c)) ** 2
    phi = np.linspace(0.0, math.pi / 2, grid)
    lam = lo + (hi - lo) * np.sin(phi) ** 2
    # f(λ) dλ/dφ = (hi−lo)² 2 sin²φ cos²φ / (2π var c λ); written so λ → 0 stays finite
    sc = np.sin(phi) * np.cos(phi)
    dens = (hi - lo) ** 2 * 2 * sc**2 / (2 * math.pi * var * c * np.maximum(lam, 1e-300))
    if lo == 0:  # c = 1: λ = hi sin²φ cancels sin²φ analytically
        dens = hi * np.cos(phi) ** 2 / (math.pi * var * c)
    cdf = np.concatenate([[0.0], np.cumsum((dens[1:] + dens[:-1]) / 2 * np.diff(phi))])
    cdf /= cdf[-1]
    upper = (np.arange(n) + 0.5) / n  # upper-tail probabilities of the 1st, 2nd, … largest
    return np.sqrt(m * np.interp(1 - upper, cdf, lam))


def gaussian_like(W, seed: int = 0) -> np.ndarray:
    """A Gaussian matrix with W's shape and W's mean square (same ‖·‖_F in expectation)."""
    W = _matrix(W)
    rng = np.random.default_rng(_int(seed, "seed", 0))
    return rng.standard_normal(W.shape) * math.sqrt(np.mean(W**2))


def threshold_dimension(ds, scores, reference: float, frac: float = 0.9):
    """d_frac: the smallest measured d whose score reaches frac × reference (eq. 1.11).

    With frac = 0.9 and reference = the full fine-tuning score this is Aghajanyan et al.'s
    d90. Returns None when no measured d gets there. ``ds`` need not be sorted.
    """
    ds, scores = np.asarray(ds), np.asarray(scores, dtype=np.float64)
    if ds.ndim != 1 or ds.shape != scores.shape or ds.size == 0:
        raise ValueError(f"ds and scores must be 1-D of one length, got shapes {ds.shape} and {scores.shape}")
    if not np.issubdtype(ds.dtype, np.integer) or np.any(ds < 1):
        raise ValueError("ds must be positive integers (subspace dimensions)")
    reference = checks.finite_real(reference, "reference", positive=True)  # True is no score
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores must be finite")
    if not 0 < checks.finite_real(frac, "frac") <= 1:  # a bool is refused: True would read as 1
        raise ValueError(f"frac must lie in (0, 1], got {frac}")
    ok = scores >= frac * reference - 1e-12
    return int(ds[ok].min()) if ok.any() else None


# ---------------------------------------------------------- random projections P (1.9)
def fwht(x: np.ndarray) -> np.ndarray:
    """Unnormalised Walsh–Hadamard transform H x along the last axis (Sylvester order,
    H_{2n} = [[H_n, H_n], [H_n, −H_n]]; length a power of two), in n log n additions."""
    n = x.shape[-1]
    if n & (n - 1):
        raise ValueError(f"fwht needs a power-of-two length, got {n}")
    lead, h = x.shape[:-1], 1
    y = np.array(x, dtype=np.float64)
    while h < n:
        y = y.reshape(*lead, n // (2 * h), 2, h)
        y = np.stack((y[..., 0, :] + y[..., 1, :], y[..., 0, :] - y[..., 1, :]), axis=-2)
        h *= 2
    return y.reshape(*lead, n)


def _rng(seed) -> np.random.Generator:
    if isinstance(seed, np.random.SeedSequence):
        return np.random.default_rng(seed)
    return np.random.default_rng(_int(seed, "seed", 0))


class Projection:
    """A D×d matrix P given as two maps: z ↦ P z (eq. 1.9) and g ↦ Pᵀ g (eq. 1.10).

    Every kind scales P so that its columns have (about) unit length. Random columns in
    a large space are nearly orthogonal, so PᵀP ≈ I and ‖P z‖ ≈ ‖z‖: a step of a given
    length in z moves θ by the same length whatever d is.
    """

    kind = "?"

    def __init__(self, D: int, d: int, seed=0):
        self.D = _int(D, "D (parameters to move)", 1)
        self.d = _int(d, "d (projection dimension)", 1)
        self._make(_rng(seed))

    def _make(self, rng):  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, z) -> np.ndarray:
        """P z, shape (D,)."""
        return self._apply(_vector(z, self.d, "z"))

    def T(self, g) -> np.ndarray:
        """Pᵀ g, shape (d,): the gradient with respect to z (eq. 1.10)."""
        return self._apply_T(_vector(g, self.D, "g"))

    def matrix(self) -> np.ndarray:
        """P itself (D×d); for tests and small problems."""
        return np.stack([self._apply(e) for e in np.eye(self.d)], axis=1)

    def __repr__(self):
        return f"{type(self).__name__}(D={self.D}, d={self.d})"


class DenseProjection(Projection):
    """P_ij ~ N(0, 1), then every column divided by its norm: exactly unit columns."""

    kind = "dense"

    def _make(self, rng):
        if self.D * self.d > DENSE_MAX_ENTRIES:
            raise ValueError(f"a dense {self.D}×{self.d} projection has {self.D * self.d:,} entries "
                             f"(limit {DENSE_MAX_ENTRIES:,}); use kind='sparse' or 'fastfood'")
        P = rng.standard_normal((self.D, self.d))
        self.P = P / np.linalg.norm(P, axis=0)

    def _apply(self, z):
        return self.P @ z

    def _apply_T(self, g):
        return self.P.T @ g

    def matrix(self):
        return self.P.copy()


class SparseProjection(Projection):
    """One nonzero per row: θ_i moves with ±√(d/D) · z_{h(i)} (a "hashed" projection).

    h spreads the D rows evenly over the d columns (a shuffled i mod d), so when d ≤ D the
    columns have disjoint supports and norm² = count·d/D, exactly 1 when d divides D; when
    d > D the rows pick D distinct columns. Storing P costs D indices and D values, and
    P z / Pᵀ g cost O(D): the only kind that scales to all of MiniLM's 10.6M weights.
    """

    kind = "sparse"

    def _make(self, rng):
        self.index = (rng.permutation(max(self.D, self.d))[: self.D] % self.d).astype(np.int64)
        sign = rng.integers(0, 2, self.D) * 2.0 - 1.0
        self.value = sign * math.sqrt(self.d / self.D)

    def _apply(self, z):
        return self.value * z[self.index]

    def _apply_T(self, g):
        return np.bincount(self.index, weights=self.value * g, minlength=self.d)


class FastfoodProjection(Projection):
    """P = c·[V_1; V_2; …] truncated to D rows, V_b = H G_b Π_b H B_b on blocks of n = 2^⌈log2 d⌉
    (Le, Sarlós & Smola 2013; used by Li et al. 2018 and Aghajanyan et al. 2020).

    B_b: random ±1 diagonal; H: Walsh–Hadamard; Π_b: random permutation; G_b: Gaussian
    diagonal. Each column of V_b has norm² n·‖G_b‖², so dividing block b by √(n‖G_b‖²) and
    the stack by √(D/n) gives unit columns (exactly when n divides D). Storage O(D), cost
    O(D log n); z is zero-padded from d to n.
    """

    kind = "fastfood"

    def _make(self, rng):
        self.n = 1 << max(0, (self.d - 1).bit_length())
        nb = -(-self.D // self.n)
        self.B = rng.integers(0, 2, (nb, self.n)) * 2.0 - 1.0
        self.perm = np.argsort(rng.random((nb, self.n)), axis=1)
        self.G = rng.standard_normal((nb, self.n))
        block = 1.0 / np.sqrt(self.n * np.sum(self.G**2, axis=1, keepdims=True))
        self.scale = block * math.sqrt(self.n / self.D)

    def _apply(self, z):
        x = np.zeros((self.B.shape[0], self.n))
        x[:, : self.d] = z  # pad z to n, one copy per block
        x = fwht(self.B * x)  # H B z
        x = np.take_along_axis(x, self.perm, axis=1)  # Π
        x = fwht(self.G * x)  # H G
        return (self.scale * x).reshape(-1)[: self.D]

    def _apply_T(self, g):
        y = np.zeros(self.B.size)
        y[: self.D] = g
        y = fwht(self.scale * y.reshape(self.B.shape)) * self.G  # Gᵀ Hᵀ (H symmetric)
        x = np.empty_like(y)
        np.put_along_axis(x, self.perm, y, axis=1)  # Πᵀ
        x = fwht(x) * self.B  # Bᵀ Hᵀ
        return x.sum(axis=0)[: self.d]


KINDS = {"dense": DenseProjection, "sparse": SparseProjection, "fastfood": FastfoodProjection}


def make_projection(kind: str, D: int, d: int, seed=0) -> Projection:
    """A seeded D×d projection of the given kind ("dense", "sparse" or "fastfood")."""
    if kind not in KINDS:
        raise ValueError(f"unknown projection kind {kind!r}; choose one of {sorted(KINDS)}")
    return KINDS[kind](D, d, seed)


def projection_blocks(sizes, d: int, kind: str = "dense", seed: int = 0) -> list[Projection]:
    """One projection per parameter tensor, P = [P_1; P_2; …], seeded from one integer.

    Block t gets the t-th child of np.random.SeedSequence(seed), so the blocks (and the
    torch twin, which calls this function) are reproducible and independent of each other.
    Each block has unit columns: every tensor moves by about ‖z‖.
    """
    sizes = [_int(s, "tensor size", 1) for s in sizes]
    if not sizes:
        raise ValueError("need at least one parameter tensor to project into")
    d = _int(d, "d (projection dimension)", 1)
    seeds = np.random.SeedSequence(_int(seed, "seed", 0)).spawn(len(sizes))
    return [make_projection(kind, D, d, ss) for D, ss in zip(sizes, seeds)]


class RandomSubspace:
    """θ = θ0 + P z over a dict of named parameter arrays (eqs. 1.9–1.10).

    The arrays are flattened in the dict's order; ``theta(z)`` returns new arrays of the
    same shapes and dtypes, ``grad_z(grads)`` maps dL/dθ (same names) to dL/dz = Pᵀ dL/dθ.
    """

    def __init__(self, theta0: dict, d: int, kind: str = "dense", seed: int = 0):
        if not isinstance(theta0, dict) or not theta0:
            raise TypeError("theta0 must be a non-empty dict name -> numpy array")
        self.theta0 = {}
        for name, a in theta0.items():
            if not isinstance(a, np.ndarray) or not np.issubdtype(a.dtype, np.floating):
                raise TypeError(f"theta0[{name!r}]: expected a float numpy array, got {type(a).__name__}")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"theta0[{name!r}]: contains NaN/inf")
            self.theta0[name] = a.copy()
        self.names = list(self.theta0)
        self.d, self.kind = _int(d, "d (projection dimension)", 1), kind
        self.blocks = projection_blocks([a.size for a in self.theta0.values()], self.d, kind, seed)
        self.D = sum(b.D for b in self.blocks)

    def theta(self, z) -> dict:
        """{name: θ0 + P_t z}, eq. 1.9."""
        z = _vector(z, self.d, "z")
        return {n: self.theta0[n] + P(z).reshape(self.theta0[n].shape).astype(self.theta0[n].dtype)
                for n, P in zip(self.names, self.blocks)}

    def grad_z(self, grads: dict) -> np.ndarray:
        """dL/dz = Σ_t P_tᵀ dL/dθ_t, eq. 1.10."""
        missing = [n for n in self.names if n not in grads]
        if missing:
            raise KeyError(f"grad_z: no gradient for {missing[:5]}")
        out = np.zeros(self.d)
        for n, P in zip(self.names, self.blocks):
            g = np.asarray(grads[n])
            if g.shape != self.theta0[n].shape:
                raise ValueError(f"grad_z: {n} has shape {g.shape}, expected {self.theta0[n].shape}")
            out += P.T(g.reshape(-1).astype(np.float64))
        return out

    def load_into(self, module, z):
        """Write θ0 + P z into a ``pedagogy_lib.nn.Module`` (by parameter name); returns it."""
        own = dict(module.named_parameters())
        missing = [n for n in self.names if n not in own]
        if missing:
            raise KeyError(f"load_into: the module has no parameters {missing[:5]}")
        return module.load_state_dict(self.theta(z), strict=False)

    def matrix(self) -> np.ndarray:
        """The stacked D×d matrix P (small problems only)."""
        return np.concatenate([P.matrix() for P in self.blocks], axis=0)
