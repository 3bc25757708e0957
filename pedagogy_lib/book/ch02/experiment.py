"""Chapter 02's sweeps, too slow for the notebook: learning rate, placement, rank.

    python -m pedagogy_lib.book.ch02.experiment [--jobs 2] [--quick]

writes ``chapters/results/ch02_sweeps.json``, which the chapter and ``make figures`` read.
Every run is ``finetune`` (below) on MiniLM + the VADER polarity task: a class-
balanced subsample of N_TRAIN training words, EPOCHS epochs, batch 32, cosine schedule,
head learning rate HEAD_LR, evaluated on the whole validation and test splits.

Stages (each later stage uses the LoRA learning rate that stage A found best on val):
  A  learning rate: probe, LoRA (q,v, r=8, α=8) and full fine-tuning over a grid, SEEDS
  B  every EVAL_SEED for each method at its best learning rate (main comparison)
  C  placement at a fixed budget (the q,v r=8 parameter count) plus two same-rank settings
  D  rank sweep r ∈ RANKS on (q,v) at fixed α=8, with s = α/r and with rsLoRA's s = α/√r
Runs are cached by their settings in the JSON, so an interrupted sweep resumes.
One thread per process; ``--jobs`` processes at once. Runs are seeded, so numbers repeat
on the same machine and thread count (low bits may differ elsewhere).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np
import torch

from pedagogy_lib import lora, nn
from pedagogy_lib.lora import LoRALinear
from pedagogy_lib.nn import AdamW, Linear
from pedagogy_lib import results as R
from pedagogy_lib import stats
from pedagogy_lib.bert import BertConfig, BertEncoder
from pedagogy_lib.torch_ref import lora as TL

RESULTS = R.RESULTS
OUT = RESULTS / "ch02_sweeps.json"

N_TRAIN, EPOCHS, BATCH, HEAD_LR = 2048, 2, 32, 1e-3
SEEDS = (0, 1)                   # the learning rate is chosen on these (stage A)
EVAL_SEEDS = (0, 1, 2, 3, 4)     # every comparison (stages B–D) is paired over these
LRS = {"probe": [1e-3, 3e-3, 1e-2, 3e-2],
       "lora": [3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2],
       "full": [1e-5, 3e-5, 1e-4, 3e-4, 1e-3]}
RANKS = [1, 2, 4, 8, 16, 64]
ALPHA = 8
QV = ["query", "value"]
FFN = r"encoder\.layer\.\d+\.(intermediate|output)\.dense"  # not attention.output.dense
PLACEMENTS = {  # name: targets; r is chosen to spend the (q,v) r=8 budget
    "q": ["query"], "v": ["value"], "q,v": QV,
    "q,k,v,o": ["query", "key", "value", "attention.output.dense"],
    "FFN only": FFN, "all linear": "all-linear",
}
SAME_RANK = {"q,k,v,o": PLACEMENTS["q,k,v,o"], "all linear": "all-linear"}  # at r=8


# ------------------------------------------------------- checks and the α/r toy
def load_sweeps(path=OUT) -> dict:
    """The finished sweep (its ``summary`` is written last: a sweep cut short has none)."""
    return R.load(path, "python -m pedagogy_lib.book.ch02.experiment (it resumes)", keys=("summary",),
                  what="finished chapter 02 sweep")


def load_json(name: str) -> dict:
    command = "python -m pedagogy_lib.book.ch02.experiment" if "sweeps" in name else "tests/bench/bench_lora.py"
    return R.load(RESULTS / name, command)


def init_check(seed: int = 0) -> dict:
    """Hidden states of a small encoder before and after attaching LoRA (B = 0): bitwise equal?"""
    cfg = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=16)
    bert = BertEncoder(cfg, seed=seed)
    ids = np.random.default_rng(seed).integers(0, 50, (3, 7))
    mask = np.ones_like(ids)
    before = bert(ids, mask).copy()
    lora.attach_lora(bert, "all-linear", r=4, alpha=8, seed=seed)
    return {"identical": bool(np.array_equal(bert(ids, mask), before)),
            "max_diff": float(np.abs(bert(ids, mask) - before).max())}


def merge_check(d_in: int = 384, d_out: int = 384, r: int = 8, n: int = 256, seed: int = 0) -> dict:
    """float32: merged vs unmerged outputs, merged vs a plain Linear, and W after unmerge(merge(W))."""
    g = np.random.default_rng(seed)
    layer = lora.LoRALinear(nn.Linear(d_in, d_out, rng=g), r, 8, rng=g)
    layer.p["lora_B"][...] = 0.02 * g.standard_normal((d_out, r))
    W0 = layer.base_layer.p["weight"].copy()
    x = g.standard_normal((n, d_in)).astype(np.float32)
    y_unmerged = layer(x).copy()
    layer.merge()
    y_merged = layer(x).copy()
    plain = nn.Linear(d_in, d_out)
    plain.p = {"weight": layer.base_layer.p["weight"].copy(), "bias": layer.base_layer.p["bias"].copy()}
    layer.unmerge()
    eps = float(np.finfo(np.float32).eps)
    diff = float(np.abs(y_merged - y_unmerged).max())
    return {"max_diff": diff, "ulps": diff / (eps * float(np.abs(y_unmerged).max())),
            "identical": bool(np.array_equal(y_merged, y_unmerged)),
            "plain_identical": bool(np.array_equal(plain(x), y_merged)),
            "roundtrip_max_diff": float(np.abs(layer.base_layer.p["weight"] - W0).max()),
            "roundtrip_identical": bool(np.array_equal(layer.base_layer.p["weight"], W0)),
            "max_abs_y": float(np.abs(y_unmerged).max())}


def scaling_toy(r: int, rslora: bool, alpha: float = 8, lr: float = 1e-3, steps: int = 200,
                d: int = 64, n: int = 256, seed: int = 0) -> dict:
    """Does s = α/r keep the step size independent of r? (chapter 02, §2)

    Fit a full-rank change of a d×d Linear with LoRA of rank r, Adam, full batch, MSE.

    Returns ‖ΔW‖_F after the first step (the step size the scaling sets) and the loss at
    the start and after ``steps`` steps. Same data, W₀ and target for every r.
    """
    g = np.random.default_rng(seed)
    base = Linear(d, d, rng=np.random.default_rng(seed), dtype=np.float64)
    X = g.standard_normal((n, d))
    target = base.p["weight"] + 0.5 * g.standard_normal((d, d)) / np.sqrt(d)
    Y = X @ target.T + base.p["bias"]
    layer = LoRALinear(base, r, alpha, rslora, rng=np.random.default_rng(seed + 1))
    opt = AdamW(layer.params_and_grads(), lr=lr, weight_decay=0.0)
    first, losses = None, []
    for _ in range(steps):
        layer.zero_grad()
        R = layer(X) - Y
        losses.append(float((R * R).mean()))
        layer.backward(2 * R / R.size)   # d mean(R²)/dY
        opt.step()
        if first is None:
            first = float(np.linalg.norm(layer.delta_weight()))
    return {"r": r, "rslora": rslora, "step1_delta_norm": first, "loss0": losses[0], "loss_end": losses[-1]}


def scaling_study(ranks=(1, 2, 4, 8, 16, 64), **kw) -> dict:
    """``scaling_toy`` for each rank, with s = α/r and with s = α/√r."""
    return {name: [scaling_toy(r, rs, **kw) for r in ranks]
            for name, rs in (("alpha_over_r", False), ("rslora", True))}


# ------------------------------------------------------------ one training run
ARMS = ("probe", "lora", "full")


def finetune(method: str, train, val, test, *, targets=("query", "value"), r: int = 8,
             alpha: float = 8, rslora: bool = False, lr: float = 1e-3, head_lr: float = 1e-3,
             epochs: int = 3, batch_size: int = 32, seed: int = 0, schedule: str = "cosine",
             device=None, return_model: bool = False):
    """One run of chapter 02's experiment on MiniLM: a linear head on the mean-pooled
    embedding, plus ``method`` = 'probe' (encoder frozen), 'lora' (A, B on ``targets``) or
    'full' (every weight). ``train``/``val``/``test`` are ``data.Split``s. Returns plain numbers:
    accuracies, trainable count (head excluded), final loss, CPU seconds, and for LoRA the
    mean ‖s·BA‖_F over the adapted matrices. With ``return_model`` also the trained MiniLM
    (its ``.net`` carries the LoRA layers; the head is not part of it)."""
    import time

    from pedagogy_lib.torch_ref.encoder import load_minilm_torch
    from pedagogy_lib.torch_ref.train import Batches, Classifier, TrainConfig, accuracy, count_trainable, freeze, train_classifier

    if method not in ARMS:
        raise ValueError(f"finetune: method must be one of {ARMS}, got {method!r}")
    model = load_minilm_torch(device=device)
    total = sum(p.numel() for p in model.net.parameters())
    dev = next(model.net.parameters()).device
    clf = Classifier(model.net, seed=seed)
    if method == "probe":
        freeze(model.net)
    elif method == "lora":
        TL.attach_lora(model.bert, targets, r=r, alpha=alpha, rslora=rslora, seed=seed)
    data = [Batches(model.tokenizer, s.tokens, s.labels, dev) for s in (train, val, test)]
    cfg = TrainConfig(lr=lr, epochs=epochs, batch_size=batch_size, seed=seed, schedule=schedule,
                      head_lr=None if method == "probe" else head_lr)
    t0 = time.process_time()
    hist = train_classifier(clf, data[0], data[1], cfg)
    out = {"method": method, "lr": lr, "seed": seed, "epochs": epochs, "n_train": len(train),
           "trainable": count_trainable(clf), "total": total,
           "val_acc": hist.val_acc[-1], "test_acc": accuracy(clf, data[2]),
           "final_loss": float(np.mean(hist.losses[-10:])), "cpu_s": time.process_time() - t0}
    if method == "lora":
        layers = TL.lora_layers(model.bert)
        with torch.no_grad():
            norms = [float(m.delta_weight().norm()) for m in layers.values()]
        out |= {"targets": targets if isinstance(targets, str) else list(targets), "r": r,
                "alpha": alpha, "rslora": rslora, "n_matrices": len(layers),
                "delta_norm": float(np.mean(norms))}
    return (out, model) if return_model else out


# ------------------------------------------------------------------ the sweeps
def _key(spec: dict) -> str:
    return json.dumps(spec, sort_keys=True)


_DATA = {}
RUN_KEYS = ("method", "lr", "seed", "n_train", "epochs", "n_eval")


def _data(n_train: int, n_eval: int | None):
    from pedagogy_lib import data

    task = data.polarity_task(seed=0)
    val, test = task.val, task.test
    if n_eval:  # --quick only
        val, test = data.subsample(val, n_eval, 0), data.subsample(test, n_eval, 0)
    return data.subsample(task.train, n_train, seed=0), val, test


def run(spec: dict) -> dict:
    """One training run in a worker process (one thread)."""
    import torch

    torch.set_num_threads(1)

    key = (spec["n_train"], spec["n_eval"])
    if key not in _DATA:
        _DATA[key] = _data(*key)
    kw = {k: v for k, v in spec.items() if k not in RUN_KEYS}
    out = finetune(spec["method"], *_DATA[key], lr=spec["lr"], seed=spec["seed"], epochs=spec["epochs"],
                   batch_size=BATCH, head_lr=HEAD_LR, device="cpu", **kw)
    return {"spec": spec, **{k: v for k, v in out.items() if k not in spec}}


def budget_rank(targets, budget: int) -> int:
    """The rank whose parameter count on MiniLM is closest to ``budget``."""
    from pedagogy_lib import checkpoint, lora
    from pedagogy_lib.bert import BertConfig, BertEncoder

    shapes = lora.linear_paths(BertEncoder(BertConfig.from_dict(checkpoint.load_config())))
    return min(range(1, 65), key=lambda r: abs(lora.count_lora_params(shapes, targets, r) - budget))


class Sweep:
    """Runs specs in one pool of worker processes, caching results by their settings."""

    def __init__(self, jobs: int, quick: bool):
        self.jobs, self.quick = jobs, quick
        old = json.loads(OUT.read_text()) if OUT.is_file() and not quick else {}
        self.cache = {_key(r["spec"]): r for r in old.get("runs", [])}
        self.pool = ProcessPoolExecutor(jobs, mp_context=get_context("spawn"))

    def go(self, specs: list[dict]) -> None:
        todo = list({_key(s): s for s in specs if _key(s) not in self.cache}.values())
        todo.sort(key=lambda s: {"full": 0, "lora": 1, "probe": 2}[s["method"]])  # longest first
        print(f"{len(todo)} runs ({len(specs) - len(todo)} cached)", flush=True)
        for res in self.pool.map(run, todo):
            self.cache[_key(res["spec"])] = res
            s = res["spec"]
            print(f"  {s['method']:5s} lr={s['lr']:g} seed={s['seed']} "
                  f"{s.get('targets', '')} r={s.get('r', '')} rs={s.get('rslora', '')}: "
                  f"val {res['val_acc']:.3f} test {res['test_acc']:.3f} ({res['cpu_s']:.0f} s)", flush=True)
            self.save()

    def get(self, specs: list[dict]) -> list[dict]:
        return [self.cache[_key(s)] for s in specs]

    def save(self, summary=None):
        from importlib.metadata import version

        doc = {
            "about": "chapter 02 sweeps; regenerate with python -m pedagogy_lib.book.ch02.experiment",
            "config": {"n_train": N_TRAIN, "epochs": EPOCHS, "batch_size": BATCH, "head_lr": HEAD_LR,
                       "schedule": "cosine", "warmup": 0.06, "seeds": list(SEEDS), "eval_seeds": list(EVAL_SEEDS),
                       "lrs": LRS, "ranks": RANKS, "alpha": ALPHA, "placements": PLACEMENTS,
                       "same_rank": SAME_RANK, "data": "data.polarity_task(seed=0); subsample(train, n_train, 0); "
                                                     "full val and test splits", "quick": self.quick},
            "versions": {"python": platform.python_version(), "torch": version("torch"),
                         "numpy": version("numpy"), "threads_per_run": 1},
            "runs": sorted(self.cache.values(), key=lambda r: _key(r["spec"])),
        }
        if summary is not None:
            doc["summary"] = summary
        OUT.parent.mkdir(parents=True, exist_ok=True)
        tmp = OUT.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, OUT)


def _mean(runs, key="test_acc"):
    return sum(r[key] for r in runs) / len(runs)


def _stats(runs) -> dict:
    """Accuracies and their means over one setting's seeds (and ‖s·BA‖ for LoRA)."""
    return {"test_acc": [r["test_acc"] for r in runs], "val_acc": [r["val_acc"] for r in runs],
            "mean_test": _mean(runs), "mean_val": _mean(runs, "val_acc"), "trainable": runs[0]["trainable"],
            "final_loss": _mean(runs, "final_loss"), "seeds": [r["spec"]["seed"] for r in runs],
            **({"delta_norm": _mean(runs, "delta_norm"), "r": runs[0]["spec"]["r"]}
               if runs[0]["spec"]["method"] == "lora" else {})}


def by_seed(setting: dict, key: str = "test_acc") -> dict:
    """{seed: accuracy in points} of one summarised setting (``_stats``): what pairs by seed."""
    if len(setting["seeds"]) != len(setting[key]):
        raise ValueError(f"by_seed: {len(setting['seeds'])} seeds but {len(setting[key])} values of {key!r}")
    return {int(s): 100 * float(a) for s, a in zip(setting["seeds"], setting[key])}


def paired(a: dict, b: dict, key: str = "test_acc") -> dict:
    """a − b in points, matched by seed (chapter 08, Eqs. 8.4–8.7; ``stats.paired_by_seed``):
    mean, SE, 95 % t-interval with n − 1 degrees of freedom, n, and ``tie``."""
    return stats.paired_by_seed(by_seed(a, key), by_seed(b, key))


def gain(a: dict, b: dict, key: str = "test_acc") -> dict:
    """{seed: a − b in points}: one setting's gain over another, seed by seed (to pair two gains)."""
    x, y = by_seed(a, key), by_seed(b, key)
    if set(x) != set(y):
        raise ValueError(f"gain: the two settings need the same seeds, got {sorted(x)} and {sorted(y)}")
    return {s: x[s] - y[s] for s in x}


def _summarise(best, budget, lr_runs, main_runs, place, same, ranks) -> dict:
    """The summary the chapter, its claims and its figures read."""
    return {
        "best_lr": best, "total_params": main_runs["lora"][0]["total"], "budget": budget,
        "lr_sweep": {m: {f"{lr:g}": _stats(v) for lr, v in d.items()} for m, d in lr_runs.items()},
        "main": {m: {"lr": best[m], **_stats(v)} for m, v in main_runs.items()},
        "placement": {k: _stats(v) for k, v in place.items()},
        "same_rank": {k: _stats(v) for k, v in same.items()},
        "rank": {("rslora" if rs else "alpha_over_r"): {str(r): _stats(v) for r, v in d.items()}
                 for rs, d in ranks.items()},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="tiny smoke run, written to the temp dir")
    args = ap.parse_args(argv)
    global N_TRAIN, EPOCHS, SEEDS, EVAL_SEEDS, LRS, RANKS, OUT
    if args.quick:  # a smoke test of the whole pipeline, written outside the repository
        OUT = pathlib.Path(tempfile.gettempdir()) / "ch02_sweeps_quick.json"
        N_TRAIN, EPOCHS, SEEDS, EVAL_SEEDS = 64, 1, (0,), (0,)
        LRS = {k: v[:1] for k, v in LRS.items()}
        RANKS = [1, 8, 16]
    t0 = time.time()
    sw = Sweep(args.jobs, args.quick)
    common = {"n_train": N_TRAIN, "epochs": EPOCHS, "n_eval": 64 if args.quick else None}
    lora_spec = lambda **kw: {"method": "lora", "targets": QV, "r": 8, "alpha": ALPHA, "rslora": False,  # noqa
                              **common, **kw}
    base = {"probe": lambda lr, seed: {"method": "probe", "lr": lr, "seed": seed, **common},
            "lora": lambda lr, seed: lora_spec(lr=lr, seed=seed),
            "full": lambda lr, seed: {"method": "full", "lr": lr, "seed": seed, **common}}
    # A: learning rates
    specs_a = {m: {lr: [base[m](lr, s) for s in SEEDS] for lr in LRS[m]} for m in base}
    sw.go([s for d in specs_a.values() for v in d.values() for s in v])
    lr_runs = {m: {lr: sw.get(v) for lr, v in d.items()} for m, d in specs_a.items()}
    best = {m: max(LRS[m], key=lambda lr: _mean(lr_runs[m][lr], "val_acc")) for m in base}
    lr = best["lora"]
    budget = lr_runs["lora"][lr][0]["trainable"]
    # B: every evaluation seed at each best learning rate; C: placement at the (q,v) r=8 budget
    # and two settings at the same rank; D: rank sweep at fixed α and rate, both scalings.
    # B–D pair their settings over EVAL_SEEDS (chapter 08, Eqs. 8.4–8.7)
    specs_b = {m: [base[m](best[m], s) for s in EVAL_SEEDS] for m in base}
    specs_c = {name: [lora_spec(lr=lr, seed=s, targets=t, r=8 if name == "q,v" else budget_rank(t, budget))
                      for s in EVAL_SEEDS] for name, t in PLACEMENTS.items()}
    specs_s = {name: [lora_spec(lr=lr, seed=s, targets=t, r=8) for s in EVAL_SEEDS] for name, t in SAME_RANK.items()}
    specs_d = {rs: {r: [lora_spec(lr=lr, seed=s, r=r, rslora=rs) for s in EVAL_SEEDS] for r in RANKS}
               for rs in (False, True)}
    sw.go([s for group in (specs_b, specs_c, specs_s) for v in group.values() for s in v]
          + [s for d in specs_d.values() for v in d.values() for s in v])
    sw.pool.shutdown()
    main_runs = {m: sw.get(v) for m, v in specs_b.items()}
    place = {k: sw.get(v) for k, v in specs_c.items()}
    same = {k: sw.get(v) for k, v in specs_s.items()}
    ranks = {rs: {r: sw.get(v) for r, v in d.items()} for rs, d in specs_d.items()}
    summary = _summarise(best, budget, lr_runs, main_runs, place, same, ranks)
    sw.save(summary)
    print(f"wrote {OUT} in {time.time() - t0:.0f} s")
    print(json.dumps({k: summary[k] for k in ("best_lr", "budget")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
