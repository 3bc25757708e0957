"""The real MiniLM, offline, in our NumPy encoder: ``load_minilm()``.

It builds the NumPy encoder from ``pedagogy_lib.bert``, loads the safetensors weights and the
shipped tokenizer, and returns a model whose ``.encode(list_of_str)`` gives the same
normalised sentence embeddings as sentence-transformers. NumPy only: the torch twin is
``pedagogy_lib.torch_ref.encoder.load_minilm_torch`` (a layer above; nothing here imports torch).
"""
from __future__ import annotations

import numpy as np

from .bert import BertConfig, BertEncoder, SentenceEncoder
from .checkpoint import MiniLM, Tokenizer, encoder_weights, load_config

def load_minilm(backend: str = "numpy", dtype=None) -> MiniLM:
    """Load all-MiniLM-L6-v2 into our own NumPy encoder, offline."""
    if backend != "numpy":
        raise ValueError(f"models.load_minilm builds the NumPy encoder (backend 'numpy'), got {backend!r}; "
                         "the torch twin is pedagogy_lib.torch_ref.encoder.load_minilm_torch")
    cfg = BertConfig.from_dict(load_config())
    bert = BertEncoder(cfg, dtype=np.float32 if dtype is None else dtype).load_state_dict(encoder_weights())
    return MiniLM(SentenceEncoder(bert), Tokenizer(), backend)
