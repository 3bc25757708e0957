"""PyTorch twin of ``pedagogy_lib.prefix``: prefixes and the MLP reparameterisation
(chapter 04; the soft and deep prompts' twin is ``torch_ref.prompt``).

Same names, same equations, same initial values: every ``attach_*`` here draws its
initial tensors with the NumPy code of ``pedagogy_lib.prefix`` (same seed → same numbers
in both backends), then autograd replaces the hand-written backward passes.  Parameter
names match the NumPy modules (and peft's ``PrefixEncoder``), so a NumPy state dict loads
into the torch model by name.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .. import checks
from .. import prefix as npx


def _bert(model):
    bert = getattr(model, "bert", model)
    if not (hasattr(bert, "embeddings") and hasattr(bert, "encoder") and hasattr(bert, "config")):
        raise TypeError(f"expected a BertEncoder or SentenceEncoder, got {type(model).__name__}")
    return bert


def _attentions(bert):
    return [layer.attention._modules["self"] for layer in bert.encoder.layer]


def _free_attentions(bert):
    atts = _attentions(bert)
    if any(a.prefix is not None for a in atts) or hasattr(bert, "prefix_encoder"):
        raise ValueError("the model already has a prefix; load a fresh model to attach another")
    return atts


def _like(bert):
    w = bert.embeddings.word_embeddings.weight
    return {"dtype": w.dtype, "device": w.device}


def _param(a: np.ndarray, like) -> nn.Parameter:
    return nn.Parameter(torch.from_numpy(np.ascontiguousarray(a)).to(**like))


def _freeze(model):
    for p in model.parameters():
        p.requires_grad_(False)


def _batch(batch) -> int:
    return npx._check_size(batch, "batch size")


class Prefix(nn.Module):
    """One layer's P_k, P_v ∈ R^{m×d}, trained directly (Eq. 4.1)."""

    def __init__(self, key: torch.Tensor, value: torch.Tensor):
        super().__init__()
        if key.ndim != 2 or key.shape != value.shape:
            raise ValueError(f"prefix keys and values must both be (m, d), got {tuple(key.shape)}, {tuple(value.shape)}")
        self.key, self.value = nn.Parameter(key), nn.Parameter(value)

    def forward(self, batch):
        B = _batch(batch)
        return self.key.expand(B, -1, -1), self.value.expand(B, -1, -1)


class PrefixMLP(nn.Module):
    """P = tanh(P′W₁ᵀ + b₁)W₂ᵀ + b₂, shared by all layers (Eqs. 4.5–4.6); peft's names."""

    def __init__(self, m, d, n_layers, hidden, d_embed=None):
        super().__init__()
        d_embed = d if d_embed is None else d_embed
        self.m, self.d, self.n_layers = m, d, n_layers
        self.embedding = nn.Embedding(m, d_embed)
        self.transform = nn.Sequential(nn.Linear(d_embed, hidden), nn.Tanh(), nn.Linear(hidden, 2 * n_layers * d))

    def layer_prefix(self, layer: int):
        """(P_k^ℓ, P_v^ℓ): layer ℓ's column blocks of P (Eq. 4.6)."""
        H = self.transform[1](self.transform[0](self.embedding.weight))
        out, d = self.transform[2], self.d
        k, v = slice(2 * layer * d, (2 * layer + 1) * d), slice((2 * layer + 1) * d, (2 * layer + 2) * d)
        return F.linear(H, out.weight[k], out.bias[k]), F.linear(H, out.weight[v], out.bias[v])

    def forward(self):
        return torch.cat([torch.cat(self.layer_prefix(i), 1) for i in range(self.n_layers)], 1)


class PrefixSlot(nn.Module):
    """Layer ℓ's view of the shared MLP.  The MLP is registered once, on the model
    (``bert.prefix_encoder``); the slot keeps a plain reference so it is neither listed
    nor saved L times."""

    def __init__(self, mlp: PrefixMLP, layer: int):
        super().__init__()
        self.__dict__["mlp"] = mlp  # bypasses nn.Module registration on purpose
        self.layer = layer

    def forward(self, batch):
        B = _batch(batch)
        pk, pv = self.mlp.layer_prefix(self.layer)
        return pk.expand(B, -1, -1), pv.expand(B, -1, -1)


def attach_prefix(model, m: int, reparam: int | None = None, seed: int = 0, std: float = 1.0,
                  d_embed: int | None = None):
    """Torch twin of ``pedagogy_lib.prefix.attach_prefix`` (same seed → same initial values)."""
    bert = _bert(model)
    m, std = npx._check_size(m, "prefix length m"), npx._check_std(std)
    if reparam is not None:
        reparam = npx._check_size(reparam, "reparam (MLP hidden size)")
    if d_embed is not None:
        d_embed = npx._check_size(d_embed, "d_embed")
    atts = _free_attentions(bert)
    rng, d, like = np.random.default_rng(checks.seed(seed)), bert.config.hidden_size, _like(bert)
    _freeze(model)  # everything checked: now change the model
    if reparam is None:
        for a in atts:
            p = npx.Prefix(m, d, rng, np.float64, std)
            a.prefix = Prefix(torch.from_numpy(p.p["key"]).to(**like), torch.from_numpy(p.p["value"]).to(**like))
        return model
    ref = npx.PrefixMLP(m, d, len(atts), reparam, d_embed, rng, np.float64)
    mlp = PrefixMLP(m, d, len(atts), reparam, d_embed).to(**like)
    mlp.load_state_dict({k: torch.from_numpy(v) for k, v in ref.state_dict().items()})
    bert.prefix_encoder = mlp
    for i, a in enumerate(atts):
        a.prefix = PrefixSlot(mlp, i)
    return model


def attach_ptuning_v2(model, m: int, seed: int = 0, std: float = 1.0):
    """P-Tuning v2: per-layer keys and values trained directly (Eq. 5.4)."""
    return attach_prefix(model, m, reparam=None, seed=seed, std=std)


@torch.no_grad()
def fold(model):
    """Keep only the m×d×L×2 prefix tensors and drop the MLP (Eq. 4.7); outputs unchanged."""
    bert = _bert(model)
    mlp = getattr(bert, "prefix_encoder", None)
    if mlp is None:
        raise ValueError("nothing to fold: the model has no MLP-reparameterised prefix")
    for i, a in enumerate(_attentions(bert)):
        pk, pv = mlp.layer_prefix(i)
        a.prefix = Prefix(pk.detach().clone(), pv.detach().clone())
    del bert.prefix_encoder
    return model


def prefix_tensors(model) -> torch.Tensor:
    """All prefixes as one (L, 2, m, d) tensor: [layer][key, value]."""
    out = []
    for a in _attentions(_bert(model)):
        if a.prefix is None:
            raise ValueError("the model has no prefix at every layer")
        pk, pv = a.prefix(1)
        out.append(torch.stack([pk[0], pv[0]]))
    return torch.stack(out)


__all__ = ["Prefix", "PrefixMLP", "PrefixSlot", "attach_prefix", "attach_ptuning_v2", "fold", "prefix_tensors"]
