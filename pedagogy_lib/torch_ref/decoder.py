"""PyTorch twin of ``pedagogy_lib.decoder``: the same LLaMA-style decoder, the same names.

Written from chapter 09's equations (not from ``transformers``); tests compare it with the
NumPy reference (loss and every gradient) and with ``transformers.LlamaForCausalLM`` on the
same safetensors file. Full sequences use ``scaled_dot_product_attention`` with its causal
flag; incremental decoding keeps a KV cache.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .. import checks
from ..decoder import DecoderConfig
from ..decoder_io import DecoderLM, checkpoint_dir, read_checkpoint
from .encoder import load_numpy_weights


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):  # Eq. 9.2
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rope_tables(positions, head_dim: int, theta: float, dtype, device):
    """cos, sin (T, head_dim) in the halves layout of Eq. 9.4 (angles computed in float64)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64, device=device) / head_dim)
    angles = positions.to(torch.float64)[:, None] * inv_freq[None, :]
    angles = torch.cat([angles, angles], -1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], -1)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        d, self.dh = cfg.hidden_size, cfg.head_dim
        self.h, self.hkv, self.theta = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.rope_theta
        self.q_proj = nn.Linear(d, self.h * self.dh, bias=False)
        self.k_proj = nn.Linear(d, self.hkv * self.dh, bias=False)
        self.v_proj = nn.Linear(d, self.hkv * self.dh, bias=False)
        self.o_proj = nn.Linear(self.h * self.dh, d, bias=False)
        self.kv_prefix = None   # (P_k, P_v), each (hkv, m, dh): set by decoder_peft's prefix arms (Eq. 10.6)

    def forward(self, x, pos0: int = 0, cache: dict | None = None, rope=None):
        B, T, _ = x.shape
        if cache is not None and cache.get("end", pos0) != pos0:   # else RoPE turns these keys by the wrong angles
            raise ValueError(f"pos0={pos0}, but the KV cache holds positions up to {cache['end'] - 1}: "
                             f"the next tokens start at {cache['end']}")
        split = lambda t, n: t.view(B, T, n, self.dh).transpose(1, 2)  # noqa: E731
        pos = torch.arange(pos0, pos0 + T, device=x.device)
        cos, sin = rope_tables(pos, self.dh, self.theta, x.dtype, x.device) if rope is None else rope
        q = split(self.q_proj(x), self.h)
        k = split(self.k_proj(x), self.hkv)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin   # Eq. 9.4
        v = split(self.v_proj(x), self.hkv)
        if cache is not None:
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)
            cache["k"], cache["v"], cache["end"] = k, v, pos0 + T
        g = self.h // self.hkv
        if self.kv_prefix is not None:
            return self._with_prefix(q, k, v, g)
        if g > 1:
            k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
        if k.shape[2] == T:   # full sequence: the causal mask of Eq. 9.6 is the kernel's flag
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            S = k.shape[2]   # the S keys are the S latest positions: query i sees key j ≤ S − T + i
            keep = torch.arange(S, device=x.device)[None, :] <= torch.arange(S - T, S, device=x.device)[:, None]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, self.h * self.dh))

    def _with_prefix(self, q, k, v, g):
        """Attention over [P_k; K], [P_v; V] (Eq. 10.6): the m prefix keys (stored already rotated,
        as a KV cache holds them) are seen by every query; real key j by the queries at or after it."""
        B, _, T, _ = q.shape
        pk, pv = self.kv_prefix
        S, m = k.shape[2], pk.shape[1]
        k = torch.cat([pk.expand(B, -1, -1, -1), k], 2)
        v = torch.cat([pv.expand(B, -1, -1, -1), v], 2)
        if g > 1:   # grouped-query heads: each prefix kv head serves its g query heads, as real keys do
            k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
        real = torch.arange(S, device=q.device)[None, :] <= torch.arange(S - T, S, device=q.device)[:, None]
        keep = torch.cat([torch.ones(T, m, dtype=torch.bool, device=q.device), real], 1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, self.h * self.dh))


class SwiGLU(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        d, f = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj = nn.Linear(d, f, bias=False)
        self.up_proj = nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)

    def forward(self, x):  # Eq. 9.7
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = CausalSelfAttention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = SwiGLU(cfg)

    def forward(self, h, pos0=0, cache=None, rope=None):  # Eq. 9.1
        h = h + self.self_attn(self.input_layernorm(h), pos0, cache, rope)
        return h + self.mlp(self.post_attention_layernorm(h))


class _Body(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class Decoder(nn.Module):
    """ids (B, T) → logits (B, T, V); with ``cache`` (a list from ``new_cache``) incremental."""

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.config = cfg
        self.model = _Body(cfg)
        if not cfg.tie_word_embeddings:
            self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

    def head_weight(self):
        return self.model.embed_tokens.weight if self.config.tie_word_embeddings else self.lm_head.weight

    def forward(self, ids, pos0: int = 0, cache: list | None = None):
        if ids.ndim != 2 or ids.shape[1] == 0:
            raise ValueError(f"token ids must be (batch, length ≥ 1), got {tuple(ids.shape)}")
        pos0 = checks.nonneg_int(pos0, "pos0 (the first token's position)")
        if pos0 + ids.shape[1] > self.config.max_position_embeddings:
            raise ValueError(f"{pos0 + ids.shape[1]} positions exceed the context of "
                             f"{self.config.max_position_embeddings}")
        h = self.model.embed_tokens(ids)
        cfg = self.config   # one table of angles for all layers (Eq. 9.4)
        rope = rope_tables(torch.arange(pos0, pos0 + ids.shape[1], device=ids.device), cfg.head_dim,
                           cfg.rope_theta, h.dtype, h.device)
        for i, layer in enumerate(self.model.layers):
            h = layer(h, pos0, None if cache is None else cache[i], rope)
        return self.model.norm(h) @ self.head_weight().T

    def new_cache(self) -> list:
        return [{} for _ in range(self.config.num_hidden_layers)]


def next_token_loss(logits, ids, mask=None):
    """Mean cross-entropy of position t predicting ids[t+1] over the targets ``mask`` keeps
    (Eq. 9.10)."""
    B, T, V = logits.shape
    nll = F.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1), reduction="none")
    if mask is None:
        return nll.mean()
    m = mask.reshape(-1).to(nll.dtype)
    n = m.sum()
    if n.item() == 0:   # 0/0: the NumPy original refuses it too
        raise ValueError("loss mask selects no target token")
    return (nll * m).sum() / n


@torch.no_grad()
def generate(model: Decoder, ids, max_new_tokens: int, use_cache: bool = True):
    """Greedy decoding of one 1-D LongTensor; returns prompt + new tokens (1-D)."""
    out = ids.clone()
    cache = model.new_cache() if use_cache else None
    feed, pos0 = ids[None, :], 0
    for _ in range(max_new_tokens):
        nxt = model(feed, pos0, cache)[0, -1].argmax()
        out = torch.cat([out, nxt[None]])
        feed, pos0 = (nxt[None, None], out.numel() - 1) if use_cache else (out[None, :], 0)
    return out


def build_decoder(cfg: DecoderConfig, weights: dict[str, np.ndarray] | None = None,
                  dtype=torch.float32, device="cpu") -> Decoder:
    """The torch decoder in ``dtype`` with NumPy weights loaded by name (strict)."""
    model = Decoder(cfg).to(dtype=dtype)
    if weights is not None:
        load_numpy_weights(model, weights, "decoder")
    return model.to(device=device)


class TorchDecoderLM(DecoderLM):
    """``decoder_io.DecoderLM`` with this twin as its net: the same 1-D NumPy ids in, NumPy
    arrays out, computed by torch on the net's device (the torch half of chapter 09's API)."""

    backend = "torch"

    def _device(self):
        return next(self.net.parameters()).device

    @torch.no_grad()
    def _logits(self, ids: np.ndarray) -> np.ndarray:
        return self.net(torch.from_numpy(ids)[None].to(self._device()))[0].cpu().numpy()

    def _greedy(self, ids: np.ndarray, max_new_tokens: int) -> np.ndarray:
        return generate(self.net, torch.from_numpy(ids).to(self._device()), max_new_tokens).cpu().numpy()


def load_lm_torch(name: str | None = None, dtype=None, device=None, folder=None) -> TorchDecoderLM:
    """The twin of ``decoder_io.load_lm``: a pretrained decoder of the family in this torch
    decoder (``dtype`` default float32, ``device`` default cpu), in eval mode; everything is
    checked (``decoder_io.read_checkpoint``) before anything is built."""
    folder = checkpoint_dir(name) if folder is None else folder
    cfg, weights, tok, _ = read_checkpoint(folder)
    net = build_decoder(cfg, weights, dtype=dtype or torch.float32, device=device or "cpu").eval()
    return TorchDecoderLM(Path(folder).name, net, tok, folder)
