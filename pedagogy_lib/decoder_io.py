"""The decoder checkpoints on disk, in Hugging Face's Llama layout (chapter 09, §6).

A checkpoint folder ``pedagogy_lib/checkpoints/<name>/`` holds

* ``config.json``        — a ``LlamaConfig`` (``model_type: llama``), so
  ``transformers.LlamaForCausalLM.from_pretrained(folder)`` loads it;
* ``model.safetensors``  — float32 tensors under Llama's names (tied embeddings: no
  ``lm_head.weight``, as ``transformers`` saves them);
* ``tokenizer.json``     — the byte-level BPE (``PreTrainedTokenizerFast(tokenizer_file=...)``);
* ``training_log.json``  — how it was made: settings, loss per step, held-out perplexities;
* ``manifest.json``      — the SHA-256 of each of those files, the corpus fingerprint and the
  Python version it came from.

``read_checkpoint`` checks everything (config fields, every tensor's name, shape and
finiteness, the tokenizer's vocabulary, the manifest's hashes) before returning anything:
a bad folder is refused whole, never loaded half-way.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from . import checks
from .bpe import DecoderTokenizer
from .decoder import DecoderConfig, check_prompt

CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"
FILES = ("config.json", "model.safetensors", "tokenizer.json", "training_log.json")
DEFAULT = "stdlib-1m"

# The family (chapter 09, §6). Every hidden and intermediate size is a multiple of 64
# (bitsandbytes' CPU 4-bit kernels need it, chapter 10).
FAMILY = {
    "stdlib-1m": DecoderConfig(vocab_size=2048, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                               num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256),
    "stdlib-4m": DecoderConfig(vocab_size=2048, hidden_size=256, intermediate_size=704, num_hidden_layers=5,
                               num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=256),
}


# ---------------------------------------------------------------------------- config
def hf_config(cfg: DecoderConfig, eos_id: int) -> dict:
    """config.json for ``transformers``' Llama with exactly our architecture."""
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size, "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads, "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": cfg.head_dim, "max_position_embeddings": cfg.max_position_embeddings,
        "rms_norm_eps": cfg.rms_norm_eps, "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "tie_word_embeddings": cfg.tie_word_embeddings, "hidden_act": "silu",
        "attention_bias": False, "mlp_bias": False, "attention_dropout": 0.0, "pretraining_tp": 1,
        "bos_token_id": eos_id, "eos_token_id": eos_id, "pad_token_id": eos_id,
        "initializer_range": 0.02, "use_cache": True, "dtype": "float32",
    }


REQUIRED = {"model_type": "llama", "hidden_act": "silu", "attention_bias": False, "mlp_bias": False}


def config_from_hf(d: dict, where: str = "config.json") -> DecoderConfig:
    """Our config from a Llama config.json; anything our decoder does not implement is refused."""
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(d).__name__}")
    for k, v in REQUIRED.items():
        if d.get(k, v) != v:
            raise ValueError(f"{where}: {k} is {d.get(k)!r}; this decoder implements only {v!r}")
    rope = d.get("rope_parameters") or {"rope_type": "default", "rope_theta": d.get("rope_theta", 10000.0)}
    if not isinstance(rope, dict) or rope.get("rope_type", "default") != "default" or d.get("rope_scaling"):
        raise ValueError(f"{where}: only plain RoPE is implemented, got {rope} / {d.get('rope_scaling')}")
    if "rope_theta" not in rope:
        raise ValueError(f"{where}: rope_parameters has no rope_theta")
    fields = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings")
    missing = [k for k in fields if k not in d]
    if missing:
        raise ValueError(f"{where}: missing {missing}")
    try:
        theta = checks.finite_real(rope["rope_theta"], "rope_theta")
        cfg = DecoderConfig(**{k: d[k] for k in fields}, rope_theta=theta)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None
    if d.get("head_dim", cfg.head_dim) != cfg.head_dim:
        raise ValueError(f"{where}: head_dim {d['head_dim']} != hidden_size / heads = {cfg.head_dim}")
    return cfg


def expected_shapes(cfg: DecoderConfig) -> dict[str, tuple]:
    """Every tensor's name and shape in Llama's layout."""
    d, f, dh, L = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim, cfg.num_hidden_layers
    shapes = {"model.embed_tokens.weight": (cfg.vocab_size, d), "model.norm.weight": (d,)}
    per = {"input_layernorm.weight": (d,), "post_attention_layernorm.weight": (d,),
           "self_attn.q_proj.weight": (cfg.num_attention_heads * dh, d),
           "self_attn.k_proj.weight": (cfg.num_key_value_heads * dh, d),
           "self_attn.v_proj.weight": (cfg.num_key_value_heads * dh, d),
           "self_attn.o_proj.weight": (d, cfg.num_attention_heads * dh),
           "mlp.gate_proj.weight": (f, d), "mlp.up_proj.weight": (f, d), "mlp.down_proj.weight": (d, f)}
    for i in range(L):
        shapes.update({f"model.layers.{i}.{k}": v for k, v in per.items()})
    if not cfg.tie_word_embeddings:
        shapes["lm_head.weight"] = (cfg.vocab_size, d)
    return shapes


def check_weights(cfg: DecoderConfig, weights: dict, where: str = "model.safetensors") -> dict:
    """Names, shapes and finiteness of every tensor against the config."""
    want = expected_shapes(cfg)
    extra = set(weights) - set(want)
    if cfg.tie_word_embeddings and "lm_head.weight" in extra:   # saved tied copy: must equal
        if not np.array_equal(weights["lm_head.weight"], weights.get("model.embed_tokens.weight")):
            raise ValueError(f"{where}: tie_word_embeddings is true but lm_head.weight differs from the embedding")
        extra.discard("lm_head.weight")
    missing = sorted(set(want) - set(weights))
    if missing or extra:
        raise ValueError(f"{where} does not match config.json: missing {missing[:4]}, unexpected {sorted(extra)[:4]}")
    for k, shape in want.items():
        if tuple(weights[k].shape) != shape:
            raise ValueError(f"{where}: {k} has shape {tuple(weights[k].shape)}, config.json implies {shape}")
        if weights[k].dtype.type not in (np.float32, np.float64):
            raise ValueError(f"{where}: {k} is {weights[k].dtype}, expected float32")
        if not np.all(np.isfinite(weights[k])):
            raise ValueError(f"{where}: {k} contains NaN/inf")
    return {k: weights[k] for k in want}


# ---------------------------------------------------------------------------- files
def sha256_file(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_checkpoint(folder, cfg: DecoderConfig, weights: dict, tokenizer: DecoderTokenizer,
                     log: dict, corpus_sha256: str, python: str) -> Path:
    """Write the five files (weights as contiguous float32); checks them first."""
    from safetensors.numpy import save_file

    weights = check_weights(cfg, {k: np.asarray(v, np.float32) for k, v in weights.items()})
    if tokenizer.vocab_size != cfg.vocab_size:
        raise ValueError(f"tokenizer has {tokenizer.vocab_size} tokens, the model {cfg.vocab_size}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(hf_config(cfg, tokenizer.eos_id), indent=1, sort_keys=True) + "\n")
    save_file({k: np.ascontiguousarray(v) for k, v in sorted(weights.items())}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    (folder / "tokenizer.json").write_text(tokenizer.to_str())
    (folder / "training_log.json").write_text(json.dumps(log, indent=1, sort_keys=True) + "\n")
    manifest = {"files": {f: sha256_file(folder / f) for f in FILES},
                "corpus_sha256": corpus_sha256, "python": python}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return folder


def available() -> list[str]:
    """Members of the family whose checkpoint folder exists (``make pretrain`` writes them)."""
    return [n for n in sorted(FAMILY) if (CHECKPOINTS / n / "config.json").is_file()]


def checkpoint_dir(name: str | None = None) -> Path:
    name = DEFAULT if name is None else name
    if not isinstance(name, str) or name not in FAMILY:
        raise ValueError(f"unknown decoder {name!r}; the family is {sorted(FAMILY)}")
    folder = CHECKPOINTS / name
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no checkpoint: run `make pretrain`")
    return folder


def _manifest(path: Path) -> dict:
    """manifest.json: {"files": {plain file name in the folder: SHA-256 hex}, ...}."""
    manifest = checks.read_json(path)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(
            isinstance(f, str) and f == Path(f).name and f not in ("", ".", "..") and isinstance(h, str)
            for f, h in files.items()):
        raise ValueError(f"{path}: expected {{'files': {{file name in this folder: SHA-256}}}}, "
                         f"got {manifest!r:.200}")
    unlisted = [f for f in FILES if f not in files]
    if unlisted:   # an unlisted file would load unverified
        raise ValueError(f"{path}: lists no SHA-256 for {unlisted}; a manifest covers every file of {list(FILES)}")
    return manifest


def read_checkpoint(folder, verify: bool = True):
    """(config, weights, tokenizer, manifest) of a checkpoint folder, all checked first."""
    from .checkpoint import read_safetensors

    folder = Path(folder)
    manifest = {}
    if verify and (folder / "manifest.json").is_file():
        manifest = _manifest(folder / "manifest.json")
        for f, digest in manifest["files"].items():
            if not (folder / f).is_file():
                raise FileNotFoundError(f"{folder / f} is listed in manifest.json but missing")
            if sha256_file(folder / f) != digest:
                raise ValueError(f"{folder / f}: SHA-256 differs from manifest.json (file changed or from another model)")
    raw = checks.read_json(folder / "config.json")
    cfg = config_from_hf(raw, f"{folder}/config.json")
    weights = check_weights(cfg, read_safetensors(folder / "model.safetensors"), f"{folder}/model.safetensors")
    tok = DecoderTokenizer.from_file(folder / "tokenizer.json")
    if tok.vocab_size != cfg.vocab_size or tok.eos_id != raw.get("eos_token_id"):
        raise ValueError(f"{folder}/tokenizer.json belongs to another model: {tok.vocab_size} tokens and "
                         f"<|endoftext|> = {tok.eos_id}, config.json says {cfg.vocab_size} and {raw.get('eos_token_id')}")
    return cfg, weights, tok, manifest


class DecoderLM:
    """A loaded decoder: ``logits(ids) -> (T, V)``, greedy ``generate``, and ``tokenizer``.

    ``net`` is the NumPy ``decoder.Decoder``; it takes 1-D NumPy ids and returns NumPy arrays.
    The torch twin's wrapper, ``torch_ref.decoder.TorchDecoderLM``, overrides ``_logits`` and
    ``_greedy`` (a floor up: nothing here imports torch).
    """

    backend = "numpy"

    def __init__(self, name: str, net, tokenizer: DecoderTokenizer, folder: Path):
        self.name, self.net, self.tokenizer, self.folder = name, net, tokenizer, folder
        self.config = net.config

    def _ids(self, ids, extra: int = 0) -> np.ndarray:
        return check_prompt(ids, extra, self.config)

    def _logits(self, ids: np.ndarray) -> np.ndarray:
        return self.net(ids[None])[0]

    def _greedy(self, ids: np.ndarray, max_new_tokens: int) -> np.ndarray:
        from .decoder import generate

        return generate(self.net, ids, max_new_tokens)

    def logits(self, ids) -> np.ndarray:
        return self._logits(self._ids(ids))

    def generate(self, ids, max_new_tokens: int, stop_at_eos: bool = True) -> np.ndarray:
        """Prompt + up to ``max_new_tokens`` greedy tokens (KV cache), as a 1-D int64 array.
        Like ``transformers``' ``generate``, it ends after the first <|endoftext|> it produces
        unless ``stop_at_eos`` is False."""
        ids = self._ids(ids, max_new_tokens)
        out = self._greedy(ids, int(max_new_tokens))
        ends = np.flatnonzero(out[ids.size:] == self.tokenizer.eos_id)
        return out[: ids.size + ends[0] + 1] if stop_at_eos and ends.size else out


def load_lm(name: str | None = None, dtype=None, folder=None) -> DecoderLM:
    """A pretrained decoder of the family (``FAMILY``; default ``DEFAULT``) in our NumPy
    ``decoder.Decoder``, offline; ``folder`` loads another checkpoint folder in the same layout.
    Everything is checked (``read_checkpoint``) before anything is built. The torch twin:
    ``torch_ref.decoder.load_lm_torch``; the one call that picks either: ``models.load_decoder``."""
    from .decoder import Decoder

    folder = checkpoint_dir(name) if folder is None else folder
    cfg, weights, tok, _ = read_checkpoint(folder)
    net = Decoder(cfg, dtype=np.float32 if dtype is None else dtype).load_state_dict(weights)
    return DecoderLM(Path(folder).name, net, tok, folder)
