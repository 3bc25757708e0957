"""A LLaMA-style decoder in NumPy with hand-written backward passes (chapter 09).

Pre-norm blocks (Eq. 9.1): h ← h + Attn(RMSNorm(h)),  h ← h + SwiGLU(RMSNorm(h)), with
RMSNorm (Eqs. 9.2–9.3), rotary position embeddings on queries and keys (Eqs. 9.4–9.5),
causal attention with optional grouped-query heads (Eq. 9.6), a SwiGLU MLP (Eqs. 9.7–9.8)
and no biases anywhere. Module names are those of ``transformers``' Llama
(``model.layers.3.self_attn.q_proj``, ``model.layers.3.mlp.gate_proj``, ``model.norm``,
``lm_head``), so one safetensors file serves our NumPy model, our torch twin and
``transformers.LlamaForCausalLM``.

``Decoder.forward(ids, pos0, cache)`` also runs incrementally with a KV cache (generation);
``backward`` is for full sequences only (training), as in every real implementation.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from . import checks
from .nn import Embedding, Linear, Module, ModuleList, check_array, check_finite, softmax, softmax_backward


@dataclass(frozen=True)
class DecoderConfig:
    vocab_size: int = 2048
    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    max_position_embeddings: int = 256
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = True

    def __post_init__(self):
        for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                  "num_attention_heads", "num_key_value_heads", "max_position_embeddings"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"DecoderConfig.{k} must be a positive integer, got {v!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by "
                             f"{self.num_attention_heads} attention heads")
        if self.head_dim % 2:
            raise ValueError(f"RoPE rotates pairs: head_dim {self.head_dim} must be even")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"{self.num_attention_heads} query heads cannot share "
                             f"{self.num_key_value_heads} key/value heads evenly")
        checks.finite_real(self.rms_norm_eps, "DecoderConfig.rms_norm_eps", positive=True)
        if checks.finite_real(self.rope_theta, "DecoderConfig.rope_theta") <= 1:
            raise ValueError(f"DecoderConfig.rope_theta must be > 1, got {self.rope_theta!r}")
        if not isinstance(self.tie_word_embeddings, bool):   # the string "false" would be true
            raise TypeError(f"DecoderConfig.tie_word_embeddings must be a bool, got {self.tie_word_embeddings!r}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- checks
def check_token_ids(ids, cfg: DecoderConfig, pos0: int = 0) -> np.ndarray:
    """Integer ids of shape (B, T), T ≥ 1, inside the vocabulary and (from position pos0) the context."""
    ids = np.asarray(ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"token ids must be integers of shape (batch, length), got {ids.dtype} {ids.shape}")
    pos0 = checks.nonneg_int(pos0, "pos0 (the first token's position)")   # -1 or 1.5 would turn RoPE wrongly
    n, V = ids.shape[1], cfg.vocab_size
    if n == 0:
        raise ValueError("token ids: empty sequence (at least one token is needed)")
    if ids.shape[0] == 0:
        raise ValueError("token ids: empty batch (at least one sequence is needed)")
    if pos0 + n > cfg.max_position_embeddings:
        raise ValueError(f"token ids: {pos0 + n} positions exceed the context of {cfg.max_position_embeddings}")
    if ids.min() < 0 or ids.max() >= V:
        raise ValueError(f"token ids must lie in [0, {V}), got [{ids.min()}, {ids.max()}]")
    return ids


def check_prompt(ids, max_new_tokens, cfg: DecoderConfig) -> np.ndarray:
    """A 1-D prompt and a non-negative number of new tokens that fit the context together."""
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"ids must be a 1-D array of token ids, got shape {ids.shape}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens!r}")
    check_token_ids(ids[None, :], cfg)
    if ids.size + max_new_tokens > cfg.max_position_embeddings:
        raise ValueError(f"{ids.size} prompt + {max_new_tokens} new tokens exceed the context of "
                         f"{cfg.max_position_embeddings}")
    return ids.astype(np.int64)


# ----------------------------------------------------------------------------- RMSNorm
class RMSNorm(Module):
    """y = w ⊙ x / √(mean(x²) + ε)  (Eq. 9.2): no centring, no shift β."""

    def __init__(self, d: int, eps: float = 1e-5, dtype=np.float32):
        super().__init__()
        self.d, self.eps = d, eps
        self.p["weight"] = np.ones(d, dtype)

    def forward(self, x):
        check_array(x, "RMSNorm input", last=self.d)
        self.r = 1.0 / np.sqrt((x * x).mean(-1, keepdims=True) + self.eps)
        self.xhat = x * self.r
        return self.xhat * self.p["weight"]

    def backward(self, dy):
        self._accumulate("weight", (dy * self.xhat).reshape(-1, self.d).sum(0))
        dxhat = dy * self.p["weight"]
        # dx = r (dx̂ − x̂ · mean(dx̂ ⊙ x̂))  (Eq. 9.3)
        return self.r * (dxhat - self.xhat * (dxhat * self.xhat).mean(-1, keepdims=True))


# ----------------------------------------------------------------------------- RoPE
def rope_tables(positions, head_dim: int, theta: float = 10000.0, dtype=np.float64):
    """cos and sin, each (T, head_dim): angle p·θ^(−2i/d_h) for pair i, written twice
    (first half, second half), the layout ``transformers`` uses (Eq. 9.4)."""
    inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    angles = np.asarray(positions, np.float64)[:, None] * inv_freq[None, :]
    angles = np.concatenate([angles, angles], axis=-1)
    return np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)


def rotate_half(x):
    """(x₁, x₂) → (−x₂, x₁) on the two halves of the last axis: a 90° turn of every pair."""
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def apply_rope(x, cos, sin):
    """x ⊙ cos + rotate_half(x) ⊙ sin: each pair (x_i, x_{i+d/2}) turned by its angle (Eq. 9.4)."""
    return x * cos + rotate_half(x) * sin


def apply_rope_backward(dy, cos, sin):
    """The rotation is orthogonal, so the backward turns by −angle: rotate_halfᵀ = −rotate_half."""
    return dy * cos - rotate_half(dy * sin)


# ----------------------------------------------------------------------------- attention
def causal_mask(n_query: int, n_key: int, offset: int = 0):
    """True where query i may see key j: j ≤ offset + i (Eq. 9.6). The queries are the last
    n_query of the n_key positions, so offset = n_key − n_query (0 without a cache)."""
    return np.arange(n_key)[None, :] <= (offset + np.arange(n_query))[:, None]


class CausalSelfAttention(Module):
    """Causal multi-head attention with RoPE on q and k, grouped-query heads, no biases."""

    def __init__(self, cfg: DecoderConfig, rng, dtype, std: float, out_std: float):
        super().__init__()
        d, dh = cfg.hidden_size, cfg.head_dim
        self.h, self.hkv, self.dh, self.theta = cfg.num_attention_heads, cfg.num_key_value_heads, dh, cfg.rope_theta
        self.q_proj = _linear(d, self.h * dh, rng, dtype, std)
        self.k_proj = _linear(d, self.hkv * dh, rng, dtype, std)
        self.v_proj = _linear(d, self.hkv * dh, rng, dtype, std)
        self.o_proj = _linear(self.h * dh, d, rng, dtype, out_std)
        self.prefix = None   # a hook: forward(B) -> (P_k, P_v) each (B, m, hkv·dh); backward(dP_k, dP_v) (Eq. 10.6)

    def _split(self, x, heads):  # (B, T, heads·dh) -> (B, heads, T, dh)
        B, T, _ = x.shape
        return x.reshape(B, T, heads, self.dh).transpose(0, 2, 1, 3)

    def _repeat(self, x):  # (B, hkv, S, dh) -> (B, h, S, dh): query head i reads kv head i // g
        return np.repeat(x, self.h // self.hkv, axis=1)

    def _unrepeat(self, dx):  # the sum over the g query heads that shared a kv head
        B, _, S, dh = dx.shape
        return dx.reshape(B, self.hkv, self.h // self.hkv, S, dh).sum(2)

    def forward(self, x, pos0: int = 0, cache: dict | None = None):
        B, T, _ = x.shape
        if cache is not None and cache.get("end", pos0) != pos0:   # else RoPE turns these keys by the wrong angles
            raise ValueError(f"pos0={pos0}, but the KV cache holds positions up to {cache['end'] - 1}: "
                             f"the next tokens start at {cache['end']}")
        cos, sin = rope_tables(np.arange(pos0, pos0 + T), self.dh, self.theta, x.dtype)
        Q = apply_rope(self._split(self.q_proj(x), self.h), cos, sin)
        K = apply_rope(self._split(self.k_proj(x), self.hkv), cos, sin)
        V = self._split(self.v_proj(x), self.hkv)
        if cache is not None:  # keys and values of earlier positions are computed once
            if "k" in cache:
                K, V = np.concatenate([cache["k"], K], 2), np.concatenate([cache["v"], V], 2)
            cache["k"], cache["v"], cache["end"] = K, V, pos0 + T
        keep, m = causal_mask(T, K.shape[2], K.shape[2] - T), 0   # keys: the S latest positions (Eq. 9.6)
        if self.prefix is not None:   # Eq. 10.6: m keys (already rotated) and values every query sees
            pk, pv = self.prefix(B)
            m = pk.shape[1]
            K, V = np.concatenate([self._split(pk, self.hkv), K], 2), np.concatenate([self._split(pv, self.hkv), V], 2)
            S = K.shape[2] - m      # real keys: query i is real token S − T + i and sees real keys 0…S − T + i
            keep = np.concatenate([np.ones((T, m), bool), causal_mask(T, S, S - T)], 1)
        Kr, Vr = self._repeat(K), self._repeat(V)
        scores = Q @ Kr.transpose(0, 1, 3, 2) / math.sqrt(self.dh)
        A = softmax(np.where(keep, scores, -np.inf), axis=-1)
        self.saved = (Q, Kr, Vr, A, cos, sin, cache is None and pos0 == m, m)
        out = (A @ Vr).transpose(0, 2, 1, 3).reshape(B, T, self.h * self.dh)
        return self.o_proj(out)

    def backward(self, dy):
        Q, Kr, Vr, A, cos, sin, full, m = self.saved
        if not full:
            raise RuntimeError("backward needs a full-sequence forward (pos0 = 0, or m with a prefix; no KV cache)")
        dO = self._split(self.o_proj.backward(dy), self.h)
        dA = dO @ Vr.transpose(0, 1, 3, 2)
        dV = self._unrepeat(A.transpose(0, 1, 3, 2) @ dO)
        dS = softmax_backward(A, dA) / math.sqrt(self.dh)  # masked entries have A = 0: no gradient
        dQ = apply_rope_backward(dS @ Kr, cos, sin)
        dK = self._unrepeat(dS.transpose(0, 1, 3, 2) @ Q)
        merge = lambda t: t.transpose(0, 2, 1, 3).reshape(t.shape[0], t.shape[2], -1)  # noqa: E731
        if m:   # Eq. 10.8: the prefix slots' key/value gradients, summed over each kv head's g query heads
            self.prefix.backward(merge(dK[:, :, :m]), merge(dV[:, :, :m]))
            dK, dV = dK[:, :, m:], dV[:, :, m:]
        dK = apply_rope_backward(dK, cos, sin)
        return self.q_proj.backward(merge(dQ)) + self.k_proj.backward(merge(dK)) + self.v_proj.backward(merge(dV))


# ----------------------------------------------------------------------------- SwiGLU
def silu(z):
    """SiLU(z) = z σ(z)."""
    return z / (1.0 + np.exp(-z))


def silu_grad(z):
    """d SiLU/dz = σ(z) (1 + z (1 − σ(z)))  (Eq. 9.8)."""
    s = 1.0 / (1.0 + np.exp(-z))
    return s * (1.0 + z * (1.0 - s))


class SwiGLU(Module):
    """y = W_down (SiLU(W_gate x) ⊙ W_up x)  (Eq. 9.7)."""

    def __init__(self, cfg: DecoderConfig, rng, dtype, std: float, out_std: float):
        super().__init__()
        d, f = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj = _linear(d, f, rng, dtype, std)
        self.up_proj = _linear(d, f, rng, dtype, std)
        self.down_proj = _linear(f, d, rng, dtype, out_std)

    def forward(self, x):
        self.a, self.b = self.gate_proj(x), self.up_proj(x)   # gate and up pre-activations
        return self.down_proj(silu(self.a) * self.b)

    def backward(self, dy):
        dh = self.down_proj.backward(dy)
        da = dh * self.b * silu_grad(self.a)   # Eq. 9.8
        db = dh * silu(self.a)
        return self.gate_proj.backward(da) + self.up_proj.backward(db)


def _linear(d_in, d_out, rng, dtype, std):
    """A bias-free Linear drawn from N(0, std²), the initialisation LLaMA-style models use.
    (``Linear`` first draws its own uniform weights from ``rng``; the shipped checkpoints
    were initialised with that sequence of draws, so it stays.)"""
    lin = Linear(d_in, d_out, bias=False, rng=rng, dtype=dtype)
    lin.p["weight"] = rng.normal(0.0, std, (d_out, d_in)).astype(dtype)
    return lin


# ----------------------------------------------------------------------------- blocks
class DecoderLayer(Module):
    """Pre-norm block (Eq. 9.1): h₁ = h + Attn(N₁(h)),  h₂ = h₁ + MLP(N₂(h₁))."""

    def __init__(self, cfg: DecoderConfig, rng, dtype, std, out_std):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype)
        self.self_attn = CausalSelfAttention(cfg, rng, dtype, std, out_std)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype)
        self.mlp = SwiGLU(cfg, rng, dtype, std, out_std)

    def forward(self, h, pos0=0, cache=None):
        h1 = h + self.self_attn(self.input_layernorm(h), pos0, cache)
        return h1 + self.mlp(self.post_attention_layernorm(h1))

    def backward(self, dh2):
        dh1 = dh2 + self.post_attention_layernorm.backward(self.mlp.backward(dh2))
        return dh1 + self.input_layernorm.backward(self.self_attn.backward(dh1))


class Decoder(Module):
    """Token ids (B, T) → next-token logits (B, T, V). Parameters named as HF Llama's."""

    def __init__(self, cfg: DecoderConfig, seed: int = 0, dtype=np.float32, std: float = 0.02):
        super().__init__()
        if np.dtype(dtype) not in (np.float32, np.float64):   # what every layer's check_array accepts
            raise TypeError(f"Decoder dtype must be float32 or float64, got {np.dtype(dtype)}")
        rng = np.random.default_rng(seed)
        out_std = std / math.sqrt(2 * cfg.num_hidden_layers)  # residual writers: GPT-2's scaled init
        self.config = cfg
        self.model = Module()
        self.model.embed_tokens = Embedding(cfg.vocab_size, cfg.hidden_size, rng, dtype)
        self.model.layers = ModuleList(*[DecoderLayer(cfg, rng, dtype, std, out_std)
                                         for _ in range(cfg.num_hidden_layers)])
        self.model.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype)
        if not cfg.tie_word_embeddings:
            self.lm_head = _linear(cfg.hidden_size, cfg.vocab_size, rng, dtype, std)

    def check_ids(self, ids, pos0: int = 0):
        return check_token_ids(ids, self.config, pos0)

    def head_weight(self):
        emb = self.model.embed_tokens
        return emb.p["weight"] if self.config.tie_word_embeddings else self.lm_head.p["weight"]

    def forward(self, ids, pos0: int = 0, cache: list | None = None):
        ids = self.check_ids(ids, pos0)
        h = self.model.embed_tokens(ids)
        for i, layer in enumerate(self.model.layers):
            h = layer(h, pos0, None if cache is None else cache[i])
        self.hf = self.model.norm(h)
        return self.hf @ self.head_weight().T   # z = W_E h (tied) or W_head h

    def backward(self, dlogits):
        W, hf = self.head_weight(), self.hf
        dW = dlogits.reshape(-1, W.shape[0]).T @ hf.reshape(-1, W.shape[1])
        owner = self.model.embed_tokens if self.config.tie_word_embeddings else self.lm_head
        owner._accumulate("weight", dW)   # tied: the embedding gets both gradients (Eq. 9.9)
        dh = self.model.norm.backward(dlogits @ W)
        for layer in reversed(list(self.model.layers)):
            dh = layer.backward(dh)
        self.model.embed_tokens.backward(dh)

    def new_cache(self) -> list:
        return [{} for _ in range(self.config.num_hidden_layers)]


# ----------------------------------------------------------------------------- loss
def next_token_loss(logits, ids, mask=None):
    """Masked next-token cross-entropy (Eq. 9.10) and dL/dlogits.

    Position t predicts ids[t+1]; ``mask`` (B, T−1) of 0/1 says which targets count
    (1 everywhere in pretraining, only the response in instruction tuning). The loss is the
    mean over counted targets; the last position predicts nothing.
    """
    check_finite(check_array(logits, "logits", ndim_min=3), "logits")   # one inf makes the loss NaN
    ids = np.asarray(ids)
    B, T, V = logits.shape
    if ids.shape != (B, T):
        raise ValueError(f"ids have shape {ids.shape}, logits {logits.shape}: expected ids {(B, T)}")
    if T < 2:
        raise ValueError("next-token loss needs sequences of at least 2 tokens")
    if ids.dtype.kind not in "iu" or ids.min() < 0 or ids.max() >= V:
        raise ValueError(f"ids must be integers in [0, {V}) (the logits' vocabulary), got {ids.dtype} "
                         f"in [{ids.min()}, {ids.max()}]")
    mask = np.ones((B, T - 1)) if mask is None else np.asarray(mask)
    if mask.shape != (B, T - 1) or not np.isin(mask, (0, 1)).all():
        what = mask.shape if mask.shape != (B, T - 1) else f"values {np.unique(mask)[:4]}"
        raise ValueError(f"loss mask must be 0/1 of shape {(B, T - 1)}, got {what}")
    n = mask.sum()
    if n == 0:
        raise ValueError("loss mask selects no target token")
    z = logits[:, :-1] - logits[:, :-1].max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    tgt = ids[:, 1:]
    nll = -np.take_along_axis(logp, tgt[..., None], -1)[..., 0]
    loss = float((nll * mask).sum() / n)
    d = np.exp(logp)
    np.put_along_axis(d, tgt[..., None], np.take_along_axis(d, tgt[..., None], -1) - 1.0, -1)
    dlogits = np.zeros_like(logits)
    dlogits[:, :-1] = d * (mask / n)[..., None]
    return loss, dlogits


# ----------------------------------------------------------------------------- generation
def generate(model: Decoder, ids, max_new_tokens: int, use_cache: bool = True) -> np.ndarray:
    """Greedy decoding of one sequence (1-D ids). With the cache each step feeds only the
    newest token; without it the whole prefix is recomputed. Both give the same tokens."""
    ids = check_prompt(ids, max_new_tokens, model.config)
    out = [int(t) for t in ids]
    cache = model.new_cache() if use_cache else None
    feed, pos0 = ids, 0
    for _ in range(max_new_tokens):
        logits = model.forward(feed[None, :], pos0, cache)
        out.append(int(np.argmax(logits[0, -1])))
        if use_cache:
            feed, pos0 = np.array(out[-1:]), len(out) - 1
        else:
            feed = np.array(out)
    return np.array(out, dtype=np.int64)


__all__ = ["DecoderConfig", "RMSNorm", "rope_tables", "rotate_half", "apply_rope", "causal_mask",
           "CausalSelfAttention", "SwiGLU", "check_token_ids", "check_prompt", "DecoderLayer", "Decoder", "next_token_loss", "generate"]
