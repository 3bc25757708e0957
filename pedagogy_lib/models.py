"""The real MiniLM, offline, behind one call: ``load_minilm(backend="numpy"|"torch")``.

This module is the façade on top of the model stack: it builds the NumPy encoder from
``pedagogy_lib.bert`` or the torch twin from ``pedagogy_lib.torch_ref.encoder`` (imported only
when asked for, so the NumPy route never imports torch), loads the safetensors weights and
the shipped tokenizer, and returns a model whose ``.encode(list_of_str)`` gives the same
normalised sentence embeddings as sentence-transformers.

``load_decoder(name, backend)`` does the same for chapter 09's pretrained decoders
(``pedagogy_lib/checkpoints/<name>/``): NumPy ``decoder.Decoder`` or the torch twin.
"""
from __future__ import annotations

from pathlib import Path

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


def load_decoder(name: str | None = None, backend: str = "numpy", dtype=None, device=None, folder=None):
    """A pretrained decoder of chapter 09's family (``decoder_io.FAMILY``; default
    ``decoder_io.DEFAULT``), NumPy or torch, offline. ``folder`` loads another checkpoint
    folder in the same layout instead. Everything is checked before anything is built."""
    from .decoder import Decoder
    from .decoder_io import DecoderLM, checkpoint_dir, read_checkpoint

    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    folder = checkpoint_dir(name) if folder is None else folder
    cfg, weights, tok, _ = read_checkpoint(folder)
    label = Path(folder).name
    if backend == "torch":
        # Imported here, not at the top: models.py stays NumPy-only for the NumPy route.
        import torch

        from .torch_ref.decoder import build_decoder

        net = build_decoder(cfg, weights, dtype=dtype or torch.float32, device=device or "cpu").eval()
        return DecoderLM(label, net, tok, backend, folder)
    net = Decoder(cfg, dtype=np.float32 if dtype is None else dtype).load_state_dict(weights)
    return DecoderLM(label, net, tok, backend, folder)
