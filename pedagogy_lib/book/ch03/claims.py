"""The article's adapter claims (chapter 03), each with a value computed here and a verdict.

``claims(results)`` takes what the chapter measured ({"latency": …, "accuracy": …,
"identity": …}); with ``None`` it loads the saved results JSON files and recomputes the
rest (counts, the identity check) in well under a second.
"""
from __future__ import annotations

from types import SimpleNamespace

from pedagogy_lib import adapters as A
from pedagogy_lib import stats
from pedagogy_lib import counting as C
from pedagogy_lib.book.ch03.experiment import LORA, by_seed, edges, identity_deviation, load_results, versus
from pedagogy_lib.book import sentences as S
from pedagogy_lib.book.rules import (Claims, band_verdict, ci_text, graded, no_verdict_text, paired_points, table,
                                     worst_verdict)

SOURCE_T1 = "LoRA paper Table 1 (GPT-2 medium, batch 1, 128 tokens; secondary copy)"
# LoRA Table 1 (secondary copy): batch 1, sequence 128: FT/LoRA 19.8 ms, AdapterL 23.9 ms, AdapterH 25.8 ms
LORA_T1_MS = {"none": 19.8, "AdapterL": 23.9, "AdapterH": 25.8}

CLAIMS = Claims("03")


def _pct(x: float) -> str:
    return f"{100 * x:+.1f}%"


def latency_summary(lat: dict) -> dict:
    """Overheads by setting: {(batch, seq_len): {variant: ratio − 1}}, and the FLOP bound."""
    rows = {(s["batch"], s["seq_len"]): {k: v["ratio"] - 1 for k, v in s["models"].items() if k != "none"}
            for s in lat["settings"]}
    return {"rows": rows, "flops": lat["flop_overhead"]}


def val_test_gap(acc: dict, name: str, ref: str = LORA, seeds=None) -> dict:
    """Does validation order ``name`` and ``ref`` as test does? The validation difference and
    the test difference (each name − ref, points, paired by seed), and their gap per seed
    (val − test), each with its 95 % interval: a gap whose interval contains 0 is a
    disagreement inside the noise of the two splits. ``seeds``: only these (e.g. the seeds
    that did not choose the rate, whose validation scores are not selected upwards)."""
    keep = lambda d: {s: x for s, x in d.items() if seeds is None or s in seeds}  # noqa: E731
    val, test = keep(by_seed(acc, name, "val")), keep(by_seed(acc, name, "test"))
    val_r, test_r = keep(by_seed(acc, ref, "val")), keep(by_seed(acc, ref, "test"))
    d_val = {s: val[s] - val_r[s] for s in val}
    d_test = {s: test[s] - test_r[s] for s in test}
    return {"val": stats.paired_by_seed(val, val_r), "test": stats.paired_by_seed(test, test_r),
            "gap": stats.paired_by_seed(d_val, d_test)}


def context(results: dict | None = None) -> SimpleNamespace:
    """The stored latency and accuracy results (or the chapter's), and the identity check."""
    res = load_results() if results is None else dict(results)
    if "latency" not in res or "accuracy" not in res:
        res = {**load_results(), **res}
    return SimpleNamespace(ident=res.get("identity") or identity_deviation(), acc=res["accuracy"],
                           lat=latency_summary(res["latency"]), device=res["latency"]["device"])


@CLAIMS.rule("ch03-identity-init", "Initialising W_up near zero makes the adapter block start as the identity.",
             published="block ≈ identity at init", source="Houlsby et al. 2019, §2.1")
def _identity(c):
    ident = c.ident
    ok = ident["exact"] == 0.0 and ident["near"] < 100 * ident["init_scale"]
    return ("holds" if ok else "wrong",
            f"max |Adapter(h) − h| = {ident['exact']:.1g} with W_up = 0, "
            f"{ident['near']:.1e} with W_up ~ N(0, {ident['init_scale']:g}²)")


@CLAIMS.rule("ch03-4x-lora", "Adapters match LoRA's quality at ~4× the trainable parameters.",
             published="LoRA Table 2 GLUE averages: " + ", ".join(
                 f"{k} {a} vs LoRA {b}" for k, (_, _, a, b) in S.LORA_T2.items()),
             source="LoRA paper Table 2", sentence="adapter-4x-lora")
def _four_x(c):
    verdict, why, near4 = S.adapter_4x_ch03(c.acc["results"])  # one verdict for the sentence (ch08 records it too)
    return verdict, f"{why}; the adapter nearest 4× is {near4}"


@CLAIMS.rule("ch03-storage-2md", "Adapter per-task storage is ~2md per layer.",
             published="~2md per layer", source="the article's side-by-side table")
def _storage(c):
    d, m = 768, 64
    per_layer = {k: A.adapter_params(d, m, k, 1) for k in ("pfeiffer", "parallel", "houlsby")}
    one = per_layer["pfeiffer"]  # one adapter: 2md + m + d
    rel, rel_h = one / (2 * m * d), per_layer["houlsby"] / (2 * m * d)
    # per adapter: within 5% of 2md holds, within 25% ("~") approximately
    verdict = graded(abs(rel - 1) <= 0.05, abs(rel - 1) <= 0.25)
    return verdict, (f"one adapter: 2md + m + d = {one:,} at d={d}, m={m}, {rel:.4f}× 2md; per layer Pfeiffer "
                     f"{per_layer['pfeiffer'] / one:.0f}, parallel {per_layer['parallel'] / one:.0f}, Houlsby "
                     f"{per_layer['houlsby'] / one:.0f} adapter(s): Houlsby {per_layer['houlsby']:,} = {rel_h:.2f}× 2md"
                     + (f" (~{2 * round(rel_h)}md per layer)" if round(rel_h) > 1 else ""))


_T1 = {k: 100 * (v / LORA_T1_MS["none"] - 1) for k, v in LORA_T1_MS.items()}


@CLAIMS.rule("ch03-latency", "Adapters add 1–3% latency per block; parallel adapters under 1%.",
             published=f"whole model at batch 1: AdapterH +{_T1['AdapterH']:.0f}%, AdapterL +{_T1['AdapterL']:.0f}%; "
                       "no published number for parallel adapters", source=SOURCE_T1)
def _latency(c):
    # merged LoRA does the base model's work: its distance from 0 is the noise floor
    rows = c.lat["rows"]
    noise = max(abs(r.get("LoRA merged", 0.0)) for r in rows.values())
    big = max(rows, key=lambda k: k[0] * k[1])
    worst_b1 = max(rows[k]["houlsby"] for k in rows if k[0] == 1)
    h_big, p_big, par_big = rows[big]["houlsby"], rows[big]["pfeiffer"], rows[big]["parallel"]
    flop_h = c.lat["flops"]["houlsby"][str(big[1])]
    if all(r["houlsby"] <= 0.03 + noise and r["parallel"] < 0.01 + noise for r in rows.values()):
        verdict = "holds"
    else:  # approximately: true of the FLOPs at large batch only
        verdict = "approximately" if h_big <= max(0.03, flop_h) + noise else "wrong"
    return verdict, (f"MiniLM m=64, {c.device}, noise floor ±{100 * noise:.1f}% (merged LoRA): "
                     f"Houlsby {_pct(worst_b1)} at batch 1 (worst), {_pct(h_big)} at batch {big[0]}×{big[1]} "
                     f"(FLOP share {100 * flop_h:.1f}%), Pfeiffer {_pct(p_big)}, parallel {_pct(par_big)} there "
                     f"(eager PyTorch runs it after the FFN, not beside it); BERT-base m=64 FLOP share "
                     f"{100 * A.flop_overhead(768, 3072, 64, 'houlsby', 128):.1f}%")


@CLAIMS.rule("ch03-pfeiffer-half", "Pfeiffer adapters keep most of the quality at half the parameters.",
             published="RoBERTa-large: AdptP 3.0M 88.4 vs AdptH 6.0M 87.8; AdptP 0.8M 87.9 vs AdptH 0.8M 86.4",
             source="LoRA paper Table 2")
def _pfeiffer_half(c):
    # "most of the quality": Houlsby − Pfeiffer at the same m at most 1 point (paired, 95 % CI)
    acc = c.acc
    ratio = A.adapter_params(768, 64, "pfeiffer", 12) / A.adapter_params(768, 64, "houlsby", 12)
    pairs = [k for k in (16, 64) if f"Pfeiffer m={k}" in acc["results"] and f"Houlsby m={k}" in acc["results"]]
    diffs = {k: versus(acc, f"Houlsby m={k}", f"Pfeiffer m={k}") for k in pairs}
    worst = worst_verdict(*(band_verdict(d, hi=1.0) for d in diffs.values()), default="untestable-here")
    edge = {n: e for n, e in edges(acc).items() if n in {f"{a} m={k}" for k in pairs for a in ("Houlsby", "Pfeiffer")}}
    verdict = "wrong" if ratio != 0.5 else ("untestable-here" if edge else worst)
    return verdict, (f"parameters exactly {ratio:g}× Houlsby's at the same m; "
                     + (no_verdict_text(edge, "on accuracy") or "VADER: ")
                     + "; ".join(ci_text(d, f"Houlsby m={k}", "Pfeiffer") for k, d in diffs.items())
                     + " (rule: Houlsby − Pfeiffer ≤ 1 point: whole interval → holds, mean only → approximately)")


@CLAIMS.rule("ch03-houlsby-2.1pct", "Houlsby adapters with m=64 train 2.1% of BERT-large per task.",
             published="2.1% (m=64), 3.6% (m chosen per task from 8–256)", source="Houlsby et al. 2019, Table 1")
def _houlsby_share(c):
    bl = C.BERT_LARGE
    h64_large = A.adapter_params(bl.hidden, 64, "houlsby", bl.layers)
    ln_large = bl.layers * 2 * 2 * bl.hidden  # Houlsby et al. also train the LayerNorms
    f_h = (h64_large + ln_large) / C.PUBLISHED_TOTAL["BERT-large"]
    return ("approximately" if abs(100 * f_h - 2.1) <= 0.3 else "wrong",
            f"{h64_large:,} adapter + {ln_large:,} LayerNorm parameters = {100 * f_h:.2f}% of 340M")


@CLAIMS.rule("ch03-adapterhub-pfeiffer", "AdapterHub's Pfeiffer config (reduction 16) trains 0.81% of BERT-base.",
             published="≈0.89M, 0.81%", source="AdapterHub SeqBnConfig (arithmetic on the configuration)")
def _adapterhub(c):
    bb = C.BERT_BASE
    p_hub = A.adapter_params(bb.hidden, bb.hidden // 16, "pfeiffer", bb.layers)
    f_p = C.fraction(p_hub, bb)
    return ("holds" if abs(100 * f_p - 0.81) < 0.01 else "wrong",
            f"m = 768/16 = 48: {p_hub:,} = {100 * f_p:.3f}% of {C.total_params(bb):,}")


@CLAIMS.rule("ch03-encoders", "Adapters are best for encoder models (BERT); LoRA for generative ones.",
             published="GPT-3: AdapterH 40.1M 73.2 vs LoRA 4.7M 73.4 WikiSQL (adapters close on a decoder too)",
             source="LoRA paper Table 4")
def _encoders(c):
    # context only: the bracketed adapters at about LoRA's count (< 1.5×), each paired with LoRA
    res, skip = c.acc["results"], edges(c.acc)
    near1 = [ci_text(versus(c.acc, n), n, "LoRA") for n, r in res.items()
             if r["kind"] != "lora" and r["trainable"] < 1.5 * res[LORA]["trainable"] and n not in skip]
    near = "; ".join(near1) or "no bracketed adapter at about LoRA's count"
    return "untestable-here", (f"we have one encoder: on VADER, at about LoRA's count, {near}; "
                               "no decoder here to compare")


def claims(results: dict | None = None) -> list[dict]:
    return CLAIMS.judge(context(results))


__all__ = ["CLAIMS", "claims", "context", "edges", "identity_deviation", "latency_summary", "load_results",
           "paired_points", "table", "val_test_gap", "versus"]
