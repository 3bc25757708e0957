"""PyTorch twin of ``pedagogy_lib.bert``: the same encoder, the same names, the same hooks.

Written from the equations, not from ``transformers``; tests compare it with both our
NumPy encoder and ``transformers.BertModel`` on the real MiniLM weights. Device-agnostic:
``default_device()`` is CUDA when present, else CPU.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .. import checks
from ..bert import BertConfig
from ..checkpoint import MiniLM, Tokenizer, encoder_weights, load_config


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class BertEmbeddings(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        d = cfg.hidden_size
        self.word_embeddings = nn.Embedding(cfg.vocab_size, d)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, d)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, d)
        self.LayerNorm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.prompt = None  # module: batch size -> (B, m, d) soft prompt (chapter 05)

    def forward(self, ids):
        B, _ = ids.shape
        x = self.word_embeddings(ids)
        if self.prompt is not None:
            x = torch.cat([self.prompt(B).to(x.dtype), x], dim=1)
        n = x.shape[1]
        if n > self.position_embeddings.num_embeddings:
            raise ValueError(f"sequence of {n} tokens exceeds {self.position_embeddings.num_embeddings} positions")
        pos = torch.arange(n, device=ids.device)
        x = x + self.position_embeddings(pos)[None] + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class SelfAttention(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        if d % heads:
            raise ValueError(f"hidden size {d} is not divisible by {heads} heads")
        self.h, self.dh = heads, d // heads
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.prefix = None  # module: batch size -> (pk, pv), each (B, m, d) (chapters 04–05)

    def forward(self, x, keep):
        B, T, d = x.shape
        q, k, v = self.query(x), self.key(x), self.value(x)
        if self.prefix is not None:
            pk, pv = self.prefix(B)
            k = torch.cat([pk.to(x.dtype), k], 1)
            v = torch.cat([pv.to(x.dtype), v], 1)
            keep = torch.cat([keep.new_ones(B, pk.shape[1]), keep], 1)
        split = lambda t: t.view(B, -1, self.h, self.dh).transpose(1, 2)  # noqa: E731
        scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(self.dh)
        scores = scores.masked_fill(~keep[:, None, None, :], float("-inf"))
        out = torch.softmax(scores, -1) @ split(v)
        return out.transpose(1, 2).reshape(B, T, d)


class _Output(nn.Module):
    def __init__(self, d_in, d, eps):
        super().__init__()
        self.dense = nn.Linear(d_in, d)
        self.LayerNorm = nn.LayerNorm(d, eps=eps)


class _Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.add_module("self", SelfAttention(cfg.hidden_size, cfg.num_attention_heads))
        self.output = _Output(cfg.hidden_size, cfg.hidden_size, cfg.layer_norm_eps)


class _Intermediate(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)


class BertLayer(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.attention = _Attention(cfg)
        self.intermediate = _Intermediate(cfg)
        self.output = _Output(cfg.intermediate_size, cfg.hidden_size, cfg.layer_norm_eps)
        self.parallel = None  # module fed the FFN input, added to the FFN output (chapter 03)

    def forward(self, h, keep):
        att = self.attention
        a = att._modules["self"](h, keep)
        h1 = att.output.LayerNorm(att.output.dense(a) + h)
        f = self.output.dense(F.gelu(self.intermediate.dense(h1)))  # exact erf GELU
        if self.parallel is not None:
            f = f + self.parallel(h1)
        return self.output.LayerNorm(f + h1)


class _Stack(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.num_hidden_layers))


class BertEncoder(nn.Module):
    """Returns the last hidden states (B, m+T, d); m is the soft-prompt length (0 without)."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = _Stack(cfg)

    def forward(self, ids, mask):
        if ids.ndim != 2 or mask.shape != ids.shape:
            raise ValueError(f"ids and mask must both be (batch, length); got {tuple(ids.shape)}, {tuple(mask.shape)}")
        # the checks of the NumPy twin's check_mask: a 2 would weigh a token twice in the mean
        # pool, a row of zeros would make softmax over −∞ only, i.e. NaN
        if mask.dtype != torch.bool and ((mask != 0) & (mask != 1)).any():
            raise ValueError("attention mask must contain only 0 and 1")
        keep = mask.bool()
        if ids.shape[0] and not keep.any(1).all():
            raise ValueError("attention mask has a row with no real token")
        h = self.embeddings(ids)
        m = h.shape[1] - ids.shape[1]
        if m:
            keep = torch.cat([keep.new_ones(ids.shape[0], m), keep], 1)
        for layer in self.encoder.layer:
            h = layer(h, keep)
        return h


class SentenceEncoder(nn.Module):
    """Mean pooling over real tokens (soft-prompt positions excluded)."""

    def __init__(self, bert: BertEncoder):
        super().__init__()
        self.bert = bert

    def forward(self, ids, mask):
        h = self.bert(ids, mask)
        h = h[:, h.shape[1] - ids.shape[1]:]
        w = mask.to(h.dtype)[..., None]
        return (h * w).sum(1) / w.sum(1).clamp_min(1e-9)


def build_encoder(cfg: BertConfig, weights: dict[str, np.ndarray] | None = None,
                  dtype=torch.float32, device=None) -> BertEncoder:
    """Build our torch encoder in ``dtype`` and, if given, load NumPy weights by name (strict).
    The dtype comes first, so float64 weights arrive in a float64 model unrounded."""
    model = BertEncoder(cfg).to(dtype=dtype)
    if weights is not None:
        load_numpy_weights(model, weights, "encoder")
    return model.to(device=device or default_device())


def load_numpy_weights(model: nn.Module, weights: dict[str, np.ndarray], what: str) -> nn.Module:
    """Copy {name: NumPy array} into ``model`` by name. A missing or an extra key, a wrong
    shape, an array of non-numbers or with NaN/inf is refused before anything is copied
    (``load_state_dict(strict=False)`` copies the keys that fit before it reports the rest)."""
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    if missing or unexpected:
        raise KeyError(f"weights do not fit the {what}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for k, v in weights.items():
        if np.shape(v) != tuple(own[k].shape):
            raise ValueError(f"weights do not fit the {what}: {k} has shape {np.shape(v)}, "
                             f"expected {tuple(own[k].shape)}")
        checks.finite_array(np.asarray(v), f"{what} weight {k}")
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()}
    for k, t in state.items():  # judged as it will be stored: 1e39 is finite, but inf in float32
        if own[k].is_floating_point() and not torch.isfinite(t.to(own[k].dtype)).all():
            raise ValueError(f"weights do not fit the {what}: {k} has values beyond the range of "
                             f"the model's {own[k].dtype} (they would load as inf)")
    model.load_state_dict(state, strict=True)
    return model


def load_minilm_torch(dtype=None, device=None) -> MiniLM:
    """The real MiniLM in our torch twin (the twin of ``models.load_minilm()``)."""
    cfg = BertConfig.from_dict(load_config())
    bert = build_encoder(cfg, encoder_weights(), dtype=dtype or torch.float32, device=device)
    return MiniLM(SentenceEncoder(bert).eval(), Tokenizer(), "torch")
