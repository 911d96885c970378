"""A GGUF file's vocabulary read from its metadata header, without loading the model: what makes two files
comparable, and the one load-time fix an old file needs.

Owns reading the tokenizer.ggml.* keys (tokens, token types, merges, special ids, add-BOS, the pre-tokenizer
name) and general.architecture with a bounded header scan, the vocabulary hash that decides whether two
variants can be compared, and the metadata overrides a file needs to tokenize as it was trained.
Never calls llama_cpp (engine.py loads models and applies the overrides) and never writes a file.

Facts this module relies on:
- GGUF v2/v3 metadata: after magic, version (u32), tensor count and kv count (u64 each), each kv is a key
  string (u64 length + bytes), a value type (u32) and the value; strings are u64 length + bytes, arrays an
  element type (u32), a count (u64) and the elements.
- llama.cpp (src/llama-vocab.cpp) treats a BPE vocabulary without tokenizer.ggml.pre (or with an empty one)
  as pre-tokenizer 'default', which splits digits and punctuation unlike Hugging Face's GPT-NeoX tokenizer;
  'mpt' is its name for GPT-NeoX-20B's byte-level pre-tokenizer, the one Pythia was trained with. GGUFs
  converted before spring 2024 carry no pre key.
- Converters pad the token list up to the model's vocab_size with "[PAD{id}]" entries: type UNUSED here
  (vocab.py), USER_DEFINED in llama.cpp's older convert scripts. Padding never occurs in tokenized text.
"""

from __future__ import annotations

import hashlib
import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path

GPTNEOX_PRE = "mpt"  # llama.cpp's name for GPT-NeoX-20B's pre-tokenizer (Pythia's tokenizer)
PRE_KEY = "tokenizer.ggml.pre"
TOKEN_UNUSED = 5  # gguf TokenType.UNUSED
_HASH_VERSION = b"pythia-compare vocabulary v1\0"

# Value types (ggml's gguf.h) with a fixed size: struct format per type; 8 = string, 9 = array.
_FIXED = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
# Bounds: no real file comes near them; a damaged or hostile header fails fast instead of allocating.
MAX_KV = 1 << 16
MAX_KEY_BYTES = 1 << 16
MAX_STRING_BYTES = 1 << 24
MAX_ARRAY_ITEMS = 1 << 26

_WANTED = {"general.architecture", "tokenizer.ggml.model", PRE_KEY, "tokenizer.ggml.tokens",
           "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id",
           "tokenizer.ggml.eos_token_id", "tokenizer.ggml.add_bos_token", "general.file_type"}


class GGUFHeaderError(ValueError):
    """The metadata header is not one this reader can read (truncated, damaged, or past its bounds)."""


@dataclass(frozen=True)
class GGUFVocab:
    """The vocabulary keys of one GGUF header, raw as stored (None: the key is absent)."""
    architecture: str | None
    tokenizer_model: str | None
    pre: str | None
    tokens: list[bytes] = field(repr=False)
    types: list[int] = field(repr=False)
    merges: list[bytes] = field(repr=False)
    bos_id: int | None = None
    eos_id: int | None = None
    add_bos: bool | None = None
    file_type: int | None = None  # general.file_type (llama.cpp's ftype), which engine plans the load by

    @property
    def n_real(self) -> int:
        """Tokens up to the last real one: trailing padding (type UNUSED, or named [PAD…]) left out."""
        n = len(self.tokens)
        while n > 0 and (self._type(n - 1) == TOKEN_UNUSED or self.tokens[n - 1].startswith(b"[PAD")):
            n -= 1
        return n

    def _type(self, i: int) -> int:
        return self.types[i] if i < len(self.types) else 1


def read_vocab(path: str | Path) -> GGUFVocab:
    """The vocabulary keys of the GGUF at `path`. Reads the metadata header only (the tensors are never
    touched) and decodes only the keys it needs. Raises GGUFHeaderError or OSError."""
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        if size < 24:
            raise GGUFHeaderError(f"{Path(path).name}: {size} bytes, too short for a GGUF header")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return _parse(mm, size, Path(path).name)


def _parse(buf, size: int, name: str) -> GGUFVocab:
    magic, version, _n_tensors, n_kv = struct.unpack_from("<4sIQQ", buf, 0)
    if magic != b"GGUF" or version < 2:
        raise GGUFHeaderError(f"{name}: not a GGUF v2/v3 file")
    if n_kv > MAX_KV:
        raise GGUFHeaderError(f"{name}: {n_kv} metadata keys, more than {MAX_KV}")
    pos = 24
    found: dict[str, object] = {}

    def need(n: int) -> None:
        if pos + n > size:
            raise GGUFHeaderError(f"{name}: the metadata header ends past the end of the file")

    def u32() -> int:
        nonlocal pos
        need(4)
        pos += 4
        return struct.unpack_from("<I", buf, pos - 4)[0]

    def u64() -> int:
        nonlocal pos
        need(8)
        pos += 8
        return struct.unpack_from("<Q", buf, pos - 8)[0]

    def string(limit: int = MAX_STRING_BYTES) -> bytes:
        nonlocal pos
        n = u64()
        if n > limit:
            raise GGUFHeaderError(f"{name}: a metadata string of {n} bytes, more than {limit}")
        need(n)
        pos += n
        return bytes(buf[pos - n:pos])

    def strings(count: int, keep: bool) -> list[bytes]:
        nonlocal pos
        out: list[bytes] = []
        for _ in range(count):
            need(8)
            n = struct.unpack_from("<Q", buf, pos)[0]
            if n > MAX_STRING_BYTES:
                raise GGUFHeaderError(f"{name}: a metadata string of {n} bytes, more than {MAX_STRING_BYTES}")
            need(8 + n)
            if keep:
                out.append(bytes(buf[pos + 8:pos + 8 + n]))
            pos += 8 + n
        return out

    def value(vtype: int, keep: bool):
        nonlocal pos
        if vtype in _FIXED:
            fmt = "<" + _FIXED[vtype]
            n = struct.calcsize(fmt)
            need(n)
            pos += n
            return struct.unpack_from(fmt, buf, pos - n)[0]
        if vtype == _STRING:
            return string()
        if vtype == _ARRAY:
            etype, count = u32(), u64()
            if count > MAX_ARRAY_ITEMS:
                raise GGUFHeaderError(f"{name}: a metadata array of {count} items, more than {MAX_ARRAY_ITEMS}")
            if etype in _FIXED:
                n = struct.calcsize("<" + _FIXED[etype]) * count
                need(n)
                pos += n
                return list(struct.unpack_from(f"<{count}{_FIXED[etype]}", buf, pos - n)) if keep else None
            if etype == _STRING:
                return strings(count, keep)
            if etype == _ARRAY:  # nested arrays: no vocabulary key has them; walk past
                for _ in range(count):
                    value(_ARRAY, False)
                return None
            raise GGUFHeaderError(f"{name}: unknown array element type {etype}")
        raise GGUFHeaderError(f"{name}: unknown metadata value type {vtype}")

    for _ in range(n_kv):
        key = string(MAX_KEY_BYTES).decode("utf-8", "replace")
        vtype = u32()
        keep = key in _WANTED
        v = value(vtype, keep)
        if keep:
            found[key] = v

    def text(key: str) -> str | None:
        v = found.get(key)
        return v.decode("utf-8", "replace") if isinstance(v, bytes) else None

    def integer(key: str) -> int | None:
        v = found.get(key)
        return int(v) if isinstance(v, int) and not isinstance(v, bool) else None

    def items(key: str, kind: type) -> list:
        v = found.get(key)
        return [x for x in v if isinstance(x, kind)] if isinstance(v, list) else []

    add_bos = found.get("tokenizer.ggml.add_bos_token")
    return GGUFVocab(architecture=text("general.architecture"), tokenizer_model=text("tokenizer.ggml.model"),
                     pre=text(PRE_KEY), tokens=items("tokenizer.ggml.tokens", bytes),
                     types=[int(t) for t in items("tokenizer.ggml.token_type", int)],
                     merges=items("tokenizer.ggml.merges", bytes), bos_id=integer("tokenizer.ggml.bos_token_id"),
                     eos_id=integer("tokenizer.ggml.eos_token_id"),
                     add_bos=bool(add_bos) if isinstance(add_bos, (bool, int)) else None,
                     file_type=integer("general.file_type"))


def load_overrides(vocab: GGUFVocab) -> dict[str, str]:
    """The metadata overrides the file needs at load: {tokenizer.ggml.pre: 'mpt'} for a GPT-NeoX file saved
    without a pre-tokenizer name (else llama.cpp falls back to 'default'); {} for every other file."""
    if vocab.architecture == "gptneox" and not vocab.pre:
        return {PRE_KEY: GPTNEOX_PRE}
    return {}


def vocab_sha256(vocab: GGUFVocab, *, n_vocab: int, bos_id: int | None, eos_id: int | None, add_bos: bool) -> str:
    """Hash of what makes two files' token ids mean the same: the real tokens and their types, the merges,
    BOS/EOS, add-BOS and n_vocab (the logits' width). Trailing padding entries are left out, so files that
    name or type their padding differently hash alike. bos/eos/add_bos/n_vocab are the values llama.cpp
    uses (a file may leave them to llama.cpp's defaults)."""
    h = hashlib.sha256(_HASH_VERSION)
    n = vocab.n_real
    h.update(struct.pack("<QQ", n, len(vocab.merges)))
    for i in range(n):
        tok = vocab.tokens[i]
        h.update(struct.pack("<Qi", len(tok), vocab._type(i)))
        h.update(tok)
    for m in vocab.merges:
        h.update(struct.pack("<Q", len(m)))
        h.update(m)
    h.update(struct.pack("<qqq?", int(n_vocab), -1 if bos_id is None else int(bos_id),
                         -1 if eos_id is None else int(eos_id), bool(add_bos)))
    return h.hexdigest()
