"""Chapter 08's selection guide, derived from the stored measurements rather than audited.

For each situation a reader may be in, the guide keeps the methods whose accuracy *ties* the
most accurate one (paired 95 % interval over seeds, Eqs. 8.4–8.7, containing 0; methods whose
learning rate was not bracketed are left out, since nothing may rest on them), then picks among
them by the cost the situation cares about (training memory, storage per task, inference
latency), breaking ties on that cost by the next one. Methods tied with the pick on the
situation's first cost are named as ties. Tiny data is judged on chapter 06's learning curve
(the smallest training set, paired over its seeds). Each row carries its evidence and links
to the sections that show it.

The guide gathers three chapters, so it reads only stored results, never another room: its
own chapter's comparison, chapter 06's learning curve (``ch06_learning_curve.json`` through
``pedagogy_lib.results``) and chapter 10's decoder rows (the shared ``book.evidence.ch10``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from pedagogy_lib import results as R
from pedagogy_lib import stats
from pedagogy_lib.book.ch08 import experiment as compare
from pedagogy_lib.book.ch08.claims import latency_noise
from pedagogy_lib.book.ch08.table import judged, step_time, versus
from pedagogy_lib.book.evidence.ch10 import guide_row as decoder_guide_row

LATENCY_TOLERANCE = 0.05  # a latency ratio within max(this, the noise floor) of 1 is "no overhead"
BYTES_TOLERANCE = 0.05    # memory or storage within 5 % of the pick's is a tie on that cost


def stored_numbers(res: dict, name: str) -> int:
    """Numbers a task must store beside the shared base (head excluded): what it trains, except
    prefix-tuning, whose MLP is folded away and which ships its m·d·L·2 keys and values."""
    m = res["methods"]
    if name == "prefix" and "ptuning_v2" in m:  # same m: the folded prefix is P-Tuning v2's tensors
        return m["ptuning_v2"]["trainable"]
    return m[name]["trainable"] if name != "probe" else 0


def contenders(res: dict) -> tuple[str, dict, list]:
    """(the most accurate bracketed method, {method: paired difference to it} for those that tie
    it, the methods left out as unbracketed)."""
    m = res["methods"]
    ok = [n for n in m if judged(res, n)]
    best = max(ok, key=lambda n: m[n]["mean"])
    ties = {n: versus(res, n, best) for n in ok if n != best}
    return best, {n: d for n, d in ties.items() if d["tie"]}, sorted(set(m) - set(ok))


def _costs(res: dict, name: str) -> dict:
    r, noise, step = res["methods"][name], latency_noise(res), step_time(res, name)
    over = r["latency_ratio"] - 1
    return {"memory": r["memory"]["total"], "stored": stored_numbers(res, name),
            "latency": 1.0 if over <= max(LATENCY_TOLERANCE, noise) else r["latency_ratio"],
            "step": math.inf if step is None else step,  # another run's step time: never wins a tie-break
            "accuracy": -r["mean"]}


def _tied_on(cost: str, a: dict, b: dict) -> bool:
    if cost == "accuracy":  # every contender ties the most accurate method by construction
        return True
    if cost == "latency":
        return a[cost] == b[cost] == 1.0
    if cost in ("memory", "stored"):
        return abs(a[cost] - b[cost]) <= BYTES_TOLERANCE * max(a[cost], b[cost])
    return a[cost] == b[cost]


@dataclass(frozen=True)
class Situation:
    name: str
    costs: tuple          # what is minimised among the accuracy ties, in order
    article: str          # the article's first choice for the nearest row of its guide
    article_arms: tuple   # our arms that are that choice
    links: tuple          # (notebook, heading) where the evidence is shown in full


SITUATIONS = (
    Situation("tight training memory", ("memory", "step"), "QLoRA (single 24–48 GB GPU, 30B+ model)",
              ("qlora",), (("07_qlora.ipynb", "8. Memory: what shrinks, and what does not"),)),
    Situation("many tasks, storage per task", ("stored", "memory"), "Adapter (Pfeiffer) (BERT-style, many tasks)",
              ("pfeiffer",), (("03_adapters.ipynb", "6. Accuracy on VADER, next to LoRA"),)),
    Situation("latency-critical serving", ("latency", "stored"), "LoRA + merge (zero inference overhead)",
              ("lora_qv", "lora_all"), (("02_lora.ipynb", "5. Merged: bit for bit?"),
                                        ("03_adapters.ipynb", "5. What adapters cost at inference"))),
    Situation("best accuracy", ("accuracy",), "— (the article: PEFT matches full fine-tuning)",
              ("full",), ()),
)
TINY = Situation("tiny data (64 training words)", ("accuracy",), "Prefix-Tuning or BitFit (few-shot)",
                 ("BitFit", "prefix"), (("06_bitfit.ipynb", "6. The learning curve"),))
DECODER = "GPT-style decoder fine-tuning", "LoRA (q,v)", ("lora-qv",)
DECODER_LINK = "10_decoder_peft.ipynb"
UNTESTABLE = (("Very large base (>10B), many tasks", "Prompt-Tuning"),)
TABLE = "08_comparison.ipynb", "2. The full comparison"


def link(notebook: str, heading: str) -> str:
    """A Markdown link to a section (JupyterLab's heading anchors: spaces become hyphens)."""
    return f"[{notebook.split('_')[0]} §{heading.split('.')[0]}]({notebook}#{heading.replace(' ', '-')})"


def _pick(res: dict, s: Situation) -> dict:
    best, ties, left_out = contenders(res)
    pool = [best] + sorted(ties)
    costs = {n: _costs(res, n) for n in pool}
    choice = min(pool, key=lambda n: tuple(costs[n][c] for c in s.costs) + (n,))
    tied = sorted(n for n in pool if n != choice and _tied_on(s.costs[0], costs[n], costs[choice]))
    return {"choice": choice, "ties": tied, "pool": pool, "best": best, "left_out": left_out,
            "costs": costs}


def _evidence(res: dict, s: Situation, p: dict) -> str:
    c, d = p["costs"][p["choice"]], p["choice"]
    acc = (f"{d} is the most accurate" if d == p["best"] else
           f"{d} ties {p['best']} on accuracy ({_interval(versus(res, d, p['best']))})")
    shown = {"memory": f"{c['memory'] / 1e6:.1f} MB training state", "stored": f"{c['stored']:,} numbers per task",
             "latency": f"latency {res['methods'][d]['latency_ratio']:.2f}x (noise ±{latency_noise(res):.2f})",
             "step": f"{c['step']:.1f} s/epoch" if c["step"] != math.inf else "step time from another run",
             "accuracy": f"{-100 * c['accuracy']:.1f} %"}
    return f"{acc}; " + ", ".join(shown[k] for k in s.costs) + f"; {len(p['pool'])} methods tie on accuracy"


def _interval(d: dict) -> str:
    return f"{100 * d['mean']:+.2f} points, 95 % CI [{100 * d['lo']:+.2f}, {100 * d['hi']:+.2f}]"


def _agreement(choice: str, ties: list, arms: tuple) -> str:
    if choice in arms:
        return "agrees"
    return "agrees (a tie)" if set(ties) & set(arms) else "differs"


def _row(s: Situation, choice: str, ties: list, evidence: str) -> dict:
    return {"situation": s.name, "choice": choice, "ties": ties, "article": s.article,
            "verdict": _agreement(choice, ties, s.article_arms), "evidence": evidence,
            "links": [link(*TABLE)] * (s is not TINY) + [link(nb, h) for nb, h in s.links]}


def tiny_data(curve: dict | None = None) -> tuple[str, list, str]:
    """(best, [methods that tie it], evidence) at the smallest training set of chapter 06's
    learning curve, paired by seed."""
    curve = curve or R.load("ch06_learning_curve", "python -m pedagogy_lib.book.ch06.experiment")
    seeds, r = curve["config"]["seeds"], curve["results"]
    n = str(min(int(k) for k in next(iter(r.values()))["curve"]))
    acc = {k: dict(zip(seeds, v["curve"][n]["test_by_seed"])) for k, v in r.items()}
    best = max(acc, key=lambda k: r[k]["curve"][n]["mean"])
    diffs = {k: stats.paired_by_seed(acc[k], acc[best]) for k in acc if k != best}
    ties = sorted(k for k, d in diffs.items() if d["tie"])
    ev = "; ".join(f"{k} − {best}: {_interval(d)}" for k, d in sorted(diffs.items()))
    return best, ties, f"n={n}, {len(seeds)} seeds: {ev}"


def guide(res: dict | None = None, curve: dict | None = None, decoder: dict | None = None) -> list[dict]:
    """One row per situation: the derived choice, the methods tied with it, the article's
    choice and whether ours agrees, the evidence, and links to it (the decoder's rows come from
    chapter 10's stored results, ``decoder`` = ``book.evidence.ch10.guide_row()``)."""
    res = compare.load() if res is None else res
    picks = [(s, _pick(res, s)) for s in SITUATIONS]
    rows = [_row(s, p["choice"], p["ties"], _evidence(res, s, p)) for s, p in picks]
    return rows + [_row(TINY, *tiny_data(curve))] + decoder_rows(decoder)


def decoder_rows(measured: dict | None = None) -> list[dict]:
    """The "GPT-style decoder" situation, one row per decoder task of chapter 10
    (``book.ch10.claims.guide_row``): the most accurate method and those whose paired interval
    against it contains 0; among them the pick is the one that trains the fewest numbers."""
    name, article, arms = DECODER
    rows = []
    for task, r in (decoder_guide_row() if measured is None else measured).items():
        pool = [r["best"]] + sorted(r["ties_with_best"])
        choice = min(pool, key=lambda n: (r["trainable"][n], n))
        ties = sorted(n for n in pool if n != choice and r["trainable"][n] == r["trainable"][choice])
        rows.append({"situation": f"{name}: {task}", "choice": choice, "ties": ties, "article": article,
                     "verdict": _agreement(choice, ties, arms),
                     "evidence": f"best {r['best']}; {len(pool)} methods tie it on the paired interval; "
                                 f"{choice} trains {r['trainable'][choice]:,} numbers"
                                 + (f"; not judged (rate at a grid edge): {', '.join(r['unbracketed'])}"
                                    if r.get("unbracketed") else ""),
                     "links": [link(DECODER_LINK, "4. Every method on the decoder")]})
    return rows


def guide_markdown(rows: list[dict]) -> str:
    """The guide as a Markdown table (for ``IPython.display.Markdown``)."""
    out = ["| situation | derived choice | ties with it | article's choice | | evidence | shown in |",
           "|---|---|---|---|---|---|---|"]
    out += [f"| {r['situation']} | {r['choice']} | {', '.join(r['ties']) or 'none'} | {r['article']} | "
            f"{r['verdict']} | {r['evidence']} | {', '.join(r['links'])} |" for r in rows]
    out += [f"| {name} | untestable here | | {art} | | needs a model over 10B parameters | |" for name, art in UNTESTABLE]
    return "\n".join(out)
