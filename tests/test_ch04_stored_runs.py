"""Chapter 04's sweep reuses its stored runs (a run is deterministic in arm, m, rate and seed
under one budget). A file stored under another budget must not be reused: its runs would enter
a sweep whose config names the new budget, two budgets mixed in one file."""
import json

from pedagogy_lib.book.ch04 import experiment as E


def test_stored_runs_are_reused_only_under_the_same_budget(tmp_path, capsys):
    sweep = json.loads(E.OUT.read_text())
    same = tmp_path / "same.json"
    same.write_text(json.dumps(sweep))
    assert len(E.stored_runs(same)) == len(sweep["runs"]) == 91  # the stored file: every run reusable
    for key, other in (("epochs", 5), ("head_lr", 3e-3), ("n_train", 512), ("mlp_hidden", 256)):
        changed = json.loads(json.dumps(sweep))
        changed["config"][key] = other
        path = tmp_path / f"{key}.json"
        path.write_text(json.dumps(changed))
        assert E.stored_runs(path) == {}, key
        assert key in capsys.readouterr().err
    assert E.stored_runs(tmp_path / "missing.json") == {}


def test_the_stored_config_is_the_current_budget():
    cfg = json.loads(E.OUT.read_text())["config"]
    assert {k: cfg[k] for k in E.RUN_CONFIG} == E.RUN_CONFIG
