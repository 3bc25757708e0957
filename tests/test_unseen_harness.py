"""The harness on inputs nobody had tried (session 9, V2): the runner's learning-rate protocol on
edge grids and diverged runs, the budget's fields, the decoder protocol's up-front checks, the
registry's records, results files, the verdict rules at NaN and at their edges, ``show_source``
on wrapped objects, and the entry points' arguments. Nothing here trains: the runs are synthetic
(as in tests/test_protocol.py) and every refusal is checked to come before any run or write."""
import functools
import json
import math

import pytest

from pedagogy_lib import benchmarks as BM
from pedagogy_lib import registry as RG
from pedagogy_lib import results as R
from pedagogy_lib import runner, show, stats
from pedagogy_lib.book import rules
from pedagogy_lib.registry import Arm, Method
from pedagogy_lib.runner import Budget

B = Budget(n_train=8, n_eval=8, seeds=(0, 1, 2), select_seeds=2, max_extensions=2)
NAN = float("nan")


def synthetic(val, calls):
    """A run function whose validation accuracy is ``val(lr, seed)``; records every call."""
    def run_fn(arm, task, budget, seed, lr, data=None, measure=False):
        calls.append((lr, seed))
        return {"method": arm.label, "lr": lr, "seed": seed, "val_acc": val(lr, seed), "test_acc": 0.5,
                "trainable": 1, "sec_per_epoch": 0.0, "cpu_s": 0.0, "losses": []}
    return run_fn


# ----------------------------------------------------------------------------- the rate protocol
@pytest.mark.parametrize("arm, budget", [
    (Arm("one", "probe", lrs=(1e-2,)), B),                        # one rate cannot be extended
    ("probe", Budget(n_train=8, n_eval=8, full_grid=False, max_extensions=1)),  # nor a grid cut to one
])
def test_a_grid_that_cannot_be_extended_is_refused_before_any_run(arm, budget):
    calls = []
    with pytest.raises(ValueError, match=">= 2 positive finite rates"):
        runner.protocol([arm], None, budget, progress=False, run_fn=synthetic(lambda lr, s: 0.5, calls))
    assert calls == []


def test_one_rate_without_extensions_is_still_the_old_fixed_search():
    calls = []
    one = Budget(n_train=8, n_eval=8, seeds=(0, 1))
    sel = runner.protocol([Arm("one", "probe", lrs=(1e-2,))], None, one, progress=False,
                          run_fn=synthetic(lambda lr, s: 0.5, calls))["one"]["selection"]
    assert sel["chosen"] == 1e-2 and not sel["bracketed"] and len(calls) == 2


@pytest.mark.parametrize("lrs, err, match", [
    ((3e-3, 1e-2, 1e-2), ValueError, "repeat"), ((), ValueError, ">= 1"), ((1e-2, NAN), ValueError, "finite"),
    ((-1e-3, 1e-2), ValueError, "> 0"), ("1e-3", TypeError, "sequence"), ((True, 1e-2), ValueError, "finite"),
])
def test_an_arms_bad_grid_is_refused_when_the_arm_is_written(lrs, err, match):
    with pytest.raises(err, match=match):
        Arm("x", "probe", lrs=lrs)


def test_int_and_unsorted_rates_run_as_sorted_floats():
    calls = []
    out = runner.protocol([Arm("x", "probe", lrs=(1, 3e-1, 3e-2))], None, Budget(n_train=8, n_eval=8, seeds=(0,)),
                          progress=False, run_fn=synthetic(lambda lr, s: -abs(math.log10(lr / 0.3)), calls))["x"]
    assert [lr for lr, _ in calls] == [0.03, 0.3, 1.0] and all(isinstance(lr, float) for lr, _ in calls)
    assert out["selection"]["chosen"] == 0.3 and out["selection"]["bracketed"]


def test_a_diverged_rate_is_never_chosen_and_is_reported(tmp_path):
    # 3e-2 diverges (NaN validation): it scored "best" by nothing; 1e-2 wins, bracketed by it
    calls = []
    val = lambda lr, s: NAN if lr > 0.02 else 0.5 + lr  # noqa: E731
    found = runner.protocol(["probe"], None, B, progress=False, run_fn=synthetic(val, calls))["probe"]
    sel = found["selection"]
    assert sel["chosen"] == 1e-2 and sel["bracketed"] and sel["extensions"] == 0
    assert sel["diverged"] == [0.03] and sel["scores"][-1] is None and sel["scores"][:2] == [0.503, 0.51]
    assert [r["lr"] for r in found["runs"]] == [1e-2] * 3
    stored = R.selection(sel, ndigits=3)        # as a sweep stores it: JSON has no NaN, None it can hold
    assert stored["diverged"] == [0.03] and stored["val_by_lr"]["0.03"] is None
    R.save({"selection": stored}, tmp_path / "s.json")
    # a stored selection with a diverged rate is still read for its edge
    assert rules.unbracketed({"probe": stored["val_by_lr"]}) == {}


def test_diverged_at_the_top_of_a_rising_curve_still_brackets_and_all_diverged_is_an_error():
    sel = stats.select_lr(lambda lr: NAN if lr > 5e-3 else lr, [1e-3, 3e-3, 1e-2], max_extensions=1)
    assert sel["chosen"] == 3e-3 and sel["bracketed"] and sel["diverged"] == [1e-2]
    with pytest.raises(ValueError, match="every rate"):
        stats.select_lr(lambda lr: NAN, [1e-3, 3e-3], max_extensions=1)
    calls = []
    with pytest.raises(ValueError, match="every rate"):
        runner.protocol(["probe"], None, B, progress=False, run_fn=synthetic(lambda lr, s: NAN, calls))


def test_two_arms_with_one_label_are_refused_before_any_run():
    calls = []
    with pytest.raises(ValueError, match="share a label"):
        runner.protocol(["probe", Arm("probe", "lora")], None, B, progress=False,
                        run_fn=synthetic(lambda lr, s: 0.5, calls))
    assert calls == []


def test_paired_by_seed_names_seeds_of_two_kinds():
    with pytest.raises(TypeError, match="one kind"):
        stats.paired_by_seed({0: 0.5, "1": 0.6}, {0: 0.5, "1": 0.7})
    assert stats.paired_by_seed({1: 0.6, 0: 0.5}, {0: 0.4, 1: 0.5})["seeds"] == [0, 1]


def test_select_lr_refuses_a_repeated_rate_before_evaluating():
    seen = []
    with pytest.raises(ValueError, match="repeat"):
        stats.select_lr(lambda lr: seen.append(lr) or 0.5, [1e-3, 1e-3, 1e-2], 0)
    assert seen == []


def test_no_diverged_key_where_nothing_diverged():
    # stored selections (chapter 10's replay) must stay as they were: the key appears only when needed
    assert "diverged" not in stats.select_lr(lambda lr: -abs(math.log10(lr / 3e-3)), [1e-3, 3e-3, 1e-2], 1)


@pytest.mark.parametrize("kw", [dict(epochs=1.5), dict(seeds=(0.5, 1)), dict(seeds=(True, 0)), dict(seeds=(-1, 1)),
                                dict(seeds="01"), dict(max_extensions=0.5), dict(n_train=NAN), dict(n_eval=2.5),
                                dict(schedule="bogus"), dict(head_lr=-1.0), dict(head_lr=NAN),
                                dict(select_seeds=True), dict(full_grid="no")])
def test_budget_fields_of_the_wrong_kind_are_refused(kw):
    with pytest.raises((TypeError, ValueError), match="invalid budget"):
        Budget(**kw)


def test_budget_takes_any_sequence_of_distinct_int_seeds():
    import numpy as np

    assert Budget(seeds=np.arange(3)).seeds == (0, 1, 2) and Budget(seeds=[4, 2]).seeds == (4, 2)  # plain ints
    for seeds in ((), np.array([], int), (0, 0)):
        with pytest.raises(ValueError, match="invalid budget"):
            Budget(seeds=seeds)


@pytest.mark.parametrize("kw", [dict(seeds=(0.5, 1)), dict(seeds=(-1, 0)), dict(select_seeds=True)])
def test_a_decoder_task_with_seeds_of_the_wrong_kind_is_refused(kw):
    with pytest.raises((TypeError, ValueError)):
        runner.DecoderTask("t", (None, None), None, float, 1, 1, **kw)


def test_a_run_log_torn_by_an_interruption_resumes_and_a_foreign_one_is_refused(tmp_path, capsys):
    b, p = Budget(n_train=8, n_eval=8), tmp_path / "runs.jsonl"
    _, log = runner.run_log(p, b)
    log("probe", {"lr": 0.01, "seed": 0, "val_acc": 0.5})
    whole = p.read_text()
    p.write_text(whole + whole[:40])                      # killed while writing the second record
    done, log = runner.run_log(p, b)
    assert list(done) == [("probe", 0.01, 0)] and "unfinished write" in capsys.readouterr().err
    log("probe", {"lr": 0.03, "seed": 0, "val_acc": 0.6})
    assert p.read_text().startswith(whole) and len(p.read_text().splitlines()) == 2
    assert sorted(runner.run_log(p, b)[0]) == [("probe", 0.01, 0), ("probe", 0.03, 0)]
    for text in (whole[:40] + "\n" + whole, "[1, 2]\n", '{"label": "x"}\n'):
        p.write_text(text)
        with pytest.raises(ValueError, match="line 1"):
            runner.run_log(p, b)
        assert p.read_text() == text


def test_a_logged_run_is_reused_only_for_an_arm_with_the_same_method_and_options(tmp_path, capsys):
    b, p = Budget(n_train=8, n_eval=8), tmp_path / "runs.jsonl"
    r8, r4 = Arm("lora", "lora", {"r": 8}), Arm("lora", "lora", {"r": 4})   # one label, two settings
    _, log = runner.run_log(p, b, [r8])
    log("lora", {"lr": 0.01, "seed": 0, "val_acc": 0.5})
    assert json.loads(p.read_text())["arm"] == runner.arm_identity(r8)
    assert list(runner.run_log(p, b, [r8])[0]) == [("lora", 0.01, 0)]
    assert runner.run_log(p, b, [r8])[0][("lora", 0.01, 0)] == {"lr": 0.01, "seed": 0, "val_acc": 0.5}
    capsys.readouterr()
    assert runner.run_log(p, b, [r4])[0] == {} and "1 run(s) not reused" in capsys.readouterr().err
    assert list(runner.run_log(p, b)[0]) == [("lora", 0.01, 0)]          # no arms given: label, rate, seed
    p.write_text(json.dumps({"label": "lora", "budget": json.loads(p.read_text())["budget"],
                             "lr": 0.01, "seed": 0}) + "\n")              # logged before arms were stamped
    assert runner.run_log(p, b, [r8])[0] == {}


# ----------------------------------------------------------------------------- the decoder protocol
def _decoder_task(evaluated):
    def evaluate(model, split, generate=False):
        evaluated.append(split)
        return {"acc": 0.5}
    return runner.DecoderTask("t", (None, None), evaluate, lambda ev: ev["acc"], 1, 1, (0, 1, 2))


@pytest.mark.parametrize("arms, kw, match", [
    (["full", "qlora-recipe"], {}, "takes the rate 'lora-all' chooses"),   # its source arm is not run first
    (["qlora-recipe", "lora-all"], {}, "takes the rate 'lora-all' chooses"),
    (["full", "full"], {}, "listed twice"),
    (["full"], {"extensions": -1}, "extensions"),
    ([Arm("x", "full", lrs=(1e-3,), model="decoder")], {}, ">= 2"),
])
def test_decoder_protocol_refuses_before_any_run_or_evaluation(arms, kw, match):
    runs, evaluated = [], []
    with pytest.raises((TypeError, ValueError), match=match):
        runner.decoder_protocol(arms, _decoder_task(evaluated), run_fn=lambda *a: runs.append(a), **kw)
    assert runs == [] and evaluated == []


# ----------------------------------------------------------------------------- the registry
def _toy(**kw):
    base = dict(name="toy", trains="nothing", attach_torch=lambda mm, seed, m: None,
                attach_numpy=lambda mm, seed, m: None, count=lambda s, m: m, lrs=(1e-3, 1e-2), defaults={"m": 4})
    return Method(**base | kw)


def test_records_are_checked_when_written():
    with pytest.raises(ValueError, match="two registry records are named 'toy'"):
        RG._by_name([_toy(), _toy()])
    with pytest.raises(ValueError, match="attach_torch does not take its defaults"):
        _toy(attach_torch=lambda mm, seed, n: None)               # the default is 'm', the function takes 'n'
    with pytest.raises(ValueError, match="count does not take"):
        _toy(count=lambda s: 0)
    with pytest.raises(ValueError, match="decoder attach does not take"):
        _toy(decoder=RG.Decoder(lambda folder, seed: None, (1e-3, 1e-2), {"r": 4}))
    with pytest.raises(ValueError, match="method 'toy'.*finite rates > 0"):
        _toy(lrs=(0.0, 1e-2))
    with pytest.raises(ValueError, match="non-empty str"):
        _toy(name="")
    assert list(RG._by_name([_toy(), _toy(name="toy2")])) == ["toy", "toy2"]


def test_the_count_check_catches_a_record_whose_formula_disagrees(monkeypatch):
    """tests/test_registry.py's check, on a record that counts 1 parameter too many."""
    import test_registry as TR

    ia3 = RG.METHODS["ia3"]
    wrong = Method("ia3_off_by_one", ia3.trains, ia3.attach_torch, ia3.attach_numpy,
                   lambda s: ia3.count(s) + 1, ia3.lrs)
    monkeypatch.setitem(RG.METHODS, wrong.name, wrong)
    with pytest.raises(AssertionError):
        TR.test_count_formula_is_what_the_torch_twin_trains(wrong.name)
    monkeypatch.setitem(RG.METHODS, wrong.name, Method(wrong.name, ia3.trains, ia3.attach_torch, None, ia3.count, ia3.lrs))
    TR.test_count_formula_is_what_the_torch_twin_trains(wrong.name)   # the right formula passes


# ----------------------------------------------------------------------------- results files
def test_save_runs_with_runs_only_and_refusals_leave_nothing(tmp_path):
    p = R.save_runs({"runs": [{"a": 1}, {"a": 2}]}, tmp_path / "r.json")
    assert json.loads(p.read_text()) == {"runs": [{"a": 1}, {"a": 2}]}
    assert json.loads(R.save_runs({}, tmp_path / "e.json").read_text()) == {"runs": []}
    for runs in (5, {"a": 1}, "ab"):
        with pytest.raises(TypeError, match="must be a list of runs"):
            R.save_runs({"x": 1, "runs": runs}, tmp_path / "bad.json")
    assert sorted(f.name for f in tmp_path.iterdir()) == ["e.json", "r.json"]


def test_smooth_and_mean_sd_refuse_what_has_no_answer():
    for k in (0, -1, 2.5, True):
        with pytest.raises((TypeError, ValueError), match="k"):
            R.smooth([1.0, 2.0, 3.0], k)
    with pytest.raises(ValueError, match="1-D"):
        R.smooth([[1.0, 2.0], [3.0, 4.0]])
    with pytest.raises(ValueError, match="non-empty"):
        R.mean_sd([])
    assert R.smooth([1.0, 3.0], 8).tolist() == [1.0, 2.0] and R.mean_sd([2.0]) == (2.0, 0.0)


def test_a_foreign_bench_file_is_refused_by_name_and_not_overwritten(tmp_path):
    import shutil

    out = tmp_path / "other.json"
    out.write_text('{"methods": {}}')
    with pytest.raises(ValueError, match="not a bench summary"):
        BM.main(["--no-chapters", "--out", str(out)])
    assert out.read_text() == '{"methods": {}}'
    for name in BM.SOURCES:
        shutil.copy(BM.RESULTS / name, tmp_path)
    (tmp_path / "bench_quant.json").write_text('{"runs": []}')
    with pytest.raises(ValueError, match="bench_quant.json.*missing"):
        BM.summarize(results=tmp_path)


# ----------------------------------------------------------------------------- verdict rules
def _d(lo, hi, mean=None, tie=None):
    mean = (lo + hi) / 2 if mean is None else mean
    return {"lo": lo, "hi": hi, "mean": mean, "tie": lo <= 0 <= hi if tie is None else tie, "n": 5}


@pytest.mark.parametrize("call", [
    lambda: rules.rounded_verdict(NAN, "nan"), lambda: rules.rounded_verdict(math.inf, "inf"),
    lambda: rules.about_verdict(NAN, 5), lambda: rules.about_verdict(5, math.inf),
    lambda: rules.band_verdict(_d(0.2, 0.5, NAN), 0, 1), lambda: rules.band_verdict(_d(NAN, 0.5, 0.4), 0, 1),
    lambda: rules.match_verdict(_d(-0.1, 0.1), NAN), lambda: rules.match_verdict(_d(NAN, NAN, NAN, True), 1),
    lambda: rules.within_verdict(_d(-0.1, 0.1), NAN), lambda: rules.interval_verdict(NAN, 0.5, 0, 1),
    lambda: rules.few_seeds("holds", NAN), lambda: rules.few_seeds("holds", 5.0),
])
def test_no_verdict_rests_on_nan(call):
    with pytest.raises((TypeError, ValueError)):
        call()


def test_rules_refuse_reversed_intervals_and_negative_margins():
    with pytest.raises(ValueError, match="lo <= hi"):
        rules.interval_verdict(0.9, 0.1, 0, 1)                     # was "holds"
    with pytest.raises(ValueError, match="lo <= hi"):
        rules.band_verdict(_d(0.9, 0.1), 0, 1)
    with pytest.raises(ValueError, match="margin"):
        rules.within_verdict(_d(-0.1, 0.1), -1.0)


def test_rules_at_their_edges():
    assert rules.band_verdict(_d(-2.0, 0.0), -2.0, 0.0) == "holds"          # the band's edges belong to it
    assert rules.band_verdict(_d(-2.0 - 1e-9, 0.0, -1.0), -2.0, 0.0) == "approximately"
    assert rules.match_verdict(_d(-1.0, 0.0), 1.0) == "holds"              # touching 0 is a tie
    assert rules.match_verdict(_d(1e-9, 0.5), 1.0) == "wrong"
    assert rules.within_verdict(_d(0.2, 1.0), 1.0) == "holds"
    assert rules.interval_verdict(0.1, 1.0, 0.1, 1.0) == "holds" and rules.interval_verdict(0, 2, 0.5, 1) == "approximately"
    assert rules.few_seeds("holds", 2) == "approximately" and rules.few_seeds("holds", 5) == "holds"
    assert rules.unbracketed({"flat": {"1e-3": 0.5, "1e-2": 0.5, "1e-1": 0.5}}) == {"flat": "low"}


# ----------------------------------------------------------------------------- show_source
@functools.lru_cache(maxsize=1)
def _cached(x):
    return x + 1


class _K:
    @functools.cached_property
    def c(self):
        return 2


def test_show_source_through_caching_wrappers_and_a_clear_refusal_for_partial(capsys):
    show.show_source(_cached, _K.c)
    out = capsys.readouterr().out
    assert out.startswith("# test_unseen_harness.py :: _cached\n@functools.lru_cache(maxsize=1)\ndef _cached(x):")
    assert "# test_unseen_harness.py :: _K.c\n    @functools.cached_property" in out
    with pytest.raises(TypeError, match="functools.partial has no source.*func"):
        show.show_source(functools.partial(_cached.__wrapped__, 1))
    with pytest.raises(TypeError, match="shows functions"):
        show.show_source(len)
    assert capsys.readouterr().out == ""


# ----------------------------------------------------------------------------- entry points
def _refused(main, argv, capsys, code=2):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == code, capsys.readouterr()
    return capsys.readouterr().err


def _boom(*a, **k):
    raise AssertionError("ran past a bad argument")


def test_entry_points_refuse_bad_arguments_before_anything_runs(capsys, monkeypatch):
    from pedagogy_lib.book.ch05 import experiment as e05
    from pedagogy_lib.book.ch06 import experiment as e06
    from pedagogy_lib.book.ch07 import experiment as e07
    from pedagogy_lib.book.ch08 import experiment as e08
    from pedagogy_lib.book.ch10 import experiment as e10
    from pedagogy_lib.book.ch10 import studies as s10
    from pedagogy_lib.book.ch11 import experiment as e11

    for mod, name in ((e05.data, "polarity_task"), (e06, "preactivation_study"), (e06, "learning_curve"),
                      (e07, "step_memory_study"), (e07, "accuracy_sweep"), (e08, "compare"), (e08, "append"),
                      (e10.IO, "read_checkpoint"), (s10, "more_seeds"), (s10, "vader_study"), (e11, "ddp_runs")):
        monkeypatch.setattr(mod, name, _boom)
    for jobs in ("0", "-1", "1.5"):
        assert "--jobs" in _refused(e08.main, ["--jobs", jobs], capsys)
    assert "unknown method" in _refused(e08.main, ["--methods", "nope"], capsys)
    assert "unknown arm" in _refused(e05.main, ["--arms", "nope"], capsys)
    assert "--jobs" in _refused(e06.main, ["--jobs", "0"], capsys)
    assert "selection size" in _refused(e06.main, ["--sizes", "64"], capsys)
    assert "unknown arm" in _refused(e07.main, ["--arms", "nope"], capsys)
    assert "name the methods" in _refused(e10.main, ["--append", "--methods"], capsys)
    assert "name the methods" in _refused(e10.main, ["--append"], capsys)  # --methods defaulted to all arms
    assert "tasks" in _refused(e10.main, ["--tasks", "nope"], capsys)
    assert "--redo" in _refused(e10.main, ["--redo"], capsys)
    assert "unrecognized" in _refused(s10.main, ["--vadr"], capsys)
    _refused(s10.main, ["--help"], capsys, code=0)
    assert "unrecognized" in _refused(e11.main, ["--bogus"], capsys)
    assert runner.cli_count("3") == 3
