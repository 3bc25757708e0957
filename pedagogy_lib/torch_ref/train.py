"""One training loop for every method in the book (torch, CPU or CUDA).

A method only decides *which* parameters are trainable (and which modules it inserted);
this loop does the rest identically: a linear head on the mean-pooled embedding, seeded
shuffling, AdamW, cross-entropy, accuracy on a held-out split. Keeping the loop shared is
what makes the comparisons of chapter 08 fair.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .. import checks


@dataclass
class TrainConfig:
    lr: float = 1e-3
    epochs: int = 2
    batch_size: int = 32
    weight_decay: float = 0.0
    seed: int = 0
    schedule: str = "linear"        # "constant" | "linear" (decay to 0) | "cosine"
    warmup: float = 0.06            # fraction of steps with linear warm-up
    head_lr: float | None = None    # learning rate of the classification head (default: lr)
    progress: bool = False          # tqdm bar on stderr

    def __post_init__(self):
        """Rates finite and > 0 (head_lr = 0 would silently mean lr), whole positive epochs and
        batches, warm-up a fraction in [0, 1], weight decay >= 0, a seed >= 0."""
        checks.finite_real(self.lr, "TrainConfig.lr", positive=True)
        if self.head_lr is not None:
            checks.finite_real(self.head_lr, "TrainConfig.head_lr", positive=True)
        checks.positive_int(self.epochs, "TrainConfig.epochs")
        checks.positive_int(self.batch_size, "TrainConfig.batch_size")
        checks.seed(self.seed, "TrainConfig.seed")
        if not 0.0 <= checks.finite_real(self.warmup, "TrainConfig.warmup") <= 1.0:
            raise ValueError(f"TrainConfig.warmup is a fraction of the steps in [0, 1], got {self.warmup}")
        if checks.finite_real(self.weight_decay, "TrainConfig.weight_decay") < 0:
            raise ValueError(f"TrainConfig.weight_decay must be >= 0, got {self.weight_decay}")
        if self.schedule not in ("constant", "linear", "cosine"):
            raise ValueError(f"unknown schedule {self.schedule!r}")


@dataclass
class History:
    losses: list = field(default_factory=list)      # per step
    val_acc: list = field(default_factory=list)     # per epoch
    seconds: float = 0.0
    steps: int = 0


class Classifier(nn.Module):
    """logits = W_c · meanpool(encoder(x)) + b_c."""

    def __init__(self, sentence_encoder: nn.Module, n_classes: int = 2, seed: int = 0):
        super().__init__()
        self.encoder = sentence_encoder
        d = sentence_encoder.bert.config.hidden_size
        gen = torch.Generator().manual_seed(seed)
        self.head = nn.Linear(d, n_classes)
        with torch.no_grad():  # seeded init, independent of the global RNG
            bound = 1 / math.sqrt(d)
            self.head.weight.copy_(torch.empty(n_classes, d).uniform_(-bound, bound, generator=gen))
            self.head.bias.zero_()
        p = next(sentence_encoder.parameters())
        self.head.to(device=p.device, dtype=p.dtype)

    def forward(self, ids, mask):
        return self.head(self.encoder(ids, mask))


def freeze(module: nn.Module):
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def count_trainable(module: nn.Module, exclude: str | None = "head.") -> int:
    """Trainable parameters, by default without the task head (which every method needs)."""
    return sum(p.numel() for n, p in module.named_parameters()
               if p.requires_grad and not (exclude and n.startswith(exclude)))


class Batches:
    """Pre-tokenised split, served as padded batches (padding only to the batch's longest)."""

    def __init__(self, tokenizer, tokens, labels, device):
        if isinstance(tokens, str):  # list("ab") would be two texts, "a" and "b"
            raise TypeError("tokens must be a sequence of texts, got one str")
        if len(tokens) != len(labels):
            raise ValueError(f"{len(tokens)} texts but {len(labels)} labels")
        y = np.asarray(labels)
        if y.ndim != 1 or (y.size and (y.dtype.kind not in "iu" or y.min() < 0)):
            # np.asarray([0.5, 1.7], np.int64) would silently truncate to [0, 1]
            raise ValueError(f"labels must be a 1-D sequence of class indices (ints >= 0), "
                             f"got dtype {y.dtype}, shape {y.shape}")
        ids, mask = tokenizer(list(tokens))
        self.ids, self.mask = ids, mask
        self.len = mask.sum(1)
        self.labels = y.astype(np.int64)
        self.device = device

    def __len__(self):
        return len(self.labels)

    def batch(self, idx):
        T = int(self.len[idx].max())
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a[idx, :T])).to(self.device)  # noqa: E731
        return t(self.ids), t(self.mask), torch.from_numpy(self.labels[idx]).to(self.device)

    def epoch(self, batch_size, gen: np.random.Generator | None):
        order = np.arange(len(self)) if gen is None else gen.permutation(len(self))
        for i in range(0, len(order), batch_size):
            yield self.batch(order[i:i + batch_size])


def _lr_factor(cfg: TrainConfig, step: int, total: int) -> float:
    """Multiplier of the base learning rate at ``step``: linear warm-up, then decay (Eq. 0.26)."""
    warm = max(1, int(cfg.warmup * total))
    if step < warm:
        return (step + 1) / warm
    frac = (step - warm) / max(1, total - warm)
    if cfg.schedule == "linear":
        return max(0.0, 1.0 - frac)
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * frac))
    return 1.0


@torch.no_grad()
def accuracy(model: nn.Module, data: Batches, batch_size: int = 256) -> float:
    was = model.training
    model.eval()
    correct = 0
    for ids, mask, y in data.epoch(batch_size, None):
        correct += int((model(ids, mask).argmax(1) == y).sum())
    model.train(was)
    return correct / len(data)


def train_classifier(model: nn.Module, train: Batches, val: Batches | None = None,
                     cfg: TrainConfig | None = None) -> History:
    """AdamW on every parameter with requires_grad; returns the loss curve and val accuracy."""
    cfg = cfg or TrainConfig()
    classes = getattr(getattr(model, "head", None), "out_features", None)
    for name, data in (("train", train), ("val", val)):   # before any step changes the model
        if classes is not None and data is not None and len(data) and int(data.labels.max()) >= classes:
            raise ValueError(f"{name} labels reach {int(data.labels.max())}, but the head has {classes} "
                             f"classes (labels must lie in [0, {classes}))")
    torch.manual_seed(cfg.seed)
    gen = np.random.default_rng(cfg.seed)
    head = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("head.")]
    body = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head.")]
    groups = [{"params": body, "lr": cfg.lr}] if body else []
    groups.append({"params": head, "lr": cfg.head_lr or cfg.lr})
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    base = [g["lr"] for g in opt.param_groups]
    total = cfg.epochs * math.ceil(len(train) / cfg.batch_size)
    hist, t0 = History(), time.perf_counter()
    bar = tqdm(total=total, disable=not cfg.progress, file=sys.stderr, leave=False)
    model.train()
    for _ in range(cfg.epochs):
        for ids, mask, y in train.epoch(cfg.batch_size, gen):
            for g, lr in zip(opt.param_groups, base):
                g["lr"] = lr * _lr_factor(cfg, hist.steps, total)
            loss = nn.functional.cross_entropy(model(ids, mask), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            hist.losses.append(loss.item())
            hist.steps += 1
            bar.update()
        if val is not None:
            hist.val_acc.append(accuracy(model, val))
    bar.close()
    hist.seconds = time.perf_counter() - t0
    return hist
