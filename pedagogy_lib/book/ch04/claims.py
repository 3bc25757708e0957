"""The article's prefix-tuning claims (chapter 04), each with a value computed here and a verdict.

``claims(results)`` takes what the chapter measured ({"sweep": the sweep JSON, "fold":
{...}}); with ``None`` it loads ``chapters/results/ch04_prefix.json`` and recomputes the
fold check on a tiny encoder (well under a second). Each claim is data (text, published value,
source) with one short rule (``book.rules.Claims``).
"""
from __future__ import annotations

import math
from types import SimpleNamespace

from pedagogy_lib import counting as C
from pedagogy_lib import results as R
from pedagogy_lib.book.ch04.experiment import ARMS, best_length, fold_check, load_results, paired_differences, summary
from pedagogy_lib.book.rules import Claims

RESULTS = R.RESULTS
# GPT-2 Medium, the model of Li & Liang's table-to-text runs (Radford et al. 2019: 24 layers,
# d = 1024, 16 heads, 1024 positions, the 50,257-token BPE vocabulary, tied output head)
GPT2_MEDIUM = C.ModelShape("GPT-2 Medium", 50257, 1024, 24, 16, 4096, 1024, encoder=False,
                           source="Radford et al. 2019")
# Li & Liang (ACL version): E2E BLEU with GPT-2 Medium
LI_LIANG_E2E = {"FT": 68.8, "Prefix (0.1%)": 70.3, "Adapter (3%)": 68.9, "Adapter (0.1%)": 66.3}
# LoRA paper Table 4, GPT-3 175B: prefix-layer tuning (20.2M) vs LoRA (4.7M)
LORA_T4 = {"WikiSQL": (70.1, 73.4), "MNLI-m": (89.5, 91.7), "SAMSum R-1": (50.8, 53.8)}

CLAIMS = Claims("04")


def m_for_fraction(shape: C.ModelShape, frac: float = 1e-3) -> float:
    """The prefix length whose m·d·L·2 is ``frac`` of the model."""
    return frac * C.total_params(shape) / (2 * shape.hidden * shape.layers)


def context(results: dict | None = None) -> SimpleNamespace:
    """The sweep's summary, each arm's best length and test accuracy there, LoRA's, and the fold check."""
    res = dict(results or {})
    sweep = res.get("sweep") or load_results()
    s = summary(sweep)
    L = {arm: best_length(s, arm) for arm in ARMS}
    pre = {arm: s["by_length"][arm][L[arm]]["test"] for arm in ARMS}
    return SimpleNamespace(sweep=sweep, fold=res.get("fold") or fold_check(), s=s, L=L, pre=pre,
                           best=max(ARMS, key=lambda a: pre[a][0]))


@CLAIMS.rule("ch04-lags-lora", "On hard tasks prefix-tuning lags LoRA by 0.5–1 point.",
             published="article: 0.5–1 point; GPT-3 PreLayer (20.2M) vs LoRA (4.7M): "
                       + ", ".join(f"{k} {a} vs {b} ({b - a:.1f})" for k, (a, b) in LORA_T4.items()),
             source="article; LoRA paper Table 4")
def _lags_lora(c):
    s, best, lora = c.s, c.best, c.s["lora"]["test"]
    gap = 100 * (lora[0] - c.pre[best][0])
    n_l, n_p = s["lora"]["n"], s["by_length"][best][c.L[best]]["n"]
    seeds = f"{n_l} seeds" if n_l == n_p else f"{n_l}/{n_p} seeds"
    se = 100 * math.sqrt(lora[1] ** 2 / n_l + c.pre[best][1] ** 2 / n_p)  # SE of the difference of two means
    verdict = ("holds" if 0.5 <= gap <= 1.0 else "approximately" if 0.5 - 2 * se <= gap <= 1.0 + 2 * se
               else "wrong")
    return verdict, (f"LoRA r=8 (q,v) {100 * lora[0]:.1f} ± {100 * lora[1]:.1f} vs best prefix ({best}, "
                     f"m={c.L[best]}) {100 * c.pre[best][0]:.1f} ± {100 * c.pre[best][1]:.1f}: gap {gap:+.1f} ± "
                     f"{se:.1f} points (test accuracy, {seeds}, VADER polarity, MiniLM)")


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
    # (a) Direct is less stable only if it is worse on more measures than the MLP is; if not,
    # "direct optimisation is unstable" is contradicted here (wrong). (b) "Unstable" is
    # established when direct is less stable and worse on at least two measures; (c) "a slight
    # drop": the MLP beats direct, paired by length and seed, by more than 2 s.e. Holds if (b)
    # and (c); approximately if only (a) or (a) and one of them.
    st = c.s["stability"]
    ratios, worse, better = _stability_votes(st)
    less_stable, diffs = worse > better, paired_differences(c.sweep)
    unstable = less_stable and worse >= 2
    drop, se_drop = 100 * diffs.mean(), 100 * diffs.std(ddof=1) / math.sqrt(diffs.size)
    dropped = drop > 2 * se_drop
    verdict = "wrong" if not less_stable else ("holds" if unstable and dropped else "approximately")
    return verdict, (
        "direct / MLP: " + ", ".join(f"{k} ratio {r:.2f}" for k, r in ratios.items())
        + f", collapsed runs {st['direct']['collapsed']}/{st['direct']['n_runs']} vs "
          f"{st['mlp']['collapsed']}/{st['mlp']['n_runs']}"
        + "".join(f" ({arm} collapsed at " + "; ".join(f"m={m} lr={lr:g}" for m, lr in st[arm]["collapsed_at"]) + ")"
                  for arm in ARMS if st[arm]["collapsed"])
        + f": direct worse on {worse} of 4, the MLP on {better} (direct less stable: "
          f"{'yes' if less_stable else 'no'}; unstable: {'yes' if unstable else 'no'}); MLP minus direct, "
          f"test accuracy paired by length and seed ({diffs.size} pairs): {drop:+.1f} ± {se_drop:.1f} points "
          f"(a drop: {'yes' if dropped else 'no'})")


@CLAIMS.rule("ch04-count", "Prefix-tuning trains m×d×L×2 numbers (keys and values at L layers).",
             published="m×d×L×2", source="article; Li & Liang 2021")
def _count(c):
    fold = c.fold
    ok = fold["identical"] and fold["trainable_after"] == fold["m_d_L_2"]
    return ("holds" if ok else "wrong",
            f"after folding: {fold['trainable_after']:,} trainable = m·d·L·2 = {fold['m_d_L_2']:,} "
            f"(MLP during training: {fold['trainable_before']:,}); outputs identical: {fold['identical']}")


@CLAIMS.rule("ch04-fraction", "Prefix-tuning trains about 0.1% of the parameters.",
             published="0.1% (GPT-2 Medium, table-to-text)", source="Li & Liang 2021")
def _fraction(c):
    shapes = {"MiniLM-L6": C.minilm_shape(), "BERT-base": C.BERT_BASE, "GPT-2 Medium": GPT2_MEDIUM, "GPT-3 175B": C.GPT3}
    frac = {k: C.prefix_params(v, 10) / C.total_params(v) for k, v in shapes.items()}
    m01 = {k: m_for_fraction(v) for k, v in shapes.items()}
    # the claim's setting is GPT-2 Medium with m = 10; "about 0.1%": within 5% of it holds,
    # within 25% approximately, beyond that wrong
    rel = frac["GPT-2 Medium"] / 1e-3 - 1
    verdict = "holds" if abs(rel) <= 0.05 else ("approximately" if abs(rel) <= 0.25 else "wrong")
    return verdict, ("m=10: " + ", ".join(f"{k} {100 * f:.3f}%" for k, f in frac.items())
                     + f"; GPT-2 Medium is {100 * rel:+.0f}% off 0.1%; 0.1% is m ≈ "
                     + ", ".join(f"{m01[k]:.0f} ({k})" for k in shapes))


@CLAIMS.rule("ch04-mlp-dropped", "The MLP is only for training; it is dropped at inference.",
             published="the MLP is discarded after training", source="Li & Liang 2021")
def _mlp_dropped(c):
    return ("holds" if c.fold["identical"] else "wrong",
            f"folded model's outputs identical bit for bit: {c.fold['identical']}")


@CLAIMS.rule("ch04-e2e", "Prefix-tuning (0.1%) beats full fine-tuning on table-to-text.",
             published=", ".join(f"{k} {v}" for k, v in LI_LIANG_E2E.items()) + " BLEU (E2E, GPT-2 Medium)",
             source="Li & Liang 2021, ACL version")
def _e2e(c):
    return "untestable-here", "generation with GPT-2 is outside this book's encoder set-up"


def claims(results: dict | None = None) -> list[dict]:
    return CLAIMS.judge(context(results))
