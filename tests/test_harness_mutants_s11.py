"""The experiment harness under mutation (session 11): each test here pins a behaviour of
``stats``, ``runner``, ``registry`` or ``results`` that a one-token change of the code
(``<`` for ``<=``, a slice off by one, a dropped ``not``…) left every other test passing.
Nothing trains: runs are synthetic, as in tests/test_protocol.py."""
import json
import math
import statistics

import numpy as np
import pytest

from pedagogy_lib import registry as RG
from pedagogy_lib import results as R
from pedagogy_lib import runner, stats
from pedagogy_lib.registry import Arm
from pedagogy_lib.runner import Budget

NAN = float("nan")
N_VAL = 331  # chapter 08's validation split: accuracies are k / 331


def fake(val, calls=None, test=None):
    """A run function: validation accuracy ``val(lr, seed)``, test accuracy ``test(lr, seed)``
    (default val + seed/100); every call recorded in ``calls`` as (label, lr, seed, measure)."""
    def run_fn(arm, task, budget, seed, lr, data=None, measure=False):
        if calls is not None:
            calls.append((arm.label, lr, seed, measure))
        v = val(lr, seed)
        return {"method": arm.label, "lr": lr, "seed": seed, "val_acc": v,
                "test_acc": test(lr, seed) if test else v + seed / 100, "trainable": 1, "sec_per_epoch": 0.0,
                "cpu_s": 0.0, "losses": []}
    return run_fn


def proto(arms, budget, val, calls=None, **kw):
    return runner.protocol(arms, None, budget, progress=False, run_fn=fake(val, calls), **kw)


# ----------------------------------------------------------------------------- Eq. 8.1's tie (a bug fixed here)
def test_equal_accuracies_tie_even_when_their_float_means_differ_in_the_last_bit():
    """581 of 662 validation answers right at 1e-2 (253 + 328) and at 3e-2 (254 + 327): one mean
    accuracy, so Eq. 8.1 keeps the smaller rate. As floats the second mean is 1 ulp larger, and
    the search used to pick 3e-2, at the grid's edge, and extend the grid for nothing."""
    assert statistics.fmean([253 / N_VAL, 328 / N_VAL]) < statistics.fmean([254 / N_VAL, 327 / N_VAL])
    table = {(0.01, 0): 253, (0.01, 1): 328, (0.03, 0): 254, (0.03, 1): 327}
    b = Budget(n_train=8, n_eval=8, seeds=(0, 1, 2), select_seeds=2, max_extensions=2)
    calls = []
    sel = proto([Arm("p", "probe", lrs=(3e-3, 1e-2, 3e-2))], b,
                lambda lr, s: table.get((lr, s), 200) / N_VAL, calls)["p"]["selection"]
    assert sel["chosen"] == 1e-2 and sel["bracketed"] and sel["extensions"] == 0
    assert len(calls) == 3 * 2 + 1
    # the same through stats.select_lr (the decoder's search) and on stored scores
    assert stats.select_lr(lambda lr: {1e-2: 581 / 662, 3e-2: 0.8776435045317221}.get(lr, 0.5),
                           [3e-3, 1e-2, 3e-2], 1)["chosen"] == 1e-2
    assert stats.bracketed([1.0, 2.0], [0.877643504531722, 0.8776435045317221])["index"] == 0
    # a real difference, however small for an accuracy (one answer in 10^6), still orders
    assert stats.bracketed([1.0, 2.0], [0.5, 0.5 + 1e-6])["index"] == 1
    assert stats.bracketed([1.0, 2.0, 3.0], [-2.0, -1.0, -1.0 - 1e-9])["index"] == 1


@pytest.mark.parametrize("score", [2.0 ** 54, 1e13, -1e20, -1e300])
def test_a_diverged_rate_stays_below_scores_of_any_size(score):
    """``ranked`` put a diverged rate at min − 1.0, which is the minimum itself beyond 2^53: a
    diverged smaller rate then tied with the best and, as the smaller, was chosen."""
    c = stats.choice({1e-3: NAN, 1e-2: score, 1e-1: score})
    assert c["chosen"] == 1e-2 and c["diverged"] == [1e-3] and c["scores"][0] is None
    ok, bad = stats.ranked({1e-3: None, 1e-2: score})
    assert bad == [1e-3] and ok[1e-3] < score and math.isfinite(ok[1e-3])
    assert stats.ranked({1e-3: None, 1e-2: 5.0, 1e-1: -3.0})[0][1e-3] < -3.0   # below the worst, not the best


# ----------------------------------------------------------------------------- stats.paired's scaling
def test_paired_scales_by_the_largest_difference_and_reaches_the_top_of_float64():
    """The power of two taken from the largest |d| (not the smallest), exactly 2^k <= max|d| <
    2^(k+1): differences of mixed size keep their squares finite, and differences near the
    largest float are scaled, not overflowed (2^1024 does not exist)."""
    mixed = stats.paired([1e200, 1e-10, 3e200], [0.0, 0.0, 0.0])
    assert mixed["mean"] == pytest.approx(4e200 / 3) and mixed["se"] == pytest.approx(8.81917103688197e199)
    assert mixed["tie"]
    top = stats.paired([1.7e308, 1.5e308, 1.6e308], [0.0, 0.0, 0.0])
    assert top["mean"] == pytest.approx(1.6e308) and top["se"] == pytest.approx(1e308 / math.sqrt(3) / 10)
    assert not top["tie"] and top["lo"] > 0


# ----------------------------------------------------------------------------- runner.splits
def _toy_task(n=40):
    from types import SimpleNamespace

    from pedagogy_lib import data as D

    def split(tag):
        return D.Split([f"{tag}{i}" for i in range(n)], np.arange(n) % 2, np.zeros(n, np.float32))
    return SimpleNamespace(train=split("tr"), val=split("va"), test=split("te"))


def test_splits_draw_seed_zeros_subsample_unless_resampling_and_fixed_eval_splits():
    from pedagogy_lib import data as D

    task = _toy_task()
    fixed, per_seed = Budget(n_train=8, n_eval=6), Budget(n_train=8, n_eval=6, resample=True)
    for seed in (0, 5):
        tr, va, te = runner.splits(task, fixed, seed)
        assert tr.tokens == D.subsample(task.train, 8, seed=0).tokens        # seed 0's for all
        assert runner.splits(task, per_seed, seed)[0].tokens == D.subsample(task.train, 8, seed=seed).tokens
        for got, whole in ((va, task.val), (te, task.test)):                 # evaluation: seed 0's, always
            assert got.tokens == D.subsample(whole, 6, seed=0).tokens
            assert runner.splits(task, per_seed, seed)[1].tokens == va.tokens
    assert D.subsample(task.train, 8, seed=0).tokens != D.subsample(task.train, 8, seed=1).tokens
    tr, va, te = runner.splits(task, Budget(n_train=100, n_eval=None), 3)   # more than there is: all of it
    assert tr.tokens == task.train.tokens and va is task.val and te is task.test


def test_paired_refuses_a_level_of_zero():
    """A 0 % interval is the point d̄: every nonzero difference would read as an order."""
    with pytest.raises(ValueError, match="level must be a number in"):
        stats.paired([0.5, 0.6], [0.4, 0.6], level=0.0)
    assert stats.paired([0.5, 0.6, 0.7], [0.4, 0.6, 0.5], level=1e-9)["lo"] < stats.paired(
        [0.5, 0.6, 0.7], [0.4, 0.6, 0.5])["mean"]


# ----------------------------------------------------------------------------- runner.protocol's bookkeeping
def test_protocol_orders_by_the_budgets_seeds_and_measures_the_first_seed_not_seed_zero():
    """Seeds (3, 1, 2, 0): 3 and 1 choose; the runs come in the budget's seed order, the first
    seed (3, not 0) measures memory, the trials are sorted by (rate, seed)."""
    b = Budget(n_train=8, n_eval=8, seeds=(3, 1, 2, 0), select_seeds=2)
    calls = []
    out = proto([Arm("p", "probe", lrs=(3e-3, 1e-2, 3e-2))], b, lambda lr, s: 0.9 - abs(lr - 1e-2), calls)["p"]
    assert [r["seed"] for r in out["runs"]] == [3, 1, 2, 0] and all(r["lr"] == 1e-2 for r in out["runs"])
    assert [(r["lr"], r["seed"]) for r in out["trials"]] == [(lr, s) for lr in (3e-3, 1e-2, 3e-2) for s in (1, 3)]
    assert sorted((lr, s) for _, lr, s, m in calls if m) == [(3e-3, 3), (1e-2, 3), (3e-2, 3)]
    assert out["selection"]["seeds"] == [3, 1] and R.trained(out) == out["trials"] + out["runs"][2:]


def test_protocol_with_every_seed_selecting_runs_nothing_after_the_search():
    b = Budget(n_train=8, n_eval=8, seeds=(0, 1), select_seeds=2)
    calls = []
    out = proto([Arm("p", "probe", lrs=(3e-3, 1e-2, 3e-2))], b, lambda lr, s: 0.9 - abs(lr - 1e-2), calls)["p"]
    assert len(calls) == 6 and [(r["lr"], r["seed"]) for r in out["runs"]] == [(1e-2, 0), (1e-2, 1)]


def test_a_cut_grid_trains_only_the_first_rate():
    calls = []
    b = Budget(n_train=8, n_eval=8, seeds=(0, 1), full_grid=False)
    out = proto(["lora"], b, lambda lr, s: 0.5, calls)["lora"]
    assert [lr for _, lr, _, _ in calls] == [RG.METHODS["lora"].lrs[0]] * 2
    assert out["selection"]["grid"] == [RG.METHODS["lora"].lrs[0]] and not out["selection"]["bracketed"]


# ----------------------------------------------------------------------------- runner.run_log
@pytest.mark.parametrize("field, value, reused", [
    ("n_train", 16, False), ("n_eval", None, False), ("epochs", 3, False), ("batch_size", 16, False),
    ("head_lr", 1e-2, False), ("resample", True, False), ("schedule", "constant", False),
    ("seeds", (0, 1, 2, 3, 4), True), ("select_seeds", 2, True), ("max_extensions", 1, True),
    ("full_grid", False, True), ("latency_rounds", 3, True),
])
def test_a_logged_run_is_reused_exactly_when_the_fields_a_run_depends_on_match(tmp_path, field, value, reused):
    b, p = Budget(n_train=8, n_eval=8), tmp_path / "runs.jsonl"
    _, log = runner.run_log(p, b)
    log("probe", {"lr": 0.01, "seed": 0, "val_acc": 0.5})
    other = Budget(**{**{k: getattr(b, k) for k in b.__dataclass_fields__}, field: value})
    assert (runner.run_log(p, other)[0] == {("probe", 0.01, 0): {"lr": 0.01, "seed": 0, "val_acc": 0.5}}) == reused


def test_a_whole_last_record_without_its_newline_is_kept_and_the_next_starts_a_line(tmp_path):
    b, p = Budget(n_train=8, n_eval=8), tmp_path / "runs.jsonl"
    _, log = runner.run_log(p, b)
    log("probe", {"lr": 0.01, "seed": 0, "val_acc": 0.5})
    p.write_text(p.read_text().rstrip("\n"))                  # a file edited by hand, say
    done, log = runner.run_log(p, b)
    assert list(done) == [("probe", 0.01, 0)]
    log("probe", {"lr": 0.03, "seed": 0, "val_acc": 0.6})
    assert len(p.read_text().splitlines()) == 2 and p.read_text().endswith("\n")
    assert sorted(runner.run_log(p, b)[0]) == [("probe", 0.01, 0), ("probe", 0.03, 0)]
    assert runner.run_log(None, b)[0] == {} and runner.run_log(None, b)[1]("x", {}) is None


# ----------------------------------------------------------------------------- runner.time_forward
class _Clock:
    """A clock the fake networks advance: network ``name`` costs ``cost(name, round)`` per call."""

    def __init__(self, names, inner, cost):
        self.t, self.calls, self.log, self.names, self.inner, self.cost = 0.0, 0, [], names, inner, cost

    def __call__(self):
        return self.t

    def forward(self, name):
        self.log.append(name)
        warm = len(self.names)
        r = -1 if self.calls < warm else (self.calls - warm) // (len(self.names) * self.inner)
        self.calls += 1
        self.t += self.cost(name, r)


def _fake_nets(clock):
    import torch

    class Net(torch.nn.Module):
        def __init__(self, name):
            super().__init__()
            self.name, self.w, self.config = name, torch.nn.Parameter(torch.zeros(1)), type("C", (), {"vocab_size": 1100})

        def forward(self, ids, mask):
            assert ids.shape == (2, 3) and mask.shape == ids.shape
            clock.forward(self.name)

    return {n: Net(n) for n in clock.names}


def _timed(monkeypatch, names, cost, rounds, inner, threads=1):
    import types

    import torch

    clock = _Clock(names, inner, cost)

    def unused():
        raise AssertionError("the other clock was read")
    fake_time = types.SimpleNamespace(thread_time=clock if threads == 1 else unused,
                                      perf_counter=unused if threads == 1 else clock)
    monkeypatch.setattr(runner, "time", fake_time)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = runner.time_forward(_fake_nets(clock), batch=2, seq_len=3, rounds=rounds, inner=inner)
    finally:
        torch.set_num_threads(before)
    return out, clock.log


def test_time_forward_rotates_the_order_and_takes_paired_ratios_with_their_quartiles(monkeypatch):
    a_cost = [2.0, 4.0, 3.0, 5.0, 6.0]   # per round, the reference costing 1 × a drift of the machine
    drift = [1.0, 10.0, 0.5, 3.0, 7.0]

    def cost(name, r):
        if r < 0:
            return 100.0                    # warm-up: never timed
        return drift[r] * {"none": 1.0, "a": a_cost[r], "b": 1.0}[name]

    out, log = _timed(monkeypatch, ["none", "a", "b"], cost, rounds=5, inner=2)
    assert log[:3] == ["none", "a", "b"]                                   # one warm-up call each
    order = log[3::2]                                                      # one name per timed block of 2
    assert order[:9] == ["none", "a", "b", "a", "b", "none", "b", "none", "a"]
    assert out["a"]["ratio"] == 4.0 and out["b"]["ratio"] == 1.0 == out["none"]["ratio"]  # the drift cancels
    assert (out["a"]["ratio_q1"], out["a"]["ratio_q3"]) == (2.5, 5.5)    # statistics.quantiles, n=4
    assert out["none"]["ms"] == pytest.approx(1e3 * 3.0) and out["clock"] == "thread CPU"


def test_time_forward_with_one_round_and_on_several_threads(monkeypatch):
    out, _ = _timed(monkeypatch, ["none", "a"], lambda name, r: 1.0 if name == "none" else 3.0, rounds=1, inner=1,
                    threads=2)
    assert out["a"]["ratio"] == out["a"]["ratio_q1"] == out["a"]["ratio_q3"] == 3.0 and out["clock"] == "wall"
    assert out["a"]["ms"] == 3e3
    two, _ = _timed(monkeypatch, ["none", "a"], lambda name, r: 1.0 if name == "none" or r < 0 else [1.0, 3.0][r],
                    rounds=2, inner=1)
    assert (two["a"]["ratio_q1"], two["a"]["ratio"], two["a"]["ratio_q3"]) == (0.5, 2.0, 3.5)  # quantiles of 2 points


def test_bracketed_refuses_a_repeated_rate():
    """``bracketed`` also reads stored grids (``rules.unbracketed``): a rate listed twice has no edge."""
    with pytest.raises(ValueError, match="strictly increasing"):
        stats.bracketed([1e-3, 1e-3, 1e-2], [0.5, 0.6, 0.4])


# ----------------------------------------------------------------------------- runner.train_arm's head rate
@pytest.mark.parametrize("head_only, lr, head_lr, want", [
    (False, 1e-4, None, 1e-3), (False, 3e-3, None, 3e-3),      # max(η, 1e-3)
    (False, 1e-4, 5e-2, 5e-2),                                  # the budget's head_lr
    (True, 1e-4, None, 1e-4), (True, 1e-4, 5e-2, 1e-4),        # a probe: its one rate, whatever head_lr says
])
def test_the_head_trains_at_max_of_the_rate_and_1e3_or_the_budgets_head_lr_but_a_probe_at_its_rate(
        monkeypatch, head_only, lr, head_lr, want):
    import torch

    seen = {}
    clf = torch.nn.Linear(1, 1)
    monkeypatch.setattr(runner, "classifier", lambda arm, seed: (clf, type("M", (), {"tokenizer": None}), head_only))
    monkeypatch.setattr(runner, "Batches", lambda *a: type("B", (), {"device": "cpu"}))
    monkeypatch.setattr(runner, "train_classifier", lambda c, tr, cfg: seen.setdefault("cfg", cfg))
    b = Budget(n_train=8, n_eval=8, epochs=3, batch_size=4, head_lr=head_lr, schedule="constant")
    runner.train_arm("probe", 7, type("S", (), {"tokens": [], "labels": []}), lr, b)
    cfg = seen["cfg"]
    assert cfg.head_lr == want and cfg.lr == lr
    assert (cfg.epochs, cfg.batch_size, cfg.seed, cfg.schedule) == (3, 4, 7, "constant")


# ----------------------------------------------------------------------------- Eq. 8.2 at the low edge
def test_the_grid_grows_downward_by_its_own_ratio_when_the_smallest_rate_wins():
    """Eq. 8.2's first case, η_1²/η_2: every other test extends at the high edge."""
    assert stats.extension([3e-3, 1e-2, 3e-2], "low") == pytest.approx(9e-4, rel=1e-12)
    assert stats.extension([2e-3, 1e-2], "low") == pytest.approx(4e-4, rel=1e-12)
    seen = []
    sel = stats.select_lr(lambda lr: seen.append(lr) or -abs(math.log10(lr / 1e-4)), [1e-3, 1e-2], max_extensions=3)
    assert np.allclose(seen, [1e-3, 1e-2, 1e-4, 1e-5], rtol=1e-12)
    assert sel["bracketed"] and sel["chosen"] == pytest.approx(1e-4) and np.allclose(sel["grid"], [1e-5, 1e-4, 1e-3, 1e-2])
    b = Budget(n_train=8, n_eval=8, seeds=(0, 1, 2), select_seeds=2, max_extensions=2)
    calls = []
    out = proto([Arm("p", "probe", lrs=(3e-3, 1e-2, 3e-2))], b, lambda lr, s: -abs(math.log10(lr / 1e-4)), calls)["p"]
    sel = out["selection"]
    assert np.allclose(sel["grid"], [2.7e-4, 9e-4, 3e-3, 1e-2, 3e-2], rtol=1e-12)  # 3e-3²/1e-2, then 9e-4²/3e-3
    assert not sel["bracketed"] and sel["edge"] == "low" and sel["extensions"] == 2
    assert sel["chosen"] == sel["grid"][0] and [r["lr"] for r in out["runs"]] == [sel["grid"][0]] * 3


def test_extension_and_bracketed_refuse_what_has_no_edge():
    with pytest.raises(ValueError, match=">= 2 rates"):
        stats.extension([1e-3], "high")
    with pytest.raises(ValueError, match="edge must be"):
        stats.extension([1e-3, 1e-2], None)
    with pytest.raises(ValueError, match="same non-zero length"):
        stats.bracketed([1e-3, 1e-2, 1e-1], [0.5, 0.6])
    with pytest.raises(ValueError, match="same non-zero length"):
        stats.bracketed([], [])


def test_paired_refuses_a_spread_that_overflows_even_when_the_mean_does_not():
    """d = ±1.7e308: d̄ = 0 is finite, sd(d) is not; no interval, so no tie either."""
    with pytest.raises(ValueError, match="overflow"):
        stats.paired([1.7e308, -1.7e308], [0.0, 0.0])


@pytest.mark.parametrize("resample", [False, True])
def test_one_process_without_resampling_splits_the_task_once_and_hands_the_split_to_every_run(monkeypatch, resample):
    """``protocol`` with ``run`` itself (here a stand-in) and jobs=1: the data is split once
    (seed 0's subsample) and passed to every run; with ``resample`` each run splits its own."""
    made, got = [], []
    monkeypatch.setattr(runner, "splits", lambda task, budget, seed=0: made.append(seed) or ("tr", "va", "te"))
    inner = fake(lambda lr, s: 0.5)

    def stand_in(arm, task, budget, seed, lr, data=None, measure=False):
        got.append(data)
        return inner(arm, task, budget, seed, lr, data, measure)
    monkeypatch.setattr(runner, "run", stand_in)
    b = Budget(n_train=8, n_eval=8, seeds=(0, 1), resample=resample)
    runner.protocol([Arm("p", "probe", lrs=(1e-2, 3e-2))], "task", b, progress=False)
    assert (made, got) == (([], [None] * 3) if resample else ([0], [("tr", "va", "te")] * 3))  # 2 rates + 1 seed


# ----------------------------------------------------------------------------- select_lr's up-front checks
@pytest.mark.parametrize("grid, max_extensions, match", [
    ([1e-3], 1, ">= 2 positive finite rates.*takes two rates"), ([1e-3], 0, ">= 2 positive finite rates"),
    ([1e-3, 1e-2], 1.5, "max_extensions must be an int"), ([1e-3, 1e-2], True, "max_extensions must be an int"),
    ([1e-3, 1e-2], -1, "max_extensions must be an int"),
])
def test_select_lr_refuses_before_evaluating_anything(grid, max_extensions, match):
    seen = []
    with pytest.raises(ValueError, match=match):
        stats.select_lr(lambda lr: seen.append(lr) or 0.5, grid, max_extensions)
    assert seen == []


def test_the_two_rates_hint_is_given_only_where_two_rates_are_asked_for():
    with pytest.raises(ValueError) as one:
        stats.rate_grid([], 1)
    with pytest.raises(ValueError) as three:
        stats.rate_grid([1e-3, 1e-2], 3)
    assert "two rates" not in str(one.value) and "two rates" not in str(three.value) and ">= 3" in str(three.value)


# ----------------------------------------------------------------------------- runner.decoder_protocol
def test_decoder_protocol_from_nothing_scores_zero_shot_and_finishes_only_runs_at_the_chosen_rate(monkeypatch):
    """``out`` None: the zero-shot scores (test with generations, validation without) and the
    task's sizes open the record; ``finish`` (generations) is added to the test record of the
    runs at the chosen rate only; an arm with ``rate_from`` runs every seed at that arm's rate."""
    evaluated, bases = [], []
    monkeypatch.setattr(runner.IO, "checkpoint_dir", lambda name=None: f"ckpt:{name}")
    monkeypatch.setattr(RG.Arm, "setup_decoder", lambda self, folder, seed: bases.append((self.label, folder, seed)))

    def evaluate(model, split, generate=False):
        evaluated.append((split, generate))
        return {"acc": 0.1}

    def run_fn(arm, task, seed, lr, bar=None, name=None):
        return {"method": arm.label, "lr": lr, "seed": seed, "val": {"acc": -abs(math.log10(lr / 1e-2))},
                "test": {"acc": 0.5}}, f"model {arm.label} {lr} {seed}"

    task = runner.DecoderTask("t", (None, None), evaluate, lambda v: v["acc"], 1, 1, (0, 1, 2), 2,
                              finish=lambda model: {"gen": model}, sizes={"n": 3})
    grid = Arm("lora", "lora", lrs=(3e-3, 1e-2, 3e-2), model="decoder")
    out = runner.decoder_protocol([grid, Arm("borrow", "lora", rate_from="lora", model="decoder")], task,
                                  name="tiny", extensions=1, run_fn=run_fn)
    assert bases == [("lora-qv", "ckpt:tiny", 0)] and evaluated == [("test", True), ("val", False)]
    assert out["zero_shot"] == {"test": {"acc": 0.1}, "val": {"acc": 0.1}} and out["sizes"] == {"n": 3}
    assert out["selection"]["lora"]["chosen"] == 1e-2 and out["selection"]["borrow"] == {"chosen": 1e-2,
                                                                                        "borrowed_from": "lora"}
    runs = [(r["method"], r["lr"], r["seed"], r["test"].get("gen")) for r in out["runs"]]
    assert runs == [("lora", 3e-3, 0, None), ("lora", 3e-3, 1, None),
                    ("lora", 1e-2, 0, "model lora 0.01 0"), ("lora", 1e-2, 1, "model lora 0.01 1"),
                    ("lora", 1e-2, 2, "model lora 0.01 2"),
                    ("lora", 3e-2, 0, None), ("lora", 3e-2, 1, None)] + [
                   ("borrow", 1e-2, s, f"model borrow 0.01 {s}") for s in (0, 1, 2)]


def test_decoder_search_averages_the_selection_seeds_only():
    """Seed 0 alone prefers 3e-2, the mean over seeds 0 and 1 prefers 1e-2; seed 2 never selects."""
    val = {(3e-2, 0): 0.9, (3e-2, 1): 0.1, (1e-2, 0): 0.6, (1e-2, 1): 0.6, (3e-3, 0): 0.2, (3e-3, 1): 0.2}

    def run_fn(arm, task, seed, lr, bar=None, name=None):
        assert seed != 2 or lr == 1e-2
        return {"method": arm.label, "lr": lr, "seed": seed, "val": {"acc": val.get((lr, seed), 1.0)}, "test": {}}, None

    task = runner.DecoderTask("t", (None, None), None, lambda v: v["acc"], 1, 1, (0, 1, 2), 2)
    out = runner.decoder_protocol([Arm("lora", "lora", lrs=(3e-3, 1e-2, 3e-2), model="decoder")], task,
                                  out={"runs": [], "selection": {}}, extensions=0, run_fn=run_fn)
    assert out["selection"]["lora"]["chosen"] == 1e-2 and out["selection"]["lora"]["scores"] == [0.2, 0.6, 0.5]


# ----------------------------------------------------------------------------- registry.Arm
def test_an_arms_grid_is_its_own_else_its_models_record_grid():
    lora = RG.METHODS["lora"]
    assert Arm("x", "lora").grid == lora.lrs and Arm("x", "lora", model="decoder").grid == lora.decoder.lrs
    assert Arm("x", "lora", lrs=(2e-3, 5e-3), model="decoder").grid == (2e-3, 5e-3)
    assert Arm("x", "ptuning_v2", model="decoder").grid == (3e-3, 1e-2, 3e-2, 1e-1, 3e-1)


def test_an_arm_is_used_only_on_its_own_model():
    enc, dec = Arm("e", "lora"), Arm("d", "lora", model="decoder")
    with pytest.raises(ValueError, match="runs on the encoder, not on the decoder"):
        enc.setup_decoder("folder", 0)
    with pytest.raises(ValueError, match="runs on the decoder, not on the encoder"):
        dec.params(None)
    with pytest.raises(ValueError, match="runs on the encoder"):
        enc.paged8
    with pytest.raises(ValueError, match="runs on the encoder"):
        RG.decoder_arm(enc)
    assert RG.decoder_arm(dec) is dec and RG.decoder_arm("lora-qv") is RG.DECODER_ARMS["lora-qv"]
    assert not RG.DECODER_ARMS["lora-all"].paged8 and not RG.DECODER_ARMS["qlora-ours"].paged8
    with pytest.raises(ValueError, match="model must be"):
        Arm("x", "lora", model="gpt")


def test_overrides_replace_defaults_and_only_known_options_are_taken():
    lora = RG.METHODS["lora"]
    assert lora.opts(r=4) == {"targets": ("query", "value"), "r": 4, "alpha": 16, "rslora": False}
    assert lora.decoder_opts(r=2)["r"] == 2 and lora.decoder_opts()["targets"] == ("q_proj", "v_proj")
    with pytest.raises(ValueError, match=r"on the decoder takes no option\(s\) \['alpha'\]"):
        lora.decoder_opts(alpha=4)
    with pytest.raises(ValueError, match="has no decoder form") as none:
        RG.METHODS["houlsby"].decoder_opts()
    have = str(none.value).split("these have one: ")[1]
    assert "'lora'" in have and "'full'" in have and "'houlsby'" not in have and "'bitfit'" not in have
    assert RG.METHODS["full"].peft_args() is None
    with pytest.raises(ValueError, match="no peft form"):
        RG.METHODS["prompt"].peft_args()
    assert RG.METHODS["lora"].peft_args(r=4) == ("LoraConfig", {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"],
                                                               "lora_dropout": 0.0})


def test_wrap_torch_is_the_classifier_itself_unless_the_record_wraps_it():
    clf = object()
    assert RG.METHODS["lora"].wrap_torch(clf, 0) is clf
    seen = []
    m = RG.Method("w", "z", lambda mm, seed, d: None, None, lambda s, d: d, (1e-3, 1e-2), {"d": 3},
                  wrap=lambda c, seed, d: seen.append((c, seed, d)) or "wrapped")
    assert m.wrap_torch(clf, 5, d=7) == "wrapped" and seen == [(clf, 5, 7)]
    with pytest.raises(ValueError, match="no NumPy version"):
        m.setup_numpy(None, 0)


def test_a_records_decoder_grid_is_checked_when_written():
    with pytest.raises(ValueError, match="on the decoder.*finite rates > 0"):
        RG.Method("t", "x", lambda mm, seed: None, None, lambda s: 0, (1e-3,),
                  decoder=RG.Decoder(lambda folder, seed: None, (0.0, 1e-3)))
    with pytest.raises(ValueError, match="decoder paged8 does not take"):
        RG.Method("t", "x", lambda mm, seed: None, None, lambda s: 0, (1e-3,),
                  decoder=RG.Decoder(lambda folder, seed, r: None, (1e-3,), {"r": 2}, paged8=lambda: False))


# ----------------------------------------------------------------------------- results
def test_mean_sd_of_two_runs_is_the_sample_sd():
    assert R.mean_sd([1.0, 3.0]) == (2.0, math.sqrt(2.0))


def test_save_runs_writes_the_other_keys_sorted_as_save_does(tmp_path):
    data = {"z": 1, "a": {"y": 2, "b": 3}, "runs": [{"s": 1, "d": 2}]}
    text = R.save_runs(data, tmp_path / "r.json").read_text()
    assert text.index('"a"') < text.index('"z"') and text.index('"b"') < text.index('"y"')
    assert '  {"d": 2, "s": 1}' in text and json.loads(text) == data
    assert text.split('\n "runs"')[0] == R.save({k: v for k, v in data.items() if k != "runs"},
                                                tmp_path / "h.json").read_text()[:-3] + ","


def test_smooth_is_a_moving_average_once_the_window_is_full():
    assert R.smooth([1.0, 2.0, 3.0, 4.0, 10.0], 2).tolist() == [1.0, 1.5, 2.5, 3.5, 7.0]
    assert R.smooth([3.0, 6.0, 9.0, 0.0], 3).tolist() == [3.0, 4.5, 6.0, 5.0]


@pytest.mark.parametrize("bad", [math.inf, -math.inf, NAN, None])
def test_an_infinite_validation_score_is_a_diverged_rate_too(bad):
    c = stats.choice({1e-3: bad, 1e-2: 0.5, 1e-1: 0.4})
    assert c["diverged"] == [1e-3] and c["chosen"] == 1e-2 and c["bracketed"] and c["scores"] == [None, 0.5, 0.4]


def test_diverged_rates_are_listed_sorted_and_stored_under_g_formatted_keys():
    c = stats.choice({3e-2: NAN, 1e-3: NAN, 1e-2: 0.5, 1 / 30000: 0.4})
    assert c["diverged"] == [1e-3, 3e-2] and c["grid"] == [1 / 30000, 1e-3, 1e-2, 3e-2]
    stored = R.selection(c | {"extensions": 0, "seeds": [0, 1]}, ndigits=3)
    assert list(stored["val_by_lr"]) == ["3.33333e-05", "0.001", "0.01", "0.03"]     # as the results files key them
    assert stored["val_by_lr"]["3.33333e-05"] == 0.4 and stored["diverged"] == [1e-3, 3e-2]
