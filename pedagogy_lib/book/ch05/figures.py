"""Chapter 05 figures: every method on VADER with MiniLM ("05_methods") and the training
loss of the prompt methods ("05_loss_curves"), from ``chapters/results/ch05_prompt.json``."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from pedagogy_lib.book import diagrams  # noqa: F401  (registers the dataflow diagrams)
from pedagogy_lib.book.figures import register
from pedagogy_lib.book.ch05 import experiment as V
from pedagogy_lib.results import smooth

COLOURS = {"probe": "C7", "prompt-random": "C1", "prompt-vocab": "C5", "deep-prompt": "C4",
           "ptuning-v2": "C3", "lora": "C2", "full-ft": "C0"}


@register("05_methods")
def methods_figure(sweep: dict | None = None) -> Figure:
    """A dot plot (no bars, so no axis to truncate): each seed's test accuracy, and the mean
    with a ± sd error bar."""
    sweep = V.load_results() if sweep is None else sweep
    s = V.summary(sweep)
    meths = [k for k in V.ARMS if k in s["methods"]]
    fig = Figure(figsize=(9, 3.8), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(meths))[::-1]
    mean = [100 * s["methods"][k]["test"][0] for k in meths]
    sd = [100 * s["methods"][k]["test"][1] for k in meths]
    for yi, k in zip(y, meths):
        ax.plot(100 * np.array(V.by_seed(sweep, k)), np.full(3, yi) + 0.18, ".", color=COLOURS[k], ms=5, alpha=0.7)
    ax.errorbar(mean, y, xerr=sd, fmt="none", ecolor="k", capsize=3, lw=1)
    ax.scatter(mean, y, c=[COLOURS[k] for k in meths], s=40, zorder=3, edgecolors="k", linewidths=0.5)
    hi = max(m + e for m, e in zip(mean, sd))
    for yi, k, mv in zip(y, meths, mean):
        n = s["methods"][k]["trainable"]
        ax.text(hi + 0.6, yi, f"{mv:.1f}   " + (f"{n:,} trained" if n else "head only"), va="center", fontsize=8)
    ax.set_xlim(None, hi + 6)
    ax.set_yticks(y, [V.LABELS[k] for k in meths])
    n_seeds = max(s["methods"][k]["n"] for k in meths)
    ax.set_xlabel(f"test accuracy (%): large dot the mean, bar ± sd over {n_seeds} seeds, small dots the seeds")
    ax.set_title("MiniLM (22.7M) on VADER polarity, m = 20 virtual tokens")
    return fig


@register("05_loss_curves")
def loss_figure(sweep: dict | None = None) -> Figure:
    s = V.summary(V.load_results() if sweep is None else sweep)
    fig = Figure(figsize=(11, 3.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    for k in ("probe", "prompt-random", "prompt-vocab", "deep-prompt", "ptuning-v2", "lora", "full-ft"):
        left.plot(smooth(s["methods"][k]["loss_curve"]), color=COLOURS[k], label=V.LABELS[k])
    left.set_xlabel("step")
    left.set_ylabel("training loss (seed mean, 8-step average)")
    left.set_title("Main budget")
    left.legend(frameon=False, fontsize=7)
    for k, run in s["long"].items():
        right.plot(smooth(run["losses"]), color=COLOURS[k], label=f"{V.LABELS[k]}: {run['epochs']} epochs")
    right.set_xlabel("step")
    right.set_title("Longer budget, seed 0")
    right.legend(frameon=False, fontsize=8)
    return fig

