"""Benchmark: the cost of the logit lens. A prompt run on Pythia-410M-shaped GGUFs (bench_perplexity.build_models:
24 layers, d_model 1024, vocab 50304, random weights; F16 reference, Q8_0 and Q4_K_M variants), with the lens at the
last token against the same run without it, in one process with the models held loaded (load time is not part of
either figure), no generation, 2 threads. Each figure is the median of --repeats runs, the two settings interleaved
round by round so load on the machine hits them alike. Prints the CPU and a markdown table: seconds, and the lens
run's time as a multiple of the plain run's (the target is at most 1.5x).

Usage: python benchmarks/bench_lens.py [--repeats 5] [--tokens 64] [--positions 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

TEXT = ("The history of the region is long and varied. Farmers settled the river valleys first, and traders "
        "followed them along the coast, where the harbours were deep and the winters mild. ") * 8


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=64, help="prompt length in tokens")
    ap.add_argument("--positions", type=int, default=1, help="lens positions (the last N tokens; at most 8)")
    args = ap.parse_args()

    from bench_perplexity import _cpu_model, build_models

    from pythia_compare.config import Settings
    from pythia_compare.runs.compare import RunParams, run_comparison
    from pythia_compare.runs.pool import ModelPool

    files = build_models()
    settings = Settings(n_threads=2, offline=True)
    pool = ModelPool(settings)
    specs = [str(files["Q8_0"]), str(files["Q4_K_M"])]
    try:
        with pool.hold([files["F16"], *specs], n_ctx=512) as models:  # loaded once (the pool keeps them)
            # the text of the first --tokens tokens: a prompt of about that many tokens
            prompt = "".join(models[0].token_text(i) for i in models[0].tokenize(TEXT)[:args.tokens])
            n = len(models[0].tokenize(prompt))

        def one(lens: bool) -> tuple[float, object]:
            params = RunParams(scoring="prompt", ctx=512, top_k=10, max_tokens=0, reference=str(files["F16"]),
                               lens=lens, lens_positions=list(range(n - args.positions, n)) if lens else None)
            t = time.perf_counter()
            run = run_comparison(specs, prompt, params, settings=settings, pool=pool)
            return time.perf_counter() - t, run

        one(False), one(True)  # warm: files hashed, probes remembered, pages mapped
        plain, lens = [], []
        for _ in range(args.repeats):
            plain.append(one(False)[0])
            seconds, run = one(True)
            lens.append(seconds)
        checks = [(e.label, e.lens.status) for e in run.entries()]
    finally:
        pool.close()
    a, b = statistics.median(plain), statistics.median(lens)
    print(f"CPU: {_cpu_model()}; 2 threads; prompt {run.input.n_tokens} tokens; 3 models (F16 reference, Q8_0, "
          f"Q4_K_M), 410M shapes; lens at {args.positions} position(s); median of {args.repeats}\n")
    print("| run | seconds | × plain |\n|---|---|---|")
    print(f"| prompt run, no lens | {a:.2f} | 1.00 |")
    print(f"| prompt run, lens | {b:.2f} | {b / a:.2f} |")
    print(f"\nlens status: {', '.join(f'{k}: {v}' for k, v in checks)}")


if __name__ == "__main__":
    main()
