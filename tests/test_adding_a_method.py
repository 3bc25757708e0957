"""README's "Adding a method", proved: a new registry record, and no other edit, reaches
``registry.METHODS``, chapter 08's comparison arms (derived from the records), the runner and
the count checks of tests/test_registry.py.

The toy method is built from existing pieces: one learned vector l_v rescaling every value
output (IA³'s l_v alone, Eq. 6.5), with its count from ``ia3.ia3_params``. The fixture appends
its record to the registry (as a new line in ``_RECORDS`` would) and removes it afterwards.
"""
import importlib

import pytest

import test_registry as TR
from pedagogy_lib import counting as C
from pedagogy_lib import data as D
from pedagogy_lib import ia3 as I
from pedagogy_lib import registry as R
from pedagogy_lib import runner
from pedagogy_lib.book.ch08 import experiment as E
from pedagogy_lib.torch_ref import ia3 as TI

VALUES = r".*layer\.\d+\.attention\.self\.value"
SHAPE = C.minilm_shape()


@pytest.fixture
def toy():
    rec = R.Method("ia3_v", "a vector l_v rescaling each value output (IA³'s l_v alone, Eq. 6.5)",
                   lambda mm, seed: TI.attach_ia3(mm.bert, VALUES, []),
                   lambda mm, seed: I.attach_ia3(mm.bert, VALUES, []),
                   lambda s: I.ia3_params(s, ("value",), ()), (1e-2, 3e-2, 1e-1),
                   inference=lambda mm: TI.merge_all(mm.bert))  # compared: the default, one arm
    before = list(E.ARMS.items())
    R._RECORDS.append(rec)
    R.METHODS[rec.name] = rec
    importlib.reload(E)  # chapter 08's ARMS is derived from the records when its module loads
    try:
        yield rec, before
    finally:
        R._RECORDS.remove(rec)
        del R.METHODS[rec.name]
        importlib.reload(E)
    assert list(E.ARMS.items()) == before


def test_a_new_record_flows_everywhere(toy):
    rec, before = toy
    assert R.get("ia3_v") is rec and list(R.METHODS)[-1] == "ia3_v"
    # chapter 08: one more arm, named after the method, after the arms it had, which are unchanged
    assert list(E.ARMS.items())[:-1] == before
    arm = E.ARMS["ia3_v"]
    assert list(E.ARMS)[-1] == "ia3_v" and arm.method == "ia3_v" and arm.grid == rec.lrs
    assert E.check_arms(["ia3_v"]) == ["ia3_v"]
    # the count: what test_registry checks for every record, against both attachments
    TR.test_count_formula_is_what_the_torch_twin_trains("ia3_v")
    TR.test_numpy_attachment_trains_the_same_count("ia3_v")
    assert rec.params(SHAPE) == SHAPE.layers * SHAPE.hidden == 2304
    # one run of the runner on chapter 08's CI budget
    out = runner.run(arm, D.polarity_task(), E.CI, 0, rec.lrs[1])
    assert out["method"] == "ia3_v" and out["trainable"] == rec.params(SHAPE)
    assert 0.0 <= out["test_acc"] <= 1.0 and len(out["losses"]) >= 1


def test_a_record_can_stay_out_of_the_comparison():
    # ``compared=()``: chapter 01's random subspace is a measurement, not a method to compare
    assert R.METHODS["subspace"].compared == () and "subspace" not in E.ARMS
    assert [a.label for a in E.ARMS.values() if a.method == "lora"] == ["lora_qv", "lora_all"]


def test_counting_holds_no_method_formula():
    # issue #12: each method's count is one function in its method module; counting keeps the
    # model's total and the one unit LoRA's count and chapter 07's QLoRA memory share
    assert {n for n in dir(C) if n.endswith("_params")} == {"lora_matrix_params", "total_params"}
