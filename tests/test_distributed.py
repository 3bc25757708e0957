"""Chapter 11's two-process runs (pedagogy_lib/distributed.py), on gloo and the CPU.

DDP and FSDP2 over 2 ranks must reproduce single-process training on the combined batch; the
bytes the DDP comm hook sees must be Eq. 11.1's; FSDP2 must hold half of every tensor per rank.
Bad input is refused before anything starts; a rank that dies or hangs ends the run with an
error naming it, within the timeouts, and leaves no process behind.
"""
import socket
import time

import numpy as np
import psutil
import pytest
import torch

from pedagogy_lib import distributed as D
from pedagogy_lib import scaling as S
from pedagogy_lib.registry import PEFT_DECODER_METHODS

TOL = 1e-5   # fp32: the all-reduce sums in another order than one process does


@pytest.fixture(scope="module")
def batch():
    return D.make_batch(4, 32)


@pytest.fixture(scope="module")
def tour(batch):
    return D.launch("tour", 2, batch=batch, steps=3, timeout_s=30)


def _new_children(before: set) -> set:
    """Our descendants not in ``before``, leaving out multiprocessing's resource tracker (a helper
    that lives as long as this process, started with the first spawn)."""
    out = set()
    for c in psutil.Process().children(recursive=True):
        try:
            if c.pid not in before and "resource_tracker" not in " ".join(c.cmdline()):
                out.add(c.pid)
        except psutil.Error:   # it ended while we looked
            continue
    return out


def _children_alive(pids):
    return [p for p in pids if D.alive(p)]


@pytest.mark.parametrize("method", PEFT_DECODER_METHODS)
def test_ddp_equals_one_process_on_the_whole_batch(tour, batch, method):
    ref = D.reference_run(method, batch, steps=3)
    got = tour["params"][f"ddp-{method}"]
    assert set(got) == set(ref["params"])
    assert max(float(np.abs(got[k] - ref["params"][k]).max()) for k in got) < TOL
    r0 = next(r for r in tour["ranks"][0]["ddp"] if r["method"] == method)
    assert np.allclose(r0["losses"], ref["losses"], atol=TOL)
    # Eq. 11.1, measured by the comm hook: every trainable fp32 gradient once per step, nothing frozen
    assert r0["bytes_per_step"] == [S.allreduce_payload(r0["n_trainable"], 4)] * 3
    if method != "full":
        assert r0["n_trainable"] < r0["n_params"] / 20


@pytest.mark.parametrize("method", ["full", "lora"])
def test_fsdp_shards_in_half_and_trains_the_same(tour, batch, method):
    ref = D.reference_run(method, batch, steps=3)
    got = tour["params"][f"fsdp-{method}"]
    assert max(float(np.abs(got[k] - ref["params"][k]).max()) for k in got) < TOL
    for r in tour["ranks"]:
        f = next(x for x in r["fsdp"] if x["method"] == method)
        for part, whole in f["whole"].items():
            assert f["per_rank"][part] * 2 == whole, part       # Eq. 11.3, ZeRO-3 at N = 2
        z3 = S.zero_per_rank(f["n_params"], f["n_trainable"], 2, 3)
        assert f["per_rank"]["grads"] == z3["grads"] and f["per_rank"]["optim"] == z3["optim"]
        assert f["per_rank"]["weights_frozen"] + f["per_rank"]["weights_trainable"] == z3["weights"]


def test_bad_input_is_refused_before_starting(batch):
    with pytest.raises(ValueError, match="does not divide the batch of 4"):
        D.launch("ddp", 3, batch=batch, method="lora")
    with pytest.raises(ValueError, match="unknown backend"):
        D.launch("ddp", 2, backend="carrier-pigeon", batch=batch, method="lora")
    with pytest.raises(ValueError, match="unknown task"):
        D.launch("pipeline", 2)
    with pytest.raises(ValueError, match="world_size"):
        D.launch("ddp", 0, batch=batch, method="lora")
    with pytest.raises(ValueError, match="unknown method"):
        D.load_model("prefix")
    with pytest.raises(ValueError, match="impl='peft'"):
        D.load_model("lora", quantize=True)
    if not torch.distributed.is_backend_available("mpi"):
        with pytest.raises(RuntimeError, match="'mpi' is not available"):
            D.launch("ddp", 2, backend="mpi", batch=batch, method="lora")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="nccl"):
            D.launch("ddp", 2, backend="nccl", batch=batch, method="lora")
    with socket.socket() as s:          # a port somebody else listens on
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(OSError, match=f"port {s.getsockname()[1]} .* in use"):
            D.launch("ddp", 2, batch=batch, method="lora", port=s.getsockname()[1])


def test_shard_of_gives_equal_disjoint_rows():
    b = np.arange(12).reshape(6, 2)
    assert np.array_equal(np.concatenate([D.shard_of(b, r, 3) for r in range(3)]), b)
    with pytest.raises(ValueError, match="world size 4"):
        D.shard_of(b, 0, 4)


@pytest.mark.parametrize("how, message", [("exit", "rank 1 died \\(exit code 3\\)"),
                                          ("hang", "rank 0 raised .*[Tt]imed out")])
def test_a_failing_rank_stops_the_run_cleanly(batch, how, message):
    before = {c.pid for c in psutil.Process().children(recursive=True)}
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=message):
        D.launch("ddp", 2, batch=batch, method="lora", timeout_s=3, fail={"rank": 1, "step": 1, "how": how})
    assert time.monotonic() - t0 < 60                       # no hang: the collective timed out
    assert len(D.launch.last_pids) == 2 and _children_alive(D.launch.last_pids) == []
    assert _children_alive(_new_children(before)) == []


def test_the_torchrun_entry_point_runs_the_same_task():
    """`make distributed-gpu` runs this module under torchrun with NCCL; here the same path with gloo."""
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "pedagogy_lib.distributed", "--backend", "gloo", "--impl", "twin",
                        "--task", "ddp", "--method", "ia3", "--batch-size", "4", "--seq-len", "16"],
                       capture_output=True, text=True, timeout=180, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("{")][-1])
    assert out["world"] == 2 and out["bytes_per_step"] == [4 * out["n_trainable"]] * 3
    bad = subprocess.run([sys.executable, "-m", "pedagogy_lib.distributed"], capture_output=True,
                         text=True, timeout=60, env=env)
    assert bad.returncode == 2 and "torchrun" in bad.stderr


def test_allreduce_timing_warms_up_then_interleaves_the_sizes(monkeypatch):
    # the first collective of a size pays the process group's set-up (the stored 1 kB all-reduce took
    # 3.5 ms against 0.3 ms for 16 kB, inflating Eq. 11.5's α): one untimed call per size, then reps
    calls, clock = [], iter(range(10**6))

    class FakeDist:
        @staticmethod
        def all_reduce(x):
            calls.append(x.numel())

        @staticmethod
        def barrier():
            pass

    monkeypatch.setattr(D, "dist", FakeDist)
    monkeypatch.setattr(D.time, "perf_counter", lambda: float(next(clock)))
    out = D.task_allreduce(0, 2, sizes=(1024, 4096), reps=3)
    assert calls == [256, 1024] * 4 and out["sizes"] == [1024, 4096]  # warm-ups, then reps interleaved
