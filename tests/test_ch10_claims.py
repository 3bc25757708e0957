"""Chapter 10's claim rules and guide row on synthetic results: each verdict flips when
plausible data flips it."""
import numpy as np
import pytest

from pedagogy_lib.book import ch10
from pedagogy_lib.book.ch10 import claims as C
from pedagogy_lib.book.ch10.tasks import SEEDS
from pedagogy_lib.registry import DECODER_ARMS

METHODS = tuple(DECODER_ARMS)   # chapter 10's arms, as the stored results label them


def fake(task, values: dict) -> dict:
    """Results of ``task`` with the given per-seed test values (accuracy or loss) per method."""
    key = "acc" if task == "area" else "loss"
    runs = []
    for m, vs in values.items():
        for s, v in enumerate(vs):
            test = {key: v} | ({"ppl": float(np.exp(v)), "exact_match": 0.1, "rouge_l": 0.3} if task == "line" else {})
            runs.append({"method": m, "lr": 1e-3, "seed": s, "test": test, "trainable": 10, "seconds": 1.0})
    zs = {key: 0.3 if task == "area" else 4.0} | ({"ppl": 55.0, "exact_match": 0.0, "rouge_l": 0.1} if task == "line" else {})
    return {"task": task, "seeds": list(range(max(map(len, values.values())))), "runs": runs, "zero_shot": {"test": zs}, "model": "stdlib-1m",
            "selection": {m: {"chosen": 1e-3, "bracketed": True, "grid": [1e-3],  # LoRA all-linear best on val
                              "scores": [0.1 if m == "lora-all" else 0.0]} for m in values}}


def studies(placement_gain=0.05, rank_spread=0.01, nf4_best=True, tuned=True):
    """``tuned``: each study arm's rate chosen on validation and bracketed (a selection stored per arm);
    False: the stored studies' one shared, untuned rate."""
    dt = {"stdlib-1m": {"fp32": 3.0, "nf4": 3.05 if nf4_best else 3.2, "nf4+dq": 3.0505, "fp4": 3.1, "fp4+dq": 3.1,
                        "int4": 3.15, "int4+dq": 3.15, "tokens": 1000}}
    place = [{"label": lab, "seed": s, "test": {"loss": 3.0 - (placement_gain if lab == "all" else 0) + 0.01 * s}}
             for lab in ("qv", "all") for s in range(3)]
    rank = [{"r": r, "seed": 0, "test": {"loss": 3.0 + (rank_spread if r == 64 else 0)}} for r in (1, 4, 8, 16, 64)]
    opt = {f"{w}/{o}": {"state_bytes": b, "paged_state_tensors": 0, "params": 1, "largest_tensor": 1, "state_dtypes": []}
           for w, o, b in (("full", "AdamW", 8e6), ("full", "AdamW8bit", 2.1e6), ("full", "PagedAdamW8bit", 2.1e6),
                           ("lora-all", "AdamW", 6e5), ("lora-all", "AdamW8bit", 6e5), ("lora-all", "PagedAdamW8bit", 6e5))}
    rec = {"fp32": {"saved_bytes": 100, "seconds_per_step": 1.0}, "bf16": {"saved_bytes": 100, "seconds_per_step": 1.0},
           "bf16+checkpointing": {"saved_bytes": 70, "seconds_per_step": 1.3}, "optimisers": opt}
    out = {"dtypes": dt, "placement": place, "rank": rank, "recipe": rec, "lr": 3e-3}
    if tuned:
        chosen = {"chosen": 3e-3, "bracketed": True}
        out["selection"] = {"placement": {"qv": chosen, "all": chosen}, "rank": {f"r{r['r']}": chosen for r in rank}}
    return out


def base_values(task, **shift):
    noise = np.array([0.0, 0.004, -0.003])
    v = {m: list((0.6 if task == "area" else 3.0) + noise) for m in METHODS}
    for m, d in shift.items():
        v[m.replace("_", "-")] = list(np.array(v[m.replace("_", "-")]) + d + np.array([0.0, 0.01, -0.01]) * 0.1)
    return v


def scale_fake(gap=-0.2):
    """The larger model's area results: prompt tuning ``gap`` (accuracy) behind full fine-tuning."""
    full = np.array([0.6, 0.604, 0.597])
    res = fake("area", {"full": list(full), "prompt": list(full + gap + np.array([0.0, 0.001, -0.001]))})
    return res | {"model": "stdlib-4m"}


def verdicts(area, line, st, scale=None):
    return {r["id"]: r["verdict"] for r in C.claims(area, line, st, scale or scale_fake())}


def test_prompt_needs_scale_reads_both_sizes():
    area = fake("area", base_values("area", prompt=-0.2))
    line = fake("line", base_values("line"))
    assert verdicts(area, line, studies())["prompt-needs-scale"] == "approximately"  # the 10B+ half untestable
    assert verdicts(area, line, studies(), scale_fake(0.0))["prompt-needs-scale"] == "wrong"   # no lag at 4m
    rec = {r["id"]: r for r in C.claims(area, line, studies(), scale_fake())}["prompt-needs-scale"]
    assert "stdlib-1m" in rec["our_value"] and "stdlib-4m" in rec["our_value"]
    big = scale_fake(0.0)
    big["selection"]["prompt"]["bracketed"] = False                # 4m at a grid edge: judged on 1m alone
    assert verdicts(area, line, studies(), big)["prompt-needs-scale"] == "approximately"
    area["selection"]["full"]["bracketed"] = False
    assert verdicts(area, line, studies(), big)["prompt-needs-scale"] == "untestable-here"


def test_verdicts_follow_the_data():
    area = fake("area", base_values("area", prompt=-0.2))
    line = fake("line", base_values("line"))
    v = verdicts(area, line, studies())
    # pooled with chapter 07's stored ties (wider than ±0.5 points): approximately; NF4 vs FP4 is
    # ordered only by chapter 07's interval (a tie): our perplexities, one evaluation each, are context
    assert v["qlora-matches-16bit"] == "approximately" and v["nf4-best-dtype"] == "not-reproduced-here"
    # n = 3 seeds (placement) and one seed (rank): at most approximately
    assert v["all-linear-needed"] == "approximately" and v["rank-unimportant"] == "approximately"
    assert v["prompt-needs-scale"] == "approximately" and v["paged-optimisers"] == "approximately"  # chapter 07's GPU run paged
    # 8e6 / 2.1e6 = 3.81×: within 5 % of "about 4×" (rules.about_verdict) holds
    assert v["8bit-state"] == "holds" and v["checkpointing-trade"] == "holds"
    # flip each one with plausible data
    worse_q = fake("line", base_values("line", qlora_ours=0.3))
    w = verdicts(area, worse_q, studies(placement_gain=-0.05, rank_spread=0.5, nf4_best=False))
    assert w["qlora-matches-16bit"] == "not-reproduced-here" and w["nf4-best-dtype"] == "not-reproduced-here"
    assert w["all-linear-needed"] == "not-reproduced-here" and w["rank-unimportant"] == "not-reproduced-here"
    assert verdicts(fake("area", base_values("area")), line, studies())["prompt-needs-scale"] == "wrong"


def test_studies_at_one_untuned_rate_are_not_judged():
    """DESIGN: no comparison is judged without a validation-chosen, bracketed rate per arm; the
    placement and rank studies store one shared rate, so both are untestable-here (they said holds /
    approximately on it), and a selection at an edge of its grid is not judged either."""
    area, line = fake("area", base_values("area")), fake("line", base_values("line"))
    for st in (studies(tuned=False), studies(placement_gain=-0.05, rank_spread=0.5, tuned=False)):
        recs = {r["id"]: r for r in C.claims(area, line, st, scale_fake())}
        for cid in ("all-linear-needed", "rank-unimportant"):
            assert recs[cid]["verdict"] == "untestable-here"
            assert "one untuned rate" in recs[cid]["our_value"] and "rule: untestable-here" in recs[cid]["our_value"]
    edge = studies()
    edge["selection"]["placement"]["all"] = {"chosen": 1e-2, "bracketed": False}
    assert verdicts(area, line, edge)["all-linear-needed"] == "untestable-here"


@pytest.mark.parametrize("ratio,verdict", [(3.83, "holds"), (3.5, "approximately"), (3.0, "wrong"), (4.1, "holds")])
def test_8bit_state_about_4x_can_hold(ratio, verdict):
    """"about 4×": within 5 % of 4 holds, within 20 % approximately (rules.about_verdict); blockwise
    8-bit state reaches at most 8 / (2 + 8/256) = 3.94×, inside the band, so the claim can hold (the old
    rule gave approximately for any ratio in [3, 4.2], wrong outside: holds was unreachable)."""
    st = studies()
    o = st["recipe"]["optimisers"]
    o["full/AdamW8bit"]["state_bytes"] = o["full/AdamW"]["state_bytes"] / ratio
    rec = {r["id"]: r for r in C.claims(fake("area", base_values("area")), fake("line", base_values("line")), st,
                                        scale_fake())}["8bit-state"]
    assert rec["verdict"] == verdict and "Rule: the measured ratio within 5% of 4" in rec["our_value"]
    assert abs(C.EIGHT_BIT_CEILING - 3.938) < 1e-3


def test_checkpointing_states_its_rule():
    rec = {r["id"]: r for r in C.claims(fake("area", base_values("area")), fake("line", base_values("line")),
                                        studies(), scale_fake(), gpu=None)}["checkpointing-trade"]
    assert "rule: with checkpointing, fewer bytes saved for the backward and more seconds per step" in rec["our_value"]


def five(task, **shift):
    """``base_values`` over five seeds (the protocol's count for a final comparison)."""
    noise = np.array([0.0, 0.004, -0.003, 0.002, -0.001])
    v = {m: list((0.6 if task == "area" else 3.0) + noise) for m in METHODS}
    for m, d in shift.items():
        v[m.replace("_", "-")] = list(np.array(v[m.replace("_", "-")]) + d + np.array([0.0, 1, -1, 1, -1]) * 1e-3)
    return fake(task, v)


def test_matches_need_a_margin_and_five_seeds():
    """Ties read as matches only within ±0.01 nats/token, and "holds" only on 5 seeds."""
    area = fake("area", base_values("area", prompt=-0.2))
    st = studies()
    v = lambda line: verdicts(area, line, st)  # noqa: E731
    assert v(five("line"))["lora-vs-full-generation"] == "holds"              # inside ±0.01, 5 seeds
    assert v(five("line", lora_all=-0.05))["lora-vs-full-generation"] == "holds"  # LoRA resolved better
    assert v(fake("line", base_values("line")))["lora-vs-full-generation"] == "approximately"  # 3 seeds
    assert v(five("line", lora_all=0.05))["lora-vs-full-generation"] == "not-reproduced-here"
    wide = five("line", lora_all=0.0)
    for r in wide["runs"]:
        if r["method"] == "lora-all":
            r["test"]["loss"] += 0.05 * (-1) ** r["seed"]                    # a tie ±0.05 wide
    assert v(wide)["lora-vs-full-generation"] == "approximately"
    qv_best = five("line", lora_qv=0.05)  # LoRA (q, v) resolved worse than full FT on test ...
    qv_best["selection"]["lora-qv"]["scores"] = [0.2]  # ... but the better LoRA arm on validation: it is judged
    assert C.best_lora(qv_best) == "lora-qv"
    assert v(qv_best)["lora-vs-full-generation"] == "not-reproduced-here"
    assert v(five("line"))["recipe-matches-ours"] == "holds"
    assert v(fake("line", base_values("line")))["recipe-matches-ours"] == "approximately"
    assert v(five("line", qlora_recipe=0.05))["recipe-matches-ours"] == "wrong"
    assert v(wide)["qlora-matches-16bit"] == "approximately"
    rec = {r["id"]: r for r in C.claims(area, five("line"), st, scale_fake())}
    assert "chapter 08 (encoder" in rec["ia3-vs-lora"]["our_value"]   # chapter 08 pooled, not left out
    assert "n = 3 seeds" in {r["id"]: r for r in C.claims(area, fake("line", base_values("line")), st,
                                                           scale_fake())}["recipe-matches-ours"]["our_value"]


def test_the_gpu_record_joins_the_checkpointing_and_paging_rules():
    area = fake("area", base_values("area", prompt=-0.2))
    line = fake("line", base_values("line"))
    run = {"paged_state_tensors": 0, "state_tensors": 112}
    gpu = {"device": "GPU-X", "runs": {"plain": run, "checkpointing": run},
           "checkpointing_over_plain": {"peak_bytes": 0.8, "seconds_per_step": 1.5}}
    recs = {r["id"]: r for r in C.claims(area, line, studies(), scale_fake(), gpu=gpu)}
    assert recs["checkpointing-trade"]["verdict"] == "holds" and "GPU-X" in recs["checkpointing-trade"]["our_value"]
    assert "paged 0 of 112" in recs["paged-optimisers"]["our_value"]
    gpu["checkpointing_over_plain"]["peak_bytes"] = 1.1          # no memory saved on the GPU
    assert verdicts_gpu(area, line, gpu)["checkpointing-trade"] == "approximately"
    assert verdicts_gpu(area, line, None)["checkpointing-trade"] == "holds"   # no GPU record: the CPU alone


def verdicts_gpu(area, line, gpu):
    return {r["id"]: r["verdict"] for r in C.claims(area, line, studies(), scale_fake(), gpu=gpu)}


def test_prefix_vs_full_generation_follows_the_first_line_task():
    """Judged on the generation task only (the area task cannot move it); the same verdict as
    chapter 04's record of the sentence."""
    from pedagogy_lib.book.ch04 import claims as C4

    area = fake("area", base_values("area", prefix=-0.3))
    tie = fake("line", base_values("line"))
    worse = fake("line", base_values("line", prefix=0.2))      # +0.2 nats/token: full FT clearly better
    better = fake("line", base_values("line", prefix=-0.2))
    v = {k: verdicts(area, line, studies())["prefix-vs-full-generation"] for k, line in
         (("tie", tie), ("worse", worse), ("better", better))}
    assert v == {"tie": "approximately", "worse": "not-reproduced-here", "better": "approximately"}  # a tie is never an order;
    # prefix ahead on 3 seeds is capped (rules.few_seeds); on five seeds it holds
    assert verdicts(area, five("line", prefix=-0.2), studies())["prefix-vs-full-generation"] == "holds"
    behind = fake("line", base_values("line", prefix=0.002))   # +0.002 nats/token, noise ±0.004: a tie behind
    assert verdicts(area, behind, studies())["prefix-vs-full-generation"] == "approximately"
    worse["selection"]["full"]["bracketed"] = False
    assert verdicts(area, worse, studies())["prefix-vs-full-generation"] == "untestable-here"
    ctx = C4.context()
    for line in (tie, fake("line", base_values("line", prefix=0.2))):
        ctx.line = line
        rec4 = {r["id"]: r for r in C4.CLAIMS.judge(ctx)}["ch04-e2e"]
        rec10 = {r["id"]: r for r in C.claims(area, line, studies(), scale_fake())}["prefix-vs-full-generation"]
        assert rec4["sentence"] == rec10["sentence"] == "prefix-e2e" and rec4["verdict"] == rec10["verdict"]


def test_prefix_e2e_publishes_the_version_chapter_04_pins():
    """One sentence, one published value: the ACL version's E2E BLEU (paper-numbers.md), as chapter
    04's LI_LIANG_E2E holds it, not arXiv v1's 69.7 vs 68.2."""
    from pedagogy_lib.book.ch04.claims import LI_LIANG_E2E

    claim = next(c for c in C.CLAIMS.items if c.id == "prefix-vs-full-generation")
    ft, prefix = LI_LIANG_E2E["FT"], LI_LIANG_E2E["Prefix (0.1%)"]
    assert claim.published == f"E2E BLEU {prefix} vs {ft} (GPT-2 M)"
    assert "ACL" in claim.source


def test_guide_row_names_the_best_and_its_ties():
    area = fake("area", base_values("area", prompt=-0.2, full=0.1))
    line = fake("line", base_values("line", lora_all=-0.2))
    g = C.guide_row(area, line)
    cls, gen = g.values()
    assert cls["best"] == "full" and cls["ties_with_best"] == []
    assert gen["best"] == "lora-all" and "prompt" not in gen["ties_with_best"]
    area = fake("area", base_values("area"))
    assert "ia3" in C.guide_row(area, line)["classification (area, LM-head verbaliser)"]["ties_with_best"]
    area["selection"]["ia3"]["bracketed"] = False                   # a rate at the grid's edge: left out
    cls = C.guide_row(area, line)["classification (area, LM-head verbaliser)"]
    assert "ia3" not in cls["ties_with_best"] and cls["unbracketed"] == ["ia3"]


def test_chosen_runs_refuses_missing_seeds():
    res = fake("area", base_values("area"))
    res["runs"] = [r for r in res["runs"] if not (r["method"] == "ia3" and r["seed"] == 2)]
    with pytest.raises(ValueError, match="seeds"):
        ch10.chosen_runs(res, "ia3")


def test_stored_results_are_complete_and_judged_only_when_bracketed():
    area, line, vd = ch10.load("area"), ch10.load("line"), ch10.load_vader()
    for res in (area, line):
        assert set(ch10.methods(res)) == set(METHODS)
        for m in METHODS:
            assert len(ch10.chosen_runs(res, m)) == len(SEEDS) == 5
    assert all(r["n"] == len(SEEDS) for r in ch10.vader_rows(vd))
    rec = {r["id"]: r for r in C.claims(area, line, ch10.load_studies())}
    scale = ch10.load_scale()
    assert scale["model"] == "stdlib-4m" and {"full", "prompt"} <= set(ch10.methods(scale))
    assert all(len(ch10.chosen_runs(scale, m)) == len(SEEDS) for m in ("full", "prompt"))
    if area["selection"]["ia3"]["bracketed"] is False:
        assert "grid's edge): chapter 10 area" in rec["ia3-vs-lora"]["our_value"]


def test_vader_prompts_use_the_area_format():
    from pedagogy_lib import decoder_io as IO
    from pedagogy_lib.book.ch10 import tasks

    _, _, tok, _ = IO.read_checkpoint(IO.checkpoint_dir())
    d = tasks.prepare_vader(tok, n_train=50)
    assert d["train"][0].shape[0] == 50 and set(d["test_labels"]) == {0, 1}
    assert tok.decode(d["test_prompts"][0][1:]).startswith("Word: ")
    assert d["verbaliser"][0] != d["verbaliser"][1]
