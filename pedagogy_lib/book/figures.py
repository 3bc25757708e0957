"""Every figure the book shows, written into ``figures/`` byte for byte the same each run.

One module per chapter room (``pedagogy_lib/book/chNN/figures.py``) registers builders that
only plot:

    @register("01_spectra")
    def spectra(data=None):
        data = load_spectra() if data is None else data   # stored results, never a new run
        fig = Figure()
        ...
        return fig

A chapter calls the builder with the data it already has and shows the figure; it writes
nothing. ``python -m pedagogy_lib.book`` (``make figures``) calls every builder with no
argument (so on the stored results) and writes each figure with ``save``.

PNG files are byte-deterministic when nothing in them depends on the run: matplotlib
writes the date-free PNG metadata we give it (``Software`` dropped), at a fixed dpi.
"""

import os
import pathlib
import re
from collections.abc import Callable

import matplotlib
from matplotlib.figure import Figure

__all__ = ["FIGURES_DIR", "REGISTRY", "register", "save", "mean_interval", "paired_dot", "stacked_bars"]

_REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
if not (_REPO_ROOT / "pyproject.toml").is_file():  # installed without the book: use ./figures
    _REPO_ROOT = pathlib.Path.cwd()
FIGURES_DIR = pathlib.Path(os.environ.get("PEDAGOGY_FIGURES_DIR") or _REPO_ROOT / "figures")

REGISTRY: dict[str, Callable[[], Figure]] = {}

DPI = 100
_NAME = re.compile(r"^[0-9]{2}_[A-Za-z0-9_-]+$")  # "01_spectra": chapter number first
_RC = {"svg.hashsalt": "pedagogy_lib", "savefig.dpi": DPI}


def _check_name(name) -> str:
    if not isinstance(name, str):
        raise TypeError(f"figure name must be a str, got {type(name).__name__}")
    if not _NAME.match(name):
        raise ValueError(
            f"figure name {name!r} must be the chapter number, '_', then letters, digits, "
            "'_' or '-' (e.g. '01_spectra'); no paths or extensions"
        )
    return name


def register(name: str):
    """Decorator: add a zero-argument figure builder to REGISTRY under ``name``."""
    _check_name(name)

    def decorate(builder):
        if not callable(builder):
            raise TypeError(f"register({name!r}) decorates a function, got {type(builder).__name__}")
        old = REGISTRY.get(name)  # the same builder again (its module re-imported) is fine
        if old is not None and (old.__module__, old.__qualname__) != (builder.__module__, builder.__qualname__):
            raise ValueError(f"figure {name!r} is already registered by {old.__module__}.{old.__qualname__}")
        REGISTRY[name] = builder
        return builder

    return decorate


def save(fig: Figure, name: str) -> pathlib.Path:
    """Write ``fig`` to FIGURES_DIR/<name>.png deterministically and return the path."""
    if not isinstance(fig, Figure):
        raise TypeError(f"save() needs a matplotlib Figure, got {type(fig).__name__}")
    _check_name(name)
    out_dir = pathlib.Path(FIGURES_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.png"
    tmp = path.with_name(f".{name}.{os.getpid()}.png.tmp")  # atomic: readers never see half a file
    with matplotlib.rc_context(_RC):
        fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})
    os.replace(tmp, path)
    return path


def mean_interval(x) -> tuple[float, float]:
    """The mean of per-seed values and the half-width of its 95 % t-interval (as Eq. 8.6 for
    one arm): what an error bar around an arm's mean shows."""
    import numpy as np
    from scipy import stats

    x = np.asarray(x, dtype=np.float64)
    return float(x.mean()), float(stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))


def paired_dot(ax, d: dict, at, colour, *, vertical: bool = False, hollow: bool | None = None, scale: float = 1,
               fmt: str = "o", **style):
    """One paired difference ``d`` ({"mean", "lo", "hi", "tie"}, Eqs. 8.4–8.7) drawn at ``at`` on the
    category axis: a dot at the mean, its 95 % interval as a capped error bar along x (along y if
    ``vertical``), values times ``scale``. The dot is hollow for a tie (the interval contains 0),
    or as ``hollow`` says; ``style`` goes on to ``errorbar``."""
    mean, err = scale * d["mean"], [[scale * (d["mean"] - d["lo"])], [scale * (d["hi"] - d["mean"])]]
    face = "white" if (d["tie"] if hollow is None else hollow) else colour
    if vertical:
        return ax.errorbar([at], [mean], yerr=err, fmt=fmt, capsize=3, color=colour, mfc=face, **style)
    return ax.errorbar(mean, at, xerr=err, fmt=fmt, capsize=3, color=colour, mfc=face, **style)


def stacked_bars(ax, at, layers, *, horizontal: bool = False, **style):
    """Bars at positions ``at``, stacked from 0 in the order of ``layers`` (label, heights, colour):
    each layer starts where the ones before it end. Returns the tops (the stacks' totals);
    ``style`` goes on to ``bar`` (``barh`` if ``horizontal``)."""
    import numpy as np

    top = np.zeros(len(at))
    for label, heights, colour in layers:
        heights = np.asarray(heights, dtype=np.float64)
        if horizontal:
            ax.barh(at, heights, left=top, color=colour, label=label, **style)
        else:
            ax.bar(at, heights, bottom=top, color=colour, label=label, **style)
        top = top + heights
    return top
