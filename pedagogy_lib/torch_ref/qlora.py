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
Paged optimisers are simulated in NumPy (``counting.simulate_paging``) where CUDA is absent.

Equations (chapter 07):
  Eq. 7.10  y = dequant(W_q) x + b + s·B A x     the QLoRA layer: a 4-bit base, LoRA in fp
  Eq. 7.11  ∂L/∂x = dequant(W_q)ᵀ ∂L/∂y + s·Aᵀ Bᵀ ∂L/∂y,  no ∂L/∂W_q (the base is frozen)
  Eq. 7.12  peak ≈ weights + gradients + optimiser state + saved activations + one
            dequantised weight (the upper bound our accounting reports)
"""
from __future__ import annotations

import copy
import logging
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from .. import checks, quant
from ..lora import already_adapted, match_targets

TARGETS = "all-linear"  # every Linear of the encoder: q, k, v, attention output, FFN in/out
QUANT_TYPES = ("nf4", "fp4")
COMPUTE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


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

def _check_quant_args(quant_type, blocksize, compute_dtype, double_quant=True):
    checks.boolean(double_quant, "double_quant")
    if quant_type not in QUANT_TYPES:
        raise ValueError(f"quant_type must be one of {QUANT_TYPES}, got {quant_type!r}")
    quant._check_blocksize(blocksize)  # an int: 64.0 would pass `in`, then fail inside bnb's .to()
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
    _check_quant_args(quant_type, blocksize, compute_dtype, double_quant)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    Linear4bit, Params4bit = _linear4bit(), bnb().nn.Params4bit
    modules = dict(model.named_modules())
    done = already_adapted(modules.items(), targets, Linear4bit)  # errors list only plain Linears
    if done:
        raise ValueError(f"quantize_linears: {done[:3]} are already Linear4bit")
    plain = {p: m for p, m in modules.items() if p and type(m) is nn.Linear}
    chosen = match_targets(plain, targets)
    bad = [p for p in chosen if plain[p].weight.dtype not in COMPUTE_DTYPES]  # bnb quantises 16/32-bit floats
    if bad:
        raise TypeError(f"quantize_linears: {bad[:3]} hold {plain[bad[0]].weight.dtype} weights; "
                        f"bitsandbytes quantises only {COMPUTE_DTYPES}")
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
        if device.type == "cpu" and m.in_features % m.weight.quant_state.blocksize:
            _warn_if_scrambled(path, m)
    return model


def _warn_if_scrambled(path: str, layer) -> None:
    """bitsandbytes' CPU dequantiser scrambles some weights whose rows do not start a block
    (chapter 07, appendix B): warn when this layer computes with other values than it stores."""
    c = crosscheck(layer)
    if not c["dequant_identical"]:
        warnings.warn(f"{path}: bitsandbytes on this CPU computes with a weight that differs from the one it "
                      f"stores (max |Δ| {c['dequant_max_diff']:.3g}), a bnb bug for in_features "
                      f"({layer.in_features}) that is not a multiple of the blocksize "
                      f"({layer.weight.quant_state.blocksize}) (chapter 07, appendix B); pick a blocksize that "
                      "divides in_features", RuntimeWarning, stacklevel=3)


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
        if self.quant_type not in QUANT_TYPES:
            raise ValueError(f"StoredWeight: quant_type must be one of {QUANT_TYPES}, got {self.quant_type!r}")
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
    # quant_storage (e.g. float32 for FSDP) only changes the container: bnb reads the bytes
    # back with .view(uint8), and so do we.
    packed = _numpy(layer.weight.data.view(torch.uint8)).reshape(-1).copy()
    stored = StoredWeight(shape=tuple(int(d) for d in qs.shape), quant_type=qs.quant_type,
                          blocksize=int(qs.blocksize), packed=packed,
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


# ----------------------------------------------------------------------------- memory

def _bytes(t) -> int:
    return t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0


def state_tensors(opt) -> list:
    """The optimiser's state tensors, each counted once. bitsandbytes' 8-bit optimisers hand every
    parameter's state the SAME two 256-entry quantisation maps (``qmap1``/``qmap2``): memory holds
    them once, so a tensor seen again (same address, size and dtype) is not counted again."""
    seen, out = set(), []
    for st in opt.state.values():
        for v in st.values():
            key = (v.data_ptr(), v.numel(), v.dtype) if isinstance(v, torch.Tensor) else None
            if key and v.numel() > 1 and key not in seen:
                seen.add(key)
                out.append(v)
    return out


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


PAGED_THRESHOLD = 100_000  # bitsandbytes' paged optimisers page only state tensors this large


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
    states = state_tensors(opt)
    paged = [v for v in states if getattr(v, "is_paged", False)]
    return {"device": params[0].device.type, "losses": losses,
            "warnings": sorted({str(w.message) for w in caught}),
            "state_tensors": len(states), "paged_state_tensors": len(paged),
            "paged_bytes": sum(_bytes(v) for v in paged), "state_bytes": sum(_bytes(v) for v in states),
            "paged_threshold": PAGED_THRESHOLD}


__all__ = ["COMPUTE_DTYPES", "DequantLog", "QUANT_TYPES", "StoredWeight", "TARGETS", "bnb",
           "bnb_computed_weight", "crosscheck", "dequantized_copy", "disable_cpu_inference_repack",
           "paged_adamw_steps", "quantize_linears", "quantized_layers", "read_quant_state",
           "state_tensors", "to_device", "weight_bytes"]
