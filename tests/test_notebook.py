"""The example notebook (docs/examples/quickstart.ipynb, issue 21): committed with its outputs cleared, it runs
cell by cell in a real ipykernel (nbclient), shows the summary table and plotly figures, logs the numbers the CLI's
`compare --json` prints for the same inputs, and its nbconvert HTML, opened offline in headless Chromium, draws
every figure."""

from __future__ import annotations

import json
import subprocess
import sys


from tests.support import ROOT
from tests.ui_support import chromium, comparable

NOTEBOOK = ROOT / "docs" / "examples" / "quickstart.ipynb"
PLOTLY_JS = 'data-pythia-compare="plotly.js"'  # the script in which pythia_compare's displays carry plotly.js


def _cli_json(run: dict, tmp, env: dict) -> dict:
    """`python -m pythia_compare compare … --json` for the inputs of a logged run."""
    args = [sys.executable, "-m", "pythia_compare", "--offline", "--db", str(tmp / "cli.db"), "compare",
            *[v["spec"] for v in run["variants"]], "--reference", run["params"]["reference"] or "none"]
    p = run["params"]
    if p["scoring"] == "corpus":
        text = tmp / f"text-{len(run['input']['text'])}.txt"
        text.write_text(run["input"]["text"], encoding="utf-8")
        args += ["--text-file", str(text)]
    else:
        args += ["--prompt", run["input"]["text"]]
    args += ["--ctx", str(p["ctx"]), "--top-k", str(p["top_k"]), "--max-tokens", str(p["max_tokens"]),
             "--temperature", str(p["temperature"]), "--seed", str(p["seed"]), "--json"]
    done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _numbers(run: dict) -> dict:
    """A run JSON without what differs between two executions of the same input (ui_support.comparable: load
    records too, since the kernel keeps its models between runs)."""
    return comparable(run)


def _differences(a, b, path: str = "") -> list[str]:
    """Where two JSON values differ, as key paths (for a readable failure)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _differences(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {str(a)[:80]} != {str(b)[:80]}"]


def _outputs(cell) -> list[dict]:
    return [o.get("data", {}) for o in cell.get("outputs", []) if o.get("output_type") in ("execute_result",
                                                                                         "display_data")]


def test_the_quickstart_notebook_runs_shows_the_clis_numbers_and_its_html_draws_every_figure(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    from pythia_compare.runs.report import format_cell
    from pythia_compare.runs.store import RunStore

    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code), "commit the notebook cleared"

    env = {"PYTHIA_COMPARE_DB": str(tmp_path / "runs.db"), "PYTHIA_COMPARE_HOME": str(tmp_path / "home"),
           "HF_HUB_CACHE": str(tmp_path / "hf"), "HF_ENDPOINT": "http://127.0.0.1:9"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)  # the kernel inherits them
    monkeypatch.delenv("PYTHIA_COMPARE_DEMO_DIR", raising=False)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()

    assert all(c.execution_count is not None for c in code)
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    streams = "".join(o.get("text", "") for c in code for o in c.outputs if o.output_type == "stream")
    assert "Warning" not in streams and "Traceback" not in streams, streams[:2000]
    displays = [d for c in code for d in _outputs(c)]
    results = [d for d in displays if "application/vnd.plotly.v1+json" in d and "pythia-compare-result" in
               d.get("text/html", "")]
    assert len(results) == 2  # the quants and the steps runs show themselves
    assert all("PPL ±" in d["text/html"] and 'class="plotly-graph-div"' in d["text/html"] for d in results)
    assert sum(d.get("text/html", "").count(PLOTLY_JS) for d in displays) == 1  # plotly.js once
    frames = [d["text/html"] for d in displays if '<table border="1" class="dataframe' in d.get("text/html", "")]
    assert any("mean KLD" in f and "same top %" in f for f in frames)  # summary() as a DataFrame

    with RunStore(tmp_path / "runs.db") as store:
        logged = [store.get(r["run_id"]) for r in reversed(store.list(limit=10))]
    assert [r["params"]["scoring"] for r in logged] == ["prompt", "prompt", "corpus"]
    for run in logged:
        cli = _cli_json(run, tmp_path, {**__import__("os").environ, **env})
        ours, theirs = _numbers(run), _numbers(cli)
        assert ours == theirs, _differences(ours, theirs)[:10]
    shown = "".join(d["text/html"] for d in results)
    for e in [logged[0]["reference"], *logged[0]["variants"]]:
        assert f"<td>{format_cell(e['ppl'], 'PPL')}</td>" in shown

    body, _ = HTMLExporter().from_notebook_node(nb)
    page_file = tmp_path / "quickstart.html"
    page_file.write_text(body, encoding="utf-8")
    expected = body.count('class="plotly-graph-div"')
    assert expected >= 7  # 3 + 3 in the two results, the box plot
    with chromium() as browser:
        page = browser.new_page()
        asked: list[str] = []

        def offline(route):
            if route.request.url.startswith("file:"):
                return route.continue_()
            asked.append(route.request.url)
            return route.abort()

        page.route("**/*", offline)
        page.goto(page_file.as_uri(), wait_until="load")
        page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {expected}",
                               timeout=60_000)
        drawn = page.evaluate("Array.from(document.querySelectorAll('.plotly-graph-div')).map(d => "
                              "d.classList.contains('js-plotly-plot') && d.querySelectorAll('.main-svg').length > 0)")
    assert drawn == [True] * expected, drawn
