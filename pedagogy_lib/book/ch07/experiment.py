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

import copy
import weakref
import platform
import time

import numpy as np
import torch

from pedagogy_lib.results import save
from pedagogy_lib import data
from pedagogy_lib.torch_ref.encoder import load_minilm_torch
from pedagogy_lib.torch_ref import qlora as QL
from pedagogy_lib.torch_ref import train as T
from pedagogy_lib import quant as Q
from pedagogy_lib import results as R
from pedagogy_lib.torch_ref import lora as TL

RESULTS = R.RESULTS
OUT = RESULTS / "ch07_accuracy.json"
N_TRAIN, EPOCHS, BATCH, HEAD_LR, SEEDS = 1024, 3, 32, 1e-3, (0, 1, 2)
RANK, ALPHA, TARGETS = 8, 16, QL.TARGETS
LORA_LRS = (1e-3, 3e-3)
ARMS = {  # name: (make_classifier method, quant_type, body lr or None = LoRA's)
    "full FT": ("full", "nf4", 5e-5),
    "LoRA fp32": ("lora", "nf4", None),
    "QLoRA NF4+DQ": ("qlora", "nf4", None),
    "QLoRA FP4+DQ": ("qlora", "fp4", None),
    "probe fp32": ("probe", "nf4", 1e-2),
    "probe NF4 base": ("qprobe", "nf4", 1e-2),
}


# ------------------------------------------------- the classifiers of the sweep
CLASSIFIERS = ("full", "lora", "qlora", "probe", "qprobe")  # qprobe: 4-bit frozen base + head


def make_classifier(method: str, mm=None, *, targets=QL.TARGETS, r: int = 8, alpha: float = 16,
                    seed: int = 0, device=None, quant_type: str = "nf4", double_quant: bool = True,
                    blocksize: int = 64, compute_dtype: torch.dtype = torch.float32):
    """A ``train.Classifier`` on a fresh copy of MiniLM, set up for ``method``:
    'full' (every weight trains), 'lora' (fp32 base frozen, LoRA on ``targets``), 'qlora'
    (4-bit base, the same LoRA), 'probe' (fp32 base frozen, head only), 'qprobe' (4-bit base
    frozen, head only). LoRA gets the same A for the same seed in 'lora' and 'qlora', so
    the two differ only in the base weights. Returns (classifier, tokenizer)."""
    from pedagogy_lib.torch_ref.encoder import load_minilm_torch

    if method not in CLASSIFIERS:
        raise ValueError(f"make_classifier: method must be one of {CLASSIFIERS}, got {method!r}")
    if mm is None:
        mm = load_minilm_torch(device="cpu")
    net = copy.deepcopy(mm.net).cpu()
    if method in ("qlora", "qprobe"):
        QL.quantize_linears(net.bert, targets, quant_type, double_quant, blocksize, compute_dtype)
    if method in ("lora", "qlora"):
        TL.attach_lora(net.bert, targets, r=r, alpha=alpha, seed=seed)  # before .to(): W is still float
    elif method in ("probe", "qprobe"):
        T.freeze(net)
    clf = T.Classifier(net, seed=seed)
    return QL.to_device(clf, device), mm.tokenizer


# ------------------------------------------------------ stored results, studies
GB = 1e9


METHOD_ORDER = ("full FT", "LoRA fp32", "QLoRA NF4+DQ", "QLoRA FP4+DQ", "probe fp32", "probe NF4 base")


def load(name: str) -> dict:
    return R.load(name, "python -m pedagogy_lib.book.ch07.experiment")


def gaussian_weights(n: int = 2**20, seed: int = 0) -> np.ndarray:
    """n standard-normal float32 weights, shaped (n/1024, 1024), seeded."""
    return np.random.default_rng(seed).standard_normal((n // 1024, 1024)).astype(np.float32)


def minilm_weights() -> dict[str, np.ndarray]:
    """Every weight matrix of MiniLM's linear layers (36), float32, by module path."""
    from pedagogy_lib.lora import linear_paths
    from pedagogy_lib.models import load_minilm
    from pedagogy_lib.nn import get_submodule

    bert = load_minilm("numpy").bert
    return {p: get_submodule(bert, p).p["weight"] for p in linear_paths(bert)}


def fixed_codes(gauss_x: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The data types: NF4, FP4, Int4 and the 16-level Lloyd–Max code fitted to
    absmax-normalised Gaussian blocks (an MSE-optimal type for the Gaussian assumption)."""
    if gauss_x is None:
        gauss_x = Q.absmax_normalize(gaussian_weights())
    return {"NF4": Q.nf4_codebook(), "FP4": Q.fp4_codebook(), "Int4": Q.int4_codebook(),
            "Lloyd–Max (Gaussian)": Q.lloyd_max(gauss_x)}


def quantile_code(x: np.ndarray, levels: int = 16) -> np.ndarray:
    """Quantile quantisation of the data itself: level k at the (k+½)/levels quantile, so
    every level gets about the same share of the values (the maximum-entropy idea NF4
    approximates for a normal distribution)."""
    return np.quantile(x.astype(np.float64), (np.arange(levels) + 0.5) / levels).astype(np.float32)


def code_stats(w: np.ndarray, codes: dict[str, np.ndarray], blocksize: int = 64) -> dict:
    """For blockwise absmax quantisation of w with each code: mse_x, the mean squared error
    of the normalised values x = w/a_b (what the 16 levels are fitted to); mse_w, the error
    in the weights themselves, (a_b·(x − c[q]))²; and the entropy of the codes in bits."""
    if w.size % blocksize:
        raise ValueError(f"w.size {w.size} is not a multiple of the blocksize {blocksize}")
    x = Q.absmax_normalize(w, blocksize)                              # Eq. 7.3
    a2 = np.abs(w.reshape(-1, blocksize)).max(1).astype(np.float64) ** 2  # a_b² (Eq. 7.2)
    out = {}
    for name, code in codes.items():
        q = Q.unpack_nibbles(Q.quantize_4bit(w, code, blocksize)[0], w.size)  # Eq. 7.5, fast path
        err2 = ((x - code[q]).astype(np.float64) ** 2).reshape(-1, blocksize)
        p = np.bincount(q, minlength=len(code)) / q.size
        p = p[p > 0]
        out[name] = {"mse_x": float(err2.mean()), "mse_w": float((err2.mean(1) * a2).mean()),
                     "entropy": float(-(p * np.log2(p)).sum())}
    return out


def error_study(weights: dict[str, np.ndarray] | None = None, gauss: np.ndarray | None = None) -> dict:
    """code_stats of every fixed code and of each matrix's own Lloyd–Max and quantile codes,
    on a Gaussian matrix and on each matrix of ``weights`` (default: MiniLM's 36)."""
    weights = minilm_weights() if weights is None else weights
    gauss = gaussian_weights() if gauss is None else gauss
    codes = fixed_codes(Q.absmax_normalize(gauss))

    def one(w):
        x = Q.absmax_normalize(w)
        own = {"Lloyd–Max (own)": Q.lloyd_max(x), "quantile (own)": quantile_code(x)}
        return code_stats(w, codes | own)

    return {"codes": {k: v.tolist() for k, v in codes.items()}, "gaussian": one(gauss),
            "matrices": {p: one(w) for p, w in weights.items()},
            "sizes": {p: int(w.size) for p, w in weights.items()}}


def ordered(results: dict) -> dict:
    """The sweep's methods in the book's order (the JSON stores them sorted by name)."""
    return {k: results[k] for k in METHOD_ORDER if k in results} | \
        {k: v for k, v in results.items() if k not in METHOD_ORDER}


def _default_step_memory() -> dict:
    from pedagogy_lib import data, runner
    from pedagogy_lib.torch_ref.encoder import load_minilm_torch

    mm = load_minilm_torch(device="cpu")
    s = data.subsample(data.polarity_task().train, 32, 0)
    out = {}
    for method in ("full", "lora", "qlora"):
        clf, tok = make_classifier(method, mm, device="cpu")
        out[method] = runner.step_memory(clf, T.Batches(tok, s.tokens, s.labels, "cpu").batch(np.arange(32)))
    return out


def llama_memory(tokens: int = 0, r: int = 64) -> dict:
    from pedagogy_lib import counting as C
    from pedagogy_lib.counting import qlora_memory_gb

    return {s.name: qlora_memory_gb(s, r=r, tokens=tokens)
            for s in (C.LLAMA_7B, C.LLAMA_13B, C.LLAMA_33B, C.LLAMA_65B)}


def paging_scenario(steps: int = 400, seed: int = 0, tokens_median: int = 1024) -> dict:
    """Paging on a 48 GB GPU fine-tuning LLaMA-65B with QLoRA: fixed parts from
    ``qlora_memory_gb``; per-step activation bytes = tokens × L·d·2 B (the checkpointed lower
    bound) × 2 for the layer being recomputed, with a token count per step that is
    log-normal around ``tokens_median`` (a batch of mixed-length sequences; seeded)."""
    from pedagogy_lib import counting as C
    from pedagogy_lib.counting import qlora_memory_gb, simulate_paging

    m = qlora_memory_gb(C.LLAMA_65B)
    tokens = np.random.default_rng(seed).lognormal(np.log(tokens_median), 0.5, steps).round()
    per_token = 2 * C.LLAMA_65B.layers * C.LLAMA_65B.hidden * 2
    act = tokens * per_token
    weights = (m["base 4-bit"] + m["base 16-bit"] + m["LoRA weights"]) * GB
    sim = simulate_paging(48 * GB, weights, m["LoRA gradients"] * GB, m["Adam states"] * GB, act)
    return {"tokens": tokens, "activations": act, "weights": weights, "grads": m["LoRA gradients"] * GB,
            "state": m["Adam states"] * GB, "capacity": 48 * GB, "per_token": per_token} | sim


def measured_bits(weights: dict[str, np.ndarray] | None = None) -> dict:
    """Bits per parameter of NF4 and NF4 + DQ, measured from the bytes our NumPy quantiser
    stores for each matrix (Eq. 7.9), summed over the matrices."""
    if weights is None:
        weights = minilm_weights()
    n = bytes_nf4 = bytes_dq = 0
    for w in weights.values():
        packed, absmax = Q.quantize_nf4(w)
        q, absmax2, offset = Q.double_quantize(absmax)
        n += w.size
        bytes_nf4 += packed.nbytes + absmax.nbytes
        bytes_dq += packed.nbytes + q.nbytes + absmax2.nbytes + np.float32(offset).nbytes
    return {"n": n, "matrices": len(weights), "nf4": 8 * bytes_nf4 / n, "nf4_dq": 8 * bytes_dq / n}


def _live_dequant_log():
    """A ``DequantLog`` that also counts how many of the weights ``dequantize_4bit`` returned
    are alive at once (weak references: a decoded weight counts until it is freed)."""
    from pedagogy_lib.torch_ref import qlora as QL

    class LiveDequantLog(QL.DequantLog):
        def __init__(self):
            super().__init__()
            self._refs, self.max_alive = [], 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = super().__torch_dispatch__(func, types, args, kwargs)
            if str(func).startswith("bitsandbytes.dequantize_4bit"):
                self._refs = [r for r in self._refs if r() is not None]
                try:
                    self._refs.append(weakref.ref(out))
                except TypeError:  # not weak-referenceable: count it as alive for good
                    self._refs.append(lambda out=out: out)
                self.max_alive = max(self.max_alive, len(self._refs))
            return out

    return LiveDequantLog()


def backward_check(model, batch) -> dict:
    """One forward/backward of a QLoRA model on ``batch`` = (ids, mask, labels), against the
    same model with every Linear4bit replaced by our NumPy dequantisation (Eqs. 7.10-7.11):
    the largest relative difference of the LoRA gradients, whether the 4-bit weights got a
    gradient, every bitsandbytes op the step ran (``DequantLog``), and the largest number of
    dequantised full weights alive at the same time (``max_alive``)."""
    import torch

    from pedagogy_lib.torch_ref import qlora as QL

    ref = QL.dequantized_copy(model)
    ids, mask, y = batch
    grads, calls, max_alive = [], None, None
    for m in (model, ref):
        m.zero_grad(set_to_none=True)
        with (_live_dequant_log() if calls is None else QL.DequantLog()) as log:
            torch.nn.functional.cross_entropy(m(ids, mask), y).backward()
        if calls is None:
            calls, max_alive = log.calls, log.max_alive
        grads.append({n: p.grad.detach().clone() for n, p in m.named_parameters() if p.requires_grad})
    rel = max(float((grads[0][n] - grads[1][n]).norm() / grads[1][n].norm().clamp_min(1e-30))
              for n in grads[1])
    four = QL.quantized_layers(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.zero_grad(set_to_none=True)
    deq = [c for c in calls if c["op"] == "dequantize_4bit"]
    return {"grad_rel_diff": rel, "n_grads": len(grads[0]), "layers": len(four),
            "base_has_grad": any(m.weight.grad is not None for m in four.values()),
            "dequantized": len(deq), "largest_bytes": max((c["bytes"] for c in deq), default=0),
            "max_alive": max_alive,
            "dtype": deq[0]["dtype"] if deq else None,
            "adapter_dtype": str(trainable[0].dtype).replace("torch.", "") if trainable else None,
            "device": trainable[0].device.type if trainable else None,
            "forward_gemm": sum(c["op"] == "gemm_4bit" for c in calls),
            "base_fp_bytes": sum(m.in_features * m.out_features for m in four.values()) * 4}


def _small_backward() -> dict:
    """backward_check on a small random 4-bit model with LoRA (when no QLoRA model is given)."""
    import torch
    from torch import nn

    from pedagogy_lib.torch_ref import qlora as QL
    from pedagogy_lib.torch_ref.lora import attach_lora

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.body = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 8))

        def forward(self, ids, mask):
            return self.body(ids)

    net = Net()
    QL.quantize_linears(net.body, "all-linear")
    attach_lora(net.body, "all-linear", r=4, alpha=8, seed=0)
    QL.to_device(net, "cpu")
    for m in net.modules():  # start B away from zero so that A gets a gradient too
        if hasattr(m, "lora_B"):
            torch.nn.init.normal_(m.lora_B, std=0.1, generator=torch.Generator().manual_seed(1))
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(2))
    return backward_check(net, (x, None, torch.arange(8) % 2))


MEMORY_OUT = R.RESULTS / "ch07_step_memory.json"


def step_memory_study():
    """``runner.step_memory`` of one training step of full FT, LoRA and QLoRA (the bytes are
    exact counts), stored for "07_memory_minilm"."""
    return R.save(_default_step_memory(), MEMORY_OUT)


# ------------------------------------------------------------------ the sweep
def run(mm, task, name, lr, seed, split):
    method, qtype, _ = ARMS[name]
    tr = data.subsample(task.train, N_TRAIN, seed)
    model, tok = make_classifier(method, mm, r=RANK, alpha=ALPHA, seed=seed, quant_type=qtype,
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


def main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("accuracy", "memory", "all"), default="all")
    part = ap.parse_args(argv).part
    if part in ("memory", "all"):
        print(f"wrote {step_memory_study()}")
    if part in ("accuracy", "all"):
        accuracy_sweep()


def accuracy_sweep():
    torch.set_num_threads(1)
    task = data.polarity_task()
    mm = load_minilm_torch(device="cpu")
    lr_search = {lr: run(mm, task, "LoRA fp32", lr, 0, "val")["acc"] for lr in LORA_LRS}
    lora_lr = max(LORA_LRS, key=lambda lr: (lr_search[lr], -lr))
    print(f"LoRA learning rate by val accuracy: {lr_search} -> {lora_lr}", flush=True)
    results = {}
    for name, (_, _, lr) in ARMS.items():
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
