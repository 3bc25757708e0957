"""PyTorch twin of ``pedagogy_lib.adapters``: the same modules, names and placements (ch. 03).

Parameter names match the NumPy side one for one (``encoder.layer.0.output.dense.1.down.weight``,
``encoder.layer.0.parallel.up.bias``), so ``copy_from_numpy`` moves weights across by name
and the tests compare the two implementations value for value and gradient for gradient.
"""
from __future__ import annotations

import copy
import statistics
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..adapters import ACTIVATIONS, PLACEMENTS, SITES, _check_scalar, check_placement, check_size
from . import lora as TL

_ACT = {"relu": F.relu, "gelu": F.gelu, "swish": F.silu}  # F.gelu is the exact erf form


class Bottleneck(nn.Module):
    """u = W_up σ(W_down h + b_down) + b_up  (Eq. 3.1 without its residual)."""

    def __init__(self, d: int, m: int, activation: str = "relu", init_scale: float = 1e-3,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.d, self.m = check_size(d, "hidden size d"), check_size(m, "bottleneck size m")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {tuple(ACTIVATIONS)}")
        init_scale = _check_scalar(init_scale, "init_scale")
        self.activation = activation
        self.down, self.up = nn.Linear(d, m), nn.Linear(m, d)
        gen = generator or torch.Generator().manual_seed(0)
        with torch.no_grad():
            bound = 1 / d ** 0.5  # torch's default bound, drawn from our generator for seeding
            self.down.weight.copy_(torch.empty(m, d).uniform_(-bound, bound, generator=gen))
            self.down.bias.zero_()
            self.up.weight.copy_(init_scale * torch.randn(d, m, generator=gen))  # W_up ≈ 0
            self.up.bias.zero_()

    def bottleneck(self, h):
        if h.shape[-1] != self.d:
            raise ValueError(f"{type(self).__name__} was built for hidden size d={self.d}, "
                             f"got input with last dimension {h.shape[-1]}")
        return self.up(_ACT[self.activation](self.down(h)))


class Adapter(Bottleneck):
    """h + W_up σ(W_down h + b_down) + b_up  (Eq. 3.1)."""

    def forward(self, h):
        return h + self.bottleneck(h)


class ParallelAdapter(Bottleneck):
    """s·(W_up σ(W_down h₁ + b_down) + b_up), added beside the FFN (Eq. 3.3)."""

    def __init__(self, d, m, activation="relu", init_scale=1e-3, scale=4.0, generator=None):
        super().__init__(d, m, activation, init_scale, generator)
        self.scale = _check_scalar(scale, "scale s")

    def forward(self, h1):
        return self.scale * self.bottleneck(h1)


def attach_adapters(bert: nn.Module, placement: str, m: int, activation: str = "relu",
                    init_scale: float = 1e-3, scale: float = 4.0, seed: int = 0,
                    freeze_base: bool = True) -> dict[str, Bottleneck]:
    """Add adapters to every block of the torch BertEncoder; {path: adapter} (Eq. 3.2).

    Same contract as the NumPy ``attach_adapters``: validated before anything changes,
    base frozen (requires_grad False) when ``freeze_base``, adapters on the base's
    device and dtype.
    """
    if not isinstance(bert, nn.Module) or not hasattr(bert, "encoder") or not hasattr(bert, "config"):
        raise TypeError(f"expected a torch BertEncoder (pedagogy_lib.torch_ref.encoder), got {type(bert).__name__}")
    placement, m = check_placement(placement), check_size(m, "bottleneck size m")
    d = bert.config.hidden_size
    layers = list(bert.encoder.layer)
    paths = []
    for i, layer in enumerate(layers):
        for site in SITES[placement]:
            dense = layer.get_submodule(site)
            if not isinstance(dense, nn.Linear):
                raise ValueError(f"encoder.layer.{i}.{site} is a {type(dense).__name__}, not a plain "
                                 "Linear: it already has an adapter (or LoRA)")
            if dense.out_features != d:
                raise ValueError(f"hidden size mismatch: encoder.layer.{i}.{site} outputs "
                                 f"{dense.out_features}, config says {d}")
            paths.append((i, site))
        if placement == "parallel" and layer.parallel is not None:
            raise ValueError(f"encoder.layer.{i} already has a parallel module")
    gen = torch.Generator().manual_seed(seed)
    p0 = next(bert.parameters())
    kind = dict(activation=activation, init_scale=init_scale, generator=gen)
    if placement == "parallel":
        new = {(i, None): ParallelAdapter(d, m, scale=scale, **kind) for i in range(len(layers))}
    else:
        new = {key: Adapter(d, m, **kind) for key in paths}
    if freeze_base:
        for p in bert.parameters():
            p.requires_grad_(False)
    out = {}
    for (i, site), adapter in new.items():
        adapter.to(device=p0.device, dtype=p0.dtype)
        if site is None:
            layers[i].parallel = adapter
            out[f"encoder.layer.{i}.parallel"] = adapter
        else:
            layers[i].set_submodule(site, nn.Sequential(layers[i].get_submodule(site), adapter))
            out[f"encoder.layer.{i}.{site}.1"] = adapter
    return out


def find_adapters(root: nn.Module) -> dict[str, Bottleneck]:
    return {name: mod for name, mod in root.named_modules() if isinstance(mod, Bottleneck)}


def remove_adapters(bert: nn.Module) -> int:
    """Undo ``attach_adapters`` (unwrap the Sequentials, clear the parallel hooks)."""
    removed = 0
    for layer in bert.encoder.layer:
        if isinstance(layer.parallel, ParallelAdapter):
            layer.parallel, removed = None, removed + 1
        for site in ("attention.output.dense", "output.dense"):
            mod = layer.get_submodule(site)
            if isinstance(mod, nn.Sequential) and len(mod) == 2 and isinstance(mod[1], Adapter):
                layer.set_submodule(site, mod[0])
                removed += 1
    return removed


def copy_from_numpy(torch_root: nn.Module, numpy_root, only: str | None = None) -> list[str]:
    """Copy NumPy parameters into the torch module by name (checked first); names copied.

    ``only`` keeps names containing that substring (e.g. ``".down."``); by default every
    NumPy parameter must exist in torch with the same shape.
    """
    src = {k: v for k, v in numpy_root.named_parameters() if only is None or only in k}
    dst = dict(torch_root.named_parameters())
    missing = sorted(set(src) - set(dst))
    if missing:
        raise KeyError(f"torch module lacks {missing[:5]}")
    bad = [k for k in src if tuple(dst[k].shape) != src[k].shape]
    if bad:
        raise ValueError(f"shape mismatch for {bad[:5]}")
    with torch.no_grad():
        for k, v in src.items():
            dst[k].copy_(torch.from_numpy(np.ascontiguousarray(v)))
    return sorted(src)


# ----------------------------------------------------------------------------- latency
def latency_variants(bert: nn.Module, m: int = 64, r: int = 8, seed: int = 0) -> dict[str, nn.Module]:
    """Copies of one torch encoder, ready to time: no adapter, each placement with bottleneck
    m, and LoRA (q,v) of rank r unmerged and merged (merged, then unwrapped to plain
    Linears, as ``merge_and_unload`` leaves it). Adapter and B weights are small but nonzero.
    """
    out = {"none": copy.deepcopy(bert)}
    for placement in PLACEMENTS:
        b = copy.deepcopy(bert)
        attach_adapters(b, placement, m, init_scale=1e-2, seed=seed)
        out[placement] = b
    lora = copy.deepcopy(bert)
    TL.attach_lora(lora, ("query", "value"), r=r, alpha=r, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in TL.lora_layers(lora).values():
            layer.lora_B.copy_(1e-2 * torch.randn(layer.lora_B.shape, generator=gen))
    merged = copy.deepcopy(lora)
    TL.merge_all(merged)
    for path, layer in TL.lora_layers(merged).items():
        merged.set_submodule(path, layer.base_layer)  # W₀ + sBA is now just a Linear
    out["LoRA unmerged"], out["LoRA merged"] = lora, merged
    for model in out.values():
        model.eval().requires_grad_(False)
    return out


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def time_forward(models: dict[str, nn.Module], batch: int, seq_len: int, rounds: int = 7,
                 inner: int = 3, seed: int = 0) -> dict[str, dict[str, float]]:
    """Forward latency of each model on the same random (batch, seq_len) input.

    Models are timed in turn inside each round (the order rotates), so neighbouring
    measurements see the same machine. A model's ``ratio`` is the median over rounds of its
    time over the time of ``models["none"]`` in the same round (paired, so slow drifts of
    the machine cancel); ``ratio_q1``/``ratio_q3`` are the quartiles of those per-round
    ratios and show the noise; ``ms`` is the median time. Many short rounds beat a few long
    ones. On a CPU with one thread the clock is the thread's CPU time (time spent waiting for
    a shared core is not counted), otherwise wall time. Returns {name: {"ms", "ratio",
    "ratio_q1", "ratio_q3"}, ...} plus {"clock": "thread CPU" | "wall"}.
    """
    if "none" not in models:
        raise ValueError("time_forward needs a 'none' model to take ratios against")
    batch, seq_len = check_size(batch, "batch"), check_size(seq_len, "seq_len")
    rounds, inner = check_size(rounds, "rounds"), check_size(inner, "inner")
    device = next(models["none"].parameters()).device
    cpu_clock = device.type == "cpu" and torch.get_num_threads() == 1
    clock = time.thread_time if cpu_clock else time.perf_counter
    vocab = models["none"].config.vocab_size
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, vocab, (batch, seq_len), generator=gen).to(device)
    mask = torch.ones_like(ids)
    names = list(models)
    for model in models.values():  # warm-up: allocator, kernels, caches
        model(ids, mask)
    times = {n: [] for n in names}
    ratios = {n: [] for n in names}
    for r in range(rounds):
        t = {}
        for name in names[r % len(names):] + names[:r % len(names)]:
            _sync(device)
            t0 = clock()
            for _ in range(inner):
                models[name](ids, mask)
            _sync(device)
            t[name] = (clock() - t0) / inner
        for name in names:
            times[name].append(t[name])
            ratios[name].append(t[name] / t["none"])
    def quartiles(x):
        q = statistics.quantiles(x, n=4) if len(x) > 1 else [x[0]] * 3
        return q[0], q[2]

    out = {n: {"ms": 1e3 * statistics.median(times[n]), "ratio": statistics.median(ratios[n]),
               "ratio_q1": quartiles(ratios[n])[0], "ratio_q3": quartiles(ratios[n])[1]} for n in names}
    return out | {"clock": "thread CPU" if cpu_clock else "wall"}


__all__ = ["Adapter", "Bottleneck", "ParallelAdapter", "attach_adapters", "copy_from_numpy",
           "find_adapters", "latency_variants", "remove_adapters", "time_forward"]
