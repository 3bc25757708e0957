"""Checkers for chapter 01's exercises (low rank). Each calls the student's function on
several inputs, compares with ``pedagogy_lib.lowrank``, and names the likely mistake when
the answer matches a known wrong formula."""
from __future__ import annotations

import math

import numpy as np

from pedagogy_lib import lowrank as lr
from pedagogy_lib.book.exercises import (NotYet, attempt, expect, expect_close, expect_shape, guard_checkers, passed,
                                         number, refuse_known_mistakes, to_numpy, whole_number)

_SHAPES = [(6, 4), (4, 6), (9, 9), (12, 3), (1, 5)]


def _matrix(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape)


# ------------------------------------------------------------ 01.1 Eckart–Young
def check_rank_k_approx(fn) -> None:
    """fn(W, k) -> the best rank-k approximation W_k (eq. 1.2); the checker then verifies
    Eckart–Young (eq. 1.3) on it: ‖W − W_k‖_F² = Σ_{i>k} σ_i² and ‖W − W_k‖_2 = σ_{k+1}."""
    for j, shape in enumerate(_SHAPES):
        W = _matrix(shape, j)
        s = np.linalg.svd(W, compute_uv=False)
        for k in range(min(shape) + 1):
            call = f"rank_k_approx(W of shape {shape}, k={k})"
            Wk = attempt(fn, W.copy(), k)
            expect_shape(Wk, shape, call)
            Wk = np.asarray(to_numpy(Wk))
            eps = np.finfo(Wk.dtype).eps if Wk.dtype.kind == "f" else np.finfo(np.float64).eps
            Wk = Wk.astype(np.float64)  # the rank and the errors below allow for the answer's own precision
            tol = 8 * eps * max(shape) * s[0]  # singular values below this are that precision's rounding noise
            rank = np.linalg.matrix_rank(Wk, tol=tol) if Wk.any() else 0
            if rank > k:
                raise NotYet(f"{call} has rank {rank} > {k}: keep only the top k singular triplets")
            fro2 = np.linalg.norm(W - Wk) ** 2
            tail = float(np.sum(s[k:] ** 2))
            kept_smallest = float(np.sum(s[: len(s) - k] ** 2))  # the error if the k smallest were kept
            if 0 < k < len(s) and math.isclose(fro2, kept_smallest, rel_tol=1e-6) \
                    and not math.isclose(fro2, tail, rel_tol=1e-6):
                raise NotYet(f"{call} keeps the k *smallest* singular values; np.linalg.svd sorts them "
                             "largest first")
            expect(math.isclose(fro2, tail, rel_tol=1e-6, abs_tol=max(1e-9, tol * s[0])),
                   f"{call}: ‖W − W_k‖_F² = {fro2:.6g}, but Eckart–Young says Σ_(i>k) σ_i² = {tail:.6g}; "
                   "is W_k = U[:, :k] · diag(s[:k]) · Vt[:k]?")
            spec = np.linalg.norm(W - Wk, 2)
            want = s[k] if k < len(s) else 0.0
            expect(math.isclose(spec, want, rel_tol=1e-6, abs_tol=max(1e-9, tol)),
                   f"{call}: spectral error {spec:.6g}, expected σ_(k+1) = {want:.6g}")
    passed("01.1", "‖W − W_k‖_F² = Σ_(i>k) σ_i² and ‖W − W_k‖_2 = σ_(k+1) on "
                   f"{sum(min(s) + 1 for s in _SHAPES)} cases")


# ------------------------------------------------------------ 01.2 effective rank
_SPECTRA = [np.ones(5), np.array([3.0, 0.0, 0.0]), np.array([4.0, 2.0, 1.0, 1.0]),
            np.array([1.0, 10.0, 0.5]), np.linspace(1, 0.01, 50) ** 3]


def check_effective_rank(fn) -> None:
    """fn(s) -> exp(−Σ p_i log p_i) with p_i = σ_i / Σ σ_j (eq. 1.6)."""
    for s in _SPECTRA:
        call = f"effective_rank({np.array2string(s[:4], precision=3)}{'…' if s.size > 4 else ''})"
        got = number(attempt(fn, s.copy()), call)
        want = lr.effective_rank(s)
        p = s[s > 0] / s.sum()
        q = s[s > 0] ** 2 / np.sum(s**2)
        hints = {
            float(-(p * np.log(p)).sum()): "that is the entropy H(p); the effective rank is exp(H)",
            float(np.exp(-(q * np.log(q)).sum())): "p_i = σ_i / Σσ_j (Roy & Vetterli), not σ_i² / Σσ_j²",
        }
        refuse_known_mistakes(got, want, hints, call, rtol=1e-9)
        if math.isnan(got):
            raise NotYet(f"{call} is NaN: zero singular values contribute 0·log 0 = 0; drop them first")
        expect_close(got, want, call, rtol=1e-9, atol=1e-12)
    passed("01.2", f"e.g. effective_rank([4, 2, 1, 1]) = {lr.effective_rank(_SPECTRA[2]):.3f} of 4")


# ------------------------------------------------------------ 01.3 d90
_CURVES = [([10, 100, 1000], [0.6, 0.85, 0.9], 0.92),
           ([1000, 10, 100], [0.9, 0.6, 0.85], 0.92),  # unsorted
           ([10, 30, 100], [0.5, 0.6, 0.7], 0.95),  # never reaches 90%
           ([10, 30, 100], [0.9, 0.95, 0.99], 1.0)]  # exactly 90% counts


def check_d90(fn, intrinsic: dict | None = None) -> None:
    """fn(ds, accs, full_acc) -> the smallest d with accuracy ≥ 0.9 · full_acc, or None (eq. 1.11).

    ``intrinsic`` (the sweep JSON) adds the real curves of every seed.
    """
    cases = list(_CURVES)
    if intrinsic is not None:
        from pedagogy_lib.book.ch01.experiment import intrinsic_summary

        it = intrinsic_summary(intrinsic)
        cases += [(it["ds"], it["acc"][s], it["full"][s]) for s in it["seeds"]]
    for ds, accs, full in cases:
        call = f"d90(ds={ds}, accs={[round(a, 3) for a in accs]}, full_acc={full:.3f})"
        got = attempt(fn, list(ds), list(accs), full)
        want = lr.threshold_dimension(np.array(ds), np.array(accs), full, 0.9)
        if want is None:
            expect(got is None, f"{call} = {got!r}, expected None: no d reaches 0.9 × {full:.3f}")
            continue
        expect(got is not None, f"{call} returned None, expected {want}")
        got = whole_number(got, call)  # one d: np.array([100]) would pass `got == want` as a 1-element array
        first = next((d for d, a in zip(ds, accs) if a >= 0.9 * full), None)
        if got == first != want:
            raise NotYet(f"{call} = {got}: that is the first d *in list order*; sort by d first")
        expect(got == want, f"{call} = {got}, expected {want} (the smallest d with acc ≥ 0.9 × full_acc)")
    passed("01.3", f"{len(cases)} curves" + (" incl. every seed of the sweep" if intrinsic else ""))


# ------------------------------------------------------------ 01.4 principal angles
def check_principal_angles(fn) -> None:
    """fn(A, B) -> principal angles (radians, ascending) between span(A) and span(B) (eq. 1.7)."""
    rng = np.random.default_rng(0)
    for n, p, q in ((6, 2, 2), (10, 3, 5), (10, 4, 1), (30, 5, 5)):
        A, B = rng.standard_normal((n, p)), rng.standard_normal((n, q))
        call = f"principal_angles(A {A.shape}, B {B.shape})"
        got = attempt(fn, A.copy(), B.copy())
        want = lr.principal_angles(A, B)
        expect_shape(got, want.shape, call)
        got = np.asarray(got, dtype=np.float64)
        if np.allclose(got, want[::-1], atol=1e-6) and not np.allclose(want, want[::-1], atol=1e-6):
            raise NotYet(f"{call}: right angles, wrong order; return them ascending")
        raw = np.arccos(np.clip(np.linalg.svd(A.T @ B, compute_uv=False), -1, 1))  # no orthonormalisation
        if np.allclose(got, raw, atol=1e-6) and not np.allclose(got, want, atol=1e-6):
            raise NotYet(f"{call}: orthonormalise A and B first (np.linalg.qr), then take the SVD of Q_Aᵀ Q_B")
        expect_close(got, want, call, rtol=0, atol=1e-6)
    passed("01.4", "cos θ_i = σ_i(Q_Aᵀ Q_B)")


def check_noise_k90(answer) -> None:
    """``answer``: k90 (Eq. 1.5) of ``np.random.default_rng(0).standard_normal((1536, 384))``:
    how many of its 384 directions keep 90% of the energy. Predict first: near 8 or near 300?"""
    answer = whole_number(answer, "k90")
    W = np.random.default_rng(0).standard_normal((1536, 384))
    want = lr.rank_for_energy(lr.singular_values(W), 0.9)
    expect(int(answer) == want, f"measure it on the given matrix: np.linalg.svd, then the smallest k with "
           f"E_k ≥ 0.9 (Eq. 1.4); you gave {answer}")
    passed("01.5 noise is not low rank", f"k90 = {want} of 384 ({100 * want / 384:.0f}%): pure noise needs most "
           "directions, so a k90 of a few would mean real structure")


guard_checkers(globals())  # every check_* answers a malformed attempt with NotYet
