"""Chapter 00 figures: bytes per parameter ("00_memory") and VADER rater agreement ("00_vader").

Figures are built on `matplotlib.figure.Figure` (not pyplot), so a notebook shows each
one once, where the cell returns it.
"""

from matplotlib.figure import Figure

from pedagogy_lib import counting, data
from pedagogy_lib.lora import lora_params
from pedagogy_lib.book.figures import register

_COLOURS = {"master": "C2", "gradient": "C1", "Adam m": "C3", "Adam v": "C4", "absmax": "C7",
            "code": "C0", "weight": "C0"}  # first key found in a part's name wins


def _colour(component: str) -> str:
    return next((c for key, c in _COLOURS.items() if key in component), "C5")


def memory_data() -> dict:
    """Bytes per parameter by part (eqs. 0.2-0.4), training-state GB of four set-ups (eq. 0.5)."""
    models = {k: counting.shapes()[k] for k in ("BERT-base", "LLaMA-7B", "LLaMA-65B", "GPT-3 175B")}
    n = {k: counting.total_params(s) for k, s in models.items()}
    setups = {
        "full FT, mixed-precision Adam (16 B)":
            {k: counting.finetune_memory_gb(n[k], "mixed-adam") for k in models},
        "full FT, 16-bit + fp32 Adam (12 B)":
            {k: counting.finetune_memory_gb(n[k], "fp16-adam") for k in models},
        "LoRA r=8 (q,v), fp16 frozen":
            {k: counting.peft_memory_gb(n[k], lora_params(s, 8)) for k, s in models.items()},
        "QLoRA: NF4+DQ frozen, LoRA r=64 all linear":
            {k: counting.peft_memory_gb(n[k], lora_params(s, 64, "all-linear"), frozen="nf4-dq")
             for k, s in models.items()},
    }
    return {"schemes": {s: counting.scheme_components(s) for s in counting.SCHEMES},
            "models": list(models), "setups": setups}


@register("00_memory")
def memory(d: dict | None = None) -> Figure:
    d = memory_data() if d is None else d
    fig = Figure(figsize=(12, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[1, 1.3])
    names = list(d["schemes"])
    seen = set()
    for y, name in enumerate(names):  # eqs. 0.2-0.4: one stacked bar per scheme
        x = 0.0
        for part, b in d["schemes"][name].items():
            colour = _colour(part)
            label = next((k for k in _COLOURS if k in part), part).replace("code", "weight")
            left.barh(y, b, left=x, color=colour, edgecolor="white",
                      label=None if colour in seen else label)
            seen.add(colour)
            x += b
        left.text(x + 0.2, y, f"{x:.3g} B", va="center", fontsize=8)
    left.set_yticks(range(len(names)), names)
    left.invert_yaxis()
    left.set_xlabel("bytes per parameter")
    left.set_xlim(0, 19)
    left.set_title("What one parameter costs")
    left.legend(fontsize=7, loc="lower right")

    models, setups = d["models"], d["setups"]
    width = 0.8 / len(setups)
    for i, (label, gb) in enumerate(setups.items()):
        xs = [j + (i - (len(setups) - 1) / 2) * width for j in range(len(models))]
        right.bar(xs, [gb[m] for m in models], width, label=label)
    right.axhline(48, color="k", lw=0.8, ls="--")
    right.text(-0.45, 52, "48 GB: one GPU", ha="left", fontsize=8)
    right.set_yscale("log")
    right.set_xticks(range(len(models)), models)
    right.set_ylabel("GB of weights + gradients + optimiser state")
    right.set_title("Training state, activations excluded")
    right.legend(fontsize=7, loc="upper left")
    return fig


def vader_data() -> dict:
    """Mean rater agreement with the label's sign at each |mean| level of the lexicon."""
    entries = data.load_vader()
    levels, counts, agree = data.agreement_by_level(entries)
    return {"levels": levels, "counts": counts, "agreement": agree,
            "threshold": data.DEFAULT_THRESHOLD}


@register("00_vader")
def vader(d: dict | None = None) -> Figure:
    d = vader_data() if d is None else d
    fig = Figure(figsize=(8, 3.8), layout="constrained")
    ax = fig.subplots()
    counts = ax.twinx()
    counts.bar(d["levels"], d["counts"], width=0.08, color="0.85", zorder=0)
    counts.set_ylabel("tokens at this |mean|", color="0.4")
    ax.set_zorder(counts.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.plot(d["levels"], d["agreement"], "o-", ms=3, color="C0",
            label="raters whose rating has the label's sign (eq. 0.9)")
    ax.axhline(0.5, color="k", lw=0.8, ls=":")
    ax.axvline(d["threshold"] - 0.05, color="C3", lw=1)
    ax.text(d["threshold"], 0.05, f"  kept: |mean| ≥ {d['threshold']:g}", color="C3", fontsize=9)
    ax.set_xlabel("|mean rating| of a token (10 raters, scale −4…4)")
    ax.set_ylabel("mean fraction of raters agreeing")
    ax.set_ylim(0, 1.02)
    ax.set_title("VADER: near-neutral labels are mostly noise")
    ax.legend(loc="lower right", fontsize=8)
    return fig
