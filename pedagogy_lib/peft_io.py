"""LoRA adapters in Hugging Face peft's file format: save ours, load theirs (chapter 02, §5).

A peft LoRA adapter is a directory with two files (facts read from huggingface/peft):

* ``adapter_config.json``: ``json.dumps(config, indent=2, sort_keys=True)`` with
  ``peft_type: "LORA"``, ``r``, ``lora_alpha``, ``target_modules``, ``use_rslora`` …;
* ``adapter_model.safetensors`` (metadata ``{"format": "pt"}``) holding, for every adapted
  Linear at dotted path P of the base model, ``base_model.model.P.lora_A.weight`` (r, d_in)
  and ``base_model.model.P.lora_B.weight`` (d_out, r). Our layers store A and B in exactly
  that orientation, so nothing is transposed.

Paths are those of the bare encoder (``encoder.layer.0.attention.self.query``), which is
what ``transformers.BertModel`` calls them. Loading checks the whole file against the model
before changing anything, reads only safetensors (a pickled ``adapter_model.bin`` is refused,
never opened) and works for our NumPy model and our torch twin alike.
"""
from __future__ import annotations

import json
import math
import numbers
import pathlib

import numpy as np

from . import checks
from . import lora as np_lora
from .checkpoint import read_safetensors
from .checks import write_atomically
from .nn import Module

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PICKLED_NAMES = ("adapter_model.bin", "adapter_model.pt", "adapter_model.pth")
PREFIX = "base_model.model."
# Linear modules that transformers' BertModel has and our mean-pooling encoder leaves out:
# a target such as "dense" also adapts them in peft, so they take part in target matching,
# and their weights in a file are skipped (mean pooling never uses the pooler).
HF_ONLY_LINEARS = ("pooler.dense",)
# What peft's AutoPeftModel reads to rebuild the base model (our paths are BertModel's).
AUTO_MAPPING = {"base_model_class": "BertModel", "parent_library": "transformers.models.bert.modeling_bert"}
# init_lora_weights values that rewrite the base weights (PiSSA, OLoRA, …): such an adapter
# only reproduces the fine-tuned model together with a modified base, which we do not have.
_BASE_CHANGING_INITS = ("pissa", "olora", "corda", "eva", "loftq", "orthogonal")


# ----------------------------------------------------------------------------- the model side
def _root(model):
    """(backend, encoder) for a MiniLM façade, a SentenceEncoder or a bare encoder."""
    root = model
    if hasattr(root, "net") and hasattr(root, "tokenizer"):     # models.MiniLM
        root = root.net
    if hasattr(root, "head") and hasattr(root, "encoder"):      # torch_ref.train.Classifier
        root = root.encoder
    if hasattr(root, "bert") and not hasattr(root, "encoder"):  # SentenceEncoder
        root = root.bert
    if isinstance(root, Module):
        return "numpy", root
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        torch = None
    if torch is not None and isinstance(root, torch.nn.Module):
        return "torch", root
    raise TypeError(f"expected our NumPy or torch encoder (or a model holding one), got {type(model).__name__}")


def _lib(backend):
    if backend == "numpy":
        return np_lora
    from .torch_ref import lora as torch_lora

    return torch_lora


def _factors(backend, layer) -> tuple[np.ndarray, np.ndarray]:
    if backend == "numpy":
        return layer.p["lora_A"], layer.p["lora_B"]
    return layer.lora_A.detach().cpu().numpy(), layer.lora_B.detach().cpu().numpy()


def _all_linear_paths(backend, root) -> list[str]:
    lib = _lib(backend)
    return sorted(set(lib.linear_paths(root)) | set(lib.lora_layers(root)))


def describe_targets(paths, universe) -> list[str]:
    """``target_modules`` for a config: the leaf names (["query", "value"]) when peft's suffix
    rule picks exactly ``paths`` out of ``universe`` (our Linears plus HF_ONLY_LINEARS);
    otherwise the full paths, which peft matches exactly."""
    paths = sorted(paths)
    leaves = sorted({p.rsplit(".", 1)[-1] for p in paths})
    picked = [p for p in [*universe, *HF_ONLY_LINEARS] if np_lora.target_matches(p, leaves)]
    return leaves if sorted(set(picked)) == paths else paths


def adapter_config(r: int, alpha: float, rslora: bool, target_modules,
                   base_model_name_or_path: str | None = None) -> dict:
    """The fields peft's LoraConfig writes that define a plain LoRA adapter."""
    return {
        "peft_type": "LORA", "task_type": None, "base_model_name_or_path": base_model_name_or_path,
        "revision": None, "inference_mode": True,
        "r": int(r), "lora_alpha": int(alpha) if float(alpha).is_integer() else float(alpha), "use_rslora": bool(rslora), "target_modules": target_modules,
        "lora_dropout": 0.0, "fan_in_fan_out": False, "bias": "none", "lora_bias": False,
        "init_lora_weights": True, "use_dora": False, "modules_to_save": None,
        "layers_to_transform": None, "layers_pattern": None, "rank_pattern": {}, "alpha_pattern": {},
        "exclude_modules": None, "target_parameters": None,
        "auto_mapping": AUTO_MAPPING,
    }


def save_adapter(model, directory, base_model_name_or_path: str | None = None,
                 dtype=np.float32) -> pathlib.Path:
    """Write the model's LoRA layers as a peft adapter directory; returns the directory.

    All layers must share r, α and the scaling rule (peft's rank_pattern is not written),
    and none may come from init='pissa' (its base weights differ from the checkpoint's).
    """
    backend, root = _root(model)
    layers = _lib(backend).lora_layers(root)
    if not layers:
        raise ValueError("save_adapter: the model has no LoRA layers (call attach_lora first)")
    kinds = {(m.r, m.alpha, m.rslora) for m in layers.values()}
    if len(kinds) != 1:
        raise ValueError(f"save_adapter: layers differ in (r, alpha, rslora) {sorted(kinds)}; "
                         "one adapter file holds one setting")
    pissa = [p for p, m in layers.items() if m.init == "pissa"]
    if pissa:
        raise ValueError(f"save_adapter: {pissa[:2]} were initialised with PiSSA, which rewrote the base "
                         "weights; the adapter alone would not reproduce the model")
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"save_adapter: dtype must be np.float32 or np.float64, got {dtype!r}")
    (r, alpha, rslora), = kinds
    tensors = {}
    for path, layer in layers.items():
        A, B = _factors(backend, layer)
        tensors[f"{PREFIX}{path}.lora_A.weight"] = np.ascontiguousarray(A, dtype=dtype)
        tensors[f"{PREFIX}{path}.lora_B.weight"] = np.ascontiguousarray(B, dtype=dtype)
    bad = [k for k, v in tensors.items() if not np.isfinite(v).all()]
    if bad:
        raise ValueError(f"save_adapter: {bad[:2]} contain NaN/inf; nothing was written")
    targets = describe_targets(layers, _all_linear_paths(backend, root))
    config = adapter_config(r, alpha, rslora, targets, base_model_name_or_path)
    return _write_adapter(directory, tensors, config, "save_adapter")


def _write_adapter(directory, tensors: dict, config: dict, caller: str) -> pathlib.Path:
    """Both files are serialised in memory, then written to temporary names and renamed:
    a failure anywhere leaves the directory as it was (never weights without a config)."""
    from safetensors.numpy import save

    config_text = json.dumps(config, indent=2, sort_keys=True, allow_nan=False) + "\n"
    weights_bytes = save(tensors, metadata={"format": "pt"})
    directory = pathlib.Path(directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"{caller}: {directory} exists and is not a directory")
    write_atomically({directory / WEIGHTS_NAME: weights_bytes, directory / CONFIG_NAME: config_text})
    return directory


# ----------------------------------------------------------------------------- reading
def _need(cond, msg):
    if not cond:
        raise ValueError(f"adapter_config.json: {msg}")


def check_config(cfg) -> dict:
    """Validate a peft LoRA config dict; return {r, alpha, rslora, target_modules}."""
    _need(isinstance(cfg, dict), f"expected a JSON object, got {type(cfg).__name__}")
    _need(cfg.get("peft_type") == "LORA",
          f"peft_type is {cfg.get('peft_type')!r}; only 'LORA' adapters can be loaded here")
    r, alpha = cfg.get("r"), cfg.get("lora_alpha")
    _need(isinstance(r, int) and not isinstance(r, bool) and r >= 1, f"r must be an int >= 1, got {r!r}")
    _need(isinstance(alpha, numbers.Real) and not isinstance(alpha, bool) and math.isfinite(alpha) and alpha > 0,
          f"lora_alpha must be a finite number > 0, got {alpha!r}")
    rslora = cfg.get("use_rslora", False)
    _need(isinstance(rslora, bool), f"use_rslora must be true or false, got {rslora!r}")
    try:
        np_lora.scaling(r, alpha, rslora)
    except ValueError as e:
        _need(False, str(e))
    targets = cfg.get("target_modules")
    _need(isinstance(targets, str) or (isinstance(targets, list) and targets
                                       and all(isinstance(t, str) and t for t in targets)),
          f"target_modules must be a regex string or a non-empty list of names, got {targets!r}")
    unsupported = {"fan_in_fan_out": False, "bias": "none", "use_dora": False, "lora_bias": False}
    for k, ok in unsupported.items():
        _need(cfg.get(k, ok) in (ok, None), f"{k}={cfg[k]!r} is not supported (only {ok!r})")
    for k in ("rank_pattern", "alpha_pattern", "modules_to_save", "layers_to_transform", "layers_pattern",
              "exclude_modules", "target_parameters"):
        _need(not cfg.get(k), f"{k}={cfg[k]!r} is not supported")
    init = cfg.get("init_lora_weights", True)
    _need(not (isinstance(init, str) and init.lower().startswith(_BASE_CHANGING_INITS)),
          f"init_lora_weights={init!r} rewrites the base weights; convert the adapter to plain LoRA first")
    _need(init is True or init is False or init == "gaussian", f"init_lora_weights={init!r} is not supported")
    return {"r": r, "alpha": float(alpha), "rslora": rslora,
            "target_modules": targets if isinstance(targets, str) else tuple(targets)}


def _read_weights(path: pathlib.Path) -> dict[str, np.ndarray]:
    """safetensors only. NumPy first; bf16/fp16 files go through torch and become float32."""
    try:
        return read_safetensors(path)
    except ValueError as first:
        try:
            import torch
            from safetensors.torch import load_file
        except ImportError:  # pragma: no cover
            raise first from None
        try:
            t = load_file(str(path))
        except Exception:
            raise first from None
        return {k: (v.float() if v.dtype in (torch.bfloat16, torch.float16) else v).numpy() for k, v in t.items()}


def read_adapter(directory) -> tuple[dict, dict[str, np.ndarray]]:
    """(checked config, {key: array}) of a peft LoRA adapter directory, touching no model."""
    return _read_dir(directory, check_config)


def _read_dir(directory, check) -> tuple[dict, dict[str, np.ndarray]]:
    """(check(config), {key: array}) of a peft adapter directory, touching no model; the
    config is read with bounded size and depth and the weights only with safetensors."""
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory")
    cfg_path, w_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{directory} has no {CONFIG_NAME}")
    if not w_path.is_file():
        pickled = [n for n in PICKLED_NAMES if (directory / n).exists()]
        hint = (f"; {pickled[0]} is a pickle, which is never unpickled here: re-save it with "
                f"safe_serialization=True") if pickled else ""
        raise ValueError(f"{directory} has no {WEIGHTS_NAME}{hint}")
    cfg = checks.read_json(cfg_path, max_bytes=1 << 20)  # size, depth, NaN bounded; path named
    return check(cfg), _read_weights(w_path)


def _targets(own: list[str], target_modules) -> tuple[list[str], list[str]]:
    """(matched, chosen): the paths ``target_modules`` selects (peft's rule, ``match_targets``)
    among this model's modules ``own`` and the HF linears our model lacks (``HF_ONLY_LINEARS``:
    matched, then skipped), and those of them in ``own``. Patterns that cannot fit, or that
    select nothing in ``own``, are refused naming the adapter's setting."""
    universe = own + [p for p in HF_ONLY_LINEARS if p not in own]
    try:
        matched = np_lora.match_targets(universe, target_modules)
    except (TypeError, ValueError) as e:
        raise ValueError(f"adapter target_modules {target_modules!r} do not fit this model: {e}") from None
    chosen = [p for p in matched if p in own]
    if not chosen:
        raise ValueError(f"adapter target_modules {target_modules!r} select no module of this model")
    return matched, chosen


def _plan(backend, root, cfg, weights) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{path: (A, B)} after checking every key, shape and value against the model."""
    lib = _lib(backend)
    matched, chosen = _targets(_all_linear_paths(backend, root), cfg["target_modules"])
    skipped = [p for p in matched if p not in chosen]   # HF linears our model lacks
    expected = {f"{PREFIX}{p}.lora_{ab}.weight": (p, ab) for p in chosen for ab in "AB"}
    skip_keys = {f"{PREFIX}{p}.lora_{ab}.weight" for p in skipped for ab in "AB"}
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected) - skip_keys)
    if missing or unexpected:
        raise ValueError(f"adapter weights do not match target_modules {cfg['target_modules']!r}: "
                         f"missing {missing[:4]}{' …' if len(missing) > 4 else ''}, "
                         f"unexpected {unexpected[:4]}{' …' if len(unexpected) > 4 else ''}")
    shapes = {**lib.linear_paths(root), **{p: (m.d_in, m.d_out) for p, m in lib.lora_layers(root).items()}}
    r = cfg["r"]
    plan: dict[str, dict] = {p: {} for p in chosen}
    for key, (p, ab) in expected.items():
        d_in, d_out = shapes[p]
        want = (r, d_in) if ab == "A" else (d_out, r)
        v = weights[key]
        if v.shape != want:
            raise ValueError(f"{key} has shape {v.shape}, expected {want} (r={r}, {d_out}×{d_in} weight)")
        if v.dtype.kind != "f":
            raise ValueError(f"{key} has dtype {v.dtype}, expected floating point")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{key} contains NaN/inf")
        plan[p][ab] = v
    if r > min(min(shapes[p]) for p in chosen):
        raise ValueError(f"r={r} exceeds min(d_in, d_out) of an adapted matrix")
    s = np_lora.scaling(r, cfg["alpha"], cfg["rslora"])
    for p, d in plan.items():  # s·BA must fit the model's float32, or every output is NaN
        with np.errstate(over="ignore", invalid="ignore"):
            peak = float(np.abs(s * (d["B"].astype(np.float64) @ d["A"].astype(np.float64))).max())
        if not peak <= np_lora.FLOAT32_MAX:
            raise ValueError(f"{p}: s·BA (s = {s:.3g}, lora_alpha={cfg['alpha']!r}) reaches {peak:.3g}, beyond "
                             f"float32's range: every output would be inf/NaN")
    existing = lib.lora_layers(root)
    if existing:
        if sorted(existing) != sorted(chosen):
            raise ValueError(f"the model already has LoRA on {sorted(existing)[:3]}…, not on the adapter's "
                             f"modules {chosen[:3]}…; load into a fresh model")
        for p, m in existing.items():
            if (m.r, m.alpha, m.rslora) != (r, cfg["alpha"], cfg["rslora"]) or m.merged or m.init == "pissa":
                raise ValueError(f"{p}: existing LoRA layer (r={m.r}, alpha={m.alpha}, rslora={m.rslora}, "
                                 f"merged={m.merged}, init={m.init}) cannot take this adapter")
    return {p: (d["A"], d["B"]) for p, d in plan.items()}


def load_adapter(model, directory) -> list[str]:
    """Load a peft LoRA adapter into our NumPy or torch model; return the adapted paths.

    Adds LoRA layers (frozen base) where the model has none; otherwise fills the existing
    ones, which must match. Every check runs before the model is touched.
    """
    backend, root = _root(model)
    cfg, weights = read_adapter(directory)
    plan = _plan(backend, root, cfg, weights)
    lib = _lib(backend)
    if not lib.lora_layers(root):
        lib.attach_lora(root, tuple(plan), r=cfg["r"], alpha=cfg["alpha"], rslora=cfg["rslora"])
    layers = lib.lora_layers(root)
    for p, (A, B) in plan.items():
        if backend == "numpy":
            layers[p].p["lora_A"][...] = A
            layers[p].p["lora_B"][...] = B
        else:
            import torch

            with torch.no_grad():
                layers[p].lora_A.copy_(torch.from_numpy(np.ascontiguousarray(A)))
                layers[p].lora_B.copy_(torch.from_numpy(np.ascontiguousarray(B)))
    return list(plan)


__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "PREFIX", "HF_ONLY_LINEARS", "adapter_config", "check_config",
           "describe_targets", "load_adapter", "read_adapter", "save_adapter"]


# ----------------------------------------------------------------------------- IA³ (chapter 06)
# A peft IA³ adapter holds, for every adapted Linear at path P, ``base_model.model.P.ia3_l``:
# shape (d_out, 1) when l scales the output, (1, d_in) when P is a feedforward module
# (peft's IA3Layer.update_layer). The config has peft_type "IA3", target_modules and
# feedforward_modules (a list entry matches a path that *ends with* it; a string is a regex).
IA3_KEY = "ia3_l"

from . import ia3 as np_ia3  # noqa: E402  (kept in this section, beside the code that uses it)


def _ia3_lib(backend):
    if backend == "numpy":
        return np_ia3
    from .torch_ref import ia3 as torch_ia3

    return torch_ia3


def _ia3_vector(backend, layer) -> np.ndarray:
    return layer.p[IA3_KEY] if backend == "numpy" else layer.ia3_l.detach().cpu().numpy()


def _ia3_universe(backend, root) -> list[str]:
    """Every Linear path of the model, IA³-wrapped or not (HF_ONLY_LINEARS not included)."""
    return sorted(set(_lib(backend).linear_paths(root)) | set(_ia3_lib(backend).ia3_layers(root)))


def _ia3_feedforward_names(paths: list[str], ff: list[str], targets) -> list[str]:
    """feedforward_modules for a config: the leaf names when peft's endswith rule picks exactly
    ``ff`` out of ``paths`` and they are among the (list) targets; else the full paths."""
    leaves = sorted({p.rsplit(".", 1)[-1] for p in ff})
    exact = sorted(p for p in paths if np_ia3.feedforward_matches(p, leaves)) == sorted(ff)
    return leaves if exact and set(leaves) <= set(targets) else sorted(ff)


def ia3_adapter_config(target_modules, feedforward_modules, base_model_name_or_path: str | None = None) -> dict:
    """The fields peft's IA3Config writes."""
    return {"peft_type": "IA3", "task_type": None, "base_model_name_or_path": base_model_name_or_path,
            "revision": None, "inference_mode": True, "target_modules": target_modules,
            "feedforward_modules": feedforward_modules, "exclude_modules": None, "fan_in_fan_out": False,
            "modules_to_save": None, "init_ia3_weights": True, "auto_mapping": AUTO_MAPPING}


def save_ia3_adapter(model, directory, base_model_name_or_path: str | None = None,
                     dtype=np.float32) -> pathlib.Path:
    """Write the model's IA³ layers as a peft IA³ adapter directory; returns the directory."""
    backend, root = _root(model)
    layers = _ia3_lib(backend).ia3_layers(root)
    if not layers:
        raise ValueError("save_ia3_adapter: the model has no IA³ layers (call attach_ia3 first)")
    merged = [p for p, m in layers.items() if m.merged]
    if merged:
        raise ValueError(f"save_ia3_adapter: {merged[:2]} are merged (l is inside W); unmerge first")
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"save_ia3_adapter: dtype must be np.float32 or np.float64, got {dtype!r}")
    tensors = {}
    for path, m in layers.items():
        v = np.asarray(_ia3_vector(backend, m), dtype=dtype)
        if not np.all(np.isfinite(v)):
            raise ValueError(f"save_ia3_adapter: {path}.ia3_l contains NaN/inf")
        tensors[f"{PREFIX}{path}.{IA3_KEY}"] = np.ascontiguousarray(v[None, :] if m.feedforward else v[:, None])
    paths = sorted(layers)
    targets = describe_targets(paths, _ia3_universe(backend, root))
    ff = [p for p in paths if layers[p].feedforward]
    ff_names = _ia3_feedforward_names(paths, ff, targets)
    if not set(ff_names) <= set(targets):  # peft checks feedforward ⊆ targets as names
        targets = paths
    config = ia3_adapter_config(targets, ff_names, base_model_name_or_path)
    return _write_adapter(directory, tensors, config, "save_ia3_adapter")


def check_ia3_config(cfg) -> dict:
    """Validate a peft IA³ config dict; return {target_modules, feedforward_modules}."""
    _need(isinstance(cfg, dict), f"expected a JSON object, got {type(cfg).__name__}")
    _need(cfg.get("peft_type") == "IA3",
          f"peft_type is {cfg.get('peft_type')!r}; only 'IA3' adapters can be loaded here")
    targets, ff = cfg.get("target_modules"), cfg.get("feedforward_modules")
    _need(isinstance(targets, str) or (isinstance(targets, list) and targets
                                       and all(isinstance(t, str) and t for t in targets)),
          f"target_modules must be a regex string or a non-empty list of names, got {targets!r}")
    _need(isinstance(ff, str) or (isinstance(ff, list) and all(isinstance(f, str) and f for f in ff)),
          f"feedforward_modules must be a regex string or a list of names, got {ff!r}")
    if isinstance(targets, list) and isinstance(ff, list):
        _need(set(ff) <= set(targets), f"feedforward_modules {ff} must be a subset of target_modules {targets}")
    _need(cfg.get("fan_in_fan_out", False) in (False, None), f"fan_in_fan_out={cfg.get('fan_in_fan_out')!r} "
          "is not supported (only false)")
    for k in ("modules_to_save", "exclude_modules", "layers_to_transform", "layers_pattern"):
        _need(not cfg.get(k), f"{k}={cfg.get(k)!r} is not supported")
    try:
        ff = np_ia3.check_feedforward(ff)
    except (TypeError, ValueError) as e:
        raise ValueError(f"adapter_config.json: {e}") from None
    return {"target_modules": targets if isinstance(targets, str) else tuple(targets), "feedforward_modules": ff}


def read_ia3_adapter(directory) -> tuple[dict, dict[str, np.ndarray]]:
    """(checked IA³ config, {key: array}) of a peft adapter directory, touching no model."""
    return _read_dir(directory, check_ia3_config)


def _ia3_plan(backend, root, cfg, weights) -> dict[str, tuple[bool, np.ndarray]]:
    """{path: (feedforward, l)} after checking every key, shape and value against the model."""
    own = _ia3_universe(backend, root)
    matched, chosen = _targets(own, cfg["target_modules"])
    ff = {p: np_ia3.feedforward_matches(p, cfg["feedforward_modules"]) for p in chosen}
    expected = {f"{PREFIX}{p}.{IA3_KEY}": p for p in chosen}
    skip_keys = {f"{PREFIX}{p}.{IA3_KEY}" for p in matched if p not in own}
    missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected) - skip_keys)
    if missing or unexpected:
        raise ValueError(f"adapter weights do not match target_modules {cfg['target_modules']!r}: "
                         f"missing {missing[:4]}{' …' if len(missing) > 4 else ''}, "
                         f"unexpected {unexpected[:4]}{' …' if len(unexpected) > 4 else ''}")
    lib = _ia3_lib(backend)
    existing = lib.ia3_layers(root)
    shapes = {**_lib(backend).linear_paths(root), **{p: (m.d_in, m.d_out) for p, m in existing.items()}}
    plan = {}
    for key, p in expected.items():
        v, (d_in, d_out) = weights[key], shapes[p]
        want = (1, d_in) if ff[p] else (d_out, 1)
        if v.shape != want:
            side = "input (feedforward)" if ff[p] else "output"
            raise ValueError(f"{key} has shape {v.shape}, expected {want} ({side} scaling of a {d_out}×{d_in} weight)")
        if v.dtype.kind != "f":
            raise ValueError(f"{key} has dtype {v.dtype}, expected floating point")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{key} contains NaN/inf")
        plan[p] = (ff[p], v.reshape(-1))
    if existing:
        now = {p: m.feedforward for p, m in existing.items()}
        if now != ff or any(m.merged for m in existing.values()):
            raise ValueError(f"the model already has IA³ layers on {sorted(now)[:3]}… (merged or placed "
                             f"differently from the adapter's {chosen[:3]}…); load into a fresh model")
    return plan


def load_ia3_adapter(model, directory) -> list[str]:
    """Load a peft IA³ adapter into our NumPy or torch model; return the adapted paths.

    Wraps the adapter's Linears in IA³ layers (base frozen) when the model has none;
    otherwise fills the existing ones, which must sit on the same modules, with the same
    input/output side, unmerged. Every check runs before the model is touched.
    """
    backend, root = _root(model)
    cfg, weights = read_ia3_adapter(directory)
    plan = _ia3_plan(backend, root, cfg, weights)
    lib = _ia3_lib(backend)
    if not lib.ia3_layers(root):
        lib.attach_ia3(root, tuple(plan), tuple(p for p, (ff, _) in plan.items() if ff))
    layers = lib.ia3_layers(root)
    for p, (_, l) in plan.items():
        if backend == "numpy":
            layers[p].p[IA3_KEY][...] = l
        else:
            import torch

            with torch.no_grad():
                layers[p].ia3_l.copy_(torch.from_numpy(np.ascontiguousarray(l)))
    return list(plan)


__all__ += ["IA3_KEY", "check_ia3_config", "ia3_adapter_config", "load_ia3_adapter", "read_ia3_adapter",
            "save_ia3_adapter"]
