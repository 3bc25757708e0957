"""Chapter 10's QLoRA recipe on CUDA in bf16 (run by tests/gpu/run_gpu_checks.sh; never by CI).

Writes a JSON the chapter shows beside its CPU numbers when it is copied to
chapters/results/ch10_gpu.json: the recipe's losses and seconds per step, our NF4 bytes
against the stored ones, our NumPy forward against the peft logits (bf16 compute, so a
tolerance), greedy tokens, peak CUDA memory with and without gradient checkpointing, and how
many optimiser state tensors PagedAdamW8bit actually paged.

    python tests/gpu/recipe_report.py --out build/gpu/ch10_gpu.json [--device cpu]
"""
import argparse
import json
import time
import warnings

import numpy as np
import torch

from pedagogy_lib import decoder_io as IO, decoder_tasks as T
from pedagogy_lib.torch_ref import recipe as RC

warnings.filterwarnings("ignore")


def peak(device, fn):
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = fn()
    if device == "cuda":
        torch.cuda.synchronize()
        return out, time.perf_counter() - t0, torch.cuda.max_memory_allocated()
    return out, time.perf_counter() - t0, None


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args(argv)
    folder = IO.checkpoint_dir()
    cfg, weights, tok, _ = IO.read_checkpoint(folder)
    ids, mask = T.batch(tok, T.line_task()["train"][:16])
    report = {"device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu", "runs": {}}
    # one untimed step first: CUDA's first kernels load and tune, and would be billed to the first run
    RC.train_steps(RC.recipe_model(folder, compute_dtype=torch.bfloat16, gradient_checkpointing=False,
                                   device=args.device), ids, mask, steps=1, lr=3e-3, device=args.device)
    for gc in (False, True):
        pm = RC.recipe_model(folder, compute_dtype=torch.bfloat16, gradient_checkpointing=gc, device=args.device)
        log, secs, mem = peak(args.device, lambda: RC.train_steps(pm, ids, mask, steps=5, lr=3e-3, device=args.device))
        report["runs"]["checkpointing" if gc else "plain"] = {**log, "wall_seconds": secs, "peak_bytes": mem}
    plain, ckpt = report["runs"]["plain"], report["runs"]["checkpointing"]
    report["checkpointing_over_plain"] = {"seconds_per_step": ckpt["seconds_per_step"] / plain["seconds_per_step"],
                                          "peak_bytes": (ckpt["peak_bytes"] / plain["peak_bytes"]
                                                         if plain["peak_bytes"] else None)}
    report["bytes"] = RC.stored_bytes_check(pm, weights)
    twin = RC.numpy_twin(pm.cpu() if args.device == "cpu" else pm, weights, cfg)
    x = ids[:2, :32]
    with torch.no_grad():
        ref = pm(input_ids=torch.from_numpy(x).to(args.device)).logits.float().cpu().numpy()
    report["logits_rel_diff_bf16"] = float(np.abs(twin(x) - ref).max() / np.abs(ref).max())
    p = np.concatenate([[tok.eos_id], tok.encode(T.line_task()["test"][0].prompt)])
    out = pm.generate(input_ids=torch.from_numpy(p)[None].to(args.device), max_new_tokens=16, do_sample=False,
                      eos_token_id=tok.eos_id, pad_token_id=tok.eos_id)
    report["generation"] = tok.decode(out[0, p.size:].cpu().numpy())
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1, sort_keys=True)
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=1))


if __name__ == "__main__":
    main()
