"""One comparison run: variants × one input -> the run JSON of docs/run.md.

Owns validation of a run's inputs, resolving its variants, the scoring-mode rules (prompt / corpus),
the loop that feeds the engine and metrics, and the shape of the result. It yields progress events so
the CLI and the dashboard can show work as it happens. Never writes the run log (store.py does),
never draws (plots.py does) and never parses command lines.

One tokenization per run: the reference (else the first variant) tokenizes the input and every variant is fed
those ids; variants must share one vocabulary (Model.vocab_sha256), which is what makes the ids mean the same.

In corpus mode the reference is evaluated once per chunk and only that chunk's logits are held
(O(ctx × vocab) memory); no logit file is written.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from . import lambada, metrics
from . import lens as lenses
from ..config import Settings, __version__
from ..errors import BudgetError, InputTextError, SpecError, TokenizerMismatch
from ..files import read_bounded
from ..models import lenscapture
from ..params import LIMITS
from .run import (SCHEMA, Entry, Generation, GenToken, Input, KLStats, LambadaData, LambadaScore, Lens, LensCheck,
                  LensLayer, LensPosition, Load, Params, Run, Source, Timings, TokenProb, Versions, read)
from ..sources.policy import check_run, check_work
from ..sources.lineage import mixed_run_warnings
from ..sources.resolver import Resolved, Resolver, demo_steps
from ..threads import in_thread
from ..variants import QUANTS, bits_per_weight, parse_spec, parse_specs

SCHEMA_VERSION = SCHEMA  # the run JSON's version: run.py owns it
SCORING_MODES = ("auto", "prompt", "corpus", "lambada")


@dataclass
class RunParams:
    scoring: str = "auto"  # auto | prompt | corpus
    ctx: int = 512  # context (prompt mode limit) and corpus chunk size
    top_k: int = 10  # next-token alternatives per variant
    max_tokens: int = 32  # tokens to generate (0: none)
    temperature: float = 0.0  # 0 greedy; > 0 sampled with seed
    seed: int = 0
    reference: str | None = None  # spec of the reference variant (KL statistics against it)
    lambada_file: str | Path | None = None  # scoring "lambada": a local LAMBADA JSONL (None: the Hub dataset)
    limit: int | None = None  # scoring "lambada": the first N examples (None: every one)
    lens: bool = False  # the logit lens (prompt runs only): the residual stream after each layer, decoded
    lens_positions: list[int] | None = None  # token indices for the lens (default: the last token); at most 8

    @classmethod
    def from_settings(cls, settings: Settings, **overrides) -> "RunParams":
        base = cls(ctx=settings.ctx, top_k=settings.top_k, max_tokens=settings.max_tokens,
                   temperature=settings.temperature, seed=settings.seed)
        for k, v in overrides.items():
            if v is not None:
                setattr(base, k, v)
        return base


@dataclass
class Event:
    kind: str  # "progress" | "update" | "done"
    message: str = ""
    fraction: float = 0.0  # overall progress 0..1
    run: Run | None = None  # the run so far ("update", from "tokenized" on) or final ("done"); a live object


def _show(value) -> str:
    text = str(value)
    return text if len(text) <= 24 else text[:20] + "…"


def _whole(value, name: str, lo: int, hi: int, hint: str = "") -> int:
    """`value` as an int in lo … hi, or InputTextError naming the field (NaN, ±inf, text and fractions included)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputTextError(f"{name} must be a whole number, not {_show(value)!r}; use {lo} … {hi}{hint}")
    if isinstance(value, (float, np.floating)) and not (math.isfinite(value) and float(value).is_integer()):
        raise InputTextError(f"{name} must be a whole number, not {_show(value)}; use {lo} … {hi}{hint}")
    if not lo <= int(value) <= hi:
        raise InputTextError(f"{name} {_show(int(value))} is out of range; use {lo} … {hi}{hint}")
    return int(value)


def _real(value, name: str, lo: float, hi: float, hint: str = "") -> float:
    """`value` as a float in lo … hi, or InputTextError naming the field (NaN, ±inf and text included)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputTextError(f"{name} must be a number, not {_show(value)!r}; use {lo:g} … {hi:g}{hint}")
    try:
        f = float(value)
    except OverflowError:  # an int too large for a float
        f = math.inf
    if math.isnan(f):
        raise InputTextError(f"{name} must be a number, not NaN; use {lo:g} … {hi:g}{hint}")
    if not math.isfinite(f) or not lo <= f <= hi:
        raise InputTextError(f"{name} {_show(value)} is out of range; use {lo:g} … {hi:g}{hint}")
    return f


def check_unicode(value: str, what: str) -> None:
    """Raise InputTextError if `value` holds a lone surrogate: not Unicode text, it cannot be encoded or stored."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputTextError(f"{what} holds a lone surrogate at character {e.start + 1} (U+{ord(value[e.start]):04X}), "
                             f"which is not Unicode text; remove it, or save the text as UTF-8") from None


def validate_params(params: RunParams, n_specs: int, settings: Settings) -> None:
    """Raise BadInput naming the parameter and what would work; numbers are normalized in place (int, float)."""
    if params.scoring not in SCORING_MODES:
        raise InputTextError(f"scoring {str(params.scoring)[:40]!r} is not a mode; use one of {', '.join(SCORING_MODES)}")
    for lim in LIMITS.values():  # the one table of limits (params.py), which the page and the API read too
        check = _whole if lim.whole else _real
        setattr(params, lim.field, check(getattr(params, lim.field), lim.name, lim.lo, lim.hi, lim.unit))
    if params.reference is not None:
        if not isinstance(params.reference, str):
            raise SpecError(f"the reference must be a spec string, not {type(params.reference).__name__}")
        check_unicode(params.reference, "the reference")
    _check_lens_params(params)
    if n_specs == 0:
        raise SpecError("no variants given; name at least one, e.g. Q4_K_M or demo@step0")
    if n_specs > settings.max_variants:  # distinct variants, the reference counted once (count_variants)
        raise SpecError(too_many(n_specs, settings.max_variants))


NO_REFERENCE = "none"  # the reference spelt so (any case), or blank: no reference and no KL statistics


def given_reference(given: str | None) -> str | None:
    """The one rule for a reference as the CLI's --reference, the page's box and the /compare API take it:
    blank or "none" (any case) is no reference; any other text is a spec (checked like every spec)."""
    if given is None:
        return None
    text = str(given).strip()
    return None if text.lower() in ("", NO_REFERENCE) else text


def check_prompt(prompt: str, settings: Settings, what: str = "--prompt",
                 longer: str = "--text-file for long texts") -> None:
    """A prompt's own checks, for the CLI and the API alike (each naming its own argument): Unicode text, at most
    settings.max_prompt_chars characters (`longer` says where a long text goes instead)."""
    check_unicode(prompt, what)  # bytes that are not UTF-8 in argv arrive as lone surrogates
    if len(prompt) > settings.max_prompt_chars:
        raise InputTextError(f"the prompt has {len(prompt)} characters; the limit is {settings.max_prompt_chars} "
                             f"(use {longer})")


def _precision(spec: str) -> tuple[float, float]:
    v = parse_spec(spec)
    step = v.step if v.step is not None else (math.inf if v.kind != "local" else -1)
    return (QUANTS[v.quant].bpw if v.quant in QUANTS else 0.0, step)


def default_reference(specs: list[str]) -> str:
    """The highest-precision spec chosen (ties: the later checkpoint); '' when fewer than two are chosen."""
    ranked = []
    for s in specs:
        try:
            ranked.append((_precision(s), s))
        except SpecError:
            continue
    return max(ranked, key=lambda r: r[0])[1] if len(specs) >= 2 and ranked else ""


def pick_reference(specs: list[str], given: str | None) -> str | None:
    """The reference of a run from the CLI or the API: `given` as it is; 'none' or '' for no reference; absent
    (None): the dashboard's rule (default_reference), None when it picks none."""
    if given is not None:
        return given_reference(given)
    return default_reference(list(specs)) or None


class ProgressBar:
    """A run's progress events as a tqdm bar on stderr. The CLI's shows only when stderr is a terminal (stdout
    stays clean for --json); with notebook=True (the API) it is tqdm.auto's: a widget in Jupyter where
    ipywidgets is installed, else text, always shown."""

    def __init__(self, notebook: bool = False):
        import sys

        options = dict(total=1000, file=sys.stderr, leave=False, bar_format="{l_bar}{bar}| {elapsed}")
        if notebook:
            import warnings

            from tqdm import TqdmWarning

            try:
                with warnings.catch_warnings():  # without ipywidgets tqdm.auto warns, then gives the text bar
                    warnings.simplefilter("ignore", TqdmWarning)
                    from tqdm.auto import tqdm as auto

                    self.bar = auto(**options, disable=False)
                return
            except ImportError:  # tqdm.auto's notebook bar, which needs ipywidgets: the text bar
                pass
        from tqdm import tqdm

        self.bar = tqdm(**options, disable=False if notebook else None)

    def update(self, ev: Event) -> None:
        target = int(ev.fraction * 1000)
        if target > self.bar.n:
            self.bar.update(target - self.bar.n)
        if ev.message:
            self.bar.set_description_str(ev.message[:60], refresh=False)

    def close(self) -> None:
        self.bar.close()


LENS_TOP_K = 5  # tokens the lens lists per layer


def _check_lens_params(params: RunParams) -> None:
    """The lens's own inputs: a switch, at most 8 distinct whole positions, prompt scoring (BadInput otherwise).
    Positions are checked against the prompt's length once it is tokenized (check_lens_positions)."""
    if not isinstance(params.lens, (bool, np.bool_)):
        raise InputTextError(f"lens must be true or false, not {_show(params.lens)!r}")
    if params.lens_positions is not None and not params.lens:
        raise InputTextError("lens positions were given without the lens; add --lens (lens=True), or leave the "
                             "positions out")
    if not params.lens:
        return
    if params.scoring not in ("auto", "prompt"):
        raise InputTextError(f"the logit lens works on prompt runs only, not on {params.scoring} scoring; use "
                             f"--scoring prompt (or auto with a prompt of at most ctx tokens)")
    if params.lens_positions is not None:
        pos = params.lens_positions
        if not isinstance(pos, (list, tuple)) or not pos:
            raise InputTextError(f"lens positions must be a list of 1 to {lenscapture.MAX_POSITIONS} token indices, "
                                 f"not {_show(pos)!r}")
        if len(pos) > lenscapture.MAX_POSITIONS:
            raise InputTextError(f"{len(pos)} lens positions asked; the limit is {lenscapture.MAX_POSITIONS}; "
                                 f"choose at most {lenscapture.MAX_POSITIONS}")
        checked = [_whole(p, "a lens position", -2**31, 2**31 - 1) for p in pos]
        if len(set(checked)) != len(checked):
            raise InputTextError(f"lens positions {checked} repeat a position; give each once")
        params.lens_positions = checked


def check_lens_positions(params: RunParams, n_tokens: int) -> list[int]:
    """The lens positions of a prompt of n_tokens tokens, sorted (default: the last token, whose prediction is the
    run's next token); InputTextError for one out of 0 … n_tokens - 1."""
    pos = params.lens_positions if params.lens_positions is not None else [n_tokens - 1]
    bad = [p for p in pos if not 0 <= p < n_tokens]
    if bad:
        raise InputTextError(f"lens position{'s' if len(bad) > 1 else ''} {', '.join(map(str, bad))} out of range: "
                             f"the prompt has {n_tokens} tokens; use 0 … {n_tokens - 1} (the lens predicts the token "
                             f"after each position)")
    return sorted(pos)


def too_many(n: int, limit: int) -> str:
    """The one message for too many variants, for the CLI, the API and the page alike."""
    return (f"{n} variants chosen (the reference counted once); the limit is {limit} per run; "
            f"choose at most {limit}")


def count_variants(specs: list[str], reference: str | None, demo_final: int | None = None) -> int:
    """Distinct variants of a run, the reference counted once; a spec that does not parse counts as itself."""
    keys = set()
    for s in list(specs) + ([reference] if reference else []):
        try:
            keys.add(parse_spec(s, demo_final=demo_final).key)
        except SpecError:
            keys.add(s)
    return len(keys)


def demo_final_step(settings: Settings) -> int | None:
    """The demo suite's last step (`demo` is that step), or None without a demo suite."""
    steps = demo_steps(settings.demo_dir)
    return steps[-1] if steps else None


def choose_scoring(mode: str, n_tokens: int, ctx: int) -> str:
    """Apply docs/metrics.md's rules: prompt needs 2 ≤ n ≤ ctx, corpus n ≥ 2·ctx, auto picks or explains."""
    if mode == "prompt" or (mode == "auto" and n_tokens <= ctx):
        if n_tokens < 2:
            raise InputTextError(f"the input has {n_tokens} token{'s' if n_tokens != 1 else ''}; scoring needs at "
                                 f"least 2 (the first token is context, the rest are scored); write a longer prompt")
        if n_tokens > ctx:
            raise InputTextError(f"the prompt has {n_tokens} tokens, more than the context of {ctx}; shorten it, "
                                 f"raise --ctx to at least {n_tokens}, or use --scoring corpus (needs ≥ {2 * ctx})")
        return "prompt"
    if mode == "corpus" or n_tokens >= 2 * ctx:
        if n_tokens < 2 * ctx:
            raise InputTextError(f"corpus scoring needs at least 2·ctx = {2 * ctx} tokens but the text has "
                                 f"{n_tokens}; give a longer text or a smaller --ctx (at most {n_tokens // 2})")
        return "corpus"
    raise InputTextError(
        f"the text has {n_tokens} tokens: too long for prompt scoring (at most ctx = {ctx}) and too short for corpus "
        f"scoring (at least 2·ctx = {2 * ctx}); raise --ctx to {n_tokens} for prompt mode, lower it to "
        f"{n_tokens // 2} for corpus mode, or change the text")


def _new_entry(res: Resolved) -> Entry:
    """A variant's entry before scoring: its source, placeholders for the numbers."""
    return Entry(spec=res.variant.spec, label=res.variant.label, source=read(Source, dict(res.source), "source"),
                 ppl=None, ppl_err=None, n_scored=0, token_logprobs=[], next_token=[], generation=None,
                 timings=Timings(load_s=0.0, score_s=0.0, generate_s=0.0), kld=None)


def iter_comparison(specs: list[str], text: str, params: RunParams, *, settings: Settings, pool,
                    resolver: Resolver | None = None) -> Iterator[Event]:
    """Run one comparison, yielding progress and partial results; the last event is "done" (_comparison).

    The Hugging Face cache's revisions the run uses stay guarded against the cache budget's pruning until the run
    ends: they are let go before "done" is handed on (so a prune after the run may take them), or when the run
    fails or is stopped."""
    resolver = resolver or Resolver(settings)
    try:
        for event in _comparison(specs, text, params, settings=settings, pool=pool, resolver=resolver):
            if event.kind == "done":
                resolver.release()
            yield event
    finally:
        resolver.release()


def _comparison(specs: list[str], text: str, params: RunParams, *, settings: Settings, pool,
                resolver: Resolver) -> Iterator[Event]:
    """Run one comparison, yielding progress and partial results; the last event is "done".

    Steps: check the inputs (_checked_variants), resolve every variant to a file (_resolve), load the models
    and tokenize once (_tokenized), score (_score_prompt / _score_corpus), generate (_generate).
    """
    reference, variants = _checked_variants(specs, text, params, settings)
    everything = ([reference] if reference else []) + variants
    check_run(everything, settings)  # public mode: Hub and demo specs only, before anything is opened
    resolver = resolver or Resolver(settings)
    if params.scoring == "lambada":
        examples, data = _lambada_examples(params, settings, resolver)
        yield from _lambada_run(everything, bool(reference), examples, data, params, settings, resolver, pool)
        return
    steps = len(everything) * 3
    resolved, paths, labels = yield from _files(everything, resolver, pool, steps)
    done = len(everything)
    t0 = time.perf_counter()
    # the lens's heads (final norm, unembedding) read and checked before any model is loaded
    heads = [lenses.read_head(p) for p in paths] if params.lens else None
    with pool.hold(paths, params.ctx, labels) as models:
        ids, run = _tokenized(resolved, bool(reference), models, text, params, settings, time.perf_counter() - t0)
        check_work(len(models), len(ids), params.max_tokens, settings)  # public mode: a bounded run
        entries, scoring = run.entries(), run.params.scoring
        counts = _scored_counts(models[0], ids, scoring, params.ctx)
        run.input.n_bytes, run.input.n_words = int(counts[0][-1]), int(counts[1][-1])
        if params.lens:
            if scoring != "prompt":
                raise InputTextError(f"the logit lens works on prompt runs only; this text of {len(ids)} tokens "
                                     f"runs in {scoring} mode; give a prompt of at most ctx = {params.ctx} tokens, "
                                     f"or leave out --lens")
            run.params.lens_positions = check_lens_positions(params, len(ids))
        yield Event("update", "tokenized", done / steps, run)
        if scoring == "prompt":
            captures = [] if heads is not None else None
            yield from _score_prompt(run, entries, models, ids, params, done, steps, bool(reference), counts,
                                     captures)
            if heads is not None:
                yield from _lens(run, entries, models, heads, captures, done, steps)
        else:
            yield from _score_corpus(run, entries, models, ids, params, done, steps, bool(reference), counts)
        done = len(everything) * 2
        if params.max_tokens > 0:
            # Prompt mode continues the prompt; corpus mode continues the last scored chunk.
            context = ids if scoring == "prompt" else _last_chunk(ids, params.ctx, models[0])
            yield from _generate(run, entries, models, labels, context, params, done, steps)
    yield Event("done", "done", 1.0, run)


def _files(everything: list, resolver: Resolver, pool, steps: int) -> Iterator[Event]:
    """Every variant resolved to its file (_resolve) and the files checked against the pool's memory budget, then
    the "loading models" event; returns (resolved, paths, labels)."""
    resolved = yield from _resolve(everything, resolver, steps)
    paths = [r.path for r in resolved]
    labels = [r.variant.label for r in resolved]
    pool.check_budget(paths, labels)
    yield Event("progress", "loading models", len(everything) / steps)
    return resolved, paths, labels


def _checked_variants(specs: list[str], text: str, params: RunParams, settings: Settings):
    """Every input checked (BadInput naming what is wrong): (the reference Variant or None, the other Variants)."""
    demo_final = demo_final_step(settings)
    for s in specs:
        if isinstance(s, str):
            check_unicode(s, "a variant spec")
    validate_params(params, count_variants(specs, params.reference, demo_final) if specs else 0, settings)
    if params.scoring == "lambada":
        if isinstance(text, str) and text.strip():
            raise InputTextError("--scoring lambada scores the LAMBADA examples, so it takes no prompt or text; "
                                 "leave out --prompt / --text-file (a LAMBADA file goes in --lambada-file)")
        if params.limit is not None:  # the number itself, before anything is downloaded (its top: _lambada_examples)
            lambada.check_limit(params.limit, None, public=settings.public)
    elif params.lambada_file is not None or params.limit is not None:
        raise InputTextError("--lambada-file and --limit belong to --scoring lambada; add --scoring lambada, or "
                             "leave them out")
    elif not isinstance(text, str) or not text.strip():
        raise InputTextError("the input is empty; give a prompt (--prompt) or a text file (--text-file)")
    if params.scoring != "lambada":
        if len(text) > settings.max_text_chars:
            raise InputTextError(f"the input has {len(text)} characters; the limit is {settings.max_text_chars}")
        check_unicode(text, "the input text")
    variants = parse_specs(specs, demo_final=demo_final)
    reference = parse_spec(params.reference, demo_final=demo_final) if params.reference else None
    if reference is not None:
        variants = [v for v in variants if v.key != reference.key]  # the reference is not repeated
        if not variants:
            raise SpecError("the only variant given is the reference; add a variant to compare against it")
    return reference, variants


def _resolve(everything: list, resolver: Resolver, steps: int):
    """Each variant to a local GGUF file, its download / conversion messages yielded as they happen; returns
    the Resolved list (a generator: `resolved = yield from _resolve(...)`)."""
    for v in everything:  # a step its repo lacks is refused before anything is downloaded
        resolver.check_step(v)
    resolved: list[Resolved] = []
    for done, v in enumerate(everything):
        yield Event("progress", f"{v.label}: resolving", done / steps)
        box: list[Resolved] = []
        for msg in in_thread(lambda say: box.append(resolver.resolve(v, progress=say))):
            yield Event("progress", msg, done / steps)  # download / conversion / quantization steps
        resolved.append(box[0])
    return resolved


def _tokenized(resolved: list[Resolved], has_ref: bool, models: list, text: str, params: RunParams,
               settings: Settings, load_s: float) -> tuple[list[int], Run]:
    """The run's entries (the reference first when has_ref) with their loaded models recorded (load time,
    vocabulary, overrides, warnings), the text tokenized once and the scoring mode chosen; returns (ids, the run,
    its numbers still placeholders)."""
    entries = [_new_entry(r) for r in resolved]
    ref_entry, variants = (entries[0], entries[1:]) if has_ref else (None, entries)
    for e in entries:
        e.timings.load_s = load_s / len(entries)
    _check_vocabularies(resolved, models)
    for e, m in zip(entries, models):
        e.source.vocab_sha256 = m.vocab_sha256
        e.source.bpw = bits_per_weight(m.n_params, m.tensor_bytes)
        e.overrides = dict(m.overrides)
        e.warnings = list(m.warnings)
        e.load = read(Load, m.load_info(), "load")  # llama.cpp load settings per phase (loadplan.load_plan)
    # One tokenization per run: the reference's (after any override), else the first variant's, fed to
    # every variant. The vocabularies are identical, so any of them would give these ids.
    ids = models[0].tokenize(text)
    scoring = choose_scoring(params.scoring, len(ids), params.ctx)
    m0 = models[0]
    run = Run(schema=SCHEMA_VERSION, run_id=None, created_at=None,
              input=Input(text=text, n_tokens=len(ids), tokens=[m0.token_text(i) for i in ids]),
              params=Params(scoring=scoring, ctx=int(params.ctx), top_k=int(params.top_k),
                            max_tokens=int(params.max_tokens), temperature=float(params.temperature),
                            seed=int(params.seed), flash_attn=bool(settings.flash_attn),
                            reference=ref_entry.spec if ref_entry else None),
              variants=variants, reference=ref_entry, versions=_versions(),
              warnings=mixed_run_warnings(resolved, settings))
    return ids, run


def _lambada_examples(params: RunParams, settings: Settings, resolver: Resolver) -> tuple[list, LambadaData]:
    """The examples a LAMBADA run scores (the first `limit`) and where they came from: the local file
    params.lambada_file, else the Hub dataset (settings.lambada_repo at settings.lambada_revision, downloaded
    into huggingface_hub's cache). BadInput names what is wrong before any model is opened."""
    import hashlib

    if params.lambada_file is not None:
        if settings.public:
            raise InputTextError("public mode scores the LAMBADA dataset of the Hub only; leave out the LAMBADA file")
        raw = read_bounded(params.lambada_file, "the LAMBADA file", lambada.MAX_FILE_BYTES, lambada.FILE_HINT,
                           lambada.LambadaFileError)
        repo = revision = None
        name = Path(params.lambada_file).expanduser().name
    else:
        repo, revision, name = settings.lambada_repo, settings.lambada_revision, lambada.HUB_FILE
        raw = resolver.hub.download_dataset_file(repo, name, revision).read_bytes()
    examples = lambada.parse(raw, name)
    limit = lambada.check_limit(params.limit, len(examples), public=settings.public) if params.limit is not None \
        else None
    if limit is None and settings.public and len(examples) > lambada.PUBLIC_MAX_LIMIT:
        raise lambada.LambadaFileError(f"public mode scores at most {lambada.PUBLIC_MAX_LIMIT} LAMBADA examples per "
                                       f"run and the data holds {len(examples)}; set a limit of 1 … "
                                       f"{lambada.PUBLIC_MAX_LIMIT}")
    data = LambadaData(repo=repo, revision=revision, file=name, sha256=hashlib.sha256(raw).hexdigest(),
                       n_file=len(examples), limit=limit, targets=[], target_tokens=[], context_tokens=[],
                       truncated=[])
    return examples[:limit] if limit else examples, data


def _lambada_run(everything: list, has_ref: bool, examples: list, data: LambadaData, params: RunParams,
                 settings: Settings, resolver: Resolver, pool) -> Iterator[Event]:
    """Score LAMBADA on every variant (docs/metrics.md, "LAMBADA"): the examples are tokenized once, by the
    reference's (else the first variant's) model, and every model scores those windows; the run is yielded
    every few examples. Token-level fields stay empty (ppl, token_logprobs, n_scored 0): the figures are in
    each entry's `lambada`."""
    steps = len(everything) * 2
    resolved, paths, labels = yield from _files(everything, resolver, pool, steps)
    done = len(everything)
    t0 = time.perf_counter()
    with pool.hold(paths, params.ctx, labels) as models:
        load_s = time.perf_counter() - t0
        entries = [_new_entry(r) for r in resolved]
        ref_entry, variants = (entries[0], entries[1:]) if has_ref else (None, entries)
        _check_vocabularies(resolved, models)
        for e, m in zip(entries, models):
            e.timings.load_s = load_s / len(entries)
            e.source.vocab_sha256 = m.vocab_sha256
            e.overrides = dict(m.overrides)
            e.warnings = list(m.warnings)
            e.load = read(Load, m.load_info(), "load")
        m0 = models[0]
        windows = []
        for ex in examples:  # one tokenization per run, lm-eval's encoding and left truncation
            ctx_ids, cont_ids = lambada.encode_pair(m0.tokenize, ex.context, ex.target)
            try:
                tokens, positions = lambada.window(ctx_ids, cont_ids, params.ctx)
            except lambada.LambadaFileError as err:
                raise lambada.LambadaFileError(f"{data.file}, line {ex.line}: {err}") from None
            windows.append((tokens, positions, cont_ids))
            data.targets.append(ex.target)
            data.target_tokens.append(len(cont_ids))
            data.context_tokens.append(len(tokens) - len(cont_ids) + 1)
            data.truncated.append(len(ctx_ids) + len(cont_ids) > params.ctx + 1)
        warnings = mixed_run_warnings(resolved, settings)
        if data.repo is not None and data.sha256 != lambada.HUB_SHA256:
            warnings.append(f"the LAMBADA file {data.file} of {data.repo}@{(data.revision or '')[:12]} has SHA-256 "
                            f"{data.sha256[:16]}…, not the {lambada.HUB_SHA256[:16]}… of lm-eval's lambada_openai "
                            f"test split; its figures are not comparable with published ones")
        run = Run(schema=SCHEMA_VERSION, run_id=None, created_at=None,
                  input=Input(text="\n".join(ex.text for ex in examples), n_tokens=0, tokens=[]),
                  params=Params(scoring="lambada", ctx=int(params.ctx), top_k=int(params.top_k), max_tokens=0,
                                temperature=float(params.temperature), seed=int(params.seed),
                                flash_attn=bool(settings.flash_attn), reference=ref_entry.spec if ref_entry else None),
                  variants=variants, reference=ref_entry, versions=_versions(), warnings=warnings, lambada=data)
        for e in entries:
            e.lambada = LambadaScore(n=0, acc=None, acc_stderr=None, ppl=None, ppl_stderr=None, agreement=None,
                                     loglikelihood=[], is_greedy=[])
        yield Event("update", "tokenized", done / steps, run)
        n = len(windows)
        every = max(1, min(50, n // 20))
        for i, (tokens, positions, cont_ids) in enumerate(windows):
            for e, m in zip(entries, models):
                t = time.perf_counter()
                ll, greedy = lambada.score(m.logits(tokens, positions), cont_ids)
                e.lambada.loglikelihood.append(ll)
                e.lambada.is_greedy.append(greedy)
                e.timings.score_s += time.perf_counter() - t
            if (i + 1) % every == 0 or i + 1 == n:
                _lambada_summaries(entries, has_ref, final=i + 1 == n)
                yield Event("update", f"LAMBADA: {i + 1}/{n} examples", (done + len(entries) * (i + 1) / n) / steps,
                            run)
    yield Event("done", "done", 1.0, run)


def _lambada_summaries(entries: list[Entry], has_ref: bool, final: bool) -> None:
    """Each entry's LAMBADA summary (lambada.summary; the ppl stderr only when final) and agreement with the
    reference over the examples so far."""
    ref = entries[0].lambada.is_greedy if has_ref else None
    for k, e in enumerate(entries):
        s = e.lambada
        figures = lambada.summary(s.loglikelihood, s.is_greedy, final=final)
        s.n, s.acc, s.acc_stderr, s.ppl, s.ppl_stderr = (figures[key] for key in
                                                         ("n", "acc", "acc_stderr", "ppl", "ppl_stderr"))
        s.agreement = lambada.agreement(s.is_greedy, ref) if ref is not None and k > 0 else None


def _generate(run: Run, entries: list[Entry], models: list, labels: list[str], context: list[int],
              params: RunParams, done: int, steps: int) -> Iterator[Event]:
    """Each model continues `context`, one after the other; the run is yielded after every token."""
    for k, (e, m) in enumerate(zip(entries, models)):
        yield Event("progress", f"{labels[k]}: generating", (done + k) / steps)
        t = time.perf_counter()
        gen = Generation(text="", tokens=[])
        e.generation = gen
        load_s = None
        for tok in m.generate(context, params.max_tokens, temperature=params.temperature, seed=params.seed):
            if not gen.tokens:  # read while generate holds the model's lock
                load_s = m.generation_load_s
            gen.tokens.append(GenToken(id=tok.id, text=tok.text, prob=tok.prob, top=_token_probs(tok.top)))
            gen.text += tok.text
            yield Event("update", f"{labels[k]}: generating", (done + k) / steps, run)
        load_s = load_s if gen.tokens else m.generation_load_s  # a second, repacked handle's load: apart
        e.timings.generate_s = time.perf_counter() - t - (load_s or 0.0)
        if load_s is not None:
            e.timings.generate_load_s = load_s
        e.load = read(Load, m.load_info(), "load")  # the generation handle is loaded (or declined) on first use


def _check_vocabularies(resolved: list[Resolved], models: list) -> None:
    """Raise TokenizerMismatch unless every model has the first one's vocabulary (ggufmeta.vocab_sha256)."""
    first = resolved[0]
    for res, m in zip(resolved[1:], models[1:]):
        if m.vocab_sha256 != models[0].vocab_sha256:
            raise TokenizerMismatch(
                f"the vocabularies differ: variant {res.variant.spec!r} ({res.path.name}) and "
                f"{first.variant.spec!r} ({first.path.name}) have different tokens, merges or special tokens, so "
                f"their token ids do not mean the same and their perplexities are not comparable; compare "
                f"variants of one model")


def _scored_counts(model, ids: list[int], scoring: str, ctx: int) -> tuple[np.ndarray, np.ndarray]:
    """Running totals, per scored token in scoring order, of the UTF-8 bytes and the words that begin in the
    scored tokens (metrics.bytes_and_words), a leading 0 first: entry k is the count over the first k tokens."""
    scored = list(range(1, len(ids))) if scoring == "prompt" else metrics.corpus_target_indices(len(ids), ctx)
    sizes, words = metrics.bytes_and_words([model.piece(i) for i in ids], scored)
    return np.concatenate([[0], np.cumsum(sizes)]), np.concatenate([[0], np.cumsum(words)])


def _score_prompt(run, entries, models, ids, params, done, steps, has_ref, counts, captures: list | None = None
                  ) -> Iterator[Event]:
    """Score the prompt on every model. With `captures` (a lens run) each model is evaluated once, in its lens
    context (lenscapture.capture: the residual stream at the lens positions, the logits at every position), and its
    Capture (or, when the lens context has no room, the BudgetError's message) is appended for _lens."""
    n = len(ids)
    positions = list(range(n))
    targets = np.asarray(ids[1:], dtype=np.int64)
    ref_logits = None
    for k, (e, m) in enumerate(zip(entries, models)):
        yield Event("progress", f"{e.label}: scoring {n} tokens", (done + k) / steps)
        t = time.perf_counter()
        if captures is None:
            logits = m.logits(ids, positions)
        else:
            try:
                cap = lenscapture.capture(m, ids, run.params.lens_positions, outputs=positions)
                logits = cap.logits  # scored here; the capture keeps only the lens positions' rows for _lens
                cap.logits, cap.outputs = logits[run.params.lens_positions], list(run.params.lens_positions)
            except BudgetError as err:
                logits, cap = m.logits(ids, positions), str(err)
            captures.append(cap)
        if has_ref and k > 0:  # the statistics carry the variant's NLL too
            stats = metrics.token_stats(ref_logits, logits[:-1], targets)
            e.kld = _kld_stats(stats)
            nll = stats.nll_var
        else:
            nll = metrics.nll(logits[:-1], targets)
            ref_logits = logits[:-1] if has_ref else None
        _set_scores(e, nll, counts)
        e.next_token = _token_probs(m.top_k(logits[-1], params.top_k))
        e.timings.score_s = time.perf_counter() - t
        del logits
        yield Event("update", f"{e.label}: scored", (done + k + 1) / steps, run)


def _lens(run: Run, entries: list[Entry], models: list, heads: list, captures: list, done: int,
          steps: int) -> Iterator[Event]:
    """The logit lens of every entry at run.params.lens_positions from its capture (made while scoring:
    _score_prompt): the residual stream after each layer decoded (lens.py), checked against the model's logits, and
    compared layer by layer with the baseline's (the reference, else the first entry whose lens is available)."""
    positions = run.params.lens_positions
    base_lp = base_top = None
    for k, (e, m, head) in enumerate(zip(entries, models, heads)):
        yield Event("progress", f"{e.label}: logit lens", (done + k) / steps)
        cap = captures[k]
        if isinstance(cap, str):  # no room for the lens context under the memory budget
            e.lens = Lens(status="unavailable", message=cap, positions=[], check=None)
            continue
        if cap.missing:
            e.lens = Lens(status="unavailable", message=cap.missing, positions=[], check=None)
            continue
        logits = head.logits(cap.layers)  # (positions, layers, vocab)
        check = lenses.self_check(logits[:, -1], cap.logits, head.out_type, LENS_TOP_K)
        lp = lenses.log_softmax(logits)
        del logits
        if base_lp is None:
            base_lp = lp
            final = lenses.log_softmax(cap.logits)
            base_top = [lenses.top(row, 1)[0] for row in final]
            kls = None
        else:
            kls = lenses.kl(base_lp, lp)
        by_pos = []
        for i, p in enumerate(positions):
            tok, prob = base_top[i]
            layers = [LensLayer(top=[TokenProb(id=t_, text=m.token_text(t_), prob=pr)
                                     for t_, pr in lenses.top(lp[i, li], LENS_TOP_K)],
                                kl=None if kls is None else float(kls[i, li]),
                                ref_rank=lenses.rank(lp[i, li], tok)) for li in range(lp.shape[1])]
            by_pos.append(LensPosition(position=int(p), target=TokenProb(id=tok, text=m.token_text(tok), prob=prob),
                                       layers=layers))
        e.lens = Lens(status="ok" if check.ok else "check failed", message=check.message, positions=by_pos,
                      check=LensCheck(ok=check.ok, rule=check.rule, max_dlogit=check.max_dlogit,
                                      max_logit=check.max_logit, kl=check.kl, same_top=check.same_top))
        del lp
        yield Event("update", f"{e.label}: logit lens", (done + k + 1) / steps, run)


def _score_corpus(run, entries, models, ids, params, done, steps, has_ref, counts) -> Iterator[Event]:
    m0 = models[0]
    plan = metrics.corpus_plan(ids, params.ctx, m0.bos_id if m0.add_bos else None)
    per_nll: list[list[np.ndarray]] = [[] for _ in entries]
    per_stats: list[list] = [[] for _ in entries]
    n_chunks = len(plan)
    # Several models on several cores: evaluate them side by side, each on its share of the threads. Two
    # decodes of one thread each get more done than one decode after another of two threads each, and the
    # statistics of one model overlap the next one's decode. The numbers are the same, bit for bit.
    cores = m0.settings.n_threads
    workers = min(len(models), cores) if len(models) > 1 and cores > 1 else 1

    def submit(c: int) -> list[Future]:
        jobs: list[Future] = []
        for k, m in enumerate(models):
            job = partial(_score_chunk, m, k, plan[c], c == n_chunks - 1, params.top_k, has_ref,
                          jobs[0] if jobs else None, n_threads=cores // workers)
            jobs.append(pool.submit(job) if workers > 1 else _done_future(job))
        return jobs

    with ThreadPoolExecutor(workers, thread_name_prefix="pythia-compare-eval") as pool:
        # With workers, the next chunk is queued before this one is collected, so no core waits at the end
        # of a chunk for the slowest model; at most two chunks' logits are held.
        ahead = submit(0) if workers > 1 else None
        try:
            for c in range(n_chunks):
                jobs = ahead if ahead is not None else submit(c)
                ahead = submit(c + 1) if workers > 1 and c + 1 < n_chunks else None
                for k, (e, job) in enumerate(zip(entries, jobs)):
                    nll, stats, next_token, seconds = job.result()[1:]
                    per_nll[k].append(nll)
                    if stats is not None:
                        per_stats[k].append(stats)
                    if next_token is not None:
                        e.next_token = _token_probs(next_token)
                    e.timings.score_s += seconds
                del jobs
                for k, e in enumerate(entries):
                    _set_scores(e, np.concatenate(per_nll[k]), counts)
                    if per_stats[k]:
                        e.kld = _kld_stats(metrics.TokenStats.concat(per_stats[k]))
                frac = (done + len(entries) * (c + 1) / n_chunks) / steps
                yield Event("update", f"scored chunk {c + 1}/{n_chunks}", frac, run)
        finally:
            for job in ahead or []:  # a run stopped early (an error, or its reader went away)
                job.cancel()


def _score_chunk(m, k: int, chunk, last: bool, top_k: int, has_ref: bool, ref_job: Future | None, *,
                 n_threads: int) -> tuple:
    """Score one corpus chunk on model k: (the reference's logits or None, nll, KL stats or None, the
    next-token list on the last chunk or None, seconds). Model 0 is the reference when has_ref: its rows are
    copied out, as the others read them. The others score each block of rows in place as llama.cpp hands it
    over (Model.scan), waiting for the reference's logits at their first block. The last chunk also yields the
    next-token distribution after its final token (no extra pass)."""
    t = time.perf_counter()
    targets = np.asarray(chunk.targets, dtype=np.int64)
    n = len(targets)
    positions = list(chunk.positions) + ([len(chunk.tokens) - 1] if last else [])
    if has_ref and k == 0:
        logits = m.logits(chunk.tokens, positions, n_threads=n_threads)
        next_token = m.top_k(logits[-1], top_k) if last else None
        logits = logits[:n]
        return logits, metrics.nll(logits, targets), None, next_token, time.perf_counter() - t
    nlls: list[np.ndarray] = []
    stats: list[metrics.TokenStats] = []
    found: list = []
    ref: list[np.ndarray] = []

    def consume(row: int, block: np.ndarray) -> None:
        if row + len(block) > n:  # the row after the chunk's last token: the next-token distribution
            found.append(m.top_k(block[n - row], top_k))
            block = block[:n - row]
        if not len(block):
            return
        part = slice(row, row + len(block))
        if has_ref:  # the statistics carry the variant's NLL too
            if not ref:
                ref.append(ref_job.result()[0])
            stats.append(metrics.token_stats(ref[0][part], block, targets[part]))
            nlls.append(stats[-1].nll_var)
        else:
            nlls.append(metrics.nll(block, targets[part]))

    m.scan(chunk.tokens, positions, consume, n_threads=n_threads)
    nll = np.concatenate(nlls) if nlls else np.zeros(0)
    kl = metrics.TokenStats.concat(stats) if has_ref else None
    return None, nll, kl, found[0] if found else None, time.perf_counter() - t


def _done_future(work: Callable[[], object]) -> Future:
    """Run work now, in this thread, and wrap its outcome as a finished Future."""
    f: Future = Future()
    try:
        f.set_result(work())
    except BaseException as e:  # re-raised by f.result(), as a pool's future would
        f.set_exception(e)
    return f


def _last_chunk(ids: list[int], ctx: int, model) -> list[int]:
    plan = metrics.corpus_plan(ids, ctx, model.bos_id if model.add_bos else None)
    return list(plan[-1].tokens)


def _set_scores(e: Entry, nll: np.ndarray, counts: tuple[np.ndarray, np.ndarray]) -> None:
    """An entry's scores from the NLL of its scored tokens (the first len(nll) in scoring order): log-probabilities,
    N, PPL and its uncertainty, bits per byte and word perplexity (`counts`: _scored_counts)."""
    e.token_logprobs = (-nll).tolist()  # Python floats, one C pass (this runs after every corpus chunk)
    e.n_scored = int(len(nll))
    e.ppl, e.ppl_err = metrics.perplexity(nll)
    e.bits_per_byte = metrics.bits_per_byte(nll, int(counts[0][len(nll)]))
    e.word_ppl = metrics.word_perplexity(nll, int(counts[1][len(nll)]))


def _token_probs(items: list[dict]) -> list[TokenProb]:
    """The engine's [{"id", "text", "prob"}] as TokenProbs."""
    return [TokenProb(id=int(t["id"]), text=t["text"], prob=float(t["prob"])) for t in items]


def _kld_stats(stats) -> KLStats:
    """The KL statistics of docs/run.md (metrics.kl_summary) with the per-token KLD and Δp."""
    return KLStats(**metrics.kl_summary(stats), per_token=stats.kld.tolist(), dp_per_token=stats.dp.tolist())


def _versions() -> Versions:
    from ..models.engine import llama_cpp_version

    return Versions(pythia_compare=__version__, llama_cpp_python=llama_cpp_version())


def run_comparison(specs: list[str], text: str, params: RunParams, *, settings: Settings, pool,
                   resolver: Resolver | None = None, on_event: Callable[[Event], None] | None = None) -> Run:
    """Run to completion and return the run (run_id/created_at still None until stored; `.to_json()` is its
    JSON)."""
    run = None
    for ev in iter_comparison(specs, text, params, settings=settings, pool=pool, resolver=resolver):
        if on_event:
            on_event(ev)
        if ev.kind == "done":
            run = ev.run
    assert run is not None
    return run
