"""Chapter 02's small NumPy studies, run live by the chapter and its claims: the B = 0
init check, the merge check, and the α/r toy (does s = α/r keep the step size independent of r?)."""
from __future__ import annotations

import numpy as np

from pedagogy_lib import lora, nn
from pedagogy_lib.bert import BertConfig, BertEncoder
from pedagogy_lib.lora import LoRALinear
from pedagogy_lib.nn import AdamW, Linear


def init_check(seed: int = 0) -> dict:
    """Hidden states of a small encoder before and after attaching LoRA (B = 0): bitwise equal?"""
    cfg = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=16)
    bert = BertEncoder(cfg, seed=seed)
    ids = np.random.default_rng(seed).integers(0, 50, (3, 7))
    mask = np.ones_like(ids)
    before = bert(ids, mask).copy()
    lora.attach_lora(bert, "all-linear", r=4, alpha=8, seed=seed)
    return {"identical": bool(np.array_equal(bert(ids, mask), before)),
            "max_diff": float(np.abs(bert(ids, mask) - before).max())}


def merge_check(d_in: int = 384, d_out: int = 384, r: int = 8, n: int = 256, seed: int = 0) -> dict:
    """float32: merged vs unmerged outputs, merged vs a plain Linear, and W after unmerge(merge(W))."""
    g = np.random.default_rng(seed)
    layer = lora.LoRALinear(nn.Linear(d_in, d_out, rng=g), r, 8, rng=g)
    layer.p["lora_B"][...] = 0.02 * g.standard_normal((d_out, r))
    W0 = layer.base_layer.p["weight"].copy()
    x = g.standard_normal((n, d_in)).astype(np.float32)
    y_unmerged = layer(x).copy()
    layer.merge()
    y_merged = layer(x).copy()
    plain = nn.Linear(d_in, d_out)
    plain.p = {"weight": layer.base_layer.p["weight"].copy(), "bias": layer.base_layer.p["bias"].copy()}
    layer.unmerge()
    eps = float(np.finfo(np.float32).eps)
    diff = float(np.abs(y_merged - y_unmerged).max())
    return {"max_diff": diff, "ulps": diff / (eps * float(np.abs(y_unmerged).max())),
            "identical": bool(np.array_equal(y_merged, y_unmerged)),
            "plain_identical": bool(np.array_equal(plain(x), y_merged)),
            "roundtrip_max_diff": float(np.abs(layer.base_layer.p["weight"] - W0).max()),
            "roundtrip_identical": bool(np.array_equal(layer.base_layer.p["weight"], W0)),
            "max_abs_y": float(np.abs(y_unmerged).max())}


def scaling_toy(r: int, rslora: bool, alpha: float = 8, lr: float = 1e-3, steps: int = 200,
                d: int = 64, n: int = 256, seed: int = 0) -> dict:
    """Does s = α/r keep the step size independent of r? (chapter 02, §2)

    Fit a full-rank change of a d×d Linear with LoRA of rank r, Adam, full batch, MSE.

    Returns ‖ΔW‖_F after the first step (the step size the scaling sets) and the loss at
    the start and after ``steps`` steps. Same data, W₀ and target for every r.
    """
    g = np.random.default_rng(seed)
    base = Linear(d, d, rng=np.random.default_rng(seed), dtype=np.float64)
    X = g.standard_normal((n, d))
    target = base.p["weight"] + 0.5 * g.standard_normal((d, d)) / np.sqrt(d)
    Y = X @ target.T + base.p["bias"]
    layer = LoRALinear(base, r, alpha, rslora, rng=np.random.default_rng(seed + 1))
    opt = AdamW(layer.params_and_grads(), lr=lr, weight_decay=0.0)
    first, losses = None, []
    for _ in range(steps):
        layer.zero_grad()
        R = layer(X) - Y
        losses.append(float((R * R).mean()))
        layer.backward(2 * R / R.size)   # d mean(R²)/dY
        opt.step()
        if first is None:
            first = float(np.linalg.norm(layer.delta_weight()))
    return {"r": r, "rslora": rslora, "step1_delta_norm": first, "loss0": losses[0], "loss_end": losses[-1]}


def scaling_study(ranks=(1, 2, 4, 8, 16, 64), **kw) -> dict:
    """``scaling_toy`` for each rank, with s = α/r and with s = α/√r."""
    return {name: [scaling_toy(r, rs, **kw) for r in ranks]
            for name, rs in (("alpha_over_r", False), ("rslora", True))}


# ----------------------------------------------------------------------------- DoRA (§11)
# Published numbers (Liu et al. 2024, [liu2024dora], Table 1): commonsense reasoning, accuracy
# averaged over eight tasks, LoRA vs DoRA at the same rank. Quoted, not reproduced here.
DORA_PUBLISHED = {"source": "Liu et al. 2024 [liu2024dora], Table 1 (commonsense reasoning, mean of 8 tasks)",
                  "rows": [("LLaMA-7B", 74.7, 78.4), ("LLaMA-13B", 80.5, 81.5)]}


def dora_modes(base: Linear, r: int = 8, alpha: float = 16, n: int = 32, seed: int = 0) -> dict:
    """Both backward modes on a float64 copy of ``base`` with random B and m ≠ ‖W₀‖: each mode
    against finite differences of its own function (exact: n moves; detached: n frozen), and
    how far the two gradients of A and B lie apart."""
    from pedagogy_lib import dora
    from pedagogy_lib.gradcheck import compare, numerical_grad, rel_error

    g = np.random.default_rng(seed)
    x, dy = g.standard_normal((n, base.d_in)), g.standard_normal((n, base.d_out))
    B = 0.05 * g.standard_normal((base.d_out, r))
    scale = 1 + 0.1 * g.standard_normal(base.d_out)
    out = {}
    for detach in (False, True):
        lin = nn.Linear(base.d_in, base.d_out, dtype=np.float64)
        lin.p = {k: v.astype(np.float64) for k, v in base.p.items()}
        layer = dora.DoRALinear(lin, r, alpha, rng=np.random.default_rng(seed), detach_norm=detach)
        layer.p["lora_B"][...] = B
        layer.p[dora.MAGNITUDE] *= scale
        layer(x)
        layer.backward(dy)
        n_now = dora.row_norm(layer.direction()).copy()

        def loss():  # Eq. 2.9, with n frozen at its value now in detached mode
            norm = n_now if detach else dora.row_norm(layer.direction())
            return float(((layer.p[dora.MAGNITUDE] / norm) * (x @ layer.direction().T) * dy).sum())

        out["detached" if detach else "exact"] = {
            "fd": {k: compare(layer.g[k], numerical_grad(loss, layer.p[k], max_entries=12, seed=seed))
                   for k in ("lora_A", "lora_B", dora.MAGNITUDE)},
            "g": {k: v.copy() for k, v in layer.g.items()}}
    ge, gd = out["exact"]["g"], out["detached"]["g"]
    out["apart"] = {k: rel_error(ge[k], gd[k]) for k in ge}
    return out


def dora_saved_floats(d: int = 384, r: int = 8, n: int = 64) -> dict:
    """Floats autograd keeps for the backward of one torch DoRA layer (d×d, n rows), per mode."""
    import torch

    from pedagogy_lib.torch_ref import dora as tdora

    out = {}
    for detach in (False, True):
        layer = tdora.DoRALinear(torch.nn.Linear(d, d), r, 16, detach_norm=detach)
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
            layer(torch.randn(n, d))
        out["detached" if detach else "exact"] = sum(saved)
    return out
