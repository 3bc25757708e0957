"""Adapters in Hugging Face peft's file format: save ours, load theirs (chapters 02, 06, 10).

A peft adapter is a directory with two files (facts read from huggingface/peft):

* ``adapter_config.json``: ``json.dumps(config, indent=2, sort_keys=True)`` with
  ``peft_type``, ``target_modules`` and the method's own fields;
* ``adapter_model.safetensors`` (metadata ``{"format": "pt"}``) holding, for every adapted
  Linear at dotted path P of the base model, the method's tensors ``base_model.model.P.<suffix>``
  (LoRA: ``lora_A.weight`` (r, d_in) and ``lora_B.weight`` (d_out, r); IA³: ``ia3_l``).

This module does what every method shares, once: the two files (written atomically, read
with bounded size; a pickled ``adapter_model.bin`` is refused, never opened), the key prefix,
the common config fields, target matching, and loading that checks the whole file against
the model before changing anything, into our NumPy model or our torch twin alike. What
differs between methods is a ``peft_format.PeftFormat`` in the method's own module, which the
caller passes: ``load_adapter(model, folder, fmt=ia3.PEFT_FORMAT)``; a new method adds its
format there and nothing here. LoRA's (``lora.PEFT_FORMAT``) is the default: it is peft's
principal format, the one chapters 02, 10 and 11 exchange, and the one DoRA extends (DoRA's
files are LoRA files with ``use_dora`` and a magnitude vector per layer). A default argument
is not a table of methods: nothing here dispatches on ``peft_type``.

Paths are those of the bare encoder (``encoder.layer.0.attention.self.query``), which is
what ``transformers.BertModel`` calls them.
"""
from __future__ import annotations

import importlib
import json
import pathlib

import numpy as np

from . import checks
from . import lora as np_lora
from .checkpoint import read_safetensors
from .checks import write_atomically
from .nn import Module
from .peft_format import PeftFormat, check_format, show

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
LORA = np_lora.PEFT_FORMAT
# Config fields every method's file may carry and ours never uses (refused unless empty).
UNUSED_FIELDS = ("modules_to_save", "exclude_modules", "layers_to_transform", "layers_pattern")


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


def _lib(fmt: PeftFormat, backend: str):
    """The method's module for the model's backend: ``fmt.module`` or its torch twin."""
    if backend == "numpy":
        return importlib.import_module(fmt.module)
    package, name = fmt.module.rsplit(".", 1)
    return importlib.import_module(f"{package}.torch_ref.{name}")


def _model_side(fmt: PeftFormat, model):
    """(backend, root, lib, {path: method layer}, {path: (d_in, d_out)} of every Linear, wrapped or not)."""
    fmt, (backend, root) = check_format(fmt), _root(model)
    lib = _lib(fmt, backend)
    layers = getattr(lib, fmt.layers)(root)
    plain = _lib(LORA, backend).linear_paths(root)  # every plain Linear: the walk lora and its twin share
    return backend, root, lib, layers, {**plain, **{p: (m.d_in, m.d_out) for p, m in layers.items()}}


def _get(backend: str, layer, name: str) -> np.ndarray:
    if backend == "numpy":
        return layer.p[name]
    import torch

    t = getattr(layer, name).detach().cpu()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()  # NumPy has no bfloat16; float32 holds it exactly


def _put(backend: str, layer, name: str, value: np.ndarray):
    if backend == "numpy":
        layer.p[name][...] = value.reshape(layer.p[name].shape)
        return
    import torch

    param = getattr(layer, name)
    with torch.no_grad():
        param.copy_(torch.from_numpy(np.ascontiguousarray(value)).reshape(param.shape))


def describe_targets(paths, universe) -> list[str]:
    """``target_modules`` for a config: the leaf names (["query", "value"]) when peft's suffix
    rule picks exactly ``paths`` out of ``universe`` (our Linears plus HF_ONLY_LINEARS);
    otherwise the full paths, which peft matches exactly."""
    paths = sorted(paths)
    leaves = sorted({p.rsplit(".", 1)[-1] for p in paths})
    picked = [p for p in [*universe, *HF_ONLY_LINEARS] if np_lora.target_matches(p, leaves)]
    return leaves if sorted(set(picked)) == paths else paths


# ----------------------------------------------------------------------------- writing
def adapter_config(fmt: PeftFormat, settings: dict, target_modules, base_model_name_or_path: str | None = None) -> dict:
    """The config peft writes for ``fmt``: the common fields, the format's fixed and empty
    ones, and its own (``fmt.config``, which may rewrite target_modules)."""
    fmt = check_format(fmt)
    common = {"peft_type": fmt.peft_type, "task_type": None, "base_model_name_or_path": base_model_name_or_path,
              "revision": None, "inference_mode": True, "target_modules": target_modules, "fan_in_fan_out": False,
              "modules_to_save": None, "exclude_modules": None, "auto_mapping": AUTO_MAPPING}
    return {**common, **fmt.fixed, **fmt.empty, **fmt.config(settings, target_modules)}


def save_adapter(model, directory, base_model_name_or_path: str | None = None, dtype=np.float32, *,
                 fmt: PeftFormat = LORA) -> pathlib.Path:
    """Write the model's ``fmt`` layers (LoRA unless told) as a peft adapter directory; returns it.

    Refused before anything is written: a model without such layers, layers a peft file
    cannot express (``fmt.setting``, ``fmt.config``: LoRA with two settings or PiSSA, a
    merged IA³ layer), NaN/inf values, a dtype other than float32/float64.
    """
    backend, root, _, layers, shapes = _model_side(fmt, model)
    if not layers:
        raise ValueError(f"save_adapter: the model has no {fmt.name} layers (attach them first; "
                         f"for another method pass its format, fmt=<method>.PEFT_FORMAT)")
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"save_adapter: dtype must be np.float32 or np.float64, got {dtype!r}")
    try:
        settings = {p: fmt.setting(p, m) for p, m in layers.items()}
        config = adapter_config(fmt, settings, describe_targets(layers, shapes), base_model_name_or_path)
    except ValueError as e:
        raise ValueError(f"save_adapter: {e}") from None
    tensors = {f"{PREFIX}{p}.{suffix}": np.ascontiguousarray(
                   _get(backend, m, name).reshape(fmt.shape(name, settings[p], m.d_in, m.d_out)), dtype=dtype)
               for p, m in layers.items() for suffix, name in fmt.tensors.items()}
    bad = [k for k, v in tensors.items() if not np.isfinite(v).all()]
    if bad:
        raise ValueError(f"save_adapter: {bad[:2]} contain NaN/inf; nothing was written")
    return _write_adapter(directory, tensors, config)


def _write_adapter(directory, tensors: dict, config: dict) -> pathlib.Path:
    """Both files are serialised in memory, then written to temporary names and renamed:
    a failure anywhere leaves the directory as it was (never weights without a config)."""
    from safetensors.numpy import save

    config_text = json.dumps(config, indent=2, sort_keys=True, allow_nan=False) + "\n"
    weights_bytes = save(tensors, metadata={"format": "pt"})
    directory = pathlib.Path(directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"save_adapter: {directory} exists and is not a directory")
    write_atomically({directory / WEIGHTS_NAME: weights_bytes, directory / CONFIG_NAME: config_text})
    return directory


# ----------------------------------------------------------------------------- reading
def _need(cond, msg):
    if not cond:
        raise ValueError(f"adapter_config.json: {msg}")


def check_config(cfg, fmt: PeftFormat = LORA) -> dict:
    """Validate a peft config dict for ``fmt``; return {target_modules, **the format's fields}."""
    fmt = check_format(fmt)
    _need(isinstance(cfg, dict), f"expected a JSON object, got {type(cfg).__name__}")
    _need(cfg.get("peft_type") == fmt.peft_type,
          f"peft_type is {cfg.get('peft_type')!r}; only {fmt.peft_type!r} adapters can be loaded here")
    targets = cfg.get("target_modules")
    _need(isinstance(targets, str) or (isinstance(targets, list) and targets
                                       and all(isinstance(t, str) and t for t in targets)),
          f"target_modules must be a regex string or a non-empty list of names, got {targets!r}")
    for k, ok in {"fan_in_fan_out": False, **fmt.fixed}.items():
        _need(cfg.get(k, ok) in (ok, None), f"{k}={cfg.get(k)!r} is not supported (only {ok!r})")
    for k in (*UNUSED_FIELDS, *fmt.empty):  # empty: null, [], {} or "" (peft reads layers_to_transform=0 as [0])
        _need(cfg.get(k) is None or (isinstance(cfg[k], (list, dict, str)) and not cfg[k]),
              f"{k}={cfg.get(k)!r} is not supported")
    try:
        fields = fmt.read_config(cfg)
    except (TypeError, ValueError) as e:
        raise ValueError(f"adapter_config.json: {e}") from None
    return {"target_modules": targets if isinstance(targets, str) else tuple(targets), **fields}


def _read_weights(path: pathlib.Path) -> dict[str, np.ndarray]:
    """safetensors only. NumPy first; files NumPy cannot read (bf16, float8) go through torch,
    and float16/bf16/float8 tensors become float32 (exactly)."""
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
        narrow = lambda v: v.is_floating_point() and v.dtype not in (torch.float32, torch.float64)  # noqa: E731
        return {k: (v.float() if narrow(v) else v).numpy() for k, v in t.items()}


def read_adapter(directory, *, fmt: PeftFormat = LORA) -> tuple[dict, dict[str, np.ndarray]]:
    """(checked config, {key: array}) of a peft adapter directory, touching no model; the
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
    return check_config(cfg, fmt), _read_weights(w_path)


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


def _keys(fmt: PeftFormat, fields: dict, weights: dict, shapes: dict) -> dict[str, tuple[str, str]]:
    """{file key: (path, parameter)} of the layers the config targets, once the file's keys
    are exactly those (the HF-only linears' keys are allowed and skipped)."""
    matched, chosen = _targets(sorted(shapes), fields["target_modules"])
    expected = {f"{PREFIX}{p}.{suffix}": (p, name) for p in chosen for suffix, name in fmt.tensors.items()}
    skipped = {f"{PREFIX}{p}.{suffix}" for p in matched if p not in chosen for suffix in fmt.tensors}
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected) - skipped)
    if missing or unexpected:
        raise ValueError(f"adapter weights do not match target_modules {fields['target_modules']!r}: "
                         f"missing {missing[:4]}{' …' if len(missing) > 4 else ''}, "
                         f"unexpected {unexpected[:4]}{' …' if len(unexpected) > 4 else ''}")
    return expected


def _float_max(backend: str, root) -> float:
    """The largest finite number of the model's float dtype: a file value beyond it would load as inf."""
    if backend == "numpy":
        return float(np.finfo(next(iter(root.state_dict().values())).dtype).max)
    import torch

    return float(torch.finfo(next(root.parameters()).dtype).max)


def _plan(fmt: PeftFormat, fields: dict, weights: dict, layers: dict, shapes: dict,
          limit: float = np.inf) -> dict[str, tuple]:
    """{path: (setting, {parameter: array})} after checking every key, shape and value
    against the model (``limit``: its dtype's largest number), and the layers the model
    already has against the file."""
    plan = {}
    for key, (p, name) in _keys(fmt, fields, weights, shapes).items():
        (d_in, d_out), v = shapes[p], weights[key]
        setting, arrays = plan.setdefault(p, (fmt.setting_in(fields, p), {}))
        want = fmt.shape(name, setting, d_in, d_out)
        if v.shape != want:
            raise ValueError(f"{key} has shape {v.shape}, expected {want} ({show(setting)}, a {d_out}×{d_in} weight)")
        if v.dtype.kind != "f":
            raise ValueError(f"{key} has dtype {v.dtype}, expected floating point")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{key} contains NaN/inf")
        peak = float(np.abs(v).max())
        if peak > limit:  # a float64 file into a float32 model: it would become inf
            raise ValueError(f"{key} has values up to {peak:.3g}, beyond the model's largest "
                             f"number {limit:.3g}: they would load as inf")
        arrays[name] = v
    for p, (setting, arrays) in plan.items():
        if fmt.check_layer is None:
            continue
        try:
            fmt.check_layer(setting, arrays, *shapes[p])
        except (TypeError, ValueError) as e:
            raise ValueError(f"{p}: {e}") from None
    if layers:
        _check_existing(fmt, layers, {p: s for p, (s, _) in plan.items()})
    return plan


def _check_existing(fmt: PeftFormat, layers: dict, settings: dict):
    """Layers the model has already take the file only on the same modules, with its setting, unmerged."""
    if sorted(layers) != sorted(settings):
        raise ValueError(f"the model already has {fmt.name} layers on {sorted(layers)[:3]}…, placed differently "
                         f"from the adapter's modules {list(settings)[:3]}…; load into a fresh model")
    for p, m in layers.items():
        have = fmt.setting(p, m)
        if have != settings[p] or m.merged:
            raise ValueError(f"{p}: existing {fmt.name} layer ({show(have)}, merged={m.merged}) cannot take "
                             f"this adapter ({show(settings[p])})")


def load_adapter(model, directory, *, fmt: PeftFormat = LORA) -> list[str]:
    """Load a peft adapter of format ``fmt`` (LoRA unless told) into our NumPy or torch model;
    return the adapted paths.

    Adds the method's layers (frozen base) where the model has none; otherwise fills the
    existing ones, which must match. Every check runs before the model is touched.
    """
    backend, root, lib, layers, shapes = _model_side(fmt, model)
    fields, weights = read_adapter(directory, fmt=fmt)
    plan = _plan(fmt, fields, weights, layers, shapes, _float_max(backend, root))
    if not layers:
        fmt.attach(lib, root, {p: s for p, (s, _) in plan.items()})
        layers = getattr(lib, fmt.layers)(root)
    for p, (_, arrays) in plan.items():
        for name, v in arrays.items():
            _put(backend, layers[p], name, v)
    return list(plan)


__all__ = ["AUTO_MAPPING", "CONFIG_NAME", "HF_ONLY_LINEARS", "LORA", "PREFIX", "WEIGHTS_NAME", "adapter_config",
           "check_config", "describe_targets", "load_adapter", "read_adapter", "save_adapter"]
