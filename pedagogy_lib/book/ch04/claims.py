"""The article's prefix-tuning claims (chapter 04), each with a value computed here and a verdict.

``claims(results)`` takes what the chapter measured ({"sweep": the sweep JSON, "fold":
{...}, "line": chapter 10's first-line results}); with ``None`` it loads
``chapters/results/ch04_prefix.json`` (and ``ch10_line.json``: the E2E claim is about generation,
which only chapter 10's decoder measures) and recomputes the fold check on a tiny encoder (well
under a second). Each claim is data (text, published value,
source) with one short rule (``book.rules.Claims``).
"""
from __future__ import annotations

from types import SimpleNamespace

from pedagogy_lib import counting as C
from pedagogy_lib import prefix as PX
from pedagogy_lib.book import sentences as S
from pedagogy_lib.book.evidence import ch10  # chapter 10's stored results (a shared reader, not the room)
from pedagogy_lib.book.ch04.experiment import (ARMS, best_length, by_seed, fold_check, load_results, seed_means,
                                               summary, val_grids)
from pedagogy_lib.book.rules import (NOT_HERE, Claims, ci_text, graded, interval_verdict, paired_points, unbracketed,
                                     unbracketed_text)

GPT2_MEDIUM = S.GPT2_MEDIUM  # Li & Liang's table-to-text model (book.sentences)
# Li & Liang (ACL version): E2E BLEU with GPT-2 Medium
LI_LIANG_E2E = {"FT": 68.8, "Prefix (0.1%)": 70.3, "Adapter (3%)": 68.9, "Adapter (0.1%)": 66.3}
# LoRA paper Table 4, GPT-3 175B: prefix-layer tuning (20.2M) vs LoRA (4.7M)
LORA_T4 = {"WikiSQL": (70.1, 73.4), "MNLI-m": (89.5, 91.7), "SAMSum R-1": (50.8, 53.8)}

CLAIMS = Claims("04")


def m_for_fraction(shape: C.ModelShape, frac: float = 1e-3) -> float:
    """The prefix length whose m·d·L·2 is ``frac`` of the model."""
    return frac * C.total_params(shape) / (2 * shape.hidden * shape.layers)


def context(results: dict | None = None) -> SimpleNamespace:
    """The sweep and its summary, each arm's best length and the best arm (both on validation), the
    rate grids, the fold check and chapter 10's first-line results."""
    res = dict(results or {})
    sweep = res.get("sweep") or load_results()
    s = summary(sweep)
    L = {arm: best_length(s, arm) for arm in ARMS}
    best = max(ARMS, key=lambda a: s["by_length"][a][L[a]]["val"][0])  # chosen on validation, not test
    return SimpleNamespace(sweep=sweep, fold=res.get("fold") or fold_check(), s=s, L=L, best=best,
                           grids=val_grids(sweep), line=res.get("line") or ch10.load("line"))


@CLAIMS.rule("ch04-lags-lora", "On hard tasks prefix-tuning lags LoRA by 0.5–1 point.",
             published="article: 0.5–1 point; GPT-3 PreLayer (20.2M) vs LoRA (4.7M): "
                       + ", ".join(f"{k} {a} vs {b} ({b - a:.1f})" for k, (a, b) in LORA_T4.items()),
             source="article; LoRA paper Table 4")
def _lags_lora(c):
    # a claim about hard tasks: judged on the published table (LoRA − prefix-layer on GPT-3),
    # inside 0.5–1 → holds, overlapping → approximately, outside → wrong; VADER is context only
    gaps = [b - a for a, b in LORA_T4.values()]
    verdict = interval_verdict(min(gaps), max(gaps), 0.5, 1.0)
    L, best = c.L, c.best
    edges = unbracketed({k: v for k, v in c.grids.items() if k in ("lora", best)})
    d = paired_points(by_seed(c.sweep, "lora"), by_seed(c.sweep, best, L[best]))
    return verdict, (f"published gaps {min(gaps):.1f}–{max(gaps):.1f} points (GPT-3, WikiSQL/MNLI/SAMSum), "
                     f"{'inside' if verdict == 'holds' else 'outside' if verdict == 'wrong' else 'overlapping'} "
                     f"0.5–1 (rule: the published range inside → holds, overlapping → approximately, disjoint → "
                     f"wrong). Context, not evidence (a one-word task is not hard): VADER "
                     + ci_text(d, "LoRA r=8 (q,v)", f"prefix ({best}, m={L[best]})")
                     + (f"; {unbracketed_text(edges)}" if edges else ""))


def _stability_votes(st) -> tuple[dict, int, int]:
    """Each of the four measures votes for the arm that is 20% worse on it (collapsing more
    often counts as one): (ratios direct/MLP, votes against direct, votes against the MLP)."""
    ratios = {k: st["direct"][k] / max(st["mlp"][k], 1e-12) for k in ("seed_sd", "curve_sd", "rough")}
    worse = sum(r > 1.2 for r in ratios.values()) + (st["direct"]["collapsed"] > st["mlp"]["collapsed"])
    better = sum(r < 1 / 1.2 for r in ratios.values()) + (st["direct"]["collapsed"] < st["mlp"]["collapsed"])
    return ratios, worse, better


@CLAIMS.rule("ch04-direct-unstable", "Optimising the prefix directly is unstable; train it through an MLP.",
             published="direct training \"leads to unstable optimization and a slight drop in performance\"",
             source="Li & Liang 2021")
def _direct_unstable(c):
    # Only when both arms' rates are bracketed on validation: (a) direct is less stable if it
    # is worse on more of the four measures than the MLP is; (b) "unstable": less stable and
    # worse on at least two; (c) "a slight drop": MLP − direct, paired over the independent
    # seeds (each seed's mean over the prefix lengths), a 95 % interval above 0. Holds if (b)
    # and (c); approximately if (a) or (c) (half the claim seen); else not-reproduced-here, never
    # wrong: the votes are point ratios with no interval, and Li & Liang's regime (GPT-2 on
    # table-to-text, long training) is not ours, so not seeing instability refutes nothing.
    st = c.s["stability"]
    ratios, worse, better = _stability_votes(st)
    less_stable = worse > better
    unstable = less_stable and worse >= 2
    d = paired_points(seed_means(c.sweep, "mlp"), seed_means(c.sweep, "direct"))
    dropped = d["lo"] > 0
    edges = unbracketed({arm: c.grids[arm] for arm in ARMS})
    verdict = "untestable-here" if edges else graded(unstable and dropped, less_stable or dropped, NOT_HERE)
    grid_txt = ", ".join(f"{arm} chose {c.sweep['chosen_lr'][arm]:g} from {min(c.grids[arm]):g}–{max(c.grids[arm]):g}"
                         for arm in ARMS)
    return verdict, (
        (f"no verdict: {unbracketed_text(edges)} ({grid_txt}); settle by rerunning the sweep with the MLP arm's "
         "grid extended down to 1e-5. As measured: " if edges else f"rates bracketed ({grid_txt}); ")
        + "direct / MLP: " + ", ".join(f"{k} ratio {r:.2f}" for k, r in ratios.items())
        + f", collapsed runs {st['direct']['collapsed']}/{st['direct']['n_runs']} vs "
          f"{st['mlp']['collapsed']}/{st['mlp']['n_runs']}"
        + f": direct worse on {worse} of 4, the MLP on {better}; "
        + ci_text(d, "MLP", "direct") + " (each seed: mean test accuracy over the 5 prefix lengths; rule: less stable "
          "on ≥ 2 measures and a drop → holds, either half → approximately, neither → not-reproduced-here: the votes "
          "have no interval and Li & Liang's regime is not ours)")


@CLAIMS.rule("ch04-count", "Prefix-tuning trains m×d×L×2 numbers (keys and values at L layers).",
             published="m×d×L×2", source="article; Li & Liang 2021")
def _count(c):
    fold = c.fold
    ok = fold["identical"] and fold["trainable_after"] == fold["m_d_L_2"]
    return ("holds" if ok else "wrong",
            f"after folding: {fold['trainable_after']:,} trainable = m·d·L·2 = {fold['m_d_L_2']:,} "
            f"(MLP during training: {fold['trainable_before']:,}); outputs identical: {fold['identical']}")


@CLAIMS.rule("ch04-fraction", "Prefix-tuning trains about 0.1% of the parameters.",
             published="0.1% (GPT-2 Medium, table-to-text)", source="Li & Liang 2021", sentence="table-prefix-0.1pct")
def _fraction(c):
    shares = {k: 100 * PX.num_prefix_params(S.PREFIX_M, v.hidden, v.layers) / C.total_params(v)
              for k, v in {"MiniLM-L6": C.minilm_shape(), "BERT-base": C.BERT_BASE, GPT2_MEDIUM.name: GPT2_MEDIUM,
                           "GPT-3 175B": C.GPT3}.items()}
    verdict, why = S.prefix_share(shares)  # one verdict for the sentence (ch00-table-prefix judges it too)
    m01 = {k: m_for_fraction(v) for k, v in (("MiniLM-L6", C.minilm_shape()), ("GPT-2 Medium", GPT2_MEDIUM))}
    return verdict, why + "; 0.1% is m ≈ " + ", ".join(f"{m:.0f} ({k})" for k, m in m01.items())


@CLAIMS.rule("ch04-mlp-dropped", "The MLP is only for training; it is dropped at inference.",
             published="the MLP is discarded after training", source="Li & Liang 2021")
def _mlp_dropped(c):
    return ("holds" if c.fold["identical"] else "wrong",
            f"folded model's outputs identical bit for bit: {c.fold['identical']}")


@CLAIMS.rule("ch04-e2e", "Prefix-tuning (0.1%) beats full fine-tuning on table-to-text.",
             published=", ".join(f"{k} {v}" for k, v in LI_LIANG_E2E.items()) + " BLEU (E2E, GPT-2 Medium)",
             source="Li & Liang 2021, ACL version", sentence="prefix-e2e")
def _e2e(c):
    # generation needs a decoder: chapter 10's paired runs decide, one verdict for the sentence
    return S.prefix_vs_full(c.line)


def claims(results: dict | None = None) -> list[dict]:
    return CLAIMS.judge(context(results))
