"""Helpers shared by the twin tests: a tiny float64 encoder, a padded batch, its empty torch
twin and the NumPy-vs-torch check (test_prefix.py, test_prompt.py, …); a tiny decoder beside
its torch twin (test_unseen_decoder.py, test_unseen_part2_s11.py)."""
import numpy as np
import torch

from pedagogy_lib.bert import BertConfig, BertEncoder, SentenceEncoder
from pedagogy_lib.torch_ref.encoder import SentenceEncoder as TSentenceEncoder, build_encoder


TOL = 1e-6  # finite-difference tolerance of the float64 gradient checks


def tiny_config(max_positions: int) -> BertConfig:
    """Three layers, three heads, width 12: small enough for finite differences."""
    return BertConfig(vocab_size=40, hidden_size=12, num_hidden_layers=3, num_attention_heads=3,
                      intermediate_size=20, max_position_embeddings=max_positions)


def padded_batch(vocab_size: int, B=3, T=6, seed=0):
    """Random ids with padding in two rows (row 1 loses two tokens, row 2 all but one)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab_size, (B, T))
    mask = np.ones((B, T), np.int64)
    mask[1, T - 2:] = 0
    mask[2, 1:] = 0
    return ids, mask


def tiny_encoder(cfg, dtype=np.float64, seed=1):
    return SentenceEncoder(BertEncoder(cfg, seed=seed, dtype=dtype))


def torch_twin(net, dtype=torch.float64):
    """An empty torch encoder of the same shape, in ``dtype``; tests load the NumPy state
    dict into it by name."""
    return TSentenceEncoder(build_encoder(net.bert.config, None, dtype=dtype, device="cpu"))


def assert_small(errors, tol=TOL):
    bad = {k: v for k, v in errors.items() if not v < tol}
    assert errors and not bad, errors


def assert_twin_matches(net, tnet, ids, mask, fwd_tol=1e-13, grad_tol=1e-12):
    """Same outputs, and the same gradient for every trainable parameter under a random
    upstream gradient (NumPy's hand-written backward vs torch autograd)."""
    r = np.random.default_rng(1).standard_normal((ids.shape[0], net.bert.config.hidden_size))
    y = tnet(torch.from_numpy(ids), torch.from_numpy(mask))
    (y * torch.from_numpy(r)).sum().backward()
    net.zero_grad()
    assert np.abs(y.detach().numpy() - net(ids, mask)).max() < fwd_tol
    net.backward(r)
    tgrads = dict(tnet.named_parameters())
    for name, g in net.named_grads():
        assert np.abs(tgrads[name].grad.numpy() - g).max() < grad_tol, name


def decoder_pair(cfg, seed: int, std: float, gain_seed: int):
    """A float64 NumPy decoder whose norm gains sit away from 1 (so a wrong gain path shows),
    and its torch twin holding the same weights."""
    from pedagogy_lib import decoder as D
    from pedagogy_lib.torch_ref import decoder as TD

    net = D.Decoder(cfg, seed=seed, dtype=np.float64, std=std)
    rng = np.random.default_rng(gain_seed)
    for name, p in net.named_parameters():
        if "norm" in name:
            p += 0.3 * rng.standard_normal(p.shape)
    return net, TD.build_decoder(cfg, net.state_dict(), dtype=torch.float64)


def twin_logits(twin, ids, pos0=0, cache=None):
    """The twin's logits for NumPy ids, as NumPy."""
    with torch.no_grad():
        return twin(torch.from_numpy(ids), pos0, cache).numpy()
