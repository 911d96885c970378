"""Benchmark: notebooks (issue 22) — the link's server time, the first cell drawn in Chromium against a one-run link,
and Run all against the same runs one by one on warm models. One markdown table, with the CPU and load average.

Builds (in a scratch directory: its own run log, home and Hub cache; nothing of the user's is touched) a notebook of
the demo suite: a note and 9 prompt cells on 4 variants (F16 reference, Q8_0, Q4_K_M, Q2_K), run headless as
`notebook run` does. Then:

- link, server time: in a fresh process's handlers (no model loaded), what the server does for `?notebook=ID`: the
  page-load handler (the notebook read from the log) plus what the cells' drawing computes (each cell's stored
  run read, its summary table and its figures); first open and warm repeats; median and p95 (target: p95 under
  300 ms).
- first cell drawn: `python app.py` on that run log, and Debian's headless Chromium (Playwright; no browser is
  downloaded) opening `?notebook=ID` and `?run=RUN` (RUN: the first comparison cell's run), alternating, a fresh
  browser context each time; seconds from navigation start until the notebook's first comparison cell shows its
  summary rows, its next-token figure (plotly's .main-svg, every entry) and its generations, against until the
  Compare tab shows the run's summary rows, its four figures and its generations. Medians; target: ratio under 1.3.
- Run all: in one process, on warm models (every model loaded first), a 5-prompt-cell notebook of the same 4
  variants run through the page's Run all path (NotebookHandlers.start_all, then one NotebookHandlers.step per
  cell, as the page's chain of queued jobs does), against the same 5 comparisons one by one through the page's
  Run button's path (Handlers.stream); alternating rounds, medians; target: ratio under 1.1.
- Run all through the page (with Chromium): the launched app, warm; Run all clicked on the stored 5-cell notebook
  until the 5th cell is drawn, against the Compare tab's Run clicked for the same 5 prompts one after another until
  the 5th run is drawn. Both pay the browser's drawing on the same cores.

    python benchmarks/bench_notebook.py [--repeats 20] [--opens 5] [--rounds 3] [--skip-browser]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEMO = ROOT / "assets" / "demo"
VARIANTS, REFERENCE = ["demo:Q8_0", "demo:Q4_K_M", "demo:Q2_K"], "demo:F16"
RUN_ALL_PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village by the sea,",
                   "12 + 29 =", "The quick brown fox jumps over the lazy dog"]
CHROMIUM = "/usr/bin/chromium"  # Debian's; never a downloaded one
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update"]

# fully drawn: the summary's rows (gradio's Dataframe rows of grid cells), plotly's SVG with every entry, the
# generations' columns; n is the number of entries (variants and the reference)
_ROWS = "(id) => { const grid = document.querySelectorAll('#' + id + ' [role=row]');" \
        " return Array.from(grid.length ? grid : document.querySelectorAll('#' + id + ' tr'))" \
        ".filter(r => r.querySelector('[role=gridcell], td')).length; }"  # a grid's rows (Compare) or a table's
_PLOT = "(id) => { const gd = document.querySelector('#' + id + ' .js-plotly-plot');" \
        " return gd && gd.data && gd.querySelector('.main-svg') ? gd.data.length : 0; }"
_GENS = "(id) => document.querySelectorAll('#' + id + ' .pc-gen-col').length"
CELL_DRAWN_JS = f"""([i, n]) => ({_ROWS})('pc-nb-summary-' + i) === n && ({_PLOT})('pc-nb-next-' + i) === n
  && ({_GENS})('pc-nb-gen-' + i) === n"""
RUN_DRAWN_JS = f"""([i, n]) => ({_ROWS})('pc-summary') === n
  && ['next_token', 'ppl', 'surprisal', 'kld'].every(f => ({_PLOT})('pc-fig-' + f) > 0)
  && ({_PLOT})('pc-fig-next_token') === n && ({_GENS})('pc-generations') === n"""


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        name = fields.get("Model name", "?").strip()
        flags = fields.get("Flags", "").split()
        isa = "AVX-512" if "avx512f" in flags else "AVX2, no AVX-512" if "avx2" in flags else "no AVX2"
        return f"{name}, {os.cpu_count()} cores, {isa}"
    except (OSError, subprocess.SubprocessError):
        return "?"


def load() -> float:
    return os.getloadavg()[0]


def p95(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[max(0, int(round(0.95 * len(xs))) - 1)]


def scratch_settings(scratch: Path):
    from pythia_compare.config import Settings

    # the same places tests/ui_support.app_env gives `python app.py`, so the launched app reads this run log
    return Settings(db_path=scratch / "runs.db", home=scratch / "home", offline=True, hf_cache_dir=scratch / "hf",
                    hub_endpoint="http://127.0.0.1:9", demo_dir=DEMO)


def build_link_notebook(s) -> tuple[str, str]:
    """The 10-cell notebook (a note, 9 prompt cells), run headless; (its id, the first comparison cell's run id)."""
    from pythia_compare.runs.notebook import Notebook
    from pythia_compare.runs.notebookrun import run_cells
    from pythia_compare.runs.notebookstore import NotebookStore
    from pythia_compare.runs.pool import ModelPool
    from pythia_compare.runs.store import RunStore

    runs = RunStore(s.db_path)
    nb = Notebook.new("bench", VARIANTS, REFERENCE, s, max_tokens=16)
    nb.add_note("# Ten cells\nA note, then nine prompts.")
    for i in range(9):
        nb.add_comparison(prompt=f"Prompt number {i}: once upon a time, in a small village by the sea,")
    pool = ModelPool(s)
    try:
        run_cells(nb, settings=s, pool=pool, store=runs)
    finally:
        pool.close()
    saved = NotebookStore(runs, s).save(nb)
    first = next(c for c in saved.cells if c.kind == "comparison")
    return saved.notebook_id, first.run_id


def link_server_times(s, nb_id: str, repeats: int) -> dict:
    """?notebook=ID in a fresh page's handlers each time (nothing cached, no model): the page-load handler plus
    what drawing the cells computes; the first open apart from the warm repeats."""
    from pythia_compare.runs import report
    from pythia_compare.runs.notebook import Notebook
    from pythia_compare.web import plots
    from pythia_compare.web.ui import Handlers, NotebookHandlers

    link = types.SimpleNamespace(query_params={"notebook": nb_id})
    times = []
    parts = {"open": 0.0, "runs": 0.0, "tables": 0.0, "figures": 0.0, "generations": 0.0}
    for _ in range(repeats + 1):
        app = Handlers(s)  # a fresh page's handlers: nothing cached, no model
        nh = NotebookHandlers(app)
        t0 = time.perf_counter()
        shown = nh.on_load(None, link)
        opened = Notebook.from_json(shown[0], s)
        t = time.perf_counter()
        parts["open"] += t - t0
        for cell in opened.cells:
            run = nh.desk.cell_run(cell)
            parts["runs"] += time.perf_counter() - t
            t = time.perf_counter()
            if run is not None:
                report.summary_table(run)
                parts["tables"] += time.perf_counter() - t
                t = time.perf_counter()
                plots.all_figures(run)
                parts["figures"] += time.perf_counter() - t
                t = time.perf_counter()
                plots.generation_html(run)
                parts["generations"] += time.perf_counter() - t
            t = time.perf_counter()
        times.append(time.perf_counter() - t0)
        assert app.pool.loaded() == [], "opening a notebook link must not load a model"
    warm = times[1:]
    return {"first": times[0], "median": statistics.median(warm), "p95": p95(warm), "n": len(warm),
            "parts": {k: v / len(times) for k, v in parts.items()}}


def drawn_times(scratch: Path, nb_id: str, run_id: str, n_entries: int, opens: int) -> dict:
    """`python app.py` on the scratch run log; Chromium opens ?notebook=ID and ?run=RUN in turn (which goes first
    alternates), a fresh browser context each: seconds from navigation start to fully drawn (see the module doc).
    One open of each first, not counted (the server's first open imports and warms what it uses)."""
    from playwright.sync_api import sync_playwright

    from tests.ui_support import start_app, stop

    proc, url = start_app(scratch, DEMO)
    pages = {"notebook": (f"{url}?notebook={nb_id}", CELL_DRAWN_JS), "run": (f"{url}?run={run_id}", RUN_DRAWN_JS)}
    got: dict[str, list[float]] = {"notebook": [], "run": []}
    loads = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                for rep in range(opens + 1):
                    order = ["notebook", "run"] if rep % 2 == 0 else ["run", "notebook"]
                    for kind in order:
                        target, js = pages[kind]
                        context = browser.new_context(viewport={"width": 1280, "height": 900})
                        page = context.new_page()
                        page.goto(target)
                        page.wait_for_function(js, arg=[1, n_entries], timeout=120_000, polling="raf")
                        seconds = page.evaluate("() => performance.now()") / 1000
                        context.close()
                        if rep:
                            got[kind].append(seconds)
                    loads.append(load())
            finally:
                browser.close()
    finally:
        stop(proc)
    return {"notebook": statistics.median(got["notebook"]), "run": statistics.median(got["run"]),
            "all": got, "load": (min(loads), max(loads)), "n": opens}


def run_all_times(s, rounds: int) -> dict:
    """In one process on warm models: a 5-prompt-cell notebook's Run all through the page's handlers (start_all,
    then a step per cell) against the same 5 comparisons through Handlers.stream (the Compare tab's Run) one by
    one; `rounds` of each (--inproc-rounds, 15: a round is under a second on the demo models and rounds vary by
    10-20%), alternating which goes first; seconds per round."""
    from pythia_compare.runs.notebook import Notebook
    from pythia_compare.web.notebooks import overrides_text
    from pythia_compare.web.ui import Handlers, NotebookHandlers

    app = Handlers(s)
    nh = NotebookHandlers(app)
    noop = lambda *a, **k: None  # noqa: E731 - gr.Progress stands for the page's progress bar
    nb = Notebook.new("run all", VARIANTS, REFERENCE, s, max_tokens=16)
    for prompt in RUN_ALL_PROMPTS:
        nb.add_comparison(prompt=prompt)
    values = nb.settings_of(nb.cells[0])

    def one_by_one() -> None:
        for prompt in RUN_ALL_PROMPTS:
            for _ in app.stream("demo", None, None, " ".join(VARIANTS), REFERENCE, prompt, "", None, "auto",
                                 values["ctx"], values["top_k"], values["max_tokens"], values["temperature"],
                                 values["seed"], None, False, progress=noop):
                pass

    def run_all() -> Notebook:
        state = nb.to_json()
        top = list(nh.top_of(nb))
        cells = []
        for c in nb.cells:
            cells += [c.input, c.scoring, "", "", overrides_text(c.overrides), c.lens]
        state, version, _note, plan = nh.start_all(state, 1, None, top, cells, [c.id for c in nb.cells])
        while plan and plan.get("ids"):
            last = None
            for last in nh.step(state, plan, version, None, progress=noop):
                pass
            state, plan, version = last[0], last[1], last[2]
        done = Notebook.from_json(state, s)
        assert all(c.run_id and not c.error for c in done.cells), [c.error for c in done.cells]
        return done

    try:
        one_by_one()  # every model loaded (warm), and the code paths' first-call costs paid
        loaded = list(app.pool.loaded())
        times: dict[str, list[float]] = {"run_all": [], "one_by_one": []}
        loads = []
        for r in range(rounds):
            order = [("run_all", run_all), ("one_by_one", one_by_one)]
            for name, fn in (order if r % 2 == 0 else order[::-1]):
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
                loads.append(load())
        assert list(app.pool.loaded()) == loaded, "a model was loaded again: the rounds were not on warm models"
    finally:
        app.pool.close()
    return {"run_all": statistics.median(times["run_all"]), "one_by_one": statistics.median(times["one_by_one"]),
            "all": times, "load": (min(loads), max(loads)), "n": rounds}


def page_run_all_times(scratch: Path, rounds: int) -> dict:
    """The same through the page: `python app.py` on the scratch run log, warm (every model loaded by a first run),
    and Chromium; alternating, a fresh browser context opening the stored 5-prompt-cell notebook and clicking Run
    all (seconds from the click until "5 of 5 cells done" and the last cell's summary drawn: the chain of queued
    jobs and each cell's redraw), against the Compare tab (its default variants are these four) running the same 5
    prompts one after another (seconds from the first Run click until the 5th run's figures are drawn)."""
    from playwright.sync_api import sync_playwright

    from pythia_compare.runs.notebook import Notebook
    from pythia_compare.runs.notebookstore import NotebookStore
    from pythia_compare.runs.store import RunStore
    from tests.ui_support import start_app, stop

    s = scratch_settings(scratch)
    nb = Notebook.new("page run all", VARIANTS, REFERENCE, s, max_tokens=16)
    for prompt in RUN_ALL_PROMPTS:
        nb.add_comparison(prompt=prompt)
    nb_id = NotebookStore(RunStore(s.db_path), s).save(nb).notebook_id
    n_cells = len(RUN_ALL_PROMPTS)
    proc, url = start_app(scratch, DEMO)
    times: dict[str, list[float]] = {"run_all": [], "one_by_one": []}
    loads = []

    def fresh_page(browser, target: str):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.goto(target)
        page.wait_for_function("() => localStorage.length > 0", timeout=120_000)  # the load events have run
        return context, page

    def run_all(browser) -> float:
        context, page = fresh_page(browser, f"{url}?notebook={nb_id}")
        page.locator(f"#pc-nb-input-{n_cells - 1} textarea").wait_for(timeout=120_000)
        page.wait_for_timeout(500)
        t = time.perf_counter()
        page.locator("#pc-nb-run-all").click()
        page.wait_for_function("(n) => ((document.querySelector('#pc-nb-progress') || {}).innerText || '')"
                               ".includes(n + ' of ' + n + ' cells done') && document.querySelector("
                               "'#pc-nb-summary-' + (n - 1) + ' td')", arg=n_cells, timeout=600_000, polling="raf")
        seconds = time.perf_counter() - t
        context.close()
        return seconds

    def one_by_one(browser) -> float:
        context, page = fresh_page(browser, url)
        page.get_by_role("tab", name="Compare").click()
        page.locator("#pc-settings .label-wrap").first.click()
        box = page.locator("#pc-max-tokens input")
        box.fill("16")
        box.press("Tab")
        page.wait_for_timeout(500)
        t = time.perf_counter()
        for prompt in RUN_ALL_PROMPTS:
            before = page.locator("#pc-link textarea").input_value()
            page.locator("#pc-prompt textarea").fill(prompt)
            page.locator("#pc-run").click()
            page.wait_for_function(
                "([old, n]) => { const v = (document.querySelector('#pc-link textarea') || {}).value || '';"
                " return v.includes('?run=') && v !== old && ['next_token', 'ppl', 'surprisal', 'kld'].every(f => {"
                " const gd = document.querySelector('#pc-fig-' + f + ' .js-plotly-plot');"
                " return gd && gd.data && gd.data.length > 0 && gd.querySelector('.main-svg'); })"
                " && document.querySelectorAll('#pc-generations .pc-gen-col').length === n; }",
                arg=[before, len(VARIANTS) + 1], timeout=600_000, polling="raf")
        seconds = time.perf_counter() - t
        context.close()
        return seconds

    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                one_by_one(browser)  # warm: every model loaded in the app's pool, the page's paths run once
                for r in range(rounds):
                    for name in (("run_all", "one_by_one") if r % 2 == 0 else ("one_by_one", "run_all")):
                        times[name].append((run_all if name == "run_all" else one_by_one)(browser))
                        loads.append(load())
            finally:
                browser.close()
    finally:
        stop(proc)
    return {"run_all": statistics.median(times["run_all"]), "one_by_one": statistics.median(times["one_by_one"]),
            "all": times, "load": (min(loads), max(loads)), "n": rounds}


def table(cpu: str, link: dict | None, drawn: dict | None, run_all: dict | None,
          page_run_all: dict | None = None) -> str:
    lines = [f"CPU: {cpu}", "",
             "| measure | figure | target | ratio | load average |", "|---|---|---|---|---|"]
    if link:
        lines.append(f"| `?notebook=ID` link (10 cells), server time: first open / warm median / p95 of {link['n']} | "
                     f"{link['first'] * 1000:.0f} / {link['median'] * 1000:.0f} / {link['p95'] * 1000:.0f} ms | "
                     f"p95 < 300 ms | | {link['load']:.1f} |")
    if drawn:
        lines += _pair(drawn, ("notebook", "first cell fully drawn, `?notebook=ID` in a fresh Chromium context"),
                       ("run", "the same run's `?run=ID`, Compare tab fully drawn"), "first cell / one-run link", 1.3)
    if run_all:
        lines += _pair(run_all, ("run_all", "Run all, 5 prompt cells × 4 variants, warm models"),
                       ("one_by_one", "the same 5 comparisons one by one, warm models"), "Run all / one by one", 1.1)
    if page_run_all:
        lines += _pair(page_run_all, ("run_all", "the page (launched app, Chromium): Run all clicked, until the 5th "
                                                 "cell is drawn"),
                       ("one_by_one", "the page: the same 5 by the Compare tab's Run, one after another, until the "
                                      "5th is drawn"), "the page: Run all / one by one", None)
    return "\n".join(lines)


def _pair(got: dict, ours: tuple[str, str], theirs: tuple[str, str], what: str, target: float | None) -> list[str]:
    """Three table rows: two medians (got[key], labelled) and their ratio against `target` (None: shown in
    brackets, the issue's target read loosely)."""
    lo, hi = got["load"]
    ratio = got[ours[0]] / got[theirs[0]]
    rows = [f"| {label} (median of {got['n']}) | {got[key]:.2f} s | | | {lo:.1f}–{hi:.1f} |"
            for key, label in (ours, theirs)]
    if target is None:
        rows.append(f"| {what} | | (1.1x) | {ratio:.2f}x | {lo:.1f}–{hi:.1f} |")
    else:
        rows.append(f"| {what} | | < {target}x | {ratio:.2f}x {'(met)' if ratio < target else '(NOT met)'} | "
                    f"{lo:.1f}–{hi:.1f} |")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20, help="warm opens of the link (server time)")
    ap.add_argument("--opens", type=int, default=5, help="Chromium opens of each link (after one not counted)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of Run all and of one by one through the page")
    ap.add_argument("--inproc-rounds", type=int, default=15,
                    help="rounds of the in-process Run all and one by one (each under a second on the demo models, "
                         "so run to run noise of 10-20%% needs many)")
    ap.add_argument("--skip-browser", action="store_true", help="no Chromium part")
    args = ap.parse_args()
    cpu = cpu_name()
    print(f"load average at the start {load():.1f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="pc-bench-nb-") as d:
        scratch = Path(d)
        s = scratch_settings(scratch)
        nb_id, first_run = build_link_notebook(s)
        link = link_server_times(s, nb_id, args.repeats)
        link["load"] = load()
        print("link, mean per open: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in link["parts"].items()),
              flush=True)
        drawn = None
        if not args.skip_browser:
            drawn = drawn_times(scratch, nb_id, first_run, len(VARIANTS) + 1, args.opens)
            print("Chromium, seconds: " + "; ".join(f"{k} " + " ".join(f"{x:.2f}" for x in v)
                                                    for k, v in drawn["all"].items()), flush=True)
        run_all = run_all_times(s, args.inproc_rounds)
        print("Run all rounds, seconds: " + "; ".join(f"{k} " + " ".join(f"{x:.2f}" for x in v)
                                                      for k, v in run_all["all"].items()), flush=True)
        page_run_all = None
        if not args.skip_browser:
            page_run_all = page_run_all_times(scratch, args.rounds)
            print("page Run all rounds, seconds: " + "; ".join(f"{k} " + " ".join(f"{x:.2f}" for x in v)
                                                               for k, v in page_run_all["all"].items()), flush=True)
    print(f"load average at the end {load():.1f}\n")
    print(table(cpu, link, drawn, run_all, page_run_all))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
