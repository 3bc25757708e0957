"""A sweep's module docstring states what its stored file holds: the run count and the CPU
minutes (the sum of the runs' own ``cpu_s``). A stale cost (chapter 04's said 22 CPU-minutes
for a file of 91 runs and 33) misleads whoever plans a rerun."""
import json
import re

import pytest

from pedagogy_lib import results as R


def _ch04(d):
    return len(d["runs"]), sum(r["cpu_s"] for r in d["runs"])


def _ch07(d):
    res = d["results"].values()
    return sum(r["n_runs"] for r in res), d["config"]["cpu_s_runs"]


def _ch06(d):
    c = d["config"]  # every size and seed at the chosen rate, plus the selection seeds at the other rates
    runs = sum(len(c["sizes"]) * len(c["seeds"]) + (len(r["lr_grid"]) - 1) * len(r["select_seeds"])
               for r in d["results"].values())
    return runs, d["cpu_s"]


CASES = {  # module, stored file, (runs, cpu seconds) from the file, the docstring's pattern
    "ch04": ("pedagogy_lib.book.ch04.experiment", "ch04_prefix.json", _ch04,
             r"(\d+) runs, about (\d+) CPU-minutes"),
    "ch06": ("pedagogy_lib.book.ch06.experiment", "ch06_learning_curve.json", _ch06,
             r"(\d+) training runs, (\d+) CPU-minutes"),
    "ch07": ("pedagogy_lib.book.ch07.experiment", "ch07_accuracy.json", _ch07,
             r"\((\d+) runs, about (\d+) CPU-minutes"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_sweep_docstring_states_the_stored_runs_and_cost(name):
    import importlib

    module, file, measure, pattern = CASES[name]
    doc = " ".join(importlib.import_module(module).__doc__.split())
    found = re.search(pattern, doc)
    assert found, f"{module}: no '{pattern}' in its docstring"
    runs, cpu_s = measure(json.loads((R.RESULTS / file).read_text()))
    assert int(found.group(1)) == runs, f"{module}: docstring says {found.group(1)} runs, the file holds {runs}"
    assert int(found.group(2)) == round(cpu_s / 60), \
        f"{module}: docstring says {found.group(2)} CPU-minutes, the file's runs sum to {cpu_s / 60:.1f}"
