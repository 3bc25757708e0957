"""pedagogy_lib.data: the VADER lexicon parser and the polarity task (chapter 00)."""

import importlib.resources
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from pedagogy_lib import data

GOOD = "good\t1.9\t0.9434\t[2, 2, 1, 2, 1, 2, 3, 3, 2, 1]\n"
BAD_WORD = "awful\t-3.4\t0.4899\t[-3, -4, -3, -4, -3, -3, -4, -3, -4, -3]\n"


@pytest.fixture(scope="module")
def entries():
    return data.load_vader()


@pytest.fixture(scope="module")
def task():
    return data.polarity_task()


def raw_lines():
    """The shipped file read independently of the parser (plain str.split)."""
    text = (importlib.resources.files("vaderSentiment") / "vader_lexicon.txt").read_text("utf-8")
    return [line.split("\t") for line in text.splitlines() if line.strip()]


# ---------------------------------------------------------------------------- parsing

def test_parses_every_line(entries):
    raw = raw_lines()
    assert len(entries) == len(raw) > 7000
    assert [e.token for e in entries] == [r[0] for r in raw]
    assert all(len(e.ratings) == 10 for e in entries)
    i = [e.token for e in entries].index("good")
    assert entries[i].ratings == tuple(int(x) for x in raw[i][3].strip("[]").split(","))
    assert entries[i].mean == float(raw[i][1]) and entries[i].std == float(raw[i][2])


def test_means_match_ratings_except_documented_erratum(entries):
    off = [e for e in entries if abs(e.mean - np.mean(e.ratings)) > 1e-6]
    assert {(e.token, e.mean, sum(e.ratings)) for e in off} == set(data.KNOWN_MEAN_ERRATA)
    # every allowed erratum really occurs (the allow-list cannot go stale silently)
    assert len(off) == len(data.KNOWN_MEAN_ERRATA)


def test_audit_counts(entries):
    a = data.audit(entries)
    tokens = [e.token for e in entries]
    assert a["lines"] == len(tokens)
    assert a["unique_tokens"] == len(set(tokens))
    assert a["duplicated_tokens"] == sorted({t for t in tokens if tokens.count(t) > 1})
    assert a["mean_mismatch"] == [e.line for e in entries if e.token == "lmfao"]
    assert 0 < len(a["std_mismatch"]) < 20


def write(tmp_path, text, name="lex.txt"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_loads_a_small_file(tmp_path):
    es = data.load_vader(write(tmp_path, GOOD + "\n" + BAD_WORD))
    assert [e.token for e in es] == ["good", "awful"]
    assert [e.line for e in es] == [1, 3]  # the empty line is skipped but still counted
    assert es[1].rating_mean == pytest.approx(-3.4)


@pytest.mark.parametrize("line, why", [
    ("good\t1.9\t0.9434\n", "4 tab-separated"),
    ("good\tabc\t0.9434\t[2, 2, 1, 2, 1, 2, 3, 3, 2, 1]\n", "not a number"),
    ("good\tnan\t0.9434\t[2, 2, 1, 2, 1, 2, 3, 3, 2, 1]\n", "not finite"),
    ("good\t1.9\t0.9434\t[2, 2, 1, 2, 1, 2, 3, 3, 2]\n", "expected 10 ratings"),
    ("good\t1.9\t0.9434\t[2, 2, 1, 2, 1, 2, 3, 3, 2, x]\n", "integers"),
    ("good\t1.9\t0.9434\t2, 2, 1, 2, 1, 2, 3, 3, 2, 1\n", "bracketed"),
    ("good\t1.9\t0.9434\t[2, 2, 1, 2, 1, 2, 3, 3, 2, 9]\n", "[-4, 4]"),
    ("good\t2.0\t0.9434\t[2, 2, 1, 2, 1, 2, 3, 3, 2, 1]\n", "not the mean of the ratings"),
    ("good\t1.8\t0.9434\t[2, 2, 1, 2, 1, 2, 3, 3, 2, 1]\n", "not the mean of the ratings"),
    ("good\t1.9\t-0.1\t[2, 2, 1, 2, 1, 2, 3, 3, 2, 1]\n", "std"),
    ("\t1.9\t0.9434\t[2, 2, 1, 2, 1, 2, 3, 3, 2, 1]\n", "token"),
    ("lmfao\t2.6\t1.28452\t[3, 2, 3, 3, 3, -1, 4, 2, 3, 2]\n", "not the mean"),  # not the erratum
])
def test_corrupt_line_names_line_number(tmp_path, line, why):
    p = write(tmp_path, GOOD + BAD_WORD + line)
    with pytest.raises(ValueError, match=r"line 3 .*") as err:
        data.load_vader(p)
    assert why in str(err.value)


def test_empty_and_binary_files(tmp_path):
    with pytest.raises(ValueError, match="no lexicon entries"):
        data.load_vader(write(tmp_path, "\n\n"))
    p = tmp_path / "bin.txt"
    p.write_bytes(b"\xff\xfe\x00good")
    with pytest.raises(ValueError, match="UTF-8"):
        data.load_vader(p)


# ---------------------------------------------------------------------- the threshold

def test_agreement_matches_a_direct_count(entries):
    agree = data.rater_agreement(entries)
    for e, a in zip(entries[::500], agree[::500]):
        s = 1 if sum(e.ratings) > 0 else -1
        assert a == sum(1 for r in e.ratings if r * s > 0) / 10
    levels, counts, means = data.agreement_by_level(entries)
    assert counts.sum() == len(entries)
    low = np.array([abs(e.rating_mean) < 0.5 for e in entries])
    assert 0.25 < agree[low].mean() < 0.45  # ~34% of raters agree below |mean| 0.5
    assert means[-1] > 0.95 and np.all(np.diff(levels) > 0)


def test_default_threshold_is_the_chosen_one(entries):
    assert data.choose_threshold(entries) == data.DEFAULT_THRESHOLD
    levels, _, means = data.agreement_by_level(entries)
    assert means[levels >= data.DEFAULT_THRESHOLD - 1e-9].min() > 0.5
    assert means[np.isclose(levels, data.DEFAULT_THRESHOLD - 0.1)].item() <= 0.5
    assert data.choose_threshold(entries, 0.9) > data.DEFAULT_THRESHOLD
    with pytest.raises(ValueError, match="min_agreement"):
        data.choose_threshold(entries, 1.5)
    with pytest.raises(ValueError, match="no entries"):
        data.choose_threshold([])


@pytest.mark.parametrize("bad", [-0.5, 0.0, float("nan"), float("inf"), 4.5])
def test_bad_threshold_value(bad):
    with pytest.raises(ValueError, match="threshold"):
        data.polarity_task(threshold=bad)


@pytest.mark.parametrize("bad", ["0.6", None, True])
def test_bad_threshold_type(bad):
    with pytest.raises(TypeError, match="threshold"):
        data.polarity_task(threshold=bad)


def test_threshold_leaving_one_class(tmp_path):
    p = write(tmp_path, GOOD + BAD_WORD)
    with pytest.raises(ValueError, match="fewer than two classes"):
        data.polarity_task(threshold=3.0, path=p)


@pytest.mark.parametrize("fractions", [(0.7, 0.2, 0.2), (0.8, 0.2), (0.9, 0.0, 0.1), (1.2, -0.1, -0.1)])
def test_bad_fractions(fractions):
    with pytest.raises(ValueError, match="fractions"):
        data.polarity_task(fractions=fractions)


@pytest.mark.parametrize("seed, exc", [(-1, ValueError), (1.5, TypeError), ("0", TypeError)])
def test_bad_seed(seed, exc):
    with pytest.raises(exc, match="seed"):
        data.polarity_task(seed=seed)


# ----------------------------------------------------------------------- the split

def test_filtering_and_dedup(entries, task):
    last = {e.token: e.rating_mean for e in entries}  # later lines win, as in VADER
    kept = {t for t, m in last.items() if abs(m) >= data.DEFAULT_THRESHOLD - 1e-9}
    got = task.train.tokens + task.val.tokens + task.test.tokens
    assert len(got) == len(set(got)) == len(kept)
    assert set(got) == kept
    assert task.n_duplicates == len(entries) - len(last)
    assert task.n_neutral == len(last) - len(kept)
    for s in (task.train, task.val, task.test):
        assert s.labels.dtype == np.int64 and s.mean.dtype == np.float32
        assert s.labels.shape == s.mean.shape == (len(s),)
        np.testing.assert_array_equal(s.labels, (s.mean > 0).astype(np.int64))
        np.testing.assert_allclose(s.mean, [last[t] for t in s.tokens], atol=1e-6)
        assert np.all(np.abs(s.mean) >= data.DEFAULT_THRESHOLD - 1e-6)
    # "d:" appears twice (-2.9, then 1.2): the later line wins, as in VADER's dict
    where = {t: m for s in (task.train, task.val, task.test) for t, m in zip(s.tokens, s.mean)}
    assert where["d:"] == pytest.approx(1.2)


def test_no_group_crosses_splits(task):
    keys = [{data.group_key(t) for t in s.tokens} for s in (task.train, task.val, task.test)]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    assert data.related_across(task.test, task.train) == []
    assert data.related_across(task.val, task.train) == []


def test_group_key():
    assert data.group_key("Lovely") == data.group_key("loved") == "love"
    assert data.group_key("bad") == data.group_key("badly") == "bad"  # "bad" is a lexicon token
    assert data.group_key("badly", roots=frozenset()) == "badl"
    assert data.group_key("ok") == "ok"
    with pytest.raises(ValueError):
        data.group_key("")
    with pytest.raises(TypeError):
        data.group_key(None)


def test_a_per_token_split_would_leak(task):
    """The check has teeth: shuffling tokens one by one puts relatives on both sides."""
    toks = sorted(task.train.tokens + task.test.tokens)
    rng = np.random.default_rng(0)
    mask = rng.random(len(toks)) < 0.8
    mk = lambda m: data.Split([t for t, k in zip(toks, m) if k], np.zeros(0), np.zeros(0))
    assert len(data.related_across(mk(~mask), mk(mask))) > 100


def test_sizes_and_class_balance(task):
    s = data.task_summary(task)
    n = s["n"]
    assert n == len(task.train) + len(task.val) + len(task.test) > 6000
    pos_all = (s["train"]["positive"] + s["val"]["positive"] + s["test"]["positive"]) / n
    for name, f in zip(("train", "val", "test"), data.DEFAULT_FRACTIONS):
        assert abs(s[name]["n"] / n - f) < 0.02
        assert s[name]["positive"] + s[name]["negative"] == s[name]["n"]
        assert abs(s[name]["positive_fraction"] - pos_all) < 0.05
    for seed in (1, 2, 3):
        t = data.task_summary(data.polarity_task(seed=seed))
        assert all(abs(t[k]["positive_fraction"] - pos_all) < 0.05 for k in ("train", "val", "test"))


def test_deterministic_and_seeded(task):
    again = data.polarity_task()
    assert again.test.tokens == task.test.tokens and again.val.tokens == task.val.tokens
    other = data.polarity_task(seed=1)
    assert other.test.tokens != task.test.tokens
    higher = data.polarity_task(threshold=1.0)
    assert len(higher.train) < len(task.train)
    f32 = data.polarity_task(threshold=np.float32(data.DEFAULT_THRESHOLD))  # 0.6000000238...
    assert f32.test.tokens == task.test.tokens


def test_deterministic_across_processes(task):
    """Same split in a fresh interpreter with a different hash seed."""
    code = ("from pedagogy_lib import data; t = data.polarity_task(); "
            "print(len(t.train), t.test.tokens[:3], t.val.tokens[-3:])")
    root = pathlib.Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=root, env={"PYTHONHASHSEED": "123", "PYTHONPATH": str(root)}).stdout.strip()
    assert out == f"{len(task.train)} {task.test.tokens[:3]} {task.val.tokens[-3:]}"


def test_custom_fractions(task):
    t = data.polarity_task(fractions=(0.5, 0.25, 0.25))
    n = len(t.train) + len(t.val) + len(t.test)
    assert abs(len(t.train) / n - 0.5) < 0.02 and abs(len(t.val) / n - 0.25) < 0.02


# ------------------------------------------------------------------------ subsample

def test_subsample_keeps_balance(task):
    s = data.subsample(task.train, 200, seed=0)
    assert len(s) == 200 and len(set(s.tokens)) == 200
    assert set(s.tokens) <= set(task.train.tokens)
    want = round(200 * task.train.labels.mean())
    assert int(s.labels.sum()) == want
    idx = [task.train.tokens.index(t) for t in s.tokens]
    assert idx == sorted(idx)
    np.testing.assert_array_equal(s.labels, task.train.labels[idx])
    np.testing.assert_array_equal(s.mean, task.train.mean[idx])
    assert data.subsample(task.train, 200, seed=0).tokens == s.tokens
    assert data.subsample(task.train, 200, seed=1).tokens != s.tokens
    tiny = data.subsample(task.train, 2, seed=0)
    assert sorted(tiny.labels.tolist()) == [0, 1]


@pytest.mark.parametrize("n, exc", [(1, ValueError), (10**6, ValueError), (3.0, TypeError), (True, TypeError)])
def test_subsample_bad_n(task, n, exc):
    with pytest.raises(exc, match="n must"):
        data.subsample(task.train, n)
