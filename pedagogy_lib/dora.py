"""DoRA in NumPy: LoRA on the direction of W, a trained magnitude per output row (chapter 02, §11).

    V = W₀ + s·B A,   n_i = ‖V_i,:‖₂,   W' = diag(m / n) V                          (Eq. 2.8)
    y = (m / n) ⊙ (x W₀ᵀ + s·(x Aᵀ) Bᵀ) + b                                          (Eq. 2.9)

A, B and s are LoRA's (``lora.py``: same shapes, same init, same seed → same A); the new
trainable vector ``lora_magnitude_vector`` m ∈ ℝ^{d_out} starts at n(W₀), so W' = W₀ at
step 0. Norms are taken per output row of the (d_out, d_in) weight, peft's Linear
convention (Liu et al. 2024 write W as (d, k) and take column norms: the same vectors).

Two backward modes (Eq. 2.10). With c = m/n and dc = Σ_rows dy ⊙ z (z = x W₀ᵀ + s·u Bᵀ):

    dm = dc / n                                      (both modes)
    dV = −(dc ⊙ m / n³) V   → dB += s·dV Aᵀ,  dA += s·Bᵀ dV      (exact mode only)

``detach_norm=True`` (the default, what peft and the paper's §4.3 do) treats n as a
constant in backward and drops the dV term: the backward then forms no d_out×d_in
gradient, and an autograd framework keeps nothing of V for it (torch_ref.dora), so training
memory stays close to LoRA's, at the price of a gradient that is not the exact one. ``detach_norm=False`` gives the exact gradient. The forward is the same.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from . import checks
from . import counting as C
from . import lora
from .lora import (Mergeable, attach_args, check_alpha, check_rank, checked_targets, init_A, layer_args,
                   merge_layers, scaling, stale_forward)
from .nn import Linear, Module, check_array, check_finite, get_submodule, set_submodule

INITS = ("kaiming-uniform", "gaussian")
MAGNITUDE = "lora_magnitude_vector"


def row_norm(V: np.ndarray) -> np.ndarray:
    """n_i = ‖V_i,:‖₂, one per output row of a (d_out, d_in) weight (Eq. 2.8)."""
    return np.sqrt((V * V).sum(axis=1))


class DoRALinear(Mergeable, Module):
    """y = (m/n) ⊙ (x W₀ᵀ + s·(x Aᵀ) Bᵀ) + b  (Eq. 2.9); the bias is not rescaled (as in peft).

    ``base`` becomes the frozen ``self.base_layer``. Trainable: ``lora_A`` (r, d_in),
    ``lora_B`` (d_out, r) = 0 at start, and ``lora_magnitude_vector`` m (d_out,) = n(W₀).
    ``merge()`` writes W' into the base weight (one plain matrix at inference); ``unmerge()``
    recovers W₀ = diag(n/m)·W' − s·BA (each row back to its direction) with the n stored at merge time.
    """

    def __init__(self, base: Linear, r: int, alpha: float, rslora: bool = False,
                 init: str = "kaiming-uniform", rng: np.random.Generator | None = None,
                 detach_norm: bool = True):
        super().__init__()
        layer_args("DoRALinear", base, Linear, init, INITS, rng)
        W = check_finite(base.p["weight"], "DoRALinear base weight")
        self.d_in, self.d_out = base.d_in, base.d_out
        self.r = check_rank(r, self.d_in, self.d_out)
        self.alpha, self.rslora = check_alpha(alpha), checks.boolean(rslora, "rslora")
        self.scaling = scaling(self.r, self.alpha, rslora)  # Eqs. 2.2–2.3
        self.init, self.detach_norm = init, checks.boolean(detach_norm, "detach_norm")
        n0 = row_norm(W)
        if not (n0 > 0).all():
            raise ValueError(f"DoRALinear: {int((n0 <= 0).sum())} row(s) of W₀ are zero; their direction "
                             "W/‖W‖ is undefined")
        rng = np.random.default_rng(0) if rng is None else rng
        self.base_layer = base.freeze()
        self.p["lora_A"] = init_A(self.r, self.d_in, init, rng, W.dtype)
        self.p["lora_B"] = np.zeros((self.d_out, self.r), W.dtype)
        self.p[MAGNITUDE] = n0.astype(W.dtype)          # m = ‖W₀‖ ⇒ W' = W₀ at init
        self.merged = False

    def __repr__(self):
        return (f"DoRALinear(d_in={self.d_in}, d_out={self.d_out}, r={self.r}, alpha={self.alpha:g}, "
                f"scaling={self.scaling:g}, detach_norm={self.detach_norm}, merged={self.merged})")

    def delta_weight(self) -> np.ndarray:
        """s·B A (d_out, d_in), LoRA's update of the direction."""
        return self.scaling * (self.p["lora_B"] @ self.p["lora_A"])

    def direction(self) -> np.ndarray:
        """V = W₀ + s·B A (Eq. 2.8); formed every step, because n needs it."""
        return self.base_layer.p["weight"] + self.delta_weight()

    def weight(self) -> np.ndarray:
        """W' = diag(m/n) V (Eq. 2.8), the one matrix a merged layer holds."""
        V = self.direction()
        return (self.p[MAGNITUDE] / row_norm(V))[:, None] * V

    def forward(self, x):
        check_array(x, "DoRALinear input", last=self.d_in)
        if self.merged:
            self.x = None                               # nothing kept for backward
            return self.base_layer(x)                   # x W'ᵀ + b
        checks.finite_array(x, "DoRALinear input")
        self.x, self.V = x, self.direction()
        self.n = row_norm(self.V)                        # n(W₀ + s·BA), Eq. 2.8
        self.u = x @ self.p["lora_A"].T                  # u = x Aᵀ
        self.z = x @ self.base_layer.p["weight"].T + self.scaling * (self.u @ self.p["lora_B"].T)
        y = (self.p[MAGNITUDE] / self.n) * self.z        # (m/n) ⊙ z, Eq. 2.9
        return y + self.base_layer.p["bias"] if "bias" in self.base_layer.p else y

    def backward(self, dy):
        """Eq. 2.10: dm = dc/n; dz = c ⊙ dy → LoRA's Eq. 2.5; exact mode adds V's path to A, B."""
        if self.merged:
            raise RuntimeError("DoRALinear.backward: the layer is merged (W' is one matrix); "
                               "call unmerge() before training")
        stale_forward(self, self.x, "DoRALinear")
        check_array(dy, "DoRALinear upstream gradient", last=self.d_out)
        m, n, s = self.p[MAGNITUDE], self.n, self.scaling
        x2, u2 = self.x.reshape(-1, self.d_in), self.u.reshape(-1, self.r)
        dy2, z2 = dy.reshape(-1, self.d_out), self.z.reshape(-1, self.d_out)
        dc = (dy2 * z2).sum(0)                           # ∂L/∂c, c = m/n
        self._accumulate(MAGNITUDE, dc / n)              # ∂L/∂m = dc/n
        dz2 = dy2 * (m / n)                              # ∂L/∂z = c ⊙ dy
        dB = s * (dz2.T @ u2)                            # LoRA's Eq. 2.5 with dz in place of dy
        du2 = s * (dz2 @ self.p["lora_B"])
        dA = du2.T @ x2
        if not self.detach_norm:                         # n depends on A, B: ∂n_i/∂V_i = V_i/n_i
            dV = (-dc * m / n ** 3)[:, None] * self.V    # ∂L/∂V through n only
            dB += s * (dV @ self.p["lora_A"].T)
            dA += s * (self.p["lora_B"].T @ dV)
        self._accumulate("lora_B", dB)
        self._accumulate("lora_A", dA)
        dx2 = dz2 @ self.base_layer.p["weight"] + du2 @ self.p["lora_A"]
        return dx2.reshape(self.x.shape)

    def _merged_weight(self, sign: int) -> np.ndarray:
        """W' (sign +1, from W₀) or W₀ = diag(n/m)·W' − s·BA (sign −1, n stored by merge), checked finite."""
        W = self.base_layer.p["weight"]
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            if sign > 0:
                new = self.weight().astype(W.dtype)
            else:
                new = (W * (self._merged_norm / self.p[MAGNITUDE])[:, None] - self.delta_weight()).astype(W.dtype)
        if not np.isfinite(new).all():
            what = "merge" if sign > 0 else "unmerge (a zero magnitude cannot be undone)"
            raise ValueError(f"DoRALinear.{what}: the new weight has "
                             f"{int(new.size - np.count_nonzero(np.isfinite(new)))} NaN/inf entries; W is unchanged")
        return new

    def _set_weight(self, new: np.ndarray, merged: bool):
        if merged:
            self._merged_norm = row_norm(self.direction())  # n at merge time, for unmerge
        self.base_layer.p["weight"][...] = new
        self.merged = merged


# ----------------------------------------------------------------------------- the model
def dora_layers(model: Module) -> dict[str, DoRALinear]:
    return {path: mod for path, mod in model.named_modules() if isinstance(mod, DoRALinear)}


def attach_dora(model: Module, targets=("query", "value"), r: int = 8, alpha: float = 8,
                rslora: bool = False, init: str = "kaiming-uniform", seed: int = 0,
                detach_norm: bool = True, freeze_base: bool = True) -> list[str]:
    """``lora.attach_lora`` for DoRA: same matching, checks and A draws (same seed, same A);
    everything is checked before the model changes; returns the paths replaced."""
    alpha, seed = attach_args("attach_dora", init, INITS, alpha, rslora, seed, freeze_base)
    checks.boolean(detach_norm, "detach_norm")
    chosen = checked_targets(model, targets, r, DoRALinear, "attach_dora")
    for p in chosen:
        try:
            W = check_finite(get_submodule(model, p).p["weight"], f"{p}.weight")
        except (TypeError, ValueError) as e:
            raise type(e)(f"attach_dora: {p}: {e}") from None
        if not (row_norm(W) > 0).all():
            raise ValueError(f"attach_dora: {p}.weight has a zero row (no direction to normalise)")
    rng = np.random.default_rng(seed)
    if freeze_base:
        model.freeze()
    for p in chosen:
        set_submodule(model, p, DoRALinear(get_submodule(model, p), r, alpha, rslora, init, rng, detach_norm))
    return chosen


def merge_all(model: Module) -> list[str]:
    """Merge every DoRA layer, all or none (``lora.merge_layers``)."""
    return merge_layers(dora_layers(model), merge=True)


def unmerge_all(model: Module) -> list[str]:
    return merge_layers(dora_layers(model), merge=False)


# ----------------------------------------------------------------------------- count
def dora_params(shape, r: int, targets=("query", "value")) -> int:
    """LoRA's count plus one magnitude per output row (Eq. 2.11):
    L · Σ_targets [r·(d_in + d_out) + d_out]. ``shape``: a ``counting.ModelShape`` or a real
    model's {path: (d_in, d_out)}, as for ``lora.lora_params``."""
    n_lora = lora.lora_params(shape, r, targets)        # validates r and the targets
    if not isinstance(shape, C.ModelShape):
        return n_lora + sum(shape[p][1] for p in lora.match_targets(shape, targets))   # + d_out each
    mats = C.linear_shapes(shape)
    names = tuple(mats) if targets == "all-linear" else C.canonical_names(targets)
    return n_lora + shape.layers * sum(mats[t][1] for t in names)   # + d_out each


# ----------------------------------------------------------------------------- peft's files
# A peft DoRA adapter is a LoRA adapter (``lora.PEFT_FORMAT``) whose config says ``use_dora: true``
# and which holds one more tensor per adapted layer, ``lora_magnitude_vector`` of shape (d_out,).
# ``peft_io.save_adapter(model, folder, fmt=dora.PEFT_FORMAT)`` writes it, ``load_adapter`` reads it.
def _peft_attach(lib, model, settings: dict):
    (r, alpha, rslora), = set(settings.values())
    lib.attach_dora(model, tuple(settings), r=r, alpha=alpha, rslora=rslora)


def _peft_shape(name: str, s, d_in: int, d_out: int) -> tuple:
    return (d_out,) if name == MAGNITUDE else lora.PEFT_FORMAT.shape(name, s, d_in, d_out)


PEFT_FORMAT = dataclasses.replace(
    lora.PEFT_FORMAT, name="DoRA", module=__name__, layers="dora_layers",
    tensors={**lora.PEFT_FORMAT.tensors, MAGNITUDE: MAGNITUDE}, shape=_peft_shape,
    fixed={**lora.PEFT_FORMAT.fixed, "use_dora": True}, attach=_peft_attach)


__all__ = ["DoRALinear", "INITS", "MAGNITUDE", "PEFT_FORMAT", "attach_dora", "dora_layers", "dora_params", "merge_all",
           "row_norm", "unmerge_all"]
