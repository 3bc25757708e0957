"""Chapter 05 figures, from ``chapters/results/ch05_prompt.json`` only: every method on VADER
with MiniLM ("05_methods": accuracies over the seeds and paired differences to full
fine-tuning with their 95 % intervals, ties drawn open), the training loss ("05_loss_curves"),
the prompt arms' comparisons ("05_prompt_pairs") and the longer budget against the main one
("05_long_budget": paired gains per method, ties drawn open)."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from pedagogy_lib.book.figures import paired_dot, register
from pedagogy_lib.book.ch05 import experiment as V
from pedagogy_lib.book.diagrams import where_methods_sit  # the chapter's diagram: importing registers it
from pedagogy_lib.results import SMOOTH, smooth

COLOURS = {"probe": "C7", "prompt-random": "C1", "prompt-vocab": "C5", "deep-prompt": "C4",
           "ptuning-v2": "C3", "lora": "C2", "full-ft": "C0"}


def _paired(ax, d: dict, y, colour, hollow: bool | None = None, word: str | None = None) -> None:
    """One paired difference at height ``y`` (``book.figures.paired_dot``: hollow when a tie, or when
    ``hollow``), labelled "tie" or its mean (or ``word``) right of the interval."""
    paired_dot(ax, d, y, colour, hollow=hollow, ms=7, mec=colour, ecolor=colour, lw=1.5)
    ax.annotate(word or ("tie" if d["tie"] else f"{d['mean']:+.1f}"), (d["hi"], y), xytext=(5, 0),
                textcoords="offset points", va="center", fontsize=8)


def _accuracies(ax, sweep, s, meths, y):
    """Each seed's test accuracy (small dots) and the seed mean (large dot) with ± sd."""
    for yi, k in zip(y, meths):
        ax.plot(100 * np.array(list(V.by_seed(sweep, k).values())), np.full(s["methods"][k]["n"], yi) + 0.2, ".",
                color=COLOURS[k], ms=5, alpha=0.7)
        mean, sd = (100 * x for x in s["methods"][k]["test"])
        ax.errorbar(mean, yi, xerr=sd, fmt="o", color=COLOURS[k], mec="k", mew=0.5, ecolor="k", capsize=3, lw=1)
    n = max(s["methods"][k]["n"] for k in meths)
    ax.set_yticks(y, [V.LABELS[k] + ("" if V.bracketed(sweep, k) is not False else " *") for k in meths])
    ax.set_xlabel(f"test accuracy (%), {n} seeds: small dots the seeds,\nlarge dot the mean, bar ± 1 sd")


def _differences(ax, sweep, meths, y, ref="full-ft"):
    """Paired difference to ``ref`` (points) with its 95 % t-interval; a tie is an open marker."""
    for yi, k in zip(y, meths):
        if k == ref:
            ax.annotate("reference", (0, yi), xytext=(5, 0), textcoords="offset points", va="center", fontsize=8)
        else:
            _paired(ax, V.pair(sweep, k, ref), yi, COLOURS[k])
    ax.axvline(0, color="k", lw=0.8)
    ax.margins(x=0.12)  # room for the labels
    ax.set_yticks(y, [""] * len(meths))
    ax.set_xlabel(f"paired difference to {V.LABELS[ref]} (points):\n95 % t-interval over the seeds; open = tie")


@register("05_methods")
def methods_figure(sweep: dict | None = None) -> Figure:
    """Dot plots (no bars, so no axis to truncate): left each method's accuracy over the seeds,
    right its paired difference to full fine-tuning; * marks a rate at its grid's edge."""
    sweep = V.load_results() if sweep is None else sweep
    s = V.summary(sweep)
    meths = V.methods(sweep)
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    y = np.arange(len(meths))[::-1]
    _accuracies(left, sweep, s, meths, y)
    _differences(right, sweep, meths, y)
    right.set_ylim(left.get_ylim())
    edges = V.unbracketed_arms(sweep)
    fig.suptitle("MiniLM (22.7M) on VADER polarity, m = 20 virtual tokens"
                 + (f"  (* rate at an edge of its grid: {', '.join(edges)})" if edges else ""), fontsize=10)
    return fig


@register("05_loss_curves")
def loss_figure(sweep: dict | None = None) -> Figure:
    """Training loss, seed means: the main budget, and the longer one where it was run."""
    s = V.summary(V.load_results() if sweep is None else sweep)
    fig = Figure(figsize=(11 if s["long"] else 6.5, 3.6), layout="constrained")
    axes = fig.subplots(1, 2 if s["long"] else 1, squeeze=False)[0]
    for k, m in s["methods"].items():
        axes[0].plot(smooth(m["loss_curve"]), color=COLOURS[k], label=V.LABELS[k])
    axes[0].set_xlabel("step")
    axes[0].set_ylabel(f"training loss (seed mean, {SMOOTH}-step average)")
    axes[0].set_title(f"Main budget, {max(m['n'] for m in s['methods'].values())} seeds")
    axes[0].legend(frameon=False, fontsize=7)
    if s["long"]:
        for k, run in s["long"].items():
            axes[1].plot(smooth(run["loss_curve"]), color=COLOURS[k], label=f"{V.LABELS[k]}: {run['epochs']} epochs")
        axes[1].set_xlabel("step")
        axes[1].set_title(f"Longer budget, seed mean over {max(r['n'] for r in s['long'].values())} seeds")
        axes[1].legend(frameon=False, fontsize=8)
    return fig


@register("05_prompt_pairs")
def prompt_pairs_figure(sweep: dict | None = None) -> Figure:
    """The chapter's comparisons of its prompt arms (``experiment.prompt_comparisons``): each
    paired difference with its 95 % t-interval; a tie is an open marker, a comparison resting on
    a rate at its grid's edge is grey and says "no verdict"."""
    sweep = V.load_results() if sweep is None else sweep
    comps = V.prompt_comparisons(sweep)
    fig = Figure(figsize=(8.5, 0.55 * len(comps) + 1.5), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(comps))[::-1]
    for yi, (name, c) in zip(y, comps.items()):
        if c["edges"]:
            _paired(ax, c["d"], yi, "0.6", hollow=True, word="no verdict (rate at grid edge)")
        else:
            _paired(ax, c["d"], yi, COLOURS[c["a"]])
    ax.axvline(0, color="k", lw=0.8)
    ax.margins(x=0.2, y=0.15)
    ax.set_yticks(y, [f"{k}\n({c['a']} − {c['b']})" for k, c in comps.items()], fontsize=8)
    ax.set_xlabel(f"paired difference in test accuracy (points):\n95 % t-interval over "
                  f"{len(sweep['config']['seeds'])} seeds; open = tie")
    ax.set_title("The prompt arms, paired by seed\n(\"prompt\": the shallow arm best on validation)", fontsize=9)
    return fig


@register("05_long_budget")
def long_budget_figure(sweep: dict | None = None) -> Figure:
    """The longer budget against the main one, per method of ``experiment.LONG_ARMS``: left each
    seed's test accuracy at both budgets (a line joins a seed's two runs: the same subsample,
    order and head init); right the paired gain longer − main with its 95 % t-interval, open
    when it is a tie. A method whose longer budget did not run on every seed is drawn on the
    left only, and the right panel says it is not judged."""
    sweep = V.load_results() if sweep is None else sweep
    cfg, run = sweep["config"], V.long_seeds_run(sweep)
    meths = [k for k, seeds in run.items() if seeds]
    fig = Figure(figsize=(10, 0.9 * max(len(meths), 1) + 2.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    y = np.arange(len(meths))[::-1]
    for yi, k in zip(y, meths):
        main, long = V.by_seed(sweep, k), V.long_by_seed(sweep, k)
        for s in run[k]:
            left.plot([100 * main[s], 100 * long[s]], [yi + 0.15, yi - 0.15], "-", color="0.7", lw=0.8)
        left.plot([100 * main[s] for s in run[k]], np.full(len(run[k]), yi + 0.15), "o", mfc="white",
                  color=COLOURS[k], label=f"{cfg['epochs']} epochs" if yi == y[0] else None)
        left.plot([100 * long[s] for s in run[k]], np.full(len(run[k]), yi - 0.15), "o", color=COLOURS[k],
                  label=f"{cfg['long_epochs']} epochs" if yi == y[0] else None)
        if V.long_complete(sweep, k):
            _paired(right, V.long_gain(sweep, k), yi, COLOURS[k])
        else:
            right.annotate(f"seeds {run[k]} only: not judged", (0, yi), xytext=(5, 0), textcoords="offset points",
                           va="center", fontsize=8)
    left.set_yticks(y, [V.LABELS[k] for k in meths])
    left.set_xlabel("test accuracy (%), one dot per seed;\na line joins a seed's two budgets")
    if meths:
        left.legend(frameon=False, fontsize=8)
    right.axvline(0, color="k", lw=0.8)
    right.margins(x=0.3)
    right.set_ylim(left.get_ylim())
    right.set_yticks(y, [""] * len(meths))
    right.set_xlabel(f"{cfg['long_epochs']} − {cfg['epochs']} epochs (points), paired by seed:\n"
                     "95 % t-interval; open = tie")
    fig.suptitle(("The longer budget at each method's chosen rate" if meths else "The longer budget: not run")
                 + f" (seeds {cfg['long_seeds']})", fontsize=10)
    return fig


__all__ = ["V", "long_budget_figure", "loss_figure", "methods_figure", "prompt_pairs_figure", "where_methods_sit"]
