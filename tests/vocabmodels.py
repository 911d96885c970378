"""GGUF fixtures around llama.cpp's own vocabulary files, and copies of a GGUF with one metadata key left out.

Owns `vocab_model`: a tiny gptneox model (random weights, written by gguf's GGUFWriter) whose whole
tokenizer.ggml.* vocabulary (tokens, types, merges, special ids, pre-tokenizer name or its absence) is copied
from one of llama.cpp's vocab-only files (models/ggml-vocab-*.gguf of the pinned sdist), and
`read_vocab_tests`: the .inp/.out tokenizer test vectors beside them, read as llama.cpp's
tests/test-tokenizer-0.cpp reads them. Also `copy_without_key`, which rewrites any GGUF (tensors byte for byte)
without one metadata key: a converted file turned into an old, pre-less one. Never runs a model.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

VOCAB_TEST_SEPARATOR = "\n__ggml_vocab_test__\n"


def read_vocab_tests(vocab_gguf: str | Path) -> list[tuple[str, list[int]]]:
    """(text, expected ids) of `<vocab>.inp` / `<vocab>.out`: inputs separated by '__ggml_vocab_test__' lines,
    one line of space-separated ids per input."""
    inp = Path(str(vocab_gguf) + ".inp").read_bytes().decode("utf-8")
    out = Path(str(vocab_gguf) + ".out").read_text(encoding="utf-8").split("\n")
    texts: list[str] = []
    pos = 0
    while pos < len(inp):
        nxt = inp.find(VOCAB_TEST_SEPARATOR, pos)
        if nxt < 0:
            texts.append(inp[pos:])
            break
        texts.append(inp[pos:nxt])
        pos = nxt + len(VOCAB_TEST_SEPARATOR)
    if out and out[-1] == "":
        out = out[:-1]
    assert len(texts) == len(out), f"{vocab_gguf}: {len(texts)} inputs but {len(out)} outputs"
    return [(t, [int(x) for x in o.split()]) for t, o in zip(texts, out)]


def _copy_field(writer: gguf.GGUFWriter, field) -> None:
    vtype = field.types[0]
    sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
    value = field.contents()
    if vtype == gguf.GGUFValueType.ARRAY and sub == gguf.GGUFValueType.STRING:
        value = [bytes(field.parts[i]) for i in field.data]  # raw bytes: tokens need not be valid UTF-8
    writer.add_key_value(field.name, value, vtype, sub_type=sub)


def vocab_model(vocab_gguf: str | Path, out: str | Path, *, keep_pre: bool = True, pre: str | None = None,
                d_model: int = 64, n_layer: int = 1, n_head: int = 2, d_ff: int = 128, seed: int = 0) -> Path:
    """A tiny random gptneox model at `out` with every tokenizer.ggml.* key of `vocab_gguf`, F32 tensors.

    keep_pre False leaves tokenizer.ggml.pre out; `pre` sets it to a name instead of the file's."""
    reader = gguf.GGUFReader(str(vocab_gguf))
    fields = [f for f in reader.fields.values() if f.name.startswith("tokenizer.ggml.")]
    n_vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    out = Path(out)
    writer = gguf.GGUFWriter(out, "gptneox")
    writer.add_name(f"tiny model with the vocabulary of {Path(vocab_gguf).name}")
    writer.add_file_type(int(gguf.LlamaFileType.ALL_F32))
    writer.add_context_length(2048)
    writer.add_embedding_length(d_model)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(d_ff)
    writer.add_head_count(n_head)
    writer.add_rope_dimension_count((d_model // n_head) // 4)
    writer.add_rope_freq_base(10000.0)
    writer.add_parallel_residual(True)
    writer.add_layer_norm_eps(1e-5)
    for f in fields:
        if f.name == "tokenizer.ggml.pre" and (not keep_pre or pre is not None):
            continue
        _copy_field(writer, f)
    if pre is not None:
        writer.add_tokenizer_pre(pre)
    rng = np.random.default_rng(seed)

    def mat(rows: int, cols: int, scale: float | None = None) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * (scale or 1 / np.sqrt(cols))).astype(np.float32)

    def vec(n: int, base: float = 0.0) -> np.ndarray:
        return (base + 0.1 * rng.standard_normal(n)).astype(np.float32)

    d, ff = d_model, d_ff
    tensors = {"token_embd.weight": mat(n_vocab, d, 0.05)}
    for i in range(n_layer):
        b = f"blk.{i}."
        tensors.update({b + "attn_norm.weight": vec(d, 1.0), b + "attn_norm.bias": vec(d),
                        b + "attn_qkv.weight": mat(3 * d, d), b + "attn_qkv.bias": vec(3 * d),
                        b + "attn_output.weight": mat(d, d), b + "attn_output.bias": vec(d),
                        b + "ffn_norm.weight": vec(d, 1.0), b + "ffn_norm.bias": vec(d),
                        b + "ffn_up.weight": mat(ff, d), b + "ffn_up.bias": vec(ff),
                        b + "ffn_down.weight": mat(d, ff), b + "ffn_down.bias": vec(d)})
    tensors.update({"output_norm.weight": vec(d, 1.0), "output_norm.bias": vec(d),
                    "output.weight": mat(n_vocab, d, 0.3)})
    for name, arr in tensors.items():
        writer.add_tensor(name, arr)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def copy_without_key(src: str | Path, dst: str | Path, key: str, *, uint32: dict[str, int] | None = None) -> Path:
    """`src` rewritten at `dst` without metadata `key` (then with the `uint32` keys set, if given): every other
    key, and every tensor byte for byte."""
    reader = gguf.GGUFReader(str(src))
    arch = reader.fields["general.architecture"].contents()
    assert key in reader.fields, f"{src} has no {key}"
    writer = gguf.GGUFWriter(Path(dst), arch)
    for f in reader.fields.values():
        if f.name.startswith("GGUF.") or f.name in ("general.architecture", key):
            continue
        _copy_field(writer, f)
    for k, v in (uint32 or {}).items():
        writer.add_uint32(k, v)
    for t in reader.tensors:
        writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in reader.tensors:
        writer.write_tensor_data(t.data)
    writer.close()
    return Path(dst)


def tokenizer_json_of(vocab_gguf: str | Path) -> dict:
    """The Hugging Face tokenizer.json a GPT-NeoX-style GGUF vocabulary came from, rebuilt: byte-level BPE with
    its merges, NFC, ByteLevel pre-tokenizer; CONTROL tokens as special added tokens, USER_DEFINED ones (not
    padding) as plain added tokens; padding left out."""
    from pythia_compare.models import ggufmeta

    v = ggufmeta.read_vocab(vocab_gguf)
    vocab, added = {}, []
    for i in range(v.n_real):
        text, kind = v.tokens[i].decode("utf-8"), v.types[i]
        if kind in (3, 4):
            added.append({"id": i, "content": text, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": kind == 4, "special": kind == 3})
        vocab[text] = i
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
            "normalizer": {"type": "NFC"},
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                              "use_regex": True},
            "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                               "use_regex": True},
            "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                      "vocab": vocab, "merges": [m.decode("utf-8") for m in v.merges]}}
