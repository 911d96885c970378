"""Benchmark: opening a 10-cell notebook link (?notebook=ID) — the server's time, without a browser.

Builds (in a scratch directory) a notebook of the demo suite: a note and 9 prompt cells on 4 variants (F16 reference,
Q8_0, Q4_K_M, Q2_K), run headless as `notebook run` does. Then, in a fresh process's handlers (no model loaded),
times what the server does for the link: the page-load handler (the notebook read from the log) plus what the
cells' drawing computes (each cell's stored run read, its summary table and its figures), first open and warm
repeats; prints the median and p95 (target: p95 under 300 ms, issue 22) and the CPU.

    python benchmarks/bench_notebook.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    from pythia_compare.config import Settings
    from pythia_compare.runs import report
    from pythia_compare.runs.notebook import Notebook
    from pythia_compare.runs.notebookrun import run_cells
    from pythia_compare.runs.notebookstore import NotebookStore
    from pythia_compare.runs.pool import ModelPool
    from pythia_compare.runs.store import RunStore
    from pythia_compare.web import plots
    from pythia_compare.web.ui import Handlers, NotebookHandlers

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    with tempfile.TemporaryDirectory(prefix="pc-bench-nb-") as scratch:
        s = Settings(db_path=Path(scratch) / "runs.db", home=Path(scratch) / "home", offline=True,
                     hf_cache_dir=Path(scratch) / "hf", demo_dir=ROOT / "assets" / "demo")
        runs = RunStore(s.db_path)
        nb = Notebook.new("bench", ["demo:Q8_0", "demo:Q4_K_M", "demo:Q2_K"], "demo:F16", s, max_tokens=16)
        nb.add_note("# Ten cells\nA note, then nine prompts.")
        for i in range(9):
            nb.add_comparison(prompt=f"Prompt number {i}: once upon a time, in a small village by the sea,")
        pool = ModelPool(s)
        try:
            run_cells(nb, settings=s, pool=pool, store=runs)
        finally:
            pool.close()
        nb_id = NotebookStore(runs, s).save(nb).notebook_id

        class Link:
            query_params = {"notebook": nb_id}

        times = []
        parts = {"open": 0.0, "runs": 0.0, "tables": 0.0, "figures": 0.0, "generations": 0.0}
        for rep in range(args.repeats + 1):
            app = Handlers(s)  # a fresh page's handlers: nothing cached, no model
            nh = NotebookHandlers(app)
            t0 = time.perf_counter()
            shown = nh.on_load(None, Link())
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
            assert app.pool.loaded() == []
        first, warm = times[0], sorted(times[1:])
        p95 = warm[max(0, int(round(0.95 * len(warm))) - 1)]
        print(f"CPU: {cpu}")
        print(f"10-cell notebook link, server time: first {first * 1000:.0f} ms; warm median "
              f"{statistics.median(warm) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms over {len(warm)} opens")
        n = len(times)
        print("mean per open: " + ", ".join(f"{k} {v / n * 1000:.0f} ms" for k, v in parts.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
