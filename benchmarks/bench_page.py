"""Benchmark: one corpus run through the page against the same run in the CLI (issue 18's repro), in one run.

Runs `compare SPECS --reference demo --text-file T --scoring corpus --ctx 512 --max-tokens N` of the bundled demo
suite on the held-out text repeated to --chars characters, once by the CLI and once through the launched app's
/compare (gradio_client, as the issue's repro did), each in a process of its own (tests/page_memory.py), the CLI
first; --repeats rounds, interleaved, medians printed. Peak RSS is each process's ru_maxrss; "added" is the peak
over the process's idle self (the page: launched, before the run; the CLI: a process importing what it imports);
"models kept loaded" is what the page's model pool holds after the run (the RSS closing it gives back; the CLI
closes its models before it saves and prints).
Wall time: the /compare call and the whole CLI process (its start-up included). Compare ratios within one run.

Usage: python benchmarks/bench_page.py [--chars 60000] [--variants 8] [--tokens 32] [--repeats 1]
Prints the CPU model, then a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cpu_name() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "?")
    flags = next((ln.split(":", 1)[1].split() for ln in out.splitlines() if ln.startswith("Flags")), [])
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{model}, {simd}, {len(__import__('os').sched_getaffinity(0))} cores"


def main() -> None:
    from tests.page_memory import REPRO_SPECS, cli_run, page_run, repro_text

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chars", type=int, default=60_000)
    ap.add_argument("--variants", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    specs, text, demo = REPRO_SPECS[:args.variants], repro_text(args.chars), ROOT / "assets" / "demo"
    clis, pages = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            clis.append(cli_run(Path(tmp) / f"cli{r}", demo, text, args.tokens, specs))
            pages.append(page_run(Path(tmp) / f"page{r}", demo, text, args.tokens, specs))
    med = statistics.median
    n_tokens = clis[0].run["input"]["n_tokens"]
    print(f"CPU: {cpu_name()}")
    print(f"{len(specs)} variants, {args.chars:,} characters ({n_tokens:,} tokens, {n_tokens // 512} chunks of 512), "
          f"{args.tokens} new tokens; median of {args.repeats}\n")
    print("| path | peak RSS MB | added by the run MB | models kept loaded MB | wall s | generate s (sum) |")
    print("|---|---|---|---|---|---|")
    rows = []
    for name, ms in (("CLI", clis), ("page (/compare)", pages)):
        gen = med(sum(e["timings"]["generate_s"] or 0 for e in [m.run["reference"], *m.run["variants"]]) for m in ms)
        rows.append((med(m.peak_kb for m in ms) / 1024, med(m.added_kb for m in ms) / 1024,
                     med(m.models_kb for m in ms) / 1024, med(m.wall_s for m in ms), gen))
        print(f"| {name} | {rows[-1][0]:.0f} | {rows[-1][1]:.0f} | {rows[-1][2]:.0f} | {rows[-1][3]:.1f} | "
              f"{rows[-1][4]:.1f} |")
    (cp, ca, _, cw, cg), (pp, pa, pm, pw, pg) = rows
    print(f"| page / CLI | {pp / cp:.2f}x | {pa / ca:.2f}x | | {pw / cw:.2f}x | {pg / cg:.2f}x |")
    print(f"\nIssue 18's bound, the page's added within 1.2x the CLI's plus the models kept loaded: {pa:.0f} MB "
          f"<= {1.2 * ca + pm:.0f} MB: {'met' if pa <= 1.2 * ca + pm else 'NOT met'}; without the models' allowance "
          f"{pa / ca:.2f}x")

if __name__ == "__main__":
    main()
