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
LABEL_PT = 8  # label font size; a character is about 0.6 of it wide
# where a label may go, as (dx, dy) in points from the bubble's edge to the label's nearest corner,
# tried in this order: right, left, above, below, then further out on the diagonals
LABEL_TRIES = ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, 1), (1, -1), (-1, -1),
               (2, 0), (-2, 0), (0, 2), (0, -2), (2, 2), (-2, 2), (2, -2), (-2, -2))
LABEL_GAP = 3.0  # points between a bubble's edge and its label


def _box(name: str) -> tuple[float, float]:
    """(width, height) of a label in points."""
    return 0.6 * LABEL_PT * len(name), 1.2 * LABEL_PT


def _overlap(a, b) -> float:
    """Area shared by two boxes (x0, y0, x1, y1)."""
    w, h = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    return max(w, 0.0) * max(h, 0.0)


def label_boxes(points: dict, radius: dict, axes_pt: tuple[float, float], xlim, ylim, err: dict | None = None) -> dict:
    """A label box per bubble that overprints no other label, no bubble and no error bar, inside the
    axes where possible: greedy, deterministic (bubbles in order of x, then y; the first free place
    in ``LABEL_TRIES`` wins, else the least-covered one). ``points``: {name: (x, y)} on a log x axis;
    ``radius``: {name: marker radius in points}; ``err``: {name: half-length of its error bar in y
    units}; ``axes_pt``: the axes' (width, height) in points. Returns {name: (x0, y0, x1, y1)} in
    points from the axes' lower left corner."""
    lx = np.log10(xlim)
    to_pt = lambda x, y: ((np.log10(x) - lx[0]) / (lx[1] - lx[0]) * axes_pt[0],  # noqa: E731
                          (y - ylim[0]) / (ylim[1] - ylim[0]) * axes_pt[1])
    centre = {n: to_pt(*xy) for n, xy in points.items()}
    discs = [(cx - radius[n], cy - radius[n], cx + radius[n], cy + radius[n]) for n, (cx, cy) in centre.items()]
    dy = axes_pt[1] / (ylim[1] - ylim[0])  # points per y unit
    discs += [(cx - 2, cy - dy * e, cx + 2, cy + dy * e) for n, (cx, cy) in centre.items()  # error bars, 4 pt wide
              for e in [(err or {}).get(n, 0.0)] if e > 0]
    placed = {}
    for name in sorted(points, key=lambda n: points[n]):
        (cx, cy), r, (w, h) = centre[name], radius[name], _box(name)
        best, best_cost = None, np.inf
        for kx, ky in LABEL_TRIES:
            gx, gy = abs(kx) * (r + LABEL_GAP), abs(ky) * (r + LABEL_GAP)
            x0 = cx + gx if kx > 0 else cx - gx - w if kx < 0 else cx - w / 2
            y0 = cy + gy if ky > 0 else cy - gy - h if ky < 0 else cy - h / 2
            box = (x0, y0, x0 + w, y0 + h)
            outside = w * h - _overlap(box, (0, 0, *axes_pt))
            cost = (sum(_overlap(box, o) for o in placed.values()) + sum(_overlap(box, d) for d in discs)
                    + 10 * outside)
            if cost < best_cost:
                best, best_cost = box, cost
            if cost == 0:
                break
        placed[name] = best
    return placed


@register("08_bubbles")
def bubbles(res: dict | None = None) -> Figure:
    res = compare.load() if res is None else res
    ours = our_points(res)
    fig = Figure(figsize=(12, 4.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    top = max(v[3] for v in ours.values())
    placed = {n: (x, y) for n, (x, y, s, mb) in ours.items() if x > 0}
    area = {n: BUBBLE_PT2_PER_MAX * mb / top for n, (x, y, s, mb) in ours.items()}  # points², exactly ∝ memory
    colours = matplotlib.colormaps["tab20"]
    for i, (name, (x, y, s, mb)) in enumerate(sorted(ours.items())):
        if x <= 0:  # the frozen probe: a line at its accuracy, with its sd as a band
            left.axhline(y, color="0.4", ls="--", lw=0.9)
            left.axhspan(y - s, y + s, color="0.85", alpha=0.5, lw=0)
            left.annotate(f"{name} (0 encoder parameters)", (0.99, y), xycoords=("axes fraction", "data"),
                          textcoords="offset points", xytext=(0, -3), fontsize=LABEL_PT, color="0.3",
                          ha="right", va="top").set_in_layout(False)
            continue
        # area exactly proportional to memory: s is an area in points²
        left.scatter([x], [y], s=area[name], alpha=0.6, color=colours(i % 20), edgecolor="k", lw=0.5)
        left.errorbar([x], [y], yerr=[s], color="k", lw=0.8, capsize=2)
    xs = [x for x, _ in placed.values()]
    lo_y, hi_y = min(y - s for x, y, s, mb in ours.values()), max(y + s for x, y, s, mb in ours.values())
    xlim, ylim = (min(xs) / 3, max(xs) * 6), (lo_y - 0.3, hi_y + 0.3)  # x margins: room for labels at both ends
    left.set(xscale="log", xlim=xlim, ylim=ylim, xlabel="trainable parameters, % of MiniLM (log; head excluded)",
             ylabel="VADER polarity test accuracy, % (mean; bars: ± sd over seeds)")
    b = res["budget"]
    left.set_title(f"Ours: MiniLM-L6, {b['n_train']} training words, {len(b['seeds'])} seed(s)\n"
                   f"bubble area ∝ training-state memory (largest: {top:.0f} MB)", fontsize=9)
    for name, (x, y) in paper_points().items():
        right.scatter([x], [y], s=120, alpha=0.6, edgecolor="k", lw=0.5)
        right.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    right.set(xscale="log", xlabel="trainable parameters, % of RoBERTa-base (log)", ylabel="GLUE average (8 tasks)")
    right.set_title("LoRA paper, Table 2 (RoBERTa-base)", fontsize=9)
    right.margins(x=0.12)
    fig.draw_without_rendering()  # settles the layout, so the axes' size in points is final
    size = (left.bbox.width * 72 / fig.dpi, left.bbox.height * 72 / fig.dpi)
    radius = {n: np.sqrt(area[n] / np.pi) for n in placed}  # points
    boxes = label_boxes(placed, radius, size, xlim, ylim, err={n: ours[n][2] for n in placed})
    for name, (x0, y0, x1, y1) in boxes.items():  # labels stay out of the layout: it is already settled
        r = radius[name]
        cx, cy = left.transAxes.inverted().transform(left.transData.transform(placed[name])) * size
        far = np.hypot(max(x0 - cx, 0, cx - x1), max(y0 - cy, 0, cy - y1)) > r + 2 * LABEL_GAP
        left.annotate(name, placed[name], xytext=(x0, y0), textcoords="axes points", fontsize=LABEL_PT,
                      ha="left", va="bottom",  # a leader line where the label had to move away from its bubble
                      arrowprops=dict(arrowstyle="-", color="0.45", lw=0.6, shrinkA=1, shrinkB=r) if far else None
                      ).set_in_layout(False)
    return fig


@register("08_differences")
def differences(res: dict | None = None) -> Figure:
    """Per method, the paired test-accuracy difference to each reference (Eq. 8.4) with its
    95 % t-interval (Eq. 8.6): filled dots are orders, hollow dots are ties (Eq. 8.7), grey
    names mark learning rates that were not bracketed (no verdict rests on them)."""
    res = compare.load() if res is None else res
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
