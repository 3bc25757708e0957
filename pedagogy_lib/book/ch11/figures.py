"""Chapter 11 figures: per-rank memory under ZeRO-0…3 against FSDP2 measured ("11_memory"), QLoRA
over 1–8 GPUs for LLaMA-65B and LLaMA-2-70B ("11_qlora_gpus"), and the step-time model ("11_step_time")."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from pedagogy_lib import scaling as S
from pedagogy_lib.book.figures import register, stacked_bars

PARTS = (("weights", "C0"), ("grads", "C1"), ("optim", "C2"))
GPU_GB = (24, 48, 80)
RANKS = (1, 2, 4, 8, 16, 32, 64)


def _stored():
    from pedagogy_lib.book.ch11 import experiment

    return experiment.load()


@register("11_memory")
def memory(res: dict | None = None) -> Figure:
    """Stacked per-rank bytes of Eq. 11.3 for ZeRO stages 0–3 on 2 ranks, full FT and LoRA, with
    the measured per-rank total (FSDP2 = stage 3; one rank's whole = stage 0) as a black mark."""
    res = _stored()["fsdp"] if res is None else res
    fig = Figure(figsize=(7.5, 3.4), layout="constrained")
    axes = fig.subplots(1, 2, sharey=False)
    for ax, method in zip(axes, ("full", "lora")):
        r = res[method]
        P, T = r["n_params"], r["n_trainable"]
        stacked_bars(ax, S.ZERO_STAGES, [(part if method == "full" else None,
                                          [S.zero_per_rank(P, T, 2, k)[part] / 1e6 for k in S.ZERO_STAGES], colour)
                                         for part, colour in PARTS])
        whole, mine = sum(r["whole"].values()) / 1e6, sum(r["per_rank"].values()) / 1e6
        ax.plot([0, 3], [whole, mine], "kD", ms=6, label="measured (FSDP2 / unsharded)" if method == "full" else None)
        ax.set_xticks(S.ZERO_STAGES, ["DDP\n(0)", "ZeRO-1", "ZeRO-2", "ZeRO-3\n(FSDP)"])
        ax.set_title(f"{'full fine-tuning' if method == 'full' else 'LoRA r=8 (q, v)'}: {T:,} of {P:,} trainable",
                     fontsize=9)
        ax.set_ylabel("MB per rank (2 ranks)")
    fig.legend(loc="outside lower center", ncol=4, fontsize=8)
    return fig


@register("11_qlora_gpus")
def qlora_gpus(counts: dict | None = None) -> Figure:
    """Eq. 11.6: per-GPU GB of QLoRA (r = 64, no activations) for LLaMA-65B and LLaMA-2-70B."""
    fam = S.family() if counts is None else counts
    names = [n for n in fam if "65B" in n or "70B" in n]
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    ax = fig.subplots()
    n = np.array([1, 2, 4, 8])
    width = 0.38
    for i, name in enumerate(names):
        per = [S.qlora_sharded_gb(fam[name], k) for k in n]
        x = np.arange(len(n)) + (i - 0.5) * width
        parts = (("base 4-bit", "C0"), ("base 16-bit", "C4"), ("LoRA", "C1"), ("LoRA grads", "C3"),
                 ("Adam", "C2"), ("gathered layer", "C7"))
        layers = [(part if i == 0 else None, [p[part] for p in per], colour) for part, colour in parts]
        bottom = stacked_bars(ax, x, layers, width=width * 0.95, hatch="//" if i else None, edgecolor="w")
        for xi, b in zip(x, bottom):
            ax.text(xi, b + 0.5, f"{b:.1f}", ha="center", fontsize=7)
    for g in GPU_GB:
        ax.axhline(g, color="k", ls=":", lw=0.8)
        ax.text(3.55, g + 0.6, f"{g} GB GPU", fontsize=7, ha="right")
    ax.set_xticks(range(len(n)), [f"{k} GPU{'s' if k > 1 else ''}" for k in n])
    ax.set_ylabel("GB per GPU (before activations)")
    ax.set_title(f"QLoRA sharded with FSDP: {names[0]} (plain), {names[1]} (hatched)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    return fig


def model_curves(timing: dict) -> dict:
    """Eq. 11.5's speedup for each method from the measured 2-rank compute and α, β."""
    out = {}
    for m, t in timing["methods"].items():
        t1 = 2 * t["t_compute"]   # one rank does both halves of the batch
        payload = S.allreduce_payload(t["n_trainable"], 4)
        out[m] = {"speedup": [S.speedup(k, t1, payload, timing["alpha"], timing["beta"]) for k in RANKS],
                  "measured_2": t1 / t["t_step"]}
    return out


@register("11_step_time")
def step_time(timing: dict | None = None) -> Figure:
    timing = _stored()["timing"] if timing is None else timing
    curves = model_curves(timing)
    fig = Figure(figsize=(6.0, 3.6), layout="constrained")
    ax = fig.subplots()
    ax.plot(RANKS, RANKS, "k:", lw=1, label="linear")
    for i, (m, c) in enumerate(curves.items()):
        ax.plot(RANKS, c["speedup"], "o-", ms=3, color=f"C{i}", label=f"{m}: model (Eq. 11.5)")
        ax.plot([2], [c["measured_2"]], "s", color=f"C{i}", ms=7, mfc="none", label=f"{m}: measured, 2 ranks")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("ranks N (fixed global batch)")
    ax.set_ylabel("speed-up t(1) / t(N)")
    ax.legend(fontsize=7)
    return fig
