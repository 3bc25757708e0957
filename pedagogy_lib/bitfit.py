"""BitFit in NumPy: train only the bias terms (chapter 06).

Nothing new has to be differentiated: every Linear already returns db = Σ dy and every
LayerNorm dβ = Σ dy (Eq. 6.2). BitFit is a choice of which parameters stay unfrozen:

    θ_trainable = { b : b is a bias }        (Eq. 6.1)

Ben Zaken et al. name the biases of a BERT block after their equations:
b_q, b_k, b_v (attention projections), b_m1 (attention output), b_m2 (the FFN's first
matrix, width ffn, just before the GELU), b_m3 (the FFN's second matrix) and b_LN1, b_LN2
(the LayerNorm shifts β). Their cheapest variant trains b_q and b_m2 only.
"""
from __future__ import annotations

import re

from .counting import ModelShape, canonical_names, linear_shapes
from .nn import LayerNorm, Module

# per-block sites, relative to encoder.layer.{i}, keyed by the paper's names
SITES = {
    "b_q": "attention.self.query",
    "b_k": "attention.self.key",
    "b_v": "attention.self.value",
    "b_m1": "attention.output.dense",
    "b_m2": "intermediate.dense",
    "b_m3": "output.dense",
    "b_LN1": "attention.output.LayerNorm",
    "b_LN2": "output.LayerNorm",
}
QM2 = ("b_q", "b_m2")  # the paper's two-bias variant
WRAPPED = r"(\.base_layer|\.0)?"  # the Linear inside a LoRA/DoRA/IA³ layer or an adapter's Sequential


def check_sites(sites) -> tuple[str, ...] | None:
    """None (every bias) or a non-empty tuple of names from SITES."""
    if sites is None:
        return None
    if isinstance(sites, str):
        raise TypeError(f"sites must be a list of names such as {QM2}, not the string {sites!r}")
    sites = tuple(sites)
    bad = [s for s in sites if s not in SITES]
    if bad or not sites:
        raise ValueError(f"unknown BitFit sites {bad or sites!r}; choose from {tuple(SITES)}")
    return sites


def _wanted(path: str, is_ln: bool, sites, include_layernorm: bool) -> bool:
    if is_ln and not include_layernorm:
        return False
    if sites is None:
        return True
    # the site must sit directly in a block: "…layer.3.output.dense", not "…attention.output.dense";
    # a wrapped site counts too: "…layer.3.attention.self.query.base_layer" (LoRA), "…output.dense.0"
    return any(re.fullmatch(rf"((.*\.)?layer\.\d+\.)?{re.escape(SITES[s])}{WRAPPED}", path) for s in sites)


def bias_names(model: Module, sites=None, include_layernorm: bool = True) -> list[str]:
    """Dotted names of the biases BitFit trains (Eq. 6.1).

    sites=None: every parameter called ``bias`` (Linear biases, LayerNorm β, also the
    embedding LayerNorm's); otherwise only the per-block sites named, e.g. ``QM2``.
    ``include_layernorm=False`` leaves the LayerNorm shifts out.
    """
    if not isinstance(model, Module):
        raise TypeError(f"expected a NumPy Module, got {type(model).__name__}")
    sites = check_sites(sites)
    return [f"{path}.bias" if path else "bias" for path, mod in model.named_modules()
            if "bias" in mod.p and _wanted(path, isinstance(mod, LayerNorm), sites, include_layernorm)]


def apply_bitfit(model: Module, sites=None, include_layernorm: bool = True) -> list[str]:
    """Freeze every parameter except the selected biases; return their names.

    Uses the nn freeze API: ``model.freeze()``, then each selected bias is taken out of
    its module's ``frozen`` set, so ``backward`` accumulates gradients for it alone.
    """
    names = bias_names(model, sites, include_layernorm)
    if not names:
        raise ValueError("this model has no biases to train (BitFit needs a model with biases)")
    model.freeze()
    for name in names:
        path = name.rpartition(".")[0]
        mod = model if not path else dict(model.named_modules())[path]
        mod.frozen.discard("bias")
    return names


# ----------------------------------------------------------------------------- counting
def bitfit_sites(shape: ModelShape, include_layernorm: bool = True) -> dict[str, int]:
    """Width of each per-layer bias of a published shape: one per linear map (its d_out),
    and the two LayerNorm shifts β ("ln_attn", "ln_ffn") if asked and the model has them."""
    if not isinstance(shape, ModelShape):
        raise TypeError(f"expected a ModelShape, got {type(shape).__name__}")
    sites = {k: d_out for k, (_, d_out) in linear_shapes(shape).items()} if shape.bias else {}
    if include_layernorm and shape.norm == "layernorm":
        sites |= {"ln_attn": shape.hidden, "ln_ffn": shape.hidden}
    return sites


def bitfit_params(shape: ModelShape, include_layernorm: bool = True, only=None) -> int:
    """BitFit's trainable parameters on a published shape (Eq. 6.4; chapter 00's table).

    Counted: in every layer the biases of ``bitfit_sites`` (q, k, v, attention output, FFN in
    and out, two β); once more the embedding LayerNorm β (encoders) or the final LayerNorm β
    (decoders). Not counted: the pooler and the classifier (task heads). ``only`` restricts
    the count to some per-layer sites, by ``linear_shapes`` names or BitFit's ("b_q", "b_m2",
    ..., e.g. ``QM2``). A model without biases or β (LLaMA) gives 0.
    """
    sites = bitfit_sites(shape, include_layernorm)
    if only is None:
        final_beta = shape.hidden if include_layernorm and shape.norm == "layernorm" else 0
        return shape.layers * sum(sites.values()) + final_beta          # L(7d + f) + d  (Eq. 6.4)
    only = canonical_names(only)
    valid = set(linear_shapes(shape)) | {"ln_attn", "ln_ffn"}
    bad = [k for k in only if k not in valid]
    if bad or not only or len(set(only)) != len(only):
        raise ValueError(f"only={only!r} must name distinct sites from {sorted(valid)}")
    return shape.layers * sum(sites.get(k, 0) for k in only)             # e.g. L(d + f) for QM2  (Eq. 6.4)


def trainable_fraction(model: Module) -> float:
    """Trainable parameters over all parameters of the model."""
    return model.num_parameters(trainable_only=True) / model.num_parameters()


__all__ = ["QM2", "SITES", "apply_bitfit", "bias_names", "bitfit_params", "bitfit_sites", "check_sites",
           "trainable_fraction"]
