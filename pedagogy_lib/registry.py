"""The method registry: one record per PEFT method, and the only ``METHODS`` in the library.

A record says everything the rest of the book needs to know about a method, and nothing
about how any one chapter uses it:

* ``attach_numpy(mm, seed, **opts)`` / ``attach_torch(mm, seed, **opts)``: make the method's
  parameters the trainable ones of a freshly loaded MiniLM (``mm`` has ``.net``, ``.bert``,
  ``.tokenizer``; NumPy from ``models.load_minilm``, torch from ``torch_ref.encoder``);
* ``count(shape, **opts)``: its trainable-parameter count on a ``counting.ModelShape``, from the
  one formula in its method module (e.g. ``lora.lora_params``; chapter 00 teaches them);
* ``lrs``: the learning-rate grid the runner starts from (three rates around the best one
  chapters 02–06 and the first chapter 08 run found; ``runner.protocol`` extends it until
  its best point is bracketed);
* ``defaults``: its usual hyper-parameters; any attach/count call may override them;
* ``inference(mm)``: what is done to the trained network before serving (merge, fold);
* ``wrap(classifier, seed, **opts)``: a module that replaces the whole classifier (MiniLM and
  its head) for training, where a method reparametrises every weight at once (chapter 01's
  random subspace θ0 + P z); None for the methods that only insert or unfreeze parameters;
* ``trains``: what it trains, in words;
* ``decoder``: its form on chapter 09's decoder (chapter 10), a ``Decoder``: ``attach(folder,
  seed, **opts)`` returns a fresh pretrained decoder adapted by the method (ids → logits, only
  the method trains), with its own defaults and learning-rate grid. None where the method has
  no decoder form (adapters, deep prompts; BitFit: a LLaMA-style decoder has no biases).
  Its ``peft(**opts)``, where given, is the same method as HF peft puts it on
  ``LlamaForCausalLM`` (chapter 11): (peft config class, its arguments) built from the same
  defaults, or None for full fine-tuning; ``PEFT_DECODER_METHODS`` lists the methods that
  have it (both forms, ours and peft's, so chapter 11 trains each either way).

A chapter names the settings it compares as ``Arm``s (a label, a method, overrides), so
"LoRA r=8 on every linear layer" is the ``lora`` record with ``targets="all-linear"``; an arm
with ``model="decoder"`` uses the record's decoder form (``DECODER_ARMS``: chapter 10's nine).
``compared`` names the record's arms in chapter 08's comparison (``compared_arms``).
Adding a method = one ``Method(...)`` line in ``_RECORDS`` (see README, "Adding a method").
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

import torch

from . import adapters as A
from . import bitfit as B
from . import checks
from . import counting as C
from . import dora as D
from . import ia3 as I
from . import lora as L
from . import prefix as P
from . import prompt as PT
from . import stats
from .torch_ref import adapters as TA
from .torch_ref import decoder_peft as DP
from .torch_ref import dora as TD
from .torch_ref import bitfit as TB
from .torch_ref import ia3 as TI
from .torch_ref import lora as TL
from .torch_ref import prefix as TP
from .torch_ref import prompt as TPT
from .torch_ref import qlora as TQ
from .torch_ref import recipe as RC
from .torch_ref import subspace as TS


def _nothing(mm, seed, **opts):
    """Full fine-tuning: every weight stays trainable."""


def _freeze_torch(mm, seed, quant_type=None, double_quant=True):
    """The probe: every encoder weight frozen; with ``quant_type`` ('nf4', 'fp4') on a base
    whose linear layers are first quantised to 4 bits (chapter 07's "probe NF4 base")."""
    if quant_type is not None:
        TQ.quantize_linears(mm.bert, TQ.TARGETS, quant_type, double_quant)
    for p in mm.net.parameters():
        p.requires_grad_(False)
    if quant_type is not None:
        TQ.to_device(mm.net)


def _freeze_numpy(mm, seed, quant_type=None, double_quant=True):
    if quant_type is not None:
        raise ValueError("a probe on a 4-bit base has no NumPy version (it needs bitsandbytes)")
    mm.net.freeze()


def _prompt(attach_prompt):
    """The prompt record's attach with one backend's ``attach_prompt``: ``init="vocab"`` draws
    the prompt from the tokenizer's whole-word rows (``prompt.vocab_candidates``)."""
    def attach(mm, seed, m, init):
        candidates = PT.vocab_candidates(mm.tokenizer.tok.get_vocab()) if init == "vocab" else None
        attach_prompt(mm.bert, m, init=init, seed=seed, candidates=candidates)
    return attach


def _qlora_torch(mm, seed, targets, r, alpha, quant_targets, quant_type, double_quant):
    """NF4 (+ double quantisation) base, then LoRA; LoRA goes on before ``to_device``,
    because bitsandbytes quantises a Linear4bit when it is moved."""
    TQ.quantize_linears(mm.bert, quant_targets, quant_type, double_quant)
    TL.attach_lora(mm.bert, targets, r=r, alpha=alpha, seed=seed)
    TQ.to_device(mm.net)


def _subspace(clf, seed, d, kind):
    """Chapter 01's θ = θ0 + P z (Eq. 1.9) over the transformer layers and the head: z (d
    numbers) is the classifier's only trainable tensor; P is drawn with ``seed``."""
    return TS.SubspaceModel(clf, TS.subspace_names(clf), d, kind, seed)


def _merge_lora(mm):
    TL.merge_all(mm.bert)


def _merge_dora(mm):
    TD.merge_all(mm.bert)


def _merge_ia3(mm):
    TI.merge_all(mm.bert)


def _fold_prefix(mm):
    TP.fold(mm.bert)


# ----------------------------------------------------------------------------- decoder forms
def _dec_full(folder, seed):
    return DP.pretrained(folder)


def _dec_lora(folder, seed, targets, r):
    """LoRA with α = 2r (the scale α/r = 2 at every rank, Eq. 2.2)."""
    net = DP.pretrained(folder)
    TL.attach_lora(net, targets, r=r, alpha=2 * r, seed=seed)
    return net


def _dec_qlora(folder, seed, targets, r, quant_type, double_quant, recipe):
    """``recipe`` False: our NF4 (+ DQ) round trip of every block linear, then LoRA (α = 2r);
    True: the real recipe (bitsandbytes 4-bit, peft LoRA; fp32 compute, no checkpointing)."""
    if recipe:
        return DP.HFLogits(RC.recipe_model(folder, r=r, alpha=2 * r, targets=_peft_targets(targets), seed=seed,
                                           quant_type=quant_type, double_quant=double_quant,
                                           compute_dtype=torch.float32, gradient_checkpointing=False))
    net = DP.pretrained(folder)
    DP.quantize_base(net, quant_type, double_quant)
    TL.attach_lora(net, targets, r=r, alpha=2 * r, seed=seed)
    return net


def _dec_ia3(folder, seed):
    net = DP.pretrained(folder)
    TI.attach_ia3(net, targets=DP.IA3_TARGETS, feedforward=DP.IA3_FEEDFORWARD)
    return net


def _dec_prompt(folder, seed, m):
    return DP.PromptedDecoder(DP.pretrained(folder), m=m, seed=seed)


def _dec_prefix(folder, seed, m):
    """Prefix-tuning: the MLP's hidden width is the model's d (Eq. 10.9)."""
    net = DP.pretrained(folder)
    return DP.PrefixedDecoder(net, m=m, hidden=net.config.hidden_size, seed=seed)


def _dec_ptuning_v2(folder, seed, m):
    return DP.PrefixedDecoder(DP.pretrained(folder), m=m, seed=seed)


def _peft_targets(targets):
    """Our targets as peft's ``target_modules``: our regex of every block linear is its "all-linear"."""
    if targets == DP.BLOCK_LINEARS:
        return "all-linear"
    return targets if isinstance(targets, str) else list(targets)


def _peft_full():
    return None   # no adapter: every weight of LlamaForCausalLM trains


def _peft_lora(targets, r):
    """``_dec_lora`` as peft's LoraConfig: the same targets, r and α = 2r."""
    return "LoraConfig", {"r": r, "lora_alpha": 2 * r, "target_modules": _peft_targets(targets), "lora_dropout": 0.0}


def _peft_ia3():
    """``_dec_ia3`` as peft's IA3Config: the same k, v and down_proj modules (regexes, as peft reads them)."""
    return "IA3Config", {"target_modules": DP.IA3_TARGETS, "feedforward_modules": DP.IA3_FEEDFORWARD}


def _no_paging(**opts):
    return False


def _takes(owner: str, what: str, fn, n_args: int, defaults: dict) -> None:
    """A record's function must accept its defaults as keywords (after ``n_args`` positional
    arguments: (mm, seed), (shape,)…): a default it does not take would fail only when a run
    reaches it, hours into a sweep."""
    if fn is None:
        return
    try:
        inspect.signature(fn).bind(*[None] * n_args, **defaults)
    except TypeError as e:
        raise ValueError(f"method {owner!r}: its {what} does not take its defaults {sorted(defaults)} ({e})") from None
    except ValueError:  # a builtin without a signature: nothing to check
        pass


def checked_grid(owner: str, lrs, min_rates: int = 1) -> list[float]:
    """``stats.rate_grid(lrs, min_rates)`` with its error naming ``owner`` (a method, an arm)."""
    try:
        return stats.rate_grid(lrs, min_rates)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{owner}: {e}") from None


@dataclass(frozen=True)
class Decoder:
    """A method's form on the decoder: ``attach(folder, seed, **opts)`` → ids → logits module;
    ``lrs`` its grid there; ``paged8(**opts)``: trains with PagedAdamW8bit (the real recipe);
    ``peft(**opts)``: the same method in HF peft on LlamaForCausalLM, (config class, arguments)
    or None for no adapter; absent (None) where chapter 11 does not run the method through peft."""
    attach: Callable
    lrs: tuple
    defaults: dict = field(default_factory=dict)
    paged8: Callable = _no_paging
    peft: Callable | None = None


_DEC_QLORA = Decoder(_dec_qlora, (1e-3, 3e-3, 1e-2),
                     {"targets": DP.BLOCK_LINEARS, "r": DP.R, "quant_type": "nf4", "double_quant": True,
                      "recipe": False},
                     lambda recipe, **opts: recipe)


def _options(name: str, defaults: dict, overrides: dict, where: str = "") -> dict:
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ValueError(f"method {name!r}{where} takes no option(s) {unknown}; it takes {sorted(defaults)}")
    return {**defaults, **overrides}


def _total(shape, **opts):
    """Every weight the sentence encoder uses: the pooler (eq. 0.7) is not part of it."""
    return C.total_params(shape) - C.param_breakdown(shape)["pooler"]


@dataclass(frozen=True)
class Compared:
    """One arm a record contributes to chapter 08's comparison (``compared_arms``): its
    ``label`` (None: the method's name), option overrides, its own learning-rate grid (None:
    the record's) and the note chapter 08's table prints."""
    label: str | None = None
    opts: dict = field(default_factory=dict)
    lrs: tuple | None = None
    note: str = ""


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
    decoder: Decoder | None = None     # its form on chapter 09's decoder (chapter 10)
    wrap: Callable | None = None       # (classifier, seed, **opts) -> the module trained instead
    compared: tuple[Compared, ...] = (Compared(),)  # its chapter 08 arms; () = not compared

    def __post_init__(self):
        """A record that could not run is refused when it is written, not hours into a sweep:
        a name, a grid of positive rates, and functions that take the record's defaults."""
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a method's name must be a non-empty str, got {self.name!r}")
        checked_grid(f"method {self.name!r}", self.lrs)
        for what, fn, n in (("attach_torch", self.attach_torch, 2), ("attach_numpy", self.attach_numpy, 2),
                            ("count", self.count, 1), ("wrap", self.wrap, 2)):
            _takes(self.name, what, fn, n, self.defaults)
        if self.decoder is not None:  # its decoder form, by the same rules
            checked_grid(f"method {self.name!r} on the decoder", self.decoder.lrs)
            for what, fn, n in (("decoder attach", self.decoder.attach, 2), ("decoder paged8", self.decoder.paged8, 0),
                                ("decoder peft", self.decoder.peft, 0)):
                _takes(self.name, what, fn, n, self.decoder.defaults)

    def opts(self, **overrides) -> dict:
        return _options(self.name, self.defaults, overrides)

    def decoder_form(self) -> Decoder:
        if self.decoder is None:
            have = [m.name for m in _RECORDS if m.decoder is not None]
            raise ValueError(f"method {self.name!r} has no decoder form (chapter 10); these have one: {have}")
        return self.decoder

    def decoder_opts(self, **overrides) -> dict:
        return _options(self.name, self.decoder_form().defaults, overrides, " on the decoder")

    def setup_decoder(self, folder, seed: int, **overrides):
        """A fresh pretrained decoder from ``folder`` adapted by this method (ids → logits)."""
        return self.decoder_form().attach(folder, checks.seed(seed), **self.decoder_opts(**overrides))

    def peft_args(self, **overrides) -> tuple[str, dict] | None:
        """This method on ``transformers.LlamaForCausalLM`` through HF peft (chapter 11): (the peft
        config class, its arguments), from the decoder form's defaults; None: no adapter (full FT)."""
        form = self.decoder_form()
        if form.peft is None:
            raise ValueError(f"method {self.name!r} has no peft form on the decoder; these have one: "
                             f"{list(PEFT_DECODER_METHODS)}")
        return form.peft(**self.decoder_opts(**overrides))

    def peft_config(self, extra: dict | None = None, **overrides):
        """``peft_args`` built: a peft config (``extra``: peft-only arguments such as
        ``init_lora_weights``), or None for full fine-tuning."""
        spec = self.peft_args(**overrides)
        if spec is None:
            return None
        import peft

        cls, kwargs = spec
        return getattr(peft, cls)(**kwargs, **(extra or {}))

    def setup_torch(self, mm, seed: int, **overrides):
        self.attach_torch(mm, seed, **self.opts(**overrides))

    def setup_numpy(self, mm, seed: int, **overrides):
        if self.attach_numpy is None:
            why = "it wraps the torch classifier" if self.wrap is not None else "it needs bitsandbytes"
            raise ValueError(f"method {self.name!r} has no NumPy version ({why})")
        self.attach_numpy(mm, seed, **self.opts(**overrides))

    def params(self, shape, **overrides) -> int:
        return self.count(shape, **self.opts(**overrides))

    def wrap_torch(self, clf, seed: int, **overrides):
        """The module the runner trains: ``clf`` itself, or the record's ``wrap`` of it."""
        return clf if self.wrap is None else self.wrap(clf, checks.seed(seed), **self.opts(**overrides))


_LORA = dict(targets=("query", "value"), r=8, alpha=16)
_RECORDS = [
    Method("probe", "the task head only (the encoder is frozen)", _freeze_torch, _freeze_numpy,
           lambda s, **q: 0, (3e-3, 1e-2, 3e-2), {"quant_type": None, "double_quant": True},
           compared=(Compared(note="frozen encoder, head only"),)),
    Method("full", "every weight", _nothing, _nothing, _total, (5e-5, 1e-4, 2e-4),
           decoder=Decoder(_dec_full, (1e-4, 3e-4, 1e-3), peft=_peft_full), compared=(Compared(note="every weight"),)),
    Method("lora", "A (r x d_in) and B (d_out x r) beside each targeted matrix (Eq. 2.4)",
           lambda mm, seed, targets, r, alpha, rslora: TL.attach_lora(mm.bert, targets, r=r, alpha=alpha,
                                                                      rslora=rslora, seed=seed),
           lambda mm, seed, targets, r, alpha, rslora: L.attach_lora(mm.bert, targets, r=r, alpha=alpha,
                                                                     rslora=rslora, seed=seed),
           lambda s, targets, r, alpha, rslora: L.lora_params(s, r, targets), (1e-3, 3e-3, 1e-2),
           {**_LORA, "rslora": False}, _merge_lora,  # rslora: s = α/√r (Eq. 2.3)
           Decoder(_dec_lora, (1e-3, 3e-3, 1e-2), {"targets": ("q_proj", "v_proj"), "r": DP.R}, peft=_peft_lora),
           compared=(Compared("lora_qv", note="r=8, α=16 on W_q, W_v"),
                     Compared("lora_all", {"targets": "all-linear"}, (3e-4, 1e-3, 3e-3),
                              note="r=8, α=16 on every linear layer"))),
    # a LoRA variant (chapter 02, §11); chapter 08 compares it at LoRA's q,v setting, its runs
    # added to the stored comparison by ``python -m pedagogy_lib.book.ch08.experiment --append --methods dora``
    Method("dora", "LoRA's A and B on the direction of each targeted matrix, and its row magnitudes m (Eq. 2.8)",
           lambda mm, seed, targets, r, alpha: TD.attach_dora(mm.bert, targets, r=r, alpha=alpha, seed=seed),
           lambda mm, seed, targets, r, alpha: D.attach_dora(mm.bert, targets, r=r, alpha=alpha, seed=seed),
           lambda s, targets, r, alpha: D.dora_params(s, r, targets), (1e-3, 3e-3, 1e-2), dict(_LORA), _merge_dora,
           compared=(Compared(note="r=8, α=16 on W_q, W_v, plus row magnitudes m (merged for inference)"),)),
    *[Method(kind, f"{kind} bottleneck adapters, W_down and W_up with biases (Eq. 3.2)",
             lambda mm, seed, m, kind=kind: TA.attach_adapters(mm.bert, kind, m, seed=seed),
             lambda mm, seed, m, kind=kind: A.attach_adapters(mm.bert, kind, m, seed=seed),
             lambda s, m, kind=kind: A.adapter_params(s.hidden, m, kind, s.layers), lrs, {"m": m},
             compared=(Compared(note=note),))
      for kind, m, lrs, note in (("houlsby", 16, (1e-3, 3e-3, 1e-2), "m=16, two adapters per block"),
                                 ("pfeiffer", 32, (1e-3, 3e-3, 1e-2), "m=32, one adapter per block"),
                                 ("parallel", 16, (3e-3, 1e-2, 3e-2), "m=16, beside each block's FFN"))],
    Method("prefix", "m key and value vectors per layer, through an MLP while training (Eqs. 4.1, 4.5)",
           lambda mm, seed, m, reparam: TP.attach_prefix(mm.bert, m, reparam=reparam, seed=seed),
           lambda mm, seed, m, reparam: P.attach_prefix(mm.bert, m, reparam=reparam, seed=seed),
           lambda s, m, reparam: P.num_prefix_params(m, s.hidden, s.layers), (1e-3, 3e-3, 1e-2),
           {"m": 10, "reparam": 128}, _fold_prefix,
           Decoder(_dec_prefix, (1e-3, 3e-3, 1e-2), {"m": DP.PREFIX_TOKENS}),
           compared=(Compared(note="m=10 virtual tokens, MLP reparameterisation (folded for inference)"),)),
    Method("prompt", "m soft-prompt vectors at the input (Eq. 5.1)", _prompt(TPT.attach_prompt),
           _prompt(PT.attach_prompt),
           lambda s, m, init: PT.num_prompt_params(m, s.hidden), (3e-3, 1e-2, 3e-2), {"m": 10, "init": "vocab"},
           decoder=Decoder(_dec_prompt, (3e-3, 1e-2, 3e-2), {"m": DP.PROMPT_TOKENS}),
           compared=(Compared(note="m=10 soft prompt at the input, init from the 5,000 first whole-word tokens"),)),
    Method("deep_prompt", "m hidden-state vectors at every layer's input",
           lambda mm, seed, m: TPT.attach_deep_prompt(mm.bert, m, seed=seed),
           lambda mm, seed, m: PT.attach_deep_prompt(mm.bert, m, seed=seed),
           lambda s, m: PT.num_deep_prompt_params(m, s.hidden, s.layers), (3e-3, 1e-2, 3e-2), {"m": 10},
           compared=(Compared(note="m=10 hidden-state vectors at every layer's input"),)),
    Method("ptuning_v2", "m keys and values per layer, trained directly (Eq. 5.4)",
           lambda mm, seed, m: TP.attach_ptuning_v2(mm.bert, m, seed=seed),
           lambda mm, seed, m: P.attach_ptuning_v2(mm.bert, m, seed=seed),
           lambda s, m: P.num_prefix_params(m, s.hidden, s.layers), (3e-3, 1e-2, 3e-2), {"m": 10},
           decoder=Decoder(_dec_ptuning_v2, (3e-3, 1e-2, 3e-2, 1e-1, 3e-1), {"m": DP.PREFIX_TOKENS}),
           compared=(Compared(note="m=10 per-layer keys/values, no reparameterisation"),)),
    Method("bitfit", "the biases and LayerNorm shifts (``sites``: only those per-block biases, e.g. b_q, b_m2)",
           lambda mm, seed, include_layernorm, sites: TB.apply_bitfit(mm.bert, sites, include_layernorm),
           lambda mm, seed, include_layernorm, sites: B.apply_bitfit(mm.bert, sites, include_layernorm),
           lambda s, include_layernorm, sites: B.bitfit_params(s, include_layernorm, only=sites),
           (3e-3, 1e-2, 3e-2), {"include_layernorm": True, "sites": None},
           compared=(Compared(note="biases + LayerNorm β"),)),
    Method("ia3", "vectors l_k, l_v rescaling keys and values and l_ff rescaling the FFN's hidden units (Eqs. 6.5-6.8)",
           lambda mm, seed: TI.attach_ia3(mm.bert), lambda mm, seed: I.attach_ia3(mm.bert),
           lambda s: I.ia3_params(s), (1e-2, 3e-2, 1e-1), {}, _merge_ia3,
           Decoder(_dec_ia3, (3e-3, 1e-2, 3e-2), peft=_peft_ia3),
           compared=(Compared(note="l_k, l_v and l_ff (FFN hidden), started at 1"),)),
    Method("qlora", "LoRA on a frozen 4-bit (NF4 + double quantisation) base", _qlora_torch, None,
           lambda s, targets, r, alpha, **q: L.lora_params(s, r, targets), (1e-3, 3e-3, 1e-2),
           {**_LORA, "quant_targets": "all-linear", "quant_type": "nf4", "double_quant": True}, decoder=_DEC_QLORA,
           compared=(Compared(note="NF4+DQ base (bitsandbytes Linear4bit), LoRA r=8 on W_q, W_v"),)),
    # chapter 01's measurement, not a PEFT method to deploy: lr = η/√d (torch_ref.subspace.subspace_lr),
    # so an arm at another d gives its own grid; the default grid is η = 0.1, 0.3, 1 at d = 1000
    Method("subspace", "z, d numbers moving every weight of the layers and the head along P (Eq. 1.9)",
           _nothing, None, lambda s, d, kind: d, tuple(TS.subspace_lr(eta, 1000) for eta in (0.1, 0.3, 1.0)),
           {"d": 1000, "kind": "sparse"}, wrap=_subspace, compared=()),
]


def _unique(items, key: str, what: str) -> dict:
    """{item.<key>: item}, refusing two items with one key (the later would silently replace
    the earlier everywhere the dict is read)."""
    out: dict = {}
    for x in items:
        if getattr(x, key) in out:
            raise ValueError(f"two {what} {getattr(x, key)!r}")
        out[getattr(x, key)] = x
    return out


def _by_name(records) -> dict[str, Method]:
    return _unique(records, "name", "registry records are named")


METHODS: dict[str, Method] = _by_name(_RECORDS)
# The methods with a peft form on the decoder (chapter 11 trains each as our twin or through peft).
PEFT_DECODER_METHODS = tuple(m.name for m in _RECORDS if m.decoder is not None and m.decoder.peft is not None)


def get(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {list(METHODS)}")
    return METHODS[name]


@dataclass(frozen=True)
class Arm:
    """One setting a chapter compares: ``label`` (as stored in results), the registry method,
    its overrides, and optionally its own learning-rate grid and a note for tables.
    ``model``: "encoder" (MiniLM, the record's attach) or "decoder" (the record's ``decoder``
    form); ``rate_from``: a decoder arm too slow to search takes the rate that arm chose."""
    label: str
    method: str
    opts: dict = field(default_factory=dict)
    lrs: tuple | None = None
    note: str = ""
    model: str = "encoder"
    rate_from: str | None = None

    def __post_init__(self):
        if self.lrs is not None:  # checked now, not when a run reaches it
            checked_grid(f"arm {self.label!r}", self.lrs)
        if self.model not in ("encoder", "decoder"):
            raise ValueError(f"arm {self.label!r}: model must be 'encoder' or 'decoder', got {self.model!r}")
        if self.model == "decoder":
            get(self.method).decoder_opts(**self.opts)  # no decoder form, or an unknown option: refused here
        else:
            get(self.method).opts(**self.opts)  # unknown method or option: refused here

    @property
    def record(self) -> Method:
        return METHODS[self.method]

    @property
    def grid(self) -> tuple:
        if self.lrs is not None:
            return self.lrs
        return self.record.decoder.lrs if self.model == "decoder" else self.record.lrs

    def _on(self, model: str):
        if self.model != model:
            raise ValueError(f"arm {self.label!r} runs on the {self.model}, not on the {model}")

    def setup_torch(self, mm, seed: int):
        self._on("encoder")
        self.record.setup_torch(mm, seed, **self.opts)

    def setup_decoder(self, folder, seed: int):
        """A fresh decoder from the checkpoint ``folder``, adapted as this arm says."""
        self._on("decoder")
        return self.record.setup_decoder(folder, seed, **self.opts)

    @property
    def paged8(self) -> bool:
        """Whether this decoder arm trains with PagedAdamW8bit (the real QLoRA recipe does)."""
        self._on("decoder")
        return bool(self.record.decoder.paged8(**self.record.decoder_opts(**self.opts)))

    def params(self, shape) -> int:
        self._on("encoder")
        return self.record.params(shape, **self.opts)

    def wrap_torch(self, clf, seed: int):
        self._on("encoder")
        return self.record.wrap_torch(clf, seed, **self.opts)

    def inference(self, mm):
        if self.record.inference is not None:
            self.record.inference(mm)


def arms(*items) -> dict[str, Arm]:
    """{label: Arm} from Arms, refusing two with one label."""
    return _unique(items, "label", "arms are labelled")


def compared_arms() -> dict[str, Arm]:
    """Chapter 08's comparison, {label: Arm}: every record's ``compared`` arms, in registry
    order (read now, so a record added to ``METHODS`` joins it with no other edit)."""
    return arms(*(Arm(c.label or m.name, m.name, dict(c.opts), c.lrs, c.note)
                  for m in METHODS.values() for c in m.compared))


def _dec(label, method, opts=None, **kw) -> Arm:
    return Arm(label, method, opts or {}, model="decoder", **kw)


# Chapter 10's settings on the decoder, in the order its tables list them.
DECODER_ARMS = arms(
    _dec("full", "full", note="every weight, the tied embedding (LM head) included"),
    _dec("lora-qv", "lora", note="r=8, α=16 on q_proj, v_proj (the paper's placement)"),
    _dec("lora-all", "lora", {"targets": DP.BLOCK_LINEARS},
         note="r=8, α=16 on every block linear (peft's all-linear)"),
    _dec("ia3", "ia3", note="k, v outputs and down_proj's input"),
    _dec("prompt", "prompt", note="16 soft-prompt vectors from sampled vocabulary rows (Eq. 10.4)"),
    _dec("qlora-ours", "qlora", note="our NF4 + DQ round trip of every block linear, LoRA all-linear"),
    _dec("qlora-recipe", "qlora", {"recipe": True}, rate_from="lora-all",
         note="bitsandbytes 4-bit + peft LoRA all-linear + PagedAdamW8bit"),
    _dec("prefix", "prefix", note="16 slots per layer through an MLP of width d, folded after training (Eq. 10.9)"),
    _dec("ptuning-v2", "ptuning_v2", note="16 slots per layer trained directly"),
)


def decoder_arm(label) -> Arm:
    """A decoder arm: an ``Arm``, or a label of ``DECODER_ARMS``."""
    if isinstance(label, Arm):
        label._on("decoder")
        return label
    if label not in DECODER_ARMS:
        raise ValueError(f"unknown decoder arm {label!r}; choose from {list(DECODER_ARMS)}")
    return DECODER_ARMS[label]
