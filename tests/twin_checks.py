"""Helpers shared by the virtual-token tests (test_prefix.py, test_prompt.py): a tiny
float64 encoder, a padded batch, its empty torch twin, and the NumPy-vs-torch check."""
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
