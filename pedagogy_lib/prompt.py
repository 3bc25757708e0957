"""Prompt tuning and deep prompts in NumPy (chapter 05).

* **prompt tuning** (Lester et al. 2021): m vectors P (m×d) prepended to the word
  embeddings, at the input only (Eq. 5.1), through the encoder's hook
  ``BertEmbeddings.prompt`` (``forward(B) -> P``, ``backward(dP)``);
* **deep prompts**: a prompt inserted as a *hidden state* at every layer's input, which the
  real tokens see only through that layer's frozen key and value projections (Eq. 5.3): a
  prefix (``pedagogy_lib.prefix``, chapter 04) whose keys and values are tied by W_k and W_v,
  plugged into the same hook ``SelfAttention.prefix``.

The model checks and batch helpers are prefix-tuning's (same hooks, same rules).
"""
from __future__ import annotations

import numpy as np

from . import checks
from .checks import check_size as _check_size
from .nn import Module, check_array, check_finite
from .prefix import _bert, _broadcast, _check_grad, _check_std, _dtype, _free_attentions

INITS = ("random", "vocab")


class SoftPrompt(Module):
    """P ∈ R^{m×d} prepended to the word embeddings, at the input only (Eq. 5.1).

    ``init="random"``: U(−0.5, 0.5) entries (Lester et al.'s random init);
    ``init="vocab"``: m distinct rows of ``word_embeddings`` drawn from ``candidates``
    (all ids if None), so that each virtual token starts as a real token.
    """

    def __init__(self, m: int, d: int, init: str = "random", word_embeddings=None,
                 candidates=None, rng=None, dtype=np.float32):
        super().__init__()
        m, d = _check_size(m, "prompt length m"), _check_size(d, "hidden size d")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        rng = np.random.default_rng(0) if rng is None else rng
        self.m, self.d, self.init = m, d, init
        if init == "random":
            self.p["weight"] = rng.uniform(-0.5, 0.5, (m, d)).astype(dtype)
            self.token_ids = None
            return
        if word_embeddings is None:
            raise ValueError("init='vocab' needs word_embeddings (the (V, d) token table)")
        check_array(word_embeddings, "word_embeddings", ndim_min=2, last=d)
        V = word_embeddings.shape[0]
        cand = np.arange(V) if candidates is None else np.unique(np.asarray(candidates))
        if not np.issubdtype(cand.dtype, np.integer) or cand.size < m or cand.min() < 0 or cand.max() >= V:
            raise ValueError(f"candidates must be at least m={m} distinct token ids in [0, {V})")
        self.token_ids = np.sort(rng.choice(cand, m, replace=False))
        self.p["weight"] = word_embeddings[self.token_ids].astype(dtype)

    def forward(self, batch):
        return _broadcast(self.p["weight"], batch)

    def backward(self, dP):
        self._accumulate("weight", _check_grad(dP, (self.m, self.d), "prompt gradient"))


def check_fits(bert, m: int) -> int:
    """m prompt vectors take positions 0..m−1 of the position table (Eq. 5.1): at least one must
    be left for a real token, or every forward pass fails."""
    n = bert.config.max_position_embeddings
    if m >= n:
        raise ValueError(f"prompt length m={m} leaves no position for a token: the model has "
                         f"{n} positions (m must be < {n})")
    return m


def vocab_candidates(vocab: dict, n: int = 5000) -> np.ndarray:
    """Ids of the n first whole-word tokens (ASCII letters, at least two) of a WordPiece
    vocabulary {token: id}.  BERT's vocabulary lists whole words roughly by frequency
    ("the", "of", "and", ...) after the special tokens and single characters, so these
    stand in for Lester et al.'s "5,000 most common tokens"."""
    if not isinstance(vocab, dict) or not vocab:
        raise TypeError("vocab must be a non-empty dict {token: id}")
    n = _check_size(n, "n")
    words = sorted(i for t, i in vocab.items() if t.isascii() and t.isalpha() and len(t) > 1)
    if len(words) < n:
        raise ValueError(f"the vocabulary has only {len(words)} whole-word tokens, fewer than n={n}")
    return np.array(words[:n], np.int64)


def load_prompt(model, P: np.ndarray):
    """Freeze the model and install the given (m, d) soft prompt (replacing any).  Checks first."""
    bert = _bert(model)
    check_array(P, "soft prompt", ndim_min=2)
    d = bert.config.hidden_size
    if P.ndim != 2:
        raise ValueError(f"a soft prompt is (m, d), got shape {P.shape}")
    if P.shape[1] != d:
        raise ValueError(f"hidden size mismatch: prompt vectors have width {P.shape[1]}, the model's hidden size is {d}")
    check_finite(P, "soft prompt")
    with np.errstate(over="ignore"):
        P = P.astype(_dtype(bert))
    check_finite(P, f"soft prompt cast to the model's {P.dtype}")  # 1e39 is finite, but inf in float32
    prompt = SoftPrompt(check_fits(bert, P.shape[0]), d, dtype=_dtype(bert))
    prompt.p["weight"][...] = P
    model.freeze()
    bert.embeddings.prompt = prompt
    return model


def attach_prompt(model, m: int, init: str = "random", candidates=None, seed: int = 0):
    """Freeze the model and prepend a soft prompt of length m to its input (Eq. 5.1)."""
    bert = _bert(model)
    if bert.embeddings.prompt is not None:
        raise ValueError("the model already has a soft prompt; load a fresh model to attach another")
    table = bert.embeddings.word_embeddings.p["weight"]
    prompt = SoftPrompt(m, bert.config.hidden_size, init, table, candidates,
                        np.random.default_rng(checks.seed(seed)), table.dtype)
    check_fits(bert, prompt.m)  # before freezing: a refused prompt leaves the model as it was
    model.freeze()
    bert.embeddings.prompt = prompt
    return model


class DeepPrompt(Module):
    """A prompt inserted as a hidden state at one layer's input, seen through that layer's
    frozen projections: P_k = P W_kᵀ + b_k, P_v = P W_vᵀ + b_v  (Eq. 5.3).

    Real tokens see the prompt positions only through these keys and values (the prompt's
    own outputs are replaced at the next layer), so a "deep prompt" is a prefix whose keys
    and values are tied together by W_k and W_v: m×d numbers per layer instead of 2×m×d.
    """

    def __init__(self, attention, m: int, rng=None, std: float = 1.0):
        super().__init__()
        self.key, self.value = attention.key, attention.value
        d = attention.d
        m, std = _check_size(m, "prompt length m"), _check_std(std)
        rng = np.random.default_rng(0) if rng is None else rng
        self.m, self.d = m, d
        self.p["weight"] = rng.normal(0.0, std, (m, d)).astype(self.key.p["weight"].dtype)

    def children(self):  # the projections belong to the attention layer
        return iter(())

    def forward(self, batch):
        P = self.p["weight"]
        pk = P @ self.key.p["weight"].T + self.key.p["bias"]
        pv = P @ self.value.p["weight"].T + self.value.p["bias"]
        return _broadcast(pk, batch), _broadcast(pv, batch)

    def backward(self, dpk, dpv):
        dpk = _check_grad(dpk, (self.m, self.d), "prefix key gradient")
        dpv = _check_grad(dpv, (self.m, self.d), "prefix value gradient")
        P = self.p["weight"]
        self._accumulate("weight", dpk @ self.key.p["weight"] + dpv @ self.value.p["weight"])
        for lin, g in ((self.key, dpk), (self.value, dpv)):  # only if the projections train too
            lin._accumulate("weight", g.T @ P)
            lin._accumulate("bias", g.sum(0))


def attach_deep_prompt(model, m: int, seed: int = 0, std: float = 1.0):
    """Freeze the model; give every layer a hidden-state prompt of length m (Eq. 5.3)."""
    bert = _bert(model)
    m, std = _check_size(m, "prompt length m"), _check_std(std)
    atts = _free_attentions(bert)
    rng = np.random.default_rng(checks.seed(seed))
    model.freeze()
    for a in atts:
        a.prefix = DeepPrompt(a, m, rng, std)
    return model


# ----------------------------------------------------------------------------- counting
def num_prompt_params(m: int, d: int) -> int:
    """Prompt tuning: m soft-prompt vectors of width d at the input only, m·d (Eq. 5.2)."""
    return _check_size(m, "prompt length m") * _check_size(d, "hidden size d")   # m·d  (Eq. 5.2)


def num_deep_prompt_params(m: int, d: int, n_layers: int) -> int:
    """Deep prompts (``attach_deep_prompt``): m hidden-state vectors of width d at every
    layer's input, m·d·L; half of P-Tuning v2's m·d·L·2 (Eq. 5.4), which feeds keys and values."""
    return num_prompt_params(m, d) * _check_size(n_layers, "layers")          # m·d·L


__all__ = ["INITS", "SoftPrompt", "check_fits", "vocab_candidates", "load_prompt", "attach_prompt", "DeepPrompt",
           "attach_deep_prompt", "num_deep_prompt_params", "num_prompt_params"]
