"""Chapter 10's methods on the decoder: LoRA on our NumPy decoder against finite differences,
the torch methods against the NumPy originals, prompt tuning, batched greedy decoding. The
methods are built as the runner builds them: the registry's decoder arms."""
import numpy as np
import pytest
import torch

from pedagogy_lib import decoder as D, decoder_io as IO, ia3, lora as L, models
from pedagogy_lib.gradcheck import compare, numerical_grad
from pedagogy_lib.nn import get_submodule
from pedagogy_lib.registry import decoder_arm
from pedagogy_lib.torch_ref import decoder_peft as P, lora as TL
from pedagogy_lib.torch_ref.decoder import build_decoder


def build(label: str, seed: int = 0):
    """A decoder arm of the registry (``registry.DECODER_ARMS``) on a fresh stdlib-1m."""
    return decoder_arm(label).setup_decoder(IO.checkpoint_dir(), seed)


def tiny(seed=1):
    cfg = D.DecoderConfig(vocab_size=19, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16)
    return D.Decoder(cfg, seed=seed, dtype=np.float64, std=0.3)


@pytest.mark.parametrize("method", ["lora-all", "ia3"])
def test_peft_on_our_numpy_decoder_matches_finite_differences(method):
    """LoRA (all linear) and IA³ inside the decoder: the masked loss's gradients (Eq. 10.1) of
    every adapter parameter, by the hand-written backward and by central differences."""
    dec = tiny()
    rng = np.random.default_rng(0)
    if method == "lora-all":
        L.attach_lora(dec, "all-linear", r=2, alpha=4)
        for m in L.lora_layers(dec).values():
            m.p["lora_B"][...] = 0.3 * rng.standard_normal(m.p["lora_B"].shape)
    else:
        ia3.attach_ia3(dec, targets=r".*\.(k_proj|v_proj|down_proj)", feedforward=r".*\.down_proj")
        for m in ia3.ia3_layers(dec).values():
            m.p["ia3_l"][...] += 0.2 * rng.standard_normal(m.p["ia3_l"].shape)
    ids = rng.integers(0, 19, (2, 9))
    mask = np.zeros((2, 8), np.int64)
    mask[:, 4:] = 1                              # the "response": the last four targets

    def loss():
        return D.next_token_loss(dec(ids), ids, mask)[0]

    dec.zero_grad()
    _, dlogits = D.next_token_loss(dec(ids), ids, mask)
    dec.backward(dlogits)
    trained = dict(dec.named_parameters(trainable_only=True))
    assert trained and all(("lora_" in n) or ("ia3_l" in n) for n in trained)
    for name, p in trained.items():
        owner, leaf = name.rsplit(".", 1)
        num = numerical_grad(loss, p, max_entries=12)
        assert compare(get_submodule(dec, owner).g[leaf], num) < 1e-6, name


def test_torch_lora_decoder_equals_numpy():
    cfg, weights, tok, _ = IO.read_checkpoint(IO.checkpoint_dir())
    ours = models.load_decoder().net
    L.attach_lora(ours, P.BLOCK_LINEARS, r=8, alpha=16, seed=4)
    net = build_decoder(cfg, weights)
    TL.attach_lora(net, P.BLOCK_LINEARS, r=8, alpha=16, seed=4)
    rng = np.random.default_rng(5)
    for p, m in L.lora_layers(ours).items():
        B = (0.05 * rng.standard_normal(m.p["lora_B"].shape)).astype(np.float32)
        m.p["lora_B"][...] = B
        with torch.no_grad():
            TL.lora_layers(net)[p].lora_B.copy_(torch.from_numpy(B))
    x = rng.integers(1, cfg.vocab_size, (2, 30))
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    assert np.abs(ours(x) - ref).max() < 1e-4


def test_prompted_decoder_is_the_decoder_on_prepended_embeddings():
    """A soft prompt equal to the embeddings of tokens t₁…t_m gives the plain decoder's logits
    on [t₁…t_m, x] (positions included), sliced to x."""
    torch.manual_seed(0)
    net = build("prompt", seed=3)
    rows = np.random.default_rng(3).choice(net.config.vocab_size, P.PROMPT_TOKENS, replace=False)
    x = torch.randint(1, net.config.vocab_size, (2, 12))
    full = torch.cat([torch.from_numpy(rows)[None].expand(2, -1), x], 1)
    with torch.no_grad():
        assert torch.allclose(net(x), net.net(full)[:, P.PROMPT_TOKENS:], atol=1e-5)
    assert P.trainable(net) == P.PROMPT_TOKENS * net.config.hidden_size


def train_briefly(method: str):
    """Eight steps of ``method`` on one docstring, the loss on its last 6 tokens: (net, the
    parameters before, the losses). Shared with tests/test_decoder_prefix.py."""
    _, _, tok, _ = IO.read_checkpoint(IO.checkpoint_dir())
    net = build(method, seed=0)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    ids = np.tile(np.concatenate([[0], tok.encode("json.dumps(obj)\n\nSerialize obj."), [0]]), (8, 1))
    mask = np.zeros((8, ids.shape[1] - 1), np.int64)
    mask[:, -6:] = 1
    return net, before, P.train(net, ids, mask, lr=1e-2, steps=8, batch_size=4)


def test_training_moves_only_the_method_and_lowers_the_loss():
    net, before, losses = train_briefly("lora-qv")
    assert losses[-1] < losses[0]
    for n, p in net.named_parameters():
        assert torch.equal(p, before[n]) != ("lora_" in n), n


def test_qlora_ours_base_is_the_4bit_round_trip():
    cfg, weights, _, _ = IO.read_checkpoint(IO.checkpoint_dir())
    net = build("qlora-ours", seed=0)
    W = net.model.layers[3].mlp.down_proj.base_layer.weight.detach().numpy()
    assert np.array_equal(W, P.nf4_roundtrip(weights["model.layers.3.mlp.down_proj.weight"]))
    assert not np.array_equal(W, weights["model.layers.3.mlp.down_proj.weight"])


def test_batched_greedy_equals_one_at_a_time():
    lm = models.load_decoder()
    net = build_decoder(*IO.read_checkpoint(IO.checkpoint_dir())[:2])
    tok = lm.tokenizer
    prompts = [np.concatenate([[0], tok.encode(s)]) for s in ("class Queue", "json.loads(s)\n\n", "The for")]
    outs = P.greedy(net, prompts, 10, tok.eos_id)
    for p, o in zip(prompts, outs):
        want = lm.generate(p, 10)[p.size:]
        want = want[want != tok.eos_id]
        assert np.array_equal(o, want[: o.size]) and o.size == want.size
