"""Checkers for chapter 00's exercises. Each calls the student's function on several
inputs (not only the one in the statement), compares with `pedagogy_lib.counting` and the methods'
count formulas (`lora.lora_params`, `bitfit.bitfit_params`), and
names the likely mistake when the answer matches a known wrong formula."""

from pedagogy_lib import counting as C
from pedagogy_lib.bitfit import bitfit_params
from pedagogy_lib.lora import lora_params
from pedagogy_lib.book.exercises import (NotYet, attempt, expect, expect_close, guard_checkers, passed,
                                         number, refuse_known_mistakes, whole_number)


# ------------------------------------------------------------ 00.1 mixed-precision Adam

_ADAM_SIZES = (6_738_415_616, 22_713_216, 1, 175_000_000_000, 1_234_567)


def check_mixed_adam_gb(fn) -> None:
    """fn(n_params) -> GB (10^9 bytes) of weights, gradients, master copy and Adam moments."""
    for n in _ADAM_SIZES:
        got = number(attempt(fn, n), f"mixed_adam_gb({n:,})")
        want = C.finetune_memory_gb(n, "mixed-adam")
        wrong = {  # answer -> what it means
            n * 16: "that is bytes; divide by 10**9 for GB",
            n * 16 / 2**30: "that is GiB (2**30 bytes); the papers quote GB = 10**9 bytes",
            n * 12 / 1e9: "12 bytes per parameter forgets the fp32 master copy of the weights",
            n * 4 / 1e9: "4 bytes per parameter counts only fp32 weights; training also keeps "
                         "gradients and two Adam moments",
            n * 8 / 1e9: "8 bytes counts the Adam moments only",
            n * 14 / 1e9: "14 bytes: Adam keeps two fp32 moments (m and v), 8 bytes together",
        }
        refuse_known_mistakes(got, want, wrong, f"mixed_adam_gb({n:,})", rtol=1e-9, atol=1e-9)
        expect_close(got, want, f"mixed_adam_gb({n:,})", rtol=1e-9, atol=0)
    passed("00.1", f"a 7B model needs {C.finetune_memory_gb(_ADAM_SIZES[0], 'mixed-adam'):.0f} GB "
                   "before activations")


# ----------------------------------------------------------------- 00.2 LoRA count

_TOY = C.ModelShape("toy", vocab=1000, hidden=96, layers=3, heads=4, ffn=200, max_pos=64)


def check_lora_count(fn) -> None:
    """fn(shape, r, targets) -> trainable LoRA parameters (eq. 0.8)."""
    cases = [(C.ROBERTA_BASE, 8, ("query", "value")), (_TOY, 3, ("ffn_in",)),
             (_TOY, 5, ("query", "key", "ffn_out")), (C.LLAMA_7B, 16, ("query", "ffn_down")),
             (C.GPT3, 4, ("query", "value"))]
    for shape, r, targets in cases:
        call = f"lora_count({shape.name}, r={r}, targets={targets})"
        got = number(attempt(fn, shape, r, targets), call)
        want = lora_params(shape, r, targets)
        mats = [C.linear_shapes(shape)[t] for t in targets]
        if got == sum(i * o for i, o in mats) * shape.layers:
            raise NotYet(f"{call} = {got:,.0f} is the size of the full matrices; LoRA trains "
                         "A (r×d_in) and B (d_out×r) instead")
        if got == want // shape.layers:
            raise NotYet(f"{call} = {got:,.0f} counts one layer; every one of the "
                         f"{shape.layers} layers gets its own A and B")
        if got in (shape.layers * sum(r * i for i, _ in mats), shape.layers * sum(r * o for _, o in mats)):
            raise NotYet(f"{call} = {got:,.0f} counts only one of the two factors; add the other")
        if got == shape.layers * sum(2 * r * i for i, _ in mats) and want != got:
            raise NotYet(f"{call} = {got:,.0f}: 2·r·d_in assumes square matrices; use r·(d_in + d_out)")
        expect(got.is_integer(), f"{call} returned {got!r}; a parameter count is a whole number")
        expect(got == want, f"{call} = {got:,.0f}, expected {want:,}")
    passed("00.2", f"RoBERTa-base, r=8 on q and v: {lora_params(C.ROBERTA_BASE, 8):,} parameters")


# ---------------------------------------------------------------- 00.3 BitFit fraction

def check_bitfit_fraction(fn) -> None:
    """fn(shape) -> fraction (0..1) of parameters that are biases or LayerNorm shifts."""
    for shape in (C.BERT_BASE, C.BERT_LARGE, _TOY, C.minilm_shape()):
        call = f"bitfit_fraction({shape.name})"
        got = number(attempt(fn, shape), call)
        total = C.total_params(shape)
        want = bitfit_params(shape) / total
        d, L = shape.hidden, shape.layers
        wrong = {
            100 * want: "that is a percentage; return a fraction between 0 and 1",
            bitfit_params(shape): "that is a count; divide by the model's total parameters",
            bitfit_params(shape, include_layernorm=False) / total:
                "the LayerNorm shifts β are biases too; BitFit trains them",
            (bitfit_params(shape) + d) / total: "the pooler is a task head; leave its bias out",
            (bitfit_params(shape) + (2 * L + 1) * d) / total:
                "LayerNorm gains γ are scales, not biases; count only β",
            (bitfit_params(shape) - d) / total: "the embedding LayerNorm has a β as well",
        }
        refuse_known_mistakes(got, want, wrong, call, rtol=1e-9)
        expect_close(got, want, call, rtol=1e-9, atol=0)
    passed("00.3", f"BERT-base trains {C.pct(bitfit_params(C.BERT_BASE) / C.total_params(C.BERT_BASE), 3)} "
                   "of its parameters under BitFit")


def check_customers_for_10x(answer) -> None:
    """``answer``: the smallest number of customers N for which N full FP32 copies of GPT-3
    take at least 10 times the disk of one base plus N LoRA r=4 (q, v) deltas (Eq. 0.6)."""
    n = whole_number(answer, "`answer`, a number of customers,")
    P, d = C.total_params(C.GPT3), lora_params(C.GPT3, 4)
    ratio = lambda n: C.customer_storage_gb(P, d, n, bytes_per_value=4)["ratio"]  # noqa: E731
    expect(n >= 1, f"a number of customers is at least 1, got {n}")
    expect(ratio(n) >= 10, f"with {n} customers the ratio is only {ratio(n):.2f}: more are needed")
    expect(n == 1 or ratio(n - 1) < 10, f"already {n - 1} customers give {ratio(n - 1):.2f} ≥ 10: find the smallest")
    passed("00.4 break-even", f"from {n} customers on, base + deltas is at least 10× smaller "
           "(the deltas are so small that N ≈ 10 plus a sliver)")


guard_checkers(globals())  # every check_* answers a malformed attempt with NotYet
