"""Benchmark: a sweep of the whole demo grid (5 steps × F16, Q8_0, Q6_K, Q4_K_M, Q3_K_M, Q2_K = 30 cells).

For each ctx it plans the grid on the demo's held-out text (every chunk: --max-chunks 0) in a fresh run log
with a fresh --home (so every GGUF is converted and quantized again, as on a cluster node), runs it as one
shard in this process, and reports:

- cells per minute (wall time of the whole shard);
- per-cell overhead: everything but scoring (converting, quantizing, loading, tokenizing, writing the cells,
  deleting the step's files) as a fraction of the cell's time = 1 - (corpus-pass wall time / shard wall time).

Usage: python benchmarks/bench_sweep.py [--ctx 64 128] [--threads N]. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUANTS = "F16,Q8_0,Q6_K,Q4_K_M,Q3_K_M,Q2_K"


def bench(ctx: int, threads: int) -> dict:
    from pythia_compare.config import Settings
    from pythia_compare.runs.store import RunStore
    from pythia_compare.sweeps.sweep import plan_sweep, run_shard
    from pythia_compare.sweeps.store import SweepStore

    with tempfile.TemporaryDirectory(prefix="pythia-compare-bench-sweep-") as tmp:
        settings = Settings.from_env(db_path=Path(tmp) / "runs.db", home=Path(tmp) / "home", offline=True,
                                     n_threads=threads)
        store = RunStore(settings.db_path)
        text = (ROOT / "assets/demo/heldout.txt").read_text(encoding="utf-8")
        t = time.perf_counter()
        sweep_id, n_cells = plan_sweep(settings, store, steps="all", quants=QUANTS, text=text, repo="demo",
                                       ctx=ctx, max_chunks=None)
        plan_s = time.perf_counter() - t
        plan = SweepStore(store).plan(sweep_id)
        report = run_shard(settings, store, sweep_id, (0, 1), progress=False)
        status = SweepStore(store).status(sweep_id)
        store.close()
    assert status["done"] == n_cells, status
    chunks = plan["n_tokens"] // ctx
    return {"ctx": ctx, "cells": n_cells, "chunks": chunks, "plan_s": plan_s, "wall_s": report.seconds,
            "score_s": report.score_seconds, "cells_per_min": n_cells / report.seconds * 60,
            "cell_s": report.seconds / n_cells, "overhead": 1 - report.score_seconds / report.seconds}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ctx", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = ap.parse_args()
    rows = [bench(c, args.threads) for c in args.ctx]
    print(f"{platform.processor() or platform.machine()}, {args.threads} threads, Python {platform.python_version()}")
    print()
    print("| ctx | cells | chunks per cell | plan s | sweep wall s | cells per minute | s per cell | "
          "scoring s | overhead (not scoring) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['ctx']} | {r['cells']} | {r['chunks']} | {r['plan_s']:.2f} | {r['wall_s']:.1f} | "
              f"{r['cells_per_min']:.1f} | {r['cell_s']:.2f} | {r['score_s']:.1f} | {r['overhead']:.0%} |")


if __name__ == "__main__":
    main()
