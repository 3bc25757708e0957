"""book.exercises.refuse_known_mistakes: a known wrong value gets its meaning, a value that is also
the right answer never does, and an answer that is not one number (text included) is left to the
checks after it."""
import numpy as np
import pytest
import torch

from pedagogy_lib.book.exercises import NotYet, refuse_known_mistakes

MISTAKES = {12: "twelve is the payload", 10: "ten would be a mistake if it were not the answer"}


@pytest.mark.parametrize("got", [12, np.int64(12), torch.tensor(12), 12.0, np.float32(12.0)])
def test_a_known_mistake_names_its_meaning(got):
    with pytest.raises(NotYet, match=r"^f\(x\) = 12: twelve is the payload$"):
        refuse_known_mistakes(got, 10, MISTAKES, "f(x)")


@pytest.mark.parametrize("got", [10, 11, [12, 12], np.array([12.0]), float("nan")])
def test_the_right_answer_and_other_shapes_pass_through(got):
    refuse_known_mistakes(got, 10, MISTAKES, "f(x)")


def test_tolerances_apply_to_the_answer_and_to_the_right_value():
    with pytest.raises(NotYet, match="= 12.4: twelve"):
        refuse_known_mistakes(12.4, 10, MISTAKES, "f(x)", atol=0.5)
    refuse_known_mistakes(10.0, 10.3, MISTAKES, "f(x)", atol=0.5)   # 10 is within atol of the answer: no mistake
    with pytest.raises(NotYet, match="twelve"):
        refuse_known_mistakes(12 * (1 + 1e-10), 10, MISTAKES, "f(x)", rtol=1e-9)


def test_none_is_refused_and_text_left_to_the_checker():
    with pytest.raises(NotYet, match="None"):
        refuse_known_mistakes(None, 10, MISTAKES, "f(x)")
    refuse_known_mistakes("12", 10, MISTAKES, "f(x)")   # the checker's next check refuses text in its own words
