"""Chapter 09's checkpoints: the Hugging Face Llama layout round trip, transformers loading
our folders with equal logits and greedy tokens, load_decoder, and bad folders refused whole."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from pedagogy_lib import bpe, decoder_io as IO, models
from pedagogy_lib.decoder import Decoder, DecoderConfig

TEXTS = ["Return the sum of a and b.", "class Widget\n\nA small widget with a name.",
         "Split the string at whitespace and return a list of words.", "Open a file; raise OSError on failure."] * 5


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A random tiny decoder (GQA, untied head) with a BPE of 300 tokens, written as a checkpoint."""
    tok = bpe.DecoderTokenizer(bpe.train_tokenizer(TEXTS, 300))
    cfg = DecoderConfig(vocab_size=tok.vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                        tie_word_embeddings=False)
    net = Decoder(cfg, seed=3, std=0.2)
    for name, p in net.named_parameters():
        if "norm" in name:
            p += 0.2 * np.random.default_rng(1).standard_normal(p.shape).astype(p.dtype)
    folder = tmp_path_factory.mktemp("ckpt") / "tiny"
    IO.write_checkpoint(folder, cfg, net.state_dict(), tok, {"loss": []}, "0" * 64, "test")
    return folder


def hf_model(folder):
    import transformers

    transformers.logging.set_verbosity_error()
    return transformers.LlamaForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()


def assert_same_as_transformers(folder, lm, text):
    hf = hf_model(folder)
    ids = np.concatenate([[lm.tokenizer.eos_id], lm.tokenizer.encode(text)])[: lm.config.max_position_embeddings - 8]
    with torch.no_grad():
        ref = hf(torch.from_numpy(ids)[None]).logits[0].numpy()
    assert np.abs(lm.logits(ids) - ref).max() <= 1e-4
    want = hf.generate(torch.from_numpy(ids)[None], max_new_tokens=8, do_sample=False, num_beams=1,
                       pad_token_id=lm.tokenizer.eos_id)[0].numpy()
    assert np.array_equal(lm.generate(ids, 8), want)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_tiny_checkpoint_loads_in_transformers_with_equal_logits(tiny_dir, backend):
    lm = models.load_decoder(backend=backend, folder=tiny_dir)
    assert_same_as_transformers(tiny_dir, lm, "Return a list of the words of the widget.")


def test_tokenizer_file_loads_in_transformers(tiny_dir):
    from transformers import PreTrainedTokenizerFast

    lm = models.load_decoder(folder=tiny_dir)
    fast = PreTrainedTokenizerFast(tokenizer_file=str(tiny_dir / "tokenizer.json"))
    for s in ("Split the widget", "naïve ✓ text\twith  spaces\n", ""):
        assert fast(s)["input_ids"] == lm.tokenizer.encode(s).tolist()
        assert lm.tokenizer.decode(lm.tokenizer.encode(s)) == s


def test_config_round_trip():
    for cfg in IO.FAMILY.values():
        assert IO.config_from_hf(IO.hf_config(cfg, 0)) == cfg
        assert cfg.hidden_size % 64 == 0 and cfg.intermediate_size % 64 == 0


# ------------------------------------------------------------------ bad folders
def broken(tiny_dir, tmp_path, edit):
    folder = tmp_path / "bad"
    shutil.copytree(tiny_dir, folder)
    (folder / "manifest.json").unlink()   # the manifest would catch every edit; test the deeper checks
    edit(folder)
    return folder


def _set_config(key, value):
    def edit(folder):
        cfg = json.loads((folder / "config.json").read_text())
        cfg[key] = value
        (folder / "config.json").write_text(json.dumps(cfg))
    return edit


def _weights_edit(fn):
    def edit(folder):
        from safetensors.numpy import load_file, save_file

        w = load_file(str(folder / "model.safetensors"))
        fn(w)
        save_file(w, str(folder / "model.safetensors"))
    return edit


def _nan(w):
    w["model.layers.1.mlp.up_proj.weight"][3, 4] = np.nan


def _drop(w):
    del w["model.layers.0.self_attn.k_proj.weight"]


def _foreign_tokenizer(folder):
    other = bpe.DecoderTokenizer(bpe.train_tokenizer(TEXTS[:2] * 3, 280))
    (folder / "tokenizer.json").write_text(other.to_str())


def _bert_tokenizer(folder):
    from pedagogy_lib.checkpoint import model_dir

    shutil.copy(model_dir() / "tokenizer.json", folder / "tokenizer.json")


@pytest.mark.parametrize("edit,match", [
    (_set_config("hidden_size", 128), "head_dim 16 != hidden_size / heads = 32"),
    (_set_config("intermediate_size", 192), r"gate_proj.weight has shape \(128, 64\), config.json implies \(192, 64\)"),
    (_set_config("vocab_size", 301), "embed_tokens.weight has shape"),
    (_set_config("num_hidden_layers", 3), "does not match config.json"),
    (_set_config("model_type", "gpt2"), "model_type"),
    (_set_config("mlp_bias", True), "mlp_bias"),
    (_set_config("rope_parameters", {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}), "RoPE"),
    (_weights_edit(_nan), "up_proj.weight contains NaN"),
    (_weights_edit(_drop), "missing .*k_proj"),
    (_foreign_tokenizer, "another model"),
    (_bert_tokenizer, "not a tokenizer of this book"),
    (lambda f: (f / "model.safetensors").write_bytes(b"not safetensors"), "not a valid safetensors"),
    (lambda f: (f / "config.json").write_text("{"), "not JSON"),
])
def test_bad_checkpoint_is_refused(tiny_dir, tmp_path, edit, match):
    folder = broken(tiny_dir, tmp_path, edit)
    with pytest.raises(ValueError, match=match):
        models.load_decoder(folder=folder)


def test_manifest_catches_a_changed_file(tiny_dir, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(tiny_dir, folder)
    _foreign_tokenizer(folder)
    with pytest.raises(ValueError, match="tokenizer.json: SHA-256 differs"):
        models.load_decoder(folder=folder)


def test_bad_ids_and_arguments(tiny_dir):
    lm = models.load_decoder(folder=tiny_dir)
    V, ctx = lm.config.vocab_size, lm.config.max_position_embeddings
    for bad, match in ((np.array([], np.int64), "empty"), (np.array([0, V]), rf"\[0, {V}\)"),
                       (np.array([-1]), rf"\[0, {V}\)"), (np.zeros(ctx + 1, np.int64), "context"),
                       (np.array([[1, 2]]), "1-D"), (np.array([0.5]), "integers")):
        with pytest.raises(ValueError, match=match):
            lm.logits(bad)
    with pytest.raises(ValueError, match="context"):
        lm.generate(np.zeros(ctx - 2, np.int64), 3)
    with pytest.raises(ValueError, match="max_new_tokens"):
        lm.generate(np.array([1]), -1)
    with pytest.raises(ValueError, match="unknown backend"):
        models.load_decoder(backend="jax", folder=tiny_dir)
    with pytest.raises(ValueError, match="unknown decoder"):
        models.load_decoder("gpt-5")
    with pytest.raises(ValueError, match="integer ids"):
        lm.tokenizer.decode(np.array([0.5]))
    with pytest.raises(TypeError, match="str"):
        lm.tokenizer.encode(b"bytes")


def test_models_stays_numpy_only():
    code = ("import sys, numpy as np; from pedagogy_lib import models; "
            "lm = models.load_decoder(); lm.generate(lm.tokenizer.encode('Return'), 2); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------ the shipped family
@pytest.mark.parametrize("name", sorted(IO.FAMILY))
def test_family_loads_in_ours_and_transformers_alike(name):
    from pedagogy_lib import corpus

    if name not in IO.available() and name != IO.DEFAULT:
        pytest.skip(f"no checkpoint for {name} in this tree: run `make pretrain`")
    folder = IO.checkpoint_dir(name)
    assert all((folder / f).stat().st_size <= 25 * 2 ** 20 for f in IO.FILES)
    lm_np, lm_t = models.load_decoder(name), models.load_decoder(name, backend="torch")
    # text pretraining never saw: a docstring of a held-out module (read from source), and a made-up sentence
    doc = corpus.docstrings(corpus.read_module(corpus.stdlib_dir() / "textwrap.py"), "textwrap")[3]
    assert corpus.split_of("textwrap") == "heldout"
    assert_same_as_transformers(folder, lm_t, doc)
    assert_same_as_transformers(folder, lm_np, "The frobnicator yields quux values, or raises FooError.")


def test_generate_stops_after_the_first_endoftext(tiny_dir):
    lm = models.load_decoder(folder=tiny_dir)
    prompt = np.array([5, 9, 2])
    full = lm.generate(prompt, 6, stop_at_eos=False)
    assert full.size == 9 and np.array_equal(full, lm.generate(prompt, 6)) == (lm.tokenizer.eos_id not in full[3:])
    lm.tokenizer.eos_id = int(full[4])          # pretend the second new token is <|endoftext|>
    first = 3 + int(np.flatnonzero(full[3:] == full[4])[0])
    assert np.array_equal(lm.generate(prompt, 6), full[: first + 1])
