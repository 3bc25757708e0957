"""Chapter 10 through the one registry and the one runner: the decoder arms are registry
records, ``runner.decoder_protocol`` reproduces the stored selections and run lists of
``chapters/results/ch10_*.json`` from their own validation scores, and ``runner.run_decoder``
gives the numbers the code that produced those files gave (recorded at 58269c7)."""
import copy
import dataclasses
import json
import pathlib

import pytest
import torch

from pedagogy_lib import decoder_io as IO, runner
from pedagogy_lib.book.ch10 import experiment as E, studies as S, tasks as TK
from pedagogy_lib.registry import DECODER_ARMS, Arm, decoder_arm, get
from pedagogy_lib.torch_ref import decoder_peft as P

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "chapters" / "results"


def stored(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())


def replay(res: dict, arms, score, extensions: int) -> dict:
    """The protocol run again, each training run replaced by its stored record."""
    by_key = {(r["method"], r["lr"], r["seed"]): r for r in res["runs"]}

    def fake_run(arm, task, seed, lr, bar=None, name=None):
        return copy.deepcopy(by_key[(arm.label, lr, seed)]), None

    task = runner.DecoderTask(res.get("task", "x"), (None, None), None, score, 1, 1, tuple(res.get("seeds", (0, 1, 2))))
    out = {"runs": [], "selection": {}}
    return runner.decoder_protocol(arms, task, out=out, extensions=extensions, run_fn=fake_run)


@pytest.mark.parametrize("name", ["ch10_area", "ch10_line", "ch10_scale"])
def test_protocol_replays_the_stored_selection_and_runs(name):
    """Same grids (the registry's), same rate search, same runs in the same order."""
    res = stored(name)
    arms = [a for a in DECODER_ARMS if a in res["selection"]]
    assert {a: list(DECODER_ARMS[a].grid) for a in res["grids"]} == res["grids"]
    out = replay(res, arms, lambda ev: TK.score(res["task"], ev), res.get("extensions", 1))
    assert out["selection"] == res["selection"] and out["runs"] == res["runs"]


def test_vader_protocol_replays_its_stored_selection():
    res = stored("ch10_vader")
    out = replay(res, S.VADER_ARMS, float, 1)
    assert out["selection"] == res["selection"]
    key = lambda r: (r["method"], r["lr"], r["seed"])  # noqa: E731
    assert sorted(out["runs"], key=key) == sorted(res["runs"], key=key)


def test_every_arm_of_the_stored_results_is_a_registry_arm_with_its_trainable_count():
    res = stored("ch10_area")
    trainable = {r["method"]: r["trainable"] for r in res["runs"]}
    assert set(trainable) == set(DECODER_ARMS)
    for label, arm in DECODER_ARMS.items():
        if not arm.paged8:   # the real recipe needs bitsandbytes; tests/test_recipe.py covers it
            assert P.trainable(arm.setup_decoder(IO.checkpoint_dir(), 0)) == trainable[label], label


def test_a_method_without_a_decoder_form_or_a_wrong_option_is_refused_by_name():
    for name in ("bitfit", "houlsby", "deep_prompt"):
        with pytest.raises(ValueError, match=f"'{name}' has no decoder form"):
            get(name).setup_decoder(IO.checkpoint_dir(), 0)
        with pytest.raises(ValueError, match=f"'{name}' has no decoder form"):
            Arm("x", name, model="decoder")
    with pytest.raises(ValueError, match="'lora' on the decoder takes no option"):
        Arm("x", "lora", {"alpha": 4}, model="decoder")       # α = 2r on the decoder
    with pytest.raises(ValueError, match="unknown decoder arm"):
        decoder_arm("lora")
    with pytest.raises(ValueError, match="runs on the decoder, not on the encoder"):
        DECODER_ARMS["lora-qv"].setup_torch(None, 0)
    with pytest.raises(ValueError, match="runs on the encoder, not on the decoder"):
        decoder_arm(Arm("x", "lora"))
    assert get("lora").decoder_opts(r=4)["r"] == 4 and DECODER_ARMS["qlora-recipe"].paged8


# runner.run_decoder on small slices (4 steps, 32 evaluation examples): the numbers the
# pre-registry code (experiment.run at 58269c7) gave for the same calls on this machine.
BEFORE = {("area", "lora-qv", 1e-2, 1): (5.3180530071258545, {"acc": 0.15625}, {"acc": 0.125}),
          ("area", "prompt", 3e-2, 0): (5.692193388938904, {"acc": 0.0}, {"acc": 0.0}),
          ("line", "ptuning-v2", 3e-2, 2): (3.3491514921188354, {"loss": 3.8631637153645775, "ppl": 47.61575602357157},
                                            {"loss": 4.135121761856523, "ppl": 62.49720038234017})}


def small(d: dict, n: int) -> dict:
    out = dict(d)
    for s in ("val", "test"):
        out[s] = tuple(a[:n] for a in d[s])
        if f"{s}_prompts" in d:
            out[f"{s}_prompts"], out[f"{s}_labels"] = d[f"{s}_prompts"][:n], d[f"{s}_labels"][:n]
    return out


@pytest.mark.parametrize("task", ["area", "line"])
def test_run_decoder_gives_the_numbers_of_the_code_before_the_registry(task):
    torch.set_num_threads(1)
    _, _, tok, _ = IO.read_checkpoint(IO.checkpoint_dir())
    t = dataclasses.replace(TK.decoder_task(task, tok, small(TK.prepare(task, tok), 32)), steps=4)
    for (tk, label, lr, seed), (loss, val, test) in BEFORE.items():
        if tk != task:
            continue
        rec, _ = runner.run_decoder(label, t, seed, lr)
        assert (rec["method"], rec["lr"], rec["seed"], rec["task"]) == (label, lr, seed, task)
        assert rec["final_loss"] == pytest.approx(loss, rel=1e-6), label
        for got, want in ((rec["val"], val), (rec["test"], test)):
            assert got == pytest.approx(want, rel=1e-6), label


def test_the_chapter_runs_every_registry_arm_and_stores_the_searched_grids():
    assert E.ARMS == list(DECODER_ARMS)
    searched = {a for a, arm in DECODER_ARMS.items() if arm.rate_from is None}
    assert set(E.GRIDS) == searched == set(DECODER_ARMS) - {"qlora-recipe"}
