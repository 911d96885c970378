"""The dashboard page: gradio Blocks, thin handlers, and the hardened launch settings.

Owns every gradio import of the package: the layout, the events, turning library errors into `gr.Error`
(scrubbed of file paths and tokens), and `launch_kwargs`, the one source of launch settings for app.py and
the tests. The decisions behind the handlers live in dashboard.py, the numbers in compare.py and report.py,
the figures in plots.py; nothing here runs a model, draws or writes SQL.

Streaming: the Run button's event (api_name "compare") yields the run JSON as it grows into a hidden gr.JSON
(its only API output, so `gradio_client` gets exactly the CLI's JSON) and a gr.State; the State's change event
redraws the views, unqueued, so a full queue never freezes a run already on screen.
"""

from __future__ import annotations

import logging
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr

from . import plots, report
from .config import ASSETS_DIR, Settings
from .dashboard import (DEFAULT_QUANTS, DEMO_BANNER, HISTORY_COLUMNS, MAX_QUERY_CHARS, MAX_SPECS_CHARS, NOT_FOUND,
                        Dashboard, collect_specs, controls_for, default_reference, demo_banner, load_catalog,
                        log_spaced, quant_choices, reference_choices, scrub, table_cells)
from .errors import PythiaCompareError
from .store import RunStore
from .variants import DEMO_ALIAS

if TYPE_CHECKING:
    from .engine import ModelPool

log = logging.getLogger("pythia_compare.ui")

OWNER_KEY = "pythia-compare-owner"  # localStorage key of the browser's owner token
# BrowserState encrypts in the browser with a key it also sends to the browser: obfuscation, not secrecy.
# A fixed key keeps the owner token readable across server restarts (a random one would orphan every run).
OWNER_SECRET = "pythia-compare-owner-token-v1"
FAMILIES = [("Pythia-410M-deduped (Hugging Face Hub)", "pythia"), ("demo suite (bundled, offline)", DEMO_ALIAS)]
NOT_FINISHED = ("The run did not finish (the server may be busy, or the connection dropped); try again in a "
                "minute.")
CONTROLS = ["family", "quants", "steps", "specs", "reference", "prompt", "text", "text_file", "scoring", "ctx", "top_k",
            "max_tokens", "temperature", "seed"]  # what restore_controls sets, in its order
EXAMPLES = ["The capital of France is", "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
            "Once upon a time, in a small village by the sea,", "12 + 7 = 19. 23 + 5 ="]


class Handlers:
    """The page's event handlers over one Dashboard; callable without a browser (the tests do)."""

    def __init__(self, settings: Settings, pool: ModelPool | None = None, store: RunStore | None = None):
        self.core = Dashboard(settings, pool=pool, store=store)
        self.settings, self.pool, self.store = settings, self.core.pool, self.core.store

    def _fail(self, e: Exception) -> gr.Error:
        if isinstance(e, PythiaCompareError):
            return gr.Error(scrub(str(e), self.settings.hf_token), print_exception=False)
        log.exception("unexpected error in the dashboard")
        return gr.Error(f"Something went wrong ({type(e).__name__}); the details are in the server log.",
                        print_exception=False)

    def compare(self, family: str = DEMO_ALIAS, quants: list[str] | None = None, steps: list[int] | None = None,
                specs: str | None = "", reference: str | None = None, prompt: str | None = "", text: str | None = "",
                text_file: str | None = None, scoring: str = "auto", ctx: float = 512, top_k: float = 10,
                max_tokens: float = 32, temperature: float = 0.0, seed: float = 0, owner: str | None = None,
                progress=gr.Progress()):
        """Run one comparison; yields (run JSON, the same for the views). The last yield is the stored run.

        The API ("/compare"): `specs` takes any specs ("demo@step0 demo:Q2_K"), `reference` one of them or
        another spec; `text_file` and `owner` (a browser's owner token, for public deployments) may be None.
        With `family` "demo" (the default) a bare Pythia spec (`Q8_0`, `step3000`) is refused as ambiguous beside
        the demo suite: pass family="pythia" for the real model.
        """
        try:
            chosen, run_text, params = self.core.prepare(family, quants, steps, specs, reference, prompt, text,
                                                         text_file, scoring, ctx, top_k, max_tokens, temperature, seed)
            for kind, fraction, message, run in self.core.run(chosen, run_text, params, owner):
                progress(fraction, desc=message)
                if run is not None:
                    yield run, run
        except Exception as e:
            error = self._fail(e)
            # The views' state holds the error: the status box shows it (the corner's toast goes away), and the
            # previous run's results and link are cleared. The API output is left as it is; the call fails.
            yield gr.skip(), {"error": error.message}
            raise error from None

    def views(self, run: dict | None, status: str | None = None) -> tuple:
        """Every view of a run (or of nothing): status, summary, 4 figures, generations, KL table, id, 2 files.

        A failed run ({"error": message}) clears every view and its link, the status saying why. Tables with
        nothing to show are hidden (an empty gradio table shows placeholder headers "1 2 3").
        """
        if run and run.get("error"):
            run, status = None, f"**Stopped.** {run['error']}\n\nThe results of the previous run were cleared."
        if not run:
            hidden = gr.DownloadButton(value=None, visible=False)
            return (status or "", gr.Dataframe(value=None, visible=False), None, "", None, None, None,
                    gr.Dataframe(value=None, visible=False), "", hidden, hidden)
        figs = plots.all_figures(run)
        cols, rows = report.summary_table(run)
        kcols, krows = report.kl_table(run)
        files = [gr.DownloadButton(value=None, visible=False)] * 2
        if run.get("run_id"):
            files = [gr.DownloadButton(value=str(p), visible=True) for p in self.core.export(run)]
        why = report.kl_block_note(run)
        if why:  # as the CLI: llama-perplexity's block only from MIN_TOKENS_FOR_BLOCK scored tokens on
            kl = gr.Dataframe(value={"headers": ["KL statistics"], "data": [[why]]}, visible=True)
        elif len(kcols) > 1:
            kl = gr.Dataframe(value={"headers": kcols, "data": table_cells(kcols, krows)}, visible=True)
        else:
            kl = gr.Dataframe(value=None, visible=False)
        return (status if status is not None else self.core.status(run),
                gr.Dataframe(value={"headers": cols, "data": table_cells(cols, rows)}, visible=True),
                figs["next_token"], plots.generation_html(run), figs["ppl"], figs["surprisal"], figs["kld"], kl,
                run.get("run_id") or "", *files)

    def stopped(self, live: dict | None) -> tuple:
        """After a failed run: its error in the status box (or why it did not run), every view cleared."""
        return self.views(live if isinstance(live, dict) and live.get("error") else {"error": NOT_FINISHED})

    def restore_controls(self, run_id: object, cat) -> tuple:
        """Every control of CONTROLS set to what produced the stored run (gr.skip() for a prompt left as it is),
        then the reference marked as chosen; all skipped when there is no such run."""
        run = self.core.find(run_id) if run_id else None
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
                c["max_tokens"], c["temperature"], c["seed"], True)

    def open_run(self, run_id: object) -> tuple:
        """A stored run's views, or the friendly not-found page (for any id, hostile ones included)."""
        run = self.core.find(run_id)
        return self.views(run) if run else self.views(None, NOT_FOUND)

    def on_load(self, owner: str | None, request: gr.Request | None = None) -> tuple:
        """Page load: give the browser an owner token if it has none; open `?run=<id>` if the link has one."""
        token = self.core.owner_of(owner) or secrets.token_urlsafe(24)
        run_id = dict(getattr(request, "query_params", None) or {}).get("run") if request is not None else None
        views = self.open_run(run_id) if run_id is not None else self.views(None)
        return (token, *views, self.history("", token))

    def history(self, query: str | None, owner: str | None) -> dict:
        return {"headers": HISTORY_COLUMNS, "data": self.core.history(query, owner)}

    def search(self, query: str | None, owner: str | None) -> tuple[dict, str]:
        """The history for a search, and a note saying when nothing matches."""
        table = self.history(query, owner)
        q = str(query or "").strip()
        if table["data"]:
            note = f"{len(table['data'])} run{'s' if len(table['data']) != 1 else ''} found." if q else ""
        else:
            note = (f"No run's text matches “{q[:80]}”; try fewer or other words." if q
                    else "No runs yet: run a comparison in the Compare tab.")
        return table, note or "Click a run in the list to select it."

    def delete(self, run_id: str | None, query: str | None, owner: str | None,
               armed: str | None = None) -> tuple[str, dict, str, str]:
        """Delete the selected run in two clicks: the first asks, the second (on the same run) deletes; in a public
        deployment only the browser's own. (note, list, selection, the run awaiting confirmation)."""
        if run_id and armed != run_id:
            if self.core.find(run_id) is None:
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
def build_demo(settings: Settings | None = None, *, concurrency: int = 1, max_queue: int = 16) -> gr.Blocks:
    """The dashboard. `concurrency` model runs at once, at most `max_queue` waiting (then "busy, try again")."""
    settings = settings or Settings.from_env()
    cat = load_catalog(settings)
    app = Handlers(settings)
    fam = cat.family
    quant_default = [q for q in DEFAULT_QUANTS[fam] if q in cat.quants[fam]]
    ref_default = default_reference(collect_specs(fam, quant_default, [], ""))
    last = app.core.demo_final  # `demo@step<last>` is `demo:F16`: one variant

    with gr.Blocks(title="pythia-compare", analytics_enabled=False) as demo:
        owner = gr.BrowserState(None, storage_key=OWNER_KEY, secret=OWNER_SECRET)
        live = gr.State(None)
        ref_touched = gr.State(False)
        gr.Markdown("# pythia-compare\nQuant levels and training checkpoints of Pythia-410M-deduped, side by "
                    "side: next-token distributions, generations, perplexity and KL divergence from a reference.")
        banner = gr.Markdown(cat.banner, visible=bool(cat.banner), elem_id="pc-banner", elem_classes=["pc-banner"])
        with gr.Tabs(selected="compare") as tabs:
            with gr.Tab("Compare", id="compare"):
                with gr.Row():
                    with gr.Column(scale=2, min_width=320):
                        family = gr.Radio(FAMILIES, value=fam, label="Models", elem_id="pc-family")
                        quants = gr.CheckboxGroup(quant_choices(fam, cat.quants[fam]), value=quant_default,
                                                  label="Quant levels (final checkpoint)", elem_id="pc-quants")
                        with gr.Row():
                            steps = gr.Dropdown([(f"step {s}", s) for s in cat.steps[fam]], value=[],
                                                multiselect=True, label="Training steps (F16)", scale=4,
                                                elem_id="pc-steps")
                            logpick = gr.Button("5 log-spaced", size="sm", scale=1, min_width=90)
                        specs = gr.Textbox("", label="More specs", max_length=MAX_SPECS_CHARS, elem_id="pc-specs",
                                           placeholder="e.g. step3000:Q4_K_M  owner/repo:Q8_0  ./model.gguf")
                        reference = gr.Dropdown(reference_choices(collect_specs(fam, quant_default, [], "")),
                                                value=ref_default, allow_custom_value=True, label="Reference",
                                                info="KL divergence is measured against it", elem_id="pc-reference")
                    with gr.Column(scale=3, min_width=360):
                        prompt = gr.Textbox(EXAMPLES[0], lines=3, label="Prompt", elem_id="pc-prompt",
                                            max_length=settings.max_prompt_chars)
                        with gr.Accordion("Longer text for corpus scoring", open=False, elem_id="pc-text-box"):
                            text = gr.Textbox("", lines=6, label="Text (used instead of the prompt when given)",
                                              max_length=settings.max_text_chars, elem_id="pc-text")
                            text_file = gr.File(label=f"…or a .txt file (≤ {settings.max_upload_bytes // 1024} KiB)",
                                                file_types=[".txt"], type="filepath", elem_id="pc-file")
                        with gr.Accordion("Settings", open=False, elem_id="pc-settings"):
                            with gr.Row():
                                scoring = gr.Radio(["auto", "prompt", "corpus"], value="auto", label="Scoring")
                                # Ranges are checked by the server, whose message names the field (gradio's own
                                # minimum/maximum check would not).
                                ctx = gr.Number(settings.ctx, precision=0, label="Context", elem_id="pc-ctx")
                                top_k = gr.Number(settings.top_k, precision=0, label="Top-k", elem_id="pc-top-k")
                            with gr.Row():
                                max_tokens = gr.Number(settings.max_tokens, precision=0, label="Max new tokens",
                                                       elem_id="pc-max-tokens")
                                temperature = gr.Number(settings.temperature, step=0.1, label="Temperature (0: greedy)",
                                                        elem_id="pc-temperature")
                                seed = gr.Number(settings.seed, precision=0, label="Seed", elem_id="pc-seed")
                        run_btn = gr.Button("Run", variant="primary", elem_id="pc-run")
                        status = gr.Markdown(elem_id="pc-status", container=True, min_height=60)
                        examples = gr.Examples([[e] for e in EXAMPLES], inputs=[prompt], label="Examples (click to run)",
                                               api_visibility="private")
                with gr.Row(elem_classes=["pc-share"]):
                    run_id = gr.Textbox(visible=False, elem_id="pc-run-id")
                    link = gr.Textbox(label="Share link", interactive=False, buttons=["copy"], scale=6,
                                      elem_id="pc-link")
                    json_dl = gr.DownloadButton("⬇ JSON", visible=False, size="sm", scale=1, min_width=90,
                                                elem_id="pc-json")
                    csv_dl = gr.DownloadButton("⬇ CSV (zip)", visible=False, size="sm", scale=1, min_width=110,
                                               elem_id="pc-zip")
                summary = gr.Dataframe(label="Summary (the numbers the CLI prints)", interactive=False, wrap=True,
                                       elem_id="pc-summary", visible=False)
                with gr.Row():
                    fig_next = gr.Plot(label="Next-token distribution", elem_id="pc-fig-next_token")
                    fig_ppl = gr.Plot(label="Perplexity", elem_id="pc-fig-ppl")
                gen_html = gr.HTML(label="Generations", elem_id="pc-generations")
                fig_surprisal = gr.Plot(label="Surprisal", elem_id="pc-fig-surprisal")
                with gr.Row():
                    fig_kld = gr.Plot(label="KL divergence", elem_id="pc-fig-kld")
                    with gr.Column():
                        kl_table = gr.Dataframe(label="KL statistics (llama-perplexity's blocks)", visible=False,
                                                interactive=False, elem_id="pc-kl-table", max_height=420, wrap=True)
                        gr.Markdown(report.KL_TABLE_NOTE, elem_classes=["pc-note"])
                run_json = gr.JSON(visible=False, label="Run JSON")
            with gr.Tab("History", id="history"):
                with gr.Row():
                    query = gr.Textbox(label="Search the input texts", scale=4, max_length=MAX_QUERY_CHARS,
                                       elem_id="pc-query")
                    search = gr.Button("Search", scale=1)
                history = gr.Dataframe(headers=HISTORY_COLUMNS, interactive=False, wrap=True, elem_id="pc-history",
                                       column_widths=["11%", "10%", "19%", "6%", "7%", "22%", "10%", "15%"])
                selected = gr.State("")
                armed = gr.State("")  # the run whose Delete awaits its second click
                with gr.Row():
                    note = gr.Markdown("Click a run in the list to select it.", elem_id="pc-history-note")
                    open_btn = gr.Button("Open", size="sm", elem_id="pc-open")
                    delete_btn = gr.Button("Delete", size="sm", variant="stop", elem_id="pc-delete")
                gr.Markdown("Runs are kept in the server's SQLite log. " + (
                    "This deployment is public: this browser sees only its own runs, but a link opens for anyone "
                    "who has it." if settings.public else "All runs of this log are listed."))

        view_outputs = [status, summary, fig_next, gen_html, fig_ppl, fig_surprisal, fig_kld, kl_table, run_id,
                        json_dl, csv_dl]
        private = dict(api_visibility="private")

        # --- choosing variants ---
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
        family.input(switch_family, family, [quants, steps, banner], **private)
        logpick.click(lambda f: log_spaced(cat.steps[f]), family, steps, **private)
        for comp in (family, quants, steps, specs):
            comp.change(refresh_reference, [family, quants, steps, specs, reference, ref_touched], reference,
                        queue=False, **private)
        reference.input(lambda: True, None, ref_touched, queue=False, **private)

        # --- running ---
        run_inputs = [family, quants, steps, specs, reference, prompt, text, text_file, scoring, ctx, top_k,
                      max_tokens, temperature, seed, owner]
        run_kw = dict(concurrency_id="models", concurrency_limit=concurrency, show_progress_on=[status])
        runs = [run_btn.click(app.compare, run_inputs, [run_json, live], api_name="compare", **run_kw),
                examples.load_input_event.then(app.compare, run_inputs, [run_json, live], **run_kw, **private)]
        for event in runs:
            event.failure(app.stopped, live, view_outputs, queue=False, **private)
        live.change(app.views, live, view_outputs, queue=False, trigger_mode="always_last", show_progress="hidden",
                    **private)
        run_id.change(None, run_id, link, js=_LINK_JS, **private)

        # --- links, history ---
        controls = [family, quants, steps, specs, reference, prompt, text, text_file, scoring, ctx, top_k, max_tokens,
                    temperature, seed, ref_touched]
        restore = lambda rid: app.restore_controls(rid, cat)  # noqa: E731
        demo.load(app.on_load, owner, [owner, *view_outputs, history], queue=False, **private).then(
            restore, run_id, controls, queue=False, **private)
        for trigger in (search.click, query.submit):
            trigger(app.search, [query, owner], [history, note], queue=False, **private)
        tabs.select(app.history, [query, owner], history, queue=False, **private)
        history.select(_selected_run, history, [selected, note], queue=False, **private)
        open_btn.click(lambda rid: (*app.open_run(rid), gr.Tabs(selected="compare")), selected,
                       [*view_outputs, tabs], queue=False, **private).then(
            restore, run_id, controls, queue=False, **private)
        delete_btn.click(app.delete, [selected, query, owner, armed], [note, history, selected, armed], queue=False,
                         **private)
    demo.queue(default_concurrency_limit=concurrency, max_size=max_queue)
    demo.handlers = app  # for tests and embedding
    return demo


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


# ------------------------------------------------------------------------------------------ launch
class _NoCrossOrigin:
    """Outermost ASGI layer: no CORS grant to any other site, and no fetching of URLs through /file=.

    Gradio grants CORS (with credentials) to any origin once the Host is not localhost, as on a Space. The
    page itself is same-origin and needs no grant, so every Access-Control-Allow-* header is dropped.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if re.search(r"/file=\s*[a-z][a-z0-9+.-]*:", scope.get("path", ""), re.IGNORECASE):
            await send({"type": "http.response.start", "status": 403,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
            return await send({"type": "http.response.body", "body": b"Not allowed."})

        async def strip(message):
            if message["type"] == "http.response.start":
                message["headers"] = [(k, v) for k, v in message.get("headers", [])
                                      if not k.lower().startswith(b"access-control-allow-")]
            await send(message)

        return await self.app(scope, receive, strip)


def max_body_bytes(settings: Settings) -> int:
    """The largest request body taken: an upload, or a call whose prompt and text are at their caps (JSON may
    spell a character as 6 bytes), plus 1 MiB for everything else. Larger bodies get 413 before any parsing."""
    return settings.max_upload_bytes + 6 * (settings.max_text_chars + settings.max_prompt_chars) + 2**20


def _guarded_app(settings: Settings):
    """Gradio's own app class with _NoCrossOrigin outermost and a request body limit (Gradio 6 accepts an
    app through launch's `_app`; its CORS layer is added outermost otherwise, and cannot be configured)."""
    from gradio.routes import App, ORJSONResponse

    class GuardedApp(App):
        def build_middleware_stack(self):
            return _NoCrossOrigin(super().build_middleware_stack())

    return GuardedApp(default_response_class=ORJSONResponse, max_body_size=max_body_bytes(settings))


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
    css_file = ASSETS_DIR / "style.css"
    return dict(
        allowed_paths=[str(ASSETS_DIR.resolve())], blocked_paths=blocked, max_file_size=s.max_upload_bytes,
        mcp_server=False, enable_monitoring=False, run_history=False, footer_links=["api", "gradio", "settings"],
        strict_cors=True, show_error=False, ssr_mode=False, pwa=False, share=False, _app=_guarded_app(s),
        theme=gr.themes.Soft(primary_hue="indigo", secondary_hue="amber"),
        css=css_file.read_text(encoding="utf-8") if css_file.is_file() else None)
