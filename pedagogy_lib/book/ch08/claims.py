"""Chapter 08: the article's comparison claims and its selection guide, judged against
``chapters/results/ch08_compare.json`` (``make compare``). Each claim is data (text, published
value, source) with one short rule (``book.rules.Claims``); every rule compares a difference of
means with its standard error (SE, over the seeds): a difference within 2·SE is one our budget
cannot tell from zero."""
from __future__ import annotations

import inspect

from pedagogy_lib.book.ch08 import experiment as compare
from pedagogy_lib import results as R
from pedagogy_lib.book import sentences as S
from pedagogy_lib.book.rules import Claims, band_verdict, ci_text, paired_points


def _acc(res, name):
    r = res["methods"][name]
    return 100 * r["mean"], 100 * r["std"]


def _gap(res, a, b):
    """Mean accuracy of a minus b, in points, and the larger of the two stds."""
    (ma, sa), (mb, sb) = _acc(res, a), _acc(res, b)
    return ma - mb, max(sa, sb)


def _se(res, a, b) -> float:
    """Standard error of the difference of the two means, in points: sqrt(sa² + sb²)/sqrt(k)."""
    (_, sa), (_, sb) = _acc(res, a), _acc(res, b)
    return (sa ** 2 + sb ** 2) ** 0.5 / len(res["budget"]["seeds"]) ** 0.5


def latency_noise(res: dict) -> float:
    """|ratio − 1| of the plain model against itself (``runner.measure_latency``)."""
    return abs(res["methods"]["probe"]["latency_ratio"] - 1) if "probe" in res["methods"] else 0.0


def _paired(res, a, b) -> dict:
    """Paired difference a − b in points over the seeds (``rules.paired_points``, Eqs. 8.1–8.3)."""
    return paired_points(res["methods"][a]["test_acc"], res["methods"][b]["test_acc"])


CLAIMS = Claims("08")


def _model(res) -> str:
    return f"MiniLM ({res['n_model'] / 1e6:.1f}M encoder parameters)"


@CLAIMS.rule("ch08-lora-ties-full-ft", "LoRA r=8 (q,v) essentially ties full fine-tuning (within 0.1 points).",
             published="RoBERTa-base GLUE avg: LoRA 87.2 vs FT 86.4 (+0.8; mostly RTE, where LoRA starts from MNLI)",
             source="Hu et al. 2021 Table 2", sentence="lora-ties-full-ft")
def _lora_ties(res):
    gap, se = _gap(res, "lora_qv", "full")[0], _se(res, "lora_qv", "full")
    return ("holds" if abs(gap) <= 0.1 else ("approximately" if abs(gap) <= 2 * se else "wrong"),
            f"{_model(res)}/VADER: LoRA − full FT = {gap:+.2f} points, SE {se:.2f} over {len(res['budget']['seeds'])} "
            f"seeds ({'a tie at our resolution' if abs(gap) <= 2 * se else 'a real gap'}; 0.1 points is below it)")


@CLAIMS.rule("ch08-adapter-4x-params", "Adapters match LoRA's quality but at ~4x the trainable parameters.",
             published="AdptD 0.9M vs LoRA 0.3M on RoBERTa-base (3x), 85.4 vs 87.2", source="Hu et al. 2021 Table 2",
             sentence="adapter-4x-lora")
def _adapter_4x(res):
    # one verdict for the sentence (ch03-4x-lora): LoRA Table 2 and chapter 03's paired runs at
    # ~4× (1,322 test words); this chapter's Houlsby m=16 is context (it is not at ~4×)
    acc = R.load("ch03_accuracy", "python -m pedagogy_lib.book.ch03.experiment")["results"]
    n_lora = acc["LoRA r=8 (q,v)"]["trainable"]
    near4 = min((n for n, r in acc.items() if r["kind"] != "lora"), key=lambda n: abs(acc[n]["trainable"] / n_lora - 4))
    d3 = paired_points(acc["LoRA r=8 (q,v)"]["test_by_seed"], acc[near4]["test_by_seed"])
    verdict, why = S.adapter_4x(d3, acc[near4]["trainable"] / n_lora)
    m = res["methods"]
    ratio = m["houlsby"]["trainable"] / m["lora_qv"]["trainable"]
    return verdict, (f"{why} (chapter 03, {near4}); here Houlsby m=16 at {ratio:.1f}x: "
                     + ci_text(_paired(res, "lora_qv", "houlsby"), "LoRA", "Houlsby"))


@CLAIMS.rule("ch08-prefix-small-drop", "Prefix-tuning trades a small accuracy drop for a very low parameter count.",
             published="E2E: prefix 70.3 vs FT 68.8 BLEU at 0.1% (GPT-2 M)", source="Li & Liang 2021 (ACL) Table 1")
def _prefix_drop(res):
    # "a small drop": prefix − LoRA ≥ −2 points (``rules.band_verdict`` on the paired interval:
    # all of it → holds, the mean only → approximately, else wrong); "very low count": what it
    # ships after folding is at most LoRA's, else at most approximately
    m = res["methods"]
    d = _paired(res, "prefix", "lora_qv")
    folded = m["ptuning_v2"]["trainable"]  # what a folded prefix ships: m·d·L·2, the same tensors as P-Tuning v2
    verdict = band_verdict(d, lo=-2.0)
    if verdict == "holds" and folded > m["lora_qv"]["trainable"]:
        verdict = "approximately"
    return verdict, (f"prefix (m=10, MLP-reparameterised, folded) vs LoRA (q,v): " + ci_text(d, "prefix", "LoRA")
                     + f"; ships {folded:,} numbers after folding vs LoRA's {m['lora_qv']['trainable']:,}, but trains "
                     f"{m['prefix']['trainable']:,} (MLP included) (rule: prefix − LoRA ≥ −2 points: whole interval → "
                     "holds, mean → approximately, else wrong)")


@CLAIMS.rule("ch08-prompt-3-4-points", "On models much smaller than ~10B prompt tuning leaves 3–4 points on the table.",
             published="SuperGLUE, RoBERTa-large: PT 62.3 vs FT 86.9 (secondary copy); the gap shrinks with scale (Lester Fig. 1)",
             source="Liu et al. 2022 Fig. 1 (secondary copy); Lester et al. 2021", sentence="prompt-3-4-points")
def _prompt_gap(res):
    verdict, why = S.prompt_gap(_paired(res, "full", "prompt"))  # one verdict for the sentence (ch05 too)
    return verdict, f"{_model(res)}, m=10 soft prompt and a trained head: {why}"


@CLAIMS.rule("ch08-bitfit-baseline", "BitFit is a remarkable baseline given how trivial it is.",
             published="RoBERTa-base GLUE avg: BitFit 85.2 vs FT 86.4 (−1.2)", source="Hu et al. 2021 Table 2")
def _bitfit_baseline(res):
    # "remarkable": BitFit beats the frozen-encoder probe (paired interval above 0) and closes at
    # least half of the probe → full FT gap; beating the probe only → approximately; a tie with
    # the probe → wrong (the old rule, "within 3 points of full FT", the probe nearly passed)
    up, head = _paired(res, "bitfit", "probe"), _paired(res, "full", "probe")
    share = up["mean"] / head["mean"] if head["mean"] > 0 else float("nan")
    verdict = "wrong" if up["lo"] <= 0 else ("holds" if share >= 0.5 else "approximately")
    return verdict, (ci_text(up, "BitFit", "probe") + f"; it closes {100 * share:.0f}% of the probe → full FT gap "
                     f"({head['mean']:+.1f} points) with {res['methods']['bitfit']['pct']:.3f}% of the parameters "
                     "(rule: above the probe and ≥ 50% of the gap → holds, above the probe → approximately, else wrong)")


@CLAIMS.rule("ch08-merged-lora-latency", "After merging, LoRA serves at the cost of the plain model (single matrix).",
             published="no added inference latency", source="Hu et al. 2021 §4.1", sentence="merge-zero-latency")
def _merged_latency(res):
    lat, noise = res["methods"]["lora_qv"]["latency_ratio"], latency_noise(res)
    lat_args = inspect.signature(compare.runner.measure_latency).parameters
    return ("holds" if lat - 1 <= max(0.05, noise) else ("approximately" if lat - 1 <= max(0.15, 3 * noise)
                                                         else "wrong"),
            f"merged LoRA forward / plain forward = {lat:.3f}, noise floor ±{noise:.3f} (the plain model timed twice; "
            f"batch {lat_args['batch'].default} × {lat_args['seq_len'].default} tokens, {res['threads']} thread(s), "
            f"torch {res['versions']['torch']})")


@CLAIMS.rule("ch08-small-model-gaps", "Below ~1B parameters, gaps of 2–5 points to full FT are common.",
             published="no source given in the article", source="article Q&A (untested in the papers we hold)")
def _small_model_gaps(res):
    m = res["methods"]
    gaps = {n: 100 * (m[n]["mean"] - m["full"]["mean"]) for n in m if n not in ("full", "probe")}
    in_band = sorted(n for n, g in gaps.items() if 2 <= -g <= 5)
    worst = min(gaps, key=gaps.get)
    return ("holds" if len(in_band) >= len(gaps) / 2 else ("approximately" if len(in_band) >= len(gaps) / 4 else "wrong"),
            f"{_model(res)}: {len(in_band)}/{len(gaps)} PEFT methods land 2–5 points below full FT "
            f"({', '.join(in_band) or 'none'}); the largest gap is {worst} at {gaps[worst]:+.2f}; "
            "rule: 'common' = at least half (holds) or a quarter (approximately)")


def claims(results: dict | None = None) -> list[dict]:
    return CLAIMS.judge(compare.load() if results is None else results)


GUIDE = [  # (scenario, the article's first choice, how we test it here)
    ("GPT-style decoder fine-tuning", "LoRA (q,v)", None),
    ("BERT-style classification, many tasks", "Adapter (Pfeiffer)", ("pfeiffer", "lora_qv")),
    ("Very large base (>10B), many tasks", "Prompt-Tuning", None),
    ("Need zero inference overhead", "LoRA + merge", "latency"),
    ("Few-shot / few-thousand examples", "Prefix-Tuning or BitFit", ("bitfit", "lora_qv")),
    ("Single 24-48 GB GPU, 30B+ model", "QLoRA", "qlora"),
]
# where each row's evidence is shown in full: (notebook, the heading of its section)
WHERE = {
    "GPT-style decoder fine-tuning": [("02_lora.ipynb", "9. Where to put LoRA, and how large a rank")],
    "BERT-style classification, many tasks": [("03_adapters.ipynb", "6. Accuracy on VADER, next to LoRA")],
    "Very large base (>10B), many tasks": [
        ("05_prompt_tuning.ipynb", "5. Experiment: prompt tuning on a 22.7M-parameter model")],
    "Need zero inference overhead": [("02_lora.ipynb", "5. Merged: bit for bit?"),
                                     ("03_adapters.ipynb", "5. What adapters cost at inference"),
                                     ("06_bitfit.ipynb", "8. IA³: learn a scale instead of a shift")],
    "Few-shot / few-thousand examples": [("06_bitfit.ipynb", "6. The learning curve"),
                                         ("04_prefix_tuning.ipynb",
                                          "5. Experiment: prefix length, and is direct optimisation unstable?")],
    "Single 24-48 GB GPU, 30B+ model": [("07_qlora.ipynb", "8. Memory: what shrinks, and what does not"),
                                        ("07_qlora.ipynb", "10. The memory arithmetic: 7B to 65B")],
}


def sweep_gaps(scenario: str) -> list[tuple[str, float, float]]:
    """The chapters' own sweeps behind two rows, [(label, gap in points, larger std)]: more test
    words than chapter 08's protocol (1,322), and for few-shot the small training sizes."""
    if scenario == "BERT-style classification, many tasks":
        r = R.load("ch03_accuracy", "python -m pedagogy_lib.book.ch03.experiment")["results"]
        a, b = r["Pfeiffer m=16"], r["LoRA r=8 (q,v)"]
        return [("ch03 sweep, Pfeiffer m=16 − LoRA", 100 * (a["test_mean"] - b["test_mean"]),
                 100 * max(a["test_std"], b["test_std"]))]
    if scenario == "Few-shot / few-thousand examples":
        c = R.load("ch06_learning_curve", "python -m pedagogy_lib.book.ch06.experiment")["results"]
        return [(f"ch06 curve, BitFit − LoRA at n={n}",
                 100 * (c["BitFit"]["curve"][n]["mean"] - c["LoRA r=8 (q,v)"]["curve"][n]["mean"]),
                 100 * max(c["BitFit"]["curve"][n]["std"], c["LoRA r=8 (q,v)"]["curve"][n]["std"]))
                for n in sorted(c["BitFit"]["curve"], key=int) if int(n) <= 256]
    return []


def link(notebook: str, heading: str) -> str:
    """A Markdown link to a section of another chapter (JupyterLab's heading anchors:
    the heading's text with spaces turned into hyphens)."""
    return f"[{notebook.split('_')[0]} §{heading.split('.')[0]}]({notebook}#{heading.replace(' ', '-')})"


def guide(results: dict | None = None) -> list[dict]:
    """Each row of the article's selection guide: kept, changed or untestable here, with the
    measurement behind the decision and links to the sections that show it."""
    res = compare.load() if results is None else results
    m = res["methods"]
    rows = []
    for scenario, choice, test in GUIDE:
        if test is None:
            row = dict(status="untestable here",
                       evidence="needs a decoder / a >10B model; the linked sections show what we can test")
        elif test == "latency":
            lat, noise = m["lora_qv"]["latency_ratio"], latency_noise(res)
            also = f"; merged IA³ {m['ia3']['latency_ratio']:.3f}x" if "ia3" in m else ""
            row = dict(status="kept" if lat - 1 <= max(0.05, noise) else "changed",
                       evidence=f"merged LoRA forward time {lat:.3f}x the plain model's{also}, noise floor "
                                f"±{noise:.3f} (batch 32, ch08 results)")
        elif test == "qlora":  # does the arithmetic of chapter 07 fit 33B in 24 GB and 65B in 48 GB?
            from pedagogy_lib import counting as C
            from pedagogy_lib.counting import qlora_memory_gb

            need = {gb: qlora_memory_gb(shape)["qlora_total"] for gb, shape in ((24, C.LLAMA_33B), (48, C.LLAMA_65B))}
            mem = m["qlora"]["memory"]["weights"] / m["lora_qv"]["memory"]["weights"]
            gap, sd = _gap(res, "qlora", "lora_qv")
            row = dict(status="kept" if all(v < gb for gb, v in need.items()) else "changed: does not fit",
                       evidence=f"LLaMA-33B needs {need[24]:.1f} GB, LLaMA-65B {need[48]:.1f} GB before activations "
                                f"(ch07 arithmetic); MiniLM weights {mem:.2f}x of fp32 LoRA's, accuracy "
                                f"{gap:+.2f} points vs LoRA (std {sd:.2f}, ch08)")
        else:  # accuracy: the article's choice must not be behind by more than the noise
            a, b = test
            gap, sd = _gap(res, a, b)
            gaps = [(f"ch08, {a} − {b}", gap, sd)] + sweep_gaps(scenario)
            behind = [g for g in gaps if g[1] < -max(0.5, g[2])]
            row = dict(status=f"changed: {b} first on accuracy" if behind else "kept",
                       evidence="; ".join(f"{lab} = {g:+.2f} points (std {s:.2f})" for lab, g, s in gaps)
                                + f"; trainable {m[a]['trainable']:,} vs {m[b]['trainable']:,}")
        rows.append(dict(scenario=scenario, article=choice, **row,
                         links=[link(nb, h) for nb, h in WHERE[scenario]]))
    return rows


def guide_markdown(rows: list[dict]) -> str:
    """The guide as a Markdown table with links (for ``IPython.display.Markdown``)."""
    out = ["| scenario | article's choice | here | evidence | shown in |", "|---|---|---|---|---|"]
    out += [f"| {r['scenario']} | {r['article']} | {r['status']} | {r['evidence']} | {', '.join(r['links'])} |"
            for r in rows]
    return "\n".join(out)
