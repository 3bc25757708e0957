"""A BERT encoder (post-LN) in NumPy, with forward and hand-written backward (chapter 00).

Module names mirror Hugging Face's ``BertModel`` (``encoder.layer.3.attention.self.query``)
so the real MiniLM checkpoint loads by name and PEFT methods can target modules the way
``peft`` does. Dropout is left out everywhere: the book trains deterministically.

Extension points used by later chapters (all ``None`` by default):
* ``BertEmbeddings.prompt``  – soft prompt vectors prepended to the word embeddings (ch. 05);
* ``SelfAttention.prefix``   – prefix keys/values prepended inside attention (ch. 04, 05);
* ``BertLayer.parallel``     – a module added beside the FFN, fed the FFN's input (ch. 03).
Sequential adapters and LoRA need no hook: they replace a Linear by dotted path.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import checks
from .nn import (GELU, Embedding, LayerNorm, Linear, Module, ModuleList, SelfAttention,
                 check_mask, l2_normalize, mean_pool, mean_pool_backward)


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    def __post_init__(self):
        """Sizes are positive ints, the heads divide the hidden size, eps is finite and > 0."""
        for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                  "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            checks.positive_int(getattr(self, k), f"BertConfig.{k}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"BertConfig: hidden_size={self.hidden_size} is not divisible by "
                             f"num_attention_heads={self.num_attention_heads}")
        checks.finite_real(self.layer_norm_eps, "BertConfig.layer_norm_eps", positive=True)

    @classmethod
    def from_dict(cls, d: dict) -> "BertConfig":
        if not isinstance(d, dict):
            raise TypeError(f"BertConfig.from_dict needs a dict (a parsed config.json), got {type(d).__name__}")
        if d.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"only the exact-erf 'gelu' activation is supported, got {d['hidden_act']!r}")
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


class BertEmbeddings(Module):
    """e_t = LN(E_word[id_t] + E_pos[t] + E_type[0])  (Eq. 0.20)."""

    def __init__(self, cfg: BertConfig, rng, dtype):
        super().__init__()
        self.word_embeddings = Embedding(cfg.vocab_size, cfg.hidden_size, rng, dtype)
        self.position_embeddings = Embedding(cfg.max_position_embeddings, cfg.hidden_size, rng, dtype)
        self.token_type_embeddings = Embedding(cfg.type_vocab_size, cfg.hidden_size, rng, dtype)
        self.LayerNorm = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps, dtype)
        self.prompt = None

    def forward(self, ids):
        B, T = ids.shape
        x = self.word_embeddings(ids)
        self.m = 0
        if self.prompt is not None:  # soft prompt: [P; E_word(ids)], positions shift by m
            P = self.prompt(B)
            self.m = P.shape[1]
            x = np.concatenate([P.astype(x.dtype), x], axis=1)
        n = self.m + T
        if n > self.position_embeddings.n:
            raise ValueError(f"sequence of {n} tokens exceeds {self.position_embeddings.n} positions")
        x = x + self.position_embeddings(np.arange(n)[None, :])
        x = x + self.token_type_embeddings(np.zeros((1, n), np.int64))
        return self.LayerNorm(x)

    def backward(self, dy):
        dx = self.LayerNorm.backward(dy)
        self.position_embeddings.backward(dx.sum(0, keepdims=True))
        self.token_type_embeddings.backward(dx.sum(0, keepdims=True))
        if self.m:
            self.prompt.backward(dx[:, : self.m])
        self.word_embeddings.backward(dx[:, self.m:])
        return None


class _Output(Module):
    """h' = LN(dense(x) + residual): BERT's post-LN sublayer output."""

    def __init__(self, d_in, d, eps, rng, dtype):
        super().__init__()
        self.dense = Linear(d_in, d, rng=rng, dtype=dtype)
        self.LayerNorm = LayerNorm(d, eps, dtype)


class _Attention(Module):
    def __init__(self, cfg, rng, dtype):
        super().__init__()
        d = cfg.hidden_size
        setattr(self, "self", SelfAttention(d, cfg.num_attention_heads, rng, dtype))
        self.output = _Output(d, d, cfg.layer_norm_eps, rng, dtype)


class _Intermediate(Module):
    def __init__(self, cfg, rng, dtype):
        super().__init__()
        self.dense = Linear(cfg.hidden_size, cfg.intermediate_size, rng=rng, dtype=dtype)
        self.act = GELU()


class BertLayer(Module):
    """One post-LN encoder block (Eqs. 0.21–0.22):

    h₁ = LN(W_o·Attn(h) + h),   h₂ = LN(W₂·GELU(W₁h₁) [+ parallel(h₁)] + h₁).
    """

    def __init__(self, cfg: BertConfig, rng, dtype):
        super().__init__()
        self.attention = _Attention(cfg, rng, dtype)
        self.intermediate = _Intermediate(cfg, rng, dtype)
        self.output = _Output(cfg.intermediate_size, cfg.hidden_size, cfg.layer_norm_eps, rng, dtype)
        self.parallel = None

    def forward(self, h, mask):
        att = self.attention
        a = getattr(att, "self")(h, mask)
        h1 = att.output.LayerNorm(att.output.dense(a) + h)
        f = self.output.dense(self.intermediate.act(self.intermediate.dense(h1)))
        if self.parallel is not None:
            f = f + self.parallel(h1)
        return self.output.LayerNorm(f + h1)

    def backward(self, dh2):
        att = self.attention
        ds = self.output.LayerNorm.backward(dh2)          # dL/d(f + h₁)
        df = self.output.dense.backward(ds)
        dh1 = ds + self.intermediate.dense.backward(self.intermediate.act.backward(df))
        if self.parallel is not None:
            dh1 += self.parallel.backward(ds)
        da_sum = att.output.LayerNorm.backward(dh1)       # d(W_o a + h)
        dh = da_sum + getattr(att, "self").backward(att.output.dense.backward(da_sum))
        return dh


class BertEncoder(Module):
    """Embeddings followed by L encoder blocks; returns the last hidden states (B, m+T, d)."""

    def __init__(self, cfg: BertConfig, seed: int = 0, dtype=np.float32):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.config = cfg
        self.embeddings = BertEmbeddings(cfg, rng, dtype)
        self.encoder = Module()
        self.encoder.layer = ModuleList(*[BertLayer(cfg, rng, dtype) for _ in range(cfg.num_hidden_layers)])

    @property
    def layers(self):
        return list(self.encoder.layer)

    def forward(self, ids, mask):
        ids = np.asarray(ids)
        if ids.ndim != 2:
            raise ValueError(f"token ids must be (batch, length), got shape {ids.shape}")
        mask = check_mask(mask, *ids.shape)
        h = self.embeddings(ids)
        m = self.embeddings.m
        full = np.concatenate([np.ones((ids.shape[0], m), bool), mask], axis=1) if m else mask
        for layer in self.layers:
            h = layer(h, full)
        return h

    def backward(self, dh):
        for layer in reversed(self.layers):
            dh = layer.backward(dh)
        self.embeddings.backward(dh)


class SentenceEncoder(Module):
    """Encoder + mean pooling over the real tokens (soft-prompt positions excluded)."""

    def __init__(self, bert: BertEncoder):
        super().__init__()
        self.bert = bert

    def forward(self, ids, mask):
        h = self.bert(ids, mask)
        self.m, self.mask, self.h_shape, self.dtype = self.bert.embeddings.m, np.asarray(mask), h.shape, h.dtype
        return mean_pool(h[:, self.m:], self.mask)

    def backward(self, dpooled):
        dh = np.zeros(self.h_shape, self.dtype)
        dh[:, self.m:] = mean_pool_backward(dpooled, self.mask, self.dtype)
        self.bert.backward(dh)

    def embed(self, ids, mask):
        """Normalised sentence embeddings, as sentence-transformers returns them."""
        return l2_normalize(self.forward(ids, mask))


__all__ = ["BertConfig", "BertEmbeddings", "BertLayer", "BertEncoder", "SentenceEncoder", "check_mask"]
