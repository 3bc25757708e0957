"""Chapter 11's stored measurements: the production path (transformers + peft) on 2 gloo ranks,
timings for the step-time model, and serving many adapters.

Run:  OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m pedagogy_lib.book.ch11.experiment
(``make sweeps`` runs it). Writes chapters/results/ch11_scaling.json, about 3 minutes on 2 cores.

  ddp      full FT, LoRA, IA³ on LlamaForCausalLM (stdlib-1m) with peft: bytes per step from the
           comm hook, and the largest difference from one process on the whole batch
  fsdp     per-rank bytes under fully_shard for full FT, LoRA and QLoRA (4-bit, quant_storage fp32)
  timing   our twin, batch 8×64: forward+backward with and without gradient sync, per method;
           all-reduce seconds at four sizes (α, β of Eq. 11.5)
  serving  one base + N LoRA adapters against N merged copies: bytes, forward latency, switch time
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from pedagogy_lib import distributed as D
from pedagogy_lib import results as R
from pedagogy_lib import scaling as S
from pedagogy_lib.registry import PEFT_DECODER_METHODS, get

OUT = "ch11_scaling"
COMMAND = "python -m pedagogy_lib.book.ch11.experiment"
N_ADAPTERS, SERVE_TOKENS, REPS = 8, 64, 30
DDP_STEPS, FSDP_STEPS, TIMING_REPS = 3, 2, 15   # QLoRA under fully_shard: one step (distributed.task_qlora_fsdp)
STEPS = {"ddp": DDP_STEPS, "fsdp": FSDP_STEPS, "qlora_fsdp": 1, "timing": f"1 step, timed {TIMING_REPS} times"}
NO_INIT = {"init_lora_weights": False}   # served adapters: B random too, so they differ


def load() -> dict:
    return R.load(OUT, COMMAND, keys=("ddp", "fsdp", "timing", "serving"))


NCCL = "ch11_nccl"  # make distributed-gpu on a CUDA machine (tests/gpu/LAST_RUN.md), stored by hand


def nccl_vs_one_process() -> list[dict] | None:
    """The stored NCCL runs (world size 1, on a GPU) beside one CPU process on the same
    machine, same model, batch and steps (``reference_run``; the batch comes from that
    Python's ``pydoc_data``, so it cannot be recomputed here). None when nothing is stored."""
    g = R.load_stored(NCCL, "make distributed-gpu (on a CUDA machine)", keys=("runs", "device"))
    return None if g is None else [{"run": key, "device": g["device"], "gpu": r["losses"], "cpu": r["losses_one_process_cpu"],
             "max_rel_diff": max(abs(a - b) / abs(b) for a, b in zip(r["losses"], r["losses_one_process_cpu"]))}
            for key, r in g["runs"].items() if "losses_one_process_cpu" in r]


def ddp_runs(batch) -> dict:
    out = {}
    for m in PEFT_DECODER_METHODS:
        run = D.launch("ddp", 2, batch=batch, method=m, impl="peft", steps=DDP_STEPS, timeout_s=120)
        ref = D.reference_run(m, batch, steps=DDP_STEPS, impl="peft")
        got, r0 = run["params"][f"ddp-{m}"], run["ranks"][0]
        out[m] = {"n_params": r0["n_params"], "n_trainable": r0["n_trainable"],
                  "bytes_per_step": r0["bytes_per_step"], "buckets_per_step": r0["buckets_per_step"],
                  "arithmetic": S.allreduce_payload(r0["n_trainable"], 4),
                  "max_abs_diff": max(float(np.abs(got[k] - ref["params"][k]).max()) for k in got),
                  "losses": r0["losses"], "losses_one_process": ref["losses"]}
    return out


def fsdp_runs(batch) -> dict:
    out = {}
    for m in ("full", "lora"):
        r0 = D.launch("fsdp", 2, batch=batch, method=m, impl="peft", steps=FSDP_STEPS, timeout_s=120)["ranks"][0]
        out[m] = {k: r0[k] for k in ("per_rank", "whole", "n_params", "n_trainable", "losses")}
    q = D.launch("qlora_fsdp", 2, batch=batch, timeout_s=120)["ranks"][0]
    out["qlora"] = {k: q[k] for k in ("ok", "error", "per_rank", "whole", "n_params", "n_trainable", "losses") if k in q}
    return out


def timing_runs() -> dict:
    batch = D.make_batch(8, 64, seed=1)
    out = {m: {k: v for k, v in D.launch("ddp", 2, batch=batch, method=m, steps=1, timing_reps=TIMING_REPS)["ranks"][0].items()
               if k in ("t_compute", "t_step", "n_trainable", "n_params")} for m in PEFT_DECODER_METHODS}
    ar = D.launch("allreduce", 2, sizes=(2**10, 2**14, 2**18, 2**20, 2**22), reps=25)["ranks"][0]
    alpha, beta = S.fit_alpha_beta(ar["sizes"], ar["seconds"], 2)
    return {"batch": list(batch.shape), "methods": out, "allreduce": ar, "alpha": alpha, "beta": beta}


def serving() -> dict:
    """One base with N LoRA adapters (peft ``set_adapter``) against N merged copies."""
    import copy

    from peft import get_peft_model

    torch.manual_seed(0)
    base = D.load_model("full", impl="peft").eval()
    bytes_of = lambda m: sum(p.numel() * p.element_size() for p in m.parameters())   # noqa: E731
    base_bytes = bytes_of(base)
    model = get_peft_model(copy.deepcopy(base), get("lora").peft_config(NO_INIT), adapter_name="a0")
    for i in range(1, N_ADAPTERS):
        model.add_adapter(f"a{i}", get("lora").peft_config(NO_INIT))
    ids = torch.from_numpy(D.make_batch(1, SERVE_TOKENS)[:, :-1])
    merged = []
    for i in range(2):   # two merged copies are enough to time; N copies' bytes are N × one
        model.set_adapter(f"a{i}")
        merged.append(copy.deepcopy(model).merge_and_unload().eval())

    def median_s(fn):
        ts = []
        for _ in range(REPS):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return float(np.median(ts))

    with torch.no_grad():
        model.set_adapter("a1")
        same = float((model(ids).logits - merged[1](ids).logits).abs().max())
        t_adapter = median_s(lambda: model(ids))
        t_merged = median_s(lambda: merged[1](ids))
        k = iter(range(10**6))
        t_switch = median_s(lambda: model.set_adapter(f"a{next(k) % N_ADAPTERS}"))
        state = {n: p.detach().clone() for n, p in merged[0].state_dict().items()}
        t_reload = median_s(lambda: merged[1].load_state_dict(state))

        def merge_swap():   # keep the served model merged: unmerge the old adapter, merge the new one
            model.unmerge_adapter()
            model.set_adapter(f"a{next(k) % N_ADAPTERS}")
            model.merge_adapter()

        t_merge_swap = median_s(merge_swap)
        model.unmerge_adapter()
    adapter_bytes = (bytes_of(model) - base_bytes) // N_ADAPTERS
    return {"n_adapters": N_ADAPTERS, "tokens": SERVE_TOKENS, "base_bytes": base_bytes, "adapter_bytes": adapter_bytes,
            "multi_adapter_bytes": bytes_of(model), "merged_copies_bytes": N_ADAPTERS * bytes_of(merged[0]),
            "max_logit_diff_adapter_vs_merged": same, "t_forward_adapter": t_adapter, "t_forward_merged": t_merged,
            "t_set_adapter": t_switch, "t_load_merged_copy": t_reload, "t_unmerge_merge": t_merge_swap}


def config(batch) -> dict:
    """The settings the results file records: steps per part (each part runs its own number)."""
    return {"checkpoint": "stdlib-1m", "batch": list(batch.shape), "world_size": 2, "backend": "gloo",
            "lora": get("lora").peft_args()[1], "ia3": get("ia3").peft_args()[1], "lr": 1e-3,
            "steps": STEPS}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])   # --help or a typo stops here
    ap.add_argument("--part", choices=("all", "timing", "steps"), default="all",
                    help="timing: re-measure only the step-time model's timings; steps: rewrite only the recorded "
                         "steps of each part (one number for all parts before); either keeps the rest of the stored file")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    batch = D.make_batch(4, 32)
    if args.part != "all":   # steps: the stored config's steps per part, nothing measured
        old = load()
        part = {"timing": lambda: {"timing": timing_runs()}, "steps": lambda: {"config": old["config"] | {"steps": STEPS}}}
        print(f"wrote {R.save(old | part[args.part](), OUT)}")
        return
    out = {"config": config(batch), "versions": R.versions("torch", "peft", "transformers", "bitsandbytes")}
    for key, fn in (("ddp", lambda: ddp_runs(batch)), ("fsdp", lambda: fsdp_runs(batch)),
                    ("timing", timing_runs), ("serving", serving)):
        t0 = time.perf_counter()
        out[key] = fn()
        print(f"{key}: {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"wrote {R.save(out, OUT)}")


if __name__ == "__main__":
    main()
