"""Chapter 09's corpus, tokenizer and pretraining: the splits are clean, and the shipped
checkpoints came from this code (the first steps of pretraining are re-run and must give the
recorded losses exactly)."""
import dataclasses
import json

import numpy as np
import pytest

from pedagogy_lib import bpe, corpus, decoder_io as IO

STEPS = {"stdlib-1m": 6, "stdlib-4m": 3}   # re-run steps per member (a few seconds each)


@pytest.fixture(scope="module")
def built():
    return corpus.load_corpus()


def manifest(name):
    if name not in IO.available() and name != IO.DEFAULT:
        pytest.skip(f"no checkpoint for {name} in this tree: run `make pretrain`")
    return json.loads((IO.checkpoint_dir(name) / "manifest.json").read_text())


@pytest.fixture(scope="module")
def prepared(built):
    want = manifest(IO.DEFAULT)
    if built.sha256 != want["corpus_sha256"]:
        pytest.skip(f"this Python ({built.python}) builds a different stdlib corpus "
                    f"({built.sha256[:12]}) than the one the checkpoints were trained on "
                    f"(Python {want['python']}, {want['corpus_sha256'][:12]}): the losses cannot be compared")
    from pedagogy_lib.torch_ref import pretrain as P

    return P.prepare()


def test_splits_are_disjoint_and_heldout_modules_are_never_trained_on(built):
    by_split = {s: {d.name for d in built.documents if d.split == s} for s in corpus.SPLITS}
    names = [d.name for d in built.documents]
    assert len(names) == len(set(names))                                # a document lives in one split
    assert all(corpus.split_of(d.name) == d.split for d in built.documents)
    held = by_split["heldout"]
    assert {n.split(".")[0] for n in held} == set(corpus.HELDOUT)        # every held-out module is there
    assert not any(n.split(".")[0] in corpus.HELDOUT for s in ("train", "val", "test") for n in by_split[s])
    train = {corpus._norm(t) for t in built.texts("train")}
    for s in ("val", "test", "heldout"):
        assert not train & {corpus._norm(t) for t in built.texts(s)}, s  # no evaluation text in training
    st = built.stats()
    assert st["train"]["chars"] > 1_500_000 and min(st[s]["texts"] for s in corpus.SPLITS) > 100
    assert built.duplicates > 0 and not any("test" in n.split(".") for n in names)


def test_dedupe_prefers_evaluation_splits():
    raw = [("a", "train", ["h\n\nSame  text.", "h\n\nOwn."]), ("b", "test", ["x\n\nSame text."])]
    docs, dropped = corpus.dedupe(raw)
    assert dropped == 1 and [d.texts for d in docs] == [("h\n\nOwn.",), ("x\n\nSame text.",)]


def test_docstrings_from_source_not_imports(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text('"""Top."""\nraise SystemExit("never imported")\n')
    (tmp_path / "pkg" / "mod.py").write_text('class A:\n    """Doc A."""\n    def f(self, x, *, y=1):\n'
                                             '        """Doc f."""\n')
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "t.py").write_text('"""Test doc."""\n')
    (tmp_path / "bad.py").write_text('print "py2"\n')
    c = corpus.build_corpus(tmp_path)
    texts = [t for d in c.documents for t in d.texts if not d.name.startswith("topic:")]
    assert sorted(texts) == ["class pkg.mod.A\n\nDoc A.", "module pkg\n\nTop.", "pkg.mod.A.f(self, x, *, y=1)\n\nDoc f."]
    assert c.skipped == ["bad"]


def test_tokenizer_round_trip_and_shipped_vocabulary(prepared):
    c, tok, streams = prepared
    shipped = bpe.DecoderTokenizer.from_file(IO.checkpoint_dir() / "tokenizer.json")
    assert tok.sha256 == shipped.sha256                    # the BPE is rebuilt byte for byte
    for text in c.texts("heldout")[:20] + ["naïve — ünïcode ✓\ttabs"]:
        assert tok.decode(tok.encode(text)) == text
    s = streams["train"]
    assert s.dtype == np.int64 and (s == tok.eos_id).sum() == len(c.texts("train"))


@pytest.mark.parametrize("name", sorted(STEPS))
def test_first_pretraining_steps_reproduce_the_log(prepared, name):
    from pedagogy_lib.torch_ref import pretrain as P

    assert manifest(name)["corpus_sha256"] == prepared[0].sha256
    log = json.loads((IO.checkpoint_dir(name) / "training_log.json").read_text())
    _, rerun = P.pretrain(name, prepared[2], P.PretrainConfig(**{**log["settings"], "betas": tuple(log["settings"]["betas"])}),
                          stop_after=STEPS[name])
    assert rerun["loss"] == log["loss"][: STEPS[name]]     # exactly: same code, same data, same numbers


@pytest.mark.parametrize("name", sorted(IO.FAMILY))
def test_checkpoint_files_match_their_manifest(name):
    m = manifest(name)
    folder = IO.checkpoint_dir(name)
    assert set(m["files"]) == set(IO.FILES)
    for f, digest in m["files"].items():
        assert IO.sha256_file(folder / f) == digest, f
    log = json.loads((folder / "training_log.json").read_text())
    assert len(log["loss"]) == log["settings"]["steps"] and np.isfinite(log["loss"]).all()
    from pedagogy_lib.torch_ref.pretrain import SETTINGS

    assert log["settings"] == json.loads(json.dumps(dataclasses.asdict(SETTINGS[name])))
