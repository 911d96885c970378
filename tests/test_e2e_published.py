"""End to end, EleutherAI's published numbers on the page: `python app.py` offline on a run log holding a stored
run whose variants are checkpoints of the real Pythia repos, a demo run, and a sweep planned over the current
Pythia repo's steps, driven by a real headless Chromium (Debian's).

The run's link shows the "Published at this step" table beside our figures, with EleutherAI's numbers for each
variant's step (v0 step143000's for the Hub's bare quants) and "not published for this step" where EleutherAI
published none; the demo run's link says there are no published numbers for demo. The sweep's link draws
"Published benchmarks vs step" on the sweep's own step axis, exactly as sweepplots builds it.
No model is loaded: the runs and the sweep are written to the run log before the app starts.
"""

from __future__ import annotations

import json

import pytest

from pythia_compare.runs import published
from pythia_compare.web import sweepplots
from pythia_compare.config import DEFAULT_GGUF_REPO
from pythia_compare.web.dashboard import NO_PUBLISHED_DEMO, PUBLISHED_COLUMNS
from pythia_compare.runs.store import RunStore
from pythia_compare.sweeps.store import SweepStore
from pythia_compare.web.sweepview import published_for_sweep
from tests.plots_runs import make_run
from tests.ui_support import chromium, demo_suite, served_app

CURRENT = "EleutherAI/pythia-410m-deduped"
LONG_MS = 120_000
SWEEP_STEPS = [1000, 13000, 33000, 143000]
_TABLE_JS = """(id) => Array.from(document.querySelectorAll('#' + id + ' [role=row]'))
  .map(r => Array.from(r.querySelectorAll('[role=gridcell]')).map(c => c.innerText.trim()))
  .filter(r => r.length)"""
_HEAD_JS = """(id) => Array.from(document.querySelectorAll('#' + id + ' thead th')).map(c => c.innerText.trim())"""
_FIG_JS = """(n) => { const gd = document.querySelector('#pc-sweep-fig-' + n + ' .js-plotly-plot');
  return gd && gd.data ? JSON.parse(JSON.stringify({data: gd.data, drawn: gd.querySelectorAll('.main-svg').length,
    xticks: Array.from(gd.querySelectorAll('.xtick text')).map(t => t.textContent),
    title: (gd.layout.title || {}).text || ''})) : null; }"""


def _pythia_run() -> dict:
    run = make_run([f"{CURRENT}@step143000:Q4_K_M", f"{CURRENT}@step4000", "Q8_0"], reference=f"{CURRENT}@step143000")
    for e in [run["reference"], *run["variants"]]:
        e["source"]["repo"] = DEFAULT_GGUF_REPO if e["spec"] == "Q8_0" else CURRENT
    return run


def _demo_run() -> dict:
    run = make_run(["demo:Q4_K_M"], reference="demo", seed=5)
    for e in [run["reference"], *run["variants"]]:
        e["source"]["repo"] = "demo"
    return run


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """(the run log, {name: run id}, the Pythia sweep's id, the app's URL)."""
    tmp = tmp_path_factory.mktemp("e2e-published")
    suite = demo_suite(tmp_path_factory.mktemp("demo-standin"))
    store = RunStore(tmp / "runs.db")
    ids = {"pythia": store.save(_pythia_run()), "demo": store.save(_demo_run())}
    text = "The quick brown fox jumps over the lazy dog. " * 40
    sweep_id = SweepStore(store).create(
        {"name": "pythia grid", "repo": CURRENT, "steps": SWEEP_STEPS, "quants": ["F16", "Q4_K_M"], "hub_repo": None,
         "hub_quants": [], "reference": "F16", "ctx": 512, "max_chunks": 2, "text": text, "text_sha256": "0" * 64,
         "n_tokens": 400, "params": {"top_k": 10}},
        [(s, q, False) for s in SWEEP_STEPS for q in ("F16", "Q4_K_M")])
    with served_app(tmp, suite) as url:
        yield store, ids, sweep_id, url


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def test_a_pythia_runs_link_shows_published_numbers_at_each_variants_step(app, browser, tmp_path):
    store, ids, _, url = app
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{url}?run={ids['pythia']}")
    page.locator("#pc-published [role=gridcell]").first.wait_for(timeout=LONG_MS)
    assert page.evaluate(_HEAD_JS, "pc-published") == PUBLISHED_COLUMNS
    rows = {r[0]: r for r in page.evaluate(_TABLE_JS, "pc-published")}
    assert rows["pythia-410m-deduped step143000 F16"][1:4] == ["pythia-410m-deduped step143000", "0.5244 ± 0.0070",
                                                           "10.574 ± 0.32"]
    assert rows["pythia-410m-deduped step143000 Q4_K_M"][2] == "0.5244 ± 0.0070"
    assert rows["pythia-410m-deduped step4000 F16"][2] == "not published for this step"
    assert rows["Q8_0"][1:3] == ["pythia-410m-deduped-v0 step143000", "0.5110 ± 0.0070"]  # the Hub's file: v0
    note = page.locator("#pc-published-note").inner_text()
    assert "not measured here" in note and "v0 step143000" in note
    page.screenshot(path=str(tmp_path / "published-table.png"), full_page=True)  # for a look when it fails
    page.close()


def test_a_demo_runs_link_says_there_are_no_published_numbers_for_demo(app, browser):
    _, ids, _, url = app
    page = browser.new_page()
    page.goto(f"{url}?run={ids['demo']}")
    page.locator("#pc-published-note").get_by_text("No published numbers for demo").wait_for(timeout=LONG_MS)
    assert page.locator("#pc-published-note").inner_text().strip() == NO_PUBLISHED_DEMO
    assert not page.locator("#pc-published").is_visible()
    page.close()


def test_a_pythia_sweep_draws_published_benchmarks_on_its_own_step_axis(app, browser, tmp_path):
    store, _, sweep_id, url = app
    stored = SweepStore(store).get(sweep_id)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{url}?sweep={sweep_id}")
    page.wait_for_function(f"() => ({_FIG_JS})('published')?.drawn >= 1", timeout=LONG_MS)
    live = page.evaluate(_FIG_JS, "published")
    expected = json.loads(sweepplots.sweep_published_figure(stored, published_for_sweep(stored)).to_json())
    assert [t["name"] for t in live["data"]] == [t["name"] for t in expected["data"]]
    assert [t["name"] for t in live["data"]] == ["LAMBADA", "PIQA", "WinoGrande", "ARC-Easy", "ARC-Challenge",
                                                 "SciQ", "LogiQA", "WSC"]
    lam = live["data"][0]
    assert lam["x"] == [s for s in published.steps(CURRENT) if 1000 <= s <= 143000]
    assert lam["y"][-1] == 0.5243547448088492  # the current models' number, never v0's
    assert CURRENT in live["title"] and "v0" not in live["title"]
    assert live["xticks"] == ["1k", "13k", "33k", "143k"]  # the sweep's own steps label the log step axis
    page.locator("#pc-sweep-fig-published").screenshot(path=str(tmp_path / "published-figure.png"))
    page.close()
