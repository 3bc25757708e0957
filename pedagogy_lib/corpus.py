"""Real, offline text for the decoder (chapter 09, §7): the text that ships with Python.

Two sources, both read from the running interpreter's own files, nothing downloaded:

* **The standard library's docstrings.** Every ``.py`` file under ``sysconfig``'s stdlib
  folder is *parsed* with ``ast`` (never imported: importing ``antigravity`` opens a browser
  and ``this`` prints a poem). Each module, class and function docstring becomes one text,
  headed by what it documents — ``module json``, ``class json.JSONDecoder``,
  ``json.dumps(obj, *, skipkeys=False, ...)`` — so a model can be prompted with a name.
  Docstrings are cleaned as ``inspect.cleandoc`` does (``ast.get_docstring``).
* **``pydoc_data.topics``**, the language reference as ``help()`` shows it: one text per
  topic (``'assignment'``, ``'for'``, ...).

Choices, each one a constant below:

* **Tests are left out** (``EXCLUDED_DIRS``): a test suite's docstrings are one-line
  descriptions of test cases and would be a third of the text. So are ``site-packages``
  (not the stdlib), the build's ``config-*`` folder and ``_sysconfigdata_*`` (machine
  specific), and files that do not parse (Python 2 examples, counted in ``skipped``).
* **The split is by document, never by text** (``split_of``): a stdlib module, or a pydoc
  topic, goes whole into train (90%), validation (5%) or test (5%), decided by the SHA-256
  of its name, so adding a module never moves another one. A module's docstrings share
  vocabulary and phrasing; splitting inside a module would leak them.
* **Chapter 10's modules are held out** (``HELDOUT``, with all their submodules): chapter
  10 fine-tunes the decoder to write docstrings of these modules and must test on text the
  pretraining never saw. They form their own split, ``heldout``.
* **Exact duplicates are removed across the whole corpus** (``dedupe``): many docstrings
  are copied (``_pyio`` repeats ``io``, ``_pydecimal`` is ``decimal``; "Return repr(self)."
  appears dozens of times). A text whose whitespace-normalised body was seen before is
  dropped, and the *evaluation* splits are visited first (heldout, test, val, then train),
  so a copy is removed from training rather than from the text we test on: no evaluation
  text occurs verbatim in the training split.

The corpus depends on the interpreter's exact stdlib (patch version included);
``Corpus.sha256`` fingerprints it, and the checkpoints record the one they were trained on.
"""
from __future__ import annotations

import ast
import hashlib
import json
import sys
import sysconfig
import tokenize
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from . import checks

SPLITS = ("train", "val", "test", "heldout")
FRACTIONS = {"val": 0.05, "test": 0.05}      # the rest of the non-held-out documents: train
EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "__pycache__"})
HELDOUT = ("bisect", "calendar", "colorsys", "csv", "fnmatch", "glob", "heapq", "json",
           "shlex", "statistics", "string", "textwrap")


@dataclass(frozen=True)
class Document:
    """One stdlib module (``name`` = dotted module path) or pydoc topic (``topic:NAME``)."""

    name: str
    split: str
    texts: tuple[str, ...]

    @property
    def chars(self) -> int:
        return sum(len(t) for t in self.texts)


@dataclass
class Corpus:
    documents: list[Document]
    python: str
    skipped: list[str] = field(default_factory=list)   # files that did not parse
    duplicates: int = 0                                # texts dropped as exact copies

    def texts(self, split: str) -> list[str]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
        return [t for d in self.documents if d.split == split for t in d.texts]

    @property
    def sha256(self) -> str:
        """Fingerprint of every document (name, split, texts) in order."""
        blob = json.dumps([[d.name, d.split, list(d.texts)] for d in self.documents], ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def stats(self) -> dict:
        out = {}
        for s in SPLITS:
            docs = [d for d in self.documents if d.split == s]
            out[s] = {"documents": len(docs), "texts": sum(len(d.texts) for d in docs),
                      "chars": sum(d.chars for d in docs)}
        return out


# ---------------------------------------------------------------------------- splitting
def split_of(name: str) -> str:
    """heldout for chapter 10's modules; else val/test/train from the SHA-256 of the name."""
    top = name.split(".")[0]
    if top in HELDOUT:
        return "heldout"
    u = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) / 16 ** 8
    if u < FRACTIONS["val"]:
        return "val"
    return "test" if u < FRACTIONS["val"] + FRACTIONS["test"] else "train"


# ---------------------------------------------------------------------------- reading
def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def module_files(root: Path | None = None) -> list[tuple[str, Path]]:
    """(dotted module name, path) of every stdlib .py file outside the excluded folders, sorted."""
    root = stdlib_dir() if root is None else Path(root)
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(p in EXCLUDED_DIRS or p.startswith("config-") for p in rel.parts[:-1]):
            continue
        if rel.name.startswith("_sysconfigdata_") or rel.name.startswith("test_"):
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            out.append((".".join(parts), path))
    return out


def _header(node, qual: str) -> str:
    if isinstance(node, ast.ClassDef):
        return f"class {qual}"
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return f"{qual}({ast.unparse(node.args)})"
    return f"module {qual}"


def docstrings(tree: ast.Module, module: str) -> list[str]:
    """'header\\n\\ndocstring' for the module and every class/function with a docstring,
    in source order (nested definitions included, named by their dotted path)."""
    out = []

    def visit(node, qual):
        doc = ast.get_docstring(node, clean=True)
        if doc and doc.strip():
            out.append(f"{_header(node, qual)}\n\n{doc.strip()}")
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, f"{qual}.{child.name}")

    visit(tree, module)
    return out


def read_module(path: Path) -> ast.Module:
    with tokenize.open(path) as f:   # honours the file's encoding declaration
        return ast.parse(f.read(), filename=str(path))


def topic_documents() -> list[tuple[str, list[str]]]:
    from pydoc_data.topics import topics

    return [(f"topic:{k}", [v.strip()]) for k, v in sorted(topics.items()) if v.strip()]


# ---------------------------------------------------------------------------- building
def _norm(text: str) -> str:
    body = text.split("\n\n", 1)[-1]   # compare docstring bodies, not their headers
    return " ".join(body.split())


def dedupe(raw: list[tuple[str, str, list[str]]]) -> tuple[list[Document], int]:
    """Drop exact (whitespace-normalised) copies; evaluation splits claim their texts first."""
    order = {"heldout": 0, "test": 1, "val": 2, "train": 3}
    seen, kept, dropped = set(), {}, 0
    for name, split, texts in sorted(raw, key=lambda r: (order[r[1]], r[0])):
        mine = []
        for t in texts:
            key = _norm(t)
            if key in seen:
                dropped += 1
                continue
            seen.add(key)
            mine.append(t)
        if mine:
            kept[name] = Document(name, split, tuple(mine))
    return [kept[n] for n in sorted(kept)], dropped


def build_corpus(root: Path | None = None) -> Corpus:
    """Read, split and deduplicate; deterministic for a given stdlib."""
    raw, skipped = [], []
    for name, path in module_files(root):
        try:
            tree = read_module(path)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            skipped.append(name)
            continue
        texts = docstrings(tree, name)
        if texts:
            raw.append((name, split_of(name), texts))
    raw += [(name, split_of(name), texts) for name, texts in topic_documents()]
    docs, dropped = dedupe(raw)
    return Corpus(docs, sys.version.split()[0], skipped, dropped)


@lru_cache(maxsize=1)
def load_corpus() -> Corpus:
    """The corpus of this interpreter, built once per process."""
    return build_corpus()


# ---------------------------------------------------------------------------- baselines
def ngram_losses(train, evaluate, vocab_size: int) -> dict:
    """Cross-entropy (nats per token) on the ``evaluate`` stream of two count models fitted on
    ``train``, the yardsticks for a pretrained decoder (Eq. 9.13):

    * unigram, add-one smoothed: p(w) = (c(w) + 1) / (N + V);
    * bigram, Witten–Bell interpolated with that unigram: p(w | v) = λ_v c(v, w)/c(v) +
      (1 − λ_v) p(w), λ_v = c(v) / (c(v) + n(v)), n(v) = number of distinct followers of v.
      No tuned constant: λ_v trusts a context more the more often it was seen.
    """
    import numpy as np

    if any(np.asarray(s).dtype.kind not in "iu" for s in (train, evaluate)):  # 1.7 would become id 1
        raise TypeError("train and evaluate must be streams of integer token ids")
    V = checks.positive_int(vocab_size, "vocab_size")  # 3.7 would become 3
    train, ev = np.asarray(train, np.int64), np.asarray(evaluate, np.int64)
    for name, s in (("train", train), ("evaluate", ev)):
        if s.ndim != 1 or s.size < 2 or s.min() < 0 or s.max() >= V:
            raise ValueError(f"{name}: expected a 1-D stream of at least 2 ids in [0, {V})")
    uni = (np.bincount(train, minlength=V) + 1.0) / (train.size + V)
    pairs, counts = np.unique(train[:-1] * V + train[1:], return_counts=True)
    ctx = np.bincount(train[:-1], minlength=V).astype(float)
    followers = np.bincount(pairs // V, minlength=V).astype(float)
    lam = np.divide(ctx, ctx + followers, out=np.zeros(V), where=ctx > 0)
    q = ev[:-1] * V + ev[1:]
    pos = np.minimum(np.searchsorted(pairs, q), pairs.size - 1)
    c_vw = np.where(pairs[pos] == q, counts[pos], 0)
    v, w = ev[:-1], ev[1:]
    p_bi = lam[v] * np.divide(c_vw, ctx[v], out=np.zeros(v.size), where=ctx[v] > 0) + (1 - lam[v]) * uni[w]
    return {"unigram": float(-np.log(uni[w]).mean()), "bigram": float(-np.log(p_bi).mean()),
            "uniform": float(np.log(V))}
