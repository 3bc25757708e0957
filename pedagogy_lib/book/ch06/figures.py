"""Chapter 06 figures: BitFit's learning curve against LoRA, full fine-tuning and a probe
("06_learning_curve", from ``chapters/results/ch06_learning_curve.json``), and how trained
biases move the FFN pre-activations, the GELU's input ("06_preactivation").
"""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from pedagogy_lib.book.ch06.experiment import load, preactivation_summary
from pedagogy_lib.book.figures import register

COLOURS = {"BitFit": "C0", "BitFit (b_q, b_m2)": "C9", "LoRA r=8 (q,v)": "C3", "full FT": "k", "probe": "C7"}
DIFF_PAIRS = (("BitFit", "full FT"), ("BitFit", "LoRA r=8 (q,v)"), ("BitFit", "probe"),
              ("BitFit (b_q, b_m2)", "BitFit"))


@register("06_learning_curve")
def learning_curve(d: dict | None = None) -> Figure:
    """Left: test accuracy per size (mean over seeds, shaded ± sd). Right: BitFit's paired
    differences to the other methods, and the two-bias variant's to BitFit (where it was run),
    with their 95 % t-intervals; a tie (interval holds 0) is drawn hollow."""
    from pedagogy_lib.book.ch06.claims import differences

    d = load("ch06_learning_curve") if d is None else d
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax, dx = fig.subplots(1, 2, width_ratios=(1.15, 1))
    for name, r in d["results"].items():
        ns = sorted(int(n) for n in r["curve"])
        mean = np.array([r["curve"][str(n)]["mean"] for n in ns]) * 100
        sd = np.array([r["curve"][str(n)]["std"] for n in ns]) * 100
        ax.plot(ns, mean, marker="o", color=COLOURS.get(name, "C5"), label=f"{name} ({r['trainable']:,})",
                ls="--" if name == "probe" else "-")
        ax.fill_between(ns, mean - sd, mean + sd, color=COLOURS.get(name, "C5"), alpha=0.15, lw=0)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("training words (class-balanced subsample)")
    ax.set_ylabel("test accuracy (%), mean; shaded: ± sd over seeds")
    c = d["config"]
    ax.set_title(f"VADER polarity: {len(c['seeds'])} seeds per point, {c['n_test']} test words", fontsize=10)
    ax.legend(fontsize=8, title="method (trainable parameters)", title_fontsize=8)
    for k, ((a, b), per) in enumerate(differences(d, DIFF_PAIRS).items()):
        ns = sorted(per)
        x = np.array(ns) * 2 ** (0.08 * (k - 1.5))  # side by side at each size
        m = np.array([per[n]["mean"] for n in ns])
        err = np.array([[per[n]["mean"] - per[n]["lo"] for n in ns], [per[n]["hi"] - per[n]["mean"] for n in ns]])
        col = COLOURS.get(b if a == "BitFit" else a, "C5")  # the other method's colour
        dx.errorbar(x, m, err, fmt="none", ecolor=col, capsize=3, lw=1, label=f"{a} − {b}")
        tie = np.array([per[n]["tie"] for n in ns])
        dx.plot(x[~tie], m[~tie], "o", color=col)
        dx.plot(x[tie], m[tie], "o", mfc="white", color=col)
    dx.axhline(0, color="k", lw=0.6)
    dx.set_xscale("log", base=2)
    dx.set_xlabel("training words")
    dx.set_ylabel("paired difference (points), 95 % t-interval")
    dx.set_title("Paired by seed: BitFit minus each method, (b_q, b_m2) minus BitFit\n(hollow: tie)", fontsize=10)
    dx.legend(fontsize=8)
    return fig


@register("06_preactivation")
def preactivation(d: dict | None = None) -> Figure:
    d = load("ch06_preactivation") if d is None else preactivation_summary(d)  # stored, or the live run
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    left, mid, right = fig.subplots(1, 3)
    left.stairs(d["density_before"], d["bins"], color="C7", lw=1.5, label="pretrained")
    left.stairs(d["density_after"], d["bins"], color="C0", lw=1.5, label="after BitFit")
    left.axvline(0, color="k", lw=0.6)
    left.set_xlabel(f"GELU input W₁h₁ + b_m2, block {d['layer']}")
    left.set_ylabel("density")
    left.set_title("All units, all tokens", fontsize=10)
    left.legend(fontsize=8)
    mid.hist(d["delta_b"], 60, color="C0")
    mid.set_xlabel("Δb_m2 (per FFN unit)")
    mid.set_ylabel("units")
    mid.set_title("How far each unit's bias moved", fontsize=10)
    dots = right.scatter(d["on_before"], d["on_after"], s=3, c=d["delta_b"], cmap="coolwarm",
                         vmin=-np.abs(d["delta_b"]).max(), vmax=np.abs(d["delta_b"]).max())
    fig.colorbar(dots, ax=right, label="Δb_m2 of the unit")
    right.plot([0, 1], [0, 1], color="k", lw=0.6)
    right.set_xlabel("fraction of tokens with input > 0, before")
    right.set_ylabel("after (colour: Δb_m2)")
    right.set_title("Units switched on or off", fontsize=10)
    return fig
