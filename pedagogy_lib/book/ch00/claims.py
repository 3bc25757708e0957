"""Chapter 00's claims: the article's statements about full fine-tuning's size and memory,
each with a value computed from ``counting`` (published shapes, exact arithmetic) and a
verdict from the shared rules (``book.rules``)."""
from __future__ import annotations

import math
from functools import partial

from pedagogy_lib.counting import (BERT_LARGE, GPT3, LLAMA_65B, PUBLISHED_TOTAL, ROBERTA_BASE, SCHEMES,
                                   ModelShape, bitfit_params, bytes_per_param, customer_storage_gb,
                                   finetune_memory_gb, fraction, lora_params, method_table, pct,
                                   peft_memory_gb, scheme_components, shapes, total_params)
from pedagogy_lib.book.rules import (_about_band, _above_by, about_verdict, interval_verdict,
                                     record, rounded_verdict, worst_verdict)

_claim = partial(record, "00")  # (id, claim, verdict, our_value, published_value, source)


def _bounds(table_row: dict[str, int], models: dict[str, ModelShape], names) -> tuple[float, float]:
    """Smallest and largest share (a fraction) of `names` in one row of `method_table`."""
    f = [fraction(table_row[k], models[k]) for k in names]
    return min(f), max(f)


def _range(table_row: dict[str, int], models: dict[str, ModelShape], names) -> str:
    lo, hi = _bounds(table_row, models, names)
    return f"{pct(lo)}–{pct(hi)}"


GPU_GB = 80  # the largest common single accelerator (A100/H100 80 GB)


def claims() -> list[dict]:
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
