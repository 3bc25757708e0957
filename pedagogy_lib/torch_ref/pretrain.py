"""Pretraining the decoder family on the stdlib corpus (``make pretrain``, chapter 09 §8).

Deterministic end to end: the corpus and the BPE are deterministic for a given Python, the
weights start from the NumPy reference's seeded initialisation, batches come from a seeded
NumPy generator, and torch runs on one thread (a different thread count may sum in another
order). ``tests/test_pretrain.py`` re-runs the first steps and compares the losses with the
stored log exactly.

``python -m pedagogy_lib.torch_ref.pretrain`` trains every member of the family (one
process each, in parallel) and writes ``pedagogy_lib/checkpoints/<name>/``.
"""
from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm import tqdm

from .. import bpe, checks, corpus, decoder_io
from ..decoder import Decoder
from .decoder import build_decoder, next_token_loss


@dataclass(frozen=True)
class PretrainConfig:
    steps: int
    lr: float
    batch_size: int = 16
    seq_len: int = 128
    warmup: int = 50
    final_lr_fraction: float = 0.1
    weight_decay: float = 0.1
    betas: tuple = (0.9, 0.95)
    grad_clip: float = 1.0
    seed: int = 0
    eval_every: int = 100

    def __post_init__(self):
        for name in ("steps", "batch_size", "seq_len", "eval_every"):
            checks.positive_int(getattr(self, name), name)
        checks.nonneg_int(self.warmup, "warmup")  # warmup > steps: a run that ends while warming up
        checks.finite_real(self.lr, "lr", positive=True)
        if not 0 <= checks.finite_real(self.final_lr_fraction, "final_lr_fraction") <= 1:
            raise ValueError(f"final_lr_fraction must lie in [0, 1], got {self.final_lr_fraction}")
        checks.seed(self.seed)


# Steps sized so that each member trains in 10–15 CPU-minutes on one core (README: measured 11 and 14.5).
SETTINGS = {"stdlib-1m": PretrainConfig(steps=1800, lr=3e-3), "stdlib-4m": PretrainConfig(steps=800, lr=2e-3)}


def lr_at(pc: PretrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to ``final_lr_fraction`` of the peak."""
    if checks.nonneg_int(step, "step") < pc.warmup:  # a step −2 would give a negative rate
        return pc.lr * (step + 1) / pc.warmup
    frac = min(1.0, (step - pc.warmup) / max(1, pc.steps - pc.warmup))  # past pc.steps: stay at the floor
    return pc.lr * (pc.final_lr_fraction + (1 - pc.final_lr_fraction) * 0.5 * (1 + math.cos(math.pi * frac)))


def batches(stream: np.ndarray, pc: PretrainConfig):
    """Endless (B, T+1) blocks: each epoch cuts the stream at a random offset into
    non-overlapping blocks and serves them in a random order (Eq. 9.12)."""
    gen, n = np.random.default_rng(pc.seed), pc.seq_len + 1
    if len(stream) // n < pc.batch_size:   # no epoch could fill a batch: the loop would never yield
        raise ValueError(f"a stream of {len(stream)} tokens holds fewer than batch_size={pc.batch_size} "
                         f"blocks of seq_len + 1 = {n}")
    while True:
        off = int(gen.integers(n))
        blocks = stream[off: off + (len(stream) - off) // n * n].reshape(-1, n)
        order = gen.permutation(len(blocks))
        for i in range(0, len(order) - pc.batch_size + 1, pc.batch_size):
            yield blocks[order[i:i + pc.batch_size]]


def blocks_of(stream: np.ndarray, seq_len: int) -> np.ndarray:
    n = seq_len + 1
    return stream[: len(stream) // n * n].reshape(-1, n)


@torch.no_grad()
def mean_loss(model, stream: np.ndarray, seq_len: int, batch_size: int = 64) -> float:
    """Mean next-token loss (nats) over all non-overlapping blocks of a stream."""
    blocks, total, count = blocks_of(stream, seq_len), 0.0, 0
    if not len(blocks):
        raise ValueError(f"a stream of {len(stream)} tokens holds no block of seq_len + 1 = {seq_len + 1}")
    for i in range(0, len(blocks), batch_size):
        ids = torch.from_numpy(blocks[i:i + batch_size])
        n = ids.shape[0] * (ids.shape[1] - 1)     # targets in this batch
        total, count = total + next_token_loss(model(ids), ids).item() * n, count + n
    return total / count


def prepare(vocab_size: int = bpe.VOCAB_SIZE):
    """(corpus, tokenizer, {split: token stream}) — everything pretraining reads."""
    c = corpus.load_corpus()
    tok = bpe.DecoderTokenizer(bpe.train_tokenizer(c.texts("train"), vocab_size))
    return c, tok, {s: tok.stream(c.texts(s)) for s in corpus.SPLITS}


def _optimizer(model, pc: PretrainConfig):
    decay = [p for n, p in model.named_parameters() if p.ndim == 2]      # matrices decay,
    other = [p for n, p in model.named_parameters() if p.ndim != 2]      # norm gains do not
    return torch.optim.AdamW([{"params": decay, "weight_decay": pc.weight_decay},
                              {"params": other, "weight_decay": 0.0}], lr=pc.lr, betas=pc.betas)


def pretrain(name: str, streams: dict, pc: PretrainConfig | None = None, stop_after: int | None = None,
             progress: bool = False):
    """Train family member ``name``; returns (model, log). ``stop_after`` ends early (tests)."""
    torch.set_num_threads(1)
    pc = pc or SETTINGS[name]
    cfg = decoder_io.FAMILY[name]
    model = build_decoder(cfg, Decoder(cfg, seed=pc.seed).state_dict())
    opt = _optimizer(model, pc)
    log = {"name": name, "settings": asdict(pc), "params": sum(p.numel() for p in model.parameters()),
           "loss": [], "eval": [], "torch": torch.__version__}
    steps = pc.steps if stop_after is None else min(stop_after, pc.steps)
    bar = tqdm(total=steps, desc=name, disable=not progress, file=sys.stderr, mininterval=2,
               position=sorted(SETTINGS).index(name) if name in SETTINGS else 0)
    t0 = time.perf_counter()
    for step, block in zip(range(steps), batches(streams["train"], pc)):
        for g in opt.param_groups:
            g["lr"] = lr_at(pc, step)
        ids = torch.from_numpy(block)
        loss = next_token_loss(model(ids), ids)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), pc.grad_clip)
        opt.step()
        log["loss"].append(loss.item())
        if (step + 1) % pc.eval_every == 0 or step + 1 == pc.steps:
            log["eval"].append({"step": step + 1, "val": mean_loss(model, streams["val"], pc.seq_len)})
            bar.set_postfix(loss=f"{loss.item():.3f}", val=f"{log['eval'][-1]['val']:.3f}")
        bar.update()
    bar.close()
    log["seconds"] = time.perf_counter() - t0
    log["tokens_per_second"] = steps * pc.batch_size * pc.seq_len / log["seconds"]
    return model, log


def _member(args):
    name, streams, meta, tok_str = args
    from tokenizers import Tokenizer

    model, log = pretrain(name, streams, progress=True)
    pc = SETTINGS[name]
    log["final"] = {s: mean_loss(model, streams[s], pc.seq_len) for s in ("val", "test", "heldout")}
    log["perplexity"] = {s: math.exp(v) for s, v in log["final"].items()}
    log.update(meta)
    weights = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    tok = bpe.DecoderTokenizer(Tokenizer.from_str(tok_str))
    decoder_io.write_checkpoint(decoder_io.CHECKPOINTS / name, model.config, weights, tok, log,
                                meta["corpus"]["sha256"], meta["corpus"]["python"])
    return name, log["seconds"], log["perplexity"]["val"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", default=sorted(SETTINGS), help="family members to train")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    c, tok, streams = prepare()
    meta = {"corpus": {"sha256": c.sha256, "python": c.python, "stats": c.stats(),
                       "duplicates": c.duplicates, "skipped": c.skipped},
            "tokenizer_sha256": tok.sha256, "tokens": {s: int(len(v)) for s, v in streams.items()}}
    print(f"corpus {c.sha256[:12]} (Python {c.python}); train stream {len(streams['train']):,} tokens",
          file=sys.stderr)
    jobs = [(n, streams, meta, tok.to_str()) for n in args.only]
    with mp.get_context("spawn").Pool(len(jobs)) as pool:
        for name, secs, ppl in pool.imap_unordered(_member, jobs):
            print(f"{name}: {secs / 60:.1f} min of training, validation perplexity {ppl:.2f}", file=sys.stderr)
    print(f"make pretrain: {(time.perf_counter() - t0) / 60:.1f} min in total", file=sys.stderr)


if __name__ == "__main__":
    main()
