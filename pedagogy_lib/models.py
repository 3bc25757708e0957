"""The real MiniLM, offline, behind one call: ``load_minilm(backend="numpy"|"torch")``.

This module is the façade on top of the model stack: it builds the NumPy encoder from
``pedagogy_lib.bert`` or the torch twin from ``pedagogy_lib.torch_ref.encoder`` (imported only
when asked for, so the NumPy route never imports torch), loads the safetensors weights and
the shipped tokenizer, and returns a model whose ``.encode(list_of_str)`` gives the same
normalised sentence embeddings as sentence-transformers.
"""
from __future__ import annotations

import numpy as np

from .bert import BertConfig, BertEncoder, SentenceEncoder
from .checkpoint import Tokenizer, load_config, load_weights
from .nn import l2_normalize

BACKENDS = ("numpy", "torch")


class MiniLM:
    """A sentence encoder plus its tokenizer. ``net`` is the NumPy or torch SentenceEncoder."""

    def __init__(self, net, tokenizer: Tokenizer, backend: str):
        self.net, self.tokenizer, self.backend = net, tokenizer, backend

    @property
    def bert(self):
        return self.net.bert

    def tokenize(self, texts):
        return self.tokenizer(texts)

    def pooled(self, texts, batch_size: int = 64) -> np.ndarray:
        """Mean-pooled (not normalised) embeddings as float NumPy arrays, shape (n, d)."""
        out = []
        for i in range(0, len(texts), batch_size):
            ids, mask = self.tokenizer(texts[i:i + batch_size])
            if self.backend == "numpy":
                out.append(self.net(ids, mask))
            else:
                import torch

                dev = next(self.net.parameters()).device
                with torch.no_grad():
                    pooled = self.net(torch.from_numpy(ids).to(dev), torch.from_numpy(mask).to(dev))
                out.append(pooled.cpu().numpy())
        return np.concatenate(out)

    def encode(self, texts, batch_size: int = 64) -> np.ndarray:
        """Normalised sentence embeddings (n, 384), as sentence-transformers returns them."""
        if isinstance(texts, str):
            raise TypeError("encode expects a list of strings, not a single string")
        return l2_normalize(self.pooled(list(texts), batch_size))


def load_minilm(backend: str = "numpy", dtype=None, device=None) -> MiniLM:
    """Load all-MiniLM-L6-v2 into our own encoder (NumPy or torch), offline."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    cfg = BertConfig.from_dict(load_config())
    # the pooler (tanh over [CLS]) is trained for next-sentence prediction; mean pooling ignores it
    weights = {k: v for k, v in load_weights().items() if not k.startswith("pooler.")}
    if backend == "numpy":
        dtype = np.float32 if dtype is None else dtype
        bert = BertEncoder(cfg, dtype=dtype).load_state_dict(weights)
        return MiniLM(SentenceEncoder(bert), Tokenizer(), backend)
    import torch

    from .torch_ref.encoder import SentenceEncoder as TorchSentenceEncoder, build_encoder

    bert = build_encoder(cfg, weights, dtype=dtype or torch.float32, device=device)
    return MiniLM(TorchSentenceEncoder(bert).eval(), Tokenizer(), backend)
