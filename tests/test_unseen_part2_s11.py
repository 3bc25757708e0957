"""Part II's decoder on inputs its other tests never use (session 11, task c).

Positions given as -1, 1.5 or True; a KV cache fed a position that does not continue it;
an empty batch; non-finite logits and all-zero masks in the NumPy loss and both torch
losses; a manifest that leaves a file unlisted; a truncated weights file; a lone surrogate
in a fine-tuning example; a prefix longer than the vocabulary; ``transformers``' Llama on
shapes no other test builds (vocabulary 2, head width 2, three query heads per kv head,
untied head, θ = 5·10⁵, right padding with an attention mask); finite differences with a
two-token vocabulary; and the BPE on scripts and marks the other lists lack."""
import json
import os
import shutil

import numpy as np
import pytest
import torch

from pedagogy_lib import bpe, decoder as D, decoder_io as IO, decoder_prefix as DP, decoder_tasks as T
from pedagogy_lib.torch_ref import decoder as TD, decoder_peft as TP
from test_unseen_decoder import ckpt  # noqa: F401 (the fixture: a tiny written checkpoint)
from twin_checks import decoder_pair, twin_logits

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def tiny(V=7, d=12, f=10, L=2, h=3, kv=1, T_max=9, tie=False, theta=10000.0, seed=0):
    """Head width 2 (the smallest RoPE can turn), three query heads per kv head, untied."""
    cfg = D.DecoderConfig(vocab_size=V, hidden_size=d, intermediate_size=f, num_hidden_layers=L,
                          num_attention_heads=h, num_key_value_heads=kv, max_position_embeddings=T_max,
                          tie_word_embeddings=tie, rope_theta=theta)
    return decoder_pair(cfg, seed, std=0.5, gain_seed=seed + 11)


# ------------------------------------------------------------------ positions and the KV cache
@pytest.mark.parametrize("pos0,err", [(-1, ValueError), (1.5, TypeError), (True, TypeError)])
def test_first_position_must_be_a_nonnegative_int(pos0, err):
    """pos0 = −1 or 1.5 turned RoPE by angles no position has, silently (both decoders)."""
    net, twin = tiny()
    ids = np.array([[1, 2, 3]])
    with pytest.raises(err, match="pos0"):
        net(ids, pos0)
    with pytest.raises(err, match="pos0"):
        twin_logits(twin, ids, pos0)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_cache_refuses_a_position_that_does_not_continue_it(backend):
    """After 3 cached tokens at positions 0–2 the next token is position 3. pos0 = 0 used to be
    accepted: its key was turned as position 0 and the logits were silently wrong. The refused
    call leaves the cache as it was, and the right pos0 still equals one full pass."""
    net, twin = tiny()
    run = (lambda x, p, c: net(x, p, c)) if backend == "numpy" else (lambda x, p, c: twin_logits(twin, x, p, c))
    cache = net.new_cache() if backend == "numpy" else twin.new_cache()
    ids = np.random.default_rng(1).integers(0, 7, (2, 5))
    full = net(ids)
    first = run(ids[:, :3], 0, cache)
    kept = [(c["k"].shape, c["end"]) for c in cache]
    for wrong in (0, 2, 4):
        with pytest.raises(ValueError, match="KV cache holds positions up to 2"):
            run(ids[:, 3:], wrong, cache)
    assert [(c["k"].shape, c["end"]) for c in cache] == kept
    rest = run(ids[:, 3:], 3, cache)
    assert np.abs(np.concatenate([first, rest], 1) - full).max() < 1e-12


def test_empty_batch_is_named():
    """Batch 0 ended in NumPy's 'zero-size array to reduction operation minimum'."""
    net, _ = tiny()
    with pytest.raises(ValueError, match="empty batch"):
        net(np.zeros((0, 3), np.int64))


# ------------------------------------------------------------------ losses
def test_next_token_loss_refuses_non_finite_logits_and_names_bad_mask_values():
    ids = np.array([[1, 2, 3]])
    logits = np.zeros((1, 3, 5))
    logits[0, 0, 4] = np.inf   # used to give loss NaN and NaN gradients
    with pytest.raises(ValueError, match="logits: contains 1 NaN/inf"):
        D.next_token_loss(logits, ids)
    with pytest.raises(ValueError, match=r"got values \[0.5 1. \]"):   # said 'got (1, 2)': the right shape
        D.next_token_loss(np.zeros((1, 3, 5)), ids, np.array([[0.5, 1.0]]))


def test_torch_losses_refuse_a_mask_that_selects_nothing():
    """The NumPy loss refuses an all-zero mask; both torch losses returned 0/0 = NaN."""
    logits, ids, mask = torch.zeros(2, 4, 5), torch.ones(2, 4, dtype=torch.long), torch.zeros(2, 3)
    for loss in (TD.next_token_loss, TP.masked_loss):
        with pytest.raises(ValueError, match="selects no target"):
            loss(logits, ids, mask)
    mask[1, 2] = 1   # one target: the mean over one, as the NumPy loss gives
    want = D.next_token_loss(np.zeros((2, 4, 5)), ids.numpy(), mask.numpy())[0]
    for loss in (TD.next_token_loss, TP.masked_loss):
        assert abs(loss(logits, ids, mask).item() - want) < 1e-6


# ------------------------------------------------------------------ checkpoints


def _changed_weights(folder):
    from safetensors.numpy import load_file, save_file

    w = load_file(str(folder / "model.safetensors"))
    w["model.norm.weight"] = 2 * w["model.norm.weight"]
    save_file(w, str(folder / "model.safetensors"))


@pytest.mark.parametrize("unlist", [["model.safetensors"], ["config.json", "model.safetensors", "tokenizer.json",
                                                            "training_log.json"]])
def test_manifest_must_list_every_file(ckpt, tmp_path, unlist):
    """A manifest without model.safetensors (or with no files at all) let changed weights load
    unverified."""
    folder = tmp_path / "m"
    shutil.copytree(ckpt, folder)
    m = json.loads((folder / "manifest.json").read_text())
    for f in unlist:
        del m["files"][f]
    (folder / "manifest.json").write_text(json.dumps(m))
    _changed_weights(folder)
    with pytest.raises(ValueError, match=r"lists no SHA-256 for \[.*'model.safetensors'"):
        IO.load_lm(folder=folder)


def test_truncated_weights_are_refused_with_or_without_a_manifest(ckpt, tmp_path):
    folder = tmp_path / "t"
    shutil.copytree(ckpt, folder)
    raw = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="model.safetensors: SHA-256 differs"):
        IO.load_lm(folder=folder)
    (folder / "manifest.json").unlink()
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        IO.load_lm(folder=folder)


# ------------------------------------------------------------------ tasks and prefixes
def test_fine_tuning_example_with_a_lone_surrogate_is_named(ckpt):
    """decoder_tasks.encode passed it to the tokenizer: 'TextInputSequence must be str'."""
    tok = bpe.DecoderTokenizer.from_file(ckpt / "tokenizer.json")
    with pytest.raises(ValueError, match="not valid Unicode"):
        T.encode(tok, "p", "\ud800")


def test_prefix_longer_than_the_vocabulary_is_named_and_changes_nothing():
    """P-Tuning v2 draws m distinct tokens; m > V raised NumPy's 'Cannot take a larger sample',
    and the torch twins had frozen the model first."""
    net, twin = tiny(V=5, T_max=9)
    with pytest.raises(ValueError, match="cannot draw m=6 distinct tokens from a vocabulary of 5"):
        DP.PrefixedDecoder(net, 6)
    assert all(a.prefix is None for a in (layer.self_attn for layer in net.model.layers))
    for make in (lambda: TP.PrefixedDecoder(twin, 6), lambda: TP.PromptedDecoder(twin, 6)):
        with pytest.raises(ValueError, match="cannot draw m=6"):
            make()
        assert all(p.requires_grad for p in twin.parameters())
    assert DP.PrefixedDecoder(net, 5).m == 5   # all five tokens: allowed


# ------------------------------------------------------------------ transformers on unseen shapes
@pytest.mark.parametrize("kw", [dict(V=2, d=4, f=3, L=1, h=2, kv=1, T_max=5, tie=True),
                                dict(theta=5e5, T_max=12)])
def test_equal_to_transformers_llama_on_unseen_shapes(kw):
    """Our decoder, its twin and LlamaForCausalLM with the same weights: batch 1 at length 1
    and at the full context, and a right-padded batch under an attention mask (the real
    positions must not notice the pads). transformers computes RoPE in float32, hence 1e-6."""
    from transformers import LlamaConfig, LlamaForCausalLM

    net, twin = tiny(**kw)
    cfg = net.config
    hf_cfg = {k: v for k, v in IO.hf_config(cfg, 0).items() if k not in ("architectures", "dtype")}
    hf = LlamaForCausalLM(LlamaConfig(**hf_cfg)).double().eval()
    hf.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in net.state_dict().items()},
                       strict=not cfg.tie_word_embeddings)
    rng = np.random.default_rng(4)
    full = rng.integers(0, cfg.vocab_size, (2, cfg.max_position_embeddings))
    mask = np.ones_like(full)
    mask[1, 3:] = 0
    for ids, am in ((full[:1, :1], None), (full[:1], None), (full, mask)):
        ours = net(ids)
        with torch.no_grad():
            theirs = hf(torch.from_numpy(ids), attention_mask=None if am is None else torch.from_numpy(am)).logits
        scale = max(1.0, np.abs(ours).max())
        real = np.ones(ids.shape, bool) if am is None else am.astype(bool)
        assert np.abs(theirs.numpy() - ours)[real].max() < 1e-6 * scale
        assert np.abs(twin_logits(twin, ids) - ours).max() < 1e-12 * scale


def test_backward_with_two_tokens_of_vocabulary_matches_finite_differences():
    """V = 2, head width 2, 3:1 grouped heads, untied, one target counted: float64 central
    differences on every parameter tensor (a few entries each)."""
    net, _ = tiny(V=2, T_max=4)
    ids = np.array([[0, 1, 1, 0]])
    mask = np.array([[0, 0, 1]])

    def loss():
        return D.next_token_loss(net(ids), ids, mask)[0]

    net.zero_grad()
    net.backward(D.next_token_loss(net(ids), ids, mask)[1])
    grads = dict(net.named_grads())
    rng = np.random.default_rng(0)
    for name, p in net.named_parameters():
        for i in rng.choice(p.size, min(3, p.size), replace=False):
            idx = np.unravel_index(i, p.shape)
            old = p[idx]
            p[idx] = old + 1e-6
            up = loss()
            p[idx] = old - 1e-6
            down = loss()
            p[idx] = old
            assert abs((up - down) / 2e-6 - grads[name][idx]) < 1e-6 * max(1.0, abs(grads[name][idx])), name


# ------------------------------------------------------------------ the BPE
UNSEEN = ["שלום עולם مرحبا بالعالم", "e\u0301\u0301 n\u0303", "\u2028\u2029\x0b\x0c", "ﬁ Ａ ℌ",
          "<|endoftext|><|endoftext|>", " <|endoftext|> ", "<|endoftext", "\x1b[31mred\x1b[0m"]


def test_bpe_round_trip_and_both_libraries_agree_on_unseen_scripts(ckpt):
    from transformers import PreTrainedTokenizerFast

    tok = bpe.DecoderTokenizer.from_file(ckpt / "tokenizer.json")
    fast = PreTrainedTokenizerFast(tokenizer_file=str(ckpt / "tokenizer.json"))
    for s in UNSEEN:
        ids = tok.encode(s)
        assert tok.decode(ids) == s
        assert ids.tolist() == fast.encode(s, add_special_tokens=False)
    assert tok.encode("<|endoftext|>").tolist() == [tok.eos_id]   # the literal is the special token
