"""The article's sentences on serving many tasks and on large decoders (chapter 11), each with a
value computed here and a verdict (claims as data, ``book.rules.Claims``).

``claims(results)`` takes the stored measurements (``experiment.load()``; loaded when omitted).
"""
from __future__ import annotations

from pedagogy_lib import scaling as S
from pedagogy_lib.book.rules import Claims, graded, table  # table: the shared renderer, re-exported

CLAIMS = Claims("11")
GPU_GB = 80   # the largest common accelerator memory when the article was written (A100/H100 80 GB)
NODE_GPUS = 8  # one training node (DGX/HGX A100 or H100: 8 GPUs)
TIMING_NOISE = 0.02   # a merged forward this much slower than the unmerged one still counts as no slower
OVERHEAD_GB = 10  # per GPU, left for activations (checkpointed), buffers and the CUDA context: an assumption
__all__ = ["CLAIMS", "claims", "context", "table"]


def context(results: dict | None = None) -> dict:
    from pedagogy_lib.book.ch11 import experiment

    return experiment.load() if results is None else results


@CLAIMS.rule("ch11-100-copies-serving", "Serving 100 customers' fine-tuned models takes 100 full copies of the model.",
             published="100 copies of a 700 GB checkpoint (the article, on full fine-tuning)",
             source="the article, 'the full fine-tuning problem'")
def _copies(res):
    # arithmetic on one measurement: N customers' merged (or fully fine-tuned) models are N distinct copies,
    # N × one copy's bytes. Measured: one merged copy's bytes (merge_and_unload must leave exactly the base's
    # parameters) and one base holding all N adapters; the N copies themselves are computed, not built
    s = res["serving"]
    n, base = s["n_adapters"], s["base_bytes"]
    one_copy = s["merged_copies_bytes"] / n   # the experiment stores n × one merged copy (serving())
    v = "holds" if one_copy == base else "wrong"
    ratio = s["merged_copies_bytes"] / s["multi_adapter_bytes"]
    return v, (f"measured on our 1M decoder: one merged copy holds {one_copy / 1e6:.2f} MB, the base's "
               f"{base / 1e6:.2f} MB exactly (merging adds no parameters); computed: {n} customers' merged copies "
               f"hold {n} × that = {s['merged_copies_bytes'] / 1e6:.1f} MB (true of full fine-tuning and of merged "
               f"LoRA). Measured: one base plus {n} LoRA adapters ({s['adapter_bytes'] / 1e3:.0f} kB each) holds "
               f"{s['multi_adapter_bytes'] / 1e6:.2f} MB, {ratio:.1f}× less. Rule (arithmetic on one measured "
               f"copy): N customers take N × one copy; holds if a measured merged copy has exactly the base's "
               f"bytes, else wrong")


@CLAIMS.rule("ch11-merge-zero-overhead", "Merging LoRA into the weights leaves no inference overhead.",
             published="LoRA + merge: the final model is a single matrix, no added latency (selection guide)",
             source="the article, method selection guide and Q&A")
def _merge(res):
    s = res["serving"]
    over = s["t_forward_adapter"] / s["t_forward_merged"] - 1
    same = s["max_logit_diff_adapter_vs_merged"] < 1e-4
    slower = s["t_forward_merged"] / s["t_forward_adapter"] - 1   # the merged forward's extra time, relative
    v = "holds" if same and slower <= TIMING_NOISE else "wrong"   # merged at most TIMING_NOISE slower: a tie
    return v, (f"merged and unmerged logits agree to {s['max_logit_diff_adapter_vs_merged']:.0e}; an unmerged adapter "
               f"costs {100 * over:+.0f}% per forward of {s['tokens']} tokens. With many adapters on one base, a merged "
               f"model pays per switch instead: unmerge + merge {1e3 * s['t_unmerge_merge']:.2f} ms, against "
               f"{1e3 * s['t_set_adapter']:.3f} ms for set_adapter. Rule: holds if merged equals unmerged (1e-4) and "
               f"its forward is at most {TIMING_NOISE:.0%} slower than the unmerged one (medians of repeated "
               f"timings; closer is within timing noise), else wrong")


@CLAIMS.rule("ch11-lora-70b", "LoRA on a GPT-style decoder scales to 70B parameters and beyond.",
             published="LoRA (q, v) is the first choice for decoders; 'scales to 70B+' (selection guide)",
             source="the article, method selection guide")
def _lora70(res):
    # a claim about scale, judged by arithmetic (Eq. 11.3): the fewest GPUs of GPU_GB on which ZeRO-3
    # shards LLaMA-2-70B's frozen bf16 weights plus LoRA's bf16 gradients and fp32 Adam moments, with
    # OVERHEAD_GB left on each. Within one node (NODE_GPUS) → holds; within four nodes → approximately
    # (it runs, at a multi-node cost); more, or none up to 1024 → wrong
    c, shape = S.family()["LLaMA-2-70B"], S.LLAMA2_70B
    d, kv = shape["hidden"], shape["kv_heads"] * shape["hidden"] // shape["heads"]   # grouped-query: 8 KV heads
    n_lora = c["layers"] * 8 * ((d + d) + (d + kv))   # r = 8 on q (d × d) and v (d → kv = 1024, not d × d)
    bytes_per = dict(weight_bytes=2, grad_bytes=2, optim_bytes=8)
    one = S.zero_per_rank(c["params"], n_lora, 1, 0, **bytes_per)["total"] / 1e9
    need = S.min_ranks(c["params"], n_lora, GPU_GB, 3, OVERHEAD_GB, **bytes_per)
    v = graded(need and need <= NODE_GPUS, need and need <= 4 * NODE_GPUS)
    d = res["ddp"]
    ratio = d["full"]["bytes_per_step"][0] / d["lora"]["bytes_per_step"][0]
    fit = f"ZeRO-3 over {need} × {GPU_GB} GB GPUs" if need else f"more than 1024 × {GPU_GB} GB GPUs"
    return v, (f"LLaMA-2-70B in bf16 with LoRA r=8 (q, v): {one:.0f} GB on one device, so it needs sharding — {fit} "
               f"with {OVERHEAD_GB} GB each left for activations and buffers (QLoRA: Fig. 11_qlora_gpus). The trainable "
               f"part is no obstacle: measured here, full FT all-reduces {ratio:.0f}× the bytes LoRA does per step. "
               f"Rule: within one {NODE_GPUS}-GPU node → holds, within {4 * NODE_GPUS} GPUs → approximately, else wrong")


def claims(results: dict | None = None) -> list[dict]:
    return CLAIMS.judge(context(results))
