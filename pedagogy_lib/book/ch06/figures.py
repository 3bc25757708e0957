"""Chapter 06 figures: BitFit's learning curve against LoRA, full fine-tuning and a probe
("06_learning_curve", from ``chapters/results/ch06_learning_curve.json``), and how trained
biases move the FFN pre-activations, the GELU's input ("06_preactivation").
"""
from __future__ import annotations

import copy

import numpy as np
from matplotlib.figure import Figure

from pedagogy_lib import results as R
from pedagogy_lib.book.figures import register

RESULTS = R.RESULTS
COLOURS = {"BitFit": "C0", "BitFit (b_q, b_m2)": "C9", "LoRA r=8 (q,v)": "C3", "full FT": "k", "probe": "C7"}


def load(name: str) -> dict:
    return R.load(name, "python -m pedagogy_lib.book.ch06.experiment")


@register("06_learning_curve")
def learning_curve(d: dict | None = None) -> Figure:
    d = load("ch06_learning_curve") if d is None else d
    fig = Figure(figsize=(6.8, 4.2), layout="constrained")
    ax = fig.subplots()
    for name, r in d["results"].items():
        ns = sorted(int(n) for n in r["curve"])
        mean = np.array([r["curve"][str(n)]["mean"] for n in ns]) * 100
        sd = np.array([r["curve"][str(n)]["std"] for n in ns]) * 100
        ax.plot(ns, mean, marker="o", color=COLOURS.get(name, "C5"), label=f"{name} ({r['trainable']:,})",
                ls="--" if name == "probe" else "-")
        ax.fill_between(ns, mean - sd, mean + sd, color=COLOURS.get(name, "C5"), alpha=0.15, lw=0)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("training words (class-balanced subsample)")
    ax.set_ylabel("test accuracy (%), mean ± sd")
    c = d["config"]
    ax.set_title(f"VADER polarity: {len(c['seeds'])} seeds per point, {c['n_test']} test words", fontsize=10)
    ax.legend(fontsize=8, title="method (trainable parameters)", title_fontsize=8)
    return fig


def preactivation_data(bert_before, bert_after, tokenizer, tokens, layer: int) -> dict:
    """GELU inputs of block ``layer`` (Eq. 6.3) at the real tokens of ``tokens``, before and
    after training, plus the change of that block's b_m2 (the GELU's own bias)."""
    import torch

    from pedagogy_lib.torch_ref.bitfit import pre_activations

    ids, mask = (torch.from_numpy(a) for a in tokenizer(list(tokens)))
    dev = next(bert_before.parameters()).device
    ids, mask = ids.to(dev), mask.to(dev)
    z0 = pre_activations(bert_before, ids, mask, layer).cpu().numpy()
    z1 = pre_activations(bert_after, ids, mask, layer).cpu().numpy()
    b0 = bert_before.encoder.layer[layer].intermediate.dense.bias.detach().cpu().numpy()
    b1 = bert_after.encoder.layer[layer].intermediate.dense.bias.detach().cpu().numpy()
    ffn = b0.size
    on0, on1 = (z0.reshape(-1, ffn) > 0).mean(0), (z1.reshape(-1, ffn) > 0).mean(0)
    return {"layer": layer, "before": z0, "after": z1, "delta_b": b1 - b0,
            "on_before": on0, "on_after": on1}


def _default_preactivation_data() -> dict:
    """Chapter 06's live run, repeated: BitFit on 512 training words (seed 0) with the
    learning rate and epochs the sweep uses at that size; the last block on 256 val words."""
    from pedagogy_lib import data
    from pedagogy_lib.models import load_minilm
    from pedagogy_lib.torch_ref import bitfit as TB
    from pedagogy_lib.torch_ref import train as T

    curve, n = load("ch06_learning_curve"), 512
    c = curve["config"]
    epochs = max(c["min_epochs"], -(-c["min_steps"] * c["batch_size"] // n))
    mm = load_minilm("torch", device="cpu")
    task = data.polarity_task()
    tr = data.subsample(task.train, n, 0)
    model = T.Classifier(copy.deepcopy(mm.net), seed=0)
    TB.apply_bitfit(model)
    cfg = T.TrainConfig(lr=curve["results"]["BitFit"]["lr"], epochs=epochs, batch_size=c["batch_size"],
                        head_lr=c["head_lr"], seed=0)
    T.train_classifier(model, T.Batches(mm.tokenizer, tr.tokens, tr.labels, "cpu"), None, cfg)
    val = data.subsample(task.val, 256, 0)
    return preactivation_data(mm.bert, model.encoder.bert, mm.tokenizer, val.tokens,
                              mm.bert.config.num_hidden_layers - 1)


@register("06_preactivation")
def preactivation(d: dict | None = None) -> Figure:
    d = _default_preactivation_data() if d is None else d
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    left, mid, right = fig.subplots(1, 3)
    bins = np.linspace(-6, 4, 81)
    left.hist(d["before"], bins, histtype="step", color="C7", lw=1.5, density=True, label="pretrained")
    left.hist(d["after"], bins, histtype="step", color="C0", lw=1.5, density=True, label="after BitFit")
    left.axvline(0, color="k", lw=0.6)
    left.set_xlabel(f"GELU input W₁h₁ + b_m2, block {d['layer']}")
    left.set_ylabel("density")
    left.set_title("All units, all tokens", fontsize=10)
    left.legend(fontsize=8)
    mid.hist(d["delta_b"], 60, color="C0")
    mid.set_xlabel("Δb_m2 (per FFN unit)")
    mid.set_ylabel("units")
    mid.set_title("How far each unit's bias moved", fontsize=10)
    right.scatter(d["on_before"], d["on_after"], s=3, c=d["delta_b"], cmap="coolwarm",
                  vmin=-np.abs(d["delta_b"]).max(), vmax=np.abs(d["delta_b"]).max())
    right.plot([0, 1], [0, 1], color="k", lw=0.6)
    right.set_xlabel("fraction of tokens with input > 0, before")
    right.set_ylabel("after (colour: Δb_m2)")
    right.set_title("Units switched on or off", fontsize=10)
    return fig
