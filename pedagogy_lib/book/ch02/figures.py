"""Chapter 02 figures: the α/r vs α/√r toy, and the learning-rate, placement and rank sweeps.

The sweep figures read ``chapters/results/ch02_sweeps.json`` (written by
``python -m pedagogy_lib.book.ch02.experiment``) unless the chapter passes the data it already loaded.
"""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from pedagogy_lib.book.ch02 import experiment as E
from pedagogy_lib.book.ch02 import studies as ST
from pedagogy_lib.results import mean_sd
from pedagogy_lib.book.figures import paired_dot, register

# The LoRA paper's GPT-3 175B studies (Hu et al. 2021, Tables 5 and 6).
PAPER_TABLE5 = {  # weights adapted: (r, WikiSQL, MNLI), all at 18M trainable parameters
    "W_q": (8, 70.4, 91.0), "W_k": (8, 70.0, 90.8), "W_v": (8, 73.0, 91.0), "W_o": (8, 73.2, 91.3),
    "W_q,W_k": (4, 71.4, 91.3), "W_q,W_v": (4, 73.7, 91.3), "W_q,W_k,W_v,W_o": (2, 73.7, 91.7)}
PAPER_TABLE6 = {"r": [1, 2, 4, 8, 64], "WikiSQL": [73.4, 73.3, 73.7, 73.8, 73.5],
                "MNLI": [91.3, 91.4, 91.3, 91.6, 91.4]}

PLACEMENT_ORDER = ("q", "v", "q,v", "q,k,v,o", "FFN only", "all linear")


# ----------------------------------------------------------------------------- the toy
LABELS = {"alpha_over_r": "s = α/r (LoRA)", "rslora": "s = α/√r (rsLoRA)"}


@register("02_scaling")
def scaling(data=None):
    data = ST.scaling_study() if data is None else data
    fig = Figure(figsize=(9, 3.4), layout="constrained")
    a, b = fig.subplots(1, 2)
    for name, rows in data.items():
        r = [x["r"] for x in rows]
        a.plot(r, [x["step1_delta_norm"] for x in rows], "o-", label=LABELS[name])
        b.plot(r, [x["loss_end"] / x["loss0"] for x in rows], "o-", label=LABELS[name])
    for ax in (a, b):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("rank r (α = 8 fixed, same learning rate)")
        ax.legend()
    a.set_yscale("log")
    a.set_ylabel("‖ΔW‖_F after one Adam step")
    b.set_ylabel("loss after 200 steps / initial loss")
    b.set_yscale("log")
    a.set_title("step size vs rank")
    b.set_title("how far 200 steps get")
    return fig


# ----------------------------------------------------------------------------- the sweeps
@register("02_lr")
def lr_sensitivity(doc=None):
    doc = E.load_sweeps() if doc is None else doc
    sweep = doc["summary"]["lr_sweep"]
    fig = Figure(figsize=(6, 3.6), layout="constrained")
    ax = fig.subplots()
    names = {"probe": "frozen probe (x = the head's lr)", "lora": "LoRA q,v r=8 α=8", "full": "full fine-tuning"}
    for m, rows in sweep.items():
        lrs = sorted(rows, key=float)
        stats = [mean_sd(rows[k]["val_acc"]) for k in lrs]
        ax.errorbar([float(k) for k in lrs], [s[0] for s in stats], [s[1] for s in stats],
                    marker="o", capsize=3, label=names[m])
    ax.axvspan(1e-4, 5e-4, color="0.85", label="article: 1e-4 … 5e-4")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (encoder; head at %g)" % doc["config"]["head_lr"])
    ax.set_ylabel("validation accuracy, mean ± sd over seeds")
    ax.legend(fontsize=8)
    ax.set_title(f"VADER polarity, {doc['config']['n_train']} words, {len(doc['config']['seeds'])} seeds (mean ± sd)")
    return fig


def _label(k: str, st: dict) -> str:
    """'q,k,v,o\nr=4\nlr 3e-3': the setting, its rank and its own chosen rate (stage C's grids);
    an arm whose chosen rate sits at an edge of its grid says so (no verdict rests on it)."""
    rate = f"\nlr {st['lr']:.0e}".replace("e-0", "e-") if "lr" in st else ""
    return f"{k}\nr={st['r']}{rate}" + ("" if st.get("bracketed", True) else "\n(unbracketed)")


def _differences(ax, s, names):
    """Each setting − q,v in points, paired by seed, with its 95 % t-interval (chapter 08,
    Eqs. 8.4–8.7), each setting at its own chosen rate; an open marker is a tie (the interval
    contains 0), a grey square an arm whose rate is unbracketed (no verdict)."""
    qv = s["placement"]["q,v"]
    rows = [(_label(k, s["placement"][k]), s["placement"][k]) for k in names if k != "q,v"]
    rows += [(_label(k, s["same_rank"][k]), s["same_rank"][k]) for k in ("q,k,v,o", "all linear")]
    ds = [E.paired(st, qv) for _, st in rows]
    for i, (d, (_, st)) in enumerate(zip(ds, rows)):
        bracketed = st.get("bracketed", True)
        colour = "0.6" if not bracketed else "C7" if d["tie"] else "C3"
        paired_dot(ax, d, i, colour, vertical=True, hollow=d["tie"] or not bracketed, fmt="o" if bracketed else "s")
    ax.axhline(0, color="k", lw=0.8)
    ax.plot([], [], "o", color="C7", mfc="white", label="tie: the 95 % CI contains 0")
    ax.plot([], [], "o", color="C3", label="resolved: the 95 % CI excludes 0")
    if not all(st.get("bracketed", True) for _, st in rows):
        ax.plot([], [], "s", color="0.6", mfc="white", label="rate at its grid's edge: no verdict")
    ax.set_xticks(range(len(rows)), [label for label, _ in rows], fontsize=8)
    n = len(qv["test_acc"])
    ax.set_ylabel("setting − q,v r=8 (points)")
    ax.set_title(f"paired by seed: mean and 95 % CI (t with {n - 1} dof, {n} seeds)")
    lo, hi = min(d["lo"] for d in ds), max(d["hi"] for d in ds)
    ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.3 * (hi - lo))  # room for the legend above the intervals
    ax.legend(fontsize=8, loc="upper center", ncols=2)


@register("02_placement")
def placement(doc=None):
    doc = E.load_sweeps() if doc is None else doc
    s = doc["summary"]
    fig = Figure(figsize=(11, 6.4), layout="constrained")
    grid = fig.add_gridspec(2, 2, width_ratios=[1.3, 1])
    a = fig.add_subplot(grid[0, 0])
    names = [k for k in PLACEMENT_ORDER if k in s["placement"]]
    stats = [mean_sd(s["placement"][k]["test_acc"]) for k in names]
    labels = [_label(k, s["placement"][k]) for k in names]
    for i, k in enumerate(names):  # a dot plot: seeds as small dots, the mean ± sd as a large dot and bar
        seeds = 100 * np.asarray(s["placement"][k]["test_acc"])
        a.plot(np.full(seeds.size, i - 0.12), seeds, ".", color="C7", ms=5)
    a.errorbar(range(len(names)), [100 * m for m, _ in stats], yerr=[100 * e for _, e in stats], fmt="o", capsize=3,
               color="C0", ecolor="C0", label="mean ± sd over seeds")
    a.plot([names.index("q,v")], [100 * stats[names.index("q,v")][0]], "o", color="C1", ms=8)
    for k in ("q,k,v,o", "all linear"):
        m, e = mean_sd(s["same_rank"][k]["test_acc"])
        a.errorbar([names.index(k) + 0.3], [100 * m], [100 * e], fmt="D", color="k", capsize=3,
                   label="same rank r=8 (more parameters), mean ± sd" if k == "q,k,v,o" else None)
    a.set_xticks(range(len(names)), labels, fontsize=8)
    a.set_ylabel("test accuracy (%); small dots: seeds")
    a.set_title(f"MiniLM, VADER: {s['budget']:,} LoRA parameters each, each at its own chosen rate")
    lo, hi = a.get_ylim()
    a.set_ylim(lo - 0.25 * (hi - lo), hi)  # room for the legend below every seed
    a.legend(fontsize=8, loc="lower right", ncols=2)
    _differences(fig.add_subplot(grid[1, 0]), s, names)
    keys = list(PAPER_TABLE5)
    short = [k.replace("W_", "") + f"\nr={PAPER_TABLE5[k][0]}" for k in keys]
    top = fig.add_subplot(grid[0, 1])
    bottom = fig.add_subplot(grid[1, 1], sharex=top)
    for ax, col, name, color in ((top, 1, "WikiSQL", "C2"), (bottom, 2, "MNLI", "C3")):
        vals = [PAPER_TABLE5[k][col] for k in keys]
        ax.plot(range(len(keys)), vals, "o", color=color)  # one published number each: dots, not bars
        ax.set_ylim(min(vals) - 1, max(vals) + 0.5)
        ax.set_ylabel(name, fontsize=9)
    top.set_title("LoRA paper, Table 5: GPT-3, 18M parameters")
    top.tick_params(labelbottom=False)
    bottom.set_xticks(range(len(keys)), short, fontsize=8)
    return fig


@register("02_rank")
def rank(doc=None):
    doc = E.load_sweeps() if doc is None else doc
    s = doc["summary"]["rank"]
    fig = Figure(figsize=(12, 3.5), layout="constrained")
    a, b, c = fig.subplots(1, 3)
    for j, (name, rows) in enumerate(s.items()):
        rs = sorted(rows, key=int)
        b.plot([int(k) for k in rs], [rows[k]["delta_norm"] for k in rs], "o-", label=LABELS[name])
        for k in rs:  # rank − r=8, paired by seed, 95 % CI; open marker: a tie (the CI contains 0)
            d = E.paired(rows[k], rows["8"])
            x = int(k) * (0.93 if j == 0 else 1.07)  # the two scalings side by side
            paired_dot(a, d, x, f"C{j}", vertical=True)
        a.plot([], [], "s", color=f"C{j}", label=LABELS[name])  # the colour key, apart from tie/resolved
    a.axhline(0, color="k", lw=0.8)
    n = len(s["alpha_over_r"]["8"]["test_acc"])
    a.set_ylabel("test acc. of r − r=8 (points), 95 % CI")
    a.set_title(f"MiniLM, VADER, q,v, α = 8: paired over {n} seeds\n(open: a tie, the CI contains 0)", fontsize=10)
    b.set_ylabel("mean ‖s·BA‖_F after training")
    b.set_ylim(0, None)
    b.set_title("how far the adapters moved")
    c.plot(PAPER_TABLE6["r"], PAPER_TABLE6["WikiSQL"], "o-", label="WikiSQL")
    c.plot(PAPER_TABLE6["r"], PAPER_TABLE6["MNLI"], "o-", label="MNLI")
    c.set_ylabel("accuracy (%)")
    c.set_title("LoRA paper, Table 6: GPT-3, W_q,W_v")
    for ax in (a, b, c):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("rank r")
        ax.legend(fontsize=8)
    return fig
