"""Benchmark: the CLI's generation against a plain llama_cpp.Llama loop, each in a fresh process (issue 20, item 7).

For each token count N (default 32, 128, 512) and each of --repeats rounds, interleaved, two fresh processes on
the same GGUF with Pythia-410M's shapes (bench_perplexity.py builds it, cached):

- ours: `python -m pythia_compare compare FILE --prompt P --max-tokens N --json` (a one-shot CLI run, its
  own --home and --db); generation speed = generated tokens / timings.generate_s, and the load of a second,
  repacked generation handle, if one was loaded, from timings.generate_load_s (reported apart);
- plain: llama_cpp.Llama(FILE, n_ctx, n_threads, flash attention on), greedy create_completion of N tokens with
  logprobs off; generation speed = completion tokens / the completion's wall time (its prompt included, as ours).

Both sides include the prompt's evaluation and exclude loading the file. Figures are medians over the rounds.
It prints the CPU (model, AMX, SIMD) and the load average, since other processes slow both sides.

Usage: python benchmarks/bench_generate.py [--quant Q4_K_M] [--tokens 32,128,512] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

PROMPT = "The history of the city begins"

_PLAIN = r"""
import json, sys, time
import llama_cpp
path, prompt, n, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
llm = llama_cpp.Llama(model_path=path, n_ctx=1024, n_threads=threads, n_threads_batch=threads, flash_attn=True,
                      verbose=False)
t = time.perf_counter()
out = llm.create_completion(prompt, max_tokens=n, temperature=0.0, top_k=1)
dt = time.perf_counter() - t
print(json.dumps({"tokens": out["usage"]["completion_tokens"], "seconds": dt}))
"""


def ours(path: Path, n: int, threads: int, tmp: Path) -> dict:
    env = dict(os.environ, PYTHIA_COMPARE_THREADS=str(threads))
    proc = subprocess.run([sys.executable, "-m", "pythia_compare", "--db", str(tmp / "runs.db"), "--home",
                           str(tmp / "home"), "--offline", "compare", str(path), "--prompt", PROMPT, "--max-tokens",
                           str(n), "--json"], capture_output=True, text=True, env=env, cwd=tmp, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"the CLI failed: {proc.stderr[-2000:]}")
    v = json.loads(proc.stdout)["variants"][0]
    gen = v["generation"]["tokens"]
    return {"tokens": len(gen), "seconds": v["timings"]["generate_s"],
            "handle_load_s": v["timings"].get("generate_load_s"), "handle": v["load"]["extra_bufts_generate"]}


def plain(path: Path, n: int, threads: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", _PLAIN, str(path), PROMPT, str(n), str(threads)],
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"the plain Llama failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quant", default="Q4_K_M")
    ap.add_argument("--tokens", default="32,128,512")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    from bench_perplexity import _cpu_model, build_models
    from bench_repack import quant_file
    from pythia_compare.models.engine import cpu_info

    path = quant_file(build_models(), args.quant)
    cpu = cpu_info()
    print(f"CPU: {_cpu_model()} ({cpu['summary']}); {args.threads} threads; load average "
          f"{os.getloadavg()[0]:.1f}; {args.quant} with Pythia-410M shapes; median of {args.repeats} rounds, "
          f"fresh processes, interleaved\n")
    print("| tokens | ours tok/s | plain Llama tok/s | ours / plain | second handle loaded | its load s |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for n in [int(x) for x in args.tokens.split(",")]:
            a, b = [], []
            for _ in range(args.repeats):
                a.append(ours(path, n, args.threads, tmp))
                b.append(plain(path, n, args.threads))
            rate_a = statistics.median(r["tokens"] / r["seconds"] for r in a)
            rate_b = statistics.median(r["tokens"] / r["seconds"] for r in b)
            loads = [r["handle_load_s"] for r in a if r["handle_load_s"] is not None]
            print(f"| {n} | {rate_a:.1f} | {rate_b:.1f} | {rate_a / rate_b:.2f}x | "
                  f"{'yes' if any(r['handle'] for r in a) else 'no'} | "
                  f"{statistics.median(loads):.2f} |" if loads else
                  f"| {n} | {rate_a:.1f} | {rate_b:.1f} | {rate_a / rate_b:.2f}x | "
                  f"{'yes' if any(r['handle'] for r in a) else 'no'} | – |", flush=True)


if __name__ == "__main__":
    main()
