"""Chapter 04 figures: the prefix's share of attention per layer ("04_lambda"), accuracy vs
prefix length and learning rate ("04_prefix_sweep"), and loss curves over seeds
("04_loss_curves").  The sweep figures read ``chapters/results/ch04_prefix.json``."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from pedagogy_lib.book.ch04.experiment import lambda_data
from pedagogy_lib.results import SMOOTH, smooth
from pedagogy_lib.book.figures import register
from pedagogy_lib.book.ch04 import experiment as V

COLOURS = {"direct": "C3", "mlp": "C0", "lora": "C2"}
LABELS = {"direct": "direct P_k, P_v", "mlp": "through the MLP", "lora": "LoRA r=8 (q,v)"}


@register("04_lambda")
def lambda_figure(d: dict | None = None) -> Figure:
    d = lambda_data() if d is None else d
    fig = Figure(figsize=(6, 3.2), layout="constrained")
    ax = fig.subplots()
    L = len(next(iter(d["lambda"].values())))
    width = 0.8 / len(d["lambda"])
    for i, (arm, lam) in enumerate(d["lambda"].items()):
        ax.bar(np.arange(L) + (i - 0.5) * width, lam, width, color=COLOURS.get(arm, f"C{i}"), label=LABELS.get(arm, arm))
    ax.set_xticks(range(L))
    ax.set_xlabel("layer")
    ax.set_ylabel("λ: attention share of the prefix")
    ax.set_title(f"Before training, m = {d['m']} (Eq. 4.2)")
    ax.legend(frameon=False)
    return fig


def _seeds_text(s: dict) -> str:
    """How many seeds each point of the left panel averages: the runs found at the chosen rate
    (the eval seeds), read from the data, not from the config's selection seeds."""
    ns = sorted({x["n"] for arm in V.ARMS for x in s["by_length"][arm].values()} | {s["lora"]["n"]})
    return f"{ns[0]} seeds" if len(ns) == 1 else f"{ns[0]}–{ns[-1]} seeds"


def _runs_label(rate: float, runs: list) -> str:
    """The legend entry of the curves drawn at ``rate``: the seeds of the runs actually drawn."""
    return f"lr {rate:g}: seeds {sorted(r['seed'] for r in runs)}"


@register("04_prefix_sweep")
def sweep_figure(sweep: dict | None = None) -> Figure:
    sweep = V.load_results() if sweep is None else sweep
    s = V.summary(sweep)
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    for arm in V.ARMS:
        ms = sorted(s["by_length"][arm])
        mean = [100 * s["by_length"][arm][m]["test"][0] for m in ms]
        sd = [100 * s["by_length"][arm][m]["test"][1] for m in ms]
        left.errorbar(ms, mean, sd, marker="o", capsize=3, color=COLOURS[arm],
                      label=f"{LABELS[arm]} (lr {s['lr'][arm]:g})")
        rates = sorted(s["lr_grid"][arm])
        right.errorbar(rates, [100 * s["lr_grid"][arm][r]["val"][0] for r in rates],
                       [100 * s["lr_grid"][arm][r]["val"][1] for r in rates], marker="o", capsize=3,
                       color=COLOURS[arm], label=LABELS[arm])
    lo, sd = 100 * s["lora"]["test"][0], 100 * s["lora"]["test"][1]
    left.axhspan(lo - sd, lo + sd, color=COLOURS["lora"], alpha=0.15)
    left.axhline(lo, color=COLOURS["lora"], label=f"{LABELS['lora']} ({s['lora']['trainable']:,} params)")
    left.set_xscale("log")
    left.set_xticks(s["lengths"], [str(m) for m in s["lengths"]])
    left.set_xlabel("prefix length m")
    left.set_ylabel(f"test accuracy (%), mean ± sd over {_seeds_text(s)}")
    left.set_title("Accuracy vs prefix length")
    left.legend(frameon=False, fontsize=8)
    right.set_xscale("log")
    right.set_xlabel("learning rate")
    right.set_ylabel(f"validation accuracy (%), mean ± sd\nover the {len(sweep['config']['seeds'])} selection seeds")
    right.set_title(f"Learning-rate sensitivity, m = {s['m_grid']}")
    right.legend(frameon=False, fontsize=8)
    return fig


@register("04_loss_curves")
def loss_figure(sweep: dict | None = None) -> Figure:
    sweep = V.load_results() if sweep is None else sweep
    cfg, lr = sweep["config"], sweep["chosen_lr"]
    fig = Figure(figsize=(11, 3.6), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, arm in zip(axes, V.ARMS):
        top = max(cfg["lrs"][arm])
        for rate, style in ((lr[arm], "-"), (top, ":")) if top != lr[arm] else ((lr[arm], "-"),):
            runs = V._runs(sweep, arm, cfg["m_grid"], rate)
            for i, r in enumerate(runs):
                ax.plot(r["losses"], color=COLOURS[arm], alpha=0.15, lw=0.8)
                ax.plot(smooth(r["losses"]), style, color=COLOURS[arm], lw=1.5,
                        label=_runs_label(rate, runs) if i == 0 else None)
        ax.set_title(f"{LABELS[arm]}, m = {cfg['m_grid']}: one curve per run")
        ax.set_xlabel("step")
        ax.legend(frameon=False)
    axes[0].set_ylabel(f"training loss (thin: per step; thick: {SMOOTH}-step mean)")
    return fig
