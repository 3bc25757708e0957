"""Chapter 01's experiments: the spectra of MiniLM's weights, the rank of a real update, and the
intrinsic-dimension sweep (too slow for the notebook).

    python -m pedagogy_lib.book.ch01.experiment [--part intrinsic|update|all] [--quick]

``update`` fine-tunes MiniLM fully once (``Recipe``) and writes the update statistics to
``chapters/results/ch01_update.json``; ``intrinsic`` writes ``chapters/results/ch01_intrinsic_dim.json``, which the chapter, ``make figures``
and ``pedagogy_lib.book.ch01.claims`` read. Every run is MiniLM + the VADER polarity task
with ``Recipe()`` (a class-balanced subsample of 1,024 training words,
2 epochs, batch 32, AdamW with linear decay), scored on the whole val and test splits:

  A  full fine-tuning (every parameter trainable), SEEDS: the reference accuracy
  B  random-subspace training θ = θ0 + P z with a sparse P over the transformer layers
     and the head (10.6M numbers), d in DS; seed 0 tries every η in Recipe.etas
     (lr = η/√d) and keeps, per d, the η with the best *validation* accuracy
  C  the other SEEDS at that η (a new P, head init and data order per seed)

The test accuracies give the curve and d90 (eq. 1.11). Runs are cached by their settings
in the JSON, so an interrupted sweep resumes. Seeded; low bits of the accuracies can
differ with the thread count or machine. One thread: OMP_NUM_THREADS=1 (``make bench``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import time
from dataclasses import dataclass

import numpy as np

from pedagogy_lib import lowrank as lr
from pedagogy_lib import results as R
from pedagogy_lib.torch_ref.subspace import SubspaceModel, subspace_lr, subspace_names

OUT = R.RESULTS / "ch01_intrinsic_dim.json"
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DS = (10, 30, 100, 300, 1000, 3000, 10000)
SEEDS = (0, 1, 2)


def _versions():
    import numpy
    import torch

    return {"python": platform.python_version(), "numpy": numpy.__version__, "torch": torch.__version__}


# ------------------------------------------------------------ the VADER recipe
@dataclass(frozen=True)
class Recipe:
    """The VADER set-up chapter 01 and ``python -m pedagogy_lib.book.ch01.experiment`` share.

    Training: a class-balanced subsample of ``n_train`` training words (seed 0, fixed),
    ``epochs`` epochs of AdamW with the shared loop. Full fine-tuning uses ``full_lr``
    (head: ``head_lr``); subspace runs use lr = η/√d with η from ``etas``.
    Evaluation: the whole ``eval_split`` split.
    """

    n_train: int = 1024
    epochs: int = 2
    batch_size: int = 32
    full_lr: float = 1e-4
    head_lr: float = 1e-3
    etas: tuple = (0.1, 0.3, 1.0)
    kind: str = "sparse"
    eval_split: str = "test"
    data_seed: int = 0


def vader_batches(recipe: Recipe, tokenizer, device=None, split: str | None = None):
    """(train Batches, evaluation Batches) of the VADER polarity task for ``recipe``."""
    from pedagogy_lib.data import polarity_task, subsample
    from pedagogy_lib.torch_ref.encoder import default_device
    from pedagogy_lib.torch_ref.train import Batches

    device = device or default_device()
    task = polarity_task()
    train = subsample(task.train, recipe.n_train, seed=recipe.data_seed)
    ev = getattr(task, split or recipe.eval_split)
    return (Batches(tokenizer, train.tokens, train.labels, device),
            Batches(tokenizer, ev.tokens, ev.labels, device))


def _classifier(seed: int, device):
    from pedagogy_lib.torch_ref.encoder import load_minilm_torch
    from pedagogy_lib.torch_ref.train import Classifier

    m = load_minilm_torch(device=device)
    return Classifier(m.net, seed=seed), m.tokenizer


def full_finetune(recipe: Recipe, seed: int, train, evaluate, device=None):
    """Every parameter trainable. Returns (model, accuracy on ``evaluate``)."""
    from pedagogy_lib.torch_ref.encoder import default_device
    from pedagogy_lib.torch_ref.train import TrainConfig, accuracy, train_classifier

    model, _ = _classifier(seed, device or default_device())
    for p in model.parameters():
        p.requires_grad_(True)
    cfg = TrainConfig(lr=recipe.full_lr, head_lr=recipe.head_lr, epochs=recipe.epochs,
                      batch_size=recipe.batch_size, seed=seed)
    train_classifier(model, train, None, cfg)
    return model, accuracy(model, evaluate)


def subspace_finetune(recipe: Recipe, d: int, eta: float, seed: int, train, evaluate, device=None):
    """Only z (d numbers) trainable; P seeded by ``seed``. Returns (SubspaceModel, accuracy)."""
    from pedagogy_lib.torch_ref.encoder import default_device
    from pedagogy_lib.torch_ref.train import TrainConfig, accuracy, train_classifier

    model, _ = _classifier(seed, device or default_device())
    sub = SubspaceModel(model, subspace_names(model), d, recipe.kind, seed)
    cfg = TrainConfig(lr=subspace_lr(eta, d), epochs=recipe.epochs, batch_size=recipe.batch_size, seed=seed)
    train_classifier(sub, train, None, cfg)
    return sub, accuracy(sub, evaluate)


# --------------------------------------------------------- spectra and updates
RESULTS = R.RESULTS


K = 8  # "a handful of directions": LoRA's default rank


TYPES = {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
         "attn-out": "attention.output.dense", "ffn-in": "intermediate.dense", "ffn-out": "output.dense"}


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


def load_intrinsic() -> dict:
    return R.load(OUT, "python -m pedagogy_lib.book.ch01.experiment")


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


def d90_text(it: dict) -> str:
    """d90 as the grid resolves it: "30 < d90 ≤ 100" (the grid point below d90 misses the bar),
    "d90 ≤ 10" at the first point, "d90 > 10000" when no point reaches it."""
    ds, d90 = it["ds"], it["d90"]
    if d90 is None:
        return f"d90 > {max(ds)}"
    i = ds.index(d90)
    return f"d90 ≤ {d90}" if i == 0 else f"{ds[i - 1]} < d90 ≤ {d90}"


def _sig(v: float, digits: int = 6) -> float:
    """v rounded to ``digits`` significant digits (low bits vary with threads and machines)."""
    return round(v, digits - 1 - int(math.floor(math.log10(abs(v))))) if v else 0.0


def save_update(data: dict, accuracy: float, path=None):
    """Write the chapter's update statistics (scalars only, 6 significant digits) to
    ``chapters/results/ch01_update.json`` (``make sweeps``), which the chapter's claims and
    ``make figures`` read: the chapter itself writes nothing."""
    path = RESULTS / "ch01_update.json" if path is None else path
    mats = {name: {k: _sig(v) if isinstance(v, float) else v for k, v in m.items()}
            for name, m in data["matrices"].items()}
    out = {"k": data["k"], "recipe": dataclasses.asdict(Recipe()), "seed": 0,
           "full_ft_test_acc": round(float(accuracy), 6), "matrices": mats}
    return R.save(out, path)


def load_update() -> dict:
    return R.load(RESULTS / "ch01_update.json", "python -m pedagogy_lib.book.ch01.experiment --part update")


# ------------------------------------------------------------------ the runs
def _resume(config: dict) -> dict:
    """The stored sweep if it ran with ``config`` (an interrupted sweep resumes), else a new one."""
    res = json.loads(OUT.read_text()) if OUT.exists() else {}
    return res if res.get("config") == config else {"config": config, "full": {}, "subspace": {}}


def _runner(res: dict, val):
    """run(key, table, fn): train once per key, cache the accuracies in ``res`` and on disk."""
    from pedagogy_lib.torch_ref.train import accuracy

    def run(key, table, fn):
        if key in res[table]:
            return res[table][key]
        t0 = time.perf_counter()
        model, test_acc = fn()
        out = {"test_acc": test_acc, "val_acc": accuracy(model, val), "seconds": round(time.perf_counter() - t0, 1)}
        res[table][key] = out
        R.save(res, OUT)
        print(f"{table:8s} {key:28s} val {out['val_acc']:.3f} test {test_acc:.3f} ({out['seconds']} s)", flush=True)
        return out

    return run


def _subspace_size(res: dict):
    """D, the number of tensors θ covers, and MiniLM's size (head excluded)."""
    from pedagogy_lib.torch_ref.encoder import load_minilm_torch
    from pedagogy_lib.torch_ref.train import Classifier

    model = Classifier(load_minilm_torch(device="cpu").net)
    names = subspace_names(model)
    params = dict(model.named_parameters())
    res["D"] = sum(params[n].numel() for n in names)
    res["n_tensors"] = len(names)
    res["total_params"] = sum(p.numel() for n, p in params.items() if not n.startswith("head."))


def intrinsic_sweep(quick: bool = False) -> dict:
    """A (full fine-tuning per seed), B (every d and η at seed 0; η chosen on validation),
    C (the other seeds at that η); writes ``OUT``."""
    import torch

    from pedagogy_lib.checkpoint import Tokenizer

    recipe = Recipe()
    ds, seeds, etas = (DS, SEEDS, recipe.etas) if not quick else ((10, 100), (0,), (1.0,))
    res = _resume(json.loads(json.dumps({"recipe": dataclasses.asdict(recipe), "ds": list(ds), "seeds": list(seeds),
                                         "etas": list(etas), "quick": quick})))  # as it reads back from the file
    device = "cpu" if not torch.cuda.is_available() else "cuda"
    res |= {"versions": _versions(), "device": device}
    train, test = vader_batches(recipe, Tokenizer(), device)
    _, val = vader_batches(recipe, Tokenizer(), device, split="val")
    res |= {"n_test": len(test), "n_val": len(val), "majority_test": max(test.labels.mean(), 1 - test.labels.mean())}
    run = _runner(res, val)
    for seed in seeds:  # A
        run(f"seed={seed}", "full", lambda: full_finetune(recipe, seed, train, test, device))
    best = {}
    for d in ds:  # B
        for eta in etas:
            run(f"d={d} eta={eta} seed={seeds[0]}", "subspace",
                lambda: subspace_finetune(recipe, d, eta, seeds[0], train, test, device))
        best[d] = max(etas, key=lambda e: (res["subspace"][f"d={d} eta={e} seed={seeds[0]}"]["val_acc"], -e))
    res["best_eta"] = {str(d): e for d, e in best.items()}
    for seed in seeds[1:]:  # C
        for d in ds:
            run(f"d={d} eta={best[d]} seed={seed}", "subspace",
                lambda: subspace_finetune(recipe, d, best[d], seed, train, test, device))
    _subspace_size(res)
    R.save(res, OUT)
    return res


def update_study(seed: int = 0):
    """One full fine-tuning with ``Recipe()``; its update statistics go to ch01_update.json."""
    W0, W1, acc, _ = finetune(Recipe(), seed=seed)
    return save_update(update_data(W0, W1), acc)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=("intrinsic", "update", "all"), default="all")
    ap.add_argument("--quick", action="store_true", help="two d values, one seed, one η (smoke test)")
    args = ap.parse_args(argv)
    if args.part in ("update", "all"):
        print("wrote", update_study())
    if args.part in ("intrinsic", "all"):
        intrinsic_sweep(args.quick)
        print("wrote", OUT)

if __name__ == "__main__":
    main()
