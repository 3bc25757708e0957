"""Chapter 07 figures and the experiments behind them.

"07_codebooks"     NF4, FP4, Int4 and a Lloyd–Max code on the values a 4-bit code sees
                   (absmax-normalised Gaussian blocks);
"07_error_study"   reconstruction error of each code on every MiniLM matrix, relative to
                   the matrix's own Lloyd–Max optimum, and the code entropy;
"07_accuracy"      QLoRA vs LoRA vs full FT vs probes (``chapters/results/ch07_accuracy.json``);
"07_memory_minilm" one training step's memory, tensor by tensor (full FT, LoRA, QLoRA);
"07_memory_llama"  QLoRA's memory arithmetic for LLaMA 7B–65B beside 16-bit full FT;
"07_paging"        the paged-optimiser simulation for 65B on a 48 GB GPU.
"""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from pedagogy_lib import quant as Q
from pedagogy_lib.book.ch07.experiment import (GB, MEMORY_OUT, error_study, fixed_codes, gaussian_weights, llama_memory,
                                           differences, load, ordered, paging_scenario)
from pedagogy_lib.book import diagrams  # noqa: F401  (registers the dataflow diagrams)
from pedagogy_lib.book.figures import mean_interval, paired_dot, register, stacked_bars


CODE_COLOURS = {"NF4": "C0", "FP4": "C1", "Int4": "C2", "Lloyd–Max (Gaussian)": "C3",
                "Lloyd–Max (own)": "C4", "quantile (own)": "C5"}


# ----------------------------------------------------------------------------- the error study


def _short(path: str) -> str:
    """'encoder.layer.3.attention.self.query' → '3.q'."""
    names = {"attention.self.query": "q", "attention.self.key": "k", "attention.self.value": "v",
             "attention.output.dense": "o", "intermediate.dense": "ffn₁", "output.dense": "ffn₂"}
    parts = path.split(".")
    return f"{parts[2]}.{names.get('.'.join(parts[3:]), parts[-1])}"


@register("07_codebooks")
def codebooks(study: dict | None = None, gauss: np.ndarray | None = None) -> Figure:
    gauss = gaussian_weights() if gauss is None else gauss
    study = {"codes": {k: v.tolist() for k, v in fixed_codes().items()}} if study is None else study
    x = Q.absmax_normalize(gauss)
    fig = Figure(figsize=(8, 4.6), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(1, 1.4))
    names = list(study["codes"])
    for i, name in enumerate(names):
        c = np.asarray(study["codes"][name])
        top.plot(c, np.full(len(c), i), "|", ms=14, mew=2, color=CODE_COLOURS[name])
    top.set_yticks(range(len(names)), names, fontsize=8)
    top.set_ylim(len(names) - 0.5, -0.5)
    top.set_title("16 levels each: where the 4-bit data types put them", fontsize=10)
    bottom.hist(x, bins=200, density=True, color="0.7")
    bottom.set(xlabel="normalised value x = w / absmax of its block of 64 (Eq. 7.3), Gaussian w", ylabel="density")
    return fig


@register("07_error_study")
def error_study_figure(study: dict | None = None) -> Figure:
    study = error_study() if study is None else study
    mats = study["matrices"]
    paths = list(mats)
    names = ["NF4", "FP4", "Int4", "Lloyd–Max (Gaussian)", "quantile (own)"]
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=(3, 1))
    xs = np.arange(len(paths))
    for name in names:
        ratio = [mats[p][name]["mse_x"] / mats[p]["Lloyd–Max (own)"]["mse_x"] for p in paths]
        left.plot(xs, ratio, "o-", ms=3, lw=1, color=CODE_COLOURS[name], label=name)
    left.axhline(1, color="k", lw=0.8, label="Lloyd–Max fitted to the matrix (MSE optimum)")
    left.set_xticks(xs, [_short(p) for p in paths], rotation=90, fontsize=7)
    left.set_ylabel("MSE of x = w/absmax ÷ optimum")
    left.set_title("Reconstruction error on each MiniLM matrix (blocks of 64)", fontsize=10)
    left.legend(fontsize=7, ncol=2)
    ent = {name: [mats[p][name]["entropy"] for p in paths] for name in names + ["Lloyd–Max (own)"]}
    right.boxplot(list(ent.values()), vert=False, tick_labels=[n.replace(" (", "\n(") for n in ent])
    right.axvline(4, color="k", lw=0.8)
    right.set_xlabel("code entropy (bits of 4)")
    right.tick_params(axis="y", labelsize=7)
    right.set_title("Bits the codes carry", fontsize=10)
    return fig


# ----------------------------------------------------------------------------- training

def _arms_panel(ax, d: dict):
    res = ordered(d["results"])
    for i, (name, r) in enumerate(res.items()):
        acc = 100 * np.asarray(r["test_acc"])
        m, h = mean_interval(acc)
        ax.errorbar(m, i, xerr=h, fmt="D", color="C0" if "QLoRA" in name else "C7", capsize=3, ms=6)
        ax.plot(acc, np.full(acc.size, i) + 0.2, "k.", ms=4)  # a dot plot: no bar, so no axis to truncate
    ax.set_yticks(range(len(res)), [f"{n}\n{r['trainable']:,} trained, lr {r['lr']:g}"
                                    + ("" if r["bracketed"] else " UNBRACKETED") for n, r in res.items()], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"test accuracy (%) on {d['config']['n_test']:,} words\n"
                  f"diamond: mean ± 95 % CI of the mean; dots: the {len(d['config']['budget']['seeds'])} seeds",
                  fontsize=8)


UNJUDGED = "no verdict (rate at grid edge)"  # as chapters 02 and 05: a grey open square, and the words


def _pair_dot(ax, p: dict, i: int):
    """One pair at row ``i``, and the word beside it. Eq. 8.2: a pair with an arm whose rate sits at
    its grid's edge (``p["bracketed"]`` false) is judged nothing: grey, open, square."""
    if not p["bracketed"]:
        paired_dot(ax, p, i, "0.6", hollow=True, fmt="s", ms=6)
        return UNJUDGED
    paired_dot(ax, p, i, "0.45" if p["tie"] else "C3", ms=6)
    return "tie" if p["tie"] else ("a > b" if p["mean"] > 0 else "a < b")


def _pairs_panel(ax, d: dict):
    from pedagogy_lib.book.ch07.claims import MATCH_TOL

    diffs = differences(d)
    ax.axvspan(-MATCH_TOL, MATCH_TOL, color="C2", alpha=0.12, label=f"±{MATCH_TOL} point: the claim's 'matches'")
    ax.axvline(0, color="k", lw=0.8)
    for i, p in enumerate(diffs):
        word = _pair_dot(ax, p, i)
        ax.annotate(word, (1, i), xycoords=("axes fraction", "data"), xytext=(-3, -9), textcoords="offset points",
                    ha="right", fontsize=7, color="0.3")
    if not all(p["bracketed"] for p in diffs):  # the key appears only when some pair is unjudged
        ax.plot([], [], "s", color="0.6", mfc="white", label="grey square: a rate at its grid's edge, no verdict")
    ax.set_yticks(range(len(diffs)), [f"{p['a']}\n− {p['b']}" for p in diffs], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("paired difference a − b (points), 95 % t-interval\nhollow grey: interval contains 0 (a tie)",
                  fontsize=8)
    ax.legend(fontsize=7, loc="best")


@register("07_accuracy")
def accuracy(d: dict | None = None) -> Figure:
    """Stored results only: each arm's seeds with the 95 % interval of its mean, and the
    chapter's paired differences (``experiment.PAIRS``), ties drawn hollow, a pair with an
    unbracketed arm as a grey open square that says it has no verdict."""
    d = load("ch07_accuracy") if d is None else d
    fig = Figure(figsize=(11, 4.4), layout="constrained")
    left, right = fig.subplots(1, 2)
    _arms_panel(left, d)
    _pairs_panel(right, d)
    b = d["config"]["budget"]
    fig.suptitle(f"VADER polarity, {b['n_train']:,} training words, {b['epochs']} epochs, "
                 f"rates chosen on validation over {b['select_seeds']} seeds", fontsize=10)
    return fig


STEP_PARTS = ("weights", "grads", "optimizer", "saved", "transient")


@register("07_memory_minilm")
def memory_minilm(mem: dict | None = None) -> Figure:
    mem = load(MEMORY_OUT) if mem is None else mem  # stored by make sweeps --part memory
    fig = Figure(figsize=(7, 3.6), layout="constrained")
    ax = fig.subplots()
    labels = {"full": "full FT (fp32)", "lora": "LoRA (fp32 base)", "qlora": "QLoRA (NF4+DQ base)"}
    layers = [(part, [mem[m][part] / 1e6 for m in mem], f"C{j}") for j, part in enumerate(STEP_PARTS)]
    totals = stacked_bars(ax, np.arange(len(mem)), layers, horizontal=True)
    for i, total in enumerate(totals):
        ax.text(total + 3, i, f"{total:.0f} MB", va="center", fontsize=8)
    ax.set_xlim(0, 1.15 * max(sum(v[p] for p in STEP_PARTS) for v in mem.values()) / 1e6)
    ax.set_yticks(range(len(mem)), [labels.get(m, m) for m in mem])
    ax.invert_yaxis()
    ax.set_xlabel("MB held during one training step (tensor accounting, Eq. 7.12)")
    ax.set_title("MiniLM, batch of 32 VADER words", fontsize=10)
    fig.legend(fontsize=8, ncol=5, loc="outside lower center")
    return fig


# ----------------------------------------------------------------------------- 7B-65B


@register("07_memory_llama")
def memory_llama(table: dict | None = None) -> Figure:
    from pedagogy_lib.counting import MEMORY_PARTS

    table = llama_memory() if table is None else table
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    names = list(table)
    xs = np.arange(len(names))
    gb = {part: np.array([table[n][part] for n in names]) for part in MEMORY_PARTS}
    # a part no model has (all zero) gets no layer and no legend entry; the colours stay the parts'
    stacked_bars(left, xs, [(part, v, f"C{j}") for j, (part, v) in enumerate(gb.items()) if v.any()])
    left.axhline(48, color="k", ls="--", lw=1, label="48 GB GPU")
    left.set_xticks(xs, names, fontsize=8)
    left.set_ylabel("GB")
    left.set_title("QLoRA (NF4+DQ, LoRA r=64 on all linears)", fontsize=10)
    left.legend(fontsize=7)
    # markers, not bars: on a log axis a bar's length means nothing
    right.plot(xs, [table[n]["full_16bit"] for n in names], "s", color="C7", label="16-bit full FT, 12 B/param")
    right.plot(xs, [table[n]["qlora_total"] for n in names], "o", color="C0", label="QLoRA (left)")
    right.set(yscale="log", ylabel="GB (log scale)")
    right.margins(x=0.15)
    right.set_xticks(xs, names, fontsize=8)
    right.set_title("Without activations", fontsize=10)
    right.legend(fontsize=7)
    return fig


# ----------------------------------------------------------------------------- paging


@register("07_paging")
def paging(d: dict | None = None) -> Figure:
    d = paging_scenario() if d is None else d
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax = fig.subplots()
    t = np.arange(d["activations"].size)
    fixed = (d["weights"] + d["grads"]) / GB
    paged, capacity = fixed + d["resident_state"] / GB, d["capacity"] / GB  # paged: top of Adam's state on the GPU
    ax.fill_between(t, 0, fixed, color="C7", alpha=0.5, step="mid", label="4-bit base + LoRA + grads")
    ax.fill_between(t, fixed, paged, color="C2", alpha=0.6, step="mid", label="Adam state on the GPU (paged)")
    ax.fill_between(t, paged, paged + d["activations"] / GB, color="C1", alpha=0.5, step="mid", label="activations")
    ax.axhline(capacity, color="k", lw=1, label="48 GB")
    oom = np.flatnonzero(d["oom_unpaged"])
    ax.plot(oom, np.full(oom.size, capacity + 1), "rv", ms=4, label=f"out of memory without paging ({oom.size} steps)")
    bad = np.flatnonzero(d["oom_paged"])
    if bad.size:
        ax.plot(bad, np.full(bad.size, capacity + 2.5), "kx", ms=4,
                label=f"out of memory even with paging ({bad.size})")
    ax.set(ylim=(fixed * 0.9, capacity + 4), xlabel="training step", ylabel="GB on the GPU at the activation peak")
    ax.set_title("Paged optimiser, simulated: LLaMA-65B QLoRA on one 48 GB GPU", fontsize=10)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    return fig
