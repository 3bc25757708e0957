"""Chapter 10's evidence chain: what the studies' progress bar counts, and
that no evaluation text of the decoder tasks was seen by pretraining or by the other split."""
import pytest

from pedagogy_lib import corpus, decoder_tasks as T
from pedagogy_lib.book.ch10 import studies as S


def test_studies_progress_total_counts_every_run_it_trains(monkeypatch):
    """The bar's total is the steps of the runs ``placement_and_rank`` trains: the placement study
    at every seed of ``tasks.SEEDS`` (five since seeds 3 and 4 were added), the rank sweep at one."""
    runs, totals = [], []
    monkeypatch.setattr(S, "_line_runs", lambda methods_r, lr, seeds, d, tok, bar:
                        runs.extend((label, s) for label, _, _ in methods_r for s in seeds) or [])
    monkeypatch.setattr(S.IO, "read_checkpoint", lambda folder: (None, None, None, None))
    monkeypatch.setattr(S.E, "prepare", lambda task, tok: {})

    class Bar:
        def __init__(self, total=None, **kw):
            totals.append(total)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(S, "tqdm", Bar)
    for name in ("dtypes", "recipe_study", "vader_study"):
        monkeypatch.setattr(S, name, lambda: {})
    monkeypatch.setattr(S.R, "save", lambda res, name: name)
    monkeypatch.setattr(S.torch, "set_num_threads", lambda n: None)
    S.main([])
    assert len(runs) == len(S.PLACEMENT) * len(S.E.SEEDS) + len(S.RANKS)
    assert totals == [len(runs) * S.E.STEPS["line"]]


@pytest.fixture(scope="module")
def tasks():
    return {"area": T.area_task(), "line": T.line_task()}


@pytest.mark.parametrize("name", ["area", "line"])
def test_validation_and_test_share_no_module_and_no_prompt(tasks, name):
    """``leaks`` holds val and test against train only; rates are chosen on val, so val and test must
    not overlap either."""
    val, test = tasks[name]["val"], tasks[name]["test"]
    assert not {e.module for e in val} & {e.module for e in test}
    assert not {e.prompt for e in val} & {e.prompt for e in test}


def _windows(text: str, n: int = 80, step: int = 20) -> set:
    s = " ".join(text.split("\n\n", 1)[-1].split())
    return {s[i:i + n] for i in range(0, len(s) - n + 1, step)}


def test_held_out_text_shares_no_passage_with_the_pretraining_text():
    """Chapter 10's first-line test set (the ``heldout`` split) is text pretraining never read: not
    only no exact copy (``corpus.dedupe``) but no 80-character passage of a held-out docstring occurs in
    the train split, and no test response (a first line) occurs there at all."""
    c = corpus.load_corpus()
    blob = "\n\x00\n".join(" ".join(t.split()) for t in c.texts("train"))
    shared = [t.split("\n\n", 1)[0] for t in c.texts("heldout") if any(w in blob for w in _windows(t))]
    assert shared == []
    assert [e.response for e in T.line_task()["test"] if " ".join(e.response.split()) in blob] == []


def test_read_in_pretraining_finds_area_prompts_whose_text_recurs_in_the_training_text():
    """The area task's test modules are held out, but a short docstring can recur word for word in
    another module: ``read_in_pretraining`` finds those (a handful, under 1 %), and nothing else."""
    test = T.area_task()["test"]
    seen = T.read_in_pretraining(test)
    assert 0 < len(seen) <= 0.01 * len(test)
    assert any(e.prompt.startswith("Initialize the handler.") for e in seen)
    made_up = T.Example(T.AREA_TEMPLATE.format(body="Zqx vw frobnicates the glorp."), " xml", "xml.zz", 5)
    assert T.read_in_pretraining([made_up]) == []
    assert T.read_in_pretraining(T.line_task()["test"]) == []
