"""Results files: what the long runs write (``make compare``, ``make bench``, ``make sweeps``)
and the chapters read, as JSON under ``chapters/results/``."""
from __future__ import annotations

import json
import os
from pathlib import Path

RESULTS = Path(__file__).resolve().parent.parent / "chapters" / "results"


def path_of(name) -> Path:
    """A bare name ("ch03_latency") is a file in ``RESULTS``; anything else is a path."""
    p = Path(name)
    return RESULTS / f"{p}.json" if p.suffix == "" and p.parent == Path(".") else p


def save(data: dict, name) -> Path:
    """Write ``data`` as sorted, indented JSON (via a temporary file, so a reader never sees
    half a file)."""
    return _write(json.dumps(data, indent=1, sort_keys=True) + "\n", name)


def _write(text: str, name) -> Path:
    path = path_of(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def load(name, command: str, keys=(), what: str = "results") -> dict:
    """Read a results file; a missing file names the ``command`` that writes it, and a file
    that is not JSON or lacks one of ``keys`` is refused as not a ``what`` file."""
    path = path_of(name)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run {command}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not JSON: {e}") from None
    missing = sorted(set(keys) - set(data if isinstance(data, dict) else ()))
    if missing:
        raise ValueError(f"{path} is not a {what} file (missing {missing})")
    return data


def save_runs(data: dict, name) -> Path:
    """Like ``save``, but the list ``data["runs"]`` is written one run per line (sweeps with
    hundreds of runs stay readable and diff well). ``data`` is not modified."""
    head = {k: v for k, v in data.items() if k != "runs"}
    body = ",\n".join("  " + json.dumps(r, sort_keys=True) for r in data.get("runs", []))
    text = json.dumps(head, indent=1, sort_keys=True)[:-2] + f',\n "runs": [\n{body}\n ]\n}}\n'
    json.loads(text)  # still valid JSON
    return _write(text, name)


def mean_sd(xs) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for a single run) of repeated runs."""
    import numpy as np

    xs = np.asarray(xs, np.float64)
    return float(xs.mean()), float(xs.std(ddof=1)) if xs.size > 1 else 0.0


SMOOTH = 8  # steps in the moving average of a loss curve


def smooth(losses, k: int = SMOOTH):
    """Moving average over k steps (the first k−1 points average what exists so far)."""
    import numpy as np

    x = np.asarray(losses, np.float64)
    c = np.cumsum(np.insert(x, 0, 0.0))
    n = np.minimum(np.arange(1, x.size + 1), k)
    return (c[1:] - c[np.arange(1, x.size + 1) - n]) / n
