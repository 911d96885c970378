"""Read Hugging Face GPT-NeoX checkpoints into numpy arrays, with no torch and no pickle code.

Owns finding and validating a checkpoint's files (config.json, tokenizer.json, model.safetensors,
pytorch_model.bin, their sharded *.index.json forms) and turning the weights into numpy arrays by name.
Never imports torch, runs code from a pickle, writes a file, or touches the network.

pytorch_model.bin (torch's zip: <name>/data.pkl + <name>/data/<key> per storage) goes through a
restricted unpickler whose only globals are inert stand-ins for torch's tensor-rebuild functions,
storage types and dtypes, plus collections.OrderedDict: any other global raises UnsafePickle when named,
before anything is called. Tensor bytes are read only after the whole pickle has been checked.

dtypes are kept as stored, except bfloat16: numpy has none, so BF16 comes back as float32 with exactly
the same values (bits << 16). safetensors 0.8.0's numpy API cannot load BF16 ("data type 'bfloat16' not
understood"), so those tensors are read at the validated header offsets; the rest go through safe_open.
"""

from __future__ import annotations

import io
import json
import math
import pickle
import re
import zipfile
from collections import Counter, OrderedDict
from pathlib import Path

import numpy as np
from safetensors import safe_open

from ..errors import CheckpointError, UnsafePickle

CONFIG = "config.json"
TOKENIZER = "tokenizer.json"
# Weight files in order of preference: safetensors first.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json",
                "pytorch_model.bin", "pytorch_model.bin.index.json")
REQUIRED_CONFIG_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads",
                        "intermediate_size", "vocab_size")
BF16 = "bf16"  # our code for bfloat16 (stored as little-endian uint16 bits)
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header
_MAX_PICKLE = 256 * 1024 * 1024  # a state-dict pickle is kilobytes; refuse absurd ones unread

# safetensors dtype -> numpy dtype (little-endian on disk)
_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": BF16, "I64": "<i8", "I32": "<i4", "I16": "<i2",
              "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}
# torch legacy storage class (pickled as GLOBAL 'torch <name>') -> numpy dtype
_STORAGES = {"DoubleStorage": "f8", "FloatStorage": "f4", "HalfStorage": "f2", "BFloat16Storage": BF16,
             "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1", "ByteStorage": "u1",
             "BoolStorage": "?", "ComplexFloatStorage": "c8", "ComplexDoubleStorage": "c16"}
# torch dtypes (GLOBAL 'torch <name>', used by _rebuild_tensor_v3 with torch.storage.UntypedStorage)
_DTYPES = {"float64": "f8", "float32": "f4", "float16": "f2", "bfloat16": BF16, "int64": "i8",
           "int32": "i4", "int16": "i2", "int8": "i1", "uint64": "u8", "uint32": "u4", "uint16": "u2",
           "uint8": "u1", "bool": "?", "complex64": "c8", "complex128": "c16"}
# Real torch names that numpy cannot hold: a clear "unsupported dtype", not an UnsafePickle.
_UNSUPPORTED = re.compile(r"float8_\w+|float4_\w+|complex32|q(u)?int\w+|bits\w+|u?int[1-7]|Q(U)?Int\w*Storage")
# torch._utils rebuild functions: (argument counts, index of backward hooks, of dtype, of metadata)
_REBUILDS = {"_rebuild_parameter": ((3,), 2, None, None), "_rebuild_parameter_with_state": ((4,), 2, None, None),
             "_rebuild_tensor": ((4,), None, None, None), "_rebuild_tensor_v2": ((6, 7), 5, None, 6),
             "_rebuild_tensor_v3": ((7, 8), 5, 6, 7)}


def read_config(ckpt_dir: Path) -> dict:
    """config.json parsed; CheckpointError if missing, not JSON, or lacking the GPT-NeoX size keys."""
    path = Path(ckpt_dir) / CONFIG
    cfg = _read_json(path, "the model's config")
    missing = [k for k in REQUIRED_CONFIG_KEYS if k not in cfg]
    if missing:
        raise CheckpointError(f"{path} lacks required key(s) {', '.join(missing)}; "
                              f"a GPT-NeoX config needs all of {', '.join(REQUIRED_CONFIG_KEYS)}")
    bad = [f"{k}={cfg[k]!r}" for k in REQUIRED_CONFIG_KEYS if not _uint(cfg[k]) or cfg[k] == 0]
    if bad:
        raise CheckpointError(f"{path}: {', '.join(bad)} must be positive integers")
    return cfg


def read_tokenizer_json(ckpt_dir: Path) -> dict:
    """tokenizer.json parsed; CheckpointError if missing, not JSON, or not a BPE tokenizer."""
    path = Path(ckpt_dir) / TOKENIZER
    tok = _read_json(path, "the checkpoint's tokenizer")
    kind = tok["model"].get("type") if isinstance(tok.get("model"), dict) else None
    if kind != "BPE":
        raise CheckpointError(f"{path} has model.type {kind!r}; GPT-NeoX's byte-level BPE tokenizer "
                              f"(model.type \"BPE\") is expected")
    return tok


def checkpoint_files(ckpt_dir: Path) -> list[Path]:
    """The files that define the checkpoint, in a fixed order, for hashing and cache keys.

    config.json, tokenizer.json when present, then the chosen weights: one file, or an index.json
    followed by its shards in sorted order. CheckpointError if there are no weights or a shard is missing.
    """
    ckpt_dir = Path(ckpt_dir)
    weights, shards = _weights(ckpt_dir)
    return ([ckpt_dir / n for n in (CONFIG, TOKENIZER) if (ckpt_dir / n).is_file()] + [weights]
            + [ckpt_dir / s for s in sorted(set(shards.values()))])


def read_tensors(ckpt_dir: Path) -> dict[str, np.ndarray]:
    """Every weight of the checkpoint by its checkpoint name, e.g. "embed_out.weight" -> (vocab, hidden).

    Shapes are as stored (PyTorch's (out_features, in_features) for Linear weights); arrays are
    C-contiguous. float32/float16 are kept; bfloat16 comes back as float32 with identical values.
    Prefers model.safetensors over pytorch_model.bin when both exist.
    """
    ckpt_dir = Path(ckpt_dir)
    weights, shards = _weights(ckpt_dir)
    out: dict[str, np.ndarray] = {}
    for file in ([ckpt_dir / s for s in dict.fromkeys(shards.values())] if shards else [weights]):
        read, shard = (_read_safetensors if file.suffix == ".safetensors" else _read_torch_zip), file.name
        for name, arr in read(file).items():
            if name in out:
                raise CheckpointError(f"tensor {name!r} appears in more than one shard of {weights}")
            if shards.get(name, shard) != shard:
                raise CheckpointError(f"{weights} puts {name!r} in {shards[name]}, but it is in {shard}")
            out[name] = arr
    lost = [n for n in shards if n not in out]
    if lost:
        raise CheckpointError(f"{weights} lists {len(lost)} tensor(s) its shards do not hold, "
                              f"e.g. {lost[0]!r} in {shards[lost[0]]}")
    return out


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path} not found: {what} is needed there")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None
    except OSError as e:
        raise CheckpointError(f"{path} cannot be read: {e.strerror or e}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a JSON {type(data).__name__}, not an object")
    return data


def _weights(ckpt_dir: Path) -> tuple[Path, dict[str, str]]:
    """(weights file, {tensor name: shard file name} for an index, else {})."""
    for name in WEIGHT_FILES:
        path = ckpt_dir / name
        if path.is_file():
            return path, (_read_index(path) if name.endswith(".index.json") else {})
    found = sorted(p.name for p in ckpt_dir.iterdir()) if ckpt_dir.is_dir() else None
    raise CheckpointError(f"no weights in {ckpt_dir}: looked for {', '.join(WEIGHT_FILES)}; "
                          + ("the directory does not exist" if found is None else f"found {found}"))


def _read_index(path: Path) -> dict[str, str]:
    wmap = _read_json(path, "the shard index").get("weight_map")
    if not isinstance(wmap, dict) or not wmap or not all(isinstance(v, str) for v in wmap.values()):
        raise CheckpointError(f"{path} has no usable weight_map (an object of tensor name -> shard file)")
    shards = sorted(set(wmap.values()))
    if odd := [s for s in shards if "/" in s or "\\" in s or s.startswith(".") or not s]:
        raise CheckpointError(f"{path} names shard {odd[0]!r}; shards must be plain file names beside it")
    if missing := [s for s in shards if not (path.parent / s).is_file()]:
        raise CheckpointError(f"{path} lists {len(shards)} shard(s) but {len(missing)} are missing "
                              f"from {path.parent}: {', '.join(missing)}")
    return wmap


def _itemsize(code: str) -> int:
    return 2 if code == BF16 else np.dtype(code).itemsize


def _uint(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _uints(v: object, types: tuple = (list,)) -> bool:
    return isinstance(v, types) and all(map(_uint, v))


def _bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """Exact bfloat16 -> float32: the 16 bits become the top half of a float32."""
    return (bits.astype("<u4") << 16).view("<f4").astype(np.float32, copy=False)


def _safetensors_header(path: Path) -> tuple[int, dict[str, tuple[str, tuple[int, ...], int, int]]]:
    """Validate the header ourselves: (data start, {name: (dtype, shape, begin, end)})."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if size < 8 or n > min(size - 8, _MAX_HEADER):
                raise CheckpointError(f"{path}: safetensors header length {n} bytes is larger than the "
                                      f"file ({size} bytes) or {_MAX_HEADER}; truncated or not safetensors")
            raw = f.read(n)
    except OSError as e:
        raise CheckpointError(f"{path} cannot be read: {e.strerror or e}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: safetensors header is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: safetensors header is not a JSON object")
    data_len = size - 8 - n
    entries: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        where = f"{path}: tensor {name!r}"
        if not isinstance(e, dict) or not {"dtype", "shape", "data_offsets"} <= e.keys():
            raise CheckpointError(f"{where} lacks dtype, shape or data_offsets in the header")
        dtype, shape, offs = e["dtype"], e["shape"], e["data_offsets"]
        if dtype not in _ST_DTYPES:
            raise CheckpointError(f"{where} has unsupported dtype {dtype!r}; supported: "
                                  f"{', '.join(_ST_DTYPES)}")
        if not _uints(shape) or not _uints(offs) or len(offs) != 2:
            raise CheckpointError(f"{where}: shape {shape!r} / data_offsets {offs!r} must be lists of "
                                  f"non-negative integers (offsets: [begin, end])")
        begin, end = offs
        if not begin <= end <= data_len:
            raise CheckpointError(f"{where}: data_offsets [{begin}, {end}] lie outside the data area of "
                                  f"{data_len} bytes; the file is truncated or corrupt")
        nbytes = math.prod(shape) * _itemsize(_ST_DTYPES[dtype])
        if end - begin != nbytes:
            raise CheckpointError(f"{where}: shape {shape} of {dtype} needs {nbytes} bytes but "
                                  f"data_offsets [{begin}, {end}] hold {end - begin}")
        entries[name] = (dtype, tuple(shape), begin, end)
    spans = sorted((b, e, k) for k, (_, _, b, e) in entries.items() if e > b)
    for (b0, e0, k0), (b1, _, k1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise CheckpointError(f"{path}: tensors {k0!r} [{b0}, {e0}) and {k1!r} (from {b1}) overlap")
    return 8 + n, entries


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    start, entries = _safetensors_header(path)
    out: dict[str, np.ndarray] = {}
    try:
        with safe_open(str(path), framework="numpy") as f:
            for name, (dtype, shape, begin, end) in entries.items():
                if dtype == "BF16":
                    bits = np.fromfile(path, dtype="<u2", count=(end - begin) // 2, offset=start + begin)
                    arr = _bf16_to_f32(bits).reshape(shape)
                else:
                    # safetensors 0.8.0's numpy API returns 0-d tensors as shape (1,): restore ().
                    arr = np.ascontiguousarray(f.get_tensor(name))
                    if arr.size == math.prod(shape):
                        arr = arr.reshape(shape)
                    if arr.shape != shape or arr.dtype != np.dtype(_ST_DTYPES[dtype]):
                        raise CheckpointError(f"{path}: tensor {name!r} read back as {arr.dtype}{arr.shape}, "
                                              f"header says {dtype}{list(shape)}")
                out[name] = arr
    except (CheckpointError, MemoryError):
        raise
    except Exception as e:  # the library's own refusal, reworded with the file named
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None
    return out


class _Inert:
    """Base of everything the restricted unpickler can hand out: a BUILD opcode on it is refused."""
    __slots__ = ()

    def __setstate__(self, state: object) -> None:
        raise UnsafePickle(f"the pickle tries to set the state of a {type(self).__name__.lstrip('_')}")


class _DType(_Inert):
    """Stand-in for a torch storage class (untyped: torch.UntypedStorage) or torch dtype."""
    __slots__ = ("code", "untyped")

    def __init__(self, code: str, untyped: bool = False) -> None:
        self.code, self.untyped = code, untyped


class _Storage(_Inert):
    """A persistent-id storage reference: zip entry key, dtype code, element (untyped: byte) count."""
    __slots__ = ("key", "code", "numel", "untyped")

    def __init__(self, key: str, code: str, numel: int, untyped: bool) -> None:
        self.key, self.code, self.numel, self.untyped = key, code, numel, untyped


class _Tensor(_Inert):
    """A tensor as a view of a storage; its bytes are read only after the whole pickle is checked."""
    __slots__ = ("storage", "code", "offset", "size", "stride")

    def __init__(self, storage: _Storage, code: str, offset: int, size: tuple, stride: tuple) -> None:
        self.storage, self.code, self.offset, self.size, self.stride = storage, code, offset, size, stride


class _Rebuild(_Inert):
    """Stand-in for torch._utils._rebuild_*: checks its arguments and returns a _Tensor record."""
    __slots__ = ("fn",)

    def __init__(self, fn: str) -> None:
        self.fn = fn

    def __call__(self, *args: object) -> _Tensor:
        fn, n = self.fn, len(args)
        arity, hooks, dtype, meta = _REBUILDS[fn]
        if n not in arity:
            raise CheckpointError(f"{fn} called with {n} arguments, expected {' or '.join(map(str, arity))}")
        if hooks is not None and (not isinstance(args[hooks], dict) or args[hooks]):
            raise CheckpointError(f"{fn}: a tensor carries backward hooks; a weights file never does")
        if meta is not None and meta < n and args[meta]:
            raise CheckpointError(f"{fn}: tensor metadata {args[meta]!r:.80} (conj/neg bits) is unsupported")
        if fn.startswith("_rebuild_parameter"):
            if not isinstance(args[0], _Tensor):
                raise CheckpointError(f"{fn} got a {type(args[0]).__name__} where a tensor belongs")
            return args[0]
        storage, offset, size, stride = args[:4]
        if not isinstance(storage, _Storage):
            raise CheckpointError(f"{fn} got a {type(storage).__name__} where a storage belongs")
        if not (_uint(offset) and _uints(size, (tuple, list)) and _uints(stride, (tuple, list))
                and len(size) == len(stride)):
            raise CheckpointError(f"{fn}: offset {offset!r:.40}, size {size!r:.80}, stride {stride!r:.80} "
                                  f"are not a valid view")
        code = storage.code
        if dtype is not None:
            if not isinstance(args[dtype], _DType) or args[dtype].untyped:
                raise CheckpointError(f"{fn} got a {type(args[dtype]).__name__} where a torch dtype belongs")
            code = args[dtype].code
            if not storage.untyped and storage.code != code:
                raise CheckpointError(f"{fn}: a storage of {storage.code} read as {code}")
        elif storage.untyped:
            raise CheckpointError(f"{fn} got an untyped storage without a dtype")
        return _Tensor(storage, code, offset, tuple(size), tuple(stride))


class _TensorUnpickler(pickle.Unpickler):
    """pickle.Unpickler whose globals are inert stand-ins; everything else raises UnsafePickle."""

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> object:
        if module == "torch._utils" and name in _REBUILDS:
            return _Rebuild(name)
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch" and name in _STORAGES:
            return _DType(_STORAGES[name], untyped=False)
        if module in ("torch", "torch.storage") and name == "UntypedStorage":
            return _DType("u1", untyped=True)
        if module == "torch" and name in _DTYPES:
            return _DType(_DTYPES[name])
        if module == "torch" and _UNSUPPORTED.fullmatch(name):
            raise CheckpointError(f"unsupported dtype torch.{name}; supported: {', '.join(_DTYPES)}")
        raise UnsafePickle(f"the pickle asks for global {module}.{name}, which is outside the tensor "
                           f"allow-list; refused before running anything")

    def persistent_load(self, pid: object) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(f"unexpected persistent id {pid!r:.80}; expected ('storage', …)")
        _, stype, key, _location, numel = pid
        if not (isinstance(stype, _DType) and isinstance(key, str) and re.fullmatch(r"\w+", key)
                and _uint(numel)):
            raise CheckpointError(f"malformed storage reference {pid!r:.120}")
        known = self.storages.setdefault(key, _Storage(key, stype.code, numel, stype.untyped))
        if (known.code, known.numel, known.untyped) != (stype.code, numel, stype.untyped):
            raise CheckpointError(f"storage {key!r} is described two different ways")
        return known


def _read_torch_zip(path: Path) -> dict[str, np.ndarray]:
    try:
        with zipfile.ZipFile(path) as zf:
            return _materialize(zf, path, *_unpickle_state(zf, path))
    except zipfile.BadZipFile as e:
        raise CheckpointError(f"{path} is not a readable zip archive (truncated or corrupt: {e}); "
                              f"torch's pre-1.6 non-zip format is not supported either") from None
    except (OSError, EOFError, ValueError) as e:  # zlib/zipfile errors on a damaged entry
        raise CheckpointError(f"{path} cannot be read: {e}") from None


def _unpickle_state(zf: zipfile.ZipFile, path: Path) -> tuple[dict[str, _Tensor], str, bool]:
    """Check and load data.pkl: ({name: _Tensor}, the entry prefix, big-endian?). Reads no tensor data."""
    pkls = [n for n in zf.namelist() if re.fullmatch(r"[^/]+/data\.pkl", n)]
    if len(pkls) != 1:
        raise CheckpointError(f"{path} is a zip but not torch's layout: expected one <name>/data.pkl, "
                              f"found {len(pkls)}")
    prefix = pkls[0][: -len("/data.pkl")]
    if zf.getinfo(pkls[0]).file_size > _MAX_PICKLE:
        raise CheckpointError(f"{path}: {pkls[0]} is larger than {_MAX_PICKLE} bytes")
    order = "little"  # torch before 1.10 wrote no byteorder entry, and only little-endian
    if f"{prefix}/byteorder" in zf.namelist():
        order = zf.read(f"{prefix}/byteorder").decode("ascii", "replace").strip()
    if order not in ("little", "big"):
        raise CheckpointError(f"{path}: byteorder entry says {order!r:.40}, not little or big")
    try:
        state = _TensorUnpickler(zf.read(pkls[0])).load()
    except UnsafePickle as e:
        raise UnsafePickle(f"{path}: {e}") from None
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    except Exception as e:  # a malformed pickle: wrong opcodes, bad arguments, truncated stream
        raise CheckpointError(f"{path}: {pkls[0]} is not a valid state-dict pickle "
                              f"({type(e).__name__}: {e})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a pickled {type(state).__name__}, not a state dict")
    for k, v in state.items():
        if not isinstance(k, str) or not isinstance(v, _Tensor):
            raise CheckpointError(f"{path}: state dict entry {k!r:.80} is a {type(v).__name__}, "
                                  f"not a tensor")
    return state, prefix, order == "big"


def _materialize(zf: zipfile.ZipFile, path: Path, refs: dict[str, _Tensor], prefix: str,
                 big: bool) -> dict[str, np.ndarray]:
    """Read each storage entry once and cut every tensor out of it (copied unless it is the whole
    storage and nothing else shares it). Returns C-contiguous native-endian arrays."""
    users = Counter(t.storage.key for t in refs.values())
    buffers: dict[str, bytearray] = {}
    out: dict[str, np.ndarray] = {}
    for name, t in refs.items():
        s = t.storage
        nbytes = s.numel * (1 if s.untyped else _itemsize(s.code))
        if s.key not in buffers:
            buffers[s.key] = _read_entry(zf, path, f"{prefix}/data/{s.key}", nbytes)
        isz = _itemsize(t.code)
        dt = np.dtype("<u2" if t.code == BF16 else t.code).newbyteorder(">" if big else "<")
        count = nbytes // isz
        last = t.offset + sum((n - 1) * st for n, st in zip(t.size, t.stride)) if 0 not in t.size else -1
        if last >= count or math.prod(t.size) > count:  # the latter: a stride-0 view (never in weights)
            raise CheckpointError(f"{path}: tensor {name!r} (offset {t.offset}, size {t.size}, stride "
                                  f"{t.stride}) does not fit its storage of {count} elements")
        if 0 in t.size:
            arr = np.zeros(t.size, dtype=dt.newbyteorder("="))
        else:
            arr = np.ndarray(t.size, dtype=dt, buffer=buffers[s.key], offset=t.offset * isz,
                             strides=tuple(st * isz for st in t.stride))
            whole = arr.flags.c_contiguous and t.offset == 0 and arr.size == count
            if not whole or users[s.key] > 1 or big:
                arr = np.ascontiguousarray(arr.astype(dt.newbyteorder("="), copy=True))
        out[name] = _bf16_to_f32(arr) if t.code == BF16 else arr
    return out


def _read_entry(zf: zipfile.ZipFile, path: Path, entry: str, nbytes: int) -> bytearray:
    try:
        info = zf.getinfo(entry)
    except KeyError:
        raise CheckpointError(f"{path}: storage entry {entry} is missing from the zip") from None
    if info.file_size != nbytes:
        raise CheckpointError(f"{path}: storage entry {entry} holds {info.file_size} bytes, the pickle "
                              f"says {nbytes}")
    buf = bytearray(nbytes)
    with zf.open(info) as fh:  # ZipExtFile reads until full or EOF, and checks the CRC at EOF
        got = fh.readinto(buf)
    if got != nbytes:
        raise CheckpointError(f"{path}: storage entry {entry} ends after {got} of {nbytes} bytes")
    return buf
