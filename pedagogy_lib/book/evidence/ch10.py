"""Chapter 10's stored results (``chapters/results/ch10_*.json``) as every chapter reads them:
the loaders, the methods table and the paired differences (Eq. 10.5, Eqs. 8.4–8.7) that
chapters 04, 05, 07 and 08 judge their sentences on, and chapter 08's decoder row.

A shared book-level module: it reads files through ``pedagogy_lib.results`` and imports no
room (``tests/test_layers.py``); the room ``book.ch10`` imports these and re-exports them.
"""
from __future__ import annotations

import numpy as np

from pedagogy_lib import results as R, stats

COMMAND = "python -m pedagogy_lib.book.ch10.experiment (make sweeps)"


def load(task: str) -> dict:
    return R.load(f"ch10_{task}", COMMAND, keys=("runs", "selection", "zero_shot"), what="chapter 10 results")


def load_studies() -> dict:
    return R.load("ch10_studies", "python -m pedagogy_lib.book.ch10.studies (make sweeps)",
                  keys=("dtypes", "placement", "rank", "recipe"), what="chapter 10 studies")


def load_gpu() -> dict | None:
    """The stored CUDA run of the recipe (``tests/gpu/recipe_report.py`` via
    ``tests/gpu/run_gpu_checks.sh``), or None where no GPU run is stored."""
    return R.load_stored("ch10_gpu", "bash tests/gpu/run_gpu_checks.sh (on a CUDA machine)",
                         keys=("device", "runs", "checkpointing_over_plain", "bytes"), what="chapter 10 GPU record")


def load_scale() -> dict:
    """The area task's full fine-tuning and prompt tuning on ``stdlib-4m`` (the model-size study)."""
    return R.load("ch10_scale", "python -m pedagogy_lib.book.ch10.experiment --scale (make sweeps)",
                  keys=("runs", "selection", "zero_shot", "model"), what="chapter 10 model-size results")


def prompt_gaps(area: dict, scale: dict) -> dict:
    """{model: paired prompt − full accuracy difference (Eq. 10.5)} at each size, with the
    number of parameters and whether both rates are bracketed."""
    out = {}
    for res in (area, scale):
        rows = {r["method"]: r for r in table(res)}
        out[res["model"]] = {"d": paired_gain(res, "prompt", "full"), "params": rows["full"]["trainable"],
                             "bracketed": all(rows[m]["bracketed"] is not False for m in ("prompt", "full"))}
    return out


def value(task: str, test: dict) -> float:
    """The test metric: accuracy (area) or mean response-token loss in nats (line)."""
    return test["acc"] if task == "area" else test["loss"]


def chosen_runs(res: dict, method: str) -> list[dict]:
    """The runs at the method's chosen rate, one per seed of ``res["seeds"]``, in seed order."""
    lr = res["selection"][method]["chosen"]
    runs = sorted((r for r in res["runs"] if r["method"] == method and r["lr"] == lr), key=lambda r: r["seed"])
    if [r["seed"] for r in runs] != res["seeds"]:
        raise ValueError(f"{method}: expected seeds {res['seeds']} at lr {lr}, found {[r['seed'] for r in runs]}")
    return runs


def methods(res: dict) -> list[str]:
    return list(res["selection"])


def table(res: dict) -> list[dict]:
    """One row per method: rate, bracketed?, trainable parameters, test mean and sd over seeds."""
    task = res["task"]
    rows = []
    for m in methods(res):
        runs = chosen_runs(res, m)
        v = [value(task, r["test"]) for r in runs]
        sel = res["selection"][m]
        row = {"method": m, "lr": sel["chosen"], "bracketed": sel.get("bracketed"),
               "trainable": runs[0]["trainable"], "mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)),
               "seconds": float(np.mean([r["seconds"] for r in runs]))}
        if task == "line":
            row |= {k: float(np.mean([r["test"][k] for r in runs])) for k in ("ppl", "exact_match", "rouge_l")}
        rows.append(row)
    return rows


def paired_gain(res: dict, method: str, ref: str) -> dict:
    """``method`` minus ``ref`` over seeds, signed so that positive means ``method`` is better:
    accuracy difference (area), loss of ``ref`` minus loss of ``method`` (line). Eqs. 8.4–8.7."""
    a, b = ({r["seed"]: value(res["task"], r["test"]) for r in chosen_runs(res, m)} for m in (method, ref))
    return stats.paired_by_seed(a, b) if res["task"] == "area" else stats.paired_by_seed(b, a)


def guide_row(area=None, line=None) -> dict:
    """Chapter 08's "GPT-style decoder" row, decided by measurement: for each task the best
    method (test metric) and every method whose paired interval against it contains 0; methods
    whose learning rate sits at its grid's edge are left out (``unbracketed``)."""
    out = {}
    for task, res in (("classification (area, LM-head verbaliser)", area or load("area")),
                      ("generation (first line, held-out modules)", line or load("line"))):
        every = table(res)
        rows = [r for r in every if r["bracketed"] is not False]
        sign = 1 if res["task"] == "area" else -1
        best = max(rows, key=lambda r: sign * r["mean"])["method"]
        ties = [r["method"] for r in rows if r["method"] != best and paired_gain(res, r["method"], best)["tie"]]
        out[task] = {"best": best, "ties_with_best": ties,
                     "trainable": {r["method"]: r["trainable"] for r in rows},
                     "unbracketed": sorted(r["method"] for r in every if r["bracketed"] is False)}
    return out
