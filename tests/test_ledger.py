"""The claims ledger as a whole: one verdict per article sentence, and rules that can fail.

* Every record names the article sentence it judges; two records of one sentence must agree
  (``claims.disagreements``), and a sentence two chapters judge is registered in
  ``book.sentences``.
* Every rule of every chapter is flipped here by plausible data on the other side of its
  threshold (a rule that cannot fail is a defect), or is listed in ``FIXED`` with the reason its
  verdict does not rest on data (an arithmetic identity, a reading of the source, a setting we
  do not have). The shared verdict helpers are flipped on both sides of each threshold.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib
from functools import lru_cache

import pytest

from pedagogy_lib.book import claims, rules
from pedagogy_lib.book import sentences as S
from pedagogy_lib.book.rules import paired_points

CHAPTERS = ("00", "01", "02", "03", "04", "05", "06", "07", "08", "10")
CHAPTERS += ("11",)


def claims_module(ch: str):
    return importlib.import_module(f"pedagogy_lib.book.ch{ch}.claims")


def all_rules():
    return [(ch, c) for ch in CHAPTERS for c in claims_module(ch).CLAIMS.items]


# ----------------------------------------------------------------------------- one verdict per sentence
def test_every_record_names_its_sentence_and_sentences_agree():
    records = [r for ch in claims.ORDER for r in claims.chapter_claims(ch)]
    assert all(r["sentence"] for r in records)
    assert claims.disagreements(records) == {}, claims.disagreements(records)
    groups = claims.by_sentence(records)
    shared = {s for s, rs in groups.items() if len(rs) > 1}
    assert shared == set(S.SENTENCES), "a sentence judged twice must be registered in book.sentences (and only those)"
    for s, rs in groups.items():  # a record's sentence is its own id unless it is a registered shared one
        assert s in S.SENTENCES or [r["id"] for r in rs] == [s]
    assert len(claims.sentence_verdicts(records)) == len(groups)


def test_disagreeing_records_are_refused():
    recs = [{"id": "a", "sentence": "s", "verdict": "holds"}, {"id": "b", "sentence": "s", "verdict": "wrong"},
            {"id": "c", "sentence": "t", "verdict": "wrong"}]
    assert claims.disagreements(recs) == {"s": {"a": "holds", "b": "wrong"}}
    with pytest.raises(ValueError, match="conflicting"):
        claims.sentence_verdicts(recs)
    assert claims.sentence_verdicts(recs[1:]) == {"s": "wrong", "t": "wrong"}


def test_the_three_contradictions_of_issue_13_are_settled():
    v = {r["id"]: r["verdict"] for ch in claims.ORDER for r in claims.chapter_claims(ch)}
    assert v["ch00-table-prefix"] == v["ch04-fraction"] == "approximately"  # 0.139% at m=10 rounds to 0.1%
    assert v["ch05-prompt-3-4-points"] == v["ch08-prompt-3-4-points"] == "not-reproduced-here"
    assert v["ch03-4x-lora"] == v["ch08-adapter-4x-params"]
    assert v["ch04-lags-lora"] != "holds"  # a hard-task claim is never held up by the word task


def test_a_record_with_an_unknown_verdict_is_refused():
    with pytest.raises(ValueError, match="verdict"):
        rules.record("00", "x", "c", "probably", "1", "2", "s")


# ----------------------------------------------------------------------------- the shared helpers flip
def _d(values_a, values_b):
    return paired_points(values_a, values_b)


TIGHT_ZERO = _d([0.900, 0.910, 0.920], [0.9001, 0.9099, 0.9200])  # a tie, interval ±0.03 points
WIDE_TIE = _d([0.88, 0.93, 0.90], [0.90, 0.90, 0.90])             # a tie, interval ±6 points
THREE_POINTS = _d([0.930, 0.941, 0.950], [0.900, 0.910, 0.920])   # +3.03 points, an order
ONE_POINT_5 = _d([0.910, 0.922, 0.930, 0.941, 0.950], [0.900, 0.910, 0.920, 0.930, 0.940])  # +1.06, 5 seeds
TIGHT_ZERO_5 = _d([0.900, 0.910, 0.920, 0.930, 0.940], [0.9001, 0.9099, 0.9200, 0.9301, 0.9399])  # a tie, 5 seeds


def test_band_and_match_verdicts_flip():
    assert rules.band_verdict(THREE_POINTS, 2.0, 4.0) == "holds"
    assert rules.band_verdict(THREE_POINTS, 3.5, 4.0) == "wrong"
    assert rules.band_verdict(WIDE_TIE, -2.0, 2.0) == "approximately"  # the mean inside, the interval not
    assert rules.match_verdict(TIGHT_ZERO, 0.5) == "holds"
    assert rules.match_verdict(WIDE_TIE, 0.5) == "approximately"
    assert rules.match_verdict(THREE_POINTS, 0.5) == "wrong"
    assert THREE_POINTS["n"] == 3 and not THREE_POINTS["tie"] and WIDE_TIE["tie"]


def test_unbracketed_names_the_edge():
    assert rules.unbracketed({"a": {1e-3: 0.8, 3e-3: 0.9, 1e-2: 0.85}}) == {}
    assert rules.unbracketed({"a": {1e-3: 0.9, 3e-3: 0.8}, "b": {"0.1": 0.1, "0.3": 0.2}}) == {"a": "low", "b": "high"}
    assert rules.unbracketed({"c": {1e-3: 0.9}}) == {"c": "no grid"}
    assert "lowest rate" in rules.unbracketed_text({"a": "low"})


def test_sentence_judges_flip():
    shares = {S.GPT2_MEDIUM.name: 0.139, "other": 0.4}
    assert S.prefix_share(shares)[0] == "approximately"
    assert S.prefix_share({**shares, "other": 0.12})[0] == "holds"
    assert S.prefix_share({**shares, S.GPT2_MEDIUM.name: 0.2})[0] == "wrong"
    assert S.prompt_gap(THREE_POINTS)[0] == "approximately"  # never holds from one small model
    assert S.prompt_gap(TIGHT_ZERO)[0] == "not-reproduced-here"
    # the sentence pools every chapter's measurement: all inside 3–4 → approximately, one outside →
    # not-reproduced-here, one on an unbracketed rate drops out, none judged → untestable-here
    assert S.prompt_gap_pooled({"a": THREE_POINTS, "b": THREE_POINTS})[0] == "approximately"
    assert S.prompt_gap_pooled({"a": THREE_POINTS, "b": TIGHT_ZERO})[0] == "not-reproduced-here"
    assert S.prompt_gap_pooled({"a": THREE_POINTS, "b": None})[0] == "approximately"
    assert S.prompt_gap_pooled({"a": None, "b": None})[0] == "untestable-here"
    assert S.adapter_4x(THREE_POINTS, 4.0)[0] == "wrong"      # RoBERTa-base's 3x row is 1.8 points behind
    assert S.adapter_4x(WIDE_TIE, 4.0)[0] == "approximately"
    assert S.adapter_4x(TIGHT_ZERO, 4.0, {"RoB-base x": (1.2, 0.3, 87.1, 87.2)})[0] == "holds"


def test_qlora_sentence_judges_flip():
    """The three QLoRA sentences chapters 07 and 10 both judge: a match within its margin, on fewer
    than 5 seeds at most approximately; NF4 over FP4 only from an interval; paging from a GPU run."""
    assert S.match_pooled({"a": (TIGHT_ZERO_5, 0.5, "points")})[0] == "holds"
    assert S.match_pooled({"a": (TIGHT_ZERO, 0.5, "points")})[0] == "approximately"   # n = 3
    assert S.match_pooled({"a": (WIDE_TIE, 0.5, "points")})[0] == "approximately"
    assert S.match_pooled({"a": (TIGHT_ZERO_5, 0.5, "points"), "b": (THREE_POINTS, 0.5, "points")})[0] == "not-reproduced-here"
    assert S.match_pooled({"a": None})[0] == "untestable-here"
    dt = {"m": {"fp32": 3.0, "nf4": 3.01, "fp4": 3.5, "int4": 3.6, "tokens": 100}}   # a large unmeasured gap
    assert S.nf4_vs_fp4(("enc", ONE_POINT_5), dt)[0] == "holds"
    assert S.nf4_vs_fp4(("enc", THREE_POINTS), dt)[0] == "approximately"            # n = 3
    assert S.nf4_vs_fp4(("enc", TIGHT_ZERO_5), dt)[0] == "not-reproduced-here"      # perplexity alone orders nothing
    assert S.nf4_vs_fp4(("enc", None), dt)[0] == "untestable-here"
    paged = {"device": "cuda", "name": "G", "paged_state_tensors": 3, "state_tensors": 9}
    assert S.paged_optimisers(paged, None)[0] == "approximately"
    assert S.paged_optimisers(paged | {"paged_state_tensors": 0}, None)[0] == "untestable-here"
    assert S.paged_optimisers(paged | {"device": "cpu"}, None)[0] == "untestable-here"
    assert rules.few_seeds("holds", 3) == "approximately" and rules.few_seeds("holds", 5) == "holds"
    assert rules.few_seeds("wrong", 1) == "wrong"


def _line_shifted(line: dict, method: str, nats: float) -> dict:
    """Chapter 10's first-line results with ``method``'s test loss raised by ``nats`` at every run."""
    line = copy.deepcopy(line)
    for r in line["runs"]:
        if r["method"] == method:
            r["test"]["loss"] += nats
    return line


def _line_copied(line: dict, method: str, source: str) -> dict:
    """Chapter 10's first-line results with ``method``'s test loss at each seed set to ``source``'s."""
    line = copy.deepcopy(line)
    lrs = {m: line["selection"][m]["chosen"] for m in (method, source)}
    loss = {r["seed"]: r["test"]["loss"] for r in line["runs"] if r["method"] == source and r["lr"] == lrs[source]}
    for r in line["runs"]:
        if r["method"] == method and r["lr"] == lrs[method]:
            r["test"]["loss"] = loss[r["seed"]]
    return line


def _three_seeds(line: dict) -> dict:
    """``line`` cut to seeds 0–2 (the runs of seeds 3 and 4 dropped)."""
    line = copy.deepcopy(line)
    line["runs"] = [r for r in line["runs"] if r["seed"] < 3]
    line["seeds"] = [s for s in line["seeds"] if s < 3]
    return line


def _five_seeds(line: dict) -> dict:
    """``line`` with seeds 3 and 4 added: copies of seeds 1 and 2's runs (the paired gains repeat)."""
    import copy

    out = copy.deepcopy(line)
    extra = [dict(copy.deepcopy(r), seed=r["seed"] + 2) for r in out["runs"] if r["seed"] in (1, 2)]
    out["runs"] += extra
    out["seeds"] = sorted(set(out.get("seeds", [])) | {3, 4})
    return out


def test_prefix_vs_full_flips():
    from pedagogy_lib.book import ch10

    line = ch10.load("line")
    d = ch10.paired_gain(line, "prefix", "full")
    better = _line_shifted(line, "prefix", -abs(d["mean"]) - 0.5)   # prefix clearly ahead
    assert S.prefix_vs_full(better)[0] == "holds"                         # ahead on the stored five seeds
    assert S.prefix_vs_full(_three_seeds(better))[0] == "approximately"   # ahead, but on 3 seeds: capped (rules.few_seeds)
    assert S.prefix_vs_full(_five_seeds(_three_seeds(better)))[0] == "holds"
    assert S.prefix_vs_full(_line_shifted(line, "prefix", abs(d["mean"]) + 0.5))[0] == "not-reproduced-here"
    just_behind = _line_shifted(line, "prefix", d["mean"] + 1e-4)   # mean −1e-4: a tie favouring full FT
    assert S.prefix_vs_full(just_behind)[0] == "approximately"
    assert S.prefix_vs_full(_line_shifted(line, "prefix", d["mean"] - 1e-4))[0] == "approximately"  # a tie, whatever its sign
    better["selection"]["prefix"] = {**better["selection"]["prefix"], "bracketed": False}
    assert S.prefix_vs_full(better)[0] == "untestable-here"


# ----------------------------------------------------------------------------- every rule flips
def _shift(values, points):
    return [x + points / 100 for x in values]


@lru_cache(maxsize=None)
def _context(ch: str):
    """What the chapter's rules are applied to, from the stored results."""
    V = claims_module(ch)
    if ch == "01":
        return V.summary()
    if ch == "08":
        return V.compare.load()
    return V.context()


def _ch10_prompt_at_full(area):
    """Chapter 10's small decoder with prompt tuning scoring what full fine-tuning scores, seed by
    seed (chapter 05's scale claim takes its verdict from the decoder)."""
    from pedagogy_lib.book import ch10

    full = {r["seed"]: r["test"]["acc"] for r in ch10.chosen_runs(area, "full")}
    lr = area["selection"]["prompt"]["chosen"]
    for r in area["runs"]:
        if r["method"] == "prompt" and r["lr"] == lr:
            r["test"]["acc"] = full[r["seed"]] + 0.001 * (r["seed"] - 1)


def _ch03_bracket(c, *names):
    for n in names:
        c.acc["results"][n]["val_by_lr"]["0.003"] = 0.99  # bracketed (3e-3 is inside every grid)


def _ch03_pfeiffer(c):  # Pfeiffer 3 points below Houlsby at both m, every rate bracketed
    for k in (16, 64):
        _ch03_bracket(c, f"Houlsby m={k}", f"Pfeiffer m={k}")
        h = c.acc["results"][f"Houlsby m={k}"]["test_by_seed"]
        c.acc["results"][f"Pfeiffer m={k}"]["test_by_seed"] = [x - 0.03 - 0.001 * (i % 2) for i, x in enumerate(h)]


def _ch03_4x(c):  # the ≈4× adapter ties LoRA (±0.2 points a seed), both rates bracketed
    _ch03_bracket(c, "LoRA r=8 (q,v)", "Pfeiffer m=64")
    lora = c.acc["results"]["LoRA r=8 (q,v)"]["test_by_seed"]
    c.acc["results"]["Pfeiffer m=64"]["test_by_seed"] = [x + 0.002 * (-1) ** i for i, x in enumerate(lora)]


def _ch05_long(c):
    # the stored verdict is judged on the paired gain; put it three points up (an order) unless it
    # is already up, then a tie around 0 (either way the other side of the rule's threshold)
    g = c.long.get("prompt-random")
    up = g is not None and g["d"] is not None and g["d"]["lo"] > 0
    c.long = {"prompt-random": {"seeds": [0, 1, 2], "d": TIGHT_ZERO if up else THREE_POINTS}}
    c.edges = {}


def _ch06_set(c, name, ref, points):
    for arm in (name, ref):  # both rates inside their grids, so the rule judges
        c.curve["results"][arm]["val_by_lr"] = {"0.001": 0.5, "0.003": 0.99, "0.01": 0.5}
    for n, p in c.curve["results"][name]["curve"].items():
        p["test_by_seed"] = [x + points / 100 + 0.0005 * (i % 2)
                             for i, x in enumerate(c.curve["results"][ref]["curve"][n]["test_by_seed"])]


def _ch06_why(c):
    _ch06_set(c, "BitFit", "probe", 0.0)  # BitFit no better than the frozen probe: a tie


def _ch07_nf4(c):
    """Another real 4-bit code in NF4's place: FP4's codebook and FP4's own measured entropies and
    errors on the same Gaussian blocks and MiniLM matrices."""
    from pedagogy_lib import quant as Q

    for m in (c.study["gaussian"], *c.study["matrices"].values()):
        m["NF4"] = dict(m["FP4"])
    c.codebook = Q.fp4_codebook()


def _ch07_at(c, name, ref, points, jitter=0.0005):
    r = c.acc["results"]
    r[name]["test_acc"] = [x + points / 100 + jitter * (i % 2) for i, x in enumerate(r[ref]["test_acc"])]
    r[name]["seeds"], r[name]["bracketed"], r[ref]["bracketed"] = list(r[ref]["seeds"]), True, True


def _ch07_match(c, V):
    """Across the ±0.5-point band: 2 points below LoRA fp32 unless the stored verdict already says
    not-reproduced-here, else a copy of it (chapter 10's decoder caps the sentence at approximately)."""
    differs = V._nf4_matches(copy.deepcopy(c))[0] == "not-reproduced-here"
    _ch07_at(c, "QLoRA NF4+DQ", "LoRA fp32", 0.0 if differs else -2.0)
    _ch07_at(c, "full FT", "LoRA fp32", 0.0)


def _ch07_fp4(c, V):
    """NF4 resolved 1 point above FP4 when the stored verdict is not holds, else level with it."""
    held = V._nf4_fp4(copy.deepcopy(c))[0] == "holds"
    _ch07_at(c, "QLoRA FP4+DQ", "QLoRA NF4+DQ", 0.0 if held else -1.0, jitter=0.01 if held else 0.0005)


def _ch08_at(res, name, ref, points):
    res["methods"][name]["test_acc"] = [x + points / 100 + 0.0005 * (i % 2)
                                        for i, x in enumerate(res["methods"][ref]["test_acc"])]
    res["methods"][name]["seeds"] = list(res["methods"][ref]["seeds"])


def _ch08_gaps(res):
    for n, m in res["methods"].items():
        if n not in ("full", "probe"):
            _ch08_at(res, n, "full", -3.5)


def _ch10_tuned(st: dict, study: str) -> None:
    """Chapter 10's ``study`` as a rerun would store it: each arm's rate chosen on validation, bracketed."""
    arms = {r["label"] for r in st[study]}
    st.setdefault("selection", {})[study] = {a: {"chosen": st["lr"], "bracketed": True} for a in arms}


# id -> mutate(context, monkeypatch, module): plausible data on the other side of the rule's threshold
FLIPS = {
    # ch00: other model sizes and counts
    "ch00-gpt3-fp32-weights": lambda c, mp, V: setattr(c, "n3", int(c.n3 * 1.5)),
    "ch00-100-copies": lambda c, mp, V: c.store.update(full=c.store["full"] * 1.5),
    "ch00-table-lora": lambda c, mp, V: c.table.update({"LoRA r=8 (q,v)": {k: v // 100 for k, v in c.table["LoRA r=8 (q,v)"].items()}}),
    "ch00-table-adapter": lambda c, mp, V: c.table.update({k: {m: v // 100 for m, v in c.table[k].items()}
                                                           for k in c.table if k.startswith("Adapter")}),
    "ch00-table-prefix": lambda c, mp, V: mp.setattr(S, "PREFIX_M", 100),
    "ch00-table-prompt": lambda c, mp, V: c.table.update({k: {m: v * 1000 for m, v in c.table[k].items()}
                                                          for k in c.table if k.startswith("Prompt")}),
    "ch00-table-bitfit": lambda c, mp, V: c.table.update({"BitFit (biases + LN β)": {
        k: v * 5 for k, v in c.table["BitFit (biases + LN β)"].items()}}),
    "ch00-update-0.1pct-one-gpu": lambda c, mp, V: setattr(c, "n3", 7_000_000_000),
    "ch00-lora-roberta-base": lambda c, mp, V: mp.setattr(V, "ROBERTA_BASE", dataclasses.replace(V.ROBERTA_BASE, vocab=5000)),
    "ch00-five-orders": lambda c, mp, V: setattr(c, "lora8", c.lora8 // 20),
    "ch00-65b-full-ft-700gb": lambda c, mp, V: setattr(c, "n65", int(c.n65 * 1.5)),
    "ch00-qlora-780gb": lambda c, mp, V: setattr(c, "n65", int(c.n65 * 0.5)),
    "ch00-gpt3-lora-checkpoint": lambda c, mp, V: setattr(c, "lora4", c.lora4 * 3),
    # ch01: other spectra and intrinsic-dimension curves; the scale claim on other published d90s
    "ch01-intrinsic-dim": lambda c, mp, V: c["intrinsic"].update(d_match=300),  # d = 300 within a point of full FT
    "ch01-spectra-decay": lambda c, mp, V: c.update(att_E_k=[0.9] * len(c["att_E_k"])),
    "ch01-update-concentrated": lambda c, mp, V: c.update(E_k_dW=[0.0] * len(c["E_k_dW"])),
    "ch01-small-slice": lambda c, mp, V: c.update(rel_norm=[0.5] * len(c["rel_norm"])),
    "ch01-id-model-size": lambda c, mp, V: mp.setattr(V, "PUBLISHED_D90", {k: (v[0] * (3 if "large" in k else 1),) + v[1:]
                                                                           for k, v in V.PUBLISHED_D90.items()}),
    # ch02: other sweeps (accuracies paired by seed), toys and timings
    "ch02-init-zero": lambda c, mp, V: c.init.update(identical=False),
    "ch02-alpha-over-r": lambda c, mp, V: c.toy["alpha_over_r"][-1].update(
        step1_delta_norm=c.toy["alpha_over_r"][0]["step1_delta_norm"]),
    "ch02-rslora": lambda c, mp, V: c.s["rank"]["rslora"][c.rk[-1]].update(final_loss=10.0),
    "ch02-merge-latency": lambda c, mp, V: [x["ratio"].update(merged=1.5) for x in c.lat["cases"]],
    "ch02-bit-for-bit": lambda c, mp, V: c.merge.update(identical=True),
    "ch02-placement": lambda c, mp, V: c.s["placement"]["q,v"].update(test_acc=_shift(c.s["placement"]["q,v"]["test_acc"], -5)),
    "ch02-qkvo-marginal": lambda c, mp, V: c.s["same_rank"]["q,k,v,o"].update(  # a gain of +0.5 at every seed
        test_acc=_shift(c.s["placement"]["q,v"]["test_acc"], 0.5)),
    "ch02-lr": lambda c, mp, V: c.s["best_lr"].update(lora=3e-4, full=1e-5),
    "ch02-rank-advice": lambda c, mp, V: c.ranks["8"].update(test_acc=_shift(c.ranks["8"]["test_acc"], -10)),
    "ch02-qv-canonical": lambda c, mp, V: mp.setattr(V, "TABLE5_ALL", V.TABLE5_QV),  # the paper's table backs q,v
    # ch03: other accuracies, latencies, init deviations
    "ch03-identity-init": lambda c, mp, V: c.ident.update(exact=0.1),
    "ch03-4x-lora": lambda c, mp, V: _ch03_4x(c),
    "ch03-latency": lambda c, mp, V: [r.update({"houlsby": 0.01, "parallel": 0.001, "LoRA merged": 0.0}) for r in c.lat["rows"].values()],
    "ch03-pfeiffer-half": lambda c, mp, V: _ch03_pfeiffer(c),
    # ch04: published gaps, an MLP grid whose best rate sits at its edge, the fold check, another vocabulary
    "ch04-lags-lora": lambda c, mp, V: mp.setattr(V, "LORA_T4", {"a": (70.0, 70.6), "b": (80.0, 80.9)}),
    "ch04-direct-unstable": lambda c, mp, V: c.grids["mlp"].update({min(c.grids["mlp"]): 0.99}),  # MLP rate at an edge
    "ch04-count": lambda c, mp, V: setattr(c, "fold", {**c.fold, "trainable_after": c.fold["trainable_after"] + 1}),
    "ch04-fraction": lambda c, mp, V: mp.setattr(V, "GPT2_MEDIUM", dataclasses.replace(V.GPT2_MEDIUM, vocab=5000)),
    "ch04-mlp-dropped": lambda c, mp, V: setattr(c, "fold", {**c.fold, "identical": False}),
    "ch04-e2e": lambda c, mp, V: setattr(c, "line", _line_shifted(c.line, "prefix", -0.5)),   # prefix clearly ahead
    # ch05: other paired gaps and fractions
    "ch05-prompt-needs-scale": lambda c, mp, V: _ch10_prompt_at_full(c.area),
    "ch05-prompt-3-4-points": lambda c, mp, V: setattr(c, "gaps", {k: THREE_POINTS for k in c.gaps}),  # both chapters
    "ch05-ptv2-matches-ft": lambda c, mp, V: setattr(c, "d_v2", THREE_POINTS),
    "ch05-prompt-fraction": lambda c, mp, V: setattr(c, "fr", {k: {"prompt": 1e-5, "ptuning_v2": 2e-3} for k in c.fr}),
    "ch05-ptv2-fraction": lambda c, mp, V: setattr(c, "fr", {k: {"prompt": 1e-5, "ptuning_v2": 2e-3} for k in c.fr}),
    "ch05-prompt-more-steps": lambda c, mp, V: _ch05_long(c),  # the longer budget three points up, every seed
    # ch06: other counts and learning curves
    "ch06-0.08pct": lambda c, mp, V: c.fr["BERT-large"].update({"with LN β": (1, 0.0016)}),
    "ch06-qm2-0.04pct": lambda c, mp, V: c.fr["BERT-large"].update({"b_q + b_m2": (1, 0.0008)}),
    "ch06-45x-houlsby": lambda c, mp, V: c.fr["BERT-large"].update({"with LN β": (2 * c.fr["BERT-large"]["with LN β"][0], 0.0016)}),
    "ch06-small-data": lambda c, mp, V: _ch06_set(c, "BitFit", "full FT", -5.0),
    "ch06-vs-lora": lambda c, mp, V: _ch06_set(c, "LoRA r=8 (q,v)", "BitFit", 1.0),  # LoRA a point ahead
    "ch06-why": lambda c, mp, V: _ch06_why(c),
    "ch06-qm2-accuracy": lambda c, mp, V: _ch06_set(  # level with BitFit (holds), or 3 points behind if it held
        c, V.QM2, "BitFit", -3.0 if V._qm2_accuracy(c)[0] == "holds" else 0.0),
    # ch07: other codebook statistics, bit counts, memory, backward checks
    "ch07-nf4-optimal": lambda c, mp, V: _ch07_nf4(c),
    "ch07-dq-0.4bits": lambda c, mp, V: c.bits.update(nf4_dq=c.bits["nf4"] - 0.1),
    "ch07-65b-48gb": lambda c, mp, V: c.m65.update(qlora_total=60.0),
    "ch07-700-50": lambda c, mp, V: c.m65.update(full_16bit=1500.0),
    "ch07-grad-flow": lambda c, mp, V: c.back.update(grad_rel_diff=1.0),
    "ch07-no-fp16-base": lambda c, mp, V: c.back.update(max_alive=c.back["layers"]),
    "ch07-nf4-matches-16bit": lambda c, mp, V: _ch07_match(c, V),
    "ch07-nf4-beats-fp4": lambda c, mp, V: _ch07_fp4(c, V),
    # the stored GPU run paged full fine-tuning's states; with none paged it is untestable here
    "ch07-paged": lambda c, mp, V: c.gpu["memory"]["paged"]["PagedAdamW"].update(paged_state_tensors=0),
    # ch08: other per-seed accuracies, timings
    "ch08-lora-ties-full-ft": lambda c, mp, V: _ch08_at(c, "lora_qv", "full", -3.0),
    "ch08-adapter-4x-params": lambda c, mp, V: mp.setattr(  # chapter 03's ≈4× adapter a tight tie with LoRA
        S, "adapter_4x", lambda d, ratio, _rule=S.adapter_4x: _rule({**d, "mean": 0.0, "lo": -0.5, "hi": 0.5, "tie": True}, ratio)),
    "ch08-prefix-small-drop": lambda c, mp, V: _ch08_at(c, "prefix", "lora_qv", -5.0),
    "ch08-prompt-3-4-points": lambda c, mp, V: (_ch08_at(c, "prompt", "full", -3.5), mp.setattr(  # and chapter 05's
        S, "ch05_prompt_gap", lambda sweep=None: ("chapter 05", THREE_POINTS))),
    "ch08-bitfit-baseline": lambda c, mp, V: _ch08_at(c, "bitfit", "probe", 0.0),
    "ch08-merged-lora-latency": lambda c, mp, V: c["methods"]["lora_qv"].update(latency_ratio=1.5),
    "ch08-small-model-gaps": lambda c, mp, V: _ch08_gaps(c),
    # ch10: other held-out losses (nats/token), studies, GPU records and chapter 07/08 evidence
    "qlora-matches-16bit": lambda c, mp, V: setattr(c, "line", _line_shifted(c.line, "qlora-ours", 0.1)),
    "recipe-matches-ours": lambda c, mp, V: setattr(c, "line", _line_shifted(c.line, "qlora-recipe", 0.1)),
    "nf4-best-dtype": lambda c, mp, V: mp.setattr(S, "ch07_nf4_fp4", lambda acc=None: ("chapter 07", ONE_POINT_5)),
    "dq-free": lambda c, mp, V: [r.update({"nf4+dq": r["nf4"] + 0.05}) for r in c.st["dtypes"].values()],
    # the studies ran at one untuned rate (untestable-here): a rerun with a bracketed rate per arm is judged
    "all-linear-needed": lambda c, mp, V: _ch10_tuned(c.st, "placement"),
    "rank-unimportant": lambda c, mp, V: _ch10_tuned(c.st, "rank"),
    "lora-vs-full-generation": lambda c, mp, V: setattr(c, "line", _line_shifted(c.line, "lora-all", 0.1)),
    "prompt-needs-scale": lambda c, mp, V: _ch10_prompt_at_full(c.area),
    "ia3-vs-lora": lambda c, mp, V: (mp.setattr(S, "ch08_ia3_gap", lambda res=None: ("chapter 08", TIGHT_ZERO_5)),
                                     setattr(c, "line", _line_copied(c.line, "ia3", "lora-qv"))),   # an exact match
    "8bit-state": lambda c, mp, V: c.st["recipe"]["optimisers"]["full/AdamW8bit"].update(
        state_bytes=c.st["recipe"]["optimisers"]["full/AdamW"]["state_bytes"] / 2),
    "paged-optimisers": lambda c, mp, V: mp.setattr(S, "ch07_gpu_paged", lambda: None),
    "checkpointing-trade": lambda c, mp, V: c.st["recipe"]["bf16+checkpointing"].update(
        saved_bytes=2 * c.st["recipe"]["bf16"]["saved_bytes"]),
    "prefix-vs-full-generation": lambda c, mp, V: setattr(c, "line", _line_shifted(c.line, "prefix", -0.5)),
}

def _ch02_grid(r, best, edge=None):
    """A bracketed grid of its own around ``best`` for a stage C/D arm (``edge``: its best at that edge)."""
    lo, hi = r["mean_val"] - 0.05, r["mean_val"] - 0.05
    if edge == "low":
        lo = r["mean_val"] + 0.01
    r["val_by_lr"] = {1e-3: lo, best: r["mean_val"], 1e-2: hi}


def test_ch02_orders_need_tuned_rivals():
    """Stage C's arms carry grids of their own (issue #13), so their orders are judged; the same
    measurements with every rival at q,v's rate only (no grid), or with a rival's best rate at its
    grid's edge, get no verdict in q,v's favour; stage D's ranks ran at one rate (audit 7, item 4)."""
    V = claims_module("02")
    c = copy.deepcopy(_context("02"))
    for g in ("placement", "same_rank"):
        assert all(r["bracketed"] and len(r["val_by_lr"]) >= 3 for r in c.s[g].values()), g
    assert V._placement_rule(c)[0] != "untestable-here" and V._qkvo(c)[0] != "untestable-here"
    assert V._rank_advice(c)[0] == "untestable-here"
    shared = copy.deepcopy(c)
    for g in ("placement", "same_rank"):
        for r in shared.s[g].values():
            del r["val_by_lr"]
    assert V._placement_rule(shared)[0] == V._qkvo(shared)[0] == "untestable-here"
    assert "without a grid" in V._placement_rule(shared)[1]
    edge = copy.deepcopy(c)
    _ch02_grid(edge.s["same_rank"]["q,k,v,o"], edge.s["same_rank"]["q,k,v,o"]["lr"], "low")
    assert V._qkvo(edge)[0] == "untestable-here" and "lowest rate of its grid" in V._qkvo(edge)[1]
    for k in c.rk:
        if k != "8":
            _ch02_grid(c.ranks[k], c.s["best_lr"]["lora"])
    assert V._rank_advice(c)[0] == "approximately"


FLIPS |= {
    # ch11: a serving run where copies share storage, a broken merge, smaller GPUs for the 70B arithmetic
    # a merged copy that kept its adapter's factors: each copy is larger than the base
    "ch11-100-copies-serving": lambda c, mp, V: c["serving"].update(merged_copies_bytes=c["serving"]["n_adapters"] * (
        c["serving"]["base_bytes"] + c["serving"]["adapter_bytes"])),
    "ch11-merge-zero-overhead": lambda c, mp, V: c["serving"].update(max_logit_diff_adapter_vs_merged=0.3),
    "ch11-lora-70b": lambda c, mp, V: mp.setattr(V, "GPU_GB", 12),
}


def test_a_tie_or_a_gain_is_no_drop():
    """ch08-prefix-small-drop: a drop needs an interval below 0; a prefix ahead of LoRA never holds it,
    and neither does a small drop: the claim is measured on generation (DESIGN, Evidence)."""
    V = claims_module("08")
    res = copy.deepcopy(_context("08"))
    _ch08_at(res, "prefix", "lora_qv", -1.0)
    assert V._prefix_drop(res)[0] == "approximately"         # −1 point, interval inside [−2, 0): not holds
    assert "never makes it hold" in V._prefix_drop(res)[1]
    _ch08_at(res, "prefix", "lora_qv", +5.0)
    assert V._prefix_drop(res)[0] == "not-reproduced-here"   # prefix 5 points better: no drop
    _ch08_at(res, "prefix", "lora_qv", -3.0)
    assert V._prefix_drop(res)[0] == "wrong"



def _interval(lo: float, hi: float, n: int = 5) -> dict:
    """A paired difference with the 95 % interval [lo, hi] (points) and its tie flag (Eq. 8.7)."""
    return {"mean": (lo + hi) / 2, "lo": lo, "hi": hi, "se": (hi - lo) / 5.5, "n": n, "tie": lo <= 0.0 <= hi}


@pytest.mark.parametrize("lo,hi,ch06,ch08", [
    (-1.0, 0.0, "approximately", "approximately"),    # the boundary [−1, 0]: touches 0, a tie in both rooms
    (0.0, 1.0, "holds", "approximately"),              # [0, 1]: inside ch06's [0, 3]; for prefix − LoRA a tie
    (-1.0, -0.01, "not-reproduced-here", "approximately"),  # LoRA below BitFit / a small drop (generation claim)
    (0.01, 1.0, "holds", "not-reproduced-here"),       # prefix resolved above LoRA: the opposite order
    (3.5, 5.0, "wrong", "not-reproduced-here"),        # a gap larger than "small" / the opposite order
    (-5.0, -3.0, "not-reproduced-here", "wrong"),      # the opposite order / a drop larger than "small"
])
def test_an_order_opposite_to_the_claim_is_not_reproduced_here_in_both_rooms(lo, hi, ch06, ch08, monkeypatch):
    """``rules``' one rule: an order opposite to the claim's, resolved on our one task, is
    not-reproduced-here (ch06-vs-lora: LoRA − BitFit claimed in [0, 3]; ch08-prefix-small-drop:
    prefix − LoRA claimed in [−2, 0)); a gap in the claimed direction but past its band is wrong; an
    interval touching 0 is a tie, never an order."""
    assert claims_module("06").gap_verdict(_interval(lo, hi)) == ch06
    V = claims_module("08")
    monkeypatch.setattr(V, "_paired", lambda res, a, b: _interval(lo, hi))
    assert V._prefix_drop(_context("08"))[0] == ch08


# id -> why its verdict does not rest on data that could come out otherwise
FIXED = {
    "ch00-gpt3-training-state": "a definition: Adam keeps gradients and two moments per trained parameter",
    "ch00-lora-d4096-r8": "an arithmetic identity, 8·8192/4096² (rounded_verdict is flipped above)",
    "ch02-d4096-r8": "the same arithmetic identity as ch00-lora-d4096-r8",
    "ch02-never-BA": "an operation count of two formulas (lora.lora_cost is tested in test_lora)",
    "ch02-roberta-0.24": "published table arithmetic (LoRA Table 2; glue_gaps is tested in test_lora)",
    "ch03-storage-2md": "an arithmetic identity on the adapter's shapes",
    "ch03-houlsby-2.1pct": "arithmetic on BERT-large's published shape",
    "ch03-adapterhub-pfeiffer": "arithmetic on AdapterHub's configuration",
    "ch03-encoders": "needs a decoder next to the encoder: untestable here until Part II judges it",
    "ch07-vicuna-2pct": "a reading of the source: the <2% compares Guanaco with ChatGPT, not QLoRA with full FT",
}


def test_every_rule_is_flipped_or_explained():
    ids = {c.id for _, c in all_rules()}
    assert not (set(FLIPS) & set(FIXED))
    assert ids == set(FLIPS) | set(FIXED), f"missing: {sorted(ids - set(FLIPS) - set(FIXED))}, " \
                                           f"stale: {sorted(set(FLIPS) | set(FIXED) - ids)}"


@pytest.mark.parametrize("ch,claim", [(ch, c) for ch, c in all_rules() if c.id in FLIPS], ids=lambda x: getattr(x, "id", x))
def test_plausible_data_flips_the_rule(ch, claim, monkeypatch):
    V = claims_module(ch)
    before = claim.rule(copy.deepcopy(_context(ch)))[0]
    ctx = copy.deepcopy(_context(ch))
    FLIPS[claim.id](ctx, monkeypatch, V)
    after = claim.rule(ctx)[0]
    assert before in rules.VERDICTS and after in rules.VERDICTS
    assert after != before, f"{claim.id}: {before} both times"


def test_ch06_why_flips_to_not_reproduced_when_bitfit_is_below_the_probe():
    """A second flip of ch06-why (FLIPS holds the tie → wrong): BitFit resolved 5 points below the
    probe at every size is an order opposite to the claim's, so not-reproduced-here, never wrong
    (``rules``' docstring), and the record calls it "below", not a tie."""
    V = claims_module("06")
    ctx = copy.deepcopy(_context("06"))
    assert V._why(copy.deepcopy(ctx))[0] == "holds"
    _ch06_set(ctx, "BitFit", "probe", -5.0)
    verdict, text = V._why(ctx)
    assert verdict == "not-reproduced-here" and "below 0 at n=" in text and "a tie" not in text.split("(rule:")[0]
