"""The Layers view in a real browser: a lens run made by the CLI, opened by its link in headless Chromium from the
app served by app.py (its own run log, offline, on the demo suite), draws the logit lens of every variant."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import ROOT
from tests.ui_support import PROMPT, app_env, chromium, served_app, three_specs

LONG_MS = 120_000


def test_a_lens_run_opened_by_its_link_shows_the_layers_view_with_every_variant(tmp_path, demo_dir):
    specs, reference = three_specs(demo_dir)
    args = [sys.executable, "-m", "pythia_compare", "--offline", "--db", str(tmp_path / "runs.db"), "--home",
            str(tmp_path / "home"), "compare", *specs, "--reference", reference, "--prompt", PROMPT,
            "--max-tokens", "0", "--lens", "--json"]
    done = subprocess.run(args, capture_output=True, text=True, env=app_env(tmp_path, demo_dir, 0), cwd=str(ROOT),
                          timeout=600)
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    labels = [e["label"] for e in [run["reference"], *run["variants"]]]
    assert all(e["lens"]["status"] == "ok" for e in [run["reference"], *run["variants"]])
    with served_app(tmp_path, demo_dir) as url, chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url + "?run=" + run["run_id"])
        page.wait_for_function("""() => { const gd = document.querySelector('#pc-fig-lens .js-plotly-plot');
                                          return gd && gd.data && gd.data.length > 0 && gd.querySelector('.main-svg'); }""",
                               timeout=LONG_MS)
        drawn = page.evaluate("""() => { const gd = document.querySelector('#pc-fig-lens .js-plotly-plot');
                                         return {rows: gd.data[0].y, type: gd.data[0].type,
                                                 traces: gd.data.slice(1).map(t => t.name)}; }""")
        assert page.locator("#pc-fig-lens").is_visible()
        page.locator("#pc-fig-lens").scroll_into_view_if_needed()
        page.locator("#pc-fig-lens").screenshot(path=str(tmp_path / "layers.png"))
    assert drawn["type"] == "heatmap"
    for label in labels:
        assert any(label in row for row in drawn["rows"]), (label, drawn["rows"])
        assert any(label in name for name in drawn["traces"]), (label, drawn["traces"])
