"""The GPU scripts (tests/gpu/) run only on a CUDA machine, so nothing in CI would notice if
the library moved under them. Each has a CPU dry run; these tests run it and check that the
report carries every field the chapters read when the GPU record is stored
(chapters/results/ch07_gpu.json, ch10_gpu.json)."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

GPU = Path(__file__).resolve().parent / "gpu"
sys.path.insert(0, str(GPU))

import gpu_report  # noqa: E402
import nf4_cuda_ties  # noqa: E402
import recipe_report  # noqa: E402

pytestmark = pytest.mark.slow


def test_gpu_report_dry_run(tmp_path):
    out = tmp_path / "ch07_gpu.json"
    gpu_report.main(["--device", "cpu", "--out", str(out)])
    r = json.loads(out.read_text())
    assert r["minilm"]["layers"] == 36 and r["minilm"]["packed_identical"] == 36
    assert {"full", "lora", "qlora"} <= set(r["memory"]["ratios_vs_qlora"])
    assert all(row["packed_identical"] and row["absmax_identical"] for row in r["functional"])


def test_recipe_report_dry_run(tmp_path):
    out = tmp_path / "ch10_gpu.json"
    recipe_report.main(["--device", "cpu", "--out", str(out)])
    r = json.loads(out.read_text())
    assert set(r["runs"]) == {"plain", "checkpointing"}
    for run in r["runs"].values():
        assert {"peak_bytes", "seconds_per_step", "paged_state_tensors", "losses"} <= set(run)
    assert r["checkpointing_over_plain"]["seconds_per_step"] > 0
    assert r["bytes"]["packed_identical"] == r["bytes"]["layers"] == 28
    assert r["logits_rel_diff_bf16"] < 0.02


def test_nf4_ties_study_finds_a_planted_disagreement(monkeypatch):
    """On the CPU backend our bytes equal bitsandbytes', so the study counts 0. With one of
    our nibbles moved one level up, it must count that one nibble against both backends and
    print it as an example at the right index."""
    w = np.random.default_rng(0).standard_normal(256).astype(np.float32)
    r = nf4_cuda_ties.study("cpu", [("small", w, 64)])
    assert r["cuda_vs_ours"] == r["cpu_vs_ours"] == 0 and r["rules"]["ours"] == 0 and r["examples"] == []

    real = nf4_cuda_ties.Q.quantize_nf4

    def moved(x, blocksize):
        packed, absmax = real(x, blocksize)
        packed = packed.copy()
        hi = packed[50] >> 4  # value 100 is the high nibble of byte 50
        packed[50] = ((hi + 1 if hi < 15 else hi - 1) << 4) | (packed[50] & 15)
        return packed, absmax

    monkeypatch.setattr(nf4_cuda_ties.Q, "quantize_nf4", moved)
    r = nf4_cuda_ties.study("cpu", [("small", w, 64)])
    assert r["cuda_vs_ours"] == r["cpu_vs_ours"] == 1
    assert [e["index"] for e in r["examples"]] == [100]
