"""The command line: `python -m pythia_compare [--db PATH] [--home DIR] [--offline] COMMAND …`.

Owns argument parsing, printing tables and JSON, and turning errors into exit codes: 0 ok, 2 bad input
(the message names the input and what would work), 1 anything else. Never imports gradio or plotly
(they cost seconds at every start); heavy modules are imported inside the commands that need them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .config import Settings, parse_size
from .errors import BadInput, PythiaCompareError
from .files import read_text_file
from .web.notebookcli import add_notebook_parser, run_notebook_command


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pythia_compare",
                                description="Compare GGUF quant levels and training checkpoints of Pythia side by side.")
    p.add_argument("--db", help="SQLite run log (default: per-user data dir; env PYTHIA_COMPARE_DB)")
    p.add_argument("--home", help="cache of converted/quantized GGUF files (env PYTHIA_COMPARE_HOME)")
    p.add_argument("--offline", action="store_true", default=None,
                   help="never touch the network; use cached files (env PYTHIA_COMPARE_OFFLINE=1)")
    p.add_argument("--verbose", "-v", action="store_true", help="show llama.cpp's log and tracebacks")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("compare", help="run variants on one prompt or text and compare them")
    c.add_argument("specs", nargs="+", metavar="SPEC", help="variant specs: Q4_K_M, step3000:Q4_K_M, demo@step0, ./m.gguf")
    src = c.add_mutually_exclusive_group()
    src.add_argument("--prompt", help="a prompt (prompt scoring: every token after the first)")
    src.add_argument("--text-file", help="a UTF-8 text file (corpus scoring when long enough); demo:heldout is "
                                         "the demo suite's held-out text, from any directory")
    c.add_argument("--reference", help="spec of the reference for KL statistics (e.g. F16, or demo for the demo "
                   "suite); default, as on the dashboard: the highest-precision variant given (most bits per weight, "
                   "then the latest step) when two or more are given; 'none' for no reference and no KL")
    c.add_argument("--scoring", choices=["auto", "prompt", "corpus", "lambada"], default="auto",
                   help="lambada: lm-eval's lambada_openai benchmark (acc, PPL) instead of a prompt or text")
    c.add_argument("--lambada-file", help="with --scoring lambada: a LAMBADA JSONL file, one {\"text\": ...} per line "
                   "(default: the Hub dataset EleutherAI/lambada_openai, English test split)")
    c.add_argument("--limit", help="with --scoring lambada: score the first N examples only")
    c.add_argument("--ctx", type=int, help="context / corpus chunk size in tokens (default 512)")
    c.add_argument("--top-k", type=int, help="next-token alternatives per variant (default 10)")
    c.add_argument("--max-tokens", type=int, help="tokens to generate after the input (default 32; 0: none)")
    c.add_argument("--temperature", type=float, help="0 is greedy (default); > 0 samples with --seed")
    c.add_argument("--seed", type=int, help="sampling seed (default 0)")
    c.add_argument("--lens", action="store_true",
                   help="the logit lens (prompt runs): each layer's prediction, per variant, with its KL from the "
                        "reference's at the same layer")
    c.add_argument("--lens-positions", metavar="I,J,…",
                   help="token indices for the lens, comma-separated, at most 8 (default: the last token)")
    c.add_argument("--no-flash-attn", action="store_true", help="turn flash attention off (llama-perplexity's exact numerics)")
    c.add_argument("--json", action="store_true", help="print the run JSON instead of tables (complete, whatever "
                   "the terminal's width; the tables fit it)")

    r = sub.add_parser("runs", help="the run log: list, show, export, delete")
    rs = r.add_subparsers(dest="runs_command", required=True, metavar="ACTION")
    rl = rs.add_parser("list", help="past runs, newest first")
    rl.add_argument("--query", "-q", help="full-text search in the input text")
    rl.add_argument("--limit", type=int, default=20)
    rsh = rs.add_parser("show", help="print a stored run's tables (or --json)")
    rsh.add_argument("run_id")
    rsh.add_argument("--json", action="store_true")
    rex = rs.add_parser("export", help="export a run as JSON, CSV (per token) or zip (summary.csv + tokens.csv)")
    rex.add_argument("run_id")
    rex.add_argument("--format", choices=["json", "csv", "zip"], default="json")
    rex.add_argument("--out", help="write to this file instead of stdout (required for zip)")
    rd = rs.add_parser("delete", help="delete a run")
    rd.add_argument("run_id")

    cv = sub.add_parser("convert", help="convert a checkpoint (spec or HF directory) to a GGUF file")
    cv.add_argument("source", metavar="SPEC_OR_DIR", help="a checkpoint spec (step3000, demo@step0) or a directory")
    cv.add_argument("--out", required=True, help="output .gguf path")
    cv.add_argument("--quant", default="F16", help="F32, F16, BF16 or any llama.cpp quant name (default F16)")

    ca = sub.add_parser("cache", help="the cache of converted/quantized files and the Hugging Face downloads")
    cas = ca.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    cas.add_parser("list", help="cached files and Hugging Face revisions pythia-compare used, most recently used "
                                "first")
    cp = cas.add_parser("prune", help="delete least recently used files and Hugging Face revisions, across both")
    cp.add_argument("--max-size", default="0", help="keep at most this much in both together, e.g. 2G (default 0: "
                    "delete all that no run is using)")
    _add_sweep_parser(sub)
    add_notebook_parser(sub)  # the notebook commands live in their wing (web/notebookcli.py)
    return p


def _add_sweep_parser(sub) -> None:
    """`sweep …`: the steps × quants grid as a resumable, sharded job (sweep.py; Slurm scripts: slurm.py)."""
    sw = sub.add_parser("sweep", help="steps × quants grids: plan, run (sharded), merge, status, slurm")
    ss = sw.add_subparsers(dest="sweep_command", required=True, metavar="ACTION")
    sp = ss.add_parser("plan", help="record a sweep in --db; prints its id as the last line")
    sp.add_argument("--steps", required=True, help="all, A-B/S (1000-143000/1000), log:N, or a comma list")
    sp.add_argument("--quants", required=True, help="comma list, e.g. F16,Q8_0,Q4_K_M (F16 allowed)")
    sp.add_argument("--text-file", help="the UTF-8 text every cell scores (corpus sweeps, needed there); "
                                        "demo:heldout: the demo suite's held-out text")
    sp.add_argument("--scoring", choices=["corpus", "lambada"], default="corpus",
                    help="corpus (default): every cell scores --text-file; lambada: every cell runs lm-eval's "
                         "lambada_openai (acc, PPL) on the same examples, no text")
    sp.add_argument("--lambada-file", help="with --scoring lambada: a LAMBADA JSONL file, one {\"text\": ...} per "
                    "line (default: the Hub dataset EleutherAI/lambada_openai, English test split, pinned)")
    sp.add_argument("--limit", help="with --scoring lambada: every cell scores the first N examples only")
    sp.add_argument("--repo", help="checkpoint repo of the steps (default: the checkpoint repo; demo: the demo suite)")
    sp.add_argument("--reference", help="default F16: each step's own F16; or one spec for every cell")
    sp.add_argument("--ctx", type=int, default=512, help="corpus chunk size in tokens (default 512)")
    sp.add_argument("--max-chunks", type=int, help="corpus sweeps: chunks scored per cell (default 64; 0: all)")
    sp.add_argument("--name", help="a name for the sweep")
    sp.add_argument("--hub-quants", action="store_true",
                    help="add the GGUF repo's own files at the final step as extra cells (marked hub)")
    sr = ss.add_parser("run", help="run the cells of one shard (skips done cells; retries failed ones)")
    sr.add_argument("sweep_id")
    sr.add_argument("--shard", help="i/n, 0-based (default: the Slurm array task, else 0/1)")
    sr.add_argument("--out", help="write cells to this shard DB instead of --db (may hold {shard})")
    sr.add_argument("--keep", action="store_true", help="keep each step's downloaded and built files")
    sr.add_argument("--lambada-file", help="a LAMBADA sweep's file at another path than the plan's (it must be "
                    "the same file: its sha256 is checked)")
    sm = ss.add_parser("merge", help="merge shard DBs into --db (idempotent)")
    sm.add_argument("shards", nargs="+", metavar="IN.db")
    sm.add_argument("--sweep", help="refuse shards of any other sweep id")
    sst = ss.add_parser("status", help="done/total, failed cells with their errors, ETA")
    sst.add_argument("sweep_id")
    sst.add_argument("--json", action="store_true")
    ssh = ss.add_parser("show", help="the sweep JSON (docs/sweeps.md) or a table of its cells")
    ssh.add_argument("sweep_id")
    ssh.add_argument("--json", action="store_true")
    ss.add_parser("list", help="the stored sweeps, newest first")
    sl = ss.add_parser("slurm", help="write a Slurm job array + merge job for a sweep (and submit with --submit)")
    sl.add_argument("sweep_id")
    sl.add_argument("--array-size", type=int, required=True, help="number of shards (array tasks)")
    sl.add_argument("--partition")
    sl.add_argument("--time", help="time limit per task, e.g. 04:00:00")
    sl.add_argument("--cpus-per-task", type=int, default=2)
    sl.add_argument("--dir", help="where the scripts, shard DBs and logs go (default: beside --db)")
    sl.add_argument("--submit", action="store_true", help="submit both jobs with sbatch")


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides = {"db_path": Path(args.db).expanduser() if args.db else None,
                 "home": Path(args.home).expanduser() if args.home else None,
                 "offline": True if args.offline else None}
    if getattr(args, "no_flash_attn", False):
        overrides["flash_attn"] = False
    return Settings.from_env(**overrides)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = settings_from_args(args)
        handler = {"compare": cmd_compare, "runs": cmd_runs, "convert": cmd_convert, "cache": cmd_cache,
                   "sweep": cmd_sweep, "notebook": run_notebook_command}
        return handler[args.command](args, settings) or 0
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except PythiaCompareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 1
    except Exception as e:  # anything unexpected: short message, traceback with --verbose
        if args.verbose:
            raise
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


def cmd_compare(args: argparse.Namespace, settings: Settings) -> int:
    from .runs.compare import ProgressBar, RunParams, check_prompt, pick_reference, run_comparison
    from .runs.pool import ModelPool
    from .runs import report
    from .runs.report import format_run, terminal_width
    from .runs.store import RunStore

    if args.prompt is not None:
        check_prompt(args.prompt, settings)
    if args.prompt is None and args.text_file is None and args.scoring != "lambada":
        raise BadInput("give the input: --prompt TEXT or --text-file PATH (or --scoring lambada for the LAMBADA "
                       "benchmark)")
    if args.scoring == "lambada" and args.text_file is not None:
        raise BadInput("--scoring lambada scores the LAMBADA examples, so it takes no --text-file; give a LAMBADA "
                       "JSONL with --lambada-file, or leave it out for the Hub dataset")
    text = (args.prompt if args.prompt is not None else "" if args.text_file is None
            else read_text_file(args.text_file, settings.max_text_chars, settings.demo_dir))
    params = RunParams.from_settings(settings, scoring=args.scoring, ctx=args.ctx, top_k=args.top_k,
                                     max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed,
                                     reference=pick_reference(args.specs, args.reference),
                                     lambada_file=args.lambada_file, limit=_whole_or_text(args.limit),
                                     lens=bool(args.lens), lens_positions=_positions(args.lens_positions))
    pool = ModelPool(settings)
    bar = ProgressBar()
    try:
        run = run_comparison(args.specs, text, params, settings=settings, pool=pool, on_event=bar.update)
    finally:
        bar.close()
        pool.close()
    store = RunStore(settings.db_path)
    run_id = store.save(run)
    run = store.get_run(run_id)
    for line in report.run_notes(run):
        print(line, file=sys.stderr)
    if args.json:
        print(json.dumps(run.to_json(), ensure_ascii=False))
    else:
        print(format_run(run, width=terminal_width()))
        print(f"\nrun {run_id} saved to {settings.db_path}\nshow it again: python -m pythia_compare runs show {run_id}")
    return 0


def _whole_or_text(value: str | None) -> int | str | None:
    """--limit as an int when it is one; anything else as given, for compare to refuse with the range that works."""
    try:
        return int(value) if value is not None else None
    except ValueError:
        return value


def _positions(text: str | None) -> list[int] | None:
    """--lens-positions as a list of ints (BadInput naming the item that is not a whole number)."""
    if text is None:
        return None
    out = []
    for item in text.split(","):
        try:
            out.append(int(item.strip()))
        except ValueError:
            raise BadInput(f"--lens-positions: {item.strip()[:20]!r} is not a token index; give whole numbers "
                           f"separated by commas, e.g. 3,7,12") from None
    return out


def cmd_runs(args: argparse.Namespace, settings: Settings) -> int:
    from .runs.report import format_run, format_run_list, terminal_width
    from .runs.store import RunStore

    store = RunStore(settings.db_path)
    if args.runs_command == "list":
        print(format_run_list(store.list(query=args.query, limit=args.limit), width=terminal_width()))
    elif args.runs_command == "show":
        run = store.get_run(args.run_id)
        print(json.dumps(run.to_json(), ensure_ascii=False) if args.json else format_run(run, width=terminal_width()))
    elif args.runs_command == "export":
        run = store.get_run(args.run_id)
        if args.format == "zip":
            from .runs.export import run_to_zip

            if not args.out:
                raise BadInput("--format zip writes a binary file; give --out FILE.zip")
            Path(args.out).expanduser().write_bytes(run_to_zip(run))
            print(f"wrote {args.out}", file=sys.stderr)
            return 0
        if args.format == "json":
            from .runs.export import run_to_json_text

            data = run_to_json_text(run)
        else:
            from .runs.export import run_to_csv

            data = run_to_csv(run)
        if args.out:
            with open(args.out, "w", encoding="utf-8", newline="") as f:
                f.write(data)
            print(f"wrote {args.out}", file=sys.stderr)
        else:
            sys.stdout.write(data if data.endswith("\n") else data + "\n")
    elif args.runs_command == "delete":
        store.delete(args.run_id)
        print(f"deleted run {args.run_id}")
    return 0


def cmd_convert(args: argparse.Namespace, settings: Settings) -> int:
    import shutil

    from .sources.convert import convert_checkpoint
    from .variants import QUANTS, normalize_quant

    quant = normalize_quant(args.quant, what="--quant")
    out = Path(args.out).expanduser()
    if out.exists() and out.is_dir():
        raise BadInput(f"--out {args.out!r} is a directory; give a file path ending in .gguf")
    if not out.parent.is_dir():
        raise BadInput(f"--out {args.out!r}: the folder {str(out.parent)!r} does not exist; create it first")
    src = Path(args.source).expanduser()
    if src.is_dir() or args.source.startswith(("./", "/", "../", "~")):
        if not src.is_dir():
            raise BadInput(f"checkpoint directory {args.source!r} does not exist; give a folder with config.json, "
                           f"tokenizer.json and model.safetensors or pytorch_model.bin, or a spec like step3000")
        if QUANTS[quant].native:
            convert_checkpoint(src, out, quant)
        else:
            import tempfile

            from .models.quantize import quantize_file

            with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
                f16 = Path(tmp) / "f16.gguf"
                convert_checkpoint(src, f16, "F16")
                quantize_file(f16, out, quant, n_threads=settings.n_threads)
    else:
        from .sources.resolver import Resolver
        from .variants import parse_spec

        v = parse_spec(args.source)
        if v.kind not in ("checkpoint", "repo"):
            raise BadInput(f"{args.source!r} is not a checkpoint; give a checkpoint spec (step3000, demo@step0) "
                           f"or a directory")
        v = parse_spec(f"{v.spec.split(':')[0]}:{quant}")
        res = Resolver(settings).resolve(v, progress=lambda m: print(m, file=sys.stderr))
        shutil.copyfile(res.path, out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {quant})")
    return 0


def cmd_cache(args: argparse.Namespace, settings: Settings) -> int:
    """`cache list` / `cache prune`: the model cache (--home) and the Hugging Face cache's revisions pythia-compare
    used, which the cache budget counts together (sources/budget.py)."""
    from .sources.budget import CacheBudget

    budget = CacheBudget(settings)
    cache = budget.models
    if args.cache_command == "list":
        from .runs.report import terminal_width, text_table

        entries = cache.entries()
        if not entries:
            print(f"the cache at {cache.root} is empty")
        else:  # a table that fits the terminal: the files' folders are the cache's own (cache root, then models/)
            print(f"the cache at {cache.root}:")
            print(text_table(["size MB", "quant", "from", "file"],
                             [[round(e.bytes / 1e6, 1), e.key.get("quant"),
                               f"{e.key.get('repo')}@{str(e.key.get('commit'))[:8]}", e.path.name] for e in entries],
                             width=terminal_width()))
        models_bytes = sum(e.bytes for e in entries)
        print(f"total {models_bytes / 1e6:.1f} MB in {len(entries)} files")
        revisions = budget.hf.revisions()
        hf_bytes = budget.hf.total_bytes(revisions)
        if not revisions:
            print(f"Hugging Face cache {budget.hf_cache_dir}: nothing pythia-compare used")
        else:  # only what pythia-compare used: the cache is shared with every Hugging Face tool on the machine
            print(f"Hugging Face cache {budget.hf_cache_dir}, what pythia-compare used:")
            print(text_table(["size MB", "type", "repo@commit", "branches", "files"],
                             [[round(r.bytes / 1e6, 1), r.repo_type, f"{r.repo}@{r.commit[:8]}",
                               ", ".join(r.refs) or "-", len(r.files)] for r in revisions],
                             width=terminal_width()))
        print(f"total {hf_bytes / 1e6:.1f} MB in {len(revisions)} Hugging Face revisions")
        print(f"both count toward the cache budget: {(models_bytes + hf_bytes) / 1e6:.1f} MB in all")
        print(f"a public app prunes them to {settings.cache_budget_bytes / 1e6:.0f} MB (PYTHIA_COMPARE_CACHE_BUDGET)")
    else:
        try:
            limit = parse_size(args.max_size)
        except ValueError as e:
            raise BadInput(f"--max-size: {e}") from None
        done = budget.prune(limit)
        print(f"removed {len(done.entries)} files ({done.entries_bytes / 1e6:.1f} MB) and {len(done.revisions)} "
              f"Hugging Face revisions ({done.revisions_bytes / 1e6:.1f} MB); {done.left_bytes / 1e6:.1f} MB left")
        if done.left_bytes > limit:
            print(f"{done.left_bytes / 1e6:.1f} MB is more than --max-size: the rest is in use by a run or a build "
                  f"in progress; prune again once it ends", file=sys.stderr)
    return 0


def cmd_sweep(args: argparse.Namespace, settings: Settings) -> int:
    from .sweeps.cli import run_sweep_command

    return run_sweep_command(args, settings)
