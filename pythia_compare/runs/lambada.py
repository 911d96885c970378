"""LAMBADA as lm-evaluation-harness's `lambada_openai` task defines it (docs/metrics.md, "LAMBADA").

Owns: reading and checking a LAMBADA JSONL file (one {"text": ...} per line), the context/target split of the
task's YAML, lm-eval's encoding of a (context, target) pair and its left-truncation to a context window, one
example's log-likelihood and is_greedy from its logits, and the summary figures (acc ± stderr, ppl ± stderr,
agreement with a reference). Also the pins of the Hub dataset (EleutherAI/lambada_openai).

Pure: never reads files or the network (hub.py downloads, the callers read), never evaluates a model (compare.py
feeds the engine), never imports llama_cpp. Tokenization comes in as a function.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..config import DEFAULT_LAMBADA_REPO, DEFAULT_LAMBADA_REVISION
from ..errors import BadInput

# The Hub dataset (docs/metrics.md, "Where the data comes from"): the English test split that lm-eval's
# lambada_openai reads (dataset_path EleutherAI/lambada_openai, dataset_name default, test_split test), as the
# plain JSONL file of the dataset repo's data/ folder, pinned to one commit.
HUB_REPO = DEFAULT_LAMBADA_REPO  # Settings.lambada_repo's default
HUB_REVISION = DEFAULT_LAMBADA_REVISION  # Settings.lambada_revision's default
HUB_FILE = "data/lambada_test_en.jsonl"
HUB_SHA256 = "4aa8d02cd17c719165fc8a7887fddd641f43fcafa4b1c806ca8abc31fabdb226"
HUB_BYTES = 1_819_752
HUB_EXAMPLES = 5153

MAX_FILE_BYTES = 16 * 1024 * 1024  # a LAMBADA file's size limit (the full test split is 1.8 MB)
PUBLIC_MAX_LIMIT = 500  # public mode: at most this many examples per run


FILE_HINT = 'give the path of a JSONL file with one {"text": ...} per line'  # what a missing file's message asks


class LambadaFileError(BadInput):
    """A LAMBADA file (or the examples asked of it) cannot be scored; the message names the line and the fix."""


@dataclass(frozen=True)
class Example:
    line: int  # 1-based line of the file
    text: str
    context: str  # text.split(' ')[:-1] joined with ' '
    target: str  # ' ' + text.split(' ')[-1]


def split(text: str) -> tuple[str, str]:
    """(context, target) exactly as lambada_openai.yaml's doc_to_text / doc_to_target: split on one space."""
    words = text.split(" ")
    return " ".join(words[:-1]), " " + words[-1]


_SHAPE = 'each line must be one JSON object with a "text" string, e.g. {"text": "the words before the last word"}'


def parse(data: bytes | str, name: str = "the LAMBADA file", *, max_bytes: int = MAX_FILE_BYTES) -> list[Example]:
    """The examples of a LAMBADA JSONL file; LambadaFileError names the first bad line and what would work.

    A final newline is fine; a blank line anywhere else is not (the Hub file has none, and a blank line is
    usually a file cut or pasted wrongly)."""
    size = len(data.encode("utf-8") if isinstance(data, str) else data)
    if size > max_bytes:
        raise LambadaFileError(f"{name} is {size:,} bytes; the limit is {max_bytes:,} bytes (the full LAMBADA "
                               f"test split is {HUB_BYTES:,}); give a smaller file")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise LambadaFileError(f"{name} is not UTF-8 text (byte {e.start + 1}); save it as UTF-8 JSONL, "
                                   f"{_SHAPE}") from None
    if data.startswith("\ufeff"):
        data = data[1:]
    lines = data.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline
    if not lines:
        raise LambadaFileError(f"{name} holds no examples; {_SHAPE}")
    out = []
    for i, raw in enumerate(lines, 1):
        line = raw[:-1] if raw.endswith("\r") else raw
        where = f"{name}, line {i}"
        if not line.strip():
            raise LambadaFileError(f"{where} is blank; remove blank lines ({_SHAPE})")
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise LambadaFileError(f"{where} is not JSON ({e.msg} at column {e.colno}); {_SHAPE}") from None
        if not isinstance(obj, dict) or "text" not in obj:
            raise LambadaFileError(f"{where} has no \"text\" key; {_SHAPE}")
        text = obj["text"]
        if not isinstance(text, str):
            raise LambadaFileError(f"{where}: \"text\" must be a string, not {type(text).__name__}; {_SHAPE}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise LambadaFileError(f"{where}: \"text\" holds a lone surrogate, which is not Unicode text") from None
        if text != text.rstrip():
            raise LambadaFileError(f"{where}: the text ends in whitespace, so its last word would be empty; end "
                                   f"each text with the word to predict")
        context, target = split(text)
        if not context.strip():
            raise LambadaFileError(f"{where}: the text has one word ({text[:40]!r}); LAMBADA predicts the last "
                                   f"word from the words before it, separated by spaces")
        out.append(Example(line=i, text=text, context=context, target=target))
    return out


def check_limit(limit, n_examples: int | None, *, public: bool = False) -> int:
    """`--limit` as an int in 1 … n_examples (and the public cap), or LambadaFileError saying what would work.
    With n_examples None (the data not read yet) only the number itself is checked."""
    cap = PUBLIC_MAX_LIMIT if public else None
    tops = [t for t in (n_examples, cap) if t is not None]
    span = f"1 … {min(tops)}" if tops else "a whole number of at least 1"
    why = f" (public mode scores at most {PUBLIC_MAX_LIMIT})" if cap and (n_examples is None or n_examples > cap) else ""
    if isinstance(limit, float) and limit.is_integer():
        limit = int(limit)
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)):
        raise LambadaFileError(f"limit must be a whole number of examples, not {str(limit)[:24]!r}; use {span}{why}")
    if limit < 1:
        raise LambadaFileError(f"limit {limit} is not a number of examples; use {span}{why}")
    if n_examples is not None and limit > n_examples:
        raise LambadaFileError(f"limit {limit} is more than the {n_examples} examples the data holds; use {span}{why}")
    if cap is not None and limit > cap:
        raise LambadaFileError(f"limit {limit}: public mode scores at most {cap} examples per run; use {span}")
    return int(limit)


def encode_pair(tokenize: Callable[[str], list[int]], context: str, target: str) -> tuple[list[int], list[int]]:
    """(context ids, target ids) as lm-eval's causal `_encode_pair`: trailing whitespace of the context moves to
    the target, the whole string is tokenized, and the target's ids are what follows the context's own ids."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, target = context[:-n_spaces], context[-n_spaces:] + target
    whole = tokenize(context + target)
    ctx = tokenize(context)
    return ctx, whole[len(ctx):]


def window(ctx_ids: Sequence[int], cont_ids: Sequence[int], max_length: int) -> tuple[list[int], list[int]]:
    """(tokens to evaluate, positions whose logits predict the target tokens), lm-eval's left truncation:
    the input is (context + target)[-(max_length + 1):][:-1], so at most max_length tokens."""
    if not cont_ids:
        raise LambadaFileError("the target word has no tokens of its own after the context's; it cannot be scored")
    if len(cont_ids) > max_length:
        raise LambadaFileError(f"the target word is {len(cont_ids)} tokens, more than the context of {max_length}; "
                               f"raise --ctx")
    tokens = (list(ctx_ids) + list(cont_ids))[-(max_length + 1):][:-1]
    n = len(tokens)
    return tokens, list(range(n - len(cont_ids), n))


def score(logits: np.ndarray, cont_ids: Sequence[int]) -> tuple[float, bool]:
    """(log-likelihood of the target tokens, is_greedy: every target token is its row's argmax) from the logits
    at window()'s positions, one row per target token."""
    x = np.asarray(logits, dtype=np.float64)
    targets = np.asarray(cont_ids, dtype=np.int64)
    top = x.max(axis=1)
    lse = top + np.log(np.exp(x - top[:, None]).sum(axis=1))
    rows = np.arange(len(targets))
    ll = float((x[rows, targets] - lse).sum())
    greedy = bool((np.asarray(logits).argmax(axis=1) == targets).all())
    return ll, greedy


def _sample_std(x: np.ndarray) -> float:
    return float(np.sqrt(((x - x.mean()) ** 2).sum() / (len(x) - 1)))


BOOTSTRAP_ITERS = 10_000  # resamples of ppl's bootstrap stderr (lm-eval's default is 100,000)
BOOTSTRAP_SEED = 1234


def ppl_stderr(ll: Sequence[float], iters: int = BOOTSTRAP_ITERS, seed: int = BOOTSTRAP_SEED) -> float | None:
    """The bootstrap standard error of ppl = exp(-mean ll), as lm-eval estimates it (`bootstrap_stderr`: the
    sample stddev of the perplexities of `iters` resamples with replacement), with numpy's PCG64 seeded `seed`
    instead of Python's random, so the same examples always give the same value. None below 2 examples."""
    x = np.asarray(ll, dtype=np.float64)
    n = len(x)
    if n < 2:
        return None
    rng = np.random.Generator(np.random.PCG64(seed))
    means = np.empty(iters, dtype=np.float64)
    step = max(1, 2_000_000 // n)  # resamples per block: about 16 MB of indices at a time
    for start in range(0, iters, step):
        k = min(step, iters - start)
        means[start:start + k] = x[rng.integers(0, n, size=(k, n))].mean(axis=1)
    with np.errstate(over="ignore"):
        ppls = np.exp(-means)
    if not np.isfinite(ppls).all():
        return None  # a resample's perplexity overflows a double: no finite stderr
    return float(ppls.std(ddof=1))


def summary(ll: Sequence[float], greedy: Sequence[bool], *, final: bool = True) -> dict:
    """acc ± stderr, ppl ± stderr and n over the examples scored.

    acc = mean is_greedy and its stderr lm-eval's mean_stderr (sample stddev / sqrt(n)); ppl = exp(-mean ll) and
    its stderr the bootstrap of ppl_stderr (lm-eval bootstraps it too). With final=False (a run still going) the
    ppl stderr is left None: it costs a bootstrap. The stderrs are None for fewer than 2 examples."""
    x = np.asarray(ll, dtype=np.float64)
    g = np.asarray(greedy, dtype=np.float64)
    n = int(len(x))
    if n == 0:
        return {"n": 0, "acc": None, "acc_stderr": None, "ppl": None, "ppl_stderr": None}
    try:
        ppl = math.exp(-float(x.mean()))
    except OverflowError:
        ppl = None
    return {"n": n, "acc": float(g.mean()), "acc_stderr": _sample_std(g) / math.sqrt(n) if n > 1 else None,
            "ppl": ppl, "ppl_stderr": ppl_stderr(x) if final and ppl is not None else None}


def agreement(greedy: Sequence[bool], reference: Sequence[bool]) -> float:
    """The share of examples whose is_greedy is the same as the reference's."""
    if len(greedy) != len(reference) or not len(greedy):
        raise ValueError("agreement needs the same, non-zero number of examples on both sides")
    return float(np.mean(np.asarray(greedy, dtype=bool) == np.asarray(reference, dtype=bool)))
