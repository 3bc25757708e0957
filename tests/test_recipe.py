"""Chapter 10: the real QLoRA recipe on CPU and its cross-checks against our code.

Texts the tests use are random token ids and docstrings of modules held out of pretraining
(chosen here, not printed anywhere in the chapter)."""
import json
import warnings

import numpy as np
import pytest
import torch

from pedagogy_lib import decoder as D, decoder_io as IO, decoder_tasks as T, lora as L, models, peft_io
from pedagogy_lib.registry import get

pytest.importorskip("peft")
pytest.importorskip("bitsandbytes")
from pedagogy_lib.torch_ref import decoder_peft as P, recipe as RC  # noqa: E402

warnings.filterwarnings("ignore", category=UserWarning)


@pytest.fixture(scope="module")
def ckpt():
    folder = IO.checkpoint_dir()
    cfg, weights, tok, _ = IO.read_checkpoint(folder)
    return folder, cfg, weights, tok


@pytest.fixture(scope="module")
def trained(ckpt):
    """The recipe: 4-bit NF4 + DQ base, prepare_model_for_kbit_training, LoRA all-linear,
    PagedAdamW8bit, three steps on held-out text (fp32 compute, so ours can match exactly)."""
    folder, cfg, weights, tok = ckpt
    pm = RC.recipe_model(folder, r=4, alpha=8, seed=5, compute_dtype=torch.float32)
    ex = T.line_task()["test"][-6:]
    ids, m = T.batch(tok, ex)
    log = RC.train_steps(pm, ids, m, steps=3, lr=2e-2)
    return pm, log


def test_recipe_trains_only_lora_and_the_loss_falls(trained):
    pm, log = trained
    names = [n for n, p in pm.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert len(names) == 2 * 7 * 4          # A and B on 7 linears in each of 4 blocks
    assert log["losses"][-1] < log["losses"][0]
    assert log["paged_state_tensors"] == 0  # on CPU nothing is paged
    assert log["state_dtypes"] == ["float32"]  # every LoRA tensor is below bnb's 4096-element 8-bit floor


def test_stored_bytes_equal_ours(trained, ckpt):
    pm, _ = trained
    check = RC.stored_bytes_check(pm, ckpt[2])
    assert check["layers"] == 28 and check["packed_identical"] == 28
    assert check["absmax_codes_differing"] <= 0.01 * check["absmax_codes"]


def test_numpy_twin_gives_the_peft_logits(trained, ckpt):
    pm, _ = trained
    _, cfg, weights, tok = ckpt
    ours = RC.numpy_twin(pm, weights, cfg)
    x = np.random.default_rng(11).integers(1, cfg.vocab_size, (2, 40))
    with torch.no_grad():
        ref = pm(input_ids=torch.from_numpy(x)).logits.float().numpy()
    assert np.abs(ours(x) - ref).max() < 1e-4 * np.abs(ref).max()
    assert any(np.abs(m.p["lora_B"]).max() > 0 for m in L.lora_layers(ours).values())  # trained, not B = 0


@pytest.fixture(scope="module")
def our_adapter(ckpt, tmp_path_factory):
    lm = models.load_decoder()
    L.attach_lora(lm.net, "all-linear", r=4, alpha=8, seed=3)
    rng = np.random.default_rng(2)
    for m in L.lora_layers(lm.net).values():
        m.p["lora_B"][...] = (0.05 * rng.standard_normal(m.p["lora_B"].shape)).astype(np.float32)
    d = tmp_path_factory.mktemp("ours")
    peft_io.save_adapter(lm, d)
    return lm, d


def _prompt(tok, i):
    return np.concatenate([[tok.eos_id], tok.encode(T.line_task()["test"][i].prompt)])


def test_our_adapter_loads_in_peft_full_precision_same_tokens(our_adapter, ckpt):
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    folder, _, _, tok = ckpt
    lm, d = our_adapter
    pm = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(str(folder), dtype=torch.float32), str(d))
    for i in (7, 40):
        p = _prompt(tok, i)
        assert np.array_equal(RC.generate(pm, tok, p, 20), lm.generate(p, 20)[p.size:])


def test_our_adapter_loads_in_peft_4bit_same_tokens_and_merges_like_ours(our_adapter, ckpt):
    from peft import PeftModel

    from pedagogy_lib.torch_ref.qlora import read_quant_state

    folder, cfg, weights, tok = ckpt
    _, d = our_adapter
    pm4 = PeftModel.from_pretrained(RC.load_4bit(folder, compute_dtype=torch.float32), str(d))
    twin = RC.numpy_twin(pm4, weights, cfg)
    p = _prompt(tok, 21)
    theirs = RC.generate(pm4, tok, p, 20)
    assert np.array_equal(theirs, D.generate(twin, p, 20)[p.size:][: theirs.size])
    # merging into the 4-bit base: peft dequantises, adds s·BA and quantises again, as ours does
    path = "base_model.model.model.layers.2.mlp.up_proj"
    lay = dict(pm4.named_modules())[path]
    W_hat = read_quant_state(lay.base_layer).dequantize()
    delta = lay.scaling["default"] * (lay.lora_B["default"].weight @ lay.lora_A["default"].weight).detach().numpy()
    ours = RC.merge_4bit(W_hat, delta)
    merged = pm4.merge_and_unload()
    stored = read_quant_state(dict(merged.named_modules())["model.layers.2.mlp.up_proj"])
    assert np.array_equal(stored.packed, ours["packed"])      # the same 4-bit codes
    # the 8-bit block-scale codes agree except at float32 rounding midpoints (bnb's CPU encoder,
    # and its mean of the scales, the double-quantisation offset, in the last bit)
    assert np.count_nonzero(stored.absmax != ours["scales"]) <= 0.01 * stored.absmax.size
    assert 0.05 < ours["rel_error"] < 2.0     # the second rounding is not small against ΔW


def test_peft_adapter_and_save_pretrained_load_into_ours(trained, ckpt, tmp_path):
    pm, _ = trained
    folder, cfg, weights, tok = ckpt
    pm.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["task_type"] == "CAUSAL_LM"
    lm = models.load_decoder()
    loaded = peft_io.load_adapter(lm, tmp_path)
    assert len(loaded) == 28
    for p, m in L.lora_layers(lm.net).items():
        ref = dict(pm.named_modules())[f"base_model.model.{p}"]
        assert np.array_equal(m.p["lora_A"], ref.lora_A["default"].weight.detach().numpy())


def test_merge_in_float_keeps_greedy_tokens(our_adapter, ckpt):
    lm, _ = our_adapter
    tok = ckpt[3]
    p = _prompt(tok, 60)
    before = lm.generate(p, 20)
    L.merge_all(lm.net)
    try:
        assert np.array_equal(before, lm.generate(p, 20))
    finally:
        L.unmerge_all(lm.net)


def test_our_qlora_base_equals_what_bitsandbytes_multiplies_with(ckpt):
    folder, cfg, weights, tok = ckpt
    hf4 = RC.load_4bit(folder, compute_dtype=torch.float32)
    from pedagogy_lib.torch_ref.qlora import bnb_computed_weight

    lay = dict(hf4.named_modules())["model.layers.1.self_attn.v_proj"]
    ours = P.nf4_roundtrip(weights["model.layers.1.self_attn.v_proj.weight"])
    assert np.array_equal(ours, bnb_computed_weight(lay))


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="quant_type"):
        RC.bnb_config("int8")
    with pytest.raises(ValueError, match="'bitfit' has no decoder form"):
        get("bitfit").setup_decoder(IO.checkpoint_dir(), 0)
    with pytest.raises(ValueError, match="block linear"):
        RC.layer_path("lm_head")


def test_optimizer_state_counts_the_shared_8bit_maps_once():
    # bitsandbytes gives every 8-bit state the same two 256-entry maps (qmap1/qmap2): memory
    # holds them once, so three tensors of 4,096 elements cost 3·2·4,096 bytes + 2·1 kB (+ absmax)
    from pedagogy_lib.torch_ref.qlora import bnb

    ps = [torch.nn.Parameter(torch.randn(4096)) for _ in range(3)]
    opt = bnb().optim.AdamW8bit(ps, lr=1e-3)
    for p in ps:
        p.grad = torch.ones_like(p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt.step()
    st = RC.optimizer_state(opt)
    maps = {id(s[k]) for s in opt.state.values() for k in ("qmap1", "qmap2")}
    assert len(maps) == 2  # shared: the premise of the count
    absmax = sum(s[k].numel() * 4 for s in opt.state.values() for k in ("absmax1", "absmax2"))
    assert st["state_bytes"] == 3 * 2 * 4096 + 2 * 256 * 4 + absmax
    assert st["state_tensors"] == 3 * 4 + 2
