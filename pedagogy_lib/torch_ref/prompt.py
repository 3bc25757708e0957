"""PyTorch twin of ``pedagogy_lib.prompt``: soft prompts and deep prompts (chapter 05).

Every ``attach_*`` draws its initial tensors with the NumPy code (same seed → same numbers in
both backends); autograd replaces the hand-written backward passes.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .. import checks
from .. import prompt as npt
from .prefix import _batch, _bert, _free_attentions, _freeze, _like


class SoftPrompt(nn.Module):
    """P ∈ R^{m×d} prepended to the word embeddings (Eq. 5.1)."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        if weight.ndim != 2:
            raise ValueError(f"a soft prompt is (m, d), got {tuple(weight.shape)}")
        self.weight = nn.Parameter(weight)

    def forward(self, batch):
        return self.weight.expand(_batch(batch), -1, -1)


def attach_prompt(model, m: int, init: str = "random", candidates=None, seed: int = 0):
    """Torch twin of ``pedagogy_lib.prompt.attach_prompt`` (same seed → same prompt)."""
    bert = _bert(model)
    if bert.embeddings.prompt is not None:
        raise ValueError("the model already has a soft prompt; load a fresh model to attach another")
    table = bert.embeddings.word_embeddings.weight.detach().cpu().numpy()
    ref = npt.SoftPrompt(m, bert.config.hidden_size, init, table, candidates,
                         np.random.default_rng(checks.seed(seed)), table.dtype)
    npt.check_fits(bert, ref.m)
    _freeze(model)
    bert.embeddings.prompt = SoftPrompt(torch.from_numpy(ref.p["weight"]).to(**_like(bert)))
    return model


class DeepPrompt(nn.Module):
    """A hidden-state prompt at one layer's input: P_k = PW_kᵀ + b_k, P_v = PW_vᵀ + b_v (Eq. 5.3)."""

    def __init__(self, attention, weight: torch.Tensor):
        super().__init__()
        self.__dict__["attention"] = attention  # the projections belong to the layer
        self.weight = nn.Parameter(weight)

    def forward(self, batch):
        B, att = _batch(batch), self.attention
        return att.key(self.weight).expand(B, -1, -1), att.value(self.weight).expand(B, -1, -1)


def attach_deep_prompt(model, m: int, seed: int = 0, std: float = 1.0):
    """Torch twin of ``pedagogy_lib.prompt.attach_deep_prompt`` (Eq. 5.3)."""
    bert = _bert(model)
    m, std = npt._check_size(m, "prompt length m"), npt._check_std(std)
    atts = _free_attentions(bert)
    rng, d, like = np.random.default_rng(checks.seed(seed)), bert.config.hidden_size, _like(bert)
    _freeze(model)
    for a in atts:
        w = rng.normal(0.0, std, (m, d))
        a.prefix = DeepPrompt(a, torch.from_numpy(w).to(**like))
    return model


__all__ = ["SoftPrompt", "attach_prompt", "DeepPrompt", "attach_deep_prompt"]
