"""Chapter 10's tasks: leak-free splits, the response-only loss mask, the metrics."""
import numpy as np
import pytest

from pedagogy_lib import corpus, decoder as D, decoder_io as IO, decoder_tasks as T


@pytest.fixture(scope="module")
def tok():
    _, _, tok, _ = IO.read_checkpoint(IO.checkpoint_dir())
    return tok


@pytest.fixture(scope="module")
def area():
    return T.area_task()


@pytest.fixture(scope="module")
def line():
    return T.line_task()


def test_area_task_is_leak_free_and_balanced(area):
    assert T.leaks(area) == {s: {"modules": [], "prompts": 0, "pairs": 0} for s in ("val", "test")}
    split_of = {d.name: d.split for d in corpus.load_corpus().documents}
    assert all(split_of[e.module] == "train" for e in area["train"] + area["val"])
    assert all(split_of[e.module] in ("val", "test") for e in area["test"])   # never pretrained on
    counts = np.bincount([e.label for e in area["test"]], minlength=len(T.AREAS))
    assert counts.min() >= 20 and len(area["test"]) >= 500
    assert all(T.AREAS[e.label] in e.response for e in area["test"])
    # the header (which names the module) never reaches the prompt
    assert not any(e.prompt.startswith(("class ", "module ")) for e in area["train"])


def test_line_task_tests_on_modules_held_out_of_pretraining(line):
    assert T.leaks(line) == {s: {"modules": [], "prompts": 0, "pairs": 0} for s in ("val", "test")}
    assert {e.module.split(".")[0] for e in line["test"]} <= set(corpus.HELDOUT)
    assert len(line["test"]) >= 100
    pretrain = set(corpus.load_corpus().texts("train"))
    assert not any(any(e.response in t for t in pretrain) for e in line["test"][:20])


def test_tasks_change_with_the_seed_but_not_between_calls():
    a, b, c = T.area_task(seed=0), T.area_task(seed=0), T.area_task(seed=1)
    assert a == b and a["train"] != c["train"]


def test_mask_covers_exactly_the_response(tok):
    prompt, response = "json.dumps(obj)\n\n", "Serialize obj to a JSON formatted str."
    ids, m = T.encode(tok, prompt, response)
    assert ids[0] == tok.eos_id and ids[-1] == tok.eos_id and m.shape == (ids.size - 1,)
    targets = ids[1:][m == 1]
    assert tok.decode(targets) == response + "<|endoftext|>"
    assert tok.decode(ids[1:][m == 0]) == prompt
    # joint tokenisation: the same ids as the text itself
    assert np.array_equal(ids[1:-1], tok.encode(prompt + response))


def test_mask_refuses_a_boundary_inside_a_token(tok):
    with pytest.raises(ValueError, match="straddles"):
        T.encode(tok, "This docstring is from the pack", "age: json")
    with pytest.raises(ValueError, match="non-empty"):
        T.encode(tok, "x", "")


def test_masked_loss_counts_only_response_tokens(tok):
    """Changing a prompt token's target logits leaves the loss unchanged; a response one does not."""
    ids, m = T.batch(tok, [T.Example("abc def\n\n", "Return x.", "m"), T.Example("q\n\n", "Yes.", "m")])
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((*ids.shape, tok.vocab_size))
    loss, dlog = D.next_token_loss(logits, ids, m)
    assert np.all(dlog[:, :-1][m == 0] == 0)
    bumped = logits.copy()
    i, t = np.argwhere(m == 0)[0]
    bumped[i, t, ids[i, t + 1]] += 5.0      # the prompt target's own logit
    assert D.next_token_loss(bumped, ids, m)[0] == loss
    i, t = np.argwhere(m == 1)[0]
    bumped[i, t, ids[i, t + 1]] += 5.0
    assert D.next_token_loss(bumped, ids, m)[0] != loss


def test_batch_pads_right_and_truncates_the_prompt_start(tok):
    ex = [T.Example("word " * 100, " xml", "m"), T.Example("a\n\n", "b c", "m")]
    ids, m = T.batch(tok, ex, max_len=32)
    assert ids.shape[1] <= 32 and m.sum(1)[0] == T.encode(tok, ex[0].prompt, ex[0].response)[1].sum()
    assert ids[1, -1] == tok.eos_id
    with pytest.raises(ValueError, match="does not fit"):
        T.batch(tok, [T.Example("a", " b" * 40, "m")], max_len=16)


def test_rouge_l_and_lcs():
    assert T.lcs("a b c d".split(), "a c d".split()) == 3
    assert T.rouge_l("Return the value.", "Return the value.") == 1.0
    assert T.rouge_l("x y", "a b") == 0.0
    assert T.rouge_l("a b c d", "a c") == pytest.approx(2 * 2 / 6)
    assert T.rouge_l("", "") == 1.0
