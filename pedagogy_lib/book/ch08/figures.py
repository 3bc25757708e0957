"""Chapter 08 figure: our bubble chart beside the LoRA paper's (RoBERTa-base, GLUE average)."""
from matplotlib.figure import Figure

from pedagogy_lib.book.ch08 import experiment as compare
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
    """{method: (trainable %, mean test accuracy in %, std in %, training-state MB)}."""
    out = {}
    for name, r in res["methods"].items():
        pct = max(r["pct"], 1e-4)  # the probe trains 0 encoder parameters: draw it at the axis floor
        out[name] = (pct, 100 * r["mean"], 100 * r["std"], r["memory"]["total"] / 1e6)
    return out


@register("08_bubbles")
def bubbles(res: dict | None = None) -> Figure:
    res = compare.load() if res is None else res
    ours = our_points(res)
    fig = Figure(figsize=(12, 4.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    mem = [v[3] for v in ours.values()]
    for i, (name, (x, y, s, mb)) in enumerate(sorted(ours.items())):
        size = 40 + 400 * (mb - min(mem)) / max(1e-9, max(mem) - min(mem))
        left.scatter([x], [y], s=size, alpha=0.55, color=f"C{i % 10}", edgecolor="k", lw=0.5)
        left.errorbar([x], [y], yerr=[s], color="k", lw=0.8, capsize=2)
        left.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    left.set_xscale("log")
    left.set_xlabel("trainable parameters, % of MiniLM (log; head excluded)")
    left.set_ylabel("VADER polarity test accuracy, % (mean ± std over seeds)")
    b = res["budget"]
    left.set_title(f"Ours: MiniLM-L6, {b['n_train']} training words, {len(b['seeds'])} seed(s)\n"
                   "bubble area ∝ training-state memory", fontsize=9)
    for name, (x, y) in paper_points().items():
        right.scatter([x], [y], s=120, alpha=0.6, edgecolor="k", lw=0.5)
        right.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    right.set_xscale("log")
    right.set_xlabel("trainable parameters, % of RoBERTa-base (log)")
    right.set_ylabel("GLUE average (8 tasks)")
    right.set_title("LoRA paper, Table 2 (RoBERTa-base)", fontsize=9)
    return fig
