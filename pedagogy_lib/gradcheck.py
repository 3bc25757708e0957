"""Central finite differences: the referee for every hand-written backward in the book.

For a scalar L(θ), ∂L/∂θ_i ≈ [L(θ + εe_i) − L(θ − εe_i)] / 2ε, with error O(ε²).
In float64 with ε = 1e-6 the agreement with a correct backward is typically 1e-8 or better
in relative terms; a wrong backward is off by O(1). Use float64 always.
"""
from __future__ import annotations

import numpy as np

from . import checks


def rel_error(a, b) -> float:
    """max |a − b| / max(|a|, |b|, 1e-12): scale-free, so one tolerance fits every tensor."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:  # broadcasting would compare the wrong entries
        raise ValueError(f"rel_error: shapes differ, {a.shape} vs {b.shape}")
    denom = max(np.abs(a).max(initial=0.0), np.abs(b).max(initial=0.0), 1e-12)
    return float(np.abs(a - b).max(initial=0.0) / denom)


def numerical_grad(f, x: np.ndarray, eps: float = 1e-6, max_entries: int | None = None, seed: int = 0):
    """∂f/∂x by central differences, perturbing ``x`` in place (restored afterwards).

    With ``max_entries`` only that many randomly chosen entries are probed (the rest are
    NaN), which keeps checks of large weight matrices fast.
    """
    if x.dtype != np.float64:
        raise TypeError(f"finite differences need float64, got {x.dtype}")
    # ε = 0 would give 0/0 = NaN everywhere, which ``compare`` reads as "not probed": a
    # check that passes any backward. The same for max_entries = 0.
    eps = checks.finite_real(eps, "eps", positive=True)
    if max_entries is not None:
        max_entries = checks.positive_int(max_entries, "max_entries")
    grad = np.full(x.shape, np.nan)
    flat_idx = np.arange(x.size)
    if max_entries is not None and max_entries < x.size:
        flat_idx = np.random.default_rng(seed).choice(x.size, max_entries, replace=False)
    for i in flat_idx:
        idx = np.unravel_index(i, x.shape)
        old = x[idx]
        try:
            x[idx] = old + eps
            fp = f()
            x[idx] = old - eps
            fm = f()
        finally:  # x is the caller's parameter: restored even when f raises
            x[idx] = old
        grad[idx] = (fp - fm) / (2 * eps)
    return grad


def compare(analytic, numeric) -> float:
    """Relative error on the probed (non-NaN) entries."""
    if analytic is None:  # named_grads yields None for a parameter backward never reached
        raise ValueError("compare: no analytic gradient (backward did not accumulate one)")
    analytic = np.asarray(analytic)
    if analytic.shape != np.shape(numeric):
        raise ValueError(f"compare: analytic gradient has shape {analytic.shape}, "
                         f"finite differences {np.shape(numeric)}")
    probed = ~np.isnan(numeric)
    return rel_error(analytic[probed], numeric[probed])


def check_module(module, x, *args, seed: int = 0, max_entries: int = 40) -> dict:
    """Check ``module.backward`` against finite differences for every trainable parameter
    and for the input ``x`` (when it is a float64 array).

    We use L = Σ y ⊙ r with y = module(x, *args) and a fixed random r, so dL/dy = r is what
    ``module.backward`` receives. Returns {name: relative error}.
    """
    r = np.random.default_rng(seed).standard_normal(np.shape(module(x, *args)))
    loss = lambda: float((module(x, *args) * r).sum())  # noqa: E731
    module.zero_grad()
    module(x, *args)
    dx = module.backward(r)
    params = dict(module.named_parameters())
    errors = {name: compare(g, numerical_grad(loss, params[name], max_entries=max_entries, seed=seed))
              for name, g in module.named_grads()}
    if isinstance(x, np.ndarray) and x.dtype == np.float64 and dx is not None:
        errors["input"] = compare(dx, numerical_grad(loss, x, max_entries=max_entries, seed=seed))
    return errors


def agreement_line(what: str, errors: dict, tol: float = 1e-6) -> str:
    """One sentence a reader can check: did every gradient of ``what`` agree with finite
    differences?  ``errors`` is what ``check_module`` returns ({name: relative error})."""
    if not errors:
        raise ValueError(f"{what}: no gradients were checked")
    worst = max(errors, key=errors.get)
    ok = all(e < tol for e in errors.values())
    tail = "" if ok else f" (worst: {worst}, relative error {errors[worst]:.1e})"
    return (f"{what}: {len(errors)} gradient(s) vs float64 finite differences, "
            f"all within {tol:g}: {'yes' if ok else 'NO'}{tail}")


def pop_exact_zeros(module, errors: dict, suffix: str = "key.bias") -> float:
    """Remove from ``errors`` the parameters whose gradient is zero in exact arithmetic and
    return their largest analytic |gradient| (call right after ``check_module``).

    The attention key bias adds q·b_k to every score of a row and softmax ignores such a
    shift (Eq. 0.17 sums to zero over a row), so dL/db_k = 0: finite differences then see
    only rounding noise and a relative error means nothing.
    """
    grads = dict(module.named_grads())
    names = [k for k in errors if k.endswith(suffix)]
    for k in names:
        errors.pop(k)
    return max((float(np.abs(grads[k]).max()) for k in names), default=0.0)
