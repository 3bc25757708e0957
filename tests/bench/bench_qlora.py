"""Benchmark: peak training memory and step time of full fine-tuning, fp32 LoRA and QLoRA
(bitsandbytes NF4 + DQ base, our LoRA on every linear layer) on MiniLM, as ratios.

Run:  OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python tests/bench/bench_qlora.py
Writes chapters/results/bench_qlora.json (override with $BENCH_OUT).

Each method runs in a fresh worker process (this file with --worker METHOD), so that one
method's freed memory cannot hide another's peak. In the worker: imports, load MiniLM in
fp32, build the classifier, drop the fp32 source model (gc + malloc_trim), reset the
kernel's RSS high-water mark (/proc/self/clear_refs), then WARMUP + STEPS training steps.
Reported per method:
  rss_load_peak_MB   high-water RSS above the imports while loading and quantising;
  rss_train_peak_MB  high-water RSS above the imports during training only;
  tensor_peak_MB     runner.step_memory's tensor accounting (weights, grads, Adam, saved
                     activations, one dequantised weight), and on CUDA the allocator's
                     max_memory_allocated (cuda_peak_MB);
  step_s             median process time of a training step.
Ratios are taken against QLoRA inside this one run.
"""
from __future__ import annotations

import ctypes
import gc
import json
import os
import pathlib
import platform
import re
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = pathlib.Path(os.environ.get("BENCH_OUT") or ROOT / "chapters" / "results" / "bench_qlora.json")
ARMS = ("full", "lora", "qlora")
LABELS = {"full": "full FT", "lora": "LoRA fp32", "qlora": "QLoRA NF4+DQ"}  # chapter 07's arm labels
BATCH, WARMUP, STEPS = 32, 3, 15


def _status_kb(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", pathlib.Path("/proc/self/status").read_text()).group(1))


def _reset_hwm() -> bool:
    try:
        pathlib.Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def worker(method: str) -> dict:
    import numpy as np
    import torch

    from pedagogy_lib import data, runner
    from pedagogy_lib.book.ch07 import experiment as E7
    from pedagogy_lib.torch_ref import qlora as QL
    from pedagogy_lib.torch_ref import train as T
    from pedagogy_lib.torch_ref.encoder import default_device

    QL.bnb()
    device = default_device()
    task = data.polarity_task()
    s = data.subsample(task.train, BATCH * (WARMUP + STEPS), 0)
    gc.collect()
    rss_imports = _status_kb("VmRSS")
    clf, tok = E7.classifier(LABELS[method], seed=0, device=device)  # the sweep's own build (registry route)
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    rss_load_peak = _status_kb("VmHWM")
    batches = T.Batches(tok, s.tokens, s.labels, device)
    step_mem = runner.step_memory(clf, batches.batch(np.arange(BATCH)))
    reset = _reset_hwm()
    opt = torch.optim.AdamW([p for p in clf.parameters() if p.requires_grad], lr=1e-4)
    times = []
    for i, (ids, mask, y) in enumerate(batches.epoch(BATCH, None)):
        t0 = time.process_time()
        loss = torch.nn.functional.cross_entropy(clf(ids, mask), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= WARMUP:
            times.append(time.process_time() - t0)
    out = {"method": method, "device": device.type,
           "rss_load_peak_MB": (rss_load_peak - rss_imports) / 1024,
           "rss_train_peak_MB": (_status_kb("VmHWM") - rss_imports) / 1024 if reset else None,
           "tensor_peak_MB": step_mem["peak"] / 1e6,
           "tensor_parts_MB": {k: v / 1e6 for k, v in step_mem.items() if not k.startswith("cuda")},
           "weights_MB": QL.weight_bytes(clf)["total"] / 1e6,
           "trainable": T.count_trainable(clf, exclude=None),
           "step_s": statistics.median(times), "steps_timed": len(times)}
    if "cuda_peak" in step_mem:
        out["cuda_peak_MB"] = step_mem["cuda_peak"] / 1e6
    return out


def main():
    import numpy as np
    import torch

    results = {}
    for method in ARMS:
        proc = subprocess.run([sys.executable, __file__, "--worker", method], capture_output=True,
                              text=True, env=os.environ | {"PYTHONPATH": str(ROOT)})
        if proc.returncode:
            sys.exit(f"worker {method} failed:\n{proc.stderr[-3000:]}")
        results[method] = json.loads(proc.stdout.strip().splitlines()[-1])
        r = results[method]
        print(f"{method:6s} weights {r['weights_MB']:7.1f} MB  tensor peak {r['tensor_peak_MB']:7.1f} MB  "
              f"RSS load {r['rss_load_peak_MB']:7.1f} MB  RSS train {r['rss_train_peak_MB'] or float('nan'):7.1f} MB  "
              f"step {1000 * r['step_s']:6.1f} ms", flush=True)
    keys = ["weights_MB", "tensor_peak_MB", "rss_load_peak_MB", "rss_train_peak_MB", "step_s"]
    if all("cuda_peak_MB" in r for r in results.values()):
        keys.append("cuda_peak_MB")
    ratios = {k: {m: (results[m][k] / results["qlora"][k] if results[m][k] and results["qlora"][k] else None)
                  for m in ARMS} for k in keys}
    from pedagogy_lib.results import save
    from pedagogy_lib.torch_ref.qlora import bnb
    bitsandbytes = bnb()
    out = {"config": {"batch_size": BATCH, "warmup": WARMUP, "steps": STEPS, "targets": "all-linear", "r": 8,
                      "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                      "device": results["qlora"]["device"]},
           "versions": {"python": platform.python_version(), "torch": torch.__version__,
                        "numpy": np.__version__, "bitsandbytes": bitsandbytes.__version__},
           "results": results, "ratios_vs_qlora": ratios}
    save(out, OUT)
    for k, v in ratios.items():
        print(f"{k:18s} " + "  ".join(f"{m} {x:.2f}×" if x else f"{m} n/a" for m, x in v.items()))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print(json.dumps(worker(sys.argv[2])))
    else:
        main()
