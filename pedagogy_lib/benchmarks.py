"""The book's speed and memory figures in one file: ``make bench`` writes it, chapter 08 reads it.

Each benchmark in ``tests/bench/bench_*.py`` measures *ratios inside one run* (the two
contenders interleaved on the same machine at the same moment) and writes its own results
file under ``chapters/results/``.  After them, ``python -m pedagogy_lib.benchmarks``

1. executes every chapter, one at a time, and times it (wall seconds; the book's budget is
   ``BUDGET_S`` per chapter on two CPU cores);
2. collects the headline ratios of the benchmarks' files (``SOURCES``);
3. writes both to ``chapters/results/bench_summary.json`` and prints them.

Nothing here is a timed test: the numbers describe the machine they ran on, which the file
records.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

from . import results as R

ROOT = Path(__file__).resolve().parent.parent
RESULTS = R.RESULTS
SUMMARY = RESULTS / "bench_summary.json"
BUDGET_S = 90.0  # DEVELOPERS.md: every chapter executes in ≤ 90 s on 2 CPU cores
SOURCES = {  # results file → the benchmark that writes it
    "ch02_latency.json": "tests/bench/bench_lora.py",
    "ch03_latency.json": "tests/bench/bench_adapters.py",
    "bench_quant.json": "tests/bench/bench_quant.py",
    "bench_qlora.json": "tests/bench/bench_qlora.py",
    "bench_decoder.json": "tests/bench/bench_decoder.py",
}
ADAPTERS = ("houlsby", "pfeiffer", "parallel", "LoRA merged")
MEMORY = ("tensor_peak_MB", "rss_train_peak_MB", "weights_MB", "step_s")  # bench_qlora's ratios to QLoRA's
KEYS = {  # results file → what the summary reads of it (a foreign file is refused by name)
    "ch02_latency.json": ("cases",),
    "ch03_latency.json": ("settings",),
    "bench_quant.json": ("quantize", "dequantize", "shape", "blocksize"),
    "bench_qlora.json": ("ratios_vs_qlora", "config", "results"),
    "bench_decoder.json": ("models",),
}


def chapters() -> list[Path]:
    return sorted((ROOT / "chapters").glob("[0-9]*.ipynb"))


def time_notebook(path, timeout: int = 600) -> float:
    """Execute a notebook (in its own folder, nothing written back) and return wall seconds.
    A failing cell raises RuntimeError naming the notebook."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no notebook at {path}")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as e:
        raise RuntimeError(f"{path.name} failed while being timed: {str(e).splitlines()[0]}") from None
    return time.perf_counter() - t0


def chapter_times(paths=None, progress: bool = True) -> dict[str, dict]:
    """{chapter: {"seconds", "of_budget"}} for each notebook, executed one after another."""
    out = {}
    for p in chapters() if paths is None else [Path(p) for p in paths]:
        s = time_notebook(p)
        out[p.stem] = {"seconds": round(s, 1), "of_budget": round(s / BUDGET_S, 3)}
        if progress:
            print(f"{p.stem:<24} {s:6.1f} s  ({100 * s / BUDGET_S:.0f}% of {BUDGET_S:.0f} s)", file=sys.stderr)
    return out


def _read(name: str, results: Path) -> dict:
    return R.load(results / name, f"{SOURCES[name]} (or `make bench`)", KEYS[name], f"{name} benchmark")


def lora_ratios(d: dict) -> list[dict]:
    """Chapter 02: plain vs LoRA unmerged vs merged (time ÷ plain's), for one layer
    (d × d, n tokens) and for the whole model (a batch of words)."""
    out = []
    for c in d["cases"]:
        what = (f"{c['model']}, batch {c['batch']}" if "model" in c
                else f"one layer d={c['d']}, r={c['r']}, {c['n']} tokens")
        out.append({"backend": c["backend"], "case": what,
                    "merged": round(c["ratio"]["merged"], 3), "unmerged": round(c["ratio"]["unmerged"], 3)})
    return out


def adapter_ratios(d: dict) -> list[dict]:
    """Chapter 03: whole-model forward with each adapter ÷ without, per (batch, tokens)."""
    return [{"batch": s["batch"], "tokens": s["seq_len"], "base_ms": round(s["models"]["none"]["ms"], 2),
             **{k: round(s["models"][k]["ratio"], 3) for k in ADAPTERS}}
            for s in d["settings"]]


def quant_ratios(d: dict) -> dict:
    """Chapter 07: our NumPy NF4 vs bitsandbytes' CPU path (speed-up = bnb time ÷ ours)."""
    q, dq = d["quantize"], d["dequantize"]
    return {"shape": d["shape"], "blocksize": d["blocksize"],
            "quantize_speedup": round(q["speedup_vs_bnb"], 2), "byte_identical": q["byte_identical"],
            "dequantize_speedup": round(dq["speedup_vs_bnb"], 2), "dequantize_equal": dq["equal_to_bnb"]}


def memory_ratios(d: dict) -> dict:
    """Chapter 07: training memory and step time of full FT, LoRA and QLoRA, ÷ QLoRA's."""
    r = d["ratios_vs_qlora"]
    return {"device": d["config"]["device"],
            **{k: {m: round(v, 3) for m, v in r[k].items()} for k in MEMORY},
            "tensor_peak_MB_qlora": round(d["results"]["qlora"]["tensor_peak_MB"], 1)}


def decoder_ratios(d: dict) -> dict:
    """Chapter 09: tokens/s of our torch twin and the NumPy reference ÷ transformers' Llama."""
    keys = ("ours_over_transformers", "numpy_over_transformers", "numpy_over_ours")
    return {name: {phase: {k: round(m[phase][k], 2) for k in keys} for phase in ("training", "generation")}
            for name, m in d["models"].items()}


def summarize(times: dict | None = None, results: Path = RESULTS) -> dict:
    """The summary document: the benchmarks' headline ratios (+ chapter times if given)."""
    out = {"lora_merge": lora_ratios(_read("ch02_latency.json", results)),
           "adapters": adapter_ratios(_read("ch03_latency.json", results)),
           "nf4_vs_bnb": quant_ratios(_read("bench_quant.json", results)),
           "memory": memory_ratios(_read("bench_qlora.json", results)),
           "decoder": decoder_ratios(_read("bench_decoder.json", results)),
           "sources": dict(SOURCES),
           "machine": {"cpus": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                       "platform": platform.machine(), "python": platform.python_version()}}
    if times is not None:
        out["chapters"] = times
        out["budget_s"] = BUDGET_S
    return out  # without times: the benchmarks' ratios only (load() refuses it)


def load(path=SUMMARY) -> dict:
    return R.load(path, "`make bench`", keys=("lora_merge", "adapters", "nf4_vs_bnb", "memory", "chapters"),
                  what="bench summary")


def table(s: dict) -> str:
    """The summary as text, one ratio per line."""
    L = ["LoRA (time ÷ the plain layer or model):"]
    for c in s["lora_merge"]:
        L.append(f"  {c['backend']:<5} {c['case']:<40} merged {c['merged']:.2f}  unmerged {c['unmerged']:.2f}")
    L.append("Adapters, whole MiniLM forward (time ÷ no adapter; merged LoRA is the noise control):")
    for a in s["adapters"]:
        L.append(f"  batch {a['batch']:>2} × {a['tokens']:>3} tokens ({a['base_ms']:>6.1f} ms)  "
                 + "  ".join(f"{k} {a[k]:.2f}" for k in ADAPTERS))
    q = s["nf4_vs_bnb"]
    L.append(f"NF4, {q['shape'][0]}×{q['shape'][1]} blocksize {q['blocksize']} (bitsandbytes time ÷ ours): "
             f"quantise+pack {q['quantize_speedup']:.2f}× (byte-identical: {q['byte_identical']}), "
             f"dequantise {q['dequantize_speedup']:.2f}× (equal: {q['dequantize_equal']})")
    m = s["memory"]
    L.append(f"Training memory ÷ QLoRA's ({m['device']}; QLoRA tensor peak {m['tensor_peak_MB_qlora']} MB):")
    for k in MEMORY:
        L.append(f"  {k:<18} full FT {m[k]['full']:.2f}  LoRA {m[k]['lora']:.2f}  QLoRA 1.00")
    if "decoder" in s:
        L.append("Decoder tokens/s (chapter 09; ÷ transformers' LlamaForCausalLM, one thread):")
        for name, m in s["decoder"].items():
            L.append(f"  {name:<10} " + "  ".join(f"{ph}: ours {m[ph]['ours_over_transformers']:.2f}, NumPy "
                                                   f"{m[ph]['numpy_over_transformers']:.2f}" for ph in m))
    if "chapters" in s:
        L.append(f"Chapter execution (wall s, budget {s['budget_s']:.0f} s):")
        for name, c in s["chapters"].items():
            L.append(f"  {name:<24} {c['seconds']:6.1f}  ({100 * c['of_budget']:.0f}%)")
    return "\n".join(L)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--no-chapters", action="store_true", help="skip executing and timing the chapters")
    ap.add_argument("--out", default=str(SUMMARY))
    args = ap.parse_args(argv)
    out = Path(args.out)
    last = load(out)["chapters"] if out.is_file() else {}   # another file at --out: refused, not overwritten
    # chapter 08 reads this file, so the new ratios go in before the chapters are timed
    R.save(summarize(last), out)
    s = summarize(last if args.no_chapters else chapter_times())
    print(table(s))
    print(R.save(s, out))


if __name__ == "__main__":
    main()
