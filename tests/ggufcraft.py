"""Crafted GGUF files for the hostile-file tests: a real GGUF, parsed here, then broken at one level each.

Owns a small independent reader of the GGUF layout (header, key-value pairs, tensor descriptions, data: the
offsets of every field) and the corpus of broken files built from one valid file by byte patching. Each case
says what is wrong and the words a refusal must use to name it. Never loads a model; the app under test does.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

# Value types of GGUF key-value pairs: fixed sizes in bytes; 8 is a string, 9 an array.
SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
STRING, ARRAY = 8, 9


@dataclass
class KV:
    key: str
    at: int  # offset of the key's length field
    type_at: int  # offset of the value type
    value_at: int  # offset of the value (an array: of its element type)
    end: int  # offset just past the value
    vtype: int


@dataclass
class TensorInfo:
    name: str
    at: int  # offset of the name's length field
    offset_at: int  # offset of the data offset field
    end: int


@dataclass
class Layout:
    kvs: dict[str, KV]
    tensors: list[TensorInfo]
    kv_start: int
    infos_start: int
    data_start: int


def parse(data: bytes) -> Layout:
    """The offsets of every part of a valid GGUF (v2/v3)."""
    assert data[:4] == b"GGUF"
    _v, n_tensors, n_kv = struct.unpack_from("<IQQ", data, 4)
    pos = 24

    def u(fmt: str) -> int:
        nonlocal pos
        (v,) = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return v

    def skip(vtype: int) -> None:
        nonlocal pos
        if vtype == STRING:
            n = u("<Q")
            pos += n
        elif vtype == ARRAY:
            etype, count = u("<I"), u("<Q")
            for _ in range(count):
                skip(etype)
        else:
            pos += SIZES[vtype]

    kvs: dict[str, KV] = {}
    for _ in range(n_kv):
        at = pos
        n = u("<Q")
        key = data[pos: pos + n].decode()
        pos += n
        type_at = pos
        vtype = u("<I")
        value_at = pos
        skip(vtype)
        kvs[key] = KV(key, at, type_at, value_at, pos, vtype)
    infos_start = pos
    tensors = []
    for _ in range(n_tensors):
        at = pos
        n = u("<Q")
        name = data[pos: pos + n].decode()
        pos += n
        n_dims = u("<I")
        pos += 8 * n_dims + 4
        offset_at = pos
        pos += 8
        tensors.append(TensorInfo(name, at, offset_at, pos))
    align = 32
    if "general.alignment" in kvs:
        (align,) = struct.unpack_from("<I", data, kvs["general.alignment"].value_at)
    data_start = -(-pos // align) * align
    return Layout(kvs, tensors, kvs[next(iter(kvs))].at, infos_start, data_start)


def patch(data: bytes, at: int, fmt: str, value) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, at, value)
    return bytes(out)


@dataclass(frozen=True)
class Case:
    name: str  # also the file's stem: the refusal names the file, so it names the case too
    level: str  # where it breaks: header, kv, hparams, tensors, data, bytes
    make: Callable[[bytes, Layout], bytes]
    says: str  # a regex the refusal must match: what is wrong, in words


def _u32(key: str, value: int) -> Callable[[bytes, Layout], bytes]:
    def make(data: bytes, lay: Layout) -> bytes:
        kv = lay.kvs[key]
        assert kv.vtype == 4, (key, kv.vtype)
        return patch(data, kv.value_at, "<I", value)
    return make


def _first_string_value(data: bytes, lay: Layout) -> bytes:
    kv = lay.kvs["general.architecture"]
    return patch(data, kv.value_at, "<Q", 2**62)


def _array_count(data: bytes, lay: Layout) -> bytes:
    kv = lay.kvs["tokenizer.ggml.tokens"]
    return patch(data, kv.value_at + 4, "<Q", 2**60)


def _offset_past_end(data: bytes, lay: Layout) -> bytes:
    t = lay.tensors[-1]
    return patch(data, t.offset_at, "<Q", len(data) * 4)


def _flip(data: bytes, lay: Layout) -> bytes:
    out = bytearray(data)
    for i in range(4, 24):
        out[i] ^= 0xFF
    return bytes(out)


def _random(n: int, magic: bytes = b"") -> Callable[[bytes, Layout], bytes]:
    return lambda data, lay: magic + random.Random(n).randbytes(n)


ARCH = "gptneox"
CASES: list[Case] = [
    # header lengths and counts
    Case("key-length-huge", "kv", lambda d, l: patch(d, l.kv_start, "<Q", 2**62), r"key of \d+ bytes"),
    Case("kv-count-huge", "header", lambda d, l: patch(d, 16, "<Q", 2**62), r"\d+ metadata entries"),
    Case("tensor-count-huge", "header", lambda d, l: patch(d, 8, "<Q", 2**62), r"\d+ tensors"),
    Case("array-count-huge", "kv", _array_count, r"tokenizer\.ggml\.tokens.*\d+ elements"),
    Case("string-length-huge", "kv", _first_string_value, r"general\.architecture.*runs past the end"),
    Case("kv-type-unknown", "kv", lambda d, l: patch(d, l.kvs[f"{ARCH}.block_count"].type_at, "<I", 99),
         r"block_count.*unknown type 99"),
    # hyper-parameters out of range
    Case("block-count-zero", "hparams", _u32(f"{ARCH}.block_count", 0), r"block_count is 0\b"),
    Case("block-count-huge", "hparams", _u32(f"{ARCH}.block_count", 0x7FFFFFFF), r"block_count is 2147483647"),
    Case("head-count-zero", "hparams", _u32(f"{ARCH}.attention.head_count", 0), r"head_count is 0\b"),
    Case("embedding-length-odd", "hparams", _u32(f"{ARCH}.embedding_length", 255), r"embedding_length 255 is not a multiple"),
    # tensors
    Case("tensor-offset-past-end", "tensors", _offset_past_end, r"tensor .*past the end"),
    # truncation at every section
    Case("truncated-header", "header", lambda d, l: d[:20], r"ends inside its 24-byte header"),
    Case("truncated-kv", "kv", lambda d, l: d[: (l.kv_start + l.infos_start) // 2],
         r"past the end|more than the file can hold"),
    Case("truncated-tensor-infos", "tensors", lambda d, l: d[: (l.infos_start + l.data_start) // 2],
         r"tensor .*past the end"),
    Case("truncated-data", "data", lambda d, l: d[: (l.data_start + len(d)) // 2],
         r"tensor .*past the end|not within the file bounds"),
    # bytes
    Case("random-bytes", "bytes", _random(4096), r"GGUF"),
    Case("magic-then-random", "bytes", _random(4096, b"GGUF"), r"GGUF version|metadata entries|tensors"),
    Case("flipped-header-bytes", "header", _flip, r"GGUF version"),
]


def build_corpus(valid: Path, out: Path, suffix: str = ".gguf") -> dict[str, Path]:
    """Every case of CASES as a file `out/<case><suffix>`, made from the valid GGUF `valid`."""
    data = valid.read_bytes()
    lay = parse(data)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for case in CASES:
        p = out / f"{case.name}{suffix}"
        p.write_bytes(case.make(data, lay))
        files[case.name] = p
    return files
