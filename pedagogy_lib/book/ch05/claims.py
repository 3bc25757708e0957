"""The article's prompt-tuning and P-Tuning v2 claims (chapter 05), each with a value
computed here and a verdict.

``claims(results)`` takes what the chapter measured ({"sweep": the sweep JSON, and for the
scale claim chapter 10's "area" and "scale" results}); with ``None`` it loads
``chapters/results/ch05_prompt.json`` (and ``ch10_area.json``, ``ch10_scale.json``). Counts come
from ``pedagogy_lib.counting`` (published shapes) and ``pedagogy_lib.prefix``. Each claim is data
(text, published value, source) with one short rule (``book.rules.Claims``).

Comparisons are paired per-seed differences over the sweep's five seeds with a 95 % t-interval
(chapter 08, Eqs. 8.4–8.7; ``experiment.pair``); a method whose chosen rate sits at an edge of
its grid carries no verdict (``untestable-here``). Claims about model scale are judged on
chapter 10's decoder (a frozen LM head, the claims' regime), never from this one-word task with a
trained head: here they are at most ``approximately`` or ``not-reproduced-here``.
"""
from __future__ import annotations

from types import SimpleNamespace

from pedagogy_lib import counting as C
from pedagogy_lib import prefix as PX
from pedagogy_lib import prompt as PT
from pedagogy_lib import stats
from pedagogy_lib.book import sentences as S
from pedagogy_lib.book.evidence import ch08 as compare, ch10  # chapters 08 and 10's stored results (shared readers)
from pedagogy_lib.book.ch05.experiment import (LONG_ARMS, PROMPTS, best_prompt, load_results, long_complete,
                                               long_gain, long_seeds_run, methods, pair, summary, unbracketed_arms)
from pedagogy_lib.book.rules import Claims, ci_text, graded, match_verdict, points_by_seed

# P-Tuning v2, Figure 1 (a secondary copy): SuperGLUE average of RTE, BoolQ, CB
PTV2_FIG1 = {"BERT-large (335M)": (77.7, 67.2, 75.8), "RoBERTa-large (355M)": (86.9, 62.3, 84.8),
             "GLM-xlarge (2B)": (88.3, 79.7, 87.0), "GLM-xxlarge (10B)": (88.8, 88.8, 88.8)}  # FT, PT, PTv2
PTV2_SQUAD = {"FT": 91.1, "Prompt tuning": 8.5, "P-Tuning v2": 88.9}  # SQuAD 1.1 F1 (secondary copy)
# Lester et al. Table 4: trainable fraction of T5 at 20 and 100 prompt tokens
LESTER_T4 = {"Small": (0.0133, 0.066), "Base": (0.0062, 0.031), "Large": (0.0026, 0.013),
             "XL": (0.0014, 0.0072), "XXL": (0.00074, 0.0037)}

PTV2_TEXT = "; ".join(f"{k}: FT {a}, PT {b}, PTv2 {c}" for k, (a, b, c) in PTV2_FIG1.items())
CLAIMS = Claims("05")


def fractions(m: int = 20) -> dict:
    """Prompt (m·d) and P-Tuning v2 (m·d·L·2) as fractions of each published model."""
    return {k: {"prompt": PT.num_prompt_params(m, s.hidden) / C.total_params(s),
                "ptuning_v2": PX.num_prefix_params(m, s.hidden, s.layers) / C.total_params(s)} for k, s in C.shapes().items()}


def _prompt_gap(res: dict, sweep: dict) -> dict:
    """full FT − prompt tuning (points, paired by seed) and where it comes from: this chapter's
    shallow prompt arm best on validation, or, when the sweep holds no prompt arm, chapter 08's
    prompt tuning (m = 10, same encoder, task and protocol); ``evidence``: both chapters'
    measurements, the one the sentence's verdict rests on (``sentences.prompt_gap_pooled``, which
    chapter 08's record reads too, so the two agree by construction)."""
    evidence = S.prompt_gap_evidence(sweep, res.get("compare"))
    best = best_prompt(sweep)
    if best and "full-ft" in sweep["arms"]:
        return {"best": best, "d": pair(sweep, "full-ft", best), "evidence": evidence,
                "src": f"this chapter's {best}, m={sweep['config']['m']}"}
    m = (res.get("compare") or compare.load())["methods"]
    return {"best": None, "d": stats.paired_by_seed(points_by_seed(m["full"]), points_by_seed(m["prompt"])),
            "evidence": evidence,
            "src": "chapter 08's prompt tuning (m=10, vocab init; this chapter's prompt arms are not in its "
                   "sweep), same encoder, task and protocol"}


def context(results: dict | None = None) -> SimpleNamespace:
    """What the rules judge: the sweep's summary, the paired differences (points, 95 % interval)
    of full fine-tuning over prompt tuning (``_prompt_gap``) and of P-Tuning v2 over full
    fine-tuning, the arms whose rate is not bracketed, chapter 10's decoder results and the
    trainable fractions."""
    res = dict(results or {})
    sweep = res.get("sweep") or load_results()
    s = summary(sweep)
    gap = _prompt_gap(res, sweep)
    n_seeds = sorted({s["methods"][k]["n"] for k in methods(sweep)})
    shapes = C.shapes()
    return SimpleNamespace(
        s=s, m=sweep["config"]["m"], best=gap["best"], ft_src=gap["src"], gaps=gap["evidence"],
        fr=fractions(sweep["config"]["m"]), shapes=shapes, mini_total=C.total_params(shapes["MiniLM-L6"]),
        d_ft=gap["d"],  # full FT − prompt tuning, points
        d_v2=pair(sweep, "ptuning-v2", "full-ft"),
        edges={k: sweep["arms"][k]["edge"] for k in unbracketed_arms(sweep, ("full-ft", "ptuning-v2", *LONG_ARMS))},
        long=longer_budget(sweep), epochs=(sweep["config"]["epochs"], sweep["config"]["long_epochs"]),
        area=res.get("area") or ch10.load("area"), scale=res.get("scale") or ch10.load_scale(),
        seeds_txt=" or ".join(map(str, n_seeds)) + (" seed" if n_seeds == [1] else " seeds"))


def longer_budget(sweep: dict) -> dict:
    """Per method of LONG_ARMS the sweep holds: the seeds run at the longer budget and, when
    every seed of the main budget ran (``long_complete``), the paired gain longer − main budget
    in points (``experiment.long_gain``), else None (no partial set stands in for the protocol)."""
    return {m: {"seeds": seeds, "d": long_gain(sweep, m) if long_complete(sweep, m) else None}
            for m, seeds in long_seeds_run(sweep).items()}


def _no_verdict(c, *arms) -> str:
    side = {"low": "the lowest", "high": "the highest", "edge": "at an edge"}
    return "; ".join(f"{k}'s chosen rate is {side[e]} of its extended grid" for k, e in c.edges.items() if k in arms)


REGIME = ("our regime differs: a 22.7M encoder, a one-word task and a trained classification head, which "
          "makes the task far easier than prompt tuning through a frozen LM head")


@CLAIMS.rule("ch05-prompt-needs-scale",
             "Prompt tuning only works on very large models: below ~1B parameters the loss is severe, "
             "at 10B+ it vanishes.",
             published=PTV2_TEXT + " (SuperGLUE, RTE/BoolQ/CB average); Lester: the gap closes with scale, "
                                   "XXL (11B) matches model tuning",
             source="Lester et al. 2021 (Figure 1 values not confirmed); P-Tuning v2 Fig. 1 (secondary copy)",
             sentence="prompt-needs-scale")
def _needs_scale(c):
    # a claim about scale through a frozen LM head: chapter 10's decoder sizes decide (one verdict
    # for the sentence, ``sentences.prompt_scale``); the word task here is context only
    verdict, decoder = S.prompt_scale(c.area, c.scale)
    return verdict, (f"judged on chapter 10's decoder (prompt tuning through its frozen LM head): {decoder}; "
                     f"on the word task, MiniLM ({C.human(c.mini_total)}) with a trained head, {c.ft_src}: "
                     + ci_text(c.d_ft, "full FT", "prompt tuning")
                     + f" (context only: {REGIME}); the 10B+ half is untestable here")


@CLAIMS.rule("ch05-prompt-3-4-points", "On models smaller than RoBERTa-base prompt tuning leaves 3–4 points on the table.",
             published="BERT-large: 77.7 → 67.2 (10.5 points); RoBERTa-large: 86.9 → 62.3 (24.6 points)",
             source="article; P-Tuning v2 Fig. 1 (secondary copy)", sentence="prompt-3-4-points")
def _three_four(c):
    # one verdict for the sentence from every measurement (chapter 08 judges it too, on the same
    # evidence); an unbracketed rate drops its measurement, none left → untestable-here
    verdict, why = S.prompt_gap_pooled(c.gaps)
    return verdict, (f"{why}; {REGIME}; the published sizes we hold (335M, 355M, secondary copy) show 10.5 and "
                     "24.6 points")


@CLAIMS.rule("ch05-ptv2-matches-ft", "P-Tuning v2 matches full fine-tuning across model sizes, small ones "
             "included, at ~0.1% trainable.",
             published="\"matches fine-tuning with only 0.1%–3% tuned parameters\" (300M–10B); " + PTV2_TEXT,
             source="Liu et al. 2022 (abstract; the figure from a secondary copy)")
def _ptv2_matches(c):
    # "matches" (``rules.match_verdict``, ±1 point): the paired interval inside ±1 holds, a tie
    # wider than that approximately, an order wrong. "at ~0.1% trainable": a fraction more than
    # a factor 2 from 0.1% caps the verdict at approximately. Unbracketed rates: no verdict.
    n = c.s["methods"]["ptuning-v2"]["trainable"]
    far = not (0.5e-3 <= n / c.mini_total <= 2e-3)
    edges = _no_verdict(c, "ptuning-v2", "full-ft")
    verdict = "untestable-here" if edges else match_verdict(c.d_v2, 1.0)
    if far and verdict == "holds":
        verdict = "approximately"
    return verdict, ((f"no verdict: {edges}; as measured, " if edges else "")
                     + f"P-Tuning v2 m={c.m}: " + ci_text(c.d_v2, "P-Tuning v2", "full FT")
                     + f" (rule: interval inside ±1 point → holds, a wider tie → approximately, else wrong), training "
                     f"{100 * n / c.mini_total:.2f}% of MiniLM ({n:,} numbers"
                     + (", far from ~0.1% (outside 0.05–0.2%), so at best approximately" if far else ", close to ~0.1%")
                     + "; the fraction across models: record ch05-ptv2-fraction); only one small model tested")


@CLAIMS.rule("ch05-prompt-fraction", "Prompt tuning trains under 0.01% of the parameters.",
             published="under 0.01% for models over a billion parameters; T5 20 tokens: "
                       + ", ".join(f"{k} {a}%" for k, (a, _) in LESTER_T4.items()),
             source="Lester et al. 2021, Table 4", sentence="table-prompt-0.01pct")
def _prompt_fraction(c):
    fr = c.fr
    under = [k for k, f in fr.items() if f["prompt"] < 1e-4]
    over_1b = [k for k in fr if C.total_params(c.shapes[k]) > 1e9]
    verdict = graded(len(under) == len(fr), over_1b and set(over_1b) <= set(under))
    return verdict, (f"m={c.m}: MiniLM {100 * fr['MiniLM-L6']['prompt']:.3f}%, BERT-base "
                     f"{100 * fr['BERT-base']['prompt']:.4f}%, LLaMA-7B {100 * fr['LLaMA-7B']['prompt']:.5f}%; "
                     f"under 0.01% for {len(under)} of {len(fr)} models ({', '.join(under) or 'none'}); of the "
                     f"{len(over_1b)} over 1B parameters, {len(set(over_1b) & set(under))} are (rule: all models "
                     f"→ holds, all over 1B → approximately, else wrong)")


@CLAIMS.rule("ch05-ptv2-fraction", "P-Tuning v2 trains about 0.1% of the parameters.",
             published="0.1%–3%", source="Liu et al. 2022, abstract")
def _ptv2_fraction(c):
    fr = c.fr
    inside = [k for k, f in fr.items() if 1e-3 <= f["ptuning_v2"] <= 3e-2]  # the paper's 0.1%–3%
    verdict = graded(len(inside) == len(fr), inside)
    return verdict, (f"m={c.m}: MiniLM {100 * fr['MiniLM-L6']['ptuning_v2']:.2f}%, BERT-base "
                     f"{100 * fr['BERT-base']['ptuning_v2']:.2f}%, RoBERTa-large "
                     f"{100 * fr['RoBERTa-large']['ptuning_v2']:.2f}%, LLaMA-7B "
                     f"{100 * fr['LLaMA-7B']['ptuning_v2']:.3f}%; inside the paper's 0.1–3%: {len(inside)} of "
                     f"{len(fr)} models ({', '.join(inside) or 'none'}) (rule: all → holds, some → approximately, "
                     f"none → wrong)")


@CLAIMS.rule("ch05-prompt-more-steps", "Prompt tuning on a small model is short of training steps: a longer "
             "budget at the same rate improves it.",
             published="no number (the article states no training budget); the question behind \"leaves 3–4 "
                       "points\": is the gap a matter of steps?",
             source="this chapter's question, raised by the article's 3–4 points sentence")
def _more_steps(c):
    # the random-init prompt's paired gain, longer − main budget over the same seeds: the whole
    # 95 % interval above 0 → holds, a tie (interval holds 0) → not-reproduced-here (our regime,
    # a trained head on a one-word task, differs), below 0 → wrong; not every seed run, or the
    # rate at its grid's edge → untestable-here. P-Tuning v2's gain is context.
    g, (e0, e1) = c.long.get("prompt-random"), c.epochs
    ctx = "; ".join(f"{k}: " + (ci_text(v["d"], f"{e1} epochs", f"{e0} epochs") if v["d"] else
                                f"longer budget run on seeds {v['seeds']} only, not judged" if v["seeds"] else
                                "longer budget not run") for k, v in c.long.items())
    edges = _no_verdict(c, "prompt-random")
    if g is None or g["d"] is None or edges:
        return "untestable-here", (f"no verdict: {edges}; " if edges else "") + (ctx or "longer budget not run")
    d = g["d"]
    verdict = "holds" if d["lo"] > 0 else "wrong" if d["hi"] < 0 else "not-reproduced-here"
    return verdict, (f"{ctx} (each method at the rate chosen on the {e0}-epoch budget, the same seeds, "
                     "subsamples and head inits; rule on prompt-random: interval above 0 → holds, a tie → "
                     f"not-reproduced-here, below 0 → wrong; P-Tuning v2 is context); {REGIME}")


def claims(results: dict | None = None) -> list[dict]:
    return CLAIMS.judge(context(results))


__all__ = ["CLAIMS", "LESTER_T4", "PROMPTS", "PTV2_FIG1", "PTV2_SQUAD", "ci_text", "claims", "context", "fractions",
           "load_results", "longer_budget", "methods", "summary"]
