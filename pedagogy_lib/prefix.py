"""Prefix-tuning and P-Tuning v2 in NumPy (chapter 04; prompt tuning and deep prompts, which
plug into the same hooks, are in ``pedagogy_lib.prompt``, chapter 05).

None of these methods changes a weight of the model.  They add learned vectors that the
attention reads:

* **prefix-tuning** (Li & Liang 2021): at every layer ℓ, m key vectors P_k^ℓ and m value
  vectors P_v^ℓ (each m×d) are prepended to the projected keys and values (Eq. 4.1).
  During training they are produced by a small MLP from a shared table P′ (Eq. 4.5);
  afterwards ``fold`` evaluates the MLP once and keeps only the m×d×L×2 numbers (Eq. 4.7);
* **P-Tuning v2** (Liu et al. 2022): "prompts at every layer".  Its reference code (and
  peft's) trains per-layer keys and values directly, which is prefix-tuning without the
  MLP; a prompt inserted as a *hidden state* at each layer's input is the special case
  P_k = P W_kᵀ + b_k, P_v = P W_vᵀ + b_v (``prompt.DeepPrompt``, Eq. 5.3).

The encoder (``pedagogy_lib.bert``) has the two hooks these modules plug into:
``SelfAttention.prefix`` (``forward(B) -> (pk, pv)``, ``backward(dpk, dpv)``) and
``BertEmbeddings.prompt`` (``forward(B) -> P``, ``backward(dP)``).
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from . import checks
from .checks import check_size
from .nn import Embedding, Linear, Module, Sequential, check_array, check_finite, softmax

# ----------------------------------------------------------------------------- checks
_check_size = check_size  # the shared check (pedagogy_lib.checks)


def _check_std(std) -> float:
    if isinstance(std, bool) or not isinstance(std, numbers.Real) or not math.isfinite(std) or std < 0:
        raise ValueError(f"std must be a finite number >= 0, got {std!r}")
    return float(std)


def _check_grad(g, shape, name: str):
    check_array(g, name, ndim_min=3)
    if g.shape[1:] != tuple(shape):
        raise ValueError(f"{name}: expected shape (B, {shape[0]}, {shape[1]}), got {g.shape}")
    return g.sum(0)  # the same vectors serve every example: their gradient is the batch sum


def _bert(model):
    """Accept a BertEncoder or a SentenceEncoder (which wraps one)."""
    bert = getattr(model, "bert", model)
    if not (hasattr(bert, "embeddings") and hasattr(bert, "encoder") and hasattr(bert, "config")):
        raise TypeError(f"expected a BertEncoder or SentenceEncoder, got {type(model).__name__}")
    return bert


def _attentions(bert):
    return [getattr(layer.attention, "self") for layer in bert.layers]


def _free_attentions(bert):
    """The attention layers, after checking that none has a prefix yet."""
    atts = _attentions(bert)
    if any(a.prefix is not None for a in atts) or hasattr(bert, "prefix_encoder"):
        raise ValueError("the model already has a prefix; load a fresh model to attach another")
    return atts


def _dtype(bert):
    return bert.embeddings.word_embeddings.p["weight"].dtype


def _broadcast(x, batch):
    return np.broadcast_to(x, (_check_size(batch, "batch size"),) + x.shape)


# ----------------------------------------------------------------------------- prefix
class Prefix(Module):
    """One layer's prefix P_k, P_v ∈ R^{m×d}, trained directly (Eq. 4.1).

    ``forward(B)`` returns them broadcast to (B, m, d); ``backward`` sums the gradients
    over the batch (Eq. 4.4): every example reads the same m keys and values.
    """

    def __init__(self, m: int, d: int, rng=None, dtype=np.float32, std: float = 1.0):
        super().__init__()
        m, d, std = _check_size(m, "prefix length m"), _check_size(d, "hidden size d"), _check_std(std)
        rng = np.random.default_rng(0) if rng is None else rng
        self.m, self.d = m, d
        self.p["key"] = rng.normal(0.0, std, (m, d)).astype(dtype)
        self.p["value"] = rng.normal(0.0, std, (m, d)).astype(dtype)

    @classmethod
    def from_arrays(cls, key: np.ndarray, value: np.ndarray) -> "Prefix":
        """A prefix holding the given (m, d) keys and values (used by ``fold``)."""
        for a, name in ((key, "prefix keys"), (value, "prefix values")):
            check_array(a, name, ndim_min=2)
            if a.ndim != 2:
                raise ValueError(f"{name} must be (m, d), got shape {a.shape}")
            check_finite(a, name)
        if key.shape != value.shape:
            raise ValueError(f"prefix keys {key.shape} and values {value.shape} must have the same shape")
        out = cls(*key.shape, dtype=key.dtype, std=0.0)
        out.p["key"][...] = key
        out.p["value"][...] = value.astype(key.dtype)
        return out

    def forward(self, batch):
        return _broadcast(self.p["key"], batch), _broadcast(self.p["value"], batch)

    def backward(self, dpk, dpv):
        self._accumulate("key", _check_grad(dpk, (self.m, self.d), "prefix key gradient"))
        self._accumulate("value", _check_grad(dpv, (self.m, self.d), "prefix value gradient"))


class Tanh(Module):
    """y = tanh(x);  dy/dx = 1 − y²."""

    def forward(self, x):
        self.y = np.tanh(x)
        return self.y

    def backward(self, dy):
        return dy * (1.0 - self.y * self.y)


class PrefixMLP(Module):
    """The reparameterisation P = MLP(P′), shared by all L layers (Eqs. 4.5–4.6).

    P′ ∈ R^{m×d′} (``embedding.weight``), H = tanh(P′W₁ᵀ + b₁) ∈ R^{m×h},
    P = HW₂ᵀ + b₂ ∈ R^{m×2Ld}.  Columns [2ℓd, (2ℓ+1)d) of P are layer ℓ's keys, the next d
    its values: the layout of Li & Liang's code and of peft's ``PrefixEncoder``, whose
    parameter names (``embedding``, ``transform.0``, ``transform.2``) we keep.
    """

    def __init__(self, m: int, d: int, n_layers: int, hidden: int, d_embed: int | None = None,
                 rng=None, dtype=np.float32):
        super().__init__()
        m, d = _check_size(m, "prefix length m"), _check_size(d, "hidden size d")
        n_layers, hidden = _check_size(n_layers, "number of layers"), _check_size(hidden, "MLP hidden size")
        d_embed = d if d_embed is None else _check_size(d_embed, "d_embed")
        rng = np.random.default_rng(0) if rng is None else rng
        self.m, self.d, self.n_layers, self.hidden = m, d, n_layers, hidden
        self.embedding = Embedding(m, d_embed, rng, dtype)
        self.embedding.p["weight"] = rng.standard_normal((m, d_embed)).astype(dtype)  # P′ ~ N(0, 1), as peft
        self.transform = Sequential(Linear(d_embed, hidden, rng=rng, dtype=dtype), Tanh(),
                                    Linear(hidden, 2 * n_layers * d, rng=rng, dtype=dtype))

    def rows(self, layer: int, which: int) -> slice:
        """Rows of W₂ (columns of P) for layer ℓ's keys (which=0) or values (which=1)."""
        if not 0 <= layer < self.n_layers:
            raise ValueError(f"layer must lie in [0, {self.n_layers}), got {layer}")
        start = (2 * layer + which) * self.d
        return slice(start, start + self.d)

    def hidden_states(self):
        """H = tanh(P′W₁ᵀ + b₁)  (Eq. 4.5)."""
        lin = self.transform[0]
        return np.tanh(self.embedding.p["weight"] @ lin.p["weight"].T + lin.p["bias"])

    def layer_prefix(self, layer: int):
        """(P_k^ℓ, P_v^ℓ, H): layer ℓ's blocks of P = HW₂ᵀ + b₂  (Eq. 4.6)."""
        H = self.hidden_states()
        W2, b2 = self.transform[2].p["weight"], self.transform[2].p["bias"]
        k, v = self.rows(layer, 0), self.rows(layer, 1)
        return H @ W2[k].T + b2[k], H @ W2[v].T + b2[v], H

    def forward(self):
        """The whole P ∈ R^{m×2Ld}, layer by layer (what ``fold`` keeps)."""
        return np.concatenate([np.concatenate(self.layer_prefix(l)[:2], 1) for l in range(self.n_layers)], 1)

    def layer_backward(self, layer: int, H, dpk, dpv):
        """Accumulate dL/dθ of the MLP from one layer's dP_k, dP_v, each (m, d)."""
        out, lin = self.transform[2], self.transform[0]
        k, v = self.rows(layer, 0), self.rows(layer, 1)
        _accumulate_rows(out, "weight", k, dpk.T @ H)       # dW₂[k] = dP_kᵀ H
        _accumulate_rows(out, "weight", v, dpv.T @ H)
        _accumulate_rows(out, "bias", k, dpk.sum(0))        # db₂[k] = Σ_i dP_k,i
        _accumulate_rows(out, "bias", v, dpv.sum(0))
        dH = dpk @ out.p["weight"][k] + dpv @ out.p["weight"][v]
        dZ = dH * (1.0 - H * H)                             # through tanh
        lin._accumulate("weight", dZ.T @ self.embedding.p["weight"])
        lin._accumulate("bias", dZ.sum(0))
        self.embedding._accumulate("weight", dZ @ lin.p["weight"])  # dP′ = dZ W₁


def _accumulate_rows(mod: Module, name: str, rows: slice, grad):
    """Add ``grad`` into rows of a parameter's gradient (each layer owns a block of W₂)."""
    if name in mod.frozen:
        return
    if name not in mod.g:
        mod.g[name] = np.zeros_like(mod.p[name])
    mod.g[name][rows] += grad


class PrefixSlot(Module):
    """Layer ℓ's hook into a shared ``PrefixMLP``: returns block ℓ of P (Eq. 4.6).

    Each slot recomputes the small hidden layer H itself (m×d′×h multiply-adds), so the
    slots need no bookkeeping about call order; by linearity, the gradient reaching H is
    the sum of what the L slots send back.  The MLP is owned by the model
    (``bert.prefix_encoder``), not by the slots, so ``children`` hides it: listed under
    every layer, its parameters would be counted and updated L times.
    """

    def __init__(self, mlp: PrefixMLP, layer: int):
        super().__init__()
        self.mlp, self.layer = mlp, layer
        mlp.rows(layer, 0)  # validates the layer index

    def children(self):
        return iter(())

    def forward(self, batch):
        pk, pv, self.H = self.mlp.layer_prefix(self.layer)
        return _broadcast(pk, batch), _broadcast(pv, batch)

    def backward(self, dpk, dpv):
        shape = (self.mlp.m, self.mlp.d)
        self.mlp.layer_backward(self.layer, self.H, _check_grad(dpk, shape, "prefix key gradient"),
                                _check_grad(dpv, shape, "prefix value gradient"))


def attach_prefix(model, m: int, reparam: int | None = None, seed: int = 0, std: float = 1.0,
                  d_embed: int | None = None):
    """Freeze the model and give every layer a prefix of length m (Eq. 4.1).

    ``reparam=None`` trains P_k^ℓ, P_v^ℓ directly (N(0, std²) init); ``reparam=h`` trains
    them through one MLP with hidden size h shared by all layers, kept at
    ``bert.prefix_encoder`` (Eq. 4.5).  Returns the model.
    """
    bert = _bert(model)
    m, std = _check_size(m, "prefix length m"), _check_std(std)
    if reparam is not None:
        reparam = _check_size(reparam, "reparam (MLP hidden size)")
    if d_embed is not None:
        d_embed = _check_size(d_embed, "d_embed")
    atts = _free_attentions(bert)
    rng, d, dtype = np.random.default_rng(checks.seed(seed)), bert.config.hidden_size, _dtype(bert)
    model.freeze()  # everything checked: now change the model
    if reparam is None:
        for a in atts:
            a.prefix = Prefix(m, d, rng, dtype, std)
    else:
        bert.prefix_encoder = PrefixMLP(m, d, len(atts), reparam, d_embed, rng, dtype)
        for i, a in enumerate(atts):
            a.prefix = PrefixSlot(bert.prefix_encoder, i)
    return model


def attach_ptuning_v2(model, m: int, seed: int = 0, std: float = 1.0):
    """P-Tuning v2 as its reference code does it: per-layer keys and values trained
    directly, i.e. ``attach_prefix(model, m, reparam=None)`` (Eq. 5.4).  The differences
    from Li & Liang are in the recipe (no MLP, a classification head instead of a
    verbaliser), not in the mechanism."""
    return attach_prefix(model, m, reparam=None, seed=seed, std=std)


def fold(model):
    """Evaluate the MLP once, keep only P_k^ℓ, P_v^ℓ (m×d×L×2 numbers) and drop the MLP.

    The folded prefixes are computed by the very code the slots ran, so the model's
    outputs do not change by a single bit (Eq. 4.7).  Returns the model.
    """
    bert = _bert(model)
    mlp = getattr(bert, "prefix_encoder", None)
    if mlp is None:
        raise ValueError("nothing to fold: the model has no MLP-reparameterised prefix")
    for i, a in enumerate(_attentions(bert)):
        pk, pv, _ = mlp.layer_prefix(i)
        a.prefix = Prefix.from_arrays(pk, pv)
    del bert.prefix_encoder
    return model


def prefix_tensors(model) -> np.ndarray:
    """All prefixes as one (L, 2, m, d) array: [layer][key, value]."""
    bert = _bert(model)
    out = []
    for a in _attentions(bert):
        if a.prefix is None:
            raise ValueError("the model has no prefix at every layer")
        pk, pv = a.prefix(1)
        out.append(np.stack([pk[0], pv[0]]))
    return np.stack(out)


def load_prefix(model, tensors: np.ndarray):
    """Freeze the model and install given prefixes, an (L, 2, m, d) array [layer][key, value],
    as direct ``Prefix`` modules (replacing any prefix the model had).  Checks first."""
    bert = _bert(model)
    check_array(tensors, "prefix tensors", ndim_min=4)
    L, d = len(bert.layers), bert.config.hidden_size
    if tensors.ndim != 4 or tensors.shape[1] != 2:
        raise ValueError(f"prefix tensors must be (L, 2, m, d) [layer][key, value], got shape {tensors.shape}")
    if tensors.shape[0] != L:
        raise ValueError(f"prefix tensors hold {tensors.shape[0]} layers, the model has {L}")
    if tensors.shape[3] != d:
        raise ValueError(f"hidden size mismatch: prefix vectors have width {tensors.shape[3]}, the model's hidden size is {d}")
    if tensors.shape[2] < 1:
        raise ValueError(f"prefix length m must be positive: prefix tensors have shape {tensors.shape} "
                         "(L, 2, m, d) with m = 0")
    check_finite(tensors, "prefix tensors")
    with np.errstate(over="ignore"):
        tensors = tensors.astype(_dtype(bert))
    check_finite(tensors, f"prefix tensors cast to the model's {tensors.dtype}")  # 1e39 is finite, but inf in float32
    model.freeze()  # everything checked: now change the model
    if hasattr(bert, "prefix_encoder"):
        del bert.prefix_encoder
    for a, (pk, pv) in zip(_attentions(bert), tensors):
        a.prefix = Prefix.from_arrays(pk, pv)
    return model


def to_peft_layout(tensors: np.ndarray) -> np.ndarray:
    """(L, 2, m, d) → (m, 2Ld): peft's ``prompt_embeddings`` for prefix tuning, whose row i
    holds token i's [layer 0 key, layer 0 value, layer 1 key, ...]."""
    check_array(tensors, "prefix tensors", ndim_min=4)
    checks.ndim(tensors, "prefix tensors", 4, "(L, 2, m, d) [layer][key, value]")
    if tensors.shape[1] != 2:
        raise ValueError(f"prefix tensors must be (L, 2, m, d) [layer][key, value], got shape {tensors.shape}")
    L, two, m, d = tensors.shape
    return np.ascontiguousarray(tensors.transpose(2, 0, 1, 3).reshape(m, L * two * d))


def from_peft_layout(w: np.ndarray, n_layers: int) -> np.ndarray:
    """(m, 2Ld) → (L, 2, m, d), the inverse of ``to_peft_layout``."""
    check_array(w, "prompt_embeddings", ndim_min=2)
    L = _check_size(n_layers, "n_layers")
    if w.ndim != 2 or w.shape[1] % (2 * L) or 0 in w.shape:
        raise ValueError(f"prompt_embeddings must be (m, 2·L·d) with L={L}, m ≥ 1, d ≥ 1, got shape {w.shape}")
    return np.ascontiguousarray(w.reshape(w.shape[0], L, 2, -1).transpose(1, 2, 0, 3))


# ----------------------------------------------------------------------------- unified view
def logsumexp(x, axis=-1):
    mx = np.max(x, axis=axis, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    return (mx + np.log(np.exp(x - mx).sum(axis=axis, keepdims=True)))[..., 0]


def prefix_attention_parts(q, k, v, pk, pv, keep=None):
    """He et al.'s unified view of one attention head with a prefix (Eqs. 4.2–4.3).

    q (..., T, d_h); k, v (..., n, d_h); pk, pv (..., m, d_h); keep (..., n) bool marks real
    keys (None: all).  Returns (λ, Attn(q; K, V), Attn(q; P_k, P_v)) with λ (..., T) the
    softmax weight on the prefix, so that the head's output is
    (1 − λ)·Attn(q; K, V) + λ·Attn(q; P_k, P_v).
    """
    for a, name in ((q, "q"), (k, "k"), (v, "v"), (pk, "pk"), (pv, "pv")):
        check_array(a, name, ndim_min=2, last=q.shape[-1])
    if k.shape != v.shape or pk.shape != pv.shape:
        raise ValueError(f"keys and values must match: k {k.shape}, v {v.shape}, pk {pk.shape}, pv {pv.shape}")
    scale = 1.0 / math.sqrt(q.shape[-1])
    s_x = q @ np.swapaxes(k, -1, -2) * scale
    if keep is not None:
        keep = np.asarray(keep, bool)
        if keep.shape[-1] != k.shape[-2]:
            raise ValueError(f"mask covers {keep.shape[-1]} keys but there are {k.shape[-2]} "
                             "(the mask is for the real tokens only; prefix keys are always visible)")
        if not keep.any(-1).all():  # Attn(q; K, V) over no key is 0/0, as the encoder's check_mask says
            raise ValueError("keep has a row with no real token (all False): Attn(q; K, V) is undefined")
        s_x = np.where(keep[..., None, :], s_x, -np.inf)
    s_p = q @ np.swapaxes(pk, -1, -2) * scale
    lse_x, lse_p = logsumexp(s_x), logsumexp(s_p)
    lam = np.exp(lse_p - np.logaddexp(lse_p, lse_x))  # λ = Σ_p e^s / (Σ_p e^s + Σ_x e^s)  (Eq. 4.2)
    return lam, softmax(s_x) @ v, softmax(s_p) @ pv


def prefix_weight(attention) -> np.ndarray:
    """λ per (example, head, query) from the last forward pass of a SelfAttention."""
    if not getattr(attention, "m", 0):
        raise ValueError("this attention ran without a prefix")
    return attention.A[..., : attention.m].sum(-1)


# ----------------------------------------------------------------------------- counting
def num_prefix_params(m: int, d: int, n_layers: int) -> int:
    """What prefix-tuning ships (after folding) and P-Tuning v2 trains: m key and m value
    vectors of width d in each of L layers, m·d·L·2 (Eq. 4.7; Eq. 5.4 for P-Tuning v2, whose
    authors' code feeds its per-layer prompts as keys and values, ``past_key_values``, with no
    reparameterising MLP). The MLP prefix-tuning trains through is thrown away and not
    counted (``num_reparam_params`` counts it)."""
    m, d = check_size(m, "prefix length m"), check_size(d, "hidden size d")
    return m * d * check_size(n_layers, "layers") * 2            # keys and values  (Eq. 4.7)


def num_reparam_params(m: int, d: int, n_layers: int, hidden: int, d_embed: int | None = None) -> int:
    """What is trained through the MLP: P′ (m×d′) + W₁,b₁ (h×d′+h) + W₂,b₂ (2Ld×h+2Ld)."""
    m, d, L, h = (_check_size(x, n) for x, n in ((m, "m"), (d, "d"), (n_layers, "n_layers"), (hidden, "hidden")))
    de = d if d_embed is None else _check_size(d_embed, "d_embed")
    return m * de + h * de + h + 2 * L * d * h + 2 * L * d


__all__ = ["Prefix", "Tanh", "PrefixMLP", "PrefixSlot", "attach_prefix", "attach_ptuning_v2", "fold",
           "prefix_tensors", "load_prefix", "to_peft_layout", "from_peft_layout", "prefix_attention_parts",
           "prefix_weight", "num_prefix_params", "num_reparam_params", "logsumexp"]
