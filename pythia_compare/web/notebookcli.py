"""The `notebook` command line: list, show, run, delete, export (cli.py builds the parser here and dispatches here).

Owns the notebook commands' arguments and printing; the work is runs/notebookstore.py's (the log),
runs/notebookrun.py's (running cells headless into a new revision) and web/notebooks.py's (the exports). Exit codes
as in cli.py: bad input raises BadInput (2); `notebook run` exits 1 when a cell failed (each failure printed,
the other cells still ran and the revision holds them). Imports nothing heavy until a command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..config import Settings
from ..errors import BadInput


def add_notebook_parser(sub) -> None:
    """`notebook …`: notebooks of the run log (docs/notebook.md)."""
    nb = sub.add_parser("notebook", help="notebooks: list, show, run, delete, export")
    ns = nb.add_subparsers(dest="notebook_command", required=True, metavar="ACTION")
    ns.add_parser("list", help="the stored notebooks, latest first")
    sh = ns.add_parser("show", help="a notebook's cells (ID or ID@REVISION), or --json")
    sh.add_argument("ref", metavar="ID[@REV]")
    sh.add_argument("--json", action="store_true", help="the notebook JSON (docs/notebook.md)")
    rn = ns.add_parser("run", help="run every comparison cell headless and save the result as a new revision")
    rn.add_argument("ref", metavar="ID")
    dl = ns.add_parser("delete", help="delete a notebook and every revision of it (its runs stay)")
    dl.add_argument("ref", metavar="ID")
    ex = ns.add_parser("export", help="export a notebook as .ipynb (Jupyter) or .html (one self-contained page)")
    ex.add_argument("ref", metavar="ID[@REV]")
    ex.add_argument("--format", choices=["ipynb", "html"], required=True)
    ex.add_argument("--out", help="write to this file (default: stdout)")


def run_notebook_command(args: argparse.Namespace, settings: Settings) -> int:
    from ..runs.notebookstore import NotebookStore
    from ..runs.store import RunStore

    if args.notebook_command != "list" and not Path(settings.db_path).expanduser().is_file():
        raise BadInput(f"there is no run log at {settings.db_path}; give the --db that holds the notebook")
    runs = RunStore(settings.db_path, owner_secret=settings.owner_secret)
    store = NotebookStore(runs, settings)
    return {"list": _list, "show": _show, "run": _run, "delete": _delete,
            "export": _export}[args.notebook_command](args, settings, runs, store) or 0


def _list(args, settings, runs, store) -> int:
    rows = store.list()
    if not rows:
        print("no notebooks yet: make one on the page's Notebook tab, or from Python (docs/notebook.md)")
        return 0
    from ..runs.report import text_table

    print(text_table(["notebook", "title", "updated (UTC)", "revision", "cells"],
                     [[r["notebook_id"], r["title"], r["updated_at"][:19].replace("T", " "), r["revision"], r["cells"]]
                      for r in rows]))
    return 0


def _show(args, settings, runs, store) -> int:
    nb = store.get(args.ref)
    if args.json:
        print(json.dumps(nb.to_json(), ensure_ascii=False, indent=1))
        return 0
    print(f"notebook {nb.notebook_id} revision {nb.revision} ({nb.created_at[:19].replace('T', ' ')} UTC): {nb.title}")
    print(f"variants: {nb.variants.describe()}")
    print("settings: " + " ".join(f"{k}={v}" for k, v in nb.settings.items()))
    for i, c in enumerate(nb.cells, 1):
        if c.kind == "note":
            first = (c.markdown or "").strip().splitlines()
            print(f"[{i}] note: {first[0][:100] if first else ''}")
            continue
        state = ("failed: " + c.error) if c.error else (f"run {c.run_id}" if c.run_id else "not run")
        if nb.is_stale(c):
            state += f" (stale: computed with {c.computed_with.describe() if c.computed_with else 'another set'})"
        own = f" [own variants: {c.variants.describe()}]" if c.variants else ""
        print(f"[{i}] comparison ({c.scoring}){own}: {c.input[:80]!r} — {state}")
    return 0


def _run(args, settings, runs, store) -> int:
    from ..runs.notebookrun import run_cells
    from ..runs.pool import ModelPool

    nb = store.get(args.ref)
    if "@" in args.ref:
        raise BadInput("notebook run takes a notebook id, not a revision: the new revision follows the latest")
    pool = ModelPool(settings)
    try:
        run_cells(nb, settings=settings, pool=pool, store=runs,
                  on_cell=lambda i, n, c: print(f"cell {i} of {n}: {c.input[:60]!r}", file=sys.stderr))
    finally:
        pool.close()
    saved = store.save(nb)
    bad = [(i, c) for i, c in enumerate(saved.cells, 1) if c.kind == "comparison" and c.error]
    for i, c in bad:
        print(f"cell {i} failed: {c.error}", file=sys.stderr)
    print(f"{saved.notebook_id}@{saved.revision}")
    return 1 if bad else 0


def _delete(args, settings, runs, store) -> int:
    store.delete(args.ref)
    print(f"deleted notebook {args.ref} and every revision of it")
    return 0


def _export(args, settings, runs, store) -> int:
    from .notebooks import to_html, to_ipynb_text

    nb = store.get(args.ref)

    def find(run_id: str):
        try:
            return runs.get_run(run_id)
        except BadInput:
            return None

    text = to_ipynb_text(nb, find) if args.format == "ipynb" else to_html(nb, find)
    if args.out:
        Path(args.out).expanduser().write_text(text, encoding="utf-8")
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
