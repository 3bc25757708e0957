"""Issue 13, item 5, for chapters 01–07: no truncated-axis bar charts of accuracies (dot plots
with their intervals instead), every error bar says what it is, a colour scale has a colourbar.
The figures are built from the stored results, as ``make figures`` builds them."""
import importlib

import matplotlib
import pytest
from matplotlib.container import BarContainer, ErrorbarContainer

matplotlib.use("agg")

from pedagogy_lib.book import figures  # noqa: E402

ACCURACY_FIGURES = ("02_placement", "05_methods", "07_accuracy")
WITH_ERROR_BARS = ("01_intrinsic", "02_placement", "02_lr", "02_rank", "03_accuracy", "04_prefix_sweep", "05_methods",
                   "05_long_budget", "06_learning_curve", "07_accuracy")


def build(name):
    importlib.import_module(f"pedagogy_lib.book.ch{name[:2]}.figures")
    return figures.REGISTRY[name]()


def _truncated_bars(ax) -> bool:
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    if not bars:
        return False
    horizontal = bars[0].orientation == "horizontal"
    lo = ax.get_xlim()[0] if horizontal else ax.get_ylim()[0]
    return lo > 0  # a bar's length is its value only if the axis starts at 0


@pytest.mark.parametrize("name", ACCURACY_FIGURES)
def test_accuracy_figures_are_dot_plots(name):
    fig = build(name)
    assert not any(_truncated_bars(ax) for ax in fig.axes), f"{name}: a bar chart on a truncated axis"
    assert not any(isinstance(c, BarContainer) for ax in fig.axes for c in ax.containers)


def test_the_truncated_bar_detector_fires():
    from matplotlib.figure import Figure

    ax = Figure().subplots()
    ax.bar([0, 1], [88.0, 91.0])
    ax.set_ylim(85, 92)
    assert _truncated_bars(ax)
    ax.set_ylim(0, 100)
    assert not _truncated_bars(ax)


@pytest.mark.parametrize("name", ("07_memory_llama", "10_studies"))
def test_bars_start_at_zero_on_a_linear_axis(name):
    """Issue 13 item 5 beyond accuracies: a bar's length is its value, so no bar sits on a
    truncated or a log axis (chapter 10's data types are differences to fp32, from 0)."""
    fig = build(name)
    for ax in fig.axes:
        bars = [c for c in ax.containers if isinstance(c, BarContainer)]
        assert not _truncated_bars(ax), f"{name}: a bar chart on a truncated axis"
        assert not (bars and "log" in (ax.get_xscale(), ax.get_yscale())), f"{name}: bars on a log axis"


@pytest.mark.parametrize("name", WITH_ERROR_BARS)
def test_every_error_bar_says_what_it_is(name):
    fig = build(name)
    has_bars = any(isinstance(c, ErrorbarContainer) for ax in fig.axes for c in ax.containers) or any(
        ax.collections for ax in fig.axes)
    text = " ".join([ax.get_xlabel() + " " + ax.get_ylabel() + " " + ax.get_title() for ax in fig.axes]
                    + [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()])
    assert has_bars
    assert "sd" in text or "95 %" in text or "CI" in text, f"{name}: error bars without saying sd or CI"


def test_preactivation_colours_have_a_colourbar():
    fig = build("06_preactivation")
    assert any("Δb_m2" in ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>")


def test_10_methods_judges_no_unbracketed_arm():
    """DESIGN: nothing is judged on an arm whose rate sits at its grid's edge. On the stored area task
    P-Tuning v2 (lowest rate of its grid) was drawn red, "different from LoRA (q, v)"; it and IA³ (highest
    rate) are now hollow light grey with a * on their labels, and no judged arm takes that colour."""
    from matplotlib.colors import to_hex

    from pedagogy_lib.book import ch10
    from pedagogy_lib.book.ch10 import figures as F

    fig = build("10_methods")
    for ax, task in zip(fig.axes, ("area", "line")):
        res = ch10.load(task)
        edge = {m for m, s in res["selection"].items() if s.get("bracketed") is False}
        labels = [t.get_text() for t in ax.get_xticklabels()]
        names = ch10.methods(res)
        dots = [ln for ln in ax.lines if ln.get_marker() == "o"]
        for m, label, dot in zip(names, labels, dots):
            unjudged = to_hex(dot.get_color()) == to_hex(F.UNJUDGED) and dot.get_markerfacecolor() == "white"
            assert unjudged == (m in edge) and label.endswith("*") == (m in edge), (task, m)
        assert task != "area" or {"ptuning-v2", "ia3"} <= edge
