"""How a run JSON dict (docs/run.md) maps onto rows of the run log's tables, and back: validation and the exact inverse.

Owns the column <-> key mapping of runs / run_variants / run_kld (migrations.py owns the tables themselves)
and the refusal of malformed runs. Pure: no database, no I/O; store.py (and sweeps/store.py, for a cell's run)
binds these rows to SQLite.

Round trip: `run_of(run_row + id/created_at, variant_rows, kld_rows)` gives back the dict `rows_of` took
(with those two keys set): scalars go to real columns, variable shapes to JSON text; a key the schema has no column for, a statistic left out, or an optional statistic given as
null is recorded in the row's `extra` JSON column (None normally), so nothing is lost or invented. Floats
survive bit for bit (IEEE doubles in columns, repr in JSON); NaN in a scalar field is refused, since SQLite
stores it as NULL. Lone surrogates are refused in text columns and escaped inside JSON.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable

from .run import KL_STATS, RunFormatError, entries

# Scalar KL statistics with a column in run_kld (the columns migrations give it, in order): run.py's names. A
# statistic outside this list is kept in run_kld.extra; a name added to run.KL_STATS needs a migration that
# adds its column (tests/test_store.py holds the two together).
KLD_STATS = KL_STATS
_RUN_ORDER = ("schema", "run_id", "created_at", "input", "params", "variants", "reference", "versions")
_ENTRY_ORDER = ("spec", "label", "source", "ppl", "ppl_err", "n_scored", "token_logprobs", "next_token",
                "generation", "kld", "timings")


class _Bad(Exception):
    """A validation failure of one value; _flatten turns it into RunFormatError with the key's full path."""


def short_repr(v: Any) -> str:
    """repr(v), cut to 60 characters for error messages."""
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def _number_list(v: Any) -> None:
    if not isinstance(v, list) or not all(x is None or (isinstance(x, numbers.Real) and not isinstance(x, bool))
                                          for x in v):
        raise _Bad(f"must be a list of numbers, got {short_repr(v)}")


def _str_list(v: Any) -> None:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _Bad(f"must be a list of strings, got {short_repr(v)}")


def _dict_list(v: Any) -> None:
    if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
        raise _Bad(f"must be a list of objects, got {short_repr(v)}")


def _dict_or_none(v: Any) -> None:
    if v is not None and not isinstance(v, dict):
        raise _Bad(f"must be an object or null, got {short_repr(v)}")


def _dict(v: Any) -> None:
    if not isinstance(v, dict):
        raise _Bad(f"must be an object, got {short_repr(v)}")


@dataclass(frozen=True)
class _Field:
    """One column: where its value sits in the dict, its kind, and whether the key must be there.

    kind: text | int | num | bool | json, with a trailing '?' when null is allowed. A required key that is
    missing is an error; an optional one may be absent (NULL, not listed in extra) or null (NULL, listed).
    """
    column: str
    path: tuple[str, ...]
    kind: str
    required: bool = True
    check: Callable[[Any], None] | None = None


_RUN_FIELDS = (
    _Field("schema", ("schema",), "int"),
    _Field("text", ("input", "text"), "text"),
    _Field("n_tokens", ("input", "n_tokens"), "int"),
    _Field("tokens", ("input", "tokens"), "json", check=_str_list),
    _Field("scoring", ("params", "scoring"), "text"),
    _Field("ctx", ("params", "ctx"), "int"),
    _Field("top_k", ("params", "top_k"), "int"),
    _Field("max_tokens", ("params", "max_tokens"), "int"),
    _Field("temperature", ("params", "temperature"), "num"),
    _Field("seed", ("params", "seed"), "int"),
    _Field("flash_attn", ("params", "flash_attn"), "bool"),
    _Field("reference_spec", ("params", "reference"), "text?"),
    _Field("versions", ("versions",), "json", check=_dict),
)
_VARIANT_FIELDS = (
    _Field("spec", ("spec",), "text"),
    _Field("label", ("label",), "text"),
    _Field("repo", ("source", "repo"), "text?"),
    _Field("commit_sha", ("source", "commit"), "text?"),
    _Field("file", ("source", "file"), "text?"),
    _Field("sha256", ("source", "sha256"), "text?"),
    _Field("bytes", ("source", "bytes"), "int?"),
    _Field("quant", ("source", "quant"), "text?"),
    _Field("ppl", ("ppl",), "num?"),
    _Field("ppl_err", ("ppl_err",), "num?"),
    _Field("n_scored", ("n_scored",), "int"),
    _Field("token_logprobs", ("token_logprobs",), "json", check=_number_list),
    _Field("next_token", ("next_token",), "json", check=_dict_list),
    _Field("generation", ("generation",), "json?", check=_dict_or_none),
    _Field("load_s", ("timings", "load_s"), "num?"),
    _Field("score_s", ("timings", "score_s"), "num?"),
    _Field("generate_s", ("timings", "generate_s"), "num?"),
)
_KLD_FIELDS = tuple(_Field(c, (c,), "num?", required=False) for c in KLD_STATS) + (
    _Field("per_token", ("per_token",), "json?", required=False, check=_number_list),
    _Field("dp_per_token", ("dp_per_token",), "json?", required=False, check=_number_list),
)
# Keys handled outside the field lists: (fields, keys known at the top level besides the fields' own).
_RUN_SPECIAL = ("run_id", "created_at", "variants", "reference")
_VARIANT_SPECIAL = ("kld",)


def _dotted(where: str, path: tuple[str, ...] | list[str]) -> str:
    return ".".join([where, *path] if where else path) or "the run"


def _encode(v: Any, f: _Field) -> Any:
    """Check `v` against the field's kind and return the value to bind; raises _Bad."""
    kind = f.kind.rstrip("?")
    if v is None:
        if f.kind.endswith("?") or not f.required:
            return None
        raise _Bad("must not be null")
    if kind == "text":
        if not isinstance(v, str):
            raise _Bad(f"must be a string, got {short_repr(v)}")
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            raise _Bad("is not valid Unicode text (it holds a lone surrogate)") from None
        return v
    if kind == "int":
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not -2 ** 63 <= int(v) < 2 ** 63:
            raise _Bad(f"must be an integer (64-bit), got {short_repr(v)}")
        return int(v)
    if kind == "num":
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise _Bad(f"must be a number, got {short_repr(v)}")
        if math.isnan(v):
            raise _Bad("is NaN, which SQLite cannot store; use null for a missing value")
        return float(v)
    if kind == "bool":
        if not isinstance(v, bool):
            raise _Bad(f"must be true or false, got {short_repr(v)}")
        return int(v)
    if f.check:
        f.check(v)
    return _json(v)


def text_or_none(v: Any, what: str) -> str | None:
    """`v` if it is None or storable text, else RunFormatError naming `what`."""
    try:
        return _encode(v, _Field(what, (what,), "text?"))
    except _Bad as e:
        raise RunFormatError(f"{what} {e}") from None


def _json(v: Any) -> str:
    try:
        text = json.dumps(v, ensure_ascii=False)
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:  # lone surrogates: keep them as \\udXXXX escapes, which round-trip
        return json.dumps(v)
    except (TypeError, ValueError) as e:
        raise _Bad(f"is not JSON-serializable ({e})") from None


def _decode(v: Any, f: _Field) -> Any:
    if v is None:
        return None
    kind = f.kind.rstrip("?")
    if kind == "bool":
        return bool(v)
    if kind == "json":
        return json.loads(v)
    if kind == "num":
        return float(v)
    return v


def _node(obj: dict, path: tuple[str, ...], where: str) -> dict:
    for i, key in enumerate(path):
        if key not in obj:
            raise RunFormatError(f"run JSON: {_dotted(where, path[:i + 1])} is missing")
        obj = obj[key]
        if not isinstance(obj, dict):
            raise RunFormatError(f"run JSON: {_dotted(where, path[:i + 1])} must be an object, got {short_repr(obj)}")
    return obj


def _flatten(obj: Any, fields: tuple[_Field, ...], special: tuple[str, ...], where: str) -> dict:
    """Validate `obj` and return its row (column -> value) with an "extra" JSON column, or raise RunFormatError."""
    if not isinstance(obj, dict):
        raise RunFormatError(f"run JSON: {where or 'the run'} must be an object, got {short_repr(obj)}")
    known: dict[tuple[str, ...], set[str]] = {(): set(special)}
    for f in fields:
        for i in range(len(f.path)):
            known.setdefault(f.path[:i], set()).add(f.path[i])
    more: list = []
    for container, keys in known.items():
        node = _node(obj, container, where)
        for k, v in node.items():
            if not isinstance(k, str):
                raise RunFormatError(f"run JSON: {_dotted(where, container)} has a non-string key {short_repr(k)}")
            if k not in keys:
                more.append([[*container, k], v])
    row: dict = {}
    nulls: list = []
    for f in fields:
        parent = _node(obj, f.path[:-1], where)
        if f.path[-1] not in parent:
            if f.required:
                raise RunFormatError(f"run JSON: {_dotted(where, f.path)} is missing")
            row[f.column] = None
            continue
        v = parent[f.path[-1]]
        if v is None and not f.required:
            nulls.append(list(f.path))
        try:
            row[f.column] = _encode(v, f)
        except _Bad as e:
            raise RunFormatError(f"run JSON: {_dotted(where, f.path)} {e}") from None
    extra = {k: v for k, v in (("nulls", nulls), ("more", more)) if v}
    try:
        row["extra"] = _json(extra) if extra else None
    except _Bad as e:
        raise RunFormatError(f"run JSON: an unknown key under {where or 'the run'} {e}") from None
    return row


def _unflatten(row: dict, fields: tuple[_Field, ...]) -> dict:
    extra = json.loads(row["extra"]) if row.get("extra") else {}
    nulls = {tuple(p) for p in extra.get("nulls", [])}
    out: dict = {}
    for f in fields:
        v = row[f.column]
        if v is None and not f.required and f.path not in nulls:
            continue  # the key was absent
        _put(out, f.path, _decode(v, f))
    for path, v in extra.get("more", []):
        _put(out, tuple(path), v)
    return out


def _put(out: dict, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        out = out.setdefault(key, {})
    out[path[-1]] = value


def _entry_rows(entry: Any, where: str, position: int, role: str) -> tuple[dict, dict | None]:
    """One variant (or the reference) -> (its run_variants row, its run_kld row or None)."""
    row = _flatten(entry, _VARIANT_FIELDS, _VARIANT_SPECIAL, where)
    row.update(position=position, role=role)
    if "kld" not in entry:
        extra = json.loads(row["extra"]) if row["extra"] else {}
        extra["absent"] = ["kld"]
        row["extra"] = _json(extra)
        return row, None
    if entry["kld"] is None:
        return row, None
    kld = _flatten(entry["kld"], _KLD_FIELDS, (), f"{where}.kld")
    kld["position"] = position
    return row, kld


def rows_of(run: Any) -> tuple[dict, list[dict], list[dict]]:
    """Validate a run dict and turn it into (runs row, run_variants rows, run_kld rows); raises RunFormatError."""
    run_row = _flatten(run, _RUN_FIELDS, _RUN_SPECIAL, "")
    for key in ("variants", "reference"):
        if key not in run:
            raise RunFormatError(f"run JSON: {key} is missing")
    if not isinstance(run["variants"], list):
        raise RunFormatError(f"run JSON: variants must be a list, got {short_repr(run['variants'])}")
    has_ref = run["reference"] is not None
    variant_rows, kld_rows = [], []
    for position, entry in enumerate(entries(run)):  # the run's one order: the reference first (run.entries)
        where, role = ("reference", "reference") if has_ref and position == 0 else \
            (f"variants[{position - has_ref}]", "variant")
        v_row, k_row = _entry_rows(entry, where, position, role)
        variant_rows.append(v_row)
        if k_row is not None:
            kld_rows.append(k_row)
    return run_row, variant_rows, kld_rows


def _entry_of(row: dict, kld_row: dict | None) -> dict:
    entry = _unflatten(row, _VARIANT_FIELDS)
    absent = (json.loads(row["extra"]) if row["extra"] else {}).get("absent", [])
    if "kld" not in absent:
        entry["kld"] = _unflatten(kld_row, _KLD_FIELDS) if kld_row else None
    return _ordered(entry, _ENTRY_ORDER)


def run_of(run_row: dict, variant_rows: list[dict], kld_rows: list[dict]) -> dict:
    """Rebuild the run JSON from its rows (dicts keyed by column; variant rows in position order)."""
    run = _unflatten(run_row, _RUN_FIELDS)
    run["run_id"], run["created_at"] = run_row["id"], run_row["created_at"]
    klds = {k["position"]: k for k in kld_rows}
    run["reference"] = None
    run["variants"] = []
    for r in variant_rows:
        entry = _entry_of(r, klds.get(r["position"]))
        if r["role"] == "reference":
            run["reference"] = entry
        else:
            run["variants"].append(entry)
    return _ordered(run, _RUN_ORDER)


def _ordered(d: dict, order: tuple[str, ...]) -> dict:
    return {k: d[k] for k in (*[o for o in order if o in d], *[k for k in d if k not in order])}
