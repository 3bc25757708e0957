"""Chapter 09's computations: what the chapter shows beside the library (pre-LN against
post-LN, the pretraining logs, the count-model baselines, parameters and memory per token)."""
from __future__ import annotations

import json

import numpy as np

from pedagogy_lib import bpe, corpus, counting, decoder as D, decoder_io as IO
from pedagogy_lib.bert import BertConfig, BertLayer


def residual_profile(depth: int = 12, d: int = 64, T: int = 16, seed: int = 0) -> dict:
    """Post-LN (chapter 00's BERT block) against pre-LN (ours) on one random input, every
    matrix drawn with the same unit gain (std 1/√d_in, biases 0): RMS of the hidden state after
    each block, and the norm of the gradient that reaches each block's input from a random
    loss on the last output."""
    rng = np.random.default_rng(seed)
    bcfg = BertConfig(hidden_size=d, num_attention_heads=4, intermediate_size=4 * d)
    dcfg = D.DecoderConfig(vocab_size=8, hidden_size=d, intermediate_size=4 * d, num_attention_heads=4,
                           num_key_value_heads=4, num_hidden_layers=depth)
    post = [BertLayer(bcfg, rng, np.float64) for _ in range(depth)]
    pre = [D.DecoderLayer(dcfg, rng, np.float64, 1.0, 1.0) for _ in range(depth)]
    for block in post + pre:
        for name, p in block.named_parameters():
            if p.ndim == 2:
                p[...] = rng.standard_normal(p.shape) / np.sqrt(p.shape[1])
            elif name.endswith("bias"):
                p[...] = 0.0
    x, r = rng.standard_normal((1, T, d)), rng.standard_normal((1, T, d))
    mask = np.ones((1, T), bool)
    out = {}
    for name, blocks, call in (("post-LN", post, lambda b, h: b(h, mask)), ("pre-LN", pre, lambda b, h: b(h))):
        h, rms = x, []
        for b in blocks:
            h = call(b, h)
            rms.append(float(np.sqrt((h * h).mean())))
        g, grad = r, []
        for b in reversed(blocks):
            g = b.backward(g)
            grad.append(float(np.linalg.norm(g)))
        out[name] = {"rms": rms, "grad_in": grad[::-1]}
    return out


def logs() -> dict:
    """The stored training log of every member of the family that has a checkpoint."""
    return {n: json.loads((IO.checkpoint_dir(n) / "training_log.json").read_text()) for n in IO.available()}


def baselines(split: str = "val") -> dict:
    """Unigram and bigram cross-entropy on ``split`` (Eq. 9.13), fitted on the train split
    with the shipped tokenizer."""
    tok = bpe.DecoderTokenizer.from_file(IO.checkpoint_dir() / "tokenizer.json")
    c = corpus.load_corpus()
    return corpus.ngram_losses(tok.stream(c.texts("train")), tok.stream(c.texts(split)), tok.vocab_size)


def memory_rows() -> list[dict]:
    """Parameters, fp32 weight bytes and KV-cache bytes per token (Eq. 9.15) for our family,
    beside LLaMA-7B and -65B at 16-bit (their published shapes, chapter 00's counting)."""
    rows = []
    for name, cfg in IO.FAMILY.items():
        n = sum(int(np.prod(s)) for s in IO.expected_shapes(cfg).values())
        kv = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * 4
        rows.append({"model": name, "params": n, "weights_MB": n * 4 / 2 ** 20, "kv_bytes_per_token": kv,
                     "bytes": 4})
    for shape in (counting.LLAMA_7B, counting.LLAMA_65B):
        n = counting.total_params(shape)
        rows.append({"model": shape.name, "params": n, "weights_MB": n * 2 / 2 ** 20,
                     "kv_bytes_per_token": 2 * shape.layers * shape.hidden * 2, "bytes": 2})
    return rows
