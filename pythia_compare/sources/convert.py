"""Convert a Hugging Face GPT-NeoX checkpoint (config.json, weights, tokenizer.json) to a GGUF file.

Owns the mapping from the checkpoint to llama.cpp's "gptneox" architecture: hyper-parameter keys,
tensor names and layouts, the metadata, and writing the file with gguf's GGUFWriter atomically (a
temporary file beside the target, renamed at the end). Turning tokenizer.json into the tokenizer.ggml.*
vocabulary is vocab.py's job; reading checkpoint files is checkpoint.py's; quantizing beyond
F32/F16/BF16 is quantize.py's; where files live is cache.py's.
Never imports torch or llama_cpp and never touches the network.

Facts from llama.cpp (src/models/gptneox.cpp, src/llama-vocab.cpp) that this module relies on:
- the fused QKV weight is read as [Q; K; V] blocks, while Hugging Face interleaves per head
  (head 0's q, k, v, head 1's q, k, v, ...), so rows are regrouped;
- rope.dimension_count = int(rotary_pct * head_dim) rotates the first dimensions of each head, NeoX style;
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import gguf

from .checkpoint import REQUIRED_CONFIG_KEYS, read_config, read_tensors, read_tokenizer_json
from ..errors import CheckpointError, DiskFull, NotYetSupported, SpecError
from .vocab import PRE_TOKENIZER, Vocab, read_vocab

CONVERTER_VERSION = "1"
ARCH = "gptneox"
OUT_TYPES = {
    "F32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
    "F16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "BF16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
}
# Buffers some checkpoints store that are not weights (causal mask, rotary frequencies): skipped.
_BUFFER_SUFFIXES = (".attention.bias", ".attention.masked_bias", ".rotary_emb.inv_freq")
_GELU_ACTS = {"gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "gelu_python"}


@dataclass(frozen=True)
class HParams:
    n_embd: int
    n_layer: int
    n_head: int
    n_ff: int
    n_vocab: int
    n_ctx: int
    n_rot: int
    rope_theta: float
    parallel_residual: bool
    norm_eps: float
    attention_bias: bool
    tied_embeddings: bool


@dataclass(frozen=True)
class _Planned:
    name: str  # GGUF tensor name
    make: Callable[[], np.ndarray]  # builds the array to write (float32/float16, or uint8 bytes for BF16)
    shape: tuple[int, ...]  # numpy shape as written (bytes shape for BF16)
    dtype: np.dtype
    raw: gguf.GGMLQuantizationType
    nbytes: int


def convert_checkpoint(ckpt_dir: Path, out_path: Path, out_type: str = "F16", *, name: str | None = None) -> Path:
    """Convert the checkpoint in `ckpt_dir` to a GGUF of `out_type` (F32, F16 or BF16) at `out_path`.

    Matrices are written in out_type; norms and biases in F32. Atomic: nothing stands at out_path
    until the file is complete, and no temporary file survives an error. Raises SpecError for another
    out_type, CheckpointError / NotYetSupported for checkpoints this cannot convert faithfully, DiskFull
    when the disk fills (nothing is left behind). `name` goes to general.name (default: config.json's
    _name_or_path, else the directory's name). Returns out_path.
    """
    kind = str(out_type).upper()
    if kind not in OUT_TYPES:
        raise SpecError(f"cannot convert to {out_type!r}: the converter writes {', '.join(OUT_TYPES)}; "
                        f"other quants are made from the F16 file by llama.cpp's quantizer")
    ckpt_dir, out_path = Path(ckpt_dir), Path(out_path)
    cfg = read_config(ckpt_dir)
    hp = hparams(cfg, ckpt_dir)
    vocab = read_vocab(read_tokenizer_json(ckpt_dir), cfg, ckpt_dir)
    plan = _plan_tensors(read_tensors(ckpt_dir), hp, kind, ckpt_dir)
    need = sum(p.nbytes + 64 for p in plan) + sum(len(t.encode()) + 16 for t in vocab.tokens + vocab.merges) + 65536
    out_path.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out_path.parent).free
    if free < need:
        raise _disk_full(need, out_path, free)
    tmp: Path | None = None
    writer = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".part", dir=out_path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        writer = gguf.GGUFWriter(tmp, ARCH)
        name = str(name or cfg.get("_name_or_path") or ckpt_dir.resolve().name)
        _add_metadata(writer, hp, vocab, OUT_TYPES[kind][1], name)
        for p in plan:
            writer.add_tensor_info(p.name, p.shape, p.dtype, p.nbytes, raw_dtype=p.raw)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for p in plan:
            arr = p.make()
            if arr.nbytes != p.nbytes:  # a bug here, not the user's input
                raise RuntimeError(f"tensor {p.name} came out {arr.nbytes} bytes, planned {p.nbytes}")
            writer.write_tensor_data(arr)
        writer.close()
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a model file is as readable as the checkpoint
        os.replace(tmp, out_path)
        return out_path
    except OSError as e:
        # numpy's tofile reports a short write as OSError("N requested and M written") with no errno
        short_write = e.errno is None and "requested and" in str(e)
        if e.errno in (errno.ENOSPC, errno.EDQUOT) or short_write:
            raise _disk_full(need, out_path, None) from None
        raise
    finally:
        if writer is not None:
            writer.close()
        if tmp is not None and tmp.exists():
            tmp.unlink()


def _disk_full(need: int, out_path: Path, free: int | None) -> DiskFull:
    have = f", but only {free / 1e6:.1f} MB is free" if free is not None else " and the disk filled up"
    return DiskFull(f"converting to {out_path.name} needs about {need / 1e6:.1f} MB ({need} bytes) in "
                    f"{out_path.parent}{have}; nothing was written. Free some space or prune the cache "
                    f"(`python -m pythia_compare cache prune`)")


# ----------------------------------------------------------------------------- hyper-parameters

def hparams(cfg: dict, ckpt_dir: Path | str = "") -> HParams:
    """GPT-NeoX hyper-parameters from a config.json dict, with transformers' defaults for optional keys.

    Reads rotary_pct, partial_rotary_factor or rope_parameters.partial_rotary_factor (transformers 5),
    and rotary_emb_base, rope_theta or rope_parameters.rope_theta; rope_parameters wins, as in transformers.
    """
    where = Path(ckpt_dir) / "config.json"
    missing = [k for k in REQUIRED_CONFIG_KEYS if not _is_pos_int(cfg.get(k))]
    if missing:
        raise CheckpointError(f"{where} lacks or has a non-positive-integer {', '.join(missing)}; a GPT-NeoX "
                              f"config needs all of {', '.join(REQUIRED_CONFIG_KEYS)}")
    model_type = cfg.get("model_type")
    archs = cfg.get("architectures") or []
    if model_type not in (None, "gpt_neox") or (archs and "GPTNeoXForCausalLM" not in archs):
        raise NotYetSupported(f"{where} describes model_type {model_type!r} / architectures {archs}; only "
                              f"GPT-NeoX checkpoints (GPTNeoXForCausalLM, e.g. Pythia) can be converted")
    act = cfg.get("hidden_act", "gelu")
    if act not in _GELU_ACTS:
        raise NotYetSupported(f"{where} has hidden_act {act!r}; llama.cpp's gptneox uses GELU, so only "
                              f"{', '.join(sorted(_GELU_ACTS))} convert faithfully")
    n_embd, n_head = cfg["hidden_size"], cfg["num_attention_heads"]
    if n_embd % n_head:
        raise CheckpointError(f"{where}: hidden_size {n_embd} is not a multiple of num_attention_heads {n_head}")
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if not isinstance(rope, dict):
        raise CheckpointError(f"{where}: rope_parameters must be an object, not {type(rope).__name__}")
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in (None, "default"):
        raise NotYetSupported(f"{where} uses rope_type {rope_type!r}; only plain RoPE (rope_type 'default') "
                              f"converts to llama.cpp's gptneox here")
    pct = next(v for v in (rope.get("partial_rotary_factor"), cfg.get("partial_rotary_factor"),
                           cfg.get("rotary_pct"), 0.25) if v is not None)
    theta = next(v for v in (rope.get("rope_theta"), cfg.get("rope_theta"), cfg.get("rotary_emb_base"), 10000.0)
                 if v is not None)
    for key, val, ok in (("rotary fraction", pct, 0 < _num(pct) <= 1), ("rope theta", theta, _num(theta) > 0)):
        if not ok:
            raise CheckpointError(f"{where}: {key} {val!r} is out of range")
    head_dim = n_embd // n_head
    n_ctx = cfg.get("max_position_embeddings", 2048)
    eps = cfg.get("layer_norm_eps", 1e-5)
    if not _is_pos_int(n_ctx) or not _num(eps) > 0:
        raise CheckpointError(f"{where}: max_position_embeddings {n_ctx!r} and layer_norm_eps {eps!r} must be "
                              f"positive")
    return HParams(n_embd=n_embd, n_layer=cfg["num_hidden_layers"], n_head=n_head, n_ff=cfg["intermediate_size"],
                   n_vocab=cfg["vocab_size"], n_ctx=int(n_ctx), n_rot=int(float(pct) * head_dim),
                   rope_theta=float(theta), parallel_residual=bool(cfg.get("use_parallel_residual", True)),
                   norm_eps=float(eps), attention_bias=bool(cfg.get("attention_bias", True)),
                   tied_embeddings=bool(cfg.get("tie_word_embeddings", False)))


def _num(v) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else float("nan")


def _is_pos_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


# ----------------------------------------------------------------------------- tensors

def _plan_tensors(src: dict[str, np.ndarray], hp: HParams, kind: str, ckpt_dir: Path) -> list[_Planned]:
    """Every GGUF tensor to write, in llama.cpp's order, each with a function that builds its data."""
    weights = {k: v for k, v in src.items() if not k.endswith(_BUFFER_SUFFIXES)}
    used: set[str] = set()
    plan: list[_Planned] = []
    d, f, v = hp.n_embd, hp.n_ff, hp.n_vocab

    def take(name: str, shape: tuple[int, ...], *, optional_zero: bool = False) -> Callable[[], np.ndarray]:
        if name not in weights:
            if optional_zero:
                return lambda: np.zeros(shape, dtype=np.float32)
            raise CheckpointError(f"{ckpt_dir}: the weights lack {name!r} (shape {list(shape)}); is this a "
                                  f"complete GPT-NeoX checkpoint?")
        arr = weights[name]
        if tuple(arr.shape) != shape:
            raise CheckpointError(f"{ckpt_dir}: {name!r} has shape {list(arr.shape)}, but config.json implies "
                                  f"{list(shape)}")
        if arr.dtype.kind != "f":
            raise CheckpointError(f"{ckpt_dir}: {name!r} is {arr.dtype}, not a floating-point weight")
        used.add(name)
        return lambda: arr

    def add(gguf_name: str, get: Callable[[], np.ndarray], shape: tuple[int, ...]) -> None:
        plan.append(_planned(gguf_name, get, shape, kind if len(shape) == 2 else "F32"))

    head = next((n for n in ("embed_out.weight", "lm_head.weight") if n in weights), None)
    embed = take("gpt_neox.embed_in.weight", (v, d))
    add("token_embd.weight", embed, (v, d))
    for i in range(hp.n_layer):
        p, b = f"gpt_neox.layers.{i}.", f"blk.{i}."
        add(b + "attn_norm.weight", take(p + "input_layernorm.weight", (d,)), (d,))
        add(b + "attn_norm.bias", take(p + "input_layernorm.bias", (d,)), (d,))
        qkv_w = take(p + "attention.query_key_value.weight", (3 * d, d))
        qkv_b = take(p + "attention.query_key_value.bias", (3 * d,), optional_zero=not hp.attention_bias)
        add(b + "attn_qkv.weight", _regroup_qkv(qkv_w, hp.n_head), (3 * d, d))
        add(b + "attn_qkv.bias", _regroup_qkv(qkv_b, hp.n_head), (3 * d,))
        add(b + "attn_output.weight", take(p + "attention.dense.weight", (d, d)), (d, d))
        add(b + "attn_output.bias", take(p + "attention.dense.bias", (d,), optional_zero=not hp.attention_bias), (d,))
        add(b + "ffn_norm.weight", take(p + "post_attention_layernorm.weight", (d,)), (d,))
        add(b + "ffn_norm.bias", take(p + "post_attention_layernorm.bias", (d,)), (d,))
        add(b + "ffn_up.weight", take(p + "mlp.dense_h_to_4h.weight", (f, d)), (f, d))
        add(b + "ffn_up.bias", take(p + "mlp.dense_h_to_4h.bias", (f,)), (f,))
        add(b + "ffn_down.weight", take(p + "mlp.dense_4h_to_h.weight", (d, f)), (d, f))
        add(b + "ffn_down.bias", take(p + "mlp.dense_4h_to_h.bias", (d,)), (d,))
    add("output_norm.weight", take("gpt_neox.final_layer_norm.weight", (d,)), (d,))
    add("output_norm.bias", take("gpt_neox.final_layer_norm.bias", (d,)), (d,))
    if head is not None:
        add("output.weight", take(head, (v, d)), (v, d))
    elif hp.tied_embeddings:
        add("output.weight", embed, (v, d))
    else:
        raise CheckpointError(f"{ckpt_dir}: the weights have no output head (embed_out.weight or lm_head.weight) "
                              f"and config.json does not set tie_word_embeddings")
    extra = sorted(set(weights) - used)
    if extra:
        raise CheckpointError(f"{ckpt_dir}: {len(extra)} weight(s) do not belong to a GPT-NeoX model of this "
                              f"config, e.g. {extra[0]!r} (num_hidden_layers is {hp.n_layer})")
    return plan


def _regroup_qkv(get: Callable[[], np.ndarray], n_head: int) -> Callable[[], np.ndarray]:
    """HF's per-head interleave (head, {q,k,v}, head_dim, ...) -> [Q; K; V] blocks (rows of the weight)."""
    def make() -> np.ndarray:
        arr = get()
        rest = arr.shape[1:]
        head_dim = arr.shape[0] // (3 * n_head)
        grouped = arr.reshape((n_head, 3, head_dim) + rest).swapaxes(0, 1)
        return np.ascontiguousarray(grouped.reshape(arr.shape))
    return make


def _planned(name: str, get: Callable[[], np.ndarray], shape: tuple[int, ...], kind: str) -> _Planned:
    raw = OUT_TYPES[kind][0]
    n = int(np.prod(shape))
    if kind == "BF16":
        return _Planned(name, lambda: gguf.quants.quantize(get().astype(np.float32), raw),
                        shape[:-1] + (shape[-1] * 2,), np.dtype(np.uint8), raw, 2 * n)
    dtype = np.dtype(np.float32 if kind == "F32" else np.float16)

    def make() -> np.ndarray:
        src = get()
        out = np.ascontiguousarray(src, dtype=dtype)
        if kind == "F16" and src.dtype != np.float16 and not np.isfinite(out).all() and np.isfinite(src).all():
            raise CheckpointError(f"{name}: a weight overflows float16 (|x| > 65504); convert to F32 or BF16")
        return out
    return _Planned(name, make, shape, dtype, raw, n * dtype.itemsize)


# ----------------------------------------------------------------------------- metadata

def _add_metadata(w: gguf.GGUFWriter, hp: HParams, vocab: Vocab, ftype: int, name: str) -> None:
    w.add_name(name)
    w.add_file_type(int(ftype))
    w.add_context_length(hp.n_ctx)
    w.add_embedding_length(hp.n_embd)
    w.add_block_count(hp.n_layer)
    w.add_feed_forward_length(hp.n_ff)
    w.add_head_count(hp.n_head)
    w.add_rope_dimension_count(hp.n_rot)
    w.add_rope_freq_base(hp.rope_theta)
    w.add_parallel_residual(hp.parallel_residual)
    w.add_layer_norm_eps(hp.norm_eps)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(PRE_TOKENIZER)
    w.add_token_list(vocab.tokens)
    w.add_token_types(vocab.types)
    w.add_token_merges(vocab.merges)
    if vocab.bos_id is not None:
        w.add_bos_token_id(vocab.bos_id)
    if vocab.eos_id is not None:
        w.add_eos_token_id(vocab.eos_id)
    w.add_add_bos_token(vocab.add_bos)
    w.add_add_eos_token(vocab.add_eos)


def write_vocab_gguf(ckpt_dir: Path, out_path: Path) -> Path:
    """Write a vocabulary-only GGUF (the metadata convert_checkpoint writes, no tensors) for a folder holding
    just config.json and tokenizer.json: llama.cpp loads it with vocab_only and tokenizes exactly as it does
    the converted model, so a text's tokens can be counted without any weights (sweep plan). Returns out_path."""
    ckpt_dir, out_path = Path(ckpt_dir), Path(out_path)
    cfg = read_config(ckpt_dir)
    hp = hparams(cfg, ckpt_dir)
    vocab = read_vocab(read_tokenizer_json(ckpt_dir), cfg, ckpt_dir)
    writer = gguf.GGUFWriter(out_path, ARCH)
    try:
        _add_metadata(writer, hp, vocab, OUT_TYPES["F16"][1], str(cfg.get("_name_or_path") or ckpt_dir.name))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
    finally:
        writer.close()
    return out_path
