"""End to end: `python app.py` offline on the demo suite, driven by a real headless Chromium (Debian's).

The browser chooses three variants and a reference, runs them and sees every view; the summary table must show
what the CLI prints for the same input; the share link, opened in a fresh browser profile, must redraw every
figure with the same plotly data. A gradio_client call must return the CLI's JSON. Screenshots go to the test's
temporary folder (the README's comes from tools/screenshot.py).

The second pass (issue 11): a reopened run restores every control and Run repeats it; an error stays in the
status box and clears the stale results; plots stay readable with 7 variants; the page works on a phone.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from gradio_client import Client

from pythia_compare.web import plots
from pythia_compare.runs import report
from pythia_compare.sources.resolver import demo_steps
from pythia_compare.runs.store import RunStore
from pythia_compare.web.dashboard import page_summary, table_cells
from pythia_compare.runs.export import run_to_csv, run_to_zip
from pythia_compare.web.ui import OWNER_KEY
from tests.ui_support import (MAX_TOKENS, PROMPT, ROOT, chromium, cli_json, comparable, demo_suite, served_app,
                              three_specs)

FIGURES = ["next_token", "ppl", "surprisal", "kld"]
HELDOUT = ROOT / "assets" / "demo" / "heldout.txt"
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
    with served_app(tmp, suite) as url:
        yield tmp, suite, url


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


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
    box = page.locator("#pc-max-tokens input")
    box.wait_for(state="visible")
    for _ in range(40):  # a fill into a field still opening can be lost on a busy machine: fill until it holds
        box.fill(str(MAX_TOKENS))
        box.press("Tab")
        if page.evaluate("(n) => document.querySelector('#pc-max-tokens input').value === String(n)", MAX_TOKENS):
            break
        page.wait_for_timeout(250)
    page.locator("#pc-prompt textarea").fill(PROMPT)
    # the value is the page's before Run is pressed (a fill into a field still opening can be lost)
    page.wait_for_function("(n) => document.querySelector('#pc-max-tokens input').value === String(n)", arg=MAX_TOKENS)


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
    # fewer than 100 scored tokens: as the CLI, the KL table holds the line saying why there is no block
    assert page.evaluate(_TABLE_JS, "pc-kl-table") == [[report.kl_block_note(stored)]]

    # the copy-link button copies the link; the downloads hold the stored run as JSON and CSV
    page.locator("#pc-link button[aria-label='Copy']").click()
    assert page.evaluate("() => navigator.clipboard.readText()") == link
    with page.expect_download() as got:
        page.locator("#pc-json").click()
    assert json.loads(Path(got.value.path()).read_text(encoding="utf-8")) == stored
    with page.expect_download() as got:
        page.locator("#pc-zip").click()
    zipped = Path(got.value.path()).read_bytes()
    assert zipped == run_to_zip(stored)
    with zipfile.ZipFile(io.BytesIO(zipped)) as z:
        assert z.read("tokens.csv").decode("utf-8") == run_to_csv(stored)

    # the summary table shows what the CLI prints for the same input
    cli = cli_json(tmp, suite, specs, reference)
    assert comparable(stored) == comparable(cli)
    cols, rows = page_summary(*report.summary_table(cli))  # the page's order: the numbers first
    expected = table_cells(cols, rows)
    assert page.evaluate(_HEAD_JS, "pc-summary") == cols
    shown = page.evaluate(_TABLE_JS, "pc-summary")
    assert len(shown) == 4
    for i, col in enumerate(cols):
        if not col.endswith(" s"):  # timings differ between two executions
            assert [r[i] for r in shown] == [r[i] for r in expected], col

    page.screenshot(path=str(tmp / "live.png"), full_page=True)  # for a look when it fails; never into assets/
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


def test_the_page_loads_plotly_while_it_opens_before_any_figure_arrives(app, browser):
    page = browser.new_page()
    open_page(page, app[2])  # no run: no figure is ever sent to this page
    page.wait_for_function("() => typeof (window.Plotly || {}).react === 'function'", timeout=60_000)
    assert all(f is None or not f["data"] for f in figures(page).values())
    page.close()


def test_a_link_fetches_plotly_once_from_the_pages_head_and_draws_with_it(app, browser):
    tmp, suite, url = app
    run = api_run(url, "demo demo:Q2_K", reference="demo")
    page = browser.new_context().new_page()
    open_page(page, url + "?run=" + run["run_id"])
    wait_for_run(page, n_entries=2)
    fetched = page.evaluate("() => performance.getEntriesByType('resource').map(r => [r.name, r.initiatorType])"
                            ".filter(([n]) => /PlotlyPlot-[^/]*[.]js$/.test(n))")
    assert len(fetched) == 1, fetched  # the preloaded module is the one gradio's figures use
    assert page.locator(f"head link[rel=modulepreload][href$='{fetched[0][0].rsplit('/', 1)[1]}']").count() == 1
    page.context.close()

def test_a_bad_spec_shows_what_would_work_in_the_status_and_clears_the_previous_run(app, browser):
    tmp, suite, url = app
    earlier = api_run(url, "demo demo:Q2_K", reference="demo")
    page = browser.new_page()
    open_page(page, url + "?run=" + earlier["run_id"])
    wait_for_run(page, n_entries=2)
    page.locator("#pc-specs input, #pc-specs textarea").first.fill("demo@step3001")
    page.locator("#pc-run").click()
    status = page.locator("#pc-status")
    status.get_by_text("Stopped.").wait_for(timeout=LONG_MS)
    # the error itself is in the status box, which stays (the corner's toast goes after a while)
    status.get_by_text("the demo suite has no step3001; it has step0", exact=False).wait_for(timeout=LONG_MS)
    assert "the message in the corner" not in status.inner_text()
    # the previous run's results and its link are gone, in the page and in the address bar
    page.wait_for_function("() => !(document.querySelector('#pc-link textarea') || {}).value")
    assert not page.locator("#pc-summary").is_visible()
    assert all(f is None or not f["data"] for f in figures(page).values())
    assert not page.locator("#pc-generations .pc-gen-col").count()
    assert "?run=" not in page.url
    page.close()


def api_run(url: str, specs: str, reference: str = "", **over) -> dict:
    """A finished run made through the API (the "/compare" event, on the Run button's queue), as a script would."""
    args = dict(quants=[], specs=specs, reference=reference, prompt=PROMPT, max_tokens=MAX_TOKENS)
    args.update(over)
    return Client(url, verbose=False).predict(**args, api_name="/compare")


def test_a_gradio_client_call_returns_the_same_json_as_the_cli(app):
    tmp, suite, url = app
    specs, reference = three_specs(suite)
    got = Client(url, verbose=False).predict(quants=[], specs=" ".join(specs), reference=reference, prompt=PROMPT,
                                             max_tokens=MAX_TOKENS, api_name="/compare")
    assert got == RunStore(tmp / "runs.db").get(got["run_id"])
    assert comparable(got) == comparable(cli_json(tmp, suite, specs, reference, db_name="cli2.db"))


# ------------------------------------------------------------------------------------------ second pass (issue 11)
SEVEN_QUANTS, SEVEN_STEPS = ["F16", "Q8_0", "Q4_K_M", "Q2_K"], [0, 25, 100]
CORPUS_CTX = 32

_CONTROLS_JS = """() => ({
  quants: Array.from(document.querySelectorAll('#pc-quants input:checked')).map(i => i.name),
  steps: Array.from(document.querySelectorAll('#pc-steps .token')).map(t => t.innerText.trim()),
  reference: document.querySelector('#pc-reference input').value,
  specs: (document.querySelector('#pc-specs textarea') || document.querySelector('#pc-specs input')).value,
  prompt: document.querySelector('#pc-prompt textarea').value,
  text: document.querySelector('#pc-text textarea').value,
  ctx: document.querySelector('#pc-ctx input').value,
  temperature: document.querySelector('#pc-temperature input').value,
})"""


@pytest.fixture(scope="module")
def seven(app):
    """A corpus run of seven variants, steps and quants mixed, made through the API: (run, its text)."""
    tmp, suite, url = app
    text = HELDOUT.read_text(encoding="utf-8")[:2500]
    specs = " ".join([f"demo:{q}" for q in SEVEN_QUANTS] + [f"demo@step{s}" for s in SEVEN_STEPS])
    run = api_run(url, specs, reference="demo:F16", prompt="", text=text, ctx=CORPUS_CTX, max_tokens=8,
                  temperature=0.5, seed=7)
    assert run["params"]["scoring"] == "corpus" and len(run["variants"]) == 6
    return run, text


def _same_run(a: dict, b: dict) -> None:
    assert [v["spec"] for v in a["variants"]] == [v["spec"] for v in b["variants"]]
    assert a["reference"]["spec"] == b["reference"]["spec"]
    assert a["params"] == b["params"] and a["input"]["text"] == b["input"]["text"]
    assert [e["ppl"] for e in [a["reference"], *a["variants"]]] == [e["ppl"] for e in [b["reference"], *b["variants"]]]


@pytest.mark.parametrize("kind", ["prompt", "corpus"])
def test_a_reopened_run_shows_what_produced_it_and_run_repeats_it(app, browser, seven, kind):
    tmp, suite, url = app
    if kind == "corpus":
        run, text = seven
    else:
        run = api_run(url, "demo:Q4_K_M demo@step25 demo:Q2_K", reference="demo:F16", top_k=4, temperature=0.7,
                      seed=3)
        text = PROMPT
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    open_page(page, url + "?run=" + run["run_id"])
    wait_for_run(page, n_entries=len(run["variants"]) + 1)
    page.wait_for_function("() => document.querySelector('#pc-reference input').value === 'demo:F16'",
                           timeout=LONG_MS)
    page.locator("#pc-text-box .label-wrap").first.click()  # the long text's box, collapsed until opened
    page.locator("#pc-settings .label-wrap").first.click()
    page.locator("#pc-text textarea").wait_for()
    page.locator("#pc-ctx input").wait_for()
    shown = page.evaluate(_CONTROLS_JS)
    if kind == "corpus":
        assert shown["quants"] == SEVEN_QUANTS and shown["steps"] == [f"step {s}" for s in SEVEN_STEPS]
        assert shown["text"] == text and shown["ctx"] == str(CORPUS_CTX) and shown["temperature"] == "0.5"
        assert "the scored text is in" in page.locator("#pc-status").inner_text()
    else:
        assert shown["quants"] == ["F16", "Q4_K_M"] and shown["steps"] == ["step 25"] and shown["specs"] == "demo:Q2_K"
        assert shown["prompt"] == PROMPT and shown["text"] == "" and shown["temperature"] == "0.7"
    assert shown["reference"] == "demo:F16"
    page.locator("#pc-run").click()
    page.wait_for_function("(old) => { const v = (document.querySelector('#pc-link textarea') || {}).value || '';"
                           " return v.includes('?run=') && !v.endsWith(old); }", arg=run["run_id"], timeout=LONG_MS)
    again = RunStore(tmp / "runs.db").get(page.locator("#pc-link textarea").input_value().split("?run=")[1])
    assert again["run_id"] != run["run_id"]
    _same_run(run, again)
    page.context.close()


_BOXES_JS = """(sel) => Array.from(document.querySelectorAll(sel)).map(e => {
  const r = e.getBoundingClientRect(); return {x: r.left, y: r.top, r: r.right, b: r.bottom, w: r.width, h: r.height,
                                               text: e.textContent}; })"""


def _inside(inner: dict, outer: dict, slack: float = 1.0) -> bool:
    return (inner["x"] >= outer["x"] - slack and inner["r"] <= outer["r"] + slack and inner["y"] >= outer["y"] - slack
            and inner["b"] <= outer["b"] + slack)


def _overlap(a: dict, b: dict) -> bool:
    return a["x"] < b["r"] and b["x"] < a["r"] and a["y"] < b["b"] and b["y"] < a["b"]


def test_seven_variants_give_plots_a_user_can_read(app, browser, seven):
    tmp, suite, url = app
    run, _ = seven
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    open_page(page, url + "?run=" + run["run_id"])
    wait_for_run(page, n_entries=7)
    page.wait_for_timeout(1000)
    # step 0 beside the quants spans more than 10x: a log axis, so the quants' differences stay visible
    ppls = [e["ppl"] for e in [run["reference"], *run["variants"]]]
    assert max(ppls) / min(ppls) > 10
    assert figures(page)["ppl"]["layout"]["yaxis"]["type"] == "log"
    # the next-token chart: bars wide enough to see, not 28+ slivers
    bars = page.evaluate(_BOXES_JS, "#pc-fig-next_token .bars .point path")
    assert len(bars) >= 7 and min(b["w"] for b in bars) >= 10, sorted(b["w"] for b in bars)[:5]
    # every generation card on screen: they wrap instead of scrolling off to the side
    box = page.evaluate(_BOXES_JS, "#pc-generations .pc-gen")[0]
    cards = page.evaluate(_BOXES_JS, "#pc-generations .pc-gen-col")
    assert len(cards) == 7 and all(_inside({**c, "b": box["b"]}, box) for c in cards)
    # summary headers break between words only
    broken = page.evaluate("""() => Array.from(document.querySelectorAll('#pc-summary thead th')).flatMap(th => {
        const out = [], walker = document.createTreeWalker(th, NodeFilter.SHOW_TEXT);
        for (let n = walker.nextNode(); n; n = walker.nextNode()) {
          const re = /\\S+/g; let m;
          while ((m = re.exec(n.data))) {
            const r = document.createRange(); r.setStart(n, m.index); r.setEnd(n, m.index + m[0].length);
            const tops = new Set(Array.from(r.getClientRects()).filter(x => x.width > 0).map(x => Math.round(x.top)));
            if (tops.size > 1) out.push(m[0]);
          }
        }
        return out; })""")
    assert broken == [], broken
    page.context.close()

    # perplexity against file size: every point's label whole on the plot and none over another
    quants = api_run(url, "demo:Q8_0 demo:Q4_K_M demo:Q2_K demo:Q6_K", reference="demo:F16", max_tokens=0)
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    open_page(page, url + "?run=" + quants["run_id"])
    wait_for_run(page, n_entries=5)
    page.wait_for_timeout(1000)
    plot = page.evaluate(_BOXES_JS, "#pc-fig-ppl .main-svg")[0]
    labels = [b for b in page.evaluate(_BOXES_JS, "#pc-fig-ppl .annotation-text") if b["w"] > 0]
    assert len(labels) == 5 and all("bpw" in b["text"] for b in labels)
    assert all(_inside(b, plot) for b in labels), (plot, labels)
    boxes = labels + page.evaluate(_BOXES_JS, "#pc-fig-ppl .gtitle")  # none over another, nor over the title
    over = [(a["text"], b["text"]) for i, a in enumerate(boxes) for b in boxes[i + 1:] if _overlap(a, b)]
    assert over == [], (over, boxes)
    page.context.close()


def test_empty_tables_show_no_placeholder_headers_on_first_load(app, browser):
    page = browser.new_page()
    open_page(page, app[2])
    page.wait_for_timeout(500)
    for table in ("pc-summary", "pc-kl-table"):
        heads = page.evaluate(_HEAD_JS, table)
        assert not page.locator(f"#{table}").is_visible() or heads[:3] != ["1", "2", "3"], (table, heads)
    page.close()


def test_on_a_phone_run_stays_on_screen_alternatives_open_on_tap_and_plot_titles_fit(app, browser, seven):
    tmp, suite, url = app
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True,
                                device_scale_factor=2)
    page = phone.new_page()
    open_page(page, url)
    run_box = page.locator("#pc-run").bounding_box()
    assert run_box and run_box["y"] >= 0 and run_box["y"] + run_box["height"] <= 844  # on the first screen
    # the first screen reaches the controls, not only the title and the banner (issue 20)
    models = page.locator("#pc-family").bounding_box()
    assert models and models["y"] + 0.5 * models["height"] < 844 - run_box["height"], models
    page.mouse.wheel(0, 1500)
    page.wait_for_timeout(300)
    run_box = page.locator("#pc-run").bounding_box()
    assert run_box["y"] >= 0 and run_box["y"] + run_box["height"] <= 844  # and still there, scrolled down

    run, _ = seven
    page.goto(url + "?run=" + run["run_id"])
    wait_for_run(page, n_entries=7)
    page.wait_for_timeout(1000)
    token = page.locator("#pc-generations .pc-tok").first
    token.scroll_into_view_if_needed()
    alternatives = token.locator(".pc-alt")
    assert not alternatives.is_visible()
    token.tap()
    alternatives.wait_for(state="visible", timeout=5000)
    assert "top alternatives" in alternatives.inner_text()
    for name in FIGURES:  # every plot's title is whole within its plot
        svg = page.evaluate(_BOXES_JS, f"#pc-fig-{name} .main-svg")[0]
        title = page.evaluate(_BOXES_JS, f"#pc-fig-{name} .gtitle")[0]
        assert _inside(title, svg), (name, title, svg)
        # no toolbar over the title; a legend below the plot, not beside it taking half its width
        assert not any(b["w"] > 0 and _overlap(b, title)
                       for b in page.evaluate(_BOXES_JS, f"#pc-fig-{name} .modebar-btn")), name
        area = page.evaluate(_BOXES_JS, f"#pc-fig-{name} .nsewdrag")
        for legend in page.evaluate(_BOXES_JS, f"#pc-fig-{name} .legend"):
            assert all(legend["y"] >= a["b"] - 1 for a in area), (name, legend, area)
        if name == "ppl":  # a figure with a legend: its plot keeps most of the width
            assert all(a["w"] > 0.6 * svg["w"] for a in area), (name, area, svg)
    # the summary's first screen shows the numbers beside the variant, not its role and spec
    page.locator("#pc-summary").scroll_into_view_if_needed()
    heads = [h for h in page.evaluate(_BOXES_JS, "#pc-summary thead th") if h["r"] <= 390 and h["w"] > 0]
    shown = [h["text"].replace("⋮", "").strip() for h in heads]
    assert shown[:3] == ["variant", "PPL", "PPL ±"], shown
    page.screenshot(path=str(tmp / "phone.png"), full_page=False)
    phone.close()


def test_the_history_shows_whole_variant_lists_and_each_runs_settings(app, browser, seven):
    tmp, suite, url = app
    run, _ = seven
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    open_page(page, url)
    page.get_by_role("tab", name="History").click()
    page.locator("#pc-query input, #pc-query textarea").first.fill("zebra xylophone")
    page.get_by_role("button", name="Search").click()
    page.locator("#pc-history-note").get_by_text("No run's text, variant or label matches").wait_for(timeout=LONG_MS)
    page.locator("#pc-query input, #pc-query textarea").first.fill("")
    page.get_by_role("button", name="Search").click()
    page.wait_for_function("(id) => document.querySelector('#pc-history').innerText.includes(id)", arg=run["run_id"],
                           timeout=LONG_MS)
    cols = page.evaluate(_HEAD_JS, "pc-history")
    row = next(r for r in page.evaluate(_TABLE_JS, "pc-history") if r[0] == run["run_id"])
    assert row[cols.index("variants")] == ", ".join(v["label"] for v in run["variants"])
    assert row[cols.index("reference")] == "demo:F16" and "T 0.5 · seed 7" in row[cols.index("settings")]
    cut = page.evaluate("""() => Array.from(document.querySelectorAll('#pc-history td span'))
        .filter(s => s.scrollWidth > s.clientWidth + 1 || s.scrollHeight > s.clientHeight + 1).map(s => s.innerText)""")
    assert cut == [], cut  # nothing cut off
    page.close()
