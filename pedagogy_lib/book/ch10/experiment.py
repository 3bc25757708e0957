"""Chapter 10's experiment: PEFT methods on the decoder, two tasks, the book's protocol.

``python -m pedagogy_lib.book.ch10.experiment`` (part of ``make sweeps``) writes
``chapters/results/ch10_area.json`` and ``ch10_line.json``. For each task (``area``: classification through the
frozen LM head; ``line``: header → first docstring line) and each method of
``torch_ref.decoder_peft.METHODS``:

1. every rate of the method's grid at seeds 0 and 1; the validation score (accuracy, or
   minus the mean response-token loss) averaged over the two seeds picks the rate, and the
   grid is extended until the best rate is not at an edge (``stats.select_lr``);
2. seed 2 at the chosen rate; the three seeds' test scores are the result. A seed fixes the
   batch order and the adapter's initialisation, so runs of two methods at one seed are paired.

Every run trains for ``STEPS`` steps of ``BATCH`` examples (the same budget for every method)
on one thread. The real recipe (``qlora-recipe``: bitsandbytes 4-bit, peft,
PagedAdamW8bit, fp32 compute) is the slowest by far on a CPU; it uses the rate chosen for
``lora-all`` (the same adapter on the same base, up to 4-bit rounding) and runs its three seeds.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from pedagogy_lib import decoder_io as IO, decoder_tasks as T, results as R, stats
from pedagogy_lib.torch_ref import decoder_peft as P

RESULTS = "ch10_{task}"   # one file per task: ch10_area.json, ch10_line.json
STEPS, BATCH, SEEDS = {"area": 40, "line": 80}, 16, (0, 1, 2)
GRIDS = {"full": (1e-4, 3e-4, 1e-3), "lora-qv": (1e-3, 3e-3, 1e-2), "lora-all": (1e-3, 3e-3, 1e-2),
         "ia3": (3e-3, 1e-2, 3e-2), "prompt": (3e-3, 1e-2, 3e-2), "qlora-ours": (1e-3, 3e-3, 1e-2)}
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


def run(task, method, lr, seed, d, tok, bar=None) -> tuple[dict, torch.nn.Module]:
    """One training run; its record (validation and test scores) and the trained model."""
    torch.manual_seed(seed)
    model = P.build(method, seed)
    t0 = time.perf_counter()
    losses = P.train(model, *d["train"], lr=lr, steps=STEPS[task], batch_size=BATCH, seed=seed,
                     paged8=method == "qlora-recipe", progress=bar)
    rec = {"task": task, "method": method, "lr": lr, "seed": seed, "trainable": P.trainable(model),
           "seconds": time.perf_counter() - t0, "final_loss": float(np.mean(losses[-10:])),
           "val": evaluate(task, model, d, "val", tok), "test": evaluate(task, model, d, "test", tok)}
    return rec, model


def add_generations(task, recs_models, d, tok) -> list[dict]:
    """Greedy generations (exact match, ROUGE-L) for the runs at the chosen rate only."""
    for rec, model in recs_models:
        if task == "line":
            rec["test"] |= generations(model, d["examples"]["test"], tok)
    return [rec for rec, _ in recs_models]


def protocol(task: str, methods, tok, bar=None) -> dict:
    d = prepare(task, tok)
    base = P.build("lora-qv", 0)   # B = 0: the pretrained model itself (zero-shot)
    out = {"zero_shot": {"test": evaluate(task, base, d, "test", tok, generate=True),
                         "val": evaluate(task, base, d, "val", tok)},
           "sizes": {s: len(d["examples"][s]) for s in ("train", "val", "test")}, "runs": [], "selection": {}}
    for method in methods:
        if method == "qlora-recipe":
            lr = out["selection"]["lora-all"]["chosen"]
            out["selection"][method] = {"chosen": lr, "borrowed_from": "lora-all"}
            out["runs"] += add_generations(task, [run(task, method, lr, s, d, tok, bar) for s in SEEDS], d, tok)
            continue
        tried = {}

        def val_score(lr):
            tried[lr] = [run(task, method, lr, s, d, tok, bar) for s in SEEDS[:2]]
            return float(np.mean([score(task, r["val"]) for r, _ in tried[lr]]))

        sel = stats.select_lr(val_score, GRIDS[method], max_extensions=1)
        out["selection"][method] = sel
        for lr in sorted(tried):
            if lr == sel["chosen"]:
                tried[lr].append(run(task, method, lr, SEEDS[2], d, tok, bar))
                out["runs"] += add_generations(task, tried[lr], d, tok)
            else:
                out["runs"] += [r for r, _ in tried[lr]]
        tried.clear()
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="*", default=["area", "line"])
    ap.add_argument("--methods", nargs="*", default=list(P.METHODS))
    ap.add_argument("--no-studies", action="store_true", help="skip the QLoRA studies (studies.py)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    _, _, tok, _ = IO.read_checkpoint(IO.checkpoint_dir())
    n_runs = sum(7 if m != "qlora-recipe" else 3 for m in args.methods)
    for task in args.tasks:
        t0 = time.perf_counter()
        with tqdm(total=n_runs * STEPS[task], desc=f"ch10 {task} (steps)", file=sys.stderr, disable=None) as bar:
            res = protocol(task, args.methods, tok, bar)
        res |= {"task": task, "steps": STEPS[task], "batch": BATCH, "seeds": list(SEEDS), "grids": GRIDS,
                "model": IO.DEFAULT, "wall_seconds": time.perf_counter() - t0,
                "versions": {"torch": torch.__version__, "numpy": np.__version__,
                             "python": platform.python_version()}}
        print(R.save(res, RESULTS.format(task=task)))
    if not args.no_studies:
        from pedagogy_lib.book.ch10 import studies

        studies.main([])


if __name__ == "__main__":
    main()
