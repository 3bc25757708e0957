"""Where bitsandbytes' CUDA NF4 quantiser and ours give different nibbles, and why.
Run on a CUDA machine (tests/gpu/run_gpu_checks.sh, step 2b); never by CI.

    python tests/gpu/nf4_cuda_ties.py --out build/gpu/nf4_cuda_ties.json

Our `quant.quantize_nf4` is byte-identical to bitsandbytes' CPU quantiser. Its CUDA kernel
encodes x = w·(1/a) with a tree of comparisons against constants written in its source, so a
value that lands within a rounding error of a midpoint between two NF4 levels (Eq. 7.4) can
fall on the other side. This script counts such nibbles over many random tensors, prints each
one (the scaled value, the midpoint, their distance in float32 ulps), and scores candidate
encoding rules by how many nibbles each gets wrong against the CUDA kernel:

  ours      searchsorted on float32 midpoints (c_i + c_{i+1}) / 2 of the float32 levels, x·(1/a);
  literal   midpoints computed in float64 from the float32 levels, then rounded to float32;
  divide    like ours, but x / a (a true division) instead of x·(1/a).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np
import torch

from pedagogy_lib import quant as Q
from pedagogy_lib.torch_ref import qlora as QL

SHAPES = [(64, 64), (384, 1536), (1536, 384), (16, 96), (128, 96), (4097,), (33, 7)]  # gpu_report's


def nibbles(packed: np.ndarray, n: int) -> np.ndarray:
    """Eq. 7.7 undone: the high nibble is the first value."""
    return np.stack([packed >> 4, packed & 15], axis=1).reshape(-1)[:n]


def scaled(w: np.ndarray, blocksize: int, divide: bool) -> tuple[np.ndarray, np.ndarray]:
    """x per value (full blocks only) and each value's block absmax, as bitsandbytes scales."""
    full = w.size - w.size % blocksize
    b = w[:full].reshape(-1, blocksize)
    a = np.abs(b).max(axis=1, keepdims=True)
    x = b / np.maximum(a, Q.TINY) if divide else b * (np.float32(1) / np.maximum(a, Q.TINY))
    return x.reshape(-1).astype(np.float32), np.repeat(a.reshape(-1), blocksize)


def rules() -> dict:
    c = Q.nf4_codebook().astype(np.float32)
    mid32 = (c[:-1] + c[1:]) / np.float32(2)
    mid64 = ((c[:-1].astype(np.float64) + c[1:].astype(np.float64)) / 2).astype(np.float32)
    return {"ours": (mid32, False), "literal": (mid64, False), "divide": (mid32, True)}


def tensors():
    for i, shape in enumerate(SHAPES):
        for blocksize in (64, 128, 256):
            rng = np.random.default_rng(i * 10 + blocksize)
            yield f"{shape} B={blocksize}", rng.standard_normal(shape).astype(np.float32), blocksize
    for s in range(24):
        rng = np.random.default_rng(1000 + s)
        w = rng.standard_normal(1 << 20).astype(np.float32) if s % 2 else \
            rng.standard_t(4, 1 << 20).astype(np.float32) * np.float32(0.02)
        yield f"random-{s} ({'normal' if s % 2 else 't4 x0.02'}) B=64", w, 64


def study(device: str, cases=None) -> dict:
    """``cases``: (name, float32 array, blocksize) triples; default ``tensors()``."""
    F = QL.bnb().functional
    mid32 = rules()["ours"][0]
    out = {"tensors": 0, "values": 0, "full_block_values": 0, "cuda_vs_ours": 0, "cpu_vs_ours": 0,
           "rules": {k: 0 for k in rules()}, "examples": []}
    for name, w, blocksize in cases or tensors():
        flat = w.reshape(-1)
        t, _ = F.quantize_4bit(torch.from_numpy(w).to(device), quant_type="nf4", blocksize=blocksize,
                               compress_statistics=False)
        theirs = nibbles(t.cpu().numpy().reshape(-1), flat.size)
        cpu, _ = F.quantize_4bit(torch.from_numpy(w), quant_type="nf4", blocksize=blocksize,
                                 compress_statistics=False)
        p, _ = Q.quantize_nf4(w, blocksize)
        ours = nibbles(p, flat.size)
        out["tensors"] += 1
        out["values"] += flat.size
        out["cuda_vs_ours"] += int(np.count_nonzero(theirs != ours))
        out["cpu_vs_ours"] += int(np.count_nonzero(nibbles(cpu.numpy().reshape(-1), flat.size) != ours))
        full = flat.size - flat.size % blocksize
        out["full_block_values"] += full
        for rule, (mid, divide) in rules().items():
            x, _ = scaled(flat, blocksize, divide)
            out["rules"][rule] += int(np.count_nonzero(np.searchsorted(mid, x, side="left") != theirs[:full]))
        x, a = scaled(flat, blocksize, False)
        for j in np.flatnonzero(theirs[:full] != ours[:full])[:20]:
            k = int(min(ours[j], theirs[j]))  # the midpoint between levels k and k+1
            m = mid32[k]
            out["examples"].append({"tensor": name, "index": int(j), "w": float(flat[j]), "absmax": float(a[j]),
                                    "x": float(x[j]), "ours": int(ours[j]), "cuda": int(theirs[j]),
                                    "midpoint": float(m), "ulps_from_midpoint": int(
                                        np.int64(x[j].view(np.int32)) - np.int64(m.view(np.int32)))})
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("nf4_cuda_ties.py needs CUDA")
    r = study("cuda")
    r["device"] = torch.cuda.get_device_name(0)
    print(f"{r['tensors']} tensors, {r['values']:,} values: nibbles differing CUDA vs ours {r['cuda_vs_ours']}, "
          f"CPU vs ours {r['cpu_vs_ours']}")
    print("rules scored against the CUDA kernel (full blocks, nibbles wrong):", r["rules"])
    for e in r["examples"][:40]:
        print("  ", e)
    pathlib.Path(args.out).write_text(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
