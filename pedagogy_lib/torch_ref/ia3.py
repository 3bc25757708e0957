"""PyTorch twin of ``pedagogy_lib.ia3``: the same layer, names and targeting; autograd
replaces the hand-written backward of Eqs. 6.7–6.8 (tests check the two agree)."""
from __future__ import annotations

import torch
from torch import nn

from .. import checks
from ..ia3 import PAPER_FEEDFORWARD, PAPER_TARGETS, plan, switch_merged
from .lora import linear_paths


class IA3Linear(nn.Module):
    """y = l ⊙ base(x) (Eq. 6.5) or y = base(l ⊙ x) (``feedforward``, Eq. 6.6); l = 1 at start."""

    def __init__(self, base: nn.Linear, feedforward: bool = False):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"IA3Linear wraps a torch.nn.Linear, got {type(base).__name__}")
        checks.boolean(feedforward, "feedforward")
        self.d_in, self.d_out, self.feedforward = base.in_features, base.out_features, feedforward
        for p in base.parameters():
            p.requires_grad_(False)
        self.base_layer = base
        W = base.weight
        self.ia3_l = nn.Parameter(torch.ones(self.d_in if feedforward else self.d_out,
                                             device=W.device, dtype=W.dtype))
        self.merged = False

    def extra_repr(self) -> str:
        side = "input" if self.feedforward else "output"
        return f"d_in={self.d_in}, d_out={self.d_out}, scales={side}, merged={self.merged}"

    def forward(self, x):
        if self.merged:
            return self.base_layer(x)
        if self.feedforward:
            return self.base_layer(x * self.ia3_l)  # Eq. 6.6
        return self.base_layer(x) * self.ia3_l      # Eq. 6.5

    def _check_invertible(self, what: str):
        l = self.ia3_l.detach()
        if not bool(torch.isfinite(l).all()):
            raise ValueError(f"IA3Linear.{what}: ia3_l contains NaN/inf")
        if bool((l == 0).any()):
            raise ValueError(f"IA3Linear.{what}: ia3_l has {int((l == 0).sum())} zero entries; "
                             "a merged zero cannot be divided out again")
        base, op = self.base_layer, torch.mul if what == "merge" else torch.div  # what _scale will write
        new = {"weight": op(base.weight.detach(), l[None, :] if self.feedforward else l[:, None])}
        if not self.feedforward and base.bias is not None:
            new["bias"] = op(base.bias.detach(), l)
        tiny = torch.finfo(base.weight.dtype).tiny
        for name, v in new.items():   # ia3.lossless: no overflow, no normal entry lost to underflow
            old = getattr(base, name).detach()
            v = v.to(old.dtype)   # as it will be stored: a float32 l on a float16 W computes wide
            bad = ~torch.isfinite(v) | ((v.abs() < tiny) & (old.abs() >= tiny))
            if bool(bad.any()):
                raise ValueError(f"IA3Linear.{what}: {name} would have {int(bad.sum())} entries that overflow "
                                 f"or underflow (ia3_l too large or too small for {v.dtype}); W is unchanged")

    @torch.no_grad()
    def merge(self):
        """W ← diag(l) W, b ← l ⊙ b, or W ← W diag(l) for ``feedforward`` (Eq. 6.9)."""
        if self.merged:
            raise RuntimeError("IA3Linear.merge: already merged; merging twice would apply l twice")
        self._check_invertible("merge")
        self._scale(torch.mul)
        self.merged = True
        return self

    @torch.no_grad()
    def unmerge(self):
        """Divides l out again (Eq. 6.9 inverted)."""
        if not self.merged:
            raise RuntimeError("IA3Linear.unmerge: not merged; unmerging would divide W by l")
        self._check_invertible("unmerge")
        self._scale(torch.div)
        self.merged = False
        return self

    def _scale(self, op):
        """Apply ``op`` (multiply or divide) by l to W's columns (input) or rows and b (output)."""
        base, l = self.base_layer, self.ia3_l
        if self.feedforward:
            base.weight.copy_(op(base.weight, l[None, :]))
        else:
            base.weight.copy_(op(base.weight, l[:, None]))
            if base.bias is not None:
                base.bias.copy_(op(base.bias, l))


def ia3_layers(model: nn.Module) -> dict[str, IA3Linear]:
    return {p: m for p, m in model.named_modules() if isinstance(m, IA3Linear)}


def attach_ia3(model: nn.Module, targets=PAPER_TARGETS, feedforward=PAPER_FEEDFORWARD,
               freeze_base: bool = True) -> dict[str, bool]:
    """Torch twin of ``ia3.attach_ia3``: same matching (``ia3.plan``), same checks, l = 1."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"attach_ia3: expected a torch nn.Module, got {type(model).__name__}")
    if ia3_layers(model):
        raise ValueError("attach_ia3: the model already carries IA³ layers; load into a fresh model")
    checks.boolean(freeze_base, "freeze_base")
    chosen = plan(linear_paths(model), targets, feedforward)
    if freeze_base:
        for p in model.parameters():
            p.requires_grad_(False)
    for path, ff in chosen.items():
        parent, _, leaf = path.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf,
                IA3Linear(model.get_submodule(path), ff))
    return chosen


def merge_all(model: nn.Module) -> list[str]:
    return switch_merged(ia3_layers(model), True)


def unmerge_all(model: nn.Module) -> list[str]:
    return switch_merged(ia3_layers(model), False)


__all__ = ["IA3Linear", "attach_ia3", "ia3_layers", "merge_all", "unmerge_all"]
