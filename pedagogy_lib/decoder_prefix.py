"""Prefix-tuning and P-Tuning v2 on the NumPy decoder (chapter 10, Eqs. 10.6–10.9).

Chapter 04's prefixes (``prefix.py``) were written for the encoder; on the decoder three
things change, and this module is only about them:

* **width**: with grouped-query heads a layer has hkv·dh key and value columns, not d; each
  prefix kv head is read by the g = h/hkv query heads that share it, exactly as real keys are;
* **mask**: every real position attends to all m prefix slots; the causal mask applies among
  the real tokens only (Eq. 10.6);
* **positions**: the prefix keys are used as a KV cache holds keys, already rotated, as if
  computed at positions 0…m−1; the real tokens take positions m…m+T−1 (Eq. 10.7). Installing
  the cache of m real tokens therefore reproduces "those tokens typed first" exactly.

The keys and values themselves are chapter 04's modules at width hkv·dh: ``prefix.Prefix``
(trained directly: P-Tuning v2) or a ``prefix.PrefixSlot`` into one shared ``PrefixMLP``
(Li & Liang's reparameterisation, Eq. 10.9), which ``fold`` evaluates once and drops.
The attention layer's ``prefix`` hook and its backward (Eq. 10.8) live in ``decoder.py``.
"""
from __future__ import annotations

import numpy as np

from . import checks
from .decoder import Decoder
from .nn import Module, check_array, check_finite
from .prefix import Prefix, PrefixMLP, PrefixSlot


def kv_width(cfg) -> int:
    """Columns of one layer's keys (or values): hkv·dh, which is d only without grouped heads."""
    return cfg.num_key_value_heads * cfg.head_dim


def sampled_rows(vocab_size: int, m: int, seed: int) -> np.ndarray:
    """m distinct vocabulary ids drawn by ``seed`` (the torch twin draws the same)."""
    if m > vocab_size:
        raise ValueError(f"cannot draw m={m} distinct tokens from a vocabulary of {vocab_size}")
    return np.random.default_rng(seed).choice(vocab_size, m, replace=False)


def kv_of_tokens(net: Decoder, ids) -> np.ndarray:
    """The KV cache ``net`` builds reading ``ids`` at positions 0…m−1, as (L, 2, m, hkv·dh)
    [layer][key, value], keys rotated (Eq. 10.7)."""
    cache = net.new_cache()
    net.forward(np.asarray(ids, np.int64)[None, :], 0, cache)
    flat = lambda t: t[0].transpose(1, 0, 2).reshape(t.shape[2], -1)  # noqa: E731  (hkv, m, dh) → (m, hkv·dh)
    return np.stack([np.stack([flat(c["k"]), flat(c["v"])]) for c in cache])


def _attentions(net: Decoder):
    return [layer.self_attn for layer in net.model.layers]


class PrefixedDecoder(Module):
    """A frozen ``Decoder`` whose every layer reads m trained key/value slots (Eq. 10.6).

    ``hidden=None``: P-Tuning v2, the slots are parameters, initialised as the KV cache of m
    vocabulary tokens drawn by ``seed``. ``hidden=h``: prefix-tuning, the slots come from
    one ``PrefixMLP`` (P′ ∈ R^{m×d}, hidden size h) shared by the layers (Eq. 10.9).
    ``forward(ids)`` gives the logits of the real tokens, ``backward(dlogits)`` accumulates
    the prefix gradients (Eq. 10.8); the decoder's own weights stay frozen.
    """

    def __init__(self, net: Decoder, m: int, hidden: int | None = None, seed: int = 0):
        super().__init__()
        if not isinstance(net, Decoder):
            raise TypeError(f"expected a pedagogy_lib.decoder.Decoder, got {type(net).__name__}")
        m, seed = checks.positive_int(m, "prefix length m"), checks.seed(seed)
        if hidden is not None:
            hidden = checks.positive_int(hidden, "MLP hidden size")
        cfg = net.config
        if m >= cfg.max_position_embeddings:
            raise ValueError(f"prefix length m={m} leaves no room in the context of {cfg.max_position_embeddings}")
        atts = _attentions(net)
        if any(a.prefix is not None for a in atts):
            raise ValueError("the decoder already has a prefix; load a fresh model to attach another")
        dtype = net.model.embed_tokens.p["weight"].dtype
        P0 = kv_of_tokens(net, sampled_rows(cfg.vocab_size, m, seed)) if hidden is None else None
        net.freeze()   # everything checked: now change the model
        self.net, self.m = net, m
        if hidden is None:
            for a, (pk, pv) in zip(atts, P0):
                a.prefix = Prefix.from_arrays(pk, pv)
            return
        self.prefix_encoder = PrefixMLP(m, kv_width(cfg), len(atts), hidden, cfg.hidden_size,
                                        np.random.default_rng(seed), dtype)
        for i, a in enumerate(atts):
            a.prefix = PrefixSlot(self.prefix_encoder, i)

    def forward(self, ids):
        return self.net.forward(ids, self.m)   # real tokens at positions m…m+T−1 (Eq. 10.7)

    def backward(self, dlogits):
        self.net.backward(dlogits)

    def prefix_tensors(self) -> np.ndarray:
        """Every layer's slots as (L, 2, m, hkv·dh) [layer][key, value]."""
        return np.stack([np.stack([t[0] for t in a.prefix(1)]) for a in _attentions(self.net)])

    def fold(self) -> "PrefixedDecoder":
        """Evaluate the MLP once, keep the m·2·L·hkv·dh numbers, drop the MLP (Eq. 10.9).
        The kept arrays are what the slots computed, so the logits do not change by a bit."""
        if not hasattr(self, "prefix_encoder"):
            raise ValueError("nothing to fold: this prefix has no MLP")
        self.load_prefix(self.prefix_tensors())
        return self

    def load_prefix(self, tensors) -> "PrefixedDecoder":
        """Install given (L, 2, m, hkv·dh) slots as direct parameters (replacing the MLP, if
        any). Every check runs before anything changes."""
        cfg = self.net.config
        want = (cfg.num_hidden_layers, 2, self.m, kv_width(cfg))
        check_array(tensors, "prefix tensors", ndim_min=1)
        if tensors.shape != want:
            raise ValueError(f"prefix tensors must be (L, 2, m, hkv·dh) = {want} [layer][key, value], "
                             f"got shape {tensors.shape}")
        check_finite(tensors, "prefix tensors")
        dtype = self.net.model.embed_tokens.p["weight"].dtype
        for a, (pk, pv) in zip(_attentions(self.net), tensors.astype(dtype)):
            a.prefix = Prefix.from_arrays(pk, pv)
        if hasattr(self, "prefix_encoder"):
            del self.prefix_encoder
        return self


__all__ = ["PrefixedDecoder", "kv_of_tokens", "kv_width", "sampled_rows"]
