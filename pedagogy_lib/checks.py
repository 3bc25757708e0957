"""Shared input checks: one place for the rules every module applies to what it is given.

Each check either returns the value (normalised: a Python int, a float, a compiled regex,
parsed JSON) or raises an error whose message names the argument, key or file and says
what was wrong. Nothing here changes its input.

* sizes and seeds:     ``positive_int``, ``nonneg_int``, ``seed``;
* numbers and arrays:  ``finite_real``, ``finite_array``, ``ndim``, ``first_nonfinite``;
* files:               ``read_json`` (size, nesting depth and NaN/Infinity bounded, path in
                       every message);
* patterns:            ``bounded_regex`` (a ``target_modules`` regex whose matching time is
                       bounded, see its docstring).
"""
from __future__ import annotations

import json
import math
import numbers
import os
import pathlib
import re
from re import _constants as _sre_c
from re import _parser as _sre_parse

import numpy as np

MAX_JSON_BYTES = 16 << 20      # a config or results file is kilobytes; 16 MiB is already absurd
MAX_JSON_DEPTH = 64            # the deepest real file here nests 5 levels
MAX_REGEX_CHARS = 256
MAX_REGEX_REPEATS = 3          # variable-length repeats (*, +, {m,n}) in one pattern
MAX_REGEX_CHOICES = 16         # product of the alternatives (a|b, x?) in one pattern


# ----------------------------------------------------------------------------- ints and reals
def _int_at_least(x, name: str, low: int, what: str) -> int:
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):  # 2.0 and True are not sizes
        raise TypeError(f"{name} must be an int, got {type(x).__name__} {x!r}")
    if x < low:
        raise ValueError(f"{name} must be {what}, got {x}")
    return int(x)


def boolean(x, name: str) -> bool:
    """True or False, nothing truthy: "no" or 1 would silently switch a feature on."""
    if not isinstance(x, bool):  # a NumPy bool too: it would reach JSON files, which refuse it
        hint = " (a NumPy bool: pass bool(...))" if isinstance(x, np.bool_) else ""
        raise TypeError(f"{name} must be True or False, got {x!r}{hint}")
    return x


def nonneg_int(x, name: str) -> int:
    """An int >= 0 (bools and floats refused)."""
    return _int_at_least(x, name, 0, ">= 0")


def positive_int(x, name: str) -> int:
    """An int >= 1."""
    return _int_at_least(x, name, 1, "a positive int")


def seed(x, name: str = "seed") -> int:
    """A seed for ``np.random.default_rng``: an int >= 0."""
    return nonneg_int(x, name)


def finite_real(x, name: str, positive: bool = False) -> float:
    """A finite real number (bools refused); with ``positive``, also > 0."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(x).__name__} {x!r}")
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {x!r}")
    if positive and not x > 0:
        raise ValueError(f"{name} must be > 0, got {x!r}")
    return x


# ----------------------------------------------------------------------------- arrays
def finite_array(x, name: str) -> np.ndarray:
    """A NumPy array of numbers with no NaN/inf."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(x).__name__}")
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold numbers, got dtype {x.dtype}")
    ok = np.isfinite(np.asarray(x))  # asarray: a masked array's hidden NaN is still used
    if x.dtype.kind == "f" and not ok.all():
        raise ValueError(f"{name} contains {int(ok.size - np.count_nonzero(ok))} NaN/inf value(s)")
    return x


def ndim(x, name: str, n: int, layout: str = "") -> np.ndarray:
    """An array with exactly ``n`` dimensions; ``layout`` (e.g. "(L, 2, m, d)") goes in the message."""
    shape = getattr(x, "shape", None)
    if shape is None:
        raise TypeError(f"{name} must be an array, got {type(x).__name__}")
    if len(shape) != n:
        want = f" {layout}" if layout else ""
        raise ValueError(f"{name} must have {n} dimensions{want}, got shape {tuple(shape)}")
    return x


def first_nonfinite(data, where: str = ""):
    """The key path (e.g. "runs[3].loss") of the first NaN/inf float in nested dicts/lists,
    or None. Iterative: a deeply nested value cannot overflow the stack."""
    stack = [(where, data)]
    while stack:
        path, v = stack.pop()
        if isinstance(v, float) and not math.isfinite(v):
            return path or "<top level>"
        if isinstance(v, np.floating) and not np.isfinite(v):
            return path or "<top level>"
        if isinstance(v, dict):
            stack.extend((f"{path}.{k}" if path else str(k), x) for k, x in reversed(list(v.items())))
        elif isinstance(v, (list, tuple)):
            stack.extend((f"{path}[{i}]", x) for i, x in reversed(list(enumerate(v))))
    return None


# ----------------------------------------------------------------------------- JSON files
def _depth(data) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, d)
            stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


def _unique_keys(pairs) -> dict:
    """A JSON object as a dict, refusing a repeated key (json.loads would keep the last silently)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen = set()
        raise ValueError(f"JSON object repeats the key {next(k for k, _ in pairs if k in seen or seen.add(k))!r}")
    return out


def parse_json(text: str, where: str, max_depth: int = MAX_JSON_DEPTH):
    """``json.loads`` with errors that name ``where``: invalid JSON, NaN/Infinity, nesting
    deeper than ``max_depth`` (deeper than Python's recursion limit included)."""
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where} is not JSON: not valid JSON syntax ({e})") from None
    except ValueError as e:  # a repeated key, or an integer longer than Python reads
        raise ValueError(f"{where}: {e}") from None
    except RecursionError:
        raise ValueError(f"{where}: JSON nested too deeply (more than Python's recursion limit); "
                         f"at most {max_depth} levels are accepted") from None
    if _depth(data) > max_depth:
        raise ValueError(f"{where}: JSON nested {_depth(data)} levels deep; at most {max_depth} "
                         "levels are accepted")
    bad = first_nonfinite(data)
    if bad is not None:  # Python's json reads NaN/Infinity; JSON itself has no such numbers
        raise ValueError(f"{where} is not JSON: not valid JSON, {bad} is NaN/Infinity")
    return data


def read_json(path, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH):
    """Parse a JSON file; every error names the path: missing, a directory, larger than
    ``max_bytes``, not UTF-8, not JSON, NaN/Infinity, nested deeper than ``max_depth``."""
    path = pathlib.Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not a JSON file")
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    size = path.stat().st_size
    if size > max_bytes:
        raise ValueError(f"{path} is {size} bytes; a JSON file here may hold at most {max_bytes}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not JSON: not UTF-8 text ({e})") from None
    return parse_json(text, str(path), max_depth)


# ----------------------------------------------------------------------------- regexes
def _regex_walk(items, in_repeat: bool, stats: dict, pattern: str):
    """Count variable repeats and alternatives; refuse what can backtrack exponentially."""
    c = _sre_c
    for op, av in items:
        if op in (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", None)):
            lo, hi, sub = av
            if lo != hi and in_repeat:
                raise ValueError(f"regex {pattern!r} nests a repeat inside a repeat (like (a+)+), "
                                 "which can take exponential time; write it without nesting")
            if hi > 1 and lo != hi:
                stats["repeats"] += 1
                _regex_walk(sub, True, stats, pattern)
            else:
                stats["choices"] *= 2 if lo != hi else 1
                _regex_walk(sub, in_repeat or hi > 1, stats, pattern)
        elif op is c.BRANCH:
            branches = av[1]
            if in_repeat:
                raise ValueError(f"regex {pattern!r} repeats an alternation (like (a|b)*), which can "
                                 "take exponential time; list the names instead")
            stats["choices"] *= len(branches)
            for b in branches:
                _regex_walk(b, in_repeat, stats, pattern)
        elif op is c.SUBPATTERN:
            _regex_walk(av[3], in_repeat, stats, pattern)
        elif op in (c.ASSERT, c.ASSERT_NOT):
            _regex_walk(av[1], in_repeat, stats, pattern)
        elif op is getattr(c, "ATOMIC_GROUP", None):
            _regex_walk(av, in_repeat, stats, pattern)
        elif op in (c.GROUPREF, c.GROUPREF_EXISTS):
            raise ValueError(f"regex {pattern!r} uses a back-reference, which can take exponential time")


def bounded_regex(pattern: str, name: str = "regex") -> re.Pattern:
    """Compile a regex whose ``fullmatch`` on a module path takes bounded time, or refuse it.

    Backtracking regex engines (Python's ``re``, which peft uses unguarded) can take
    exponential time on patterns such as ``(a+)+$`` or ``(a|a)*$``. A pattern is accepted
    when it has at most 256 characters, no repeat nested in a repeat, no repeated
    alternation, no back-reference, at most 3 variable-length repeats (``.*`` etc.: at most
    O(n³) work on a path of n characters) and at most 16 combined alternatives. Every
    ``target_modules`` regex of a real adapter we know of passes (``.*\\.(query|value)``,
    ``^(?!.*pooler).*(q|v)_proj``)."""
    if not isinstance(pattern, str):
        raise TypeError(f"{name} must be a str, got {type(pattern).__name__}")
    if len(pattern) > MAX_REGEX_CHARS:
        raise ValueError(f"{name} has {len(pattern)} characters; at most {MAX_REGEX_CHARS} are accepted")
    try:
        compiled = re.compile(pattern)
        parsed = _sre_parse.parse(pattern)
    except (re.error, RecursionError, OverflowError) as e:
        raise ValueError(f"{name} {pattern!r} does not compile: {e}") from None
    stats = {"repeats": 0, "choices": 1}
    try:
        _regex_walk(parsed, False, stats, pattern)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None
    if stats["repeats"] > MAX_REGEX_REPEATS:
        raise ValueError(f"{name} {pattern!r} has {stats['repeats']} variable-length repeats; at most "
                         f"{MAX_REGEX_REPEATS} are accepted (matching time grows as n^repeats)")
    if stats["choices"] > MAX_REGEX_CHOICES:
        raise ValueError(f"{name} {pattern!r} combines {stats['choices']} alternatives; at most "
                         f"{MAX_REGEX_CHOICES} are accepted")
    return compiled


__all__ = ["MAX_JSON_BYTES", "MAX_JSON_DEPTH", "bounded_regex", "finite_array", "finite_real",
           "first_nonfinite", "ndim", "nonneg_int", "parse_json", "positive_int", "read_json", "seed"]


def write_atomically(files: dict) -> list[pathlib.Path]:
    """Write {path: bytes} so that a reader sees either all old or all new files: each goes
    to a temporary name beside its target first; only when every one is written are they
    renamed over the targets. If a write or rename fails, the targets already renamed get
    their old bytes back and no temporary file is left. Returns the paths."""
    items = [(pathlib.Path(p), data if isinstance(data, bytes) else str(data).encode("utf-8"))
             for p, data in files.items()]
    tmps, old, done = {}, {}, []
    try:
        for path, data in items:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmps[path] = tmp
            tmp.write_bytes(data)
        for path, _ in items:
            old[path] = path.read_bytes() if path.is_file() else None
        for path, _ in items:
            os.replace(tmps[path], path)
            done.append(path)
    except BaseException:
        for path in done:  # roll back what was already renamed
            try:
                if old[path] is None:
                    path.unlink()
                else:
                    path.write_bytes(old[path])
            except OSError:  # pragma: no cover - nothing better to do
                pass
        raise
    finally:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)
    return [p for p, _ in items]


def check_size(x, what: str) -> int:
    """A size argument of a method or the runner: an int >= 1 ("... must be positive")."""
    return _int_at_least(x, what, 1, "positive")
