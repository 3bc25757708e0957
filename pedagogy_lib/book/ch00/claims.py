"""Chapter 00's claims: the article's statements about full fine-tuning's size and memory,
each with a value computed from ``counting`` (published shapes, exact arithmetic) and the
methods' count formulas and a
verdict from the shared rules (``book.rules``). Each claim is data (text, published value,
source) with one short rule (``book.rules.Claims``)."""
from __future__ import annotations

import math
from types import SimpleNamespace

from pedagogy_lib.counting import (BERT_LARGE, GPT3, LLAMA_65B, PUBLISHED_TOTAL, ROBERTA_BASE, SCHEMES,
                                   bytes_per_param, customer_storage_gb, finetune_memory_gb, fraction, pct,
                                   peft_memory_gb, scheme_components, shapes, total_params)
from pedagogy_lib.bitfit import bitfit_params
from pedagogy_lib.lora import lora_params
from pedagogy_lib.book import sentences as S
from pedagogy_lib.book.ch00.table import method_table
from pedagogy_lib.book.rules import (Claims, _about_band, _above_by, about_verdict, graded, interval_verdict,
                                     rounded_verdict, worst_verdict)

CLAIMS = Claims("00")
bpp, gb = bytes_per_param, finetune_memory_gb  # bytes per parameter; GB of a full fine-tuning (n, scheme)
ABOUT_01 = _about_band("0.1")  # "about 0.1%" is read as what rounds to 0.1 at its last decimal


def _bounds(c, row: str, names) -> tuple[float, float]:
    """Smallest and largest share (a fraction) of the models `names` in one row of `method_table`."""
    f = [fraction(c.table[row][k], c.models[k]) for k in names]
    return min(f), max(f)


def _range(c, row: str, names) -> str:
    lo, hi = _bounds(c, row, names)
    return f"{pct(lo)}–{pct(hi)}"


GPU_GB = 80  # the largest common single accelerator (A100/H100 80 GB)


def context() -> SimpleNamespace:
    """The published shapes, the per-method parameter table, and GPT-3's and LLaMA-65B's counts."""
    models = shapes()
    n3, lora4 = total_params(GPT3), lora_params(GPT3, 4)
    return SimpleNamespace(models=models, table=method_table(models), n3=n3, n65=total_params(LLAMA_65B),
                           enc=[k for k, s in models.items() if s.encoder],
                           llm=[k for k, s in models.items() if not s.encoder],
                           lora4=lora4, lora8=lora_params(GPT3, 8),
                           store=customer_storage_gb(n3, lora4, 100, bytes_per_value=4))


def _gap(ours, stated) -> str:
    return f"{100 * (ours - stated) / stated:+.1f}% from {stated:g}"


def _share(c, row: str, names) -> tuple[float, float]:
    lo, hi = _bounds(c, row, names)
    return 100 * lo, 100 * hi


def _span(*ranges) -> tuple[float, float]:
    return min(r[0] for r in ranges), max(r[1] for r in ranges)


# --- memory and storage
@CLAIMS.rule("ch00-gpt3-fp32-weights", "GPT-3 (175B) takes roughly 700 GB as FP32 weights.",
             published="175B parameters; 350 GB fp16 checkpoint (= 700 GB in fp32)",
             source="Brown et al. 2020 Table 2.1; LoRA §4.2")
def _gpt3_fp32(c):
    w32 = gb(c.n3, "fp32-weights")
    return about_verdict(w32, 700), f"{c.n3:,} params × {bpp('fp32-weights'):.0f} B = {w32:.1f} GB ({_gap(w32, 700)})"


@CLAIMS.rule("ch00-gpt3-training-state", "Full fine-tuning needs gradients and optimiser states on top of the weights.",
             published="1.2 TB of VRAM for full fine-tuning GPT-3 (no breakdown given)", source="LoRA §4.2")
def _training_state(c):
    state = bpp("mixed-adam") - bpp("fp16-weights")  # bytes per parameter beyond the weights
    w16, paper_vram = gb(c.n3, "fp16-weights"), 1200  # GB, LoRA §4.2
    parts = [state > 0, paper_vram > w16]
    return (graded(all(parts), any(parts)),
            f"mixed-precision Adam: {bpp('mixed-adam'):.0f} B/param, {state:.0f} B of them beyond the fp16 "
            f"weights = {gb(c.n3, 'mixed-adam'):,.0f} GB for GPT-3 (before activations); the paper's "
            f"{paper_vram:,} GB is {paper_vram / w16:.1f}× the {w16:.0f} GB of fp16 weights")


@CLAIMS.rule("ch00-100-copies", "100 customers need 100 copies of a 700 GB checkpoint.",
             published="350 GB → 35 MB per task checkpoint with LoRA", source="LoRA §4.2")
def _copies(c):
    store = c.store
    copy = store["full"] / 100
    return about_verdict(copy, 700), (
        f"one FP32 copy {copy:.1f} GB ({_gap(copy, 700)}); 100 copies: {store['full'] / 1000:.1f} TB; "
        f"one base + 100 LoRA r=4 (q,v) deltas: {store['peft']:.1f} GB ({store['ratio']:.0f}× less)")


# --- shares of the parameters, per method: our range over the models against the article's
# interval ("about p%" is read as what rounds to p at its last decimal)
@CLAIMS.rule("ch00-table-lora", "LoRA trains 0.1–1% of the parameters.",
             published="article: 0.1–1%; RoBERTa-base 0.3M of 125M; GPT-3 4.7M (r=1) to 37.7M (r=8) of 175B",
             source="LoRA Tables 2 and 4")
def _table_lora(c):
    row = "LoRA r=8 (q,v)"
    lo, hi = _span(_share(c, row, c.enc), _share(c, row, c.llm))
    return interval_verdict(lo, hi, 0.1, 1.0), (f"r=8 on q,v: {_range(c, row, c.enc)} of BERT-size encoders, "
                                                f"{_range(c, row, c.llm)} of 7B–175B models")


@CLAIMS.rule("ch00-table-adapter", "Adapters train 0.5–2% of the parameters.",
             published="article: 0.5–2%; 2.1% (m=64) and 3.6% (m=8–256) on BERT-large", source="Houlsby et al. 2019, Table 1")
def _table_adapter(c):
    lo, hi = _span(_share(c, "Adapter Houlsby m=64", c.enc), _share(c, "Adapter Pfeiffer m=d/16", c.enc))
    return interval_verdict(lo, hi, 0.5, 2.0), (
        f"Houlsby m=64: {_range(c, 'Adapter Houlsby m=64', c.enc)}; "
        f"Pfeiffer m=d/16: {_range(c, 'Adapter Pfeiffer m=d/16', c.enc)} (encoders)")


@CLAIMS.rule("ch00-table-prefix", "Prefix-tuning trains about 0.1% of the parameters.",
             published=f"article: about 0.1% (read as {ABOUT_01[0]:g}–{ABOUT_01[1]:g}%); 0.1% on GPT-2 Medium "
                       "(table-to-text, m=10)", source="Li & Liang 2021", sentence="table-prefix-0.1pct")
def _table_prefix(c):
    verdict, why = S.prefix_share()  # one verdict for the sentence (ch04-fraction judges it too)
    return verdict, (f"{why}; m=20: {_range(c, 'Prefix m=20', c.enc)} (encoders), "
                     f"{_range(c, 'Prefix m=20', c.llm)} (7B–175B)")


@CLAIMS.rule("ch00-table-prompt", "Prompt tuning trains under 0.01% of the parameters.",
             published="article: under 0.01%; Lester et al.: under 0.01% for models over a billion parameters",
             source="Lester et al. 2021, Table 4", sentence="table-prompt-0.01pct")
def _table_prompt(c):
    lo, hi = _span(_share(c, "Prompt m=20", c.enc), _share(c, "Prompt m=20", c.llm), _share(c, "Prompt m=100", c.enc))
    return interval_verdict(lo, hi, 0.0, 0.01), (
        f"m=20: {_range(c, 'Prompt m=20', c.enc)} (encoders), {_range(c, 'Prompt m=20', c.llm)} (7B–175B); "
        f"m=100: {_range(c, 'Prompt m=100', c.enc)} (encoders)")


def _llama_bitfit(c) -> str:
    llama = [k for k in c.llm if k.startswith("LLaMA")]
    if llama and all(c.table["BitFit (biases + LN β)"][k] == 0 for k in llama):
        return "LLaMA (no biases, RMSNorm without β): 0"
    return f"LLaMA: {_range(c, 'BitFit (biases + LN β)', llama)}" if llama else ""


@CLAIMS.rule("ch00-table-bitfit", "BitFit trains about 0.1% of the parameters (0.08% for BERT).",
             published=f"article: about 0.1% (read as {ABOUT_01[0]:g}–{ABOUT_01[1]:g}%); BitFit: 0.08% (0.04% for "
                       "b_q, b_m2 only)", source="Ben Zaken et al. 2021")
def _table_bitfit(c):
    bf = bitfit_params(BERT_LARGE)
    bf_pct = 100 * fraction(bf, BERT_LARGE)
    lo, hi = _share(c, "BitFit (biases + LN β)", c.enc)
    llama_txt = _llama_bitfit(c)
    return (worst_verdict(interval_verdict(lo, hi, *ABOUT_01), rounded_verdict(bf_pct, "0.08")),
            f"biases + LayerNorm β: {_range(c, 'BitFit (biases + LN β)', c.enc)} "
            f"(encoders); BERT-large {bf:,} = {pct(bf_pct / 100, 3)} of our total, "
            f"{pct(bf / PUBLISHED_TOTAL['BERT-large'], 2)} of 340M" + (f"; {llama_txt}" if llama_txt else ""))


@CLAIMS.rule("ch00-update-0.1pct-one-gpu",
             "Updating only 0.1% of the parameters lets one fine-tune a 175B model on one GPU.",
             published="LoRA on GPT-3 still used 350 GB of VRAM; QLoRA's single-GPU case is 65B on 48 GB",
             source="LoRA §4.2; QLoRA abstract")
def _one_gpu(c):
    peft16 = peft_memory_gb(c.n3, c.lora8, frozen="fp16-weights")
    peft4 = peft_memory_gb(c.n3, c.lora8, frozen="nf4-dq")
    v = graded(peft16 <= GPU_GB, peft4 <= GPU_GB)
    fits = lambda x: f"within one {GPU_GB} GB GPU" if x <= GPU_GB else f"more than one {GPU_GB} GB GPU"  # noqa: E731
    return v, (f"LoRA r=8 (q,v) trains {pct(fraction(c.lora8, GPT3))}; frozen weights plus its trainable "
               f"state: {peft16:.0f} GB in fp16 ({fits(peft16)}), {peft4:.0f} GB in NF4+DQ ({fits(peft4)}), "
               f"before activations")


# --- counting
@CLAIMS.rule("ch00-lora-d4096-r8", "For d=4096, r=8 a LoRA update is 0.39% of the matrix.",
             published="—", source="arithmetic", sentence="lora-d4096-r8")
def _d4096(c):
    d4096 = 8 * (4096 + 4096) / (4096 * 4096)
    return rounded_verdict(100 * d4096, "0.39"), f"8·(4096+4096)/4096² = {pct(d4096, 3)}"


@CLAIMS.rule("ch00-lora-roberta-base", "LoRA r=8 trains 0.24% of RoBERTa-base.",
             published="0.3M (paper); the microsoft/LoRA README prints 0.8M", source="LoRA Table 2")
def _roberta_base(c):
    rb = lora_params(ROBERTA_BASE, 8)
    rb_pct = 100 * fraction(rb, ROBERTA_BASE)
    return rounded_verdict(rb_pct, "0.24"), (
        f"{ROBERTA_BASE.layers} layers × 2 matrices × 8·({ROBERTA_BASE.hidden}+{ROBERTA_BASE.hidden}) = "
        f"{rb:,} = {pct(rb_pct / 100, 3)} of {total_params(ROBERTA_BASE):,}")


@CLAIMS.rule("ch00-five-orders", "On a 175B model, full FT and LoRA r=8 differ by about five orders of magnitude "
             "in trainable parameters.",
             published="10,000× fewer trainable parameters (r=4 on q,v)", source="LoRA abstract, §4.2")
def _five_orders(c):
    orders = math.log10(c.n3 / c.lora8)
    return ("holds" if abs(orders - 5) <= 0.5 else "wrong",
            f"r=8 on q,v: {c.n3 / c.lora8:,.0f}× = 10^{orders:.1f}; r=4: 10^{math.log10(c.n3 / c.lora4):.1f}")


# --- 65B: "about 700 GB" and QLoRA's "> 780 GB", against the least a full fine-tuning with
# Adam needs among our schemes (fp16 weights and gradients, fp32 m and v)
def _cheapest_adam(c) -> tuple[str, str, float]:
    cheapest = min((k for k in SCHEMES if k.endswith("-adam")), key=bpp)
    return cheapest, ", ".join(scheme_components(cheapest)), gb(c.n65, cheapest)


@CLAIMS.rule("ch00-65b-full-ft-700gb", "Full fine-tuning of a 65B model needs about 700 GB.",
             published="more than 780 GB for regular 16-bit fine-tuning", source="QLoRA abstract",
             sentence="qlora-65b-700-50")
def _full_65b(c):
    cheapest, what, f65 = _cheapest_adam(c)
    return about_verdict(f65, 700), (
        f"LLaMA-65B {c.n65:,} params: {f65:.0f} GB at {bpp(cheapest):.0f} B/param ({what}; "
        f"{_gap(f65, 700)}), {gb(c.n65, 'mixed-adam'):,.0f} GB at {bpp('mixed-adam'):.0f} B/param with an fp32 "
        f"master copy")


@CLAIMS.rule("ch00-qlora-780gb", "QLoRA: 16-bit fine-tuning of a 65B model needs >780 GB.",
             published=">780 GB", source="QLoRA abstract")
def _qlora_780(c):
    cheapest, what, f65 = _cheapest_adam(c)
    return (graded(f65 > 780, about_verdict(f65, 780) != "wrong"),
            f"{f65:.1f} GB at {bpp(cheapest):.0f} B/param ({what}), our cheapest scheme with Adam; the paper "
            f"gives no breakdown, and this scheme lands {_above_by(f65, 780)}")


@CLAIMS.rule("ch00-gpt3-lora-checkpoint", "LoRA r=4 (q,v) shrinks GPT-3's checkpoint from 350 GB to 35 MB.",
             published="350 GB → 35 MB", source="LoRA §4.2")
def _lora_checkpoint(c):
    w16 = gb(c.n3, "fp16-weights")
    mb = c.lora4 * bpp("fp16-weights") / 1e6
    return worst_verdict(about_verdict(w16, 350), about_verdict(mb, 35)), (
        f"{w16:.1f} GB ({_gap(w16, 350)}) → {c.lora4:,} params × {bpp('fp16-weights'):.0f} B = "
        f"{mb:.1f} MB ({_gap(mb, 35)}) = {mb * 1e6 / 2**20:.1f} MiB")


def claims() -> list[dict]:
    """The article's chapter-00 claims (plus the paper figures they lean on), each with a value
    computed here and a verdict computed from it. Records: {id, chapter, claim, verdict,
    our_value, published_value, source}."""
    return CLAIMS.judge(context())
