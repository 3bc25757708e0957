"""Chapter 09 figures: the pretraining loss of the family against the count-model baselines
("09_pretraining"), and the residual stream of pre-LN against post-LN ("09_prenorm")."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from pedagogy_lib.book.figures import register

COLOURS = {"stdlib-1m": "C0", "stdlib-4m": "C3"}


def smooth(x, k: int = 25):
    """Running mean over k steps (the first k − 1 points average what exists so far)."""
    c = np.cumsum(np.insert(np.asarray(x, float), 0, 0.0))
    n = np.arange(1, len(x) + 1)
    return (c[n] - c[np.maximum(n - k, 0)]) / np.minimum(n, k)


@register("09_pretraining")
def pretraining(logs: dict | None = None, base: dict | None = None) -> Figure:
    from pedagogy_lib.book import ch09

    logs = ch09.logs() if logs is None else logs
    base = ch09.baselines() if base is None else base
    fig = Figure(figsize=(6.8, 4.2), layout="constrained")
    ax = fig.subplots()
    for name, log in logs.items():
        tokens = np.arange(1, len(log["loss"]) + 1) * log["settings"]["batch_size"] * log["settings"]["seq_len"]
        c = COLOURS.get(name, "C5")
        ax.plot(tokens, smooth(log["loss"]), color=c, lw=1.2, label=f"{name} train ({log['params']:,} params)")
        ev = log["eval"]
        ax.plot([e["step"] * tokens[0] for e in ev], [e["val"] for e in ev], "o--", color=c, ms=3,
                label=f"{name} validation")
    for key, ls in (("unigram", ":"), ("bigram", "-.")):
        ax.axhline(base[key], color="k", ls=ls, lw=1, label=f"{key} baseline (validation)")
    ax.set_xscale("log")
    ax.set_ylim(min(min(e["val"] for e in log["eval"]) for log in logs.values()) - 0.3, base["unigram"] + 1.0)
    ax.set_xlabel("training tokens")
    ax.set_ylabel("cross-entropy (nats per token)")
    ax.legend(fontsize=7)
    return fig


@register("09_prenorm")
def prenorm(profile: dict | None = None) -> Figure:
    from pedagogy_lib.book import ch09

    profile = ch09.residual_profile() if profile is None else profile
    fig = Figure(figsize=(7.5, 3.2), layout="constrained")
    a, b = fig.subplots(1, 2)
    for name, p in profile.items():
        blocks = np.arange(1, len(p["rms"]) + 1)
        a.plot(blocks, p["rms"], "o-", ms=3, label=name)
        b.plot(blocks, np.asarray(p["grad_in"]) / p["grad_in"][-1], "o-", ms=3, label=name)
    a.set_xlabel("block")
    a.set_ylabel("RMS of the hidden state")
    b.set_xlabel("block")
    b.set_ylabel("‖∂L/∂input‖, relative to the last block")
    b.set_yscale("log")
    a.legend(fontsize=8)
    return fig
