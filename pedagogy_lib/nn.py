"""NumPy layers with hand-written backward passes (chapter 00, Part B "the engine", Eqs. 0.12–0.25).

Every layer follows one contract, in the spirit of micrograd but at tensor level:

* ``y = layer(x)`` runs the forward pass and keeps what the backward pass needs;
* ``dx = layer.backward(dy)`` returns dL/dx and *accumulates* dL/dθ into ``layer.g``;
* parameters live in ``layer.p`` (name -> array) and are named like PyTorch's
  (``weight``, ``bias``), so a safetensors checkpoint loads by name;
* ``layer.freeze()`` marks parameters as frozen: their gradients are not computed,
  which is exactly the saving every PEFT method is after.

Shapes follow PyTorch: a Linear weight is (d_out, d_in) and y = x Wᵀ + b.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import erf

from . import checks

FLOATS = (np.float32, np.float64)


# ----------------------------------------------------------------------------- checks
def check_array(x, name: str, ndim_min: int = 1, last: int | None = None, floating=True):
    """Raise a clear error for a non-array, a wrong dtype, a wrong last dimension."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(x).__name__}")
    if floating and x.dtype.type not in FLOATS:
        raise TypeError(f"{name}: expected float32 or float64, got {x.dtype}")
    if x.ndim < ndim_min:
        raise ValueError(f"{name}: expected at least {ndim_min} dimensions, got shape {x.shape}")
    if last is not None and x.shape[-1] != last:
        raise ValueError(f"{name}: last dimension must be {last}, got shape {x.shape}")
    return x


def retire(*arrays):
    """Make arrays a module has let go of read-only: an optimiser still holding them (built
    before ``astype``, or before ``freeze`` then ``unfreeze`` made new gradient arrays) then
    fails loudly instead of updating arrays the model no longer uses."""
    for a in arrays:
        if a is not None:
            a.flags.writeable = False


def check_finite(x: np.ndarray, name: str):
    if not np.all(np.isfinite(x)):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise ValueError(f"{name}: contains {bad} NaN/inf value(s)")
    return x


def check_names(names, who: str):
    """None or a collection of parameter names: a bare string would be read as its letters
    (``freeze("weight")`` would freeze nothing, silently)."""
    if isinstance(names, (str, bytes)):
        raise TypeError(f"{who}: names must be a list of parameter names such as [{names!r}], "
                        f"not the string {names!r}")
    return names


# ----------------------------------------------------------------------------- Module
class Module:
    """Base class: parameters in ``self.p``, gradients in ``self.g``, children as attributes."""

    def __init__(self):
        self.p: dict[str, np.ndarray] = {}
        self.g: dict[str, np.ndarray] = {}
        self.frozen: set[str] = set()

    def __call__(self, *args, **kw):
        return self.forward(*args, **kw)

    # -- tree walking (names match torch's state_dict) --
    def children(self):
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value

    def named_modules(self, prefix: str = ""):
        yield prefix, self
        for name, child in self.children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def named_parameters(self, prefix: str = "", trainable_only: bool = False):
        for mod_name, mod in self.named_modules(prefix):
            for k, v in mod.p.items():
                if trainable_only and k in mod.frozen:
                    continue
                yield (f"{mod_name}.{k}" if mod_name else k), v

    def named_grads(self, prefix: str = ""):
        for mod_name, mod in self.named_modules(prefix):
            for k in mod.p:
                if k not in mod.frozen:
                    yield (f"{mod_name}.{k}" if mod_name else k), mod.g.get(k)

    def params_and_grads(self):
        """(param, grad) array pairs of every trainable parameter, for an optimiser."""
        for _, mod in self.named_modules():
            for k, v in mod.p.items():
                if k not in mod.frozen:
                    if k not in mod.g:
                        mod.g[k] = np.zeros_like(v)
                    yield v, mod.g[k]

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(v.size for _, v in self.named_parameters(trainable_only=trainable_only))

    def zero_grad(self):
        for _, mod in self.named_modules():
            for k in list(mod.g):
                mod.g[k][...] = 0.0

    def freeze(self, names=None):
        """Freeze the named parameters of every submodule (all of them if names is None); their
        gradient arrays are dropped and retired, so an optimiser still holding one refuses to step."""
        check_names(names, "freeze")
        for _, mod in self.named_modules():
            mod.frozen |= set(mod.p) if names is None else set(mod.p) & set(names)
            for k in mod.frozen:
                retire(mod.g.pop(k, None))
        return self

    def unfreeze(self, names=None):
        check_names(names, "unfreeze")
        for _, mod in self.named_modules():
            mod.frozen -= set(mod.p) if names is None else set(names)
        return self

    def _accumulate(self, name: str, grad: np.ndarray):
        if name in self.frozen:
            return
        if name in self.g:
            self.g[name] += grad
        else:
            self.g[name] = grad.astype(self.p[name].dtype, copy=True)

    def astype(self, dtype):
        for _, mod in self.named_modules():
            retire(*mod.p.values(), *mod.g.values())  # an optimiser built before now would update these
            for k in mod.p:
                mod.p[k] = mod.p[k].astype(dtype)
            mod.g.clear()
        return self

    def state_dict(self) -> dict[str, np.ndarray]:
        return dict(self.named_parameters())

    def load_state_dict(self, weights: dict[str, np.ndarray], strict: bool = True):
        """Copy arrays by name; checks every name, shape and value before changing anything."""
        own = dict(self.named_parameters())
        missing = sorted(set(own) - set(weights))
        unexpected = sorted(set(weights) - set(own))
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing {missing[:5]}, unexpected {unexpected[:5]}")
        for k, v in weights.items():
            if k not in own:
                continue
            if tuple(np.shape(v)) != own[k].shape:
                raise ValueError(f"load_state_dict: {k} has shape {np.shape(v)}, expected {own[k].shape}")
            if np.asarray(v).dtype.kind not in "biuf":  # complex would lose its imaginary part
                raise TypeError(f"load_state_dict: {k} must hold real numbers, got dtype {np.asarray(v).dtype}")
            check_finite(np.asarray(v), k)
            with np.errstate(over="ignore", invalid="ignore"):  # judged as it will be stored
                stored = np.asarray(v).astype(own[k].dtype)
            check_finite(stored, f"{k} cast to the model's {own[k].dtype}")  # 1e39 is inf in float32
        for k, v in weights.items():  # all checks passed: now mutate
            if k in own:
                own[k][...] = v
        return self


class Sequential(Module):
    """Apply modules in order; used to insert an adapter after an existing layer."""

    def __init__(self, *mods: Module):
        super().__init__()
        for i, m in enumerate(mods):
            setattr(self, str(i), m)
        self.n = len(mods)

    def __getitem__(self, i):
        return getattr(self, str(i))

    def forward(self, x):
        for i in range(self.n):
            x = self[i](x)
        return x

    def backward(self, dy):
        for i in reversed(range(self.n)):
            dy = self[i].backward(dy)
        return dy


class ModuleList(Sequential):
    """A numbered container (``encoder.layer.0``...) without a forward of its own."""

    def __len__(self):
        return self.n

    def __iter__(self):
        return (self[i] for i in range(self.n))


def get_submodule(root: Module, path: str) -> Module:
    mod = root
    for part in path.split("."):
        child = getattr(mod, part, None)
        if not isinstance(child, Module):
            raise KeyError(f"no submodule {path!r} (stopped at {part!r})")
        mod = child
    return mod


def set_submodule(root: Module, path: str, new: Module):
    """Replace the module at a dotted path, as LoRA and adapters do (checks before mutating)."""
    parent_path, _, leaf = path.rpartition(".")
    parent = get_submodule(root, parent_path) if parent_path else root
    if not isinstance(getattr(parent, leaf, None), Module):
        raise KeyError(f"no submodule {path!r}")
    setattr(parent, leaf, new)


# ----------------------------------------------------------------------------- layers
class Linear(Module):
    """y = x Wᵀ + b  (Eq. 0.12);  dW = dyᵀx, db = Σ dy, dx = dy W  (Eq. 0.13).

    Unlike torch, an input of the other float dtype is accepted: NumPy computes in the wider
    one (a float64 x into a float32 layer gives a float64 y and dx), while dW and db are still
    accumulated in the parameter's own dtype (``_accumulate``). Chapter 03's identity check
    relies on this (float64 h into a float32 adapter); ``Module.astype`` gives one precision.
    """

    def __init__(self, d_in: int, d_out: int, bias: bool = True, rng=None, dtype=np.float32):
        super().__init__()
        d_in, d_out = checks.positive_int(d_in, "Linear: d_in"), checks.positive_int(d_out, "Linear: d_out")
        rng = np.random.default_rng(0) if rng is None else rng
        bound = 1.0 / math.sqrt(d_in)  # torch's default: U(-1/√d_in, 1/√d_in)
        self.d_in, self.d_out = d_in, d_out
        self.p["weight"] = rng.uniform(-bound, bound, (d_out, d_in)).astype(dtype)
        if bias:
            self.p["bias"] = rng.uniform(-bound, bound, d_out).astype(dtype)

    def forward(self, x):
        check_array(x, "Linear input", last=self.d_in)
        self.x = x
        y = x @ self.p["weight"].T
        if "bias" in self.p:
            y += self.p["bias"]
        return y

    def backward(self, dy):
        x2 = self.x.reshape(-1, self.d_in)
        dy2 = dy.reshape(-1, self.d_out)
        if "weight" not in self.frozen:
            self._accumulate("weight", dy2.T @ x2)
        if "bias" in self.p and "bias" not in self.frozen:
            self._accumulate("bias", dy2.sum(0))
        return dy @ self.p["weight"]


class Embedding(Module):
    """y = E[ids];  dE[i] = Σ_{t: ids_t = i} dy_t (a scatter-add)."""

    def __init__(self, n: int, d: int, rng=None, dtype=np.float32):
        super().__init__()
        rng = np.random.default_rng(0) if rng is None else rng
        self.n, self.d = checks.positive_int(n, "Embedding: n"), checks.positive_int(d, "Embedding: d")
        self.p["weight"] = rng.normal(0.0, 0.02, (n, d)).astype(dtype)

    def forward(self, ids):
        ids = np.asarray(ids)
        if not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"Embedding: ids must be integers, got {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.n):
            raise ValueError(f"Embedding: ids must lie in [0, {self.n}), got [{ids.min()}, {ids.max()}]")
        self.ids = ids
        return self.p["weight"][ids]

    def backward(self, dy):
        if "weight" not in self.frozen:
            dE = np.zeros_like(self.p["weight"])
            np.add.at(dE, self.ids.reshape(-1), dy.reshape(-1, self.d))
            self._accumulate("weight", dE)
        return None  # ids are not differentiable


class LayerNorm(Module):
    """y = γ ⊙ (x − μ)/√(σ² + ε) + β over the last axis (Eq. 0.14)."""

    def __init__(self, d: int, eps: float = 1e-12, dtype=np.float32):
        super().__init__()
        self.d = checks.positive_int(d, "LayerNorm: d")
        self.eps = checks.finite_real(eps, "LayerNorm: eps")
        if self.eps < 0:  # a negative ε makes √(σ² + ε) NaN on near-constant rows
            raise ValueError(f"LayerNorm: eps must be >= 0, got {eps}")
        self.p["weight"] = np.ones(d, dtype)
        self.p["bias"] = np.zeros(d, dtype)

    def forward(self, x):
        check_array(x, "LayerNorm input", last=self.d)
        mu = x.mean(-1, keepdims=True)
        xc = x - mu
        rstd = 1.0 / np.sqrt((xc * xc).mean(-1, keepdims=True) + self.eps)
        self.xhat, self.rstd = xc * rstd, rstd
        return self.xhat * self.p["weight"] + self.p["bias"]

    def backward(self, dy):
        xhat, rstd = self.xhat, self.rstd
        lead = tuple(range(dy.ndim - 1))
        self._accumulate("weight", (dy * xhat).sum(lead))
        self._accumulate("bias", dy.sum(lead))
        dxhat = dy * self.p["weight"]
        # dx = (1/σ)(dx̂ − mean(dx̂) − x̂·mean(dx̂ ⊙ x̂))  (Eq. 0.15)
        return rstd * (dxhat - dxhat.mean(-1, keepdims=True)
                       - xhat * (dxhat * xhat).mean(-1, keepdims=True))


class GELU(Module):
    """Exact GELU used by BERT: x·Φ(x) = ½x(1 + erf(x/√2));  dy/dx = Φ(x) + x·φ(x)  (Eq. 0.16)."""

    def forward(self, x):
        self.x = x
        self.cdf = 0.5 * (1.0 + erf(x / math.sqrt(2.0)))
        return x * self.cdf

    def backward(self, dy):
        x = self.x
        pdf = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
        return dy * (self.cdf + x * pdf)


def softmax(x, axis=-1):
    """Numerically stable softmax: exp(x − max) / Σ exp(x − max)."""
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def softmax_backward(y, dy, axis=-1):
    """For y = softmax(x): dx = y ⊙ (dy − Σ_j dy_j y_j)  (Eq. 0.17)."""
    return y * (dy - (dy * y).sum(axis=axis, keepdims=True))


def check_mask(mask, batch: int, length: int):
    """A padding mask is (B, T) of 0/1 (or bool) with at least one real token per row."""
    mask = np.asarray(mask)
    if mask.shape != (batch, length):
        raise ValueError(f"attention mask has shape {mask.shape}, expected {(batch, length)}")
    if not np.isin(mask, (0, 1)).all():
        raise ValueError("attention mask must contain only 0 and 1")
    if batch and (mask.sum(1) == 0).any():
        raise ValueError("attention mask has a row with no real token")
    return mask.astype(bool)


class SelfAttention(Module):
    """Multi-head scaled dot-product self-attention with a padding mask (Eqs. 0.18–0.19).

    Q = X W_qᵀ, K = X W_kᵀ, V = X W_vᵀ split into h heads of size d/h;
    A = softmax(Q Kᵀ/√d_h + M), out = A V (heads concatenated).
    Optional ``self.prefix`` (chapter 04) is a module whose ``forward(batch)`` returns
    prefix keys and values (B, m, d) that are prepended to K and V, always visible.
    """

    def __init__(self, d: int, heads: int, rng=None, dtype=np.float32):
        super().__init__()
        checks.positive_int(d, "SelfAttention: hidden size d")
        if d % checks.positive_int(heads, "SelfAttention: heads"):
            raise ValueError(f"hidden size {d} is not divisible by {heads} heads")
        rng = np.random.default_rng(0) if rng is None else rng
        self.d, self.h, self.dh = d, heads, d // heads
        self.query = Linear(d, d, rng=rng, dtype=dtype)
        self.key = Linear(d, d, rng=rng, dtype=dtype)
        self.value = Linear(d, d, rng=rng, dtype=dtype)
        self.prefix = None

    def _split(self, x):  # (B, T, d) -> (B, h, T, dh)
        B, T, _ = x.shape
        return x.reshape(B, T, self.h, self.dh).transpose(0, 2, 1, 3)

    def _merge(self, x):  # (B, h, T, dh) -> (B, T, d)
        B, _, T, _ = x.shape
        return x.transpose(0, 2, 1, 3).reshape(B, T, self.d)

    def forward(self, x, mask):
        check_array(x, "SelfAttention input", ndim_min=3, last=self.d)
        B, T, _ = x.shape
        keep = check_mask(mask, B, T)
        q, k, v = self.query(x), self.key(x), self.value(x)
        self.m = 0
        if self.prefix is not None:
            pk, pv = self.prefix(B)
            self.m = pk.shape[1]
            k = np.concatenate([pk.astype(x.dtype), k], axis=1)
            v = np.concatenate([pv.astype(x.dtype), v], axis=1)
            keep = np.concatenate([np.ones((B, self.m), bool), keep], axis=1)
        Q, K, V = self._split(q), self._split(k), self._split(v)
        scores = Q @ K.transpose(0, 1, 3, 2) / math.sqrt(self.dh)
        scores = np.where(keep[:, None, None, :], scores, -np.inf)  # M: −∞ on padding keys
        A = softmax(scores, axis=-1)
        self.Q, self.K, self.V, self.A = Q, K, V, A
        return self._merge(A @ V)

    def backward(self, dout):
        Q, K, V, A = self.Q, self.K, self.V, self.A
        dO = self._split(dout)
        dA = dO @ V.transpose(0, 1, 3, 2)
        dV = A.transpose(0, 1, 3, 2) @ dO
        dS = softmax_backward(A, dA) / math.sqrt(self.dh)
        dQ = dS @ K
        dK = dS.transpose(0, 1, 3, 2) @ Q
        dq, dk, dv = self._merge(dQ), self._merge(dK), self._merge(dV)
        if self.m:
            self.prefix.backward(dk[:, : self.m], dv[:, : self.m])
            dk, dv = dk[:, self.m:], dv[:, self.m:]
        return self.query.backward(dq) + self.key.backward(dk) + self.value.backward(dv)


def mean_pool(h, mask):
    """Sentence embedding: Σ_t m_t h_t / Σ_t m_t  (Eq. 0.23)."""
    w = np.asarray(mask, h.dtype)[..., None]
    return (h * w).sum(1) / np.maximum(w.sum(1), 1e-9)


def mean_pool_backward(dpooled, mask, dtype):
    w = np.asarray(mask, dtype)[..., None]
    return dpooled[:, None, :] * w / np.maximum(w.sum(1, keepdims=True), 1e-9)


def l2_normalize(x, eps=1e-12):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def cross_entropy(logits, labels):
    """Mean cross-entropy and its gradient: dL/dz = (softmax(z) − onehot(y)) / N  (Eq. 0.24)."""
    check_array(logits, "logits", ndim_min=2)
    labels = np.asarray(labels)
    if labels.shape != logits.shape[:1] or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers of shape {logits.shape[:1]}, got {labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise ValueError(f"labels must lie in [0, {logits.shape[1]})")
    n = logits.shape[0]
    if n == 0:  # the mean over no examples is 0/0
        raise ValueError(f"logits: an empty batch has no mean cross-entropy, got shape {logits.shape}")
    z = logits - logits.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    loss = -logp[np.arange(n), labels].mean()
    dlogits = np.exp(logp)
    dlogits[np.arange(n), labels] -= 1.0
    return float(loss), dlogits / n


# ----------------------------------------------------------------------------- optimiser
class AdamW:
    """Decoupled weight decay Adam, step for step the same as ``torch.optim.AdamW``.

    θ ← θ(1 − ηλ);  m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;
    θ ← θ − η m/(1−β₁ᵗ) / (√(v/(1−β₂ᵗ)) + ε)   (Eq. 0.25)
    """

    def __init__(self, pairs, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        lr = checks.finite_real(lr, "AdamW: learning rate", positive=True)
        if len(betas) != 2 or not all(0.0 <= checks.finite_real(b, "AdamW: beta") < 1.0 for b in betas):
            raise ValueError(f"AdamW: betas must be two numbers in [0, 1), got {betas}")
        if checks.finite_real(eps, "AdamW: eps") < 0 or checks.finite_real(weight_decay, "AdamW: weight_decay") < 0:
            raise ValueError(f"AdamW: eps and weight_decay must be >= 0, got {eps}, {weight_decay}")
        self.pairs = self.check_pairs(list(pairs))  # (param, grad) arrays, updated in place
        self.lr, self.b1, self.b2, self.eps, self.wd = lr, betas[0], betas[1], eps, weight_decay
        self.m = [np.zeros_like(p) for p, _ in self.pairs]
        self.v = [np.zeros_like(p) for p, _ in self.pairs]
        self.t = 0

    def check_pairs(self, pairs):
        """Every array must still be writable: a read-only one was let go of by its module
        (``nn.retire``), so updating it would no longer train the model."""
        for i, (p, g) in enumerate(pairs):
            if not (p.flags.writeable and g.flags.writeable):
                raise ValueError(f"AdamW: pair {i} holds a read-only array: its module let go of it "
                                 "(Module.astype, or freeze; unfreeze then makes a new gradient) or it "
                                 "was never writable; build the optimiser again from params_and_grads()")
        return pairs

    def step(self):
        self.check_pairs(self.pairs)  # the model may have replaced its arrays since
        self.t += 1
        bc1, bc2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        for (p, g), m, v in zip(self.pairs, self.m, self.v):
            p *= 1 - self.lr * self.wd
            m *= self.b1
            m += (1 - self.b1) * g
            v *= self.b2
            v += (1 - self.b2) * g * g
            p -= (self.lr / bc1) * m / (np.sqrt(v) / math.sqrt(bc2) + self.eps)

    def zero_grad(self):
        for _, g in self.check_pairs(self.pairs):
            g[...] = 0.0
