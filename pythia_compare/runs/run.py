"""The run: the typed form of the run JSON (docs/run.md) that compare.py produces and everything else reads.

Owns the run's shape: the dataclasses `Run`, `Entry`, `Source`, `KLStats`, `Timings`, `Generation`, … with
`from_json` (validated on read: a malformed run raises RunFormatError naming the key's full path, e.g.
`variants[1].source.sha256 is missing`) and `to_json`; the schema version (`SCHEMA`) and the migration of
stored runs of older schemas; the order of a run's entries (the reference first, then the variants as given);
and the names of the KL statistics. Pure: no I/O, no numpy, no database.

Every field is documented in docs/run.md (a test holds that table against these dataclasses). Keys this schema
does not know are kept, in order, in each object's `extra` dict and written back by to_json, so a run written by
a newer release that only added keys loses nothing. Rules of the schema:
- a field without a default is a required key (its value may still be null where its type says `| None`);
- a field with a default may be left out, and reads as that default (to_json writes it);
- a key added to schema 1 by a later release (issue 8's `warnings`, `overrides`, `source.vocab_sha256`) is an
  *added* field (metadata `_ADDED`): left out by runs written before it, it reads as None and to_json leaves it
  out again, so those runs round-trip unchanged; when present it must not be null;
- ints are not floats and bools are not numbers; a float field takes an int (3 -> 3.0).
"""

from __future__ import annotations

import copy
import dataclasses
import numbers
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Union

from ..errors import BadInput

SCHEMA = 1  # the run JSON's schema version, written in "schema"; see MIGRATIONS for older ones

# The scalar KL statistics of an entry's "kld" object, in llama-perplexity's order (docs/run.md, "KL statistics").
# metrics.kl_summary computes exactly these; runrows gives each a column of run_kld.
KL_STATS = ("mean", "mean_err", "max", "p99_9", "p99", "p95", "p90", "median", "p10", "p5", "p1", "p0_1", "min",
            "dp_mean", "dp_mean_err", "dp_rms", "dp_rms_err", "dp_max", "dp_p99_9", "dp_p99", "dp_p95", "dp_p90",
            "dp_p75", "dp_median", "dp_p25", "dp_p10", "dp_p5", "dp_p1", "dp_p0_1", "dp_min", "same_top",
            "same_top_err", "ppl_ratio", "ppl_ratio_err", "ln_ratio", "ln_ratio_err", "ppl_diff", "ppl_diff_err",
            "cor_ln_ppl", "ppl", "ppl_err", "ppl_ref", "ppl_ref_err")


class RunFormatError(BadInput):
    """A run JSON does not have the shape of docs/run.md; the message names the offending key."""


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


_EXTRA = {"json": False}  # metadata of the `extra` fields: not a key of the JSON
_ADDED = {"added": True}  # metadata of a key added to schema 1 later: absent in older runs, written only when set


# --------------------------------------------------------------------------------------------- the schema


@dataclass
class TokenProb:
    id: int
    text: str
    prob: float
    extra: dict = field(default_factory=dict, metadata=_EXTRA)


@dataclass
class GenToken:
    id: int
    text: str
    prob: float
    top: list[TokenProb]
    extra: dict = field(default_factory=dict, metadata=_EXTRA)


@dataclass
class Generation:
    text: str
    tokens: list[GenToken]
    extra: dict = field(default_factory=dict, metadata=_EXTRA)


@dataclass
class Source:
    repo: str | None
    commit: str | None
    file: str | None
    sha256: str | None
    bytes: int | None
    quant: str | None
    vocab_sha256: str | None = field(default=None, metadata=_ADDED)  # ggufmeta.vocab_sha256 (issue 8)
    bpw: float | None = field(default=None, metadata=_ADDED)  # variants.bits_per_weight of the file (issue 20)
    extra: dict = field(default_factory=dict, metadata=_EXTRA)


@dataclass
class Timings:
    load_s: float | None
    score_s: float | None
    generate_s: float | None
    # loading a second, repacked handle for generation, kept out of generate_s (issue 20)
    generate_load_s: float | None = field(default=None, metadata=_ADDED)
    extra: dict = field(default_factory=dict, metadata=_EXTRA)


@dataclass
class Load:
    """How llama.cpp loaded one model, per phase (loadplan.load_plan): ggml's extra CPU buffer types (weight
    repacking) for scoring and for generation, and why."""
    extra_bufts_score: bool
    extra_bufts_generate: bool
    quant: str | None
    cpu: str
    reason: str
    generate_extra_mb: float | None = field(default=None, metadata=_ADDED)  # a second, repacked handle's cost
    extra: dict = field(default_factory=dict, metadata=_EXTRA)


@dataclass
class KLStats:
    mean: float | None = None
    mean_err: float | None = None
    max: float | None = None
    p99_9: float | None = None
    p99: float | None = None
    p95: float | None = None
    p90: float | None = None
    median: float | None = None
    p10: float | None = None
    p5: float | None = None
    p1: float | None = None
    p0_1: float | None = None
    min: float | None = None
    dp_mean: float | None = None
    dp_mean_err: float | None = None
    dp_rms: float | None = None
    dp_rms_err: float | None = None
    dp_max: float | None = None
    dp_p99_9: float | None = None
    dp_p99: float | None = None
    dp_p95: float | None = None
    dp_p90: float | None = None
    dp_p75: float | None = None
    dp_median: float | None = None
    dp_p25: float | None = None
    dp_p10: float | None = None
    dp_p5: float | None = None
    dp_p1: float | None = None
    dp_p0_1: float | None = None
    dp_min: float | None = None
    same_top: float | None = None
    same_top_err: float | None = None
    ppl_ratio: float | None = None
    ppl_ratio_err: float | None = None
    ln_ratio: float | None = None
    ln_ratio_err: float | None = None
    ppl_diff: float | None = None
    ppl_diff_err: float | None = None
    cor_ln_ppl: float | None = None
    ppl: float | None = None
    ppl_err: float | None = None
    ppl_ref: float | None = None
    ppl_ref_err: float | None = None
    per_token: list[float] | None = None
    dp_per_token: list[float] | None = None
    extra: dict = field(default_factory=dict, metadata=_EXTRA)

    def stats(self) -> dict[str, float | None]:
        """The scalar statistics by name (KL_STATS order)."""
        return {k: getattr(self, k) for k in KL_STATS}


@dataclass
class LambadaScore:
    """One entry's LAMBADA figures (a `--scoring lambada` run; lambada.py, docs/metrics.md): the summary over
    the examples scored and, per example in the order of Run.lambada's, the log-likelihood of the target and
    is_greedy."""
    n: int
    acc: float | None
    acc_stderr: float | None
    ppl: float | None
    ppl_stderr: float | None
    agreement: float | None  # share of examples whose is_greedy is the reference's (null: no reference / is it)
    loglikelihood: list[float]
    is_greedy: list[bool]
    extra: dict = field(default_factory=dict, metadata=_EXTRA)


@dataclass
class LensLayer:
    """The logit lens at one layer (lens.py): the residual stream after that layer, decoded through the final norm
    and the unembedding."""
    top: list[TokenProb]  # the lens's most probable tokens, descending
    kl: float | None  # KL(the baseline's lens ‖ this entry's lens) at the same layer, nats; null for the baseline
    ref_rank: int  # 1-based rank of the baseline's final top-1 token (LensPosition.target) in this layer's lens
    extra: dict = field(default_factory=dict, metadata=_EXTRA)


@dataclass
class LambadaData:
    """Where a LAMBADA run's examples came from, and how each was cut (the same for every entry)."""
    repo: str | None  # the Hub dataset (null for a local file)
    revision: str | None  # its commit
    file: str  # the file's path in the dataset, or the local file's name
    sha256: str  # of the whole file
    n_file: int  # examples in the file
    limit: int | None  # --limit (null: every example)
    targets: list[str]  # per example: the target (' ' + last word)
    target_tokens: list[int]  # per example: tokens of the target
    context_tokens: list[int]  # per example: tokens of the context evaluated (after left-truncation)
    truncated: list[bool]  # per example: the context was cut to fit ctx
    extra: dict = field(default_factory=dict, metadata=_EXTRA)


@dataclass
class LensPosition:
    position: int  # token index in input.tokens: the lens predicts the token after it
    target: TokenProb  # the baseline's final top-1 at this position (its own logits), which ref_rank ranks
    layers: list[LensLayer]  # one per layer, first to last
    extra: dict = field(default_factory=dict, metadata=_EXTRA)


@dataclass
class LensCheck:
    """The self-check of an entry's lens: its last layer against the model's own logits (docs/metrics.md)."""
    ok: bool
    rule: str  # "logits" (F32/F16 unembedding) | "top-k and KL" (quantized)
    max_dlogit: float
    max_logit: float
    kl: float
    same_top: bool
    extra: dict = field(default_factory=dict, metadata=_EXTRA)


@dataclass
class Lens:
    """An entry's logit lens (issue 24): per asked position, per layer."""
    status: str  # "ok" | "check failed" | "unavailable"
    message: str  # the self-check's result, or why the lens is unavailable
    positions: list[LensPosition]  # empty when unavailable
    check: LensCheck | None
    extra: dict = field(default_factory=dict, metadata=_EXTRA)


@dataclass
class Entry:
    """One model of a run: a variant, or the reference."""
    spec: str
    label: str
    source: Source
    ppl: float | None
    ppl_err: float | None
    n_scored: int
    token_logprobs: list[float]
    next_token: list[TokenProb]
    generation: Generation | None
    timings: Timings
    kld: KLStats | None = None
    overrides: dict[str, str] | None = field(default=None, metadata=_ADDED)  # GGUF metadata overridden at load
    warnings: list[str] | None = field(default=None, metadata=_ADDED)  # llama.cpp's load warnings
    load: Load | None = field(default=None, metadata=_ADDED)  # load settings per phase (issue 13)
    bits_per_byte: float | None = field(default=None, metadata=_ADDED)  # Σ nll / (Input.n_bytes · ln 2)
    word_ppl: float | None = field(default=None, metadata=_ADDED)  # exp(Σ nll / Input.n_words)
    lambada: LambadaScore | None = field(default=None, metadata=_ADDED)  # a LAMBADA run's figures (issue 23)
    lens: Lens | None = field(default=None, metadata=_ADDED)  # the logit lens, when the run asked for it (issue 24)
    extra: dict = field(default_factory=dict, metadata=_EXTRA)


@dataclass
class Input:
    text: str
    n_tokens: int
    tokens: list[str]
    n_bytes: int | None = field(default=None, metadata=_ADDED)  # UTF-8 bytes of the scored tokens (issue 23)
    n_words: int | None = field(default=None, metadata=_ADDED)  # words that begin in the scored tokens
    extra: dict = field(default_factory=dict, metadata=_EXTRA)


@dataclass
class Params:
    scoring: str
    ctx: int
    top_k: int
    max_tokens: int
    temperature: float
    seed: int
    flash_attn: bool
    reference: str | None
    lens_positions: list[int] | None = field(default=None, metadata=_ADDED)  # asked for the logit lens (issue 24)
    extra: dict = field(default_factory=dict, metadata=_EXTRA)


@dataclass
class Versions:
    pythia_compare: str
    llama_cpp_python: str
    extra: dict = field(default_factory=dict, metadata=_EXTRA)


@dataclass
class Run:
    schema: int
    input: Input
    params: Params
    variants: list[Entry]
    reference: Entry | None
    versions: Versions
    run_id: str | None = None
    created_at: str | None = None
    warnings: list[str] | None = field(default=None, metadata=_ADDED)  # run-level (lineage.mixed_run_warnings)
    lambada: LambadaData | None = field(default=None, metadata=_ADDED)  # a LAMBADA run's examples (issue 23)
    extra: dict = field(default_factory=dict, metadata=_EXTRA)

    # The JSON's key order (compare.py's and the store's), which differs from the dataclass's field order
    # where required fields had to come before ones with defaults.
    _ORDER: typing.ClassVar[tuple[str, ...]] = ("schema", "run_id", "created_at", "input", "params", "variants",
                                                "reference", "versions")

    def entries(self) -> list[Entry]:
        """The reference (when the run has one) first, then the variants in the order given."""
        return entries(self)

    def copy(self) -> "Run":
        """A copy sharing nothing mutable with this run: a snapshot of a run that keeps growing (a streamed
        comparison). Costs what to_json costs, a fraction of copy.deepcopy's (lists of numbers are copied whole)."""
        return _copy(self)

    @classmethod
    def from_json(cls, data: Any) -> "Run":
        """A run JSON dict (any schema this release reads) -> Run; RunFormatError names what is wrong.

        `data` is not modified; older schemas are migrated first (see migrate)."""
        return _read(cls, migrate(data), "")

    def to_json(self) -> dict:
        """The run JSON dict (schema SCHEMA), keys in the documented order, unknown keys kept at the end."""
        return _write(self)


_ENTRY_ORDER = ("spec", "label", "source", "ppl", "ppl_err", "n_scored", "token_logprobs", "next_token",
                "generation", "kld", "timings")
_KEY_ORDER: dict[type, tuple[str, ...]] = {Run: Run._ORDER, Entry: _ENTRY_ORDER}


def entries(run: "Run | dict") -> list:
    """The entries of a run, the reference first (when it has one), then the variants as given.

    Takes a Run (-> list[Entry]) or a run JSON dict (-> its entry dicts): the readers of runs take a Run; the
    dict form is for what works on the JSON itself, such as a migration step (MIGRATIONS)."""
    if isinstance(run, Run):
        return ([run.reference] if run.reference is not None else []) + list(run.variants)
    ref = run.get("reference")
    return ([ref] if ref is not None else []) + list(run.get("variants") or [])


def as_run(run: "Run | dict") -> "Run":
    """`run` itself when it is a Run; a run JSON dict is read once through Run.from_json (validated).

    The readers of runs (report, export, the dashboard) take either through this, so a caller holding the JSON
    (a test, a script, `runs export`'s output read back) needs no conversion of its own."""
    return run if isinstance(run, Run) else Run.from_json(run)


def read(cls: type, data: Any, path: str = "") -> Any:
    """One object of the schema (a Source, a Load, a TokenProb, …) read from its JSON dict and validated, as
    Run.from_json reads it inside a run; `path` names it in errors. compare.py builds runs with it from the
    engine's dicts."""
    return _read(cls, data, path)


# --------------------------------------------------------------------------------------------- migrations

# schema N -> a function taking a run dict of schema N and returning one of schema N + 1. Schema 1 is the
# first released shape (commit c3c9c7b, tests/data/c3c9c7b) and still the current one: no step yet.
MIGRATIONS: dict[int, Callable[[dict], dict]] = {}


def migrate(data: Any) -> dict:
    """A run dict of any schema this release reads, brought up to SCHEMA (a copy when a step ran)."""
    if not isinstance(data, dict):
        raise RunFormatError(f"run JSON: the run must be an object, got {_short(data)}")
    if "schema" not in data:
        raise RunFormatError("run JSON: schema is missing (the run JSON's version number; see docs/run.md)")
    version = data["schema"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise RunFormatError(f"run JSON: schema must be an integer, got {_short(version)}")
    if version > SCHEMA:
        raise RunFormatError(f"run JSON: schema {version} is newer than this pythia-compare reads (up to "
                             f"{SCHEMA}); upgrade pythia-compare to open this run")
    if version < 1 or any(v not in MIGRATIONS for v in range(version, SCHEMA)):
        raise RunFormatError(f"run JSON: schema {version} is not a schema of pythia-compare (1 … {SCHEMA})")
    while version < SCHEMA:
        data = MIGRATIONS[version](copy.deepcopy(data))
        version += 1
        data["schema"] = version
    return data


# --------------------------------------------------------------------------------------------- reading


def _fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.metadata.get("json", True)]


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _optional(tp: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return (args[0] if len(args) == 1 else Union[tuple(args)]), len(args) < len(typing.get_args(tp))
    return tp, False


def _where(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _read(tp: Any, v: Any, path: str) -> Any:
    inner, nullable = _optional(tp)
    name = path or "the run"
    if v is None:
        if nullable:
            return None
        raise RunFormatError(f"run JSON: {name} must not be null")
    if dataclasses.is_dataclass(inner):
        if not isinstance(v, dict):
            raise RunFormatError(f"run JSON: {name} must be an object, got {_short(v)}")
        kwargs: dict[str, Any] = {}
        hints = _hints(inner)
        known = set()
        for f in _fields(inner):
            known.add(f.name)
            if f.name in v:
                if v[f.name] is None and f.metadata.get("added"):
                    raise RunFormatError(f"run JSON: {_where(path, f.name)} must not be null (leave the key out)")
                kwargs[f.name] = _read(hints[f.name], v[f.name], _where(path, f.name))
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise RunFormatError(f"run JSON: {_where(path, f.name)} is missing")
        for k in v:
            if not isinstance(k, str):
                raise RunFormatError(f"run JSON: {name} has a non-string key {_short(k)}")
        extra = {k: copy.deepcopy(x) for k, x in v.items() if k not in known}
        return inner(**kwargs, extra=extra)
    origin = typing.get_origin(inner)
    if origin is dict:
        key_tp, item = typing.get_args(inner)
        if not isinstance(v, dict):
            raise RunFormatError(f"run JSON: {name} must be an object, got {_short(v)}")
        for k in v:
            if not isinstance(k, key_tp):
                raise RunFormatError(f"run JSON: {name} has a non-string key {_short(k)}")
        return {k: _read(item, x, f"{name}[{k!r}]") for k, x in v.items()}
    if origin is list:
        (item,) = typing.get_args(inner)
        if not isinstance(v, list):
            raise RunFormatError(f"run JSON: {name} must be a list of {_plural(item)}, got {_short(v)}")
        if item in _PLURALS:  # a list of scalars (long: per-token values): one check, one message naming the item
            ok = _SCALAR_OK[item]
            if all(ok(x) for x in v):
                return [float(x) for x in v] if item is float else list(v)
            i = next(i for i, x in enumerate(v) if not ok(x))
            raise RunFormatError(f"run JSON: {name} must be a list of {_plural(item)}; item {i} is {_short(v[i])}")
        return [_read(item, x, _where(path, i)) for i, x in enumerate(v)]
    if inner is bool:
        if not isinstance(v, bool):
            raise RunFormatError(f"run JSON: {name} must be true or false, got {_short(v)}")
        return v
    if inner is int:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise RunFormatError(f"run JSON: {name} must be an integer, got {_short(v)}")
        return int(v)
    if inner is float:
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise RunFormatError(f"run JSON: {name} must be a number, got {_short(v)}")
        return float(v)
    if inner is str:
        if not isinstance(v, str):
            raise RunFormatError(f"run JSON: {name} must be a string, got {_short(v)}")
        return v
    raise TypeError(f"run.py has no reader for the type {inner!r} of {name}")  # a bug in this module


_PLURALS = {float: "numbers", int: "integers", str: "strings", bool: "true/false values"}


def _plural(tp: Any) -> str:
    return _PLURALS.get(tp, "objects")


_SCALAR_OK: dict[type, Callable[[Any], bool]] = {
    float: lambda x: type(x) is float or (isinstance(x, numbers.Real) and not isinstance(x, bool)),
    int: lambda x: type(x) is int or (isinstance(x, numbers.Integral) and not isinstance(x, bool)),
    str: lambda x: isinstance(x, str),
    bool: lambda x: isinstance(x, bool),
}


# --------------------------------------------------------------------------------------------- writing


def _write(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        keys = [f.name for f in _fields(type(v)) if not (f.metadata.get("added") and getattr(v, f.name) is None)]
        order = _KEY_ORDER.get(type(v))
        if order:
            keys = [k for k in order if k in keys] + [k for k in keys if k not in order]
        out = {k: _write(getattr(v, k)) for k in keys}
        out.update(copy.deepcopy(v.extra))
        return out
    return _each(v, _write)


def _copy(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return type(v)(**{f.name: copy.deepcopy(getattr(v, f.name)) if not f.metadata.get("json", True)
                          else _copy(getattr(v, f.name)) for f in dataclasses.fields(v)})
    return _each(v, _copy)


def _each(v: Any, f: Callable[[Any], Any]) -> Any:
    """A dict or list with f applied to each item (the schema's lists are of one type: a list of scalars is
    copied as is); any other value as it is."""
    if isinstance(v, dict):
        return {k: f(x) for k, x in v.items()}
    if isinstance(v, list):
        if v and isinstance(v[0], (str, int, float)):
            return list(v)
        return [f(x) for x in v]
    return v


# --------------------------------------------------------------------------------------------- the contract


def _type_name(tp: Any) -> str:
    inner, nullable = _optional(tp)
    if typing.get_origin(inner) is list:
        name = f"[{_type_name(typing.get_args(inner)[0])}]"
    elif typing.get_origin(inner) is dict:
        name = "{" + ": ".join(_type_name(a) for a in typing.get_args(inner)) + "}"
    elif dataclasses.is_dataclass(inner):
        name = inner.__name__
    else:
        name = {str: "str", int: "int", float: "float", bool: "bool"}[inner]
    return f"{name} | null" if nullable else name


def field_table(cls: type = Run, prefix: str = "") -> list[tuple[str, str, bool]]:
    """Every key of the JSON of `cls`, depth first: (dotted path, type, required), as docs/run.md lists them.

    A list's items are written `key[]`; an object that occurs more than once (an Entry, a TokenProb) is
    listed once, under its first path, and later paths name its type."""
    out: list[tuple[str, str, bool]] = []
    seen: set[type] = set()

    def walk(c: type, pre: str) -> None:
        seen.add(c)
        hints = _hints(c)
        names = [f.name for f in _fields(c)]
        order = _KEY_ORDER.get(c)
        if order:
            names = [k for k in order if k in names] + [k for k in names if k not in order]
        by_name = {f.name: f for f in _fields(c)}
        for n in names:
            f = by_name[n]
            tp = hints[n] if not f.metadata.get("added") else _optional(hints[n])[0]  # added: never null
            path = f"{pre}.{n}" if pre else n
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            out.append((path, _type_name(tp), required))
            inner, _ = _optional(tp)
            if typing.get_origin(inner) is list:
                inner, path = typing.get_args(inner)[0], path + "[]"
            if dataclasses.is_dataclass(inner) and inner not in seen:
                walk(inner, path)

    walk(cls, prefix)
    return out
