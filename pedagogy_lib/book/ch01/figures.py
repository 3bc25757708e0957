"""Chapter 01 figures and the measurements behind them.

* "01_spectra": MiniLM's 36 weight matrices against a Gaussian matrix of the same shape
  and mean square (Marchenko–Pastur, eq. 1.8): cumulative energy E_k and σ_i / bulk edge.
* "01_update": after full fine-tuning, the update ΔW = W_ft − W0 of every matrix: energy in
  its top 8 directions against W0's, and the overlap of the two top-8 subspaces.
* "01_intrinsic": accuracy against the subspace dimension d (``chapters/results/
  ch01_intrinsic_dim.json``, written by ``python -m pedagogy_lib.book.ch01.experiment``), with d90.

The ``*_data`` functions are what the chapter calls; each builder recomputes its data when
called without any (``make figures``), which for "01_update" means one full fine-tuning.
"""
from __future__ import annotations

import dataclasses
import json
import math
import pathlib

import numpy as np
from matplotlib.figure import Figure

from pedagogy_lib import results as R
from pedagogy_lib import lowrank as lr
from pedagogy_lib.book.figures import register, save

RESULTS = pathlib.Path(__file__).resolve().parents[2] / "chapters" / "results"
K = 8  # "a handful of directions": LoRA's default rank
TYPES = {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
         "attn-out": "attention.output.dense", "ffn-in": "intermediate.dense", "ffn-out": "output.dense"}
COLOURS = dict(zip(TYPES, ("C0", "C1", "C2", "C3", "C4", "C5")))


def matrix_names(n_layers: int = 6) -> list[tuple[int, str, str]]:
    """(layer, type, checkpoint name) of every weight matrix of the transformer layers."""
    return [(i, t, f"encoder.layer.{i}.{path}.weight") for i in range(n_layers) for t, path in TYPES.items()]


def weight_matrices(weights: dict | None = None) -> dict:
    """{name: float64 matrix} of the 36 matrices, from the shipped checkpoint by default."""
    if weights is None:
        from pedagogy_lib.checkpoint import load_weights

        weights = load_weights()
    n_layers = 1 + max(int(k.split(".")[2]) for k in weights if k.startswith("encoder.layer."))
    return {name: np.asarray(weights[name], np.float64) for _, _, name in matrix_names(n_layers)}


# ------------------------------------------------------------------------- spectra
def spectrum_stats(W: np.ndarray, k: int = K) -> dict:
    """One SVD: the spectrum of W and the same summaries for the Marchenko–Pastur spectrum
    of a Gaussian matrix with W's shape and mean square (eqs. 1.4–1.6, 1.8)."""
    s = lr.singular_values(W)
    var = float(np.mean(W**2))
    mp = lr.marchenko_pastur_singular_values(W.shape, var)
    edge = lr.marchenko_pastur_edges(W.shape, var)[1]
    return {"shape": W.shape, "s": s, "mp": mp, "edge": edge,
            "E_k": lr.energy_top_k(s, k), "E_k_mp": lr.energy_top_k(mp, k),
            "k90": lr.rank_for_energy(s, 0.9), "k90_mp": lr.rank_for_energy(mp, 0.9),
            "erank": lr.effective_rank(s), "erank_mp": lr.effective_rank(mp),
            "spikes": int(np.sum(s > edge))}


def spectra_data(weights: dict | None = None, k: int = K) -> dict:
    """spectrum_stats for every matrix, keyed by checkpoint name, with layer and type."""
    mats = weight_matrices(weights)
    out = {}
    for layer, t, name in matrix_names(len(mats) // len(TYPES)):
        out[name] = {"layer": layer, "type": t, **spectrum_stats(mats[name], k)}
    return {"k": k, "matrices": out}


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
    save(fig, "01_spectra")
    return fig


# ------------------------------------------------------------------------ updates
def update_stats(W0: np.ndarray, W1: np.ndarray, k: int = K) -> dict:
    """How the update ΔW = W1 − W0 sits relative to W0 (LoRA paper §7, in our units).

    E_k of ΔW and of W0; φ = mean cos² of the principal angles between the top-k left (and
    right) singular subspaces of ΔW and W0, against k/m (k/n) for a random subspace;
    ‖U_kᵀ W0 V_k‖_F for the top-k directions of ΔW, of W0 itself, and for random ones
    (k‖W0‖_F/√(mn) in expectation); the largest angle by which W's own top-k subspace turns.
    """
    dW = W1 - W0
    m, n = W0.shape
    U0, s0, V0t = np.linalg.svd(W0, full_matrices=False)
    Ud, sd, Vdt = np.linalg.svd(dW, full_matrices=False)
    U1 = np.linalg.svd(W1, full_matrices=False)[0]
    proj_dW = lr.projection_norm(W0, Ud[:, :k], Vdt[:k].T)
    return {
        "rel_norm": float(np.linalg.norm(dW) / np.linalg.norm(W0)),
        "E_k_dW": lr.energy_top_k(sd, k), "E_k_W0": lr.energy_top_k(s0, k),
        "E_k_mp": lr.energy_top_k(lr.marchenko_pastur_singular_values(W0.shape, 1.0), k),
        "k90_dW": lr.rank_for_energy(sd), "k90_W0": lr.rank_for_energy(s0),
        "erank_dW": lr.effective_rank(sd), "erank_W0": lr.effective_rank(s0),
        "sim_left": lr.subspace_similarity(U0[:, :k], Ud[:, :k]),
        "sim_right": lr.subspace_similarity(V0t[:k].T, Vdt[:k].T),
        "sim_random_left": k / m, "sim_random_right": k / n,
        "min_angle_deg": float(np.degrees(lr.principal_angles(U0[:, :k], Ud[:, :k]).min())),
        "proj_dW": proj_dW, "proj_W0": float(np.sqrt(np.sum(s0[:k] ** 2))),
        "proj_random": float(k * np.linalg.norm(W0) / math.sqrt(m * n)),
        "amplification": float(np.linalg.norm(dW) / proj_dW),
        "turn_deg": float(np.degrees(lr.principal_angles(U0[:, :k], U1[:, :k]).max())),
    }


def finetune(recipe=None, seed: int = 0, device="cpu"):
    """Full fine-tuning with the chapter's recipe: (W0, W_ft, test accuracy, model)."""
    from pedagogy_lib.checkpoint import Tokenizer, load_weights
    from pedagogy_lib.torch_ref.subspace import Recipe, full_finetune, vader_batches

    recipe = recipe or Recipe()
    train, test = vader_batches(recipe, Tokenizer(), device)
    model, acc = full_finetune(recipe, seed, train, test, device)
    W1 = {k: v.detach().cpu().double().numpy() for k, v in model.encoder.bert.state_dict().items()}
    return load_weights(), W1, acc, model


def update_data(W0: dict | None = None, W1: dict | None = None, k: int = K) -> dict:
    """update_stats for every matrix (runs ``finetune()`` when no weights are given)."""
    if W0 is None or W1 is None:
        W0, W1, _, _ = finetune()
    A, B = weight_matrices(W0), weight_matrices(W1)
    out = {}
    for layer, t, name in matrix_names(len(A) // len(TYPES)):
        out[name] = {"layer": layer, "type": t, **update_stats(A[name], B[name], k)}
    return {"k": k, "matrices": out}


def by_type(data: dict, key: str) -> dict:
    """{type: [value per layer]} for one statistic of spectra_data/update_data."""
    out: dict = {t: [] for t in TYPES}
    for m in data["matrices"].values():
        out[m["type"]].append(m[key])
    return out


@register("01_update")
def update(data: dict | None = None) -> Figure:
    data = update_data() if data is None else data
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
    save(fig, "01_update")
    return fig


# ------------------------------------------------------------- intrinsic dimension
def load_intrinsic() -> dict:
    path = RESULTS / "ch01_intrinsic_dim.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run python -m pedagogy_lib.book.ch01.experiment")
    return json.loads(path.read_text())


def intrinsic_summary(res: dict, frac: float = 0.9) -> dict:
    """Curve (test accuracy per d and seed, at the η chosen on validation), the full
    fine-tuning reference, and d90 (eq. 1.11) for the seed-mean and for every seed."""
    cfg = res["config"]
    ds, seeds = cfg["ds"], cfg["seeds"]
    eta = {d: res["best_eta"][str(d)] for d in ds}
    acc = {s: [res["subspace"][f"d={d} eta={eta[d]} seed={s}"]["test_acc"] for d in ds] for s in seeds}
    full = {s: res["full"][f"seed={s}"]["test_acc"] for s in seeds}
    mean = np.mean([acc[s] for s in seeds], axis=0)
    ref = float(np.mean(list(full.values())))
    within = [d for d, a in zip(ds, mean) if a >= ref - 0.01]
    return {
        "ds": ds, "seeds": seeds, "eta": eta, "acc": acc, "mean": [float(a) for a in mean], "full": full,
        "full_mean": ref, "frac": frac, "d90": lr.threshold_dimension(ds, mean, ref, frac),
        "d90_seed": {s: lr.threshold_dimension(ds, acc[s], full[s], frac) for s in seeds},
        "d_within_1pt": min(within) if within else None, "best": float(mean.max()),
        "majority": res["majority_test"], "D": res["D"], "n_test": res["n_test"],
    }


@register("01_intrinsic")
def intrinsic(res: dict | None = None) -> Figure:
    """Accuracy against d, from the sweep's JSON."""
    res = load_intrinsic() if res is None else res
    s = intrinsic_summary(res)
    fig = Figure(figsize=(6.8, 4.2), layout="constrained")
    ax = fig.subplots()
    for i, seed in enumerate(s["seeds"]):
        ax.plot(s["ds"], np.array(s["acc"][seed]) * 100, "o", color="C0", alpha=0.45, ms=4,
                label="one seed" if i == 0 else None)
    ax.plot(s["ds"], np.array(s["mean"]) * 100, "-", color="C0", lw=2, label="mean over seeds")
    ref = 100 * s["full_mean"]
    ax.axhline(ref, color="k", lw=1.2,
               label=f"full fine-tuning (all {res['total_params']:,} encoder parameters)")
    ax.axhline(s["frac"] * ref, color="k", ls="--", lw=0.8, label=f"{s['frac']:.0%} of full fine-tuning")
    ax.axhline(100 * s["majority"], color="C7", ls=":", lw=1, label="majority class")
    if s["d90"] is not None:
        ax.axvline(s["d90"], color="C3", lw=1, ls="-.", label=f"d90 = {s['d90']:,}")
    ax.set_xscale("log")
    ax.set_xlabel("subspace dimension d (trainable numbers)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"MiniLM on VADER, θ = θ0 + P z: {len(s['seeds'])} seeds, {s['n_test']:,} test words",
                 fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    save(fig, "01_intrinsic")
    return fig


# ------------------------------------------------------------------ saved results
def _sig(v: float, digits: int = 6) -> float:
    """v rounded to ``digits`` significant digits (low bits vary with threads and machines)."""
    return round(v, digits - 1 - int(math.floor(math.log10(abs(v))))) if v else 0.0


def save_update(data: dict, accuracy: float, path: pathlib.Path | None = None) -> pathlib.Path:
    """Write the chapter's update statistics (scalars only, 6 significant digits) to
    ``chapters/results/ch01_update.json`` so ``verdicts.ch01.claims()`` can reuse them."""
    from pedagogy_lib.torch_ref.subspace import Recipe

    path = RESULTS / "ch01_update.json" if path is None else path
    mats = {name: {k: _sig(v) if isinstance(v, float) else v for k, v in m.items()}
            for name, m in data["matrices"].items()}
    out = {"k": data["k"], "recipe": dataclasses.asdict(Recipe()), "seed": 0,
           "full_ft_test_acc": round(float(accuracy), 6), "matrices": mats}
    return R.save(out, path)


def load_update() -> dict:
    path = RESULTS / "ch01_update.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: execute chapters/01_low_rank.ipynb")
    return json.loads(path.read_text())
