"""Chapter 01's experiments: the spectra of MiniLM's weights, the rank of a real update, and the
intrinsic-dimension sweep (too slow for the notebook).

    OMP_NUM_THREADS=1 python -m pedagogy_lib.book.ch01.experiment [--part intrinsic|update|all] [--jobs N]

Every training run goes through the runner (``runner.protocol`` / ``runner.train_arm``): MiniLM +
the VADER polarity task under ``BUDGET`` (a class-balanced subsample of 1,024 training words,
2 epochs, batch 32, AdamW with linear decay, the whole val and test splits). The arms are
registry records (``arms_for``):

  full FT   the registry's ``full`` method (every weight; the head at max(lr, 1e-3)), its grid;
  d=…       the registry's ``subspace`` method: θ = θ0 + P z with a sparse P over the
            transformer layers and the head (10.6M numbers), z of d numbers, for d in DS;
            its grid is lr = η/√d for η in ETAS (``torch_ref.subspace.subspace_lr``).

The evidence protocol (chapter 08, Eqs. 8.1–8.7): each arm's grid at seeds 0 and 1, the rate
with the best *mean validation* accuracy (ties: the smaller), a grid whose best rate sits at an
edge extended (at most twice; else recorded ``bracketed: False``), then seeds 2–4 at the chosen
rate (a new P, head initialisation and data order per seed, the same for every arm). Every
finished run is appended to ``RUN_LOG`` (``runner.run_log``) as it arrives, so an interrupted
sweep resumes; the runs of the stored sweep are reused once ``verify`` has retrained the
``VERIFY`` runs (one subspace, one full) and found them identical. ``--part update`` fine-tunes
fully once (seed 0, the rate the protocol chose) and writes the update statistics to
``chapters/results/ch01_update.json``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from pedagogy_lib import data
from pedagogy_lib import lowrank as lr
from pedagogy_lib import results as R
from pedagogy_lib import runner, stats
from pedagogy_lib.book.rules import points_by_seed
from pedagogy_lib.registry import Arm, arms
from pedagogy_lib.runner import Budget
from pedagogy_lib.torch_ref.subspace import subspace_lr, subspace_names

OUT = R.RESULTS / "ch01_intrinsic_dim.json"
RUN_LOG = R.RESULTS.parent.parent / "build" / "ch01_runs.jsonl"  # finished runs, for resuming

DS = (10, 30, 100, 300, 1000, 3000, 10000)
ETAS = (0.1, 0.3, 1.0)  # lr = η/√d
SEEDS = (0, 1, 2, 3, 4)
KIND = "sparse"
FRAC = 0.9  # d90: the smallest d reaching 90 % of full fine-tuning (eq. 1.11)
BUDGET = Budget(n_train=1024, n_eval=None, epochs=2, batch_size=32, seeds=SEEDS, select_seeds=2, max_extensions=2)
FULL = Arm("full FT", "full", note="every weight (the reference)")


def subspace_arm(d: int, etas=ETAS, kind: str = KIND) -> Arm:
    """θ0 + P z with d numbers in z; its grid is lr = η/√d for η in ``etas``."""
    return Arm(f"d={d}", "subspace", {"d": d, "kind": kind}, lrs=tuple(subspace_lr(e, d) for e in etas),
               note=f"z of {d} numbers, sparse P")


def arms_for(ds=DS) -> dict:
    """{label: Arm}: full fine-tuning and one subspace arm per d."""
    return arms(FULL, *(subspace_arm(d) for d in ds))


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
    (k‖W0‖_F/√(mn), the root mean square of ‖UᵀW0V‖_F over random orthonormal U, V); the largest angle by which W's own top-k subspace turns.
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


def full_lr(res: dict | None = None) -> float:
    """The rate the protocol chose for full fine-tuning (from the stored sweep)."""
    res = load_intrinsic() if res is None else res
    return res["arms"][FULL.label]["lr"]


def encoder_weights(clf) -> dict:
    """``runner.run``'s ``report``: the fine-tuned encoder's weights, {name: float64 array}."""
    return {"W1": {k: v.detach().cpu().double().numpy() for k, v in clf.encoder.bert.state_dict().items()}}


def finetune(seed: int = 0, lr: float | None = None):
    """Full fine-tuning through the runner (``runner.run``, ``BUDGET``) at ``lr`` (default: the
    rate the sweep chose), scored on the whole test split: (W0, W_ft, test accuracy). The same
    run as the sweep's ``full FT`` run of that seed and rate."""
    from pedagogy_lib.checkpoint import load_weights

    lr = full_lr() if lr is None else lr
    rec = runner.run(FULL, data.polarity_task(), BUDGET, seed, lr, report=encoder_weights)
    return load_weights(), rec["W1"], rec["test_acc"]


def update_data(W0: dict | None = None, W1: dict | None = None, k: int = K) -> dict:
    """update_stats for every matrix (runs ``finetune()`` when no weights are given)."""
    if W0 is None or W1 is None:
        W0, W1, _ = finetune()
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


# ------------------------------------------------------------------ the sweep
def load_intrinsic() -> dict:
    return R.load(OUT, "python -m pedagogy_lib.book.ch01.experiment --part intrinsic")


def _stored_runs(res: dict) -> dict:
    """The runs a stored sweep holds, as {(label, lr, seed): result}."""
    return {(r["method"], r["lr"], r["seed"]): r for r in res["runs"]}


# (arm, lr, seed) retrained to check that the stored runs reproduce: one subspace run, one full run
VERIFY = (("d=10", subspace_lr(0.3, 10), 0), (FULL.label, 1e-4, 0))


def verify(stored: dict, done: dict, task, log) -> dict:
    """Retrain the ``VERIFY`` runs (already logged ones are not trained again) and compare
    their validation and test accuracy with the stored ones, exactly. Returns
    {"runs": [(label, lr, seed)], "identical": bool}; stored runs are reused only when True."""
    keys = list(VERIFY)
    same = True
    for key in keys:
        if key not in stored:
            continue
        if key not in done:
            done[key] = runner.run(arms_for()[key[0]], task, BUDGET, key[2], key[1])
            log(key[0], done[key])
        new, old = done[key], stored[key]
        same = same and (new["val_acc"], new["test_acc"]) == (old["val_acc"], old["test_acc"])
        print(f"verify {key[0]} lr={key[1]:.4g} seed={key[2]}: val {new['val_acc']:.6f} vs {old['val_acc']:.6f}, "
              f"test {new['test_acc']:.6f} vs {old['test_acc']:.6f}", file=sys.stderr, flush=True)
    checked = [list(k) for k in keys if k in stored]
    return {"runs": checked, "identical": bool(checked) and same}  # nothing retrained: nothing reused


def _arm_record(arm: Arm, found: dict) -> dict:
    """One arm's selection and runs, as stored: the grid (and η = lr·√d), the validation mean per
    rate, the chosen rate, whether it is bracketed, and every seed's accuracies at that rate."""
    sel, d = found["selection"], arm.opts.get("d")
    runs = found["runs"]
    eta = (lambda x: round(x * math.sqrt(d), 6)) if d else (lambda x: None)  # noqa: E731
    return {"d": d, "note": arm.note, "lr_grid": sel["grid"], "eta_grid": [eta(x) for x in sel["grid"]],
            "val_by_lr": [v if v is None else round(v, 6) for v in sel["scores"]], "lr": sel["chosen"], "eta": eta(sel["chosen"]),
            "bracketed": sel["bracketed"], "edge": sel["edge"], "extensions": sel["extensions"],
            "select_seeds": sel["seeds"], "seeds": [r["seed"] for r in runs],
            "test_by_seed": [r["test_acc"] for r in runs], "val_by_seed": [r["val_acc"] for r in runs]}


def _slim(r: dict) -> dict:
    keep = ("method", "lr", "seed", "val_acc", "test_acc", "trainable", "cpu_s", "wall_s", "source", "final_loss")
    return {k: r[k] for k in keep if k in r}


def intrinsic_sweep(ds=DS, jobs: int = 1, log=RUN_LOG, progress: bool = True, run_fn=None) -> dict:
    """The protocol of the module docstring for full FT and every d; returns the JSON-ready
    results. ``run_fn`` replaces ``runner.run`` (tests)."""
    from tqdm import tqdm

    chosen, task, t0 = list(arms_for(ds).values()), data.polarity_task(), time.time()
    done, on_result = runner.run_log(log, BUDGET, chosen)
    stored = _stored_runs(json.loads(OUT.read_text())) if OUT.exists() and run_fn is None else {}
    logged = set(done)  # before ``verify`` retrains (and logs) its runs: those are new ones
    check = verify(stored, done, task, on_result) if stored else {"runs": [], "identical": False}
    reused = {k: v for k, v in stored.items() if k not in done} if check["identical"] else {}
    before = logged | set(reused)
    bar = tqdm(desc="ch01 runs", unit="run", file=sys.stderr, disable=not progress)

    def logged(label, r):  # each new run, as it finishes (any ``jobs``): logged, counted on the bar
        on_result(label, r)
        bar.set_postfix_str(f"{label} lr={r['lr']:.3g} seed={r['seed']} val={r['val_acc']:.3f}", refresh=False)
        bar.update()
    found = runner.protocol(chosen, task, BUDGET, jobs=jobs, progress=False, done={**reused, **done},
                            on_result=logged, run_fn=run_fn)
    bar.close()
    every = [r for f in found.values() for r in f["trials"] + f["runs"][BUDGET.select_seeds:]]
    new = [r for r in every if (r["method"], r["lr"], r["seed"]) not in before]
    res = {"config": {"ds": list(ds), "etas": list(ETAS), "kind": KIND, "frac": FRAC,
                      "budget": json.loads(json.dumps(dataclasses.asdict(BUDGET))),
                      "lr_rule": "subspace: lr = eta/sqrt(d); full FT: the registry's grid, head at max(lr, 1e-3)",
                      "lr_grids": {a.label: list(a.grid) for a in chosen}},
           "arms": {a.label: _arm_record(a, found[a.label]) for a in chosen},
           "runs": [_slim(r) for r in sorted(every, key=lambda r: (r["method"], r["lr"], r["seed"]))],
           "verify": check, "n_reused": len(every) - len(new), "n_new": len(new),
           "cpu_s_new": round(sum(r.get("cpu_s", 0.0) for r in new), 1),
           "wall_s": round(time.time() - t0, 1), "versions": R.versions("numpy", "torch")}
    return res | _sizes(task)


def provenance(res: dict) -> dict:
    """Where the stored runs come from, read off the runs themselves: those tagged with a
    ``source`` were carried over from an earlier sweep; the others were trained by the runner
    (their CPU seconds summed)."""
    trained = [r for r in res["runs"] if "source" not in r]
    return {"trained": len(trained), "carried": len(res["runs"]) - len(trained),
            "cpu_s": round(sum(r.get("cpu_s", 0.0) for r in trained), 1)}


def _sizes(task) -> dict:
    """Split sizes, the majority class, D (the numbers θ covers), tensors, MiniLM's size."""
    from pedagogy_lib.torch_ref.train import Classifier

    model = Classifier(runner.fresh_minilm().net)
    names, params = subspace_names(model), dict(model.named_parameters())
    y = np.asarray(task.test.labels)
    return {"n_test": len(task.test), "n_val": len(task.val), "majority_test": float(max(y.mean(), 1 - y.mean())),
            "D": sum(params[n].numel() for n in names), "n_tensors": len(names),
            "total_params": sum(p.numel() for n, p in params.items() if not n.startswith("head."))}


# ------------------------------------------------------------------ analysis
MATCH_POINTS = 1.0  # "match" full FT: the paired interval of (subspace − full) lies above −1 point


def _d90_interval(ds, vs_bar: dict, bracketed: dict) -> tuple:
    """(d_lo, d_hi) as the 95 % intervals resolve d90 on the grid: d_hi the smallest bracketed d
    whose paired interval (accuracy − 90 % of full FT) lies above 0, d_lo the largest bracketed
    d below it whose interval lies below 0. A tie or an unbracketed grid decides neither."""
    clears = [d for d in ds if bracketed[d] and vs_bar[d]["lo"] > 0]
    d_hi = min(clears) if clears else None
    misses = [d for d in ds if bracketed[d] and vs_bar[d]["hi"] < 0 and (d_hi is None or d < d_hi)]
    return (max(misses) if misses else None), d_hi


def intrinsic_summary(res: dict, frac: float | None = None) -> dict:
    """Curve (test accuracy per d and seed at the rate the protocol chose), the full
    fine-tuning reference, d90 (eq. 1.11) for the seed mean and every seed against the bar
    frac × full FT's seed mean, and per d the paired intervals (Eqs. 8.4–8.6) of accuracy − frac ×
    full FT and of accuracy − full FT, seed by seed."""
    frac = res["config"]["frac"] if frac is None else frac
    ds, arm = res["config"]["ds"], res["arms"]
    sub = {d: points_by_seed(arm[f"d={d}"], "test_by_seed", scale=1.0) for d in ds}  # {seed: fraction}
    full = points_by_seed(arm[FULL.label], "test_by_seed", scale=1.0)
    seeds = sorted(full)
    acc = {s: [sub[d][s] for d in ds] for s in seeds}
    mean = np.mean([acc[s] for s in seeds], axis=0)
    ref = float(np.mean([full[s] for s in seeds]))
    bracketed = {d: arm[f"d={d}"]["bracketed"] for d in ds}
    vs_bar = {d: stats.paired_by_seed(sub[d], {s: frac * full[s] for s in seeds}) for d in ds}
    vs_full = {d: stats.paired_by_seed(sub[d], full) for d in ds}
    match = [d for d in ds if bracketed[d] and vs_full[d]["lo"] >= -MATCH_POINTS / 100]
    d_lo, d_hi = _d90_interval(ds, vs_bar, bracketed)
    return {
        "ds": ds, "seeds": seeds, "eta": {d: arm[f"d={d}"]["eta"] for d in ds}, "bracketed": bracketed,
        "edge": {d: arm[f"d={d}"]["edge"] for d in ds}, "acc": acc, "mean": [float(a) for a in mean],
        "full": full, "full_mean": ref, "full_lr": arm[FULL.label]["lr"], "full_bracketed": arm[FULL.label]["bracketed"],
        "frac": frac, "bar": frac * ref,
        "d90": lr.threshold_dimension(ds, mean, ref, frac),
        "d90_seed": {s: lr.threshold_dimension(ds, acc[s], ref, frac) for s in seeds},
        "vs_bar": vs_bar, "vs_full": vs_full, "d90_lo": d_lo, "d90_hi": d_hi,
        "d_match": min(match) if match else None, "best": float(mean.max()),
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


def d90_interval_text(it: dict) -> str:
    """d90 as the 95 % intervals resolve it: "d_lo < d90 ≤ d_hi", naming the grid points in between
    (ties with the bar, or unbracketed) that decide nothing."""
    lo, hi = it["d90_lo"], it["d90_hi"]
    if hi is None:
        return "no d clears the 90 % bar by its interval" + ("" if lo is None else f"; d90 > {lo}")
    left = f"{lo} < d90 ≤ {hi}" if lo is not None else f"d90 ≤ {hi}"
    open_ = [d for d in it["ds"] if (lo or 0) < d < hi]
    return left + ("" if not open_ else f" (undecided between: d = {', '.join(map(str, open_))})")


def _sig(v: float, digits: int = 6) -> float:
    """v rounded to ``digits`` significant digits (low bits vary with threads and machines)."""
    return round(v, digits - 1 - int(math.floor(math.log10(abs(v))))) if v else 0.0


def save_update(data: dict, accuracy: float, lr: float, path=None):
    """Write the chapter's update statistics (scalars only, 6 significant digits) to
    ``chapters/results/ch01_update.json`` (``make sweeps``), which the chapter's claims and
    ``make figures`` read: the chapter itself writes nothing."""
    path = RESULTS / "ch01_update.json" if path is None else path
    mats = {name: {k: _sig(v) if isinstance(v, float) else v for k, v in m.items()}
            for name, m in data["matrices"].items()}
    out = {"k": data["k"], "budget": json.loads(json.dumps(dataclasses.asdict(BUDGET))), "arm": FULL.label,
           "lr": lr, "seed": 0, "full_ft_test_acc": round(float(accuracy), 6), "matrices": mats}
    return R.save(out, path)


def load_update() -> dict:
    return R.load(RESULTS / "ch01_update.json", "python -m pedagogy_lib.book.ch01.experiment --part update")


def update_study(seed: int = 0):
    """One full fine-tuning at the rate the sweep chose; its update statistics go to ch01_update.json."""
    rate = full_lr()
    W0, W1, acc = finetune(seed, rate)
    return save_update(update_data(W0, W1), acc, rate)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("intrinsic", "update", "all"), default="all")
    ap.add_argument("--ds", nargs="*", type=int, default=list(DS),
                    help=f"subspace dimensions (default: {' '.join(map(str, DS))})")
    ap.add_argument("--jobs", type=runner.cli_count, default=1, help="worker processes, one thread each")
    ap.add_argument("--log", default=str(RUN_LOG), help="finished runs (JSON lines): read to resume, appended to")
    args = ap.parse_args(argv)
    if args.part in ("intrinsic", "all"):
        res = intrinsic_sweep(tuple(args.ds), args.jobs, Path(args.log))
        print(f"{res['n_new']} new runs, {res['cpu_s_new'] / 60:.1f} CPU-minutes; {res['n_reused']} reused; "
              f"verify: {res['verify']}")
        for label, a in res["arms"].items():
            print(f"{label:<8} lr={a['lr']:.4g} eta={a['eta']} bracketed={a['bracketed']} "
                  f"test={[round(x, 3) for x in a['test_by_seed']]}")
        print("wrote", R.save(res, OUT))
    if args.part in ("update", "all"):
        print("wrote", update_study())


if __name__ == "__main__":
    main()
