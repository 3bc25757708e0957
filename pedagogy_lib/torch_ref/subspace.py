"""PyTorch twin of the random-subspace trainer of ``pedagogy_lib.lowrank`` (chapter 01).

``SubspaceModel(model, names, d, kind, seed)`` freezes ``model`` and makes one vector z
(d numbers, zero at the start) its only trainable tensor. On every forward pass the named
parameters are replaced by θ0 + P z (eq. 1.9) through ``torch.func.functional_call``, so
autograd delivers dL/dz = Pᵀ dL/dθ (eq. 1.10) and the shared training loop
(``torch_ref.train.train_classifier``) trains z like any other parameter.

P is built by ``lowrank.projection_blocks`` — the NumPy code, same seed — and only then
copied into torch buffers, so NumPy and torch use the very same matrix (a test checks
θ and dL/dz agree in float64). One block per named tensor; on MiniLM use kind="sparse":
a dense P over ~10.6M weights would need 10.6M × d numbers.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from .. import lowrank
from .train import freeze


def fwht(x: torch.Tensor) -> torch.Tensor:
    """Unnormalised Walsh–Hadamard transform along the last axis (Sylvester order)."""
    n = x.shape[-1]
    if n & (n - 1):
        raise ValueError(f"fwht needs a power-of-two length, got {n}")
    lead, h = x.shape[:-1], 1
    while h < n:
        y = x.reshape(*lead, n // (2 * h), 2, h)
        x = torch.stack((y[..., 0, :] + y[..., 1, :], y[..., 0, :] - y[..., 1, :]), dim=-2)
        h *= 2
    return x.reshape(*lead, n)


class _Block(nn.Module):
    """z ↦ P_t z for one tensor, with P_t taken from a NumPy ``lowrank.Projection``."""

    def __init__(self, proj: lowrank.Projection, dtype):
        super().__init__()
        self.kind, self.D, self.d = proj.kind, proj.D, proj.d
        buf = lambda name, a, dt=dtype: self.register_buffer(  # noqa: E731
            name, torch.as_tensor(np.ascontiguousarray(a), dtype=dt), persistent=False)
        if self.kind == "dense":
            buf("P", proj.P)
        elif self.kind == "sparse":
            buf("index", proj.index, torch.int64)
            buf("value", proj.value)
        elif self.kind == "fastfood":
            self.n = proj.n
            buf("B", proj.B)
            buf("perm", proj.perm, torch.int64)
            buf("G", proj.G)
            buf("scale", proj.scale)
        else:
            raise ValueError(f"unknown projection kind {self.kind!r}")

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.kind == "dense":
            return self.P @ z  # eq. 1.9, dense P
        if self.kind == "sparse":
            return self.value * z[self.index]  # θ_i moves with ±√(d/D) z_{h(i)}
        x = torch.nn.functional.pad(z, (0, self.n - self.d)).expand(self.B.shape[0], self.n)
        x = fwht(self.B * x)  # H B z
        x = torch.gather(x, 1, self.perm)  # Π
        x = fwht(self.G * x)  # H G
        return (self.scale * x).reshape(-1)[: self.D]


class SubspaceModel(nn.Module):
    """A frozen ``model`` whose parameters ``names`` are θ0 + P z; z is the only trainable tensor."""

    def __init__(self, model: nn.Module, names, d: int, kind: str = "sparse", seed: int = 0):
        super().__init__()
        params = dict(model.named_parameters())
        names = list(names)
        unknown = [n for n in names if n not in params]
        if not names or unknown:
            raise KeyError(f"SubspaceModel needs names of parameters of the model; unknown: {unknown[:5]}")
        if len(set(names)) != len(names):
            raise ValueError("SubspaceModel: a parameter is named twice")
        blocks = lowrank.projection_blocks([params[n].numel() for n in names], d, kind, seed)
        p0 = params[names[0]]
        self.model = freeze(model)
        self.names, self.d, self.kind = names, d, kind
        self.blocks = nn.ModuleList(_Block(b, p0.dtype) for b in blocks).to(p0.device)
        self.z = nn.Parameter(torch.zeros(d, dtype=p0.dtype, device=p0.device))

    @property
    def D(self) -> int:
        return sum(b.D for b in self.blocks)

    def theta(self) -> dict:
        """{name: θ0 + P_t z} (eq. 1.9), differentiable in z."""
        params = dict(self.model.named_parameters())
        return {n: params[n] + blk(self.z).view_as(params[n]) for n, blk in zip(self.names, self.blocks)}

    def forward(self, *args, **kw):
        return functional_call(self.model, self.theta(), args, kw)

    def extra_repr(self) -> str:
        return f"d={self.d}, D={self.D:,}, kind={self.kind!r}, tensors={len(self.names)}"


def subspace_lr(eta: float, d: int) -> float:
    """lr = η/√d. Adam moves each coordinate of z by about lr per step, so θ moves by about
    lr·√d (P has unit columns); this keeps the step in θ the same size for every d."""
    if isinstance(eta, bool) or not isinstance(eta, numbers.Real) or not (eta > 0 and math.isfinite(eta)):
        raise ValueError(f"eta must be positive, got {eta}")
    if isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1:  # np.int64 is a size too
        raise ValueError(f"d must be a positive int, got {d!r}")
    return eta / math.sqrt(d)


# ---------------------------------------------------------------- chapter 01 recipe


def subspace_names(model: nn.Module) -> list[str]:
    """θ of chapter 01: every weight and bias of the transformer layers and of the head.

    The embeddings (12.5M of MiniLM's 22.7M numbers, most of them rows of words the task
    never sees) stay at θ0; everything that processes a token does move with z.
    """
    return [n for n, _ in model.named_parameters()
            if n.startswith("encoder.bert.encoder.") or n.startswith("head.")]


