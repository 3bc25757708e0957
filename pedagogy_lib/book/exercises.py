"""Helpers behind the chapters' exercise checkers.

A checker (``pedagogy_lib/book/chNN/exercises.py``, ``check_<name>(student_obj)``) either
prints ``✔ <id> passed`` or raises NotYet with a message that says what is wrong and
hints how to fix it, never a bare ``False``.  NotYet is an AssertionError, so a checker
cell fails loudly in a notebook and in tests.
"""

import numpy as np

__all__ = ["NotYet", "passed", "expect", "expect_shape", "expect_close", "attempt"]


class NotYet(AssertionError):
    """The student's answer is not right yet; the message says what and gives a hint."""


def passed(ex_id: str, msg: str = "") -> None:
    """Print ``✔ {ex_id} passed`` (plus `` — {msg}``)."""
    print(f"✔ {ex_id} passed" + (f" — {msg}" if msg else ""))


def expect(cond, message: str) -> None:
    """Raise NotYet(message) unless ``cond`` is true."""
    if isinstance(cond, np.ndarray) and cond.size != 1:
        raise TypeError(f"expect() needs one truth value, got an array of shape {cond.shape}; use .all()")
    if not bool(cond):
        raise NotYet(message)


def _as_array(x, what: str) -> np.ndarray:
    """float64 view of a number, list, NumPy array or torch tensor (without importing torch)."""
    if x is None:
        raise NotYet(f"{what} is None: did the function forget to `return` its result?")
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise NotYet(f"{what} should be numbers, got {type(x).__name__} {x!r:.60}") from None


def _shape(x):
    shape = getattr(x, "shape", None)
    return tuple(shape) if shape is not None else np.shape(x)


def expect_shape(arr, shape, what: str) -> None:
    """Raise NotYet unless ``arr`` has ``shape`` (a None entry matches any size)."""
    if arr is None:
        raise NotYet(f"{what} is None: did the function forget to `return` its result?")
    got, want = tuple(_shape(arr)), tuple(shape)
    ok = len(got) == len(want) and all(w is None or g == w for g, w in zip(got, want))
    if not ok:
        shown = tuple("any" if w is None else w for w in want)
        raise NotYet(f"{what} has shape {got}, expected {shown}")


def _index(flat, shape) -> tuple:
    return tuple(int(i) for i in np.unravel_index(int(flat), shape))


def expect_close(got, want, what: str, rtol: float = 1e-6, atol: float = 1e-8) -> None:
    """Raise NotYet unless |got - want| <= atol + rtol*|want| everywhere.

    The message names ``what``, the largest absolute difference and the index where it
    occurs, and points at NaN/inf or shape mismatches first since those explain the rest.
    """
    if not (rtol >= 0 and atol >= 0):
        raise ValueError(f"expect_close: rtol and atol must be >= 0, got rtol={rtol}, atol={atol}")
    g, w = _as_array(got, what), _as_array(want, f"the reference for {what}")
    if g.shape != w.shape:
        raise NotYet(f"{what} has shape {g.shape}, expected {w.shape}")
    same = (g == w) | (np.isnan(g) & np.isnan(w))  # NaN where NaN is expected is fine
    bad = ~(np.isfinite(g) & np.isfinite(w)) & ~same
    if bad.any():
        idx = _index(np.flatnonzero(bad)[0], g.shape)
        raise NotYet(f"{what} is {g[idx]:.6g} at index {idx}, expected {w[idx]:.6g}")
    with np.errstate(invalid="ignore"):  # inf - inf where both are the same inf
        diff = np.where(same, 0.0, np.abs(g - w))
    if (diff <= atol + rtol * np.abs(np.where(same, 0.0, w))).all():
        return
    idx = _index(np.argmax(diff), diff.shape)
    raise NotYet(
        f"{what} differs: max abs diff {diff[idx]:.3g} at index {idx} "
        f"(got {g[idx]:.6g}, expected {w[idx]:.6g}; allowed atol={atol:g} + rtol={rtol:g}·|expected|)"
    )


def attempt(fn, *args, **kw):
    """Call ``fn(*args, **kw)``; a stub that still raises NotImplementedError becomes NotYet."""
    name = getattr(fn, "__name__", type(fn).__name__)
    if not callable(fn):
        raise NotYet(f"expected a function, got {type(fn).__name__} {fn!r:.60}")
    try:
        return fn(*args, **kw)
    except NotImplementedError:
        raise NotYet(
            f"{name} still raises NotImplementedError: write your solution in the cell above"
        ) from None

