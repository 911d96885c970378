"""Benchmark: opening a shared link (?run=ID) of a 4-variant corpus run — server time and time to fully drawn.

Builds (once per call, in a scratch directory) a corpus run of the demo suite: 4 variants (Q8_0, Q4_K_M, Q2_K, an
earlier training step) against the F16 reference, on assets/demo/heldout.txt at ctx 512, through the CLI. Then:

- server time: the page-load handler (ui.Handlers.on_load with ?run=ID: the run read from SQLite, every figure
  and table built) plus each figure's JSON encoding, in this process, with no model loaded. Wall and CPU seconds;
  the first open (nothing imported yet) apart from the p95 of reopening the same run and the p95 of opening
  other runs once each (copies of the run under other ids, added to the log).
- drawn: `python app.py` on that run log, and headless Chromium opening ?run=ID in a fresh browser context each
  time, timed from navigation start until every figure is drawn with every entry and the generations are shown;
  also the page's main-thread busy time until then (Chromium's TaskDuration: the work, without the waits).
- the floor: the same browser timing of a gradio page that holds one gr.Plot of three bars (gradio's boot and
  its plotly.js bundle, nothing of ours), so the page's own share shows as a ratio.

The load average is printed before and after: other processes on the machine slow every figure; compare CPU
figures and ratios taken in one run.

Usage: python benchmarks/bench_permalink.py [--repeats 10] [--quick] [--keep DIR]. `--keep DIR` builds the run
in DIR once and reuses it on later calls (the build converts and scores 5 models: minutes). Also imported by
bench_perplexity.py.
"""

from __future__ import annotations

import argparse
import json
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
sys.path.insert(0, str(ROOT / "tests"))

CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update"]
_DRAWN_JS = """(n) => ['next_token', 'ppl', 'surprisal', 'kld'].every(f => {
    const gd = document.querySelector('#pc-fig-' + f + ' .js-plotly-plot');
    return gd && gd.data && gd.data.length > 0 && gd.querySelector('.main-svg'); })
  && document.querySelector('#pc-fig-next_token .js-plotly-plot').data.length === n
  && document.querySelectorAll('#pc-generations .pc-gen-col').length === n"""


def p95(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(0.95 * len(xs) + 0.5)) - 1))]


def make_run(tmp: Path) -> str:
    """A 4-variant corpus run with a reference in tmp/runs.db; returns its id."""
    from ui_support import app_env

    demo = ROOT / "assets" / "demo"
    steps = sorted(int(p.name[4:]) for p in demo.glob("step*") if p.name[4:].isdigit())
    cmd = [sys.executable, "-m", "pythia_compare", "--offline", "--db", str(tmp / "runs.db"), "--home",
           str(tmp / "home"), "compare", "demo:Q8_0", "demo:Q4_K_M", "demo:Q2_K", f"demo@step{steps[-2]}",
           "--reference", "demo:F16", "--text-file", str(demo / "heldout.txt"), "--scoring", "corpus", "--ctx", "512",
           "--max-tokens", "16", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=app_env(tmp, demo, 0), cwd=str(ROOT), timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])["run_id"]


def server_times(tmp: Path, run_id: str, repeats: int) -> dict:
    """Handlers.on_load(?run=ID) + figure JSON, in this process: the first open (nothing imported or cached yet),
    then `repeats` opens of the same run, then one open each of `repeats` other runs (copies of it under other
    ids, as a warm server meets links it has not opened before); wall and CPU seconds."""
    from pythia_compare.config import Settings
    from pythia_compare.runs.store import RunStore
    from pythia_compare.web.ui import Handlers

    settings = Settings(db_path=tmp / "runs.db", home=tmp / "home", offline=True, demo_dir=ROOT / "assets" / "demo")
    store = RunStore(settings.db_path)
    stored = store.get(run_id)
    others = [f"{run_id[:40]}-copy{i}" for i in range(repeats)]
    for other in others:  # kept in the log (a --keep folder reuses them): import_run skips ids it holds
        store.import_run({**stored, "run_id": other})
    store.close()
    handlers = Handlers(settings)
    walls, cpus = [], []
    for rid in [run_id] * (repeats + 1) + others:
        w, c = time.perf_counter(), time.process_time()
        out = handlers.on_load(None, types.SimpleNamespace(query_params={"run": rid}))
        for x in out:
            if hasattr(x, "to_json"):
                x.to_json()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    assert not handlers.pool.loaded(), "opening a link must not load a model"
    same, other = slice(1, repeats + 1), slice(repeats + 1, None)
    return {"first_wall": walls[0], "first_cpu": cpus[0], "p95_wall": p95(walls[same]), "p95_cpu": p95(cpus[same]),
            "median_wall": statistics.median(walls[same]), "others_p95_wall": p95(walls[other]),
            "others_p95_cpu": p95(cpus[other])}


def _time_pages(url: str, drawn_js: str, arg: object, repeats: int) -> dict:
    """Headless Chromium opens `url` repeats + 1 times, a fresh browser context each time: seconds from navigation
    start until `drawn_js(arg)` holds (first, p95 and median of the repeats) and the main thread's busy seconds."""
    from playwright.sync_api import sync_playwright

    times, busy = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        for _ in range(repeats + 1):
            context = browser.new_context()
            page = context.new_page()
            cdp = context.new_cdp_session(page)
            cdp.send("Performance.enable")
            page.goto(url)
            page.wait_for_function(drawn_js, arg=arg, timeout=120_000, polling="raf")
            times.append(page.evaluate("() => performance.now()") / 1000)
            metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
            busy.append(metrics.get("TaskDuration", float("nan")))
            context.close()
        browser.close()
    return {"first": times[0], "p95": p95(times[1:]), "median": statistics.median(times[1:]),
            "busy_median": statistics.median(busy[1:])}


def drawn_times(tmp: Path, run_id: str, repeats: int) -> dict:
    """Seconds from navigation start to fully drawn, fresh browser context each time (first and p95)."""
    from ui_support import start_app, stop

    proc, url = start_app(tmp, ROOT / "assets" / "demo")
    try:
        return _time_pages(f"{url}?run={run_id}", _DRAWN_JS, 5, repeats)
    finally:
        stop(proc)


_FLOOR_JS = "() => { const gd = document.querySelector('#floor .js-plotly-plot'); " \
            "return gd && gd.data && gd.data.length > 0 && gd.querySelector('.main-svg'); }"


def floor_times(repeats: int) -> dict:
    """The floor under any gradio page of plotly figures: a page holding one gr.Plot whose three bars arrive at
    page load, timed as drawn_times times ours. gradio imports its plotly.js bundle (the whole library) for the
    first figure, so this is what gradio and plotly.js alone cost in this browser on this machine."""
    import gradio as gr
    import plotly.graph_objects as go

    with gr.Blocks(analytics_enabled=False) as floor:
        plot = gr.Plot(elem_id="floor")
        floor.load(lambda: go.Figure(go.Bar(x=["a", "b", "c"], y=[1, 3, 2])), None, plot)
    _, url, _ = floor.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1")
    try:
        return _time_pages(url, _FLOOR_JS, None, repeats)
    finally:
        floor.close()


def measure(repeats: int = 10, drawn: bool = True, keep: Path | None = None) -> dict:
    """Build the run (in a scratch directory, or once in `keep`), then time the server and (if `drawn`) Chromium."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(keep) if keep else Path(d)
        tmp.mkdir(parents=True, exist_ok=True)
        kept = tmp / "run_id.txt"
        run_id = kept.read_text().strip() if keep and kept.is_file() else make_run(tmp)
        if keep:
            kept.write_text(run_id)
        out = {"run_id": run_id, "server": server_times(tmp, run_id, repeats)}
        if drawn:
            out["drawn"] = drawn_times(tmp, run_id, max(2, repeats // 2))
            out["floor"] = floor_times(max(2, repeats // 2))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="3 repeats: to try it out")
    ap.add_argument("--keep", type=Path, default=None, help="build the run here once, and reuse it later")
    args = ap.parse_args()
    print(f"load average at the start {os.getloadavg()[0]:.1f}", flush=True)
    r = measure(3 if args.quick else args.repeats, keep=args.keep)
    s, d = r["server"], r["drawn"]
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    print(f"server, first open: {s['first_wall'] * 1000:.0f} ms wall, {s['first_cpu'] * 1000:.0f} ms CPU")
    print(f"server, p95 of repeats: {s['p95_wall'] * 1000:.0f} ms wall, {s['p95_cpu'] * 1000:.0f} ms CPU")
    print(f"server, p95 of other runs opened once each: {s['others_p95_wall'] * 1000:.0f} ms wall, "
          f"{s['others_p95_cpu'] * 1000:.0f} ms CPU")
    print(f"Chromium, fully drawn: first {d['first']:.2f} s, p95 {d['p95']:.2f} s, median {d['median']:.2f} s "
          f"(main thread busy {d['busy_median']:.2f} s, median)")
    f = r["floor"]
    print(f"Chromium, a gradio page of one 3-bar gr.Plot: first {f['first']:.2f} s, p95 {f['p95']:.2f} s, median "
          f"{f['median']:.2f} s (main thread busy {f['busy_median']:.2f} s); ours / that floor, median: "
          f"{d['median'] / f['median']:.2f}x")


if __name__ == "__main__":
    main()
