"""The runner: one training route, one learning-rate protocol, one timer, one memory count.

Every experiment of the book goes through here (the chapter rooms in ``book/chNN/
experiment.py``, ``make sweeps``, ``make compare``), so a difference between two rows of
any table is a difference between methods, not between scripts.

* ``run(arm, task, budget, seed, lr)``: load MiniLM (torch), let the registry attach the
  method, put the shared head on (``torch_ref.train.Classifier``), train with the shared
  loop, return plain numbers (validation and test accuracy, trainable count, loss curve…);
* ``protocol(arms, task, budget)``: the evidence protocol of DESIGN.md: each arm's grid at
  the first ``budget.select_seeds`` seeds, the rate with the best mean validation accuracy
  (ties: the smaller rate), the grid extended while that rate sits at an edge (at most
  ``budget.max_extensions`` times, else the result says ``bracketed: False``), then the
  other seeds at that rate; runs spread over ``jobs`` one-thread processes;
* ``run_decoder(arm, task, seed, lr)`` and ``decoder_protocol(arms, task)``: the same for
  chapter 09's decoder (chapter 10): the registry's decoder form of the arm on a fresh
  pretrained checkpoint, the response-masked training loop (``torch_ref.decoder_peft.train``),
  and the rate chosen by ``stats.select_lr`` on the mean validation score of two seeds;
* ``time_forward``: forward latency of several networks timed in turn, as paired ratios
  against a reference, with the reference timed twice as the noise control;
* ``step_memory``: the bytes one training step holds (Eq. 7.12).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import multiprocessing
import statistics
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import data as D
from . import decoder_io as IO
from . import checks, stats
from .checks import check_size
from .registry import Arm, checked_grid, decoder_arm, get
from .torch_ref import decoder_peft as DP
from .torch_ref.encoder import load_minilm_torch
from .torch_ref.qlora import DequantLog, quantized_layers, weight_bytes
from .torch_ref.train import Batches, Classifier, TrainConfig, accuracy, count_trainable, train_classifier


@dataclass(frozen=True)
class Budget:
    """How much each run gets. ``n_eval`` None: the whole validation and test splits.
    ``resample``: each seed draws its own training subsample (else seed 0's for all).
    ``head_lr`` None: max(lr, 1e-3); an arm that trains the head only (a probe) trains it at
    the run's ``lr`` whatever ``head_lr`` says (its one rate is the one searched).
    ``full_grid`` False: only each grid's first rate.
    ``select_seeds``: the first k ``seeds`` whose mean validation accuracy picks the rate;
    ``max_extensions``: how often a grid whose best rate sits at an edge is extended
    (``stats.next_lr``); the defaults (1, 0) are the older one-seed, fixed-grid search."""
    n_train: int = 1024
    n_eval: int | None = 500
    epochs: int = 2
    batch_size: int = 32
    seeds: tuple = (0, 1, 2)
    full_grid: bool = True
    latency_rounds: int = 61
    head_lr: float | None = None
    resample: bool = False
    schedule: str = "linear"
    select_seeds: int = 1
    max_extensions: int = 0

    def __post_init__(self):
        try:
            self._check()
        except (TypeError, ValueError) as e:  # the field's own message, after the whole budget
            raise type(e)(f"invalid budget {self}: {e}") from None
        # plain Python numbers from here on: a budget is written to JSON (np.int64 is not JSON)
        ints = ("n_train", "epochs", "batch_size", "latency_rounds", "select_seeds", "max_extensions")
        plain = {k: int(getattr(self, k)) for k in ints} | {"seeds": tuple(int(s) for s in self.seeds)}
        plain |= {"n_eval": None if self.n_eval is None else int(self.n_eval),
                  "head_lr": None if self.head_lr is None else float(self.head_lr)}
        for k, v in plain.items():
            object.__setattr__(self, k, v)

    def _check(self):
        """Whole numbers where a count is meant (2.5 epochs, True seeds and NaN sizes refused),
        rates finite and > 0, seeds distinct ints >= 0, a schedule the training loop knows."""
        for name in ("n_train", "epochs", "batch_size", "latency_rounds", "select_seeds"):
            checks.positive_int(getattr(self, name), name)
        if self.n_train < 2 or (self.n_eval is not None and checks.positive_int(self.n_eval, "n_eval") < 2):
            raise ValueError("n_train and n_eval must be >= 2 (or n_eval None: whole splits)")
        if isinstance(self.seeds, (str, bytes)) or not hasattr(self.seeds, "__len__") or len(self.seeds) == 0:
            raise ValueError(f"seeds must be a non-empty sequence of ints, got {self.seeds!r}")
        for s in self.seeds:
            checks.seed(s, "each seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds repeat: {list(self.seeds)} (runs pair by seed)")
        if self.select_seeds > len(self.seeds):
            raise ValueError(f"select_seeds must be 1…{len(self.seeds)} (the number of seeds)")
        checks.nonneg_int(self.max_extensions, "max_extensions")
        checks.boolean(self.full_grid, "full_grid"), checks.boolean(self.resample, "resample")
        if self.head_lr is not None:
            checks.finite_real(self.head_lr, "head_lr", positive=True)
        TrainConfig(schedule=self.schedule)  # the loop's own check of the schedule's name


def cli_count(text: str) -> int:
    """An argparse ``type`` for a count on an entry point's command line (--jobs, --seeds): an
    int >= 1, so ``--jobs 0`` stops at the command line, before anything loads, trains or writes."""
    try:
        return check_size(int(text), "count")
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}") from None


def as_arm(method) -> Arm:
    """An ``Arm``, or a registry name taken with its defaults."""
    return method if isinstance(method, Arm) else Arm(get(method).name, method)


def splits(task, budget: Budget, seed: int = 0):
    """(train, val, test) ``data.Split``s of ``task`` under ``budget`` (class-balanced subsamples)."""
    def sub(split, n, s):
        return split if n is None else D.subsample(split, min(n, len(split)), seed=s)

    return (sub(task.train, budget.n_train, seed if budget.resample else 0),
            sub(task.val, budget.n_eval, 0), sub(task.test, budget.n_eval, 0))


@lru_cache(maxsize=1)
def _base_minilm():
    return load_minilm_torch(device="cpu")


def fresh_minilm():
    """A private copy of the torch MiniLM (loaded from disk once per process)."""
    base = _base_minilm()
    mm = copy.copy(base)
    mm.net = copy.deepcopy(base.net)
    return mm


def _check_lr(lr):
    if not (isinstance(lr, float) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"learning rate must be a positive float, got {lr!r}")
    return lr


def classifier(arm, seed: int):
    """The module a run of ``arm`` trains, built as every run builds it: a fresh MiniLM set up
    as the arm says, under a seeded head (wrapped, for an arm whose record wraps it). Returns
    (module, MiniLM, head_only), ``head_only`` when the arm left no encoder weight trainable."""
    arm = as_arm(arm)
    mm = fresh_minilm()
    arm.setup_torch(mm, seed)
    head_only = not any(p.requires_grad for p in mm.net.parameters())
    clf = arm.wrap_torch(Classifier(mm.net, seed=seed), seed)   # the subspace arm trains θ0 + P z
    return clf, mm, head_only


def train_arm(arm, seed: int, train, lr: float, budget: Budget):
    """Build and train one classifier; returns (classifier, MiniLM, history, training batches)."""
    clf, mm, head_only = classifier(arm, seed)
    tr = Batches(mm.tokenizer, train.tokens, train.labels, next(clf.parameters()).device)
    cfg = TrainConfig(lr=lr, epochs=budget.epochs, batch_size=budget.batch_size, seed=seed, schedule=budget.schedule,
                      head_lr=lr if head_only else budget.head_lr or max(lr, 1e-3))
    return clf, mm, train_classifier(clf, tr, cfg=cfg), tr


def run(method, task, budget: Budget, seed: int, lr: float, *, data=None, measure: bool = False,
        report=None, return_model: bool = False):
    """Train one (method, seed, lr) on ``task`` and return plain numbers (``measure``:
    add the training step's memory). ``data`` = precomputed ``splits``; ``report(classifier)``
    → dict: numbers of the trained network added to the record (e.g. LoRA's ‖s·BA‖; a
    module-level function where the run goes to a worker); ``return_model``: return
    (record, the trained MiniLM) instead (its ``.net`` carries the method, not the head)."""
    arm, lr = as_arm(method), _check_lr(lr)
    train, val, test = data or splits(task, budget, seed)
    t0 = time.process_time()
    clf, mm, hist, tr = train_arm(arm, seed, train, lr, budget)
    score = lambda s: accuracy(clf, Batches(mm.tokenizer, s.tokens, s.labels, tr.device))  # noqa: E731
    # validation once, after the last epoch: what the per-epoch score's last entry was (scoring
    # in eval mode draws no random numbers), without scoring every epoch of a long small-n run
    out = {"method": arm.label, "lr": lr, "seed": seed, "val_acc": score(val), "test_acc": score(test),
           "trainable": count_trainable(clf), "sec_per_epoch": hist.seconds / budget.epochs,
           "final_loss": float(np.mean(hist.losses[-5:])), "losses": hist.losses,
           "cpu_s": time.process_time() - t0}
    if report is not None:
        out |= report(clf)
    if measure:
        out["memory"] = training_state_bytes(clf, next(tr.epoch(budget.batch_size, None)))
    return (out, mm) if return_model else out


def grid(arm, budget: Budget) -> tuple:
    g = as_arm(arm).grid
    return g if budget.full_grid else g[:1]


def _one_thread():
    torch.set_num_threads(1)


class Pool:
    """Runs ``run`` calls in this process (jobs=1) or in one-thread worker processes."""

    def __init__(self, jobs: int, fn=None):
        jobs = check_size(jobs, "jobs")
        self.fn = fn or run
        self.pool = None if jobs == 1 else ProcessPoolExecutor(
            jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_one_thread)

    def submit(self, *args, **kw) -> Future:
        if self.pool is not None:
            return self.pool.submit(self.fn, *args, **kw)
        return _finished(self.fn(*args, **kw))

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


def _say(r: dict, t0: float):
    print(f"{r['method']:<14} lr={r['lr']:<7g} seed={r['seed']} val={r['val_acc']:.3f} "
          f"test={r['test_acc']:.3f}  {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)


class _Search:
    """One arm's learning-rate search, step by step (the steps of ``stats.select_lr``, with
    the training runs of a step spread over the pool): every rate of the grid at the
    ``select_seeds`` first seeds; their mean validation accuracy per rate; an extension while
    the best rate sits at an edge; then the remaining seeds at the chosen rate."""

    def __init__(self, arm: Arm, budget: Budget):
        # before any run: a grid of one rate cannot be extended, a repeated rate trains twice
        self.grid = checked_grid(f"arm {arm.label!r}", grid(arm, budget), min_rates=2 if budget.max_extensions else 1)
        self.arm, self.budget = arm, budget
        self.seeds = budget.seeds[:budget.select_seeds]
        self.trials, self.finals, self.extensions, self.waiting, self.choice = [], [], 0, 0, None

    def _grid_runs(self, lrs) -> list:
        jobs = [("grid", lr, s) for lr in lrs for s in self.seeds]
        self.waiting += len(jobs)
        return jobs

    def start(self) -> list:
        return self._grid_runs(self.grid)   # sorted floats: an int rate would be refused by run

    def scores(self, raw: bool = False) -> dict:
        """{rate: validation accuracy averaged over the selection seeds}, a diverged rate's (NaN)
        ranked below every other (``stats.ranked``; ``raw``: as measured)."""
        by_lr: dict[float, list] = {}
        for r in self.trials:
            by_lr.setdefault(r["lr"], []).append(r["val_acc"])
        means = {lr: statistics.fmean(v) for lr, v in by_lr.items()}
        return means if raw else stats.ranked(means)[0]

    def add(self, kind: str, r: dict) -> list:
        """Record a finished run; returns the runs this one unlocks as (kind, lr, seed)."""
        if kind == "final":
            self.finals.append(r)
            return []
        self.trials.append(r)
        self.waiting -= 1
        if self.waiting:
            return []
        new = stats.next_lr(self.scores(), self.extensions, self.budget.max_extensions)
        if new is not None:
            self.extensions += 1
            return self._grid_runs([new])
        self.choice = stats.lr_choice(self.scores()) | {"seeds": list(self.seeds), "extensions": self.extensions}
        return [("final", self.choice["chosen"], s) for s in self.budget.seeds[self.budget.select_seeds:]]

    def result(self) -> dict:
        """{"trials": the search's runs by (rate, seed), "runs": every seed at the chosen rate
        (seed order, the first seed first), "selection": ``stats.lr_choice`` + seeds}."""
        ts = sorted(self.trials, key=lambda r: (r["lr"], r["seed"]))
        at = [r for r in ts if r["lr"] == self.choice["chosen"]] + self.finals
        order = {s: i for i, s in enumerate(self.budget.seeds)}
        sel = self.choice | {k: v for k, v in stats.choice(self.scores(raw=True)).items() if k in ("scores", "diverged")}
        return {"trials": ts, "runs": sorted(at, key=lambda r: order[r["seed"]]), "selection": sel}


def protocol(arms, task, budget: Budget, jobs: int = 1, progress: bool = True, run_fn=None,
             done: dict | None = None, on_result=None) -> dict:
    """The evidence protocol (DESIGN.md, chapter 08 Eqs. 8.1–8.7) for every arm: the rate
    chosen on validation over ``budget.select_seeds`` seeds from a grid extended until its best
    point is bracketed (``_Search``), then every other seed at that rate. All arms see the
    same seeds, so the same data order and head initialisation per seed: runs pair by seed.

    Returns {label: {"trials", "runs", "selection"}} (``_Search.result``). Seed-0 runs also
    measure training memory. ``run_fn`` replaces ``run`` (tests; with jobs=1 or picklable);
    ``done`` {(label, lr, seed): result} are reused instead of trained again (a resumed
    ``make compare``); ``on_result(label, result)`` is called on each new result as soon as it
    exists (with jobs=1, before the next run starts: a log it writes survives an interruption)."""
    arms, run_fn, done = [as_arm(a) for a in arms], run_fn or run, done or {}
    search = {a.label: _Search(a, budget) for a in arms}   # every grid checked before any run
    if len(search) != len(arms):
        raise ValueError(f"two arms share a label: {[a.label for a in arms]}")
    shared = jobs == 1 and not budget.resample and run_fn is run  # else each run (or worker) splits
    data = splits(task, budget) if shared else None
    pool, t0 = Pool(jobs, run_fn), time.perf_counter()

    def submit(a, kind, lr, seed):
        key = (a.label, lr, seed)
        f = _finished(done[key]) if key in done else pool.submit(
            a, task, budget, seed, lr, data=data, measure=seed == budget.seeds[0])
        told = key in done  # reused: never reported
        if not told and f.done() and on_result is not None:  # jobs=1 trained it in submit: report it now
            on_result(a.label, f.result())
            told = True
        pending[f] = (kind, a, told)

    pending: dict = {}
    try:
        for a in arms:
            for kind, lr, seed in search[a.label].start():
                submit(a, kind, lr, seed)
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for f in finished:
                kind, a, told = pending.pop(f)
                if not told and on_result is not None:
                    on_result(a.label, f.result())
                if progress:
                    _say(f.result(), t0)
                for kind2, lr, seed in search[a.label].add(kind, f.result()):
                    submit(a, kind2, lr, seed)
    finally:
        pool.close()
    return {label: s.result() for label, s in search.items()}


# the budget fields one run's numbers depend on (seeds, grids and extensions do not change a run)
RUN_FIELDS = ("n_train", "n_eval", "epochs", "batch_size", "head_lr", "resample", "schedule")


def arm_identity(arm) -> dict:
    """What a logged run must share with an arm to stand for it: the registry method, its
    options and the model (as JSON gives them back); the label alone does not say it."""
    a = as_arm(arm)
    return json.loads(json.dumps({"method": a.method, "opts": a.opts, "model": a.model}, sort_keys=True, default=str))


def run_log(path, budget: Budget, arms=()) -> tuple[dict, callable]:
    """Finished runs under this ``budget`` from ``path`` (JSON lines; None: no log), as
    ``protocol``'s ``done`` {(label, lr, seed): result}, and an ``on_result`` callback that
    appends new ones: an interrupted sweep resumes where it stopped. With ``arms`` (the sweep's
    Arms), each new record is stamped with its arm's ``arm_identity``, and a logged run of one
    of these labels is reused only if its stamp matches: an arm whose options were edited under
    the same label trains again."""
    done, stamp = {}, json.loads(json.dumps(asdict(budget)))
    ident = {a.label: arm_identity(a) for a in map(as_arm, arms)}
    if path is None:
        return done, lambda label, r: None
    path = Path(path)
    same = lambda old: all(old.get(k) == stamp[k] for k in RUN_FIELDS)  # noqa: E731
    stale = 0
    if path.exists():
        for r in _log_records(path):
            if not same(r.pop("budget")):
                continue
            if r["label"] in ident and r.pop("arm", None) != ident[r["label"]]:
                stale += 1
                continue
            r.pop("arm", None)
            done[(r.pop("label"), r["lr"], r["seed"])] = r
    if stale:
        print(f"run log {path}: {stale} run(s) not reused: logged for an arm of the same label with other "
              "options (or before arms were stamped)", file=sys.stderr)
    path.parent.mkdir(parents=True, exist_ok=True)
    torn = True   # checked once, at the first append

    def log(label, r):
        nonlocal torn
        fixed = _without_torn_tail(path) if torn else None
        if fixed is not None:
            path.write_bytes(fixed)
        torn = False
        arm = {"arm": ident[label]} if label in ident else {}
        with open(path, "a") as f:
            f.write(json.dumps({"label": label, "budget": stamp, **arm, **r}) + "\n")
    return done, log


def _log_records(path: Path) -> list[dict]:
    """The records of a run log, each checked; an unterminated last line that is not JSON is
    what an interrupted append leaves, and is skipped (the next append drops it)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"run log {path} is not UTF-8 text ({e}); move it away to start afresh") from None
    lines, out = text.split("\n"), []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines):  # no newline after it: a torn last write
                print(f"run log {path}: line {i} is an unfinished write, skipped", file=sys.stderr)
                continue
            raise ValueError(f"run log {path}, line {i}: not JSON ({e})") from None
        if not (isinstance(r, dict) and {"label", "budget", "lr", "seed"} <= set(r) and isinstance(r["budget"], dict)):
            raise ValueError(f"run log {path}, line {i}: not a run record (needs label, budget, lr, seed)")
        out.append(r)
    return out


def _without_torn_tail(path: Path) -> bytes | None:
    """Before appending: the log's bytes with a last line that lacks its newline ended (if it
    is a record) or cut (a torn write), so the next record starts on its own line; None when
    the log is fine as it is."""
    data = path.read_bytes() if path.is_file() else b""
    if not data or data.endswith(b"\n"):
        return None
    cut = data.rfind(b"\n") + 1
    try:
        json.loads(data[cut:])
        return data + b"\n"
    except ValueError:
        return data[:cut]


def _finished(result) -> Future:
    f = Future()
    f.set_result(result)
    return f


# ----------------------------------------------------------------------------- the decoder (chapter 10)
@dataclass(frozen=True)
class DecoderTask:
    """A task on the decoder as the runner needs it (chapter 10's ``tasks.decoder_task``):
    ``train`` = (ids, response mask) arrays; ``evaluate(model, split, generate=False)`` → dict;
    ``score(validation dict)`` → the number the rate search maximises; ``finish(model)`` → what
    is added to the test record of each run at the chosen rate (greedy generations), or None.
    Every run trains ``steps`` batches of ``batch``; the first ``select_seeds`` of ``seeds``
    choose the rate, the others run at it."""
    name: str
    train: tuple
    evaluate: Callable
    score: Callable
    steps: int
    batch: int
    seeds: tuple = (0, 1, 2, 3, 4)  # the book compares five seeds (rules.few_seeds caps fewer)
    select_seeds: int = 2
    finish: Callable | None = None
    sizes: dict = field(default_factory=dict)

    def __post_init__(self):
        check_size(self.steps, "steps"), check_size(self.batch, "batch")
        check_size(self.select_seeds, "select_seeds")
        for s in self.seeds:  # torch.manual_seed and the batch order take an int >= 0
            checks.seed(s, f"task {self.name!r}: each seed")
        if not 1 <= self.select_seeds <= len(self.seeds) or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"task {self.name!r}: select_seeds must be 1…{len(self.seeds)} of distinct seeds")


def train_decoder(arm, task: DecoderTask, seed: int, lr: float, bar=None, name: str | None = None):
    """The arm's decoder form on a fresh checkpoint ``name`` (the default if None), trained on
    ``task``; one seed fixes the batches and the method's initialisation for every arm (paired
    runs). Returns (model, losses, seconds)."""
    arm = decoder_arm(arm)
    torch.manual_seed(seed)
    model = arm.setup_decoder(IO.checkpoint_dir(name), seed)
    t0 = time.perf_counter()
    losses = DP.train(model, *task.train, lr=lr, steps=task.steps, batch_size=task.batch, seed=seed,
                      paged8=arm.paged8, progress=bar)
    return model, losses, time.perf_counter() - t0


def run_decoder(arm, task: DecoderTask, seed: int, lr: float, bar=None, name: str | None = None) -> tuple:
    """One decoder run: its record (validation and test scores, trainable count, final loss)
    and the trained model."""
    arm = decoder_arm(arm)
    model, losses, seconds = train_decoder(arm, task, seed, lr, bar, name)
    rec = {"task": task.name, "method": arm.label, "lr": lr, "seed": seed, "trainable": DP.trainable(model),
           "seconds": seconds, "final_loss": float(np.mean(losses[-10:])),
           "val": task.evaluate(model, "val"), "test": task.evaluate(model, "test")}
    return rec, model


def _finished_runs(task: DecoderTask, recs_models) -> list[dict]:
    """The records of runs at a chosen rate, with ``task.finish`` (generations) added."""
    for rec, model in recs_models:
        if task.finish is not None:
            rec["test"] |= task.finish(model)
    return [rec for rec, _ in recs_models]


def _search_decoder(arm, task: DecoderTask, out: dict, extensions: int, run_one) -> None:
    """One arm through ``stats.select_lr`` (rates on the first seeds' mean validation score),
    then the other seeds at the chosen rate; every run's record goes to ``out["runs"]``."""
    tried, first = {}, task.seeds[:task.select_seeds]

    def val_score(lr):
        tried[lr] = [run_one(arm, lr, s) for s in first]
        return float(np.mean([task.score(r["val"]) for r, _ in tried[lr]]))

    sel = stats.select_lr(val_score, arm.grid, max_extensions=extensions)
    out["selection"][arm.label] = sel
    for lr in sorted(tried):
        if lr == sel["chosen"]:
            tried[lr] += [run_one(arm, lr, s) for s in task.seeds[task.select_seeds:]]
            out["runs"] += _finished_runs(task, tried[lr])
        else:
            out["runs"] += [r for r, _ in tried[lr]]


def _check_decoder_arms(arms, out: dict | None, extensions: int) -> None:
    """Before anything trains: searched arms have grids ``select_lr`` takes, labels are
    distinct, and an arm with ``rate_from`` finds that arm's rate (searched before it, or stored)."""
    have = set((out or {}).get("selection", {}))
    for arm in arms:
        if arm.label in have:
            raise ValueError(f"decoder arm {arm.label!r} is listed twice or already stored")
        if arm.rate_from is None:
            checked_grid(f"decoder arm {arm.label!r}", arm.grid, min_rates=2)
        elif arm.rate_from not in have:
            raise ValueError(f"decoder arm {arm.label!r} takes the rate {arm.rate_from!r} chooses: list "
                             f"{arm.rate_from!r} before it (or append to results that hold it)")
        have.add(arm.label)


def decoder_protocol(arms, task: DecoderTask, bar=None, out: dict | None = None, name: str | None = None,
                     extensions: int = 1, run_fn=None) -> dict:
    """The evidence protocol on the decoder for ``arms`` (labels of ``registry.DECODER_ARMS`` or
    decoder ``Arm``s): each arm's grid at the selection seeds, the rate with the best mean
    validation score, the grid extended at most ``extensions`` times while that rate sits at an
    edge (``stats.select_lr``), then the other seeds at that rate. An arm with ``rate_from``
    takes the rate that arm chose and runs every seed. ``out`` (stored results): append to it;
    else it starts with the zero-shot scores. ``run_fn`` replaces ``run_decoder`` (tests)."""
    arms, run_fn = [decoder_arm(a) for a in arms], run_fn or run_decoder
    _check_decoder_arms(arms, out, checks.nonneg_int(extensions, "extensions"))
    if out is None:
        base = decoder_arm("lora-qv").setup_decoder(IO.checkpoint_dir(name), 0)   # B = 0: the pretrained model itself
        out = {"zero_shot": {"test": task.evaluate(base, "test", generate=True), "val": task.evaluate(base, "val")},
               "sizes": dict(task.sizes), "runs": [], "selection": {}}

    def run_one(arm, lr, seed):
        return run_fn(arm, task, seed, lr, bar, name)

    for arm in arms:
        if arm.rate_from is None:
            _search_decoder(arm, task, out, extensions, run_one)
            continue
        lr = out["selection"][arm.rate_from]["chosen"]
        out["selection"][arm.label] = {"chosen": lr, "borrowed_from": arm.rate_from}
        out["runs"] += _finished_runs(task, [run_one(arm, lr, s) for s in task.seeds])
    return out


# ----------------------------------------------------------------------------- timing
def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _quartiles(x):
    q = statistics.quantiles(x, n=4) if len(x) > 1 else [x[0]] * 3
    return q[0], q[2]


def _rounds(models, ids, mask, rounds, inner, clock, device):
    """Per-round times; the order rotates each round so neighbours see the same machine."""
    names = list(models)
    times = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            _sync(device)
            t0 = clock()
            for _ in range(inner):
                models[name](ids, mask)
            _sync(device)
            times[name].append((clock() - t0) / inner)
    return times


@torch.inference_mode()
def time_forward(models: dict, batch: int, seq_len: int, rounds: int = 7, inner: int = 3,
                 seed: int = 0) -> dict:
    """Forward latency of each model on the same random (batch, seq_len) input.

    A model's ``ratio`` is the median over rounds of its time over the time of
    ``models["none"]`` in the same round (paired, so slow drifts of the machine cancel);
    ``ratio_q1``/``ratio_q3`` are the quartiles of those per-round ratios and show the noise;
    ``ms`` is the median time. On a CPU with one thread the clock is the thread's CPU time,
    otherwise wall time. Returns {name: {"ms", "ratio", "ratio_q1", "ratio_q3"}} + {"clock"}.
    """
    if "none" not in models:
        raise ValueError("time_forward needs a 'none' model to take ratios against")
    batch, seq_len = check_size(batch, "batch"), check_size(seq_len, "seq_len")
    rounds, inner = check_size(rounds, "rounds"), check_size(inner, "inner")
    device = next(models["none"].parameters()).device
    cpu_clock = device.type == "cpu" and torch.get_num_threads() == 1
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, models["none"].config.vocab_size, (batch, seq_len), generator=gen).to(device)
    mask = torch.ones_like(ids)
    for model in models.values():  # warm-up: allocator, kernels, caches
        model(ids, mask)
    times = _rounds(models, ids, mask, rounds, inner, time.thread_time if cpu_clock else time.perf_counter, device)
    ratios = {n: [t / r for t, r in zip(times[n], times["none"])] for n in times}
    out = {n: {"ms": 1e3 * statistics.median(times[n]), "ratio": statistics.median(ratios[n]),
               "ratio_q1": _quartiles(ratios[n])[0], "ratio_q3": _quartiles(ratios[n])[1]} for n in times}
    return out | {"clock": "thread CPU" if cpu_clock else "wall"}


def inference_net(method):
    """The network a method serves with (LoRA merged, prefix MLP folded), built fresh (seed 0):
    trained values do not change the work a forward pass does."""
    arm = as_arm(method)
    mm = fresh_minilm()
    arm.setup_torch(mm, 0)
    arm.inference(mm)
    return mm.bert.eval()


def measure_latency(arms, batch: int = 32, seq_len: int = 8, rounds: int = 61) -> dict:
    """Each arm's serving network against the plain model, timed in turn (``time_forward``).
    A "probe" arm among ``arms`` is a second copy of the plain model: its ratio's distance
    from 1 is the noise floor (chapter 08's arms include it).
    Returns {label: {"latency_ratio", "latency_q1", "latency_q3"}}."""
    arms = [as_arm(a) for a in arms]
    nets = {a.label: inference_net(a) for a in arms}
    lat = time_forward({"none": inference_net("probe"), **nets}, batch=batch, seq_len=seq_len, rounds=rounds)
    return {n: {"latency_ratio": lat[n]["ratio"], "latency_q1": lat[n]["ratio_q1"],
                "latency_q3": lat[n]["ratio_q3"]} for n in nets}


# ----------------------------------------------------------------------------- memory
def _bytes(t) -> int:
    return t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0


def _storage_key(t: torch.Tensor):
    s = t.untyped_storage()
    return (t.device.type, s.data_ptr(), s.nbytes())


def _own_storages(model) -> set:
    own = {_storage_key(t) for t in list(model.parameters()) + list(model.buffers())}
    return own | {_storage_key(m.weight.data) for m in quantized_layers(model).values()}


def _cuda_peak(out: dict, base: int) -> dict:
    torch.cuda.synchronize()
    out["cuda_peak"] = torch.cuda.max_memory_allocated()
    out["cuda_before_step"] = base
    # the step's rise above what was allocated before it, plus the model's weights
    # (so tensors left on the GPU by other code do not count)
    out["cuda_model_peak"] = out["cuda_peak"] - base + out["weights"]
    return out


def step_memory(model, batch, lr: float = 1e-3, optimizer=None) -> dict:
    """One training step (forward, backward, AdamW step) on ``batch`` = (ids, mask, labels),
    with every tensor the step keeps accounted (Eq. 7.12):

    weights   ``weight_bytes``;
    saved     activations autograd saves for backward (``saved_tensors_hooks``), counted
              once per storage and without the parameters' own storages;
    grads     ``.grad`` of the trainable parameters after backward;
    optimizer AdamW's state after the step (m, v, step counters);
    transient the largest weight bitsandbytes dequantises during the step (``DequantLog``).
    ``peak`` is their sum, an upper bound (not everything is alive at once). On CUDA the
    allocator's own ``max_memory_allocated`` over the step is added as ``cuda_peak``, and
    ``cuda_model_peak`` = its rise during the step + the model's weights (leftover tensors of
    other code excluded).
    """
    ids, mask, y = batch
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("step_memory: the model has no trainable parameters")
    opt = optimizer or torch.optim.AdamW(params, lr=lr)
    own, saved = _own_storages(model), {}

    def pack(t):
        k = _storage_key(t)
        if k not in own:
            saved[k] = k[2]
        return t

    cuda = next(model.parameters()).device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() if cuda else 0
    with DequantLog() as log:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = torch.nn.functional.cross_entropy(model(ids, mask), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
    opt.step()
    out = {"weights": weight_bytes(model)["total"], "saved": sum(saved.values()),
           "grads": sum(_bytes(p.grad) for p in params),
           "optimizer": sum(_bytes(v) for st in opt.state.values() for v in st.values()),
           "transient": max((c["bytes"] for c in log.calls if c["op"] == "dequantize_4bit"), default=0)}
    out["peak"] = sum(out.values())
    return _cuda_peak(out, base) if cuda else out


def training_state_bytes(clf, batch) -> dict:
    """Chapter 08's view of ``step_memory``: weights, grads, AdamW's moments and the saved
    activations of one training step, and their ``total``."""
    m = step_memory(clf, batch)
    out = {"weights": m["weights"], "grads": m["grads"], "adam": m["optimizer"], "activations": m["saved"]}
    return out | {"total": sum(out.values())}
