"""PyTorch twin of ``pedagogy_lib.adapters``: the same modules, names and placements (ch. 03).

Parameter names match the NumPy side one for one (``encoder.layer.0.output.dense.1.down.weight``,
``encoder.layer.0.parallel.up.bias``), so ``copy_from_numpy`` moves weights across by name
and the tests compare the two implementations value for value and gradient for gradient.
"""
from __future__ import annotations


import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .. import checks
from ..adapters import ACTIVATIONS, PLACEMENTS, SITES, _check_scalar, check_placement  # noqa: F401
from ..checks import check_size

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
    seed = checks.seed(seed)  # torch's manual_seed takes -1, which NumPy's default_rng (the twin) refuses
    checks.boolean(freeze_base, "freeze_base")
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


__all__ = ["Adapter", "Bottleneck", "ParallelAdapter", "attach_adapters", "copy_from_numpy",
           "find_adapters", "remove_adapters"]
