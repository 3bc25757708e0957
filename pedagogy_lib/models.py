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
from .checkpoint import MiniLM, Tokenizer, encoder_weights, load_config

BACKENDS = ("numpy", "torch")


def load_minilm(backend: str = "numpy", dtype=None, device=None) -> MiniLM:
    """Load all-MiniLM-L6-v2 into our own encoder (NumPy or torch), offline."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if backend == "torch":
        from .torch_ref.encoder import load_minilm_torch

        return load_minilm_torch(dtype, device)
    cfg = BertConfig.from_dict(load_config())
    bert = BertEncoder(cfg, dtype=np.float32 if dtype is None else dtype).load_state_dict(encoder_weights())
    return MiniLM(SentenceEncoder(bert), Tokenizer(), backend)
