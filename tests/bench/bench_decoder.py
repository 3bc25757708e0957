"""Tokens per second of chapter 09's decoder: our torch twin against transformers' Llama on
the same weights, in training and in greedy generation, plus the NumPy reference.

    .venv/bin/python tests/bench/bench_decoder.py [--reps 5]

Writes ``chapters/results/bench_decoder.json``. For each shipped checkpoint, every round
times each contender once (order rotating from round to round, so machine noise hits them
alike); the ratios use the medians. Training = forward + backward + AdamW step on a
(16, 128) batch; generation = 32 greedy tokens after a 16-token prompt, with KV caches
(NumPy: forward only, and its backward for the training figure). One thread.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import platform
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pedagogy_lib import decoder as D, decoder_io as IO, models, nn  # noqa: E402
from pedagogy_lib.results import save  # noqa: E402
from pedagogy_lib.torch_ref import decoder as TD  # noqa: E402

B, T, PROMPT, NEW = 16, 128, 16, 32


def contenders(name: str) -> tuple[dict, dict]:
    """(training step closures, generation closures), each returning the tokens it processed."""
    import transformers

    transformers.logging.set_verbosity_error()
    ours = models.load_decoder(name, backend="torch").net.train()
    hf = transformers.LlamaForCausalLM.from_pretrained(str(IO.checkpoint_dir(name)), dtype=torch.float32)
    np_lm = models.load_decoder(name).net
    ids = np.random.default_rng(0).integers(0, ours.config.vocab_size, (B, T))
    tids = torch.from_numpy(ids)
    opt_o, opt_h = torch.optim.AdamW(ours.parameters(), 1e-5), torch.optim.AdamW(hf.parameters(), 1e-5)
    np_opt = nn.AdamW(list(np_lm.params_and_grads()), lr=1e-5)

    def step_ours():
        loss = TD.next_token_loss(ours(tids), tids)
        opt_o.zero_grad(set_to_none=True), loss.backward(), opt_o.step()
        return B * T

    def step_hf():
        loss = hf(input_ids=tids, labels=tids).loss
        opt_h.zero_grad(set_to_none=True), loss.backward(), opt_h.step()
        return B * T

    def step_numpy():
        np_lm.zero_grad()
        _, d = D.next_token_loss(np_lm(ids), ids)
        np_lm.backward(d)
        np_opt.step()
        return B * T

    prompt = ids[0, :PROMPT]
    tp = torch.from_numpy(prompt)

    def gen_ours():
        TD.generate(ours, tp, NEW)
        return NEW

    def gen_hf():
        with torch.no_grad():
            hf.generate(tp[None], max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False,
                        pad_token_id=0, use_cache=True)
        return NEW

    def gen_numpy():
        D.generate(np_lm, prompt, NEW)
        return NEW

    return ({"ours (torch)": step_ours, "transformers": step_hf, "numpy": step_numpy},
            {"ours (torch)": gen_ours, "transformers": gen_hf, "numpy": gen_numpy})


def tokens_per_second(variants: dict, reps: int) -> dict:
    names = list(variants)
    for fn in variants.values():
        fn()   # warm-up
    rates = {k: [] for k in names}
    for i in range(reps):
        for k in names[i % len(names):] + names[:i % len(names)]:
            t = time.perf_counter()
            n = variants[k]()
            rates[k].append(n / (time.perf_counter() - t))
    med = {k: float(np.median(v)) for k, v in rates.items()}
    return {"tokens_per_s": med,
            "ours_over_transformers": med["ours (torch)"] / med["transformers"],
            "numpy_over_ours": med["numpy"] / med["ours (torch)"],
            "numpy_over_transformers": med["numpy"] / med["transformers"]}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default="bench_decoder")
    ap.add_argument("--only", nargs="*", default=None, help="checkpoints to time (default: every shipped one)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = {"machine": platform.processor() or platform.machine(), "threads": 1, "torch": torch.__version__,
           "batch": [B, T], "generation": {"prompt": PROMPT, "new_tokens": NEW}, "reps": args.reps, "models": {}}
    for name in args.only or IO.available():
        train, gen = contenders(name)
        out["models"][name] = {"training": tokens_per_second(train, args.reps),
                               "generation": tokens_per_second(gen, args.reps)}
        for what, r in out["models"][name].items():
            print(f"{name} {what:10s} " + "  ".join(f"{k} {v:,.0f} tok/s" for k, v in r["tokens_per_s"].items())
                  + f"  ours/transformers {r['ours_over_transformers']:.2f}  numpy/ours {r['numpy_over_ours']:.2f}")
    print(f"wrote {save(out, args.out)}")


if __name__ == "__main__":
    main()
