"""Chapter 08's harness: every method on the same task, budget, seeds and training loop.

A *method* is a function that takes a freshly loaded torch MiniLM and decides what is
trainable (freezing the rest, inserting modules where it needs them). Everything else is
shared: the head, the loop (``torch_ref.train``), the data split, the learning-rate
selection, the measurements. That sharing is the whole point: differences between rows
are then differences between methods, not between scripts.

Protocol (``compare``):
1. for each method, train seed 0 at each learning rate of its grid, keep the rate with the
   best *validation* accuracy (ties → the smaller rate);
2. train the remaining seeds at that rate;
3. report test accuracy mean ± std over seeds, trainable parameters (head excluded) and
   their share of MiniLM, seconds per epoch, training-state memory and inference latency
   (merged where the method allows it).

``python -m pedagogy_lib.compare`` (= ``make compare``) runs the full protocol and writes
``chapters/results/ch08_compare.json``; the CI budget runs the same code path, smaller.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import data as D
from .models import load_minilm
from .torch_ref import adapters as TA, bitfit as TB, lora as TL, prefix as TP
from .torch_ref.train import Batches, Classifier, TrainConfig, accuracy, count_trainable, train_classifier

RESULTS = Path(__file__).resolve().parent.parent / "chapters" / "results" / "ch08_compare.json"


@dataclass(frozen=True)
class Budget:
    n_train: int = 1024
    n_eval: int = 500          # validation and test subsamples (class-balanced, fixed seed)
    epochs: int = 2
    batch_size: int = 32
    seeds: tuple = (0, 1, 2)
    full_grid: bool = True     # False: only the first learning rate of each grid (CI)

    def __post_init__(self):
        if self.n_train < 2 or self.n_eval < 2 or self.epochs < 1 or self.batch_size < 1 or not self.seeds:
            raise ValueError(f"invalid budget {self}")


FULL = Budget()
CI = Budget(n_train=64, n_eval=64, epochs=1, batch_size=32, seeds=(0,), full_grid=False)


@dataclass(frozen=True)
class Method:
    name: str
    setup: Callable  # (torch MiniLM, seed) -> None; freezes/inserts as the method requires
    lrs: tuple       # grid searched on validation; the first entry is the usual default
    mergeable: bool = False
    note: str = ""


def _freeze_all(model):
    for p in model.net.parameters():
        p.requires_grad_(False)


def _qlora(model, seed):
    """NF4 + double quantisation of every linear layer, then LoRA (q,v) on top. LoRA goes on
    before ``to_device``: bitsandbytes quantises a Linear4bit when it is moved."""
    from .torch_ref import qlora

    qlora.quantize_linears(model.bert, "all-linear")
    TL.attach_lora(model.bert, ("query", "value"), r=8, alpha=16, seed=seed)
    qlora.to_device(model.net)


METHODS: dict[str, Method] = {m.name: m for m in [
    Method("probe", lambda m, s: _freeze_all(m), (3e-3, 1e-2), note="frozen encoder, head only"),
    Method("full", lambda m, s: None, (5e-5, 1e-4), note="every weight"),
    Method("lora_qv", lambda m, s: TL.attach_lora(m.bert, ("query", "value"), r=8, alpha=16, seed=s),
           (1e-3, 3e-3), mergeable=True, note="r=8, α=16 on W_q, W_v"),
    Method("lora_all", lambda m, s: TL.attach_lora(m.bert, "all-linear", r=8, alpha=16, seed=s),
           (1e-3, 3e-3), mergeable=True, note="r=8, α=16 on every linear layer"),
    Method("houlsby", lambda m, s: TA.attach_adapters(m.bert, "houlsby", 16, seed=s), (1e-3, 3e-3),
           note="m=16, two adapters per block"),
    Method("pfeiffer", lambda m, s: TA.attach_adapters(m.bert, "pfeiffer", 32, seed=s), (1e-3, 3e-3),
           note="m=32, one adapter per block"),
    Method("prefix", lambda m, s: TP.attach_prefix(m.bert, 10, reparam=128, seed=s), (1e-3, 3e-3),
           note="m=10 virtual tokens, MLP reparameterisation (folded for inference)"),
    Method("prompt", lambda m, s: TP.attach_prompt(m.bert, 10, init="vocab", seed=s), (3e-3, 3e-2),
           note="m=10 soft prompt at the input, vocabulary init"),
    Method("ptuning_v2", lambda m, s: TP.attach_ptuning_v2(m.bert, 10, seed=s), (1e-3, 3e-3),
           note="m=10 per-layer keys/values, no reparameterisation"),
    Method("bitfit", lambda m, s: TB.apply_bitfit(m.bert), (1e-3, 3e-3), note="biases + LayerNorm β"),
    Method("qlora", _qlora, (1e-3, 3e-3), note="NF4+DQ base (bitsandbytes Linear4bit), LoRA r=8 on W_q, W_v"),
]}


def check_methods(names) -> list[str]:
    names = list(METHODS) if names is None else list(names)
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    return names


def splits(budget: Budget):
    task = D.polarity_task()
    return (D.subsample(task.train, min(budget.n_train, len(task.train)), seed=0),
            D.subsample(task.val, min(budget.n_eval, len(task.val)), seed=0),
            D.subsample(task.test, min(budget.n_eval, len(task.test)), seed=0))


def training_state_bytes(clf: torch.nn.Module, batch) -> dict[str, int]:
    """Bytes a training step holds: weights as stored, grads and AdamW's two moments of the
    trainable parameters, and the activations autograd saves for backward (one batch)."""
    params = list(clf.parameters())
    trainable = [p for p in params if p.requires_grad]
    weights = sum(p.numel() * p.element_size() for p in params)
    weights += sum(b.numel() * b.element_size() for b in clf.buffers())
    grads = sum(p.numel() * p.element_size() for p in trainable)
    saved: dict[int, int] = {}

    def pack(t):
        if not any(t is p for p in params):  # parameters are counted once, above
            saved[id(t)] = t.numel() * t.element_size()
        return t

    ids, mask, y = batch
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = torch.nn.functional.cross_entropy(clf(ids, mask), y)
    loss.backward()
    clf.zero_grad(set_to_none=True)
    return {"weights": weights, "grads": grads, "adam": 2 * grads, "activations": sum(saved.values()),
            "total": weights + 3 * grads + sum(saved.values())}


def _latency_model(model, method: Method):
    """The inference-time model: LoRA merged, prefix MLP folded, the rest as trained."""
    if method.mergeable:
        TL.merge_all(model.bert)
    if method.name == "prefix":
        TP.fold(model.bert)
    return model.bert.eval()


def run(method: str, lr: float, seed: int, budget: Budget = FULL, data=None, measure: bool = False) -> dict:
    """Train one (method, lr, seed) and return plain numbers."""
    meth = METHODS[check_methods([method])[0]]
    if not (isinstance(lr, float) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"learning rate must be a positive float, got {lr!r}")
    train, val, test = data or splits(budget)
    torch.manual_seed(seed)
    model = load_minilm("torch")
    meth.setup(model, seed)
    clf = Classifier(model.net, seed=seed)
    dev = next(clf.parameters()).device
    b = [Batches(model.tokenizer, s.tokens, s.labels, dev) for s in (train, val, test)]
    cfg = TrainConfig(lr=lr, epochs=budget.epochs, batch_size=budget.batch_size, seed=seed,
                      head_lr=max(lr, 1e-3))
    hist = train_classifier(clf, b[0], b[1], cfg)
    out = {"method": method, "lr": lr, "seed": seed, "val_acc": hist.val_acc[-1],
           "test_acc": accuracy(clf, b[2]), "trainable": count_trainable(clf),
           "sec_per_epoch": hist.seconds / budget.epochs, "final_loss": float(np.mean(hist.losses[-5:]))}
    if measure:
        out["memory"] = training_state_bytes(clf, next(b[0].epoch(budget.batch_size, None)))
        out["latency_model"] = _latency_model(model, meth)
    return out


def compare(names=None, budget: Budget = FULL, progress: bool = True) -> dict:
    """The protocol of the module docstring; returns a JSON-ready dict."""
    names = check_methods(names)
    data = splits(budget)
    n_model = sum(p.numel() for p in load_minilm("torch").net.parameters())
    results, latency_models = {}, {}
    for name in names:
        meth = METHODS[name]
        grid = meth.lrs if budget.full_grid else meth.lrs[:1]
        t0 = time.perf_counter()
        trials = [run(name, lr, budget.seeds[0], budget, data, measure=True) for lr in grid]
        best = max(trials, key=lambda r: (r["val_acc"], -r["lr"]))
        latency_models[name] = best.pop("latency_model")
        runs = [best] + [run(name, best["lr"], s, budget, data) for s in budget.seeds[1:]]
        accs = [r["test_acc"] for r in runs]
        results[name] = {
            "note": meth.note, "lr_grid": list(grid), "lr": best["lr"],
            "val_by_lr": {f"{t['lr']:g}": t["val_acc"] for t in trials},
            "test_acc": accs, "mean": statistics.fmean(accs),
            "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "trainable": best["trainable"], "pct": 100 * best["trainable"] / n_model,
            "sec_per_epoch": statistics.fmean(r["sec_per_epoch"] for r in runs),
            "memory": best["memory"]}
        for t in trials:
            t.pop("latency_model", None)
        if progress:
            r = results[name]
            print(f"{name:<11} lr={r['lr']:<7g} test={r['mean']:.3f}±{r['std']:.3f} "
                  f"trainable={r['trainable']:>9,} ({r['pct']:.3f}%)  {time.perf_counter() - t0:.0f} s",
                  file=sys.stderr)
    lat = TA.time_forward({"none": latency_models.get("probe") or next(iter(latency_models.values())),
                           **latency_models}, batch=32, seq_len=8, rounds=5)
    for name in names:
        results[name]["latency_ratio"] = lat[name]["ratio"]
    return {"budget": asdict(budget), "n_model": n_model, "methods": results,
            "versions": {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()},
            "threads": torch.get_num_threads()}


def save(res: dict, path=RESULTS) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1, sort_keys=True) + "\n")
    return path


def load(path=RESULTS) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `make compare`")
    res = json.loads(path.read_text())
    if "methods" not in res or "budget" not in res:
        raise ValueError(f"{path} is not a compare results file")
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ci", action="store_true", help="the reduced CI budget (one seed, few steps)")
    ap.add_argument("--methods", nargs="*", default=None)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    res = compare(args.methods, CI if args.ci else FULL)
    print(save(res, args.out))


if __name__ == "__main__":
    main()
