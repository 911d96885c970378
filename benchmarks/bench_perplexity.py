"""Benchmark: pythia-compare against llama.cpp's own `llama-perplexity` and a plain `llama_cpp.Llama`, in one run.

Builds (once, cached under ~/.cache/pythia-compare-bench) a GGUF with exactly Pythia-410M-deduped's shapes and
random weights — 24 layers, d_model 1024, 16 heads, rotary_pct 0.25, d_ff 4096, vocab 50304, parallel
residual — as F16, then Q8_0, Q6_K and Q4_K_M through llama.cpp's quantizer. Then it times whole processes
(wall time, peak RSS from /proc VmHWM), 2 threads, ctx 512, -b 512 -ub 512, flash attention on, --chunks N for both,
with one --home for the whole benchmark, warmed by an untimed run of each model set first (as a user's
second run finds it: each file's hash and its first-load probe verdict remembered; --fresh-home gives every run a
new --home instead, which adds hashing the file and the probe to each figure). The tool runs in four settings: built shared (as pip builds
llama-cpp-python) and static, each at its defaults (weight repacking on) and with --no-repack (on an AMX CPU only
--no-repack: repacking crashes there); "ours vs the tool's fastest" compares against the fastest of them. Every
figure is the median of --repeats runs (default 5), the settings interleaved round by round so load on the
machine hits them alike; compare ratios within one run, not seconds across runs.

1. corpus PPL: `python -m pythia_compare compare M --text-file T --json` vs `llama-perplexity -m M -f T`, Q8_0, Q4_K_M;
2. KL of 3 variants against the F16 reference: one `compare` process vs the tool's two-step path (a base run that
   writes its logit file, then one `--kl-divergence` run per variant);
3. generation: --tokens greedy tokens, our streamed generation (a prompt-mode run with top-k 10 alternatives, timed
   from the run JSON after a warm-up run) of one variant (K = 1) and of 4 variants side by side (K = 4) vs a plain
   `llama_cpp.Llama` of the same model at its default load settings (extra buffer types off on an AMX CPU);
4. permalink: opening ?run=ID of a 4-variant corpus run (benchmarks/bench_permalink.py): server time and fully
   drawn in headless Chromium.

Usage: python benchmarks/bench_perplexity.py [--chunks 8] [--kl-chunks 4] [--repeats 5] [--tokens 128] [--skip kl,link] [--quick].
Prints the CPU model and flags, then markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

CACHE = Path(os.environ.get("PYTHIA_COMPARE_BENCH_CACHE", Path.home() / ".cache" / "pythia-compare-bench"))
PYTHIA_410M = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
               "vocab_size": 50304, "rotary_pct": 0.25, "rotary_emb_base": 10000, "max_position_embeddings": 2048,
               "use_parallel_residual": True, "layer_norm_eps": 1e-5, "bos_token_id": 0, "eos_token_id": 0,
               "tie_word_embeddings": False, "architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox",
               "hidden_act": "gelu", "torch_dtype": "float16"}


def pythia410m_tensors() -> dict[str, np.ndarray]:
    """Pythia-410M's tensors in Hugging Face GPT-NeoX names, random float16 (seed 0): the benchmarks' model."""
    rng = np.random.default_rng(0)
    d, ff, v, L = 1024, 4096, 50304, 24
    w = lambda *shape, s=0.02: (rng.standard_normal(shape, dtype=np.float32) * s).astype(np.float16)
    t = {"gpt_neox.embed_in.weight": w(v, d, s=1.0), "embed_out.weight": w(v, d),
         "gpt_neox.final_layer_norm.weight": np.ones(d, np.float16), "gpt_neox.final_layer_norm.bias": w(d)}
    for i in range(L):
        p = f"gpt_neox.layers.{i}."
        t.update({p + "input_layernorm.weight": np.ones(d, np.float16), p + "input_layernorm.bias": w(d),
                  p + "post_attention_layernorm.weight": np.ones(d, np.float16), p + "post_attention_layernorm.bias": w(d),
                  p + "attention.query_key_value.weight": w(3 * d, d), p + "attention.query_key_value.bias": w(3 * d),
                  p + "attention.dense.weight": w(d, d), p + "attention.dense.bias": w(d),
                  p + "mlp.dense_h_to_4h.weight": w(ff, d), p + "mlp.dense_h_to_4h.bias": w(ff),
                  p + "mlp.dense_4h_to_h.weight": w(d, ff), p + "mlp.dense_4h_to_h.bias": w(d)})
    return t


def build_models() -> dict[str, Path]:
    from pythia_compare.sources.convert import convert_checkpoint
    from pythia_compare.models.quantize import quantize_file

    out = CACHE / "pythia410m-shapes"
    files = {q: out / f"bench-{q}.gguf" for q in ("F16", "Q8_0", "Q6_K", "Q4_K_M")}
    if all(f.exists() for f in files.values()):
        return files
    ckpt = out / "ckpt"
    ckpt.mkdir(parents=True, exist_ok=True)
    (ckpt / "config.json").write_text(json.dumps(PYTHIA_410M))
    # The demo suite's byte-level BPE tokenizer; the vocab is padded to 50304 as Pythia's is.
    (ckpt / "tokenizer.json").write_bytes(next((ROOT / "assets" / "demo").glob("step*/tokenizer.json")).read_bytes())
    from safetensors.numpy import save_file

    t = pythia410m_tensors()
    save_file(t, str(ckpt / "model.safetensors"))
    del t
    convert_checkpoint(ckpt, files["F16"], "F16")
    for q in ("Q8_0", "Q6_K", "Q4_K_M"):
        quantize_file(files["F16"], files[q], q)
    (ckpt / "model.safetensors").unlink()
    return files


def build_text(n_tokens: int, files: dict[str, Path]) -> Path:
    from pythia_compare.config import Settings
    from pythia_compare.models.engine import Model

    held = (ROOT / "assets" / "demo" / "heldout.txt").read_text()
    m = Model(files["Q4_K_M"], Settings(), 512)
    per = len(m.tokenize(held))
    ids = m.tokenize(held * (n_tokens // per + 1), add_special=False)[:n_tokens]  # about n_tokens, no more:
    text = b"".join(m.piece(i) for i in ids).decode("utf-8", "replace")  # the chunk count is n_tokens // 512 for both tools
    m.close()
    path = CACHE / f"bench-text-{n_tokens}-cut.txt"
    path.write_text(text)
    return path


THREADS = 2  # -t for the tool, PYTHIA_COMPARE_THREADS for ours (--threads)
CLOCK = "wall"  # what measure() times (--clock): "wall" seconds, or "cpu" seconds of the process and its children


def measure(cmd: list[str], env: dict | None = None, until: str | None = None) -> tuple[float, float, str]:
    """Run one process; return (seconds, peak RSS MB, stdout+stderr). Seconds: wall time, or with CLOCK "cpu" the
    user + system CPU time of the process and the children it waited for (on a busy machine, with one thread, the
    run queue stays out of it).

    Peak RSS is the process's own VmHWM, polled from /proc until it exits: wait4's ru_maxrss would start
    from this (large) benchmark process's high-water mark, which a forked child inherits. `until`: a regex
    the output must hold; llama-perplexity's asynchronous log sometimes loses its last lines, and such a
    run is repeated (up to 8 times).
    """
    full_env = dict(os.environ)
    full_env.update(env or {})
    for _ in range(8):
        with tempfile.TemporaryFile() as out:
            t = time.perf_counter()
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env, cwd=ROOT)
            peak_kb = 0
            while proc.poll() is None:
                peak_kb = max(peak_kb, _vm_hwm_kb(proc.pid))
                time.sleep(0.02)
            wall = time.perf_counter() - t
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if CLOCK == "cpu":
                wall = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
            out.seek(0)
            text = out.read().decode("utf-8", "replace")
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:4])}… failed ({proc.returncode}):\n{text[-3000:]}")
        if until is None or re.search(until, text):
            return wall, peak_kb / 1024, text
    raise RuntimeError(f"{' '.join(cmd[:4])}… never printed {until!r}:\n{text[-3000:]}")


def _vm_hwm_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass  # the process has just exited
    return 0


HOME: Path | None = None  # the --home every `ours` run shares (None: a fresh one per run, --fresh-home)


def ours(specs: list[Path], text: Path, reference: Path | None = None) -> tuple[float, float, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        home = HOME or Path(tmp) / "home"
        cmd = [sys.executable, "-m", "pythia_compare", "--db", f"{home}/r.db", "--home", str(home), "compare",
               *map(str, specs), "--text-file", str(text), "--ctx", "512", "--scoring", "corpus", "--max-tokens", "0",
               "--json"] + (["--reference", str(reference)] if reference else [])
        wall, rss, out = measure(cmd, {"PYTHIA_COMPARE_THREADS": str(THREADS), "PYTHIA_COMPARE_MEMORY_BUDGET": "16G"})
    return wall, rss, json.loads(out.strip().splitlines()[-1])


TOOL_SETTINGS = [("shared", True), ("shared", False), ("static", True), ("static", False)]  # (build, repack)


def tool_name(build: str, repack: bool) -> str:
    return f"{build}, {'defaults (repack on)' if repack else '--no-repack'}"


def tool_bin(build: str) -> str:
    if build == "shared":
        from peer import llama_perplexity_bin

        return llama_perplexity_bin()
    out = subprocess.run(["bash", str(ROOT / "tools" / "build_llama_perplexity.sh"), build], check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
    return out


def tool(build: str, repack: bool, args: list[str], chunks: int,
         until: str | None = r"Final estimate|Same top p\s*:") -> tuple[float, float, str]:
    """llama-perplexity with our -t, -fa, -b, -ub, ctx and chunks; its repacking at its default or off.
    On an AMX CPU the tool's default (repack on) is not run: it crashes on quantized weights."""
    flags = ["-c", "512", "-b", "512", "-ub", "512", "-t", str(THREADS), "-fa", "on", "-ngl", "0", "--chunks", str(chunks)]
    return measure([tool_bin(build), *args, *flags, *([] if repack else ["--no-repack"])], until=until)


def _amx() -> bool:
    from pythia_compare.models.engine import cpu_info

    return cpu_info()["amx"]


def tool_settings() -> list[tuple[str, bool]]:
    from pythia_compare.models.engine import cpu_info

    return [(b, r) for b, r in TOOL_SETTINGS if not (r and cpu_info()["amx"])]


def median_run(results: list[tuple]) -> tuple:
    """The run of median wall time (its RSS and output with it); the RSS figure is the median too."""
    ordered = sorted(results, key=lambda r: r[0])
    mid = ordered[(len(ordered) - 1) // 2]
    return (statistics.median(r[0] for r in results), statistics.median(r[1] for r in results), *mid[2:])


GEN_PROMPT = ("The history of the printing press begins in the fifteenth century, when a goldsmith in Mainz "
              "combined movable metal type, oil-based ink and a screw press")

_GEN_CHILD = r"""
import json, statistics, sys, tempfile, time
sys.path.insert(0, sys.argv[1])
kind, n_tokens, threads, prompt, paths = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6:]
clock = time.process_time if sys.argv[-1] == "cpu" else time.perf_counter
paths = paths[:-1]
if kind == "plain":
    import llama_cpp
    from pythia_compare.models.engine import cpu_info
    if cpu_info()["amx"]:  # a plain Llama at its defaults crashes on AMX with quantized weights: buffer types off
        default = llama_cpp.llama_model_default_params
        def safe():
            p = default(); p.use_extra_bufts = False; return p
        llama_cpp.llama_model_default_params = safe
        import llama_cpp.llama as _l; _l.llama_cpp.llama_model_default_params = safe
    out = []
    for path in paths:
        llm = llama_cpp.Llama(path, n_ctx=512, n_batch=512, n_ubatch=512, n_threads=threads, n_threads_batch=threads,
                              flash_attn=True, verbose=False)
        tokens = llm.tokenize(prompt.encode())
        def gen():
            llm.reset()
            t, n = clock(), 0
            for _ in llm.generate(tokens, temp=0.0):
                n += 1
                if n == n_tokens:
                    break
            return n / (clock() - t)
        gen()  # warm-up
        out.append(gen())
        llm.close()
    print(json.dumps(out))
else:
    from pythia_compare.runs.compare import RunParams, run_comparison
    from pythia_compare.config import Settings
    from pythia_compare.runs.pool import ModelPool
    with tempfile.TemporaryDirectory() as tmp:
        s = Settings(n_threads=threads, memory_budget_bytes=16 * 1024**3, db_path=f"{tmp}/r.db", home=f"{tmp}/home",
                     offline=True)
        pool = ModelPool(s)
        params = RunParams.from_settings(s, max_tokens=n_tokens, top_k=10, scoring="prompt")
        run_comparison(paths, prompt, params, settings=s, pool=pool)  # warm-up: models and generation handles
        marks = {}
        def on_event(ev):  # the generation phase of each variant, on the chosen clock
            if ev.message.endswith(": generating") and ev.message not in marks:
                marks[ev.message] = clock()
        t0 = clock()
        run = run_comparison(paths, prompt, params, settings=s, pool=pool, on_event=on_event).to_json()
        t1 = clock()
        starts = list(marks.values()) + [t1]
        print(json.dumps([[len(v["generation"]["tokens"]), starts[i + 1] - starts[i] if sys.argv[-1] == "cpu"
                           else v["timings"]["generate_s"], v.get("load")] for i, v in enumerate(run["variants"])]))
"""


def generation(kind: str, paths: list[Path], n_tokens: int) -> list:
    cmd = [sys.executable, "-c", _GEN_CHILD, str(ROOT), kind, str(n_tokens), str(THREADS), GEN_PROMPT,
           *map(str, paths), CLOCK]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=3600,
                          env={**os.environ, "PYTHIA_COMPARE_THREADS": str(THREADS)})
    if done.returncode != 0:
        raise RuntimeError(f"generation child ({kind}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def header(args) -> str:
    import llama_cpp
    from pythia_compare.models.engine import cpu_info

    cpu = cpu_info()
    flags = []
    try:
        line = next(l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("flags"))
        flags = sorted(f for f in line.split(":", 1)[1].split()
                       if f.startswith(("avx", "amx", "fma", "f16c", "sse4", "bmi2")))
    except (OSError, StopIteration):
        pass
    return (f"CPU: {cpu['model']}, {os.cpu_count()} cores, {'AMX' if cpu['amx'] else 'no AMX'}; flags: {' '.join(flags)}\n"
            f"ggml: {cpu['ggml']}\n"
            f"llama-cpp-python {llama_cpp.__version__} (pip's native build); llama-perplexity from the same sdist, "
            f"native Release, built shared and static (tools/build_llama_perplexity.sh [static])\n"
            f"{THREADS} threads, ctx 512, -b 512 -ub 512, flash attention on, {args.chunks} chunks (KL row {args.kl_chunks or args.chunks}); each figure the median "
            f"of {args.repeats} interleaved runs, {CLOCK} seconds; ours with "
            f"{'a fresh --home per run' if HOME is None else 'one warmed --home (file hashes and probe verdicts kept)'}; "
            f"load average at start {os.getloadavg()[0]:.1f}\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--kl-chunks", type=int, default=None, help="chunks of the KL row (default: --chunks)")
    ap.add_argument("--repeats", type=int, default=5, help="runs per figure; the median is kept (at least 5)")
    ap.add_argument("--tokens", type=int, default=128, help="greedy tokens per generation figure")
    ap.add_argument("--quick", action="store_true",
                    help="to try it out: 2 chunks, 1 run per figure, 16 tokens (figures not to be quoted)")
    ap.add_argument("--skip", default="", help="comma-separated rows to leave out: ppl,kl,gen,link")
    ap.add_argument("--threads", type=int, default=2, help="threads for the tool and for ours (default 2)")
    ap.add_argument("--ppl-quants", default="Q8_0,Q4_K_M", help="the corpus PPL rows (default Q8_0,Q4_K_M)")
    ap.add_argument("--fresh-home", action="store_true",
                    help="a new --home for every run of ours (hashing and the first-load probe in every figure)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="cpu: CPU seconds instead of wall seconds (with --threads 1, on a busy machine)")
    args = ap.parse_args()
    global THREADS, CLOCK, HOME
    THREADS, CLOCK = args.threads, args.clock
    if args.quick:
        args.chunks, args.repeats, args.tokens = 2, 1, 16
    skip = set(filter(None, args.skip.split(",")))
    from peer import parse_final_ppl, parse_kl_block

    files = build_models()
    text = build_text(512 * args.chunks + 64, files)
    settings = tool_settings()
    home = tempfile.TemporaryDirectory()
    if not args.fresh_home:
        HOME = Path(home.name)
        for specs in ([files["Q8_0"]], [files["Q4_K_M"]], [files["Q8_0"], files["Q6_K"], files["Q4_K_M"], files["F16"]]):
            ours(specs, build_text(1024 + 64, files))  # untimed: each file hashed and probed once, as in real use
    print(header(args), flush=True)
    rows = []
    for q in args.ppl_quants.split(",") if "ppl" not in skip else ():
        got: dict = {k: [] for k in [*settings, "ours"]}
        for _ in range(args.repeats):  # interleaved: every setting once per round
            for b, r in settings:
                got[(b, r)].append(tool(b, r, ["-m", str(files[q]), "-f", str(text)], args.chunks))
            got["ours"].append(ours([files[q]], text))
        med = {k: median_run(v) for k, v in got.items()}
        run = med["ours"][2]
        tool_val = parse_final_ppl(med[settings[0]][2])[0]
        rows.append((f"corpus PPL {q}", run["variants"][0]["n_scored"] // 255, med, run["variants"][0]["ppl"], tool_val))
    if "kl" not in skip:
        kl_chunks = args.kl_chunks or args.chunks
        kl_text = build_text(512 * kl_chunks + 64, files)
        with tempfile.TemporaryDirectory() as tmp:
            base = Path(tmp) / "base.kld"

            def two_step(b: str, r: bool):
                w, rss, _ = tool(b, r, ["-m", str(files["F16"]), "-f", str(kl_text), "--kl-divergence-base", str(base)],
                                 kl_chunks, until=None)
                outs = []
                for q in ("Q8_0", "Q6_K", "Q4_K_M"):
                    w2, r2, o = tool(b, r, ["-m", str(files[q]), "--kl-divergence-base", str(base), "--kl-divergence"],
                                     kl_chunks)
                    w, rss = w + w2, max(rss, r2)
                    outs.append(o)
                return w, rss, outs

            got = {k: [] for k in [*settings, "ours"]}
            for _ in range(args.repeats):
                for b, r in settings:
                    got[(b, r)].append(two_step(b, r))
                got["ours"].append(ours([files["Q8_0"], files["Q6_K"], files["Q4_K_M"]], kl_text, files["F16"]))
            med = {k: median_run(v) for k, v in got.items()}
            run = med["ours"][2]
            rows.append(("KL 3 variants vs F16", run["variants"][0]["n_scored"] // 255, med,
                         run["variants"][2]["kld"]["mean"], parse_kl_block(med[settings[0]][2][2]).get("kld_mean")))
    if rows:
        names = [tool_name(b, r) for b, r in settings]
        print("| measurement | chunks | " + " | ".join(f"tool {n} s" for n in names) + " | ours s | ours vs the tool's "
              "fastest (tool s / ours s) | peak RSS MB, ours / tool's fastest | RSS ratio | ours value | tool value |")
        print("|---|---|" + "---|" * len(names) + "---|---|---|---|---|---|")
        for name, chunks, med, ov, tv in rows:
            fastest = min(settings, key=lambda k: med[k][0])
            ow, orss = med["ours"][:2]
            tw, trss = med[fastest][:2]
            print(f"| {name} | {chunks} | " + " | ".join(f"{med[k][0]:.2f}" for k in settings) +
                  f" | {ow:.2f} | {tw / ow:.2f}x (vs {tool_name(*fastest)}) | {orss:.0f} / {trss:.0f} | {orss / trss:.2f}x "
                  f"| {ov:.6g} | {tv:.6g} |", flush=True)
    if "gen" not in skip:
        print(f"\nGeneration, {args.tokens} greedy tokens after a {len(GEN_PROMPT.split())}-word prompt, tokens/s "
              f"(median of {args.repeats}; ours streams with top-k 10 alternatives on, timed from the run JSON; plain: "
              f"llama_cpp.Llama at its default load settings{', extra buffer types off (AMX)' if _amx() else ''})\n")
        print("| model | plain Llama tok/s | ours, K = 1, tok/s | ours / plain | ours, K = 4 side by side, tok/s "
              "| K = 4 / plain | our load settings |")
        print("|---|---|---|---|---|---|---|")
        quants = ["F16", "Q8_0", "Q6_K", "Q4_K_M"]
        plain = {q: [] for q in quants}
        one = {q: [] for q in quants}
        four = {q: [] for q in quants}
        loads = {}
        for _ in range(args.repeats):
            for q, tps in zip(quants, generation("plain", [files[q] for q in quants], args.tokens)):
                plain[q].append(tps)
            for q in ("Q8_0", "Q4_K_M"):
                (n, secs, load), = generation("ours", [files[q]], args.tokens)
                one[q].append(n / secs)
                loads[q] = load
            for q, (n, secs, load) in zip(quants, generation("ours", [files[q] for q in quants], args.tokens)):
                four[q].append(n / secs)
                loads.setdefault(q, load)
        for q in quants:
            p, f = statistics.median(plain[q]), statistics.median(four[q])
            o = statistics.median(one[q]) if one[q] else None
            load = loads.get(q) or {}
            how = f"score {'repacked' if load.get('extra_bufts_score') else 'plain'}, generate " \
                  f"{'repacked' if load.get('extra_bufts_generate') else 'plain'}"
            print(f"| {q} | {p:.1f} | {f'{o:.1f}' if o else '-'} | {f'{o / p:.2f}x' if o else '-'} | {f:.1f} | "
                  f"{f / p:.2f}x | {how} |", flush=True)
    if "link" not in skip:
        from bench_permalink import measure as link_measure

        r = link_measure(max(5, args.repeats * 2) if not args.quick else 2)
        s, d = r["server"], r["drawn"]
        print("\nPermalink: ?run=ID of a 4-variant corpus run with a reference, no model loaded\n")
        print("| measurement | first open | p95 of repeats |")
        print("|---|---|---|")
        print(f"| server time (handler + figure JSON), wall ms | {s['first_wall'] * 1000:.0f} | {s['p95_wall'] * 1000:.0f} |")
        print(f"| server time, CPU ms | {s['first_cpu'] * 1000:.0f} | {s['p95_cpu'] * 1000:.0f} |")
        print(f"| server time of other runs, opened once each, wall ms | - | {s['others_p95_wall'] * 1000:.0f} |")
        print(f"| fully drawn in Chromium (fresh context), s | {d['first']:.2f} | {d['p95']:.2f} |")
        f = r["floor"]
        print(f"| peer floor: a gradio page of one 3-bar gr.Plot, drawn, s | {f['first']:.2f} | {f['p95']:.2f} |")
        print(f"\nours / the floor (medians): {d['median'] / f['median']:.2f}x; main thread busy until drawn: ours "
              f"{d['busy_median']:.2f} s, the floor's {f['busy_median']:.2f} s")
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
