"""End to end: `python app.py` offline on the demo suite, driven by a real headless Chromium (Debian's).

The browser chooses three variants and a reference, runs them and sees every view; the summary table must show
what the CLI prints for the same input; the share link, opened in a fresh browser profile, must redraw every
figure with the same plotly data. A gradio_client call must return the CLI's JSON. The page's screenshot goes to
assets/screenshot.png for the README.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gradio_client import Client
from playwright.sync_api import sync_playwright

from pythia_compare import plots, report
from pythia_compare.sources import demo_steps
from pythia_compare.store import RunStore
from pythia_compare.dashboard import table_cells
from pythia_compare.export import run_to_csv
from pythia_compare.ui import OWNER_KEY
from tests.ui_support import (MAX_TOKENS, PROMPT, ROOT, cli_json, comparable, demo_suite, start_app, stop,
                        three_specs)

FIGURES = ["next_token", "ppl", "surprisal", "kld"]
SCREENSHOT = ROOT / "assets" / "screenshot.png"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update"]
LONG_MS = 600_000  # the first run converts and quantizes the demo models

_FIGURE_JS = """(names) => Object.fromEntries(names.map(n => {
  const gd = document.querySelector('#pc-fig-' + n + ' .js-plotly-plot');
  return [n, gd ? JSON.parse(JSON.stringify({data: gd.data, layout: gd.layout,
                                             drawn: gd.querySelectorAll('.main-svg').length})) : null];
}))"""
_TABLE_JS = """(id) => Array.from(document.querySelectorAll('#' + id + ' [role=row]'))
  .map(r => Array.from(r.querySelectorAll('[role=gridcell]')).map(c => c.innerText.trim()))
  .filter(r => r.length)"""
_HEAD_JS = """(id) => Array.from(document.querySelectorAll('#' + id + ' thead th')).map(c => c.innerText.trim())"""


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    suite = demo_suite(tmp_path_factory.mktemp("demo-standin"))
    proc, url = start_app(tmp, suite)
    yield tmp, suite, url
    stop(proc)


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def figures(page) -> dict:
    return page.evaluate(_FIGURE_JS, FIGURES)


def listen(page) -> list:
    """The page's unqueued event responses (/gradio_api/run/…), in order: the views arrive in these."""
    got = []
    page.on("response", lambda r: got.append(r) if "/gradio_api/run/" in r.url else None)
    return got


def served_figures(responses: list, run_id: str) -> dict:
    """Each figure's plotly JSON exactly as the server last sent it together with this run's id."""
    for r in reversed(responses):
        data = r.json().get("data") or []
        if run_id in data:
            return dict(zip(FIGURES, [json.loads(x["plot"]) for x in data
                                      if isinstance(x, dict) and x.get("type") == "plotly"]))
    raise AssertionError(f"no response carried the views of run {run_id}")


def wait_for_run(page, n_entries: int) -> None:
    """Until the stored run is on the page: its link, and every figure drawn with every entry."""
    page.wait_for_function("() => (document.querySelector('#pc-link textarea') || {}).value?.includes('?run=')",
                           timeout=LONG_MS)
    page.wait_for_function(
        """(n) => ['next_token', 'ppl', 'surprisal', 'kld'].every(f => {
             const gd = document.querySelector('#pc-fig-' + f + ' .js-plotly-plot');
             return gd && gd.data && gd.data.length > 0 && gd.querySelector('.main-svg'); })
           && document.querySelector('#pc-fig-next_token .js-plotly-plot').data.length === n
           && document.querySelectorAll('#pc-generations .pc-gen-col').length === n""",
        arg=n_entries, timeout=LONG_MS)


def open_page(page, url: str) -> None:
    """Load the page and wait for its load event: the browser's owner token is stored once it has run."""
    page.goto(url)
    page.locator("#pc-run").wait_for()
    page.wait_for_function(f"() => localStorage.getItem({OWNER_KEY!r})", timeout=LONG_MS)


def choose(page, suite) -> None:
    """Three variants and a reference, chosen as a user would."""
    first = demo_steps(suite)[0]
    wanted = {"F16", "Q4_K_M", "Q2_K"}
    for label in page.locator("#pc-quants label").all():
        name = label.locator("input").get_attribute("name")
        if label.locator("input").is_checked() != (name in wanted):
            label.click()
    page.locator("#pc-steps input").click()
    page.get_by_role("option", name=f"step {first}", exact=True).click()
    page.locator("#pc-prompt textarea").click()  # close the list
    page.locator("#pc-reference input").click()
    page.get_by_role("option", name="demo:F16", exact=True).click()
    page.locator("#pc-settings .label-wrap").first.click()
    page.locator("#pc-max-tokens input").fill(str(MAX_TOKENS))
    page.locator("#pc-max-tokens input").press("Tab")
    page.locator("#pc-prompt textarea").fill(PROMPT)


def test_a_browser_run_shows_every_view_matches_the_cli_and_its_link_redraws_it(app, browser):
    tmp, suite, url = app
    specs, reference = three_specs(suite)
    live = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True,
                               permissions=["clipboard-read", "clipboard-write"])
    page = live.new_page()
    live_responses = listen(page)
    open_page(page, url)
    choose(page, suite)
    page.locator("#pc-run").click()
    wait_for_run(page, n_entries=4)

    link = page.locator("#pc-link textarea").input_value()
    run_id = link.split("?run=", 1)[1]
    assert page.url == link  # the address bar shows the run's own link
    stored = RunStore(tmp / "runs.db").get(run_id)
    assert [v["spec"] for v in stored["variants"]] == specs and stored["params"]["reference"] == reference

    # every view is there
    live_figs = figures(page)
    for name, fig in live_figs.items():
        assert fig and fig["drawn"] >= 1 and len(fig["data"]) >= 1, name
    assert len(live_figs["kld"]["data"]) == 3  # one box per variant
    kl_rows = page.evaluate("() => document.querySelector('#pc-kl-table [role=grid]').getAttribute('aria-rowcount')")
    assert int(kl_rows) == len(report.kl_table(stored)[1]) + 1  # the table scrolls: count its rows, header included

    # the copy-link button copies the link; the downloads hold the stored run as JSON and CSV
    page.locator("#pc-link button[aria-label='Copy']").click()
    assert page.evaluate("() => navigator.clipboard.readText()") == link
    with page.expect_download() as got:
        page.locator("#pc-json").click()
    assert json.loads(Path(got.value.path()).read_text(encoding="utf-8")) == stored
    with page.expect_download() as got:
        page.locator("#pc-csv").click()
    assert Path(got.value.path()).read_bytes().decode("utf-8") == run_to_csv(stored)

    # the summary table shows what the CLI prints for the same input
    cli = cli_json(tmp, suite, specs, reference)
    assert comparable(stored) == comparable(cli)
    cols, rows = report.summary_table(cli)
    expected = table_cells(cols, rows)
    assert page.evaluate(_HEAD_JS, "pc-summary") == cols
    shown = page.evaluate(_TABLE_JS, "pc-summary")
    assert len(shown) == 4
    for i, col in enumerate(cols):
        if not col.endswith(" s"):  # timings differ between two executions
            assert [r[i] for r in shown] == [r[i] for r in expected], col

    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    live_table, live_served = shown, served_figures(live_responses, run_id)
    assert live_served == {k: json.loads(f.to_json()) for k, f in plots.all_figures(stored).items()}
    live.close()

    # the link, in a fresh browser profile, redraws the same figures from the log with no model loaded
    fresh = browser.new_context(viewport={"width": 1280, "height": 900})
    page = fresh.new_page()
    linked_responses = listen(page)
    open_page(page, link)
    wait_for_run(page, n_entries=4)
    assert served_figures(linked_responses, run_id) == live_served  # data and layout, as sent
    linked = figures(page)
    for name in FIGURES:  # and as plotly.js holds it (its layout gains computed ranges, so data only)
        assert linked[name]["data"] == live_figs[name]["data"], name
    assert page.evaluate(_TABLE_JS, "pc-summary") == live_table
    fresh.close()


def test_a_bad_link_shows_a_friendly_not_found_page(app, browser):
    page = browser.new_page()
    open_page(page, app[2] + "?run=%27%20OR%201%3D1%20--%20%3Cscript%3E")
    page.get_by_text("Run not found").wait_for(timeout=LONG_MS)
    assert "Traceback" not in page.content() and "<script>" not in page.locator("#pc-status").inner_html()
    page.close()


def test_a_bad_spec_shows_what_would_work_and_the_run_stops(app, browser):
    page = browser.new_page()
    open_page(page, app[2])
    page.locator("#pc-specs input, #pc-specs textarea").first.fill("step3001")
    page.locator("#pc-run").click()
    page.get_by_text("nearest it has are step3000", exact=False).first.wait_for(timeout=LONG_MS)
    page.locator("#pc-status").get_by_text("Stopped.").wait_for(timeout=LONG_MS)
    page.close()


def test_a_gradio_client_call_returns_the_same_json_as_the_cli(app):
    tmp, suite, url = app
    specs, reference = three_specs(suite)
    got = Client(url, verbose=False).predict(quants=[], specs=" ".join(specs), reference=reference, prompt=PROMPT,
                                             max_tokens=MAX_TOKENS, api_name="/compare")
    assert got == RunStore(tmp / "runs.db").get(got["run_id"])
    assert comparable(got) == comparable(cli_json(tmp, suite, specs, reference, db_name="cli2.db"))
