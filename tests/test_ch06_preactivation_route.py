"""Chapter 06's stored pre-activation study claims to repeat the chapter's live BitFit run (the
sweep's seed-0 run at n = 512). It trained its own way: ``TrainConfig(head_lr=config["head_lr"])``,
and the curve's config stores ``head_lr`` None (the runner's rule max(lr, 1e-3)), so the head
trained at lr instead — the same on the stored rate 0.01, not on a rate below 1e-3. Now it goes
through ``runner.train_arm`` with the size's budget, like the live run; checked here without
training (the loop and the GELU read-out are replaced by recorders)."""
import numpy as np
import torch

from pedagogy_lib import runner
from pedagogy_lib.book.ch06 import experiment as E
from pedagogy_lib.torch_ref import train as T


def test_preactivation_study_trains_as_the_live_run_does(monkeypatch):
    stored = E.load("ch06_learning_curve")
    curve = {"config": dict(stored["config"]),
             "results": {"BitFit": dict(stored["results"]["BitFit"], lr=5e-4)}}  # a rate below 1e-3
    monkeypatch.setattr(E, "load", lambda name: curve)
    monkeypatch.setattr(E, "load_minilm_torch", lambda device="cpu": runner.fresh_minilm())
    seen = []

    def record(model, train, val=None, cfg=None):
        trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
        seen.append({"cfg": cfg, "ids": np.asarray(train.ids).copy(), "trainable": trainable})
        return T.History()

    monkeypatch.setattr(T, "train_classifier", record)
    monkeypatch.setattr(runner, "train_classifier", record)
    monkeypatch.setattr(E, "preactivation_data", lambda before, after, tok, words, layer: {"layer": layer})
    torch.manual_seed(0)
    assert E._default_preactivation_data() == {"layer": 5}
    # the live run of §5, as the chapter makes it
    n = curve["config"]["lr_selected_at_n"]
    b = E.budget(n, tuple(curve["config"]["seeds"]))
    task = E.data.polarity_task()
    runner.train_arm(E.ARMS["BitFit"], 0, runner.splits(task, b, seed=0)[0], 5e-4, b)
    study, live = seen
    assert (study["cfg"].head_lr or study["cfg"].lr) == max(5e-4, 1e-3)  # the runner's head rate
    assert study["cfg"] == live["cfg"]
    assert np.array_equal(study["ids"], live["ids"]) and study["trainable"] == live["trainable"]
