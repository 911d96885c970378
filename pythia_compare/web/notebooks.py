"""The Notebook tab's decisions, without gradio: opening, editing, running and saving notebooks, safe notes, exports.

Owns what the page does to a notebook (docs/notebook.md): opening `?notebook=ID` / `ID@REV` with no model loaded,
the page's edits (add a note or a comparison below a cell, move, delete, the variant set and settings), running one
cell through the shared Dashboard (its run saved and backed up as any run), Run all's plan (every comparison cell,
at most params.NOTEBOOK.public_run_all_cells in public mode, each its own queued job), stale marks, saving a new
revision (a conflict offers a copy; in public mode only the owner changes or deletes), a Compare run added to a
notebook and a History run opened as a one-cell notebook; rendering notes as safe HTML (markdown-it with raw HTML
off and only http(s)/mailto/relative links: no script, iframe, event handler or javascript: URL can come through);
and the two exports, .ipynb (nbformat 4, every input a json.dumps literal in a `pc.compare(...)` call, outputs
embedded) and .html (one self-contained page, plotly.js inlined once), served as attachments named by id.
Also the library's notebook object (`LibraryNotebook`, `open_notebook`; api.py re-exports them as pc.Notebook
and pc.open_notebook). Never imports gradio (ui.py), never writes SQL (runs/notebookstore.py), never draws a figure
itself (plots.py).
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ..config import Settings, __version__
from ..errors import BadInput, PythiaCompareError
from ..params import LIMITS, NOTEBOOK
from ..runs import report
from ..runs.notebook import Cell, Notebook, NotebookFormatError, VariantSet, new_cell_id
from ..runs.notebookrun import cell_job, comparison_ids, computed, failed, run_cells
from ..runs.notebookstore import NotebookConflict, NotebookNotFound, NotebookNotYours, NotebookStore
from ..runs.run import Run

if TYPE_CHECKING:
    from .dashboard import Dashboard

NOTEBOOK_PATH = "pc-notebook"  # a notebook's exports: <page>/pc-notebook/<id>.ipynb, <id>@<rev>.html, …
EXPORT_TYPES = {"ipynb": "application/x-ipynb+json", "html": "text/html; charset=utf-8"}
NOTEBOOK_NOT_FOUND = ("### Notebook not found\nNo stored notebook matches this link. It may have been deleted, or "
                      "the link was cut short. Start a new notebook here, or open one from the list.")
PLOTLY_MIME = "application/vnd.plotly.v1+json"


# ------------------------------------------------------------------------------------------ safe notes
_SAFE_SCHEMES = ("http:", "https:", "mailto:")


def _md():
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable("table")
    md.enable("strikethrough")

    def validate(url: str) -> bool:
        u = re.sub(r"[\x00-\x20\x7f]", "", url).lower()
        if ":" not in u.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]:
            return True  # relative: a path, ?query or #anchor
        return u.startswith(_SAFE_SCHEMES)

    md.validateLink = validate
    return md


_MD = None


def render_note(markdown: str) -> str:
    """A note's Markdown as HTML that runs nothing: raw HTML is shown as text (escaped), links and images only
    http(s), mailto or relative (a javascript:, data: or vbscript: URL stays plain text), links open with
    rel="noopener noreferrer nofollow"."""
    global _MD
    if _MD is None:
        _MD = _md()
    out = _MD.render(markdown or "")
    return out.replace("<a href=", '<a rel="noopener noreferrer nofollow" target="_blank" href=')


# ------------------------------------------------------------------------------------------ a cell's look
def cell_status(nb: Notebook, cell: Cell) -> str:
    """What a comparison cell says above its output (Markdown): its run, stale with what it was computed with,
    its last error, or not run yet."""
    if cell.kind != "comparison":
        return ""
    parts = []
    if cell.error:
        parts.append(f"**This cell failed:** {cell.error}")
    if cell.run_id and nb.is_stale(cell):
        was = cell.computed_with.describe() if cell.computed_with else "another variant set"
        parts.append(f"**Stale:** computed with {_md_text(was)}; the variant set is now "
                     f"{_md_text(nb.variants_of(cell).describe())}. Run the cell again to update it.")
    if cell.run_id:
        parts.append(f"Run `{cell.run_id}` ([open](?run={cell.run_id}))")
    elif not cell.error:
        parts.append("Not run yet.")
    return "\n\n".join(parts)


def _md_text(s: str) -> str:
    """Text shown inside Markdown as itself (backslash-escaped punctuation)."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!<>|~])", r"\\\1", s)


def summary_html(run: Run) -> str:
    """The summary table (the CLI's numbers) as an HTML table; every cell escaped."""
    cols, rows = report.summary_table(run)
    cells = report.format_table(cols, rows)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in cells)
    return f'<table class="pc-summary"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def summary_text(run: Run) -> str:
    return report.text_table(*report.summary_table(run))


# ------------------------------------------------------------------------------------------ the page's desk
@dataclass
class Saved:
    """What a save did: the notebook as stored, or (conflict / not yours / too big) why nothing was saved."""
    notebook: Notebook
    message: str
    ok: bool
    conflict: bool = False


class NotebookDesk:
    """The Notebook tab's work for one process, over the page's Dashboard (its settings, pool, run log, backup)."""

    def __init__(self, core: "Dashboard", family: str | None = None):
        self.core = core
        self.family = family  # the page's default family (its catalog's): a new notebook's variant set
        self.settings: Settings = core.settings
        self.store = NotebookStore(core.store, core.settings)

    # ------------------------------------------------------------------------ opening
    def blank(self, title: str = "Untitled notebook") -> Notebook:
        """A new notebook on the Compare tab's default variant set, with one comparison cell."""
        from .dashboard import DEFAULT_QUANTS, default_reference

        family = self.family or ("demo" if self.core.demo_final is not None and self.settings.offline else "pythia")
        specs = [f"demo:{q}" if family == "demo" else q for q in DEFAULT_QUANTS[family]]
        ref = default_reference(specs) or None
        nb = Notebook.new(title, [s for s in specs if s != ref], ref, self.settings)
        nb.add_comparison(prompt="The capital of France is")
        return nb

    def open(self, ref: object) -> tuple[Notebook | None, str]:
        """(the notebook of "ID" or "ID@REV", '') or (None, why it cannot be opened) for any ref, hostile ones too."""
        if not isinstance(ref, str) or not 0 < len(ref) <= 80:
            return None, NOTEBOOK_NOT_FOUND
        try:
            return self.store.get(ref), ""
        except NotebookNotFound as e:
            return None, NOTEBOOK_NOT_FOUND + f"\n\n{e}"
        except PythiaCompareError as e:
            return None, f"### The notebook cannot be opened\n{e}"

    def api(self, ref: str) -> dict:
        """The "/notebook" API: the notebook JSON of "ID" or "ID@REV" (docs/notebook.md; it holds no owner)."""
        return self.store.get(ref).to_json()

    def read_only(self, nb: Notebook, owner: str | None) -> bool:
        """Whether this browser may only open and copy it (public mode, a stored notebook someone else owns)."""
        return bool(self.settings.public and nb.notebook_id and not self.store.is_owner(nb.notebook_id, owner))

    def refuse_run(self, nb: Notebook, owner: str | None) -> str:
        """Why this browser may not run cells of `nb` ('' when it may): in public mode, only the owner's notebook
        records runs; anyone else makes a copy first."""
        if self.read_only(nb, self.core.owner_of(owner)):
            return ("this notebook belongs to another browser, so its cells are not run here; Make a copy, then run "
                    "the copy")
        return ""

    def listing(self, owner: str | None) -> list[list]:
        """[id, title, updated, revision, cells] rows: this browser's notebooks in public mode, all locally."""
        token = self.core.owner_of(owner)
        if self.settings.public and not token:
            return []
        rows = self.store.list(owner=token if self.settings.public else None)
        return [[r["notebook_id"], r["title"], str(r["updated_at"])[:19].replace("T", " "), r["revision"], r["cells"]]
                for r in rows]

    # ------------------------------------------------------------------------ saving
    def save(self, nb: Notebook, owner: str | None, *, as_copy: bool = False) -> Saved:
        """A new revision (or, as_copy, a new notebook owned by this browser); never raises for a conflict, a
        notebook of another browser or a broken limit: Saved says why nothing was saved."""
        token = self.core.owner_of(owner)
        if self.settings.public and not token and nb.notebook_id and not as_copy:
            return Saved(nb, "this browser has no owner token, and only a notebook's owner can change it; reload "
                             "the page, then Make a copy", False)
        try:
            stored = self.store.save(nb, owner=token if (self.settings.public or as_copy or not nb.notebook_id)
                                     else None, as_copy=as_copy)
        except NotebookConflict as e:
            return Saved(nb, str(e), False, conflict=True)
        except (NotebookNotYours, NotebookFormatError, NotebookNotFound) as e:
            return Saved(nb, str(e), False)
        if self.core.backup is not None:
            self.core.backup.notebook_saved(stored.to_json(), self.store.owner_of(stored.notebook_id))
        what = "a copy" if as_copy else "revision"
        note = (f"Saved as a new notebook `{stored.notebook_id}`." if as_copy or stored.revision == 1 else
                f"Saved {what} {stored.revision} of `{stored.notebook_id}`.")
        return Saved(stored, note, True)

    def delete(self, nb_id: object, owner: str | None) -> str:
        """Delete a notebook and all its revisions (public: only the owner's); the message says what happened."""
        token = self.core.owner_of(owner)
        if not isinstance(nb_id, str) or not nb_id:
            return "There is no saved notebook to delete."
        if self.settings.public and not token:
            return "Only its owner can delete this notebook."
        try:
            self.store.delete(nb_id, owner=token if self.settings.public else None)
        except PythiaCompareError as e:
            return str(e)
        if self.core.backup is not None:
            self.core.backup.notebook_deleted(nb_id)
        return f"Deleted notebook `{nb_id}` and every revision of it (its runs stay in History)."

    # ------------------------------------------------------------------------ edits (in memory; the page saves)
    @staticmethod
    def add(nb: Notebook, kind: str, after: int | None) -> Notebook:
        if kind == "note":
            nb.add_note("", after=after)
        else:
            nb.add_comparison(prompt="", after=after)
        return nb

    @staticmethod
    def move(nb: Notebook, index: int, delta: int) -> Notebook:
        j = index + delta
        if 0 <= index < len(nb.cells) and 0 <= j < len(nb.cells):
            nb.cells[index], nb.cells[j] = nb.cells[j], nb.cells[index]
        return nb

    @staticmethod
    def remove(nb: Notebook, index: int) -> Notebook:
        if 0 <= index < len(nb.cells):
            del nb.cells[index]
        return nb

    def set_input(self, nb: Notebook, index: int, value: str) -> Notebook:
        """A comparison's input box: its prompt, or its text when longer than a prompt may be or corpus-scored."""
        cell = nb.cells[index]
        if cell.kind == "note":
            cell.markdown = value
            return nb
        if cell.scoring == "corpus" or len(value) > self.settings.max_prompt_chars:
            cell.prompt, cell.text = None, value
        else:
            cell.prompt, cell.text = value, None
        return nb

    def set_cell_options(self, nb: Notebook, index: int, scoring: str, specs: str, reference: str,
                         overrides: str, lens: bool = False) -> Notebook:
        """A comparison's own settings: scoring, its own variant set (blank: the notebook's), overrides as
        "ctx=64 max_tokens=8", the logit lens switch. BadInput names what is wrong."""
        from .dashboard import split_specs

        cell = nb.cells[index]
        if cell.kind != "comparison":
            return nb
        own = split_specs(specs)
        data = cell.to_json()
        data.update(scoring=scoring or "auto", overrides=parse_overrides(overrides), lens=bool(lens),
                    variants={"specs": own, "reference": (reference or "").strip() or None} if own else None)
        if data["scoring"] == "corpus" and data["prompt"]:
            data["text"], data["prompt"] = data["prompt"], None
        nb.cells[index] = Notebook.from_json({**nb.to_json(), "cells": [data]}, self.settings).cells[0]
        return nb

    def set_variants(self, nb: Notebook, specs: list[str], reference: str | None, title: str,
                     numbers: dict) -> Notebook:
        """The notebook's variant set, title and default settings; the cells computed with another set become
        stale (nothing is recomputed)."""
        data = nb.to_json()
        data.update(title=title or "Untitled notebook", variants={"specs": specs, "reference": reference or None},
                    settings={**data["settings"], **numbers})
        return Notebook.from_json(data, self.settings)

    # ------------------------------------------------------------------------ running
    def run_all_plan(self, nb: Notebook) -> tuple[list[str], str]:
        """(the cell ids Run all runs, in order; a note when some are left out by the public cap)."""
        ids = comparison_ids(nb)
        cap = NOTEBOOK.public_run_all_cells if self.settings.public else NOTEBOOK.max_cells
        if len(ids) > cap:
            return ids[:cap], (f"Run all runs at most {cap} cells on this public server; the first {cap} of "
                               f"{len(ids)} are queued. Run the others one by one.")
        return ids, ""

    def run_cell(self, nb: Notebook, cell_id: str, owner: str | None) -> Iterator[tuple[float, str]]:
        """Run one comparison cell through the Dashboard (streamed on its own thread; its run saved, and backed
        up, as any run): yields (fraction, message) and records the run id or the error on the cell of `nb`."""
        cell = nb.cells[nb.cell_index(cell_id)]
        try:
            specs, text, params = cell_job(nb, cell, self.settings)
            # no snapshots: a cell shows its run once it is stored, so copies of the live run would go unread
            for kind, fraction, message, run in self.core.run(specs, text, params, owner, snapshots=False):
                yield fraction, message
                if kind == "done" and run is not None:
                    computed(nb, cell_id, run.run_id)
        except PythiaCompareError as e:
            failed(nb, cell_id, _scrubbed(e, self.settings))

    def cell_run(self, cell: Cell) -> Run | None:
        """The stored run of a comparison cell, or None (none yet, or deleted since)."""
        if cell.kind != "comparison" or not cell.run_id:
            return None
        try:
            return self.core.find(cell.run_id)
        except PythiaCompareError:
            return None

    # ------------------------------------------------------------------------ from Compare and History
    def with_run(self, nb: Notebook, run_id: str) -> Notebook:
        """`nb` with a comparison cell holding a stored run (its input, scoring and own variant set)."""
        run = self.core.find(run_id)
        if run is None:
            raise BadInput(f"there is no stored run {run_id!r:.80} to add")
        nb.cells.append(_cell_of_run(run, self.settings))
        return Notebook.from_json(nb.to_json(), self.settings)

    def one_cell(self, run_id: str) -> Notebook:
        """A History run as a new (unsaved) one-cell notebook on the run's variant set."""
        run = self.core.find(run_id)
        if run is None:
            raise BadInput(f"there is no stored run {run_id!r:.80} to open")
        cell = _cell_of_run(run, self.settings)
        nb = Notebook.new(f"Run {run.run_id}", cell.variants.specs, cell.variants.reference, self.settings,
                          **{k: getattr(run.params, k) for k in LIMITS})
        cell.variants = None
        nb.cells.append(cell)
        return Notebook.from_json(nb.to_json(), self.settings)

    # ------------------------------------------------------------------------ exports
    def export(self, name: str) -> tuple[bytes, str, str]:
        """An export by the last part of its link, "<id>[@<rev>].ipynb" or ".html": (bytes, media type, file name
        named by id, never by title). NotebookNotFound / BadInput otherwise."""
        ref, dot, fmt = name.rpartition(".")
        if not dot or fmt not in EXPORT_TYPES:
            raise BadInput(f"there is no export {name[:80]!r}; a notebook's exports are <id>.ipynb and <id>.html")
        nb = self.store.get(ref)
        data = to_ipynb_text(nb, self.core.find) if fmt == "ipynb" else to_html(nb, self.core.find)
        return data.encode("utf-8"), EXPORT_TYPES[fmt], export_name(nb, fmt)


def _scrubbed(e: Exception, settings: Settings) -> str:
    from .dashboard import scrub

    return scrub(str(e), settings.hf_token)


def _cell_of_run(run: Run, settings: Settings) -> Cell:
    p = run.params
    as_prompt = p.scoring == "prompt" and len(run.input.text) <= settings.max_prompt_chars
    return Cell(new_cell_id(), "comparison", prompt=run.input.text if as_prompt else None,
                text=None if as_prompt else run.input.text, scoring=p.scoring,
                overrides={k: getattr(p, k) for k in LIMITS},
                variants=VariantSet([v.spec for v in run.variants], run.reference.spec if run.reference else None),
                run_id=run.run_id,
                computed_with=VariantSet([v.spec for v in run.variants], run.reference.spec if run.reference else None))


def parse_overrides(text: str | None) -> dict:
    """"ctx=64 max_tokens=8" (spaces or commas) -> {"ctx": 64, "max_tokens": 8}; BadInput naming a bad part."""
    out: dict = {}
    for part in re.split(r"[\s,]+", (text or "").strip()):
        if not part:
            continue
        key, eq, value = part.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or key not in LIMITS:
            raise BadInput(f"cell settings: {part[:40]!r} is not setting=value; the settings are "
                           f"{', '.join(LIMITS)} (e.g. ctx=64 max_tokens=8)")
        try:
            out[key] = int(value) if LIMITS[key].whole else float(value)
        except ValueError:
            raise BadInput(f"cell settings: {key} must be a number, got {value[:40]!r}") from None
    return out


def overrides_text(overrides: dict) -> str:
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in overrides.items())


def export_name(nb: Notebook, fmt: str) -> str:
    """pythia-compare-notebook-<id>-r<rev>.<fmt>: by id and revision, never by title."""
    return f"pythia-compare-notebook-{nb.notebook_id}-r{nb.revision}.{fmt}"


# ------------------------------------------------------------------------------------------ .ipynb
def _lit(v: Any) -> str:
    """A Python literal of an input: json.dumps for strings and numbers (a JSON string is a Python string literal
    with the same value, ensure_ascii=False keeping characters beyond U+FFFF whole), None as None."""
    if v is None:
        return "None"
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, (str, int, float)):
        return json.dumps(v, ensure_ascii=False)
    raise TypeError(f"no literal for {type(v).__name__}")


def compare_call(nb: Notebook, cell: Cell, name: str) -> str:
    """The code of a comparison cell: `<name> = pc.compare("spec", …, prompt=…, …)` then `<name>`, every input a
    json.dumps literal (the library API of docs/library.md)."""
    vs, values = nb.variants_of(cell), nb.settings_of(cell)
    args = [_lit(s) for s in vs.specs]
    args.append(f"prompt={_lit(cell.prompt)}" if cell.prompt else f"text={_lit(cell.text or '')}")
    args.append(f"reference={_lit(vs.reference)}")
    args.append(f"scoring={_lit(cell.scoring)}")
    args += [f"{k}={_lit(values[k])}" for k in LIMITS]
    if cell.lens:
        args.append("lens=True")
    return f"{name} = pc.compare(\n    " + ",\n    ".join(args) + ",\n)\n" + name


def _figures_json(run: Run) -> list[tuple[str, dict, str]]:
    """(name, plotly JSON, HTML fallback without plotly.js) of every figure of a run (plots.all_figures)."""
    from . import plots

    out = []
    for name, fig in plots.all_figures(run).items():
        out.append((name, json.loads(fig.to_json()), fig.to_html(full_html=False, include_plotlyjs=False)))
    return out


def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def to_ipynb(nb: Notebook, find_run: Callable[[str], Run | None]) -> dict:
    """The notebook as nbformat 4 (valid under nbformat.validate): a title cell, notes as Markdown cells, each
    comparison a code cell calling pc.compare with its inputs, its stored outputs embedded (summary as HTML and
    plain text, each figure as plotly JSON with an HTML fallback; plotly.js once, in the import cell's output)."""
    meta = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
            "pythia_compare": {"notebook_id": nb.notebook_id, "revision": nb.revision, "version": __version__}}
    cells: list[dict] = []

    def md(source: str) -> None:
        cells.append({"cell_type": "markdown", "id": f"c{len(cells)}", "metadata": {}, "source": source})

    def code(source: str, outputs: list, count: int | None) -> None:
        cells.append({"cell_type": "code", "id": f"c{len(cells)}", "metadata": {}, "source": source,
                      "execution_count": count, "outputs": outputs})

    vs = nb.variants
    md(f"# {_md_text(nb.title)}\n\nA pythia-compare notebook (`{nb.notebook_id}` revision {nb.revision}): "
       f"variants {_md_text(vs.describe())}. Each comparison cell calls the library; running it again reproduces "
       f"its numbers.")
    code("import pythia_compare as pc", [{"output_type": "display_data", "metadata": {}, "data": {
        "text/html": f"<script type=\"text/javascript\">{_plotly_js()}</script>",
        "text/plain": "plotly.js (for the figures' HTML fallback)"}}], 1)
    count = 1
    for i, cell in enumerate(nb.cells):
        if cell.kind == "note":
            md(cell.markdown or "")
            continue
        count += 1
        run = find_run(cell.run_id) if cell.run_id else None
        outputs: list = []
        if run is not None and not nb.is_stale(cell):
            outputs.append({"output_type": "execute_result", "execution_count": count, "metadata": {},
                            "data": {"text/html": summary_html(run), "text/plain": summary_text(run)}})
            for _name, fig, fallback in _figures_json(run):
                outputs.append({"output_type": "display_data", "metadata": {},
                                "data": {PLOTLY_MIME: fig, "text/html": fallback}})
        code(compare_call(nb, cell, f"cell_{i + 1}"), outputs, count if outputs else None)
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": meta, "cells": cells}


def to_ipynb_text(nb: Notebook, find_run: Callable[[str], Run | None]) -> str:
    return json.dumps(to_ipynb(nb, find_run), ensure_ascii=False, indent=1) + "\n"


# ------------------------------------------------------------------------------------------ .html
_HTML_STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
.pc-cell{border-top:1px solid #ddd;padding:1em 0}.pc-input{white-space:pre-wrap;background:#f6f6f8;padding:.6em;
font-family:monospace}table.pc-summary{border-collapse:collapse;font-size:.85em}table.pc-summary td,
table.pc-summary th{border:1px solid #ccc;padding:.2em .4em}.pc-tok{position:relative}.pc-alt{display:none}
.pc-tok:hover .pc-alt,.pc-tok:focus .pc-alt{display:block;position:absolute;z-index:9;background:#fff;
border:1px solid #999;padding:.3em;white-space:pre;font-size:.8em}.pc-meta{color:#666;font-size:.85em}"""


def to_html(nb: Notebook, find_run: Callable[[str], Run | None]) -> str:
    """The notebook as one self-contained page that opens offline: notes (safe HTML), each comparison's inputs,
    summary, generations and figures; plotly.js inlined once; a Content-Security-Policy that allows no network."""
    from . import plots

    parts = []
    n = 0
    for cell in nb.cells:
        if cell.kind == "note":
            parts.append(f'<section class="pc-cell pc-note">{render_note(cell.markdown or "")}</section>')
            continue
        vs = nb.variants_of(cell)
        values = nb.settings_of(cell)
        head = (f'<div class="pc-meta">{html.escape(vs.describe())} · {html.escape(cell.scoring)} scoring · '
                + " · ".join(f"{k} {values[k]}" for k in LIMITS) + "</div>")
        body = f'<div class="pc-input">{html.escape(cell.input)}</div>'
        run = find_run(cell.run_id) if cell.run_id else None
        if run is None:
            out = "<p><em>Not run yet.</em></p>"
        else:
            stale = (f"<p><strong>Stale:</strong> computed with {html.escape(cell.computed_with.describe())}</p>"
                     if nb.is_stale(cell) and cell.computed_with else "")
            figs = []
            for name, fig in plots.all_figures(run).items():
                n += 1
                figs.append(fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"pc-fig-{n}",
                                        config={"displaylogo": False}))
            out = (stale + f'<p class="pc-meta">run {html.escape(run.run_id or "")}</p>' + summary_html(run)
                   + plots.generation_html(run) + "".join(f'<div class="pc-figure">{f}</div>' for f in figs))
        parts.append(f'<section class="pc-cell pc-comparison">{head}{body}{out}</section>')
    csp = ("default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
           "img-src data:; font-src data:")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
            f"<title>{html.escape(nb.title)}</title><style>{_HTML_STYLE}</style>"
            f'<script type="text/javascript">{_plotly_js()}</script></head><body>'
            f"<h1>{html.escape(nb.title)}</h1><p class=\"pc-meta\">pythia-compare notebook "
            f"{html.escape(str(nb.notebook_id))} revision {nb.revision} · variants "
            f"{html.escape(nb.variants.describe())}"
            f"</p>{''.join(parts)}</body></html>\n")


# ------------------------------------------------------------------------------------------ the library's object
class LibraryNotebook:
    """A notebook from Python (docs/notebook.md; api.py re-exports it as pc.Notebook, and open_notebook).

        nb = LibraryNotebook("Quants on prompts", ["demo:Q8_0", "demo:Q2_K"], reference="demo:F16", max_tokens=8)
        nb.add_note("## Factual prompts")
        nb.add_comparison(prompt="The capital of France is")
        nb.run()            # every comparison cell, one after another, each model loaded once
        nb.save()           # a new revision; returns "ID@REV"
        nb.export("nb.ipynb")

    `db`, `offline`, `home` as pc.compare's; `pool` a ModelPool to share (api.py passes its process-wide one)."""

    def __init__(self, title: str = "Untitled notebook", specs: list[str] | None = None, *,
                 reference: str | None = None, db: str | Path | None = None, offline: bool | None = None,
                 home: str | Path | None = None, pool=None, notebook: Notebook | None = None, **settings_):
        self.settings = _library_settings(db, offline, home)
        self.notebook = notebook or Notebook.new(title, specs, reference, self.settings, **settings_)
        self._pool = pool
        self._stores: tuple | None = None

    def _store(self) -> tuple:
        if self._stores is None:
            from ..runs.store import RunStore

            runs = RunStore(self.settings.db_path, owner_secret=self.settings.owner_secret)
            self._stores = (runs, NotebookStore(runs, self.settings))
        return self._stores

    @property
    def pool(self):
        if self._pool is None:
            from ..runs.pool import ModelPool

            self._pool = ModelPool(self.settings)
        return self._pool

    @property
    def id(self) -> str | None:
        return self.notebook.notebook_id

    @property
    def revision(self) -> int | None:
        return self.notebook.revision

    def add_note(self, markdown: str) -> "LibraryNotebook":
        self.notebook.add_note(markdown)
        return self

    def add_comparison(self, prompt: str | None = None, text: str | None = None, scoring: str = "auto",
                       specs: list[str] | None = None, reference: str | None = None, **overrides) -> "LibraryNotebook":
        self.notebook.add_comparison(prompt=prompt, text=text, scoring=scoring, specs=specs, reference=reference,
                                     **overrides)
        return self

    def run(self, progress: bool = True) -> "LibraryNotebook":
        """Run every comparison cell (each an ordinary run of the log); a failing cell keeps its error."""
        runs, _ = self._store()

        def say(i: int, n: int, cell: Cell) -> None:
            if progress:
                import sys

                print(f"cell {i} of {n}: {cell.input[:60]!r}", file=sys.stderr)

        run_cells(self.notebook, settings=self.settings, pool=self.pool, store=runs, on_cell=say)
        return self

    def save(self) -> str:
        """Store a new revision (the first save gives the notebook its id); returns "ID@REV"."""
        _, notebooks = self._store()
        self.notebook = notebooks.save(self.notebook)
        return f"{self.notebook.notebook_id}@{self.notebook.revision}"

    def runs(self) -> list[Run | None]:
        """The stored run of each comparison cell (None where not run), in order."""
        runs, _ = self._store()
        out = []
        for c in self.notebook.cells:
            if c.kind == "comparison":
                try:
                    out.append(runs.get_run(c.run_id) if c.run_id else None)
                except PythiaCompareError:
                    out.append(None)
        return out

    def _find(self, run_id: str) -> Run | None:
        try:
            return self._store()[0].get_run(run_id)
        except PythiaCompareError:
            return None

    def export(self, path: str | Path, format: str | None = None) -> Path:
        """Write the .ipynb or .html export (format from the suffix unless given)."""
        path = Path(path)
        fmt = format or path.suffix.lstrip(".")
        if fmt not in EXPORT_TYPES:
            raise BadInput(f"format must be ipynb or html, got {fmt!r}")
        text = to_ipynb_text(self.notebook, self._find) if fmt == "ipynb" else to_html(self.notebook, self._find)
        path.write_text(text, encoding="utf-8")
        return path

    def _repr_html_(self) -> str:
        parts = [f"<h3>{html.escape(self.notebook.title)}</h3><p>{html.escape(self.notebook.variants.describe())}"
                 f"{' · ' + html.escape(str(self.id)) + '@' + str(self.revision) if self.id else ' · not saved'}</p>"]
        for c in self.notebook.cells:
            if c.kind == "note":
                parts.append(render_note(c.markdown or ""))
                continue
            run = self._find(c.run_id) if c.run_id else None
            parts.append(f"<pre>{html.escape(c.input[:500])}</pre>")
            parts.append(summary_html(run) if run else "<p><em>not run yet</em></p>")
        return "".join(parts)

    def __repr__(self) -> str:
        return (f"<pythia-compare notebook {self.id or '(unsaved)'} rev {self.revision}: {self.notebook.title!r}, "
                f"{len(self.notebook.cells)} cells>")


def open_notebook(ref: str, db: str | Path | None = None, offline: bool | None = None,
                  home: str | Path | None = None, pool=None) -> LibraryNotebook:
    """The stored notebook "ID" (latest revision) or "ID@REV", as a LibraryNotebook."""
    nb = LibraryNotebook(db=db, offline=offline, home=home, pool=pool, notebook=Notebook.new("x", settings=Settings()))
    nb.notebook = nb._store()[1].get(ref)
    return nb


def _library_settings(db, offline, home) -> Settings:
    s = Settings.from_env()
    changes: dict = {}
    if db is not None:
        changes["db_path"] = Path(db).expanduser()
    if offline is not None:
        changes["offline"] = bool(offline)
    if home is not None:
        changes["home"] = Path(home).expanduser()
    return s.replace(**changes) if changes else s
