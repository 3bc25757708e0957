"""Chapter 03 figures: adapter parameter counts ("03_params"), measured forward latency
("03_latency") and VADER accuracy against trainable parameters ("03_accuracy").

Latency and accuracy are read from the JSON files the benchmark and the sweep write
(``chapters/results/ch03_latency.json``, ``ch03_accuracy.json``); the chapter passes what it
already loaded.
"""
from __future__ import annotations


from matplotlib.figure import Figure

from pedagogy_lib import results as R
from pedagogy_lib.book.ch03.experiment import load, params_data
from pedagogy_lib.book.figures import register

RESULTS = R.RESULTS
ORDER = ("houlsby", "pfeiffer", "parallel", "LoRA unmerged", "LoRA merged")  # latency variants, as shown
COLOURS = {"none": "C7", "houlsby": "C0", "pfeiffer": "C1", "parallel": "C2",
           "LoRA unmerged": "C4", "LoRA merged": "C3", "lora": "C3"}






@register("03_params")
def params(d: dict | None = None) -> Figure:
    d = params_data() if d is None else d
    fig = Figure(figsize=(6.4, 4), layout="constrained")
    ax = fig.subplots()
    for p, counts in d["adapters"].items():
        ax.plot(d["ms"], counts, marker="o", color=COLOURS[p], label=f"{p} (Eq. 3.5)",
                ls="--" if p == "parallel" else "-", ms=4 if p == "parallel" else 6)
    for r, n in d["lora"].items():
        ax.axhline(n, color=COLOURS["lora"], lw=0.8, ls=":")
        ax.text(d["ms"][0], n * 1.08, f"LoRA r={r} (q,v)", color=COLOURS["lora"], fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("bottleneck size m")
    ax.set_ylabel(f"trainable parameters ({d['model']})")
    ax.set_title("Adapters: 2md + m + d per adapter; Houlsby has two per block")
    ax.legend(fontsize=8, loc="lower right")
    return fig


@register("03_latency")
def latency(d: dict | None = None) -> Figure:
    d = load("ch03_latency") if d is None else d
    settings = d["settings"]
    names = [n for n in ORDER if n in settings[0]["models"]]
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(settings))]
        r = [s["models"][name] for s in settings]
        ax.bar(xs, [100 * (v["ratio"] - 1) for v in r], width, color=COLOURS[name], label=name)
        ax.vlines(xs, [100 * (v.get("ratio_q1", v["ratio"]) - 1) for v in r],
                  [100 * (v.get("ratio_q3", v["ratio"]) - 1) for v in r], color="k", lw=0.8)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(len(settings)),
                  [f"batch {s['batch']} × {s['seq_len']} tokens\n(base {s['models']['none']['ms']:.1f} ms)"
                   for s in settings], fontsize=8)
    ax.set_ylabel("extra forward time vs no adapter (%)\nmedian of per-round ratios; lines: quartiles")
    ax.set_title(f"Whole-model forward, MiniLM, {d['device']}, {d['threads']} thread(s), "
                 f"{d.get('clock', 'wall')} time", fontsize=10)
    ax.legend(fontsize=8, ncols=3)
    return fig


@register("03_accuracy")
def accuracy(d: dict | None = None) -> Figure:
    d = load("ch03_accuracy") if d is None else d
    fig = Figure(figsize=(6.4, 4), layout="constrained")
    ax = fig.subplots()
    markers = {8: "o", 16: "s", 64: "D"}
    for name, r in sorted(d["results"].items(), key=lambda kv: (kv[1]["kind"] != "lora", kv[1]["trainable"], kv[0])):
        ax.errorbar(r["trainable"], 100 * r["test_mean"], yerr=100 * r["test_std"], capsize=3, ls="none",
                    marker="*" if r["kind"] == "lora" else markers.get(r["size"], "v"), ms=8,
                    color=COLOURS.get(r["kind"], "C5"), label=name)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (head excluded)")
    ax.set_ylabel("test accuracy (%), mean ± sd over seeds")
    c = d["config"]
    ax.set_title(f"VADER polarity, {c['n_train']} training words, {len(c['seeds'])} seeds", fontsize=10)
    return fig
