"""PyTorch twin of ``pedagogy_lib.lora``: the same layer, the same names, the same targeting.

Autograd replaces the hand-written backward of Eq. 2.5; tests check the two agree. A is
drawn by the NumPy code (``lora.init_A``) from the same seed, so a NumPy model and a torch
model given the same ``seed`` start from identical adapters, on any device.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .. import lora as np_lora
from ..lora import (INITS, Mergeable, attach_args, check_alpha, check_rank, checked_targets, layer_args,
                    merge_layers, scaling)


def _numpy_dtype(dtype: torch.dtype):
    if dtype == torch.float64:
        return np.float64
    if dtype in (torch.float32, torch.float16, torch.bfloat16):
        return np.float32  # draw in float32, then cast
    raise TypeError(f"LoRALinear needs a floating-point base weight, got {dtype}")


class LoRALinear(Mergeable, nn.Module):
    """y = base(x) + s·(x Aᵀ) Bᵀ  (Eq. 2.4); ``base_layer`` frozen, ``lora_A`` (r, d_in), ``lora_B`` (d_out, r)."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, rslora: bool = False,
                 init: str = "kaiming-uniform", rng: np.random.Generator | None = None):
        super().__init__()
        layer_args("LoRALinear", base, nn.Linear, init, INITS, rng)
        W = base.weight
        self.d_in, self.d_out = base.in_features, base.out_features
        self.r = check_rank(r, self.d_in, self.d_out)
        self.alpha, self.rslora = check_alpha(alpha), rslora
        self.scaling = scaling(self.r, self.alpha, rslora)  # Eqs. 2.2–2.3
        self.init = init
        rng = np.random.default_rng(0) if rng is None else rng
        like = dict(device=W.device, dtype=W.dtype)
        if init == "pissa":  # Eq. 2.12, SVD in float64 on the CPU
            W_np = W.detach().cpu().to(torch.float64).numpy()
            A, B, W_res = np_lora.pissa_factors(W_np, self.r, self.scaling)
            with torch.no_grad():
                W.copy_(torch.from_numpy(W_res))
        else:
            A = np_lora.init_A(self.r, self.d_in, init, rng, _numpy_dtype(W.dtype))
            B = np.zeros((self.d_out, self.r))
        for p in base.parameters():
            p.requires_grad_(False)
        self.base_layer = base
        self.lora_A = nn.Parameter(torch.from_numpy(np.ascontiguousarray(A)).to(**like))
        self.lora_B = nn.Parameter(torch.from_numpy(np.ascontiguousarray(B)).to(**like))
        self.merged = False

    def extra_repr(self) -> str:
        return (f"d_in={self.d_in}, d_out={self.d_out}, r={self.r}, alpha={self.alpha:g}, "
                f"scaling={self.scaling:g}, merged={self.merged}")

    def delta_weight(self) -> torch.Tensor:
        """ΔW = s·B A; only for merging and inspection."""
        return self.scaling * (self.lora_B @ self.lora_A)

    def forward(self, x):
        y = self.base_layer(x)
        if self.merged:
            return y
        return y + self.scaling * ((x @ self.lora_A.T) @ self.lora_B.T)  # never forms BA

    @torch.no_grad()
    def _merged_weight(self, sign: int) -> torch.Tensor:
        """W ± s·BA as a new tensor, after checking that it is finite (W is not touched)."""
        W = self.base_layer.weight
        new = W + self.delta_weight() if sign > 0 else W - self.delta_weight()
        if not torch.isfinite(new).all():
            what = "merge" if sign > 0 else "unmerge"
            bad = int((~torch.isfinite(new)).sum())
            raise ValueError(f"LoRALinear.{what}: W {'+' if sign > 0 else '−'} s·BA has {bad} NaN/inf "
                             f"entries (lora_A, lora_B or scaling={self.scaling:g} not finite); W is unchanged")
        return new

    @torch.no_grad()
    def _set_weight(self, new: torch.Tensor, merged: bool):
        self.base_layer.weight.copy_(new)
        self.merged = merged


def linear_paths(model: nn.Module) -> dict[str, tuple[int, int]]:
    """{dotted path: (d_in, d_out)} of every plain nn.Linear (LoRA bases excluded)."""
    return {p: (m.in_features, m.out_features) for p, m in model.named_modules()
            if isinstance(m, nn.Linear) and not (p == "base_layer" or p.endswith(".base_layer"))}


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    return {p: m for p, m in model.named_modules() if isinstance(m, LoRALinear)}


def _set(model: nn.Module, path: str, new: nn.Module):
    parent_path, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent_path) if parent_path else model, leaf, new)


def attach_lora(model: nn.Module, targets=("query", "value"), r: int = 8, alpha: float = 8,
                rslora: bool = False, init: str = "kaiming-uniform", seed: int = 0,
                freeze_base: bool = True) -> list[str]:
    """Torch twin of ``lora.attach_lora``: same matching, same checks, same A for the same seed."""
    alpha, seed = attach_args("attach_lora", init, INITS, alpha, rslora, seed, freeze_base)
    chosen = checked_targets(model, targets, r, LoRALinear, "attach_lora", linear_paths)
    if init == "pissa":  # PiSSA's SVD needs finite weights: check every layer before touching one
        for p in chosen:
            if not torch.isfinite(model.get_submodule(p).weight).all():
                raise ValueError(f"attach_lora(init='pissa'): {p}.weight contains NaN/inf")
    rng = np.random.default_rng(seed)
    if freeze_base:  # everything checked: now change the model
        for p in model.parameters():
            p.requires_grad_(False)
    for p in chosen:
        _set(model, p, LoRALinear(model.get_submodule(p), r, alpha, rslora, init, rng))
    return chosen


def merge_all(model: nn.Module) -> list[str]:
    return merge_layers(lora_layers(model), merge=True)


def unmerge_all(model: nn.Module) -> list[str]:
    return merge_layers(lora_layers(model), merge=False)


__all__ = ["LoRALinear", "attach_lora", "linear_paths", "lora_layers", "merge_all",
           "unmerge_all"]
