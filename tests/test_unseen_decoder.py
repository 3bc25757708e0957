"""Chapter 09–11's decoder on inputs the other tests never use (session 9, task U4).

Positions offset without a KV cache and caches that start at an offset (RoPE's relative
property, Eq. 9.5, and causality, Eq. 9.6), gradients against torch autograd on edge shapes,
generation at the context's edges, config and checkpoint files of the wrong kind, the BPE
on text it never saw, the response mask of a truncated example, and the distributed
launcher's batch checks (all before any process starts)."""
import json
import shutil

import numpy as np
import pytest
import torch

from pedagogy_lib import bpe, decoder as D, decoder_io as IO, decoder_tasks as T, distributed as DIST
from pedagogy_lib.torch_ref import decoder as TD
from twin_checks import decoder_pair, twin_logits

V = 23


def tiny(T_max=10, h=4, kv=2, d=16, f=24, L=2, tie=True, seed=1):
    cfg = D.DecoderConfig(vocab_size=V, hidden_size=d, intermediate_size=f, num_hidden_layers=L,
                          num_attention_heads=h, num_key_value_heads=kv, max_position_embeddings=T_max,
                          tie_word_embeddings=tie)
    return decoder_pair(cfg, seed, std=0.4, gain_seed=seed + 7)


# ------------------------------------------------------------------ positions and the mask
@pytest.mark.parametrize("pos0", [1, 4, 6])
def test_offset_without_cache_is_causal_and_only_relative(pos0):
    """Without a cache the keys are the T tokens themselves: the mask must stay causal, and
    RoPE's scores depend only on m − n (Eq. 9.5), so shifting every position changes nothing.
    (The mask used to compare key j with pos0 + i: every query saw pos0 future tokens.)"""
    net, twin = tiny()
    ids = np.random.default_rng(pos0).integers(0, V, (2, 4))
    ref = net(ids, 0)
    for got in (net(ids, pos0), twin_logits(twin, ids, pos0)):
        assert np.abs(got - ref).max() < 1e-10
    later = ids.copy()
    later[:, -1] = (later[:, -1] + 1) % V
    assert np.array_equal(net(ids, pos0)[:, :-1], net(later, pos0)[:, :-1])


def test_cache_started_at_an_offset_equals_recomputation():
    """A cache whose first entry is position 3: the keys are the S latest positions. Both the
    NumPy decoder and the twin (whose cached mask assumed the cache began at 0) must agree
    with one full pass at the same offset."""
    net, twin = tiny()
    ids = np.random.default_rng(0).integers(0, V, (1, 6))
    full = net(ids, 3)
    c_np, c_t = net.new_cache(), twin.new_cache()
    np_steps = [net(ids[:, :2], 3, c_np), net(ids[:, 2:5], 5, c_np), net(ids[:, 5:], 8, c_np)]
    t_steps = [twin_logits(twin, ids[:, :2], 3, c_t), twin_logits(twin, ids[:, 2:5], 5, c_t),
               twin_logits(twin, ids[:, 5:], 8, c_t)]
    assert np.abs(np.concatenate(np_steps, 1) - full).max() < 1e-12
    assert np.abs(np.concatenate(t_steps, 1) - full).max() < 1e-12


# ------------------------------------------------------------------ backward on edge shapes
@pytest.mark.parametrize("shape,kw", [
    ((1, 10), dict(T_max=10)),                                    # batch 1, sequence = context
    ((3, 2), dict(h=1, kv=1, d=2, f=3, L=1)),                     # one head of width 2, length 2
    ((2, 7), dict(T_max=7, h=6, kv=2, d=12, f=5, tie=False)),     # 3 query heads per kv head, untied
])
def test_backward_equals_torch_autograd_float64(shape, kw):
    net, twin = tiny(**kw)
    ids = np.random.default_rng(3).integers(0, V, shape)
    net.zero_grad()
    loss, dlogits = D.next_token_loss(net(ids), ids)
    net.backward(dlogits)
    t = torch.from_numpy(ids)
    tloss = TD.next_token_loss(twin(t), t)
    tloss.backward()
    assert abs(tloss.item() - loss) < 1e-12
    tg = {n: p.grad.numpy() for n, p in twin.named_parameters()}
    assert set(tg) == {n for n, _ in net.named_grads()}
    for name, g in net.named_grads():
        assert np.abs(tg[name] - g).max() <= 1e-12 * max(1.0, np.abs(g).max()), name


# ------------------------------------------------------------------ generation at the edges
@pytest.mark.parametrize("prompt,n", [([3], 9), ([3], 0), (list(range(10)), 0), (list(range(1, 10)), 1)])
def test_generation_equal_everywhere(prompt, n):
    net, twin = tiny()
    ids = np.array(prompt)
    ref = list(prompt)
    for _ in range(n):   # no cache, no shortcut: the argmax of a fresh full pass
        ref.append(int(np.argmax(net(np.array([ref]))[0, -1])))
    tids = torch.from_numpy(ids)
    for got in (D.generate(net, ids, n), D.generate(net, ids, n, use_cache=False),
                TD.generate(twin, tids, n).numpy(), TD.generate(twin, tids, n, use_cache=False).numpy()):
        assert got.dtype == np.int64 and got.tolist() == ref


# ------------------------------------------------------------------ configs
@pytest.mark.parametrize("field,value,err,msg", [
    ("tie_word_embeddings", "false", TypeError, "tie_word_embeddings must be a bool"),
    ("rms_norm_eps", "1e-5", TypeError, "rms_norm_eps must be a real number"),
    ("rms_norm_eps", float("inf"), ValueError, "rms_norm_eps must be finite"),
    ("rope_theta", float("inf"), ValueError, "rope_theta must be finite"),
    ("rope_theta", 1.0, ValueError, "rope_theta must be > 1"),
])
def test_config_refuses_wrong_kinds(field, value, err, msg):
    with pytest.raises(err, match=msg):
        D.DecoderConfig(**{field: value})


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    tok = bpe.DecoderTokenizer(bpe.train_tokenizer(["Return the sum of a and b.", "class Widget"] * 5, 300))
    cfg = D.DecoderConfig(vocab_size=tok.vocab_size, hidden_size=16, intermediate_size=16, num_hidden_layers=1,
                          num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=16)
    folder = tmp_path_factory.mktemp("ckpt") / "tiny"
    IO.write_checkpoint(folder, cfg, D.Decoder(cfg).state_dict(), tok, {}, "0" * 64, "test")
    return folder


def _edit(name, edit):
    def go(folder):
        if name != "manifest.json":
            (folder / "manifest.json").unlink()   # reach the checks past the hashes
        p = folder / name
        p.write_text(edit(json.loads(p.read_text())))
    return go


@pytest.mark.parametrize("what,edit,msg", [
    ("config.json a list", _edit("config.json", lambda c: "[1, 2]"), "expected a JSON object, got list"),
    ("config.json null", _edit("config.json", lambda c: "null"), "expected a JSON object, got NoneType"),
    ("rope_parameters a list", _edit("config.json", lambda c: json.dumps(c | {"rope_parameters": [1]})),
     "only plain RoPE"),
    ("rope_theta missing",
     _edit("config.json", lambda c: json.dumps(c | {"rope_parameters": {"rope_type": "default"}})),
     "rope_parameters has no rope_theta"),
    ("tie as a string", _edit("config.json", lambda c: json.dumps(c | {"tie_word_embeddings": "false"})),
     "tie_word_embeddings must be a bool"),
    ("eps as a string", _edit("config.json", lambda c: json.dumps(c | {"rms_norm_eps": "1e-5"})),
     "config.json: DecoderConfig.rms_norm_eps must be a real number"),
    ("manifest not JSON", _edit("manifest.json", lambda m: "{oops"), "manifest.json is not JSON"),
    ("manifest without files", _edit("manifest.json", lambda m: "{}"), "manifest.json: expected"),
    ("manifest names a path outside", _edit("manifest.json", lambda m: json.dumps(
        {"files": {"../config.json": "0" * 64}})), "manifest.json: expected"),
])
def test_bad_checkpoint_files_get_a_clear_error(ckpt, tmp_path, what, edit, msg):
    folder = tmp_path / "bad"
    shutil.copytree(ckpt, folder)
    edit(folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(ValueError, match=msg):
        IO.load_lm(folder=folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


# ------------------------------------------------------------------ the tokenizer
UNSEEN = ["", " ", " \t\n\r\n", "\x00\x7f", "日本語のテキスト", "🙂👍🏽 👨‍👩‍👧", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \u200b\ufeff",
          "a" * 3000, "x<|endoftext|>y", "\U0010ffff"]


def test_bpe_round_trip_and_library_agreement_on_unseen_text(ckpt):
    from tokenizers import Tokenizer

    tok = bpe.DecoderTokenizer.from_file(ckpt / "tokenizer.json")
    raw = Tokenizer.from_file(str(ckpt / "tokenizer.json"))
    for s in UNSEEN:
        ids = tok.encode(s)
        assert ids.dtype == np.int64 and ids.tolist() == raw.encode(s).ids
        assert tok.decode(ids) == s
    assert tok.stream(UNSEEN[:3]).tolist() == [tok.eos_id, tok.eos_id, *tok.encode(" "), tok.eos_id,
                                               *tok.encode(UNSEEN[2])]


def test_bpe_refuses_what_has_no_encoding(ckpt):
    tok = bpe.DecoderTokenizer.from_file(ckpt / "tokenizer.json")
    with pytest.raises(ValueError, match=r"not valid Unicode .*'\\ud800' at position 1"):
        tok.encode("a\ud800")
    with pytest.raises(TypeError, match="got one str"):   # was silently one text per character
        tok.stream("ab")


# ------------------------------------------------------------------ tasks: a truncated example
def test_truncated_window_starting_at_the_response_keeps_its_first_target(ckpt):
    tok = bpe.DecoderTokenizer.from_file(ckpt / "tokenizer.json")
    ex = T.Example("Return the sum " * 4, " of a", "m")
    ids, m = T.encode(tok, ex.prompt, ex.response)
    n_resp = int(m.sum())                  # response tokens + the closing <|endoftext|>
    got_ids, got_m = T.batch(tok, [ex], max_len=n_resp + 1)   # [eos] + exactly the response
    assert got_ids[0].tolist() == [tok.eos_id, *ids[-n_resp:]]
    assert got_m[0].tolist() == [1] * n_resp                  # the first response token counts too
    wide_ids, wide_m = T.batch(tok, [ex], max_len=n_resp + 3)
    assert wide_m[0].tolist() == [0, 0] + [1] * n_resp and wide_ids[0, 3:].tolist() == ids[-n_resp:].tolist()
    with pytest.raises(ValueError, match="does not fit"):
        T.batch(tok, [ex], max_len=n_resp)
    with pytest.raises(ValueError, match="at least one example"):
        T.batch(tok, [])
    with pytest.raises(TypeError, match="max_len must be an int"):
        T.batch(tok, [ex], max_len=True)


# ------------------------------------------------------------------ distributed: refused before spawning
@pytest.mark.parametrize("batch,msg", [
    (np.zeros((0, 5), np.int64), r"shape \(rows ≥ 1, length ≥ 2\)"),
    (np.zeros((4, 1), np.int64), r"shape \(rows ≥ 1, length ≥ 2\)"),
    (np.zeros(9, np.int64), r"shape \(rows ≥ 1, length ≥ 2\)"),
    (np.zeros((2, 5), np.float32), "integer token ids"),
    (np.full((2, 5), 2048), r"must lie in \[0, 2048\)"),
])
def test_launch_checks_the_batch_before_starting(batch, msg):
    with pytest.raises(ValueError, match=msg):
        DIST.launch("ddp", 1, batch=batch, method="lora")
    assert DIST.launch.last_pids == [] or all(not DIST.alive(p) for p in DIST.launch.last_pids)


def test_make_batch_refuses_sizes_out_of_range():
    for args, err in (((0, 8), ValueError), ((2, 0), ValueError), ((2.0, 8), TypeError), ((2, 10**7), ValueError)):
        with pytest.raises(err):
            DIST.make_batch(*args)


# ------------------------------------------------------------------ dtypes and pretraining streams
@pytest.mark.parametrize("dtype", [np.int32, np.float16, bool])
def test_decoder_refuses_a_non_float_dtype_before_loading(dtype):
    """An int32 decoder used to be built and loaded (weights truncated to integers), failing
    only at the first forward with an error about RMSNorm's input."""
    cfg = D.DecoderConfig(vocab_size=V, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                          num_attention_heads=2, num_key_value_heads=2)
    with pytest.raises(TypeError, match="Decoder dtype must be float32 or float64"):
        D.Decoder(cfg, dtype=dtype)


def test_pretraining_streams_too_short_are_refused_not_spun_on():
    from pedagogy_lib.torch_ref import pretrain as PT

    pc = PT.PretrainConfig(steps=1, lr=1e-3, batch_size=4, seq_len=3)
    with pytest.raises(ValueError, match="fewer than batch_size=4 blocks"):   # used to loop forever
        next(PT.batches(np.arange(15), pc))
    assert next(PT.batches(np.arange(16), pc)).shape == (4, 4)   # exactly one batch of blocks: fine
    with pytest.raises(ValueError, match="holds no block"):       # used to divide by zero
        PT.mean_loss(None, np.arange(10), 20)


def test_next_token_loss_names_ids_outside_the_vocabulary():
    """Ids ≥ V (or negative, or float) used to raise a bare IndexError or wrap around silently."""
    logits = np.zeros((1, 4, V))
    for ids in (np.array([[0, 1, V, 2]]), np.array([[0, -1, 2, 3]]), np.array([[0.0, 1.0, 2.0, 3.0]])):
        with pytest.raises(ValueError, match="logits' vocabulary"):
            D.next_token_loss(logits, ids)
    loss, _ = D.next_token_loss(logits, np.array([[0, 1, V - 1, 2]]))
    assert np.isclose(loss, np.log(V))


def test_quantize_base_changes_every_layer_or_none():
    """A NaN in a later layer used to be found after the earlier layers were overwritten."""
    from pedagogy_lib.torch_ref import decoder_peft as DP
    _, twin = tiny(d=64, f=64, h=4, kv=2)
    twin = twin.float()
    lins = [m for m in twin.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        lins[-1].weight[0, 0] = float("nan")
    before = {k: v.clone() for k, v in twin.state_dict().items()}
    with pytest.raises(ValueError):
        DP.quantize_base(twin)
    after = twin.state_dict()
    assert all(torch.equal(before[k], after[k]) or torch.isnan(before[k]).any() for k in before)
