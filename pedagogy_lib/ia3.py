"""IA³ in NumPy: learned vectors that rescale keys, values and the FFN's activations (chapter 06).

Liu et al. (2022) freeze the whole model and learn three vectors per block, all started at 1:

    K' = l_k ⊙ (W_k h + b_k),   V' = l_v ⊙ (W_v h + b_v)                      (Eq. 6.5)
    f  = W₂ (l_ff ⊙ GELU(W₁ h₁ + b₁)) + b₂                                     (Eq. 6.6)

Both are one layer, ``IA3Linear``, wrapped around a frozen Linear, as peft does it:
* *output* scaling (``feedforward=False``): y = l ⊙ (x Wᵀ + b), l of width d_out (l_k, l_v);
* *input* scaling (``feedforward=True``):   y = (l ⊙ x) Wᵀ + b, l of width d_in. On the FFN's
  second matrix (``output.dense``) the input is GELU(W₁h₁ + b₁), so this is l_ff of Eq. 6.6.
  Scaling the *output* of ``intermediate.dense`` instead would put l inside the GELU,
  GELU(l ⊙ (W₁h₁ + b₁)), which is a different function.

Gradients (x̄ = ∂L/∂x, sums over every row t of the batch):
    output scaling:  ∂L/∂l = Σ_t ȳ_t ⊙ z_t,  x̄ = (l ⊙ ȳ) W,   z = x Wᵀ + b         (Eq. 6.7)
    input scaling:   ū = ȳ W,  ∂L/∂l = Σ_t ū_t ⊙ x_t,  x̄ = l ⊙ ū                 (Eq. 6.8)
Merging folds l into the frozen weights (Eq. 6.9):
    output:  W ← diag(l) W,  b ← l ⊙ b;        input:  W ← W diag(l),  b unchanged.

Targets are chosen with peft's rules (``lora.match_targets``); ``feedforward`` follows
peft's ``feedforward_modules``: a regex must match the whole path, a list entry matches a
path that *ends with* it (no dot needed, exactly as peft checks it).
"""
from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np

from . import checks
from .counting import ModelShape, canonical_names, linear_shapes
from .lora import check_targets, linear_paths, match_targets, stale_forward
from .nn import Linear, Module, check_array, check_finite, get_submodule, set_submodule
from .peft_format import PeftFormat

# The paper's placement on a BERT block: l_k, l_v and l_ff (the FFN's output.dense, input-scaled).
# A regex, because peft's suffix rule for "output.dense" also picks attention.output.dense.
PAPER_TARGETS = r".*layer\.\d+\.(attention\.self\.(key|value)|output\.dense)"
PAPER_FEEDFORWARD = r".*layer\.\d+\.output\.dense"


class IA3Linear(Module):
    """A frozen Linear whose output (Eq. 6.5) or input (Eq. 6.6) is rescaled by ``p["ia3_l"]``.

    ``base`` becomes ``self.base_layer`` (frozen). l starts at ones, so the layer starts as
    the identity change. ``merge()`` folds l into W (and b) (Eq. 6.9); ``unmerge()`` divides
    it out again and therefore needs every l_i ≠ 0, which ``merge`` checks first.
    """

    def __init__(self, base: Linear, feedforward: bool = False):
        super().__init__()
        if not isinstance(base, Linear):
            raise TypeError(f"IA3Linear wraps an nn.Linear, got {type(base).__name__}")
        checks.boolean(feedforward, "feedforward")
        self.d_in, self.d_out, self.feedforward = base.d_in, base.d_out, feedforward
        self.base_layer = base.freeze()
        width = self.d_in if feedforward else self.d_out
        self.p["ia3_l"] = np.ones(width, base.p["weight"].dtype)  # l = 1: the pretrained function
        self.merged = False

    def __repr__(self):
        side = "input" if self.feedforward else "output"
        return f"IA3Linear(d_in={self.d_in}, d_out={self.d_out}, scales={side}, merged={self.merged})"

    def forward(self, x):
        if self.merged:
            self.x = self.z = None                  # nothing kept for backward
            return self.base_layer(x)               # W already holds l (Eq. 6.9)
        check_array(x, "IA3Linear input", last=self.d_in)
        l = self.p["ia3_l"]
        if self.feedforward:
            self.x = x
            return self.base_layer(x * l)           # (l ⊙ x) Wᵀ + b            (Eq. 6.6)
        self.z = self.base_layer(x)                 # z = x Wᵀ + b
        return self.z * l                           # l ⊙ z                      (Eq. 6.5)

    def backward(self, dy):
        if self.merged:
            raise RuntimeError("IA3Linear.backward: the layer is merged (l is folded into W); "
                               "call unmerge() before training")
        stale_forward(self, getattr(self, "x" if self.feedforward else "z"), "IA3Linear")
        l = self.p["ia3_l"]
        if self.feedforward:
            du = self.base_layer.backward(dy)       # ū = ȳ W                    (Eq. 6.8)
            self._accumulate("ia3_l", (du * self.x).reshape(-1, self.d_in).sum(0))  # Σ_t ū_t ⊙ x_t
            return du * l                           # x̄ = l ⊙ ū
        self._accumulate("ia3_l", (dy * self.z).reshape(-1, self.d_out).sum(0))     # Σ_t ȳ_t ⊙ z_t (Eq. 6.7)
        return self.base_layer.backward(dy * l)     # x̄ = (l ⊙ ȳ) W

    def _check_invertible(self, what: str):
        """Before ``merge``/``unmerge`` touches W: l finite and non-zero, and every new entry of
        W (and b) ``lossless``, so that the other operation can undo this one."""
        l = self.p["ia3_l"]
        check_finite(l, f"IA3Linear.{what}: ia3_l")
        if np.any(l == 0):
            raise ValueError(f"IA3Linear.{what}: ia3_l has {int(np.sum(l == 0))} zero entries; "
                             "a merged zero cannot be divided out again")
        op = np.multiply if what == "merge" else np.divide   # what merge / unmerge will write (Eq. 6.9)
        base = self.base_layer.p
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            lossless(base["weight"], op(base["weight"], l[None, :] if self.feedforward else l[:, None]),
                     f"IA3Linear.{what}: weight")
            if not self.feedforward and "bias" in base:
                lossless(base["bias"], op(base["bias"], l), f"IA3Linear.{what}: bias")

    def merge(self):
        """W ← diag(l) W, b ← l ⊙ b (output scaling) or W ← W diag(l) (input)  (Eq. 6.9)."""
        if self.merged:
            raise RuntimeError("IA3Linear.merge: already merged; merging twice would apply l twice")
        self._check_invertible("merge")
        l, base = self.p["ia3_l"], self.base_layer.p
        if self.feedforward:
            base["weight"] *= l[None, :]            # scale column j of W by l_j
        else:
            base["weight"] *= l[:, None]            # scale row i of W by l_i
            if "bias" in base:
                base["bias"] *= l
        self.merged = True
        return self

    def unmerge(self):
        """The inverse of ``merge`` (Eq. 6.9 divided out), exact up to float rounding."""
        if not self.merged:
            raise RuntimeError("IA3Linear.unmerge: not merged; unmerging would divide W by l")
        self._check_invertible("unmerge")
        l, base = self.p["ia3_l"], self.base_layer.p
        if self.feedforward:
            base["weight"] /= l[None, :]
        else:
            base["weight"] /= l[:, None]
            if "bias" in base:
                base["bias"] /= l
        self.merged = False
        return self


def lossless(old: np.ndarray, new: np.ndarray, name: str):
    """Refuse a merged (or unmerged) array that cannot be undone: NaN/inf (overflow), or an entry
    that was a normal float and became zero or subnormal (underflow: its bits are gone). ``new``
    is judged as it will be stored, in ``old``'s dtype (a float64 l on a float32 W computes wide)."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        new = np.asarray(new).astype(old.dtype)
    tiny = np.finfo(old.dtype).tiny
    bad = ~np.isfinite(new) | ((np.abs(new) < tiny) & (np.abs(old) >= tiny))
    if bad.any():
        raise ValueError(f"{name} would have {int(bad.sum())} entries that overflow or underflow "
                         f"(ia3_l too large or too small for {new.dtype}); W is unchanged")


# ----------------------------------------------------------------------------- targeting
def check_feedforward(feedforward):
    """peft's ``feedforward_modules``: a regex string, or a (possibly empty) list of names."""
    if isinstance(feedforward, str):  # bounded like target_modules: a file's (.+)+z would hang re.fullmatch
        checks.bounded_regex(feedforward, "feedforward regex")
        return feedforward
    if isinstance(feedforward, (set, frozenset)):
        feedforward = sorted(feedforward)
    if not isinstance(feedforward, (list, tuple)) or not all(isinstance(f, str) and f for f in feedforward):
        raise TypeError(f"feedforward must be a regex string or a list of module names, got {feedforward!r}")
    return tuple(feedforward)


def feedforward_matches(path: str, feedforward) -> bool:
    """peft's rule for feedforward_modules: str → re.fullmatch; list → path ends with an entry."""
    if isinstance(feedforward, str):
        return re.fullmatch(feedforward, path) is not None
    return any(path.endswith(f) for f in feedforward)


def plan(shapes: dict[str, tuple[int, int]], targets=PAPER_TARGETS,
         feedforward=PAPER_FEEDFORWARD) -> dict[str, bool]:
    """{path: is_feedforward} for the Linears (``shapes`` = {path: (d_in, d_out)}) that
    ``targets`` selects. Refuses a target that selects nothing, a feedforward list that is
    not a subset of a target list (as peft does), and a feedforward rule that selects none
    of the targeted modules."""
    targets, feedforward = check_targets(targets), check_feedforward(feedforward)
    if isinstance(targets, tuple) and isinstance(feedforward, tuple) and not set(feedforward) <= set(targets):
        raise ValueError(f"feedforward modules {sorted(set(feedforward) - set(targets))} are not among "
                         f"the targets {list(targets)} (peft requires a subset)")
    chosen = match_targets(shapes, targets)
    out = {p: feedforward_matches(p, feedforward) for p in chosen}
    if feedforward and not any(out.values()):
        raise ValueError(f"feedforward {feedforward!r} selects none of the targeted modules {chosen[:3]}…")
    return out


def ia3_layers(model: Module) -> dict[str, IA3Linear]:
    return {path: mod for path, mod in model.named_modules() if isinstance(mod, IA3Linear)}


def attach_ia3(model: Module, targets=PAPER_TARGETS, feedforward=PAPER_FEEDFORWARD,
               freeze_base: bool = True) -> dict[str, bool]:
    """Wrap every Linear that ``targets`` selects in an IA3Linear (l = 1); return {path: feedforward}.

    Everything is checked before the model changes. With ``freeze_base`` every other
    parameter is frozen, so only the vectors l train.
    """
    if not isinstance(model, Module):
        raise TypeError(f"attach_ia3: expected a NumPy Module, got {type(model).__name__}")
    if ia3_layers(model):
        raise ValueError("attach_ia3: the model already carries IA³ layers; load into a fresh model")
    checks.boolean(freeze_base, "freeze_base")
    chosen = plan(linear_paths(model), targets, feedforward)
    if freeze_base:
        model.freeze()
    for p, ff in chosen.items():
        set_submodule(model, p, IA3Linear(get_submodule(model, p), ff))
    return chosen


def switch_merged(layers: dict, merge: bool) -> list[str]:
    """Merge (Eq. 6.9) or unmerge every layer of ``layers`` ({path: layer}, NumPy or torch), all or
    none: checks first that each is in the other state and that every l can be divided out again
    (``_check_invertible``: l finite and non-zero, every new weight ``lossless``)."""
    wrong = [p for p, m in layers.items() if m.merged == merge]
    if wrong:
        state = "already merged" if merge else "not merged"
        raise RuntimeError(f"{'merge' if merge else 'unmerge'}_all: {wrong[:3]} are {state}")
    for m in layers.values():
        m._check_invertible("merge" if merge else "unmerge")
    for m in layers.values():
        m.merge() if merge else m.unmerge()
    return list(layers)


def merge_all(model: Module) -> list[str]:
    return switch_merged(ia3_layers(model), True)


def unmerge_all(model: Module) -> list[str]:
    return switch_merged(ia3_layers(model), False)


# ----------------------------------------------------------------------------- counting
PAPER_MATRICES = ("key", "value", "ffn_out")  # l_k, l_v and l_ff (the FFN's second matrix, input-scaled)


def ia3_params(shape: ModelShape, targets=PAPER_MATRICES, feedforward=("ffn_out",)) -> int:
    """IA³'s trainable parameters on a published shape (Eq. 6.10): one vector per adapted
    matrix and layer, of width d_out when it scales the matrix's output (l_k, l_v) and d_in
    when it scales its input (the ``feedforward`` matrices: l_ff on the FFN's second matrix
    has width ffn). The paper's placement gives L·(2d + ffn). ``targets`` and ``feedforward``
    name matrices of ``counting.linear_shapes`` (or aliases); ``feedforward`` ⊆ ``targets``.
    """
    if not isinstance(shape, ModelShape):
        raise TypeError(f"expected a ModelShape, got {type(shape).__name__}")
    mats = linear_shapes(shape)
    targets, feedforward = canonical_names(targets), canonical_names(feedforward)
    unknown = [t for t in targets if t not in mats]
    if unknown or not targets or len(set(targets)) != len(targets):
        raise ValueError(f"targets {targets!r} must be distinct names from {sorted(mats)}")
    if not set(feedforward) <= set(targets):
        raise ValueError(f"feedforward {feedforward!r} must be a subset of targets {targets!r}")
    return shape.layers * sum(mats[t][0] if t in feedforward else mats[t][1] for t in targets)  # L·(2d + ffn)

# ----------------------------------------------------------------------------- the peft file format
# A peft IA³ adapter holds, for every adapted Linear at path P, ``base_model.model.P.ia3_l``:
# shape (d_out, 1) when l scales the output, (1, d_in) when P is a feedforward module
# (peft's IA3Layer.update_layer). The config has peft_type "IA3", target_modules and
# feedforward_modules (a list entry matches a path that *ends with* it; a string is a regex).
class PeftSetting(NamedTuple):
    """Which side of the layer l scales: "input" (a feedforward module, Eq. 6.6) or "output" (Eq. 6.5)."""
    scales: str


def _peft_setting(path: str, layer) -> PeftSetting:
    if layer.merged:
        raise ValueError(f"{path} is merged (l is inside W); unmerge first")
    return PeftSetting("input" if layer.feedforward else "output")


def _peft_shape(name: str, s: PeftSetting, d_in: int, d_out: int) -> tuple[int, int]:
    return (1, d_in) if s.scales == "input" else (d_out, 1)


def _feedforward_names(paths: list[str], ff: list[str], targets) -> list[str]:
    """feedforward_modules for a config: the leaf names when peft's endswith rule picks exactly
    ``ff`` out of ``paths`` and they are among the (list) targets; else the full paths."""
    leaves = sorted({p.rsplit(".", 1)[-1] for p in ff})
    exact = sorted(p for p in paths if feedforward_matches(p, leaves)) == sorted(ff)
    return leaves if exact and set(leaves) <= set(targets) else sorted(ff)


def _peft_config(settings: dict, target_modules) -> dict:
    """feedforward_modules, written so that peft's rule picks exactly our input-scaled layers;
    target_modules become the full paths where peft's subset check would fail on names."""
    paths = sorted(settings)
    ff = _feedforward_names(paths, [p for p in paths if settings[p].scales == "input"], target_modules)
    if not set(ff) <= set(target_modules):  # peft checks feedforward ⊆ targets as names
        target_modules = paths
    return {"target_modules": target_modules, "feedforward_modules": ff, "init_ia3_weights": True}


def _read_peft_config(cfg: dict) -> dict:
    """{feedforward_modules} of a peft IA³ config: a regex or names, a subset of the target names."""
    targets, ff = cfg.get("target_modules"), cfg.get("feedforward_modules")
    if not (isinstance(ff, str) or (isinstance(ff, list) and all(isinstance(f, str) and f for f in ff))):
        raise ValueError(f"feedforward_modules must be a regex string or a list of names, got {ff!r}")
    if isinstance(targets, list) and isinstance(ff, list) and not set(ff) <= set(targets):
        raise ValueError(f"feedforward_modules {ff} must be a subset of target_modules {targets}")
    return {"feedforward_modules": check_feedforward(ff)}


def _peft_attach(lib, model, settings: dict):
    lib.attach_ia3(model, tuple(settings), tuple(p for p, s in settings.items() if s.scales == "input"))


PEFT_FORMAT = PeftFormat(
    peft_type="IA3", name="IA³", module=__name__, layers="ia3_layers", tensors={"ia3_l": "ia3_l"},
    shape=_peft_shape, setting=_peft_setting,
    setting_in=lambda fields, path: PeftSetting("input" if feedforward_matches(path, fields["feedforward_modules"])
                                                else "output"),
    config=_peft_config, read_config=_read_peft_config, attach=_peft_attach)


__all__ = ["IA3Linear", "PAPER_FEEDFORWARD", "PAPER_TARGETS", "PEFT_FORMAT", "PeftSetting", "attach_ia3",
           "check_feedforward", "feedforward_matches", "ia3_layers", "ia3_params", "merge_all", "plan", "switch_merged", "unmerge_all"]
