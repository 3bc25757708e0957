"""Chapter 02 through the one runner and registry (issue #12): ``runner.protocol``, with every
training run replaced by its stored record, gives back ``chapters/results/ch02_sweeps.json``
(chosen rates, every run, the summary), and ``runner.run`` of registry arms gives the numbers
chapter 02's own training function (``finetune``, removed; recorded at 2d0a3c7 on this machine,
one thread) gave on small slices. Not here (15–60 CPU-s each): five full-size stored runs (probe,
LoRA q,v r=8, FFN r=3, rsLoRA r=64, full FT) retrained once through ``experiment.RUN`` gave their
stored validation and test accuracies exactly."""
import copy
import json
import pathlib

import pytest
import torch

from pedagogy_lib import data, runner
from pedagogy_lib.book.ch02 import experiment as E
from pedagogy_lib.registry import Arm, get

STORED = pathlib.Path(__file__).resolve().parents[1] / "chapters" / "results" / "ch02_sweeps.json"


def stored() -> dict:
    return json.loads(STORED.read_text())


def key(spec: dict) -> str:
    return json.dumps(spec, sort_keys=True)


def replaying(doc: dict):
    """A ``run_fn`` that hands back the stored record of the run asked for (and fails on any other)."""
    by_spec = {key(r["spec"]): r for r in doc["runs"]}

    def run(arm, task, budget, seed, lr, **kw):
        r = copy.deepcopy(by_spec[key(E.stored(arm, {"lr": lr, "seed": seed, "losses": [0.0]}, budget)["spec"])])
        return {**r, "lr": lr, "seed": seed, "losses": [r.pop("final_loss")]}
    return run


def test_the_protocol_gives_back_the_stored_sweep():
    doc = stored()
    out = E.sweep(log=None, run_fn=replaying(doc), progress=False)
    assert out["summary"]["best_lr"] == doc["summary"]["best_lr"]
    assert out["summary"] == doc["summary"]      # every mean, list and count, float for float
    assert out["runs"] == doc["runs"]            # the same 167 runs, none more
    assert json.loads(json.dumps(E.config())) == doc["config"]


def test_replayed_selection_chooses_the_stored_rates_bracketed_on_two_seeds():
    doc = stored()
    base = E.base_arms()
    found = runner.protocol(base.values(), None, E.BUDGET, progress=False, run_fn=replaying(doc))
    for m, arm in base.items():
        sel = found[arm.label]["selection"]
        assert sel["chosen"] == doc["summary"]["best_lr"][m], m
        assert sel["bracketed"] and sel["extensions"] == 0 and sel["seeds"] == [0, 1], m
        assert [r["seed"] for r in found[arm.label]["runs"]] == list(E.EVAL_SEEDS)


def test_stage_c_arms_have_their_own_bracketed_grids_and_stage_d_one_rate():
    """Issue #13: each placement and same-rank arm searched 1e-3, 3e-3, 1e-2 (extended at an edge)
    and ran every seed at its own chosen rate; the rank arms ran at LoRA q,v r=8's rate only."""
    doc = stored()
    s, lr = doc["summary"], doc["summary"]["best_lr"]["lora"]
    assert E.stage_c_grid(E.LRS["lora"], lr) == (1e-3, 3e-3, 1e-2)
    for g in ("placement", "same_rank"):
        for n, r in s[g].items():
            grid = sorted(float(x) for x in r["val_by_lr"])
            assert {1e-3, 3e-3, 1e-2} <= set(grid) and len(grid) == 3 + r["extensions"], (g, n)
            assert r["bracketed"] and grid[0] < r["lr"] < grid[-1], (g, n)
            assert r["val_by_lr"][f"{r['lr']:g}"] == max(r["val_by_lr"].values()), (g, n)
            runs = [x for x in doc["runs"] if x["spec"]["method"] == "lora" and x["spec"]["lr"] == r["lr"]
                    and x["spec"]["r"] == r["r"] and x["spec"]["targets"] == (E.PLACEMENTS if g == "placement" else E.SAME_RANK)[n]
                    and not x["spec"]["rslora"]]
            assert sorted(x["test_acc"] for x in runs) == sorted(r["test_acc"]), (g, n)
    assert all("val_by_lr" not in r for rows in s["rank"].values() for r in rows.values())
    with pytest.raises(ValueError, match="not on the grid"):
        E.stage_c_grid(E.LRS["lora"], 5e-3)


def test_stored_runs_are_reused_not_retrained():
    """``experiment.reuse`` hands the protocol every stored run of the arms asked for, so a rerun
    with the stored file trains nothing."""
    doc = stored()

    def refuse(arm, task, budget, seed, lr, **kw):
        raise AssertionError(f"retrained {arm.label} lr={lr:g} seed={seed}")
    out = E.sweep(log=None, run_fn=refuse, progress=False, previous=doc)
    assert out["summary"] == doc["summary"] and out["runs"] == doc["runs"]
    done = E.reuse(doc, [E.lora_arm(E.FFN, 3)], E.BUDGET)
    assert {(lr, s) for _, lr, s in done} >= {(1e-3, s) for s in E.EVAL_SEEDS}
    assert E.reuse(None, [E.lora_arm()], E.BUDGET) == {}


# (arm, lr, seed): val_acc, test_acc, final loss (last 10 steps), mean ‖s·BA‖_F, trainable, as
# finetune(method, 64 training words, 64 val, 64 test, epochs=2, batch 32, head lr 1e-3, α=8, cosine) gave
BEFORE = [
    (Arm("probe", "probe"), 1e-2, 0, (0.640625, 0.71875, 0.5788477882742882, None, 0)),
    (E.lora_arm(), 3e-3, 1, (0.609375, 0.625, 0.645232543349266, 0.21062125141421953, 73728)),
    (E.lora_arm(E.FFN, 3), 3e-3, 2, (0.765625, 0.71875, 0.6640548706054688, 0.5021966174244881, 69120)),
    (E.lora_arm(E.QV, 64, True), 3e-3, 3, (0.640625, 0.6875, 0.6817877441644669, 0.6209542055924734, 589824)),
    (Arm("full", "full"), 3e-4, 4, (0.890625, 0.90625, 0.5753939151763916, None, 22565376)),
]


def test_runner_gives_the_numbers_of_chapter_02s_own_loop():
    torch.set_num_threads(1)
    task = data.polarity_task(seed=0)
    slices = (data.subsample(task.train, 64, 0), data.subsample(task.val, 64, 0), data.subsample(task.test, 64, 0))
    for arm, lr, seed, (val, test, loss, norm, trainable) in BEFORE:
        rec = E.stored(arm, E.RUN(arm, None, E.BUDGET, seed, lr, data=slices), E.BUDGET)
        assert (rec["val_acc"], rec["test_acc"], rec["trainable"], rec["total"]) == (val, test, trainable, 22565376)
        assert rec["final_loss"] == pytest.approx(loss, rel=1e-6), arm.label
        assert rec.get("delta_norm") == (None if norm is None else pytest.approx(norm, rel=1e-6)), arm.label


def test_lora_takes_rslora_as_an_option_and_refuses_unknown_ones():
    mm = runner.fresh_minilm()
    get("lora").setup_torch(mm, 0, r=64, alpha=8, rslora=True)
    from pedagogy_lib.torch_ref.lora import lora_layers

    assert {m.scaling for m in lora_layers(mm.bert).values()} == {1.0}          # α/√r = 8/8
    assert get("lora").opts()["rslora"] is False
    with pytest.raises(ValueError, match="takes no option"):
        Arm("x", "lora", {"rs_lora": True})
    labels = {E.lora_arm(E.QV, 8).label, E.lora_arm(E.QV, 8, True).label, E.lora_arm(E.FFN, 3).label}
    assert labels == {"lora q,v r=8", "lora q,v r=8 rsLoRA", "lora FFN only r=3"}
