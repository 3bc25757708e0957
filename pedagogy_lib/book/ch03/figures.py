"""Chapter 03 figures: adapter parameter counts ("03_params"), measured forward latency
("03_latency") and VADER accuracy against trainable parameters ("03_accuracy").

Latency and accuracy are read from the JSON files the benchmark and the sweep write
(``chapters/results/ch03_latency.json``, ``ch03_accuracy.json``); the chapter passes what it
already loaded.
"""
from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from pedagogy_lib.book.ch03.experiment import LORA, by_seed, edges, load, params_data, versus
from pedagogy_lib.book.figures import mean_interval, paired_dot, register

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
    """Left: test accuracy per arm, mean over seeds with its 95 % t-interval. Right: each
    adapter − LoRA, paired by seed, with its 95 % interval; a hollow marker is a tie (the
    interval contains 0); a grey one sits at its grid's edge (unbracketed: no verdict)."""
    d = load("ch03_accuracy") if d is None else d
    res, skip = d["results"], edges(d)
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=(1, 1.1))
    markers = {8: "o", 16: "s", 64: "D"}
    names = sorted(res, key=lambda n: (res[n]["kind"] != "lora", res[n]["trainable"], n))
    for name in names:
        r, pts = res[name], list(by_seed(d, name).values())
        mean, half = mean_interval(pts)
        left.errorbar(r["trainable"], mean, yerr=half, capsize=3, ls="none",
                      marker="*" if r["kind"] == "lora" else markers.get(r["size"], "v"), ms=8,
                      color=COLOURS.get(r["kind"], "C5"), label=name + (" (unbracketed)" if name in skip else ""))
    left.legend(fontsize=7, loc="upper center", ncols=2)
    left.set_xscale("log")
    left.xaxis.set_minor_formatter(NullFormatter())
    left.set_xlabel("trainable parameters (head excluded)")
    left.set_ylabel("test accuracy (%): mean, bar = 95 % t-interval")
    others = [n for n in names if res[n]["kind"] != "lora"]
    for y, name in enumerate(others):
        v = versus(d, name)
        colour = "0.6" if name in skip else COLOURS.get(res[name]["kind"], "C5")
        paired_dot(right, v, y, colour, fmt=markers.get(res[name]["size"], "v"), ms=7)
    right.axvline(0, color="k", lw=0.8)
    right.set_yticks(range(len(others)), [f"{n} ({res[n]['trainable'] / res[LORA]['trainable']:.1f}×)"
                                          + ("\nunbracketed" if n in skip else "") for n in others], fontsize=8)
    right.invert_yaxis()
    right.set_xlabel(f"adapter − {LORA}, test points, paired by seed\n(bar: 95 % t-interval; hollow: tie)")
    c = d["config"]
    fig.suptitle(f"VADER polarity, {c['n_train']} training words, {len(c['seeds'])} seeds, "
                 f"test on {c['n_test']:,} words", fontsize=10)
    return fig
