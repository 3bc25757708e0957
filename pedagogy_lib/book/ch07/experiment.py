"""Chapter 07 sweep: QLoRA (4-bit base through bitsandbytes' Linear4bit + our LoRA) against
fp32 LoRA, full fine-tuning and linear probes on an fp32 and on a 4-bit base, VADER polarity.

Run:  OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m pedagogy_lib.book.ch07.experiment [--part accuracy]
Writes chapters/results/ch07_accuracy.json (56 runs, about 26 CPU-minutes at one thread,
an hour of wall time on the shared 2-core machine) and, with
``--part memory``, ch07_step_memory.json. Every finished training run is appended to
build/ch07_runs.jsonl; a rerun under the same budget reuses them (an interrupted sweep resumes).

Protocol: chapter 08's (``runner.protocol``, Eqs. 8.1–8.7) on chapter 07's run (``BUDGET``):
the book's one training loop, 1,024 class-balanced training words drawn per seed, 3 epochs,
batch 32, head learning rate 1e-3 (a probe's head trains at its searched rate). The arms
(``ARMS``) are registry records: LoRA r=8, α=16 on every linear layer, the same LoRA on an
NF4 + DQ and on an FP4 + DQ base (``qlora``), full FT, and probes on an fp32 and an NF4 + DQ
base (``probe``). Each arm chooses its own rate by mean validation accuracy over seeds 0 and
1, from a grid extended (at most twice) while its best point sits at an edge (the record
says ``bracketed``); seeds 0–4 then run at that rate and are scored on the whole test split.
Same seeds, same data order and head initialisation for every arm: the chapter compares arms
by paired per-seed differences (``paired``).
"""
from __future__ import annotations

import time
import weakref
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from pedagogy_lib import counting as C
from pedagogy_lib import data, runner
from pedagogy_lib.book.evidence.ch07 import gpu_paged, load, load_gpu, paired  # noqa: F401  (re-exported)
from pedagogy_lib.registry import Arm, arms
from pedagogy_lib.runner import Budget
from pedagogy_lib.torch_ref import qlora as QL
from pedagogy_lib.torch_ref import train as T
from pedagogy_lib import quant as Q
from pedagogy_lib import results as R
from pedagogy_lib.torch_ref import lora as TL

RESULTS = R.RESULTS
OUT = RESULTS / "ch07_accuracy.json"
RUN_LOG = RESULTS.parent.parent / "build" / "ch07_runs.jsonl"  # finished runs, for resuming
N_TRAIN, EPOCHS, BATCH, HEAD_LR = 1024, 3, 32, 1e-3
RANK, ALPHA, TARGETS = 8, 16, QL.TARGETS
# chapter 08's protocol (5 seeds, rates chosen over the first 2, grids extended at most twice
# until bracketed, whole validation and test splits) with chapter 07's run: 1,024 training
# words drawn per seed, 3 epochs, head at 1e-3 (a probe's head at its own searched rate)
BUDGET = Budget(n_train=N_TRAIN, n_eval=None, epochs=EPOCHS, batch_size=BATCH, seeds=(0, 1, 2, 3, 4),
                head_lr=HEAD_LR, resample=True, select_seeds=2, max_extensions=2)
LORA_LRS = (3e-4, 1e-3, 3e-3)  # the first sweep's best (1e-3, seed 0) in the middle
_LORA = {"targets": TARGETS, "r": RANK, "alpha": ALPHA}
ARMS = arms(
    Arm("full FT", "full", note="every weight"),
    Arm("LoRA fp32", "lora", _LORA, LORA_LRS, note="fp32 base, LoRA r=8, α=16 on every linear layer"),
    Arm("QLoRA NF4+DQ", "qlora", _LORA | {"quant_type": "nf4"}, LORA_LRS, note="NF4 + DQ base, the same LoRA"),
    Arm("QLoRA FP4+DQ", "qlora", _LORA | {"quant_type": "fp4"}, LORA_LRS, note="FP4 + DQ base, the same LoRA"),
    Arm("probe fp32", "probe", note="fp32 base frozen, head only"),
    Arm("probe NF4 base", "probe", {"quant_type": "nf4"}, note="NF4 + DQ base frozen, head only"),
)


# ------------------------------------------------- the classifiers of the sweep
def classifier(label: str, seed: int = 0, device=None):
    """Arm ``label``'s classifier (one of ``ARMS``) on a fresh MiniLM, built as every run of
    the sweep builds it (``runner.classifier``: the registry record's attach, then a seeded
    head), and moved to ``device`` (the default device if None; bitsandbytes quantises a
    Linear4bit when it moves). LoRA gets the same A for the same seed in "LoRA fp32" and the
    QLoRA arms, so those differ only in the base weights. Returns (classifier, tokenizer)."""
    if label not in ARMS:
        raise ValueError(f"classifier: label must be one of {list(ARMS)}, got {label!r}")
    clf, mm, _ = runner.classifier(ARMS[label], seed)
    return QL.to_device(clf, device), mm.tokenizer


# ------------------------------------------------------ stored results, studies
GB = 1e9


METHOD_ORDER = ("full FT", "LoRA fp32", "QLoRA NF4+DQ", "QLoRA FP4+DQ", "probe fp32", "probe NF4 base")


# the comparisons the chapter reads, as (a, b): a − b paired by seed
PAIRS = (("QLoRA NF4+DQ", "LoRA fp32"), ("QLoRA FP4+DQ", "QLoRA NF4+DQ"), ("QLoRA NF4+DQ", "full FT"),
         ("LoRA fp32", "full FT"), ("probe NF4 base", "probe fp32"), ("LoRA fp32", "probe fp32"))


def differences(acc: dict, pairs=PAIRS) -> list[dict]:
    """``paired`` for each of ``pairs`` whose two arms the sweep holds."""
    return [paired(acc, a, b) for a, b in pairs if a in acc["results"] and b in acc["results"]]


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
    s = data.subsample(data.polarity_task().train, 32, 0)
    out = {}
    for method, label in (("full", "full FT"), ("lora", "LoRA fp32"), ("qlora", "QLoRA NF4+DQ")):
        clf, tok = classifier(label, device="cpu")
        out[method] = runner.step_memory(clf, T.Batches(tok, s.tokens, s.labels, "cpu").batch(np.arange(32)))
    return out


def llama_memory(tokens: int = 0, r: int = 64) -> dict:
    return {s.name: C.qlora_memory_gb(s, r=r, tokens=tokens)
            for s in (C.LLAMA_7B, C.LLAMA_13B, C.LLAMA_33B, C.LLAMA_65B)}


def paging_scenario(steps: int = 400, seed: int = 0, tokens_median: int = 1024) -> dict:
    """Paging on a 48 GB GPU fine-tuning LLaMA-65B with QLoRA: fixed parts from
    ``qlora_memory_gb``; per-step activation bytes = tokens × L·d·2 B (the checkpointed lower
    bound) × 2 for the layer being recomputed, with a token count per step that is
    log-normal around ``tokens_median`` (a batch of mixed-length sequences; seeded)."""
    m = C.qlora_memory_gb(C.LLAMA_65B)
    tokens = np.random.default_rng(seed).lognormal(np.log(tokens_median), 0.5, steps).round()
    per_token = 2 * C.LLAMA_65B.layers * C.LLAMA_65B.hidden * 2
    act = tokens * per_token
    weights = (m["base 4-bit"] + m["base 16-bit"] + m["LoRA weights"]) * GB
    sim = C.simulate_paging(48 * GB, weights, m["LoRA gradients"] * GB, m["Adam states"] * GB, act)
    return {"tokens": tokens, "activations": act, "weights": weights, "grads": m["LoRA gradients"] * GB,
            "state": m["Adam states"] * GB, "capacity": 48 * GB, "per_token": per_token} | sim


def measured_bits(weights: dict[str, np.ndarray] | None = None) -> dict:
    """Bits per parameter of NF4 and NF4 + DQ, measured from the bytes our NumPy quantiser
    stores for each matrix (Eq. 7.9), summed over the matrices."""
    weights = minilm_weights() if weights is None else weights
    n, nf4, dq = sum(w.size for w in weights.values()), [], []
    for w in weights.values():
        packed, absmax = Q.quantize_nf4(w)
        q, absmax2, offset = Q.double_quantize(absmax)
        nf4 += [packed, absmax]
        dq += [packed, q, absmax2, np.float32(offset)]
    return {"n": n, "matrices": len(weights), "nf4": Q.measured_bits_per_param(n, *nf4),
            "nf4_dq": Q.measured_bits_per_param(n, *dq)}


def _live_dequant_log():
    """A ``DequantLog`` that also counts how many of the weights ``dequantize_4bit`` returned
    are alive at once (weak references: a decoded weight counts until it is freed)."""
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
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.body = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 8))

        def forward(self, ids, mask):
            return self.body(ids)

    net = Net()
    QL.quantize_linears(net.body, "all-linear")
    TL.attach_lora(net.body, "all-linear", r=4, alpha=8, seed=0)
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
def arm_summary(arm: Arm, found: dict) -> dict:
    """What the chapter reads per arm (from ``runner.protocol``'s result): the search (grid,
    mean validation accuracy per rate over the selection seeds, chosen rate, bracketed or
    not), every seed's validation and test accuracy at the chosen rate, and the costs."""
    runs = found["runs"]
    test = [r["test_acc"] for r in runs]
    return {"note": arm.note, **R.selection(found["selection"]), "seeds": [r["seed"] for r in runs],
            "val_acc": [r["val_acc"] for r in runs], "test_acc": test,
            "mean": float(np.mean(test)), "std": float(np.std(test, ddof=1)),
            "trainable": runs[0]["trainable"], "final_loss": [r["final_loss"] for r in runs],
            "cpu_s": [r["cpu_s"] for r in runs], "cpu_s_search": sum(r["cpu_s"] for r in found["trials"]),
            "n_runs": len(R.trained(found))}


def accuracy_sweep(names=None, budget: Budget = BUDGET, log=RUN_LOG, out=OUT) -> dict:
    """Every arm of ``ARMS`` (or ``names``) through ``runner.protocol`` under ``budget``; writes ``out``."""
    torch.set_num_threads(1)
    chosen = [ARMS[n] for n in (names or ARMS)]
    task, t0 = data.polarity_task(), time.process_time()
    done, on_result = runner.run_log(Path(log), budget, chosen)
    found = runner.protocol(chosen, task, budget, done=done, on_result=on_result)
    results = {a.label: arm_summary(a, found[a.label]) for a in chosen}
    for n, r in results.items():
        print(f"{n:16s} lr={r['lr']:g} {'bracketed' if r['bracketed'] else 'UNBRACKETED'} grid={r['lr_grid']} "
              f"test {r['mean']:.4f} ± {r['std']:.4f} (sd)", flush=True)
    res = {"config": {"budget": {k: v for k, v in asdict(budget).items() if k != "latency_rounds"},
                      "r": RANK, "alpha": ALPHA, "targets": TARGETS, "double_quant": True,
                      "n_val": len(task.val), "n_test": len(task.test), "device": "cpu", "threads": 1,
                      "cpu_s_runs": sum(r["cpu_s_search"] + sum(r["cpu_s"][len(r["select_seeds"]):])
                                        for r in results.values()),
                      "cpu_s_process": time.process_time() - t0, "reused_runs": len(done)},
           "versions": R.versions("torch", "numpy", "bitsandbytes"),
           "results": results}
    print(f"wrote {R.save(res, out)}")
    return res


def main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("accuracy", "memory", "all"), default="all")
    ap.add_argument("--arms", nargs="*", default=None, help=f"a subset of {list(ARMS)}")
    args = ap.parse_args(argv)
    unknown = [a for a in args.arms or () if a not in ARMS]
    if unknown:  # before the memory study writes its file
        ap.error(f"unknown arm(s) {unknown}; choose from {list(ARMS)}")
    if args.part in ("memory", "all"):
        print(f"wrote {step_memory_study()}")
    if args.part in ("accuracy", "all"):
        accuracy_sweep(args.arms)


if __name__ == "__main__":
    main()
