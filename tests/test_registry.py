"""The method registry and the runner: every record's formula counts what its twin trains,
the NumPy and torch attachments agree, and the runner's protocol pieces behave."""
import numpy as np
import pytest
import torch

from pedagogy_lib import counting as C
from pedagogy_lib.lora import lora_params
from pedagogy_lib.prefix import num_prefix_params
from pedagogy_lib import runner
from pedagogy_lib.models import load_minilm
from pedagogy_lib.registry import METHODS, Arm, arms, get

SHAPE = C.minilm_shape()


def trainable(params) -> int:
    return sum(p.numel() for p in params if p.requires_grad)


def new_params(mm, base_names) -> int:
    """Parameters a method added (the kept ones, after ``inference``: a folded prefix)."""
    return sum(p.numel() for n, p in mm.net.named_parameters() if n not in base_names)


@pytest.mark.parametrize("name", [n for n, m in METHODS.items() if n != "prefix" and m.wrap is None])
def test_count_formula_is_what_the_torch_twin_trains(name):
    mm = runner.fresh_minilm()
    get(name).setup_torch(mm, seed=0)
    assert trainable(mm.net.parameters()) == get(name).params(SHAPE), name


def test_prefix_count_is_what_is_kept_after_folding():
    mm = runner.fresh_minilm()
    base = {n for n, _ in mm.net.named_parameters()}
    arm = Arm("prefix", "prefix")
    arm.setup_torch(mm, 0)
    assert trainable(mm.net.parameters()) > arm.params(SHAPE)  # the MLP trains, then is folded away
    arm.inference(mm)
    kept = sum(t.numel() for t in _prefix_tensors(mm))
    assert kept == arm.params(SHAPE) == num_prefix_params(10, SHAPE.hidden, SHAPE.layers)
    assert new_params(mm, base) >= 0


def _prefix_tensors(mm):
    from pedagogy_lib.torch_ref.prefix import prefix_tensors

    return [prefix_tensors(mm.bert)]


@pytest.mark.parametrize("name", [n for n, m in METHODS.items() if m.attach_numpy is not None and n != "prefix"])
def test_numpy_attachment_trains_the_same_count(name):
    mm = load_minilm()
    get(name).setup_numpy(mm, seed=0)
    assert mm.net.num_parameters(trainable_only=True) == get(name).params(SHAPE), name


def test_records_are_complete_and_grids_ascending():
    for name, m in METHODS.items():
        assert m.name == name and m.trains and callable(m.attach_torch) and callable(m.count)
        assert len(m.lrs) >= 1 and list(m.lrs) == sorted(m.lrs) and all(lr > 0 for lr in m.lrs), name


def test_arms_refuse_unknown_methods_options_and_duplicate_labels():
    with pytest.raises(ValueError, match="unknown method 'sorcery'"):
        Arm("x", "sorcery")
    with pytest.raises(ValueError, match="takes no option"):
        Arm("x", "lora", {"rank": 8})
    with pytest.raises(ValueError, match="two arms"):
        arms(Arm("a", "lora"), Arm("a", "bitfit"))
    a = Arm("lora r=4", "lora", {"r": 4}, lrs=(1e-3,))
    assert a.grid == (1e-3,) and a.params(SHAPE) == lora_params(SHAPE, 4)
    assert runner.as_arm("bitfit").grid == METHODS["bitfit"].lrs


def test_protocol_takes_the_best_mean_validation_and_breaks_ties_to_the_smaller_rate():
    """The rate choice (Eq. 8.1) as ``runner.protocol`` makes it, on made-up validation scores:
    the best validation accuracy averaged over the selection seeds; a tie goes to the smaller rate."""
    budget = runner.Budget(seeds=(0, 1, 2), select_seeds=2, max_extensions=0)
    lo, mid, hi = runner.as_arm("probe").grid

    def chosen(val: dict) -> dict:  # val: {(lr, seed): validation accuracy}, 0.5 elsewhere
        def run_fn(arm, task, b, seed, lr, data=None, measure=False):
            return {"method": arm.label, "lr": lr, "seed": seed, "val_acc": val.get((lr, seed), 0.5), "test_acc": 0.5}
        out = runner.protocol(["probe"], None, budget, progress=False, run_fn=run_fn)["probe"]
        return out["selection"]["chosen"], [(r["lr"], r["seed"]) for r in out["runs"]]

    assert chosen({(mid, s): 0.8 for s in (0, 1)} | {(hi, s): 0.8 for s in (0, 1)})[0] == mid  # a tie: the smaller
    assert chosen({(mid, s): 0.8 for s in (0, 1)} | {(hi, s): 0.81 for s in (0, 1)})[0] == hi
    # over the selection seeds the mean decides: hi has the best single run, mid the best mean
    lr, runs = chosen({(hi, 0): 0.9, (hi, 1): 0.6, (mid, 0): 0.8, (mid, 1): 0.8})
    assert lr == mid and runs == [(mid, 0), (mid, 1), (mid, 2)]  # then every seed at the chosen rate


def test_budget_and_run_refuse_bad_arguments():
    with pytest.raises(ValueError, match="invalid budget"):
        runner.Budget(n_eval=1)
    with pytest.raises(ValueError, match="learning rate"):
        runner.run("probe", None, runner.Budget(), 0, float("nan"))
    with pytest.raises(ValueError, match="jobs"):
        runner.Pool(0)


def test_splits_resample_per_seed_only_when_asked():
    from pedagogy_lib import data

    task = data.polarity_task()
    fixed, per_seed = runner.Budget(n_train=32, n_eval=16), runner.Budget(n_train=32, n_eval=16, resample=True)
    assert runner.splits(task, fixed, 1)[0].tokens == runner.splits(task, fixed, 0)[0].tokens
    assert runner.splits(task, per_seed, 1)[0].tokens != runner.splits(task, per_seed, 0)[0].tokens
    assert runner.splits(task, per_seed, 1)[1].tokens == runner.splits(task, fixed, 0)[1].tokens  # eval fixed
    assert len(runner.splits(task, runner.Budget(n_eval=None), 0)[2].tokens) == len(task.test)


def test_time_forward_noise_control_and_step_memory():
    torch.set_num_threads(1)
    net = runner.inference_net("probe")
    lat = runner.time_forward({"none": net, "again": net}, batch=2, seq_len=4, rounds=5, inner=1)
    assert lat["none"]["ratio"] == 1.0 and 0.5 < lat["again"]["ratio"] < 2.0
    with pytest.raises(ValueError, match="'none'"):
        runner.time_forward({"a": net}, 2, 4)
    mm = runner.fresh_minilm()
    get("bitfit").setup_torch(mm, 0)
    from pedagogy_lib.torch_ref.train import Classifier

    clf = Classifier(mm.net, seed=0)
    ids = torch.randint(1000, 2000, (4, 6))
    batch = (ids, torch.ones_like(ids), torch.tensor([0, 1, 0, 1]))
    m = runner.training_state_bytes(clf, batch)
    grads = 4 * trainable(clf.parameters())  # float32
    assert m["grads"] == grads and m["adam"] >= 2 * grads and m["activations"] > 0
    assert m["total"] == m["weights"] + m["grads"] + m["adam"] + m["activations"]


def test_run_is_seeded_and_counts_what_the_registry_says():
    from pedagogy_lib import data

    task = data.polarity_task()
    tiny = runner.Budget(n_train=16, n_eval=16, epochs=1, batch_size=8, seeds=(0,))
    a = runner.run("lora", task, tiny, 0, 1e-3)
    b = runner.run("lora", task, tiny, 0, 1e-3)
    assert (a["val_acc"], a["test_acc"], a["losses"]) == (b["val_acc"], b["test_acc"], b["losses"])
    assert a["trainable"] == METHODS["lora"].params(SHAPE)
    assert np.isfinite(a["final_loss"])


def test_subspace_wraps_the_classifier_and_the_runner_trains_z_only():
    """Chapter 01's θ0 + P z: the record's ``wrap`` replaces the whole classifier (encoder and
    head move with z); the runner trains exactly d numbers, seeded, and the head stays frozen."""
    from pedagogy_lib import data
    from pedagogy_lib.torch_ref.subspace import SubspaceModel
    from pedagogy_lib.torch_ref.train import Classifier, count_trainable

    arm = Arm("d=50", "subspace", {"d": 50}, lrs=(0.1,))
    mm = runner.fresh_minilm()
    arm.setup_torch(mm, 0)
    clf = arm.wrap_torch(Classifier(mm.net, seed=0), 0)
    assert isinstance(clf, SubspaceModel) and count_trainable(clf, exclude=None) == 50 == arm.params(SHAPE)
    assert clf.names[-1] == "head.bias" and not clf.model.head.weight.requires_grad
    with pytest.raises(ValueError, match="takes no option"):
        Arm("x", "subspace", {"rank": 8})
    with pytest.raises(ValueError, match="no NumPy version .it wraps the torch classifier"):
        get("subspace").setup_numpy(None, 0)
    with pytest.raises(TypeError, match="seed"):
        arm.wrap_torch(Classifier(mm.net, seed=0), "zero")
    tiny = runner.Budget(n_train=16, n_eval=16, epochs=1, batch_size=8, seeds=(0,))
    task = data.polarity_task()
    a, b = (runner.run(arm, task, tiny, 0, 0.1) for _ in range(2))
    assert a["trainable"] == 50 and (a["val_acc"], a["losses"]) == (b["val_acc"], b["losses"])
    assert runner.as_arm("lora").wrap_torch(clf, 0) is clf  # a method without ``wrap`` trains the classifier itself
