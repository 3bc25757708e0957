"""The QLoRA recipe exactly as practitioners type it, on chapter 09's decoder (chapter 10, §2),
and its cross-checks against our own code.

The recipe (QLoRA paper, §3; the peft/transformers documentation):

1. ``LlamaForCausalLM.from_pretrained(folder, quantization_config=BitsAndBytesConfig(
   load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
   bnb_4bit_compute_dtype=torch.bfloat16))``: every linear of the blocks becomes a
   bitsandbytes ``Linear4bit`` (the head is tied to the embedding and stays in float);
2. ``prepare_model_for_kbit_training``: freezes everything, casts the remaining float
   parameters to float32, turns on gradient checkpointing and input gradients;
3. ``get_peft_model(model, LoraConfig(r, lora_alpha, target_modules="all-linear",
   task_type="CAUSAL_LM"))``;
4. ``bitsandbytes.optim.PagedAdamW8bit`` over the LoRA factors, a few steps;
5. ``generate``.

Every linear size of our decoders is a multiple of 64, which bitsandbytes' CPU kernels
need, so all of it runs on a CPU. Cross-checks (``stored_bytes_check``, ``numpy_twin``):
the packed codes and absmax that transformers stored equal our ``quant.py``'s; our NumPy
decoder with our dequantisation of those bytes and the peft factors in our ``LoRALinear``
gives the peft model's logits.
"""
from __future__ import annotations

import logging
import time
import warnings

import numpy as np
import torch

from .. import checks, decoder as D, lora as np_lora, quant
from ..nn import get_submodule
from .qlora import bnb, disable_cpu_inference_repack, quantized_layers, read_quant_state, state_tensors

QUANT_TYPES = ("nf4", "fp4")


class _Codebooks(dict):
    """{name: codebook function}; an unknown name is refused with the choices listed."""

    def __missing__(self, name):
        raise KeyError(f"code must be one of {sorted(self)}, got {name!r}")


CODEBOOKS = _Codebooks(nf4=quant.nf4_codebook, fp4=quant.fp4_codebook, int4=quant.int4_codebook)


def quiet():
    """transformers' and peft's progress bars and advice off (the chapter prints its own)."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("peft").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*(gradient checkpointing|use_cache|MatMul8bitLt|torch.utils.checkpoint).*")


def bnb_config(quant_type: str = "nf4", double_quant: bool = True, compute_dtype=torch.bfloat16):
    from transformers import BitsAndBytesConfig

    if quant_type not in QUANT_TYPES:
        raise ValueError(f"quant_type must be one of {QUANT_TYPES}, got {quant_type!r}")
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type,
                              bnb_4bit_use_double_quant=double_quant, bnb_4bit_compute_dtype=compute_dtype)


def load_4bit(folder, quant_type: str = "nf4", double_quant: bool = True, compute_dtype=torch.bfloat16,
              device: str = "cpu"):
    """Step 1: the checkpoint loaded by transformers with a 4-bit base."""
    from transformers import LlamaForCausalLM

    quiet()
    bnb()  # bitsandbytes without its CPU-kernels notice
    model = LlamaForCausalLM.from_pretrained(str(folder), quantization_config=bnb_config(quant_type, double_quant,
                                                                                         compute_dtype),
                                             dtype=torch.float32, device_map={"": device})
    disable_cpu_inference_repack(model)  # keep the training kernels (chapter 07, appendix B)
    return model


def lora_config(r: int = 8, alpha: float = 16, targets="all-linear"):
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets, task_type="CAUSAL_LM")


def recipe_model(folder, r: int = 8, alpha: float = 16, targets="all-linear", seed: int = 0,
                 quant_type: str = "nf4", double_quant: bool = True, compute_dtype=torch.bfloat16,
                 gradient_checkpointing: bool = True, device: str = "cpu"):
    """Steps 1–3: the peft model, only its LoRA factors trainable."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    model = load_4bit(folder, quant_type, double_quant, compute_dtype, device)
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    torch.manual_seed(seed)   # peft draws lora_A with torch's generator
    return get_peft_model(model, lora_config(r, alpha, targets))


def train_steps(model, ids: np.ndarray, mask: np.ndarray, steps: int = 3, lr: float = 1e-3,
                paged8: bool = True, device: str = "cpu") -> dict:
    """Step 4: ``steps`` updates of the response-masked loss on one batch; returns losses,
    seconds per step and the optimiser's state tensors (count, bytes, dtypes, paged?)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (bnb().optim.PagedAdamW8bit if paged8 else torch.optim.AdamW)(params, lr=lr, weight_decay=0.0)
    x, m = torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device).float()
    labels = x.clone()
    model.train()
    losses, t0 = [], time.perf_counter()
    for _ in range(steps):
        logits = model(input_ids=x).logits.float()
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                labels[:, 1:].reshape(-1), reduction="none")
        loss = (nll * m.reshape(-1)).sum() / m.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    seconds = (time.perf_counter() - t0) / steps
    model.eval()
    return {"losses": losses, "seconds_per_step": seconds, **optimizer_state(opt)}


def optimizer_state(opt) -> dict:
    states = state_tensors(opt)  # the shared 8-bit quantisation maps once
    return {"state_tensors": len(states), "state_bytes": sum(v.numel() * v.element_size() for v in states),
            "state_dtypes": sorted({str(v.dtype).replace("torch.", "") for v in states}),
            "paged_state_tensors": sum(bool(getattr(v, "is_paged", False)) for v in states)}


@torch.no_grad()
def generate(model, tok, prompt_ids: np.ndarray, max_new_tokens: int = 24) -> np.ndarray:
    """Step 5: greedy ``generate`` (ends after the first <|endoftext|>)."""
    out = model.generate(input_ids=torch.from_numpy(prompt_ids)[None], max_new_tokens=max_new_tokens,
                         do_sample=False, eos_token_id=tok.eos_id, pad_token_id=tok.eos_id)
    return out[0, prompt_ids.size:].cpu().numpy()


# ----------------------------------------------------------------------------- cross-checks
def layer_path(hf_path: str) -> str:
    """peft's 'base_model.model.model.layers.0.self_attn.q_proj' → our 'model.layers.0.self_attn.q_proj'."""
    for pre in ("base_model.model.", ""):
        if hf_path.startswith(pre + "model.layers."):
            return hf_path[len(pre):]
    raise ValueError(f"{hf_path} is not a block linear of a Llama model")


def stored_bytes_check(model, weights: dict) -> dict:
    """For every Linear4bit: do our ``quantize_4bit`` bytes (from the checkpoint's float32
    weight) equal the packed codes transformers stored, and our double-quantised absmax
    codes equal its quant state's? Returns counts over the layers, and the number of 8-bit
    absmax codes that differ (bnb's CPU encoder may round a value within ~1e-5 of a
    midpoint the other way; chapter 07)."""
    rows, n_codes, n_diff = [], 0, 0
    for path, layer in quantized_layers(model).items():
        s = read_quant_state(layer)
        W = weights[layer_path(path.removesuffix(".base_layer")) + ".weight"]
        packed, absmax = quant.quantize_4bit(W, s.codebook(), s.blocksize)
        row = {"packed": bool(np.array_equal(packed, s.packed))}
        if s.double_quant:
            q, _, _ = quant.double_quantize(absmax, s.nested_blocksize)
            row["absmax"] = bool(np.array_equal(q, s.absmax))
            n_codes, n_diff = n_codes + q.size, n_diff + int(np.count_nonzero(q != s.absmax))
        else:
            row["absmax"] = bool(np.array_equal(absmax, s.absmax))
        rows.append(row)
    return {"layers": len(rows), "packed_identical": sum(r["packed"] for r in rows),
            "absmax_identical": sum(r["absmax"] for r in rows), "absmax_codes": n_codes,
            "absmax_codes_differing": n_diff}


def numpy_twin(model, weights: dict, cfg: D.DecoderConfig) -> D.Decoder:
    """Our NumPy decoder with (a) every block linear = our dequantisation of the bytes the
    peft model stores, (b) our LoRALinear carrying its trained factors, (c) the checkpoint's
    float weights elsewhere (the recipe freezes them)."""
    ours = D.Decoder(cfg).load_state_dict(weights)
    for path, layer in quantized_layers(model).items():
        W = read_quant_state(layer).dequantize()                       # Eq. 7.6 on the stored bytes
        get_submodule(ours, layer_path(path.removesuffix(".base_layer"))).p["weight"] = W
    lora = {layer_path(p): m for p, m in model.named_modules() if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {})}
    for i, (p, m) in enumerate(lora.items()):  # each layer its own r, α, rsLoRA (rank_pattern, alpha_pattern)
        r, alpha = m.r["default"], m.lora_alpha["default"]
        np_lora.attach_lora(ours, (p,), r=r, alpha=alpha, rslora=bool(m.use_rslora.get("default", False)),
                            freeze_base=i == 0)  # the base once, before any LoRA layer exists
        tgt = np_lora.lora_layers(ours)[p]
        dora = getattr(m, "use_dora", {}).get("default", False)
        if dora or not np.isclose(tgt.scaling, m.scaling["default"], rtol=1e-6, atol=0):
            raise ValueError(f"{p}: peft's layer (scaling {m.scaling['default']!r}, DoRA {dora}) is not a plain "
                             f"LoRA with r={r}, alpha={alpha}: our LoRALinear would have scaling {tgt.scaling!r}")
        tgt.p["lora_A"][...] = m.lora_A["default"].weight.detach().float().cpu().numpy()
        tgt.p["lora_B"][...] = m.lora_B["default"].weight.detach().float().cpu().numpy()
    return ours


__all__ = ["bnb_config", "load_4bit", "lora_config", "recipe_model", "train_steps", "optimizer_state", "generate",
           "stored_bytes_check", "numpy_twin", "layer_path", "quiet"]


# ----------------------------------------------------------------------------- merging into a 4-bit base
def nf4_roundtrip(W: np.ndarray, double_quant: bool = True, code: str = "nf4") -> np.ndarray:
    """Ŵ: W quantised to 4 bits in blocks of 64 (Eqs. 7.2–7.8) and decoded again, float32."""
    book = CODEBOOKS[code]()
    checks.boolean(double_quant, "double_quant")  # "no" would switch it on
    W = np.ascontiguousarray(W, np.float32)
    packed, absmax = quant.quantize_4bit(W, book, 64)
    if double_quant:
        absmax = quant.double_dequantize(*quant.double_quantize(absmax, 256), 256)
    return quant.dequantize_4bit(packed, absmax, W.shape, book, 64)


def merge_4bit(W_hat: np.ndarray, delta: np.ndarray, code: str = "nf4", double_quant: bool = True) -> dict:
    """Merge ΔW = s·BA into a 4-bit base (Eq. 10.3): dequantise (Ŵ, given), add, quantise
    again, decode. Returns the packed codes of Q(Ŵ + ΔW), its block scales (their 8-bit codes
    with double quantisation), its decoded weight, and the error
    the second rounding adds relative to the update it was meant to add,
    ‖dequant(Q(Ŵ + ΔW)) − (Ŵ + ΔW)‖ / ‖ΔW‖, and the share of weights whose value moved."""
    checks.boolean(double_quant, "double_quant")
    if np.shape(delta) != np.shape(W_hat) or not np.isfinite(delta).all():
        raise ValueError(f"delta must be finite with W_hat's shape {np.shape(W_hat)}, got {np.shape(delta)}")
    target = (W_hat.astype(np.float64) + delta).astype(np.float32)
    packed, absmax = quant.quantize_4bit(target, CODEBOOKS[code](), 64)
    merged = nf4_roundtrip(target, double_quant, code)
    err = float(np.linalg.norm(merged - target) / max(np.linalg.norm(delta), 1e-30))
    scales = quant.double_quantize(absmax, 256)[0] if double_quant else absmax   # 8-bit codes of the block scales
    return {"packed": packed, "scales": scales, "weight": merged, "rel_error": err,
            "values_changed": float(np.mean(W_hat != merged))}
