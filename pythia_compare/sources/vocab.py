"""Read a Hugging Face tokenizer.json into the tokenizer.ggml.* vocabulary llama.cpp's GPT-NeoX BPE needs.

Owns the token list (id order, padded to the model's vocab_size), the token types, the merges, the special
ids and whether BOS/EOS are added, and refusing tokenizers llama.cpp would not reproduce. convert.py writes
the result into the GGUF. Pure: no file reading (checkpoint.py), no writing, no llama_cpp.

Facts from llama.cpp (src/llama-vocab.cpp) that this module relies on:
- tokenizer.ggml.pre "mpt" selects the GPT-2 regex (the one GPT-NeoX's ByteLevel pre-tokenizer uses);
  an absent pre name silently selects another regex;
- USER_DEFINED tokens are split out of the text before pre-tokenization whether or not special tokens
  are parsed (as HF does for non-special added tokens); CONTROL tokens only when parse_special is on;
  both are matched by their raw text, so added tokens are stored un-byte-encoded;
- the token list must hold no duplicate strings (llama.cpp aborts the process on one).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf

from ..errors import CheckpointError, NotYetSupported

PRE_TOKENIZER = "mpt"  # llama.cpp's name for GPT-NeoX-20B's byte-level pre-tokenizer (GPT-2 regex)
_SPECIAL_BOS = ("<|endoftext|>", "<s>", "<bos>")
_SPECIAL_EOS = ("<|endoftext|>", "</s>", "<eos>")


@dataclass(frozen=True)
class Vocab:
    tokens: list[str]  # id order, padded to n_vocab
    types: list[int]  # gguf.TokenType per token
    merges: list[str]  # "a b"
    bos_id: int | None
    eos_id: int | None
    add_bos: bool
    add_eos: bool


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
