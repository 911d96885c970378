"""Benchmark: does ggml's CPU weight repacking (llama.cpp's use_extra_bufts) help scoring or generation, per quant?

The measurements behind loadplan.py's tables (REPACK_SCORE, REPACK_GENERATE). For each quant type of
a GGUF with Pythia-410M's exact shapes (random weights; built by bench_perplexity.py and cached), it loads the
model twice in this process, extra buffer types off and on, and times, interleaved (off, on, off, on, ...):

- scoring: one corpus chunk of ctx tokens, logits at its second half (what corpus scoring asks for);
- generation: N greedy tokens after a 32-token prompt, with top-k alternatives on (what a run streams).

Each figure is the median over --repeats rounds of the ratio within the round (on / off, time), so a busy machine
slows both sides of a ratio alike. It also reports how many MB llama.cpp repacked (a copy of those weights: the
memory a second, repacked handle for generation costs) and that handle's measured cost in this process
(anonymous memory and PSS, from /proc/self/smaps_rollup, before and after engine.Model loads it).

Usage: python benchmarks/bench_repack.py [--quants Q8_0,Q4_K_M] [--repeats 5] [--tokens 64] [--threads 2]
       [--cpu-time] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

DEFAULT_QUANTS = "Q8_0,Q6_K,Q5_K_M,Q4_K_M,Q4_0,IQ4_NL,Q3_K_M,Q2_K"


def quant_file(files: dict, q: str) -> Path:
    from bench_perplexity import CACHE
    from pythia_compare.models.quantize import quantize_file

    if q in files:
        return files[q]
    path = CACHE / "pythia410m-shapes" / f"bench-{q}.gguf"
    if not path.exists():
        quantize_file(files["F16"], path, q)
    return path


def smaps() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        k, v = line.split(":", 1)
        out[k] = int(v.split()[0])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quants", default=DEFAULT_QUANTS)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=64, help="tokens generated per timing")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cpu-time", action="store_true",
                    help="time CPU seconds of this process instead of wall seconds: on a busy machine, with "
                         "--threads 1, this keeps the run queue out of the figures")
    ap.add_argument("--quick", action="store_true", help="2 rounds, 16 tokens: to try it out")
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.tokens = 2, 16
    from bench_perplexity import build_models, _cpu_model
    from pythia_compare.config import Settings
    from pythia_compare.models.engine import Model, cpu_info

    files = build_models()
    held = (ROOT / "assets" / "demo" / "heldout.txt").read_text()
    off = Settings(n_threads=args.threads, extra_bufts=False, generation_handle="off")
    on = Settings(n_threads=args.threads, extra_bufts=True, generation_handle="off")
    cpu = cpu_info()
    print(f"CPU: {_cpu_model()}; AMX: {cpu['amx']}; ggml: {cpu['ggml']}")
    print(f"{args.threads} threads, ctx 512, flash attention on; median of {args.repeats} interleaved rounds; "
          f"{'CPU' if args.cpu_time else 'wall'} time; load average {os.getloadavg()[0]:.1f}\n")
    print("| quant | repacked MB | scoring on/off (time) | generation on/off (time) | generation tok/s off / on "
          "| 2nd handle: +anon MB, +PSS MB |")
    print("|---|---|---|---|---|---|")
    for q in args.quants.split(","):
        path = quant_file(files, q)
        if cpu["amx"] and q not in ("F16", "F32"):
            print(f"| {q} | - | AMX CPU: not measured (extra buffer types crash on quantized weights) | | | |")
            continue
        a, b = Model(path, off, 512), Model(path, on, 512)
        from pythia_compare.models import engine

        ids = a.tokenize(held)[:512]
        positions = list(range(256, 511))
        prompt = ids[:32]
        score_r, gen_r, tps_off, tps_on = [], [], [], []
        clock = time.process_time if args.cpu_time else time.perf_counter
        for _ in range(args.repeats):
            t = {}
            for name, m in (("off", a), ("on", b)):
                s0 = clock()
                m.logits(ids, positions)
                s1 = clock()
                n = sum(1 for _ in m.generate(prompt, args.tokens, n_alternatives=10))
                s2 = clock()
                t[name] = (s1 - s0, s2 - s1, n)
            score_r.append(t["on"][0] / t["off"][0])
            gen_r.append(t["on"][1] / t["off"][1])
            tps_off.append(t["off"][2] / t["off"][1])
            tps_on.append(t["on"][2] / t["on"][1])
        a.close()
        b.close()
        del a, b
        # the cost of the second handle, as the engine loads it when asked to (generation_handle="on")
        m = Model(path, Settings(n_threads=args.threads, generation_handle="on"), 512)
        before = smaps()
        list(m.generate(prompt, 1))
        after = smaps()
        info = m.load_info()
        extra = (f"+{(after['Anonymous'] - before['Anonymous']) / 1024:.0f}, +{(after['Pss'] - before['Pss']) / 1024:.0f}"
                 if info["extra_bufts_generate"] and not info["extra_bufts_score"] else "no 2nd handle")
        m.close()
        engine._repacked.mib = 0.0
        probe = Model(path, on, 256)  # how much one repacked load copies
        mb = engine._repacked.mib * 1.048576
        probe.close()
        print(f"| {q} | {mb:.0f} | {statistics.median(score_r):.2f}x | {statistics.median(gen_r):.2f}x | "
              f"{statistics.median(tps_off):.1f} / {statistics.median(tps_on):.1f} | {extra} |", flush=True)


if __name__ == "__main__":
    main()
