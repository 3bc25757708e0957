"""Chapter 06 sweep: a learning curve of BitFit against LoRA (q,v), full fine-tuning and a
linear probe, over training-set sizes, on VADER polarity.

Run:  OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m pedagogy_lib.book.ch06.experiment [--jobs 2]
Writes chapters/results/ch06_learning_curve.json: five arms (``CURVE``, the two-bias variant
included), n = 64…2048, five seeds, 172 training runs, 58 CPU-minutes at one thread per process
(``cpu_s`` in the file, the sum of the runs' own CPU time). Measured in two parts on the shared
2-core machine: the four other arms at n ≤ 1024, 118 runs, 36 CPU-minutes; then the two-bias arm
and n = 2048 for every arm, 54 runs, 22 CPU-minutes (the process: 1,303 CPU-seconds, 34 minutes
wall beside other work), resumed from the first part's run log. --jobs 2 runs two processes.
Every finished run is appended to build/ch06_runs.jsonl, so an interrupted sweep resumes where
it stopped (``runner.run_log``).

Protocol: the book's evidence protocol, through the runner (``runner.protocol``, chapter 08
Eqs. 8.1–8.7), with the arms as registry records (``ARMS``):
1. at n = SELECT_N training words, each arm's grid at seeds 0 and 1; the rate with the best
   *mean validation* accuracy (ties → the smaller rate); a grid whose best rate sits at an
   edge is extended (at most twice), else the arm is recorded ``bracketed: False``;
2. for every size n and seed 0–4 (``runner.run`` at the chosen rate): a class-balanced
   subsample of n training words drawn with that seed trains for
   max(MIN_EPOCHS, ⌈MIN_STEPS·batch/n⌉) epochs (so small sets still get MIN_STEPS updates)
   and is scored on the whole validation and test splits. Every arm sees the same subsample,
   data order and head initialisation per seed, so arms compare by paired differences.
"""
from __future__ import annotations

import argparse
import functools
import math
import platform
import time
from concurrent.futures import as_completed

import numpy as np
import torch

from pedagogy_lib import data
from pedagogy_lib import runner
from pedagogy_lib.bitfit import QM2
from pedagogy_lib.registry import Arm, arms
from pedagogy_lib.runner import Budget
from pedagogy_lib.torch_ref.encoder import load_minilm_torch
from torch import nn
from pedagogy_lib import results as R

OUT = R.RESULTS / "ch06_learning_curve.json"
RUN_LOG = R.RESULTS.parent.parent / "build" / "ch06_runs.jsonl"  # finished runs, for resuming
SIZES = (64, 128, 256, 512, 1024, 2048)
SEEDS = (0, 1, 2, 3, 4)
BATCH, MIN_EPOCHS, MIN_STEPS, SELECT_N, SELECT_SEEDS, MAX_EXTENSIONS = 32, 3, 60, 512, 2, 2
ARMS = arms(  # the registry's records; grids start around the rates the first (3-seed) sweep chose
    Arm("BitFit", "bitfit", note="every bias + LayerNorm β"),
    Arm("BitFit (b_q, b_m2)", "bitfit", {"sites": QM2}, note="b_q and b_m2 only (Eq. 6.4)"),
    Arm("LoRA r=8 (q,v)", "lora", note="r=8, α=16 on W_q, W_v"),
    Arm("full FT", "full", lrs=(2e-5, 5e-5, 1e-4), note="every weight"),
    Arm("probe", "probe", lrs=(1e-2, 3e-2, 1e-1), note="frozen encoder, head only"),
)
CURVE = tuple(ARMS)  # the stored curve: every arm, the two-bias variant included


# ------------------------------------------------------- stored results, analysis
def load(name: str) -> dict:
    return R.load(name, "python -m pedagogy_lib.book.ch06.experiment")


def preactivation_data(bert_before, bert_after, tokenizer, tokens, layer: int) -> dict:
    """GELU inputs of block ``layer`` (Eq. 6.3) at the real tokens of ``tokens``, before and
    after training, plus the change of that block's b_m2 (the GELU's own bias)."""
    import torch

    ids, mask = (torch.from_numpy(a) for a in tokenizer(list(tokens)))
    dev = next(bert_before.parameters()).device
    ids, mask = ids.to(dev), mask.to(dev)
    z0 = pre_activations(bert_before, ids, mask, layer).cpu().numpy()
    z1 = pre_activations(bert_after, ids, mask, layer).cpu().numpy()
    b0 = bert_before.encoder.layer[layer].intermediate.dense.bias.detach().cpu().numpy()
    b1 = bert_after.encoder.layer[layer].intermediate.dense.bias.detach().cpu().numpy()
    ffn = b0.size
    on0, on1 = (z0.reshape(-1, ffn) > 0).mean(0), (z1.reshape(-1, ffn) > 0).mean(0)
    return {"layer": layer, "before": z0, "after": z1, "delta_b": b1 - b0,
            "on_before": on0, "on_after": on1}


def _default_preactivation_data() -> dict:
    """Chapter 06's live run (§5), repeated: the sweep's seed-0 BitFit run at the size its rate
    was chosen at (512 words), through the runner's route with that size's budget
    (``runner.train_arm``: the same epochs, and the head at the runner's rate max(lr, 1e-3),
    not at lr); the last block on 256 val words, against a fresh pretrained MiniLM."""
    from pedagogy_lib import data

    curve = load("ch06_learning_curve")
    c = curve["config"]
    n = c["lr_selected_at_n"]
    b = budget(n, tuple(c["seeds"]))
    task = data.polarity_task()
    model, _, _, _ = runner.train_arm(ARMS["BitFit"], 0, runner.splits(task, b, seed=0)[0],
                                      curve["results"]["BitFit"]["lr"], b)
    mm = load_minilm_torch(device="cpu")  # the pretrained model, untouched by training
    val = data.subsample(task.val, 256, 0)
    return preactivation_data(mm.bert, model.encoder.bert, mm.tokenizer, val.tokens,
                              mm.bert.config.num_hidden_layers - 1)


def load_results() -> dict:
    return {"curve": load("ch06_learning_curve")}


@torch.no_grad()
def pre_activations(bert: nn.Module, ids: torch.Tensor, mask: torch.Tensor, layer: int) -> torch.Tensor:
    """The FFN pre-activations W₁h₁ + b_m2 (the GELU's input) of block ``layer`` at the
    real tokens, flattened: what a BitFit shift of b_m2 moves (Eq. 6.3)."""
    blocks = bert.encoder.layer
    if not 0 <= layer < len(blocks):
        raise ValueError(f"layer must lie in [0, {len(blocks)}), got {layer}")
    seen = []
    handle = blocks[layer].intermediate.dense.register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        bert(ids, mask)
    finally:
        handle.remove()
    z = seen[0]
    return z[:, z.shape[1] - ids.shape[1]:][mask.bool()].reshape(-1)


PRE_BINS = np.linspace(-6, 4, 81)  # the histogram of GELU inputs in "06_preactivation"
PRE_OUT = R.RESULTS / "ch06_preactivation.json"


def preactivation_summary(d: dict) -> dict:
    """What "06_preactivation" plots, small enough to store: densities of the GELU inputs
    before and after on ``PRE_BINS``, and per unit Δb_m2 and the firing fractions."""
    if "density_before" in d:
        return d
    dens = {k: np.histogram(d[k], PRE_BINS, density=True)[0] for k in ("before", "after")}
    sig = lambda a: [float(f"{x:.6g}") for x in np.asarray(a, np.float64)]  # noqa: E731
    return {"layer": int(d["layer"]), "bins": sig(PRE_BINS), "density_before": sig(dens["before"]),
            "density_after": sig(dens["after"]), "delta_b": sig(d["delta_b"]),
            "on_before": sig(d["on_before"]), "on_after": sig(d["on_after"])}


MOVED = 0.05  # a unit "switched": its on-rate (fraction of tokens with a positive GELU input) moved > 5 points


def switched_fraction(pre: dict, moved: float = MOVED) -> float:
    """The fraction of FFN units whose on-rate moved by more than ``moved`` (Eq. 6.3's shift at work)."""
    return float((np.abs(np.asarray(pre["on_after"]) - np.asarray(pre["on_before"])) > moved).mean())


def stored_switched() -> float:
    """``switched_fraction`` of the stored pre-activation study (``PRE_OUT``)."""
    return switched_fraction(R.load(PRE_OUT, "python -m pedagogy_lib.book.ch06.experiment"))


def preactivation_study():
    """Chapter 06's live BitFit run, repeated and summarised into ``PRE_OUT``."""
    return R.save(preactivation_summary(_default_preactivation_data()), PRE_OUT)


# ------------------------------------------------------------------ the sweep
def epochs_for(n: int) -> int:
    return max(MIN_EPOCHS, math.ceil(MIN_STEPS * BATCH / n))


def budget(n: int, seeds=SEEDS) -> Budget:
    """One size's budget: n training words drawn per seed, the epochs rule, whole val/test splits."""
    return Budget(n_train=n, n_eval=None, epochs=epochs_for(n), batch_size=BATCH, seeds=tuple(seeds),
                  resample=True, select_seeds=min(SELECT_SEEDS, len(seeds)), max_extensions=MAX_EXTENSIONS)


def _curve(size_runs: dict) -> dict:
    """{n: per-seed val/test accuracies, their mean and sd, updates} of one arm."""
    out = {}
    for n, runs in sorted(size_runs.items()):
        test = [round(r["test_acc"], 6) for r in runs]
        out[str(n)] = {"seeds": [r["seed"] for r in runs], "test_by_seed": test,
                       "val_by_seed": [round(r["val_acc"], 6) for r in runs],
                       "mean": round(float(np.mean(test)), 6), "std": round(float(np.std(test, ddof=1)), 6),
                       "epochs": epochs_for(n), "steps": len(runs[0]["losses"])}
    return out


def _summary(arm: Arm, found: dict, size_runs: dict) -> dict:
    sel = found["selection"]
    runs = [r for rs in size_runs.values() for r in rs]
    # every run trained once: the selection's trials, then the curve's runs that are not among them
    # (at the selection size, the selection seeds' runs at the chosen rate ARE trials)
    trials = {id(r) for r in found["trials"]}
    trained = found["trials"] + [r for r in runs if id(r) not in trials]
    return {"note": arm.note, "trainable": runs[0]["trainable"], **R.selection(sel, 6), "curve": _curve(size_runs),
            "cpu_s": round(sum(r["cpu_s"] for r in trained), 1)}


def _at_sizes(chosen, found, task, sizes, seeds, select_n, jobs, log, run_fn=None) -> dict:
    """{label: {n: runs by seed}}: every size but ``select_n`` (the protocol ran it) at the chosen rate."""
    pool, out, pending = runner.Pool(jobs, run_fn), {a.label: {n: [] for n in sizes} for a in chosen}, {}

    def take(label, n, r, on_result=None):
        if on_result is not None:
            on_result(label, r)
            print(f"{label:<19} n={n:<5} seed={r['seed']} test={r['test_acc']:.3f} ({r['cpu_s']:.0f} CPU-s)",
                  flush=True)
        out[label][n].append(r)

    try:
        for n in sizes:
            b = budget(n, seeds)
            done, on_result = runner.run_log(log, b, chosen)
            for a in chosen:
                lr = found[a.label]["selection"]["chosen"]
                for s in b.seeds:
                    if n == select_n:
                        continue
                    if (a.label, lr, s) in done:
                        take(a.label, n, done[(a.label, lr, s)])
                        continue
                    f = pool.submit(a, task, b, s, lr)
                    if f.done():  # one process: run already
                        take(a.label, n, f.result(), on_result)
                    else:
                        pending[f] = (a.label, n, on_result)
            if n == select_n:
                for a in chosen:
                    out[a.label][n] = found[a.label]["runs"]
        for f in as_completed(pending):
            take(*pending[f][:2], f.result(), pending[f][2])
    finally:
        pool.close()
    order = {s: i for i, s in enumerate(seeds)}
    return {k: {n: sorted(rs, key=lambda r: order[r["seed"]]) for n, rs in v.items()} for k, v in out.items()}


def _run_and_log(run_fn, on_result, arm, *args, **kw) -> dict:
    r = run_fn(arm, *args, **kw)
    on_result(arm.label, r)
    return r


def learning_curve(names=None, sizes=SIZES, seeds=SEEDS, jobs: int = 1, log=RUN_LOG, progress=True,
                   select_n: int = SELECT_N, run_fn=None) -> dict:
    """The protocol of the module docstring; returns the JSON-ready results. ``run_fn``
    replaces ``runner.run`` (tests)."""
    chosen = [ARMS[n] for n in (names or CURVE)]
    if select_n not in sizes:
        raise ValueError(f"sizes must include the selection size {select_n}, got {sizes}")
    task, t0 = data.polarity_task(), time.time()
    done, on_result = runner.run_log(log, budget(select_n, seeds), chosen)
    select_fn = run_fn
    if jobs == 1:  # one process runs each job as it is submitted: log it then, not once all are in
        select_fn, on_result = functools.partial(_run_and_log, run_fn or runner.run, on_result), None
    found = runner.protocol(chosen, task, budget(select_n, seeds), jobs=jobs, progress=progress,
                            done=done, on_result=on_result, run_fn=select_fn)
    size_runs = _at_sizes(chosen, found, task, sizes, seeds, select_n, jobs, log, run_fn)
    results = {a.label: _summary(a, found[a.label], size_runs[a.label]) for a in chosen}
    config = {"sizes": list(sizes), "seeds": list(seeds), "batch_size": BATCH, "min_epochs": MIN_EPOCHS,
              "min_steps": MIN_STEPS, "head_lr": None, "head_lr_rule": "max(lr, 1e-3) (runner)",
              "lr_selected_at_n": select_n, "select_seeds": list(seeds[:SELECT_SEEDS]),
              "max_extensions": MAX_EXTENSIONS, "lr_grids": {a.label: list(a.grid) for a in chosen},
              "schedule": "linear", "warmup": 0.06, "n_val": len(task.val), "n_test": len(task.test),
              "task": "VADER polarity, threshold 0.6"}
    return {"config": config, "results": results, "wall_s": round(time.time() - t0, 1),
            "cpu_s": round(sum(r["cpu_s"] for r in results.values()), 1),
            "versions": {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", nargs="*", default=list(CURVE), choices=list(ARMS))
    ap.add_argument("--sizes", nargs="*", type=int, default=list(SIZES))
    ap.add_argument("--seeds", type=runner.cli_count, default=len(SEEDS), help="seeds 0..k-1 (default 5)")
    ap.add_argument("--select-n", type=int, default=SELECT_N, help="the size the rates are chosen at")
    ap.add_argument("--jobs", type=runner.cli_count, default=1, help="worker processes, one thread each")
    ap.add_argument("--part", choices=("curve", "preactivation", "all"), default="all")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--log", default=str(RUN_LOG), help="finished runs (JSON lines): read to resume, appended to")
    args = ap.parse_args(argv)
    if args.part in ("curve", "all") and args.select_n not in args.sizes:  # before the preactivation study writes
        ap.error(f"--sizes must include the selection size --select-n {args.select_n}, got {args.sizes}")
    if args.part in ("preactivation", "all"):
        print(f"wrote {preactivation_study()}")
    if args.part in ("curve", "all"):
        res = learning_curve(args.methods, tuple(args.sizes), tuple(range(args.seeds)), args.jobs, args.log,
                             select_n=args.select_n)
        print(f"wrote {R.save(res, args.out)}")


if __name__ == "__main__":
    main()
