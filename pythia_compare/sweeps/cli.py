"""The `sweep` command line: plan, run, merge, status, show, list, slurm (cli.py dispatches here).

Owns the sweep commands' argument handling and printing; the work is sweep.py's (and slurm.py's for the job
scripts). Exit codes as in cli.py: bad input raises BadInput (2). `plan` prints the new sweep's id as the last
line of stdout; `status --json` prints {"sweep", "done", "total", "failed", …}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..config import Settings
from ..errors import BadInput
from ..files import read_text_file, sha256_file, text_file_path
from .store import SweepStore
from .sweep import cell_order


def run_sweep_command(args: argparse.Namespace, settings: Settings) -> int:
    return {"plan": _plan, "run": _run, "merge": _merge, "status": _status, "show": _show, "list": _list,
            "slurm": _slurm}[args.sweep_command](args, settings) or 0


def _existing_store(settings: Settings):
    from ..runs.store import RunStore

    if not Path(settings.db_path).is_file():
        raise BadInput(f"there is no run log at {settings.db_path}; give the --db that `sweep plan` wrote to")
    return RunStore(settings.db_path)


def _plan(args, settings: Settings) -> int:
    from ..runs.store import RunStore
    from .sweep import DEFAULT_MAX_CHUNKS, make_plan

    scoring = args.scoring or "corpus"
    if scoring == "lambada":
        if args.text_file is not None:
            raise BadInput("--scoring lambada scores the LAMBADA examples, so a LAMBADA sweep takes no --text-file; "
                           "give a LAMBADA JSONL with --lambada-file, or leave it out for the Hub dataset")
        if args.max_chunks is not None:
            raise BadInput("--max-chunks belongs to corpus sweeps (chunks of a text); a LAMBADA sweep takes "
                           "--limit N (the first N examples)")
        text = sha = None
    else:
        if args.lambada_file is not None or args.limit is not None:
            raise BadInput("--lambada-file and --limit belong to --scoring lambada; add --scoring lambada (and leave "
                           "out --text-file), or leave them out")
        if args.text_file is None:
            raise BadInput("give the text every cell scores with --text-file PATH (demo:heldout: the demo suite's "
                           "held-out text), or --scoring lambada for a LAMBADA sweep")
        text = read_text_file(args.text_file, settings.max_text_chars, settings.demo_dir)
        sha = sha256_file(text_file_path(args.text_file, settings.demo_dir))
    max_chunks = DEFAULT_MAX_CHUNKS if args.max_chunks is None else args.max_chunks or None
    plan, cells = make_plan(settings, steps=args.steps, quants=args.quants, text=text, text_sha256=sha,
                            repo=args.repo, reference=args.reference, ctx=args.ctx,
                            max_chunks=max_chunks, name=args.name, hub_quants=args.hub_quants, scoring=scoring,
                            lambada_file=args.lambada_file, limit=_whole_or_text(args.limit))
    store = RunStore(settings.db_path)
    sweep_id = SweepStore(store).create(plan, [(c.step, c.quant, c.hub) for c in cells])
    steps = plan["steps"]
    hub = f" + {len(plan['hub_quants'])} hub cells" if plan["hub_quants"] else ""
    lam = plan["lambada"]
    what = (f"{lam['n']} LAMBADA examples of {lam['file']}" if lam else f"{plan['n_tokens']} tokens")
    print(f"planned {'LAMBADA ' if lam else ''}sweep {plan['name']!r}: {len(steps)} steps × {len(plan['quants'])} "
          f"quants{hub} = {len(cells)} cells; {what} at ctx {plan['ctx']} in {settings.db_path}")
    print(f"run it: python -m pythia_compare --db {settings.db_path} sweep run {sweep_id}")
    print(sweep_id)
    return 0


def _whole_or_text(value: str | None) -> int | str | None:
    """--limit as an int when it is one; anything else as given, for the plan to refuse with the range that works."""
    try:
        return int(value) if value is not None else None
    except ValueError:
        return value


def _run(args, settings: Settings) -> int:
    from ..runs.store import RunStore
    from .sweep import lambada_source, parse_shard, run_shard

    shard = parse_shard(args.shard)
    if args.out:
        # A shard file: the plan is read from --db without writing or locking it (many nodes may read it at once
        # on a shared filesystem), copied into the shard file, and the cells are written there only.
        from .store import read_sweep_file

        row, cells = read_sweep_file(settings.db_path, args.sweep_id)  # unknown id: exit 2, no shard file made
        lambada_source(settings, row, args.lambada_file)  # another LAMBADA file: exit 2, no shard file made
        out = RunStore(Path(args.out.replace("{shard}", str(shard[0]))).expanduser())
        SweepStore(out).import_plan(row, cells)
        done = {(c["step"], c["quant"], bool(c["hub"])) for c in cells if c["status"] == "done"}
        report = run_shard(settings, out, args.sweep_id, shard, keep=args.keep, skip=done,
                           lambada_file=args.lambada_file)
    else:
        store = _existing_store(settings)
        SweepStore(store).plan(args.sweep_id)  # unknown id: exit 2
        report = run_shard(settings, store, args.sweep_id, shard, keep=args.keep, lambada_file=args.lambada_file)
    print(f"shard {shard[0]}/{shard[1]} of sweep {args.sweep_id}: {report.done} done, {report.failed} failed, "
          f"{report.skipped} already done, in {report.seconds:.1f} s; cells in {report.db}")
    return 0


def _merge(args, settings: Settings) -> int:
    from .sweep import merge_shards

    totals = merge_shards(settings.db_path, args.shards, args.sweep)
    print(f"merged {totals['shards']} shard(s) of sweep {totals['sweep']} into {settings.db_path}: "
          f"{totals['added']} cells added, {totals['failed']} failures recorded, {totals['skipped']} already there")
    return 0


def _status(args, settings: Settings) -> int:
    from .sweep import status

    s = status(_existing_store(settings), args.sweep_id)
    if args.json:
        print(json.dumps(s, ensure_ascii=False))
        return 0
    eta = "—" if s["eta_s"] is None else _hms(s["eta_s"])
    print(f"sweep {s['sweep']} ({s['name']}): {s['done']}/{s['total']} done, {s['failed']} failed, "
          f"{s['pending']} pending; ETA {eta} in one process")
    for c in s["failed_cells"]:
        print(f"  failed: step{c['step']} {c['quant']}{' (hub)' if c['hub'] else ''} "
              f"(attempts {c['attempts']}): {c['error']}")
    return 0


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _show(args, settings: Settings) -> int:
    sweep = SweepStore(_existing_store(settings)).get(args.sweep_id)
    if args.json:
        print(json.dumps(sweep, ensure_ascii=False))
        return 0
    import textwrap

    from ..runs.report import terminal_width

    print(textwrap.fill(f"sweep {sweep['sweep_id']} ({sweep['name']}): {sweep['repo']}, ctx {sweep['ctx']}, "
                        f"reference {sweep['reference']}, {sweep['done']}/{sweep['total']} done", terminal_width()))
    if sweep.get("scoring") == "lambada":
        return _show_lambada(sweep)
    # 80 columns: the 99th percentile and the errors' digits are in --json and in the page's cell table
    print(f"{'step':>6} {'quant':10} {'status':7} {'PPL':>9} {'±':>7} {'KLD mean':>9} {'bpw':>5}  run")
    for c in cell_order(sweep["cells"]):
        def f(v, fmt):
            return format(v, fmt) if v is not None else format("—", ">" + fmt.split(".")[0])
        print(f"{c['step']:>6} {c['quant'] + (' hub' if c['hub'] else ''):10} {c['status']:7} "
              f"{f(c['ppl'], '9.3f')} {f(c['ppl_err'], '7.3f')} {f(c['kld_mean'], '9.6f')} "
              f"{f(c['bpw'], '5.2f')}  {c['run_id'] or ''}")
    print("(KLD p99, ln ratio and every digit: sweep show --json)")
    return 0


def _show_lambada(sweep: dict) -> int:
    """A LAMBADA sweep's cells: acc ± stderr, LAMBADA PPL, examples, bpw (80 columns)."""
    lam = sweep["lambada"]
    src = f"{lam['repo']}@{lam['revision'][:12]}" if lam.get("repo") else "a local file"
    print(f"LAMBADA: {lam['n']} of {lam['n_file']} examples of {lam['file']} ({src}, sha256 {lam['sha256'][:12]}…)")

    def f(v, fmt):
        return format(v, fmt) if v is not None else format("—", ">" + fmt.split(".")[0])
    print(f"{'step':>6} {'quant':10} {'status':7} {'acc':>7} {'±':>6} {'PPL':>9} {'n':>5} {'bpw':>5}  run")
    for c in cell_order(sweep["cells"]):
        print(f"{c['step']:>6} {c['quant'] + (' hub' if c['hub'] else ''):10} {c['status']:7} "
              f"{f(c['lambada_acc'], '7.4f')} {f(c['lambada_acc_stderr'], '6.4f')} {f(c['lambada_ppl'], '9.4g')} "
              f"{f(c['lambada_n'], '5d')} {f(c['bpw'], '5.2f')}  {c['run_id'] or ''}")
    print("(PPL's standard error and every digit: sweep show --json)")
    return 0


def _list(args, settings: Settings) -> int:
    rows = SweepStore(_existing_store(settings)).list()
    if not rows:
        print("no sweeps stored")
    for r in rows:
        print(f"{r['sweep_id']}  {r['created_at'][:19]}  {r['done']}/{r['total']} done  {r['failed']} failed  "
              f"{r['name']}")
    return 0


def _slurm(args, settings: Settings) -> int:
    from .slurm import submit, write_scripts

    store = _existing_store(settings)
    SweepStore(store).plan(args.sweep_id)
    job = write_scripts(settings, args.sweep_id, array_size=args.array_size, partition=args.partition,
                        time_limit=args.time, cpus_per_task=args.cpus_per_task, directory=args.dir)
    print(f"wrote {job.array_script} (array of {args.array_size} shards) and {job.merge_script}")
    if args.submit:
        array_id, merge_id = submit(job)
        print(f"submitted array job {array_id} and merge job {merge_id} (afterok:{array_id})")
        print(merge_id)
    else:
        print(f"submit with: sbatch --parsable {job.array_script}, then "
              f"sbatch --dependency=afterok:<array job id> {job.merge_script}")
    return 0
