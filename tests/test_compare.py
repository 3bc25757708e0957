"""Chapter 08's harness on a tiny budget (the same code path `make compare` runs), and the ledger."""
import dataclasses
import json

import pytest

from pedagogy_lib import runner
from pedagogy_lib.book import claims
from pedagogy_lib.book.ch08 import experiment as compare
from pedagogy_lib.book.ch08 import table as T

TINY = compare.Budget(n_train=32, n_eval=32, epochs=1, batch_size=16, seeds=(0,), full_grid=False, latency_rounds=2)


@pytest.fixture(scope="module")
def tiny_results():
    return compare.compare(None, TINY, progress=False, jobs=2)  # the pool path make compare takes


def test_numbers_do_not_depend_on_the_number_of_workers(tiny_results):
    alone = compare.compare(["probe", "lora_qv"], TINY, progress=False, jobs=1)
    for name, r in alone["methods"].items():
        p = tiny_results["methods"][name]
        assert (r["test_acc"], r["val_by_lr"], r["memory"], r["trainable"]) == \
               (p["test_acc"], p["val_by_lr"], p["memory"], p["trainable"]), name


def test_prompt_starts_from_whole_word_embeddings():
    import numpy as np
    from pedagogy_lib.prompt import vocab_candidates

    bert = runner.inference_net(compare.ARMS["prompt"])
    table = bert.embeddings.word_embeddings.weight.detach().numpy()
    vocab = runner.fresh_minilm().tokenizer.tok.get_vocab()
    allowed = table[vocab_candidates(vocab)]
    P = bert.embeddings.prompt.weight.detach().numpy()
    # every prompt row is one of the candidate rows ([unused…] and sub-word ids excluded)
    assert all(np.any(np.all(allowed == row, axis=1)) for row in P)


def test_every_method_runs_through_the_shared_protocol(tiny_results):
    res = tiny_results
    assert set(res["methods"]) == set(compare.ARMS)
    n = res["n_model"]
    for name, r in res["methods"].items():
        assert 0.0 <= r["mean"] <= 1.0 and len(r["test_acc"]) == 1, name
        assert r["lr"] == compare.ARMS[name].grid[0]
        assert r["trainable"] >= 0 and abs(r["pct"] - 100 * r["trainable"] / n) < 1e-9
        assert r["memory"]["total"] > r["memory"]["weights"] > 0
        assert r["latency_ratio"] > 0
    m = res["methods"]
    assert m["probe"]["trainable"] == 0 and m["full"]["trainable"] == n
    # what a method trains is what it costs: full FT holds far more optimiser state than LoRA
    assert m["full"]["memory"]["adam"] > 100 * m["lora_qv"]["memory"]["adam"]
    assert m["lora_qv"]["trainable"] == 6 * 2 * 8 * (384 + 384)
    assert m["prompt"]["trainable"] == 10 * 384 and m["ptuning_v2"]["trainable"] == 6 * 2 * 10 * 384
    # 4-bit weights: QLoRA stores its frozen base in far fewer bytes than LoRA's fp32 base
    assert m["qlora"]["memory"]["weights"] < 0.6 * m["lora_qv"]["memory"]["weights"]


def test_results_round_trip_and_bad_files(tiny_results, tmp_path):
    path = compare.save(tiny_results, tmp_path / "r.json")
    assert compare.load(path)["methods"].keys() == tiny_results["methods"].keys()
    with pytest.raises(FileNotFoundError, match="make compare"):
        compare.load(tmp_path / "missing.json")
    (tmp_path / "foreign.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="not a compare results file"):
        compare.load(tmp_path / "foreign.json")


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown method"):
        compare.check_arms(["lora", "sorcery"])
    with pytest.raises(ValueError, match="learning rate"):
        runner.run("probe", None, TINY, 0, -1.0)
    with pytest.raises(ValueError, match="invalid budget"):
        compare.Budget(n_train=1)
    with pytest.raises(ValueError, match="jobs"):
        compare.compare(["probe"], TINY, progress=False, jobs=0)


def test_arms_derived_from_the_registry_are_the_stored_ones():
    """ARMS comes from the records' ``compared`` fields; it must be the 15 arms the stored
    comparison ran (DoRA's added with ``--append``): same labels in the chapter's order, same notes, each grid the start of
    the stored (possibly extended) grid, same trainable count."""
    from pedagogy_lib import counting as C
    from pedagogy_lib.registry import compared_arms

    assert compare.ARMS == compared_arms()
    assert list(compare.ARMS) == ["probe", "full", "lora_qv", "lora_all", "dora", "houlsby", "pfeiffer", "parallel",
                                  "prefix", "prompt", "deep_prompt", "ptuning_v2", "bitfit", "ia3", "qlora"]
    stored, shape = compare.load()["methods"], C.minilm_shape()
    for label, arm in compare.ARMS.items():
        r = stored[label]
        assert arm.note == r["note"] and list(arm.grid) == r["lr_grid"][: len(arm.grid)], label
        if label != "prefix":  # prefix trains through its MLP; the count is what ships (folded)
            assert arm.params(shape) == r["trainable"], label
    assert compare.ARMS["lora_all"].opts == {"targets": "all-linear"}


def test_committed_results_cover_every_method_on_the_protocol():
    from pedagogy_lib.registry import METHODS

    res = compare.load()
    assert set(res["methods"]) == set(compare.ARMS)
    # every registry method, IA³ and DoRA included, except the one record with ``compared=()``:
    # chapter 01's random subspace (a measurement, not a method to compare)
    assert {n for n, m in METHODS.items() if not m.compared} == {"subspace"}
    assert {a.method for a in compare.ARMS.values()} == set(METHODS) - {"subspace"}
    b = res["budget"]
    assert len(b["seeds"]) >= 5 and b["select_seeds"] >= 2 and b["n_eval"] is None and b["n_test"] == 1322
    for name, r in res["methods"].items():
        assert r["seeds"] == b["seeds"] and len(r["test_acc"]) == len(b["seeds"]), name
        assert r["lr"] in r["lr_grid"] and len(r["lr_grid"]) >= 3, name
        # the record says whether the chosen rate is bracketed, and it agrees with the grid
        inner = r["lr_grid"][0] < r["lr"] < r["lr_grid"][-1]
        assert r["bracketed"] == inner and (r["edge"] is None) == inner, name


def test_ledger_records_are_valid_and_reproducible():
    first = claims.ledger()
    assert len({r["id"] for r in first}) == len(first)
    for rec in first:
        claims.check_record(rec)
    claims._ledger.cache_clear()
    assert claims.ledger() == first  # every value recomputes to the same string
    counts = claims.verdict_counts(first)
    assert sum(counts.values()) == len(first) and counts["wrong"] > 0


def test_ledger_covers_the_article_claims_listed_in_issue_8():
    text = " ".join((r["id"] + " " + r["claim"]).lower() for r in claims.ledger())
    for needles in [("0.39",), ("0.24",), ("0.08",), ("700",), ("48",), ("vicuna",), ("latency",),
                    ("prefix",), ("optimal",), ("learning rate", "lr "), ("rank",), ("double", "dq")]:
        assert any(n in text for n in needles), f"no ledger record mentions {needles}"


def test_check_record_rejects_bad_records():
    good = {"id": "x", "sentence": "x", "chapter": "ch08", "claim": "c", "verdict": "holds", "our_value": "1",
            "published_value": "1", "source": "s"}
    claims.check_record(good)
    with pytest.raises(ValueError, match="verdict"):
        claims.check_record({**good, "verdict": "probably"})
    with pytest.raises(ValueError, match="lacks fields"):
        claims.check_record({"id": "x"})
    with pytest.raises(ValueError, match="unknown chapter"):
        claims.chapter_claims("ch99")


def test_ch08_claim_rules_use_paired_intervals_and_flip(monkeypatch):
    import copy
    from pedagogy_lib.book import sentences as S
    from pedagogy_lib.book.ch08 import claims as V
    from pedagogy_lib.book.rules import VERDICTS

    # the "3–4 points" sentence pools chapter 05's evidence too (tests/test_ledger.py flips it):
    # here only this chapter's measurement decides
    monkeypatch.setattr(S, "ch05_prompt_gap", lambda sweep=None: None)
    res = compare.load()
    verdict = lambda r: {c["id"]: c["verdict"] for c in V.claims(r)}  # noqa: E731
    for c in V.claims(res):
        assert c["chapter"] == "08" and c["verdict"] in VERDICTS
    fake = copy.deepcopy(res)
    m = fake["methods"]
    base = [0.90, 0.91, 0.92]  # per seed; every method shares this shape, shifted (paired noise ≈ 0)

    def at(name, offset, wobble=0.001):
        m[name]["test_acc"] = [b + offset + wobble * (i % 2) for i, b in enumerate(base)]
        m[name]["seeds"] = [0, 1, 2]
        m[name]["mean"], m[name]["std"] = sum(m[name]["test_acc"]) / 3, 0.005

    for n in m:
        at(n, 0.0)
    at("lora_qv", -0.0005)                                   # 0.05 points: a tie
    assert verdict(fake)["ch08-lora-ties-full-ft"] == "holds"
    at("lora_qv", -0.02)                                     # 2 points, SE ≈ 0.16: a real gap
    assert verdict(fake)["ch08-lora-ties-full-ft"] == "wrong"
    at("prefix", -0.02 - 0.005)                              # half a point below LoRA: a small drop, but
    assert verdict(fake)["ch08-prefix-small-drop"] == "approximately"  # a generation claim never holds from VADER
    at("prefix", -0.02 - 0.04)                               # 4 points below LoRA: not small
    assert verdict(fake)["ch08-prefix-small-drop"] == "wrong"
    at("probe", -0.04)
    at("bitfit", -0.04)                                      # no better than the probe: the old rule
    assert verdict(fake)["ch08-bitfit-baseline"] == "wrong"  # ("within 3 points of full FT") nearly passed it
    at("bitfit", -0.035)                                     # above the probe, an eighth of its gap closed
    assert verdict(fake)["ch08-bitfit-baseline"] == "approximately"
    at("bitfit", -0.01)                                      # 3 of the probe's 4 points recovered
    assert verdict(fake)["ch08-bitfit-baseline"] == "holds"
    at("prompt", -0.035)                                     # 3.5 points below full FT
    assert verdict(fake)["ch08-prompt-3-4-points"] == "approximately"  # never holds from this task
    at("prompt", -0.01)
    assert verdict(fake)["ch08-prompt-3-4-points"] == "not-reproduced-here"
    for n in m:                                              # every PEFT method 3.5 points below
        if n not in ("full", "probe"):
            at(n, -0.035)
    assert verdict(fake)["ch08-small-model-gaps"] == "approximately"  # a regime claim: never holds from this task
    before = verdict(fake)                                   # pairs are matched by seed, not by position
    for n in ("prompt", "full"):
        m[n]["seeds"], m[n]["test_acc"] = m[n]["seeds"][::-1], m[n]["test_acc"][::-1]
    assert verdict(fake) == before
    m["prompt"]["bracketed"] = False                         # a rate at the grid's edge: no verdict
    assert verdict(fake)["ch08-prompt-3-4-points"] == "untestable-here"
    m["lora_qv"]["latency_ratio"] = 1.5
    assert verdict(fake)["ch08-merged-lora-latency"] == "wrong"


def test_append_adds_arms_in_arms_order_and_keeps_the_others(monkeypatch, tmp_path):
    """``--append``: the stored arms stay as stored, the new one lands in ``ARMS`` order with its
    runs counted, and a run on another budget is refused before it trains."""
    stored = compare.load()
    some = {n: stored["methods"][n] for n in ("probe", "full", "houlsby")}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(stored | {"methods": some, "n_runs": 30, "cpu_s_runs": 9.0}))
    new = {"budget": stored["budget"], "methods": {"lora_qv": stored["methods"]["lora_qv"] | {"cpu_s": 2.0}}, "n_runs": 8,
           "cpu_s_runs": 2.0, "wall_s": 5.0, "versions": {}, "reused_runs": 0, "jobs": 1, "threads": 1}
    monkeypatch.setattr(compare, "compare", lambda names, budget, jobs=1, log=None: new)
    res = compare.append(["lora_qv"], path=path)
    assert list(res["methods"]) == ["probe", "full", "lora_qv", "houlsby"]
    assert all(res["methods"][n] == some[n] for n in some)
    assert res["n_runs"] == 38 and res["cpu_s_runs"] == 11.0 and res["appended"]["lora_qv"]["n_runs"] == 8
    assert T.step_time(res, "lora_qv") is None and T.step_time(res, "full") == some["full"]["sec_per_epoch"]
    assert "n/a*" in T.cost_table(res)
    ran = []
    monkeypatch.setattr(compare, "compare", lambda *a, **k: ran.append(1))
    with pytest.raises(ValueError, match="budget"):
        compare.append(["lora_all"], compare.CI, path=path)
    with pytest.raises(ValueError, match="stored already"):
        compare.append(["full"], path=path)
    for nothing in (None, []):
        with pytest.raises(ValueError, match="name the arms"):
            compare.append(nothing, path=path)
    with pytest.raises(ValueError, match="unknown"):
        compare.append(["sorcery"], path=path)
    assert not ran  # every refusal comes before anything trains


@pytest.mark.parametrize("field", [dict(head_lr=1e-3), dict(resample=True), dict(schedule="constant")])
def test_append_refuses_a_budget_that_differs_in_a_field_the_stored_file_predates(field, monkeypatch, tmp_path):
    """The stored file lacks head_lr, resample and schedule (it ran them at Budget's defaults):
    an --append on another value of one of them would pair runs of two budgets."""
    stored = compare.load()
    path = tmp_path / "c.json"
    path.write_text(json.dumps(stored | {"methods": {"probe": stored["methods"]["probe"]}}))
    monkeypatch.setattr(compare, "compare", lambda *a, **k: pytest.fail("trained before the budget check"))
    with pytest.raises(ValueError, match="budget"):
        compare.append(["full"], dataclasses.replace(compare.FULL, **field), path=path)
    assert set(compare._budget_record(compare.FULL)) >= {"head_lr", "resample", "schedule"}
