"""Chapter 07's stored results as every chapter reads them: the accuracy sweep
(``ch07_accuracy.json``), its paired differences (Eqs. 8.4–8.7), and the stored GPU run's
PagedAdamW record, which chapter 10 and the shared sentence judges (``book.sentences``) use too.

A shared book-level module: it reads files through ``pedagogy_lib.results`` and imports no
room (``tests/test_layers.py``); the room's ``ch07.experiment`` re-exports these.
"""
from __future__ import annotations

from pedagogy_lib import results as R, stats
from pedagogy_lib.book.rules import points_by_seed


def load(name: str) -> dict:
    return R.load(name, "python -m pedagogy_lib.book.ch07.experiment")


GPU_COMMAND = "bash tests/gpu/run_gpu_checks.sh (on a CUDA machine; see tests/gpu/LAST_RUN.md)"


def load_gpu() -> dict | None:
    """The stored CUDA run (``tests/gpu/gpu_report.py``): chapters/results/ch07_gpu.json, with the
    nibbles where bnb's CUDA quantiser differs from ours (ch07_nf4_cuda_ties.json) under
    "ties" when stored. None where no GPU run is stored."""
    gpu = R.load_stored("ch07_gpu", GPU_COMMAND, keys=("device", "functional", "minilm", "memory"), what="GPU record")
    ties = R.load_stored("ch07_nf4_cuda_ties", GPU_COMMAND, keys=("values", "cuda_vs_ours", "cpu_vs_ours", "examples"),
                         what="NF4 CUDA ties record")
    if gpu is not None and ties is not None:
        gpu["ties"] = ties
    return gpu


def gpu_paged(gpu: dict | None) -> dict | None:
    """Full fine-tuning's PagedAdamW on the GPU (the stored run), in ``qlora.paged_adamw_steps``'s
    form, or None."""
    r = (gpu or {}).get("memory", {}).get("paged", {}).get("PagedAdamW")
    if r is None:
        return None
    from pedagogy_lib.torch_ref.qlora import PAGED_THRESHOLD  # only here: it imports torch and bitsandbytes

    return {"device": "cuda", "name": gpu["device"], "paged_state_tensors": r["paged_state_tensors"],
            "state_tensors": r["state_tensors"], "paged_bytes": r["paged_MB"] * 1e6,
            "warnings": r.get("warnings", []), "paged_threshold": PAGED_THRESHOLD}


def paired(acc: dict, a: str, b: str) -> dict:
    """Arm ``a`` − arm ``b`` of the stored sweep in points, paired by seed (Eqs. 8.4–8.7):
    ``stats.paired_by_seed`` + the labels and ``bracketed`` (both arms' rates bracketed)."""
    ra, rb = acc["results"][a], acc["results"][b]
    d = stats.paired_by_seed(points_by_seed(ra), points_by_seed(rb))
    return d | {"a": a, "b": b, "bracketed": ra["bracketed"] and rb["bracketed"]}
