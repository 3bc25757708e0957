"""Shared input checks: every module (NumPy methods, twins, runner) imports these instead
of writing its own, so a bad argument gets the same clear message everywhere."""
from __future__ import annotations

import numbers


def check_size(x, what: str) -> int:
    """A size: a positive Python/NumPy integer (not a bool, not a float), or a clear
    TypeError/ValueError naming ``what``."""
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        raise TypeError(f"{what} must be an int, got {type(x).__name__} {x!r}")
    if x <= 0:
        raise ValueError(f"{what} must be positive, got {x}")
    return int(x)
