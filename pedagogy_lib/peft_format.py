"""What one method's adapter looks like in Hugging Face peft's files: a ``PeftFormat``.

A peft adapter directory is the same for every method: ``adapter_config.json`` (common fields
plus the method's own) and ``adapter_model.safetensors`` with tensors named
``base_model.model.<module path>.<suffix>``. ``peft_io`` does everything that is the same
once (the two files, refusing pickles and corrupt files, the key prefix, target matching, the
common config fields, checking a whole file before the model changes, NumPy or torch).
A method describes only what differs, in its own module (``lora.PEFT_FORMAT``,
``ia3.PEFT_FORMAT``), and the caller hands it over: ``peft_io.load_adapter(model, folder,
fmt=ia3.PEFT_FORMAT)``. peft_io holds no table of methods.

A *setting* is what the config file records for one adapted layer, as a NamedTuple (LoRA:
r, α, rsLoRA; IA³: which side l scales). Saving reads it from our layer, loading from the
file, and a layer already in the model must have the file's setting.

Example: DoRA is LoRA plus a magnitude vector per layer and ``use_dora: true``, so its format
is LoRA's with three fields changed (``dataclasses.replace``): ``tensors`` (one suffix more),
``shape`` (its length) and ``fixed`` (``use_dora``), besides its own module and layers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple


@dataclass(frozen=True)
class PeftFormat:
    """One method's peft file format. ``lib`` below is the method's module for the model's
    backend: ``module`` itself (NumPy) or its twin, ``torch_ref.<same name>`` (torch)."""
    peft_type: str      # the config's "peft_type" ("LORA", "IA3")
    name: str           # the method in messages ("LoRA", "IA³")
    module: str         # our NumPy module ("pedagogy_lib.lora"); the twin has the same name under torch_ref
    layers: str         # the function, in the module and in its twin, giving {path: layer} ("lora_layers")
    tensors: dict[str, str]  # file key suffix -> our parameter name ({"lora_A.weight": "lora_A", …})
    shape: Callable[[str, NamedTuple, int, int], tuple]  # (parameter, setting, d_in, d_out) -> its shape in the file
    setting: Callable[[str, Any], NamedTuple]   # (path, our layer) -> its setting; ValueError if a file cannot hold it
    setting_in: Callable[[dict, str], NamedTuple]  # (checked fields, path) -> the setting the file gives that path
    config: Callable[[dict, Any], dict]   # ({path: setting}, target_modules) -> the method's config fields
    read_config: Callable[[dict], dict]   # the file's config -> the method's checked fields; ValueError names the field
    attach: Callable[[Any, Any, dict], None]  # (lib, model, {path: setting}): wrap those Linears in fresh layers
    fixed: dict = field(default_factory=dict)  # config fields written with these values and required on reading
    empty: dict = field(default_factory=dict)  # config fields written empty like this and refused unless empty
    check_layer: Callable | None = None  # (setting, {parameter: array}, d_in, d_out): checks across one layer's tensors


def check_format(fmt) -> PeftFormat:
    """``fmt`` itself if it is a PeftFormat; else a TypeError that names what was passed (a
    method's module by mistake, a string, None) and what is meant (``<method>.PEFT_FORMAT``)."""
    if not isinstance(fmt, PeftFormat):
        what = f"the module {fmt.__name__}" if hasattr(fmt, "__file__") else f"{type(fmt).__name__} {fmt!r}"
        raise TypeError(f"fmt must be a method's PeftFormat (e.g. lora.PEFT_FORMAT, ia3.PEFT_FORMAT), got {what}")
    return fmt


def show(setting: NamedTuple) -> str:
    """'r=2, alpha=4.0, rslora=False': a setting as messages print it."""
    return ", ".join(f"{k}={v!r}" for k, v in setting._asdict().items())


__all__ = ["PeftFormat", "check_format", "show"]
