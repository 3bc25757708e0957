"""PyTorch twin of ``pedagogy_lib.bitfit``: bias-only training by requires_grad (chapter 06).

The selection rule is the NumPy one (same site names, same LayerNorm switch), so the
NumPy and torch models train exactly the same parameters; the tests check the names and
the gradients agree.
"""
from __future__ import annotations

from torch import nn

from ..bitfit import _wanted, check_sites  # one selection rule for both


def bias_names(model: nn.Module, sites=None, include_layernorm: bool = True,
               prefix_skip: str | None = "head.") -> list[str]:
    """Names of the biases BitFit trains (Eq. 6.1); a task head (``head.``) is skipped:
    it is trained by every method and counted apart."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch nn.Module, got {type(model).__name__}")
    sites = check_sites(sites)
    out = []
    for path, mod in model.named_modules():
        if prefix_skip and f"{path}.".startswith(prefix_skip):
            continue
        b = getattr(mod, "bias", None)
        if isinstance(b, nn.Parameter) and _wanted(path, isinstance(mod, nn.LayerNorm), sites,
                                                   include_layernorm):
            out.append(f"{path}.bias" if path else "bias")
    return out


def apply_bitfit(model: nn.Module, sites=None, include_layernorm: bool = True,
                 keep_head: bool = True) -> list[str]:
    """requires_grad only for the selected biases (and the ``head.`` if ``keep_head``)."""
    names = bias_names(model, sites, include_layernorm)
    if not names:
        raise ValueError("this model has no biases to train (BitFit needs a model with biases)")
    chosen = set(names)
    for n, p in model.named_parameters():
        p.requires_grad_(n in chosen or (keep_head and n.startswith("head.")))
    return names


__all__ = ["apply_bitfit", "bias_names"]
