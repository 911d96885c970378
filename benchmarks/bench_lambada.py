"""LAMBADA examples per second: pythia-compare's `--scoring lambada` against lm-evaluation-harness's `hf` model.

Both score the same LAMBADA-format file (assets/demo/lambada.jsonl by default: 64 examples, 60-110 tokens each)
with lm-eval's lambada_openai definition, on one checkpoint with Pythia-410M-deduped's shapes and random weights
(bench_perplexity.py's, seed 0; our converter makes its GGUF, llama.cpp's quantizer the Q8_0). 2 threads each:
ours F16 and Q8_0 through llama.cpp (PYTHIA_COMPARE_THREADS=2); lm-eval's `hf` model in float32 (torch's fast CPU
path; its float16 is slower on CPU) with torch.set_num_threads(2), at batch sizes 1, 8 and 32, its best taken.
Only scoring is timed: model loading is left out on both sides, and lm-eval runs with bootstrap_iters=0. Wall
seconds and the process's CPU seconds (all its threads) are both given: on a busy machine the CPU seconds keep
other processes' load out of the ratio.

Two more rows show llama.cpp's own ceiling on the same windows (the same tokens, the same F16 file, logits at the
same target positions, 2 threads, flash attention on): bare `llama_decode` calls, one example per call as ours
makes them, and 4 examples packed into one call on 4 sequence ids (a unified KV cache). They answer whether
packing examples, as lm-eval's batches do, would make ours faster on this CPU.

    python benchmarks/bench_lambada.py [--file PATH] [--limit N]

Prints a markdown table: examples/s and the ratio to lm-eval's best. Name the CPU and the load beside any figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_perplexity import CACHE, PYTHIA_410M, build_models, pythia410m_tensors  # noqa: E402

THREADS = 2


def hf_checkpoint() -> Path:
    """The benchmark model in Hugging Face layout for lm-eval: bench_perplexity's weights (same generator, same
    seed, so the same numbers as its GGUF), saved as float16 safetensors, with the demo suite's tokenizer."""
    out = CACHE / "pythia410m-shapes-hf"
    if (out / "model.safetensors").exists():
        return out
    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(PYTHIA_410M))
    demo = next((ROOT / "assets" / "demo").glob("step*/tokenizer.json")).parent
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copyfile(demo / name, out / name)
    t = pythia410m_tensors()
    save_file(t, str(out / "model.safetensors"))
    return out


def ours(gguf: Path, data: Path, limit: int | None) -> tuple[float, float, int]:
    """(scoring wall seconds, CPU seconds of the whole run, examples) of `--scoring lambada` on one GGUF, 2 threads,
    flash attention on, after an untimed run of one example in the same home (the file's hash remembered, as a
    user's second run finds it). The CPU seconds include opening the file (mmap) and tokenizing."""
    from pythia_compare.config import Settings
    from pythia_compare.runs.compare import RunParams, run_comparison
    from pythia_compare.runs.pool import ModelPool

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(db_path=Path(tmp) / "runs.db", home=Path(tmp) / "home", offline=True, n_threads=THREADS,
                            probe=False)
        for warm in (True, False):
            pool = ModelPool(settings)
            cpu = time.process_time()
            try:
                run = run_comparison([str(gguf)], "", RunParams(scoring="lambada", ctx=512, lambada_file=data,
                                                                limit=1 if warm else limit),
                                     settings=settings, pool=pool)
            finally:
                cpu = time.process_time() - cpu
                pool.close()
    e = run.variants[0]
    return e.timings.score_s, cpu, e.lambada.n


def bare_llama_decode(gguf: Path, data: Path, limit: int | None, pack: int) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, examples) of llama.cpp's llama_decode alone over the windows ours scores
    (tokenized and left-truncated by pythia_compare, ctx 512), `pack` examples per call, each on its own sequence
    id, logits at the target positions only. No Python work per token: the ceiling of any llama.cpp scorer."""
    import llama_cpp

    from pythia_compare.config import Settings
    from pythia_compare.models.engine import Model
    from pythia_compare.runs import lambada

    examples = lambada.parse(data.read_bytes())[:limit]
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(db_path=Path(tmp) / "runs.db", home=Path(tmp) / "home", offline=True, probe=False)
        m = Model(gguf, settings, 512)
        windows = [lambada.window(*lambada.encode_pair(m.tokenize, ex.context, ex.target), 512) for ex in examples]
        m.close()
    mparams = llama_cpp.llama_model_default_params()
    mparams.use_extra_bufts = False
    model = llama_cpp.llama_model_load_from_file(str(gguf).encode(), mparams)
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx = cparams.n_batch = cparams.n_ubatch = 512 * pack
    cparams.n_seq_max, cparams.kv_unified = pack, True
    cparams.n_threads = cparams.n_threads_batch = THREADS
    cparams.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
    ctx = llama_cpp.llama_init_from_model(model, cparams)
    batch = llama_cpp.llama_batch_init(512 * pack, 0, pack)

    def decode(group: list) -> None:
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        i = 0
        for seq, (tokens, positions) in enumerate(group):
            wanted = set(positions)
            for pos, tok in enumerate(tokens):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = tok, pos, 1
                batch.seq_id[i][0] = seq
                batch.logits[i] = pos in wanted
                i += 1
        batch.n_tokens = i
        if llama_cpp.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")

    groups = [windows[k:k + pack] for k in range(0, len(windows), pack)]
    decode(groups[0])  # untimed, as ours has its warm-up run
    t, cpu = time.perf_counter(), time.process_time()
    for group in groups:
        decode(group)
    seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)
    return seconds, cpu, len(windows)


def lm_eval_hf(ckpt: Path, data: Path, batch_size: int, limit: int | None) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, examples) of lm-eval's simple_evaluate on lambada_openai's definition over `data`, the model
    loaded before the clock starts."""
    import lm_eval
    import torch
    import yaml
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    torch.set_num_threads(THREADS)
    spec = yaml.safe_load((Path(lm_eval.__file__).parent / "tasks" / "lambada" / "lambada_openai.yaml").read_text())
    spec.update(task="lambada_bench", dataset_path="json", dataset_kwargs={"data_files": {"test": str(data)}})
    spec.pop("dataset_name", None)
    spec.pop("tag", None)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "lambada_bench.yaml").write_text(yaml.safe_dump(spec))
        lm = HFLM(pretrained=str(ckpt), dtype="float32", batch_size=batch_size, max_length=512, device="cpu")
        tm = TaskManager(include_path=tmp)
        t, cpu = time.perf_counter(), time.process_time()
        res = lm_eval.simple_evaluate(model=lm, tasks=["lambada_bench"], task_manager=tm, limit=limit,
                                      bootstrap_iters=0)
        seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
        del lm
    return seconds, cpu, int(res["n-samples"]["lambada_bench"]["effective"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", default=str(ROOT / "assets" / "demo" / "lambada.jsonl"))
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--only", choices=["ours", "lm-eval"], help="run one side only")
    args = ap.parse_args()
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    data = Path(args.file).resolve()
    files = build_models()
    rows = []
    for q in ("F16", "Q8_0") if args.only != "lm-eval" else ():
        s, cpu, n = ours(files[q], data, args.limit)
        rows.append((f"pythia-compare {q} (llama.cpp)", s, cpu, n))
        print(rows[-1], flush=True)
    for pack in (1, 4) if args.only != "lm-eval" else ():
        s, cpu, n = bare_llama_decode(files["F16"], data, args.limit, pack)
        rows.append((f"bare llama_decode F16, {pack} example{'s' if pack > 1 else ''} per call", s, cpu, n))
        print(rows[-1], flush=True)
    ckpt = hf_checkpoint() if args.only != "ours" else None
    theirs = []
    for bs in (1, 8, 32) if args.only != "ours" else ():
        s, cpu, n = lm_eval_hf(ckpt, data, bs, args.limit)
        theirs.append((f"lm-eval hf float32, batch {bs}", s, cpu, n))
        print(theirs[-1], flush=True)
    best_wall = max((n / s for _, s, _, n in theirs), default=float("nan"))
    best_cpu = max((n / c for _, _, c, n in theirs), default=float("nan"))
    print("| run | examples | examples/s (wall) | vs lm-eval's best | examples per CPU second | vs lm-eval's best |\n"
          "|---|---|---|---|---|---|")
    for name, s, cpu, n in rows + theirs:
        print(f"| {name} | {n} | {n / s:.3f} | {n / s / best_wall:.2f}x | {n / cpu:.3f} | {n / cpu / best_cpu:.2f}x |")


if __name__ == "__main__":
    main()
