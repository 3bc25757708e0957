"""Chapter 10 figures: every method on the two decoder tasks ("10_methods"), and the QLoRA
studies, data types and rank ("10_studies"). Both read the stored results only."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from pedagogy_lib.book.figures import register


UNJUDGED = "0.7"   # as chapter 05's figures: an arm whose rate sits at its grid's edge is grey, hollow, unjudged


def _unbracketed(res, m: str) -> bool:
    """DESIGN: nothing is judged on an arm whose validation-best rate is at its grid's edge."""
    return res["selection"].get(m, {}).get("bracketed") is False


def _colour(res, m: str, ref: str) -> str:
    """Blue for ``ref``; grey a tie with it, red a resolved difference; UNJUDGED on an unbracketed arm."""
    from pedagogy_lib.book import ch10

    if _unbracketed(res, m) or _unbracketed(res, ref):
        return UNJUDGED   # no order is drawn on an unbracketed arm: neither "tie" nor "different"
    if m == ref:
        return "C0"
    return "0.55" if ch10.paired_gain(res, m, ref)["tie"] else "C3"


def _panel(ax, res, ref: str = "lora-qv"):
    from pedagogy_lib.book import ch10

    task = res["task"]
    scale = 100 if task == "area" else 1
    names = ch10.methods(res)
    for i, m in enumerate(names):
        v = [scale * ch10.value(task, r["test"]) for r in ch10.chosen_runs(res, m)]
        colour = _colour(res, m, ref)
        face = "white" if colour == UNJUDGED else colour
        ax.plot([i] * len(v), v, "o", color=colour, mfc=face, ms=4, alpha=0.7)
        ax.plot([i - 0.3, i + 0.3], [np.mean(v)] * 2, ":" if colour == UNJUDGED else "-", color=colour, lw=2)
    zs = scale * ch10.value(task, res["zero_shot"]["test"])
    ax.axhline(zs, color="k", ls=":", lw=1, label="zero-shot")
    if task == "area":
        ax.axhline(100 / 6, color="k", ls="--", lw=0.8, label="chance (6 classes)")
    star = ["*" if _unbracketed(res, m) else "" for m in names]
    ax.set_xticks(range(len(names)), [ch10.LABELS[m] + s for m, s in zip(names, star)], rotation=35, ha="right",
                  fontsize=7)
    ax.set_ylabel("test accuracy (%)" if task == "area" else "held-out response loss (nats/token)")
    title = "area of the stdlib (classification)" if task == "area" else "first docstring line (generation)"
    if any(star):
        title += "\n* rate at its grid's edge: hollow grey, not judged"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)


@register("10_methods")
def methods(area: dict | None = None, line: dict | None = None) -> Figure:
    """Per-seed test scores (dots) and their mean (bar); grey = a tie with LoRA (q, v), blue =
    LoRA (q, v) itself, red = different from it (paired 95 % interval excludes 0); hollow light grey
    with a dotted bar and * = a rate at its grid's edge, not judged (DESIGN)."""
    from pedagogy_lib.book import ch10

    area = ch10.load("area") if area is None else area
    line = ch10.load("line") if line is None else line
    fig = Figure(figsize=(9.0, 3.8), layout="constrained")
    for ax, res in zip(fig.subplots(1, 2), (area, line)):
        _panel(ax, res)
    return fig


@register("10_studies")
def studies(st: dict | None = None) -> Figure:
    from pedagogy_lib.book import ch10

    st = ch10.load_studies() if st is None else st
    fig = Figure(figsize=(9.0, 3.4), layout="constrained")
    a, b = fig.subplots(1, 2)
    # each 4-bit base against the model's own fp32 weights: perplexity change in %, bars from 0
    kinds = ("nf4", "nf4+dq", "fp4", "fp4+dq", "int4", "int4+dq")
    width = 0.8 / len(st["dtypes"])
    for j, (name, row) in enumerate(st["dtypes"].items()):
        a.bar(np.arange(len(kinds)) + j * width, [100 * np.expm1(row[k] - row["fp32"]) for k in kinds], width,
              label=f"{name} (fp32 ppl {np.exp(row['fp32']):.2f})")
    a.axhline(0, color="k", lw=0.8)
    a.set_xticks(np.arange(len(kinds)) + width * (len(st["dtypes"]) - 1) / 2, kinds, fontsize=7)
    a.set_ylabel("held-out perplexity vs fp32 (%)")
    a.set_title("no training; one evaluation each, no interval", fontsize=9)
    a.legend(fontsize=7)
    curve = ch10.rank_curve(st)
    b.plot(list(curve), list(curve.values()), "o-")
    b.set_xscale("log", base=2)
    b.set_xlabel("LoRA rank r (all linear layers, NF4+DQ base)")
    b.set_ylabel("held-out response loss (nats/token)")
    n = len({r["seed"] for r in st["rank"]})
    b.set_title(f"{n} seed{'s' if n > 1 else ''}, no interval", fontsize=9)
    return fig
