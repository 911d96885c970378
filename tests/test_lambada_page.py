"""The page and LAMBADA: `python app.py` offline on the demo suite, a real headless Chromium (Debian's).

A LAMBADA run of four demo variants, made by the CLI into the app's run log, reopens by its link with every
number of the LAMBADA table; the page offers "Benchmark: LAMBADA" as a scoring mode, and running it from the
page with an uploaded LAMBADA file gives the CLI's figures.
"""

from __future__ import annotations

import json
import subprocess
import sys

from pythia_compare.runs import report
from pythia_compare.web.dashboard import table_cells
from pythia_compare.web.ui import OWNER_KEY
from tests.ui_support import ROOT, app_env, chromium, demo_suite, served_app

LONG_MS = 600_000
DEMO_FILE = ROOT / "assets" / "demo" / "lambada.jsonl"
_TABLE_JS = """(id) => Array.from(document.querySelectorAll('#' + id + ' [role=row]'))
  .map(r => Array.from(r.querySelectorAll('[role=gridcell]')).map(c => c.innerText.trim()))
  .filter(r => r.length)"""
_HEAD_JS = """(id) => Array.from(document.querySelectorAll('#' + id + ' thead th')).map(c => c.innerText.trim())"""


def _cli_run(tmp, suite, limit: int) -> dict:
    args = [sys.executable, "-m", "pythia_compare", "--offline", "--db", str(tmp / "runs.db"), "--home",
            str(tmp / "home"), "compare", "demo", "demo:Q2_K", "demo@step100", "demo@step300", "--reference", "demo",
            "--scoring", "lambada", "--lambada-file", str(DEMO_FILE), "--limit", str(limit), "--ctx", "128", "--json"]
    done = subprocess.run(args, capture_output=True, text=True, env=app_env(tmp, suite, 0), cwd=str(ROOT), timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _open(page, url: str) -> None:
    page.goto(url)
    page.locator("#pc-run").wait_for()
    page.wait_for_function(f"() => localStorage.getItem({OWNER_KEY!r})", timeout=LONG_MS)


def _shown(page) -> tuple[list[str], list[list[str]]]:
    page.wait_for_function("() => document.querySelectorAll('#pc-summary [role=row]').length > 4", timeout=LONG_MS)
    return page.evaluate(_HEAD_JS, "pc-summary"), page.evaluate(_TABLE_JS, "pc-summary")


def test_a_lambada_run_of_four_demo_variants_reopens_by_link_with_every_number_and_runs_from_the_page(
        tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lambada_page")
    suite = demo_suite(tmp_path_factory.mktemp("demo-standin"))
    run = _cli_run(tmp, suite, limit=16)
    columns, rows = report.lambada_table(run)
    expected = table_cells(columns, rows)
    assert all(len(r) == len(columns) for r in expected) and len(expected) == 4
    with served_app(tmp, suite) as url, chromium() as browser:
        page = browser.new_context().new_page()
        _open(page, url + "?run=" + run["run_id"])
        head, cells = _shown(page)
        assert head[:len(columns)] == columns
        assert [r[:len(columns)] for r in cells] == expected  # every number, as the CLI prints it
        status = page.locator("#pc-status").inner_text()
        assert "LAMBADA (lm-eval lambada_openai), 16 of 64 examples" in status
        # the same run from the page: Benchmark: LAMBADA, the uploaded file, 16 examples, ctx 128
        page.get_by_text("Benchmark: LAMBADA (choose it under Scoring)").click()
        page.locator("#pc-lambada-file input[type=file]").set_input_files(str(DEMO_FILE))
        page.locator("#pc-lambada-limit input").fill("16")
        page.locator("#pc-settings").get_by_text("Settings", exact=True).click()
        page.locator("#pc-scoring").get_by_label("Benchmark: LAMBADA").check()
        page.evaluate("() => document.querySelector('#pc-link textarea').value = ''")
        page.locator("#pc-run").click()
        page.wait_for_function("() => (document.querySelector('#pc-link textarea') || {}).value?.includes('?run=')",
                               timeout=LONG_MS)
        page.wait_for_function("(old) => !document.querySelector('#pc-link textarea').value.includes(old)",
                               arg=run["run_id"], timeout=LONG_MS)
        head, cells = _shown(page)
        score_cols = [i for i, c in enumerate(columns) if c not in ("load s", "score s")]
        assert [[r[i] for i in score_cols] for r in cells] == [[r[i] for i in score_cols] for r in expected]
        page.context.close()
