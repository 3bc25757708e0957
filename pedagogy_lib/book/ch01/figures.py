"""Chapter 01 figures (the measurements behind them are in ``experiment.py``).

* "01_spectra": MiniLM's 36 weight matrices against a Gaussian matrix of the same shape
  and mean square (Marchenko–Pastur, eq. 1.8): cumulative energy E_k and σ_i / bulk edge.
* "01_update": after full fine-tuning, the update ΔW = W_ft − W0 of every matrix: energy in
  its top 8 directions against W0's, and the overlap of the two top-8 subspaces.
* "01_intrinsic": accuracy against the subspace dimension d (``chapters/results/
  ch01_intrinsic_dim.json``, written by ``python -m pedagogy_lib.book.ch01.experiment``), and the
  paired difference from 90 % of full fine-tuning per d with its 95 % interval (d90 as the
  intervals resolve it; ties hollow, unbracketed grids marked).

A chapter passes the data it has; without data (``make figures``) each builder plots what is
stored: "01_update" the statistics ``make sweeps`` wrote, never a new fine-tuning.
"01_spectra" is computed from the shipped checkpoint (an SVD, no training).
"""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from pedagogy_lib.book.ch01.experiment import (TYPES, by_type, d90_interval_text, intrinsic_summary, load_intrinsic,
                                               load_update, spectra_data)
from pedagogy_lib.book.figures import mean_interval, paired_dot, register

COLOURS = dict(zip(TYPES, ("C0", "C1", "C2", "C3", "C4", "C5")))


# ------------------------------------------------------------------------- spectra


@register("01_spectra")
def spectra(data: dict | None = None, layer: int = 3) -> Figure:
    data = spectra_data() if data is None else data
    mats = data["matrices"]
    fig = Figure(figsize=(10, 4), layout="constrained")
    a, b = fig.subplots(1, 2)
    seen = set()
    for m in mats.values():  # left: cumulative energy, every matrix
        s2 = m["s"] ** 2
        x = np.arange(1, s2.size + 1) / s2.size
        a.plot(x, np.cumsum(s2) / s2.sum(), color=COLOURS[m["type"]], lw=0.8, alpha=0.8,
               label=None if m["type"] in seen else m["type"])
        seen.add(m["type"])
    shapes = {}
    for m in mats.values():
        shapes.setdefault(tuple(sorted(m["shape"])), m["mp"])
    for (lo, hi), mp in shapes.items():
        e = np.cumsum(mp**2) / np.sum(mp**2)
        a.plot(np.arange(1, mp.size + 1) / mp.size, e, "k--" if lo == hi else "k:", lw=1.5,
               label=f"Gaussian {hi}×{lo} (MP)")
    a.set_xlabel("k / min(m, n)")
    a.set_ylabel("energy in the top k, $E_k$")
    a.set_title("all 36 matrices: cumulative energy", fontsize=10)
    a.legend(fontsize=7, ncol=2)
    for m in (m for m in mats.values() if m["layer"] == layer):  # right: one layer against the bulk
        i = np.arange(1, m["s"].size + 1)
        b.semilogy(i, m["s"] / m["edge"], color=COLOURS[m["type"]], lw=1, label=m["type"])
    for (lo, hi), mp in shapes.items():
        b.semilogy(np.arange(1, mp.size + 1), mp / mp[0] * (1 - 1e-9), "k--" if lo == hi else "k:", lw=1.5)
    b.axhline(1.0, color="k", lw=0.6)
    b.set_xscale("log")
    b.set_xlabel("index i")
    b.set_ylabel("σ_i / Marchenko–Pastur edge")
    b.set_title(f"layer {layer}: above 1 = outside the Gaussian bulk", fontsize=10)
    b.legend(fontsize=7)
    return fig


# ------------------------------------------------------------------------ updates


@register("01_update")
def update(data: dict | None = None) -> Figure:
    data = load_update() if data is None else data  # stored by `make sweeps`: no fine-tuning here
    fig = Figure(figsize=(10, 4), layout="constrained")
    a, b = fig.subplots(1, 2)
    x = np.arange(len(TYPES))
    for j, (key, label, colour) in enumerate((("E_k_W0", "W0 (pretrained)", "C7"), ("E_k_dW", "ΔW (update)", "C3"),
                                              ("E_k_mp", "Gaussian (MP)", "k"))):
        vals = by_type(data, key)
        means = [np.mean(vals[t]) for t in TYPES]
        a.bar(x + (j - 1) * 0.27, means, 0.25, color=colour, alpha=0.75, label=label)
        for i, t in enumerate(TYPES):
            a.plot(np.full(len(vals[t]), x[i] + (j - 1) * 0.27), vals[t], ".", color="k", ms=3)
    a.set_xticks(x, list(TYPES), fontsize=8)
    a.set_ylabel(f"energy in the top {data['k']} directions, $E_{{{data['k']}}}$")
    a.set_title("bars: mean over the 6 layers; dots: each layer", fontsize=10)
    a.legend(fontsize=8)
    for t in TYPES:
        ms = [m for m in data["matrices"].values() if m["type"] == t]
        b.plot([m["layer"] for m in ms], [m["sim_left"] for m in ms], "o-", color=COLOURS[t], ms=4, label=t)
    for r in sorted({m["sim_random_left"] for m in data["matrices"].values()}):
        b.axhline(r, color="k", ls="--", lw=0.8)
        b.annotate(f"random, k/m = {r:.3f}", (0, r), fontsize=7, va="bottom")
    b.set_yscale("log")
    b.set_xlabel("layer")
    b.set_ylabel(f"φ(top-{data['k']} of ΔW, top-{data['k']} of W0)  (left vectors)")
    b.set_title("overlap of the update's directions with W0's", fontsize=10)
    b.legend(fontsize=7, ncol=2)
    return fig


# ------------------------------------------------------------- intrinsic dimension


@register("01_intrinsic")
def intrinsic(res: dict | None = None) -> Figure:
    """Left: test accuracy against d (seeds as dots, mean ± 95 % CI), full FT and its 90 % bar.
    Right: the paired difference accuracy − 90 % of full FT per d, 95 % t-interval; hollow:
    a tie with the bar; red ×: an unbracketed rate grid (no verdict rests on it)."""
    res = load_intrinsic() if res is None else res
    s = intrinsic_summary(res)
    ds, seeds = s["ds"], s["seeds"]
    fig = Figure(figsize=(10.5, 4.2), layout="constrained")
    a, b = fig.subplots(1, 2)
    for i, seed in enumerate(seeds):
        a.plot(ds, np.array(s["acc"][seed]) * 100, "o", color="C0", alpha=0.3, ms=3,
               label="one seed" if i == 0 else None)
    m_ci = [mean_interval([s["acc"][x][i] for x in seeds]) for i in range(len(ds))]
    a.errorbar(ds, [100 * m for m, _ in m_ci], [100 * h for _, h in m_ci], fmt="-", color="C0", lw=2, capsize=3,
               label=f"mean ± 95 % CI ({len(seeds)} seeds)")
    ref, half = mean_interval(list(s["full"].values()))
    a.axhspan(100 * (ref - half), 100 * (ref + half), color="k", alpha=0.12, lw=0)
    a.axhline(100 * ref, color="k", lw=1.2, label=f"full fine-tuning (all {res['total_params']:,} encoder "
                                                   "parameters), band: 95 % CI")
    a.axhline(100 * s["bar"], color="k", ls="--", lw=0.8, label=f"{s['frac']:.0%} of full fine-tuning")
    a.axhline(100 * s["majority"], color="C7", ls=":", lw=1, label="majority class")
    a.set_xscale("log")
    a.set_xlabel("subspace dimension d (trainable numbers)")
    a.set_ylabel("test accuracy (%)")
    a.set_title(f"MiniLM on VADER, θ = θ0 + P z: {len(seeds)} seeds, {s['n_test']:,} test words", fontsize=10)
    a.legend(fontsize=7, loc="lower right")
    for d in ds:
        p, ok = s["vs_bar"][d], s["bracketed"][d]
        paired_dot(b, p, d, "C0" if ok else "C3", vertical=True, hollow=ok and p["tie"], scale=100,
                   fmt="o" if ok else "x", ms=6)
    b.axhline(0, color="k", ls="--", lw=0.8)
    if s["d90_hi"] is not None:
        lo = s["d90_lo"] if s["d90_lo"] is not None else ds[0] / 2
        b.axvspan(lo, s["d90_hi"], color="C2", alpha=0.12, lw=0)
    b.set_xscale("log")
    b.set_xlabel("subspace dimension d")
    b.set_ylabel(f"accuracy − {s['frac']:.0%} of full FT (points), paired by seed")
    b.set_title("95 % CI of the paired difference; hollow: a tie with the bar;\n"
                f"× red: unbracketed grid; shaded: {d90_interval_text(s)}", fontsize=8)
    return fig
