"""The first unseen-input round's leftovers, each pinned: an optimiser that silently stopped
training, a dtype that was silently widened, a mask that gave NaN, BitFit sites missed behind a
LoRA/adapter wrapper, a float token stream truncated, a schedule that climbed again, strings
read as numbers, an error naming the wrong argument."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

from pedagogy_lib import adapters, bitfit, corpus, lora, lowrank, nn, prefix, stats
from pedagogy_lib.bert import BertConfig, BertEncoder

CFG = BertConfig(vocab_size=30, hidden_size=6, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=10, max_position_embeddings=8)


def _net(dtype=np.float32):
    return nn.Sequential(nn.Linear(3, 4, rng=np.random.default_rng(1), dtype=dtype), nn.GELU(),
                         nn.Linear(4, 2, rng=np.random.default_rng(2), dtype=dtype))


def _backward(net, dtype=np.float32):
    x = np.random.default_rng(3).standard_normal((5, 3)).astype(dtype)
    y = net(x)
    net.backward(np.ones_like(y))


def _snapshot(net):
    return {k: v.copy() for k, v in net.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)


# ----------------------------------------------------------------- 1. AdamW after astype / freeze
@pytest.mark.parametrize("change", ["freeze-unfreeze", "freeze-some", "astype64", "astype-same"])
def test_adamw_refuses_arrays_its_module_replaced(change):
    net = _net()
    opt = nn.AdamW(net.params_and_grads(), lr=0.1)
    dtype = np.float32
    if change == "freeze-unfreeze":
        net.freeze().unfreeze()
    elif change == "freeze-some":
        net.freeze(["bias"])       # a frozen bias must not keep moving by momentum and decay
    else:
        dtype = np.float64 if change == "astype64" else np.float32
        net.astype(dtype)
    _backward(net, dtype)
    before, t = _snapshot(net), opt.t
    for call in (opt.step, opt.zero_grad):
        with pytest.raises(ValueError, match="read-only.*build the optimiser again"):
            call()
    assert _same(before, _snapshot(net)) and opt.t == t
    # the remedy the message names works: a new optimiser trains the model
    opt = nn.AdamW(net.params_and_grads(), lr=0.1)
    opt.step()
    changed = [k for k, v in net.state_dict().items() if not np.array_equal(v, before[k])]
    assert changed == [k for k, _ in net.named_parameters(trainable_only=True)]


def test_adamw_without_replacement_still_trains_and_refuses_read_only_input():
    net = _net()
    opt = nn.AdamW(net.params_and_grads(), lr=0.1, weight_decay=0.0)
    for _ in range(2):  # zero_grad + step keep the same arrays: no false alarm
        opt.zero_grad()
        _backward(net)
        before = _snapshot(net)
        opt.step()
        assert all(not np.array_equal(v, before[k]) for k, v in net.state_dict().items())
    p = np.ones(3)
    p.flags.writeable = False
    with pytest.raises(ValueError, match="pair 0 holds a read-only array"):
        nn.AdamW([(p, np.zeros(3))])


# ----------------------------------------------------------------- 2. Linear's dtype (documented)
def test_linear_mixed_dtype_computes_wide_and_keeps_gradients_in_the_layers_dtype():
    """A float64 input to a float32 layer is accepted (book/ch03's identity check relies on it):
    y and dx are float64 and exact, dW and db stay float32 over repeated backward passes."""
    g = np.random.default_rng(4)
    lin = nn.Linear(3, 2, rng=g, dtype=np.float32)
    x, dy = g.standard_normal((5, 3)), g.standard_normal((5, 2))
    W, b = (lin.p[k].astype(np.float64) for k in ("weight", "bias"))
    y = lin(x)
    assert y.dtype == np.float64 and np.array_equal(y, x @ W.T + b)
    for n in (1, 2):
        dx = lin.backward(dy)
        assert dx.dtype == np.float64 and np.allclose(dx, dy @ W, rtol=1e-15)
        assert lin.g["weight"].dtype == lin.g["bias"].dtype == np.float32
        assert np.allclose(lin.g["weight"], n * dy.T @ x, rtol=1e-6)
        assert np.allclose(lin.g["bias"], n * dy.sum(0), rtol=1e-6)


# ----------------------------------------------------------------- 3. prefix attention with no real key
def test_prefix_attention_parts_refuses_a_row_with_no_real_key():
    g = np.random.default_rng(0)
    q, k, v = g.standard_normal((2, 3, 4)), g.standard_normal((2, 5, 4)), g.standard_normal((2, 5, 4))
    pk, pv = g.standard_normal((2, 2, 4)), g.standard_normal((2, 2, 4))
    keep = np.ones((2, 5), bool)
    keep[1] = False
    with pytest.raises(ValueError, match="no real token"):
        prefix.prefix_attention_parts(q, k, v, pk, pv, keep=keep)
    keep[1, 0] = True  # one real key is enough; the parts then rebuild the full attention
    lam, a_x, a_p = prefix.prefix_attention_parts(q, k, v, pk, pv, keep=keep)
    s_x = np.where(keep[:, None], q @ np.swapaxes(k, -1, -2), -np.inf)
    s = np.concatenate([q @ np.swapaxes(pk, -1, -2), s_x], -1) / 2.0  # 1/√d_h, d_h = 4
    full = nn.softmax(s) @ np.concatenate([pv, v], 1)
    assert np.allclose((1 - lam)[..., None] * a_x + lam[..., None] * a_p, full, atol=1e-12)


# ----------------------------------------------------------------- 4. BitFit sites behind a wrapper
@pytest.mark.parametrize("wrap", ["lora", "adapters"])
def test_bitfit_sites_find_wrapped_biases_numpy(wrap):
    sites = ("b_q", "b_v", "b_m1", "b_m3")
    want = bitfit.bias_names(BertEncoder(CFG, seed=1), sites)
    bert = BertEncoder(CFG, seed=1)
    if wrap == "lora":
        lora.attach_lora(bert, targets=("query", "value"), r=2)
        want = [n.replace("query.bias", "query.base_layer.bias")
                .replace("value.bias", "value.base_layer.bias") for n in want]
    else:
        adapters.attach_adapters(bert, "houlsby", 2)
        want = [n.replace("output.dense.bias", "output.dense.0.bias") for n in want]  # b_m1 and b_m3
    assert bitfit.bias_names(bert, sites) == want
    names = bitfit.apply_bitfit(bert, sites)
    assert [k for k, _ in bert.named_parameters(trainable_only=True)] == names == want


def test_bitfit_sites_find_wrapped_biases_torch():
    torch = pytest.importorskip("torch")
    from pedagogy_lib.torch_ref import bitfit as TBF
    from pedagogy_lib.torch_ref import lora as TL
    from pedagogy_lib.torch_ref.encoder import build_encoder

    tb = build_encoder(CFG, None, dtype=torch.float64, device="cpu")
    TL.attach_lora(tb, targets=("query",), r=2)
    bert = BertEncoder(CFG, seed=1)
    lora.attach_lora(bert, targets=("query",), r=2)
    assert TBF.bias_names(tb, bitfit.QM2) == bitfit.bias_names(bert, bitfit.QM2)
    assert "encoder.layer.1.attention.self.query.base_layer.bias" in TBF.bias_names(tb, bitfit.QM2)


# ----------------------------------------------------------------- 5. n-gram yardsticks on a float stream
def test_ngram_losses_refuses_a_non_integer_stream():
    ids = [0, 1, 2, 1, 0, 2]
    ok = corpus.ngram_losses(ids, ids, 3)
    for bad in ([0, 1.7, 2, 1], np.array(ids, float), ["0", "1", "2"]):
        with pytest.raises(TypeError, match="integer token ids"):
            corpus.ngram_losses(bad, ids, 3)
        with pytest.raises(TypeError, match="integer token ids"):
            corpus.ngram_losses(ids, bad, 3)
    assert corpus.ngram_losses(np.array(ids, np.uint16), np.array(ids, np.int32), 3) == ok
    for bad in (3.7, True, 0):  # a vocabulary size 3.7 used to become 3
        with pytest.raises((TypeError, ValueError), match="vocab_size"):
            corpus.ngram_losses(ids, ids, bad)
    assert corpus.ngram_losses(ids, ids, np.int64(3)) == ok


# ----------------------------------------------------------------- 6. the learning-rate schedule's tail
def test_lr_at_stays_at_the_floor_past_the_last_step():
    pytest.importorskip("torch")
    from pedagogy_lib.torch_ref import pretrain as P

    pc = P.PretrainConfig(steps=40, lr=1e-3, warmup=5, final_lr_fraction=0.1)
    lrs = [P.lr_at(pc, s) for s in range(3 * pc.steps)]
    assert all(b <= a + 1e-18 for a, b in zip(lrs[pc.warmup:], lrs[pc.warmup + 1:]))  # never climbs again
    assert math.isclose(lrs[pc.steps], pc.lr * pc.final_lr_fraction)
    assert all(math.isclose(x, pc.lr * pc.final_lr_fraction) for x in lrs[pc.steps:])
    assert min(lrs) > 0
    for bad in (-1, -2, 1.5, True):
        with pytest.raises((TypeError, ValueError), match="step"):
            P.lr_at(pc, bad)


# ----------------------------------------------------------------- 8. one-line argument checks
def test_paired_refuses_numeric_strings():
    for a in (["0.5", "0.7"], [0.5, "0.7"], np.array(["1", "2"])):
        with pytest.raises(TypeError, match="a must hold numbers"):
            stats.paired(a, [0.1, 0.2])
    assert stats.paired([0.5, 0.7], [0.1, 0.2])["n"] == 2


def test_amplification_factor_names_r_above_the_rank():
    W0, dW = np.diag([3.0, 2.0, 1.0]), np.diag([1.0, 0.5, 0.1])
    with pytest.raises(ValueError, match=r"^r must lie in \[1, 3\], got 5"):
        lowrank.amplification_factor(W0, dW, 5)
    assert math.isclose(lowrank.amplification_factor(W0, dW, 3), np.linalg.norm(dW) / np.linalg.norm(W0))


def test_threshold_dimension_refuses_a_bool_frac_or_reference():
    for bad in (True, "0.9"):
        with pytest.raises(TypeError, match="frac"):
            lowrank.threshold_dimension([10, 30], [0.5, 0.95], 1.0, frac=bad)
        with pytest.raises(TypeError, match="reference"):
            lowrank.threshold_dimension([10, 30], [0.5, 0.95], bad)
    assert lowrank.threshold_dimension([10, 30], [0.5, 0.95], 1.0, frac=np.float32(0.5)) == 10


@pytest.mark.parametrize("kw", [{"steps": 0}, {"steps": 2.5}, {"lr": float("nan")}, {"lr": 0.0},
                                {"warmup": -1}, {"final_lr_fraction": 1.5}, {"batch_size": True}, {"seed": -3}])
def test_pretrain_config_refuses_settings_no_run_could_use(kw):
    """PretrainConfig took any value: steps=0 or a NaN rate failed (or trained on NaN) much later."""
    from pedagogy_lib.torch_ref import pretrain as P
    with pytest.raises((TypeError, ValueError)):
        P.PretrainConfig(**({"steps": 10, "lr": 1e-3} | kw))
    assert P.PretrainConfig(steps=1, lr=1e-3).warmup == 50  # a run that ends while warming up is allowed


@pytest.mark.parametrize("text, what", [('{"a": 1, "a": 2}', "repeats the key 'a'"),
                                        ('{"x": {"b": 1, "c": 2, "b": 3}}', "repeats the key 'b'"),
                                        ('{"n": ' + "1" * 5000 + "}", "f.json: ")])
def test_parse_json_names_repeated_keys_and_overlong_integers(text, what):
    """A repeated key was silently resolved to its last value; a 5000-digit integer raised
    Python's own ValueError without naming the file."""
    from pedagogy_lib import checks
    with pytest.raises(ValueError, match=re.escape(what)):
        checks.parse_json(text, "f.json")


# ----------------------------------------------------------------------------- the review's findings
def test_ia3_merge_judges_the_product_as_it_will_be_stored():
    """A float64 l on a float32 W computed wide, looked finite, and stored inf (NumPy); the same
    for a float32 l on a float16 torch base."""
    import torch
    from pedagogy_lib import ia3
    from pedagogy_lib.nn import Linear
    from pedagogy_lib.torch_ref import ia3 as tia3
    lin = Linear(2, 2, dtype=np.float32)
    lin.p["weight"][...] = 1e30
    layer = ia3.IA3Linear(lin, False)
    layer.p["ia3_l"] = np.array([1e10, 1.0])
    W = lin.p["weight"].copy()
    with pytest.raises(ValueError, match="overflow or underflow"):
        layer.merge()
    assert np.array_equal(lin.p["weight"], W) and not layer.merged
    base = torch.nn.Linear(2, 2).half()
    with torch.no_grad():
        base.weight.fill_(1000.0)
    t = tia3.IA3Linear(base, False)
    t.ia3_l = torch.nn.Parameter(torch.tensor([100.0, 1.0]))   # float32, as peft keeps adapters
    Wt = base.weight.detach().clone()
    with pytest.raises(ValueError, match="overflow or underflow"):
        t.merge()
    assert torch.equal(base.weight, Wt)


def test_a_budget_of_numpy_numbers_is_stored_as_plain_json():
    """Budget(seeds=np.arange(2)) was accepted, then the run log failed to write it."""
    import json
    from dataclasses import asdict
    from pedagogy_lib import runner
    b = runner.Budget(seeds=np.arange(2), n_train=np.int64(10), n_eval=np.int64(4), head_lr=np.float32(0.5))
    assert json.loads(json.dumps(asdict(b)))["seeds"] == [0, 1] and b.seeds == (0, 1)
    assert runner.Budget(seeds=[0, 1, 2]) == runner.Budget()


def test_a_float32_part_of_an_answer_does_not_widen_an_exact_comparison():
    from pedagogy_lib.book.exercises import NotYet, attempt, expect_close
    out = attempt(lambda: (1_000_005, np.float32(0.5)))
    with pytest.raises(NotYet, match="differs"):
        expect_close(out[0], 1_000_000, "count", rtol=1e-9, atol=0)
    expect_close(out[1], 0.5 + 1e-8, "half", rtol=1e-9, atol=0)   # the float32 part is still widened


@pytest.mark.parametrize("n, want", [(9.995e11, "1T"), (1.5e12, "1.5T"), (1.5e15, "1,500T"), (175e9, "175B")])
def test_human_has_a_unit_past_billions(n, want):
    """human(9.995e11) printed '1e+03B'."""
    from pedagogy_lib.counting import human
    assert human(n) == want


def test_boolean_names_a_numpy_bool():
    from pedagogy_lib import checks
    with pytest.raises(TypeError, match="a NumPy bool"):
        checks.boolean(np.True_, "rslora")
    assert checks.boolean(True, "rslora") is True


def test_stored_grids_with_a_diverged_rate_are_read_not_crashed_on(monkeypatch):
    """sentences.adapter_4x_ch03 and evidence.ch05.best_prompt raised TypeError on a None score."""
    from pedagogy_lib.book.evidence import ch05 as E5
    sweep = {"arms": {"prompt-random": {}, "prompt-vocab": {}}}
    grids = {"prompt-random": {"0.1": None, "0.3": 0.7}, "prompt-vocab": {"0.1": 0.8, "0.3": None}}
    monkeypatch.setattr(E5, "val_grid", lambda s, k: grids[k])
    assert E5.best_prompt(sweep) == "prompt-vocab"
