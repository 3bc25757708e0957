"""Latency of a plain Linear, LoRA unmerged and LoRA merged (chapter 02, "merge adds zero latency").

    .venv/bin/python tests/bench/bench_lora.py [--reps 30]

Writes ``chapters/results/ch02_latency.json``. Each case times the three variants
interleaved (plain, unmerged, merged, plain, …) so that machine noise hits all three alike,
and reports the median (and minimum) time of each over ``reps`` rounds and the ratios to plain.
One thread; torch under no_grad. The merged layer computes exactly what a plain Linear does
(one matmul with W₀ + s·BA), so its ratio should be 1.00 up to noise.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import platform
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "chapters" / "results" / "ch02_latency.json"

import numpy as np
import torch

from pedagogy_lib.results import save
from pedagogy_lib import lora, nn
from pedagogy_lib.torch_ref import lora as tlora


def _time(fn, inner: int) -> float:
    t = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t) / inner


def compare(variants: dict, reps: int, seconds: float = 0.05) -> dict:
    """Seconds per call of each variant: the minimum and the median over ``reps`` rounds.

    Each round times every variant once, for about ``seconds`` each, in an order that
    rotates from round to round. ``ratio`` (to the first variant) uses the medians, which
    load from other processes shifts least; ``ratio_min`` uses the minima.
    """
    names = list(variants)
    for fn in variants.values():  # warm-up
        fn()
    inner = max(1, int(seconds / _time(variants[names[0]], 1)))
    times = {k: [] for k in names}
    for i in range(reps):
        for k in names[i % len(names):] + names[:i % len(names)]:
            times[k].append(_time(variants[k], inner))
    best = {k: float(np.min(v)) for k, v in times.items()}
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {"min_s": best, "median_s": med, "calls_per_round": inner,
            "ratio": {k: med[k] / med[names[0]] for k in names},
            "ratio_min": {k: best[k] / best[names[0]] for k in names}}


def layer_case(backend: str, d: int, n: int, r: int, reps: int) -> dict:
    g = np.random.default_rng(0)
    x = g.standard_normal((n, d)).astype(np.float32)
    if backend == "numpy":
        plain = nn.Linear(d, d, rng=np.random.default_rng(1))
        un = lora.LoRALinear(nn.Linear(d, d, rng=np.random.default_rng(1)), r, 8)
        me = lora.LoRALinear(nn.Linear(d, d, rng=np.random.default_rng(1)), r, 8)
        for m in (un, me):
            m.p["lora_B"][...] = 0.01
        me.merge()
        variants = {"plain": lambda: plain(x), "unmerged": lambda: un(x), "merged": lambda: me(x)}
    else:
        xt = torch.from_numpy(x)
        torch.manual_seed(0)
        plain = torch.nn.Linear(d, d)
        un, me = (tlora.LoRALinear(torch.nn.Linear(d, d), r, 8) for _ in range(2))
        with torch.no_grad():
            for m in (un, me):
                m.lora_B.fill_(0.01)
        me.merge()

        def run(m):
            with torch.no_grad():
                return m(xt)

        variants = {"plain": lambda: run(plain), "unmerged": lambda: run(un), "merged": lambda: run(me)}
    return {"backend": backend, "d": d, "n": n, "r": r, **compare(variants, reps)}


def model_case(reps: int) -> dict:
    """MiniLM (torch) encoding 64 VADER words: no LoRA, LoRA (q,v) unmerged, merged."""
    from pedagogy_lib import data
    from pedagogy_lib.torch_ref.encoder import load_minilm_torch

    words = data.subsample(data.polarity_task().test, 64, seed=0).tokens
    nets = {}
    for k in ("plain", "unmerged", "merged"):
        m = load_minilm_torch(device="cpu")
        if k != "plain":
            tlora.attach_lora(m.bert, ("query", "value"), r=8, alpha=8)
            with torch.no_grad():
                for layer in tlora.lora_layers(m.bert).values():
                    layer.lora_B.fill_(0.01)
        if k == "merged":
            tlora.merge_all(m.bert)
        nets[k] = m
    ids, mask = nets["plain"].tokenize(words)
    ids, mask = torch.from_numpy(ids), torch.from_numpy(mask)

    def run(m):
        with torch.no_grad():
            return m.net(ids, mask)

    return {"backend": "torch", "model": "MiniLM-L6, LoRA q,v r=8", "batch": len(words),
            **compare({k: (lambda m=m: run(m)) for k, m in nets.items()}, reps, 0.2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=60)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cases = [layer_case(b, d, n, 8, args.reps) for b in ("torch", "numpy") for d, n in ((384, 512), (1024, 2048))]
    cases.append(model_case(args.reps))
    for c in cases:
        what = c.get("model") or f"{c['backend']:5s} d={c['d']} n={c['n']} r={c['r']}"
        print(f"{what:40s} unmerged {c['ratio']['unmerged']:.3f}×  merged {c['ratio']['merged']:.3f}×  "
              f"(plain {1e3 * c['median_s']['plain']:.2f} ms; ratios of minima {c['ratio_min']['unmerged']:.3f}×, "
              f"{c['ratio_min']['merged']:.3f}×)")
    from importlib.metadata import version

    doc = {"about": "chapter 02 latency; regenerate with .venv/bin/python tests/bench/bench_lora.py",
           "reps": args.reps, "threads": 1, "cases": cases,
           "versions": {"python": platform.python_version(), "torch": version("torch"), "numpy": version("numpy")},
           "machine": platform.machine(), "cpus": os.cpu_count()}
    save(doc, OUT)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
