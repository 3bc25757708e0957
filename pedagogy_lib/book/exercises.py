"""Helpers behind the chapters' exercise checkers.

A checker (``pedagogy_lib/book/chNN/exercises.py``, ``check_<name>(student_obj)``) either
prints ``✔ <id> passed`` or raises NotYet with a message that says what is wrong and
hints how to fix it, never a bare ``False``.  NotYet is an AssertionError, so a checker
cell fails loudly in a notebook and in tests.

Two guarantees hold for every checker, because they live here and not in each one:

* ``attempt`` hands the student's function COPIES of its array arguments (NumPy arrays,
  torch tensors, and lists/tuples/dicts of them), so the checker's own arrays stay
  pristine and every reference is computed on the data as given. A function that changes
  its input in place is noticed: if the answer is then wrong, the message says so; a
  correct in-place function passes.
* every ``check_*`` function of the chapter modules is wrapped by ``guard``: an answer of
  the wrong type or shape (None, a string, a 3-vector where a number was due…) that makes
  the checker's own code fail becomes a NotYet naming the problem, never a bare
  TypeError. Errors raised inside the student's function itself propagate unchanged.

A right answer is accepted in any natural form: a list where a tuple is asked (``items``), a
NumPy or torch scalar, 0-d array or tensor (``to_numpy``), an integral float for a count
(``whole_number``), and float32 at float32 precision (``expect_close``). Text is never a
number, even "5".
"""

import copy
import functools

import numpy as np

__all__ = ["NotYet", "passed", "expect", "expect_shape", "expect_close", "whole_number", "items", "to_numpy", "attempt",
           "changed_inputs", "guard", "refuse_known_mistakes"]

_MUTATED: list = []  # inputs the student's function changed in place during the current check
_ANSWER_EPS: list = []  # float32's eps once the student's function answered in float32 during the current check


class NotYet(AssertionError):
    """The student's answer is not right yet; the message says what and gives a hint."""

    def __init__(self, message: str = ""):
        if _MUTATED:
            message += (f" (note: your function changed its input {', '.join(_MUTATED)} in place; the "
                        "checker gave it a copy and compares with the untouched original)")
        super().__init__(message)


def passed(ex_id: str, msg: str = "") -> None:
    """Print ``✔ {ex_id} passed`` (plus `` — {msg}``)."""
    print(f"✔ {ex_id} passed" + (f" — {msg}" if msg else ""))


def expect(cond, message: str) -> None:
    """Raise NotYet(message) unless ``cond`` is true."""
    if isinstance(cond, np.ndarray) and cond.size != 1:
        raise TypeError(f"expect() needs one truth value, got an array of shape {cond.shape}; use .all()")
    if not bool(cond):
        raise NotYet(message)


def to_numpy(x, scalar: bool = False):
    """A torch tensor as a NumPy array (without importing torch); anything else as is. With
    ``scalar``, a 0-d array or tensor becomes its NumPy scalar (np.float64(0.5), np.int64(3)…)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    if scalar and isinstance(x, np.ndarray) and x.ndim == 0:
        x = x[()]
    return x


def _as_array(x, what: str) -> np.ndarray:
    """float64 view of a number, list, NumPy array or torch tensor (without importing torch).
    Text is refused even when it spells a number: "5" is not an answer of 5."""
    if x is None:
        raise NotYet(f"{what} is None: did the function forget to `return` its result?")
    x = to_numpy(x)
    if _has_text(x):
        raise NotYet(f"{what} should be numbers, got text {x!r:.60}")
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise NotYet(f"{what} should be numbers, got {type(x).__name__} {x!r:.60}") from None


def _has_text(x) -> bool:
    if isinstance(x, (str, bytes)):
        return True
    if isinstance(x, np.ndarray):
        return x.dtype.kind in "US" or x.dtype.kind == "O" and any(_has_text(v) for v in x.ravel())
    if isinstance(x, (list, tuple)):
        return any(_has_text(v) for v in x)
    return False


def _eps(x) -> float:
    """Machine epsilon of the answer's floating dtype (float64's for ints, Python floats, lists)."""
    dtype = getattr(to_numpy(x), "dtype", None)
    return float(np.finfo(dtype).eps) if dtype is not None and dtype.kind == "f" else float(np.finfo(np.float64).eps)


def _integral(x) -> bool:
    """An int, or an array/tensor of an integer (or bool) dtype: an exact answer, never widened."""
    if isinstance(x, (bool, int, np.integer)):
        return True
    dtype = getattr(to_numpy(x), "dtype", None)
    return dtype is not None and dtype.kind in "iub"


def _coarsest_eps(out, depth: int = 0) -> float:
    """The largest eps among the float arrays/scalars inside an answer (tuples, lists, dicts followed)."""
    if isinstance(out, (list, tuple, dict)) and depth < 3:
        parts = out.values() if isinstance(out, dict) else out
        return max((_coarsest_eps(v, depth + 1) for v in parts), default=_EPS64)
    try:
        return _eps(out)
    except (TypeError, ValueError, AttributeError, RuntimeError):
        return _EPS64


def whole_number(x, what: str) -> int:
    """``x`` as an int when it is a whole number (int, NumPy or torch integer, or an integral
    float such as 11.0); otherwise NotYet naming ``what``."""
    if x is None:
        raise NotYet(f"{what} is None: did you forget `return` (or to set `answer`)?")
    x = to_numpy(x)
    wrong = NotYet(f"{what} has the wrong type or shape: it should be a whole number, got {type(x).__name__} {x!r:.60}")
    if isinstance(x, (bool, np.bool_, str, bytes)) or np.ndim(x) != 0 or getattr(x, "dtype", np.dtype(float)).kind == "b":
        raise wrong
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise wrong from None
    if not (np.isfinite(v) and v.is_integer()):
        raise NotYet(f"{what} should be a whole number, got {x!r}")
    return int(x) if isinstance(x, (int, np.integer)) else int(v)


def number(x, what: str) -> float:
    """``x`` as a float (a Python, NumPy or torch scalar, or a 0-d array); otherwise NotYet naming
    ``what``. Text is never a number, even "2.5": ``float`` would read it, so it is refused by name."""
    if x is None:
        raise NotYet(f"{what} is None: did you forget `return` (or to set `answer`)?")
    x = to_numpy(x, scalar=True)  # np.array("2.5") becomes np.str_, i.e. text
    if isinstance(x, (str, bytes)):
        raise NotYet(f"{what} is the text {x!r:.40}; it should be a number")
    try:
        return float(x)
    except (TypeError, ValueError):
        raise NotYet(f"{what} has the wrong type or shape: it should be a number, "
                     f"got {type(x).__name__} {x!r:.40}") from None


def items(out, n: int, what: str) -> list:
    """The ``n`` parts of an answer that is a tuple or a list of ``n`` things; else NotYet."""
    if not isinstance(out, (tuple, list)) or len(out) != n:
        shown = f"{type(out).__name__} of length {len(out)}" if isinstance(out, (tuple, list)) else type(out).__name__
        raise NotYet(f"return {what}, a tuple of {n}; got {shown}")
    return list(out)


def refuse_known_mistakes(got, want, mistakes: dict, call: str, rtol: float = 0.0, atol: float = 0.0) -> None:
    """``mistakes`` maps the value a likely wrong formula gives to what that formula got wrong.
    Raise NotYet("{call} = {got}: {meaning}") when the number ``got`` is one of those values
    (within atol + rtol·|value|) and that value is not also the right answer ``want`` (at the same
    tolerance). None is refused; text, or anything but one number, is left to the checks that follow."""
    if _has_text(got):
        return
    g = _as_array(got, call)
    if g.ndim:
        return
    for value, meaning in mistakes.items():
        tol = atol + rtol * abs(value)
        if abs(float(g) - value) <= tol and abs(want - value) > tol:
            raise NotYet(f"{call} = {int(g):,}: {meaning}" if _integral(got) else f"{call} = {float(g):.6g}: {meaning}")


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


_EPS32, _EPS64 = float(np.finfo(np.float32).eps), float(np.finfo(np.float64).eps)
_WIDEN = 64  # rounding steps a float32 answer may take: 64·eps32 ≈ 8e-6, still far below any real mistake


def expect_close(got, want, what: str, rtol: float = 1e-6, atol: float = 1e-8) -> None:
    """Raise NotYet unless |got - want| <= atol + rtol*|want| everywhere.

    The message names ``what``, the largest absolute difference and the index where it
    occurs, and points at NaN/inf or shape mismatches first since those explain the rest.
    A float32 answer to a float64 reference (``got`` in float32, or the student's function
    returned float32 during this check) is held to float32 precision: tolerances below 64·eps32
    (relative, and relative to max|want|) are widened to that. float16 is not, and neither is an
    integer answer or an integer reference: those are exact.
    """
    if not (rtol >= 0 and atol >= 0):
        raise ValueError(f"expect_close: rtol and atol must be >= 0, got rtol={rtol}, atol={atol}")
    g, w = _as_array(got, what), _as_array(want, f"the reference for {what}")
    if g.shape != w.shape:
        raise NotYet(f"{what} has shape {g.shape}, expected {w.shape}")
    eps = _EPS64 if _integral(got) or _integral(want) else max([_eps(got), *_ANSWER_EPS])  # float32 at the source
    if _eps(want) < eps <= _EPS32:  # a float32 answer to a float64 reference: ask for float32 precision, no more
        rtol = max(rtol, _WIDEN * eps)
        atol = max(atol, _WIDEN * eps * float(np.max(np.abs(w[np.isfinite(w)]), initial=0.0)))
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


def _is_tensor(x) -> bool:
    return hasattr(x, "detach") and hasattr(x, "clone")


def _copy_arrays(x):
    """A copy of every array inside x (lists, tuples, dicts followed); other objects as is."""
    if isinstance(x, np.ndarray):
        return x.copy()
    if _is_tensor(x):
        return x.detach().clone()
    if isinstance(x, (list, tuple)) and any(_has_array(v) for v in x):
        out = [_copy_arrays(v) for v in x]
        if isinstance(x, list) or type(x) is tuple:
            return type(x)(out)
        if hasattr(type(x), "_fields"):   # a namedtuple: its fields are positional arguments
            return type(x)(*out)
        return copy.copy(x)
    if isinstance(x, dict) and any(_has_array(v) for v in x.values()):
        return {k: _copy_arrays(v) for k, v in x.items()}
    return x


def _has_array(x) -> bool:
    if isinstance(x, np.ndarray) or _is_tensor(x):
        return True
    if isinstance(x, (list, tuple, dict)):
        return any(_has_array(v) for v in (x.values() if isinstance(x, dict) else x))
    return False


def _same(a, b) -> bool:
    """Whether the student's copy ``b`` still equals the original ``a`` (NaN = NaN)."""
    if isinstance(a, np.ndarray) or _is_tensor(a):
        try:
            a, b = np.asarray(to_numpy(a)), np.asarray(to_numpy(b))
            return a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
        except (TypeError, ValueError, AttributeError):
            return False
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        return all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        return all(_same(a[k], b[k]) for k in a)
    return a is b or not _has_array(a)


def attempt(fn, *args, **kw):
    """Call ``fn`` on copies of the array arguments; a stub that still raises
    NotImplementedError becomes NotYet. Inputs the function changed in place are noted
    (see the module docstring); the caller's arrays are never touched."""
    name = getattr(fn, "__name__", type(fn).__name__)
    if not callable(fn):
        raise NotYet(f"expected a function, got {type(fn).__name__} {fn!r:.60}")
    a2, kw2 = [_copy_arrays(a) for a in args], {k: _copy_arrays(v) for k, v in kw.items()}
    try:
        out = fn(*a2, **kw2)
    except NotImplementedError:
        raise NotYet(
            f"{name} still raises NotImplementedError: write your solution in the cell above"
        ) from None
    except Exception as e:
        e._from_student = True  # guard lets the student's own errors through unchanged
        raise
    if _EPS64 < _coarsest_eps(out) <= _EPS32 and not _ANSWER_EPS:
        _ANSWER_EPS.append(_EPS32)
    changed = [f"argument {i + 1}" for i, (a, b) in enumerate(zip(args, a2)) if not _same(a, b)]
    changed += [repr(k) for k in kw if not _same(kw[k], kw2[k])]
    _MUTATED.extend(c for c in changed if c not in _MUTATED)
    return out


def changed_inputs() -> list[str]:
    """The inputs (e.g. "argument 1") that the student's functions changed in place so far in
    this check: for an exercise whose statement asks for a new array."""
    return list(_MUTATED)


def guard(check):
    """Wrap a checker: start with no mutation noted, and turn an error the checker's own code
    hits on a malformed answer (TypeError, ValueError, AttributeError, IndexError, KeyError,
    ArithmeticError such as int(inf), RuntimeError such as a torch tensor's ambiguous truth value)
    into NotYet. Errors from inside the student's function keep their type."""
    if getattr(check, "_guarded", False):
        return check

    @functools.wraps(check)
    def wrapper(*args, **kw):
        _MUTATED.clear()
        _ANSWER_EPS.clear()
        try:
            return check(*args, **kw)
        except NotYet:
            raise
        except (TypeError, ValueError, AttributeError, IndexError, KeyError, ArithmeticError, RuntimeError) as e:
            if getattr(e, "_from_student", False):
                raise
            raise NotYet(f"{check.__name__}: the answer has the wrong type or shape for this exercise "
                         f"(checking it failed with {type(e).__name__}: {e}); compare what your function "
                         "returns with the shape and type its docstring asks for") from None  # no traceback into the checker
        finally:
            _MUTATED.clear()
            _ANSWER_EPS.clear()

    wrapper._guarded = True
    return wrapper


def guard_checkers(namespace: dict) -> None:
    """Wrap every ``check_*`` defined in a chapter's exercises module with ``guard``; each
    ``book/chNN/exercises.py`` ends with ``guard_checkers(globals())``."""
    module = namespace.get("__name__", "")
    for name, fn in list(namespace.items()):
        if name.startswith("check_") and callable(fn) and getattr(fn, "__module__", "") == module:
            namespace[name] = guard(fn)
