"""Chapter 08's results as a reader sees them: each method's accuracy (mean ± sd over seeds,
Eq. 8.3) and its paired differences against the references (Eqs. 8.4–8.7), as text tables and
sentences that call a tie a tie. Everything is computed from ``ch08_compare.json``."""
from __future__ import annotations

from pedagogy_lib import stats
from pedagogy_lib.book.evidence.ch08 import judged  # shared with the chapters that read ch08
from pedagogy_lib.book.rules import points_by_seed

REFERENCES = ("lora_qv", "full")


def versus(res: dict, a: str, b: str, scale: float = 1.0) -> dict:
    """Paired difference a − b of test accuracy over the seeds (``stats.paired_by_seed``), pairs
    matched by seed (Eqs. 8.4–8.7): in fractions (``scale`` 1, the tables, figures and guide),
    or in points (``scale`` 100, the claims)."""
    m = res["methods"]
    return stats.paired_by_seed(points_by_seed(m[a], scale=scale), points_by_seed(m[b], scale=scale))


def cell(res: dict, a: str, b: str) -> str:
    """'Δ [lo, hi] word' in points, word = tie / above / below ('—' for a against itself)."""
    if a == b:
        return "—"
    d = versus(res, a, b)
    word = "tie" if d["tie"] else ("above" if d["mean"] > 0 else "below")
    return f"{100 * d['mean']:+.2f} [{100 * d['lo']:+.2f}, {100 * d['hi']:+.2f}] {word}"


def step_time(res: dict, name: str) -> float | None:
    """Seconds per epoch, or None for an arm added later with ``--append``: its runs were timed
    in another run, under another load, so its step time is no ratio to the others'."""
    return None if name in res.get("appended", {}) else res["methods"][name]["sec_per_epoch"]


def order(res: dict) -> list[str]:
    """Methods, most accurate first."""
    return sorted(res["methods"], key=lambda n: -res["methods"][n]["mean"])


def accuracy_table(res: dict) -> str:
    """Protocol and accuracy: grid searched, chosen rate, bracketed, mean ± sd, and the paired
    differences against each reference with their 95 % intervals."""
    head = (f"{'method':<12}{'grid searched':<32}{'chosen':>8} {'bracketed':<10}{'test % (mean ± sd)':>19}   "
            + "   ".join(f"{'Δ vs ' + r + ' [95 % CI]':<32}" for r in REFERENCES))
    lines = [head]
    for n in order(res):
        r = res["methods"][n]
        grid = ", ".join(f"{x:.3g}" for x in r["lr_grid"])
        lines.append(f"{n:<12}{grid:<32}{r['lr']:>8.3g} {'yes' if r['bracketed'] else 'NO':<10}"
                     f"{100 * r['mean']:>11.2f} ± {100 * r['std']:.2f}   "
                     + "   ".join(f"{cell(res, n, ref):<32}" for ref in REFERENCES))
    return "\n".join(lines)


def cost_table(res: dict) -> str:
    """What each method costs: trainable parameters, training-state memory, step time, latency
    (an arm added with ``--append``: its step time is 'n/a', footnoted)."""
    lines = [f"{'method':<12}{'trainable':>11}{'% of MiniLM':>13}{'train MB':>10}{'s/epoch':>9}{'latency':>9}"]
    for n in order(res):
        r, t = res["methods"][n], step_time(res, n)
        lines.append(f"{n:<12}{r['trainable']:>11,}{r['pct']:>13.3f}{r['memory']['total'] / 1e6:>10.1f}"
                     + (f"{t:>9.1f}" if t is not None else f"{'n/a*':>9}") + f"{r['latency_ratio']:>8.2f}x")
    if res.get("appended"):
        lines.append(f"* {', '.join(sorted(res['appended']))}: added later (--append), its runs timed in another "
                     "run, so no step-time ratio to the others")
    return "\n".join(lines)


def verdicts(res: dict, ref: str) -> dict:
    """{'tie': [...], 'above': [...], 'below': [...], 'unbracketed': [...]} against ``ref``."""
    out = {"tie": [], "above": [], "below": [], "unbracketed": []}
    for n in order(res):
        if n == ref:
            continue
        if not (judged(res, n) and judged(res, ref)):
            out["unbracketed"].append(n)
            continue
        d = versus(res, n, ref)
        out["tie" if d["tie"] else ("above" if d["mean"] > 0 else "below")].append(n)
    return out


def sentence(res: dict, ref: str) -> str:
    """The paired verdicts against ``ref`` in words."""
    v = verdicts(res, ref)
    parts = [f"tie with {ref}: {', '.join(v['tie']) or 'none'}",
             f"above it: {', '.join(v['above']) or 'none'}", f"below it: {', '.join(v['below']) or 'none'}"]
    if v["unbracketed"]:
        parts.append(f"not judged (learning rate unbracketed): {', '.join(v['unbracketed'])}")
    return "; ".join(parts)


def rounding_gap(res: dict, a: str, b: str) -> float:
    """|Δ as computed − difference of the two means as printed (2 decimals)|, in points: the
    paired mean difference is computed from unrounded accuracies (Eq. 8.4)."""
    m = res["methods"]
    printed = round(100 * m[a]["mean"], 2) - round(100 * m[b]["mean"], 2)
    return abs(round(100 * versus(res, a, b)["mean"], 2) - printed)
