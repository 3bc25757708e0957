"""Chapter 08 figures: our bubble chart beside the LoRA paper's (RoBERTa-base, GLUE average),
and the paired differences against LoRA (q,v) and full fine-tuning as dots with 95 % intervals."""
import matplotlib
import numpy as np
from matplotlib.figure import Figure

from pedagogy_lib.book.ch08 import experiment as compare
from pedagogy_lib.book.ch08 import table as T
from pedagogy_lib.book.figures import register

# LoRA paper (Hu et al. 2021) Table 2, RoBERTa-base rows: (trainable params in M, GLUE avg).
# Source: Hu et al. 2021 (hu2021lora), Table 2, read in the paper. The model has 125M.
PAPER_ROBERTA_BASE = {
    "FT": (125.0, 86.4),
    "BitFit": (0.1, 85.2),
    "AdptD 0.3M": (0.3, 84.4),
    "AdptD 0.9M": (0.9, 85.4),
    "LoRA": (0.3, 87.2),
}
PAPER_TOTAL_M = 125.0


def paper_points() -> dict[str, tuple[float, float]]:
    """{method: (trainable %, GLUE average)} from the published table."""
    return {k: (100 * n / PAPER_TOTAL_M, acc) for k, (n, acc) in PAPER_ROBERTA_BASE.items()}


def our_points(res: dict) -> dict[str, tuple[float, float, float, float]]:
    """{method: (trainable %, mean test accuracy in %, sd over seeds in %, training-state MB)}.
    The probe trains no encoder parameter, so it has no place on a log axis: it is drawn as
    a line (``bubbles``), not given a made-up x."""
    return {name: (r["pct"], 100 * r["mean"], 100 * r["std"], r["memory"]["total"] / 1e6)
            for name, r in res["methods"].items()}


BUBBLE_PT2_PER_MAX = 900  # marker area (points²) of the method with the most training memory
LABEL_OFFSETS = ((6, 5), (6, -12), (-14, 9), (-14, -16))  # cycled when labels would collide


def _label_offsets(points: dict) -> dict:
    """A text offset per point, so names of points that sit close together do not overprint."""
    out, placed = {}, []
    for name, (x, y) in sorted(points.items(), key=lambda kv: (kv[1][0], kv[1][1])):
        near = sum(1 for (px, py) in placed if abs(np.log10(x / px)) < 0.25 and abs(y - py) < 0.8)
        out[name] = LABEL_OFFSETS[near % len(LABEL_OFFSETS)]
        placed.append((x, y))
    return out


@register("08_bubbles")
def bubbles(res: dict | None = None) -> Figure:
    res = compare.load() if res is None else res
    ours = our_points(res)
    fig = Figure(figsize=(12, 4.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    top = max(v[3] for v in ours.values())
    placed = {n: (x, y) for n, (x, y, s, mb) in ours.items() if x > 0}
    offsets = _label_offsets(placed)
    colours = matplotlib.colormaps["tab20"]
    for i, (name, (x, y, s, mb)) in enumerate(sorted(ours.items())):
        if x <= 0:  # the frozen probe: a line at its accuracy, with its sd as a band
            left.axhline(y, color="0.4", ls="--", lw=0.9)
            left.axhspan(y - s, y + s, color="0.85", alpha=0.5, lw=0)
            left.annotate(f"{name} (0 encoder parameters)", (0.01, y), xycoords=("axes fraction", "data"),
                          textcoords="offset points", xytext=(0, 3), fontsize=8, color="0.3")
            continue
        # area exactly proportional to memory: s is an area in points²
        left.scatter([x], [y], s=BUBBLE_PT2_PER_MAX * mb / top, alpha=0.6, color=colours(i % 20),
                     edgecolor="k", lw=0.5)
        left.errorbar([x], [y], yerr=[s], color="k", lw=0.8, capsize=2)
        left.annotate(name, (x, y), textcoords="offset points", xytext=offsets[name], fontsize=8)
    left.set_xscale("log")
    left.set_xlabel("trainable parameters, % of MiniLM (log; head excluded)")
    left.set_ylabel("VADER polarity test accuracy, % (mean; bars: ± sd over seeds)")
    b = res["budget"]
    left.set_title(f"Ours: MiniLM-L6, {b['n_train']} training words, {len(b['seeds'])} seed(s)\n"
                   f"bubble area ∝ training-state memory (largest: {top:.0f} MB)", fontsize=9)
    for name, (x, y) in paper_points().items():
        right.scatter([x], [y], s=120, alpha=0.6, edgecolor="k", lw=0.5)
        right.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    right.set_xscale("log")
    right.set_xlabel("trainable parameters, % of RoBERTa-base (log)")
    right.set_ylabel("GLUE average (8 tasks)")
    right.set_title("LoRA paper, Table 2 (RoBERTa-base)", fontsize=9)
    return fig


@register("08_differences")
def differences(res: dict | None = None) -> Figure:
    """Per method, the paired test-accuracy difference to each reference (Eq. 8.4) with its
    95 % t-interval (Eq. 8.6): filled dots are orders, hollow dots are ties (Eq. 8.7), grey
    names mark learning rates that were not bracketed (no verdict rests on them)."""
    res = compare.load() if res is None else res
    m = res["methods"]
    names = T.order(res)[::-1]  # most accurate at the top
    fig = Figure(figsize=(11, 0.32 * len(names) + 1.6), layout="constrained")
    for ax, ref in zip(fig.subplots(1, 2, sharey=True), T.REFERENCES):
        for y, name in enumerate(names):
            if name == ref:
                ax.plot([0], [y], marker="D", color="k", ms=5)
                continue
            d = T.versus(res, name, ref)
            mid, lo, hi = 100 * d["mean"], 100 * d["lo"], 100 * d["hi"]
            ax.plot([lo, hi], [y, y], color="0.35", lw=1.4)
            c = "C0" if T.judged(res, name) and T.judged(res, ref) else "0.6"
            ax.plot([mid], [y], marker="o", ms=6, color=c, mfc="white" if d["tie"] else c, mew=1.4)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlabel(f"test accuracy − {ref}'s, points")
        ax.set_title(f"against {ref} (◆)", fontsize=9)
        ax.grid(axis="x", color="0.9")
    ax0 = fig.axes[0]
    ax0.set_yticks(range(len(names)), [n if T.judged(res, n) else f"{n} (unbracketed)" for n in names])
    for label, n in zip(ax0.get_yticklabels(), names):
        label.set_color("k" if T.judged(res, n) else "0.5")
    fig.suptitle(f"Paired differences over {len(res['budget']['seeds'])} seeds, "
                 f"{res['budget'].get('n_test', res['budget']['n_eval'])} test words. Dot: mean difference; "
                 "bar: 95 % t-interval; hollow: a tie (the interval contains 0); grey: not judged", fontsize=9)
    return fig
