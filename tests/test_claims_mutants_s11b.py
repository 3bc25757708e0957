"""More behaviours of the claims layer no other test pinned (mutation testing, s11-d, second pass).

Each test kills at least one mutant of ``book.rules``, ``book.sentences``, ``book.claims`` or a
chapter's claims module that survived every existing test (tests/test_ledger.py,
tests/test_claims_mutants_s11.py and the chapter's own test file). What is asserted is what the
rule's docstring, its record's rule text or DESIGN's evidence protocol states.
"""
from __future__ import annotations

import pytest

from pedagogy_lib.book import claims as ledger
from pedagogy_lib.book import rules


# ----------------------------------------------------------------------------- rules
def test_worst_verdict_puts_untestable_below_wrong():
    """VERDICT_ORDER: … < wrong < untestable-here (no evidence at all is weaker than a refutation)."""
    assert rules.worst_verdict("wrong", "untestable-here") == "untestable-here"
    assert rules.worst_verdict("untestable-here", "holds", "wrong") == "untestable-here"


def test_unbracketed_refuses_a_rate_listed_twice_and_reads_rates_as_numbers():
    """"1e-3" and "0.001" are one rate: refused by name, not collapsed into a one-point grid.
    Rates may come as text (JSON keys) or numbers, and are ordered as numbers."""
    with pytest.raises(ValueError, match="twice"):
        rules.unbracketed({"a": {"1e-3": 0.9, "0.001": 0.8, "1e-2": 0.85}})
    assert rules.unbracketed({"a": {"1e-3": 0.8, 0.003: 0.9, "1e-2": 0.85}}) == {}
    assert rules.unbracketed({"a": {"1e-2": 0.8, 0.003: 0.85, "1e-3": 0.9}}) == {"a": "low"}


def test_a_claim_id_registered_twice_is_refused():
    c = rules.Claims("99")
    c.rule("x-1", "t", "p", "s")(lambda m: ("holds", "1"))
    c.rule("x-2", "t", "p", "s")(lambda m: ("wrong", "2"))
    for dup in ("x-1", "x-2"):
        with pytest.raises(ValueError, match="registered twice"):
            c.rule(dup, "t", "p", "s")
    assert [r["id"] for r in c.judge(None)] == ["x-1", "x-2"]   # in the order registered


def _d(lo: float, hi: float, n: int = 5, mean: float | None = None) -> dict:
    """A paired difference with the 95 % interval [lo, hi] and its tie flag (the interval holds 0)."""
    mean = (lo + hi) / 2 if mean is None else mean
    return {"mean": mean, "lo": lo, "hi": hi, "se": (hi - lo) / 5.5, "n": n, "tie": lo <= 0.0 <= hi}


def test_a_zero_margin_is_a_margin():
    """``margin must be >= 0``: 0 is allowed (an exact match only), below 0 is refused."""
    assert rules.within_verdict(_d(0.0, 0.0), 0.0) == "holds"
    assert rules.match_verdict(_d(0.0, 0.0), 0.0) == "holds"
    assert rules.within_verdict(_d(-0.1, 0.1), 0.0) == "approximately"


# ----------------------------------------------------------------------------- sentences
def _arm(kind: str, trainable: int, test: list[float]) -> dict:
    return {"kind": kind, "trainable": trainable, "val_by_lr": {"0.001": 0.80, "0.003": 0.85, "0.01": 0.82},
            "test_by_seed": test, "seeds": list(range(len(test)))}


def test_adapter_4x_ch03_compares_an_adapter_never_another_lora():
    """"the adapter nearest 4× LoRA's count": a second LoRA arm at exactly 4× is no adapter."""
    from pedagogy_lib.book import sentences as S

    base = [0.90, 0.91, 0.92, 0.93, 0.94]
    res = {"LoRA r=8 (q,v)": _arm("lora", 100, base), "LoRA r=32 (q,v)": _arm("lora", 400, base),
           "Pfeiffer m=64": _arm("pfeiffer", 300, [x - 0.03 + 0.001 * (i % 2) for i, x in enumerate(base)])}
    verdict, why, near4 = S.adapter_4x_ch03(res)
    assert near4 == "Pfeiffer m=64" and "3.0×" in why
    assert "LoRA − adapter = +3.0 points" in why and verdict == "wrong"   # LoRA ahead, no RoB-base row near 4× matches
    # nearest to 4× on either side: 3.5× (0.5 away) beats 4.6× (0.6 away)
    res = {"LoRA r=8 (q,v)": _arm("lora", 100, base), "Houlsby m=64": _arm("houlsby", 460, base),
           "Pfeiffer m=64": _arm("pfeiffer", 350, base)}
    assert S.adapter_4x_ch03(res)[2] == "Pfeiffer m=64"


# ----------------------------------------------------------------------------- the ledger (book.claims)
GOOD = {"id": "x", "sentence": "x", "chapter": "08", "claim": "c", "verdict": "holds", "our_value": "1",
        "published_value": "1", "source": "s"}


def test_check_record_refuses_a_non_dict_and_blank_fields_by_name():
    with pytest.raises(TypeError, match="must be a dict"):
        ledger.check_record(list(GOOD))
    for field in GOOD:   # each of the record's eight fields is required
        with pytest.raises(ValueError, match=rf"lacks fields \['{field}'\]"):
            ledger.check_record({k: v for k, v in GOOD.items() if k != field})
    for field in ("id", "sentence", "claim", "our_value", "source"):
        with pytest.raises(ValueError, match=f"field '{field}' is empty"):
            ledger.check_record({**GOOD, field: "  "})   # blank is empty


def test_verdict_counts_counts_the_records_given():
    recs = [GOOD, {**GOOD, "id": "y", "verdict": "wrong"}, {**GOOD, "id": "z", "verdict": "wrong"}]
    assert ledger.verdict_counts(recs) == {"holds": 1, "approximately": 0, "wrong": 2,
                                           "not-reproduced-here": 0, "untestable-here": 0}


@pytest.fixture
def fresh_ledger():
    ledger._ledger.cache_clear()
    yield
    ledger._ledger.cache_clear()


def test_the_ledger_keeps_the_first_record_of_an_id(fresh_ledger, monkeypatch):
    """"drops exact duplicates of an id … keeps its first record" (the chapter listed first in ORDER)."""
    first, second = {**GOOD, "chapter": "00"}, {**GOOD, "chapter": "01", "verdict": "wrong"}
    fake = {"ch00": [first], "ch01": [second, {**GOOD, "id": "y", "sentence": "y", "chapter": "01"}]}
    monkeypatch.setattr(ledger, "chapter_claims", lambda ch: fake.get(ch, []))
    assert [(r["id"], r["chapter"]) for r in ledger.ledger()] == [("x", "00"), ("y", "01")]


def test_a_chapter_without_a_claims_module_has_no_records(monkeypatch):
    """Only the chapter's own claims module may be missing; any other missing import is raised."""
    def missing(name):
        def imp(mod):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return imp

    monkeypatch.setattr(ledger.importlib, "import_module", missing("pedagogy_lib.book.ch01.claims"))
    assert ledger.chapter_claims("ch01") == []
    monkeypatch.setattr(ledger.importlib, "import_module", missing("some_dependency"))
    with pytest.raises(ModuleNotFoundError, match="some_dependency"):
        ledger.chapter_claims("ch01")


# ----------------------------------------------------------------------------- chapter 01
def _it(vs_bar: dict, vs_full: dict, bracketed=True) -> dict:
    """The part of ``intrinsic_summary`` that ``_decided_against`` reads: per d, the paired
    intervals (fractions) of subspace − the 90 % bar and subspace − full FT."""
    ds = sorted(vs_bar)
    return {"ds": ds, "bracketed": {d: bracketed for d in ds},
            "vs_bar": {d: _d(lo, hi) for d, (lo, hi) in vs_bar.items()},
            "vs_full": {d: _d(lo, hi) for d, (lo, hi) in vs_full.items()}}


def test_ch01_wrong_needs_evidence_at_small_d_and_reads_ties_as_ties():
    """"wrong: every d ≤ 1000 bracketed, clearly below the bar up to 500 and clearly more than a
    point below full FT up to 1000": no d ≤ 1000 at all is no evidence; an interval touching the
    bar (hi = 0) or exactly one point below full FT (hi = −0.01) is not "clearly below"; d = 500
    is inside "up to 500"."""
    from pedagogy_lib.book.ch01 import claims as V

    below, far = (-0.2, -0.1), (-0.3, -0.2)
    assert V._decided_against(_it({10: below, 100: below}, {10: far, 100: far}))
    assert not V._decided_against(_it({3000: below}, {3000: far}))                     # nothing at d ≤ 1000
    assert not V._decided_against(_it({10: below, 100: (-0.2, 0.0)}, {10: far, 100: far}))   # touches the bar
    assert not V._decided_against(_it({10: below, 100: below}, {10: far, 100: (-0.3, -0.01)}))  # −1 point exactly
    assert not V._decided_against(_it({10: below, 500: (-0.1, 0.01)}, {10: far, 500: far}))  # d = 500 is judged
    assert not V._decided_against(_it({10: below, 100: below}, {10: far, 100: far}, bracketed=False))


def _s01(n=10, more=9, rel=0.01, turn=1.0, e_k=0.6) -> dict:
    """``summary``'s numbers for n updated matrices, ``more`` of them more concentrated than W0."""
    return {"k": 8, "att_E_k": [e_k] * 4, "att_E_k_mp": [0.1] * 4, "att_k90": [100] * 4, "att_n": [384] * 4,
            "att_k90_mp": [190] * 4, "att_erank": [200.0] * 4, "att_erank_mp": [300.0] * 4,
            "E_k_dW": [0.6] * more + [0.1] * (n - more), "E_k_W0": [0.15] * n, "k90_dW": [50] * n, "k90_W0": [160] * n,
            "rel_norm": [rel] * n, "turn_deg": [turn] * n, "sim_ratio": [2.0] * n, "proj_ratio_W0": [0.1] * n}


def test_ch01_spectrum_update_and_slice_edges_belong_to_their_side():
    """Stated edges: top-k energy ≥ 0.5 holds (≥ 0.3 approximately); ΔW more concentrated in ≥ 90 %
    of the matrices holds, in most (> half) approximately; ‖ΔW‖ ≤ 5 % of ‖W0‖ is small; a median
    turn ≥ 5° is a rotation."""
    from pedagogy_lib.book.ch01 import claims as V

    assert V._spectra_decay(_s01(e_k=0.5))[0] == "holds" and V._spectra_decay(_s01(e_k=0.3))[0] == "approximately"
    assert V._update_concentrated(_s01(more=9))[0] == "holds"
    assert V._update_concentrated(_s01(more=6))[0] == "approximately"
    assert V._update_concentrated(_s01(more=5))[0] == "wrong"                 # half is not most
    assert V._small_slice(_s01(rel=0.05, turn=5.0))[0] == "holds"
    assert V._small_slice(_s01(rel=0.05))[0] == "approximately"
    assert V._small_slice(_s01(more=5, turn=5.0))[0] == "wrong"
    tied = {**_s01(), "E_k_dW": [0.15] * 10}                                  # as concentrated as W0 is not more
    assert V._update_concentrated(tied)[0] == "wrong"


def test_ch01_d90_at_500_is_approximately():
    """"approximately: 90 % of full FT cleared at some d ≤ 500": a grid holding d = 500 exactly."""
    from test_lowrank import _fake_ch01, _fake_sweep

    from pedagogy_lib.book.ch01 import claims as V

    inp = _fake_ch01()
    inp["intrinsic"] = _fake_sweep([0.5, 0.85, 0.87, 0.885], ds=(10, 500, 1000, 3000))
    assert {r["id"]: r["verdict"] for r in V.claims(inp)}["ch01-intrinsic-dim"] == "approximately"


def test_ch01_model_size_reads_no_growth_in_each_family(monkeypatch):
    """"does not grow": equal d90 from base to large is no growth; every family → holds, some → approximately."""
    from pedagogy_lib.book.ch01 import claims as V

    flat = {"BERT-base": (900, 0, 0, 0), "BERT-large": (900, 0, 0, 0),
            "RoBERTa-base": (800, 0, 0, 0), "RoBERTa-large": (800, 0, 0, 0)}
    monkeypatch.setattr(V, "PUBLISHED_D90", flat)
    assert V._model_size(None)[0] == "holds"
    monkeypatch.setattr(V, "PUBLISHED_D90", {**flat, "RoBERTa-large": (801, 0, 0, 0)})
    assert V._model_size(None)[0] == "approximately"


# ----------------------------------------------------------------------------- chapter 04
def test_ch04_a_drop_needs_an_interval_clear_of_zero(monkeypatch):
    """"a slight drop": MLP − direct with its 95 % interval above 0; [0, 0.6] touches 0, a tie
    (DESIGN), so with the stability votes even the claim is not-reproduced-here, not approximately."""
    import copy

    from pedagogy_lib.book.ch04 import claims as V

    c = copy.deepcopy(V.context())
    even = {"seed_sd": 0.01, "curve_sd": 0.04, "rough": 0.07, "collapsed": 0, "n_runs": 27}
    c.s = {**c.s, "stability": {"direct": even, "mlp": dict(even)}}
    for lo, verdict in ((0.0, rules.NOT_HERE), (0.01, "approximately")):
        monkeypatch.setattr(V, "paired_points", lambda a, b, lo=lo: _d(lo, 0.6))
        assert V._direct_unstable(c)[0] == verdict


def test_ch04_count_needs_both_the_identical_outputs_and_the_count():
    from types import SimpleNamespace

    from pedagogy_lib.book.ch04 import claims as V

    fold = {"identical": True, "trainable_after": 960, "m_d_L_2": 960, "trainable_before": 5000}
    assert V._count(SimpleNamespace(fold=fold))[0] == "holds"
    assert V._count(SimpleNamespace(fold={**fold, "trainable_after": 961}))[0] == "wrong"
    assert V._count(SimpleNamespace(fold={**fold, "identical": False}))[0] == "wrong"


# ----------------------------------------------------------------------------- chapter 07
def _back(**kw) -> dict:
    """``backward_check``'s record of one step through a 6-layer 4-bit model."""
    return {"n_grads": 4, "layers": 6, "grad_rel_diff": 1e-6, "base_has_grad": False, "max_alive": 1,
            "forward_gemm": 6, "dequantized": 12, "dtype": "float32", "largest_bytes": 4096,
            "base_fp_bytes": 6 * 4096, **kw}


def test_ch07_grad_flow_and_fp16_base_rules_at_their_edges():
    """grad-flow: gradients equal (< 1e-4) *and* none reaches the 4-bit weights; no-fp16-base: at
    most one decoded layer alive holds, all alive wrong, in between approximately."""
    from types import SimpleNamespace

    from pedagogy_lib.book.ch07 import claims as V

    ns = lambda **kw: SimpleNamespace(back=_back(**kw))  # noqa: E731
    assert V._grad_flow(ns())[0] == "holds"
    assert V._grad_flow(ns(base_has_grad=True))[0] == "wrong"
    assert V._grad_flow(ns(grad_rel_diff=1e-4))[0] == "wrong"
    assert V._no_fp16_base(ns(max_alive=1))[0] == "holds"
    assert V._no_fp16_base(ns(max_alive=2))[0] == "approximately"
    assert V._no_fp16_base(ns(max_alive=5))[0] == "approximately"
    assert V._no_fp16_base(ns(max_alive=6))[0] == "wrong"


def test_ch07_700_50_takes_the_worse_of_its_two_figures():
    """"~700 GB; ~50 GB": both are "about" figures (rules.about_verdict); the sentence takes the worse."""
    from types import SimpleNamespace

    from pedagogy_lib.book.ch07 import claims as V

    assert V._700_50(SimpleNamespace(m65={"full_16bit": 700.0, "qlora_total": 50.0}))[0] == "holds"
    assert V._700_50(SimpleNamespace(m65={"full_16bit": 700.0, "qlora_total": 80.0}))[0] == "wrong"
    assert V._700_50(SimpleNamespace(m65={"full_16bit": 800.0, "qlora_total": 50.0}))[0] == "approximately"


def test_ch07_paged_a_live_gpu_run_outranks_the_stored_one():
    """The stored GPU run stands in for a CPU run of PagedAdamW, never for a CUDA run passed in."""
    from types import SimpleNamespace

    from pedagogy_lib.book.ch07 import claims as V, experiment as E7

    gpu = {"device": "GPU-X", "memory": {"paged": {"PagedAdamW": {"paged_state_tensors": 3, "state_tensors": 9,
                                                                    "paged_MB": 1.0, "warnings": []}}}}
    live = {"device": "cuda", "name": "live", "warnings": [], "state_tensors": 4, "paged_state_tensors": 0}
    c = SimpleNamespace(paging=E7.paging_scenario(steps=50), paged=live, gpu=gpu)
    v, txt = V._paged(c)
    assert v == "untestable-here" and "0 of 4" in txt
    c.paged = live | {"device": "cpu"}
    assert V._paged(c)[0] == "approximately"


# ----------------------------------------------------------------------------- chapter 10
@pytest.mark.parametrize("lo,hi,verdict", [(0.001, 0.05, "holds"), (0.0, 0.05, "approximately"),
                                           (-0.02, 0.05, "approximately"), (-0.01, 0.01, "holds"),
                                           (-0.05, -0.02, rules.NOT_HERE)])
def test_ch10_lora_matches_or_beats_full_needs_an_interval_above_zero(lo, hi, verdict, monkeypatch):
    """"matches or beats": LoRA resolved better (interval above 0; [0, x] touches 0, a tie) or the
    interval inside ±0.01 nats/token → holds; a wider tie, whichever way its mean leans → approximately."""
    from pedagogy_lib.book.ch10 import claims as C

    c = C.context()
    monkeypatch.setattr(C.ch10, "paired_gain", lambda line, a, b: _d(lo, hi))
    assert C._lora_full(c)[0] == verdict


@pytest.mark.parametrize("lo,hi,verdict", [(0.01, 0.03, "holds"), (-0.01, 0.03, rules.NOT_HERE),
                                           (-0.03, -0.01, rules.NOT_HERE)])
def test_ch10_all_linear_needed_reads_a_tie_as_no_order(lo, hi, verdict, monkeypatch):
    """Once both placement arms are tuned: all-linear resolved better → holds; a tie leaning its way
    is no order (DESIGN) → not-reproduced-here, like q,v ahead."""
    import copy

    from pedagogy_lib.book.ch10 import claims as C

    c = C.context()
    c.st = copy.deepcopy(c.st)
    c.st.setdefault("selection", {})["placement"] = {"qv": {"bracketed": True}, "all": {"bracketed": True}}
    monkeypatch.setattr(C.ch10, "placement_gain", lambda st: _d(lo, hi))
    assert C._placement(c)[0] == verdict


def test_ch10_rank_spread_counts_r_8(monkeypatch):
    """"r hardly matters" is read over r ∈ {8…64}, r = 8 included: a loss 0.1 higher at r = 8
    alone is a spread of 0.1 (not-reproduced-here), not 0.01."""
    import copy

    from pedagogy_lib.book.ch10 import claims as C

    c = C.context()
    curve = {1: 3.0, 8: 2.50, 16: 2.41, 32: 2.40, 64: 2.40}
    c.st = copy.deepcopy(c.st)
    c.st.setdefault("selection", {})["rank"] = {f"r{r}": {"bracketed": True} for r in curve}
    monkeypatch.setattr(C.ch10, "rank_curve", lambda st: curve)
    assert C._rank(c)[0] == rules.NOT_HERE
    monkeypatch.setattr(C.ch10, "rank_curve", lambda st: {**curve, 8: 2.41})
    assert C._rank(c)[0] in ("holds", "approximately")
