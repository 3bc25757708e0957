"""PyTorch twin of ``pedagogy_lib.dora``: same names, same seed → same A (chapter 02, §11).

Autograd replaces the hand-written backward of Eq. 2.10: ``detach_norm=True`` computes n
outside autograd (peft's choice), ``False`` lets the gradient flow through it; tests check
both against NumPy. ``peft_io`` reads and writes its layers with ``fmt=dora.PEFT_FORMAT``.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .. import checks
from ..dora import INITS
from ..lora import (Mergeable, attach_args, check_alpha, check_rank, checked_targets, init_A, layer_args,
                    merge_layers, scaling)
from .lora import _numpy_dtype, _set, linear_paths


class DoRALinear(Mergeable, nn.Module):
    """y = (m/n) ⊙ (x W₀ᵀ + s·(x Aᵀ) Bᵀ) + b  (Eq. 2.9); n detached when ``detach_norm``."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, rslora: bool = False,
                 init: str = "kaiming-uniform", rng: np.random.Generator | None = None,
                 detach_norm: bool = True):
        super().__init__()
        layer_args("DoRALinear", base, nn.Linear, init, INITS, rng)
        W = base.weight
        if not torch.isfinite(W).all():
            raise ValueError("DoRALinear base weight: contains NaN/inf")
        self.d_in, self.d_out = base.in_features, base.out_features
        self.r = check_rank(r, self.d_in, self.d_out)
        self.alpha, self.rslora = check_alpha(alpha), checks.boolean(rslora, "rslora")
        self.scaling = scaling(self.r, self.alpha, rslora)
        self.init, self.detach_norm = init, checks.boolean(detach_norm, "detach_norm")
        n0 = torch.linalg.vector_norm(W.detach(), dim=1)
        if not (n0 > 0).all():
            raise ValueError("DoRALinear: a row of W₀ is zero; its direction W/‖W‖ is undefined")
        rng = np.random.default_rng(0) if rng is None else rng
        like = dict(device=W.device, dtype=W.dtype)
        A = init_A(self.r, self.d_in, init, rng, _numpy_dtype(W.dtype))
        for p in base.parameters():
            p.requires_grad_(False)
        self.base_layer = base
        self.lora_A = nn.Parameter(torch.from_numpy(np.ascontiguousarray(A)).to(**like))
        self.lora_B = nn.Parameter(torch.zeros(self.d_out, self.r, **like))
        self.lora_magnitude_vector = nn.Parameter(n0.clone())   # m = ‖W₀‖ ⇒ W' = W₀
        self.merged = False

    def extra_repr(self) -> str:
        return (f"d_in={self.d_in}, d_out={self.d_out}, r={self.r}, alpha={self.alpha:g}, "
                f"detach_norm={self.detach_norm}, merged={self.merged}")

    def delta_weight(self) -> torch.Tensor:
        return self.scaling * (self.lora_B @ self.lora_A)

    def norm(self) -> torch.Tensor:
        """n = ‖W₀ + s·BA‖ per row (Eq. 2.8). In peft's mode it is computed outside autograd,
        so nothing of the d_out×d_in matrix V is kept for the backward."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.detach_norm):
            return torch.linalg.vector_norm(self.base_layer.weight + self.delta_weight(), dim=1)

    def forward(self, x):
        if self.merged:
            return self.base_layer(x)
        z = x @ self.base_layer.weight.T + self.scaling * ((x @ self.lora_A.T) @ self.lora_B.T)
        y = (self.lora_magnitude_vector / self.norm()) * z
        return y if self.base_layer.bias is None else y + self.base_layer.bias

    @torch.no_grad()
    def _merged_weight(self, sign: int) -> torch.Tensor:
        W, m = self.base_layer.weight, self.lora_magnitude_vector
        if sign > 0:
            V = W + self.delta_weight()
            new = (m / torch.linalg.vector_norm(V, dim=1))[:, None] * V
        else:
            new = W * (self._merged_norm / m)[:, None] - self.delta_weight()
        if not torch.isfinite(new).all():
            raise ValueError(f"DoRALinear.{'merge' if sign > 0 else 'unmerge'}: the new weight has "
                             f"{int((~torch.isfinite(new)).sum())} NaN/inf entries; W is unchanged")
        return new

    @torch.no_grad()
    def _set_weight(self, new: torch.Tensor, merged: bool):
        if merged:
            self._merged_norm = torch.linalg.vector_norm(self.base_layer.weight + self.delta_weight(), dim=1)
        self.base_layer.weight.copy_(new)
        self.merged = merged


def dora_layers(model: nn.Module) -> dict[str, DoRALinear]:
    return {p: m for p, m in model.named_modules() if isinstance(m, DoRALinear)}


def attach_dora(model: nn.Module, targets=("query", "value"), r: int = 8, alpha: float = 8,
                rslora: bool = False, init: str = "kaiming-uniform", seed: int = 0,
                detach_norm: bool = True, freeze_base: bool = True) -> list[str]:
    """Torch twin of ``dora.attach_dora``: same matching, same checks, same A for the same seed."""
    alpha, seed = attach_args("attach_dora", init, INITS, alpha, rslora, seed, freeze_base)
    checks.boolean(detach_norm, "detach_norm")
    chosen = checked_targets(model, targets, r, DoRALinear, "attach_dora", linear_paths)
    for p in chosen:
        W = model.get_submodule(p).weight
        if not torch.isfinite(W).all() or not (torch.linalg.vector_norm(W, dim=1) > 0).all():
            raise ValueError(f"attach_dora: {p}.weight has NaN/inf or a zero row")
    rng = np.random.default_rng(seed)
    if freeze_base:
        for p in model.parameters():
            p.requires_grad_(False)
    for p in chosen:
        _set(model, p, DoRALinear(model.get_submodule(p), r, alpha, rslora, init, rng, detach_norm))
    return chosen


def merge_all(model: nn.Module) -> list[str]:
    return merge_layers(dora_layers(model), merge=True)


def unmerge_all(model: nn.Module) -> list[str]:
    return merge_layers(dora_layers(model), merge=False)


__all__ = ["DoRALinear", "attach_dora", "dora_layers", "merge_all", "unmerge_all"]
