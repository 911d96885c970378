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
    from .sweep import make_plan

    text = read_text_file(args.text_file, settings.max_text_chars, settings.demo_dir)
    sha = sha256_file(text_file_path(args.text_file, settings.demo_dir))
    plan, cells = make_plan(settings, steps=args.steps, quants=args.quants, text=text, text_sha256=sha,
                            repo=args.repo, reference=args.reference, ctx=args.ctx,
                            max_chunks=args.max_chunks or None, name=args.name, hub_quants=args.hub_quants)
    store = RunStore(settings.db_path)
    sweep_id = SweepStore(store).create(plan, [(c.step, c.quant, c.hub) for c in cells])
    steps = plan["steps"]
    hub = f" + {len(plan['hub_quants'])} hub cells" if plan["hub_quants"] else ""
    print(f"planned sweep {plan['name']!r}: {len(steps)} steps × {len(plan['quants'])} quants{hub} = "
          f"{len(cells)} cells; {plan['n_tokens']} tokens at ctx {plan['ctx']} in {settings.db_path}")
    print(f"run it: python -m pythia_compare --db {settings.db_path} sweep run {sweep_id}")
    print(sweep_id)
    return 0


def _run(args, settings: Settings) -> int:
    from ..runs.store import RunStore
    from .sweep import parse_shard, run_shard

    shard = parse_shard(args.shard)
    if args.out:
        # A shard file: the plan is read from --db without writing or locking it (many nodes may read it at once
        # on a shared filesystem), copied into the shard file, and the cells are written there only.
        from .store import read_sweep_file

        row, cells = read_sweep_file(settings.db_path, args.sweep_id)  # unknown id: exit 2, no shard file made
        out = RunStore(Path(args.out.replace("{shard}", str(shard[0]))).expanduser())
        SweepStore(out).import_plan(row, cells)
        done = {(c["step"], c["quant"], bool(c["hub"])) for c in cells if c["status"] == "done"}
        report = run_shard(settings, out, args.sweep_id, shard, keep=args.keep, skip=done)
    else:
        store = _existing_store(settings)
        SweepStore(store).plan(args.sweep_id)  # unknown id: exit 2
        report = run_shard(settings, store, args.sweep_id, shard, keep=args.keep)
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
