"""Data parallelism (DDP) and sharding (FSDP2) of the chapter-09 decoder with PEFT, on torch.distributed.

Chapter 11. Every rank loads a shipped checkpoint — as our torch twin with our LoRA / IA³ layers
(impl "twin"), or as ``transformers.LlamaForCausalLM`` with HF peft (impl "peft") — sets up one of
the registry's ``PEFT_DECODER_METHODS`` ("full", "lora", "ia3": the methods whose record has both
forms on the decoder; the record says how each attaches either way), and trains on its slice of
one global batch. ``launch`` starts the ranks with ``torch.multiprocessing`` (spawn), gives every
collective a timeout (``init_process_group(timeout=...)``), stops every rank when one fails, and
returns what each rank measured. The same tasks run under ``torchrun`` (``main``), with NCCL on GPUs.

  ddp        DistributedDataParallel; a comm hook counts the bytes handed to all-reduce (Eq. 11.1)
  fsdp       FSDP2 ``fully_shard`` per decoder layer, then the root (ZeRO-3, Eq. 11.3); per-rank
             bytes of weights, gradients and AdamW state, local shard against the whole tensor
  allreduce  all-reduce timings at several sizes, for α and β of Eq. 11.5
  qlora_fsdp bitsandbytes 4-bit linears under ``fully_shard`` (reports the failure if it fails)
  tour       the chapter's live run: ddp for every method, then fsdp, in one process group

Arguments reach the spawned ranks through multiprocessing's own channel; results come back as
JSON and safetensors files that the ranks write (only a failing rank's traceback travels the way
torch.multiprocessing sends it). It sits on the registry's floor, beside the runner: it chooses
methods (through ``registry``), which nothing in ``torch_ref`` may do.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import tempfile
import time
import warnings
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from . import registry


# ------------------------------------------------------------------ the model and the batch
IMPLS = ("twin", "peft")


def load_model(method: str, checkpoint: str = "stdlib-1m", seed: int = 0, impl: str = "twin",
               quantize: bool = False):
    """The decoder from ``checkpoint`` in fp32 with ``method`` on top, the same on every rank.

    impl "twin": our torch twin (chapter 09) with our LoRA / IA³ layers (chapters 02, 06), as the
    registry record's decoder form attaches them — it imports in a second, so the tests and the
    chapter's live runs use it; "peft": ``transformers.LlamaForCausalLM`` with HF peft, configured
    by the same record (``Method.peft_config``) — the production path, ``quantize`` for QLoRA."""
    if method not in registry.PEFT_DECODER_METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {registry.PEFT_DECODER_METHODS}")
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}; choose one of {IMPLS}")
    if impl == "twin":
        if quantize:
            raise ValueError("quantize needs impl='peft' (bitsandbytes' Linear4bit)")
        from .decoder_io import checkpoint_dir

        return registry.get(method).setup_decoder(checkpoint_dir(checkpoint), seed).train()
    return _load_peft(method, checkpoint, seed, quantize)


def _load_peft(method: str, checkpoint: str, seed: int, quantize: bool):
    import transformers
    from peft import get_peft_model

    from .decoder_io import checkpoint_dir

    transformers.logging.set_verbosity_error()
    kw = {}
    if quantize:   # NF4 storage packed into a float dtype, so that FSDP can flatten and shard it
        kw["quantization_config"] = transformers.BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32,
            bnb_4bit_quant_storage=torch.float32)
    model = transformers.LlamaForCausalLM.from_pretrained(str(checkpoint_dir(checkpoint)), dtype=torch.float32, **kw)
    torch.manual_seed(seed)   # peft draws LoRA's A from torch's generator
    config = registry.get(method).peft_config()
    return model if config is None else get_peft_model(model, config)


def make_batch(batch_size: int, seq_len: int, checkpoint: str = "stdlib-1m", seed: int = 0) -> np.ndarray:
    """(batch_size, seq_len + 1) token ids: blocks cut from the tokenised language reference
    (``pydoc_data.topics``, which ships with Python) at seeded offsets."""
    from pydoc_data.topics import topics

    from . import checks
    from .bpe import DecoderTokenizer
    from .decoder_io import checkpoint_dir

    batch_size, seq_len = checks.positive_int(batch_size, "batch_size"), checks.positive_int(seq_len, "seq_len")
    tok = DecoderTokenizer.from_file(checkpoint_dir(checkpoint) / "tokenizer.json")
    stream = tok.stream([topics[k] for k in sorted(topics)[:40]])
    if seq_len + 1 >= stream.size:
        raise ValueError(f"seq_len {seq_len} does not fit in the {stream.size}-token reference text")
    starts = np.random.default_rng(seed).integers(0, stream.size - seq_len - 1, batch_size)
    return np.stack([stream[s:s + seq_len + 1] for s in starts]).astype(np.int64)


def shard_of(batch: np.ndarray, rank: int, world: int) -> np.ndarray:
    """Rank r's rows: r·B/N … (r+1)·B/N (equal shards, so the mean of shard means is the batch mean)."""
    if batch.shape[0] % world:
        raise ValueError(f"world size {world} does not divide the batch of {batch.shape[0]} rows: "
                         f"every rank needs the same number of rows for DDP's average to equal the batch's")
    n = batch.shape[0] // world
    return batch[rank * n:(rank + 1) * n]


def check_batch(batch, checkpoint: str = "stdlib-1m") -> np.ndarray:
    """(B, T + 1) integer token ids of ``checkpoint``'s vocabulary, B ≥ 1 and T ≥ 1: what
    ``loss_of`` trains on (inputs ids[:, :-1], targets ids[:, 1:])."""
    from . import checks
    from .decoder_io import checkpoint_dir, config_from_hf

    where = checkpoint_dir(checkpoint) / "config.json"
    vocab = config_from_hf(checks.read_json(where), str(where)).vocab_size
    batch = np.asarray(batch)
    if batch.ndim != 2 or not np.issubdtype(batch.dtype, np.integer) or batch.shape[0] < 1 or batch.shape[1] < 2:
        raise ValueError(f"batch must be integer token ids of shape (rows ≥ 1, length ≥ 2), "
                         f"got {batch.dtype} {batch.shape}")
    if batch.min() < 0 or batch.max() >= vocab:
        raise ValueError(f"batch token ids must lie in [0, {vocab}) ({checkpoint}), got [{batch.min()}, {batch.max()}]")
    return batch


def loss_of(model, ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (Eq. 9.10) over every position."""
    out = model(ids[:, :-1])
    logits = out if isinstance(out, torch.Tensor) else out.logits
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def trainable(model) -> dict[str, torch.Tensor]:
    """Trainable parameters by name; under FSDP the whole (gathered) tensor."""
    out = {}
    for n, p in model.named_parameters():
        if p.requires_grad:
            t = p.full_tensor() if hasattr(p, "full_tensor") else p
            out[n.replace("module.", "", 1) if n.startswith("module.") else n] = t.detach().cpu().clone()
    return out


def reference_run(method: str, batch: np.ndarray, steps: int = 3, lr: float = 1e-3, seed: int = 0,
                  checkpoint: str = "stdlib-1m", impl: str = "twin") -> dict:
    """One process, the whole batch: the result DDP and FSDP must reproduce."""
    model = load_model(method, checkpoint, seed, impl)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    ids, losses = torch.from_numpy(batch), []
    for _ in range(steps):
        loss = loss_of(model, ids)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {"losses": losses, "params": {k: v.numpy() for k, v in trainable(model).items()}}


# ------------------------------------------------------------------ the tasks (one call per rank)
def _device() -> torch.device:
    """The rank's device: its GPU under NCCL (torchrun sets LOCAL_RANK), else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def _counting_hook(state: dict, bucket):
    """DDP comm hook: Eq. 11.1 measured — the bytes of every bucket handed to all-reduce."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    buf = bucket.buffer()
    state["bytes"] += buf.numel() * buf.element_size()
    state["buckets"] += 1
    return default_hooks.allreduce_hook(None, bucket)


def _maybe_fail(rank: int, step: int, fail: dict | None):
    """Fault injection for the tests: rank ``fail['rank']`` exits (or hangs) at ``fail['step']``."""
    if fail and fail["rank"] == rank and fail["step"] == step:
        if fail.get("how") == "hang":
            time.sleep(3600)
        os._exit(int(fail.get("code", 3)))


def task_ddp(rank, world, method, batch, steps=3, lr=1e-3, seed=0, checkpoint="stdlib-1m", impl="twin",
             fail=None, outdir=None, timing_reps=0):
    from torch.nn.parallel import DistributedDataParallel as DDP

    dev = _device()
    model = load_model(method, checkpoint, seed, impl).to(dev)
    ddp = DDP(model)
    state = {"bytes": 0, "buckets": 0}
    ddp.register_comm_hook(state, _counting_hook)
    opt = torch.optim.AdamW([p for p in ddp.parameters() if p.requires_grad], lr=lr)
    ids = torch.from_numpy(shard_of(batch, rank, world)).to(dev)
    losses, per_step = [], []
    for step in range(steps):
        _maybe_fail(rank, step, fail)
        before = state["bytes"]
        loss = loss_of(ddp, ids)
        opt.zero_grad()
        loss.backward()           # the hook all-reduces (and averages) every bucket here
        opt.step()
        per_step.append(state["bytes"] - before)
        local = loss.detach().clone()
        dist.all_reduce(local)    # the batch's loss = mean of the equal shards' losses
        losses.append(local.item() / world)
    out = {"rank": rank, "world": world, "method": method, "losses": losses, "bytes_per_step": per_step,
           "buckets_per_step": state["buckets"] / steps,
           "n_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
           "n_params": sum(p.numel() for p in model.parameters())}
    if timing_reps:
        out |= _time_step(ddp, ids, opt, timing_reps)
    _save(outdir, f"ddp-{method}", trainable(model), rank)
    return out


def _time_step(ddp, ids, opt, reps: int) -> dict:
    """Median seconds of forward+backward without gradient sync (``no_sync``) and with it,
    the two interleaved so that drift in the machine's load hits both alike."""
    ts = {False: [], True: []}
    for _ in range(reps):
        for sync in (False, True):
            dist.barrier()
            t0 = time.perf_counter()
            if sync:
                loss_of(ddp, ids).backward()
            else:
                with ddp.no_sync():
                    loss_of(ddp, ids).backward()
            ts[sync].append(time.perf_counter() - t0)
            opt.zero_grad()
    return {"t_compute": float(np.median(ts[False])), "t_step": float(np.median(ts[True]))}


def task_allreduce(rank, world, sizes=(2**10, 2**14, 2**18, 2**20), reps=5):
    """Median seconds of a float32 all-reduce of each size (bytes), for Eq. 11.5's α and β. Each size is
    run once untimed (the first collective of a size pays the group's set-up), then the sizes are
    interleaved rep by rep, so that a slow spell of the machine hits every size alike."""
    xs = [torch.ones(nbytes // 4) for nbytes in sizes]
    for x in xs:
        dist.all_reduce(x)
    ts = [[] for _ in sizes]
    for _ in range(reps):
        for x, t in zip(xs, ts):
            dist.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(x)
            t.append(time.perf_counter() - t0)
    return {"rank": rank, "sizes": list(sizes), "seconds": [float(np.median(t)) for t in ts]}


def _local_bytes(t) -> int:
    t = t.to_local() if hasattr(t, "to_local") else t
    return t.numel() * t.element_size()


def _full_bytes(t) -> int:
    return t.numel() * t.element_size()   # a DTensor's numel is the whole tensor's


def shard_per_layer(model):
    """FSDP2: one ``fully_shard`` unit per decoder layer, then the root (embeddings, norm, head)."""
    from torch.distributed.fsdp import fully_shard

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model   # under peft's wrapper
    layers = inner.model.layers
    for layer in layers:
        fully_shard(layer)
    fully_shard(model)
    return model


def task_fsdp(rank, world, method, batch, steps=2, lr=1e-3, seed=0, checkpoint="stdlib-1m", impl="twin",
              outdir=None, quantize=False):
    dev = _device()
    model = load_model(method, checkpoint, seed, impl, quantize=quantize)
    model = shard_per_layer(model if quantize else model.to(dev))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    ids = torch.from_numpy(shard_of(batch, rank, world)).to(dev)
    losses = []
    for _ in range(steps):
        loss = loss_of(model, ids)
        opt.zero_grad()
        loss.backward()
        opt.step()
        local = loss.detach().clone()
        dist.all_reduce(local)
        losses.append(local.item() / world)
    ps = list(model.parameters())
    mem = {"weights_frozen": sum(_local_bytes(p) for p in ps if not p.requires_grad),
           "weights_trainable": sum(_local_bytes(p) for p in ps if p.requires_grad),
           "grads": sum(_local_bytes(p.grad) for p in ps if p.grad is not None),
           "optim": sum(_local_bytes(v) for s in opt.state.values() for k, v in s.items() if k != "step")}
    whole = {"weights_frozen": sum(_full_bytes(p) for p in ps if not p.requires_grad),
             "weights_trainable": sum(_full_bytes(p) for p in ps if p.requires_grad),
             "grads": sum(_full_bytes(p.grad) for p in ps if p.grad is not None),
             "optim": sum(_full_bytes(v) for s in opt.state.values() for k, v in s.items() if k != "step")}
    out = {"rank": rank, "world": world, "method": method, "losses": losses, "per_rank": mem, "whole": whole,
           "n_trainable": sum(p.numel() for p in ps if p.requires_grad), "n_params": sum(p.numel() for p in ps)}
    _save(outdir, f"fsdp-{method}", trainable(model), rank)   # full_tensor: a collective, every rank joins
    return out


def _save(outdir, name: str, tensors: dict, rank: int):
    """Rank 0 writes the trainable parameters (safetensors) for ``launch`` to read back."""
    if rank == 0 and outdir:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(Path(outdir) / f"{name}.safetensors"))


def task_tour(rank, world, batch, steps=3, outdir=None, ddp_methods=registry.PEFT_DECODER_METHODS,
              fsdp_methods=("full", "lora")):
    """The chapter's live run, in one process group: DDP for each method, then FSDP2."""
    return {"ddp": [task_ddp(rank, world, m, batch, steps=steps, outdir=outdir) for m in ddp_methods],
            "fsdp": [task_fsdp(rank, world, m, batch, steps=steps, outdir=outdir) for m in fsdp_methods]}


def task_qlora_fsdp(rank, world, batch, checkpoint="stdlib-1m", seed=0):
    """LoRA on bitsandbytes 4-bit linears (quant_storage fp32) under fully_shard: what happens."""
    try:
        out = task_fsdp(rank, world, "lora", batch, steps=1, seed=seed, checkpoint=checkpoint, impl="peft",
                        quantize=True)
        return {"rank": rank, "ok": True} | out
    except Exception as e:   # noqa: BLE001 — the chapter shows the exact failure
        return {"rank": rank, "ok": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}


TASKS = {"ddp": task_ddp, "fsdp": task_fsdp, "allreduce": task_allreduce, "qlora_fsdp": task_qlora_fsdp,
         "tour": task_tour}


# ------------------------------------------------------------------ launching
def _entry(rank, world, backend, port, timeout_s, task, kw, outdir):
    """One rank (spawned): join the group with a timeout on every collective, run, write JSON."""
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=timeout_s))
    try:
        out = TASKS[task](rank, world, **kw, **({"outdir": outdir} if task in ("ddp", "fsdp", "tour") else {}))
        (Path(outdir) / f"rank{rank}.json").write_text(json.dumps(out))
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"port must be an int in 1..65535, got {port!r}")
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise OSError(f"port {port} on 127.0.0.1 is in use: rank 0's rendezvous store cannot listen "
                          f"there; pass another port or port=None for a free one") from None
    return port


def check_backend(backend: str) -> str:
    if backend not in ("gloo", "nccl", "mpi", "ucc", "xccl"):
        raise ValueError(f"unknown backend {backend!r}; torch.distributed has gloo, nccl, mpi, ucc, xccl")
    if not dist.is_available() or not dist.is_backend_available(backend):
        raise RuntimeError(f"backend {backend!r} is not available in this torch build"
                           + (" (NCCL needs a CUDA build and GPUs; use gloo on CPU)" if backend == "nccl" else ""))
    if backend == "nccl" and torch.cuda.device_count() < 1:
        raise RuntimeError("backend 'nccl' needs GPUs; none is visible (use gloo on CPU)")
    return backend


def launch(task: str, world_size: int = 2, backend: str = "gloo", timeout_s: float = 60, port: int | None = None,
           **kw) -> dict:
    """Run ``TASKS[task]`` on ``world_size`` spawned ranks: {"ranks": [what each rank returned],
    "params": {"ddp-lora": {name: array}, …}} (rank 0's trainable parameters after training).

    Every collective times out after ``timeout_s`` s and the whole run after 3·timeout_s + 60 s;
    when a rank fails or the run times out, every rank still alive is terminated (then killed)
    before the error is raised, so no process is left behind."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {sorted(TASKS)}")
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be an int >= 1, got {world_size!r}")
    if "batch" in kw:   # refuse before starting anything
        shard_of(check_batch(kw["batch"], kw.get("checkpoint", "stdlib-1m")), 0, world_size)
    check_backend(backend)
    port = free_port() if port is None else check_port(port)
    with tempfile.TemporaryDirectory(prefix="ch11-") as d:
        logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)   # we raise our own error
        ctx = mp.start_processes(_entry, args=(world_size, backend, port, timeout_s, task, kw, d),
                                 nprocs=world_size, join=False, start_method="spawn")
        launch.last_pids = ctx.pids()
        deadline, failure = time.monotonic() + 3 * timeout_s + 60, None
        try:
            while not ctx.join(timeout=0.2, grace_period=1.0):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{task} on {world_size} ranks did not finish in {3 * timeout_s + 60:.0f} s")
        except (mp.ProcessExitedException, mp.ProcessRaisedException) as e:
            failure = e
        finally:
            _stop(ctx)
        error = _explain(ctx, task, failure) if failure is not None else None
        for f in ctx.error_files:   # torch leaves a rank's error report in /tmp
            if f and os.path.exists(f):
                os.unlink(f)
        if error is not None:
            raise error from None
        out = {"ranks": [json.loads((Path(d) / f"rank{r}.json").read_text()) for r in range(world_size)]}
        from safetensors.numpy import load_file
        out["params"] = {f.stem: load_file(str(f)) for f in sorted(Path(d).glob("*.safetensors"))}
    return out


launch.last_pids = []


def _explain(ctx, task: str, failure) -> RuntimeError:
    """The root cause, whichever rank the launcher noticed first: a rank that died without a
    Python error (killed, os._exit) outranks the ones that then failed waiting for it."""
    stopped = (0, -signal.SIGTERM, -signal.SIGKILL)   # clean, or stopped by us
    died = [(r, p.exitcode) for r, p in enumerate(ctx.processes)
            if p.exitcode not in stopped and not os.path.exists(ctx.error_files[r])]
    if died:
        r, code = died[0]
        return RuntimeError(f"rank {r} died (exit code {code}) during {task!r}; the other ranks were stopped")
    last = [ln for ln in str(failure).strip().splitlines() if ln.strip()][-1]
    return RuntimeError(f"rank {failure.error_index} raised during {task!r}: {last}")


def alive(pid: int) -> bool:
    """Is process ``pid`` still running? (A zombie waiting for its parent counts as gone.)"""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _stop(ctx):
    for p in ctx.processes:
        if p.is_alive():
            p.terminate()
    for p in ctx.processes:
        p.join(5)
        if p.is_alive():
            p.kill()
            p.join()


# ------------------------------------------------------------------ torchrun (GPUs: NCCL)
def main(argv=None) -> int:
    """One rank under torchrun (which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), e.g.
    ``torchrun --nproc_per_node 4 -m pedagogy_lib.distributed --task ddp --backend nccl``
    (``make distributed-gpu``). Rank 0 prints what it measured as one JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", choices=["ddp", "fsdp"], default="ddp")
    ap.add_argument("--method", choices=registry.PEFT_DECODER_METHODS, default="lora")
    ap.add_argument("--impl", choices=IMPLS, default="peft")
    ap.add_argument("--backend", default="nccl" if torch.cuda.is_available() else "gloo")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--timeout", type=float, default=120)
    a = ap.parse_args(argv)
    if "RANK" not in os.environ:
        ap.error("run me under torchrun (it sets RANK and WORLD_SIZE); on one machine without it use launch()")
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if check_backend(a.backend) == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(a.backend, timeout=timedelta(seconds=a.timeout))
    try:
        batch = make_batch(a.batch_size, a.seq_len)
        out = TASKS[a.task](rank, world, a.method, batch, impl=a.impl)
        if rank == 0:
            print(json.dumps(out))
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
