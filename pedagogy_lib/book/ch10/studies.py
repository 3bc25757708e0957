"""The QLoRA paper's questions at our scale (chapter 10, §6), stored in ``ch10_studies.json``.

``python -m pedagogy_lib.book.ch10.studies`` (part of ``make sweeps``):

* ``dtypes``     held-out perplexity of each pretrained decoder with its block linears
                 rounded to NF4 / FP4 / Int4 (blocks of 64), with and without double
                 quantisation, against float32 (the paper compares data types by perplexity);
* ``placement``  LoRA on q,v only against all linear layers, both on our NF4 + DQ base,
                 on the generation task, the five seeds of ``tasks.SEEDS``, at ``LR`` (the middle of the grid of
                 ``qlora-ours``; the studies run beside the protocol), paired differences;
* ``rank``       r ∈ ``RANKS`` on the same base and task, one seed (seed 0);
* ``vader``      (``ch10_vader.json``) LoRA (q, v) and full fine-tuning on VADER word polarity,
                 knowledge the corpus never taught (``python -m pedagogy_lib.book.ch10.studies --vader``);
* ``recipe``     the real recipe in one process: bf16 against fp32 compute, gradient
                 checkpointing on against off (seconds per step and bytes saved for the
                 backward, as ratios inside this run), and the optimiser's state: AdamW,
                 AdamW8bit and PagedAdamW8bit on the LoRA factors and on every weight.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from pedagogy_lib import corpus, decoder_io as IO, results as R, runner
from pedagogy_lib.book.ch10 import tasks as E
from pedagogy_lib.registry import DECODER_ARMS, Arm
from pedagogy_lib.torch_ref import decoder_peft as P, recipe as RC
from pedagogy_lib.torch_ref.decoder import build_decoder

RESULTS = "ch10_studies"
CODES = ("nf4", "fp4", "int4")
RANKS = (1, 4, 8, 16, 64)
LR = 3e-3   # the middle of qlora-ours' grid (the studies run beside the protocol, not after it)


@torch.no_grad()
def heldout_loss(net, stream: np.ndarray, seq: int = 128) -> float:
    """Mean next-token loss (nats) over non-overlapping blocks of the held-out stream."""
    n = (stream.size - 1) // seq
    x = torch.from_numpy(stream[: n * seq + 1])
    total = 0.0
    for i in range(0, n, 32):
        rows = torch.stack([x[j * seq:(j + 1) * seq + 1] for j in range(i, min(n, i + 32))])
        logits = net(rows[:, :-1])
        total += float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), rows[:, 1:].reshape(-1),
                                                         reduction="sum"))
    return total / (n * seq)


def dtypes() -> dict:
    out = {}
    c = corpus.load_corpus()
    for name in IO.available():
        cfg, weights, tok, _ = IO.read_checkpoint(IO.checkpoint_dir(name))
        stream = tok.stream(c.texts("heldout"))
        row = {"fp32": heldout_loss(build_decoder(cfg, weights), stream), "tokens": int(stream.size)}
        for code in CODES:
            for dq in (False, True):
                net = build_decoder(cfg, weights)
                P.quantize_base(net, code, dq)
                row[f"{code}{'+dq' if dq else ''}"] = heldout_loss(net, stream)
        out[name] = row
    return out


def _line_runs(methods_r, lr, seeds, d, tok, bar) -> list[dict]:
    """``qlora-ours`` with LoRA on ``targets`` at rank r (α = 2r), trained by the runner."""
    runs, task = [], E.decoder_task("line", tok, d)
    for label, targets, r in methods_r:
        arm = Arm(label, "qlora", {"targets": targets, "r": r}, model="decoder")
        for s in seeds:
            net, _, _ = runner.train_decoder(arm, task, s, lr, bar)
            runs.append({"label": label, "r": r, "seed": s, "trainable": P.trainable(net),
                         "test": E.line_scores(net, *d["test"])})
    return runs


PLACEMENT = [("qv", ("q_proj", "v_proj"), P.R), ("all", P.BLOCK_LINEARS, P.R)]


def placement_and_rank(lr: float, bar=None) -> dict:
    _, _, tok, _ = IO.read_checkpoint(IO.checkpoint_dir())
    d = E.prepare("line", tok)
    place = _line_runs(PLACEMENT, lr, E.SEEDS, d, tok, bar)
    rank = _line_runs([(f"r{r}", P.BLOCK_LINEARS, r) for r in RANKS], lr, (0,), d, tok, bar)
    return {"lr": lr, "placement": place, "rank": rank}


def saved_bytes(step) -> int:
    """Bytes of the tensors autograd keeps for the backward during ``step()`` (each storage once)."""
    seen = {}

    def pack(t):
        if isinstance(t, torch.Tensor):
            seen[(t.untyped_storage().data_ptr(), t.device.type)] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(seen.values())


def recipe_study(steps: int = 3) -> dict:
    folder = IO.checkpoint_dir()
    _, _, tok, _ = IO.read_checkpoint(folder)
    ids, mask = E.prepare("line", tok)["train"]
    ids, mask = ids[:16], mask[:16]
    x, m = torch.from_numpy(ids), torch.from_numpy(mask).float()
    out = {}
    for label, dtype, gc in (("fp32", torch.float32, False), ("bf16", torch.bfloat16, False),
                             ("bf16+checkpointing", torch.bfloat16, True)):
        pm = RC.recipe_model(folder, compute_dtype=dtype, gradient_checkpointing=gc)
        pm.train()

        def step():
            logits = pm(input_ids=x).logits.float()
            nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                                    reduction="none")
            ((nll * m.reshape(-1)).sum() / m.sum()).backward()

        saved = saved_bytes(step)
        log = RC.train_steps(pm, ids, mask, steps=steps, lr=3e-3)
        out[label] = {"saved_bytes": saved, "seconds_per_step": log["seconds_per_step"], "losses": log["losses"]}
    out["optimisers"] = optimiser_states()
    return out


def optimiser_states() -> dict:
    """State bytes after one step of each optimiser, on LoRA's factors and on every weight."""
    from pedagogy_lib.torch_ref.qlora import bnb

    cfg, weights, _, _ = IO.read_checkpoint(IO.checkpoint_dir())
    x = torch.randint(1, cfg.vocab_size, (2, 16))
    out = {}
    for what in ("lora-all", "full"):
        for name, make in (("AdamW", torch.optim.AdamW), ("AdamW8bit", bnb().optim.AdamW8bit),
                           ("PagedAdamW8bit", bnb().optim.PagedAdamW8bit)):
            net = DECODER_ARMS[what].setup_decoder(IO.checkpoint_dir(), 0)
            params = [p for p in net.parameters() if p.requires_grad]
            opt = make(params, lr=1e-3)
            net(x).float().mean().backward()
            opt.step()
            st = RC.optimizer_state(opt)
            st["params"] = sum(p.numel() for p in params)
            st["largest_tensor"] = max(p.numel() for p in params)
            out[f"{what}/{name}"] = st
    return out


VADER_ARMS = ("lora-qv", "full")   # their decoder grids: the registry's


def _vader_task():
    """The VADER task for the runner, its data, its accuracy and the untrained model."""
    _, _, tok, _ = IO.read_checkpoint(IO.checkpoint_dir())
    d = E.prepare_vader(tok)
    acc = lambda net, s: E.area_accuracy(net, d[f"{s}_prompts"], d[f"{s}_labels"], d["verbaliser"])  # noqa: E731
    task = runner.DecoderTask("vader", d["train"], lambda net, split, generate=False: acc(net, split), float,
                              E.STEPS["line"], E.BATCH, E.SEEDS)
    zero = DECODER_ARMS["lora-qv"].setup_decoder(IO.checkpoint_dir(), 0)
    return task, d, acc, zero


def _vader_run(acc):
    """The VADER run function: test, validation and training-word accuracy of one trained run."""
    def one(arm, task, seed, lr, bar=None, name=None):
        net, _, _ = runner.train_decoder(arm, task, seed, lr, bar, name)
        return {"method": arm.label, "lr": lr, "seed": seed, "val": acc(net, "val"), "test": acc(net, "test"),
                "train": acc(net, "train")}, net
    return one


def vader_study(bar=None) -> dict:
    """LoRA (q, v) and full fine-tuning on VADER word polarity through the decoder, the
    chapter's protocol (``runner.decoder_protocol``: rates on validation at seeds 0 and 1, then
    the other seeds): test accuracy, and accuracy on the training words (memorisation)."""
    task, d, acc, zero = _vader_task()
    out = {"zero_shot": {s: acc(zero, s) for s in ("train", "test")},
           "sizes": {s: len(d[f"{s}_labels"]) for s in ("train", "val", "test")},
           "majority": float(max(d["test_labels"].mean(), 1 - d["test_labels"].mean())), "runs": [], "selection": {}}
    out = runner.decoder_protocol(VADER_ARMS, task, bar, out, extensions=1, run_fn=_vader_run(acc))
    return out | {"seeds": list(E.SEEDS)}


def more_seeds() -> None:
    """Add the seeds of ``tasks.SEEDS`` that the stored placement study and VADER runs lack
    (the same rate, the same batches per seed: paired with the stored runs; the dtype, rank
    and recipe studies have no seeds to add)."""
    torch.set_num_threads(1)
    st = R.load(RESULTS, "python -m pedagogy_lib.book.ch10.studies", keys=("placement",))
    _, _, tok, _ = IO.read_checkpoint(IO.checkpoint_dir())
    d = E.prepare("line", tok)
    runs = {lab: [r for r in st["placement"] if r["label"] == lab] for lab, _, _ in PLACEMENT}
    have = sorted({r["seed"] for r in st["placement"]})
    t0, c0 = time.perf_counter(), time.process_time()
    again = _line_runs(PLACEMENT[:1], st["lr"], have[:1], d, tok, None)[0]   # one stored run must come back identical
    if again != runs["qv"][0]:
        raise RuntimeError(f"re-running placement qv seed {have[0]} changed it: {runs['qv'][0]} → {again}")
    new = [s for s in E.SEEDS if s not in have]
    if new:
        st = st | {"placement": st["placement"] + _line_runs(PLACEMENT, st["lr"], new, d, tok, None),
                   "placement_added_seeds": {"seeds": new, "wall_seconds": time.perf_counter() - t0,
                                             "cpu_seconds": time.process_time() - c0}}
        print(R.save(st, RESULTS))
    task, _, acc, _ = _vader_task()
    v = R.load("ch10_vader", "python -m pedagogy_lib.book.ch10.studies --vader", keys=("runs", "selection"))
    one = _vader_run(acc)
    v = E.add_seeds(v | {"seeds": sorted({r["seed"] for r in v["runs"]})},
                    lambda m, lr, seed, bar: one(DECODER_ARMS[m], task, seed, lr, bar)[0], E.SEEDS)
    print(R.save(v, "ch10_vader"))


def refresh_optimisers():
    """Re-measure only ``recipe.optimisers`` (seconds) in the stored studies; the rest is kept."""
    res = R.load(RESULTS, "python -m pedagogy_lib.book.ch10.studies", keys=("recipe",))
    res["recipe"]["optimisers"] = optimiser_states()
    return R.save(res, RESULTS)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])   # --help or a typo: refused, nothing runs
    ap.add_argument("--more-seeds", action="store_true", help="add the missing seeds to the stored placement and VADER runs")
    ap.add_argument("--vader", action="store_true", help="only the VADER lesson")
    ap.add_argument("--optimisers", action="store_true", help="only re-measure the optimisers' state (seconds)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.optimisers:
        print(refresh_optimisers())
        return
    if args.more_seeds:   # add the missing seeds to the stored placement and VADER runs
        more_seeds()
        return
    if not args.vader:   # --vader: only the VADER lesson
        t0 = time.perf_counter()
        runs = len(PLACEMENT) * len(E.SEEDS) + len(RANKS)   # placement at every seed, rank at seed 0
        with tqdm(total=runs * E.STEPS["line"], desc="ch10 studies (steps)", file=sys.stderr,
                  disable=None) as bar:
            res = {"dtypes": dtypes(), **placement_and_rank(LR, bar), "recipe": recipe_study()}
        res |= {"wall_seconds": time.perf_counter() - t0, "steps": E.STEPS["line"], "versions": R.versions("torch")}
        print(R.save(res, RESULTS))
    print(R.save(vader_study() | {"versions": {"torch": torch.__version__}}, "ch10_vader"))


if __name__ == "__main__":
    main()
