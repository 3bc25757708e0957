"""Chapter 06's learning curve on the runner, without training anything: ``learning_curve``
driven by a synthetic run function, so the protocol's steps, the stored record and resuming
from the run log are checked in a second."""
import json
import math

import pytest

from pedagogy_lib.book.ch06 import experiment as E


def synthetic(peak: float, calls: list):
    """Validation accuracy peaks at ``peak`` (log-distance); test = validation + seed/100 + n/1e5."""
    def run_fn(arm, task, budget, seed, lr, data=None, measure=False):
        calls.append((arm.label, budget.n_train, lr, seed))
        val = 0.9 - 0.05 * abs(math.log10(lr / peak))
        steps = budget.epochs * math.ceil(budget.n_train / budget.batch_size)
        return {"method": arm.label, "lr": lr, "seed": seed, "val_acc": val,
                "test_acc": val + seed / 100 + budget.n_train / 1e5, "trainable": 7, "sec_per_epoch": 0.0,
                "cpu_s": 1.0, "losses": [0.5] * steps, "final_loss": 0.5}
    return run_fn


def test_budget_per_size_follows_the_epochs_rule():
    assert [E.budget(n).epochs for n in (64, 128, 256, 512, 1024, 2048)] == [30, 15, 8, 4, 3, 3]
    b = E.budget(64)
    assert b.n_eval is None and b.resample and b.select_seeds == 2 and b.max_extensions == 2 and b.seeds == (0, 1, 2, 3, 4)
    # every update count is at least MIN_STEPS
    assert all(E.epochs_for(n) * math.ceil(n / E.BATCH) >= E.MIN_STEPS for n in E.SIZES)
    assert E.SELECT_N in E.SIZES and set(E.CURVE) <= set(E.ARMS)


def test_arms_are_registry_records():
    assert E.ARMS["BitFit (b_q, b_m2)"].opts == {"sites": ("b_q", "b_m2")}
    from pedagogy_lib import counting as C
    from pedagogy_lib.bitfit import QM2, bitfit_params
    assert E.ARMS["BitFit (b_q, b_m2)"].params(C.minilm_shape()) == bitfit_params(C.minilm_shape(), only=QM2)
    assert E.ARMS["BitFit"].params(C.minilm_shape()) == bitfit_params(C.minilm_shape())


def test_curve_selects_on_two_seeds_then_runs_every_size_and_resumes(tmp_path):
    log, calls = tmp_path / "runs.jsonl", []
    sizes = (32, 64)
    res = E.learning_curve(["BitFit", "probe"], sizes, (0, 1, 2, 3, 4), log=log, progress=False,
                           select_n=64, run_fn=synthetic(0.1, calls))
    r = res["results"]["BitFit"]  # grid (3e-3, 1e-2, 3e-2): 3e-2 at the edge -> 9e-2 -> 0.27 (loses)
    assert r["bracketed"] and r["extensions"] == 2 and math.isclose(r["lr"], 0.09)
    assert len(r["val_by_lr"]) == 5 and r["select_seeds"] == [0, 1]
    for n in sizes:
        point = r["curve"][str(n)]
        assert point["seeds"] == [0, 1, 2, 3, 4] and len(point["test_by_seed"]) == len(point["val_by_seed"]) == 5
        assert point["steps"] == E.epochs_for(n) * math.ceil(n / E.BATCH)
        assert math.isclose(point["test_by_seed"][3] - point["test_by_seed"][0], 0.03, abs_tol=1e-6)
    # selection at n=64 (5 rates x 2 seeds + 3 seeds), the other size at the chosen rate only
    bitfit = [c for c in calls if c[0] == "BitFit"]
    assert len(bitfit) == 5 * 2 + 3 + 5 and {c[2] for c in bitfit if c[1] == 32} == {r["lr"]}
    assert r["cpu_s"] == len(bitfit)  # each run's 1 CPU-second once (the selection seeds' runs are trials)
    assert res["config"]["lr_selected_at_n"] == 64 and res["config"]["seeds"] == [0, 1, 2, 3, 4]
    json.dumps(res)  # JSON-ready
    # a second call trains nothing: every run is in the log
    again = []
    res2 = E.learning_curve(["BitFit", "probe"], sizes, (0, 1, 2, 3, 4), log=log, progress=False,
                            select_n=64, run_fn=synthetic(0.1, again))
    assert again == [] and res2["results"] == res["results"]


def test_selection_size_must_be_a_curve_size(tmp_path):
    with pytest.raises(ValueError, match="selection size"):
        E.learning_curve(["probe"], (32,), (0, 1), log=None, progress=False, select_n=64, run_fn=synthetic(0.1, []))
