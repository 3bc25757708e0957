"""Checkers for chapter 11's exercises (scaling out). Each compares with ``pedagogy_lib.scaling``
on several inputs and names the likely mistake."""
from __future__ import annotations

from pedagogy_lib import scaling as S
from pedagogy_lib.book.exercises import (NotYet, attempt, expect, expect_close, guard_checkers, passed,
                                         refuse_known_mistakes)

CASES = ((16384, 4, 2), (1_115_264, 4, 2), (16384, 2, 8), (10, 4, 1), (4_194_304, 2, 64))


# ------------------------------------------------------------------ 11.1 all-reduce bytes per step
def check_allreduce_bytes(fn) -> None:
    """fn(n_trainable, bytes_per_grad, n_ranks) -> bytes each rank sends per step (Eqs. 11.1–11.2)."""
    for n, b, N in CASES:
        call, payload = f"allreduce_bytes({n}, {b}, {N})", S.allreduce_payload(n, b)
        got, want = attempt(fn, n, b, N), S.ring_bytes_per_rank(payload, N)
        refuse_known_mistakes(got, want, {
            payload: "that is the payload (Eq. 11.1), what each rank hands to all-reduce; a ring sends it in "
                     "2(N−1) pieces of payload/N: reduce-scatter, then all-gather (Eq. 11.2)",
            2 * payload: "2 × payload is the limit for many ranks; at N ranks it is 2(N−1)/N × payload"},
            call, atol=0.5)
        expect_close(got, want, call, rtol=1e-9, atol=0.5)
    passed("11.1", "the bytes scale with the trainable parameters, so PEFT divides them by the trainable fraction")


# ------------------------------------------------------------------ 11.2 ZeRO-3 per rank
ZCASES = ((1_115_264, 1_115_264, 2), (1_115_264, 16_384, 2), (6_738_415_616, 4_194_304, 8), (100, 0, 4))


def check_zero3_per_rank(fn) -> None:
    """fn(n_params, n_trainable, n_ranks) -> per-rank bytes under ZeRO-3, fp32 weights and
    gradients (4 B), AdamW's two fp32 moments (8 B) (Eq. 11.3)."""
    for P, T, N in ZCASES:
        call, want = f"zero3_per_rank({P:,}, {T:,}, {N})", S.zero_per_rank(P, T, N, 3)["total"]
        got = attempt(fn, P, T, N)
        refuse_known_mistakes(got, want, {
            S.zero_per_rank(P, P, N, 3)["total"]: "gradients and AdamW state exist only for trainable parameters: "
                                                  "frozen weights have neither",
            S.zero_per_rank(P, T, N, 2)["total"]: "that is ZeRO-2: stage 3 shards the weights too, "
                                                  "4·n_params/N per rank"}, call, atol=1)
        expect_close(got, want, call, rtol=1e-9, atol=1)
    passed("11.2", "under PEFT almost all of it is the frozen base, and only stage 3 shards that")


# ------------------------------------------------------------------ 11.3 the largest model that fits
GRID = ((2, 24, 0), (2, 23.4, 0), (1, 24, 2), (1, 48, 2), (2, 24, 2), (2, 24, 6), (4, 24, 2), (8, 16, 2), (1, 8, 1), (8, 80, 10), (2, 48, 4),
        (1, 6, 0), (1, 16, 12))  # the last two: nothing fits (7B needs 5.8 GB on one GPU), so None


def _largest(n_gpus, gpu_gb, headroom_gb):
    fits = [(c["params"], name) for name, c in S.family().items()
            if S.qlora_sharded_gb(c, n_gpus)["total"] + headroom_gb <= gpu_gb]
    return max(fits)[1] if fits else None


def check_largest_fit(fn) -> None:
    """fn(n_gpus, gpu_gb, headroom_gb) -> the name (a key of ``scaling.family()``) of the largest
    model whose per-GPU QLoRA memory (Eq. 11.6, r = 64) plus ``headroom_gb`` fits in ``gpu_gb``;
    None if none does."""
    for n, g, h in GRID:
        got = attempt(fn, n, g, h)
        want = _largest(n, g, h)
        if got is not None and not isinstance(got, str):
            raise NotYet(f"return a model's name (a key of scaling.family()) or None, got {type(got).__name__}")
        if want is not None and got is not None and got != want:
            per = {k: round(S.qlora_sharded_gb(c, n)["total"], 1) for k, c in S.family().items()}
            raise NotYet(f"{n} GPUs of {g} GB with {h} GB headroom: expected {want}, got {got} "
                         f"(per-GPU GB: {per})")
        expect(got == want, f"largest_fit({n}, {g}, {h}) = {got!r}, expected {want!r}")
    passed("11.3", "the headroom left for activations decides the last step up in size")


guard_checkers(globals())  # every check_* answers a malformed attempt with NotYet
