"""Byte-level BPE for the decoder (chapter 09, §7), trained with the ``tokenizers`` library.

Byte level: every string is first written as UTF-8 bytes, so no text is ever out of
vocabulary and ``decode(encode(s)) == s`` for every ``s``. BPE then merges the most frequent
adjacent pair, again and again, until the vocabulary has ``vocab_size`` entries (Eq. 9.11).
One special token, ``<|endoftext|>`` (id 0), separates texts in the training stream and
starts every prompt.

**Vocabulary size.** ``VOCAB_SIZE = 2048``. ``vocab_table`` (printed in chapter 09) measures
what a larger vocabulary buys on this corpus: going from 2,048 to 4,096 entries shortens the
validation text only a little (fewer than one token in six saved) while doubling the
embedding matrix, which in the ~1M-parameter model would then hold about half of all
parameters. A small training set also argues for a small vocabulary: every token must be
seen often enough to learn its embedding. PEFT acts on the blocks, so the blocks should
dominate the parameter count.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

VOCAB_SIZE = 2048
EOS = "<|endoftext|>"


def train_tokenizer(texts, vocab_size: int = VOCAB_SIZE):
    """A byte-level BPE ``tokenizers.Tokenizer`` trained on ``texts`` (deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 257:
        raise ValueError(f"vocab_size must exceed the 256 bytes + 1 special token, got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts), trainer)
    return tok


def _text(text, where: str) -> str:
    """A str that UTF-8 can write (byte level: every such str has an encoding)."""
    if not isinstance(text, str):
        raise TypeError(f"{where} expects a str, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:   # a lone surrogate such as "\ud800" is no character
        raise ValueError(f"{where}: text is not valid Unicode ({e.reason}: {text[e.start:e.end]!r} "
                         f"at position {e.start})") from None
    return text


class DecoderTokenizer:
    """``encode(text) -> int64 ids`` and ``decode(ids) -> text`` around a ``tokenizer.json``."""

    def __init__(self, tok):
        self.tok = tok
        self.eos_id = tok.token_to_id(EOS)
        if self.eos_id is None:
            raise ValueError(f"tokenizer has no {EOS!r} token: it is not a tokenizer of this book's decoders")
        self.vocab_size = tok.get_vocab_size()

    @classmethod
    def from_file(cls, path) -> "DecoderTokenizer":
        from tokenizers import Tokenizer

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist")
        try:
            return cls(Tokenizer.from_file(str(path)))
        except Exception as e:  # tokenizers raises a bare Exception on a malformed file
            if isinstance(e, ValueError) and "tokenizer" in str(e):
                raise
            raise ValueError(f"{path} is not a tokenizer.json file: {e}") from None

    def encode(self, text: str) -> np.ndarray:
        return np.array(self.tok.encode(_text(text, "encode")).ids, dtype=np.int64)

    def decode(self, ids) -> str:
        ids = np.asarray(ids)
        if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
            raise ValueError(f"decode expects a 1-D array of integer ids, got {ids.dtype} {ids.shape}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.vocab_size}), got [{ids.min()}, {ids.max()}]")
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def stream(self, texts) -> np.ndarray:
        """One training stream: <|endoftext|> before every text (Eq. 9.12)."""
        if isinstance(texts, str):   # a str is an iterable of one-character texts: surely not meant
            raise TypeError("stream expects a list of texts, got one str (wrap it: [text])")
        encs = self.tok.encode_batch([_text(t, "stream") for t in texts])
        out = np.empty(sum(len(e.ids) + 1 for e in encs), np.int64)
        i = 0
        for e in encs:
            out[i] = self.eos_id
            out[i + 1: i + 1 + len(e.ids)] = e.ids
            i += 1 + len(e.ids)
        return out

    def to_str(self) -> str:
        return self.tok.to_str()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_str().encode()).hexdigest()


def vocab_table(train_texts, val_texts, sizes=(1024, 2048, 4096, 8192), hidden=128) -> list[dict]:
    """For each vocabulary size: validation characters per token and the embedding size
    (V·d parameters) at width ``hidden``: what the choice of ``VOCAB_SIZE`` trades."""
    rows, chars = [], sum(len(t) for t in val_texts)
    for v in sizes:
        tok = DecoderTokenizer(train_tokenizer(train_texts, v))
        n = sum(len(e.ids) for e in tok.tok.encode_batch(list(val_texts)))
        rows.append({"vocab_size": v, "chars_per_token": chars / n, "embedding_params": v * hidden})
    return rows


def save_tokenizer(tok: DecoderTokenizer, path) -> None:
    Path(path).write_text(json.dumps(json.loads(tok.to_str()), ensure_ascii=False, indent=1) + "\n")
