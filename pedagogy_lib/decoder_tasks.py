"""Two fine-tuning tasks for the decoder, from text that ships with Python (chapter 10, §1).

Both are built from ``corpus.load_corpus()`` and are leak-free by construction (``leaks``
checks it):

* **Area** (classification through the frozen LM head). Input: the first characters of a
  docstring's body (its header, which names the module, is dropped). Target: the name of
  the standard-library package it comes from, one of ``AREAS``, written as a word after a
  fixed template (a *verbaliser*: the LM head scores each package name, no new head).
  Fine-tuning examples come from modules of the corpus's *train* split; the evaluation
  examples from modules of its *val* and *test* splits, which the decoder never saw in
  pretraining and the fine-tuning never sees either (a few short docstrings recur word for word
  in other modules: ``read_in_pretraining`` counts them). Validation (for choosing learning
  rates) is a set of whole train-split modules kept out of fine-tuning.
* **First line** (generation). Input: a function's or class's header exactly as the corpus
  writes it (``json.dumps(obj, *, skipkeys=False, …)``, ``class textwrap.TextWrapper``).
  Target: the first line of its docstring. Fine-tuning on the train split, validation on
  the val split, evaluation on the modules held out of pretraining (``corpus.HELDOUT``):
  text neither the pretraining nor the fine-tuning saw.

An example is a (prompt, response) pair of strings. ``encode`` tokenises prompt + response
*as one string* (the way pretraining saw such text) and marks the response's tokens with
the tokenizer's character offsets; the loss mask keeps only those targets (Eq. 10.1).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from . import checks, corpus
from .bpe import _text

AREAS = ("tkinter", "idlelib", "email", "importlib", "logging", "xml")
BODY_CHARS = 100                 # characters of docstring body the area classifier reads
AREA_TEMPLATE = "{body}\n\nThis docstring is from the package:"
LINE_CHARS = (12, 100)           # first lines shorter or longer than this are skipped
VAL_FRACTION = 0.2               # of each area's train-split texts, by whole modules


@dataclass(frozen=True)
class Example:
    prompt: str
    response: str
    module: str            # the dotted module the text comes from
    label: int = -1        # index into AREAS (area task); -1 for generation


def split_header(text: str) -> tuple[str, str]:
    """'header\\n\\nbody' (the corpus's layout) -> (header, body)."""
    header, _, body = text.partition("\n\n")
    return header, body.strip()


def _u(name: str, seed: int) -> float:
    """A uniform number in [0, 1) fixed by a module name and a seed."""
    return int(hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()[:8], 16) / 16 ** 8


def _area_examples(docs, area: int) -> list[Example]:
    out = []
    for d in docs:
        for text in d.texts:
            body = split_header(text)[1][:BODY_CHARS]
            if body:
                out.append(Example(AREA_TEMPLATE.format(body=body), " " + AREAS[area], d.name, area))
    return out


def _cap(examples: list[Example], n: int | None, rng) -> list[Example]:
    if n is not None:
        n = checks.nonneg_int(n, "number of examples")
    if n is None or len(examples) <= n:
        return examples
    keep = np.sort(rng.choice(len(examples), n, replace=False))
    return [examples[i] for i in keep]


def area_task(n_train: int | None = 120, n_eval: int | None = 120, seed: int = 0) -> dict:
    """{'train', 'val', 'test': [Example]}: at most ``n_train`` / ``n_eval`` per area (a seeded
    subsample; None keeps all). Modules are never shared between splits."""
    seed = checks.seed(seed)
    c = corpus.load_corpus()
    rng = np.random.default_rng(seed)
    out = {"train": [], "val": [], "test": []}
    for a, area in enumerate(AREAS):
        docs = [d for d in c.documents if d.name.split(".")[0] == area]
        fit = sorted((d for d in docs if d.split == "train"), key=lambda d: _u(d.name, seed))
        n_fit, val, train = sum(len(d.texts) for d in fit), [], []
        for d in fit:  # whole modules to validation until it holds VAL_FRACTION of the texts
            (val if sum(len(v.texts) for v in val) < VAL_FRACTION * n_fit else train).append(d)
        test = [d for d in docs if d.split in ("val", "test")]
        out["train"] += _cap(_area_examples(train, a), n_train, rng)
        out["val"] += _cap(_area_examples(val, a), None if n_eval is None else n_eval // 2, rng)
        out["test"] += _cap(_area_examples(test, a), n_eval, rng)
    return out


def first_line(body: str) -> str:
    """The docstring's first line (its summary, by PEP 257 convention)."""
    return body.split("\n", 1)[0].strip()


def _line_examples(docs) -> list[Example]:
    out = []
    for d in docs:
        for text in d.texts:
            header, body = split_header(text)
            line = first_line(body)
            if header.startswith("module ") or not LINE_CHARS[0] <= len(line) <= LINE_CHARS[1]:
                continue
            out.append(Example(header + "\n\n", line, d.name))
    return out


def line_task(n_train: int | None = 1500, seed: int = 0) -> dict:
    """{'train', 'val', 'test': [Example]} for header → first line; test = ``corpus.HELDOUT``."""
    seed = checks.seed(seed)
    c = corpus.load_corpus()
    rng = np.random.default_rng(seed)
    by_split = {s: [d for d in c.documents if d.split == s and not d.name.startswith("topic:")]
                for s in corpus.SPLITS}
    return {"train": _cap(_line_examples(by_split["train"]), n_train, rng),
            "val": _cap(_line_examples(by_split["val"]), 150, rng),
            "test": _line_examples(by_split["heldout"])}


def leaks(task: dict) -> dict:
    """What the evaluation splits share with train: modules, prompts and (prompt, response)
    pairs. All three must be empty."""
    train = task["train"]
    out = {}
    for s in ("val", "test"):
        out[s] = {"modules": sorted({e.module for e in task[s]} & {e.module for e in train}),
                  "prompts": len({e.prompt for e in task[s]} & {e.prompt for e in train}),
                  "pairs": len({(e.prompt, e.response) for e in task[s]} & {(e.prompt, e.response) for e in train})}
    return out


def read_in_pretraining(examples) -> list[Example]:
    """The examples whose prompt text (the area template's fixed sentence left aside) occurs
    verbatim, white space folded, in the text pretraining read (the corpus's train split). A
    module held out of pretraining is not enough when a short docstring ("Initialize the
    handler.") recurs word for word in another module."""
    fold = lambda s: " ".join(s.split())  # noqa: E731
    blob = "\n\x00\n".join(fold(t) for t in corpus.load_corpus().texts("train"))
    tail = AREA_TEMPLATE.split("{body}")[1]
    return [e for e in examples if fold(e.prompt.removesuffix(tail)) in blob]


# ----------------------------------------------------------------------------- tokens and mask
def encode(tok, prompt: str, response: str, end: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """ids = [<|endoftext|>] + tokens(prompt + response) (+ [<|endoftext|>]) and the loss mask
    m (len(ids) − 1,): m_t = 1 where target ids[t+1] is a response token or the closing
    <|endoftext|> (Eq. 10.1). A token counts as response when it starts at or after the
    prompt's last character; a token straddling the boundary is refused (the template must
    end where a token ends)."""
    if not isinstance(prompt, str) or not isinstance(response, str) or not response:
        raise ValueError("encode needs a prompt string and a non-empty response string")
    enc = tok.tok.encode(_text(prompt + response, "decoder_tasks.encode"))   # a lone surrogate: named
    starts = np.array([s for s, _ in enc.offsets], np.int64)
    ends = np.array([e for _, e in enc.offsets], np.int64)
    cut = len(prompt)
    if np.any((starts < cut) & (ends > cut)):
        raise ValueError(f"a token straddles the prompt/response boundary at {prompt[-10:]!r}|{response[:10]!r}")
    ids = np.concatenate([[tok.eos_id], enc.ids, [tok.eos_id] if end else []]).astype(np.int64)
    is_resp = np.concatenate([[False], starts >= cut, [True] if end else []])
    return ids, is_resp[1:].astype(np.int64)   # target t+1 is a response token


def batch(tok, examples, max_len: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded (B, T) ids (pad = <|endoftext|>) and (B, T−1) masks; prompts longer than
    ``max_len`` lose their *start* (the response is always kept whole). Right padding needs
    no attention mask in a causal model: pads come after every real token."""
    max_len = checks.positive_int(max_len, "max_len")
    rows = []
    for e in examples:
        ids, m = encode(tok, e.prompt, e.response)
        if ids.size > max_len:
            drop = ids.size - max_len   # ids[1:1+drop] go; they were the targets m[:drop]
            if m[:drop].any():
                raise ValueError(f"response of {int(m.sum())} tokens does not fit in max_len={max_len}")
            ids, m = np.concatenate([ids[:1], ids[1 + drop:]]), m[drop:]   # new target 0 is ids[1+drop]
        rows.append((ids, m))
    if not rows:
        raise ValueError("batch needs at least one example")
    T = max(r[0].size for r in rows)
    out = np.full((len(rows), T), tok.eos_id, np.int64)
    mask = np.zeros((len(rows), T - 1), np.int64)
    for i, (ids, m) in enumerate(rows):
        out[i, : ids.size], mask[i, : m.size] = ids, m
    return out, mask


# ----------------------------------------------------------------------------- metrics
def lcs(a: list, b: list) -> int:
    """Length of the longest common subsequence (dynamic programming, O(|a||b|))."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 on whitespace words: P = LCS/|c|, R = LCS/|r|, F = 2PR/(P + R)."""
    c, r = candidate.split(), reference.split()
    if not c or not r:
        return float(c == r)
    n = lcs(c, r)
    return 0.0 if n == 0 else 2 * n / (len(c) + len(r))


__all__ = ["AREAS", "Example", "area_task", "line_task", "leaks", "read_in_pretraining", "encode", "batch", "rouge_l",
           "lcs", "first_line", "split_header"]
