"""Notebooks in a real headless Chromium against `python app.py` offline on the demo suite.

A notebook built through the page (a note, a quants cell, a steps cell on a corpus text), run all, reordered, a
cell deleted after its confirmation, and its link opened in a fresh browser profile by a freshly started server:
the same cells and numbers, drawn from the log with no model file mapped by the server. Hostile notes run
nothing, on the page or in the .html export (opened offline). Public mode: another browser opens and copies a
notebook but cannot change or delete it. Exports are attachments named by id, with nosniff.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from pythia_compare.config import Settings
from pythia_compare.runs.notebook import Notebook
from pythia_compare.runs.notebookstore import NotebookStore
from pythia_compare.runs.store import RunStore
from pythia_compare.sources.resolver import demo_steps
from pythia_compare.web.ui import OWNER_KEY
from tests.test_notebooks import HOSTILE_NOTES
from tests.ui_support import ROOT, app_env, chromium, demo_suite, free_port, start_app, stop, wait_until_up

LONG_MS = 600_000
HELDOUT = ROOT / "assets" / "demo" / "heldout.txt"
_TABLE_JS = """(id) => Array.from(document.querySelectorAll('#' + id + ' tr'))
  .map(r => Array.from(r.querySelectorAll('td')).map(c => c.innerText.trim()))
  .filter(r => r.length)"""  # a cell's summary: a plain table, its header row left out
_CELLS_JS = """() => Array.from(document.querySelectorAll('.pc-nb-cell')).map(c => ({
  kind: c.classList.contains('pc-nb-note') ? 'note' : 'comparison',
  input: (c.querySelector('[id^=pc-nb-input-] textarea') || {}).value}))"""


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return demo_suite(tmp_path_factory.mktemp("demo-standin"))


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def open_page(page, url: str) -> None:
    page.goto(url)
    page.get_by_role("tab", name="Notebook").wait_for()
    page.wait_for_function(f"() => localStorage.getItem({OWNER_KEY!r})", timeout=LONG_MS)


def saved(page, revision: int) -> None:
    """Until the status says this revision was saved (every change of the notebook saves one)."""
    page.wait_for_function("(r) => { const t = (document.querySelector('#pc-nb-status') || {}).innerText || '';"
                           " return t.includes('revision ' + r + ' of') || (r === 1 && t.includes('new notebook')); }",
                           arg=revision, timeout=LONG_MS)


def cells(page) -> list[dict]:
    return page.evaluate(_CELLS_JS)


def drawn(page, kinds: list[str]) -> None:
    """Until the cells on the page are of these kinds, in this order (a change is drawn after it is saved)."""
    page.wait_for_function(f"(k) => JSON.stringify(({_CELLS_JS})().map(c => c.kind)) === JSON.stringify(k)",
                           arg=kinds, timeout=LONG_MS)


def mapped_models(pid: int) -> list[str]:
    """The GGUF files a process has mapped (llama.cpp maps every model it loads)."""
    return sorted({line.split()[-1] for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
                   if line.rstrip().endswith(".gguf")})


def test_a_notebook_built_run_reordered_and_trimmed_on_the_page_reopens_from_its_link_the_same(
        tmp_path, suite, browser):
    steps = demo_steps(suite)
    corpus = HELDOUT.read_text(encoding="utf-8")[:2500]
    proc, url = start_app(tmp_path, suite)
    try:
        ctx = browser.new_context(viewport={"width": 1280, "height": 900})
        page = ctx.new_page()
        open_page(page, url)
        page.get_by_role("tab", name="Notebook").click()
        page.locator("#pc-nb-cell-0").wait_for()
        page.locator("#pc-nb-title input, #pc-nb-title textarea").first.fill("Quants and steps")
        page.locator("#pc-nb-settings .label-wrap").first.click()
        for name, value in (("max-tokens", 3), ("ctx", 64)):
            box = page.locator(f"#pc-nb-{name} input")
            box.fill(str(value))
            box.press("Tab")
        page.locator("#pc-nb-input-0 textarea").fill("The capital of France is")
        # a steps cell on a corpus text below the quants cell
        page.locator("#pc-nb-add-cmp-0").click()
        saved(page, 1)
        drawn(page, ["comparison", "comparison"])
        page.locator("#pc-nb-input-1 textarea").fill(corpus)
        page.locator("#pc-nb-opts-1 .label-wrap").first.click()
        page.locator("#pc-nb-scoring-1").get_by_text("corpus", exact=True).click()
        own = page.locator("#pc-nb-own-1 input, #pc-nb-own-1 textarea").first
        own.fill(f"demo@step{steps[0]} demo@step{steps[-1]}")
        # a note, moved up to the top
        page.locator("#pc-nb-add-note-1").click()
        saved(page, 2)
        drawn(page, ["comparison", "comparison", "note"])
        page.locator("#pc-nb-input-2 textarea").fill("## What this shows\nQuants first, then **steps**.")
        page.locator("#pc-nb-up-2").click()
        saved(page, 3)
        drawn(page, ["comparison", "note", "comparison"])
        page.locator("#pc-nb-up-1").click()
        saved(page, 4)
        drawn(page, ["note", "comparison", "comparison"])
        assert [c["input"] for c in cells(page)] == ["## What this shows\nQuants first, then **steps**.",
                                                     "The capital of France is", corpus]
        assert page.locator("#pc-nb-note-0 h2").inner_text() == "What this shows"

        page.locator("#pc-nb-run-all").click()
        page.wait_for_function("() => (document.querySelector('#pc-nb-progress') || {}).innerText"
                               "?.includes('2 of 2 cells done')", timeout=LONG_MS)
        page.locator("#pc-nb-summary-2").wait_for(timeout=LONG_MS)
        page.locator("#pc-nb-summary-1").wait_for(timeout=LONG_MS)
        link = page.locator("#pc-nb-link textarea, #pc-nb-link input").first.input_value()
        nb_id = link.split("?notebook=", 1)[1]
        runs = RunStore(tmp_path / "runs.db")
        stored = NotebookStore(runs).get(nb_id)
        quants, steps_cell = stored.cells[1], stored.cells[2]
        assert runs.get_run(quants.run_id).params.scoring == "prompt"
        steps_run = runs.get_run(steps_cell.run_id)
        assert steps_run.params.scoring == "corpus" and [v.spec for v in steps_run.variants] == \
            [f"demo@step{steps[0]}", f"demo@step{steps[-1]}"]
        # reorder: the steps cell first; then a cell added and deleted after its confirmation
        page.locator("#pc-nb-up-2").click()
        page.wait_for_function("() => document.querySelector('#pc-nb-input-1 textarea')?.value.length > 1000")
        page.locator("#pc-nb-add-cmp-2").click()
        drawn(page, ["note", "comparison", "comparison", "comparison"])
        page.locator("#pc-nb-delete-3").click()
        page.locator("#pc-nb-confirm-3").wait_for()
        assert page.locator("#pc-nb-cell-3").count() == 1  # asked, not yet deleted
        page.locator("#pc-nb-confirm-3").click()
        page.locator("#pc-nb-cell-3").wait_for(state="detached")
        final = NotebookStore(runs).get(nb_id)
        assert [c.id for c in final.cells] == [stored.cells[0].id, steps_cell.id, quants.id]
        live = {i: page.evaluate(_TABLE_JS, f"pc-nb-summary-{i}") for i in (1, 2)}
        live_cells = cells(page)
        ctx.close()
    finally:
        stop(proc)

    # the link, in a fresh browser profile, on a freshly started server: the same cells and numbers, no model
    proc, url = start_app(tmp_path, suite)
    try:
        fresh = browser.new_context(viewport={"width": 1280, "height": 900})
        page = fresh.new_page()
        open_page(page, url + "?notebook=" + nb_id)
        page.locator("#pc-nb-summary-2").wait_for(timeout=LONG_MS)
        page.wait_for_function("() => document.querySelector('#pc-nb-next-1 .js-plotly-plot .main-svg')",
                               timeout=LONG_MS)
        assert cells(page) == live_cells
        for i in (1, 2):
            shown = page.evaluate(_TABLE_JS, f"pc-nb-summary-{i}")
            cols = len(shown[0])
            assert [r[:cols - 3] for r in shown] == [r[:cols - 3] for r in live[i]]  # timings are the last three
        assert page.locator("#pc-nb-title input, #pc-nb-title textarea").first.input_value() == "Quants and steps"
        assert mapped_models(proc.pid) == []  # drawn from the log: no model file mapped by the server
        page.locator("#pc-nb-more-1 .label-wrap").first.click()  # "All figures": sent and drawn when opened
        page.wait_for_function("() => ['ppl', 'surprisal', 'kld'].every(f => document.querySelector("
                               "'#pc-nb-' + f + '-1 .js-plotly-plot .main-svg'))", timeout=LONG_MS)
        assert mapped_models(proc.pid) == []
        fresh.close()
    finally:
        stop(proc)


def _saved_notebook(db: Path, settings: Settings, notes: list[str]) -> str:
    runs = RunStore(db)
    nb = Notebook.new("hostile", ["demo:Q8_0"], None, settings)
    for note in notes:
        nb.add_note(note)
    return NotebookStore(runs, settings).save(nb).notebook_id


def _saved_and_run(tmp_path: Path, suite: Path, settings: Settings, nb: Notebook) -> tuple[str, dict, list[str]]:
    """Save `nb` in tmp_path/runs.db and run every cell headless (`notebook run`, the CLI): (its id, the env and the
    command prefix used)."""
    env = app_env(tmp_path, suite, 0)
    base = [sys.executable, "-m", "pythia_compare", "--offline", "--db", str(tmp_path / "runs.db"), "--home",
            str(tmp_path / "home")]
    nb_id = NotebookStore(RunStore(tmp_path / "runs.db"), settings).save(nb).notebook_id
    ran = subprocess.run(base + ["notebook", "run", nb_id], capture_output=True, text=True, env=env, cwd=str(ROOT),
                         timeout=900)
    assert ran.returncode == 0, ran.stderr
    return nb_id, env, base


def test_hostile_notes_run_nothing_on_the_page(tmp_path, suite, browser):
    settings = Settings(db_path=tmp_path / "runs.db", demo_dir=suite)
    nb_id = _saved_notebook(tmp_path / "runs.db", settings, HOSTILE_NOTES)
    proc, url = start_app(tmp_path, suite)
    try:
        page = browser.new_page()
        dialogs = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        requests = []
        page.on("request", lambda r: requests.append(r.url))
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(url) else route.abort())
        open_page(page, url + "?notebook=" + nb_id)
        page.locator(f"#pc-nb-note-{len(HOSTILE_NOTES) - 1}").wait_for(timeout=LONG_MS)
        for i in range(len(HOSTILE_NOTES)):
            for link in page.locator(f"#pc-nb-note-{i} a").all():
                link.click(modifiers=[], no_wait_after=True)
        page.wait_for_timeout(500)
        notes = page.locator(".pc-nb-note")
        assert notes.count() >= len(HOSTILE_NOTES)
        assert page.evaluate("() => window.__pwned") is None and dialogs == []
        assert page.locator("#pc-nb-cells iframe, #pc-nb-cells script, .pc-nb-note svg, .pc-nb-note img").count() == 0
        assert not [u for u in requests if "example.com" in u]
        assert "&lt;script&gt;" in page.locator("#pc-nb-note-0").inner_html()  # shown as text
        page.close()
    finally:
        stop(proc)


def test_the_html_export_opens_offline_draws_every_figure_and_its_hostile_notes_run_nothing(tmp_path, suite, browser):
    settings = Settings(db_path=tmp_path / "runs.db", demo_dir=suite)
    nb = Notebook.new("offline", ["demo:Q8_0", "demo:Q2_K"], "demo:F16", settings, max_tokens=2, ctx=64)
    nb.add_note("\n\n".join(HOSTILE_NOTES))
    nb.add_comparison(prompt="The capital of France is")
    nb.add_comparison(prompt="def f(x):")
    nb_id, env, base = _saved_and_run(tmp_path, suite, settings, nb)
    out = tmp_path / "nb.html"
    done = subprocess.run(base + ["notebook", "export", nb_id, "--format", "html", "--out", str(out)],
                          capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=600)
    assert done.returncode == 0, done.stderr
    ctx = browser.new_context(offline=True)
    page = ctx.new_page()
    dialogs, requests = [], []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(out.as_uri())
    page.wait_for_function("() => document.querySelectorAll('.pc-figure .js-plotly-plot .main-svg').length >= 8",
                           timeout=60_000)
    assert page.locator(".pc-figure").count() == 8  # 4 figures × 2 cells, each drawn
    for link in page.locator(".pc-note a").all():
        link.click(no_wait_after=True)
    page.wait_for_timeout(300)
    assert dialogs == [] and page.evaluate("() => window.__pwned") is None
    assert page.locator(".pc-note iframe, .pc-note script, .pc-note img, .pc-note svg").count() == 0
    assert [u for u in requests if not u.startswith("file:")] == []  # nothing fetched: it opens offline
    ctx.close()


def _start_public(tmp: Path, suite: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = app_env(tmp, suite, port)
    env.update(PYTHIA_COMPARE_PUBLIC="1", PYTHIA_COMPARE_OWNER_SECRET="owner secret of the test")
    log = open(tmp / "app.log", "w")
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=str(tmp), env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_up(url, proc, tmp / "app.log")
    except Exception:
        stop(proc)
        raise
    return proc, url


def test_in_public_mode_another_browser_opens_and_copies_a_notebook_but_cannot_change_or_delete_it(
        tmp_path, suite, browser):
    proc, url = _start_public(tmp_path, suite)
    try:
        alice = browser.new_context()
        page = alice.new_page()
        open_page(page, url)
        page.get_by_role("tab", name="Notebook").click()
        page.locator("#pc-nb-input-0 textarea").fill("Alice's prompt")
        page.locator("#pc-nb-input-0 textarea").press("Shift+Enter")  # runs the cell, as in Jupyter
        page.locator("#pc-nb-summary-0").wait_for(timeout=LONG_MS)
        saved(page, 1)
        link = page.locator("#pc-nb-link textarea, #pc-nb-link input").first.input_value()
        nb_id = link.split("?notebook=", 1)[1]
        alice.close()

        bob = browser.new_context()
        page = bob.new_page()
        open_page(page, link)
        page.locator("#pc-nb-cell-0").wait_for(timeout=LONG_MS)
        assert page.locator("#pc-nb-input-0 textarea").input_value() == "Alice's prompt"
        assert "belongs to another browser" in page.locator("#pc-nb-status").inner_text()
        page.locator("#pc-nb-summary-0").wait_for()  # Alice's output, drawn for Bob from the log
        page.locator("#pc-nb-run-all").click()
        page.get_by_text("its cells are not run here").wait_for()
        page.locator("#pc-nb-input-0 textarea").fill("Bob was here")
        page.locator("#pc-nb-save").click()
        page.get_by_text("Not saved").wait_for()
        page.locator("#pc-nb-delete").click()
        page.get_by_text("Click Delete notebook again").wait_for()
        page.locator("#pc-nb-delete").click()
        page.get_by_text("Not deleted").wait_for()
        store = NotebookStore(RunStore(tmp_path / "runs.db", owner_secret="owner secret of the test"))
        assert store.get(nb_id).cells[0].prompt == "Alice's prompt" and store.get(nb_id).revision == 1
        assert len(RunStore(tmp_path / "runs.db").list()) == 1  # Bob's Run all ran nothing
        page.locator("#pc-nb-copy").click()
        page.get_by_text("Saved as a new notebook").wait_for()
        copy_id = page.locator("#pc-nb-link textarea, #pc-nb-link input").first.input_value().split("=", 1)[1]
        assert copy_id != nb_id and store.get(copy_id).cells[0].prompt == "Bob was here"
        bob.close()
    finally:
        stop(proc)


def test_exports_are_attachments_named_by_id_with_nosniff_and_the_api_returns_the_notebook_without_owner(
        tmp_path, suite):
    settings = Settings(db_path=tmp_path / "runs.db", demo_dir=suite)
    nb = Notebook.new("<script>alert(1)</script> title", ["demo:Q8_0"], None, settings)
    nb.add_note("hello")
    nb_id = NotebookStore(RunStore(tmp_path / "runs.db"), settings).save(nb).notebook_id
    proc, url = start_app(tmp_path, suite)
    try:
        for fmt in ("ipynb", "html"):
            with urllib.request.urlopen(f"{url}pc-notebook/{nb_id}.{fmt}") as r:
                assert r.headers["Content-Disposition"] == \
                    f'attachment; filename="pythia-compare-notebook-{nb_id}-r1.{fmt}"'
                assert r.headers["X-Content-Type-Options"] == "nosniff"
                assert r.headers["Content-Security-Policy"] == "sandbox"
                body = r.read().decode("utf-8")
            if fmt == "html":
                assert "<title>&lt;script&gt;alert(1)&lt;/script&gt; title</title>" in body
            else:
                assert json.loads(body)["metadata"]["pythia_compare"]["notebook_id"] == nb_id
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{url}pc-notebook/NoSuchNotebook.ipynb")
        assert e.value.code == 404
        from gradio_client import Client

        got = Client(url, verbose=False).predict(nb_id, api_name="/notebook")
        assert got["notebook_id"] == nb_id and got["cells"][0]["markdown"] == "hello" and "owner" not in json.dumps(got)
    finally:
        stop(proc)


def test_a_compare_run_joins_the_notebook_and_a_history_run_opens_as_a_one_cell_notebook(tmp_path, suite, browser):
    proc, url = start_app(tmp_path, suite)
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        open_page(page, url)
        page.locator("#pc-run").wait_for()
        page.locator("#pc-settings .label-wrap").first.click()
        page.locator("#pc-max-tokens input").fill("2")
        page.locator("#pc-max-tokens input").press("Tab")
        page.locator("#pc-prompt textarea").fill("A run made in the Compare tab")
        page.locator("#pc-run").click()
        page.wait_for_function("() => (document.querySelector('#pc-link textarea') || {}).value?.includes('?run=')",
                               timeout=LONG_MS)
        run_id = page.locator("#pc-link textarea").input_value().split("?run=", 1)[1]
        page.locator("#pc-add-to-notebook").click()  # the Notebook tab opens with the run as its last cell
        page.locator("#pc-nb-cell-1").wait_for(timeout=LONG_MS)
        page.locator("#pc-nb-summary-1").wait_for(timeout=LONG_MS)
        assert cells(page)[1]["input"] == "A run made in the Compare tab"
        assert run_id in page.locator("#pc-nb-status-1").inner_text()

        page.get_by_role("tab", name="History").click()
        page.wait_for_function("(id) => document.querySelector('#pc-history')?.innerText.includes(id)", arg=run_id,
                               timeout=LONG_MS)
        page.locator("#pc-history").get_by_text(run_id).last.click()
        page.get_by_text(f"Selected run {run_id}").wait_for()
        page.locator("#pc-open-notebook").click()
        page.wait_for_function("() => document.querySelectorAll('.pc-nb-cell').length === 1", timeout=LONG_MS)
        page.locator("#pc-nb-summary-0").wait_for(timeout=LONG_MS)
        assert cells(page) == [{"kind": "comparison", "input": "A run made in the Compare tab"}]
        link = page.locator("#pc-nb-link textarea, #pc-nb-link input").first.input_value()
        one = NotebookStore(RunStore(tmp_path / "runs.db")).get(link.split("?notebook=", 1)[1])
        assert [c.run_id for c in one.cells] == [run_id] and not one.is_stale(one.cells[0])
        page.close()
    finally:
        stop(proc)


def test_a_lens_cell_reopened_by_link_draws_its_layers_view_with_every_variant(tmp_path, suite, browser):
    settings = Settings(db_path=tmp_path / "runs.db", demo_dir=suite)
    nb = Notebook.new("layers", ["demo:Q2_K", "demo@step300"], "demo:F16", settings, max_tokens=0, ctx=64)
    nb.add_comparison(prompt="The capital of France is")
    nb = Notebook.from_json({**nb.to_json(), "cells": [{**nb.cells[0].to_json(), "lens": True}]}, settings)
    nb_id, _, _ = _saved_and_run(tmp_path, suite, settings, nb)
    proc, url = start_app(tmp_path, suite)
    try:
        page = browser.new_page()
        open_page(page, url + "?notebook=" + nb_id)
        page.wait_for_function("() => document.querySelector('#pc-nb-layers-0 .js-plotly-plot .main-svg')",
                               timeout=LONG_MS)
        shown = page.locator("#pc-nb-layers-0").inner_text()
        for label in ("demo Q2_K", "demo step300", "demo F16"):
            assert label in shown, (label, shown[:500])
        assert page.locator("#pc-nb-lens-0 input").is_checked()
        page.close()
    finally:
        stop(proc)
