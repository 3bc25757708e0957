"""pedagogy_lib.results: the one reader/writer of chapters/results/*.json."""
import json

import numpy as np
import pytest

from pedagogy_lib import results as R


def test_names_and_paths(tmp_path):
    assert R.path_of("ch03_latency") == R.RESULTS / "ch03_latency.json"
    assert R.path_of(tmp_path / "x.json") == tmp_path / "x.json"


def test_save_load_round_trip_and_errors(tmp_path):
    d = {"b": [1, 2.5], "a": {"z": None}}
    p = R.save(d, tmp_path / "sub" / "r.json")
    assert R.load(p, "make x", keys=("a", "b")) == d
    assert p.read_text() == json.dumps(d, indent=1, sort_keys=True) + "\n"
    assert not list(p.parent.glob(".*.tmp"))  # the temporary file is gone
    with pytest.raises(FileNotFoundError, match="run make x"):
        R.load(tmp_path / "none.json", "make x")
    with pytest.raises(ValueError, match="not a widget file .*'c'"):
        R.load(p, "make x", keys=("a", "c"), what="widget")
    (tmp_path / "bad.json").write_bytes(b"\xff\xfe not json")
    with pytest.raises(ValueError, match="not JSON"):
        R.load(tmp_path / "bad.json", "make x")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a results file .*list"):
        R.load(tmp_path / "list.json", "make x", keys=("a",))


def test_save_runs_one_run_per_line(tmp_path):
    d = {"config": {"n": 3}, "runs": [{"seed": 0, "acc": 0.5}, {"seed": 1, "acc": 0.75}]}
    p = R.save_runs(d, tmp_path / "s.json")
    assert json.loads(p.read_text()) == d and "runs" in d  # same data; the input is untouched
    lines = p.read_text().splitlines()
    assert '  {"acc": 0.5, "seed": 0},' in lines and '  {"acc": 0.75, "seed": 1}' in lines
    # the committed sweeps are in exactly this format
    for name in ("ch04_prefix", "ch05_prompt"):
        text = R.path_of(name).read_text()
        assert R.save_runs(json.loads(text), tmp_path / f"{name}.json").read_text() == text


def test_mean_sd():
    m, s = R.mean_sd([1, 2, 3, 4])
    assert m == 2.5 and s == pytest.approx(np.std([1, 2, 3, 4], ddof=1), abs=0)
    assert R.mean_sd([0.7]) == (0.7, 0.0)


def test_versions_selection_and_trained_runs():
    import platform

    assert R.versions("numpy") == {"python": platform.python_version(), "numpy": np.__version__}
    sel = {"grid": [1e-3, 3e-3], "scores": [0.81234567, 0.9], "chosen": 3e-3, "bracketed": False, "edge": "high",
           "extensions": 2, "seeds": [0, 1]}
    rec = R.selection(sel, 6)
    assert rec["val_by_lr"] == {"0.001": 0.812346, "0.003": 0.9} and R.selection(sel)["val_by_lr"]["0.001"] == 0.81234567
    assert (rec["lr"], rec["lr_grid"], rec["bracketed"], rec["edge"], rec["select_seeds"]) == (3e-3, sel["grid"], False,
                                                                                               "high", [0, 1])
    found = {"trials": ["t0", "t1"], "runs": ["r0", "r1", "r2", "r3"], "selection": sel}
    assert R.trained(found) == ["t0", "t1", "r2", "r3"]  # seeds 0, 1 at the chosen rate are trials already


def test_points_by_seed_and_mean_interval():
    from pedagogy_lib import stats
    from pedagogy_lib.book.figures import mean_interval
    from pedagogy_lib.book.rules import points_by_seed

    assert points_by_seed({"seeds": [3, 1], "test_acc": [0.5, 0.25]}) == {3: 50.0, 1: 25.0}
    x = [80.0, 82.5, 79.0, 81.0]
    m, half = mean_interval(x)
    d = stats.paired(x, [0.0] * 4)
    assert m == pytest.approx(d["mean"]) and half == pytest.approx(d["hi"] - d["mean"])


def test_ledger_summary_table_counts_every_record_once():
    from pedagogy_lib.book import claims
    recs = [{"id": "ch01-a", "chapter": "01", "verdict": "holds"}, {"id": "ch01-b", "chapter": "01", "verdict": "wrong"},
            {"id": "ch07-c", "chapter": "07", "verdict": "holds"}, {"id": "nf4-x", "chapter": "10", "verdict": "wrong"}]
    table = claims.summary_table(recs).splitlines()
    assert table[2].split()[0] == "ch01" and table[2].split()[-1] == "2"
    assert table[4].split()[0] == "ch10" and table[4].split()[-1] == "1"   # an id without the chapter prefix
    assert table[-1].split()[-1] == "4" and table[-1].split()[1] == "2"
    recs = recs[:3]
    grouped = claims.by_verdict(recs)
    assert "holds (2): ch01-a, ch07-c" in grouped and "wrong (1): ch01-b" in grouped


def test_ledger_summary_rows_sum_to_the_total():
    """Every record of the whole ledger is counted in exactly one chapter row (audit 7, item 9)."""
    from pedagogy_lib.book import claims
    recs = [r for ch in claims.ORDER for r in claims.chapter_claims(ch)]
    rows = claims.summary_table(recs).splitlines()[2:]
    assert sum(int(r.split()[-1]) for r in rows[:-1]) == int(rows[-1].split()[-1]) == len(recs)
    assert any(r.split()[0] == "ch10" for r in rows)
