"""The sweep log: `SweepStore` keeps planned sweeps and their cells (docs/sweeps.md) in the run log's SQLite file.

Owns the tables sweeps and sweep_cells (migrations m010/m011): planning a sweep (its text stored once), a
cell's run saved with its cell in one transaction, failures, the sweep JSON, listing and status, and moving a
plan and its finished cells between files (shard databases: copy, read-only import, merge keeping run ids).
Composition, not a second database: a SweepStore works over one RunStore (`SweepStore(store)`), through that store's
connections and write/read transactions, and stores a cell's run as an ordinary run (runs, run_variants,
run_kld rows from runrows.py, runs.sweep_id set). Its only connections of its own read a file without writing
to it (sweep_ids_in_file, read_sweep_file). Never runs a model, plans a grid or shards cells (sweep.py), never
draws (sweepplots.py).

A done cell's run keeps runs.text '' and runs.tokens NULL (when equal to the sweep's): RunStore.get() fills
both from the sweep row.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BadInput, RunNotFound
from ..runs.run import Run
from ..runs.runrows import rows_of, short_repr, text_or_none
from ..runs.store import BUSY_TIMEOUT_S, ID_RE, MAX_LIST_LIMIT, PREVIEW_CHARS, RunLogError, describe_id, new_id

if TYPE_CHECKING:
    import sqlite_utils

    from ..runs.store import RunStore

__all__ = ["SweepStore", "SweepNotFound", "SweepMismatch", "sweep_ids_in_file", "read_sweep_file", "SWEEP_SCHEMA"]

SWEEP_SCHEMA = 1  # the sweep JSON's schema version (docs/sweeps.md)
# A LAMBADA sweep's figures per cell (migration m012; NULL in corpus sweeps): the cell's lambada.summary.
LAMBADA_CELL_NUMBERS = ("lambada_n", "lambada_acc", "lambada_acc_stderr", "lambada_ppl", "lambada_ppl_stderr")
_CELL_NUMBERS = ("ppl", "ppl_err", "kld_mean", "kld_mean_err", "kld_p99", "ln_ratio", "ln_ratio_err", "bytes", "bpw",
                 *LAMBADA_CELL_NUMBERS)
_CELL_MERGED = ("status", "run_id", "error", "attempts", "seconds", "updated_at", *_CELL_NUMBERS, "extra")
# What makes two plans one sweep: a shard DB's plan must match the target's in all of these.
_PLAN_IDENTITY = ("repo", "steps", "quants", "hub_repo", "hub_quants", "reference", "ctx", "max_chunks",
                  "text_sha256", "text", "params", "n_cells", "scoring", "lambada")
_SWEEP_JSON = ("steps", "quants", "hub_quants", "params", "lambada")
# Plan columns added after m010, as a plan read from a file made before them holds them.
_PLAN_DEFAULTS = {"scoring": "corpus", "lambada": None}


class SweepNotFound(RunNotFound):
    """No stored sweep has the given id."""


class SweepMismatch(BadInput):
    """Two databases hold different sweeps under one id, or shards of different sweeps are merged."""


def _check_sweep_id(sweep_id: Any) -> str:
    if not isinstance(sweep_id, str) or not ID_RE.fullmatch(sweep_id):
        raise _sweep_not_found(sweep_id)
    return sweep_id


def _sweep_not_found(sweep_id: Any) -> SweepNotFound:
    return SweepNotFound(f"no stored sweep has the id {describe_id(sweep_id)}; "
                         f"`python -m pythia_compare sweep list` shows the stored sweeps")


def _fetch_dict(conn: sqlite3.Connection, sql: str, params: list) -> dict | None:
    cur = conn.execute(sql, params)
    row = cur.fetchone()
    return None if row is None else dict(zip([d[0] for d in cur.description], row))


def _sweep_row(plan: dict) -> dict:
    need = ("name", "repo", "steps", "quants", "hub_repo", "hub_quants", "reference", "ctx", "max_chunks", "text",
            "text_sha256", "n_tokens", "params")
    missing = [k for k in need if k not in plan]
    if missing:
        raise BadInput(f"sweep plan: {', '.join(missing)} missing")
    row = {k: plan[k] for k in need}
    row.update({k: plan.get(k, v) for k, v in _PLAN_DEFAULTS.items()})
    if row["scoring"] not in ("corpus", "lambada"):
        raise BadInput(f"sweep plan: scoring {short_repr(row['scoring'])} is neither 'corpus' nor 'lambada'")
    for k in _SWEEP_JSON:
        row[k] = json.dumps(row[k])
    row["name"] = text_or_none(row["name"], "name")
    row["text"] = text_or_none(row["text"], "text")
    return row


def _public_lambada(lam: dict | None) -> dict | None:
    """A LAMBADA sweep's data for the sweep JSON: what the cells scored, without the local file's path."""
    return None if lam is None else {k: v for k, v in lam.items() if k != "path"}


def _decode_sweep_row(row: dict) -> dict:
    out = dict(row)
    for k in _SWEEP_JSON:
        out[k] = json.loads(out[k]) if out.get(k) is not None else None
    if out.get("tokens") is not None:
        out["tokens"] = json.loads(out["tokens"])
    return out


def _pending_cell(sweep_id: str, position: int, cell: tuple) -> dict:
    step, quant, hub = cell
    return {"sweep_id": sweep_id, "step": int(step), "quant": str(quant), "hub": int(bool(hub)),
            "position": int(position), "status": "pending", "run_id": None, "error": None, "attempts": 0,
            "seconds": None, "updated_at": None, **{k: None for k in _CELL_NUMBERS}, "extra": None}


def sweep_ids_in_file(path: str | Path) -> list[str]:
    """The sweep ids a database file holds, read without writing to it (read-only, no migrations); [] when it
    has no sweeps table. RunLogError when it is not a SQLite database."""
    try:
        conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
        try:
            if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sweeps'").fetchone() is None:
                return []
            return [r[0] for r in conn.execute("SELECT id FROM sweeps ORDER BY created_at, rowid")]
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        raise RunLogError(f"{str(path)!r} is not a pythia-compare database ({e})") from None


def read_sweep_file(path: str | Path, sweep_id: str) -> tuple[dict, list[dict]]:
    """(the sweeps row, its cell rows) of `sweep_id` in the database file at `path`, read without writing to it
    and, when no -wal file stands beside it, as an immutable file: no locks and no -shm, so array tasks on many
    nodes may read one plan on a shared filesystem (nothing may write to it meanwhile; the merge job runs after
    them). For SweepStore.import_plan. SweepNotFound / RunLogError otherwise."""
    _check_sweep_id(sweep_id)
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise RunLogError(f"there is no run log at {path}; give the --db that `sweep plan` wrote to")
    wal = p.with_name(p.name + "-wal")
    uri = f"{p.as_uri()}?mode=ro" + ("" if wal.exists() and wal.stat().st_size else "&immutable=1")
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S)
        try:
            if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sweeps'").fetchone() is None:
                raise _sweep_not_found(sweep_id)
            row = _fetch_dict(conn, "SELECT * FROM sweeps WHERE id = ?", [sweep_id])
            if row is None:
                raise _sweep_not_found(sweep_id)
            cur = conn.execute("SELECT * FROM sweep_cells WHERE sweep_id = ? ORDER BY position", [sweep_id])
            names = [d[0] for d in cur.description]
            cells = [dict(zip(names, r)) for r in cur.fetchall()]
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        raise RunLogError(f"{str(path)!r} is not a pythia-compare database ({e})") from None
    return row, cells


class SweepStore:
    """The sweeps of one run log (`runs`, the RunStore it is made over; `SweepStore(runs)`). It reads and
    writes through that store's per-thread connections and its transactions (every write one BEGIN IMMEDIATE),
    so it shares its WAL, busy timeout and migrations; it holds nothing else. Several SweepStores, threads and
    processes may share a file, as RunStores do."""

    def __init__(self, runs: "RunStore"):
        self._runs = runs

    def create(self, plan: dict, cells: list[tuple[int, str, bool]]) -> str:
        """Store a planned sweep and its cells (all pending) in one transaction; return its new id.

        `plan`: {"name", "repo", "steps", "quants", "hub_repo", "hub_quants", "reference", "ctx", "max_chunks",
        "text", "text_sha256", "n_tokens", "params"} and optionally "scoring" ('corpus', the default, or
        'lambada') and "lambada" (what a LAMBADA sweep's cells score); `cells`: (step, quant, hub) in grid order.
        """
        row = _sweep_row(plan)
        created_at = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        sweep_id = "-"
        while sweep_id.startswith("-"):  # an id is a command-line argument: never one that reads as an option
            sweep_id = new_id(9)
        with self._runs.write() as db:
            db["sweeps"].insert({**row, "id": sweep_id, "created_at": created_at, "n_cells": len(cells),
                                 "tokens": None})
            db["sweep_cells"].insert_all([_pending_cell(sweep_id, i, c) for i, c in enumerate(cells)])
        return sweep_id

    def plan(self, sweep_id: str) -> dict:
        """The sweep's plan: the sweeps row as a dict (JSON columns decoded) plus "cells": [(step, quant, hub)]
        in grid order. SweepNotFound otherwise."""
        plan, cells = self._snapshot(sweep_id)
        plan["cells"] = [(c["step"], c["quant"], c["hub"]) for c in cells]
        return plan

    def _snapshot(self, sweep_id: str) -> tuple[dict, list[dict]]:
        """(the decoded sweeps row, its cell rows in grid order with hub as bool), read in one transaction."""
        with self._runs.read() as conn:
            row = _fetch_dict(conn, "SELECT * FROM sweeps WHERE id = ?", [_check_sweep_id(sweep_id)])
            if row is None:
                raise _sweep_not_found(sweep_id)
            cur = conn.execute("SELECT * FROM sweep_cells WHERE sweep_id = ? ORDER BY position", [sweep_id])
            names = [d[0] for d in cur.description]
            cells = [dict(zip(names, r)) for r in cur.fetchall()]
        for c in cells:
            c["hub"] = bool(c["hub"])
        return _decode_sweep_row(row), cells

    def ids(self) -> list[str]:
        """Ids of the stored sweeps, oldest first."""
        return [r[0] for r in self._runs.db().conn.execute("SELECT id FROM sweeps ORDER BY created_at, rowid")]

    def copy_plan(self, source: "RunStore", sweep_id: str) -> None:
        """Copy sweep `sweep_id`'s plan (the sweeps row and every cell as pending) from `source` (a RunStore) into this
        store, keeping its id. Nothing happens when this store has that plan already; a different plan under
        the same id raises SweepMismatch."""
        with source.read() as conn:
            row = _fetch_dict(conn, "SELECT * FROM sweeps WHERE id = ?", [_check_sweep_id(sweep_id)])
            if row is None:
                raise _sweep_not_found(sweep_id)
            cells = [dict(zip(("step", "quant", "hub", "position"), c)) for c in conn.execute(
                "SELECT step, quant, hub, position FROM sweep_cells WHERE sweep_id = ?", [sweep_id])]
        with self._runs.write() as db:
            self._insert_plan(db, row, cells)

    def import_plan(self, row: dict, cells: list[dict]) -> None:
        """Store a plan read by read_sweep_file (its cells as pending), keeping its id; nothing happens when this
        store has it already; another plan under that id raises SweepMismatch."""
        with self._runs.write() as db:
            self._insert_plan(db, row, [{k: c[k] for k in ("step", "quant", "hub", "position")} for c in cells])

    def save_cell_run(self, sweep_id: str, step: int, quant: str, hub: bool, run: dict, summary: dict,
                      seconds: float) -> str:
        """Store a finished cell in one transaction: its run (text and tokens kept only in the sweep row) and
        the cell row (status 'done', the summary numbers). Returns the run's new id.

        `summary`: {"ppl", "ppl_err", "kld_mean", "kld_mean_err", "kld_p99", "ln_ratio", "ln_ratio_err",
        "bytes", "bpw"} and, for a LAMBADA cell, LAMBADA_CELL_NUMBERS. The run's input text must be the sweep's
        text (a LAMBADA sweep's: its examples' texts, one per line, as the run records them).
        """
        Run.from_json(run)  # run.py's rules first (as save), then the run log's
        run_row, variant_rows, kld_rows = rows_of(run)
        created_at = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        run_id = new_id(12)
        with self._runs.write() as db:
            sweep = db.conn.execute("SELECT text, tokens FROM sweeps WHERE id = ?", [sweep_id]).fetchone()
            if sweep is None:
                raise _sweep_not_found(sweep_id)
            cell = db.conn.execute("SELECT status FROM sweep_cells WHERE sweep_id = ? AND step = ? AND quant = ? "
                                   "AND hub = ?", [sweep_id, step, quant, int(hub)]).fetchone()
            if cell is None:
                raise BadInput(f"sweep {sweep_id} has no cell step {step} {quant}{' (hub)' if hub else ''}")
            if run_row["text"] != sweep[0]:
                raise BadInput(f"the run of cell step {step} {quant} scored another text than sweep {sweep_id}'s")
            if sweep[1] is None:
                db.conn.execute("UPDATE sweeps SET tokens = ? WHERE id = ?", [run_row["tokens"], sweep_id])
                run_row["tokens"] = None
            elif sweep[1] == run_row["tokens"]:
                run_row["tokens"] = None
            run_row["text"] = ""
            db["runs"].insert({**run_row, "id": run_id, "created_at": created_at, "owner": None,
                               "sweep_id": sweep_id})
            db["run_variants"].insert_all([{**r, "run_id": run_id} for r in variant_rows])
            db["run_kld"].insert_all([{**r, "run_id": run_id} for r in kld_rows])
            values = {k: summary.get(k) for k in _CELL_NUMBERS}
            db.conn.execute(
                "UPDATE sweep_cells SET status = 'done', run_id = ?, error = NULL, attempts = attempts + 1, "
                "seconds = ?, updated_at = ?, " + ", ".join(f"{k} = ?" for k in _CELL_NUMBERS) +
                " WHERE sweep_id = ? AND step = ? AND quant = ? AND hub = ?",
                [run_id, float(seconds), created_at, *values.values(), sweep_id, step, quant, int(hub)])
        return run_id

    def record_cell_failure(self, sweep_id: str, step: int, quant: str, hub: bool, error: str) -> None:
        """Mark a cell failed with its error (one transaction). A done cell stays done."""
        now = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        with self._runs.write() as db:
            db.conn.execute("UPDATE sweep_cells SET status = 'failed', error = ?, attempts = attempts + 1, "
                            "updated_at = ? WHERE sweep_id = ? AND step = ? AND quant = ? AND hub = ? "
                            "AND status != 'done'", [str(error), now, sweep_id, step, quant, int(hub)])

    def cells(self, sweep_id: str) -> list[dict]:
        """The sweep's cell rows in grid order (dicts keyed by sweep_cells' columns, hub as bool)."""
        return self._snapshot(sweep_id)[1]

    def get(self, sweep_id: str) -> dict:
        """The sweep JSON (docs/sweeps.md): the plan, every cell with its status and numbers, the counts."""
        plan, cells = self._snapshot(sweep_id)  # one snapshot: counts and cells agree while shards write
        out = {"schema": SWEEP_SCHEMA, "sweep_id": plan["id"], "name": plan["name"],
               "created_at": plan["created_at"], "repo": plan["repo"], "steps": plan["steps"],
               "quants": plan["quants"], "hub_repo": plan["hub_repo"], "hub_quants": plan["hub_quants"],
               "reference": plan["reference"], "ctx": plan["ctx"], "max_chunks": plan["max_chunks"],
               "text_sha256": plan["text_sha256"], "n_tokens": plan["n_tokens"], "params": plan["params"],
               "scoring": plan.get("scoring") or "corpus", "lambada": _public_lambada(plan.get("lambada")),
               "cells": [], "done": 0, "failed": 0, "pending": 0, "total": len(cells)}
        for c in cells:
            out[c["status"]] += 1
            out["cells"].append({"step": c["step"], "quant": c["quant"], "hub": c["hub"], "status": c["status"],
                                 "run_id": c["run_id"], "error": c["error"], "attempts": c["attempts"],
                                 "seconds": c["seconds"], **{k: c[k] for k in _CELL_NUMBERS}})
        return out

    def list(self, limit: int = 50, offset: int = 0) -> list[dict]:
        """Summary rows, newest first: {"sweep_id", "name", "created_at", "repo", "n_steps", "n_quants",
        "ctx", "max_chunks", "reference", "scoring", "preview", "total", "done", "failed", "pending"}."""
        for name, v in (("limit", limit), ("offset", offset)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise BadInput(f"{name} must be a whole number ≥ 0, got {short_repr(v)}")
        with self._runs.read() as conn:
            rows = conn.execute(
                "SELECT s.id, s.name, s.created_at, s.repo, s.steps, s.quants, s.ctx, s.max_chunks, s.reference, "
                "s.scoring, substr(s.text, 1, ?), length(s.text), "
                "(SELECT count(*) FROM sweep_cells c WHERE c.sweep_id = s.id), "
                "(SELECT count(*) FROM sweep_cells c WHERE c.sweep_id = s.id AND c.status = 'done'), "
                "(SELECT count(*) FROM sweep_cells c WHERE c.sweep_id = s.id AND c.status = 'failed') "
                "FROM sweeps s ORDER BY s.created_at DESC, s.rowid DESC LIMIT ? OFFSET ?",
                [PREVIEW_CHARS, min(limit, MAX_LIST_LIMIT), offset]).fetchall()
        out = []
        for (sid, name, created, repo, steps, quants, ctx, max_chunks, ref, scoring, preview, chars, total, done,
             failed) in rows:
            out.append({"sweep_id": sid, "name": name, "created_at": created, "repo": repo,
                        "n_steps": len(json.loads(steps)), "n_quants": len(json.loads(quants)), "ctx": ctx,
                        "max_chunks": max_chunks, "reference": ref, "scoring": scoring,
                        "preview": preview + ("…" if chars > PREVIEW_CHARS else ""), "total": total,
                        "done": done, "failed": failed, "pending": total - done - failed})
        return out

    def status(self, sweep_id: str) -> dict:
        """{"sweep", "name", "done", "total", "failed", "pending", "failed_cells": [{"step", "quant", "hub",
        "error", "attempts"}], "cell_seconds": mean seconds of a done cell or None}."""
        s = self.get(sweep_id)
        secs = [c["seconds"] for c in s["cells"] if c["status"] == "done" and c["seconds"] is not None]
        return {"sweep": s["sweep_id"], "name": s["name"], "done": s["done"], "total": s["total"],
                "failed": s["failed"], "pending": s["pending"],
                "failed_cells": [{k: c[k] for k in ("step", "quant", "hub", "error", "attempts")}
                                 for c in s["cells"] if c["status"] == "failed"],
                "cell_seconds": sum(secs) / len(secs) if secs else None}

    def merge_from(self, source: "RunStore", sweep_id: str) -> dict:
        """Merge sweep `sweep_id` from another store (a shard DB) into this one, in one transaction, keeping
        run ids. The plan is copied if absent (a different plan under that id raises SweepMismatch). A cell
        done here stays as it is; a cell done there and not here brings its run along; a failure there is
        recorded only over a pending cell. Idempotent. Returns {"added": n done cells added, "failed": n
        failures recorded, "skipped": n cells already done here}."""
        with source.read() as conn:
            conn.row_factory = sqlite3.Row
            try:
                row = conn.execute("SELECT * FROM sweeps WHERE id = ?", [_check_sweep_id(sweep_id)]).fetchone()
                if row is None:
                    raise _sweep_not_found(sweep_id)
                row = dict(row)
                cells = [dict(c) for c in conn.execute("SELECT * FROM sweep_cells WHERE sweep_id = ?", [sweep_id])]
                run_ids = [c["run_id"] for c in cells if c["status"] == "done" and c["run_id"]]
                runs = {}
                for rid in run_ids:
                    runs[rid] = ([dict(r) for r in conn.execute("SELECT * FROM runs WHERE id = ?", [rid])],
                                 [dict(r) for r in conn.execute("SELECT * FROM run_variants WHERE run_id = ?", [rid])],
                                 [dict(r) for r in conn.execute("SELECT * FROM run_kld WHERE run_id = ?", [rid])])
            finally:
                conn.row_factory = None
        counts = {"added": 0, "failed": 0, "skipped": 0}
        with self._runs.write() as db:
            self._insert_plan(db, row, [{k: c[k] for k in ("step", "quant", "hub", "position")} for c in cells])
            if row["tokens"] is not None:
                db.conn.execute("UPDATE sweeps SET tokens = ? WHERE id = ? AND tokens IS NULL",
                                [row["tokens"], sweep_id])
            have_tokens = db.conn.execute("SELECT tokens FROM sweeps WHERE id = ?", [sweep_id]).fetchone()[0]
            for c in cells:
                key = [sweep_id, c["step"], c["quant"], c["hub"]]
                mine = db.conn.execute("SELECT status FROM sweep_cells WHERE sweep_id = ? AND step = ? AND "
                                       "quant = ? AND hub = ?", key).fetchone()[0]
                if c["status"] == "pending" or mine == "done":
                    counts["skipped"] += mine == "done" and c["status"] == "done"
                    continue
                if c["status"] == "failed":
                    if mine == "pending":
                        db.conn.execute("UPDATE sweep_cells SET status = 'failed', error = ?, attempts = ?, "
                                        "updated_at = ? WHERE sweep_id = ? AND step = ? AND quant = ? AND hub = ?",
                                        [c["error"], c["attempts"], c["updated_at"], *key])
                        counts["failed"] += 1
                    continue
                run_rows, variant_rows, kld_rows = runs.get(c["run_id"], ([], [], []))
                if not run_rows:
                    continue  # a done cell whose run is gone from the shard: left pending here, a rerun makes it
                run_row = dict(run_rows[0])
                run_row.pop("rowid", None)
                if run_row["tokens"] is None and have_tokens is None:
                    run_row["tokens"] = row["tokens"]
                elif run_row["tokens"] is not None and run_row["tokens"] == have_tokens:
                    run_row["tokens"] = None
                if db.conn.execute("SELECT 1 FROM runs WHERE id = ?", [run_row["id"]]).fetchone() is None:
                    db["runs"].insert(run_row)
                    db["run_variants"].insert_all(variant_rows)
                    db["run_kld"].insert_all(kld_rows)
                db.conn.execute("UPDATE sweep_cells SET " + ", ".join(
                    f"{k} = ?" for k in _CELL_MERGED) + " WHERE sweep_id = ? AND step = ? AND quant = ? AND hub = ?",
                    [c[k] for k in _CELL_MERGED] + key)
                counts["added"] += 1
        return counts

    def _insert_plan(self, db: sqlite_utils.Database, row: dict, cells: list[dict]) -> None:
        row = {**_PLAN_DEFAULTS, **row}  # a plan read from a file made before m012: a corpus sweep
        sweep_id = row["id"]
        mine = db.conn.execute("SELECT " + ", ".join(_PLAN_IDENTITY) + " FROM sweeps WHERE id = ?",
                               [sweep_id]).fetchone()
        if mine is not None:
            if list(mine) != [row[k] for k in _PLAN_IDENTITY]:
                raise SweepMismatch(f"this database holds another sweep under the id {sweep_id} (its grid, "
                                    f"text or parameters differ); merge it into a separate --db")
            return
        db["sweeps"].insert({**row, "tokens": row.get("tokens")})
        db["sweep_cells"].insert_all([_pending_cell(sweep_id, c["position"], (c["step"], c["quant"], c["hub"]))
                                      for c in cells])
