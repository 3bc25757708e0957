"""Benchmark: whole-model forward latency of MiniLM with no adapter, Houlsby, Pfeiffer and
parallel adapters, and LoRA (q,v) unmerged and merged, at batch 1 and at larger batches.

Run:  OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python tests/bench/bench_adapters.py [--device cuda]
Writes chapters/results/ch03_latency.json (chapter 03 reads it).

Each setting times every variant once per round, in turn (rotating the order), over many
short rounds; a variant's ratio is the median over rounds of its time over the no-adapter
time of the same round (paired, so the machine's drifts cancel), with the quartiles of the
per-round ratios kept to show the noise. Merged LoRA does exactly the base model's work,
so its ratio is a built-in control: its distance from 1 is the noise floor. On a CPU with one thread the
clock is the thread's CPU time, so time spent waiting for a shared core does not count. The FLOP overhead the
adapters add (Eq. 3.6) is printed beside it, for comparison.
"""
from __future__ import annotations

import argparse
import pathlib
import platform

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]
from pedagogy_lib.results import save
from pedagogy_lib import adapters
from pedagogy_lib.torch_ref.encoder import load_minilm_torch
from pedagogy_lib.book.ch03.experiment import latency_variants
from pedagogy_lib.runner import time_forward

OUT = ROOT / "chapters" / "results" / "ch03_latency.json"
M, R = 64, 8
# (batch, tokens, rounds, inner): one word at a time, a batch of words, one sentence, a batch of sentences
SETTINGS = ((1, 8, 301, 1), (32, 8, 61, 1), (1, 128, 101, 1), (16, 128, 21, 1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    torch.manual_seed(0)
    mm = load_minilm_torch(device=args.device)
    cfg = mm.bert.config
    variants = latency_variants(mm.bert, m=M, r=R)
    settings = []
    for batch, seq_len, rounds, inner in SETTINGS:
        res = time_forward(variants, batch, seq_len, rounds=rounds, inner=inner)
        clock = res.pop("clock")
        settings.append({"batch": batch, "seq_len": seq_len, "rounds": rounds, "inner": inner,
                         "models": {k: {key: round(x, 4) for key, x in v.items()} for k, v in res.items()}})
        print(f"batch {batch:3d} × {seq_len:3d}: base {res['none']['ms']:8.2f} ms; "
              + ", ".join(f"{k} {100 * (v['ratio'] - 1):+.1f}%" for k, v in res.items() if k != "none"),
              flush=True)
    flops = {p: {str(T): round(adapters.flop_overhead(cfg.hidden_size, cfg.intermediate_size, M, p, T), 6)
                 for T in sorted({s[1] for s in SETTINGS})} for p in adapters.PLACEMENTS}
    print("FLOP overhead (Eq. 3.6):", flops)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    out = {"device": f"{device.type} ({name})", "threads": torch.get_num_threads(), "clock": clock, "m": M, "r": R,
           "model": "all-MiniLM-L6-v2", "settings": settings, "flop_overhead": flops,
           "versions": {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__}}
    print(f"wrote {save(out, pathlib.Path(args.out))}")


if __name__ == "__main__":
    main()
