"""The real MiniLM, offline, in our NumPy encoder: ``load_minilm()``.

It builds the NumPy encoder from ``pedagogy_lib.bert``, loads the safetensors weights and the
shipped tokenizer, and returns a model whose ``.encode(list_of_str)`` gives the same
normalised sentence embeddings as sentence-transformers (the torch twin is
``pedagogy_lib.torch_ref.encoder.load_minilm_torch``).

``load_decoder(name, backend)`` loads chapter 09's pretrained decoders
(``pedagogy_lib/checkpoints/<name>/``): NumPy ``decoder.Decoder`` (``decoder_io.load_lm``), or
with ``backend="torch"`` the torch twin (``torch_ref.decoder.load_lm_torch``).

This module is the API that picks a backend, so it sits on the torch twins' floor
(``tests/test_layers.py::FLOORS``); the loaders it calls sit below it, and nothing below
imports it. Importing it, or loading a NumPy model, never imports torch: the torch loader is
imported inside the call that asks for it (``tests/test_decoder_io.py``).
"""
from __future__ import annotations

import numpy as np

from .bert import BertConfig, BertEncoder, SentenceEncoder
from .checkpoint import MiniLM, Tokenizer, encoder_weights, load_config
from .decoder_io import load_lm

BACKENDS = ("numpy", "torch")


def load_minilm(backend: str = "numpy", dtype=None) -> MiniLM:
    """Load all-MiniLM-L6-v2 into our own NumPy encoder, offline."""
    if backend != "numpy":
        raise ValueError(f"models.load_minilm builds the NumPy encoder (backend 'numpy'), got {backend!r}; "
                         "the torch twin is pedagogy_lib.torch_ref.encoder.load_minilm_torch")
    cfg = BertConfig.from_dict(load_config())
    bert = BertEncoder(cfg, dtype=np.float32 if dtype is None else dtype).load_state_dict(encoder_weights())
    return MiniLM(SentenceEncoder(bert), Tokenizer(), backend)


def load_decoder(name: str | None = None, backend: str = "numpy", dtype=None, device=None, folder=None):
    """A pretrained decoder of chapter 09's family (``decoder_io.FAMILY``; default
    ``decoder_io.DEFAULT``), NumPy (``decoder_io.load_lm``) or torch
    (``torch_ref.decoder.load_lm_torch``, imported only for that backend), offline. ``folder``
    loads another checkpoint folder in the same layout instead. Everything is checked before
    anything is built."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if backend == "torch":
        # Imported here, not at the top: the NumPy route never imports torch.
        from .torch_ref.decoder import load_lm_torch

        return load_lm_torch(name, dtype=dtype, device=device, folder=folder)
    return load_lm(name, dtype=dtype, folder=folder)
