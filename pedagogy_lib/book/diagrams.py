"""Dataflow diagrams, drawn in code like every other figure: where each PEFT method sits in
an encoder block (chapters 02-06), and what one QLoRA layer computes (chapter 07)."""
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from pedagogy_lib.book.figures import register

FROZEN, TRAINED, DATA = "#d9d9d9", "#f4a259", "#ffffff"


def _box(ax, x, y, w, h, text, colour=FROZEN, size=9):
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02",
                                facecolor=colour, edgecolor="black", linewidth=0.8))
    ax.text(x, y, text, ha="center", va="center", fontsize=size)


def _arrow(ax, a, b, style="-|>", dashed=False):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle=style, mutation_scale=10, linewidth=0.9,
                                 linestyle="--" if dashed else "-", color="black"))


def _canvas(w, h):
    fig = Figure(figsize=(w, h))
    ax = fig.subplots()
    ax.set_xlim(0, 10), ax.set_ylim(0, 10), ax.axis("off")
    return fig, ax


@register("05_where_methods_sit")
def where_methods_sit(data=None):
    """One post-LN block (Eqs. 0.20-0.22) with each method's trainable piece in orange."""
    fig, ax = _canvas(8.5, 6.2)
    _box(ax, 3.2, 0.6, 3.2, 0.6, "tokens → embeddings (Eq. 0.20)", DATA)
    _box(ax, 7.6, 0.6, 3.0, 0.6, "prompt tuning: m input vectors", TRAINED, 8)
    _arrow(ax, (6.1, 0.6), (4.85, 0.6))
    for x, w in ((1.6, "W_q"), (3.2, "W_k"), (4.8, "W_v")):
        _box(ax, x, 2.2, 1.1, 0.6, w, FROZEN)
        _arrow(ax, (3.2, 0.95), (x, 1.85))
    _box(ax, 0.5, 2.2, 0.8, 0.5, "BA", TRAINED, 8), _box(ax, 5.9, 2.2, 0.8, 0.5, "BA", TRAINED, 8)
    _box(ax, 3.2, 3.5, 4.6, 0.7, "softmax(Q[P_k; K]ᵀ/√d_h) [P_v; V]  (Eq. 4.1)", FROZEN, 8)
    _box(ax, 7.6, 3.5, 3.0, 0.7, "prefix / P-Tuning v2:\nP_k, P_v in every layer", TRAINED, 8)
    _arrow(ax, (6.1, 3.5), (5.55, 3.5))
    for x in (1.6, 3.2, 4.8):
        _arrow(ax, (x, 2.55), (x, 3.12))
    _box(ax, 3.2, 4.8, 3.0, 0.6, "W_o, + residual, LN (Eq. 0.21)", FROZEN, 8)
    _box(ax, 7.6, 4.8, 2.6, 0.6, "Houlsby adapter", TRAINED, 8)
    _arrow(ax, (3.2, 3.87), (3.2, 4.48)), _arrow(ax, (6.25, 4.8), (4.75, 4.8))
    _box(ax, 3.2, 6.3, 3.6, 0.6, "W_1, GELU, W_2 (FFN)", FROZEN, 8)
    _box(ax, 7.6, 6.3, 2.6, 0.6, "parallel adapter (beside FFN)", TRAINED, 8)
    _arrow(ax, (3.2, 5.12), (3.2, 5.98)), _arrow(ax, (6.25, 6.3), (5.05, 6.3))
    _box(ax, 3.2, 7.8, 3.0, 0.6, "+ residual, LN (Eq. 0.22)", FROZEN, 8)
    _box(ax, 7.6, 7.8, 2.6, 0.6, "Houlsby + Pfeiffer adapter", TRAINED, 8)
    _arrow(ax, (3.2, 6.62), (3.2, 7.48)), _arrow(ax, (6.25, 7.8), (4.75, 7.8))
    _box(ax, 3.2, 9.2, 3.4, 0.6, "next block; BitFit: every bias", DATA, 8)
    _arrow(ax, (3.2, 8.12), (3.2, 8.88))
    ax.text(0.1, 9.8, "grey: frozen    orange: trained (LoRA's BA beside W_q and W_v)", fontsize=8, va="top")
    return fig


@register("07_qlora_layer")
def qlora_layer(data=None):
    """One QLoRA layer (Eqs. 7.10-7.11): 4-bit store → dequantise → matmul, plus the LoRA branch."""
    fig, ax = _canvas(8.5, 3.8)
    _box(ax, 1.3, 8.4, 2.2, 1.3, "stored: NF4 codes\n(4 bits each)", FROZEN, 8)
    _box(ax, 1.3, 6.3, 2.2, 1.5, "absmax per 64,\nitself 8-bit\n(double quant.)", FROZEN, 8)
    _box(ax, 4.3, 7.4, 2.2, 1.5, "dequantise\nŴ = c[q]·a_b\n(Eq. 7.6)", DATA, 8)
    _arrow(ax, (2.4, 8.2), (3.2, 7.8)), _arrow(ax, (2.4, 6.5), (3.2, 7.0))
    _box(ax, 7.0, 5.0, 1.8, 1.2, "x Ŵᵀ + b", DATA, 8)
    _arrow(ax, (5.4, 7.0), (6.4, 5.6))
    _box(ax, 1.3, 3.2, 1.0, 1.0, "x", DATA, 10)
    _arrow(ax, (1.8, 3.5), (6.1, 4.9))
    _box(ax, 4.3, 1.3, 1.4, 1.1, "x Aᵀ", TRAINED, 8), _box(ax, 7.0, 1.3, 1.8, 1.1, "s · (·) Bᵀ", TRAINED, 8)
    _arrow(ax, (1.8, 2.9), (3.6, 1.5)), _arrow(ax, (5.0, 1.3), (6.1, 1.3))
    _box(ax, 9.3, 3.2, 1.1, 1.0, "+ → y", DATA, 8)
    _arrow(ax, (7.9, 4.7), (8.75, 3.5)), _arrow(ax, (7.9, 1.6), (8.75, 2.9))
    ax.text(5.0, 9.7, "backward: dx through Ŵ (decoded again) and the LoRA branch; A and B get gradients, "
            "the codes none", fontsize=7.5, ha="center")
    return fig
