"""``tasks.add_seeds`` (``experiment --more-seeds``): the missing seeds run at each method's
stored rate, the stored runs and rate searches stay as they were, and a re-run of one stored
run that does not come back identical stops everything before a run is added."""
import copy

import pytest

from pedagogy_lib.book.ch10 import tasks as T


def stored():
    runs = [{"method": m, "lr": lr, "seed": s, "val": {"acc": 0.1 * s + lr}, "test": {"acc": 0.2 * s + lr},
             "trainable": 10, "final_loss": 1.0} for m, lr in (("full", 1e-3), ("lora-qv", 1e-2)) for s in (0, 1, 2)]
    runs += [{"method": "full", "lr": 1e-4, "seed": s, "val": {"acc": 0.0}, "test": {"acc": 0.0}, "trainable": 10,
              "final_loss": 2.0} for s in (0, 1)]   # a rate the search tried and did not choose
    return {"runs": runs, "selection": {"full": {"chosen": 1e-3}, "lora-qv": {"chosen": 1e-2}}, "seeds": [0, 1, 2]}


def faithful(calls):
    """A run function that reproduces ``stored()``'s scores exactly and logs its calls."""
    def run(m, lr, seed, bar):
        calls.append((m, lr, seed))
        return {"method": m, "lr": lr, "seed": seed, "val": {"acc": 0.1 * seed + lr}, "test": {"acc": 0.2 * seed + lr},
                "trainable": 10, "final_loss": 1.0, "seconds": 5.0}
    return run


def test_missing_seeds_run_at_the_chosen_rates_and_the_stored_runs_stay():
    res, calls = stored(), []
    before = copy.deepcopy(res)
    out = T.add_seeds(res, faithful(calls), (0, 1, 2, 3, 4))
    assert res == before                                          # the input is not modified
    assert calls[0] == ("full", 1e-3, 0)                          # the check: one stored run re-run
    assert sorted(calls[1:]) == [("full", 1e-3, 3), ("full", 1e-3, 4), ("lora-qv", 1e-2, 3), ("lora-qv", 1e-2, 4)]
    assert [r for r in out["runs"] if r["seed"] < 3] == before["runs"] and out["selection"] == before["selection"]
    order = [(r["method"], r["lr"], r["seed"]) for r in out["runs"]]   # the protocol's order: each rate's seeds together
    assert order[:5] == [("full", 1e-3, s) for s in range(5)] and order[5:10] == [("lora-qv", 1e-2, s) for s in range(5)]
    assert out["seeds"] == [0, 1, 2, 3, 4] and len(out["runs"]) == len(before["runs"]) + 4
    spent = out["added_seeds"]["3,4"]
    assert spent["checked"] is True and spent["wall_seconds"] >= 0 and spent["cpu_seconds"] >= 0
    again = []
    assert T.add_seeds(out, faithful(again), (0, 1, 2, 3, 4)) is out and again == []   # nothing missing: no run


def test_a_rerun_that_differs_refuses_before_any_seed_is_added():
    calls = []

    def drifted(m, lr, seed, bar):
        rec = faithful(calls)(m, lr, seed, bar)
        rec["test"]["acc"] += 1e-12                               # not bit-identical: the seeds would not pair
        return rec

    res = stored()
    with pytest.raises(RuntimeError, match="would not be paired"):
        T.add_seeds(res, drifted, (0, 1, 2, 3, 4))
    assert calls == [("full", 1e-3, 0)] and res == stored()


def test_stored_seeds_outside_the_requested_ones_are_refused():
    res = stored() | {"seeds": [0, 1, 7]}
    with pytest.raises(ValueError, match=r"stored seeds \[0, 1, 7\]"):
        T.add_seeds(res, faithful([]), (0, 1, 2, 3, 4))


def test_the_chapter_compares_five_seeds():
    assert T.SEEDS == (0, 1, 2, 3, 4)
