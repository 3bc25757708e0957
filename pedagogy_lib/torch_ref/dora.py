"""PyTorch twin of ``pedagogy_lib.dora`` (same names, same seed → same A), and DoRA's peft files.

Autograd replaces the hand-written backward of Eq. 2.10: ``detach_norm=True`` detaches n
(peft's choice), ``False`` lets the gradient flow through it; tests check both against NumPy.

File format (chapter 02, §11): a peft DoRA adapter is a LoRA adapter (``peft_io``) whose
config says ``use_dora: true`` and whose safetensors add, for each adapted Linear at path P,
``base_model.model.P.lora_magnitude_vector`` of shape (d_out,). ``peft_io.check_config``
refuses ``use_dora``, so ``load_dora_adapter`` checks that key itself and hands the rest of
the config to ``check_config``. These live here, not in ``dora.py``, because ``peft_io`` sits
on this floor (tests/test_layers.py).
"""
from __future__ import annotations

import json
import pathlib

import numpy as np
import torch
from torch import nn

from .. import checks, peft_io
from .. import dora as np_dora
from .. import lora as np_lora
from ..checkpoint import read_safetensors
from ..dora import INITS, MAGNITUDE, check_bool
from ..nn import Module
from ..lora import (already_adapted, check_alpha, check_rank, init_A, match_targets, merge_layers,
                    scaling)
from .lora import _numpy_dtype, _set, linear_paths


class DoRALinear(nn.Module):
    """y = (m/n) ⊙ (x W₀ᵀ + s·(x Aᵀ) Bᵀ) + b  (Eq. 2.9); n detached when ``detach_norm``."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, rslora: bool = False,
                 init: str = "kaiming-uniform", rng: np.random.Generator | None = None,
                 detach_norm: bool = True):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"DoRALinear adapts a torch.nn.Linear, got {type(base).__name__}")
        if init not in INITS:
            raise ValueError(f"DoRALinear: unknown init {init!r}; choose one of {INITS}")
        W = base.weight
        if not torch.isfinite(W).all():
            raise ValueError("DoRALinear base weight: contains NaN/inf")
        self.d_in, self.d_out = base.in_features, base.out_features
        self.r = check_rank(r, self.d_in, self.d_out)
        self.alpha, self.rslora = check_alpha(alpha), check_bool(rslora, "rslora")
        self.scaling = scaling(self.r, self.alpha, rslora)
        self.init, self.detach_norm = init, check_bool(detach_norm, "detach_norm")
        n0 = torch.linalg.vector_norm(W.detach(), dim=1)
        if not (n0 > 0).all():
            raise ValueError("DoRALinear: a row of W₀ is zero; its direction W/‖W‖ is undefined")
        rng = np.random.default_rng(0) if rng is None else rng
        like = dict(device=W.device, dtype=W.dtype)
        A = init_A(self.r, self.d_in, init, rng, _numpy_dtype(W.dtype))
        for p in base.parameters():
            p.requires_grad_(False)
        self.base_layer = base
        self.lora_A = nn.Parameter(torch.from_numpy(np.ascontiguousarray(A)).to(**like))
        self.lora_B = nn.Parameter(torch.zeros(self.d_out, self.r, **like))
        self.lora_magnitude_vector = nn.Parameter(n0.clone())   # m = ‖W₀‖ ⇒ W' = W₀
        self.merged = False

    def extra_repr(self) -> str:
        return (f"d_in={self.d_in}, d_out={self.d_out}, r={self.r}, alpha={self.alpha:g}, "
                f"detach_norm={self.detach_norm}, merged={self.merged}")

    def delta_weight(self) -> torch.Tensor:
        return self.scaling * (self.lora_B @ self.lora_A)

    def norm(self) -> torch.Tensor:
        """n = ‖W₀ + s·BA‖ per row (Eq. 2.8). In peft's mode it is computed outside autograd,
        so nothing of the d_out×d_in matrix V is kept for the backward."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.detach_norm):
            return torch.linalg.vector_norm(self.base_layer.weight + self.delta_weight(), dim=1)

    def forward(self, x):
        if self.merged:
            return self.base_layer(x)
        z = x @ self.base_layer.weight.T + self.scaling * ((x @ self.lora_A.T) @ self.lora_B.T)
        y = (self.lora_magnitude_vector / self.norm()) * z
        return y if self.base_layer.bias is None else y + self.base_layer.bias

    @torch.no_grad()
    def _merged_weight(self, sign: int) -> torch.Tensor:
        W, m = self.base_layer.weight, self.lora_magnitude_vector
        if sign > 0:
            V = W + self.delta_weight()
            new = (m / torch.linalg.vector_norm(V, dim=1))[:, None] * V
        else:
            new = W * (self._merged_norm / m)[:, None] - self.delta_weight()
        if not torch.isfinite(new).all():
            raise ValueError(f"DoRALinear.{'merge' if sign > 0 else 'unmerge'}: the new weight has "
                             f"{int((~torch.isfinite(new)).sum())} NaN/inf entries; W is unchanged")
        return new

    @torch.no_grad()
    def _set_weight(self, new: torch.Tensor, merged: bool):
        if merged:
            self._merged_norm = torch.linalg.vector_norm(self.base_layer.weight + self.delta_weight(), dim=1)
        self.base_layer.weight.copy_(new)
        self.merged = merged

    def merge(self):
        if self.merged:
            raise RuntimeError("DoRALinear.merge: already merged")
        self._set_weight(self._merged_weight(+1), True)
        return self

    def unmerge(self):
        if not self.merged:
            raise RuntimeError("DoRALinear.unmerge: not merged")
        self._set_weight(self._merged_weight(-1), False)
        return self


def dora_layers(model: nn.Module) -> dict[str, DoRALinear]:
    return {p: m for p, m in model.named_modules() if isinstance(m, DoRALinear)}


def attach_dora(model: nn.Module, targets=("query", "value"), r: int = 8, alpha: float = 8,
                rslora: bool = False, init: str = "kaiming-uniform", seed: int = 0,
                detach_norm: bool = True, freeze_base: bool = True) -> list[str]:
    """Torch twin of ``dora.attach_dora``: same matching, same checks, same A for the same seed."""
    if init not in INITS:
        raise ValueError(f"attach_dora: unknown init {init!r}; choose one of {INITS}")
    alpha = check_alpha(alpha)
    scaling(1, alpha, check_bool(rslora, "rslora"))
    check_bool(detach_norm, "detach_norm")
    seed = checks.seed(seed)
    check_bool(freeze_base, "freeze_base")
    already = already_adapted(model.named_modules(), targets, DoRALinear)
    if already:
        raise ValueError(f"attach_dora: {already[:3]} already carry DoRA; merge or load into a fresh model")
    shapes = linear_paths(model)
    chosen = match_targets(shapes, targets)
    for p in chosen:
        try:
            check_rank(r, *shapes[p])
        except (TypeError, ValueError) as e:
            raise type(e)(f"attach_dora: {p}: {e}") from None
        W = model.get_submodule(p).weight
        if not torch.isfinite(W).all() or not (torch.linalg.vector_norm(W, dim=1) > 0).all():
            raise ValueError(f"attach_dora: {p}.weight has NaN/inf or a zero row")
    rng = np.random.default_rng(seed)
    if freeze_base:
        for p in model.parameters():
            p.requires_grad_(False)
    for p in chosen:
        _set(model, p, DoRALinear(model.get_submodule(p), r, alpha, rslora, init, rng, detach_norm))
    return chosen


def merge_all(model: nn.Module) -> list[str]:
    return merge_layers(dora_layers(model), merge=True)


def unmerge_all(model: nn.Module) -> list[str]:
    return merge_layers(dora_layers(model), merge=False)


# ----------------------------------------------------------------------------- peft's files
def _root(model):
    """(backend, encoder): a MiniLM façade (``.bert``) or a bare encoder, NumPy or torch."""
    root = model.bert if hasattr(model, "bert") else model
    if isinstance(root, Module):
        return "numpy", root
    if isinstance(root, nn.Module):
        return "torch", root
    raise TypeError(f"expected our NumPy or torch encoder (or a MiniLM holding one), got {type(model).__name__}")


def _lib(backend):
    """(dora_layers, attach_dora, linear_paths) of the backend."""
    if backend == "numpy":
        return np_dora.dora_layers, np_dora.attach_dora, np_lora.linear_paths
    return dora_layers, attach_dora, linear_paths


def _numpy(layer, name: str) -> np.ndarray:
    v = layer.p[name] if hasattr(layer, "p") else getattr(layer, name)
    return v if isinstance(v, np.ndarray) else v.detach().cpu().numpy()


def save_dora_adapter(model, directory, base_model_name_or_path: str | None = None) -> pathlib.Path:
    """Write the model's DoRA layers as a peft adapter directory (float32): LoRA's config
    (``peft_io.adapter_config``) with ``use_dora: true``, A, B and m per layer."""
    from safetensors.numpy import save

    backend, root = _root(model)
    layers_of, _, paths_of = _lib(backend)
    layers = layers_of(root)
    if not layers:
        raise ValueError("save_dora_adapter: the model has no DoRA layers (call attach_dora first)")
    kinds = {(m.r, m.alpha, m.rslora) for m in layers.values()}
    if len(kinds) != 1:
        raise ValueError(f"save_dora_adapter: layers differ in (r, alpha, rslora) {sorted(kinds)}")
    merged = [p for p, m in layers.items() if m.merged]
    if merged:
        raise ValueError(f"save_dora_adapter: {merged[:2]} are merged; unmerge first")
    tensors = {}
    for path, layer in layers.items():
        for name, key in (("lora_A", "lora_A.weight"), ("lora_B", "lora_B.weight"), (MAGNITUDE, MAGNITUDE)):
            tensors[f"{peft_io.PREFIX}{path}.{key}"] = np.ascontiguousarray(_numpy(layer, name), np.float32)
    bad = [k for k, v in tensors.items() if not np.isfinite(v).all()]
    if bad:
        raise ValueError(f"save_dora_adapter: {bad[:2]} contain NaN/inf; nothing was written")
    universe = sorted(set(paths_of(root)) | set(layers))
    (r, alpha, rslora), = kinds
    config = peft_io.adapter_config(r, alpha, rslora, peft_io.describe_targets(layers, universe),
                                    base_model_name_or_path) | {"use_dora": True}
    directory = pathlib.Path(directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"save_dora_adapter: {directory} exists and is not a directory")
    checks.write_atomically({directory / peft_io.WEIGHTS_NAME: save(tensors, metadata={"format": "pt"}),
                             directory / peft_io.CONFIG_NAME: json.dumps(config, indent=2, sort_keys=True) + "\n"})
    return directory


def read_dora_config(directory) -> dict:
    """The checked config of a peft DoRA adapter: ``use_dora`` must be true; every other
    field goes through ``peft_io.check_config`` (which only knows plain LoRA)."""
    path = pathlib.Path(directory) / peft_io.CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{directory} has no {peft_io.CONFIG_NAME}")
    cfg = checks.read_json(path, max_bytes=1 << 20)
    if not isinstance(cfg, dict) or cfg.get("use_dora") is not True:
        raise ValueError(f"{path}: use_dora is {cfg.get('use_dora') if isinstance(cfg, dict) else None!r}; "
                         "a DoRA adapter says true (a plain LoRA adapter loads with peft_io.load_adapter)")
    return peft_io.check_config({**cfg, "use_dora": False})


def _dora_plan(backend, root, cfg, weights) -> dict[str, dict[str, np.ndarray]]:
    """{path: {lora_A, lora_B, lora_magnitude_vector}} after checking keys, shapes, values."""
    layers_of, _, paths_of = _lib(backend)
    shapes = {**paths_of(root), **{p: (m.d_in, m.d_out) for p, m in layers_of(root).items()}}
    matched = match_targets([*shapes, *[p for p in peft_io.HF_ONLY_LINEARS if p not in shapes]],
                            cfg["target_modules"])
    chosen = [p for p in matched if p in shapes]
    keys = {"lora_A": "lora_A.weight", "lora_B": "lora_B.weight", MAGNITUDE: MAGNITUDE}
    expected = {f"{peft_io.PREFIX}{p}.{k}": (p, name) for p in chosen for name, k in keys.items()}
    skipped = {f"{peft_io.PREFIX}{p}.{k}" for p in matched if p not in shapes for k in keys.values()}
    missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected) - skipped)
    if not chosen or missing or unexpected:
        raise ValueError(f"DoRA adapter weights do not fit target_modules {cfg['target_modules']!r}: "
                         f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    r, plan = cfg["r"], {p: {} for p in chosen}
    for key, (p, name) in expected.items():
        d_in, d_out = shapes[p]
        check_rank(r, d_in, d_out)
        want = {"lora_A": (r, d_in), "lora_B": (d_out, r), MAGNITUDE: (d_out,)}[name]
        v = weights[key]
        if v.shape != want or v.dtype.kind != "f":
            raise ValueError(f"{key}: shape {v.shape} dtype {v.dtype}, expected float {want}")
        plan[p][name] = checks.finite_array(v, key)
    existing = layers_of(root)
    if existing and (sorted(existing) != sorted(chosen) or any(
            (m.r, m.alpha, m.rslora, m.merged) != (r, cfg["alpha"], cfg["rslora"], False) for m in existing.values())):
        raise ValueError("the model already has DoRA layers that do not match this adapter; load into a fresh model")
    return plan


def load_dora_adapter(model, directory) -> list[str]:
    """Load a peft DoRA adapter into our NumPy or torch model; every check runs first."""
    backend, root = _root(model)
    layers_of, attach, _ = _lib(backend)
    cfg = read_dora_config(directory)
    w_path = pathlib.Path(directory) / peft_io.WEIGHTS_NAME
    if not w_path.is_file():
        raise ValueError(f"{directory} has no {peft_io.WEIGHTS_NAME} (pickled weights are never read)")
    plan = _dora_plan(backend, root, cfg, read_safetensors(w_path))
    if not layers_of(root):
        attach(root, tuple(plan), r=cfg["r"], alpha=cfg["alpha"], rslora=cfg["rslora"])
    layers = layers_of(root)
    for p, values in plan.items():
        for name, v in values.items():
            if backend == "numpy":
                layers[p].p[name][...] = v
            else:
                with torch.no_grad():
                    getattr(layers[p], name).copy_(torch.from_numpy(np.ascontiguousarray(v)))
    return list(plan)


__all__ = ["DoRALinear", "attach_dora", "dora_layers", "load_dora_adapter", "merge_all", "read_dora_config",
           "save_dora_adapter", "unmerge_all"]
