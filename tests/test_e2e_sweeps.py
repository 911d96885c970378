"""End to end, the Sweeps tab: `python app.py` offline on a run log holding a real demo sweep (planned and run
through the CLI), driven by a real headless Chromium (Debian's).

The browser opens the Sweeps tab, clicks the sweep and sees its four views drawn (the log step axis with step0
at its start); the figures are exactly what sweepplots.py builds from the stored sweep. The sweep's share link, in a
fresh browser profile, reopens the tab with the same figures. Clicking a cell's row opens that cell's full run
in the Compare tab. A gradio_client call to /sweep returns the stored sweep JSON. The tab's screenshot goes to
the test's temp dir (README's assets/screenshot-sweeps.png is made by hand, never by a test run).
"""

from __future__ import annotations

import json

import pytest
from gradio_client import Client

from pythia_compare.web import sweepplots
from pythia_compare.runs.store import RunStore
from pythia_compare.sweeps.store import SweepStore
from tests.support import ROOT, run_cli
from tests.ui_support import chromium, demo_suite, make_demo_sweep, served_app

FIGURES = ["ppl", "kld", "bpw", "heatmap"]
LONG_MS = 120_000  # nothing here loads a big model: the sweep is made before the app starts

_FIGURE_JS = """(names) => Object.fromEntries(names.map(n => {
  const gd = document.querySelector('#pc-sweep-fig-' + n + ' .js-plotly-plot');
  return [n, gd ? JSON.parse(JSON.stringify({data: gd.data, layout: gd.layout,
                                             drawn: gd.querySelectorAll('.main-svg').length,
                                             xticks: Array.from(gd.querySelectorAll('.xtick text'))
                                                          .map(t => t.textContent)})) : null];
}))"""
_DRAWN_JS = """(names) => names.every(n => {
  const gd = document.querySelector('#pc-sweep-fig-' + n + ' .js-plotly-plot');
  return gd && gd.data && gd.data.length > 0 && gd.querySelector('.main-svg'); })"""


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """(tmp, the sweep's id, the app's URL): the app serves a run log that holds one finished demo sweep."""
    tmp = tmp_path_factory.mktemp("e2e-sweeps")
    suite = demo_suite(tmp_path_factory.mktemp("demo-standin"))
    sweep_id = make_demo_sweep(tmp, suite, tmp / "runs.db")
    with served_app(tmp, suite) as url:
        yield tmp, sweep_id, url


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def listen(page) -> list:
    got = []
    page.on("response", lambda r: got.append(r) if "/gradio_api/run/" in r.url else None)
    return got


def _plot(x):
    """A plotly value in a response's data: sent as it is, or inside an update (the sweep figure slots: label and
    visibility with it)."""
    if isinstance(x, dict) and x.get("__type__") == "update":
        x = x.get("value")
    return x if isinstance(x, dict) and x.get("type") == "plotly" else None


def served_figures(responses: list, sweep_id: str) -> dict:
    """Each figure's plotly JSON exactly as the server last sent it together with this sweep's id."""
    for r in reversed(responses):
        data = r.json().get("data") or []
        if sweep_id in data:
            return dict(zip(FIGURES, [json.loads(p["plot"]) for p in map(_plot, data) if p]))
    raise AssertionError(f"no response carried the views of sweep {sweep_id}")


def wait_drawn(page) -> None:
    page.wait_for_function(_DRAWN_JS, arg=FIGURES, timeout=LONG_MS)


def test_the_sweeps_tab_draws_the_four_views_of_a_demo_sweep_and_its_link_reopens_it(app, browser, tmp_path):
    tmp, sweep_id, url = app
    stored = SweepStore(RunStore(tmp / "runs.db")).get(sweep_id)
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    responses = listen(page)
    page.goto(url)
    page.get_by_role("tab", name="Sweeps").click()
    page.locator("#pc-sweeps [role=gridcell]").filter(has_text=sweep_id).first.click(timeout=LONG_MS)
    wait_drawn(page)
    page.wait_for_function("() => (document.querySelector('#pc-sweep-link textarea') || {}).value?.includes('?sweep=')",
                           timeout=LONG_MS)
    link = page.locator("#pc-sweep-link textarea").input_value()
    assert link.endswith(f"?sweep={sweep_id}") and page.url == link
    assert sweep_id in page.locator("#pc-sweep-status").inner_text()

    live = page.evaluate(_FIGURE_JS, FIGURES)
    expected = {k: json.loads(f.to_json()) for k, f in sweepplots.sweep_figures(stored).items()}
    assert served_figures(responses, sweep_id) == expected
    for name in FIGURES:
        assert live[name]["drawn"] >= 1 and len(live[name]["data"]) == len(expected[name]["data"]), name
    # PPL vs step: one line per quant on a log step axis, step0 labelled at its start, with error bars
    assert [t["name"] for t in live["ppl"]["data"]] == stored["quants"]
    assert live["ppl"]["layout"]["xaxis"]["type"] == "log" and live["ppl"]["xticks"][0] == "step0"
    assert all(t["error_y"]["visible"] for t in live["ppl"]["data"])
    assert live["kld"]["layout"]["yaxis"]["type"] == "log" and live["kld"]["xticks"][0] == "step0"
    assert live["heatmap"]["data"][0]["type"] == "heatmap"
    cells = page.locator("#pc-sweep-cells [role=row]").filter(has=page.locator("[role=gridcell]"))
    assert cells.count() == stored["total"]
    page.screenshot(path=str(tmp_path / "sweeps.png"), full_page=True)
    ctx.close()

    # the link, in a fresh browser profile, opens the Sweeps tab with the same figures
    fresh = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = fresh.new_page()
    linked = listen(page)
    page.goto(link)
    wait_drawn(page)
    assert page.get_by_role("tab", name="Sweeps").get_attribute("aria-selected") == "true"
    assert served_figures(linked, sweep_id) == expected
    again = page.evaluate(_FIGURE_JS, FIGURES)
    for name in FIGURES:
        assert again[name]["data"] == live[name]["data"], name
    fresh.close()


def test_clicking_a_cell_opens_its_full_run_in_the_compare_tab(app, browser):
    tmp, sweep_id, url = app
    stored = SweepStore(RunStore(tmp / "runs.db")).get(sweep_id)
    cell = next(c for c in stored["cells"] if c["quant"] == "Q2_K" and c["step"] == stored["steps"][0])
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{url}?sweep={sweep_id}")
    wait_drawn(page)
    page.locator("#pc-sweep-cells [role=gridcell]").filter(has_text=cell["run_id"]).first.click()
    page.wait_for_function(
        "(rid) => (document.querySelector('#pc-link textarea') || {}).value?.endsWith('?run=' + rid)",
        arg=cell["run_id"], timeout=LONG_MS)
    assert page.get_by_role("tab", name="Compare").get_attribute("aria-selected") == "true"
    assert cell["run_id"] in page.locator("#pc-status").inner_text()
    page.wait_for_function("() => { const gd = document.querySelector('#pc-fig-kld .js-plotly-plot');"
                           " return gd && gd.data && gd.data.length === 1; }", timeout=LONG_MS)
    page.close()


_POINT_JS = """([fig, trace, x, y]) => {
  const gd = document.querySelector('#pc-sweep-fig-' + fig + ' .js-plotly-plot');
  const fl = gd._fullLayout, box = gd.getBoundingClientRect();
  const at = (ax, v) => ax._offset + (ax.type === 'category' ? ax.l2p(ax._categories.indexOf(v)) : ax.d2p(v));
  return [box.left + at(fl.xaxis, x), box.top + at(fl.yaxis, y)];
}"""


def click_at(page, fig: str, x, y) -> None:
    """A real mouse click where plotly draws the data point (x, y) of a sweep figure."""
    page.locator(f"#pc-sweep-fig-{fig}").scroll_into_view_if_needed()
    px, py = page.evaluate(_POINT_JS, [fig, None, x, y])
    page.mouse.move(px, py)
    page.mouse.click(px, py)


def wait_for_run_page(page, run_id: str) -> None:
    page.wait_for_url(lambda u: u.endswith(f"?run={run_id}"), timeout=LONG_MS)
    page.locator("#pc-status").get_by_text(run_id).wait_for(timeout=LONG_MS)
    assert page.get_by_role("tab", name="Compare").get_attribute("aria-selected") == "true"


def test_clicking_a_point_or_a_heatmap_square_opens_that_cells_run(app, browser):
    tmp, sweep_id, url = app
    stored = SweepStore(RunStore(tmp / "runs.db")).get(sweep_id)
    at = {(c["step"], c["quant"]): c for c in stored["cells"]}
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{url}?sweep={sweep_id}")
    wait_drawn(page)
    # a point of the PPL-vs-step figure: Q2_K at the middle step (x is the step itself on the log axis)
    mid = stored["steps"][1]
    click_at(page, "ppl", mid, at[(mid, "Q2_K")]["ppl"])
    wait_for_run_page(page, at[(mid, "Q2_K")]["run_id"])
    # back to the sweep, then a heatmap square: Q8_0 at the last step
    page.go_back()
    wait_drawn(page)
    last = stored["steps"][-1]
    label = str(last) if last < 1000 or last % 1000 else f"{last // 1000}k"
    click_at(page, "heatmap", label, "Q8_0")
    wait_for_run_page(page, at[(last, "Q8_0")]["run_id"])
    page.close()


def test_a_bad_sweep_link_shows_a_friendly_not_found(app, browser):
    page = browser.new_page()
    page.goto(app[2] + "?sweep=%27%20OR%201%3D1%20--%20%3Cscript%3E")
    page.locator("#pc-sweep-status").get_by_text("Sweep not found").wait_for(timeout=LONG_MS)
    assert "Traceback" not in page.content()
    page.close()


def test_a_gradio_client_call_returns_the_stored_sweep_json(app):
    tmp, sweep_id, url = app
    got = Client(url, verbose=False).predict(sweep_id, api_name="/sweep")
    assert got == SweepStore(RunStore(tmp / "runs.db")).get(sweep_id)


def test_a_local_page_starts_a_demo_sweep_and_draws_it_as_its_cells_finish(app, browser):
    tmp, _, url = app
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.get_by_role("tab", name="Sweeps").click()
    page.locator("#pc-sweep-start").get_by_text("Start a sweep").click()
    page.locator("#pc-sweep-f-steps input, #pc-sweep-f-steps textarea").first.fill("0,800")
    for label in page.locator("#pc-sweep-f-quants label").all():
        name = label.locator("input").get_attribute("name")
        if label.locator("input").is_checked() != (name in {"F16", "Q4_K_M"}):
            label.click()
    page.locator("#pc-sweep-f-name input, #pc-sweep-f-name textarea").first.fill("started in the browser")
    page.locator("#pc-sweep-f-start").click()
    page.locator("#pc-sweep-f-note").get_by_text("Started sweep").wait_for(timeout=LONG_MS)
    assert "sweep plan --repo demo --steps 0,800 --quants F16,Q4_K_M" in page.locator("#pc-sweep-f-note").inner_text()
    # the page polls while the sweep runs in the app: the status reaches 4 of 4 with no click
    page.locator("#pc-sweep-status").get_by_text("4 of 4 cells done").wait_for(timeout=LONG_MS)
    wait_drawn(page)
    sweep_id = page.locator("#pc-sweep-link textarea").input_value().split("?sweep=", 1)[1]
    stored = SweepStore(RunStore(tmp / "runs.db")).get(sweep_id)
    assert stored["name"] == "started in the browser" and stored["steps"] == [0, 800] and stored["done"] == 4
    names = page.evaluate(_FIGURE_JS, FIGURES)["ppl"]["data"]
    assert [t["name"] for t in names] == ["F16", "Q4_K_M"]
    page.close()


def test_a_lambada_sweep_link_draws_lambada_accuracy_per_quant_and_hides_the_corpus_figures(app, browser):
    tmp, corpus_id, url = app
    env = {"PYTHIA_COMPARE_OFFLINE": "1", "PYTHIA_COMPARE_DB": str(tmp / "runs.db"),  # the served app's run log
           "PYTHIA_COMPARE_HOME": str(tmp / "home"), "HF_HUB_CACHE": str(tmp / "hf")}
    plan = run_cli(["sweep", "plan", "--repo", "demo", "--steps", "100,800", "--quants", "F16,Q2_K", "--scoring",
                    "lambada", "--lambada-file", str(ROOT / "assets/demo/lambada.jsonl"), "--limit", "16", "--ctx",
                    "128", "--name", "lambada in the browser"], env=env)
    assert plan.returncode == 0, plan.stderr
    sweep_id = plan.stdout.strip().splitlines()[-1]
    ran = run_cli(["sweep", "run", sweep_id], env=env)
    assert ran.returncode == 0, ran.stderr
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{url}?sweep={sweep_id}")
    page.wait_for_function(_DRAWN_JS, arg=["ppl"], timeout=LONG_MS)
    live = page.evaluate(_FIGURE_JS, ["ppl"])["ppl"]
    assert [t["name"] for t in live["data"]] == ["F16", "Q2_K"] and "LAMBADA accuracy" in live["layout"]["title"]["text"]
    assert all(t["error_y"]["visible"] for t in live["data"]) and live["layout"]["xaxis"]["type"] == "log"
    assert "LAMBADA accuracy vs step" in page.locator("#pc-sweep-fig-ppl").inner_text()
    for name in ("kld", "bpw", "heatmap"):
        assert not page.locator(f"#pc-sweep-fig-{name}").is_visible(), name
    # the corpus sweep, clicked in the list, has its four figures back
    page.locator("#pc-sweeps [role=gridcell]").filter(has_text=corpus_id).first.click(timeout=LONG_MS)
    wait_drawn(page)
    assert all(page.locator(f"#pc-sweep-fig-{n}").is_visible() for n in FIGURES)
    assert "Perplexity vs step" in page.locator("#pc-sweep-fig-ppl").inner_text()
    page.close()
