"""LoRA in NumPy: a low-rank update beside a frozen Linear, with hand-written gradients (chapter 02).

    W' = W₀ + s·B A,   A ∈ ℝ^{r×d_in},  B ∈ ℝ^{d_out×r},  s = α/r  (or α/√r, rsLoRA)   (Eq. 2.1)

A and B are stored the way Hugging Face peft stores them (``lora_A`` is (r, d_in), ``lora_B``
is (d_out, r)), so an adapter file needs no transposes. The layer replaces a ``Linear`` in
place (``nn.set_submodule``) and keeps the original as its child ``base_layer``, frozen, as
peft does; module names then read ``…query.base_layer.weight`` and ``…query.lora_A``.

Targets are matched the way peft matches ``target_modules``: a list of names matches a
module whose dotted path equals a name or ends with ``"." + name``; a single string is a
regular expression that must match the whole path; ``"all-linear"`` means every Linear.
"""
from __future__ import annotations

import math
import numbers
import re
from typing import NamedTuple

import numpy as np

from . import checks
from .counting import ModelShape, canonical_names, linear_shapes, lora_matrix_params
from .nn import Linear, Module, check_array, check_finite, get_submodule, set_submodule
from .peft_format import PeftFormat

INITS = ("kaiming-uniform", "gaussian", "pissa")
FLOAT32_MAX = float(np.finfo(np.float32).max)


# ----------------------------------------------------------------------------- checks
def check_rank(r, d_in: int, d_out: int) -> int:
    """1 ≤ r ≤ min(d_in, d_out): beyond that BA cannot gain rank, it only costs parameters."""
    if isinstance(r, bool) or not isinstance(r, numbers.Integral):
        raise TypeError(f"LoRA rank r must be an int, got {type(r).__name__} {r!r}")
    if not 1 <= r <= min(d_in, d_out):
        raise ValueError(f"LoRA rank r must satisfy 1 <= r <= min(d_in, d_out) = {min(d_in, d_out)} "
                         f"for a {d_out}×{d_in} weight, got r={r}")
    return int(r)


def check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise TypeError(f"LoRA alpha must be a real number, got {type(alpha).__name__} {alpha!r}")
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"LoRA alpha must be finite and > 0, got {alpha!r}")
    return float(alpha)


def scaling(r: int, alpha: float, rslora: bool = False) -> float:
    """s = α/r (Eq. 2.2), or rsLoRA's s = α/√r (Eq. 2.3)."""
    checks.boolean(rslora, "rslora")
    r = check_rank(r, r, r)
    alpha = check_alpha(alpha)
    s = alpha / math.sqrt(r) if rslora else alpha / r
    if s > FLOAT32_MAX:  # s·(xAᵀ)Bᵀ would be inf in float32 and the outputs NaN
        raise ValueError(f"LoRA scaling s = alpha/{'√r' if rslora else 'r'} = {s:.3g} exceeds float32's "
                         f"largest value {FLOAT32_MAX:.3g}: lora_alpha={alpha!r} is too large")
    return s


# ----------------------------------------------------------------------------- init
def init_A(r: int, d_in: int, init: str, rng: np.random.Generator, dtype=np.float32) -> np.ndarray:
    """A at step 0, as peft draws it: 'kaiming-uniform' is U(−1/√d_in, 1/√d_in) (torch's
    kaiming_uniform_ with a=√5, the nn.Linear default); 'gaussian' is N(0, 1/r²)."""
    if init == "kaiming-uniform":
        bound = 1.0 / math.sqrt(d_in)
        return rng.uniform(-bound, bound, (r, d_in)).astype(dtype)
    if init == "gaussian":
        return rng.normal(0.0, 1.0 / r, (r, d_in)).astype(dtype)
    raise ValueError(f"init_A: unknown init {init!r}; choose one of {INITS[:2]} (pissa needs W₀)")


def pissa_factors(W: np.ndarray, r: int, s: float):
    """PiSSA (Eq. 2.12): W₀ = U Σ Vᵀ;  A = √(Σ_r/s) V_rᵀ,  B = U_r √(Σ_r/s),  W_res = W₀ − s·BA.

    s·BA is the best rank-r approximation of W₀ (Eckart–Young), so W_res + s·BA = W₀ and
    training starts from the pretrained function while A, B hold its principal directions.
    The SVD runs in float64; the results come back in W's dtype.
    """
    check_array(W, "pissa_factors W", ndim_min=2)
    if W.ndim != 2:
        raise ValueError(f"pissa_factors: W must be a matrix, got shape {W.shape}")
    check_finite(W, "pissa_factors W")
    r = check_rank(r, W.shape[1], W.shape[0])
    if not (isinstance(s, numbers.Real) and math.isfinite(s) and s > 0):
        raise ValueError(f"pissa_factors: scaling s must be finite and > 0, got {s!r}")
    U, S, Vt = np.linalg.svd(W.astype(np.float64), full_matrices=False)
    root = np.sqrt(S[:r] / s)
    A = root[:, None] * Vt[:r]                  # (r, d_in)
    B = U[:, :r] * root[None, :]                # (d_out, r)
    W_res = W.astype(np.float64) - s * (B @ A)  # W₀ − s·BA
    return A.astype(W.dtype), B.astype(W.dtype), W_res.astype(W.dtype)


# ----------------------------------------------------------------------------- the layer
def layer_args(name: str, base, linear: type, init: str, inits, rng) -> None:
    """The arguments every LoRA-family layer (LoRA, DoRA; NumPy and torch) checks first:
    ``base`` a ``linear``, an ``init`` it knows, ``rng`` a NumPy Generator or None."""
    if not isinstance(base, linear):
        kind = "torch.nn.Linear" if linear.__module__.startswith("torch") else "nn.Linear"
        raise TypeError(f"{name} adapts a {kind}, got {type(base).__name__}")
    if init not in inits:
        raise ValueError(f"{name}: unknown init {init!r}; choose one of {inits}")
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator, got {type(rng).__name__}")


def attach_args(name: str, init: str, inits, alpha, rslora, seed, freeze_base) -> tuple[float, int]:
    """The arguments every ``attach_*`` of the LoRA family checks before the model changes;
    returns (α, seed)."""
    if init not in inits:
        raise ValueError(f"{name}: unknown init {init!r}; choose one of {inits}")
    alpha = check_alpha(alpha)
    scaling(1, alpha, rslora)  # validates rslora and that s fits in float32
    checks.boolean(freeze_base, "freeze_base")
    return alpha, checks.seed(seed)


def stale_forward(layer, kept, name: str):
    """Refuse a backward whose last forward ran merged (``kept`` is None): the merged pass keeps
    nothing of the adapter, so the gradient would mix an older unmerged input with the new one."""
    if kept is None:
        raise RuntimeError(f"{name}.backward: the last forward ran merged and kept nothing to "
                           "differentiate; run forward again after unmerge()")


class Mergeable:
    """``merge``/``unmerge`` of a layer whose update can be written into its frozen base weight
    (LoRA here, DoRA in ``dora.py``, and their torch twins, which use this class too): the layer
    gives ``_merged_weight(sign)``, the new weight, checked finite, and ``_set_weight(new,
    merged)``, which writes it in place."""

    def merge(self):
        """W ← W₀ + s·BA  (Eq. 2.6; DoRA's W' of Eq. 2.8 the same way). In place; refuses to merge
        twice, and refuses (W₀ unchanged) when the result would hold NaN/inf."""
        if self.merged:
            raise RuntimeError(f"{type(self).__name__}.merge: already merged; "
                               "merging twice would apply the update again")
        self._set_weight(self._merged_weight(+1), True)
        return self

    def unmerge(self):
        """W ← W − s·BA  (Eq. 2.6; DoRA: diag(n/m)·W − s·BA), the inverse of merge up to float
        rounding; refuses if not merged."""
        if not self.merged:
            raise RuntimeError(f"{type(self).__name__}.unmerge: not merged; "
                               "unmerging would take the update out of W₀")
        self._set_weight(self._merged_weight(-1), False)
        return self


class LoRALinear(Mergeable, Module):
    """y = x W₀ᵀ + b + s·(x Aᵀ) Bᵀ  (Eq. 2.4), never forming B A.

    ``base`` is the Linear being adapted; it becomes ``self.base_layer`` and is frozen.
    Trainable: ``p["lora_A"]`` (r, d_in) and ``p["lora_B"]`` (d_out, r), B = 0 at start
    (except 'pissa', which moves the top-r part of W₀ into A, B). ``merge()`` folds s·BA
    into W₀ for inference; ``unmerge()`` takes it out again.
    """

    def __init__(self, base: Linear, r: int, alpha: float, rslora: bool = False,
                 init: str = "kaiming-uniform", rng: np.random.Generator | None = None):
        super().__init__()
        layer_args("LoRALinear", base, Linear, init, INITS, rng)
        W = base.p["weight"]
        self.d_in, self.d_out = base.d_in, base.d_out
        self.r = check_rank(r, self.d_in, self.d_out)
        self.alpha, self.rslora = check_alpha(alpha), rslora
        self.scaling = scaling(self.r, self.alpha, rslora)  # Eqs. 2.2–2.3
        self.init = init
        rng = np.random.default_rng(0) if rng is None else rng
        if init == "pissa":
            A, B, W_res = pissa_factors(W, self.r, self.scaling)
            base.p["weight"] = W_res
        else:
            A, B = init_A(self.r, self.d_in, init, rng, W.dtype), np.zeros((self.d_out, self.r), W.dtype)
        self.base_layer = base.freeze()
        self.p["lora_A"], self.p["lora_B"] = A, B
        self.merged = False

    def extra_repr(self) -> str:
        return f"d_in={self.d_in}, d_out={self.d_out}, r={self.r}, alpha={self.alpha:g}, scaling={self.scaling:g}"

    def __repr__(self):
        return f"LoRALinear({self.extra_repr()}, merged={self.merged})"

    def delta_weight(self) -> np.ndarray:
        """ΔW = s·B A (d_out, d_in). Only for merging and inspection: the forward never forms it."""
        return self.scaling * (self.p["lora_B"] @ self.p["lora_A"])

    def forward(self, x):
        y = self.base_layer(x)                      # x W₀ᵀ + b (W₀ + s·BA once merged)
        if self.merged:
            self.u = None                           # base_layer now holds this x: no stale u
            return y
        self.u = x @ self.p["lora_A"].T             # u = x Aᵀ, width r      (Eq. 2.4)
        return y + self.scaling * (self.u @ self.p["lora_B"].T)

    def backward(self, dy):
        """Eq. 2.5: dB = s·dyᵀu,  du = s·dy B,  dA = duᵀx,  dx = dy W₀ + du A."""
        if self.merged:
            raise RuntimeError("LoRALinear.backward: the layer is merged (W₀ + s·BA is one matrix); "
                               "call unmerge() before training")
        stale_forward(self, self.u, "LoRALinear")
        x2 = self.base_layer.x.reshape(-1, self.d_in)
        u2 = self.u.reshape(-1, self.r)
        dy2 = dy.reshape(-1, self.d_out)
        self._accumulate("lora_B", self.scaling * (dy2.T @ u2))
        du = self.scaling * (dy @ self.p["lora_B"])
        self._accumulate("lora_A", du.reshape(-1, self.r).T @ x2)
        return self.base_layer.backward(dy) + du @ self.p["lora_A"]

    def _merged_weight(self, sign: int) -> np.ndarray:
        """W ± s·BA as a new array, after checking that it is finite (W itself is not touched)."""
        W = self.base_layer.p["weight"]
        with np.errstate(over="ignore", invalid="ignore"):
            new = W + sign * self.delta_weight().astype(W.dtype)
        if not np.isfinite(new).all():
            what = "merge" if sign > 0 else "unmerge"
            raise ValueError(f"LoRALinear.{what}: W {'+' if sign > 0 else '−'} s·BA has "
                             f"{int(new.size - np.count_nonzero(np.isfinite(new)))} NaN/inf entries "
                             f"(lora_A, lora_B or scaling={self.scaling:g} not finite); W is unchanged")
        return new

    def _set_weight(self, new: np.ndarray, merged: bool):
        self.base_layer.p["weight"][...] = new  # in place: whoever holds W sees the change
        self.merged = merged


# ----------------------------------------------------------------------------- targeting
def check_targets(targets):
    """peft's ``target_modules``: a non-empty list of names, a regex string, or 'all-linear'.

    A regex must pass ``checks.bounded_regex`` (no nested or alternated repeats, at most 3
    variable repeats): peft runs any pattern with ``re.fullmatch`` and no limit, so a hostile
    ``adapter_config.json`` can make it backtrack for hours; here it is refused at once."""
    if isinstance(targets, str):
        if targets != "all-linear":
            checks.bounded_regex(targets, "target regex")
        return targets
    if isinstance(targets, (set, frozenset)):
        targets = sorted(targets)
    if not isinstance(targets, (list, tuple)) or not targets:
        raise TypeError(f"targets must be a non-empty list/tuple of module names, a regex string or "
                        f"'all-linear', got {targets!r}")
    bad = [t for t in targets if not isinstance(t, str) or not t or t.startswith(".") or t.endswith(".")]
    if bad:
        raise ValueError(f"target names must be non-empty dotted names, got {bad}")
    return tuple(targets)


def target_matches(path: str, targets) -> bool:
    """peft's rule: list → path == t or path ends with '.'+t; str → re.fullmatch; 'all-linear' → True."""
    if isinstance(targets, str):
        return targets == "all-linear" or re.fullmatch(targets, path) is not None
    return any(path == t or path.endswith("." + t) for t in targets)


def match_targets(paths, targets) -> list[str]:
    """The paths (in order) that ``targets`` selects; ValueError for a target that selects nothing."""
    targets = check_targets(targets)
    paths = list(paths)
    chosen = [p for p in paths if target_matches(p, targets)]
    unused = [t for t in ([targets] if isinstance(targets, str) else targets)
              if not any(target_matches(p, t if isinstance(targets, str) else (t,)) for p in paths)]
    if unused:
        leaves = sorted({p.rsplit(".", 1)[-1] for p in paths})
        raise ValueError(f"target(s) {unused} match no Linear module; Linear names end in {leaves}")
    return chosen


def linear_paths(model: Module) -> dict[str, tuple[int, int]]:
    """{dotted path: (d_in, d_out)} of every plain Linear in a NumPy model (LoRA bases excluded)."""
    out = {}
    for path, mod in model.named_modules():
        if isinstance(mod, Linear) and not path.endswith(".base_layer") and path != "base_layer":
            out[path] = (mod.d_in, mod.d_out)
    return out


def lora_layers(model: Module) -> dict[str, LoRALinear]:
    return {path: mod for path, mod in model.named_modules() if isinstance(mod, LoRALinear)}


def lora_params(shape, r: int, targets=("query", "value")) -> int:
    """LoRA's trainable parameters: Σ r·(d_in + d_out) over the adapted matrices (Eq. 2.7;
    chapter 00's Eq. 0.8), A being r×d_in and B d_out×r. Nothing is built.

    ``shape``: a ``counting.ModelShape`` (a published model: ``targets`` names matrices of
    ``counting.linear_shapes`` or an alias such as "q_proj", or is "all-linear"; every layer
    counts), or {dotted path: (d_in, d_out)} of a real model, e.g. ``linear_paths(model)``
    (``targets`` matched as ``attach_lora`` matches them, and r checked against each matrix).
    """
    if isinstance(shape, ModelShape):
        mats = linear_shapes(shape)
        r = checks.check_size(r, "r")
        targets = tuple(mats) if targets == "all-linear" else canonical_names(targets)
        unknown = [t for t in targets if t not in mats]
        if unknown or not targets or len(set(targets)) != len(targets):
            raise ValueError(f"targets {targets!r} must be distinct names from {sorted(mats)} (or 'all-linear')")
        return shape.layers * sum(lora_matrix_params(r, *mats[t]) for t in targets)   # L · Σ r(d_in + d_out)
    chosen = match_targets(shape, targets)
    for p in chosen:
        check_rank(r, *shape[p])
    return sum(lora_matrix_params(r, *shape[p]) for p in chosen)                     # Σ r(d_in + d_out)


def attach_lora(model: Module, targets=("query", "value"), r: int = 8, alpha: float = 8,
                rslora: bool = False, init: str = "kaiming-uniform", seed: int = 0,
                freeze_base: bool = True) -> list[str]:
    """Replace every Linear that ``targets`` selects by a LoRALinear; return the paths replaced.

    Everything is checked before the model changes: a target that matches nothing, a
    module that is not a Linear (or already carries LoRA), a rank too large for a matrix.
    With ``freeze_base`` every other parameter of ``model`` is frozen, so only A and B train.
    Layers draw A in path order from ``np.random.default_rng(seed)``.
    """
    alpha, seed = attach_args("attach_lora", init, INITS, alpha, rslora, seed, freeze_base)
    chosen = checked_targets(model, targets, r, LoRALinear, "attach_lora")
    if init == "pissa":  # PiSSA's SVD needs finite weights: check every layer before touching one
        for p in chosen:
            check_finite(get_submodule(model, p).p["weight"], f"attach_lora(init='pissa'): {p}.weight")
    rng = np.random.default_rng(seed)
    if freeze_base:  # everything checked: now change the model
        model.freeze()
    for p in chosen:
        set_submodule(model, p, LoRALinear(get_submodule(model, p), r, alpha, rslora, init, rng))
    return chosen


def already_adapted(named_modules, targets, lora_cls) -> list[str]:
    """Paths that ``targets`` selects and that already carry a LoRA layer (no error when a
    target selects nothing: ``match_targets`` over the Linears reports that)."""
    targets = check_targets(targets)
    return [p for p, m in named_modules if p and isinstance(m, lora_cls) and target_matches(p, targets)]


def checked_targets(model, targets, r: int, layer_cls, who: str, paths_of=None) -> list[str]:
    """The Linear paths ``targets`` selects, after the checks that must pass before a model
    changes: no selected path already carries a ``layer_cls``, every target selects something,
    the rank fits every chosen matrix. ``paths_of``: ``linear_paths`` (NumPy, the default) or
    its torch twin; ``who`` names the caller in the errors (LoRA, DoRA; NumPy or torch)."""
    already = already_adapted(model.named_modules(), targets, layer_cls)
    if already:
        raise ValueError(f"{who}: {already[:3]} already carry {layer_cls.__name__.removesuffix('Linear')}; "
                         "merge or load into a fresh model")
    shapes = (paths_of or linear_paths)(model)
    chosen = match_targets(shapes, targets)
    for p in chosen:
        try:
            check_rank(r, *shapes[p])
        except (TypeError, ValueError) as e:
            raise type(e)(f"{p}: {e}") from None
    return chosen


def merge_all(model: Module) -> list[str]:
    """Merge every LoRA layer (Eq. 2.6); checks first that none is merged already."""
    return merge_layers(lora_layers(model), merge=True)


def unmerge_all(model: Module) -> list[str]:
    return merge_layers(lora_layers(model), merge=False)


def merge_layers(layers: dict, merge: bool) -> list[str]:
    """Merge (or unmerge) every layer of {path: LoRALinear} (NumPy or torch), all or none:
    each new weight is computed and checked finite before any is written."""
    name = "merge_all" if merge else "unmerge_all"
    wrong = [p for p, m in layers.items() if m.merged == merge]
    if wrong:
        raise RuntimeError(f"{name}: {wrong[:3]} are {'already' if merge else 'not'} merged")
    new = {}
    for p, m in layers.items():
        try:
            new[p] = m._merged_weight(+1 if merge else -1)
        except ValueError as e:
            raise ValueError(f"{name}: {p}: {e}") from None
    for p, m in layers.items():
        m._set_weight(new[p], merge)
    return list(layers)


# ----------------------------------------------------------------------------- the peft file format
# A peft LoRA adapter (chapter 02, section 8): per adapted Linear at path P the file holds
# base_model.model.P.lora_A.weight (r, d_in) and ….lora_B.weight (d_out, r), our orientation;
# the config holds peft_type "LORA", r, lora_alpha, use_rslora (one setting for every layer).
# peft_io reads and writes it (``fmt=PEFT_FORMAT`` is its default).
# init_lora_weights values that rewrite the base weights (PiSSA, OLoRA, …): such an adapter
# only reproduces the fine-tuned model together with a modified base, which we do not have.
_BASE_CHANGING_INITS = ("pissa", "olora", "corda", "eva", "loftq", "orthogonal")
# Config fields that turn peft's LoRA into another function (its LoRA variants, aLoRA's
# token-gated update, a replicated layer stack) with the same tensor names: refused unless null,
# false or [] (peft turns even an empty {} sub-config into an active variant).
_VARIANT_FIELDS = ("alora_invocation_tokens", "arrow_config", "use_bdlora", "monteclora_config",
                   "kasa_config", "layer_replication")


class PeftSetting(NamedTuple):
    """What a peft LoRA config records for every layer: r, α and the scaling rule (Eqs. 2.2–2.3)."""
    r: int
    alpha: float
    rslora: bool


def _peft_setting(path: str, layer) -> PeftSetting:
    if layer.init == "pissa":
        raise ValueError(f"{path} was initialised with PiSSA, which rewrote the base weights; "
                         "the adapter alone would not reproduce the model")
    return PeftSetting(layer.r, layer.alpha, layer.rslora)


def _peft_shape(name: str, s: PeftSetting, d_in: int, d_out: int) -> tuple[int, int]:
    return (s.r, d_in) if name == "lora_A" else (d_out, s.r)          # A (r, d_in), B (d_out, r)


def _peft_config(settings: dict, target_modules) -> dict:
    """r, lora_alpha, use_rslora: one setting for the whole file (peft's rank_pattern is not written)."""
    kinds = set(settings.values())
    if len(kinds) != 1:
        raise ValueError(f"layers differ in (r, alpha, rslora) {sorted(kinds)}; one adapter file holds one setting")
    (r, alpha, rslora), = kinds
    return {"r": int(r), "lora_alpha": int(alpha) if float(alpha).is_integer() else float(alpha),
            "use_rslora": bool(rslora), "lora_dropout": 0.0, "init_lora_weights": True}


def _need(cond: bool, msg: str):
    if not cond:
        raise ValueError(msg)


def _read_peft_config(cfg: dict) -> dict:
    """{r, alpha, rslora} of a peft LoRA config, refusing what would not give peft's model."""
    r, alpha, rslora = cfg.get("r"), cfg.get("lora_alpha"), cfg.get("use_rslora", False)
    _need(isinstance(r, int) and not isinstance(r, bool) and r >= 1, f"r must be an int >= 1, got {r!r}")
    _need(isinstance(alpha, numbers.Real) and not isinstance(alpha, bool) and math.isfinite(alpha) and alpha > 0,
          f"lora_alpha must be a finite number > 0, got {alpha!r}")
    _need(isinstance(rslora, bool), f"use_rslora must be true or false, got {rslora!r}")
    scaling(r, alpha, rslora)  # s must fit in float32
    init = cfg.get("init_lora_weights", True)
    _need(not (isinstance(init, str) and init.lower().startswith(_BASE_CHANGING_INITS)),
          f"init_lora_weights={init!r} rewrites the base weights; convert the adapter to plain LoRA first")
    _need(init is True or init is False or init == "gaussian", f"init_lora_weights={init!r} is not supported")
    dropout = cfg.get("lora_dropout", 0.0)  # no effect at inference, but peft's nn.Dropout refuses these
    _need(isinstance(dropout, numbers.Real) and not isinstance(dropout, bool) and 0 <= dropout <= 1,
          f"lora_dropout must be a number in [0, 1], got {dropout!r}")
    for k in _VARIANT_FIELDS:
        _need(cfg.get(k) in (None, False, []), f"{k}={cfg.get(k)!r} makes peft build another function "
              "than plain LoRA (a LoRA variant); it is not supported")
    return {"r": r, "alpha": float(alpha), "rslora": rslora}


def _check_peft_layer(s: PeftSetting, t: dict, d_in: int, d_out: int):
    """r ≤ min(d_in, d_out), and s·BA must fit the model's float32, or every output is NaN."""
    check_rank(s.r, d_in, d_out)
    scale = scaling(*s)
    with np.errstate(over="ignore", invalid="ignore"):
        peak = float(np.abs(scale * (t["lora_B"].astype(np.float64) @ t["lora_A"].astype(np.float64))).max())
    _need(peak <= FLOAT32_MAX, f"s·BA (s = {scale:.3g}, lora_alpha={s.alpha!r}) reaches {peak:.3g}, beyond "
          "float32's range: every output would be inf/NaN")


def _peft_attach(lib, model, settings: dict):
    (r, alpha, rslora), = set(settings.values())
    lib.attach_lora(model, tuple(settings), r=r, alpha=alpha, rslora=rslora)


PEFT_FORMAT = PeftFormat(
    peft_type="LORA", name="LoRA", module=__name__, layers="lora_layers",
    tensors={"lora_A.weight": "lora_A", "lora_B.weight": "lora_B"}, shape=_peft_shape,
    setting=_peft_setting, setting_in=lambda fields, path: PeftSetting(fields["r"], fields["alpha"], fields["rslora"]),
    config=_peft_config, read_config=_read_peft_config, attach=_peft_attach,
    fixed={"bias": "none", "use_dora": False, "lora_bias": False},
    empty={"layers_to_transform": None, "layers_pattern": None, "rank_pattern": {}, "alpha_pattern": {},
           "target_parameters": None},
    check_layer=_check_peft_layer)


# ----------------------------------------------------------------------------- cost
def lora_cost(n: int, d_in: int, d_out: int, r: int) -> dict[str, int]:
    """Multiply–adds and extra floats of one training step on n input rows, beyond what the
    frozen base costs anyway (x W₀ᵀ forward, dy W₀ for dx backward): the table of chapter 02, section 4.

    factored (ours):  forward u = x Aᵀ, then u Bᵀ:        n·r·(d_in + d_out)
                      backward dB, du, dA, du·A (Eq. 2.5): 2·n·r·(d_in + d_out); holds u (n×r)
    dense (forms W₀ + B A every step, then one matmul):
                      forward B A:                          d_out·r·d_in
                      backward dW = dyᵀx, dB = dW Aᵀ, dA = Bᵀ dW: n·d_in·d_out + 2·d_out·d_in·r
                      holds W₀ + BA and dW (2·d_out·d_in); dx = dy(W₀ + BA) costs what dy W₀ did
    merged (inference): nothing extra at all.
    """
    for v, name in ((n, "n"), (d_in, "d_in"), (d_out, "d_out")):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
            raise ValueError(f"lora_cost: {name} must be a positive int, got {v!r}")
    r = check_rank(r, d_in, d_out)
    return {"base_forward": n * d_in * d_out,
            "factored_forward": n * r * (d_in + d_out),
            "factored_backward": 2 * n * r * (d_in + d_out),
            "factored_floats": n * r,
            "dense_forward": d_out * r * d_in,
            "dense_backward": n * d_in * d_out + 2 * d_out * d_in * r,
            "dense_floats": 2 * d_out * d_in,
            "merged_forward": 0}


__all__ = ["INITS", "LoRALinear", "PEFT_FORMAT", "PeftSetting", "attach_lora", "check_alpha", "check_rank",
           "check_targets", "lora_cost", "init_A", "linear_paths", "lora_layers", "lora_params", "match_targets",
           "merge_all", "pissa_factors", "scaling", "target_matches", "unmerge_all"]
