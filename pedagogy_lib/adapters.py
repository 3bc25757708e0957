"""Bottleneck adapters in NumPy: Houlsby, Pfeiffer and parallel placements (chapter 03).

An adapter is a small two-layer network with a residual connection (Eq. 3.1):

    Adapter(h) = h + W_up σ(W_down h + b_down) + b_up,   W_down: m×d,  W_up: d×m,  m ≪ d.

With W_up ≈ 0 the block starts as the identity, so training starts from the pretrained
model. Where it goes (Eq. 3.2):

* Houlsby et al. (2019): two per block, on the output of the attention projection and on
  the output of the FFN, before each residual + LayerNorm;
* Pfeiffer et al. (2021): one per block, after the FFN only (we keep the same site as
  Houlsby's second adapter; AdapterHub's version also moves the residual around the LN);
* parallel (He et al. 2021): beside the FFN, fed the FFN's input h₁, scaled by s and added
  to the FFN's output, with no residual of its own (Eq. 3.3):
  f(h₁) + s·(W_up σ(W_down h₁ + b_down) + b_up).

Parameters per adapter: 2md + m + d (Eq. 3.5); extra FLOPs per token 4md (Eq. 3.6); the
backward pass is Eq. 3.4. Sequential adapters need no hook in the
encoder: the Linear at a dotted path is replaced by ``Sequential(dense, adapter)``; the
parallel one uses ``BertLayer.parallel``.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
from scipy.special import expit

from .nn import GELU, Linear, Module, Sequential, check_array, get_submodule, set_submodule
from . import checks
from .checks import check_size  # noqa: F401  (re-exported: adapters.check_size)

# sites of the sequential adapters, relative to encoder.layer.{i}
SITES = {
    "houlsby": ("attention.output.dense", "output.dense"),
    "pfeiffer": ("output.dense",),
    "parallel": (),  # uses the BertLayer.parallel hook instead
}
PLACEMENTS = tuple(SITES)
ADAPTERS_PER_LAYER = {"houlsby": 2, "pfeiffer": 1, "parallel": 1}  # k in Eq. 3.5


# ----------------------------------------------------------------------------- activations
class ReLU(Module):
    """σ(x) = max(x, 0);  σ'(x) = [x > 0]."""

    def forward(self, x):
        self.x = x
        return np.maximum(x, 0)

    def backward(self, dy):
        return dy * (self.x > 0)


class Swish(Module):
    """σ(x) = x·sigmoid(x) (SiLU, Houlsby's default in AdapterHub);  σ' = s + x·s(1 − s)."""

    def forward(self, x):
        self.x, self.s = x, expit(x)
        return x * self.s

    def backward(self, dy):
        s = self.s
        return dy * (s + self.x * s * (1 - s))


ACTIVATIONS = {"relu": ReLU, "gelu": GELU, "swish": Swish}


# ----------------------------------------------------------------------------- checks
def check_placement(placement) -> str:
    if placement not in SITES:
        raise ValueError(f"unknown adapter placement {placement!r}; choose one of {PLACEMENTS}")
    return placement


def _check_scalar(x, what: str, minimum: float = 0.0) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not math.isfinite(x) or x < minimum:
        raise ValueError(f"{what} must be a finite number >= {minimum}, got {x!r}")
    return float(x)


# ----------------------------------------------------------------------------- modules
class Bottleneck(Module):
    """u = W_up σ(W_down h + b_down) + b_up: Eq. 3.1 without its residual.

    W_down keeps PyTorch's default Linear init (U(±1/√d)), so the m features it computes
    are not degenerate; W_up ~ N(0, init_scale²) and both biases are 0, so u ≈ 0 at init
    (exactly 0 with init_scale=0).
    """

    def __init__(self, d: int, m: int, activation: str = "relu", init_scale: float = 1e-3,
                 rng=None, dtype=np.float32):
        super().__init__()
        self.d, self.m = check_size(d, "hidden size d"), check_size(m, "bottleneck size m")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {tuple(ACTIVATIONS)}")
        init_scale = _check_scalar(init_scale, "init_scale")
        rng = np.random.default_rng(0) if rng is None else rng
        self.activation = activation
        self.down = Linear(d, m, rng=rng, dtype=dtype)
        self.down.p["bias"][...] = 0
        self.act = ACTIVATIONS[activation]()
        self.up = Linear(m, d, rng=rng, dtype=dtype)
        self.up.p["weight"] = (init_scale * rng.standard_normal((d, m))).astype(dtype)  # W_up ≈ 0
        self.up.p["bias"][...] = 0

    def _check(self, h):
        check_array(h, f"{type(self).__name__} input")
        if h.shape[-1] != self.d:
            raise ValueError(f"{type(self).__name__} was built for hidden size d={self.d}, "
                             f"got input with last dimension {h.shape[-1]} (shape {h.shape})")
        return h

    def forward(self, h):
        return self.up(self.act(self.down(self._check(h))))  # W_up σ(W_down h + b_down) + b_up

    def backward(self, du):
        # Eq. 3.4: dW_up = Σ du aᵀ, δ = σ'(z) ⊙ W_upᵀ du, dW_down = Σ δ hᵀ; returns W_downᵀ δ
        return self.down.backward(self.act.backward(self.up.backward(du)))


class Adapter(Bottleneck):
    """Adapter(h) = h + W_up σ(W_down h + b_down) + b_up  (Eq. 3.1);  dh = dy + W_downᵀ δ (Eq. 3.4)."""

    def forward(self, h):
        return h + super().forward(h)

    def backward(self, dy):
        return dy + super().backward(dy)  # the residual passes dy straight through


class ParallelAdapter(Bottleneck):
    """p(h₁) = s·(W_up σ(W_down h₁ + b_down) + b_up), added to the FFN output (Eq. 3.3).

    No residual of its own: the FFN's residual already carries h₁. Plugged into
    ``BertLayer.parallel``, whose backward hands it dL/d(f + p) and expects dL/dh₁ back.
    """

    def __init__(self, d: int, m: int, activation: str = "relu", init_scale: float = 1e-3,
                 scale: float = 4.0, rng=None, dtype=np.float32):
        super().__init__(d, m, activation, init_scale, rng, dtype)
        self.scale = _check_scalar(scale, "scale s")

    def forward(self, h1):
        return self.scale * super().forward(h1)

    def backward(self, ds):
        return super().backward(self.scale * ds)


# ----------------------------------------------------------------------------- placement
def _check_encoder(bert):
    if not isinstance(bert, Module) or not hasattr(bert, "config") or not hasattr(bert, "layers"):
        raise TypeError(f"expected a NumPy BertEncoder (pedagogy_lib.bert), got {type(bert).__name__}")
    return bert


def insert_adapter(root: Module, path: str, adapter: Adapter) -> None:
    """Wrap the Linear at ``path`` as Sequential(dense, adapter) (Eq. 3.2); checks first."""
    if not isinstance(adapter, Adapter):
        raise TypeError(f"expected an Adapter, got {type(adapter).__name__}")
    dense = get_submodule(root, path)
    if not isinstance(dense, Linear):
        raise ValueError(f"{path} is a {type(dense).__name__}, not a Linear: does it already have an adapter?")
    if dense.d_out != adapter.d:
        raise ValueError(f"hidden size mismatch at {path}: the layer outputs {dense.d_out} features, "
                         f"the adapter was built for d={adapter.d}")
    set_submodule(root, path, Sequential(dense, adapter))


def attach_adapters(bert, placement: str, m: int, activation: str = "relu", init_scale: float = 1e-3,
                    scale: float = 4.0, seed: int = 0, freeze_base: bool = True) -> dict[str, Bottleneck]:
    """Add adapters of bottleneck m to every block of a NumPy BertEncoder (Eq. 3.2).

    Returns {path: adapter}. With ``freeze_base`` every pre-existing parameter is frozen
    first, so only the adapters train. Everything is checked before the model changes.
    """
    bert = _check_encoder(bert)
    placement, m = check_placement(placement), check_size(m, "bottleneck size m")
    checks.boolean(freeze_base, "freeze_base")
    d = bert.config.hidden_size
    rng = np.random.default_rng(checks.seed(seed))
    dtype = bert.embeddings.word_embeddings.p["weight"].dtype
    paths = []  # validate every site before building or inserting anything
    for i, layer in enumerate(bert.layers):
        for site in SITES[placement]:
            dense = get_submodule(layer, site)
            if not isinstance(dense, Linear):
                raise ValueError(f"encoder.layer.{i}.{site} is a {type(dense).__name__}, not a plain Linear: "
                                 "it already has an adapter (or LoRA)")
            if dense.d_out != d:
                raise ValueError(f"hidden size mismatch: encoder.layer.{i}.{site} outputs {dense.d_out}, "
                                 f"config says {d}")
            paths.append(f"encoder.layer.{i}.{site}")
        if placement == "parallel" and layer.parallel is not None:
            raise ValueError(f"encoder.layer.{i} already has a parallel module")
    kind = dict(activation=activation, init_scale=init_scale, rng=rng, dtype=dtype)
    if placement == "parallel":
        new = {f"encoder.layer.{i}.parallel": ParallelAdapter(d, m, scale=scale, **kind)
               for i in range(len(bert.layers))}
    else:
        new = {p: Adapter(d, m, **kind) for p in paths}
    if freeze_base:
        bert.freeze()
    for path, adapter in new.items():
        if placement == "parallel":
            get_submodule(bert, path.rpartition(".")[0]).parallel = adapter
        else:
            insert_adapter(bert, path, adapter)
    return {(p if placement == "parallel" else f"{p}.1"): a for p, a in new.items()}


def find_adapters(root: Module) -> dict[str, Bottleneck]:
    """Every adapter in a model, by dotted path."""
    return {name: mod for name, mod in root.named_modules() if isinstance(mod, Bottleneck)}


def remove_adapters(bert) -> int:
    """Undo ``attach_adapters``: unwrap Sequential(dense, adapter), clear the parallel hooks."""
    bert = _check_encoder(bert)
    removed = 0
    for i, layer in enumerate(bert.layers):
        if isinstance(layer.parallel, ParallelAdapter):
            layer.parallel, removed = None, removed + 1
        for site in ("attention.output.dense", "output.dense"):
            mod = get_submodule(layer, site)
            if isinstance(mod, Sequential) and mod.n == 2 and isinstance(mod[1], Adapter):
                set_submodule(layer, site, mod[0])
                removed += 1
    return removed


# ----------------------------------------------------------------------------- arithmetic
def adapter_params(d: int, m: int, placement: str, layers: int, biases: bool = True) -> int:
    """Trainable parameters of adapters in every block: L·k·(2md + m + d)  (Eq. 3.5), with
    k = 2 (Houlsby: after attention and after the FFN) or 1 (Pfeiffer: after the FFN;
    parallel: beside it). ``biases=False`` leaves out b_down (m) and b_up (d). Houlsby et al.
    also train the LayerNorms; they are not counted here (``bitfit.bitfit_params`` counts β)."""
    d, m = check_size(d, "hidden size d"), check_size(m, "bottleneck size m")
    one = 2 * m * d + ((m + d) if biases else 0)    # W_down (m×d), W_up (d×m), b_down, b_up  (Eq. 3.5)
    return check_size(layers, "layers") * ADAPTERS_PER_LAYER[check_placement(placement)] * one


def block_flops(d: int, ffn: int, seq_len: int) -> int:
    """Multiply-adds ×2 per token of one encoder block: four d×d projections, the FFN's
    two d×ffn matrices, and attention's QKᵀ and AV (2·T·d each)  (Eq. 3.6)."""
    d, ffn, seq_len = check_size(d, "d"), check_size(ffn, "ffn"), check_size(seq_len, "seq_len")
    return 2 * (4 * d * d + 2 * d * ffn) + 4 * seq_len * d


def flop_overhead(d: int, ffn: int, m: int, placement: str, seq_len: int = 128) -> float:
    """Extra FLOPs per block that adapters add, as a fraction: k·4md / block_flops (Eq. 3.6)."""
    k = ADAPTERS_PER_LAYER[check_placement(placement)]
    return k * 4 * check_size(m, "bottleneck size m") * d / block_flops(d, ffn, seq_len)


__all__ = ["ACTIVATIONS", "ADAPTERS_PER_LAYER", "PLACEMENTS", "SITES", "Adapter", "Bottleneck",
           "ParallelAdapter", "ReLU", "Swish", "adapter_params", "attach_adapters", "block_flops",
           "check_placement", "check_size", "find_adapters", "flop_overhead", "insert_adapter",
           "remove_adapters"]
