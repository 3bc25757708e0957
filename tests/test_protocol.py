"""The runner's evidence protocol without training anything: ``runner.protocol`` driven by a
synthetic run function whose validation curve we choose, so the search's every step is known."""
import math

import pytest

from pedagogy_lib import runner, stats
from pedagogy_lib.runner import Budget

B = Budget(n_train=8, n_eval=8, seeds=(0, 1, 2, 3, 4), select_seeds=2, max_extensions=2)


def synthetic(peak: float, noise=None, calls=None, table=None):
    """A run function: validation accuracy peaks at ``peak`` (log-distance), plus a per-(lr, seed)
    offset ``noise`` (or exactly ``table[(lr, seed)]``); test accuracy = validation + seed/100."""
    def run_fn(arm, task, budget, seed, lr, data=None, measure=False):
        if calls is not None:
            calls.append((arm.label, lr, seed))
        val = 0.9 - 0.05 * abs(math.log10(lr / peak)) + (noise or {}).get((round(lr, 12), seed), 0.0)
        val = (table or {}).get((round(lr, 12), seed), val)
        return {"method": arm.label, "lr": lr, "seed": seed, "val_acc": val, "test_acc": val + seed / 100,
                "trainable": 1, "sec_per_epoch": 0.0, "cpu_s": 0.0, "losses": [],
                **({"memory": {"total": 1}} if measure else {})}
    return run_fn


def test_grid_is_extended_until_the_best_rate_is_bracketed():
    calls = []
    out = runner.protocol(["probe"], None, B, progress=False, run_fn=synthetic(0.1, calls=calls))["probe"]
    sel = out["selection"]
    # probe's grid is (3e-3, 1e-2, 3e-2): 3e-2 wins at the high edge -> 0.09 added, wins -> 0.27 added, loses
    assert sel["bracketed"] and sel["edge"] is None and sel["extensions"] == 2
    assert [round(x, 12) for x in sel["grid"]] == [0.003, 0.01, 0.03, 0.09, 0.27]
    assert math.isclose(sel["chosen"], 0.09)
    assert len(out["trials"]) == 5 * 2                       # every rate at the two selection seeds
    assert [r["seed"] for r in out["runs"]] == [0, 1, 2, 3, 4]  # then every seed at the chosen rate
    assert all(r["lr"] == sel["chosen"] for r in out["runs"])
    assert len(calls) == 5 * 2 + 3                           # nothing trained twice
    assert "memory" in out["runs"][0] and "memory" not in out["runs"][1]


def test_a_grid_that_cannot_be_bracketed_is_marked_unbracketed():
    one = Budget(n_train=8, n_eval=8, seeds=(0, 1, 2), select_seeds=2, max_extensions=1)
    sel = runner.protocol(["probe"], None, one, progress=False, run_fn=synthetic(10.0))["probe"]["selection"]
    assert not sel["bracketed"] and sel["edge"] == "high" and sel["extensions"] == 1 and len(sel["grid"]) == 4
    assert math.isclose(sel["chosen"], sel["grid"][-1])
    # the same curve with its peak inside the grid: bracketed, no extension
    sel = runner.protocol(["probe"], None, one, progress=False, run_fn=synthetic(1e-2))["probe"]["selection"]
    assert sel["bracketed"] and sel["extensions"] == 0 and sel["chosen"] == 1e-2


def test_the_rate_is_chosen_on_the_mean_over_the_selection_seeds():
    # seed 0 alone prefers 3e-2, the mean over seeds 0 and 1 prefers 1e-2
    noise = {(0.03, 0): 0.10, (0.03, 1): -0.20}
    sel = runner.protocol(["probe"], None, B, progress=False, run_fn=synthetic(1e-2, noise))["probe"]["selection"]
    assert sel["chosen"] == 1e-2 and sel["seeds"] == [0, 1]
    one_seed = Budget(n_train=8, n_eval=8, seeds=(0, 1), select_seeds=1, max_extensions=0)
    sel = runner.protocol(["probe"], None, one_seed, progress=False, run_fn=synthetic(1e-2, noise))["probe"]["selection"]
    assert sel["chosen"] == 0.03  # the old one-seed search would have been fooled


def test_a_tie_in_validation_goes_to_the_smaller_rate():
    # 1e-2 and 3e-2 score exactly the same mean (0.875 = mean of 0.85, 0.90 and of 0.90, 0.85);
    # the smaller rate is kept, and it is interior, so the grid is bracketed with no extension
    table = {(0.003, 0): 0.5, (0.003, 1): 0.5, (0.01, 0): 0.85, (0.01, 1): 0.90, (0.03, 0): 0.90, (0.03, 1): 0.85,
             (0.09, 0): 0.5, (0.09, 1): 0.5}
    out = runner.protocol(["probe"], None, B, progress=False, run_fn=synthetic(1e-2, table=table))["probe"]
    assert out["selection"]["chosen"] == 1e-2 and out["selection"]["bracketed"]
    assert out["selection"]["extensions"] == 0 and out["selection"]["scores"][1:] == [0.875, 0.875]
    # nudge 3e-2 up by 0.01 on one seed: it wins, at the high edge, so the grid is extended
    table[(0.03, 1)] = 0.86
    out = runner.protocol(["probe"], None, B, progress=False, run_fn=synthetic(1e-2, table=table))["probe"]
    assert out["selection"]["chosen"] == 0.03 and out["selection"]["extensions"] == 1


def test_every_arm_sees_the_same_seeds_so_runs_pair_by_seed():
    out = runner.protocol(["probe", "lora"], None, B, progress=False, run_fn=synthetic(1e-2))
    a = {r["seed"]: r["test_acc"] for r in out["probe"]["runs"]}
    b = {r["seed"]: r["test_acc"] for r in out["lora"]["runs"]}
    assert sorted(a) == sorted(b) == [0, 1, 2, 3, 4]
    d = stats.paired_by_seed(a, b)
    assert d["n"] == 5 and d["seeds"] == [0, 1, 2, 3, 4]


def test_pairing_is_by_seed_not_by_position():
    a = {0: 0.90, 1: 0.91, 2: 0.95}
    b = {2: 0.94, 0: 0.89, 1: 0.90}          # listed in another order: still 0.01 apart on every seed
    d = stats.paired_by_seed(a, b)
    assert math.isclose(d["mean"], 0.01) and d["se"] < 1e-12 and not d["tie"]
    by_position = stats.paired(list(a.values()), list(b.values()))
    assert by_position["tie"]                 # pairing by position mixes seeds and calls it a tie
    with pytest.raises(ValueError, match="same seeds"):
        stats.paired_by_seed({0: 0.9, 1: 0.9}, {0: 0.9, 2: 0.9})


def test_the_tie_rule_follows_the_interval():
    base = {s: 0.90 + 0.01 * s for s in range(5)}
    close = {s: v - 0.002 + (0.004 if s % 2 else -0.004) for s, v in base.items()}
    apart = {s: v - 0.02 for s, v in base.items()}
    assert stats.paired_by_seed(base, close)["tie"]
    far = stats.paired_by_seed(base, apart)
    assert not far["tie"] and far["lo"] > 0 and stats.order(far, "a", "b") == "a > b"


def test_finished_runs_are_reused_not_trained_again():
    first, seen = [], {}
    runner.protocol(["probe"], None, B, progress=False, run_fn=synthetic(1e-2, calls=first),
                    on_result=lambda label, r: seen.__setitem__((label, r["lr"], r["seed"]), r))
    again = []
    out = runner.protocol(["probe"], None, B, progress=False, run_fn=synthetic(1e-2, calls=again), done=seen)
    assert len(seen) == len(first) == 3 * 2 + 3 and again == []
    assert [r["seed"] for r in out["probe"]["runs"]] == [0, 1, 2, 3, 4]



def test_each_result_is_reported_before_the_next_run_starts():
    """With one process the pool trains a run as it is submitted; ``on_result`` (chapter 01's run
    log and progress bar) must see it then, not after the whole first grid, so an interrupted sweep
    keeps every finished run."""
    events = []
    trained = synthetic(1e-2)

    def run_fn(arm, *a, **k):
        events.append("run")
        return trained(arm, *a, **k)

    runner.protocol(["probe"], None, B, progress=False, run_fn=run_fn, on_result=lambda label, r: events.append("told"))
    assert events == ["run", "told"] * (3 * 2 + 3)

@pytest.mark.parametrize("kw", [dict(select_seeds=0), dict(select_seeds=3, seeds=(0, 1)), dict(max_extensions=-1),
                                dict(seeds=(0, 0, 1))])
def test_bad_budgets_are_refused(kw):
    with pytest.raises(ValueError, match="invalid budget"):
        Budget(**kw)
