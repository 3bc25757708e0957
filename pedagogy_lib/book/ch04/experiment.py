"""Chapter 04 sweep: prefix-tuning on VADER polarity, trained directly vs through the MLP.

Run:  OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m pedagogy_lib.book.ch04.experiment
Writes chapters/results/ch04_prefix.json: 91 runs, about 33 CPU-minutes at one thread (the sum of
the runs' own ``cpu_s`` in the file).

Protocol (the same loop and budget as chapter 03's sweep, every run through ``runner.run``; the
rate is chosen by ``stats.select_lr`` on the mean over seeds): the book's training loop
(torch_ref.train) on a class-balanced subsample of N_TRAIN training words, EPOCHS epochs,
batch 32, head learning rate HEAD_LR.  Each run is scored on the whole validation and
test splits, and its per-step training loss is kept.

1. Learning-rate grid at m = M_GRID, at the selection seeds SEEDS: direct prefix (P_k, P_v trained as they
   are, N(0, 1) init as in peft / P-Tuning v2) and the MLP reparameterisation (hidden
   size HIDDEN, shared by all layers).  The rate with the best mean validation accuracy
   is each arm's rate from then on; a grid whose best rate sits at an edge is extended by
   its own ratio (at most MAX_EXTENSIONS times, ``stats.select_lr``), and the record says
   whether the rate ended bracketed.  Stored runs are reused (a run is deterministic in
   arm, m, rate and seed); ``--fresh`` retrains everything.  Seeds differ in subsample, prefix init, head init
   and order, so the spread over seeds is the spread a user would see.
2. Prefix length m in LENGTHS, both arms, at the chosen rates, over EVAL_SEEDS (the seeds every
   comparison is paired over; the rates were chosen on SEEDS).
3. LoRA r=8 on (query, value), alpha = 8, on the same protocol (rate chosen on SEEDS, then
   EVAL_SEEDS at that rate), for the "prefix lags LoRA" claim.
"""
from __future__ import annotations

import math
import sys

import numpy as np

from pedagogy_lib import data, runner
from pedagogy_lib.registry import Arm
from pedagogy_lib.results import save_runs
from pedagogy_lib import prefix as px
from pedagogy_lib import results as R
from pedagogy_lib import stats
from pedagogy_lib.bert import BertConfig, BertEncoder, SentenceEncoder
from pedagogy_lib.results import SMOOTH, mean_sd, smooth

RESULTS = R.RESULTS
OUT = RESULTS / "ch04_prefix.json"
N_TRAIN, EPOCHS, BATCH, HEAD_LR = 1024, 3, 32, 1e-3
SEEDS = (0, 1, 2)                 # the learning rates are chosen on these
EVAL_SEEDS = (0, 1, 2, 3, 4)      # every comparison at the chosen rates is paired over these
HIDDEN = 512                      # Li & Liang's MLP width
M_GRID = 10
LRS = {"direct": (1e-3, 3e-3, 1e-2, 3e-2, 1e-1), "mlp": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2),
       "lora": (3e-4, 1e-3, 3e-3)}
LENGTHS = (1, 5, 10, 20, 50)
MAX_EXTENSIONS = 2                # the protocol's bound on grid extensions (chapter 08, Eq. 8.2)


# ------------------------------------------------------- stored results, analysis
ARMS = ("direct", "mlp")
COLLAPSED = 0.6  # a final loss above this never left the majority-class guess (ln 2 ≈ 0.69)


def load_results(path=None) -> dict:
    return R.load(path or OUT, "python -m pedagogy_lib.book.ch04.experiment")


def eval_seeds(sweep: dict) -> list:
    """The seeds every comparison at the chosen rates is paired over (older files: ``seeds``)."""
    return sweep["config"].get("eval_seeds", sweep["config"]["seeds"])


def _runs(sweep, arm, m=None, lr=None):
    return [r for r in sweep["runs"] if r["arm"] == arm and (m is None or r["m"] == m)
            and (lr is None or math.isclose(r["lr"], lr))]


def summary(sweep: dict) -> dict:
    """Means and spreads over seeds: by learning rate (m = m_grid), by prefix length (chosen
    rate), LoRA's, and the stability measures of each arm."""
    cfg, lr = sweep["config"], sweep["chosen_lr"]
    out = {"lr": lr, "m_grid": cfg["m_grid"], "lengths": cfg["lengths"], "lr_grid": {}, "by_length": {}}
    for arm in ARMS:
        out["lr_grid"][arm] = {}
        for rate in cfg["lrs"][arm]:  # what chose the rate: the selection seeds only
            rs = [r for r in _runs(sweep, arm, cfg["m_grid"], rate) if r["seed"] in cfg["seeds"]]
            out["lr_grid"][arm][rate] = {"val": mean_sd([r["val"] for r in rs]), "test": mean_sd([r["test"] for r in rs]),
                                         "final_loss": mean_sd([np.mean(r["losses"][-SMOOTH:]) for r in rs])}
        out["by_length"][arm] = {}
        for m in cfg["lengths"]:
            rs = _runs(sweep, arm, m, lr[arm])
            out["by_length"][arm][m] = {"test": mean_sd([r["test"] for r in rs]), "val": mean_sd([r["val"] for r in rs]),
                                        "trainable": rs[0]["trainable"], "n": len(rs)}
    lora = _runs(sweep, "lora", lr=lr["lora"])
    out["lora"] = {"test": mean_sd([r["test"] for r in lora]), "trainable": lora[0]["trainable"], "n": len(lora)}
    out["stability"] = {arm: stability(sweep, arm) for arm in ARMS}
    return out


def stability(sweep: dict, arm: str) -> dict:
    """How (un)stable training is, four ways:

    * seed_sd: test-accuracy standard deviation over seeds, averaged over prefix lengths
      (chosen rate);
    * curve_sd: across-seed standard deviation of the smoothed loss curve, averaged over
      steps (m = m_grid, chosen rate);
    * rough: mean |step-to-step change| of the loss minus that of its smoothed curve, i.e.
      the jitter around the trend, averaged over every run of the arm;
    * collapsed: runs (any rate, any length) whose final smoothed loss stays above
      COLLAPSED, i.e. that never left the majority-class guess (loss ≈ 0.69), out of n_runs.
    """
    cfg, lr = sweep["config"], sweep["chosen_lr"][arm]
    seed_sd = np.mean([mean_sd([r["test"] for r in _runs(sweep, arm, m, lr)])[1] for m in cfg["lengths"]])
    curves = np.array([smooth(r["losses"]) for r in _runs(sweep, arm, cfg["m_grid"], lr)])
    runs = _runs(sweep, arm)
    rough = np.mean([np.abs(np.diff(r["losses"])).mean() - np.abs(np.diff(smooth(r["losses"]))).mean() for r in runs])
    collapsed = [r for r in runs if smooth(r["losses"])[-1] > COLLAPSED]
    return {"seed_sd": float(seed_sd), "curve_sd": float(curves.std(0, ddof=1).mean()), "rough": float(rough),
            "collapsed": len(collapsed), "n_runs": len(runs),
            "collapsed_at": sorted({(r["m"], r["lr"]) for r in collapsed})}


def by_seed(sweep: dict, arm: str, m: int | None = None) -> list[float]:
    """Test accuracy of one arm at its chosen rate (and prefix length m), in seed order: the
    runs of one seed share the subsample, head init and order across arms (paired)."""
    lr, seeds = sweep["chosen_lr"][arm], eval_seeds(sweep)
    rs = {r["seed"]: r["test"] for r in _runs(sweep, arm, m, lr)}
    return [rs[seed] for seed in seeds]


def seed_means(sweep: dict, arm: str) -> list[float]:
    """Test accuracy of one arm at its chosen rate, averaged over the prefix lengths, per seed:
    the seeds are the independent replicates (the lengths of one seed share its data order)."""
    lr, cfg = sweep["chosen_lr"][arm], sweep["config"]
    return [float(np.mean([r["test"] for m in cfg["lengths"] for r in _runs(sweep, arm, m, lr) if r["seed"] == seed]))
            for seed in eval_seeds(sweep)]


def val_grids(sweep: dict) -> dict[str, dict]:
    """{arm: {lr: mean validation accuracy over seeds at m_grid}}: what chose each arm's rate."""
    s = summary(sweep)
    return {arm: {lr: v["val"][0] for lr, v in s["lr_grid"][arm].items()} for arm in ARMS} | {
        "lora": {r: float(np.mean([x["val"] for x in _runs(sweep, "lora", lr=r) if x["seed"] in sweep["config"]["seeds"]]))
                 for r in sweep["config"]["lrs"]["lora"]}}


def best_length(s: dict, arm: str) -> int:
    """The prefix length with the best mean validation accuracy (test is not used to choose)."""
    by = s["by_length"][arm]
    return max(by, key=lambda m: (by[m]["val"][0], -m))


def fold_check(m: int = 4, hidden: int = 8, seed: int = 0) -> dict:
    """Outputs before and after folding on a tiny float32 encoder, and the trainable counts."""
    cfg = BertConfig(vocab_size=30, hidden_size=12, num_hidden_layers=3, num_attention_heads=3,
                     intermediate_size=24, max_position_embeddings=16)
    net = px.attach_prefix(SentenceEncoder(BertEncoder(cfg, seed=seed)), m, reparam=hidden, seed=seed)
    ids = np.random.default_rng(seed).integers(0, 30, (4, 5))
    mask = np.ones_like(ids)
    before, n_before = net(ids, mask), net.num_parameters(trainable_only=True)
    px.fold(net)
    return {"identical": bool(np.array_equal(before, net(ids, mask))), "trainable_before": n_before,
            "trainable_after": net.num_parameters(trainable_only=True),
            "m_d_L_2": px.num_prefix_params(m, cfg.hidden_size, cfg.num_hidden_layers)}


# ------------------------------------------------------ λ by layer (Eq. 4.2)
WORDS = ["wonderful", "horrible", "not bad", "cheerful", "disaster", "meh", "great job", "sad"]


def lambda_by_layer(net, words=WORDS, tokenize=None) -> np.ndarray:
    """λ (the prefix's attention share, Eq. 4.2) averaged over heads and real query tokens,
    one value per layer, for a NumPy SentenceEncoder that carries a prefix."""
    ids, mask = tokenize(list(words))
    net(ids, mask)
    keep = mask.astype(bool)
    out = []
    for layer in net.bert.layers:
        lam = px.prefix_weight(getattr(layer.attention, "self"))  # (B, h, T)
        out.append(lam.mean(1)[keep].mean())
    return np.array(out)


def lambda_data(m: int = 10, hidden: int = 512, seed: int = 0) -> dict:
    """λ per layer at initialisation on the real MiniLM: direct N(0, 1) prefix vs MLP output."""
    from pedagogy_lib.models import load_minilm

    out = {}
    for arm, reparam in (("direct", None), ("mlp", hidden)):
        mm = load_minilm("numpy")
        px.attach_prefix(mm.net, m, reparam=reparam, seed=seed)
        out[arm] = lambda_by_layer(mm.net, tokenize=mm.tokenize)
    return {"m": m, "lambda": out}


# ------------------------------------------------------------------ the sweep
BUDGET = runner.Budget(n_train=N_TRAIN, n_eval=None, epochs=EPOCHS, batch_size=BATCH, seeds=SEEDS, head_lr=HEAD_LR,
                       resample=True)


def arm(name: str, m: int) -> Arm:
    """direct: P_k, P_v trained as they are; mlp: through Li & Liang's MLP; lora: r=8 on (q, v)."""
    if name == "lora":
        return Arm("lora", "lora", {"r": 8, "alpha": 8})
    return Arm(name, "prefix", {"m": m, "reparam": None if name == "direct" else HIDDEN})


def run(name: str, m: int, lr: float, seed: int, task) -> dict:
    r = runner.run(arm(name, m), task, BUDGET, seed, lr)
    rec = {"arm": name, "m": m, "lr": lr, "seed": seed, "val": round(r["val_acc"], 6), "test": round(r["test_acc"], 6),
           "trainable": r["trainable"], "losses": [round(x, 5) for x in r["losses"]], "cpu_s": round(r["cpu_s"], 1)}
    print(f"{name:6s} m={m:3d} lr={lr:g} seed={seed} val={rec['val']:.3f} test={rec['test']:.3f} "
          f"final-loss={np.mean(r['losses'][-8:]):.3f} ({rec['cpu_s']:.0f} s)", flush=True)
    return rec


def _key(r: dict) -> tuple:
    return r["arm"], r["m"], float(r["lr"]), r["seed"]


# what one run's numbers depend on besides (arm, m, lr, seed): as ``main`` stores it in "config"
RUN_CONFIG = {"n_train": N_TRAIN, "epochs": EPOCHS, "batch_size": BATCH, "head_lr": HEAD_LR, "mlp_hidden": HIDDEN,
              "direct_init": "N(0, 1)", "lora": "r=8, alpha=8, (query, value)", "schedule": "linear", "warmup": 0.06}


def stored_runs(path=None) -> dict:
    """{(arm, m, lr, seed): run} from the stored sweep, for reuse: under one budget a run is
    deterministic in (arm, m, lr, seed) (same subsample, init and order), so it is not trained
    twice. A file stored under another budget (``RUN_CONFIG`` differs from its "config": say
    more epochs or another head rate) gives none: its runs would mix two budgets in one sweep."""
    path = path or OUT
    if not path.is_file():
        return {}
    sweep = load_results(path)
    changed = {k: (sweep["config"].get(k), v) for k, v in RUN_CONFIG.items() if sweep["config"].get(k) != v}
    if changed:
        print(f"{path}: stored under another budget {changed} (stored, now): every run is trained again",
              file=sys.stderr, flush=True)
        return {}
    return {_key(r): r for r in sweep["runs"]}


def search(name: str, task, done: dict) -> dict:
    """The protocol's rate for one arm at m = M_GRID (chapter 08, Eqs. 8.1–8.2): mean validation
    accuracy over every seed, the grid extended by its own ratio (at most MAX_EXTENSIONS times)
    while the best rate sits at an edge. Returns ``stats.lr_choice``'s record."""
    def val(lr):
        return float(np.mean([_get(done, (name, M_GRID, float(lr), s), task)["val"] for s in SEEDS]))
    return stats.select_lr(val, LRS[name], MAX_EXTENSIONS)


def _get(done: dict, key: tuple, task) -> dict:
    """The run (arm, m, lr, seed): the stored one, else trained now (and kept)."""
    if key not in done:
        done[key] = run(*key, task)
    return done[key]


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(description="chapter 04's prefix sweep")
    ap.add_argument("--fresh", action="store_true", help="retrain every run (default: reuse the stored ones)")
    args = ap.parse_args(argv)
    task = data.polarity_task()
    done = {} if args.fresh else stored_runs()
    choice = {name: search(name, task, done) for name in LRS}
    lr = {name: c["chosen"] for name, c in choice.items()}
    at_rate = [(n, m, float(lr[n]), s) for n in ARMS for m in LENGTHS for s in EVAL_SEEDS] + \
              [("lora", M_GRID, float(lr["lora"]), s) for s in EVAL_SEEDS]
    for key in at_rate:
        _get(done, key, task)
    keep = {(n, M_GRID, float(x), s) for n, c in choice.items() for x in c["grid"] for s in SEEDS} | set(at_rate)
    runs = sorted((done[k] for k in keep), key=lambda r: (list(LRS).index(r["arm"]), r["m"], r["lr"], r["seed"]))
    out = {
        "config": RUN_CONFIG | {
                   "seeds": list(SEEDS), "eval_seeds": list(EVAL_SEEDS), "lrs": {k: list(c["grid"]) for k, c in choice.items()}, "m_grid": M_GRID,
                   "lengths": list(LENGTHS), "max_extensions": MAX_EXTENSIONS,
                   "n_val": len(task.val), "n_test": len(task.test), "task": "VADER polarity, threshold 0.6"},
        "chosen_lr": lr,
        "selection": choice,
        "runs": runs,
        "versions": R.versions("numpy", "torch"),
    }
    print(f"wrote {save_runs(out, OUT)}")


if __name__ == "__main__":
    main()
