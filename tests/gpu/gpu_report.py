"""Chapter 07 on a CUDA machine: bitsandbytes' CUDA NF4 path against our NumPy, and the
CUDA memory of full fine-tuning, LoRA and QLoRA. Run by tests/gpu/run_gpu_checks.sh.

  .venv/bin/python tests/gpu/gpu_report.py --out build/gpu/ch07_gpu.json

Prints (and writes as JSON):
  1. functional: for several shapes and blocksizes, whether bnb's CUDA quantize_4bit gives
     the same packed bytes and absmax as quant.quantize_nf4, and the largest difference
     between bnb's CUDA dequantize_4bit and quant.dequantize_nf4 (also with DQ);
  2. MiniLM: the same on the 36 Linear4bit layers of the QLoRA model (packed bytes vs our
     quantiser of the fp32 weights; our dequantisation of bnb's bytes vs the weight bnb's
     4-bit matmul computes with);
  3. memory: torch.cuda.max_memory_allocated over one training step (its rise during the
     step + the model's weights: runner.step_memory's cuda_model_peak), full FT vs LoRA vs
     QLoRA, and full FT with AdamW vs bnb's PagedAdamW (its paged states live in unified
     memory, which torch's allocator does not count).
To record the numbers in the book, copy the JSON to chapters/results/ch07_gpu.json.
"""
from __future__ import annotations

import argparse
import pathlib
import platform
import sys

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]
from pedagogy_lib.results import save
from pedagogy_lib import data, runner
from pedagogy_lib.book.ch07 import experiment as E7
from pedagogy_lib import quant as Q
from pedagogy_lib.torch_ref.encoder import load_minilm_torch
from pedagogy_lib.torch_ref import qlora as QL
from pedagogy_lib.torch_ref import train as T

SHAPES = [(64, 64), (384, 1536), (1536, 384), (16, 96), (128, 96), (4097,), (33, 7)]
ODD = {(33, 7)}  # odd last dim: bnb's CPU dequantiser compiles a fallback (seconds); CUDA only
BLOCKSIZES = (64, 128, 256)


def functional(device: str) -> list[dict]:
    F = QL.bnb().functional
    rows = []
    for i, shape in enumerate(SHAPES):
        if device == "cpu" and shape in ODD:
            continue
        for blocksize in BLOCKSIZES:
            w = np.random.default_rng(i * 10 + blocksize).standard_normal(shape).astype(np.float32)
            p, a = Q.quantize_nf4(w, blocksize)
            tp, ts = F.quantize_4bit(torch.from_numpy(w).to(device), quant_type="nf4",
                                     blocksize=blocksize, compress_statistics=False)
            bnb_deq = F.dequantize_4bit(tp, ts).cpu().numpy().reshape(-1)
            ours = Q.dequantize_nf4(tp.cpu().numpy().reshape(-1), ts.absmax.cpu().numpy(), shape, blocksize)
            dp, ds = F.quantize_4bit(torch.from_numpy(w).to(device), quant_type="nf4",
                                     blocksize=blocksize, compress_statistics=True)
            q, a2, off = Q.double_quantize(a)
            bnb_absmax = (F.dequantize_blockwise(ds.absmax, ds.state2) + ds.offset).cpu().numpy()
            rows.append({"shape": list(shape), "blocksize": blocksize,
                         "packed_identical": bool(np.array_equal(p, tp.cpu().numpy().reshape(-1))),
                         "absmax_identical": bool(np.array_equal(a, ts.absmax.cpu().numpy())),
                         "dequant_max_diff": float(np.abs(bnb_deq - ours.reshape(-1)).max()),
                         "dq_codes_differing": int(np.count_nonzero(q != ds.absmax.cpu().numpy())),
                         "dq_absmax_max_diff": float(np.abs(Q.double_dequantize(q, a2, off) - bnb_absmax).max()),
                         "dq_offset_diff": float(abs(off - ds.offset.item()))})
    return rows


def minilm(mm, device: str) -> dict:
    W0 = {p: m.weight.detach().cpu().numpy().copy() for p, m in mm.bert.named_modules()
          if isinstance(m, torch.nn.Linear)}
    clf, _ = E7.classifier("QLoRA NF4+DQ", device=device)
    rows = []
    for path, layer in QL.quantized_layers(clf).items():
        key = path.removeprefix("encoder.bert.").removesuffix(".base_layer")
        rows.append(QL.crosscheck(layer, W0[key]) | {"path": key})
    return {"layers": len(rows), "packed_identical": sum(r["packed_identical"] for r in rows),
            "dequant_identical": sum(r["dequant_identical"] for r in rows),
            "dequant_max_diff": max(r["dequant_max_diff"] for r in rows),
            "dq_codes_differing": sum(r["dq_codes_differing"] for r in rows),
            "dq_codes_total": sum(W0[r["path"]].size // 64 for r in rows)}


def memory(task, device: str) -> dict:
    """On CUDA the allocator's peak; on CPU (a dry run of this script) the tensor accounting."""
    cuda = device == "cuda"
    key = "cuda_peak_MB" if cuda else "tensor_peak_MB"
    s = data.subsample(task.train, 32, 0)
    out = {}
    for method, label in (("full", "full FT"), ("lora", "LoRA fp32"), ("qlora", "QLoRA NF4+DQ")):
        clf, tok = E7.classifier(label, device=device)
        m = runner.step_memory(clf, T.Batches(tok, s.tokens, s.labels, device).batch(np.arange(32)))
        out[method] = {"tensor_peak_MB": m["peak"] / 1e6, "weights_MB": m["weights"] / 1e6}
        if cuda:
            out[method]["cuda_peak_MB"] = m["cuda_model_peak"] / 1e6
            del clf
            torch.cuda.empty_cache()
    q = out["qlora"][key]
    out["ratios_vs_qlora"] = {k: v[key] / q for k, v in out.items()}
    out["ratio_of"] = key
    if not cuda:
        return out
    # full FT: AdamW vs PagedAdamW, allocator peak over two steps
    paged = {}
    for name in ("AdamW", "PagedAdamW"):
        clf, tok = E7.classifier("full FT", device="cuda")
        b = T.Batches(tok, s.tokens, s.labels, "cuda").batch(np.arange(32))
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        if name == "AdamW":
            opt = torch.optim.AdamW([p for p in clf.parameters() if p.requires_grad], lr=1e-5)
            for _ in range(2):
                loss = torch.nn.functional.cross_entropy(clf(*b[:2]), b[2])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            info = {}
        else:
            info = QL.paged_adamw_steps(clf, [b, b], lr=1e-5)
        torch.cuda.synchronize()
        paged[name] = {"cuda_peak_MB": torch.cuda.max_memory_allocated() / 1e6,
                       "paged_state_tensors": info.get("paged_state_tensors"),
                       "state_tensors": info.get("state_tensors"),
                       "paged_MB": info.get("paged_bytes", 0) / 1e6, "warnings": info.get("warnings", [])}
        del clf
        torch.cuda.empty_cache()
    clf, tok = E7.classifier("QLoRA NF4+DQ", device=device)
    b = T.Batches(tok, s.tokens, s.labels, device).batch(np.arange(32))
    info = QL.paged_adamw_steps(clf, [b, b])
    paged["QLoRA PagedAdamW"] = {"paged_state_tensors": info["paged_state_tensors"],
                                 "state_tensors": info["state_tensors"]}
    out["paged"] = paged
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "build" / "gpu" / "ch07_gpu.json"))
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                    help="cpu: a dry run of the script's logic on a machine without a GPU")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_report.py: torch.cuda.is_available() is False; this report needs a CUDA GPU")
    bnb = QL.bnb()
    mm = load_minilm_torch(device="cpu")
    task = data.polarity_task()
    fun = functional(args.device)
    print(f"1. bitsandbytes on {args.device} vs our NumPy (NF4), by shape and blocksize:")
    for r in fun:
        print(f"   {str(tuple(r['shape'])):12s} B={r['blocksize']:<4d} packed identical {r['packed_identical']!s:5s} "
              f"absmax identical {r['absmax_identical']!s:5s} dequant max diff {r['dequant_max_diff']:.2e}  "
              f"DQ codes differing {r['dq_codes_differing']}  DQ absmax max diff {r['dq_absmax_max_diff']:.2e}")
    mini = minilm(mm, args.device)
    print(f"2. MiniLM QLoRA on {args.device}: {mini['packed_identical']}/{mini['layers']} layers with identical packed "
          f"bytes, {mini['dequant_identical']}/{mini['layers']} with our dequantisation identical to the weight "
          f"bnb computes with (max diff {mini['dequant_max_diff']:.2e}); DQ codes differing "
          f"{mini['dq_codes_differing']} of {mini['dq_codes_total']}")
    mem = memory(task, args.device)
    print(f"3. memory over one training step on {args.device} ({mem['ratio_of']}):")
    for k in ("full", "lora", "qlora"):
        print(f"   {k:6s} {mem[k][mem['ratio_of']]:8.1f} MB  ({mem['ratios_vs_qlora'][k]:.2f}× QLoRA; tensor "
              f"accounting {mem[k]['tensor_peak_MB']:.1f} MB)")
    for k, v in mem.get("paged", {}).items():
        print(f"   {k}: {v}")
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu (dry run)"
    out = {"device": name,
           "versions": {"python": platform.python_version(), "torch": torch.__version__,
                        "cuda": torch.version.cuda, "bitsandbytes": bnb.__version__},
           "functional": fun, "minilm": mini, "memory": mem}
    print(f"wrote {save(out, pathlib.Path(args.out))}")


if __name__ == "__main__":
    main()
