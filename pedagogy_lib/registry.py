"""The method registry: one record per PEFT method, and the only ``METHODS`` in the library.

A record says everything the rest of the book needs to know about a method, and nothing
about how any one chapter uses it:

* ``attach_numpy(mm, seed, **opts)`` / ``attach_torch(mm, seed, **opts)``: make the method's
  parameters the trainable ones of a freshly loaded MiniLM (``mm`` has ``.net``, ``.bert``,
  ``.tokenizer``; NumPy from ``models.load_minilm``, torch from ``torch_ref.encoder``);
* ``count(shape, **opts)``: its trainable-parameter formula, from ``counting`` (chapter 00);
* ``lrs``: the learning-rate grid the runner starts from (three rates around the best one
  chapters 02–06 and the first chapter 08 run found; ``runner.protocol`` extends it until
  its best point is bracketed);
* ``defaults``: its usual hyper-parameters; any attach/count call may override them;
* ``inference(mm)``: what is done to the trained network before serving (merge, fold);
* ``trains``: what it trains, in words.

A chapter names the settings it compares as ``Arm``s (a label, a method, overrides), so
"LoRA r=8 on every linear layer" is the ``lora`` record with ``targets="all-linear"``.
Adding a method = one ``Method(...)`` line in ``_RECORDS`` (see README, "Adding a method").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from . import adapters as A
from . import bitfit as B
from . import counting as C
from . import ia3 as I
from . import lora as L
from . import prefix as P
from . import prompt as PT
from .torch_ref import adapters as TA
from .torch_ref import bitfit as TB
from .torch_ref import ia3 as TI
from .torch_ref import lora as TL
from .torch_ref import prefix as TP
from .torch_ref import prompt as TPT
from .torch_ref import qlora as TQ


def _nothing(mm, seed, **opts):
    """Full fine-tuning: every weight stays trainable."""


def _freeze_numpy(mm, seed, **opts):
    mm.net.freeze()


def _freeze_torch(mm, seed, **opts):
    for p in mm.net.parameters():
        p.requires_grad_(False)


def _candidates(mm):
    return PT.vocab_candidates(mm.tokenizer.tok.get_vocab())


def _prompt_numpy(mm, seed, m, init):
    PT.attach_prompt(mm.bert, m, init=init, seed=seed, candidates=_candidates(mm) if init == "vocab" else None)


def _prompt_torch(mm, seed, m, init):
    TPT.attach_prompt(mm.bert, m, init=init, seed=seed, candidates=_candidates(mm) if init == "vocab" else None)


def _qlora_torch(mm, seed, targets, r, alpha, quant_targets, quant_type, double_quant):
    """NF4 (+ double quantisation) base, then LoRA; LoRA goes on before ``to_device``,
    because bitsandbytes quantises a Linear4bit when it is moved."""
    TQ.quantize_linears(mm.bert, quant_targets, quant_type, double_quant)
    TL.attach_lora(mm.bert, targets, r=r, alpha=alpha, seed=seed)
    TQ.to_device(mm.net)


def _merge_lora(mm):
    TL.merge_all(mm.bert)


def _merge_ia3(mm):
    TI.merge_all(mm.bert)


def _fold_prefix(mm):
    TP.fold(mm.bert)


def _total(shape, **opts):
    """Every weight the sentence encoder uses: the pooler (eq. 0.7) is not part of it."""
    return C.total_params(shape) - C.param_breakdown(shape)["pooler"]


@dataclass(frozen=True)
class Method:
    name: str
    trains: str
    attach_torch: Callable
    attach_numpy: Callable | None
    count: Callable            # (counting.ModelShape, **opts) -> trainable parameters
    lrs: tuple
    defaults: dict = field(default_factory=dict)
    inference: Callable | None = None  # (trained MiniLM) -> None, before serving

    def opts(self, **overrides) -> dict:
        unknown = sorted(set(overrides) - set(self.defaults))
        if unknown:
            raise ValueError(f"method {self.name!r} takes no option(s) {unknown}; it takes {sorted(self.defaults)}")
        return {**self.defaults, **overrides}

    def setup_torch(self, mm, seed: int, **overrides):
        self.attach_torch(mm, seed, **self.opts(**overrides))

    def setup_numpy(self, mm, seed: int, **overrides):
        if self.attach_numpy is None:
            raise ValueError(f"method {self.name!r} has no NumPy version (it needs bitsandbytes)")
        self.attach_numpy(mm, seed, **self.opts(**overrides))

    def params(self, shape, **overrides) -> int:
        return self.count(shape, **self.opts(**overrides))


_LORA = dict(targets=("query", "value"), r=8, alpha=16)
_RECORDS = [
    Method("probe", "the task head only (the encoder is frozen)", _freeze_torch, _freeze_numpy,
           lambda s: 0, (3e-3, 1e-2, 3e-2)),
    Method("full", "every weight", _nothing, _nothing, _total, (5e-5, 1e-4, 2e-4)),
    Method("lora", "A (r x d_in) and B (d_out x r) beside each targeted matrix (Eq. 2.4)",
           lambda mm, seed, targets, r, alpha: TL.attach_lora(mm.bert, targets, r=r, alpha=alpha, seed=seed),
           lambda mm, seed, targets, r, alpha: L.attach_lora(mm.bert, targets, r=r, alpha=alpha, seed=seed),
           lambda s, targets, r, alpha: C.lora_params(s, r, targets), (1e-3, 3e-3, 1e-2), _LORA, _merge_lora),
    *[Method(kind, f"{kind} bottleneck adapters, W_down and W_up with biases (Eq. 3.2)",
             lambda mm, seed, m, kind=kind: TA.attach_adapters(mm.bert, kind, m, seed=seed),
             lambda mm, seed, m, kind=kind: A.attach_adapters(mm.bert, kind, m, seed=seed),
             lambda s, m, kind=kind: C.adapter_params(s, m, kind), lrs, {"m": m})
      for kind, m, lrs in (("houlsby", 16, (1e-3, 3e-3, 1e-2)), ("pfeiffer", 32, (1e-3, 3e-3, 1e-2)),
                           ("parallel", 16, (3e-3, 1e-2, 3e-2)))],
    Method("prefix", "m key and value vectors per layer, through an MLP while training (Eq. 4.3)",
           lambda mm, seed, m, reparam: TP.attach_prefix(mm.bert, m, reparam=reparam, seed=seed),
           lambda mm, seed, m, reparam: P.attach_prefix(mm.bert, m, reparam=reparam, seed=seed),
           lambda s, m, reparam: C.prefix_params(s, m), (1e-3, 3e-3, 1e-2), {"m": 10, "reparam": 128}, _fold_prefix),
    Method("prompt", "m soft-prompt vectors at the input (Eq. 5.1)", _prompt_torch, _prompt_numpy,
           lambda s, m, init: C.prompt_params(s, m), (3e-3, 1e-2, 3e-2), {"m": 10, "init": "vocab"}),
    Method("deep_prompt", "m hidden-state vectors at every layer's input",
           lambda mm, seed, m: TPT.attach_deep_prompt(mm.bert, m, seed=seed),
           lambda mm, seed, m: PT.attach_deep_prompt(mm.bert, m, seed=seed),
           lambda s, m: C.prompt_params(s, m) * s.layers, (3e-3, 1e-2, 3e-2), {"m": 10}),
    Method("ptuning_v2", "m keys and values per layer, trained directly (Eq. 5.4)",
           lambda mm, seed, m: TP.attach_ptuning_v2(mm.bert, m, seed=seed),
           lambda mm, seed, m: P.attach_ptuning_v2(mm.bert, m, seed=seed),
           lambda s, m: C.ptuning_v2_params(s, m), (3e-3, 1e-2, 3e-2), {"m": 10}),
    Method("bitfit", "the biases and LayerNorm shifts (``sites``: only those per-block biases, e.g. b_q, b_m2)",
           lambda mm, seed, include_layernorm, sites: TB.apply_bitfit(mm.bert, sites, include_layernorm),
           lambda mm, seed, include_layernorm, sites: B.apply_bitfit(mm.bert, sites, include_layernorm),
           lambda s, include_layernorm, sites: C.bitfit_params(s, include_layernorm, only=sites),
           (3e-3, 1e-2, 3e-2), {"include_layernorm": True, "sites": None}),
    Method("ia3", "vectors l_k, l_v rescaling keys and values and l_ff rescaling the FFN's hidden units (Eqs. 6.5-6.8)",
           lambda mm, seed: TI.attach_ia3(mm.bert), lambda mm, seed: I.attach_ia3(mm.bert),
           lambda s: C.ia3_params(s), (1e-2, 3e-2, 1e-1), {}, _merge_ia3),
    Method("qlora", "LoRA on a frozen 4-bit (NF4 + double quantisation) base", _qlora_torch, None,
           lambda s, targets, r, alpha, **q: C.lora_params(s, r, targets), (1e-3, 3e-3, 1e-2),
           {**_LORA, "quant_targets": "all-linear", "quant_type": "nf4", "double_quant": True}),
]
METHODS: dict[str, Method] = {m.name: m for m in _RECORDS}


def get(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {list(METHODS)}")
    return METHODS[name]


@dataclass(frozen=True)
class Arm:
    """One setting a chapter compares: ``label`` (as stored in results), the registry method,
    its overrides, and optionally its own learning-rate grid and a note for tables."""
    label: str
    method: str
    opts: dict = field(default_factory=dict)
    lrs: tuple | None = None
    note: str = ""

    def __post_init__(self):
        get(self.method).opts(**self.opts)  # unknown method or option: refused here

    @property
    def record(self) -> Method:
        return METHODS[self.method]

    @property
    def grid(self) -> tuple:
        return self.record.lrs if self.lrs is None else self.lrs

    def setup_torch(self, mm, seed: int):
        self.record.setup_torch(mm, seed, **self.opts)

    def params(self, shape) -> int:
        return self.record.params(shape, **self.opts)

    def inference(self, mm):
        if self.record.inference is not None:
            self.record.inference(mm)


def arms(*items) -> dict[str, Arm]:
    """{label: Arm} from Arms, refusing two with one label."""
    out: dict[str, Arm] = {}
    for a in items:
        if a.label in out:
            raise ValueError(f"two arms are labelled {a.label!r}")
        out[a.label] = a
    return out
