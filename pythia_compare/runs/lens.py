"""The logit lens: the residual stream after each layer decoded into next-token distributions, pure numpy.

Owns reading a GPT-NeoX GGUF's head (the final LayerNorm's `output_norm.weight` / `.bias`, its eps from
`gptneox.attention.layer_norm_epsilon`, and the untied unembedding `output.weight`, dequantized with the gguf
package for any quant type and streamed in blocks of rows from the memory-mapped file, never whole as float32; the
header is read in one pass that skips the vocabulary arrays), the decoding (LayerNorm, the activations rounded as
ggml rounds them, unembedding, log-softmax), the per-layer statistics a run stores (top-k with probabilities, the
KL of a variant's lens from the baseline's, the rank of the baseline's final top-1), and the self-check of the
last layer's lens against the model's own logits. Never runs a model (models/lenscapture.py reads the residual
stream out of llama.cpp), never writes the run, never draws.

The self-check (docs/metrics.md, "Logit lens"): the lens of the last layer is the model's own computation, redone
here on the dequantized weights with the activations rounded to the type ggml's CPU dot product converts them to.
For an F32 or F16 unembedding it must agree to max |Δlogit| ≤ 1e-3 · max |logit|; for any other type the top-k
must be the same and the KL of the lens from the model's distribution below 1e-4 (measured: 2e-7 … 6e-7 and
1e-11 for every supported type).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelFileError

EXACT_TYPES = ("F32", "F16")  # unembedding types checked by max |Δlogit|; others by top-k and KL
REL_LOGIT_TOL = 1e-3
KL_TOL = 1e-4
BLOCK_BYTES = 16 * 1024 * 1024  # dequantized float32 rows of the unembedding held at once


@dataclass
class Head:
    """A GGUF's final LayerNorm and unembedding, ready to decode residual states (n, n_embd) into logits."""
    path: Path
    eps: float
    norm_weight: np.ndarray  # (n_embd,) float32
    norm_bias: np.ndarray  # (n_embd,) float32
    out_type: str  # the unembedding's ggml type name (F32, F16, Q6_K, …)
    n_vocab: int
    n_embd: int
    _data: np.ndarray  # output.weight as stored (memory-mapped): (n_vocab, n_embd) or (n_vocab, bytes per row)
    _qtype: object

    def normed(self, states: np.ndarray) -> np.ndarray:
        """The final LayerNorm of rows of the residual stream, float64."""
        x = np.asarray(states, dtype=np.float64)
        mu = x.mean(axis=-1, keepdims=True)
        var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
        return (x - mu) / np.sqrt(var + self.eps) * self.norm_weight + self.norm_bias

    def unembed(self, normed: np.ndarray) -> np.ndarray:
        """normed (n, n_embd) @ output.weightᵀ -> logits (n, n_vocab) float32, the weight dequantized in row blocks
        and the activations rounded as ggml's CPU dot product rounds them for this weight type (activation_rounding)."""
        from gguf.quants import dequantize

        x = round_activations(np.asarray(normed, dtype=np.float32).reshape(-1, self.n_embd), self.out_type)
        out = np.empty((x.shape[0], self.n_vocab), dtype=np.float32)
        rows = max(1, BLOCK_BYTES // (4 * self.n_embd))
        for lo in range(0, self.n_vocab, rows):
            hi = min(self.n_vocab, lo + rows)
            w = dequantize(np.asarray(self._data[lo:hi]), self._qtype).reshape(hi - lo, self.n_embd)
            np.matmul(x, w.astype(np.float32, copy=False).T, out=out[:, lo:hi])
        return out

    def logits(self, states: np.ndarray) -> np.ndarray:
        """Residual states (..., n_embd) -> lens logits (..., n_vocab) float32."""
        states = np.asarray(states)
        flat = self.unembed(self.normed(states.reshape(-1, self.n_embd)))
        return flat.reshape(*states.shape[:-1], self.n_vocab)


# The type ggml's CPU backend converts the activations to before a dot product with weights of each type
# (vec_dot_type in ggml-cpu): the lens rounds the same way, so its last layer is the model's own arithmetic.
_Q8_0_WEIGHTS = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "IQ4_NL")


def activation_rounding(out_type: str) -> str:
    """How ggml rounds the activations multiplied with an unembedding of `out_type`: "none" (F32), "f16", "bf16",
    "q8_0" (blocks of 32, an F16 scale) or "q8_k" (blocks of 256, an F32 scale: the K- and IQ-quants)."""
    if out_type == "F32":
        return "none"
    if out_type in ("F16", "BF16"):
        return out_type.lower()
    return "q8_0" if out_type in _Q8_0_WEIGHTS else "q8_k"


def round_activations(x: np.ndarray, out_type: str) -> np.ndarray:
    """Rows of float32 activations as ggml's CPU backend rounds them for a dot product with `out_type` weights."""
    how = activation_rounding(out_type)
    x = np.asarray(x, dtype=np.float32)
    if how == "none":
        return x
    if how == "f16":
        return x.astype(np.float16).astype(np.float32)
    if how == "bf16":  # round to nearest even on the top 16 bits
        u = x.view(np.uint32).astype(np.uint64)
        u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
        return u.astype(np.uint32).view(np.float32)
    block = 32 if how == "q8_0" else 256
    n = x.shape[-1]
    if n % block:
        return x
    b = x.reshape(-1, n // block, block)
    if how == "q8_0":  # d = amax / 127 stored as F16; q = round(x / d)
        d = np.abs(b).max(axis=-1, keepdims=True) / 127.0
        inv = np.where(d > 0, 1.0 / np.where(d > 0, d, 1), 0.0).astype(np.float32)
        q = np.rint(b * inv)
        out = q * d.astype(np.float16).astype(np.float32)
    else:  # Q8_K: the signed value of largest magnitude maps to -127; d = 1 / iscale in F32
        idx = np.abs(b).argmax(axis=-1)[..., None]
        mx = np.take_along_axis(b, idx, axis=-1)
        iscale = np.where(mx != 0, np.float32(-127.0) / np.where(mx != 0, mx, 1), 0).astype(np.float32)
        q = np.minimum(np.rint(iscale * b), 127)
        out = q * np.where(iscale != 0, np.float32(1.0) / np.where(iscale != 0, iscale, 1), 0).astype(np.float32)
    return out.reshape(x.shape).astype(np.float32)


def read_head(path: str | Path) -> Head:
    """The head of a GPT-NeoX GGUF, or ModelFileError naming the file and what is wrong: another architecture, a
    missing or misshapen output_norm.weight / output_norm.bias / output.weight, a missing eps."""
    path = Path(path)
    try:
        kv, tensors, data_start = _read_layout(path)
    except (OSError, ValueError, struct.error) as e:
        raise ModelFileError(f"the logit lens cannot read {path.name!r} as GGUF ({e}); re-download or re-convert "
                             f"it") from None
    arch = kv.get("general.architecture")
    if arch != "gptneox":
        raise ModelFileError(f"the logit lens reads GPT-NeoX models only; {path.name!r} is {arch or 'of no stated'} "
                             f"architecture (general.architecture); compare without --lens")
    eps = kv.get("gptneox.attention.layer_norm_epsilon")
    n_embd = kv.get("gptneox.embedding_length")
    if not isinstance(eps, float) or not isinstance(n_embd, int) or isinstance(n_embd, bool):
        raise ModelFileError(f"{path.name!r} lacks gptneox.attention.layer_norm_epsilon or gptneox.embedding_length, "
                             f"which the logit lens needs; re-convert it")
    for name in ("output_norm.weight", "output_norm.bias", "output.weight"):
        if name not in tensors:
            raise ModelFileError(f"{path.name!r} has no {name} tensor, which the logit lens needs (the final "
                                 f"LayerNorm and the untied unembedding); compare without --lens")
    from gguf import GGMLQuantizationType
    from gguf.quants import quant_shape_to_byte_shape

    def mapped(name: str, dtype, shape):
        dims, _, offset = tensors[name]
        return np.memmap(path, dtype=dtype, mode="r", offset=data_start + offset, shape=shape)

    norm = {}
    for name in ("output_norm.weight", "output_norm.bias"):
        dims, ttype, _ = tensors[name]
        tname = _type_name(ttype)
        if dims != [n_embd] or tname not in ("F32", "F16"):
            raise ModelFileError(f"{path.name!r}: {name} is {tname} of shape {dims}; the logit lens needs F32 or F16 "
                                 f"of [{n_embd}] (the embedding length)")
        norm[name] = np.asarray(mapped(name, np.float32 if tname == "F32" else np.float16, (n_embd,)), np.float32)
    dims, ttype, _ = tensors["output.weight"]  # gguf's order: [n_embd, n_vocab]
    if len(dims) != 2 or dims[0] != n_embd or dims[1] < 2:
        raise ModelFileError(f"{path.name!r}: output.weight has shape {dims}; the logit lens needs "
                             f"[{n_embd}, n_vocab] (the embedding length by the vocabulary)")
    try:
        qtype = GGMLQuantizationType(ttype)
        shape = quant_shape_to_byte_shape((dims[1], n_embd), qtype) if qtype.name not in ("F32", "F16") else None
    except ValueError as e:
        raise ModelFileError(f"{path.name!r}: output.weight is of a type the logit lens cannot read ({e})") from None
    if shape is None:
        data = mapped("output.weight", np.float32 if qtype.name == "F32" else np.float16, (dims[1], n_embd))
    else:
        data = mapped("output.weight", np.uint8, shape)
    return Head(path=path, eps=float(eps), norm_weight=norm["output_norm.weight"], norm_bias=norm["output_norm.bias"],
                out_type=qtype.name, n_vocab=dims[1], n_embd=n_embd, _data=data, _qtype=qtype)


def _type_name(ttype: int) -> str:
    from gguf import GGMLQuantizationType

    try:
        return GGMLQuantizationType(ttype).name
    except ValueError:
        return f"type {ttype}"


# GGUF v2/v3: magic, version (u32), tensor count and kv count (u64); each kv a key (u64 length + bytes), a value type
# (u32) and the value (strings: u64 length + bytes; arrays: element type u32, count u64, elements); then per tensor
# a name, n_dims (u32), dims (u64 each), type (u32), offset (u64); data starts at the next general.alignment.
_FIXED = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_HEADER_LIMIT = 1 << 26  # items: a damaged header fails fast


def _read_layout(path: Path) -> tuple[dict, dict[str, tuple[list[int], int, int]], int]:
    """(the scalar and string metadata by key, {tensor name: (dims, ggml type, offset)}, where the data starts),
    read with one pass over the header (arrays skipped, not built)."""
    import mmap

    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[:4] != b"GGUF":
            raise ValueError("it does not start with 'GGUF'")
        version, n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
        if version not in (2, 3) or n_tensors > _HEADER_LIMIT or n_kv > _HEADER_LIMIT:
            raise ValueError(f"version {version}, {n_tensors} tensors, {n_kv} keys")
        at = 24

        def string(at: int) -> tuple[str, int]:
            (n,) = struct.unpack_from("<Q", buf, at)
            if n > len(buf):
                raise ValueError("a string runs past the end of the file")
            return bytes(buf[at + 8:at + 8 + n]).decode("utf-8", "replace"), at + 8 + n

        def value(vtype: int, at: int) -> tuple[object, int]:
            if vtype in _FIXED:
                fmt = "<" + _FIXED[vtype]
                return struct.unpack_from(fmt, buf, at)[0], at + struct.calcsize(fmt)
            if vtype == 8:
                return string(at)
            if vtype == 9:
                etype, count = struct.unpack_from("<IQ", buf, at)
                at += 12
                if count > _HEADER_LIMIT:
                    raise ValueError(f"an array of {count} items")
                if etype in _FIXED:
                    return None, at + count * struct.calcsize("<" + _FIXED[etype])
                for _ in range(count):
                    _, at = value(etype, at)
                return None, at
            raise ValueError(f"value type {vtype}")

        kv: dict = {}
        for _ in range(n_kv):
            key, at = string(at)
            (vtype,) = struct.unpack_from("<I", buf, at)
            kv[key], at = value(vtype, at + 4)
        tensors: dict[str, tuple[list[int], int, int]] = {}
        for _ in range(n_tensors):
            name, at = string(at)
            (n_dims,) = struct.unpack_from("<I", buf, at)
            if n_dims > 4:
                raise ValueError(f"tensor {name} has {n_dims} dimensions")
            dims = list(struct.unpack_from(f"<{n_dims}Q", buf, at + 4))
            ttype, offset = struct.unpack_from("<IQ", buf, at + 4 + 8 * n_dims)
            tensors[name] = (dims, ttype, offset)
            at += 4 + 8 * n_dims + 12
        align = kv.get("general.alignment", 32)
        align = align if isinstance(align, int) and align > 0 else 32
        return kv, tensors, -(-at // align) * align


# --------------------------------------------------------------------------------------------- statistics


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities of logits rows (last axis), float64."""
    x = np.asarray(logits, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def top(logprobs: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The k most probable tokens of one row of log-probabilities: [(id, prob)], descending, ties by id."""
    k = max(1, min(int(k), logprobs.shape[-1]))
    idx = np.argpartition(-logprobs, k - 1)[:k]
    idx = idx[np.lexsort((idx, -logprobs[idx]))]
    return [(int(i), float(np.exp(logprobs[i]))) for i in idx]


def kl(ref_logprobs: np.ndarray, logprobs: np.ndarray) -> np.ndarray:
    """KL(reference ‖ variant) in nats over the last axis, ≥ 0."""
    p = np.exp(ref_logprobs)
    return np.maximum((p * (ref_logprobs - logprobs)).sum(axis=-1), 0.0)


def rank(logprobs: np.ndarray, token: int) -> int:
    """The 1-based rank of `token` in one row (1: most probable; ties count in its favour)."""
    return 1 + int((logprobs > logprobs[token]).sum())


@dataclass
class Check:
    """The self-check of one variant's lens: its last layer against the model's own logits."""
    ok: bool
    rule: str  # "logits" (F32/F16: max |Δlogit| ≤ 1e-3·max|logit|) | "top-k and KL" (quantized unembeddings)
    max_dlogit: float  # max |lens − model| over the positions
    max_logit: float  # max |model logit|
    kl: float  # max over positions of KL(model ‖ lens)
    same_top: bool  # the same top-k, in order, at every position
    message: str


def self_check(lens_last: np.ndarray, model_logits: np.ndarray, out_type: str, k: int) -> Check:
    """Compare the last layer's lens logits (n_pos, n_vocab) with the model's (n_pos, n_vocab)."""
    lens_last = np.asarray(lens_last, dtype=np.float64)
    model_logits = np.asarray(model_logits, dtype=np.float64)
    dmax = float(np.abs(lens_last - model_logits).max())
    lmax = float(np.abs(model_logits).max())
    lp_model, lp_lens = log_softmax(model_logits), log_softmax(lens_last)
    kl_max = float(kl(lp_model, lp_lens).max())
    same = all([t for t, _ in top(a, k)] == [t for t, _ in top(b, k)] for a, b in zip(lp_model, lp_lens))
    if out_type in EXACT_TYPES:
        ok = dmax <= REL_LOGIT_TOL * lmax
        rule = "logits"
        msg = (f"last layer vs the model's logits: max |Δlogit| {dmax:.3g} "
               f"{'≤' if ok else '>'} {REL_LOGIT_TOL:g} × max |logit| {lmax:.3g}")
    else:
        ok = same and kl_max < KL_TOL
        rule = "top-k and KL"
        msg = (f"last layer vs the model's logits ({out_type} unembedding): top-{k} "
               f"{'the same' if same else 'differs'}, KL {kl_max:.3g} {'<' if kl_max < KL_TOL else '≥'} {KL_TOL:g}")
    return Check(ok=ok, rule=rule, max_dlogit=dmax, max_logit=lmax, kl=kl_max, same_top=same,
                 message=msg if ok else "self-check failed: " + msg)
