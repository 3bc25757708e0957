"""Chapter 10's two tasks as token arrays, their evaluation and the training budget, shared by
``experiment.py`` (the methods) and ``studies.py`` (the QLoRA studies); ``decoder_task``
hands a task to the runner (``runner.DecoderTask``)."""
from __future__ import annotations

import time

import numpy as np
import torch

from pedagogy_lib import decoder_tasks as T, results as R
from pedagogy_lib.runner import DecoderTask
from pedagogy_lib.torch_ref import decoder_peft as P

STEPS, BATCH, SEEDS = {"area": 40, "line": 80}, 16, (0, 1, 2, 3, 4)   # the book's five seeds (DESIGN.md)
GEN_TOKENS = 24


def prepare(task: str, tok) -> dict:
    """Token arrays of one task: train/val/test ids and response masks; for ``area`` also each
    evaluation prompt alone (to read the verbaliser's scores) and the first token of each name."""
    data = T.area_task() if task == "area" else T.line_task()
    out = {s: T.batch(tok, data[s]) for s in ("train", "val", "test")}
    out["examples"] = data
    if task == "area":
        out["verbaliser"] = np.array([tok.encode(" " + a)[0] for a in T.AREAS])
        for s in ("val", "test"):
            out[f"{s}_prompts"] = [np.concatenate([[tok.eos_id], tok.encode(e.prompt)]) for e in data[s]]
            out[f"{s}_labels"] = np.array([e.label for e in data[s]])
    return out


@torch.no_grad()
def area_accuracy(model, prompts, labels, verbaliser) -> float:
    """argmax over the six names' first-token logits at the prompt's last position."""
    correct = 0
    for i in range(0, len(prompts), 64):
        chunk = prompts[i:i + 64]
        n = np.array([p.size for p in chunk])
        buf = np.zeros((len(chunk), n.max()), np.int64)
        for j, p in enumerate(chunk):
            buf[j, : p.size] = p
        logits = model(torch.from_numpy(buf))[torch.arange(len(chunk)), torch.from_numpy(n - 1)]
        pred = logits[:, torch.from_numpy(verbaliser)].argmax(-1).numpy()
        correct += int((pred == labels[i:i + 64]).sum())
    return correct / len(prompts)


def line_scores(model, ids, mask) -> dict:
    """Mean response-token loss over the split (token-weighted) and its perplexity (Eq. 9.14)."""
    nll = P.response_nll(model, ids, mask)
    loss = float(nll[:, 0].sum() / nll[:, 1].sum())
    return {"loss": loss, "ppl": float(np.exp(loss))}


def generations(model, data, tok) -> dict:
    """Greedy first lines for the test headers: exact match and ROUGE-L against the truth."""
    prompts = [np.concatenate([[tok.eos_id], tok.encode(e.prompt)]) for e in data]
    outs = P.greedy(model, prompts, GEN_TOKENS, tok.eos_id)
    texts = [tok.decode(o).strip() for o in outs]
    em = [float(t == e.response) for t, e in zip(texts, data)]
    rl = [T.rouge_l(t, e.response) for t, e in zip(texts, data)]
    return {"exact_match": float(np.mean(em)), "rouge_l": float(np.mean(rl)), "samples": texts[:5]}


def evaluate(task: str, model, d: dict, split: str, tok, generate: bool = False) -> dict:
    if task == "area":
        return {"acc": area_accuracy(model, d[f"{split}_prompts"], d[f"{split}_labels"], d["verbaliser"])}
    out = line_scores(model, *d[split])
    if generate:
        out |= generations(model, d["examples"][split], tok)
    return out


def score(task: str, ev: dict) -> float:
    """The validation score to maximise: accuracy, or minus the mean response loss."""
    return ev["acc"] if task == "area" else -ev["loss"]


def decoder_task(task: str, tok, d: dict | None = None) -> DecoderTask:
    """``task`` ("area" or "line") for ``runner.run_decoder``/``decoder_protocol``: its
    training arrays, evaluation and score, the budget, and (line) the greedy generations added
    at the chosen rate. ``d``: the arrays of ``prepare`` if already built."""
    d = prepare(task, tok) if d is None else d
    finish = (lambda model: generations(model, d["examples"]["test"], tok)) if task == "line" else None
    return DecoderTask(task, d["train"],
                       lambda model, split, generate=False: evaluate(task, model, d, split, tok, generate),
                       lambda ev: score(task, ev), STEPS[task], BATCH, SEEDS, finish=finish,
                       sizes={s: len(d["examples"][s]) for s in ("train", "val", "test")})


SCORES = ("val", "test", "train", "trainable", "final_loss")   # what a re-run must reproduce exactly


def add_seeds(res: dict, run, seeds=SEEDS, check: bool = True, bar=None) -> dict:
    """Add the ``seeds`` that ``res`` (stored protocol results) lacks, at each method's chosen
    rate, without re-running the stored seeds or the rate search. ``run(method, lr, seed, bar)``
    → the run's record. A seed fixes the batches and the initialisation, so the new runs are
    paired with the stored ones; ``check``: first re-run the first method's first stored seed
    and refuse (nothing changed) unless it reproduces the stored ``SCORES`` exactly. ``res["seeds"]``
    becomes ``seeds``; the wall and CPU seconds spent are kept under ``added_seeds``."""
    have = [int(s) for s in res.get("seeds", sorted({r["seed"] for r in res["runs"]}))]
    new = [s for s in seeds if s not in have]
    if sorted(set(have) | set(seeds)) != sorted(seeds):
        raise ValueError(f"stored seeds {have} are not among {list(seeds)}")
    t0, c0 = time.perf_counter(), time.process_time()
    if check and new:
        m = next(iter(res["selection"]))
        lr = res["selection"][m]["chosen"]
        old = next(r for r in res["runs"] if r["method"] == m and r["lr"] == lr and r["seed"] == have[0])
        again = run(m, lr, have[0], bar)
        diff = [k for k in SCORES if k in old and again[k] != old[k]]
        if diff:
            raise RuntimeError(f"re-running {m} seed {have[0]} at lr {lr} changed {diff}: "
                               f"{[old[k] for k in diff]} → {[again[k] for k in diff]}; new seeds would not be paired")
    if not new:
        return res
    runs = in_protocol_order(res, [run(m, sel["chosen"], s, bar) for m, sel in res["selection"].items() for s in new])
    spent = {"wall_seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0, "checked": check,
             "versions": R.versions("torch", "numpy")}
    return dict(res, runs=runs, seeds=sorted(have + new),
                added_seeds=res.get("added_seeds", {}) | {",".join(map(str, new)): spent})


def in_protocol_order(res: dict, new: list[dict]) -> list[dict]:
    """``res["runs"]`` with each run of ``new`` placed after the last stored run of its method
    and rate, in seed order: the list ``runner.decoder_protocol`` writes when it runs every seed."""
    out = list(res["runs"])
    for rec in sorted(new, key=lambda r: r["seed"]):
        same = [i for i, r in enumerate(out) if (r["method"], r["lr"]) == (rec["method"], rec["lr"])]
        out.insert(same[-1] + 1, rec)
    return out


VADER_TEMPLATE = "Word: {w}\nSentiment:"


def prepare_vader(tok, n_train: int = 2000, seed: int = 0) -> dict:
    """Chapter 00's VADER word polarity read through the decoder, in the area task's format:
    prompt 'Word: w\\nSentiment:', response ' positive' / ' negative', the verbaliser reading
    the two words' first tokens. Knowledge the docstring corpus never taught."""
    from pedagogy_lib import data

    task = data.polarity_task(seed=seed)
    rng = np.random.default_rng(seed)
    out = {"verbaliser": np.array([tok.encode(" negative")[0], tok.encode(" positive")[0]])}
    for name, split in (("train", task.train), ("val", task.val), ("test", task.test)):
        keep = np.arange(len(split))
        if name == "train" and len(keep) > n_train:
            keep = np.sort(rng.choice(len(split), n_train, replace=False))
        ex = [T.Example(VADER_TEMPLATE.format(w=split.tokens[i]), " positive" if split.labels[i] else " negative",
                        split.tokens[i], int(split.labels[i])) for i in keep]
        out[name] = T.batch(tok, ex)
        out[f"{name}_prompts"] = [np.concatenate([[tok.eos_id], tok.encode(e.prompt)]) for e in ex]
        out[f"{name}_labels"] = np.array([e.label for e in ex])
    return out
