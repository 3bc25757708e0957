"""Export a fine-tuned encoder as a plain Hugging Face model: ``export_merged(model, directory)``.

LoRA layers are folded into their base weights, W = W₀ + s·B A (Eq. 2.6), without touching
the model itself (a merged layer is written as it is). What comes out is the directory
``transformers.AutoModel.from_pretrained`` reads: ``config.json`` (a ``BertModel``) and
``model.safetensors`` under BertModel's own parameter names. For the bundled MiniLM it is
also a sentence-transformers directory (tokenizer files, ``modules.json``, mean pooling,
normalisation) that ``SentenceTransformer(directory)`` loads, giving our ``encode`` numbers.

Only changes that live inside BertModel's weights can be exported this way: LoRA (merged)
and new biases (BitFit). Adapters, prefixes and prompts add computation a BertModel does
not have; those are refused, by name, before anything is written.
"""
from __future__ import annotations

import json
import pathlib

import numpy as np

from . import checkpoint
from .checks import write_atomically
from .peft_io import _root

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
SENTENCE_TRANSFORMERS_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
                               "1_Pooling/config.json")
LORA_KEYS = ("lora_A", "lora_B", "base_layer.weight", "base_layer.bias")


def _numpy_state(backend, root) -> dict[str, np.ndarray]:
    if backend == "numpy":
        return {k: np.asarray(v) for k, v in root.state_dict().items()}
    import torch

    cpu = {k: v.detach().cpu() for k, v in root.state_dict().items()}
    return {k: (v.float() if v.dtype == torch.bfloat16 else v).numpy() for k, v in cpu.items()}  # NumPy has no bf16


def _lora_layers(backend, root) -> dict:
    if backend == "numpy":
        from .lora import lora_layers
    else:
        from .torch_ref.lora import lora_layers
    return lora_layers(root)


def merged_state(model) -> dict[str, np.ndarray]:
    """BertModel-named float arrays of the model with every LoRA layer folded in (Eq. 2.6)."""
    backend, root = _root(model)
    state = _numpy_state(backend, root)
    for path, layer in _lora_layers(backend, root).items():
        A, B, W, b = (state.pop(f"{path}.{k}") for k in LORA_KEYS)
        if not layer.merged:                                   # W = W₀ + s·B A   (Eq. 2.6)
            W = (W.astype(np.float64) + layer.scaling * (B.astype(np.float64) @ A.astype(np.float64))).astype(W.dtype)
        state[f"{path}.weight"], state[f"{path}.bias"] = W, b
    return state


def _module(backend, root, path):
    return root.get_submodule(path) if backend == "torch" else dict(root.named_modules())[path]


def bert_config(model, state: dict[str, np.ndarray]) -> dict:
    """config.json of the BertModel these weights belong to (shapes read off the weights)."""
    backend, root = _root(model)
    layers = sorted({int(k.split(".")[2]) for k in state if k.startswith("encoder.layer.")})
    vocab, d = state["embeddings.word_embeddings.weight"].shape
    return {
        "architectures": ["BertModel"], "model_type": "bert", "hidden_act": "gelu",
        "vocab_size": vocab, "hidden_size": d, "num_hidden_layers": len(layers),
        "num_attention_heads": _module(backend, root, "encoder.layer.0.attention.self").h,
        "intermediate_size": state["encoder.layer.0.intermediate.dense.weight"].shape[0],
        "max_position_embeddings": state["embeddings.position_embeddings.weight"].shape[0],
        "type_vocab_size": state["embeddings.token_type_embeddings.weight"].shape[0],
        "layer_norm_eps": float(_module(backend, root, "embeddings.LayerNorm").eps),
        "pad_token_id": 0, "position_embedding_type": "absolute", "initializer_range": 0.02,
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "dtype": "float32",
    }


def _expected_names(cfg: dict) -> set[str]:
    """BertModel's parameter names (pooler aside) for a config: what a plain encoder has."""
    emb = [f"embeddings.{n}_embeddings.weight" for n in ("word", "position", "token_type")]
    emb += ["embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias"]
    per_layer = [f"attention.self.{n}" for n in ("query", "key", "value")]
    per_layer += ["attention.output.dense", "attention.output.LayerNorm", "intermediate.dense",
                  "output.dense", "output.LayerNorm"]
    return set(emb) | {f"encoder.layer.{i}.{m}.{p}" for i in range(cfg["num_hidden_layers"])
                       for m in per_layer for p in ("weight", "bias")}


def _check(model, state, cfg):
    backend, root = _root(model)
    extra = sorted(set(state) - _expected_names(cfg))
    if extra:
        raise ValueError(f"export_merged: the model has parameters a BertModel does not ({extra[:3]}"
                         f"{' …' if len(extra) > 3 else ''}); only LoRA (merged) and bias changes fit into "
                         "a plain BertModel. Adapters, prefixes and prompts need their own library.")
    missing = sorted(_expected_names(cfg) - set(state))
    if missing:
        raise ValueError(f"export_merged: the model lacks {missing[:3]}; is it a BERT encoder?")
    hooked = [p for p, m in (root.named_modules()) if getattr(m, "prefix", None) is not None]
    if hooked:
        raise ValueError(f"export_merged: {hooked[:2]} carry a prefix/prompt, which a BertModel cannot hold")
    for k, v in state.items():
        if v.dtype.kind != "f" or not np.all(np.isfinite(v)):
            raise ValueError(f"export_merged: {k} is not finite floating point ({v.dtype})")


def _is_bundled_minilm(cfg: dict) -> bool:
    base = checkpoint.load_config()
    return all(cfg[k] == base.get(k) for k in ("vocab_size", "hidden_size", "num_hidden_layers",
                                               "num_attention_heads", "intermediate_size"))


def export_merged(model, directory) -> pathlib.Path:
    """Write the model (LoRA merged) as a Hugging Face BertModel directory; returns it.

    For the bundled MiniLM the directory also holds the tokenizer, the original pooler and
    the sentence-transformers files, so ``AutoModel``, ``AutoTokenizer`` and
    ``SentenceTransformer`` all load it. Everything is checked before a file is written.
    """
    state = merged_state(model)
    cfg = bert_config(model, state)
    _check(model, state, cfg)
    from safetensors.numpy import save

    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sorted(state.items())}
    minilm = _is_bundled_minilm(cfg)
    if minilm:  # mean pooling never uses the pooler; keep the checkpoint's so nothing is random
        tensors.update({k: v for k, v in checkpoint.load_weights().items() if k.startswith("pooler.")})
    out = pathlib.Path(directory)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"export_merged: {out} exists and is not a directory")
    files = {out / WEIGHTS_NAME: save(tensors, metadata={"format": "pt"}),
             out / CONFIG_NAME: json.dumps(cfg, indent=2, sort_keys=True) + "\n"}
    if minilm:
        src = checkpoint.model_dir()
        files |= {out / name: (src / name).read_bytes() for name in TOKENIZER_FILES + SENTENCE_TRANSFORMERS_FILES}
    write_atomically(files)  # all files or none: never weights without their config
    return out


__all__ = ["export_merged", "merged_state", "bert_config"]
