"""Benchmark: pythia-compare against llama.cpp's own `llama-perplexity`, measured in the same run.

Builds (once, cached under ~/.cache/pythia-compare-bench) a GGUF with exactly Pythia-410M-deduped's shapes and
random weights — 24 layers, d_model 1024, 16 heads, rotary_pct 0.25, d_ff 4096, vocab 50304, parallel
residual — as F16, then Q8_0, Q6_K and Q4_K_M through llama.cpp's quantizer. Then it times whole processes
(wall time, peak RSS from wait4), 2 threads, ctx 512, >= 8 chunks, flash attention on, with a fresh --home
per run so no cache of ours helps:

1. corpus PPL: `python -m pythia_compare compare M --text-file T --json` vs `llama-perplexity -m M -f T -c 512 -b 512`;
2. KL of 3 variants against the F16 reference: one `compare` process vs the tool's two-step path (a base run that
   writes its logit file, then one `--kl-divergence` run per variant).

Usage: python benchmarks/bench_perplexity.py [--chunks 8] [--repeats 1]. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

CACHE = Path(os.environ.get("PYTHIA_COMPARE_BENCH_CACHE", Path.home() / ".cache" / "pythia-compare-bench"))
PYTHIA_410M = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
               "vocab_size": 50304, "rotary_pct": 0.25, "rotary_emb_base": 10000, "max_position_embeddings": 2048,
               "use_parallel_residual": True, "layer_norm_eps": 1e-5, "bos_token_id": 0, "eos_token_id": 0,
               "tie_word_embeddings": False, "architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox",
               "hidden_act": "gelu", "torch_dtype": "float16"}


def build_models() -> dict[str, Path]:
    from pythia_compare.convert import convert_checkpoint
    from pythia_compare.quantize import quantize_file

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
    save_file(t, str(ckpt / "model.safetensors"))
    del t
    convert_checkpoint(ckpt, files["F16"], "F16")
    for q in ("Q8_0", "Q6_K", "Q4_K_M"):
        quantize_file(files["F16"], files[q], q)
    (ckpt / "model.safetensors").unlink()
    return files


def build_text(n_tokens: int, files: dict[str, Path]) -> Path:
    from pythia_compare.config import Settings
    from pythia_compare.engine import Model

    held = (ROOT / "assets" / "demo" / "heldout.txt").read_text()
    m = Model(files["Q4_K_M"], Settings(), 512)
    per = len(m.tokenize(held))
    m.close()
    path = CACHE / f"bench-text-{n_tokens}.txt"
    path.write_text(held * (n_tokens // per + 1))
    return path


def measure(cmd: list[str], env: dict | None = None, until: str | None = None) -> tuple[float, float, str]:
    """Run one process; return (wall seconds, peak RSS MB, stdout+stderr).

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
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env, cwd=ROOT)
            peak_kb = 0
            while proc.poll() is None:
                peak_kb = max(peak_kb, _vm_hwm_kb(proc.pid))
                time.sleep(0.02)
            wall = time.perf_counter() - t
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


def ours(specs: list[Path], text: Path, reference: Path | None = None) -> tuple[float, float, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pythia_compare", "--db", f"{tmp}/r.db", "--home", f"{tmp}/home", "compare",
               *map(str, specs), "--text-file", str(text), "--ctx", "512", "--scoring", "corpus", "--max-tokens", "0",
               "--json"] + (["--reference", str(reference)] if reference else [])
        wall, rss, out = measure(cmd, {"PYTHIA_COMPARE_THREADS": "2", "PYTHIA_COMPARE_MEMORY_BUDGET": "16G"})
    return wall, rss, json.loads(out.strip().splitlines()[-1])


def tool(args: list[str], until: str | None = r"Final estimate|Same top p\s*:") -> tuple[float, float, str]:
    from peer import llama_perplexity_bin

    return measure([llama_perplexity_bin(), *args, "-c", "512", "-b", "512", "-t", "2", "--no-repack", "-fa", "on",
                    "-ngl", "0"], until=until)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=1, help="runs per row; the fastest is kept")
    args = ap.parse_args()
    from peer import parse_final_ppl, parse_kl_block

    files = build_models()
    text = build_text(512 * args.chunks + 64, files)
    best = lambda f: min((f() for _ in range(args.repeats)), key=lambda r: r[0])
    rows = []
    for q in ("Q8_0", "Q4_K_M"):
        tw, tr, tout = best(lambda: tool(["-m", str(files[q]), "-f", str(text)]))
        ow, orss, run = best(lambda: ours([files[q]], text))
        chunks = run["variants"][0]["n_scored"] // 255
        rows.append((f"corpus PPL {q}", chunks, ow, tw, orss, tr, run["variants"][0]["ppl"], parse_final_ppl(tout)[0]))
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base.kld"

        def two_step():
            w, r, _ = tool(["-m", str(files["F16"]), "-f", str(text), "--kl-divergence-base", str(base)], until=None)
            outs = []
            for q in ("Q8_0", "Q6_K", "Q4_K_M"):
                w2, r2, o = tool(["-m", str(files[q]), "--kl-divergence-base", str(base), "--kl-divergence"])
                w, r = w + w2, max(r, r2)
                outs.append(o)
            return w, r, outs

        tw, tr, touts = best(two_step)
        ow, orss, run = best(lambda: ours([files["Q8_0"], files["Q6_K"], files["Q4_K_M"]], text, files["F16"]))
        rows.append(("KL 3 variants vs F16", run["variants"][0]["n_scored"] // 255, ow, tw, orss, tr,
                     run["variants"][2]["kld"]["mean"], parse_kl_block(touts[2]).get("kld_mean")))
    import llama_cpp

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"{_cpu_model()}; llama-cpp-python {llama_cpp.__version__} (default native build, use_extra_bufts off; "
          f"llama-perplexity from the same sdist, native, shared libraries, --no-repack); 2 threads, ctx 512, flash attention on\n")
    print("| measurement | chunks | pythia-compare s | llama-perplexity s | speed ratio (tool s / ours s) "
          "| ours peak RSS MB | tool peak RSS MB | RSS ratio (ours / tool) | ours value | tool value |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, chunks, ow, tw, orss, trss, ov, tv in rows:
        print(f"| {name} | {chunks} | {ow:.1f} | {tw:.1f} | {tw / ow:.2f}x | {orss:.0f} | {trss:.0f} | "
              f"{orss / trss:.2f}x | {ov:.6g} | {tv:.6g} |")


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
