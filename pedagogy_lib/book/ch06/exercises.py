"""Checkers for chapter 06's exercises (BitFit). They compare with `pedagogy_lib.counting`
and `pedagogy_lib.bitfit` on several inputs and name the likely mistake."""
from __future__ import annotations

import numpy as np

from pedagogy_lib import bitfit as BF
from pedagogy_lib import counting as C
from pedagogy_lib import ia3 as I3
from pedagogy_lib import nn
from pedagogy_lib.bert import BertConfig, BertEncoder
from pedagogy_lib.book.exercises import (NotYet, attempt, expect, expect_close, expect_shape, guard_checkers, items,
                                         number, passed, refuse_known_mistakes)


# ------------------------------------------------------------------ 06.1 counting
_SHAPES = [(768, 3072, 12), (1024, 4096, 24), (384, 1536, 6), (10, 7, 2)]


def check_bitfit_count(fn) -> None:
    """fn(d, ffn, layers, include_layernorm) -> number of biases of a BERT encoder (Eq. 6.4),
    counting the embedding LayerNorm's β when include_layernorm, never the pooler/classifier."""
    for d, ffn, layers in _SHAPES:
        shape = C.ModelShape("x", 100, d, layers, 1, ffn, 8, 2)
        for ln in (True, False):
            call = f"bitfit_count(d={d}, ffn={ffn}, layers={layers}, include_layernorm={ln})"
            got = attempt(fn, d, ffn, layers, ln)
            if got is None:
                raise NotYet(f"{call} returned None: did you forget `return`?")
            want = BF.bitfit_params(shape, include_layernorm=ln)
            if ln:
                hints = {
                    layers * (7 * d + ffn): "add the embedding LayerNorm's β (d more), outside the blocks",
                    layers * 8 * d + d: "b_m2, the FFN's first bias, has ffn entries, not d",
                    layers * (9 * d + ffn) + 2 * d: "count only the LayerNorm shifts β, not the gains γ",
                }
            else:
                hints = {
                    layers * (7 * d + ffn) + d: "leave every LayerNorm β out when include_layernorm is False",
                    layers * 6 * d: "b_m2, the FFN's first bias, has ffn entries, not d",
                }
            refuse_known_mistakes(got, want, hints, call)
            expect(got == want, f"{call} = {got:,}, expected {want:,}")
    big = C.fraction(BF.bitfit_params(C.BERT_LARGE), C.BERT_LARGE)
    passed("06.1", f"BERT-large: {BF.bitfit_params(C.BERT_LARGE):,} biases = {100 * big:.3f}%")


# ------------------------------------------------------------------ 06.2 bias gradient
def check_bias_grad(fn) -> None:
    """fn(dy) -> dL/db for y = x Wᵀ + b, where dy = dL/dy has shape (..., d_out) (Eq. 6.2)."""
    rng = np.random.default_rng(0)
    for shape in ((7, 4), (3, 5, 6), (2, 2, 3, 5)):
        dy = rng.standard_normal(shape)
        got = attempt(fn, dy.copy())
        want = dy.reshape(-1, shape[-1]).sum(0)
        if got is not None and np.shape(got) == want.shape and np.allclose(got, dy.reshape(-1, shape[-1]).mean(0)):
            raise NotYet("a bias is added to every row, so its gradient is the SUM of dy over rows, not the mean")
        if got is not None and np.shape(got) == shape[:-1]:
            raise NotYet(f"summed over the wrong axis: the result should have one entry per output "
                         f"feature, shape ({shape[-1]},)")
        expect_shape(got, want.shape, f"bias_grad for dy of shape {shape}")
        expect_close(got, want, f"bias_grad for dy of shape {shape}", rtol=1e-10, atol=1e-12)
    passed("06.2", "the Linear backward already computes it; BitFit only keeps it")


# ------------------------------------------------------------------ 06.3 the b_q, b_m2 variant
def check_select_qm2(fn) -> None:
    """fn(names: list[str]) -> the names BitFit's two-bias variant trains (b_q and b_m2), in order."""
    for layers in (2, 3, 12):  # 12: two-digit layer indices, as in BERT-base
        cfg = BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=layers, num_attention_heads=2,
                         intermediate_size=12, max_position_embeddings=8)
        names = [n for n, _ in BertEncoder(cfg).named_parameters()]
        got = attempt(fn, list(names))
        if got is None:
            raise NotYet("select_qm2 returned None: did you forget `return`?")
        got = list(got)
        want = BF.bias_names(BertEncoder(cfg), BF.QM2)
        if any(".output.dense.bias" in n for n in got):
            raise NotYet("b_m2 is the bias of the FFN's first matrix (intermediate.dense, width ffn) — "
                         "output.dense is b_m3 (or b_m1 under attention)")
        if any(not n.endswith(".bias") for n in got):
            raise NotYet(f"only biases: {[n for n in got if not n.endswith('.bias')][:2]} are weights")
        missing, extra = [n for n in want if n not in got], [n for n in got if n not in want]
        expect(sorted(got) == sorted(want), f"for {layers} layers expected {len(want)} names like {want[:2]}, got "
               f"{len(got)}" + (f"; missing {missing[:2]}" if missing else "") + (f"; not wanted {extra[:2]}" if extra else ""))
        expect(got == want, "right names, but keep them in the order they come in `names`")
    passed("06.3")


# ------------------------------------------------------------------ 06.4 moving a unit
def check_shift_for_fraction(fn) -> None:
    """fn(z, p) -> δ such that a fraction p of the entries of z + δ are > 0 (Eq. 6.3)."""
    rng = np.random.default_rng(3)
    k = int(rng.integers(1, 60))
    for n, p, loc in ((1000, 0.5, -1.0), (1000, 0.1, 2.0), (400, 0.9, 0.0), (7, 3 / 7, 0.5), (61, k / 61, 0.3),
                      (9, 0.0, 0.0), (9, 1.0, 0.0)):  # the two ends: no entry positive, every entry positive
        z = rng.standard_normal(n) + loc
        got = attempt(fn, z.copy(), p)
        if got is None:
            raise NotYet("shift_for_fraction returned None: did you forget `return`?")
        if np.ndim(got) != 0 or isinstance(got, (str, bytes)):
            raise NotYet(f"return one number δ: a bias is one shift for the whole unit; got {got!r:.40}")
        frac = float(((z + float(got)) > 0).mean())
        if 0 < p < 1 and abs(frac - (1 - p)) < abs(frac - p) - 1 / n:
            raise NotYet(f"with your δ a fraction {frac:.3f} is positive — that is 1 − p: "
                         "check the sign of the quantile")
        want = int(round(p * n))
        got_n = int(((z + float(got)) > 0).sum())
        expect(got_n == want, f"for n={n}, p={p:.3f} exactly {want} entries of z + δ should be > 0, "
               f"yours gives {got_n}" + (": an off-by-one in the sorted index?" if abs(got_n - want) == 1 else ""))
    passed("06.4", "one number per unit decides how often its GELU is on")


def check_bitfit_shrinks(answer) -> None:
    """``answer``: BitFit's trainable fraction (Eq. 6.4, with the LayerNorm shifts) of
    BERT-base divided by that of BERT-large."""
    expect(answer is not None, "set `answer` to a number")
    frac = {s.name: BF.bitfit_params(s) / C.total_params(s) for s in (C.BERT_BASE, C.BERT_LARGE)}
    want = frac["BERT-base"] / frac["BERT-large"]
    ratio = number(answer, "`answer`")
    if abs(ratio - 1 / want) < 1e-6:
        raise NotYet("that is BERT-large over BERT-base: the question asks base over large")
    expect(abs(ratio - want) < 1e-6, f"the ratio should be {want:.8f} to 1e-6, unrounded (compute both "
           f"fractions with bitfit.bitfit_params and counting.total_params); you gave {answer}")
    passed("06.5 BitFit and size", f"BERT-base trains {want:.2f}× BERT-large's share: biases grow like L·d, "
           "weights like L·d², so a wider model trains a smaller share (the embedding tables, which "
           "BitFit leaves frozen, blunt the effect)")


# ------------------------------------------------------------------ 06.6 folding IA³ into a Linear
def _ia3_reference(W, b, l, feedforward):
    """The library's merge (Eq. 6.9) on a Linear holding W and b."""
    lin = nn.Linear(W.shape[1], W.shape[0], dtype=np.float64)
    lin.p["weight"][...], lin.p["bias"][...] = W, b
    layer = I3.IA3Linear(lin, feedforward)
    layer.p["ia3_l"][...] = l
    layer.merge()
    return lin.p["weight"], lin.p["bias"]


def check_merge_ia3(fn) -> None:
    """fn(W, b, l, feedforward) -> (W', b'): the Linear y = x Wᵀ + b with IA³'s vector l folded
    in (Eq. 6.9): on the output side W' = diag(l) W, b' = l ⊙ b; on the input side W' = W diag(l)."""
    rng = np.random.default_rng(6)
    for d_out, d_in in ((5, 5), (3, 7), (8, 4)):  # square first: a row/column mix-up keeps the shape
        W, b = rng.standard_normal((d_out, d_in)), rng.standard_normal(d_out)
        for ff in (False, True):
            l = 1 + 0.5 * rng.standard_normal(d_in if ff else d_out)
            call = f"merge_ia3(W {W.shape}, b, l {l.shape}, feedforward={ff})"
            got = items(attempt(fn, W, b, l, ff), 2, f"a pair (W', b') from {call}")
            want_W, want_b = _ia3_reference(W, b, l, ff)
            expect_shape(got[0], W.shape, f"W' of {call}")
            expect_shape(got[1], b.shape, f"b' of {call}")
            gW, gb = np.asarray(got[0], np.float64), np.asarray(got[1], np.float64)
            if ff and d_out == d_in and np.allclose(gW, W * l[:, None]):
                raise NotYet(f"{call}: on the input side l multiplies x, so it scales the COLUMNS of W "
                             "(W diag(l)), not its rows")
            if not ff and d_out == d_in and np.allclose(gW, W * l[None, :]):
                raise NotYet(f"{call}: on the output side l multiplies y, so it scales the ROWS of W "
                             "(diag(l) W), not its columns")
            if ff and d_out == d_in and np.allclose(gb, b * l):
                raise NotYet(f"{call}: on the input side the bias is added after the scaling, so b stays as it is")
            if not ff and np.allclose(gb, b):
                raise NotYet(f"{call}: on the output side l ⊙ (x Wᵀ + b) scales the bias too: b' = l ⊙ b")
            expect_close(gW, want_W, f"W' of {call}", rtol=1e-10, atol=1e-12)
            expect_close(gb, want_b, f"b' of {call}", rtol=1e-10, atol=1e-12)
    passed("06.6", "a merged IA³ model is the plain model with rescaled rows and columns: no cost at inference")


guard_checkers(globals())  # every check_* answers a malformed attempt with NotYet
