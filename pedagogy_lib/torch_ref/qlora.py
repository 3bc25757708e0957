"""Chapter 07: QLoRA on the real MiniLM through bitsandbytes' own 4-bit path.

The frozen base: every targeted ``nn.Linear`` becomes a bitsandbytes ``Linear4bit`` (NF4,
double quantisation, blocks of 64; Eqs. 7.1-7.9 of ``pedagogy_lib.quant``). The trainable
part: our LoRA (``torch_ref.lora``) on top, trained by the book's one loop
(``torch_ref.train``). Quantisation happens when the model is moved with ``.to(device)``
(CUDA when present, else CPU), so LoRA is attached *before* that move, while the base weight
is still floating point and ``LoRALinear`` can size and type its factors from it.

Then we read back what bitsandbytes stored (packed codes, 8-bit absmax codes, nested absmax,
offset) and check that our NumPy ``double_dequantize`` + ``dequantize_nf4`` of those bytes
equals the weight bitsandbytes multiplies with. Memory is accounted tensor by tensor (CPU:
``tracemalloc`` does not see torch's allocator) or with ``torch.cuda.max_memory_allocated``.
Paged optimisers are simulated in NumPy (``simulate_paging``) where CUDA is absent.

Equations (chapter 07):
  Eq. 7.10  y = dequant(W_q) x + b + s·B A x     the QLoRA layer: a 4-bit base, LoRA in fp
  Eq. 7.11  ∂L/∂x = dequant(W_q)ᵀ ∂L/∂y + s·Aᵀ Bᵀ ∂L/∂y,  no ∂L/∂W_q (the base is frozen)
  Eq. 7.12  peak ≈ weights + gradients + optimiser state + saved activations + one
            dequantised weight (the upper bound our accounting reports)
"""
from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from .. import quant
from ..lora import match_targets
from .lora import attach_lora

TARGETS = "all-linear"  # every Linear of the encoder: q, k, v, attention output, FFN in/out
QUANT_TYPES = ("nf4", "fp4")
COMPUTE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
METHODS = ("full", "lora", "qlora", "probe", "qprobe")  # qprobe: 4-bit frozen base + head


from pedagogy_lib import _DropKernelsNotice  # noqa: E402  (defined at package import, see there)


def bnb():
    """Import bitsandbytes without its CPU ``kernels`` notice; returns the module."""
    log = logging.getLogger("bitsandbytes.backends.cpu.ops")
    if not any(isinstance(f, _DropKernelsNotice) for f in log.filters):
        log.addFilter(_DropKernelsNotice())
    import bitsandbytes
    import bitsandbytes.functional  # noqa: F401  (bnb.functional used below)

    return bitsandbytes


def _linear4bit():
    return bnb().nn.Linear4bit


# ----------------------------------------------------------------------------- building

def _check_quant_args(quant_type, blocksize, compute_dtype):
    if quant_type not in QUANT_TYPES:
        raise ValueError(f"quant_type must be one of {QUANT_TYPES}, got {quant_type!r}")
    if isinstance(blocksize, bool) or blocksize not in quant.BLOCKSIZES:
        raise ValueError(f"blocksize must be one of {quant.BLOCKSIZES}, got {blocksize!r}")
    if compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"compute_dtype must be one of {COMPUTE_DTYPES}, got {compute_dtype!r}")


def quantize_linears(model: nn.Module, targets=TARGETS, quant_type: str = "nf4",
                     double_quant: bool = True, blocksize: int = 64,
                     compute_dtype: torch.dtype = torch.float32) -> list[str]:
    """Replace every targeted plain ``nn.Linear`` of ``model`` by a bitsandbytes
    ``Linear4bit`` holding the same weight and bias, not yet quantised (that happens on
    ``model.to(device)``, see ``to_device``). Returns the replaced paths.

    ``support_avx512bf16_for_cpu`` is switched off on each new layer: on CPUs with
    AVX512-BF16, bnb would otherwise repack the weight for an inference-only kernel at the
    first eval-mode forward, after which any training step fails (chapter 07, appendix B).
    """
    _check_quant_args(quant_type, blocksize, compute_dtype)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    Linear4bit, Params4bit = _linear4bit(), bnb().nn.Params4bit
    modules = dict(model.named_modules())
    done = [p for p in match_targets([p for p in modules if p], targets)
            if isinstance(modules[p], Linear4bit)]
    if done:
        raise ValueError(f"quantize_linears: {done[:3]} are already Linear4bit")
    plain = {p: m for p, m in modules.items() if p and type(m) is nn.Linear}
    chosen = match_targets(plain, targets)
    bad = [p for p in chosen if not plain[p].weight.is_floating_point()]
    if bad:
        raise TypeError(f"quantize_linears: {bad[:3]} do not hold floating-point weights")
    for path in chosen:
        lin = plain[path]
        q = Linear4bit(lin.in_features, lin.out_features, bias=lin.bias is not None,
                       compute_dtype=compute_dtype, compress_statistics=double_quant,
                       quant_type=quant_type, device="meta")  # no throw-away random init
        # The Params4bit shares the float weight's storage until .to() quantises it; the
        # quantiser writes a new tensor, so the original Linear's weight is never changed.
        q.weight = Params4bit(lin.weight.detach(), requires_grad=False, blocksize=blocksize,
                              compress_statistics=double_quant, quant_type=quant_type, module=q)
        q.bias = None if lin.bias is None else nn.Parameter(lin.bias.detach().clone(),
                                                            requires_grad=lin.bias.requires_grad)
        q.support_avx512bf16_for_cpu = False
        parent, _, leaf = path.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, q)
    return chosen


def quantized_layers(model: nn.Module) -> dict:
    """{path: Linear4bit} in module order."""
    Linear4bit = _linear4bit()
    return {p: m for p, m in model.named_modules() if isinstance(m, Linear4bit)}


def disable_cpu_inference_repack(model: nn.Module) -> int:
    """Switch off bnb's AVX512-BF16 eval-time repacking on every Linear4bit (see
    ``quantize_linears``); returns how many layers were touched."""
    layers = quantized_layers(model)
    for m in layers.values():
        m.support_avx512bf16_for_cpu = False
    return len(layers)


def to_device(model: nn.Module, device=None) -> nn.Module:
    """``model.to(device)``, which quantises every Linear4bit (bitsandbytes does it in
    ``Params4bit.to``); then checks that each one holds packed codes and a quant state."""
    from .encoder import default_device

    device = torch.device(device) if device is not None else default_device()
    model.to(device)
    disable_cpu_inference_repack(model)
    for path, m in quantized_layers(model).items():
        if not getattr(m.weight, "bnb_quantized", False) or m.weight.quant_state is None:
            raise RuntimeError(f"{path}: Linear4bit was not quantised by .to({device})")
    return model


# ----------------------------------------------------------------------------- reading back

@dataclass
class StoredWeight:
    """What a quantised ``Linear4bit`` stores, as NumPy arrays (Eqs. 7.2-7.8)."""

    shape: tuple
    quant_type: str
    blocksize: int
    packed: np.ndarray                   # uint8 (⌈n/2⌉,): two codes a byte, first in the high nibble
    absmax: np.ndarray                   # float32 a_b (no DQ) or uint8 codes r_b (DQ)
    absmax2: np.ndarray | None = None    # float32 s_g, one per nested block (DQ only)
    offset: float | None = None          # μ (DQ only)
    nested_blocksize: int | None = None

    @property
    def double_quant(self) -> bool:
        return self.absmax2 is not None

    def codebook(self) -> np.ndarray:
        return quant.nf4_codebook() if self.quant_type == "nf4" else quant.fp4_codebook()

    def block_absmax(self) -> np.ndarray:
        """a_b as float32: stored directly, or restored by Eq. 7.8."""
        if not self.double_quant:
            return self.absmax
        return quant.double_dequantize(self.absmax, self.absmax2, self.offset, self.nested_blocksize)

    def dequantize(self) -> np.ndarray:
        """Our NumPy Eq. 7.6 on bitsandbytes' bytes: ŵ = c[q]·a_b, float32 of ``shape``."""
        return quant.dequantize_4bit(self.packed, self.block_absmax(), self.shape, self.codebook(),
                                     self.blocksize)

    def nbytes(self) -> dict:
        """Bytes per stored array (the shared code tables not counted, as in Eq. 7.9)."""
        out = {"codes": self.packed.nbytes, "absmax": self.absmax.nbytes}
        if self.double_quant:
            out |= {"absmax2": self.absmax2.nbytes, "offset": 4}
        return out


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def read_quant_state(layer) -> StoredWeight:
    """The packed weight and its quant state, copied out of a quantised ``Linear4bit``."""
    if not isinstance(layer, _linear4bit()):
        raise TypeError(f"read_quant_state needs a bitsandbytes Linear4bit, got {type(layer).__name__}")
    qs = getattr(layer.weight, "quant_state", None)
    if qs is None or not getattr(layer.weight, "bnb_quantized", False):
        raise ValueError("this Linear4bit is not quantised yet: move it with .to(device) first")
    if getattr(qs, "packing_format_for_cpu", False):
        raise ValueError("bnb repacked this weight for its AVX512-BF16 inference kernel; build the "
                         "model with quantize_linears (which disables that) to read it back")
    if qs.quant_type not in QUANT_TYPES:
        raise ValueError(f"unknown quant_type {qs.quant_type!r}")
    code = _numpy(qs.code).astype(np.float32)
    ours = quant.nf4_codebook() if qs.quant_type == "nf4" else quant.fp4_codebook()
    if not np.array_equal(code, ours):
        raise ValueError(f"bitsandbytes' {qs.quant_type} table differs from ours: {code}")
    stored = StoredWeight(shape=tuple(int(d) for d in qs.shape), quant_type=qs.quant_type,
                          blocksize=int(qs.blocksize), packed=_numpy(layer.weight.data).reshape(-1).copy(),
                          absmax=_numpy(qs.absmax).copy())
    if qs.nested:
        stored.absmax2 = _numpy(qs.state2.absmax).astype(np.float32)
        stored.offset = float(qs.offset)
        stored.nested_blocksize = int(qs.state2.blocksize)
        if not np.array_equal(_numpy(qs.state2.code).astype(np.float32), quant.dynamic_map()):
            raise ValueError("bitsandbytes' nested 8-bit map differs from quant.dynamic_map()")
    return stored


@torch.no_grad()
def bnb_computed_weight(layer) -> np.ndarray:
    """The weight bitsandbytes multiplies with, probed through its own 4-bit matmul: with the
    identity as input, ``matmul_4bit(I, W_q) = I·Ŵᵀ = Ŵᵀ`` exactly (each output is one weight
    times 1 plus zeros). Returned as float32 (d_out, d_in), in the layer's compute dtype's
    precision."""
    read_quant_state(layer)  # same checks
    w = layer.weight
    dtype = layer.compute_dtype or torch.float32
    eye = torch.eye(layer.in_features, device=w.device, dtype=dtype)
    with _exact_matmul():
        out = bnb().matmul_4bit(eye, w, quant_state=w.quant_state)
    return _numpy(out.T.float())


class _exact_matmul:
    """No TF32 in CUDA matmuls inside the block (the identity probe must be exact)."""

    def __enter__(self):
        self.old = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32 = self.old


def crosscheck(layer, original: np.ndarray | None = None) -> dict:
    """Our NumPy path against bitsandbytes on one quantised layer.

    ``dequant_max_diff``: max |our dequantisation of bnb's bytes − the weight bnb computes
    with| (0 means identical; the compute dtype's rounding is applied to ours first), and
    ``dequant_rel_diff`` the same divided by max |ŵ| (a fused CUDA kernel may round the
    nested scale d·s + μ once instead of twice: a difference of float32 rounding).
    With ``original`` (the float32 weight before quantisation), also whether our own
    ``quantize_4bit`` gives the same packed bytes and how many of the DQ absmax codes
    differ (bnb's CPU 8-bit encoder rounds values within ~1e-5 of a midpoint the other way).
    """
    s = read_quant_state(layer)
    ours = s.dequantize()
    theirs = bnb_computed_weight(layer)
    dtype = layer.compute_dtype or torch.float32
    ours_c = torch.from_numpy(ours).to(dtype).float().numpy()
    diff = float(np.abs(ours_c - theirs).max())
    out = {"shape": s.shape, "quant_type": s.quant_type, "double_quant": s.double_quant,
           "dequant_max_diff": diff, "dequant_rel_diff": diff / max(float(np.abs(ours_c).max()), 1e-30),
           "dequant_identical": bool(np.array_equal(ours_c, theirs))}
    if original is not None:
        if not isinstance(original, np.ndarray) or original.shape != s.shape:
            raise ValueError(f"original must be a NumPy array of shape {s.shape}")
        packed, absmax = quant.quantize_4bit(original, s.codebook(), s.blocksize)
        out["packed_identical"] = bool(np.array_equal(packed, s.packed))
        if s.double_quant:
            q, _, _ = quant.double_quantize(absmax, s.nested_blocksize)
            out["dq_codes_differing"] = int(np.count_nonzero(q != s.absmax))
        else:
            out["absmax_identical"] = bool(np.array_equal(absmax, s.absmax))
    return out


def dequantized_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in which every Linear4bit is an ``nn.Linear`` holding our
    NumPy dequantisation of bitsandbytes' bytes: the float model QLoRA actually trains on."""
    out = copy.deepcopy(model)
    for path, m in quantized_layers(out).items():
        lin = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None,
                        device=m.weight.device, dtype=torch.float32)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(read_quant_state(m).dequantize()))
            if m.bias is not None:
                lin.bias.copy_(m.bias.float())
        lin.requires_grad_(False)
        parent, _, leaf = path.rpartition(".")
        setattr(out.get_submodule(parent) if parent else out, leaf, lin)
    return out


# ----------------------------------------------------------------------------- the dequantised copy

class DequantLog(TorchDispatchMode):
    """Records every bitsandbytes op that runs inside the block, with the shape, dtype and
    bytes of what it returned; ``keep=True`` also keeps a copy of each output. Forward
    shows up as one ``gemm_4bit`` per layer (its dequantisation is inside that kernel);
    backward as ``dequantize_4bit``, whose output is a full weight in the compute dtype."""

    def __init__(self, keep: bool = False):
        super().__init__()
        self.keep, self.calls, self.outputs = keep, [], []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = str(func)
        if name.startswith("bitsandbytes.") and isinstance(out, torch.Tensor):
            self.calls.append({"op": name.split(".")[1], "shape": tuple(out.shape),
                               "dtype": str(out.dtype).replace("torch.", ""),
                               "bytes": out.numel() * out.element_size()})
            if self.keep:
                self.outputs.append(out.detach().clone())
        return out


# ----------------------------------------------------------------------------- models

def make_classifier(method: str, mm=None, *, targets=TARGETS, r: int = 8, alpha: float = 16,
                    seed: int = 0, device=None, quant_type: str = "nf4", double_quant: bool = True,
                    blocksize: int = 64, compute_dtype: torch.dtype = torch.float32):
    """A ``train.Classifier`` on a fresh copy of MiniLM, set up for ``method``:
    'full' (every weight trains), 'lora' (fp32 base frozen, LoRA on ``targets``), 'qlora'
    (4-bit base, the same LoRA), 'probe' (fp32 base frozen, head only), 'qprobe' (4-bit base
    frozen, head only). LoRA gets the same A for the same seed in 'lora' and 'qlora', so
    the two differ only in the base weights. Returns (classifier, tokenizer)."""
    from .encoder import load_minilm_torch
    from .train import Classifier, freeze

    if method not in METHODS:
        raise ValueError(f"make_classifier: method must be one of {METHODS}, got {method!r}")
    if mm is None:
        mm = load_minilm_torch(device="cpu")
    net = copy.deepcopy(mm.net).cpu()
    if method in ("qlora", "qprobe"):
        quantize_linears(net.bert, targets, quant_type, double_quant, blocksize, compute_dtype)
    if method in ("lora", "qlora"):
        attach_lora(net.bert, targets, r=r, alpha=alpha, seed=seed)  # before .to(): W is still float
    elif method in ("probe", "qprobe"):
        freeze(net)
    clf = Classifier(net, seed=seed)
    return to_device(clf, device), mm.tokenizer


# ----------------------------------------------------------------------------- memory

def _bytes(t) -> int:
    return t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0


def weight_bytes(model: nn.Module) -> dict:
    """Bytes of the model's weights by kind: float parameters and buffers, and for each
    Linear4bit the packed codes plus its quant state (absmax or its 8-bit codes, nested
    absmax, offset); the per-layer copies of the 16- and 256-entry code tables separately."""
    out = {"float": 0, "4-bit codes": 0, "absmax": 0, "nested absmax + offset": 0, "code tables": 0}
    q = quantized_layers(model)
    qweights = {id(m.weight) for m in q.values()}
    for p in list(model.parameters()) + list(model.buffers()):
        if id(p) not in qweights:
            out["float"] += _bytes(p)
    for m in q.values():
        qs = m.weight.quant_state
        out["4-bit codes"] += _bytes(m.weight.data)
        out["absmax"] += _bytes(qs.absmax)
        out["code tables"] += _bytes(qs.code)
        if qs.nested:
            out["nested absmax + offset"] += _bytes(qs.state2.absmax) + _bytes(qs.offset)
            out["code tables"] += _bytes(qs.state2.code)
    out["total"] = sum(out.values())
    return out


def _storage_key(t: torch.Tensor):
    s = t.untyped_storage()
    return (t.device.type, s.data_ptr(), s.nbytes())


def step_memory(model: nn.Module, batch, lr: float = 1e-3, optimizer=None) -> dict:
    """One training step (forward, backward, AdamW step) on ``batch`` = (ids, mask, labels),
    with every tensor the step keeps accounted (Eq. 7.12):

    weights   ``weight_bytes``;
    saved     activations autograd saves for backward (``saved_tensors_hooks``), counted
              once per storage and without the parameters' own storages;
    grads     ``.grad`` of the trainable parameters after backward;
    optimizer AdamW's state after the step (m, v, step counters);
    transient the largest weight bitsandbytes dequantises during the step (``DequantLog``).
    ``peak`` is their sum, an upper bound (not everything is alive at once). On CUDA the
    allocator's own ``max_memory_allocated`` over the step is added as ``cuda_peak``, and
    ``cuda_model_peak`` = its rise during the step + the model's weights (leftover tensors of
    other code excluded).
    """
    ids, mask, y = batch
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("step_memory: the model has no trainable parameters")
    opt = optimizer or torch.optim.AdamW(params, lr=lr)
    own = {_storage_key(t) for t in list(model.parameters()) + list(model.buffers())}
    for m in quantized_layers(model).values():
        own.add(_storage_key(m.weight.data))
    saved = {}

    def pack(t):
        k = _storage_key(t)
        if k not in own:
            saved[k] = k[2]
        return t

    cuda = next(model.parameters()).device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    log = DequantLog()
    with log:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = nn.functional.cross_entropy(model(ids, mask), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
    opt.step()
    out = {"weights": weight_bytes(model)["total"], "saved": sum(saved.values()),
           "grads": sum(_bytes(p.grad) for p in params),
           "optimizer": sum(_bytes(v) for st in opt.state.values() for v in st.values()),
           "transient": max((c["bytes"] for c in log.calls if c["op"] == "dequantize_4bit"), default=0)}
    out["peak"] = sum(out.values())
    if cuda:
        torch.cuda.synchronize()
        out["cuda_peak"] = torch.cuda.max_memory_allocated()
        out["cuda_before_step"] = base
        # the model's own peak: the step's rise above what was allocated before it, plus the
        # model's weights (so tensors left on the GPU by other code do not count)
        out["cuda_model_peak"] = out["cuda_peak"] - base + out["weights"]
    return out


# ----------------------------------------------------------------------------- paging

def simulate_paging(capacity: float, weights: float, grads: float, state: float,
                    activations, page: float = 2**21) -> dict:
    """A page-level model of a paged optimiser on one GPU (all sizes in bytes).

    Per training step t: forward+backward need ``weights + grads + activations[t]`` resident;
    the optimiser state (``state``) lives in unified memory, so the pages that no longer fit
    are evicted to CPU RAM. The optimiser step then needs the whole state back (activations
    freed): the evicted pages are fetched again. Without paging all four must fit at once.

    Returns per-step arrays: ``oom_unpaged`` (weights+grads+state+activations > capacity),
    ``oom_paged`` (even without any optimiser state, or the step itself, does not fit),
    ``evicted`` and ``fetched`` (bytes moved), and ``resident_state`` at the activation peak.
    """
    sizes = dict(capacity=capacity, weights=weights, grads=grads, state=state, page=page)
    for k, v in sizes.items():
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                or not math.isfinite(v) or v < 0:
            raise ValueError(f"{k} must be a finite number >= 0, got {v!r}")
    if page <= 0:
        raise ValueError("page must be > 0")
    act = np.asarray(activations, dtype=np.float64)
    if act.ndim != 1 or act.size == 0 or not np.isfinite(act).all() or (act < 0).any():
        raise ValueError("activations must be a non-empty 1-D sequence of finite bytes >= 0")
    pages = lambda b: np.ceil(np.asarray(b) / page)  # noqa: E731
    cap, fixed, S = pages(capacity), pages(weights) + pages(grads), pages(state)
    need = pages(act)
    resident = S  # state starts on the GPU
    evicted, fetched, res_at_peak = (np.zeros(act.size) for _ in range(3))
    for t in range(act.size):
        room = max(cap - fixed - need[t], 0)           # pages left for optimiser state
        out = max(resident - room, 0)
        resident -= out                                # page-out under activation pressure
        res_at_peak[t] = resident
        back = S - resident
        resident = S                                   # page-in for the optimiser step
        evicted[t], fetched[t] = out * page, back * page
    return {"oom_unpaged": fixed + S + need > cap,
            "oom_paged": (fixed + need > cap) | (fixed + S > cap),
            "evicted": evicted, "fetched": fetched, "resident_state": res_at_peak * page}


def paged_adamw_steps(model: nn.Module, batches, lr: float = 1e-3) -> dict:
    """Train ``model`` on ``batches`` (an iterable of (ids, mask, labels)) with bitsandbytes'
    PagedAdamW: 32-bit Adam states allocated in CUDA unified memory, which the driver pages
    to CPU RAM under GPU memory pressure and back when the optimiser touches them.

    Says what actually ran: on CPU bitsandbytes warns and falls back to ordinary, unpaged
    buffers; on CUDA only parameters with ≥ 100,000 elements get paged states (bnb's
    threshold), so LoRA's small factors are never paged. Returns the losses, the warnings,
    and how many state tensors are paged out of how many."""
    import warnings

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("paged_adamw_steps: the model has no trainable parameters")
    opt = bnb().optim.PagedAdamW(params, lr=lr, weight_decay=0.0)
    losses = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for ids, mask, y in batches:
            loss = nn.functional.cross_entropy(model(ids, mask), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    states = [v for st in opt.state.values() for v in st.values() if isinstance(v, torch.Tensor) and v.numel() > 1]
    paged = [v for v in states if getattr(v, "is_paged", False)]
    return {"device": params[0].device.type, "losses": losses,
            "warnings": sorted({str(w.message) for w in caught}),
            "state_tensors": len(states), "paged_state_tensors": len(paged),
            "paged_bytes": sum(_bytes(v) for v in paged), "state_bytes": sum(_bytes(v) for v in states),
            "paged_threshold": 100_000}


# ----------------------------------------------------------------------------- arithmetic

MEMORY_PARTS = ("base 4-bit", "base 16-bit", "LoRA weights", "LoRA gradients", "Adam states",
                "activations")


def qlora_memory_gb(shape, r: int = 64, tokens: int = 0, unit: str = "GB") -> dict:
    """QLoRA's training memory for a published model shape (Eqs. 0.2-0.5 and 7.9), by part:

    base 4-bit      the transformer's linear weights in NF4 + DQ (``counting`` scheme 'nf4-dq');
    base 16-bit     everything else (embeddings, untied output head, norms) kept in bf16;
    LoRA weights    r on every linear layer (the paper's setting), bf16, 2 B/param;
    LoRA gradients  bf16, 2 B/param;
    Adam states     fp32 m and v, 8 B/param (the part paged optimisers page out);
    activations     ``tokens`` × L × d × 2 B: one bf16 hidden state per layer per token, what
                    gradient checkpointing keeps. A lower bound, left as a parameter.

    Compared with ``full_16bit``: 12 B/param (fp16 weights and gradients, fp32 Adam m and v;
    ``counting`` scheme 'fp16-adam'), activations not included."""
    from .. import counting as C

    if isinstance(tokens, bool) or not isinstance(tokens, (int, np.integer)) or tokens < 0:
        raise ValueError(f"tokens must be an int >= 0, got {tokens!r}")
    if unit not in ("GB", "GiB"):
        raise ValueError(f"unit must be 'GB' or 'GiB', got {unit!r}")
    div = C.GB if unit == "GB" else C.GIB
    n = C.total_params(shape)
    parts = C.param_breakdown(shape)
    n_lin = parts["attention"] + parts["ffn"]
    n_lora = C.lora_params(shape, r, "all-linear")
    out = {"base 4-bit": n_lin * C.bytes_per_param("nf4-dq") / div,
           "base 16-bit": (n - n_lin) * 2 / div,
           "LoRA weights": n_lora * 2 / div, "LoRA gradients": n_lora * 2 / div,
           "Adam states": n_lora * 8 / div,
           "activations": tokens * shape.layers * shape.hidden * 2 / div}
    out["qlora_total"] = sum(out.values())
    out |= {"full_16bit": C.finetune_memory_gb(n, "fp16-adam", unit),
            "params": n, "linear_params": n_lin, "lora_params": n_lora}
    return out


__all__ = ["COMPUTE_DTYPES", "DequantLog", "MEMORY_PARTS", "METHODS", "QUANT_TYPES", "StoredWeight", "TARGETS", "bnb",
           "bnb_computed_weight", "crosscheck", "dequantized_copy", "disable_cpu_inference_repack",
           "make_classifier", "paged_adamw_steps", "qlora_memory_gb", "quantize_linears", "quantized_layers", "read_quant_state",
           "simulate_paging", "step_memory", "to_device", "weight_bytes"]
