"""make bench's summary: built from the benchmarks' files, chapter timing, bad files."""
import json
import shutil

import nbformat
import pytest

from pedagogy_lib import benchmarks as B


def test_summary_of_the_committed_benchmark_files():
    s = B.summarize()
    assert {c["backend"] for c in s["lora_merge"]} == {"torch", "numpy"}
    assert any("MiniLM" in c["case"] for c in s["lora_merge"])  # the whole model, not only one layer
    assert all(c["merged"] > 0 and c["unmerged"] > 0 for c in s["lora_merge"])
    batches = {(a["batch"], a["tokens"]) for a in s["adapters"]}
    assert (1, 8) in batches and (32, 8) in batches  # the batch 1 and batch 32
    assert s["nf4_vs_bnb"]["byte_identical"] is True and s["nf4_vs_bnb"]["quantize_speedup"] > 0
    mem = s["memory"]
    assert mem["tensor_peak_MB"]["qlora"] == 1.0 and mem["tensor_peak_MB"]["full"] > 1.0
    text = B.table(s)
    assert "quantise+pack" in text and "full FT" in text


def test_committed_summary_times_every_chapter():
    s = B.load()
    names = {p.stem for p in B.chapters()}
    assert set(s["chapters"]) == names, "a chapter was added or renamed: rerun `make bench`"
    for c in s["chapters"].values():
        assert c["seconds"] > 0 and abs(c["of_budget"] - c["seconds"] / s["budget_s"]) < 1e-2
    # the summary's ratios are those of the files it was made from
    fresh = B.summarize(s["chapters"])
    assert {k: fresh[k] for k in ("lora_merge", "adapters", "nf4_vs_bnb", "memory", "decoder")} == \
           {k: s[k] for k in ("lora_merge", "adapters", "nf4_vs_bnb", "memory", "decoder")}


def test_time_notebook(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = sum(range(10))\nprint(x)")])
    ok = tmp_path / "00_ok.ipynb"
    nbformat.write(nb, ok)
    assert B.time_notebook(ok) > 0
    assert nbformat.read(ok, as_version=4).cells[0].outputs == []  # nothing written back
    bad = tmp_path / "01_bad.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 / 0")]), bad)
    with pytest.raises(RuntimeError, match="01_bad.ipynb failed"):
        B.time_notebook(bad)
    with pytest.raises(FileNotFoundError, match="no notebook"):
        B.time_notebook(tmp_path / "nope.ipynb")
    times = B.chapter_times([ok], progress=False)
    assert set(times) == {"00_ok"} and times["00_ok"]["seconds"] >= 0


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="make bench"):
        B.load(tmp_path / "missing.json")
    (tmp_path / "foreign.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="not a bench summary"):
        B.load(tmp_path / "foreign.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="not JSON"):
        B.load(tmp_path / "broken.json")
    # a benchmark's file missing: the error names the script that writes it
    shutil.copy(B.RESULTS / "ch02_latency.json", tmp_path)
    with pytest.raises(FileNotFoundError, match="bench_adapters.py"):
        B.summarize(results=tmp_path)


def test_main_without_chapters_keeps_the_last_timings(tmp_path, capsys):
    out = tmp_path / "summary.json"
    B.main(["--no-chapters", "--out", str(out)])
    assert B.load(out)["chapters"] == {}
    s = json.loads(out.read_text())
    s["chapters"] = {"00_x": {"seconds": 1.0, "of_budget": 1 / B.BUDGET_S}}
    out.write_text(json.dumps(s))
    B.main(["--no-chapters", "--out", str(out)])
    assert B.load(out)["chapters"] == s["chapters"]
    assert "quantise+pack" in capsys.readouterr().out
