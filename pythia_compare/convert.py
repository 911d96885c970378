"""Convert a Hugging Face GPT-NeoX checkpoint (config.json, weights, tokenizer.json) to a GGUF file.

Owns the mapping from the checkpoint to llama.cpp's "gptneox" architecture: hyper-parameter keys,
tensor names and layouts, the tokenizer.ggml.* vocabulary, and writing the file with gguf's GGUFWriter
atomically (a temporary file beside the target, renamed at the end). Reading checkpoint files is
checkpoint.py's job; quantizing beyond F32/F16/BF16 is quantize.py's; where files live is cache.py's.
Never imports torch or llama_cpp and never touches the network.

Facts from llama.cpp (src/models/gptneox.cpp, src/llama-vocab.cpp) that this module relies on:
- the fused QKV weight is read as [Q; K; V] blocks, while Hugging Face interleaves per head
  (head 0's q, k, v, head 1's q, k, v, ...), so rows are regrouped;
- rope.dimension_count = int(rotary_pct * head_dim) rotates the first dimensions of each head, NeoX style;
- tokenizer.ggml.pre "mpt" selects the GPT-2 regex (the one GPT-NeoX's ByteLevel pre-tokenizer uses);
  an absent pre name silently selects another regex;
- USER_DEFINED tokens are split out of the text before pre-tokenization whether or not special tokens
  are parsed (as HF does for non-special added tokens); CONTROL tokens only when parse_special is on;
  both are matched by their raw text, so added tokens are stored un-byte-encoded;
- the token list must hold no duplicate strings (llama.cpp aborts the process on one).
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

from .checkpoint import read_config, read_tensors, read_tokenizer_json
from .errors import CheckpointError, DiskFull, NotYetSupported, SpecError

CONVERTER_VERSION = "1"
ARCH = "gptneox"
PRE_TOKENIZER = "mpt"  # llama.cpp's name for GPT-NeoX-20B's byte-level pre-tokenizer (GPT-2 regex)
OUT_TYPES = {
    "F32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
    "F16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "BF16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
}
# Buffers some checkpoints store that are not weights (causal mask, rotary frequencies): skipped.
_BUFFER_SUFFIXES = (".attention.bias", ".attention.masked_bias", ".rotary_emb.inv_freq")
_GELU_ACTS = {"gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "gelu_python"}
_SPECIAL_BOS = ("<|endoftext|>", "<s>", "<bos>")
_SPECIAL_EOS = ("<|endoftext|>", "</s>", "<eos>")


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
class Vocab:
    tokens: list[str]  # id order, padded to n_vocab
    types: list[int]  # gguf.TokenType per token
    merges: list[str]  # "a b"
    bos_id: int | None
    eos_id: int | None
    add_bos: bool
    add_eos: bool


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
    required = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")
    missing = [k for k in required if not _is_pos_int(cfg.get(k))]
    if missing:
        raise CheckpointError(f"{where} lacks or has a non-positive-integer {', '.join(missing)}; a GPT-NeoX "
                              f"config needs all of {', '.join(required)}")
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
    return _is_id(v) and v > 0


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


# ----------------------------------------------------------------------------- vocabulary

def read_vocab(tok: dict, cfg: dict, ckpt_dir: Path | str = "") -> Vocab:
    """tokenizer.json (parsed) -> the token list, types, merges and special ids llama.cpp needs.

    Tokens are in id order and padded to config vocab_size with "[PAD{id}]" (type UNUSED). Added tokens
    are CONTROL when special, USER_DEFINED otherwise, and keep their raw text. Raises CheckpointError
    or NotYetSupported for tokenizers whose behaviour llama.cpp's "mpt" BPE would not reproduce.
    """
    where = Path(ckpt_dir) / "tokenizer.json"
    _check_pipeline(tok, where)
    model = tok["model"]
    n_vocab = int(cfg["vocab_size"])
    by_id: dict[int, str] = {}
    types: dict[int, int] = {}
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or not vocab:
        raise CheckpointError(f"{where}: model.vocab is missing or empty")
    for text, i in vocab.items():
        if not _is_id(i):
            raise CheckpointError(f"{where}: token {text!r} has id {i!r}, not a non-negative integer")
        by_id[i] = text
        types[i] = gguf.TokenType.NORMAL
    for added in tok.get("added_tokens") or []:
        i, text = added.get("id"), added.get("content")
        if not _is_id(i) or not isinstance(text, str) or not text:
            raise CheckpointError(f"{where}: added token {added!r} lacks a usable id or content")
        if added.get("lstrip") or added.get("rstrip") or added.get("single_word"):
            raise NotYetSupported(f"{where}: added token {text!r} uses lstrip/rstrip/single_word, which "
                                  f"llama.cpp's tokenizer would not reproduce")
        by_id[i] = text
        types[i] = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
    top = max(by_id)
    if top >= n_vocab:
        raise CheckpointError(f"{where} has token id {top}, but config.json vocab_size is {n_vocab}; the "
                              f"tokenizer does not belong to this model")
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(n_vocab)]
    ttypes = [int(types.get(i, gguf.TokenType.UNUSED)) for i in range(n_vocab)]
    seen: dict[str, int] = {}
    for i, t in enumerate(tokens):
        if t in seen:
            raise CheckpointError(f"{where}: ids {seen[t]} and {i} are both {t!r}; llama.cpp needs unique tokens")
        seen[t] = i
    merges = [_merge_text(m, where) for m in model.get("merges") or []]
    if not merges:
        raise CheckpointError(f"{where}: model.merges is empty; a BPE tokenizer needs its merges")
    specials = {a["content"]: a["id"] for a in tok.get("added_tokens") or [] if a.get("special")}
    bos = _special_id(cfg.get("bos_token_id"), specials, _SPECIAL_BOS, n_vocab)
    eos = _special_id(cfg.get("eos_token_id"), specials, _SPECIAL_EOS, n_vocab)
    add_bos, add_eos = _post_processor_adds(tok.get("post_processor"), bos, eos)
    return Vocab(tokens=tokens, types=ttypes, merges=merges, bos_id=bos, eos_id=eos, add_bos=add_bos,
                 add_eos=add_eos)


def _is_id(i) -> bool:
    return isinstance(i, int) and not isinstance(i, bool) and i >= 0


def _check_pipeline(tok: dict, where: Path) -> None:
    """Refuse tokenizers whose normalizer, pre-tokenizer or BPE options differ from GPT-NeoX's."""
    model = tok["model"]
    odd = [k for k in ("continuing_subword_prefix", "end_of_word_suffix", "dropout", "byte_fallback",
                       "ignore_merges") if model.get(k)]
    if odd:
        raise NotYetSupported(f"{where}: BPE option(s) {', '.join(odd)} are set; GPT-NeoX's tokenizer uses none")
    norm_types = [n.get("type") for n in _flatten(tok.get("normalizer"))]
    if any(t != "NFC" for t in norm_types):
        raise NotYetSupported(f"{where}: normalizer {norm_types} is not GPT-NeoX's (NFC or none)")
    pre = _flatten(tok.get("pre_tokenizer"), "pretokenizers")
    byte_level = [p for p in pre if p.get("type") == "ByteLevel"]
    if len(pre) != 1 or len(byte_level) != 1 or not byte_level[0].get("use_regex", True) \
            or byte_level[0].get("add_prefix_space", False):
        raise NotYetSupported(f"{where}: pre-tokenizer {[p.get('type') for p in pre]} is not GPT-NeoX's ByteLevel "
                              f"(use_regex, no prefix space), so llama.cpp's '{PRE_TOKENIZER}' regex would split "
                              f"text differently")


def _flatten(node, key: str = "normalizers") -> list[dict]:
    if not node:
        return []
    if not isinstance(node, dict):
        return [{"type": type(node).__name__}]
    if node.get("type") == "Sequence":
        return [x for child in node.get(key) or [] for x in _flatten(child, key)]
    return [node]


def _merge_text(m, where: Path) -> str:
    parts = m.split(" ") if isinstance(m, str) else m if isinstance(m, list) else []
    if len(parts) != 2 or not all(isinstance(p, str) and p and " " not in p for p in parts):
        raise CheckpointError(f"{where}: merge {m!r} is not a pair of space-free symbols")
    return f"{parts[0]} {parts[1]}"


def _special_id(from_cfg, specials: dict[str, int], names: tuple[str, ...], n_vocab: int) -> int | None:
    if isinstance(from_cfg, list) and from_cfg:
        from_cfg = from_cfg[0]
    if _is_id(from_cfg) and from_cfg < n_vocab:
        return int(from_cfg)
    return next((specials[n] for n in names if n in specials), None)


def _post_processor_adds(proc: dict | None, bos: int | None, eos: int | None) -> tuple[bool, bool]:
    """(add_bos, add_eos) as HF's post-processor applies them to a single sequence."""
    add_bos = add_eos = False
    for node in _flatten(proc, "processors"):
        kind = node.get("type")
        if kind in ("RobertaProcessing", "BertProcessing"):
            add_bos = add_eos = True
        elif kind == "TemplateProcessing":
            single = [x for x in node.get("single") or [] if isinstance(x, dict)]
            specials = node.get("special_tokens") or {}

            def special_id(item: dict) -> int | None:
                name = (item.get("SpecialToken") or {}).get("id")
                ids = (specials.get(name) or {}).get("ids") or [None]
                return ids[0] if name is not None else None
            if single and bos is not None and special_id(single[0]) == bos:
                add_bos = True
            if single and eos is not None and special_id(single[-1]) == eos:
                add_eos = True
    return add_bos, add_eos


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
