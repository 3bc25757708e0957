"""Results files: what the long runs write (``make compare``, ``make bench``, ``make sweeps``)
and the chapters read, as JSON under ``chapters/results/``."""
from __future__ import annotations

import importlib
import json
import os
import platform
from pathlib import Path, PurePath

import numpy as np

from . import checks
from .checks import write_atomically

RESULTS = Path(__file__).resolve().parent.parent / "chapters" / "results"


def path_of(name) -> Path:
    """Where results ``name`` live. The rule: a ``Path`` object, or a str that contains a
    path separator ("/"), is a path and is used as given; any other str is a bare name and
    means ``RESULTS/<name>.json``, dots included ("sweep.v2" → ``RESULTS/sweep.v2.json``).
    A bare name may not be empty, start with "." or end in ".json" (say the name, or pass a
    Path)."""
    if isinstance(name, PurePath):
        return Path(name)
    if not isinstance(name, str):
        raise TypeError(f"results name must be a str or a pathlib.Path, got {type(name).__name__} {name!r}")
    if "/" in name or os.sep in name or (os.altsep and os.altsep in name):
        return Path(name)
    if not name or name.startswith(".") or name.endswith(".json"):
        raise ValueError(f"results name {name!r} is not a bare name: give it without '.json' and not "
                         "starting with '.', or pass a pathlib.Path")
    return RESULTS / f"{name}.json"


def _dumps(data, name, **kw) -> str:
    """JSON text of ``data``; NaN/inf (which JSON cannot hold) refused, naming the key."""
    try:
        return json.dumps(data, allow_nan=False, **kw)
    except ValueError as e:
        bad = checks.first_nonfinite(data)
        where = f" at {bad}" if bad else ""
        raise ValueError(f"results {name!r}: a value{where} is NaN/inf, which JSON cannot store "
                         f"({e}); nothing was written") from None
    except TypeError as e:
        raise TypeError(f"results {name!r}: {e}; nothing was written") from None


def save(data: dict, name) -> Path:
    """Write ``data`` as sorted, indented JSON (via a temporary file, so a reader never sees
    half a file, and a failure leaves neither the file nor a temporary behind). NaN/inf are
    refused: JSON has no such numbers."""
    if not isinstance(data, dict):
        raise TypeError(f"results {name!r}: data must be a dict, got {type(data).__name__}")
    return _write(_dumps(data, name, indent=1, sort_keys=True) + "\n", name)


def _write(text: str, name) -> Path:
    path = path_of(name)
    write_atomically({path: text})
    return path


def load(name, command: str, keys=(), what: str = "results") -> dict:
    """Read a results file; a missing file names the ``command`` that writes it, and a file
    that is not JSON or lacks one of ``keys`` is refused as not a ``what`` file."""
    path = path_of(name)
    if not path.is_file() and not path.is_dir():
        raise FileNotFoundError(f"{path} is missing: run {command}")
    data = checks.read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a {what} file (a JSON {type(data).__name__}, not an object)")
    missing = sorted(set(keys) - set(data))
    if missing:
        raise ValueError(f"{path} is not a {what} file (missing {missing})")
    return data


def load_stored(name, command: str, keys=(), what: str = "results") -> dict | None:
    """``load`` for a record that may not exist (a GPU run stored by hand): None when absent."""
    return load(name, command, keys, what) if path_of(name).is_file() else None


def save_runs(data: dict, name) -> Path:
    """Like ``save``, but the list ``data["runs"]`` is written one run per line (sweeps with
    hundreds of runs stay readable and diff well). ``data`` is not modified."""
    if not isinstance(data, dict):
        raise TypeError(f"results {name!r}: data must be a dict, got {type(data).__name__}")
    runs = data.get("runs", [])
    if not isinstance(runs, (list, tuple)):
        raise TypeError(f"results {name!r}: data['runs'] must be a list of runs, got {type(runs).__name__}; "
                        "nothing was written")
    head = {k: v for k, v in data.items() if k != "runs"}
    body = ",\n".join("  " + _dumps(r, name, sort_keys=True) for r in runs)
    # the other keys as ``save`` writes them, less the closing brace; no other key: just the brace
    start = _dumps(head, name, indent=1, sort_keys=True)[:-2] + "," if head else "{"
    text = start + f'\n "runs": [\n{body}\n ]\n}}\n'
    json.loads(text)  # still valid JSON
    return _write(text, name)


def versions(*modules: str) -> dict[str, str]:
    """What a results file records of the software that made it: Python's version and each
    named module's ``__version__``, e.g. ``versions("numpy", "torch")``."""
    return {"python": platform.python_version()} | {m: importlib.import_module(m).__version__ for m in modules}


def selection(sel: dict, ndigits: int | None = None) -> dict:
    """A learning-rate search as a sweep stores it per arm (``runner.protocol``'s ``selection``,
    chapter 08 Eqs. 8.1–8.2): the grid with its extensions, the mean validation score per rate
    over the selection seeds (rounded to ``ndigits`` if given), the chosen rate, and whether
    it is bracketed (else the edge it sits at)."""
    scores = sel["scores"] if ndigits is None else [v if v is None else round(v, ndigits) for v in sel["scores"]]
    out = {"lr_grid": sel["grid"], "val_by_lr": {f"{lr:g}": v for lr, v in zip(sel["grid"], scores)},
           "lr": sel["chosen"], "bracketed": sel["bracketed"], "edge": sel["edge"],
           "extensions": sel["extensions"], "select_seeds": sel["seeds"]}
    return out | ({"diverged": sel["diverged"]} if sel.get("diverged") else {})  # rates whose runs diverged (None)


def trained(found: dict) -> list[dict]:
    """The runs one arm of ``runner.protocol`` trained: its grid trials and the seeds after the
    selection seeds (whose runs at the chosen rate are trials already)."""
    return found["trials"] + found["runs"][len(found["selection"]["seeds"]):]


def mean_sd(xs) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for a single run) of repeated runs."""
    xs = np.asarray(xs, np.float64)
    if xs.ndim != 1 or xs.size == 0:
        raise ValueError(f"mean_sd needs a non-empty 1-D list of runs, got shape {xs.shape}")
    return float(xs.mean()), float(xs.std(ddof=1)) if xs.size > 1 else 0.0


SMOOTH = 8  # steps in the moving average of a loss curve


def smooth(losses, k: int = SMOOTH):
    """Moving average over k steps (the first k−1 points average what exists so far)."""
    x, k = np.asarray(losses, np.float64), checks.check_size(k, "k")
    if x.ndim != 1:
        raise ValueError(f"smooth takes a 1-D loss curve, got shape {x.shape}")
    c = np.cumsum(np.insert(x, 0, 0.0))
    n = np.minimum(np.arange(1, x.size + 1), k)
    return (c[1:] - c[np.arange(1, x.size + 1) - n]) / n
