"""The real MiniLM, offline, in our NumPy encoder: ``load_minilm()``.

It builds the NumPy encoder from ``pedagogy_lib.bert``, loads the safetensors weights and the
shipped tokenizer, and returns a model whose ``.encode(list_of_str)`` gives the same
normalised sentence embeddings as sentence-transformers. NumPy only: the torch twin is
``pedagogy_lib.torch_ref.encoder.load_minilm_torch`` (a layer above; nothing here imports torch).

``load_decoder(name, backend)`` loads chapter 09's pretrained decoders
(``pedagogy_lib/checkpoints/<name>/``): NumPy ``decoder.Decoder``, or with ``backend="torch"``
the torch twin, imported only inside that call (the one deliberate lazy import upward;
``tests/test_layers.py`` lists it).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .bert import BertConfig, BertEncoder, SentenceEncoder
from .checkpoint import MiniLM, Tokenizer, encoder_weights, load_config

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
