"""Chapter 00's table of trainable parameters: each method at its usual setting on every
published shape, each count from the one formula in its method module."""
from __future__ import annotations

from pedagogy_lib import adapters, bitfit, lora, prefix, prompt
from pedagogy_lib.counting import ModelShape, shapes, total_params

USUAL = {  # (method, setting): each method at the settings its paper or common use starts from
    "LoRA r=8 (q,v)": lambda s: lora.lora_params(s, 8),
    "LoRA r=8 (all linear)": lambda s: lora.lora_params(s, 8, "all-linear"),
    "Adapter Houlsby m=64": lambda s: adapters.adapter_params(s.hidden, 64, "houlsby", s.layers),
    "Adapter Pfeiffer m=d/16": lambda s: adapters.adapter_params(s.hidden, s.hidden // 16, "pfeiffer", s.layers),
    "Prefix m=20": lambda s: prefix.num_prefix_params(20, s.hidden, s.layers),
    "Prompt m=20": lambda s: prompt.num_prompt_params(20, s.hidden),
    "Prompt m=100": lambda s: prompt.num_prompt_params(100, s.hidden),
    "P-Tuning v2 m=20": lambda s: prefix.num_prefix_params(20, s.hidden, s.layers),
    "BitFit (biases + LN β)": lambda s: bitfit.bitfit_params(s),
}


def method_table(models: dict[str, ModelShape] | None = None) -> dict[str, dict[str, int]]:
    """{method: {model: trainable parameters}}, with a first row for full fine-tuning."""
    models = shapes() if models is None else models
    return {"Full fine-tuning": {k: total_params(s) for k, s in models.items()},
            **{method: {k: count(s) for k, s in models.items()} for method, count in USUAL.items()}}
