"""Chapter 11's methods come from the registry (pedagogy_lib/distributed.py, registry.PEFT_DECODER_METHODS).

Each method's twin and peft forms must build the very models chapter 11's stored results were
made with: the settings those results record (chapters/results/ch11_scaling.json, "config"),
applied by hand, give bit-identical losses and parameters after a training step.
"""
import numpy as np
import pytest
import torch

from pedagogy_lib import distributed as D
from pedagogy_lib import registry
from pedagogy_lib.book.ch11 import experiment as E


@pytest.fixture(scope="module")
def stored_config():
    return E.load()["config"]


@pytest.fixture(scope="module")
def batch():
    return torch.from_numpy(D.make_batch(2, 16))


def one_step(model, ids):
    """One AdamW step (as ``reference_run``): the loss before it and the trainable parameters after."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss = D.loss_of(model, ids)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item(), D.trainable(model)


def ours(targets):
    """peft's target_modules as our twins take them: a regex string as it is, a list as a tuple."""
    return targets if isinstance(targets, str) else tuple(targets)


def by_hand_twin(method, cfg):
    from pedagogy_lib.models import load_decoder
    from pedagogy_lib.torch_ref.ia3 import attach_ia3
    from pedagogy_lib.torch_ref.lora import attach_lora

    model = load_decoder(cfg["checkpoint"], backend="torch").net.train()
    if method == "lora":
        lo = cfg["lora"]
        attach_lora(model, ours(lo["target_modules"]), r=lo["r"], alpha=lo["lora_alpha"], seed=0)
    elif method == "ia3":
        ia = cfg["ia3"]
        attach_ia3(model, targets=ours(ia["target_modules"]), feedforward=ours(ia["feedforward_modules"]))
    return model


def by_hand_peft(method, cfg):
    import transformers
    from peft import IA3Config, LoraConfig, get_peft_model

    from pedagogy_lib.decoder_io import checkpoint_dir

    transformers.logging.set_verbosity_error()
    model = transformers.LlamaForCausalLM.from_pretrained(str(checkpoint_dir(cfg["checkpoint"])), dtype=torch.float32)
    torch.manual_seed(0)
    if method == "full":
        return model
    return get_peft_model(model, (LoraConfig if method == "lora" else IA3Config)(**cfg[method]))


def test_chapter_11_trains_exactly_the_registry_methods_with_a_peft_form():
    assert registry.PEFT_DECODER_METHODS == ("full", "lora", "ia3")
    for name in registry.PEFT_DECODER_METHODS:
        assert registry.get(name).decoder.peft is not None
    with pytest.raises(ValueError, match="no peft form"):
        registry.get("prompt").peft_args()
    with pytest.raises(ValueError, match="no decoder form"):
        registry.get("houlsby").peft_args()
    with pytest.raises(ValueError, match="unknown method 'prompt'"):
        D.load_model("prompt")


@pytest.mark.parametrize("impl", D.IMPLS)
@pytest.mark.parametrize("method", registry.PEFT_DECODER_METHODS)
def test_registry_forms_equal_the_stored_runs_settings(stored_config, batch, method, impl):
    by_hand = (by_hand_twin if impl == "twin" else by_hand_peft)(method, stored_config)
    loss0, want = one_step(by_hand, batch)
    loss1, got = one_step(D.load_model(method, stored_config["checkpoint"], seed=0, impl=impl), batch)
    assert loss1 == loss0
    assert list(got) == list(want)
    assert all(np.array_equal(got[k].numpy(), want[k].numpy()) for k in want)
