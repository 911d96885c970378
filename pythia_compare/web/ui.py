"""The dashboard page: gradio Blocks, thin handlers, and the hardened launch settings.

Owns every gradio import of the package: the layout, the events, turning library errors into `gr.Error`
(scrubbed of file paths and tokens), and `launch_kwargs`, the one source of launch settings for app.py and
the tests (its app also answers a run's download links: _serve_downloads). The decisions behind the handlers
live in dashboard.py, the numbers in compare.py and report.py, the figures in plots.py; nothing here runs a
model, draws or writes SQL.

Streaming: the Run button's event (Handlers.stream) yields each snapshot of the run (dashboard.streamed) into a
gr.State that stays on the server; the State's change event redraws the views, unqueued, so a full queue never
freezes a run already on screen. The "/compare" API is an event of its own on the same queue (Handlers.compare,
behind a trigger nobody sees): it makes no snapshots and returns the finished run's JSON once, so `gradio_client`
gets exactly the CLI's JSON, and the page never builds that JSON at all.

Sweeps tab (the "sweeps" section, hooked into build_demo by two calls): the sweep list, a sweep's figures and
cell table, `?sweep=<id>` links, the "/sweep" API (gr.api), a cell's run opened in the Compare tab, and the
local-only start form; its decisions live in sweepview.py, its figures in sweepplots.py.

Notebook tab (the "notebooks" section, first on the page; docs/notebook.md): the notebook in a gr.State drawn cell
by cell with gr.render, its buttons, Run all as a chain of queued one-cell jobs, `?notebook=ID[@REV]` links, the
"/notebook" API and the exports' route (_serve_notebook_exports); its decisions live in notebooks.py.
"""

from __future__ import annotations

import functools
import json
import html
import logging
import secrets
import threading
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import gradio as gr
from starlette.requests import Request  # the download route's parameter (FastAPI reads its annotation by name)

from . import plots, sweepplots
from .guard import NoCrossOrigin, UploadLimits, max_body_bytes
from ..runs import report
from ..runs.backup import Backup, local_root
from ..runs.lambada import PUBLIC_MAX_LIMIT
from ..config import ASSETS_DIR, Settings
from .dashboard import (DEFAULT_QUANTS, DOWNLOAD_PATH, HISTORY_COLUMNS, MAX_QUERY_CHARS, MAX_SPECS_CHARS, NOT_FOUND,
                        ClientGone, Dashboard, Downloads, collect_specs, controls_for, default_reference,
                        demo_banner, load_catalog, download_name, log_spaced, page_summary, page_wording,
                        published_table, quant_choices, reference_choices, scrub, table_cells)
from .dashboard import MODELS_NOTE
from ..errors import PythiaCompareError
from ..params import LIMITS
from ..runs.run import Run, as_run
from ..runs.store import RunLogError, RunStore
from .notebooks import (NOTEBOOK_PATH, NotebookDesk, cell_status, export_name, overrides_text,
                        render_note)
from ..runs.notebook import Notebook
from ..params import NOTEBOOK
from ..errors import BadInput
from .dashboard import form_int
from .sweepview import (CELL_COLUMNS, FORM_CHUNKS, FORM_QUANTS, MAX_FORM_CHARS, NO_SWEEP, PUBLIC_NO_START,
                        SWEEP_COLUMNS, SWEEP_NOT_FOUND, SweepDesk, cell_columns, cell_rows, cell_run_id, is_lambada,
                        published_for_sweep, published_lambada_for_sweep,
                        status_line)
from ..variants import DEMO_ALIAS

if TYPE_CHECKING:
    from ..runs.pool import ModelPool

log = logging.getLogger("pythia_compare.ui")

OWNER_KEY = "pythia-compare-owner"  # localStorage key of the browser's owner token
# BrowserState encrypts in the browser with a key it also sends to the browser: obfuscation, not secrecy.
# A fixed key keeps the owner token readable across server restarts (a random one would orphan every run).
OWNER_SECRET = "pythia-compare-owner-token-v1"
FAMILIES = [("Pythia-410M-deduped (Hugging Face Hub)", "pythia"), ("demo suite (bundled, offline)", DEMO_ALIAS)]
NOT_FINISHED = ("The run did not finish (the server may be busy, or the connection dropped); try again in a "
                "minute.")
CONTROLS = ["family", "quants", "steps", "specs", "reference", "prompt", "text", "text_file", "scoring", "ctx", "top_k",
            "max_tokens", "temperature", "seed", "lens"]  # what restore_controls sets, in its order
EXAMPLES = ["The capital of France is", "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
            "Once upon a time, in a small village by the sea,", "12 + 7 = 19. 23 + 5 ="]


class Handlers:
    """The page's event handlers over one Dashboard; callable without a browser (the tests do)."""

    def __init__(self, settings: Settings, pool: ModelPool | None = None, store: RunStore | None = None,
                 backup: Backup | None = None):
        self.core = Dashboard(settings, pool=pool, store=store, backup=backup)
        self.settings, self.pool, self.store = settings, self.core.pool, self.core.store

    def _fail(self, e: Exception) -> gr.Error:
        if isinstance(e, PythiaCompareError):
            return gr.Error(page_wording(scrub(str(e), self.settings.hf_token)), print_exception=False)
        log.exception("unexpected error in the dashboard")
        return gr.Error(f"Something went wrong ({type(e).__name__}); the details are in the server log.",
                        print_exception=False)

    def compare(self, family: str = DEMO_ALIAS, quants: list[str] | None = None, steps: list[int] | None = None,
                specs: str | None = "", reference: str | None = None, prompt: str | None = "", text: str | None = "",
                text_file: str | None = None, scoring: str = "auto", ctx: float = 512, top_k: float = 10,
                max_tokens: float = 32, temperature: float = 0.0, seed: float = 0, owner: str | None = None,
                lens: bool = False, lambada_file: str | None = None, lambada_limit: float | None = None,
                progress=gr.Progress()) -> str:
        """The API ("/compare"): run one comparison and return the stored run's JSON (as text, which gr.JSON
        parses once: the client gets the run JSON itself, exactly the CLI's). Progress is reported as the run goes;
        no snapshot of the run is made or sent, and the JSON goes out in one message, at the end. A client that
        leaves does not stop the run (a plain function, not a generator gradio could close): it finishes and is
        stored, in a public app within the run's work bounds (Settings.max_run_tokens_public / _seconds_public).

        `specs` takes any specs ("demo@step0 demo:Q2_K"), `reference` one of them or another spec; `text_file`
        and `owner` (a browser's owner token, for public deployments) may be None. With `family` "demo" (the
        default) a bare Pythia spec (`Q8_0`, `step3000`) is refused as ambiguous beside the demo suite: pass
        family="pythia" for the real model. `lens`: the logit lens at the last token (the Layers view; prompt runs
        only). `scoring` "lambada" runs the LAMBADA benchmark (prompt and text are ignored) on `lambada_file` (a
        LAMBADA JSONL; not in public mode) or the Hub dataset, its first `lambada_limit` examples (0 or None: all).
        """
        args = (family, quants, steps, specs, reference, prompt, text, text_file, scoring, ctx, top_k, max_tokens,
                temperature, seed, lens, lambada_file, lambada_limit)
        try:
            for kind, _fraction, _message, run in self._runs(args, owner, progress, snapshots=False):
                if kind == "done":
                    return json.dumps(run.to_json(), separators=(",", ":"), allow_nan=False)
        except Exception as e:
            raise self._fail(e) from None
        raise gr.Error("The run ended without a result; the details are in the server log.")  # pragma: no cover

    def stream(self, family: str = DEMO_ALIAS, quants: list[str] | None = None, steps: list[int] | None = None,
               specs: str | None = "", reference: str | None = None, prompt: str | None = "", text: str | None = "",
               text_file: str | None = None, scoring: str = "auto", ctx: float = 512, top_k: float = 10,
               max_tokens: float = 32, temperature: float = 0.0, seed: float = 0, owner: str | None = None,
               lens: bool = False, lambada_file: str | None = None, lambada_limit: float | None = None,
               progress=gr.Progress()):
        """The Run button: the same comparison as `compare`, yielding the Run for the views' State as it goes
        (each snapshot, then the stored run). The State stays on the server, so gradio never diffs, encodes or
        sends a run, and the page never builds the run's JSON: the views draw from the Run. A failure yields
        {"error": message} (the status box shows it and the previous results are cleared), then raises."""
        args = (family, quants, steps, specs, reference, prompt, text, text_file, scoring, ctx, top_k, max_tokens,
                temperature, seed, lens, lambada_file, lambada_limit)
        try:
            for _kind, _fraction, _message, run in self._runs(args, owner, progress, snapshots=True):
                if run is not None:
                    yield run
                run = None  # not held while the next snapshot is made
        except Exception as e:
            error = self._fail(e)
            yield {"error": error.message}
            raise error from None

    def _runs(self, args: tuple, owner: str | None, progress, snapshots: bool):
        """prepare + Dashboard.run, reporting each event's progress; yields what Dashboard.run yields."""
        chosen, run_text, params = self.core.prepare(*args)
        for kind, fraction, message, run in self.core.run(chosen, run_text, params, owner, snapshots=snapshots):
            progress(fraction, desc=message)
            yield kind, fraction, message, run
            run = None

    def views(self, run: Run | dict | None, status: str | None = None) -> tuple:
        """Every view of a run (or of nothing): status, summary, 4 figures, generations, KL table, id, downloads,
        and EleutherAI's published numbers for its Pythia steps (a note and a table: dashboard.published_table),
        and the Layers view (the logit lens; hidden for a run without it).

        `run`: a Run (the views' state), or its JSON (read once, run.as_run). A failed run ({"error": message})
        clears every view and its link, the status saying why. Tables with nothing to show are hidden (an empty
        gradio table shows placeholder headers "1 2 3").
        """
        if isinstance(run, dict) and run.get("error"):
            run, status = None, f"**Stopped.** {run['error']}\n\nThe results of the previous run were cleared."
        if not run:
            return (status or "", gr.Dataframe(value=None, visible=False), None, "", None, None, None,
                    gr.Dataframe(value=None, visible=False), "", gr.HTML("", visible=False),
                    gr.Markdown("", visible=False), gr.Dataframe(value=None, visible=False),
                    gr.Plot(value=None, visible=False))
        run = as_run(run)
        figs = plots.all_figures(run)
        cols, rows = (report.lambada_table(run) if run.lambada is not None
                      else page_summary(*report.summary_table(run)))  # the numbers first, the variant pinned
        kcols, krows = report.kl_table(run)
        files = gr.HTML(download_links(run.run_id), visible=True) if run.run_id else gr.HTML("", visible=False)
        why = report.kl_block_note(run)
        if why:  # as the CLI: llama-perplexity's block only from MIN_TOKENS_FOR_BLOCK scored tokens on
            kl = gr.Dataframe(value={"headers": ["KL statistics"], "data": [[why]]}, visible=True)
        elif len(kcols) > 1:
            kl = gr.Dataframe(value={"headers": kcols, "data": table_cells(kcols, krows)}, visible=True)
        else:
            kl = gr.Dataframe(value=None, visible=False)
        pub_note, pub_table = published_table(run, self.settings)
        return (status if status is not None else self.core.status(run),
                gr.Dataframe(value={"headers": cols, "data": table_cells(cols, rows)}, visible=True),
                figs["next_token"], plots.generation_html(run), figs["ppl"], figs["surprisal"], figs["kld"], kl,
                run.run_id or "", files, gr.Markdown(pub_note, visible=bool(pub_note)),
                gr.Dataframe(value=pub_table, visible=pub_table is not None),
                gr.Plot(value=figs.get("lens"), visible="lens" in figs))

    def stopped(self, live: dict | None) -> tuple:
        """After a failed run: its error in the status box (or why it did not run), every view cleared."""
        return self.views(live if isinstance(live, dict) and live.get("error") else {"error": NOT_FINISHED})

    def restore_controls(self, run_id: object, cat) -> tuple:
        """Every control of CONTROLS set to what produced the stored run (gr.skip() for a prompt left as it is),
        then the reference marked as chosen; all skipped when there is no such run."""
        try:
            run = self.core.find(run_id) if run_id else None
        except PythiaCompareError:  # open_run shows why on the page; the controls stay as they are
            run = None
        if not run:
            return tuple(gr.skip() for _ in CONTROLS) + (gr.skip(),)
        c = controls_for(run, cat, self.settings.max_prompt_chars)
        steps = [(f"step {s}", s) for s in cat.steps.get(c["family"], [])]
        return (c["family"], gr.CheckboxGroup(choices=quant_choices(c["family"], cat.quants[c["family"]]),
                                              value=c["quants"]),
                gr.Dropdown(choices=steps, value=c["steps"], multiselect=True), c["specs"],
                gr.Dropdown(choices=reference_choices(collect_specs(c["family"], c["quants"], c["steps"], c["specs"],
                                                                    demo_final=self.core.demo_final)),
                            value=c["reference"]),
                gr.skip() if c["prompt"] is None else c["prompt"], c["text"], None, c["scoring"], c["ctx"], c["top_k"],
                c["max_tokens"], c["temperature"], c["seed"], c["lens"], True)

    def open_run(self, run_id: object) -> tuple:
        """A stored run's views, or the friendly not-found page (for any id, hostile ones included), or why the
        run log or the stored run cannot be read."""
        try:
            run = self.core.find(run_id)
        except PythiaCompareError as e:
            return self.views(None, f"### The run cannot be opened\n{self._say(e)}")
        return self.views(run) if run else self.views(None, NOT_FOUND)

    def on_load(self, owner: str | None, request: gr.Request | None = None) -> tuple:
        """Page load: give the browser an owner token if it has none; open `?run=<id>` if the link has one."""
        token = self.core.owner_of(owner) or secrets.token_urlsafe(24)
        run_id = dict(getattr(request, "query_params", None) or {}).get("run") if request is not None else None
        views = self.open_run(run_id) if run_id is not None else self.views(None)
        return (token, *views, self.history("", token))

    def history(self, query: str | None, owner: str | None) -> dict:
        """The history table (empty when the run log cannot be read: `search`'s note says why)."""
        return self._history(query, owner)[0]

    def _history(self, query: str | None, owner: str | None) -> tuple[dict, str | None]:
        try:
            return {"headers": HISTORY_COLUMNS, "data": self.core.history(query, owner)}, None
        except PythiaCompareError as e:
            return {"headers": HISTORY_COLUMNS, "data": []}, f"**The history cannot be listed:** {self._say(e)}"

    def history_shown(self, query: str | None, owner: str | None) -> tuple[dict, str]:
        """The history as a tab shows it: the table, and the note left as it is unless the log cannot be read."""
        table, failed = self._history(query, owner)
        return table, failed or gr.skip()

    def _say(self, e: PythiaCompareError) -> str:
        return scrub(str(e), self.settings.hf_token)

    def search(self, query: str | None, owner: str | None) -> tuple[dict, str]:
        """The history for a search, and a note saying when nothing matches (or why nothing can be listed)."""
        table, failed = self._history(query, owner)
        if failed:
            return table, failed
        q = str(query or "").strip()
        if table["data"]:
            note = f"{len(table['data'])} run{'s' if len(table['data']) != 1 else ''} found." if q else ""
        else:
            note = (f"No run's text, variant or label matches “{q[:80]}”; try fewer or other words." if q
                    else "No runs yet: run a comparison in the Compare tab.")
        return table, note or "Click a run in the list to select it."

    def delete(self, run_id: str | None, query: str | None, owner: str | None,
               armed: str | None = None) -> tuple[str, dict, str, str]:
        """Delete the selected run in two clicks: the first asks, the second (on the same run) deletes; in a public
        deployment only the browser's own. (note, list, selection, the run awaiting confirmation)."""
        if run_id and armed != run_id:
            try:
                found = self.core.find(run_id)
            except PythiaCompareError as e:
                return f"**The run cannot be deleted:** {self._say(e)}", self.history(query, owner), "", ""
            if found is None:
                return "Select one of your runs in the list first.", self.history(query, owner), "", ""
            return (f"Delete run `{run_id}` for good? Click **Delete** again to confirm, or select another run.",
                    self.history(query, owner), run_id, run_id)
        done = self.core.delete(run_id, owner)
        note = f"Deleted run `{run_id}`." if done else "Select one of your runs in the list first."
        return note, self.history(query, owner), "", ""


def _selected_run(data: object, evt: gr.SelectData) -> tuple[str, str]:
    row = evt.row_value if evt is not None else None
    run_id = str(row[0]) if row else ""
    return run_id, (f"Selected run `{run_id}`." if run_id else "")


# ------------------------------------------------------------------------------------------ layout
def build_demo(settings: Settings | None = None, *, concurrency: int = 1, max_queue: int = 16,
               backup: Backup | None = None) -> gr.Blocks:
    """The dashboard. `concurrency` model runs at once, at most `max_queue` waiting (then "busy, try again").
    `backup`: the run backup (backup.py); None starts one from `settings` (a no-op unless one is configured).

    One builder per tab lays it out (_compare_tab, _history_tab, _sweeps_tab); then the events are wired, the
    Compare tab's first (_wire_compare), then page load, links and History (_wire_history), then the Sweeps tab's.
    """
    settings = settings or Settings.from_env()
    backup = backup if backup is not None else Backup.start(settings)
    cat = load_catalog(settings)
    app = Handlers(settings, backup=backup)
    app.core.tidy_cache()  # stale .part files of a killed build; a public app's cache budget

    # delete_cache: gradio copies every uploaded text into its cache; copies older than 6 hours go, hourly
    with gr.Blocks(title="pythia-compare", analytics_enabled=False, delete_cache=(3600, 6 * 3600)) as demo:
        page = _page_top(settings, cat, backup)
        with gr.Tabs(selected="compare") as tabs:
            nbs = _notebook_tab(settings, app, cat.family)  # first on the page (issue 22)
            c = _compare_tab(settings, cat)
            h = _history_tab(settings)
            sweeps = _sweeps_tab(settings, app.store)
        view_outputs = [c["status"], c["summary"], c["fig_next"], c["gen_html"], c["fig_ppl"], c["fig_surprisal"],
                        c["fig_kld"], c["kl_table"], c["run_id"], c["downloads"], c["published_note"],
                        c["published"], c["fig_lens"]]
        _wire_compare(c, page, app, cat, settings, concurrency, view_outputs)
        _wire_history(h, c, page, demo, tabs, app, cat, view_outputs)
        _wire_sweeps(sweeps, demo, tabs, app, view_outputs)
        _wire_notebook(nbs, c, h, page, demo, tabs, settings, concurrency)
    demo.queue(default_concurrency_limit=concurrency, max_size=max_queue)
    demo.handlers = app  # for tests and embedding
    return demo


_PRIVATE = dict(api_visibility="private")  # every event but the "/compare" API's and the "/sweep" API


def _page_top(settings: Settings, cat, backup: Backup) -> dict:
    """Above the tabs: the browser's owner token, the run on screen, the title, the demo banner, the backup note."""
    p: dict = {"owner": gr.BrowserState(None, storage_key=OWNER_KEY, secret=OWNER_SECRET),
               "live": gr.State(None), "ref_touched": gr.State(False)}
    gr.Markdown("# pythia-compare\nQuant levels and training checkpoints of Pythia-410M-deduped, side by "
                "side: next-token distributions, generations, perplexity and KL divergence from a reference. "
                + MODELS_NOTE, elem_id="pc-intro")  # on a phone, the title only (assets/style.css)
    p["banner"] = gr.Markdown(cat.banner, visible=bool(cat.banner), elem_id="pc-banner", elem_classes=["pc-banner"])

    def where_runs_are_kept() -> str:  # the backup dataset, or why there is none (no path, no token)
        return scrub(backup.status_markdown(), settings.hf_token)

    p["where_runs_are_kept"] = where_runs_are_kept
    p["kept"] = kept = where_runs_are_kept()
    p["backup_note"] = gr.Markdown(kept, visible=bool(kept), elem_id="pc-backup")
    return p


def _compare_tab(settings: Settings, cat) -> dict:
    """The Compare tab's layout: the variant choices, the input and settings, Run, the share row and the views."""
    fam = cat.family
    quant_default = [q for q in DEFAULT_QUANTS[fam] if q in cat.quants[fam]]
    chosen = collect_specs(fam, quant_default, [], "")
    c: dict = {}
    with gr.Tab("Compare", id="compare"):
        with gr.Row():
            with gr.Column(scale=2, min_width=320):
                c["family"] = gr.Radio(FAMILIES, value=fam, label="Models", elem_id="pc-family")
                c["quants"] = gr.CheckboxGroup(quant_choices(fam, cat.quants[fam]), value=quant_default,
                                               label="Quant levels (final checkpoint)", elem_id="pc-quants")
                with gr.Row():
                    c["steps"] = gr.Dropdown([(f"step {s}", s) for s in cat.steps[fam]], value=[], multiselect=True,
                                             label="Training steps (F16)", scale=4, elem_id="pc-steps")
                    c["logpick"] = gr.Button("5 log-spaced", size="sm", scale=1, min_width=90)
                c["specs"] = gr.Textbox("", label="More specs", max_length=MAX_SPECS_CHARS, elem_id="pc-specs",
                                        placeholder="e.g. step3000:Q4_K_M  owner/repo:Q8_0  ./model.gguf")
                c["reference"] = gr.Dropdown(reference_choices(chosen), value=default_reference(chosen),
                                             allow_custom_value=True, label="Reference",
                                             info="KL divergence is measured against it", elem_id="pc-reference")
            with gr.Column(scale=3, min_width=360):
                _input_and_settings(c, settings)
        with gr.Row(elem_classes=["pc-share"]):
            c["run_id"] = gr.Textbox(visible=False, elem_id="pc-run-id")
            c["link"] = gr.Textbox(label="Share link", interactive=False, buttons=["copy"], scale=6, elem_id="pc-link")
            # the run's JSON and zip: links that make them when clicked (download_links)
            c["downloads"] = gr.HTML("", visible=False, elem_id="pc-downloads", min_height=0)
            c["add_to_nb"] = gr.Button("Add to notebook", size="sm", scale=1, elem_id="pc-add-to-notebook")
        c["summary"] = gr.Dataframe(label="Summary (the numbers the CLI prints)", interactive=False, wrap=True,
                                    elem_id="pc-summary", visible=False, pinned_columns=1)
        with gr.Row():
            c["fig_next"] = gr.Plot(label="Next-token distribution", elem_id="pc-fig-next_token")
            c["fig_ppl"] = gr.Plot(label="Perplexity", elem_id="pc-fig-ppl")
        c["gen_html"] = gr.HTML(label="Generations", elem_id="pc-generations")
        c["fig_surprisal"] = gr.Plot(label="Surprisal", elem_id="pc-fig-surprisal")
        with gr.Row():
            c["fig_kld"] = gr.Plot(label="KL divergence", elem_id="pc-fig-kld")
            with gr.Column():
                c["kl_table"] = gr.Dataframe(label="KL statistics (llama-perplexity's blocks)", visible=False,
                                             interactive=False, elem_id="pc-kl-table", max_height=420, wrap=True)
                gr.Markdown(report.KL_TABLE_NOTE, elem_classes=["pc-note"])
        c["fig_lens"] = gr.Plot(label="Layers (logit lens)", elem_id="pc-fig-lens", visible=False)
        c["published"] = gr.Dataframe(label="Published at this step (EleutherAI's lm-eval, zero-shot; not measured "
                                            "here)", visible=False, interactive=False, wrap=True,
                                      elem_id="pc-published")
        c["published_note"] = gr.Markdown("", visible=False, elem_id="pc-published-note", elem_classes=["pc-note"])
        c["run_json"] = gr.JSON(visible=False, label="Run JSON")  # the "/compare" API's output, never shown
        c["api_run"] = gr.Button(visible=False)  # the "/compare" API's trigger
    return c


def _input_and_settings(c: dict, settings: Settings) -> None:
    """The Compare tab's right column: prompt, longer text or file, the run's settings, Run, status, examples."""
    c["prompt"] = gr.Textbox(EXAMPLES[0], lines=3, label="Prompt", elem_id="pc-prompt",
                             max_length=settings.max_prompt_chars)
    with gr.Accordion("Longer text for corpus scoring", open=False, elem_id="pc-text-box"):
        c["text"] = gr.Textbox("", lines=6, label="Text (used instead of the prompt when given)",
                               max_length=settings.max_text_chars, elem_id="pc-text")
        c["text_file"] = gr.File(label=f"…or a .txt file (≤ {settings.max_upload_bytes // 1024} KiB)",
                                 file_types=[".txt"], type="filepath", elem_id="pc-file")
    with gr.Accordion("Settings", open=False, elem_id="pc-settings"):
        with gr.Row():
            c["scoring"] = gr.Radio([("auto", "auto"), ("prompt", "prompt"), ("corpus", "corpus"),
                                     ("Benchmark: LAMBADA", "lambada")], value="auto", label="Scoring",
                                    elem_id="pc-scoring")
            # Ranges from params.LIMITS; the server checks them (_as_sent), naming the field.
            c["ctx"] = _limited("ctx", settings)
            c["top_k"] = _limited("top_k", settings)
        with gr.Row():
            c["max_tokens"] = _limited("max_tokens", settings)
            c["temperature"] = _limited("temperature", settings, step=0.1)
            c["seed"] = _limited("seed", settings)
        c["lens"] = gr.Checkbox(False, label="Layers: the logit lens at the last token (prompt runs)",
                                elem_id="pc-lens")
    with gr.Accordion("Benchmark: LAMBADA (choose it under Scoring)", open=False, elem_id="pc-lambada"):
        c["lambada_limit"] = gr.Number(PUBLIC_MAX_LIMIT if settings.public else 0, precision=0, minimum=0,
                                       elem_id="pc-lambada-limit",
                                       label="Examples: the first N (0: all 5,153"
                                             + (f"; at most {PUBLIC_MAX_LIMIT} here)" if settings.public else ")"))
        # lm-eval's lambada_openai; without a file, the Hub dataset EleutherAI/lambada_openai (English test split)
        c["lambada_file"] = gr.File(label='…or a LAMBADA .jsonl file, one {"text": …} per line', file_types=[".jsonl"],
                                    type="filepath", elem_id="pc-lambada-file", visible=not settings.public)
    c["run_btn"] = gr.Button("Run", variant="primary", elem_id="pc-run")
    c["status"] = gr.Markdown(elem_id="pc-status", container=True, min_height=60)
    c["examples"] = gr.Examples([[e] for e in EXAMPLES], inputs=[c["prompt"]], label="Examples (click to run)",
                                api_visibility="private")


def _history_tab(settings: Settings) -> dict:
    """The History tab's layout: search, the list of runs, Open and Delete."""
    h: dict = {}
    with gr.Tab("History", id="history"):
        with gr.Row():
            h["query"] = gr.Textbox(label="Search texts, variants and labels (word starts: fibo, Q2_K, step0)",
                                    scale=4, max_length=MAX_QUERY_CHARS, elem_id="pc-query")
            h["search"] = gr.Button("Search", scale=1)
        h["history"] = gr.Dataframe(headers=HISTORY_COLUMNS, interactive=False, wrap=True, elem_id="pc-history",
                                    column_widths=["11%", "10%", "19%", "6%", "7%", "22%", "10%", "15%"])
        h["selected"] = gr.State("")
        h["armed"] = gr.State("")  # the run whose Delete awaits its second click
        with gr.Row():
            h["note"] = gr.Markdown("Click a run in the list to select it.", elem_id="pc-history-note")
            h["open_btn"] = gr.Button("Open", size="sm", elem_id="pc-open")
            h["open_nb"] = gr.Button("Open as notebook", size="sm", elem_id="pc-open-notebook")
            h["delete_btn"] = gr.Button("Delete", size="sm", variant="stop", elem_id="pc-delete")
        gr.Markdown("Runs are kept in the server's SQLite log. " + (
            "This deployment is public: this browser sees only its own runs, but a link opens for anyone "
            "who has it." if settings.public else "All runs of this log are listed."))
    return h


def _wire_compare(c: dict, page: dict, app: Handlers, cat, settings: Settings, concurrency: int,
                  view_outputs: list) -> None:
    """The Compare tab's events: choosing variants (the reference follows), running, the views and the link."""
    last = app.core.demo_final  # `demo@step<last>` is `demo:F16`: one variant
    family, quants, steps, specs, reference = (c[k] for k in ("family", "quants", "steps", "specs", "reference"))
    live, ref_touched = page["live"], page["ref_touched"]

    def switch_family(f):
        q = [q for q in DEFAULT_QUANTS[f] if q in cat.quants[f]]
        text = cat.banner or (demo_banner("You chose the demo suite.", settings) if f == DEMO_ALIAS else "")
        return (gr.CheckboxGroup(choices=quant_choices(f, cat.quants[f]), value=q),
                gr.Dropdown(choices=[(f"step {s}", s) for s in cat.steps[f]], value=[]),
                gr.Markdown(value=text, visible=bool(text)))

    def refresh_reference(f, q, s, free, current, touched):
        chosen = collect_specs(f, q, s, free, demo_final=last)
        keep = touched and (current == "" or current in chosen)
        return gr.Dropdown(choices=reference_choices(chosen), value=current if keep else default_reference(chosen))

    # On the user's choice only: a reopened run sets the family together with its own quants and steps.
    family.input(switch_family, family, [quants, steps, page["banner"]], **_PRIVATE)
    c["logpick"].click(lambda f: log_spaced(cat.steps[f]), family, steps, **_PRIVATE)
    for comp in (family, quants, steps, specs):
        comp.change(refresh_reference, [family, quants, steps, specs, reference, ref_touched], reference,
                    queue=False, **_PRIVATE)
    reference.input(lambda: True, None, ref_touched, queue=False, **_PRIVATE)

    _as_sent(*(c[k] for k in LIMITS))

    # The API's inputs in Handlers.compare's order: every control but the lens, the owner, then the inputs added
    # since (lens, LAMBADA), so a client that passes the first fifteen by position keeps working.
    run_inputs = ([c[k] for k in CONTROLS if k != "lens"]
                  + [page["owner"], c["lens"], c["lambada_file"], c["lambada_limit"]])
    run_kw = dict(concurrency_id="models", concurrency_limit=concurrency, show_progress_on=[c["status"]])
    # The page's Run (and an example's) streams into the views' State; the "/compare" API is its own event on the
    # same queue (a trigger nobody sees), returning the run JSON once, with no snapshots (issue 18: memory).
    runs = [c["run_btn"].click(app.stream, run_inputs, live, **run_kw, **_PRIVATE),
            c["examples"].load_input_event.then(app.stream, run_inputs, live, **run_kw, **_PRIVATE)]
    c["api_run"].click(app.compare, run_inputs, c["run_json"], api_name="compare", **run_kw)
    for event in runs:
        event.failure(app.stopped, live, view_outputs, queue=False, **_PRIVATE)
    live.change(app.views, live, view_outputs, queue=False, trigger_mode="always_last", show_progress="hidden",
                **_PRIVATE)
    c["run_id"].change(None, c["run_id"], c["link"], js=_LINK_JS, **_PRIVATE)


def _wire_history(h: dict, c: dict, page: dict, demo: gr.Blocks, tabs: gr.Tabs, app: Handlers, cat,
                  view_outputs: list) -> None:
    """Page load (the owner token, a `?run=` link), the backup note, and the History tab's events."""
    owner, history, query, note = page["owner"], h["history"], h["query"], h["note"]
    controls = [c[k] for k in CONTROLS] + [page["ref_touched"]]
    restore = lambda rid: app.restore_controls(rid, cat)  # noqa: E731
    demo.load(app.on_load, owner, [owner, *view_outputs, history], queue=False, **_PRIVATE).then(
        restore, c["run_id"], controls, queue=False, **_PRIVATE)
    preload = _plotly_preload_js()
    if preload:  # plotly.js loads while the views do
        demo.load(None, None, None, js=preload, **_PRIVATE)
    if page["kept"]:
        demo.load(page["where_runs_are_kept"], None, page["backup_note"], queue=False, **_PRIVATE)
    for trigger in (h["search"].click, query.submit):
        trigger(app.search, [query, owner], [history, note], queue=False, **_PRIVATE)
    tabs.select(app.history_shown, [query, owner], [history, note], queue=False, **_PRIVATE)
    history.select(_selected_run, history, [h["selected"], note], queue=False, **_PRIVATE)
    h["open_btn"].click(lambda rid: (*app.open_run(rid), gr.Tabs(selected="compare")), h["selected"],
                        [*view_outputs, tabs], queue=False, **_PRIVATE).then(
        restore, c["run_id"], controls, queue=False, **_PRIVATE)
    h["delete_btn"].click(app.delete, [h["selected"], query, owner, h["armed"]],
                          [note, history, h["selected"], h["armed"]], queue=False, **_PRIVATE)


def _limited(field: str, settings: Settings, **kw) -> gr.Number:
    """A run parameter's widget: its label, default and range (shown under it) from the one table (params.LIMITS)."""
    lim = LIMITS[field]
    if lim.whole:
        kw["precision"] = 0
    return gr.Number(lim.default(settings), label=lim.widget_label, info=lim.range_text,
                     elem_id="pc-" + field.replace("_", "-"), **kw)


def _as_sent(*numbers: gr.Number) -> None:
    """Hand these numbers to the handler as the client sent them: Dashboard.prepare and compare.validate_params
    check them and name the field. (gr.Number's own checks fail with no message on NaN, ±inf or text, and
    name no field for a value out of bounds; so the widgets show their range as text, not as minimum/maximum,
    which gradio would check again on a copy it rebuilds per session without this.)"""
    for n in numbers:
        n.preprocess = lambda payload: payload


# The share link is built in the browser, which knows the address it is served at (behind any proxy),
# and the address bar then shows the run's own link.
_LINK_JS = """(rid) => {
  if (!rid) {  // no run on screen (cleared after an error, or not found): the address bar drops the link too
    try {
      const u = new URL(window.location.href);
      if (u.searchParams.has("run")) {
        u.searchParams.delete("run");
        window.history.replaceState(null, "", u.pathname + u.search);
      }
    } catch (e) {}
    return "";
  }
  const url = window.location.origin + window.location.pathname + "?run=" + encodeURIComponent(rid);
  try { window.history.replaceState(null, "", url); } catch (e) {}
  return url;
}"""


@functools.cache
def _plotly_bundle() -> str | None:
    """The file name of gradio's plotly.js bundle (its frontend imports it only once a figure has arrived: the
    whole plotly.js, 4.6 MB of script to fetch and run), or None with a gradio build that has no one such file.
    Looked up once per process (the page head and the page-load code both name it)."""
    found = sorted((Path(gr.__file__).parent / "templates" / "frontend" / "assets").glob("PlotlyPlot-*.js"))
    return found[0].name if len(found) == 1 else None


def _plotly_preload_js() -> str | None:
    """Browser code, run at page load, that imports gradio's plotly.js bundle while the views are on their way
    (a shared link opens at once, issue 13). The URL is the very one gradio imports later, so it runs once."""
    name = _plotly_bundle()
    if name is None:  # another gradio build: nothing to preload (the page works the same, a little later)
        return None
    return ("() => { const s = document.querySelector('script[type=module][src*=\"/assets/index-\"]');"
            f" if (s) {{ import(new URL('./{name}', s.src).href).catch(() => {{}}); }} }}")


def _plotly_head() -> str | None:
    """The page head's <link rel=modulepreload> of that bundle: the browser fetches and compiles it from the
    start, beside gradio's own scripts (on a real network the fetch is most of its cost)."""
    name = _plotly_bundle()
    return f'<link rel="modulepreload" crossorigin href="./assets/{name}">' if name else None


def download_links(run_id: str) -> str:
    """A stored run's two downloads as links relative to the page (its JSON and its zip, made by the server when
    clicked: dashboard.download); they look like the page's small buttons (assets/style.css)."""
    rid = html.escape(quote(run_id, safe=""), quote=True)
    return "".join(f'<a id="pc-{fmt}" class="pc-download" href="{DOWNLOAD_PATH}/{rid}.{fmt}" '
                   f'download="{html.escape(download_name(run_id, fmt), quote=True)}">{label}</a>'
                   for fmt, label in (("json", "⬇ JSON"), ("zip", "⬇ CSV (zip)")))


# ------------------------------------------------------------------------------------------ sweeps
SWEEP_FIGURES = ["ppl", "kld", "bpw", "heatmap"]
SWEEP_FIGURE_LABELS = {"ppl": "Perplexity vs step", "kld": "KL divergence vs step",
                       "bpw": "Perplexity vs bits per weight", "heatmap": "ln(PPL(Q)/PPL(ref)) per cell"}
# A LAMBADA sweep draws its one figure in the first slot and hides the corpus figures (no meaning there).
LAMBADA_FIGURE_LABEL = "LAMBADA accuracy vs step"
SWEEP_INTRO = ("A sweep scores a grid of training steps × quant levels on one text, or on LAMBADA's examples "
               "(`python -m pythia_compare "
               "sweep …`, on one machine or as a Slurm job array). Click a sweep to draw it; click a point, a "
               "heatmap square or a row of its cell table to open that cell's full run in the Compare tab.")


class SweepHandlers:
    """The Sweeps tab's event handlers over one SweepDesk; callable without a browser (the tests do)."""

    def __init__(self, settings: Settings, store: RunStore):
        self.settings = settings
        self.desk = SweepDesk(settings, store)

    def listing(self) -> dict:
        """The sweep list (empty when the run log cannot be read: `listed` says why)."""
        return self.listed()[0]

    def listed(self) -> tuple[dict, str | None]:
        """(the sweep list, None), or (an empty list, why the sweeps cannot be listed) when the run log cannot
        be read."""
        try:
            return {"headers": SWEEP_COLUMNS, "data": self.desk.list()}, None
        except PythiaCompareError as e:
            return ({"headers": SWEEP_COLUMNS, "data": []},
                    f"**The sweeps cannot be listed:** {scrub(str(e), self.settings.hf_token)}")

    def listing_shown(self) -> tuple:
        """The list as opening the tab shows it: the table, and the status left as it is unless the log cannot
        be read."""
        table, failed = self.listed()
        return table, failed or gr.skip()

    def views(self, sweep: dict | None, status: str | None = None) -> tuple:
        """A sweep's views (or nothing's): status, the 4 figure slots (SWEEP_FIGURES, each a gr.update: its
        figure, label and visibility), the cell table, its id, and the published benchmarks of its repo vs step
        (sweepview.published_for_sweep). A LAMBADA sweep fills the first slot with its LAMBADA accuracy figure
        (EleutherAI's lambada_openai beside it, sweepview.published_lambada_for_sweep) and hides the others."""
        if not sweep:
            return (status if status is not None else NO_SWEEP, *self._slots(None), None, "", None)
        return (status_line(sweep), *self._slots(sweep),
                {"headers": cell_columns(sweep), "data": cell_rows(sweep)}, sweep["sweep_id"],
                sweepplots.sweep_published_figure(sweep, published_for_sweep(sweep)))

    @staticmethod
    def _slots(sweep: dict | None) -> list[dict]:
        """The figure slots' updates: a corpus sweep's four figures (None: no sweep), or a LAMBADA sweep's one."""
        if is_lambada(sweep):
            fig = sweepplots.sweep_figures(sweep, published_lambada_for_sweep(sweep))["lambada"]
            return [gr.update(value=fig, label=LAMBADA_FIGURE_LABEL, visible=True),
                    *[gr.update(value=None, visible=False) for _ in SWEEP_FIGURES[1:]]]
        figs = sweepplots.sweep_figures(sweep) if sweep else {}
        return [gr.update(value=figs.get(n), label=SWEEP_FIGURE_LABELS[n], visible=True) for n in SWEEP_FIGURES]

    def open_sweep(self, sweep_id: object) -> tuple:
        """A stored sweep's views, or the friendly not-found text (for any id, hostile ones included), or why the
        run log cannot be read."""
        try:
            sweep = self.desk.find(sweep_id)
        except PythiaCompareError as e:
            return self.views(None, f"### The sweep cannot be opened\n{scrub(str(e), self.settings.hf_token)}")
        return self.views(sweep) if sweep else self.views(None, SWEEP_NOT_FOUND)

    def sweep(self, sweep_id: str) -> dict:
        """The API ("/sweep"): a stored sweep's results as the sweep JSON of docs/sweeps.md."""
        try:
            return self.desk.get(sweep_id)
        except PythiaCompareError as e:
            raise gr.Error(page_wording(scrub(str(e), self.settings.hf_token)), print_exception=False) from None

    def on_load(self, request: gr.Request | None = None) -> tuple:
        """Page load: the sweep list; with `?sweep=<id>` that sweep's views and the Sweeps tab selected."""
        sweep_id = dict(getattr(request, "query_params", None) or {}).get("sweep") if request is not None else None
        table, failed = self.listed()
        if sweep_id is None:
            return (table, *self.views(None, failed), gr.skip())
        return (table, *self.open_sweep(sweep_id), gr.Tabs(selected="sweeps"))

    def refresh(self, sweep_id: str | None) -> tuple:
        """The Refresh button: the list again, and the shown sweep (if any) redrawn with its latest cells."""
        table, failed = self.listed()
        return (table, *(self.open_sweep(sweep_id) if sweep_id else self.views(None, failed)))

    def select_sweep(self, evt: gr.SelectData) -> tuple:
        """A click in the sweep list: that row's sweep drawn."""
        row = evt.row_value if evt is not None else None
        return self.open_sweep(str(row[0]) if row else None)

    def start(self, steps: str, quants: list[str], text: str, ctx: float, max_chunks: float, name: str,
              scoring: str = "corpus", limit: float | None = None) -> tuple:
        """The start form: plan and run a demo sweep here; (note, list, its views…, the poll timer on)."""
        try:
            form = self.desk.check_form(steps, quants, text, ctx, max_chunks, name, scoring, limit)
            sweep_id = self.desk.start(form)
        except Exception as e:
            if isinstance(e, PythiaCompareError):
                raise gr.Error(page_wording(scrub(str(e), self.settings.hf_token)), print_exception=False) from None
            log.exception("starting a sweep failed")
            raise gr.Error(f"Something went wrong ({type(e).__name__}); the details are in the server log.",
                           print_exception=False) from None
        note = (f"Started sweep `{sweep_id}`: its view fills in as cells finish. The same from the command "
                f"line:\n```\n{self.desk.command(form)}\n```")
        return (note, self.listing(), *self.open_sweep(sweep_id), gr.Timer(active=True))

    def tick(self, sweep_id: str | None) -> tuple:
        """The poll timer while a sweep started here runs: the list and the shown sweep redrawn; off when done."""
        running = self.desk.running()
        return (*self.refresh(sweep_id), gr.Timer(active=bool(running)))

    def select_cell(self, evt: gr.SelectData) -> tuple[str, str]:
        """A click in the cell table: (the cell's run id or '', a note saying what happens)."""
        row = evt.row_value if evt is not None else None
        run_id = cell_run_id(row)
        if run_id:
            return run_id, f"Opened cell step {row[0]} {row[1]}: run `{run_id}` in the Compare tab."
        if row:
            return "", f"Cell step {row[0]} {row[1]} is {row[2]}: it has no run to open yet."
        return "", ""


def _sweeps_tab(settings: Settings, store: RunStore) -> dict:
    """The Sweeps tab's layout (called inside build_demo's Tabs); returns its handlers and components."""
    h = SweepHandlers(settings, store)
    c: dict = {"handlers": h}
    with gr.Tab("Sweeps", id="sweeps"):
        gr.Markdown(SWEEP_INTRO)
        c["list"] = gr.Dataframe(headers=SWEEP_COLUMNS, interactive=False, wrap=True, elem_id="pc-sweeps",
                                 max_height=300)
        with gr.Row(elem_classes=["pc-share"]):
            c["refresh"] = gr.Button("Refresh", size="sm", scale=1, min_width=90, elem_id="pc-sweeps-refresh")
            c["id"] = gr.Textbox(visible=False, elem_id="pc-sweep-id")
            c["link"] = gr.Textbox(label="Share link", interactive=False, buttons=["copy"], scale=6,
                                   elem_id="pc-sweep-link")
        c["status"] = gr.Markdown(NO_SWEEP, elem_id="pc-sweep-status", container=True, min_height=50)
        with gr.Row():
            c["ppl"] = gr.Plot(label=SWEEP_FIGURE_LABELS["ppl"], elem_id="pc-sweep-fig-ppl")
            c["kld"] = gr.Plot(label=SWEEP_FIGURE_LABELS["kld"], elem_id="pc-sweep-fig-kld")
        with gr.Row():
            c["bpw"] = gr.Plot(label=SWEEP_FIGURE_LABELS["bpw"], elem_id="pc-sweep-fig-bpw")
            c["heatmap"] = gr.Plot(label=SWEEP_FIGURE_LABELS["heatmap"], elem_id="pc-sweep-fig-heatmap")
        c["published"] = gr.Plot(label="Published benchmarks vs step (EleutherAI's, not measured here)",
                                 elem_id="pc-sweep-fig-published")
        c["cell_note"] = gr.Markdown("Click a cell's row to open its full run in the Compare tab.",
                                     elem_id="pc-sweep-cell-note")
        c["cells"] = gr.Dataframe(headers=CELL_COLUMNS, interactive=False, wrap=True, elem_id="pc-sweep-cells",
                                  label="Cells", max_height=420)
        if h.desk.can_start:
            _start_form(c, settings)
        else:
            gr.Markdown(PUBLIC_NO_START, elem_classes=["pc-note"])
    return c


def _start_form(c: dict, settings: Settings) -> None:
    """The start-a-sweep form (local apps only): a demo grid run in this process."""
    with gr.Accordion("Start a sweep of the demo suite (runs in this app; local only)", open=False,
                      elem_id="pc-sweep-start"):
        gr.Markdown("Plans a grid of the bundled demo suite and scores it in this process; the view fills in as "
                    "cells finish. Pythia's grid runs from the command line, on a cluster with `sweep slurm`.",
                    elem_classes=["pc-note"])
        with gr.Row():
            c["f_steps"] = gr.Textbox("all", label="Steps", max_length=MAX_FORM_CHARS, elem_id="pc-sweep-f-steps",
                                      info="all, log:3, 0-800/100 or 0,100,800")
            c["f_name"] = gr.Textbox("", label="Name (optional)", max_length=200, elem_id="pc-sweep-f-name")
        c["f_quants"] = gr.CheckboxGroup(FORM_QUANTS, value=["F16", "Q8_0", "Q4_K_M", "Q2_K"], label="Quants",
                                         elem_id="pc-sweep-f-quants")
        c["f_text"] = gr.Textbox("", lines=3, label="Text (empty: the demo suite's held-out text)",
                                 max_length=settings.max_text_chars, elem_id="pc-sweep-f-text")
        with gr.Row():
            c["f_scoring"] = gr.Radio([("Corpus perplexity of the text", "corpus"),
                                       ("Benchmark: LAMBADA (the demo suite's own file; no text)", "lambada")],
                                      value="corpus", label="Scoring", elem_id="pc-sweep-f-scoring")
            c["f_limit"] = gr.Number(0, precision=0, minimum=0, label="LAMBADA examples (0: all)",
                                     elem_id="pc-sweep-f-limit")
        with gr.Row():
            c["f_ctx"] = gr.Number(64, precision=0, minimum=LIMITS["ctx"].lo, maximum=LIMITS["ctx"].hi, label="Context",
                                   elem_id="pc-sweep-f-ctx")
            c["f_chunks"] = gr.Number(FORM_CHUNKS, precision=0, minimum=0, label="Max chunks per cell (0: all)",
                                      elem_id="pc-sweep-f-chunks")
        c["f_start"] = gr.Button("Plan and run", variant="primary", elem_id="pc-sweep-f-start")
        c["f_note"] = gr.Markdown(elem_id="pc-sweep-f-note")
        c["timer"] = gr.Timer(2.0, active=False)


def _wire_sweeps(c: dict, demo: gr.Blocks, tabs: gr.Tabs, app: Handlers, view_outputs: list) -> None:
    """The Sweeps tab's events (called inside build_demo's Blocks, after the Compare tab's views exist)."""
    h: SweepHandlers = c["handlers"]
    private = dict(api_visibility="private")
    outputs = [c["status"], *(c[n] for n in SWEEP_FIGURES), c["cells"], c["id"], c["published"]]
    gr.api(h.sweep, api_name="sweep")
    demo.load(h.on_load, None, [c["list"], *outputs, tabs], queue=False, **private)
    c["refresh"].click(h.refresh, c["id"], [c["list"], *outputs], queue=False, **private)
    tabs.select(h.listing_shown, None, [c["list"], c["status"]], queue=False, **private)
    c["list"].select(h.select_sweep, None, outputs, queue=False, **private)
    c["id"].change(None, c["id"], c["link"], js=_SWEEP_LINK_JS, **private)
    demo.load(None, None, None, js=_SWEEP_CLICK_JS, **private)

    def open_cell(evt: gr.SelectData) -> tuple:
        run_id, note = h.select_cell(evt)
        if not run_id:
            return (note, *[gr.skip()] * len(view_outputs), gr.skip())
        return (note, *app.open_run(run_id), gr.Tabs(selected="compare"))

    if "f_start" in c:
        c["f_start"].click(h.start, [c["f_steps"], c["f_quants"], c["f_text"], c["f_ctx"], c["f_chunks"],
                                     c["f_name"], c["f_scoring"], c["f_limit"]],
                           [c["f_note"], c["list"], *outputs, c["timer"]], **private)
        c["timer"].tick(h.tick, c["id"], [c["list"], *outputs, c["timer"]], queue=False, **private)
    c["cells"].select(open_cell, None, [c["cell_note"], *view_outputs, tabs], queue=False, **private)


# Plotly's clicks stay in the browser (gr.Plot sends none to the server): a click on a point or a heatmap square
# of a sweep figure opens its cell's run by its link, `?run=<id>` (the back button returns to the sweep). Every
# sweep figure puts the cell's run id at customdata[1]; the handler is re-attached (once) as figures are redrawn.
_SWEEP_CLICK_JS = """() => {
  if (window.__pcSweepClicks) { return; }
  const open = (ev) => {
    const p = ev && ev.points && ev.points[0];
    const rid = p && p.customdata && p.customdata[1];
    if (rid && rid !== "\u2013") {
      window.location.assign(window.location.pathname + "?run=" + encodeURIComponent(rid));
    }
  };
  window.__pcSweepClicks = setInterval(() => {
    document.querySelectorAll("[id^=pc-sweep-fig-] .js-plotly-plot").forEach((gd) => {
      if (typeof gd.on !== "function") { return; }
      gd.removeListener("plotly_click", open);
      gd.on("plotly_click", open);
    });
  }, 400);
}"""


_SWEEP_LINK_JS = """(sid) => {
  if (!sid) { return ""; }
  const url = window.location.origin + window.location.pathname + "?sweep=" + encodeURIComponent(sid);
  try { window.history.replaceState(null, "", url); } catch (e) {}
  return url;
}"""


# ------------------------------------------------------------------------------------------ launch
def _guarded_app(settings: Settings):
    """Gradio's own app class with guard.NoCrossOrigin outermost and a request body limit (Gradio 6 accepts an
    app through launch's `_app`; its CORS layer is added outermost otherwise, and cannot be configured)."""
    from gradio.routes import App, ORJSONResponse

    class GuardedApp(App):
        def build_middleware_stack(self):
            return NoCrossOrigin(UploadLimits(super().build_middleware_stack(), settings))

    app = GuardedApp(default_response_class=ORJSONResponse, max_body_size=max_body_bytes(settings))
    _serve_downloads(app, settings)
    _serve_notebook_exports(app, settings)
    return app


def _serve_downloads(app, settings: Settings) -> None:
    """GET <DOWNLOAD_PATH>/<run id>.json or .zip: a stored run's download (dashboard.Downloads: made once per run,
    cached, one run's requests never holding another's, nothing made for a client that left); 404 with the
    reason for a run the log does not hold or another name, 500 for a log that cannot be read."""
    from starlette.responses import PlainTextResponse, Response

    # the run log is opened at the first download, not when the launch settings are made
    downloads = Downloads(lambda: RunStore(settings.db_path, owner_secret=settings.owner_secret))
    app.state.pc_downloads = downloads  # for tests

    @app.get(f"/{DOWNLOAD_PATH}/{{name}}", include_in_schema=False)
    async def get_download(name: str, request: Request):
        try:
            data, media_type, filename = await downloads.serve(name, request.is_disconnected)
        except ClientGone:
            return Response(b"", status_code=499)
        except RunLogError:
            return PlainTextResponse("The run log cannot be read; see the server's log.", status_code=500)
        except PythiaCompareError as e:
            return PlainTextResponse(f"Not found: {e}", status_code=404)
        return Response(data, media_type=media_type,
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def launch_kwargs(settings: Settings | None = None) -> dict:
    """The hardened keyword arguments of `demo.launch()`, for app.py and the tests alike.

    Serves nothing but the assets (never the demo checkpoints, the run log, the model cache or the Hub
    cache); caps uploads; no MCP server, no monitoring, no Gradio run history ("runs" are this app's);
    no CORS grant to other sites; theme and css (Gradio 6 takes them here).
    """
    from gradio.utils import get_cache_folder, get_upload_folder

    s = settings or Settings.from_env()
    db = Path(s.db_path).expanduser().resolve()
    gradio_dirs = [Path(get_cache_folder()).resolve(), Path(get_upload_folder()).resolve()]
    dirs = [Path(d).expanduser().resolve() for d in (s.demo_dir, s.home, s.hf_cache_dir)]
    # A folder that holds Gradio's own cache would block every upload and download: block only the rest.
    blocked = [str(d) for d in dirs if not any(g == d or d in g.parents for g in gradio_dirs)]
    blocked += [str(db) + x for x in ("", "-wal", "-shm", "-journal")]
    blocked.append(str(local_root(s).resolve()))  # the backup's local files (backup.py): every run, every owner
    css_file = ASSETS_DIR / "style.css"
    return dict(
        allowed_paths=[str(ASSETS_DIR.resolve())], blocked_paths=blocked, max_file_size=s.max_upload_bytes,
        mcp_server=False, enable_monitoring=False, run_history=False, footer_links=["api", "gradio", "settings"],
        strict_cors=True, show_error=False, ssr_mode=False, pwa=False, share=False, _app=_guarded_app(s),
        theme=gr.themes.Soft(primary_hue="indigo", secondary_hue="amber"),
        css=css_file.read_text(encoding="utf-8") if css_file.is_file() else None, head=_plotly_head())


# ------------------------------------------------------------------------------------------ notebooks (issue 22)
CELL_INPUTS = 6  # the inputs a drawn cell hands to Handlers.gather: text, scoring, own specs, own reference,
# overrides, the lens switch (a note's last five are States)
# The Notebook tab, first on the page: its layout (_notebook_tab), its cells drawn by gr.render from the notebook
# in a gr.State (every action takes every cell's inputs, so nothing typed is lost to a re-render), Run all as a
# chain of queued jobs (one cell each, through the models queue), ?notebook=ID[@REV] links, the "/notebook" API
# and the exports' route. Its decisions live in notebooks.py.
NB_SETTINGS = list(LIMITS)  # the notebook's default settings, in the parameter table's order
NB_INTRO = ("A notebook holds one variant set, default settings and an ordered list of cells: notes (Markdown) "
            "and comparisons (a prompt, or a text for corpus scoring). Each comparison's output is an ordinary run "
            "(History and `?run=` links keep working). **Shift+Enter** in a cell runs it. Every change is saved as "
            "a new revision; typing is saved when you run a cell, press Save, or change the notebook.")


class NotebookHandlers:
    """The Notebook tab's handlers over one NotebookDesk; callable without a browser."""

    def __init__(self, app: Handlers, family: str | None = None):
        self.app = app
        self.settings = app.settings
        self.desk = NotebookDesk(app.core, family)
        self._figs: dict[str, dict] = {}  # run id -> its figures (a stored run never changes)
        self._runs: dict[str, Run] = {}  # run id -> the stored run

    def _say(self, e: Exception) -> str:
        return scrub(str(e), self.settings.hf_token) if isinstance(e, PythiaCompareError) else (
            f"Something went wrong ({type(e).__name__}); the details are in the server log.")

    # ------------------------------------------------------------------------ the notebook from the page
    def gather(self, nb_json: dict | None, top: list, cells: list, ids: list[str] | None = None) -> Notebook:
        """The notebook as the page shows it: the state, with the variant set, title and settings boxes (`top`)
        and every cell's inputs (`cells`, CELL_INPUTS values a cell: input, scoring, own specs, own reference,
        overrides, the lens switch) for
        the cells `ids` as they were drawn (matched by id, so a drawing one step behind the state loses nothing)."""
        nb = Notebook.from_json(nb_json, self.settings) if nb_json else self.desk.blank()
        title, specs, reference, *numbers = top
        from .dashboard import split_specs

        values = {}
        for k, v in zip(NB_SETTINGS, numbers):
            lim = LIMITS[k]
            values[k] = (form_int if lim.whole else _as_float)(v, lim.label.lower())
        nb = self.desk.set_variants(nb, split_specs(specs), (reference or "").strip() or None, title, values)
        drawn = ids if ids is not None else [c.id for c in nb.cells]
        where = {c.id: i for i, c in enumerate(nb.cells)}
        for j, cid in enumerate(drawn):
            got = cells[CELL_INPUTS * j: CELL_INPUTS * j + CELL_INPUTS]
            if len(got) < CELL_INPUTS or cid not in where:
                continue
            i = where[cid]
            cell = nb.cells[i]
            text, scoring, own, own_ref, overrides, lens = got
            self.desk.set_input(nb, i, text or "")
            if cell.kind == "comparison":
                nb = self.desk.set_cell_options(nb, i, scoring, own or "", own_ref or "", overrides or "",
                                                bool(lens))
                self.desk.set_input(nb, i, text or "")
        return nb

    def top_of(self, nb: Notebook) -> tuple:
        """The title, variant set and settings boxes set to a notebook's."""
        return (nb.title, " ".join(nb.variants.specs), nb.variants.reference or "",
                *(nb.settings[k] for k in NB_SETTINGS))

    def shown(self, nb: Notebook, version: int, status: str) -> tuple:
        """(state, version + 1, status, the notebook's ref for the link, downloads, top boxes…)."""
        ref = f"{nb.notebook_id}@{nb.revision}" if nb.notebook_id else ""
        return (nb.to_json(), (version or 0) + 1, status, ref, notebook_links(nb), *self.top_of(nb))

    def on_load(self, owner: str | None, request: gr.Request | None = None) -> tuple:
        """Page load: `?notebook=ID` or `?notebook=ID@REV` opened from the log (no model is loaded), else a new
        notebook; the Notebook tab selected when the link names one."""
        ref = dict(getattr(request, "query_params", None) or {}).get("notebook") if request is not None else None
        if ref is None:
            return (*self.shown(self.desk.blank(), 0, ""), gr.skip())
        nb, why = self.desk.open(ref)
        if nb is None:
            return (*self.shown(self.desk.blank(), 0, why), gr.Tabs(selected="notebook"))
        note = self._ownership(nb, owner)
        return (*self.shown(nb, 0, note), gr.Tabs(selected="notebook"))

    def _ownership(self, nb: Notebook, owner: str | None) -> str:
        if self.desk.read_only(nb, self.app.core.owner_of(owner)):
            return ("**This notebook belongs to another browser.** You can read it and **Make a copy**; only its "
                    "owner can change or delete it.")
        return ""

    def act(self, action: str, cell_id: str | None, nb_json, version, owner, top: list, cells: list,
            ids: list[str] | None = None) -> tuple:
        """A cell's button (`cell_id`) or the notebook's (None): apply every input, do `action`, save a revision."""
        try:
            nb = self.gather(nb_json, top, cells, ids)
            arg = nb.cell_index(cell_id) if cell_id is not None else None
            if action == "add_note":
                self.desk.add(nb, "note", arg)
            elif action == "add_comparison":
                self.desk.add(nb, "comparison", arg)
            elif action == "up":
                self.desk.move(nb, arg, -1)
            elif action == "down":
                self.desk.move(nb, arg, +1)
            elif action == "delete":
                self.desk.remove(nb, arg)
            saved = self.desk.save(nb, owner, as_copy=(action == "copy"))
        except Exception as e:  # noqa: BLE001 - said on the page; the notebook on screen stays as it was
            if not isinstance(e, PythiaCompareError):
                log.exception("notebook action %s failed", action)
            return (gr.skip(), gr.skip(), f"**Not saved:** {self._say(e)}", gr.skip(), gr.skip(),
                    *[gr.skip()] * (3 + len(NB_SETTINGS)), "")
        if not saved.ok:
            shown = self.shown(saved.notebook, version, f"**Not saved:** {saved.message}"
                               + (" Use **Make a copy** to keep your version." if saved.conflict else ""))
            return (*shown, "")
        return (*self.shown(saved.notebook, version, saved.message), "")

    def new(self, version) -> tuple:
        return (*self.shown(self.desk.blank(), version, "A new notebook: it is saved at its first change."), "")

    def open_ref(self, ref: str | None, version, owner) -> tuple:
        nb, why = self.desk.open((ref or "").strip())
        if nb is None:
            return (gr.skip(), gr.skip(), why, *[gr.skip()] * (2 + 3 + len(NB_SETTINGS)), gr.skip())
        return (*self.shown(nb, version, self._ownership(nb, owner) or f"Opened `{nb.notebook_id}`."), "")

    def delete_notebook(self, nb_json, armed: str | None, version, owner) -> tuple:
        """Delete the notebook in two clicks (the first asks); then a new notebook."""
        nb_id = (nb_json or {}).get("notebook_id")
        if not nb_id:
            return (gr.skip(), gr.skip(), "This notebook is not saved; there is nothing to delete.",
                    *[gr.skip()] * (2 + 3 + len(NB_SETTINGS)), "")
        if armed != f"notebook:{nb_id}":
            return (gr.skip(), gr.skip(), f"Delete notebook `{nb_id}` and every revision of it? Click **Delete "
                    f"notebook** again to confirm.", *[gr.skip()] * (2 + 3 + len(NB_SETTINGS)), f"notebook:{nb_id}")
        note = self.desk.delete(nb_id, owner)
        if not note.startswith("Deleted"):
            return (gr.skip(), gr.skip(), f"**Not deleted:** {note}", *[gr.skip()] * (2 + 3 + len(NB_SETTINGS)), "")
        return (*self.shown(self.desk.blank(), version, note), "")

    # ------------------------------------------------------------------------ running
    def run_one(self, cell_id: str, nb_json, version, owner, top: list, cells: list, ids: list[str] | None = None,
                progress=gr.Progress()):
        """A cell's Run (or Shift+Enter): a note is saved and drawn; a comparison runs through the models queue,
        then the notebook is saved with the cell's run. Yields (progress line) then the redrawn notebook."""
        try:
            nb = self.gather(nb_json, top, cells, ids)
            index = nb.cell_index(cell_id)
            cell = nb.cells[index]
            refused = self.desk.refuse_run(nb, owner)
            if refused:
                raise BadInput(refused)
        except Exception as e:  # noqa: BLE001
            yield (gr.skip(), gr.skip(), f"**Not run:** {self._say(e)}", *[gr.skip()] * (2 + 3 + len(NB_SETTINGS)),
                   "")
            return
        if cell.kind == "comparison":
            for fraction, message in self.desk.run_cell(nb, cell.id, owner):
                progress(fraction, desc=message)
        saved = self.desk.save(nb, owner)
        status = saved.message if saved.ok else f"**Not saved:** {saved.message}"
        if cell.kind == "comparison" and nb.cells[index].error:
            status = f"Cell {index + 1} failed: {nb.cells[index].error}\n\n{status}"
        yield (*self.shown(saved.notebook if saved.ok else nb, version, status), "")

    def start_all(self, nb_json, version, owner, top: list, cells: list, ids: list[str] | None = None) -> tuple:
        """Run all: every input applied, then the plan (cell ids, the public cap said) for the chain of jobs."""
        try:
            nb = self.gather(nb_json, top, cells, ids)
        except Exception as e:  # noqa: BLE001
            return gr.skip(), gr.skip(), f"**Not run:** {self._say(e)}", {"ids": [], "total": 0}
        refused = self.desk.refuse_run(nb, owner)
        if refused:
            return gr.skip(), gr.skip(), f"**Not run:** {refused}", {"ids": [], "total": 0}
        ids, note = self.desk.run_all_plan(nb)
        if not ids:
            return nb.to_json(), version, "This notebook has no comparison cell to run.", {"ids": [], "total": 0}
        return (nb.to_json(), version, note or f"Run all: {len(ids)} cell{'s' if len(ids) != 1 else ''} queued.",
                {"ids": ids, "total": len(ids), "done": 0, "all": ids})

    def step(self, nb_json, plan: dict | None, version, owner, progress=gr.Progress()):
        """One job of Run all: the plan's next cell (its own queued job), "cell 3 of 7"; the last one saves."""
        ids = list((plan or {}).get("ids") or [])
        if not ids or not nb_json:
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return
        total, done = plan["total"], plan.get("done", 0) + 1
        nb = Notebook.from_json(nb_json, self.settings)
        cid, rest = ids[0], ids[1:]
        where = f"cell {done} of {total}"
        yield gr.skip(), gr.skip(), gr.skip(), f"**Run all:** {where}…", gr.skip(), gr.skip(), gr.skip()
        try:
            nb.cell_index(cid)
            for fraction, message in self.desk.run_cell(nb, cid, owner):
                progress(fraction, desc=f"{where}: {message}")
        except PythiaCompareError as e:
            yield (gr.skip(), {**plan, "ids": rest, "done": done}, gr.skip(),
                   f"**Run all:** {where} skipped ({self._say(e)})", gr.skip(), gr.skip(), gr.skip())
            return
        new_plan = {**plan, "ids": rest, "done": done}
        if rest:
            yield (nb.to_json(), new_plan, (version or 0) + 1, f"**Run all:** {where} done", gr.skip(), gr.skip(),
                   gr.skip())
            return
        saved = self.desk.save(nb, owner)
        failed_n = sum(1 for c in nb.cells if c.id in (plan.get("all") or []) and c.error)
        status = saved.message if saved.ok else f"**Not saved:** {saved.message}"
        ref = f"{saved.notebook.notebook_id}@{saved.notebook.revision}" if saved.ok else gr.skip()
        yield ((saved.notebook if saved.ok else nb).to_json(), new_plan, (version or 0) + 1,
               f"**Run all:** {total} of {total} cells done{f', {failed_n} failed' if failed_n else ''}.", status,
               ref, notebook_links(saved.notebook) if saved.ok else gr.skip())

    # ------------------------------------------------------------------------ from the other tabs, the API
    def add_run(self, run_id: str | None, nb_json, version, owner) -> tuple:
        """Compare's "Add to notebook": the run on screen appended as a cell of the notebook, saved."""
        try:
            nb = Notebook.from_json(nb_json, self.settings) if nb_json else self.desk.blank()
            if not run_id:
                raise BadInput("run a comparison first; then it can be added to the notebook")
            nb = self.desk.with_run(nb, run_id)
        except Exception as e:  # noqa: BLE001
            return (gr.skip(), gr.skip(), f"**Not added:** {self._say(e)}", *[gr.skip()] * (2 + 3 + len(NB_SETTINGS)),
                    "", gr.skip())
        saved = self.desk.save(nb, owner)
        status = (f"Added run `{run_id}` as cell {len(nb.cells)}. " + saved.message) if saved.ok else \
            f"**Not saved:** {saved.message}"
        return (*self.shown(saved.notebook if saved.ok else nb, version, status), "", gr.Tabs(selected="notebook"))

    def from_history(self, run_id: str | None, version, owner) -> tuple:
        """History's "Open as notebook": the run as a one-cell notebook (saved, so it has a link)."""
        try:
            if not run_id:
                raise BadInput("select a run in the list first")
            nb = self.desk.one_cell(run_id)
        except Exception as e:  # noqa: BLE001
            return (gr.skip(), gr.skip(), f"**Not opened:** {self._say(e)}",
                    *[gr.skip()] * (2 + 3 + len(NB_SETTINGS)), "", gr.skip())
        saved = self.desk.save(nb, owner)
        return (*self.shown(saved.notebook if saved.ok else nb, version, saved.message), "",
                gr.Tabs(selected="notebook"))

    def api(self, notebook_id: str) -> dict:
        """The API ("/notebook"): the stored notebook of "ID" or "ID@REV" as the notebook JSON of docs/notebook.md
        (it holds no owner; ids are made on the server)."""
        try:
            return self.desk.api(notebook_id)
        except PythiaCompareError as e:
            raise gr.Error(self._say(e), print_exception=False) from None

    def listing(self, owner: str | None) -> dict:
        try:
            rows = self.desk.listing(owner)
        except PythiaCompareError:
            rows = []
        return {"headers": ["notebook", "title", "updated (UTC)", "revision", "cells"], "data": rows}

    def stored_run(self, cell) -> Run | None:
        """A comparison cell's stored run, read once per process (a stored run never changes; each redraw of the
        notebook would otherwise read every cell's run again)."""
        if cell.kind != "comparison" or not cell.run_id:
            return None
        if cell.run_id not in self._runs:
            run = self.desk.cell_run(cell)
            if run is None:
                return None
            if len(self._runs) > 256:
                self._runs.clear()
            self._runs[cell.run_id] = run
        return self._runs[cell.run_id]

    def figures(self, run: Run) -> dict:
        """A stored run's figures, made once per process."""
        if run.run_id not in self._figs:
            if len(self._figs) > 64:
                self._figs.clear()
            self._figs[run.run_id] = plots.all_figures(run)
        return self._figs[run.run_id]


def _as_float(value, name: str) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise BadInput(f"{name} must be a number, got {str(value)[:40]!r}") from None
    return f


def notebook_links(nb: Notebook) -> str:
    """A saved notebook's two exports, as links relative to the page (made by the server when clicked)."""
    if not nb.notebook_id:
        return ""
    ref = html.escape(quote(f"{nb.notebook_id}@{nb.revision}", safe="@"), quote=True)
    return "".join(f'<a id="pc-nb-{fmt}" class="pc-download" href="{NOTEBOOK_PATH}/{ref}.{fmt}" '
                   f'download="{html.escape(export_name(nb, fmt), quote=True)}">{label}</a>'
                   for fmt, label in (("ipynb", "⬇ .ipynb"), ("html", "⬇ .html")))


def _notebook_tab(settings: Settings, app: Handlers, family: str | None = None) -> dict:
    """The Notebook tab's layout (called first inside build_demo's Tabs); the cells are drawn by _wire_notebook."""
    h = NotebookHandlers(app, family)
    n: dict = {"handlers": h}
    with gr.Tab("Notebook", id="notebook"):
        gr.Markdown(NB_INTRO, elem_classes=["pc-note"])
        n["state"] = gr.State(None)
        n["version"] = gr.State(0)
        n["armed"] = gr.State("")
        n["plan"] = gr.State({"ids": [], "total": 0})
        with gr.Row():
            n["title"] = gr.Textbox("Untitled notebook", label="Title", max_length=200, scale=3, elem_id="pc-nb-title",
                                    interactive=True)
            n["open_ref"] = gr.Textbox("", label="Open a notebook (ID or ID@REV)", max_length=80, scale=2,
                                       elem_id="pc-nb-open-ref")
            n["open_btn"] = gr.Button("Open", size="sm", scale=0, min_width=70, elem_id="pc-nb-open")
            n["new_btn"] = gr.Button("New", size="sm", scale=0, min_width=70, elem_id="pc-nb-new")
        with gr.Row():
            n["specs"] = gr.Textbox("", label="Variants (specs, as in the Compare tab's “More specs”)", scale=4,
                                    max_length=MAX_SPECS_CHARS, elem_id="pc-nb-specs", interactive=True)
            n["reference"] = gr.Textbox("", label="Reference (blank: none)", max_length=200, scale=2,
                                        elem_id="pc-nb-reference", interactive=True)
            n["take"] = gr.Button("Use the Compare tab's variants", size="sm", scale=1, elem_id="pc-nb-take")
        with gr.Accordion("Default settings (a cell may override them)", open=False, elem_id="pc-nb-settings"):
            with gr.Row():
                for k in NB_SETTINGS:
                    lim = LIMITS[k]
                    n[k] = gr.Number(lim.default(settings), label=lim.widget_label, info=lim.range_text,
                                     precision=0 if lim.whole else None, elem_id=f"pc-nb-{k.replace('_', '-')}",
                                     interactive=True)
        with gr.Row(elem_classes=["pc-share"]):
            n["ref"] = gr.Textbox(visible=False, elem_id="pc-nb-ref")
            n["link"] = gr.Textbox(label="Notebook link", interactive=False, buttons=["copy"], scale=6,
                                   elem_id="pc-nb-link")
            n["downloads"] = gr.HTML("", elem_id="pc-nb-downloads", min_height=0)
        n["status"] = gr.Markdown("", elem_id="pc-nb-status")
        n["progress"] = gr.Markdown("", elem_id="pc-nb-progress")
        n["cells_area"] = gr.Column(elem_id="pc-nb-cells")
        with gr.Accordion("Notebooks in this log" if not settings.public else "Your notebooks", open=False,
                          elem_id="pc-nb-list-box"):
            n["list"] = gr.Dataframe(headers=["notebook", "title", "updated (UTC)", "revision", "cells"],
                                     interactive=False, elem_id="pc-nb-list")
    return n


def _wire_notebook(n: dict, c: dict, h: dict, page: dict, demo: gr.Blocks, tabs: gr.Tabs, settings: Settings,
                   concurrency: int) -> None:
    """The Notebook tab's events and its cells (gr.render), page load and links, Compare's and History's buttons."""
    nh: NotebookHandlers = n["handlers"]
    owner = page["owner"]
    top = [n["title"], n["specs"], n["reference"], *(n[k] for k in NB_SETTINGS)]
    shown = [n["state"], n["version"], n["status"], n["ref"], n["downloads"], *top]
    run_kw = dict(concurrency_id="models", concurrency_limit=concurrency, **_PRIVATE)

    demo.load(nh.on_load, owner, [*shown, tabs], queue=False, **_PRIVATE)
    n["ref"].change(None, n["ref"], n["link"], js=_NB_LINK_JS, **_PRIVATE)
    n["new_btn"].click(nh.new, n["version"], [*shown, n["armed"]], **_PRIVATE)
    n["open_btn"].click(nh.open_ref, [n["open_ref"], n["version"], owner], [*shown, n["armed"]],
                        **_PRIVATE)
    n["take"].click(lambda f, q, s, free, ref: (" ".join(collect_specs(f, q, s, free,
                                                                      demo_final=nh.app.core.demo_final)), ref or ""),
                    [c["family"], c["quants"], c["steps"], c["specs"], c["reference"]], [n["specs"], n["reference"]],
                    queue=False, **_PRIVATE)
    tabs.select(nh.listing, owner, n["list"], queue=False, **_PRIVATE)

    def open_listed(evt: gr.SelectData, version, who):
        row = evt.row_value if evt is not None else None
        return nh.open_ref(str(row[0]) if row else "", version, who)

    n["list"].select(open_listed, [n["version"], owner], [*shown, n["armed"]], **_PRIVATE)
    c["add_to_nb"].click(nh.add_run, [c["run_id"], n["state"], n["version"], owner], [*shown, n["armed"], tabs],
                         **_PRIVATE)
    h["open_nb"].click(nh.from_history, [h["selected"], n["version"], owner], [*shown, n["armed"], tabs],
                       **_PRIVATE)
    gr.api(nh.api, api_name="notebook")

    # Run all: one job per cell, each through the models queue (public: at most 10 cells, the plan's cap). Each
    # job's new plan (the cells left) starts the next job, so the chain ends with its last cell: a fixed chain of
    # max_cells jobs went on queueing idle jobs through the models queue after the last cell (45 after a 5-cell
    # Run all, about 15 s of them; benchmarks/bench_notebook.py)
    step_out = [n["state"], n["plan"], n["version"], n["progress"], n["status"], n["ref"], n["downloads"]]
    quiet = dict(show_progress="hidden")  # the progress line says "cell 3 of 7"
    n["plan"].change(nh.step, [n["state"], n["plan"], n["version"], owner], step_out, **quiet, **run_kw)

    with n["cells_area"]:  # the cells are drawn inside the tab's column, wherever this is called
        _draw_cells(n, nh, settings, owner, top, shown, run_kw)


def _draw_cells(n: dict, nh: "NotebookHandlers", settings: Settings, owner, top: list, shown: list,
                run_kw: dict) -> None:
    """The cells of the notebook in n["state"], redrawn whenever n["version"] changes (gr.render)."""

    @gr.render(inputs=[n["state"], n["armed"]], triggers=[n["version"].change], show_progress="hidden")
    def draw(nb_json, armed):
        if not nb_json:
            return
        nb = Notebook.from_json(nb_json, settings)
        inputs: list = []
        rows = []
        with gr.Row(elem_classes=["pc-share"]):
            save = gr.Button("Save", size="sm", elem_id="pc-nb-save")
            copy = gr.Button("Make a copy", size="sm", elem_id="pc-nb-copy")
            run_all = gr.Button("Run all", variant="primary", size="sm", elem_id="pc-nb-run-all")
            delete_nb = gr.Button("Delete notebook", variant="stop", size="sm", elem_id="pc-nb-delete")
        for i, cell in enumerate(nb.cells):
            with gr.Column(elem_id=f"pc-nb-cell-{i}", elem_classes=["pc-nb-cell", f"pc-nb-{cell.kind}"],
                           variant="panel"):
                if cell.kind == "note":
                    gr.HTML(render_note(cell.markdown or ""), elem_id=f"pc-nb-note-{i}", elem_classes=["pc-nb-note"],
                            padding=True)
                    box = gr.Textbox(cell.markdown or "", label=f"[{i + 1}] Note (Markdown)", lines=2,
                                     max_length=NOTEBOOK.max_note_chars, elem_id=f"pc-nb-input-{i}", interactive=True)
                    extra = [gr.State(""), gr.State(""), gr.State(""), gr.State(""), gr.State(False)]
                else:
                    box = gr.Textbox(cell.input, label=f"[{i + 1}] Prompt or text", lines=2,
                                     max_length=settings.max_text_chars, elem_id=f"pc-nb-input-{i}", interactive=True)
                    with gr.Accordion("Cell settings", open=bool(cell.variants or cell.overrides),
                                      elem_id=f"pc-nb-opts-{i}"):
                        with gr.Row():
                            extra = [gr.Radio(["auto", "prompt", "corpus"], value=cell.scoring, label="Scoring",
                                              elem_id=f"pc-nb-scoring-{i}", interactive=True),
                                     gr.Textbox(" ".join(cell.variants.specs) if cell.variants else "",
                                                label="Own variants (blank: the notebook's)",
                                                max_length=MAX_SPECS_CHARS, elem_id=f"pc-nb-own-{i}", interactive=True),
                                     gr.Textbox((cell.variants.reference or "") if cell.variants else "",
                                                label="Own reference", max_length=200, elem_id=f"pc-nb-own-ref-{i}",
                                                interactive=True),
                                     gr.Textbox(overrides_text(cell.overrides), label="Settings (e.g. ctx=64)",
                                                max_length=200, elem_id=f"pc-nb-overrides-{i}", interactive=True),
                                     gr.Checkbox(cell.lens, label="Layers (logit lens, prompt cells)",
                                                 elem_id=f"pc-nb-lens-{i}", interactive=True)]
                    gr.Markdown(cell_status(nb, cell), elem_id=f"pc-nb-status-{i}")
                    run = nh.stored_run(cell)
                    if run is not None:
                        figs = nh.figures(run)
                        cols, rows_ = report.summary_table(run)
                        gr.HTML(_summary_html(cols, table_cells(cols, rows_)), elem_id=f"pc-nb-summary-{i}",
                                elem_classes=["pc-nb-summary"])
                        with gr.Row():
                            gr.Plot(figs["next_token"], label="Next-token distribution", elem_id=f"pc-nb-next-{i}")
                            gr.HTML(plots.generation_html(run), elem_id=f"pc-nb-gen-{i}", elem_classes=["pc-nb-gen"])
                        if "lens" in figs:  # a lens cell's Layers view, beside its compact output
                            gr.Plot(figs["lens"], label="Layers", elem_id=f"pc-nb-layers-{i}")
                        # the other figures are sent when "All figures" opens: drawing them with every cell would
                        # hold back the first cell's drawing by three plotly figures a cell
                        with gr.Accordion("All figures", open=False, elem_id=f"pc-nb-more-{i}") as more:
                            more_plots = [gr.Plot(label="Perplexity", elem_id=f"pc-nb-ppl-{i}"),
                                          gr.Plot(label="Surprisal", elem_id=f"pc-nb-surprisal-{i}"),
                                          gr.Plot(label="KL divergence", elem_id=f"pc-nb-kld-{i}")]
                        more.expand(functools.partial(_more_figures, nh, cell), None, more_plots, queue=False,
                                    show_progress="hidden", **_PRIVATE)
                inputs += [box, *extra]
                with gr.Row(elem_classes=["pc-nb-tools"]):
                    b_run = gr.Button("▶ Run" if cell.kind == "comparison" else "▶ Show", size="sm",
                                      elem_id=f"pc-nb-run-{i}")
                    b_up = gr.Button("↑", size="sm", min_width=40, elem_id=f"pc-nb-up-{i}")
                    b_down = gr.Button("↓", size="sm", min_width=40, elem_id=f"pc-nb-down-{i}")
                    b_note = gr.Button("+ Note below", size="sm", elem_id=f"pc-nb-add-note-{i}")
                    b_cmp = gr.Button("+ Comparison below", size="sm", elem_id=f"pc-nb-add-cmp-{i}")
                    if armed == cell.id:
                        b_del = gr.Button("Yes, delete this cell", size="sm", variant="stop",
                                          elem_id=f"pc-nb-confirm-{i}")
                        b_keep = gr.Button("Keep it", size="sm", elem_id=f"pc-nb-keep-{i}")
                    else:
                        b_del = gr.Button("Delete", size="sm", variant="stop", elem_id=f"pc-nb-delete-{i}")
                        b_keep = None
                rows.append((i, cell, box, b_run, b_up, b_down, b_note, b_cmp, b_del, b_keep))
        if not nb.cells:
            with gr.Row():
                b_note0 = gr.Button("+ Note", size="sm", elem_id="pc-nb-add-note-first")
                b_cmp0 = gr.Button("+ Comparison", size="sm", elem_id="pc-nb-add-cmp-first")
        else:
            b_note0 = b_cmp0 = None

        common = [n["state"], n["version"], owner, *top, *inputs]
        outs = [*shown, n["armed"]]
        k = len(top)

        ids = [c.id for c in nb.cells]  # the cells as drawn: every handler matches their inputs by id

        def action(name: str, cell_id: str | None):
            def fn(nb_json_, version, who, *values):
                return nh.act(name, cell_id, nb_json_, version, who, list(values[:k]), list(values[k:]), ids)
            return fn

        def runner(cell_id: str):
            def fn(nb_json_, version, who, *values, progress=gr.Progress()):
                yield from nh.run_one(cell_id, nb_json_, version, who, list(values[:k]), list(values[k:]), ids,
                                      progress)
            return fn

        save.click(action("save", None), common, outs, **_PRIVATE)
        copy.click(action("copy", None), common, outs, **_PRIVATE)
        delete_nb.click(nh.delete_notebook, [n["state"], n["armed"], n["version"], owner], outs,
                        **_PRIVATE)

        def start(nb_json_, version, who, *values):
            state, ver, note, plan = nh.start_all(nb_json_, version, who, list(values[:k]), list(values[k:]), ids)
            return state, note, plan if plan["ids"] else gr.skip()  # a new plan starts the first cell's job

        run_all.click(start, [n["state"], n["version"], owner, *top, *inputs], [n["state"], n["progress"], n["plan"]],
                      **_PRIVATE)
        if b_note0 is not None:
            b_note0.click(action("add_note", None), common, outs, **_PRIVATE)
            b_cmp0.click(action("add_comparison", None), common, outs, **_PRIVATE)
        for i, cell, box, b_run, b_up, b_down, b_note, b_cmp, b_del, b_keep in rows:
            for trigger in (b_run.click, box.submit):  # Shift+Enter in a cell's input runs it, as in Jupyter
                trigger(runner(cell.id), common, outs, show_progress_on=[n["progress"]], **run_kw)
            b_up.click(action("up", cell.id), common, outs, **_PRIVATE)
            b_down.click(action("down", cell.id), common, outs, **_PRIVATE)
            b_note.click(action("add_note", cell.id), common, outs, **_PRIVATE)
            b_cmp.click(action("add_comparison", cell.id), common, outs, **_PRIVATE)
            if b_keep is None:
                b_del.click(lambda version, cid=cell.id, at=i + 1: (cid, f"Delete cell {at}? Click **Yes, delete "
                                                                        f"this cell** to confirm.", (version or 0) + 1),
                            n["version"], [n["armed"], n["status"], n["version"]], **_PRIVATE)
            else:
                b_del.click(action("delete", cell.id), common, outs, **_PRIVATE)
                b_keep.click(lambda version: ("", "Kept.", (version or 0) + 1), n["version"],
                             [n["armed"], n["status"], n["version"]], **_PRIVATE)


def _summary_html(cols: list[str], cells: list[list[str]]) -> str:
    """A notebook cell's summary as a plain HTML table of the Compare tab's cells (table_cells), every one escaped.
    Plain, not a gr.Dataframe: a notebook link draws every cell at once, and ten grids held back the first cell's
    drawing by about 0.4 s (benchmarks/bench_notebook.py)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in cells)
    return f'<div class="pc-nb-table"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _more_figures(nh: "NotebookHandlers", cell) -> tuple:
    """A cell's perplexity, surprisal and KL figures, when its "All figures" opens (made once per process)."""
    run = nh.stored_run(cell)
    if run is None:
        return gr.skip(), gr.skip(), gr.skip()
    figs = nh.figures(run)
    return figs["ppl"], figs["surprisal"], figs["kld"]


_NB_LINK_JS = """(ref) => {
  if (!ref) { return ""; }
  const id = ref.split("@")[0];
  const url = window.location.origin + window.location.pathname + "?notebook=" + encodeURIComponent(id);
  try { window.history.replaceState(null, "", url); } catch (e) {}
  return url;
}"""


def _serve_notebook_exports(app, settings: Settings) -> None:
    """GET <NOTEBOOK_PATH>/<id>[@<rev>].ipynb or .html: a notebook's export, made when asked for, served as an
    attachment named by id (never by title) with nosniff and a sandboxing CSP, so nothing in it runs from the
    page's origin; 404 with the reason for a notebook the log does not hold or another name."""
    from starlette.responses import PlainTextResponse, Response

    desks: list[NotebookDesk] = []
    one_at_a_time = threading.Lock()

    @app.get(f"/{NOTEBOOK_PATH}/{{name}}", include_in_schema=False)
    def get_export(name: str):
        try:
            with one_at_a_time:
                if not desks:
                    from .dashboard import Dashboard

                    store = RunStore(settings.db_path, owner_secret=settings.owner_secret)
                    desks.append(NotebookDesk(Dashboard(settings, pool=_NoPool(), store=store)))
                data, media_type, filename = desks[0].export(name)
        except RunLogError:
            return PlainTextResponse("The run log cannot be read; see the server's log.", status_code=500)
        except PythiaCompareError as e:
            return PlainTextResponse(f"Not found: {e}", status_code=404)
        return Response(data, media_type=media_type, headers={
            "Content-Disposition": f'attachment; filename="{filename}"', "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox", "Cache-Control": "no-store"})


class _NoPool:
    """The exports' Dashboard never runs a model: a pool that holds none."""

    def close(self) -> None:
        pass
