"""``experiment --append``: new methods join the stored results, the stored runs stay as they were,
and a method of the original run can be neither appended again nor redone."""
import copy

import pytest

from pedagogy_lib.book.ch10 import experiment as E


@pytest.fixture
def stored(monkeypatch):
    box = {"res": {"runs": [{"method": "full", "lr": 1e-3, "seed": s, "test": {"loss": 3.0}} for s in range(3)],
                   "selection": {"full": {"chosen": 1e-3, "bracketed": True}}, "grids": {"full": [1e-3]},
                   "seeds": [0, 1, 2]}}
    saved = []

    def fake_protocol(task, methods, tok, bar=None, out=None):
        for m in methods:
            out["selection"][m] = {"chosen": 1e-2, "bracketed": True}
            out["runs"] += [{"method": m, "lr": 1e-2, "seed": s, "test": {"loss": 2.9}} for s in range(3)]
        return out

    monkeypatch.setattr(E.R, "load", lambda *a, **k: copy.deepcopy(box["res"]))
    monkeypatch.setattr(E.R, "save", lambda data, name: saved.append(copy.deepcopy(data)) or name)
    monkeypatch.setattr(E, "protocol", fake_protocol)
    return box, saved


def test_append_keeps_the_stored_runs_and_records_cpu_time(stored):
    box, saved = stored
    res = E.append("line", ["prefix"], tok=None)
    assert res["runs"][:3] == box["res"]["runs"] and res["selection"]["full"] == box["res"]["selection"]["full"]
    assert {r["method"] for r in res["runs"][3:]} == {"prefix"} and res["grids"]["prefix"] == E.GRIDS["prefix"]
    assert set(res["appended"]["prefix"]) >= {"wall_seconds", "cpu_seconds"} and saved[-1] == res


def test_append_refuses_stored_methods_and_redo_refuses_original_ones(stored):
    box, saved = stored
    with pytest.raises(ValueError, match="already stored"):
        E.append("line", ["full"], tok=None)
    with pytest.raises(ValueError, match="not added by --append"):
        E.append("line", ["full"], tok=None, redo=True)
    assert saved == []                                       # nothing written
    box["res"] = E.append("line", ["ptuning-v2"], tok=None)
    again = E.append("line", ["ptuning-v2"], tok=None, redo=True)
    assert [r["method"] for r in again["runs"]].count("ptuning-v2") == 3 and again["runs"][:3] == box["res"]["runs"][:3]
