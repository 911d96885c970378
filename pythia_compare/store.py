"""The run log: `RunStore` saves runs (docs/run.md) to SQLite and gives them back exactly.

Owns the database file: connections (one per thread), WAL mode, write transactions, applying migrations.py,
ids and timestamps, full-text search over input texts, listing, owner-scoped deletes, owner tokens kept as
HMACs, importing runs under their own ids (backups, merges). The mapping of a run
dict onto rows lives in runrows.py, the schema in migrations.py. Never runs a model, computes a metric or
draws a figure.

Round trip: `get(save(run))` equals `run` plus "run_id" and "created_at" (any given values of those two are
replaced), floats bit for bit.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import sqlite3
import sys
import threading
import time
import weakref
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from .errors import BadInput, RunNotFound
from .run import Run, migrate
from .runrows import RunFormatError, rows_of, run_of, short_repr, text_or_none

# sqlite-utils imports pandas at import time, when it is installed, only to recognise pandas values given to
# insert(). Runs are plain JSON values, so a process that has not loaded pandas (the CLI) keeps it unloaded:
# it would cost every CLI start about 0.5 s and 50 MB. A process that already has pandas (gradio's) is unchanged.
_hide_pandas = "pandas" not in sys.modules
if _hide_pandas:
    sys.modules["pandas"] = None  # type: ignore[assignment]  # `import pandas` raises ImportError meanwhile
try:
    import sqlite_utils

    from .migrations import migrations
finally:
    if _hide_pandas and "pandas" in sys.modules and sys.modules["pandas"] is None:
        del sys.modules["pandas"]

__all__ = ["RunStore", "RunFormatError", "RunLogError", "SweepNotFound", "SweepMismatch", "sweep_ids_in_file",
           "read_sweep_file"]

BUSY_TIMEOUT_S = 30.0  # how long a connection waits for another writer's lock before failing
MAX_LIST_LIMIT = 1000  # the most summary rows one list() call returns
PREVIEW_CHARS = 80  # characters of the input text in a summary row
_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")  # the alphabet of secrets.token_urlsafe; anything else is not an id


def new_id(nbytes: int) -> str:
    """A random URL-safe id (secrets.token_urlsafe) that starts with a letter or digit: one starting with '-'
    would read as an option to `runs show ID` and as a formula to a spreadsheet."""
    while True:
        token = secrets.token_urlsafe(nbytes)
        if token[0].isalnum():
            return token
_OWNER_KEY_RE = re.compile(r"[0-9a-f]{64}")  # an owner as kept with a secret: HMAC-SHA256 hex (RunStore.owner_key)


class RunLogError(BadInput):
    """The run log database cannot be opened (not a SQLite file, unwritable location)."""


# ------------------------------------------------------------------------------------------ the store


def _describe_id(run_id: Any) -> str:
    if not isinstance(run_id, str):
        return f"{type(run_id).__name__} {short_repr(run_id)}"
    if len(run_id) > 40:
        return f"{run_id[:40]!r}… ({len(run_id)} characters)"
    return repr(run_id)


def _not_found(run_id: Any) -> RunNotFound:
    return RunNotFound(f"no stored run has the id {_describe_id(run_id)}; "
                       f"`python -m pythia_compare runs list` shows the stored runs")


def _fts_query(query: str) -> str:
    """User text -> an FTS5 expression: every whitespace-separated word quoted as a phrase, ANDed."""
    clean = query.encode("utf-8", "replace").decode("utf-8")  # lone surrogates become "?"
    words = clean.replace("\x00", " ").split()
    return " ".join('"' + w.replace('"', '""') + '"' for w in words)


class _Handle:
    """One thread's connection (a weak-referenceable holder, so close() can find it)."""
    __slots__ = ("db", "__weakref__")

    def __init__(self, db: sqlite_utils.Database):
        self.db = db


class RunStore:
    """The run log in one SQLite file.

    Threads: each thread gets its own sqlite3 connection (threading.local), all in WAL mode, so readers never
    block and writers queue on SQLite's own lock (busy timeout BUSY_TIMEOUT_S). Every write is one
    `BEGIN IMMEDIATE` transaction; several RunStore objects, threads and processes may share a file.
    Opening applies any pending migrations (once, under the write lock).

    Owners: with `owner_secret` (PYTHIA_COMPARE_OWNER_SECRET), an owner token is kept only as
    HMAC-SHA256(owner_secret, token) in runs.owner_hmac, and lookups hash the token they are given; opening
    moves any raw token an older log holds in runs.owner into owner_hmac (migration m004). Without a secret,
    tokens are kept raw in runs.owner, as before.
    """

    def __init__(self, path: str | Path, owner_secret: str | None = None):
        if str(path) == ":memory:" or not str(path):
            raise RunLogError("RunStore needs a database file path (each thread opens its own connection, so "
                              "':memory:' would give every thread a different empty database)")
        self.path = Path(path).expanduser()
        self._owner_secret = owner_secret.encode("utf-8", "replace") if owner_secret else None
        self._local = threading.local()
        self._handles: weakref.WeakSet[_Handle] = weakref.WeakSet()
        self._handles_lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = self._db()
            if migrations.pending(db):
                with self._write() as db:
                    migrations.apply(db)
            if self._owner_secret is not None:
                self._hash_raw_owners()
        except OSError as e:
            raise RunLogError(f"cannot create the run log at {self.path}: {e.strerror or e}") from None
        except sqlite3.DatabaseError as e:
            raise RunLogError(f"cannot open the run log {self.path}: {e}; give --db a new file name or an "
                              f"existing pythia-compare database") from None

    # -------------------------------------------------------------------------------- connections

    def _db(self) -> sqlite_utils.Database:
        handle = getattr(self._local, "handle", None)
        if handle is not None:
            return handle.db
        conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            _ensure_wal(conn)
            db = sqlite_utils.Database(conn, execute_plugins=False)
        except BaseException:
            conn.close()
            raise
        handle = _Handle(db)
        self._local.handle = handle
        with self._handles_lock:
            self._handles.add(handle)
        return db

    @contextmanager
    def _write(self) -> Iterator[sqlite_utils.Database]:
        """One write transaction: BEGIN IMMEDIATE … COMMIT, rolled back on any exception."""
        db = self._db()
        db.conn.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.conn.execute("COMMIT")
        except BaseException:
            if db.conn.in_transaction:
                db.conn.execute("ROLLBACK")
            raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction, so the queries inside see one snapshot."""
        conn = self._db().conn
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")

    def close(self) -> None:
        """Close every connection this store opened (call when no thread is using it any more)."""
        with self._handles_lock:
            handles = list(self._handles)
            self._handles.clear()
        for h in handles:
            h.db.conn.close()
        self._local = threading.local()

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -------------------------------------------------------------------------------- API

    def save(self, run: dict | Run, owner: str | None = None) -> str:
        """Store a run (a Run, or a run JSON dict: docs/run.md) in one transaction; return its new id after COMMIT.

        The id is random (new_id(12): 96 bits, URL-safe, never starting with '-' or '_'); created_at is the UTC time of saving.
        Any "run_id"/"created_at" in `run` are replaced, and `run` itself is not modified. A malformed run
        raises RunFormatError naming the offending key (run.py's rules, then the run log's), before anything
        is written.
        """
        owner = text_or_none(owner, "owner")
        if isinstance(run, Run):
            run = run.to_json()
        Run.from_json(run)  # validation only: the dict's own keys are what is stored
        run_row, variant_rows, kld_rows = rows_of(run)
        created_at = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        owner_cols = self._owner_columns(owner)
        for _attempt in range(5):
            run_id = new_id(12)
            try:
                with self._write() as db:
                    db["runs"].insert({**run_row, "id": run_id, "created_at": created_at, **owner_cols})
                    db["run_variants"].insert_all([{**r, "run_id": run_id} for r in variant_rows])
                    db["run_kld"].insert_all([{**r, "run_id": run_id} for r in kld_rows])
                return run_id
            except sqlite3.IntegrityError as e:
                if "runs.id" not in str(e):
                    raise
        raise RunLogError("could not draw an unused run id in 5 attempts")  # pragma: no cover (2^-96 odds)

    def get_run(self, run_id: str) -> Run:
        """The stored run of `run_id` as a Run (docs/run.md); RunNotFound or RunFormatError otherwise."""
        return self._load(run_id)[1]

    def import_run(self, run: dict, owner: str | None = None) -> bool:
        """Store a run under its own "run_id" and "created_at" (from a backup, or another log); keep both.

        Idempotent: returns True when the run was added, False when a run with that id is already stored
        (nothing is compared or changed). `owner` is an owner as this log keeps it with a secret, i.e.
        `owner_key(token)` (64 hex digits, e.g. from a backup line), or None; never a raw token. A malformed
        run, id, created_at or owner raises RunFormatError naming it, before anything is written.
        """
        if not isinstance(run, dict):
            raise RunFormatError(f"run JSON must be an object, got {short_repr(run)}")
        run_id, created = run.get("run_id"), run.get("created_at")
        if not isinstance(run_id, str) or not _ID_RE.fullmatch(run_id):
            raise RunFormatError(f"run JSON: run_id must be a run id (1-64 of A-Z a-z 0-9 _ -), "
                                 f"got {short_repr(run_id)}")
        try:
            when = datetime.fromisoformat(created) if isinstance(created, str) else None
        except ValueError:
            when = None
        if when is None or when.tzinfo is None:
            raise RunFormatError(f"run JSON: created_at must be an ISO 8601 time with its UTC offset, "
                                 f"got {short_repr(created)}")
        created_at = when.astimezone(timezone.utc).isoformat(timespec="microseconds")
        if owner is not None and (not isinstance(owner, str) or not _OWNER_KEY_RE.fullmatch(owner)):
            raise RunFormatError(f"owner must be an owner key (64 hex digits, RunStore.owner_key) or None, "
                                 f"got {short_repr(owner)}")
        run_row, variant_rows, kld_rows = rows_of(run)
        try:
            with self._write() as db:
                if db.conn.execute("SELECT 1 FROM runs WHERE id = ?", [run_id]).fetchone() is not None:
                    return False
                db["runs"].insert({**run_row, "id": run_id, "created_at": created_at, "owner": None,
                                   "owner_hmac": owner})
                db["run_variants"].insert_all([{**r, "run_id": run_id} for r in variant_rows])
                db["run_kld"].insert_all([{**r, "run_id": run_id} for r in kld_rows])
        except sqlite3.IntegrityError as e:  # another writer imported it in between
            if "runs.id" not in str(e):
                raise
            return False
        return True

    def owner_key(self, owner: str | None) -> str | None:
        """How this log keeps an owner token with its secret: HMAC-SHA256(secret, token) as hex; None without
        a secret or a token."""
        if self._owner_secret is None or owner is None:
            return None
        return hmac.new(self._owner_secret, owner.encode("utf-8", "replace"), hashlib.sha256).hexdigest()

    def _owner_columns(self, owner: str | None) -> dict:
        if self._owner_secret is None:
            return {"owner": owner}
        return {"owner": None, "owner_hmac": self.owner_key(owner)}

    def _owner_match(self, owner: str) -> tuple[str, str]:
        """(column, value) that select the runs of an owner token."""
        if self._owner_secret is None:
            return "owner", owner
        return "owner_hmac", self.owner_key(owner) or ""

    def _hash_raw_owners(self) -> None:
        """Move every raw owner token (rows from before m004, or written without a secret) into owner_hmac.

        secure_delete makes SQLite zero the freed bytes, and the checkpoint writes the pages back, so the
        tokens do not linger in the file."""
        conn = self._db().conn
        if conn.execute("SELECT 1 FROM runs WHERE owner IS NOT NULL LIMIT 1").fetchone() is None:
            return
        conn.execute("PRAGMA secure_delete = ON")
        try:
            with self._write() as db:
                rows = db.conn.execute("SELECT rowid, owner FROM runs WHERE owner IS NOT NULL").fetchall()
                db.conn.executemany("UPDATE runs SET owner_hmac = ?, owner = NULL WHERE rowid = ?",
                                    [(self.owner_key(owner), rowid) for rowid, owner in rows])
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            conn.execute("PRAGMA secure_delete = OFF")

    def get(self, run_id: str) -> dict:
        """The stored run JSON of `run_id`, exactly as saved plus run_id/created_at; RunNotFound otherwise.

        A run of an older schema comes back migrated to the current one (run.migrate); one that does not have
        the run JSON's shape raises RunFormatError naming the run and the key."""
        return self._load(run_id)[0]

    def _load(self, run_id: str) -> tuple[dict, Run]:
        """The stored run as its JSON dict (migrated) and as a Run."""
        if not isinstance(run_id, str) or not _ID_RE.fullmatch(run_id):
            raise _not_found(run_id)
        with self._read() as conn:
            conn.row_factory = sqlite3.Row
            try:
                run_row = conn.execute("SELECT * FROM runs WHERE id = ?", [run_id]).fetchone()
                if run_row is None:
                    raise _not_found(run_id)
                if run_row["sweep_id"] is not None:  # a sweep cell: its text and tokens live in the sweep row
                    run_row = dict(run_row)
                    text, tokens = conn.execute("SELECT text, tokens FROM sweeps WHERE id = ?",
                                                [run_row["sweep_id"]]).fetchone()
                    run_row["text"] = text
                    run_row["tokens"] = run_row["tokens"] if run_row["tokens"] is not None else tokens
                variant_rows = conn.execute("SELECT * FROM run_variants WHERE run_id = ? ORDER BY position",
                                            [run_id]).fetchall()
                kld_rows = conn.execute("SELECT * FROM run_kld WHERE run_id = ?", [run_id]).fetchall()
            finally:
                conn.row_factory = None
        run = run_of(dict(run_row), [dict(r) for r in variant_rows], [dict(k) for k in kld_rows])
        try:
            run = migrate(run)
            return run, Run.from_json(run)
        except RunFormatError as e:
            raise RunFormatError(f"stored run {run_id!r} in {self.path}: {e}") from None

    def list(self, query: str | None = None, owner: str | None = None, limit: int = 50,
             offset: int = 0) -> list[dict]:
        """Summary rows, newest first.

        Each row: {"run_id", "created_at", "preview" (the text's first PREVIEW_CHARS characters, "…" when cut),
        "n_tokens", "scoring", "reference" (spec or None), "reference_ppl", "variants": [{"spec", "label",
        "ppl"}], "params": {"ctx", "top_k", "max_tokens", "temperature", "seed"}}. `query` searches the input texts (every word must occur; any text is taken literally, so
        quotes, AND/OR/NOT, * and column: filters are plain words); None or blank lists all. `owner` keeps
        only that owner's runs; None keeps everyone's.
        """
        for name, v in (("limit", limit), ("offset", offset)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise BadInput(f"{name} must be a whole number ≥ 0, got {short_repr(v)}")
        if query is not None and not isinstance(query, str):
            raise BadInput(f"query must be text, got {short_repr(query)}")
        if owner is not None and not isinstance(owner, str):
            raise BadInput(f"owner must be a string or None, got {short_repr(owner)}")
        if owner is not None:
            owner = owner.encode("utf-8", "replace").decode("utf-8")
        match = _fts_query(query or "")
        sql = ["SELECT r.id, r.created_at, substr(r.text, 1, ?) AS preview, length(r.text) AS chars, r.n_tokens,",
               "r.scoring, r.reference_spec, r.ctx, r.top_k, r.max_tokens, r.temperature, r.seed FROM runs r"]
        params: list = [PREVIEW_CHARS]
        if match:
            sql.append("JOIN runs_fts ON runs_fts.rowid = r.rowid AND runs_fts MATCH ?")
            params.append(match)
        sql.append("WHERE r.sweep_id IS NULL")  # a sweep's cell runs are listed by list_sweeps, not here
        if owner is not None:
            column, key = self._owner_match(owner)
            sql.append(f"AND r.{column} = ?")
            params.append(key)
        sql.append("ORDER BY r.created_at DESC, r.rowid DESC LIMIT ? OFFSET ?")
        params += [min(limit, MAX_LIST_LIMIT), offset]
        with self._read() as conn:
            runs = conn.execute(" ".join(sql), params).fetchall()
            ids = [r[0] for r in runs]
            entries: dict[str, list] = {i: [] for i in ids}
            if ids:
                marks = ",".join("?" * len(ids))
                for run_id, role, spec, label, ppl in conn.execute(
                        f"SELECT run_id, role, spec, label, ppl FROM run_variants WHERE run_id IN ({marks}) "
                        f"ORDER BY run_id, position", ids):
                    entries[run_id].append((role, {"spec": spec, "label": label, "ppl": ppl}))
        out = []
        for run_id, created_at, preview, chars, n_tokens, scoring, reference, *settings in runs:
            ref = next((e for role, e in entries[run_id] if role == "reference"), None)
            out.append({"run_id": run_id, "created_at": created_at,
                        "preview": preview + ("…" if chars > PREVIEW_CHARS else ""), "n_tokens": n_tokens,
                        "scoring": scoring, "reference": reference, "reference_ppl": ref["ppl"] if ref else None,
                        "variants": [e for role, e in entries[run_id] if role == "variant"],
                        "params": dict(zip(("ctx", "top_k", "max_tokens", "temperature", "seed"), settings))})
        return out

    def delete(self, run_id: str, owner: str | None = None) -> None:
        """Delete a run and its rows. With `owner`, only that owner's run: another's raises RunNotFound too."""
        if not isinstance(run_id, str) or not _ID_RE.fullmatch(run_id):
            raise _not_found(run_id)
        with self._write() as db:
            row = db.conn.execute("SELECT owner, owner_hmac FROM runs WHERE id = ?", [run_id]).fetchone()
            if row is None or (owner is not None and (row[1] if self._owner_secret else row[0])
                               != self._owner_match(owner)[1]):
                raise _not_found(run_id)
            for table in ("run_kld", "run_variants"):
                db.conn.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
            db.conn.execute("DELETE FROM runs WHERE id = ?", [run_id])

    def count(self) -> int:
        """How many runs are stored."""
        return self._db().conn.execute("SELECT count(*) FROM runs").fetchone()[0]

    # ================================================================================ sweeps (issue 12)
    # A sweep is a planned steps × quants grid (table sweeps, text stored once) and its cells (sweep_cells).
    # A done cell's run is an ordinary run (runs / run_variants / run_kld) with runs.sweep_id set, runs.text ''
    # and runs.tokens NULL: get() fills both from the sweep. The shapes are documented in docs/sweeps.md.

    def create_sweep(self, plan: dict, cells: list[tuple[int, str, bool]]) -> str:
        """Store a planned sweep and its cells (all pending) in one transaction; return its new id.

        `plan`: {"name", "repo", "steps", "quants", "hub_repo", "hub_quants", "reference", "ctx", "max_chunks",
        "text", "text_sha256", "n_tokens", "params"}; `cells`: (step, quant, hub) in grid order.
        """
        row = _sweep_row(plan)
        created_at = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        sweep_id = "-"
        while sweep_id.startswith("-"):  # an id is a command-line argument: never one that reads as an option
            sweep_id = new_id(9)
        with self._write() as db:
            db["sweeps"].insert({**row, "id": sweep_id, "created_at": created_at, "n_cells": len(cells),
                                 "tokens": None})
            db["sweep_cells"].insert_all([_pending_cell(sweep_id, i, c) for i, c in enumerate(cells)])
        return sweep_id

    def sweep_plan(self, sweep_id: str) -> dict:
        """The sweep's plan: the sweeps row as a dict (JSON columns decoded) plus "cells": [(step, quant, hub)]
        in grid order. SweepNotFound otherwise."""
        plan, cells = self._sweep_snapshot(sweep_id)
        plan["cells"] = [(c["step"], c["quant"], c["hub"]) for c in cells]
        return plan

    def _sweep_snapshot(self, sweep_id: str) -> tuple[dict, list[dict]]:
        """(the decoded sweeps row, its cell rows in grid order with hub as bool), read in one transaction."""
        with self._read() as conn:
            row = _fetch_dict(conn, "SELECT * FROM sweeps WHERE id = ?", [_check_sweep_id(sweep_id)])
            if row is None:
                raise _sweep_not_found(sweep_id)
            cur = conn.execute("SELECT * FROM sweep_cells WHERE sweep_id = ? ORDER BY position", [sweep_id])
            names = [d[0] for d in cur.description]
            cells = [dict(zip(names, r)) for r in cur.fetchall()]
        for c in cells:
            c["hub"] = bool(c["hub"])
        return _decode_sweep_row(row), cells

    def sweep_ids(self) -> list[str]:
        """Ids of the stored sweeps, oldest first."""
        return [r[0] for r in self._db().conn.execute("SELECT id FROM sweeps ORDER BY created_at, rowid")]

    def copy_sweep_plan(self, source: "RunStore", sweep_id: str) -> None:
        """Copy sweep `sweep_id`'s plan (the sweeps row and every cell as pending) from `source` into this
        store, keeping its id. Nothing happens when this store has that plan already; a different plan under
        the same id raises SweepMismatch."""
        with source._read() as conn:
            row = _fetch_dict(conn, "SELECT * FROM sweeps WHERE id = ?", [_check_sweep_id(sweep_id)])
            if row is None:
                raise _sweep_not_found(sweep_id)
            cells = [dict(zip(("step", "quant", "hub", "position"), c)) for c in conn.execute(
                "SELECT step, quant, hub, position FROM sweep_cells WHERE sweep_id = ?", [sweep_id])]
        with self._write() as db:
            self._insert_plan(db, row, cells)

    def import_sweep_plan(self, row: dict, cells: list[dict]) -> None:
        """Store a plan read by read_sweep_file (its cells as pending), keeping its id; nothing happens when this
        store has it already; another plan under that id raises SweepMismatch."""
        with self._write() as db:
            self._insert_plan(db, row, [{k: c[k] for k in ("step", "quant", "hub", "position")} for c in cells])

    def save_cell_run(self, sweep_id: str, step: int, quant: str, hub: bool, run: dict, summary: dict,
                      seconds: float) -> str:
        """Store a finished cell in one transaction: its run (text and tokens kept only in the sweep row) and
        the cell row (status 'done', the summary numbers). Returns the run's new id.

        `summary`: {"ppl", "ppl_err", "kld_mean", "kld_mean_err", "kld_p99", "ln_ratio", "ln_ratio_err",
        "bytes", "bpw"}. The run's input text must be the sweep's text.
        """
        Run.from_json(run)  # run.py's rules first (as save), then the run log's
        run_row, variant_rows, kld_rows = rows_of(run)
        created_at = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        run_id = new_id(12)
        with self._write() as db:
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
        with self._write() as db:
            db.conn.execute("UPDATE sweep_cells SET status = 'failed', error = ?, attempts = attempts + 1, "
                            "updated_at = ? WHERE sweep_id = ? AND step = ? AND quant = ? AND hub = ? "
                            "AND status != 'done'", [str(error), now, sweep_id, step, quant, int(hub)])

    def sweep_cells(self, sweep_id: str) -> list[dict]:
        """The sweep's cell rows in grid order (dicts keyed by sweep_cells' columns, hub as bool)."""
        return self._sweep_snapshot(sweep_id)[1]

    def get_sweep(self, sweep_id: str) -> dict:
        """The sweep JSON (docs/sweeps.md): the plan, every cell with its status and numbers, the counts."""
        plan, cells = self._sweep_snapshot(sweep_id)  # one snapshot: counts and cells agree while shards write
        out = {"schema": SWEEP_SCHEMA, "sweep_id": plan["id"], "name": plan["name"],
               "created_at": plan["created_at"], "repo": plan["repo"], "steps": plan["steps"],
               "quants": plan["quants"], "hub_repo": plan["hub_repo"], "hub_quants": plan["hub_quants"],
               "reference": plan["reference"], "ctx": plan["ctx"], "max_chunks": plan["max_chunks"],
               "text_sha256": plan["text_sha256"], "n_tokens": plan["n_tokens"], "params": plan["params"],
               "cells": [], "done": 0, "failed": 0, "pending": 0, "total": len(cells)}
        for c in cells:
            out[c["status"]] += 1
            out["cells"].append({"step": c["step"], "quant": c["quant"], "hub": c["hub"], "status": c["status"],
                                 "run_id": c["run_id"], "error": c["error"], "attempts": c["attempts"],
                                 "seconds": c["seconds"], **{k: c[k] for k in _CELL_NUMBERS}})
        return out

    def list_sweeps(self, limit: int = 50, offset: int = 0) -> list[dict]:
        """Summary rows, newest first: {"sweep_id", "name", "created_at", "repo", "n_steps", "n_quants",
        "ctx", "max_chunks", "reference", "preview", "total", "done", "failed", "pending"}."""
        for name, v in (("limit", limit), ("offset", offset)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise BadInput(f"{name} must be a whole number ≥ 0, got {short_repr(v)}")
        with self._read() as conn:
            rows = conn.execute(
                "SELECT s.id, s.name, s.created_at, s.repo, s.steps, s.quants, s.ctx, s.max_chunks, s.reference, "
                "substr(s.text, 1, ?), length(s.text), "
                "(SELECT count(*) FROM sweep_cells c WHERE c.sweep_id = s.id), "
                "(SELECT count(*) FROM sweep_cells c WHERE c.sweep_id = s.id AND c.status = 'done'), "
                "(SELECT count(*) FROM sweep_cells c WHERE c.sweep_id = s.id AND c.status = 'failed') "
                "FROM sweeps s ORDER BY s.created_at DESC, s.rowid DESC LIMIT ? OFFSET ?",
                [PREVIEW_CHARS, min(limit, MAX_LIST_LIMIT), offset]).fetchall()
        out = []
        for (sid, name, created, repo, steps, quants, ctx, max_chunks, ref, preview, chars, total, done,
             failed) in rows:
            out.append({"sweep_id": sid, "name": name, "created_at": created, "repo": repo,
                        "n_steps": len(json.loads(steps)), "n_quants": len(json.loads(quants)), "ctx": ctx,
                        "max_chunks": max_chunks, "reference": ref,
                        "preview": preview + ("…" if chars > PREVIEW_CHARS else ""), "total": total,
                        "done": done, "failed": failed, "pending": total - done - failed})
        return out

    def sweep_status(self, sweep_id: str) -> dict:
        """{"sweep", "name", "done", "total", "failed", "pending", "failed_cells": [{"step", "quant", "hub",
        "error", "attempts"}], "cell_seconds": mean seconds of a done cell or None}."""
        s = self.get_sweep(sweep_id)
        secs = [c["seconds"] for c in s["cells"] if c["status"] == "done" and c["seconds"] is not None]
        return {"sweep": s["sweep_id"], "name": s["name"], "done": s["done"], "total": s["total"],
                "failed": s["failed"], "pending": s["pending"],
                "failed_cells": [{k: c[k] for k in ("step", "quant", "hub", "error", "attempts")}
                                 for c in s["cells"] if c["status"] == "failed"],
                "cell_seconds": sum(secs) / len(secs) if secs else None}

    def merge_sweep_from(self, source: "RunStore", sweep_id: str) -> dict:
        """Merge sweep `sweep_id` from another store (a shard DB) into this one, in one transaction, keeping
        run ids. The plan is copied if absent (a different plan under that id raises SweepMismatch). A cell
        done here stays as it is; a cell done there and not here brings its run along; a failure there is
        recorded only over a pending cell. Idempotent. Returns {"added": n done cells added, "failed": n
        failures recorded, "skipped": n cells already done here}."""
        with source._read() as conn:
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
        with self._write() as db:
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


# ------------------------------------------------------------------------------------------ sweeps (issue 12)

SWEEP_SCHEMA = 1  # the sweep JSON's schema version (docs/sweeps.md)
_CELL_NUMBERS = ("ppl", "ppl_err", "kld_mean", "kld_mean_err", "kld_p99", "ln_ratio", "ln_ratio_err", "bytes", "bpw")
_CELL_MERGED = ("status", "run_id", "error", "attempts", "seconds", "updated_at", *_CELL_NUMBERS, "extra")
# What makes two plans one sweep: a shard DB's plan must match the target's in all of these.
_PLAN_IDENTITY = ("repo", "steps", "quants", "hub_repo", "hub_quants", "reference", "ctx", "max_chunks",
                  "text_sha256", "text", "params", "n_cells")
_SWEEP_JSON = ("steps", "quants", "hub_quants", "params")


class SweepNotFound(RunNotFound):
    """No stored sweep has the given id."""


class SweepMismatch(BadInput):
    """Two databases hold different sweeps under one id, or shards of different sweeps are merged."""


def _check_sweep_id(sweep_id: Any) -> str:
    if not isinstance(sweep_id, str) or not _ID_RE.fullmatch(sweep_id):
        raise _sweep_not_found(sweep_id)
    return sweep_id


def _sweep_not_found(sweep_id: Any) -> SweepNotFound:
    return SweepNotFound(f"no stored sweep has the id {_describe_id(sweep_id)}; "
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
    for k in _SWEEP_JSON:
        row[k] = json.dumps(row[k])
    row["name"] = text_or_none(row["name"], "name")
    row["text"] = text_or_none(row["text"], "text")
    return row


def _decode_sweep_row(row: dict) -> dict:
    out = dict(row)
    for k in _SWEEP_JSON:
        out[k] = json.loads(out[k]) if out[k] is not None else None
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
    them). For RunStore.import_sweep_plan. SweepNotFound / RunLogError otherwise."""
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


def _ensure_wal(conn: sqlite3.Connection) -> None:
    """Switch the file to WAL (persistent); retries while another connection briefly holds it locked."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() == "wal":
                return
            if str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower() == "wal":
                return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) and "busy" not in str(e) or time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise sqlite3.OperationalError("could not switch the database to WAL mode: it stayed locked")
        time.sleep(0.01)
