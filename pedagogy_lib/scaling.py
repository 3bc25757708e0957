"""Scaling out, on paper (chapter 11): what data parallelism and sharding cost, in bytes and seconds.

Pure arithmetic, no torch. The chapter measures the same quantities on two processes
(``distributed.py``) and holds them against these formulas.

  Eq. 11.1  payload per step (DDP)        G = n_trainable · b_grad
  Eq. 11.2  ring all-reduce, per rank     sent = 2 (N−1)/N · G
  Eq. 11.3  ZeRO / FSDP per-rank memory   weights, gradients, optimiser state, each /N or not
  Eq. 11.4  FSDP traffic per step         2 (N−1)/N · W (all-gather, forward and backward)
                                           + (N−1)/N · G (reduce-scatter of the gradients)
  Eq. 11.5  step time                      t(N) = t_c / N + 2 (N−1) α + 2 (N−1)/N · G · β
  Eq. 11.6  QLoRA sharded over N GPUs     (4-bit base + 16-bit rest + LoRA, grads, Adam) / N + one layer
"""
from __future__ import annotations

import math
import numbers

from . import checks, counting as C

ZERO_STAGES = (0, 1, 2, 3)   # 0: plain data parallel (DDP), every rank holds everything


def _count(x, what: str, positive: bool = False) -> int:
    if isinstance(x, bool) or not isinstance(x, numbers.Integral) or x < 0 or (positive and x == 0):
        raise ValueError(f"{what} must be an int {'> 0' if positive else '>= 0'}, got {x!r}")
    return int(x)


def _real(x, what: str) -> float:
    """A finite real number >= 0 (bools refused): NaN would pass every ``x < 0`` test."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not math.isfinite(x) or x < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {x!r}")
    return float(x)


def _bytes(x, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not x > 0 or math.isinf(x):
        raise ValueError(f"{what} must be a positive number of bytes, got {x!r}")
    return float(x)


def allreduce_payload(n_trainable: int, bytes_per_grad: float = 4) -> float:
    """Eq. 11.1: the gradient bytes each rank hands to all-reduce per step (frozen weights: none)."""
    return _count(n_trainable, "n_trainable") * _bytes(bytes_per_grad, "bytes_per_grad")


def ring_bytes_per_rank(payload: float, n_ranks: int) -> float:
    """Eq. 11.2: bytes each rank sends in a ring all-reduce (reduce-scatter then all-gather)."""
    n = _count(n_ranks, "n_ranks", positive=True)
    return 2 * (n - 1) / n * _real(payload, "payload")


def zero_per_rank(n_params: int, n_trainable: int, n_ranks: int, stage: int,
                  weight_bytes: float = 4, grad_bytes: float = 4, optim_bytes: float = 8) -> dict:
    """Eq. 11.3: per-rank bytes of weights, gradients and optimiser state under ZeRO stage 0–3.

    Stage 1 shards the optimiser state, stage 2 also the gradients, stage 3 (= FSDP) also the
    weights. Gradients and optimiser state exist only for the ``n_trainable`` parameters
    (AdamW: two fp32 moments, 8 bytes); weights exist for all ``n_params``."""
    n_params, n_trainable = _count(n_params, "n_params"), _count(n_trainable, "n_trainable")
    n = _count(n_ranks, "n_ranks", positive=True)
    if n_trainable > n_params:
        raise ValueError(f"n_trainable ({n_trainable}) exceeds n_params ({n_params})")
    if isinstance(stage, bool) or stage not in ZERO_STAGES:
        raise ValueError(f"ZeRO stage must be one of {ZERO_STAGES}, got {stage!r}")
    share = lambda on: 1 / n if on else 1.0   # noqa: E731
    out = {"weights": n_params * _bytes(weight_bytes, "weight_bytes") * share(stage >= 3),
           "grads": n_trainable * _bytes(grad_bytes, "grad_bytes") * share(stage >= 2),
           "optim": n_trainable * _bytes(optim_bytes, "optim_bytes") * share(stage >= 1)}
    out["total"] = out["weights"] + out["grads"] + out["optim"]
    return out


def min_ranks(n_params: int, n_trainable: int, gpu_gb: float, stage: int = 3, overhead_gb: float = 0.0,
              n_max: int = 1024, **bytes_per) -> int | None:
    """The fewest ranks n ≤ n_max on which Eq. 11.3's per-rank bytes plus ``overhead_gb`` (activations,
    buffers) fit in ``gpu_gb``; None if none does. ``bytes_per``: weight_bytes, grad_bytes, optim_bytes."""
    free = _real(gpu_gb, "gpu_gb") - _real(overhead_gb, "overhead_gb")
    if free <= 0:
        raise ValueError(f"overhead {overhead_gb} GB leaves nothing of a {gpu_gb} GB GPU")
    return next((n for n in range(1, _count(n_max, "n_max", positive=True) + 1)
                 if zero_per_rank(n_params, n_trainable, n, stage, **bytes_per)["total"] <= free * C.GB), None)


def fsdp_traffic_per_rank(n_params: int, n_trainable: int, n_ranks: int,
                          weight_bytes: float = 4, grad_bytes: float = 4) -> dict:
    """Eq. 11.4: bytes each rank sends per step under FSDP (ZeRO-3): every weight is gathered
    twice (forward, and again for the backward), trainable gradients are reduce-scattered."""
    n = _count(n_ranks, "n_ranks", positive=True)
    f = (n - 1) / n
    gather = 2 * f * _count(n_params, "n_params") * _bytes(weight_bytes, "weight_bytes")
    scatter = f * _count(n_trainable, "n_trainable") * _bytes(grad_bytes, "grad_bytes")
    return {"all_gather": gather, "reduce_scatter": scatter, "total": gather + scatter}


# ------------------------------------------------------------------ step time (Eq. 11.5)

def step_time(n_ranks: int, t_compute_1: float, payload: float, alpha: float, beta: float) -> float:
    """Eq. 11.5: seconds per step on N ranks for a fixed global batch (strong scaling).

    Assumptions: compute divides evenly (t_c/N), a ring all-reduce of ``payload`` bytes costs
    2(N−1) latencies α plus 2(N−1)/N·payload bytes at β seconds per byte, and none of it
    overlaps with compute (DDP overlaps buckets with the backward, so this is an upper bound)."""
    n = _count(n_ranks, "n_ranks", positive=True)
    t_c = checks.finite_real(t_compute_1, "t_compute_1", positive=True)
    alpha, beta = _real(alpha, "alpha"), _real(beta, "beta")   # >= 0
    return t_c / n + 2 * (n - 1) * alpha + ring_bytes_per_rank(payload, n) * beta


def fit_alpha_beta(sizes, seconds, n_ranks: int = 2) -> tuple[float, float]:
    """Least-squares (α, β) of Eq. 11.5's communication term from all-reduce timings on N ranks."""
    import numpy as np

    x = np.asarray(sizes, float)
    y = np.asarray(seconds, float)
    if x.shape != y.shape or x.ndim != 1 or x.size < 2:
        raise ValueError("sizes and seconds need the same length, at least 2")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):  # lstsq would return NaN for (α, β)
        raise ValueError("sizes and seconds must be finite numbers")
    n = _count(n_ranks, "n_ranks", positive=True)
    if n < 2:
        raise ValueError("fitting needs n_ranks >= 2 (one rank never communicates)")
    A = np.stack([np.full_like(x, 2 * (n - 1)), 2 * (n - 1) / n * x], axis=1)
    (alpha, beta), *_ = np.linalg.lstsq(A, y, rcond=None)
    return max(float(alpha), 0.0), max(float(beta), 0.0)


def speedup(n_ranks: int, t_compute_1: float, payload: float, alpha: float, beta: float) -> float:
    """t(1) / t(N) from Eq. 11.5."""
    return step_time(1, t_compute_1, payload, alpha, beta) / step_time(n_ranks, t_compute_1, payload, alpha, beta)


# ------------------------------------------------------------------ QLoRA across GPUs (Eq. 11.6)

# LLaMA-2-70B (Touvron et al. 2023b, and the released config.json): grouped-query attention
# with 8 key/value heads, SwiGLU width 28672, untied head. ``counting.ModelShape`` has no
# key/value heads, so it is counted here.
LLAMA2_70B = dict(name="LLaMA-2-70B", vocab=32000, hidden=8192, layers=80, heads=64, kv_heads=8, ffn=28672,
                  tied=False)


def llama_counts(vocab: int, hidden: int, layers: int, heads: int, kv_heads: int, ffn: int,
                 tied: bool = False, name: str = "") -> dict:
    """Parameters of a Llama (Eq. 9.15): total, in linear layers, and LoRA r on all linears."""
    for k, v in dict(vocab=vocab, hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads, ffn=ffn).items():
        _count(v, k, positive=True)
    if hidden % heads or heads % kv_heads:  # hidden // heads would silently floor the head size
        raise ValueError(f"{name or 'llama_counts'}: heads ({heads}) must divide hidden ({hidden}) "
                         f"and kv_heads ({kv_heads}) must divide heads")
    d, dh = hidden, hidden // heads
    kv = kv_heads * dh
    linear = layers * (2 * d * d + 2 * d * kv + 3 * d * ffn)
    total = vocab * d * (1 if tied else 2) + linear + layers * 2 * d + d
    shapes = [(d, d), (d, kv), (d, kv), (d, d), (d, ffn), (d, ffn), (ffn, d)]
    return {"name": name, "params": total, "linear_params": linear, "layers": layers,
            "lora_per_rank": layers * sum(i + o for i, o in shapes)}


def llama65b_counts() -> dict:
    s = C.LLAMA_65B
    return llama_counts(s.vocab, s.hidden, s.layers, s.heads, s.heads, s.ffn, tied=False, name=s.name)


def qlora_sharded_gb(counts: dict, n_gpus: int, r: int = 64) -> dict:
    """Eq. 11.6: per-GPU GB of QLoRA under FSDP over ``n_gpus``: every stored part sharded
    (NF4+DQ linears, bf16 rest, bf16 LoRA and its gradients, fp32 Adam), plus one decoder
    layer's 4-bit weights gathered whole for its forward (activations not included)."""
    n = _count(n_gpus, "n_gpus", positive=True)
    _count(r, "r", positive=True)
    q = C.bytes_per_param("nf4-dq")
    lora = counts["lora_per_rank"] * r
    parts = {"base 4-bit": counts["linear_params"] * q, "base 16-bit": (counts["params"] - counts["linear_params"]) * 2,
             "LoRA": lora * 2, "LoRA grads": lora * 2, "Adam": lora * 8}
    out = {k: v / n / C.GB for k, v in parts.items()}
    out["gathered layer"] = (counts["linear_params"] / counts["layers"] * q / C.GB) if n > 1 else 0.0
    out["total"] = sum(out.values())
    return out


def max_params_qlora(n_gpus: int, gpu_gb: float, overhead_gb: float, bytes_per_param: float) -> float:
    """The largest base (parameters) whose sharded weights fit: n·(gpu_gb − overhead_gb)·1e9 / bytes."""
    n = _count(n_gpus, "n_gpus", positive=True)
    free = _real(gpu_gb, "gpu_gb") - _real(overhead_gb, "overhead_gb")
    if free <= 0:
        raise ValueError(f"overhead {overhead_gb} GB leaves nothing of a {gpu_gb} GB GPU")
    return n * free * C.GB / _bytes(bytes_per_param, "bytes_per_param")


def family() -> dict:
    """The LLaMA sizes the chapter's figure and exercise 11.3 use: {name: llama_counts(...)}."""
    out = {s.name: llama_counts(s.vocab, s.hidden, s.layers, s.heads, s.heads, s.ffn, tied=False, name=s.name)
           for s in (C.LLAMA_7B, C.LLAMA_13B, C.LLAMA_33B, C.LLAMA_65B)}
    out[LLAMA2_70B["name"]] = llama_counts(**LLAMA2_70B)
    return out


def fastest_n(t_compute_1: float, payload: float, alpha: float, beta: float, n_max: int = 4096) -> int:
    """The N ≤ n_max with the shortest Eq. 11.5 step: past it, latency outgrows the compute saved
    (about √(t_c / 2α) when the bandwidth term is small)."""
    return min(range(1, _count(n_max, "n_max", positive=True) + 1),
               key=lambda n: step_time(n, t_compute_1, payload, alpha, beta))
