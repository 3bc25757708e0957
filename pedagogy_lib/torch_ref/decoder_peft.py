"""PEFT on chapter 09's torch decoder: the building blocks (chapter 10, §4).

What each method puts on a freshly loaded ``stdlib-1m`` lives in the method registry
(``registry.py``: each record's ``decoder`` form); this module holds only the pieces those
forms assemble, and the training loop and evaluation the runner (``runner.run_decoder``) uses:

* ``pretrained``      the checkpoint as a torch decoder, every weight trainable (full FT);
* ``PromptedDecoder`` a soft prompt of ``PROMPT_TOKENS`` vectors before the input (Eq. 10.4);
* ``PrefixedDecoder`` prefix-tuning (an MLP from a table P′, Eq. 10.9, foldable) or
                      P-Tuning v2 (the per-layer keys and values trained directly);
* ``quantize_base``   every block linear replaced by our NF4 + double-quant round trip
                      (``quant.py``, byte-identical to bitsandbytes), for LoRA on top;
* ``HFLogits``        a ``transformers``/peft model (the real recipe, ``torch_ref.recipe``)
                      as ids → logits;
* ``BLOCK_LINEARS``, ``IA3_TARGETS``: the module names LoRA (all linear) and IA³ target;
* ``train`` (response-masked loss, AdamW or PagedAdamW8bit), ``response_nll``, ``greedy``.

The LM head is the frozen, tied embedding in every method but full fine-tuning: the area
classifier reads the head's scores of the package names (a verbaliser), never a new head.
BitFit has no decoder form because a Llama decoder has no biases to train.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .. import checks, decoder_io
from ..decoder_prefix import sampled_rows  # the m tokens both the soft prompt and P-Tuning v2 start from
from .recipe import nf4_roundtrip  # the 4-bit round trip lives beside the recipe
from .decoder import build_decoder, next_token_loss, rope_tables

BLOCK_LINEARS = r".*layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
IA3_TARGETS, IA3_FEEDFORWARD = r".*\.(k_proj|v_proj|down_proj)", r".*\.down_proj"   # k, v outputs; down_proj's input
R, ALPHA = 8, 16
PROMPT_TOKENS = 16
PREFIX_TOKENS = 16


class PromptedDecoder(nn.Module):
    """Soft prompt tuning (Eq. 10.4): h⁰ = [P; E[x]], P ∈ R^{m×d} trained, everything else frozen;
    logits are returned for the real tokens only. P starts as the embeddings of m random
    vocabulary tokens (Lester et al.'s 'sampled vocabulary' initialisation)."""

    def __init__(self, net: nn.Module, m: int = PROMPT_TOKENS, seed: int = 0):
        super().__init__()
        self.net, self.m, self.config = net, checks.positive_int(m, "m"), net.config
        rows = sampled_rows(net.config.vocab_size, m, checks.seed(seed))   # checked before freezing
        for p in net.parameters():
            p.requires_grad_(False)
        self.prompt = nn.Parameter(net.model.embed_tokens.weight[torch.from_numpy(rows)].detach().clone())

    def forward(self, ids):
        B, T = ids.shape
        cfg = self.config
        h = torch.cat([self.prompt[None].expand(B, -1, -1), self.net.model.embed_tokens(ids)], 1)
        rope = rope_tables(torch.arange(self.m + T, device=ids.device), cfg.head_dim, cfg.rope_theta, h.dtype, h.device)
        for layer in self.net.model.layers:
            h = layer(h, 0, None, rope)
        return (self.net.model.norm(h) @ self.net.head_weight().T)[:, self.m:]


@torch.no_grad()
def kv_of_tokens(net: nn.Module, ids) -> torch.Tensor:
    """The KV cache the frozen model builds reading ``ids`` at positions 0…m−1, as an
    (L, 2, m, hkv·dh) array [layer][key, value] (keys already rotated). Installed as a prefix,
    it makes the model behave exactly as if ``ids`` had been typed first (Eq. 10.7)."""
    cache = net.new_cache()
    net(torch.as_tensor(np.asarray(ids), dtype=torch.long)[None], 0, cache)
    flat = lambda t: t[0].transpose(0, 1).reshape(t.shape[2], -1)  # noqa: E731  (hkv, m, dh) → (m, hkv·dh)
    return torch.stack([torch.stack([flat(c["k"]), flat(c["v"])]) for c in cache])


class PrefixedDecoder(nn.Module):
    """Prefix-tuning / P-Tuning v2 on the decoder (Eqs. 10.6–10.9), the twin of
    ``pedagogy_lib.decoder_prefix``.

    Every layer ℓ gets m keys P_k^ℓ and values P_v^ℓ of width hkv·dh (grouped-query heads: one
    prefix per kv head, shared by its g query heads). The prefix keys sit in the cache layout,
    already rotated, as if they had been computed at positions 0…m−1; the real tokens take
    positions m…m+T−1 (Eq. 10.7, the convention of a KV cache and of peft). Every real
    position attends to all m prefix slots; the causal mask applies among real tokens.

    ``hidden=None`` (P-Tuning v2): the (L, 2, m, hkv·dh) array is the parameter, initialised as
    the KV cache of m sampled vocabulary tokens (the same tokens the soft prompt starts from).
    ``hidden=h`` (prefix-tuning): P = W₂ tanh(W₁P′ + b₁) + b₂ from a table P′ ∈ R^{m×d}
    (Eq. 10.9), initialised as ``prefix.PrefixMLP`` (NumPy draws, seeded); ``fold`` keeps P only.
    """

    def __init__(self, net: nn.Module, m: int = PREFIX_TOKENS, hidden: int | None = None, seed: int = 0):
        super().__init__()
        from .. import prefix as nprefix

        m, seed = checks.positive_int(m, "prefix length m"), checks.seed(seed)
        if hidden is not None:
            hidden = checks.positive_int(hidden, "MLP hidden size")
        cfg = net.config
        if m + 1 > cfg.max_position_embeddings:
            raise ValueError(f"prefix length m={m} leaves no room in the context of {cfg.max_position_embeddings}")
        rows = sampled_rows(cfg.vocab_size, m, seed) if hidden is None else None   # checked before freezing
        self.net, self.m, self.config = net, m, cfg
        for p in net.parameters():
            p.requires_grad_(False)
        L, dkv = cfg.num_hidden_layers, cfg.num_key_value_heads * cfg.head_dim
        if hidden is None:
            self.prefix = nn.Parameter(kv_of_tokens(net, rows))
            return
        dtype = net.model.embed_tokens.weight.dtype
        ref = nprefix.PrefixMLP(m, dkv, L, hidden, cfg.hidden_size, np.random.default_rng(seed),
                                np.float64 if dtype == torch.float64 else np.float32)
        self.embedding = nn.Embedding(m, cfg.hidden_size)
        self.transform = nn.Sequential(nn.Linear(cfg.hidden_size, hidden), nn.Tanh(), nn.Linear(hidden, 2 * L * dkv))
        self.embedding.to(dtype)
        self.transform.to(dtype)
        with torch.no_grad():
            for name, t in self.named_parameters():
                if not name.startswith("net."):
                    t.copy_(torch.from_numpy(ref.state_dict()[name]))

    def prefix_tensors(self) -> torch.Tensor:
        """All prefixes as (L, 2, m, hkv·dh) [layer][key, value]; through the MLP if there is one:
        column block [2ℓ·w, (2ℓ+1)·w) of P holds layer ℓ's keys, the next w its values (Eq. 10.9)."""
        if "prefix" in self._parameters:
            return self.prefix
        P = self.transform(self.embedding.weight)                    # (m, 2·L·w)
        L = self.config.num_hidden_layers
        return P.view(self.m, L, 2, -1).permute(1, 2, 0, 3)

    @torch.no_grad()
    def fold(self) -> "PrefixedDecoder":
        """Evaluate the MLP once, keep only the m·2·L·w numbers (Eq. 10.9); outputs unchanged."""
        if "prefix" in self._parameters:
            raise ValueError("nothing to fold: this prefix has no MLP")
        P = self.prefix_tensors().detach().clone()
        del self.embedding, self.transform
        self.prefix = nn.Parameter(P)
        return self

    def forward(self, ids):
        P, cfg = self.prefix_tensors(), self.config
        layers = self.net.model.layers
        heads = lambda t: t.reshape(self.m, cfg.num_key_value_heads, cfg.head_dim).transpose(0, 1)  # noqa: E731
        try:
            for layer, (pk, pv) in zip(layers, P):
                layer.self_attn.kv_prefix = (heads(pk), heads(pv))
            return self.net(ids, self.m)          # real tokens at positions m…m+T−1 (Eq. 10.7)
        finally:
            for layer in layers:
                layer.self_attn.kv_prefix = None


class HFLogits(nn.Module):
    """A ``transformers`` causal LM (or its peft wrapper) as ids → logits (float32)."""

    def __init__(self, hf):
        super().__init__()
        self.hf = hf

    def forward(self, ids):
        return self.hf(input_ids=ids).logits.float()


@torch.no_grad()
def quantize_base(net: nn.Module, code: str = "nf4", double_quant: bool = True) -> list[str]:
    """Replace every block linear's weight by its 4-bit round trip (what a QLoRA layer multiplies
    with, in float32 compute). Returns the paths."""
    paths = [p for p, m in net.named_modules() if isinstance(m, nn.Linear)]
    # every round trip first (a NaN weight is refused there), then copy: all layers or none
    new = {p: nf4_roundtrip(net.get_submodule(p).weight.detach().cpu().numpy(), double_quant, code) for p in paths}
    with torch.no_grad():
        for p in paths:
            net.get_submodule(p).weight.copy_(torch.from_numpy(new[p]))
    return paths


def pretrained(folder) -> nn.Module:
    """A fresh torch decoder with the weights of the checkpoint in ``folder`` (chapter 09)."""
    cfg, weights, _, _ = decoder_io.read_checkpoint(folder)
    return build_decoder(cfg, weights)


def trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------- loss, training
def masked_loss(logits, ids, mask):
    """Mean cross-entropy over the targets the response mask keeps (Eq. 10.1): chapter 09's
    next-token loss (Eq. 9.10) with the mask required."""
    return next_token_loss(logits, ids, mask)


def optimizer(model: nn.Module, lr: float, paged8: bool = False):
    params = [p for p in model.parameters() if p.requires_grad]
    if paged8:
        from .qlora import bnb

        return bnb().optim.PagedAdamW8bit(params, lr=lr, weight_decay=0.0)
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.0)


def train(model: nn.Module, ids: np.ndarray, mask: np.ndarray, lr: float, steps: int, batch_size: int = 16,
          seed: int = 0, paged8: bool = False, progress=None) -> list[float]:
    """AdamW (or PagedAdamW8bit) with 10 % linear warm-up then linear decay; batches drawn by
    ``seed`` (the same order for every method at one seed: paired runs). Returns the losses."""
    lr = checks.finite_real(lr, "lr", positive=True)
    opt = optimizer(model, lr, paged8)
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / (steps - warm + 1))))
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(ids)) for _ in range(math.ceil(steps * batch_size / len(ids)) + 1)])
    model.train()
    losses = []
    for s in range(steps):
        rows = order[s * batch_size:(s + 1) * batch_size]
        x, m = torch.from_numpy(ids[rows]), torch.from_numpy(mask[rows])
        keep = int(np.flatnonzero(mask[rows].any(0)).max()) + 2   # drop columns that are padding everywhere
        loss = masked_loss(model(x[:, :keep]), x[:, :keep], m[:, :keep - 1])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if progress is not None:
            progress.update(1)
    model.eval()
    return losses


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def response_nll(model: nn.Module, ids: np.ndarray, mask: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Per example: (summed negative log-likelihood of its response tokens, their count)."""
    out = []
    for i in range(0, len(ids), batch_size):
        x, m = torch.from_numpy(ids[i:i + batch_size]), torch.from_numpy(mask[i:i + batch_size]).double()
        logp = torch.log_softmax(model(x).double()[:, :-1], -1)
        nll = -logp.gather(-1, x[:, 1:, None])[..., 0]
        out.append(np.stack([(nll * m).sum(1).numpy(), m.sum(1).numpy()], 1))
    return np.concatenate(out)


@torch.no_grad()
def greedy(model: nn.Module, prompts: list[np.ndarray], max_new: int, eos: int) -> list[np.ndarray]:
    """Greedy continuations of many prompts at once, without a cache: right-padded rows, each
    step reads the logits at each row's own last position (causal: pads never leak back)."""
    n = [p.size for p in prompts]
    buf = np.full((len(prompts), max(n) + max_new), eos, np.int64)
    for i, p in enumerate(prompts):
        buf[i, : p.size] = p
    done, new = np.zeros(len(prompts), bool), [[] for _ in prompts]
    for step in range(max_new):
        T = max(n) + step
        logits = model(torch.from_numpy(buf[:, :T]))
        at = np.array(n) + step - 1
        nxt = logits[torch.arange(len(prompts)), torch.from_numpy(at)].argmax(-1).numpy()
        for i, t in enumerate(nxt):
            if not done[i]:
                new[i].append(int(t))
                done[i] = t == eos
            buf[i, at[i] + 1] = t
        if done.all():
            break
    return [np.array([t for t in s if t != eos], np.int64) for s in new]


__all__ = ["PromptedDecoder", "PrefixedDecoder", "kv_of_tokens", "sampled_rows", "HFLogits", "pretrained", "train",
           "masked_loss", "response_nll", "greedy", "nf4_roundtrip", "quantize_base", "trainable", "BLOCK_LINEARS",
           "IA3_TARGETS", "IA3_FEEDFORWARD"]
