"""Benchmark: our NumPy NF4 quantise+pack and dequantise vs bitsandbytes' CPU path.

Run:  OMP_NUM_THREADS=1 python tests/bench/bench_quant.py
Writes JSON to $BENCH_OUT (default chapters/results/bench_quant.json, which make bench summarises).

Everything is a ratio measured in one run, with the two contenders interleaved and the
best of several repeats kept, because these machines are shared and noisy. Each time is
also set beside a memory-bandwidth limit: the bytes the operation must read and write,
divided by the speed of a large-array copy measured in the same run.
Goals (issue #7): quantise+pack >= 2x faster than bnb, dequantise no slower.
"""
import os
import pathlib
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
from pedagogy_lib.results import save
from pedagogy_lib import quant

SHAPE, BLOCKSIZE, REPEATS = (4096, 4096), 64, 7


def best_time(fn, repeats=REPEATS):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def interleaved(fn_a, fn_b, repeats=REPEATS):
    """Best-of times of two functions run alternately, so both see the same noise."""
    fn_a(), fn_b()
    ta, tb = [], []
    for _ in range(repeats):
        for fn, ts in ((fn_a, ta), (fn_b, tb)):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
    return min(ta), min(tb)


def main():
    import torch
    import bitsandbytes.functional as F

    rng = np.random.default_rng(0)
    w = rng.standard_normal(SHAPE).astype(np.float32)
    wt = torch.from_numpy(w)
    n = w.size

    # Large-array copy speed: bytes read + written per second.
    dst = np.empty_like(w)
    copy_bps = 2 * w.nbytes / best_time(lambda: np.copyto(dst, w))

    packed, absmax = quant.quantize_nf4(w, BLOCKSIZE)
    p_bnb, state = F.quantize_4bit(wt, quant_type="nf4", blocksize=BLOCKSIZE,
                                   compress_statistics=False)
    identical = bool(np.array_equal(packed, p_bnb.numpy().reshape(-1))
                     and np.array_equal(absmax, state.absmax.numpy()))

    t_q, t_q_bnb = interleaved(
        lambda: quant.quantize_nf4(w, BLOCKSIZE),
        lambda: F.quantize_4bit(wt, quant_type="nf4", blocksize=BLOCKSIZE,
                                compress_statistics=False))
    t_dq, t_dq_bnb = interleaved(
        lambda: quant.dequantize_nf4(packed, absmax, SHAPE, BLOCKSIZE),
        lambda: F.dequantize_4bit(p_bnb, state))
    deq_equal = bool(np.array_equal(quant.dequantize_nf4(packed, absmax, SHAPE, BLOCKSIZE),
                                    F.dequantize_4bit(p_bnb, state).numpy()))

    # Bytes each operation must move at least: read w, write codes + absmax; and back.
    bytes_q = w.nbytes + packed.nbytes + absmax.nbytes
    bytes_dq = packed.nbytes + absmax.nbytes + w.nbytes
    limit_q, limit_dq = bytes_q / copy_bps, bytes_dq / copy_bps

    result = {
        "shape": list(SHAPE), "blocksize": BLOCKSIZE, "n_params": n, "repeats": REPEATS,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch_threads": torch.get_num_threads(),
        "copy_GBps": copy_bps / 1e9,
        "quantize": {
            "ours_s": t_q, "bnb_s": t_q_bnb, "speedup_vs_bnb": t_q_bnb / t_q,
            "bandwidth_limit_s": limit_q,
            "ours_fraction_of_bandwidth_limit": limit_q / t_q,
            "bnb_fraction_of_bandwidth_limit": limit_q / t_q_bnb,
            "goal_speedup_ge_2": t_q_bnb / t_q >= 2, "byte_identical": identical,
        },
        "dequantize": {
            "ours_s": t_dq, "bnb_s": t_dq_bnb, "speedup_vs_bnb": t_dq_bnb / t_dq,
            "bandwidth_limit_s": limit_dq,
            "ours_fraction_of_bandwidth_limit": limit_dq / t_dq,
            "bnb_fraction_of_bandwidth_limit": limit_dq / t_dq_bnb,
            "goal_not_slower": t_dq <= t_dq_bnb, "equal_to_bnb": deq_equal,
        },
    }
    for op in ("quantize", "dequantize"):
        r = result[op]
        print(f"{op:10s} ours {r['ours_s'] * 1e3:7.1f} ms   bnb {r['bnb_s'] * 1e3:7.1f} ms   "
              f"speed-up {r['speedup_vs_bnb']:.2f}x   bandwidth limit "
              f"{r['bandwidth_limit_s'] * 1e3:5.1f} ms (ours at "
              f"{100 * r['ours_fraction_of_bandwidth_limit']:.0f}%, bnb at "
              f"{100 * r['bnb_fraction_of_bandwidth_limit']:.0f}%)")
    print(f"copy speed {copy_bps / 1e9:.1f} GB/s; byte-identical: {identical}; "
          f"dequantised equal: {deq_equal}")

    out = pathlib.Path(os.environ.get("BENCH_OUT", ROOT / "chapters/results/bench_quant.json"))
    print(f"wrote {save(result, out)}")


if __name__ == "__main__":
    main()
