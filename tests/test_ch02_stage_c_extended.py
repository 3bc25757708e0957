"""Chapter 02's stage C when stage A's LoRA rate comes from an extension of its grid.

The stored sweep chose 3e-3, inside LRS["lora"], so stage C's grid (that rate and its two
neighbours) could be read off the starting grid. A best rate at the grid's top edge is extended
(``stats.next_lr``) to a rate on no starting grid; stage C must then take its neighbours from the
grid stage A searched, extensions included, instead of stopping the sweep with "not on the grid".
Every run here is a made-up record (no training)."""
import math

import pytest

from pedagogy_lib.book.ch02 import experiment as E

LRS = {"probe": [1e-3, 1e-2], "lora": [1e-3, 3e-3, 1e-2], "full": [1e-5, 1e-4]}
PEAK = 0.04  # LoRA's made-up validation accuracy peaks here, beyond the top of LRS["lora"]


def made_up(arm, task, budget, seed, lr, **kw):
    """A run record whose validation accuracy peaks at PEAK for every LoRA setting."""
    val = 0.9 - 0.05 * abs(math.log10(lr / PEAK)) if arm.method == "lora" else 0.8
    rec = {"method": arm.label, "lr": lr, "seed": seed, "val_acc": val, "test_acc": val - 0.01 * seed,
           "trainable": 73728, "total": 22565376, "losses": [0.5], "cpu_s": 0.0}
    if arm.method == "lora":
        rec |= {"n_matrices": 12, "delta_norm": 1.0}
    return rec


def test_stage_c_takes_neighbours_from_stage_as_extended_grid():
    out = E.sweep(lrs=LRS, ranks=[8], log=None, run_fn=made_up, progress=False)
    s = out["summary"]
    top = LRS["lora"][-1] ** 2 / LRS["lora"][-2]            # the first extension above 1e-2 (Eq. 8.2)
    above = top ** 2 / LRS["lora"][-1]                      # the second
    assert s["best_lr"]["lora"] == pytest.approx(top)      # chosen at an extension: on no starting grid
    assert top not in LRS["lora"]
    for g in ("placement", "same_rank"):
        for name, r in s[g].items():
            grid = sorted(float(x) for x in r["val_by_lr"])
            assert grid == pytest.approx([1e-2, top, above]), (g, name)   # neighbours in the searched grid
            assert r["lr"] == pytest.approx(top) and r["bracketed"], (g, name)
    assert all(r["seeds"] == list(E.EVAL_SEEDS) for rows in s["rank"].values() for r in rows.values())


def test_stage_c_grid_takes_the_searched_grid_and_still_refuses_an_off_grid_rate():
    searched = [1e-3, 3e-3, 1e-2, 1e-2 ** 2 / 3e-3]
    assert E.stage_c_grid(searched, searched[-1]) == (1e-2, searched[-1])
    with pytest.raises(ValueError, match="not on the grid"):
        E.stage_c_grid(searched, 5e-3)
