"""The library: `import pythia_compare as pc; r = pc.compare("demo:Q8_0", "demo", prompt="def f(x):")` in a
notebook or a script. An entry point like cli.py, re-exported at the package top (pythia_compare/__init__.py).

Owns the public Python API — compare, open_run, list_runs, open_sweep, close, session, model_pool — the one
process-wide ModelPool its runs share (a second compare() on the same variants loads nothing), the rich results
(Result, SweepResult: DataFrames, plotly figures, a link, and Jupyter's rich display), and saying errors in the
API's words (`top_k`, not `--top-k`). It runs the CLI's code paths: compare.py for the run and its checks,
store.py for the log, report.py's table, export.py's tokens.csv rows, plots.py's and sweepplots.py's figures.

Never parses a command line, never prints (progress is a tqdm.auto bar on stderr; warnings are in the result's
display), never exits the process. Importing this module is light: llama_cpp, plotly and pandas are imported inside
the functions that need them.
"""

from __future__ import annotations

import functools
import html
import json
import re
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from .config import Settings
from .errors import BadInput, InputTextError, PythiaCompareError, RunNotFound, SpecError
from .params import LIMITS

# The package's other modules are imported inside the functions below, by these paths (the one place they are
# spelt): runs.compare, runs.pool, runs.store, runs.report, runs.export, runs.run, web.plots, web.dashboard,
# web.sweepview, web.sweepplots.

__all__ = ["compare", "open_run", "list_runs", "open_sweep", "published", "Notebook", "open_notebook", "close",
           "session", "model_pool", "Result", "SweepResult"]

DEFAULT_APP = "http://127.0.0.1:7860/"  # where `python app.py` serves the dashboard; Result.link's default
MAIN_FIGURES = ("ppl", "next_token", "kld")  # the figures a result's display draws (figures() has them all)
FIGURE_HEIGHT = 420  # px, a figure in a result's display
TEXT_COLUMNS = ("variant", "role", "spec", "quant", "top-1 next token")  # summary(): the rest are numbers


class _Default:
    """The `reference` argument when it is not given: the CLI's rule (compare.pick_reference)."""

    def __repr__(self) -> str:
        return "<the highest-precision variant given>"


HIGHEST_PRECISION = _Default()


# ------------------------------------------------------------------------------------ the API's words
def _words() -> list[tuple[re.Pattern, str]]:
    """How the shared checks' messages name things on the command line -> how this API names them."""
    pairs = [(r"--lens \(lens=True\)", "lens=True"), (r"--lens-positions", "positions="), (r"--lens\b", "lens=True"),
             (r"--lambada-file", "lambada_file="), (r"--limit", "limit="), (r"--text-file", "text="), (r"--prompt", "prompt="), (r"--scoring (\w+)", r"scoring='\1'"),
             (r"--reference", "reference="), (r"--offline", "offline=True"), (r"--db", "db="), (r"--home", "home="),
             (r"`python -m pythia_compare runs list`", "pythia_compare.list_runs()"),
             (r"`python -m pythia_compare sweep list`", "the sweep list (`python -m pythia_compare sweep list`)")]
    for lim in LIMITS.values():  # --top-k and top-k -> top_k, as the table of limits names the fields
        pairs.append((rf"(?<![\w-])(?:{re.escape(lim.flag)}|{re.escape(lim.name)})(?![\w-])", lim.field))
    return [(re.compile(p), r) for p, r in pairs]


_API_WORDS = _words()


def in_api_words(message: str) -> str:
    """A message of the shared checks (written for the CLI) with the API's argument names."""
    for pattern, repl in _API_WORDS:
        message = pattern.sub(repl, message)
    return message


def _in_api_words(fn):
    """A public function whose errors of this package are re-raised with the API's argument names (in_api_words),
    as the same type, without the traceback from deep inside (the message says what is wrong and what would
    work)."""
    @functools.wraps(fn)
    def said(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PythiaCompareError as e:
            message = in_api_words(str(e))
            if message == str(e):
                raise
            try:
                again = type(e)(message)
            except TypeError:  # an error class with its own arguments: as it is
                raise e from None
            raise again from None

    return said


# ------------------------------------------------------------------------------------ settings and the pool
def _path_arg(value: Any, name: str) -> Path | None:
    if value is None:
        return None
    if isinstance(value, (str, Path)) and str(value).strip():
        return Path(value).expanduser()
    raise BadInput(f"{name} must be a file path (a str or pathlib.Path), not {type(value).__name__} "
                   f"{str(value)[:40]!r}")


def _settings(*, db: Any = None, home: Any = None, offline: Any = None) -> Settings:
    """Settings.from_env (PYTHIA_COMPARE_* as for the CLI) with the API's db, home and offline on top."""
    if offline is not None and not isinstance(offline, bool):
        raise BadInput(f"offline must be True, False or None (None: PYTHIA_COMPARE_OFFLINE decides), "
                       f"not {offline!r}")
    return Settings.from_env(db_path=_path_arg(db if db is not False and db is not True else None, "db"),
                             home=_path_arg(home, "home"), offline=offline)


# What decides how a model loads and what the pool may hold: a change to any of these gets a new pool.
_POOL_FIELDS = ("home", "n_threads", "n_batch", "max_outputs", "flash_attn", "kv_f32", "extra_bufts",
                "generation_handle", "memory_budget_bytes", "probe", "probe_timeout_s", "probe_memory_margin_bytes")
_pool = None
_pool_key: tuple | None = None
_pool_lock = threading.Lock()


def _pool_for(settings: Settings):
    """The process's ModelPool, made on first use; remade (the old one closed) when settings that decide how models
    load differ from the ones it was made with."""
    from .runs.pool import ModelPool

    global _pool, _pool_key
    key = tuple(getattr(settings, f) for f in _POOL_FIELDS)
    with _pool_lock:
        if _pool is not None and key != _pool_key:
            _pool.close()
            _pool = None
        if _pool is None:
            _pool, _pool_key = ModelPool(settings), key
        return _pool


def model_pool():
    """The process-wide ModelPool the API's runs share (None before the first compare()): `.loaded()` lists the
    models it holds, `.loads` counts the models it has loaded."""
    return _pool


def close() -> None:
    """Free every model the API's runs keep loaded (the next compare() loads them again)."""
    global _pool, _pool_key
    with _pool_lock:
        if _pool is not None:
            _pool.close()
        _pool, _pool_key = None, None


@contextmanager
def session() -> Iterator[None]:
    """`with pythia_compare.session(): …`: models stay loaded between the compare() calls inside, and are freed
    at the end (close())."""
    try:
        yield
    finally:
        close()


# ------------------------------------------------------------------------------------ compare
@_in_api_words
def compare(*specs: str, prompt: str | None = None, text: str | Path | None = None,
            reference: str | None = HIGHEST_PRECISION, scoring: str = "auto", ctx: int = 512, top_k: int = 10,
            max_tokens: int = 32, temperature: float = 0.0, seed: int = 0,
            lambada_file: str | Path | None = None, limit: int | None = None, lens: bool = False,
            positions: list[int] | None = None, offline: bool | None = None,
            db: str | Path | bool | None = None, home: str | Path | None = None,
            progress: bool = True) -> "Result":
    """Run variants on one prompt or text and compare them, as `python -m pythia_compare compare` does.

    specs: variant specs, e.g. "demo:Q8_0", "demo@step100", "Q4_K_M", "step3000:Q4_K_M", "./m.gguf".
    prompt= a prompt (prompt scoring) or text= a longer text, or a pathlib.Path of a UTF-8 file (corpus scoring
    when long enough); exactly one of the two. reference: a spec; not given, the highest-precision variant given
    (two or more variants); None for no reference and no KL. scoring "auto" | "prompt" | "corpus"; ctx, top_k,
    max_tokens, temperature, seed as on the CLI. scoring="lambada" runs the LAMBADA benchmark instead (lm-eval's
    lambada_openai, docs/metrics.md) and takes no prompt= or text=: lambada_file= a LAMBADA-format JSONL (absent:
    the Hub dataset EleutherAI/lambada_openai), limit= the first N examples. lens=True (prompt runs) adds the
    per-layer logit lens (docs/metrics.md) at `positions` (token indices, at most 8; default the last token):
    Result.lens() gives it as a DataFrame. offline: True never touches the network (None: the environment
    decides). db: the run log's file (None: the default log, PYTHIA_COMPARE_DB; False: not logged). home: the
    cache of converted and quantized files. progress: a tqdm.auto bar on stderr.

    Raises the package's errors (pythia_compare.errors; BadInput for input that cannot work, its message naming
    the argument and what would work); nothing is logged then.
    """
    from .files import read_text_file
    from .runs.compare import ProgressBar, RunParams, check_prompt, pick_reference, run_comparison

    if len(specs) == 1 and isinstance(specs[0], (list, tuple)):  # compare(["demo:Q8_0", "demo"], …) too
        specs = tuple(specs[0])
    for s in specs:
        if not isinstance(s, str):
            raise SpecError(f"a variant spec must be a string like 'demo:Q8_0' or 'demo@step100', not "
                            f"{type(s).__name__} {str(s)[:40]!r}")
    if db is not None and not isinstance(db, (bool, str, Path)):
        raise BadInput(f"db must be a file path, None (the default run log) or False (not logged), not "
                       f"{type(db).__name__}")
    settings = _settings(db=db, home=home, offline=offline)
    if scoring == "lambada":
        if prompt is not None or text is not None:
            raise InputTextError("scoring='lambada' scores the LAMBADA examples, so it takes no prompt= or text=; "
                                 "give lambada_file= a LAMBADA JSONL, or leave it out for the Hub dataset")
        run_text = ""
    elif lambada_file is not None or limit is not None:
        raise BadInput("lambada_file= and limit= belong to scoring='lambada'; give scoring='lambada' with them")
    elif (prompt is None) == (text is None):
        raise InputTextError("give either prompt= (a prompt) or text= (a longer text, or a pathlib.Path of a UTF-8 "
                             "file)" + (", not both" if prompt is not None else "; neither was given"))
    elif prompt is not None:
        if not isinstance(prompt, str):
            raise InputTextError(f"prompt must be a string, not {type(prompt).__name__}")
        check_prompt(prompt, settings, what="prompt", longer="text= for long texts")
        run_text = prompt
    elif isinstance(text, Path):
        run_text = read_text_file(text, settings.max_text_chars, what="text")
    elif isinstance(text, str):
        run_text = text
    else:
        raise InputTextError(f"text must be a string or a pathlib.Path of a UTF-8 file, not {type(text).__name__}")
    if reference is HIGHEST_PRECISION:
        ref = pick_reference(list(specs), None)
    elif reference is None:
        ref = None
    else:
        ref = pick_reference(list(specs), reference) if isinstance(reference, str) else reference
    params = RunParams.from_settings(settings, scoring=scoring, ctx=ctx, top_k=top_k, max_tokens=max_tokens,
                                     temperature=temperature, seed=seed, reference=ref,
                                     lambada_file=None if lambada_file is None else str(lambada_file), limit=limit,
                                     lens=lens, lens_positions=None if positions is None else list(positions))
    pool = _pool_for(settings)
    bar = ProgressBar(notebook=True) if progress else None
    try:
        run = run_comparison(list(specs), run_text, params, settings=settings, pool=pool,
                             on_event=bar.update if bar else None)
    finally:
        if bar:
            bar.close()
    if db is False:
        return Result(run)
    from .runs.store import RunStore

    store = RunStore(settings.db_path)
    try:
        run = store.get_run(store.save(run))
    finally:
        store.close()
    return Result(run, settings.db_path)


@_in_api_words
def published(repo: str = "EleutherAI/pythia-410m-deduped-v0", task: str = "lambada_openai", shots: int = 0):
    """EleutherAI's published lm-eval numbers of one task over training, for a Pythia checkpoint repo: a pandas
    DataFrame with a step column (the Hub step), the task's metrics and their standard errors, one row per
    published step (docs/published.md; bundled with the package, no network). An unknown repo, task or shot
    count raises BadInput naming the ones there are."""
    from .runs.published import published as table

    return table(repo, task, shots)


# ------------------------------------------------------------------------------------ notebooks
@_in_api_words
def Notebook(title: str = "Untitled notebook", specs: list[str] | None = None, *, reference: str | None = None,
             db: str | Path | None = None, offline: bool | None = None, home: str | Path | None = None,
             **settings):
    """A new notebook from Python (docs/notebook.md): one variant set, then notes and comparisons.

        nb = pc.Notebook("Quants on prompts", ["demo:Q8_0", "demo:Q2_K"], reference="demo", max_tokens=8)
        nb.add_note("## Factual prompts"); nb.add_comparison(prompt="The capital of France is")
        nb.run(); nb.save(); nb.export("nb.ipynb")

    Its runs share the process-wide pool of compare() (models stay loaded between calls; close() frees them)."""
    from .web.notebooks import LibraryNotebook

    return LibraryNotebook(title, specs, reference=reference, db=db, offline=offline, home=home,
                           pool=_pool_for(_settings(db=db, home=home, offline=offline)), **settings)


@_in_api_words
def open_notebook(ref: str, db: str | Path | None = None, offline: bool | None = None,
                  home: str | Path | None = None):
    """The stored notebook "ID" (its latest revision) or "ID@REV" (that revision), to read, run, save or export;
    a link (`http://host/?notebook=ID`) works too. NotebookNotFound (a BadInput) names an id that is none."""
    from .web.notebooks import open_notebook as opened

    ref = _id_of(ref, "notebook id", "notebook") if isinstance(ref, str) and "?" in ref else ref
    return opened(ref, db=db, offline=offline, home=home,
                  pool=_pool_for(_settings(db=db, home=home, offline=offline)))


# ------------------------------------------------------------------------------------ the run log
def _id_of(value: Any, what: str, key: str) -> str:
    """An id given as itself or inside a link (`http://host/?run=ID`); BadInput naming `what` otherwise."""
    if not isinstance(value, str) or not value.strip():
        raise BadInput(f"{what} must be an id (a string like 'aB3xY9_kLm2Q') or a link with ?{key}=ID, "
                       f"not {type(value).__name__} {str(value)[:40]!r}")
    value = value.strip()
    if "?" in value or "://" in value:
        found = parse_qs(urlsplit(value).query).get(key)
        if not found:
            raise BadInput(f"the link {value[:80]!r} holds no ?{key}=ID; give the id itself or the page's link")
        value = found[0]
    return value


def _store(db: Any, *, must_exist: bool = True):
    """The run log (db, else the default one); RunNotFound naming the file when it does not exist (opening it
    would create an empty one)."""
    from .runs.store import RunStore

    if db is False:
        raise BadInput("db=False has no run log to read; give the run log's path, or None for the default log")
    settings = _settings(db=db)
    if must_exist and not settings.db_path.is_file():
        raise RunNotFound(f"there is no run log at {settings.db_path}; give db= the file compare() logged to "
                          f"(or set PYTHIA_COMPARE_DB)")
    return RunStore(settings.db_path)


@_in_api_words
def open_run(run_id_or_link: str, db: str | Path | None = None) -> "Result":
    """A logged run, by its id or its link (`http://host/?run=ID`), as a Result; no model is loaded.
    db: the run log (None: the default one)."""
    run_id = _id_of(run_id_or_link, "run_id_or_link", "run")
    store = _store(db)
    try:
        return Result(store.get_run(run_id), store.path)
    except RunNotFound:
        raise RunNotFound(f"no run in {store.path} has the id {run_id[:64]!r}; pythia_compare.list_runs() "
                          f"shows the logged runs (db= names another run log)") from None
    finally:
        store.close()


@_in_api_words
def list_runs(query: str | None = None, limit: int = 20, db: str | Path | None = None):
    """The logged runs, newest first, as the dashboard's History tab lists them: a pandas DataFrame, one row per
    run. query: full-text search in the input text; limit: at most this many rows."""
    import pandas as pd

    from .runs.store import MAX_LIST_LIMIT
    from .web.dashboard import HISTORY_COLUMNS, history_rows

    if query is not None and not isinstance(query, str):
        raise BadInput(f"query must be a string (words to find in the input text) or None, not "
                       f"{type(query).__name__}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT:
        raise BadInput(f"limit must be a whole number in 1 … {MAX_LIST_LIMIT}, not {limit!r}")
    try:
        store = _store(db)
    except RunNotFound:  # no run log yet: no runs
        return pd.DataFrame([], columns=HISTORY_COLUMNS)
    try:
        rows = history_rows(store.list(query=query or "", limit=limit))
    finally:
        store.close()
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


@_in_api_words
def open_sweep(sweep_id: str, db: str | Path | None = None) -> "SweepResult":
    """A stored sweep (`python -m pythia_compare sweep plan …`), by its id or its link (`?sweep=ID`), as a
    SweepResult. db: the run log it is in (None: the default one)."""
    from .sweeps.store import SweepStore

    sid = _id_of(sweep_id, "sweep_id", "sweep")
    store = _store(db)
    try:
        return SweepResult(SweepStore(store).get(sid), store.path)
    finally:
        store.close()


# ------------------------------------------------------------------------------------ rich results
_plotly_js_sent = False  # plotly.js goes into the first rich display of this process (one kernel, one notebook)


def _plotly_js() -> str:
    """plotly.js inline (no network), once per process: the first call returns the script, later ones ''. The
    bundle sets window.Plotly itself, which every figure's script then draws with."""
    global _plotly_js_sent
    if _plotly_js_sent:
        return ""
    from plotly.offline import get_plotlyjs

    _plotly_js_sent = True
    return (f'<script type="text/javascript" data-pythia-compare="plotly.js">window.PlotlyConfig = '
            f'{{MathJaxConfig: "local"}};\n{get_plotlyjs()}\n</script>\n')


def _figure_html(fig) -> str:
    """One figure as a div and the script that draws it with the page's window.Plotly."""
    return fig.to_html(full_html=False, include_plotlyjs=False, default_height=f"{FIGURE_HEIGHT}px",
                       default_width="100%", config={"displaylogo": False, "responsive": True})


def _plotly_json(fig) -> dict:
    """The figure as the application/vnd.plotly.v1+json display data (JupyterLab's plotly renderer)."""
    import plotly.io as pio

    data = json.loads(pio.to_json(fig, validate=False))
    return {"data": data.get("data", []), "layout": data.get("layout", {}), "config": {"displaylogo": False}}


def _table_html(columns: list[str], cells: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in cells)
    return (f'<table class="dataframe pythia-compare-table" border="1"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>")


class Result:
    """One comparison run: `.run` (the typed Run of docs/run.md), `summary()`, `tokens()`, `figures()`,
    `link()`, and a rich display in Jupyter (the summary table and the main figures)."""

    def __init__(self, run, db_path: Path | None = None):
        self.run = run
        self.db_path = db_path  # the run log it is in (None: not logged)

    @property
    def run_id(self) -> str | None:
        return self.run.run_id

    def summary(self):
        """The CLI's summary table as a pandas DataFrame: one row per model (the reference first), the CLI table's
        columns (report.SUMMARY_COLUMNS) with raw numbers ('same top %' a fraction; NaN where unknown)."""
        import pandas as pd

        from .runs.report import NA, summary_table

        columns, rows = summary_table(self.run)
        frame = pd.DataFrame([[None if c == NA else c for c in r] for r in rows], columns=columns)
        for name in columns:
            if name not in TEXT_COLUMNS:
                frame[name] = pd.to_numeric(frame[name]).astype(float if name != "n scored" else int)
        return frame

    def tokens(self):
        """The rows of the export's tokens.csv as a pandas DataFrame: one row per (model, scored position), the
        columns of export.COLUMNS (logprob, prob, surprisal_bits, and the variant's kld and dp at that token)."""
        import pandas as pd

        from .runs.export import COLUMNS, token_rows

        frame = pd.DataFrame(list(token_rows(self.run)), columns=list(COLUMNS))
        frame["token_index"] = frame["token_index"].astype("Int64")
        return frame

    def lens(self):
        """The logit lens of a lens run (compare(lens=True)) as a pandas DataFrame, the rows of the export's
        lens.csv: per (model, position, layer) the lens's top tokens with their probabilities, the KL of the
        layer's lens from the baseline's (the reference's) and the rank of the baseline's final top-1 token.
        BadInput for a run made without the lens."""
        import pandas as pd

        from .runs.export import LENS_COLUMNS, lens_rows

        if self.run.params.lens_positions is None:
            raise BadInput("this run was made without the logit lens; run compare(..., lens=True) on a prompt")
        frame = pd.DataFrame(list(lens_rows(self.run)), columns=list(LENS_COLUMNS))
        for col in ("position", "layer", "rank_in_layer", "baseline_top1_rank"):
            frame[col] = frame[col].astype("Int64")
        return frame

    def figures(self) -> dict:
        """The dashboard's plotly figures, by name: next_token, ppl, surprisal, kld, and the others the page
        draws for this kind of run (the Layers figure of a lens run)."""
        from .web.plots import all_figures

        return all_figures(self.run)

    def link(self, base_url: str = DEFAULT_APP) -> str:
        """The run's link on a dashboard serving this run log, e.g. http://127.0.0.1:7860/?run=ID."""
        if not self.run_id:
            raise BadInput("this run was not logged (compare(…, db=False)), so it has no link; run it with db=None "
                           "or a path to log it")
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise BadInput(f"base_url must be the dashboard's address, e.g. {DEFAULT_APP!r}, not {base_url!r}")
        parts = urlsplit(base_url)
        return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", urlencode({"run": self.run_id}), ""))

    def notes(self) -> list[str]:
        """The run's warnings and load notes, one line each (what the CLI prints on stderr)."""
        from .runs.report import run_notes

        return run_notes(self.run)

    def __repr__(self) -> str:
        p = self.run.params
        ref = f", reference {self.run.reference.label}" if self.run.reference else ""
        return (f"<pythia_compare.Result run {self.run_id or '(not logged)'}: {len(self.run.entries())} models, "
                f"{p.scoring} scoring, {self.run.input.n_tokens} tokens{ref}>")

    def _head_html(self) -> str:
        p = self.run.params
        ref = f"reference {html.escape(self.run.reference.label)}" if self.run.reference else "no reference"
        rid = html.escape(self.run_id) if self.run_id else "(not logged)"
        return (f"<p><b>Run {rid}</b> · {self.run.input.n_tokens} tokens · {html.escape(p.scoring)} scoring · "
                f"ctx {p.ctx} · {ref} · {len(self.run.entries())} models</p>")

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        from .runs.report import format_run, format_table, summary_table, uncertainty_note

        figs = self.figures()
        shown = [figs[name] for name in MAIN_FIGURES if name != "kld" or self.run.reference is not None]
        notes = self.notes() + ([uncertainty_note(self.run)] if uncertainty_note(self.run) else [])
        columns, rows = summary_table(self.run)
        parts = [_plotly_js(), '<div class="pythia-compare-result">', self._head_html()]
        parts += [f"<p>{html.escape(n)}</p>" for n in notes]
        parts += [_table_html(columns, format_table(columns, rows))]
        parts += [_figure_html(f) for f in shown] + ["</div>"]
        return {"text/plain": format_run(self.run, width=110), "text/html": "\n".join(parts),
                "application/vnd.plotly.v1+json": _plotly_json(figs["ppl"])}


class SweepResult:
    """One sweep (docs/sweeps.md): `.sweep` (its JSON), `grid()`, `figures()`, and a rich display in Jupyter."""

    def __init__(self, sweep: dict, db_path: Path | None = None):
        self.sweep = sweep
        self.db_path = db_path

    @property
    def sweep_id(self) -> str:
        return self.sweep["sweep_id"]

    def grid(self):
        """The sweep's cells as a pandas DataFrame, in grid order: the Sweeps tab's cell table (CELL_COLUMNS, or
        LAMBADA_CELL_COLUMNS for a LAMBADA sweep) with raw numbers."""
        import pandas as pd

        from .web.sweepview import cell_columns, cell_values

        return pd.DataFrame(cell_values(self.sweep), columns=cell_columns(self.sweep))

    def figures(self) -> dict:
        """The Sweeps tab's plotly figures, by name: ppl, kld, bpw, heatmap; a LAMBADA sweep's: lambada."""
        from .web.sweepplots import sweep_figures
        from .web.sweepview import published_lambada_for_sweep

        lam = self.sweep.get("scoring") == "lambada"
        return sweep_figures(self.sweep, published_lambada_for_sweep(self.sweep) if lam else None)

    def run(self, step: int, quant: str) -> Result:
        """The run of one done cell (step, quant) as a Result."""
        for c in self.sweep.get("cells") or []:
            if c.get("step") == step and c.get("quant") == quant and c.get("run_id"):
                return open_run(c["run_id"], db=self.db_path)
        done = ", ".join(f"({c['step']}, {c['quant']!r})" for c in self.sweep.get("cells") or [] if c.get("run_id"))
        raise RunNotFound(f"the sweep has no done cell at step={step!r}, quant={quant!r}; done cells: "
                          f"{done[:300] or 'none yet'}")

    def __repr__(self) -> str:
        s = self.sweep
        return (f"<pythia_compare.SweepResult sweep {s['sweep_id']}: {len(s.get('steps') or [])} steps × "
                f"{len(s.get('quants') or [])} quants, {s.get('done')} of {s.get('total')} cells done>")

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        from .runs.report import format_table
        from .web.sweepview import cell_columns, cell_values

        figs = self.figures()
        s = self.sweep
        head = (f"<p><b>Sweep {html.escape(s['sweep_id'])}</b> · {html.escape(str(s.get('repo')))} · "
                f"{len(s.get('steps') or [])} steps × {len(s.get('quants') or [])} quants · {s.get('done')} of "
                f"{s.get('total')} cells done · ctx {s.get('ctx')}</p>")
        parts = [_plotly_js(), '<div class="pythia-compare-sweep">', head,
                 _table_html(cell_columns(s), format_table(cell_columns(s), cell_values(s)))]
        shown = [n for n in ("lambada", "ppl", "kld") if n in figs]
        parts += [_figure_html(figs[name]) for name in shown] + ["</div>"]
        return {"text/plain": repr(self), "text/html": "\n".join(parts),
                "application/vnd.plotly.v1+json": _plotly_json(figs[shown[0]])}
