"""Chapter 07 sweep: QLoRA (4-bit base through bitsandbytes' Linear4bit + our LoRA) against
fp32 LoRA, full fine-tuning and linear probes on an fp32 and on a 4-bit base, VADER polarity.

Run:  OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m pedagogy_lib.book.ch07.experiment
Writes chapters/results/ch07_accuracy.json (about 10 CPU-minutes at one thread).

Protocol: the book's one training loop (torch_ref.train), N_TRAIN class-balanced training
words per seed (drawn with that seed), EPOCHS epochs, batch 32, scored on the whole test
split. LoRA and both QLoRA variants share every hyperparameter (r, α, targets, learning
rate); LoRA's learning rate is chosen from LORA_LRS by validation accuracy at seed 0 and
then reused for QLoRA, as the QLoRA paper reuses 16-bit hyperparameters. Full FT uses the
rate chapter 06's sweep selected for it; the probes chapter 06's probe rate.
"""
from __future__ import annotations

import pathlib
import platform
import sys
import time

import numpy as np
import torch

from pedagogy_lib.results import save
from pedagogy_lib import data
from pedagogy_lib.models import load_minilm
from pedagogy_lib.torch_ref import qlora as QL
from pedagogy_lib.torch_ref import train as T
from pedagogy_lib import results as R

OUT = R.RESULTS / "ch07_accuracy.json"
N_TRAIN, EPOCHS, BATCH, HEAD_LR, SEEDS = 1024, 3, 32, 1e-3, (0, 1, 2)
R, ALPHA, TARGETS = 8, 16, QL.TARGETS
LORA_LRS = (1e-3, 3e-3)
METHODS = {  # name: (make_classifier method, quant_type, body lr or None = LoRA's)
    "full FT": ("full", "nf4", 5e-5),
    "LoRA fp32": ("lora", "nf4", None),
    "QLoRA NF4+DQ": ("qlora", "nf4", None),
    "QLoRA FP4+DQ": ("qlora", "fp4", None),
    "probe fp32": ("probe", "nf4", 1e-2),
    "probe NF4 base": ("qprobe", "nf4", 1e-2),
}


def run(mm, task, name, lr, seed, split):
    method, qtype, _ = METHODS[name]
    tr = data.subsample(task.train, N_TRAIN, seed)
    model, tok = QL.make_classifier(method, mm, r=R, alpha=ALPHA, seed=seed, quant_type=qtype,
                                    device="cpu")
    train = T.Batches(tok, tr.tokens, tr.labels, "cpu")
    head_lr = lr if method in ("probe", "qprobe") else HEAD_LR
    cfg = T.TrainConfig(lr=lr, epochs=EPOCHS, batch_size=BATCH, head_lr=head_lr, seed=seed)
    t0 = time.process_time()
    hist = T.train_classifier(model, train, None, cfg)
    ev = getattr(task, split)
    acc = T.accuracy(model, T.Batches(tok, ev.tokens, ev.labels, "cpu"))
    return {"acc": acc, "trainable": T.count_trainable(model), "steps": hist.steps,
            "final_loss": float(np.mean(hist.losses[-10:])), "cpu_s": time.process_time() - t0}


def main():
    torch.set_num_threads(1)
    task = data.polarity_task()
    mm = load_minilm("torch", device="cpu")
    lr_search = {lr: run(mm, task, "LoRA fp32", lr, 0, "val")["acc"] for lr in LORA_LRS}
    lora_lr = max(LORA_LRS, key=lambda lr: (lr_search[lr], -lr))
    print(f"LoRA learning rate by val accuracy: {lr_search} -> {lora_lr}", flush=True)
    results = {}
    for name, (_, _, lr) in METHODS.items():
        lr = lora_lr if lr is None else lr
        runs = [run(mm, task, name, lr, s, "test") for s in SEEDS]
        acc = np.array([r["acc"] for r in runs])
        results[name] = {"lr": lr, "trainable": runs[0]["trainable"], "acc": acc.tolist(),
                         "mean": float(acc.mean()), "std": float(acc.std(ddof=1)),
                         "cpu_s": [r["cpu_s"] for r in runs], "steps": runs[0]["steps"],
                         "final_loss": [r["final_loss"] for r in runs]}
        print(f"{name:16s} lr={lr:g}  acc {acc.mean():.3f} ± {acc.std(ddof=1):.3f}  "
              f"cpu {np.mean(results[name]['cpu_s']):.1f} s/run", flush=True)
    import bitsandbytes
    out = {"config": {"n_train": N_TRAIN, "epochs": EPOCHS, "batch_size": BATCH, "head_lr": HEAD_LR,
                      "seeds": list(SEEDS), "r": R, "alpha": ALPHA, "targets": TARGETS,
                      "lora_lr_search": {str(k): v for k, v in lr_search.items()}, "lora_lr": lora_lr,
                      "n_val": len(task.val), "n_test": len(task.test), "device": "cpu",
                      "threads": torch.get_num_threads()},
           "versions": {"python": platform.python_version(), "torch": torch.__version__,
                        "numpy": np.__version__, "bitsandbytes": bitsandbytes.__version__},
           "results": results}
    print(f"wrote {save(out, OUT)}")


if __name__ == "__main__":
    main()
