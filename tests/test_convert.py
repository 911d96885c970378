"""convert.py against its references: transformers' logits, HF tokenizers' ids, and its own promises
(F32 norms and biases, regrouped QKV, padded vocab, atomic writes, clear errors).

Real parts only: checkpoints written by tinymodels (numpy) or by transformers itself, GGUF files read
back with gguf's reader, and llama.cpp through pythia_compare.models.engine.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import unicodedata
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import gguf
import numpy as np
import pytest
from tokenizers import Tokenizer

from pythia_compare.config import Settings
from pythia_compare.sources.convert import CONVERTER_VERSION, convert_checkpoint
from pythia_compare.runs.pool import ModelPool
from pythia_compare.errors import CheckpointError, DiskFull, NotYetSupported, SpecError
from tests.tinymodels import SPACE_RUNS, make_checkpoint, make_hf_checkpoint, save_torch_bin

SETTINGS = Settings(kv_f32=True, flash_attn=False, n_threads=2)

PARITY_TEXT = ("The quick brown fox jumps over the lazy dog. It was the best of times, it was the worst of "
               "times.\ndef add(a, b):\n    return a + b\n\nNumbers: 12345 3.14159, Crème brûlée, 日本語 🚀. ") * 2

CORPUS = [
    "Hello world", " leading space", "trailing space ", "Crème brûlée, naïve café, Ångström, Straße, jalapeño",
    "Привет, мир", "Ελληνικά", "שלום עולם", "مرحبا بالعالم", "日本語のテキスト。中文文本测试。", "한국어 텍스트", "ภาษาไทย",
    "नमस्ते दुनिया", "🚀 🦙 😀 👍🏽 ❤️ ✅ 🇺🇸", "👨‍👩‍👧 family, 🏳️‍🌈 flag, 😶‍🌫️ face",
    *[f"a{' ' * n}b" for n in range(2, 21)], " " * 30 + "x", " " * 49, "x" + " " * 25, "end" + " " * 7,
    "\t", "\t\t\tx", "a\tb\t\tc", "a\n\nb", "\n\n\n", "line\r\nline\r\n", "\r\n\r\n  \r\n",
    " \n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n",
    "3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3", "12345678901234567890123", "1e-10 -0.5 +7",
    "def add(a, b):\n    return a + b\n\n\nclass X:\n\tpass\n", "for (int i = 0; i < n; ++i) { x[i] += 1; }",
    "{\"k\": [1, 2], \"n\": null}", "<html><body>Hi</body></html>",
    "a<|endoftext|>b", "<|endoftext|>", "text <|endoftext|> more text<|endoftext|><|endoftext|>", "x <|padding|>y",
    "I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL",
    "------=======  '''''''```````\"\"\"\"......!!!!!!??????", "\u00a0nbsp\u2003em\u200bzw\u3000ideo",
    "ﬁ ligature ½ ① ™",
]


@contextmanager
def loaded(path: Path, n_ctx: int = 512):
    pool = ModelPool(SETTINGS)
    try:
        with pool.hold([path], n_ctx=n_ctx) as (model,):
            yield model
    finally:
        pool.close()


def fields(path: Path) -> dict:
    reader = gguf.GGUFReader(path)
    return {k: f.contents() for k, f in reader.fields.items()}


def tensors(path: Path) -> dict:
    return {t.name: t for t in gguf.GGUFReader(path).tensors}


def dir_listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


# ----------------------------------------------------------------------------- logits parity

@pytest.mark.parametrize("style, parallel, pct, theta", [
    ("pythia", True, 0.25, 10000.0),
    ("pythia", False, 0.5, 20000.0),
    ("transformers5", True, 0.5, 20000.0),
    ("transformers5", False, 0.25, 10000.0),
])
def test_f32_logits_of_both_weight_formats_match_transformers(tmp_path, style, parallel, pct, theta):
    import torch

    torch.manual_seed(0)
    st_dir, model = make_hf_checkpoint(tmp_path / "st", fmt="safetensors", rotary_pct=pct, rope_theta=theta,
                                       parallel_residual=parallel, config_style=style, seed=1)
    bin_dir = save_torch_bin(model, st_dir, tmp_path / "bin")
    cfg = json.loads((st_dir / "config.json").read_text())
    assert ("rotary_pct" in cfg) == (style == "pythia") and ("rope_parameters" in cfg) == (style == "transformers5")
    ids = Tokenizer.from_file(str(st_dir / "tokenizer.json")).encode(PARITY_TEXT, add_special_tokens=False).ids
    assert len(ids) > 64
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].double().numpy()
    for src in (st_dir, bin_dir):
        path = convert_checkpoint(src, tmp_path / f"{src.name}.gguf", "F32")
        with loaded(path) as m:
            got = m.logits(ids, list(range(len(ids)))).astype(np.float64)
        assert got.shape == ref.shape
        worst, scale = np.abs(got - ref).max(), np.abs(ref).max()
        assert worst <= 1e-3 * scale, f"{src.name}: max |Δ| {worst:.3g} vs max |logit| {scale:.3g}"
        assert (got.argmax(axis=1) == ref.argmax(axis=1)).all(), f"{src.name}: argmax differs"


def test_f16_and_bf16_files_hold_the_rounded_weights_and_run(tmp_path, tiny_ckpt):
    from pythia_compare.sources.checkpoint import read_tensors

    src = read_tensors(tiny_ckpt)
    files = {k: convert_checkpoint(tiny_ckpt, tmp_path / f"t-{k}.gguf", k) for k in ("F32", "F16", "BF16")}
    w = src["gpt_neox.layers.1.mlp.dense_h_to_4h.weight"]
    expect = {"F32": w, "F16": w.astype(np.float16).astype(np.float32),
              "BF16": ((w.view(np.uint32).astype(np.uint64) + 0x7FFF + ((w.view(np.uint32) >> 16) & 1)) >> 16
                       << 16).astype(np.uint32).view(np.float32)}
    for kind, path in files.items():
        ts = tensors(path)
        up = ts["blk.1.ffn_up.weight"]
        assert up.tensor_type.name == kind
        data = gguf.quants.dequantize(up.data, up.tensor_type).reshape(w.shape)
        np.testing.assert_array_equal(data, expect[kind])
        for name, t in ts.items():
            if len(t.shape) == 1:
                assert t.tensor_type.name == "F32", f"{kind}: {name} is {t.tensor_type.name}"
        assert fields(path)["general.file_type"] == {"F32": 0, "F16": 1, "BF16": 32}[kind]
    ids = list(range(2, 60))
    with loaded(files["F32"]) as m:
        ref = m.logits(ids, list(range(len(ids))))
    for kind in ("F16", "BF16"):
        with loaded(files[kind]) as m:
            got = m.logits(ids, list(range(len(ids))))
        assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max(), kind


def test_qkv_rows_are_regrouped_from_per_head_interleave_to_q_k_v_blocks(tmp_path, tiny_ckpt):
    from pythia_compare.sources.checkpoint import read_tensors

    src = read_tensors(tiny_ckpt)
    cfg = json.loads((tiny_ckpt / "config.json").read_text())
    d, h = cfg["hidden_size"], cfg["num_attention_heads"]
    hd = d // h
    path = convert_checkpoint(tiny_ckpt, tmp_path / "t.gguf", "F32")
    ts = tensors(path)
    w = src["gpt_neox.layers.0.attention.query_key_value.weight"]
    b = src["gpt_neox.layers.0.attention.query_key_value.bias"]
    got_w = np.asarray(ts["blk.0.attn_qkv.weight"].data).reshape(3 * d, d)
    got_b = np.asarray(ts["blk.0.attn_qkv.bias"].data).reshape(3 * d)
    for head in range(h):
        for j, part in enumerate("qkv"):
            rows = slice(j * d + head * hd, j * d + (head + 1) * hd)
            hf_rows = slice(head * 3 * hd + j * hd, head * 3 * hd + (j + 1) * hd)
            np.testing.assert_array_equal(got_w[rows], w[hf_rows], err_msg=f"head {head} {part}")
            np.testing.assert_array_equal(got_b[rows], b[hf_rows], err_msg=f"head {head} {part} bias")


# ----------------------------------------------------------------------------- metadata and vocab

def test_metadata_names_gptneox_hyperparameters_and_the_mpt_pre_tokenizer(tmp_path):
    ckpt = make_checkpoint(tmp_path / "c", rotary_pct=0.5, rope_theta=25000.0, parallel_residual=False,
                           config_style="transformers5")
    f = fields(convert_checkpoint(ckpt, tmp_path / "t.gguf", "F16"))
    assert f["general.architecture"] == "gptneox" and f["general.name"] == "c"
    assert f["gptneox.embedding_length"] == 256 and f["gptneox.block_count"] == 2
    assert f["gptneox.feed_forward_length"] == 1024 and f["gptneox.attention.head_count"] == 4
    assert f["gptneox.context_length"] == 2048
    assert f["gptneox.rope.dimension_count"] == int(0.5 * 256 // 4)
    assert f["gptneox.rope.freq_base"] == 25000.0
    assert f["gptneox.use_parallel_residual"] is False
    assert f["gptneox.attention.layer_norm_epsilon"] == pytest.approx(1e-5)
    assert f["tokenizer.ggml.model"] == "gpt2" and f["tokenizer.ggml.pre"] == "mpt"
    assert f["tokenizer.ggml.bos_token_id"] == 0 and f["tokenizer.ggml.eos_token_id"] == 0
    assert f["tokenizer.ggml.add_bos_token"] is False and f["tokenizer.ggml.add_eos_token"] is False
    assert isinstance(CONVERTER_VERSION, str) and CONVERTER_VERSION


def test_token_list_is_padded_to_vocab_size_with_typed_tokens(tmp_path, tiny_ckpt):
    tok = json.loads((tiny_ckpt / "tokenizer.json").read_text())
    n_vocab = json.loads((tiny_ckpt / "config.json").read_text())["vocab_size"]
    f = fields(convert_checkpoint(tiny_ckpt, tmp_path / "t.gguf", "F16"))
    tokens, types = f["tokenizer.ggml.tokens"], f["tokenizer.ggml.token_type"]
    n_tok = max([*tok["model"]["vocab"].values(), *(a["id"] for a in tok["added_tokens"])]) + 1
    assert n_tok < n_vocab and len(tokens) == len(types) == n_vocab
    assert tokens[n_tok:] == [f"[PAD{i}]" for i in range(n_tok, n_vocab)]
    assert set(types[n_tok:]) == {gguf.TokenType.UNUSED}
    for text, i in tok["model"]["vocab"].items():
        assert tokens[i] == text
    for a in tok["added_tokens"]:
        assert tokens[a["id"]] == a["content"]
        assert types[a["id"]] == (gguf.TokenType.CONTROL if a["special"] else gguf.TokenType.USER_DEFINED)
    assert tokens[0] == "<|endoftext|>" and types[0] == gguf.TokenType.CONTROL
    assert sum(t == gguf.TokenType.USER_DEFINED for t in types) == len(SPACE_RUNS)
    assert f["tokenizer.ggml.merges"] == [" ".join(m) if isinstance(m, list) else m for m in tok["model"]["merges"]]


def test_lm_head_name_tied_embeddings_and_legacy_buffers_convert(tmp_path):
    base = convert_checkpoint(make_checkpoint(tmp_path / "a", seed=3), tmp_path / "a.gguf", "F32")
    lm = convert_checkpoint(make_checkpoint(tmp_path / "b", seed=3, head_name="lm_head.weight", fmt="bin",
                                            legacy_buffers=True), tmp_path / "b.gguf", "F32")
    ta, tb = tensors(base), tensors(lm)
    assert sorted(ta) == sorted(tb)
    for name in ta:
        np.testing.assert_array_equal(np.asarray(ta[name].data), np.asarray(tb[name].data), err_msg=name)
    tied = convert_checkpoint(make_checkpoint(tmp_path / "c", seed=3, head_name="", tie_word_embeddings=True),
                              tmp_path / "c.gguf", "F16")
    tc = tensors(tied)
    np.testing.assert_array_equal(np.asarray(tc["output.weight"].data), np.asarray(tc["token_embd.weight"].data))


# ----------------------------------------------------------------------------- token parity

def fuzz_corpus(n: int = 400) -> list[str]:
    rng = random.Random(0)
    pool = list("abcXYZ éüßñ0123456789  \t\n\r.,;:'\"!?-_()[]{}<>/\\|@#$%^&*+=~`") + [
        "日", "本", "🚀", "👍🏽", "\u200d", "\ufe0f", "\u00a0", "\u3000", "'s", "'ll", "<|endoftext|>", " " * 5,
        "\r\n", "Я", "ש", "م", "한"]
    return ["".join(rng.choice(pool) for _ in range(rng.randint(1, 40))) for _ in range(n)]


def assert_same_ids(tok: Tokenizer, model, texts: list[str]) -> list[list[int]]:
    out = []
    for text in texts:
        want = tok.encode(text, add_special_tokens=False).ids
        got = model.tokenize(text, add_special=False, parse_special=True)
        assert got == want, f"{text!r}: llama.cpp {got} != HF {want}"
        out.append(want)
    return out


def test_llama_cpp_token_ids_equal_hf_tokenizers_on_a_varied_corpus(tmp_path, tiny_ckpt):
    tok = Tokenizer.from_file(str(tiny_ckpt / "tokenizer.json"))
    path = convert_checkpoint(tiny_ckpt, tmp_path / "t.gguf", "F16")
    space_ids = {tok.token_to_id(" " * n) for n in SPACE_RUNS}
    with loaded(path) as m:
        ids = assert_same_ids(tok, m, CORPUS + fuzz_corpus())
        assert m.add_bos is False
        for text in ("Hello world", "<|endoftext|>x"):
            assert m.tokenize(text, add_special=True, parse_special=True) == tok.encode(text).ids
    flat = {i for seq in ids for i in seq}
    assert 0 in flat, "the corpus never produced <|endoftext|> as its special id"
    assert flat & space_ids, "the corpus never used a space-run token"


def test_string_merges_and_list_merges_give_the_same_file_and_ids(tmp_path, tiny_ckpt):
    alt = tmp_path / "strmerges"
    shutil.copytree(tiny_ckpt, alt)
    tj = json.loads((alt / "tokenizer.json").read_text())
    assert isinstance(tj["model"]["merges"][0], list)
    tj["model"]["merges"] = [" ".join(m) for m in tj["model"]["merges"]]
    (alt / "tokenizer.json").write_text(json.dumps(tj))
    a = fields(convert_checkpoint(tiny_ckpt, tmp_path / "a.gguf", "F16"))
    b = fields(convert_checkpoint(alt, tmp_path / "b.gguf", "F16"))
    assert a["tokenizer.ggml.merges"] == b["tokenizer.ggml.merges"]
    tok = Tokenizer.from_file(str(alt / "tokenizer.json"))
    with loaded(tmp_path / "b.gguf") as m:
        assert_same_ids(tok, m, CORPUS[:20])


def test_a_post_processor_that_adds_bos_sets_add_bos(tmp_path, tiny_ckpt):
    ckpt = tmp_path / "bos"
    shutil.copytree(tiny_ckpt, ckpt)
    tj = json.loads((ckpt / "tokenizer.json").read_text())
    tj["post_processor"] = {"type": "TemplateProcessing",
                            "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
                                       {"Sequence": {"id": "A", "type_id": 0}}],
                            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                            "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [0],
                                                                 "tokens": ["<|endoftext|>"]}}}
    (ckpt / "tokenizer.json").write_text(json.dumps(tj))
    tok = Tokenizer.from_file(str(ckpt / "tokenizer.json"))
    path = convert_checkpoint(ckpt, tmp_path / "t.gguf", "F16")
    assert fields(path)["tokenizer.ggml.add_bos_token"] is True
    with loaded(path) as m:
        for text in ("Hello world", "a  b"):
            want = tok.encode(text).ids
            assert want[0] == 0
            assert m.tokenize(text, add_special=True, parse_special=True) == want


def test_decomposed_accents_tokenize_as_hf_because_the_engine_applies_nfc(tmp_path, tiny_ckpt):
    tok = Tokenizer.from_file(str(tiny_ckpt / "tokenizer.json"))
    path = convert_checkpoint(tiny_ckpt, tmp_path / "t.gguf", "F16")
    nfd = unicodedata.normalize("NFD", "Crème brûlée, naïve café")
    with loaded(path) as m:
        want = tok.encode(nfd, add_special_tokens=False).ids
        assert nfd != unicodedata.normalize("NFC", nfd)
        # llama.cpp does not normalize by itself; the engine applies the tokenizer's NFC first
        assert m.tokenize(nfd, add_special=False) == want


# ----------------------------------------------------------------------------- errors

def assert_clean(d: Path, before: list[str]) -> None:
    assert dir_listing(d) == before, f"left behind: {sorted(set(dir_listing(d)) - set(before))}"


def test_an_unknown_out_type_is_refused_listing_the_types(tmp_path, tiny_ckpt):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(SpecError) as e:
        convert_checkpoint(tiny_ckpt, out / "t.gguf", "Q4_K_M")
    assert all(k in str(e.value) for k in ("F32", "F16", "BF16"))
    assert_clean(out, [])


@pytest.mark.parametrize("key", ["hidden_size", "num_attention_heads", "vocab_size"])
def test_a_config_missing_a_size_key_is_refused_naming_it(tmp_path, tiny_ckpt, key):
    ckpt = tmp_path / "ck"
    shutil.copytree(tiny_ckpt, ckpt)
    cfg = json.loads((ckpt / "config.json").read_text())
    del cfg[key]
    (ckpt / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(CheckpointError, match=key):
        convert_checkpoint(ckpt, out / "t.gguf")
    assert_clean(out, [])


def _break_tokenizer(tj: dict, how: str) -> dict | str:
    if how == "not json":
        return "{ not json"
    if how == "wordpiece":
        tj["model"]["type"] = "WordPiece"
    elif how == "metaspace":
        tj["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True}
    elif how == "duplicate":
        tj["added_tokens"].append({"id": 5, "content": "<|endoftext|>", "special": True, "normalized": False,
                                   "lstrip": False, "rstrip": False, "single_word": False})
    elif how == "id beyond vocab":
        tj["added_tokens"].append({"id": 99999, "content": "<|x|>", "special": True, "normalized": False,
                                   "lstrip": False, "rstrip": False, "single_word": False})
    elif how == "no merges":
        tj["model"]["merges"] = []
    return tj


@pytest.mark.parametrize("how", ["not json", "wordpiece", "metaspace", "duplicate", "id beyond vocab", "no merges"])
def test_a_bad_tokenizer_is_refused_and_an_existing_file_stays_untouched(tmp_path, tiny_ckpt, how):
    ckpt = tmp_path / "ck"
    shutil.copytree(tiny_ckpt, ckpt)
    tj = _break_tokenizer(json.loads((ckpt / "tokenizer.json").read_text()), how)
    (ckpt / "tokenizer.json").write_text(tj if isinstance(tj, str) else json.dumps(tj))
    out = tmp_path / "out"
    out.mkdir()
    (out / "t.gguf").write_bytes(b"previous file")
    with pytest.raises((CheckpointError, NotYetSupported), match="tokenizer"):
        convert_checkpoint(ckpt, out / "t.gguf")
    assert_clean(out, ["t.gguf"])
    assert (out / "t.gguf").read_bytes() == b"previous file"


def test_a_missing_or_misshapen_weight_is_refused_naming_it(tmp_path, tiny_ckpt):
    from pythia_compare.sources.checkpoint import read_tensors
    from tests.tinymodels import write_weights

    out = tmp_path / "out"
    out.mkdir()
    for name, change in (("gpt_neox.layers.1.mlp.dense_4h_to_h.bias", "drop"),
                         ("gpt_neox.layers.0.attention.dense.weight", "reshape")):
        ckpt = tmp_path / f"ck-{change}"
        shutil.copytree(tiny_ckpt, ckpt)
        w = read_tensors(ckpt)
        if change == "drop":
            del w[name]
        else:
            w[name] = w[name][:, :128].copy()
        write_weights(ckpt, w)
        with pytest.raises(CheckpointError, match=name):
            convert_checkpoint(ckpt, out / "t.gguf")
    assert_clean(out, [])


@contextmanager
def small_filesystem(path: Path, size: str):
    """A real tmpfs of `size` mounted at `path` (needs root, as in this project's CI container)."""
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, f"cannot mount a tmpfs for the disk-full test: {done.stderr.strip()}"
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_a_full_disk_raises_disk_full_with_the_size_needed_and_leaves_nothing(tmp_path, tiny_ckpt, monkeypatch):
    import pythia_compare.sources.convert as convert

    with small_filesystem(tmp_path / "small", "1m") as small:
        with pytest.raises(DiskFull) as e:  # caught before writing: too little free space
            convert_checkpoint(tiny_ckpt, small / "t.gguf", "F32")
        assert "MB" in str(e.value) and str(small) in str(e.value)
        assert_clean(small, [])
        # the disk fills while writing (free space misreported, as on some network filesystems)
        plenty = SimpleNamespace(total=1 << 40, used=0, free=1 << 40)
        monkeypatch.setattr(convert.shutil, "disk_usage", lambda p: plenty)
        with pytest.raises(DiskFull) as e:
            convert_checkpoint(tiny_ckpt, small / "t.gguf", "F32")
        assert "MB" in str(e.value) and str(small) in str(e.value)
        assert_clean(small, [])
