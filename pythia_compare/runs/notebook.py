"""The notebook: the typed form of the notebook JSON (docs/notebook.md), one variant set and an ordered list of cells.

Owns the notebook's shape: the dataclasses `Notebook`, `VariantSet`, `Cell`, with `from_json` (validated: a
malformed notebook raises NotebookFormatError naming the key's full path, e.g. `cells[3].prompt`) and `to_json`;
its limits (params.NOTEBOOK, and the run's own text caps from Settings); what a comparison cell runs with (its own
variant set or the notebook's, the notebook's settings under the cell's overrides) and whether its output is stale
(computed with another variant set). Pure: no I/O, no database, no model; cell ids are drawn here (random).
"""

from __future__ import annotations

import math
import re
import secrets
from dataclasses import dataclass, field, replace
from typing import Any

from ..config import Settings
from ..errors import BadInput, SpecError
from ..params import LIMITS, NOTEBOOK
from ..variants import parse_spec

SCHEMA = 1  # the notebook JSON's schema version
KINDS = ("note", "comparison")
SCORINGS = ("auto", "prompt", "corpus")
SETTING_KEYS = tuple(LIMITS)  # ctx, top_k, max_tokens, temperature, seed: a cell may override any of them
ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")  # notebook and cell ids (secrets.token_urlsafe's alphabet)


class NotebookFormatError(BadInput):
    """A notebook JSON does not have the shape of docs/notebook.md, or breaks a limit; the message names the key."""


def new_cell_id() -> str:
    """A random cell id (8 URL-safe characters starting with a letter or digit)."""
    while True:
        token = secrets.token_urlsafe(6)
        if token[0].isalnum():
            return token


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def _fail(path: str, what: str) -> NotebookFormatError:
    return NotebookFormatError(f"notebook JSON: {path} {what}")


@dataclass
class VariantSet:
    """The models a comparison runs: specs in order (variants.py's grammar) and a reference (None: no KL)."""
    specs: list[str]
    reference: str | None = None

    def to_json(self) -> dict:
        return {"specs": list(self.specs), "reference": self.reference}

    def describe(self) -> str:
        """The set in a few words, e.g. "demo:Q8_0, demo:Q2_K (reference demo:F16)"."""
        ref = f" (reference {self.reference})" if self.reference else " (no reference)"
        return (", ".join(self.specs) or "no variants") + ref


@dataclass
class Cell:
    """A note (Markdown in `markdown`) or a comparison (a prompt or a text, scoring, overrides, maybe its own set).

    A comparison's output is an ordinary run of the run log: `run_id`, computed with `computed_with`."""
    id: str
    kind: str
    markdown: str | None = None  # a note's text
    prompt: str | None = None  # a comparison's prompt …
    text: str | None = None  # … or its text (corpus scoring); exactly one of the two
    scoring: str = "auto"
    overrides: dict = field(default_factory=dict)  # setting -> value, over the notebook's settings
    variants: VariantSet | None = None  # None: the notebook's
    run_id: str | None = None  # the run last computed for this cell
    computed_with: VariantSet | None = None  # the variant set that run was computed with
    error: str | None = None  # why the last attempt to run it failed (shown on the cell; cleared by a success)
    lens: bool = False  # the logit lens at the prompt's last token (prompt cells; the Layers view)

    def to_json(self) -> dict:
        if self.kind == "note":
            return {"id": self.id, "kind": "note", "markdown": self.markdown or ""}
        out = {"id": self.id, "kind": "comparison", "prompt": self.prompt, "text": self.text,
               "scoring": self.scoring, "overrides": dict(self.overrides),
               "variants": self.variants.to_json() if self.variants else None, "run_id": self.run_id,
               "computed_with": self.computed_with.to_json() if self.computed_with else None}
        if self.error:
            out["error"] = self.error
        if self.lens:
            out["lens"] = True  # left out when off, so notebooks saved before the switch read the same
        return out

    @property
    def input(self) -> str:
        """The comparison's input: its prompt, else its text ('' for a note)."""
        return (self.prompt if self.prompt else self.text) or ""


@dataclass
class Notebook:
    """One variant set, default settings and ordered cells; `notebook_id`/`revision` are set by the store."""
    title: str
    variants: VariantSet
    settings: dict  # every key of SETTING_KEYS
    cells: list[Cell]
    notebook_id: str | None = None
    revision: int | None = None
    created_at: str | None = None  # the revision's time (UTC ISO 8601)
    schema: int = SCHEMA

    # ------------------------------------------------------------------------ building
    @classmethod
    def new(cls, title: str = "Untitled notebook", specs: list[str] | None = None, reference: str | None = None,
            settings: Settings | None = None, **overrides) -> "Notebook":
        """An empty notebook on a variant set, its settings the defaults of `settings` (from the environment)
        under `overrides` (ctx=…, top_k=…)."""
        s = settings or Settings.from_env()
        values = {k: LIMITS[k].default(s) for k in SETTING_KEYS}
        values.update(overrides)
        nb = cls(title=title, variants=VariantSet(list(specs or []), reference), settings=values, cells=[])
        return cls.from_json(nb.to_json(), s)  # validated

    def add_note(self, markdown: str, after: int | None = None) -> Cell:
        """A note cell, appended (or placed after cell index `after`)."""
        return self._insert(Cell(new_cell_id(), "note", markdown=markdown), after)

    def add_comparison(self, prompt: str | None = None, text: str | None = None, scoring: str = "auto",
                       specs: list[str] | None = None, reference: str | None = None, after: int | None = None,
                       **overrides) -> Cell:
        """A comparison cell (a prompt or a text), appended (or after cell `after`); `specs` gives it its own
        variant set, `overrides` its own settings (ctx=…, max_tokens=…)."""
        own = VariantSet(list(specs), reference) if specs else None
        return self._insert(Cell(new_cell_id(), "comparison", prompt=prompt, text=text, scoring=scoring,
                                 overrides=overrides, variants=own), after)

    def _insert(self, cell: Cell, after: int | None) -> Cell:
        if len(self.cells) >= NOTEBOOK.max_cells:
            raise NotebookFormatError(f"a notebook holds at most {NOTEBOOK.max_cells} cells; this one is full "
                                      f"(delete a cell, or start another notebook)")
        at = len(self.cells) if after is None else max(0, min(len(self.cells), after + 1))
        _check_cell(cell.to_json(), f"cells[{at}]", Settings.from_env())
        self.cells.insert(at, cell)
        return cell

    # ------------------------------------------------------------------------ what a cell runs with
    def variants_of(self, cell: Cell) -> VariantSet:
        return cell.variants or self.variants

    def settings_of(self, cell: Cell) -> dict:
        return {**self.settings, **cell.overrides}

    def is_stale(self, cell: Cell) -> bool:
        """A computed comparison whose variant set is not the one it would run with now."""
        return (cell.kind == "comparison" and cell.run_id is not None and
                (cell.computed_with is None or cell.computed_with.to_json() != self.variants_of(cell).to_json()))

    def cell_index(self, cell_id: str) -> int:
        for i, c in enumerate(self.cells):
            if c.id == cell_id:
                return i
        raise NotebookFormatError(f"this notebook has no cell {_short(cell_id)}")

    def copy(self) -> "Notebook":
        return Notebook.from_json(self.to_json(), None)

    def as_new(self) -> "Notebook":
        """A copy with no id and no revision: saved, it becomes a notebook of its own (Make a copy)."""
        return replace(self.copy(), notebook_id=None, revision=None, created_at=None)

    # ------------------------------------------------------------------------ JSON
    def to_json(self) -> dict:
        return {"schema": self.schema, "notebook_id": self.notebook_id, "revision": self.revision,
                "created_at": self.created_at, "title": self.title, "variants": self.variants.to_json(),
                "settings": dict(self.settings), "cells": [c.to_json() for c in self.cells]}

    @classmethod
    def from_json(cls, data: Any, settings: Settings | None = None) -> "Notebook":
        """A notebook JSON dict -> Notebook, every limit checked; NotebookFormatError names the key's path.

        `settings` gives the text caps (Settings.max_prompt_chars, max_text_chars, max_variants); None: the
        environment's."""
        s = settings or Settings.from_env()
        if not isinstance(data, dict):
            raise NotebookFormatError(f"notebook JSON: the notebook must be an object, got {_short(data)}")
        for key in ("title", "variants", "settings", "cells"):
            if key not in data:
                raise _fail(key, "is missing")
        schema = data.get("schema", SCHEMA)
        if schema != SCHEMA or isinstance(schema, bool):
            raise _fail("schema", f"must be {SCHEMA} (this release's notebook schema), got {_short(schema)}")
        nb_id = data.get("notebook_id")
        if nb_id is not None and not (isinstance(nb_id, str) and ID_RE.fullmatch(nb_id)):
            raise _fail("notebook_id", f"must be a notebook id (1-64 of A-Z a-z 0-9 _ -) or null, got {_short(nb_id)}")
        rev = data.get("revision")
        if rev is not None and (isinstance(rev, bool) or not isinstance(rev, int) or rev < 1):
            raise _fail("revision", f"must be a whole number ≥ 1 or null, got {_short(rev)}")
        created = data.get("created_at")
        if created is not None and not isinstance(created, str):
            raise _fail("created_at", f"must be a string or null, got {_short(created)}")
        title = data["title"]
        if not isinstance(title, str):
            raise _fail("title", f"must be a string, got {_short(title)}")
        if len(title) > NOTEBOOK.max_title_chars:
            raise _fail("title", f"has {len(title)} characters; the limit is {NOTEBOOK.max_title_chars}")
        _check_text(title, "title")
        variants = _variant_set(data["variants"], "variants", s)
        values = _settings(data["settings"], "settings", complete=True)
        cells_json = data["cells"]
        if not isinstance(cells_json, list):
            raise _fail("cells", f"must be a list of cells, got {_short(cells_json)}")
        if len(cells_json) > NOTEBOOK.max_cells:
            raise _fail("cells", f"holds {len(cells_json)} cells; a notebook holds at most {NOTEBOOK.max_cells} "
                                 f"(split it into two notebooks)")
        cells = [_check_cell(c, f"cells[{i}]", s) for i, c in enumerate(cells_json)]
        seen: set[str] = set()
        for i, c in enumerate(cells):
            if c.id in seen:
                raise _fail(f"cells[{i}].id", f"{c.id!r} is the id of an earlier cell too; cell ids are unique")
            seen.add(c.id)
        return cls(title=title, variants=variants, settings=values, cells=cells, notebook_id=nb_id, revision=rev,
                   created_at=created, schema=SCHEMA)


# ---------------------------------------------------------------------------------------------- checks
def _check_text(value: str, path: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _fail(path, "holds a lone surrogate, which is not text") from None


def _variant_set(v: Any, path: str, s: Settings) -> VariantSet:
    if not isinstance(v, dict):
        raise _fail(path, f"must be an object {{\"specs\": [...], \"reference\": ...}}, got {_short(v)}")
    specs, ref = v.get("specs"), v.get("reference")
    if not isinstance(specs, list) or not all(isinstance(x, str) for x in specs):
        raise _fail(f"{path}.specs", f"must be a list of spec strings, got {_short(specs)}")
    if ref is not None and not isinstance(ref, str):
        raise _fail(f"{path}.reference", f"must be a spec string or null, got {_short(ref)}")
    ref = ref.strip() or None if ref is not None else None
    for i, spec in enumerate(specs + ([ref] if ref else [])):
        where = f"{path}.specs[{i}]" if i < len(specs) else f"{path}.reference"
        _check_text(spec, where)
        try:
            parse_spec(spec)
        except SpecError as e:
            raise _fail(where, f"is not a spec: {e}") from None
    n = len(set(specs) | ({ref} if ref else set()))
    if n > s.max_variants:
        raise _fail(f"{path}.specs", f"names {n} models with the reference; a run takes at most {s.max_variants}")
    extra = set(v) - {"specs", "reference"}
    if extra:
        raise _fail(path, f"has keys this schema does not know: {', '.join(sorted(map(str, extra)))}")
    return VariantSet([str(x) for x in specs], ref)


def _settings(v: Any, path: str, complete: bool) -> dict:
    if not isinstance(v, dict):
        raise _fail(path, f"must be an object of settings ({', '.join(SETTING_KEYS)}), got {_short(v)}")
    unknown = [k for k in v if k not in SETTING_KEYS]
    if unknown:
        raise _fail(f"{path}.{unknown[0]}", f"is not a setting; the settings are {', '.join(SETTING_KEYS)}")
    if complete:
        missing = [k for k in SETTING_KEYS if k not in v]
        if missing:
            raise _fail(f"{path}.{missing[0]}", "is missing")
    out = {}
    for k, x in v.items():
        lim = LIMITS[k]
        if isinstance(x, bool) or not isinstance(x, (int, float)) or (lim.whole and not float(x).is_integer()):
            raise _fail(f"{path}.{k}", f"must be {'a whole number' if lim.whole else 'a number'}, got {_short(x)}")
        if not math.isfinite(x) or not lim.lo <= x <= lim.hi:
            raise _fail(f"{path}.{k}", f"is {x!r}, out of range; use {lim.lo:g} … {lim.hi:g}{lim.unit}")
        out[k] = int(x) if lim.whole else float(x)
    return out


def _opt_str(c: dict, key: str, path: str) -> str | None:
    v = c.get(key)
    if v is not None and not isinstance(v, str):
        raise _fail(f"{path}.{key}", f"must be a string or null, got {_short(v)}")
    if v is not None:
        _check_text(v, f"{path}.{key}")
    return v


def _check_cell(c: Any, path: str, s: Settings) -> Cell:
    if not isinstance(c, dict):
        raise _fail(path, f"must be an object (a note or a comparison), got {_short(c)}")
    cid, kind = c.get("id"), c.get("kind")
    if not (isinstance(cid, str) and ID_RE.fullmatch(cid)):
        raise _fail(f"{path}.id", f"must be a cell id (1-64 of A-Z a-z 0-9 _ -), got {_short(cid)}")
    if kind not in KINDS:
        raise _fail(f"{path}.kind", f"must be \"note\" or \"comparison\", got {_short(kind)}")
    if kind == "note":
        md = _opt_str(c, "markdown", path) or ""
        if len(md) > NOTEBOOK.max_note_chars:
            raise _fail(f"{path}.markdown", f"has {len(md):,} characters; a note holds at most "
                                            f"{NOTEBOOK.max_note_chars:,} (split it into several notes)")
        extra = set(c) - {"id", "kind", "markdown"}
        if extra:
            raise _fail(path, f"has keys a note does not have: {', '.join(sorted(map(str, extra)))}")
        return Cell(cid, "note", markdown=md)
    prompt, text = _opt_str(c, "prompt", path), _opt_str(c, "text", path)
    if prompt and text:
        raise _fail(path, "has both a prompt and a text; give one (the text is for corpus scoring)")
    if prompt and len(prompt) > s.max_prompt_chars:
        raise _fail(f"{path}.prompt", f"has {len(prompt):,} characters; the limit is {s.max_prompt_chars:,} "
                                      f"(put longer texts in the cell's text, for corpus scoring)")
    if text and len(text) > s.max_text_chars:
        raise _fail(f"{path}.text", f"has {len(text):,} characters; the limit is {s.max_text_chars:,}")
    scoring = c.get("scoring", "auto")
    if scoring not in SCORINGS:
        raise _fail(f"{path}.scoring", f"must be one of {', '.join(SCORINGS)}, got {_short(scoring)}")
    overrides = _settings(c.get("overrides") or {}, f"{path}.overrides", complete=False)
    own = c.get("variants")
    own_set = _variant_set(own, f"{path}.variants", s) if own is not None else None
    run_id = c.get("run_id")
    if run_id is not None and not (isinstance(run_id, str) and ID_RE.fullmatch(run_id)):
        raise _fail(f"{path}.run_id", f"must be a run id or null, got {_short(run_id)}")
    cw = c.get("computed_with")
    computed = _variant_set(cw, f"{path}.computed_with", Settings(max_variants=10**6)) if cw is not None else None
    error = _opt_str(c, "error", path)
    lens = c.get("lens", False)
    if not isinstance(lens, bool):
        raise _fail(f"{path}.lens", f"must be true or false, got {_short(lens)}")
    extra = set(c) - {"id", "kind", "prompt", "text", "scoring", "overrides", "variants", "run_id", "computed_with",
                      "error", "lens"}
    if extra:
        raise _fail(path, f"has keys a comparison does not have: {', '.join(sorted(map(str, extra)))}")
    return Cell(cid, "comparison", prompt=prompt or None, text=text or None, scoring=scoring, overrides=overrides,
                variants=own_set, run_id=run_id, computed_with=computed, error=(error or None), lens=lens)
