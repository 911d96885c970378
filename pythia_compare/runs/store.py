"""The run log: `RunStore` saves runs (docs/run.md) to SQLite and gives them back exactly.

Owns the database file: connections (one per thread), WAL mode, write transactions, applying migrations.py,
ids and timestamps, full-text search over input texts, listing, owner-scoped deletes, owner tokens kept as
HMACs, importing runs under their own ids (backups, merges). The mapping of a run
dict onto rows lives in runrows.py, the schema in migrations.py. The sweep log (tables sweeps and sweep_cells)
is the sweeps wing's (sweeps/store.py: `SweepStore(store)` opens it over this store's connections and
transactions; this module never imports it); here only get() reads a sweep row, to give a cell's run its text. Never runs a model, computes a metric or
draws a figure.

Round trip: `get(save(run))` equals `run` plus "run_id" and "created_at" (any given values of those two are
replaced), floats bit for bit.
"""

from __future__ import annotations

import hashlib
import hmac
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

from ..errors import BadInput, RunNotFound
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

__all__ = ["RunStore", "RunFormatError", "RunLogError"]

BUSY_TIMEOUT_S = 30.0  # how long a connection waits for another writer's lock before failing
MAX_LIST_LIMIT = 1000  # the most summary rows one list() call returns
PREVIEW_CHARS = 80  # characters of the input text in a summary row
MAX_SEARCH_WORDS = 16  # words of a search that count (the rest are left out)
ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")  # the alphabet of secrets.token_urlsafe; anything else is not an id


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


def describe_id(run_id: Any) -> str:
    """How a message names an id it was given (a run's or a sweep's): its repr, cut after 40 characters."""
    if not isinstance(run_id, str):
        return f"{type(run_id).__name__} {short_repr(run_id)}"
    if len(run_id) > 40:
        return f"{run_id[:40]!r}… ({len(run_id)} characters)"
    return repr(run_id)


def _not_found(run_id: Any) -> RunNotFound:
    return RunNotFound(f"no stored run has the id {describe_id(run_id)}; "
                       f"`python -m pythia_compare runs list` shows the stored runs")


def _search_words(query: str) -> list[str]:
    """User text -> the words a search must find (whitespace-separated; lone surrogates become "?")."""
    clean = query.encode("utf-8", "replace").decode("utf-8")
    return clean.replace("\x00", " ").split()[:MAX_SEARCH_WORDS]


def _fts_prefix(word: str) -> str:
    """One word as an FTS5 prefix phrase ("fibo" finds "fibonacci"); quoted, so operators are plain text."""
    return '"' + word.replace('"', '""') + '"*'


def _like(word: str) -> str:
    """One word as a LIKE pattern that finds it anywhere (ESCAPE '\\'; case-insensitive for ASCII)."""
    return "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


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
            db = self.db()
            if migrations.pending(db):
                with self.write() as db:
                    migrations.apply(db)
            if self._owner_secret is not None:
                self._hash_raw_owners()
        except OSError as e:
            raise RunLogError(f"cannot create the run log at {self.path}: {e.strerror or e}") from None
        except sqlite3.DatabaseError as e:
            raise RunLogError(f"cannot open the run log {self.path}: {e}; give --db a new file name or an "
                              f"existing pythia-compare database") from None

    # -------------------------------------------------------------------------------- connections

    def db(self) -> sqlite_utils.Database:
        """This thread's connection to the file (opened once per thread; the sweep log works through it too)."""
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
    def write(self) -> Iterator[sqlite_utils.Database]:
        """One write transaction: BEGIN IMMEDIATE … COMMIT, rolled back on any exception."""
        db = self.db()
        db.conn.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.conn.execute("COMMIT")
        except BaseException:
            if db.conn.in_transaction:
                db.conn.execute("ROLLBACK")
            raise

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction, so the queries inside see one snapshot."""
        conn = self.db().conn
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
                with self.write() as db:
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
        if not isinstance(run_id, str) or not ID_RE.fullmatch(run_id):
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
            with self.write() as db:
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
        conn = self.db().conn
        if conn.execute("SELECT 1 FROM runs WHERE owner IS NOT NULL LIMIT 1").fetchone() is None:
            return
        conn.execute("PRAGMA secure_delete = ON")
        try:
            with self.write() as db:
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
        if not isinstance(run_id, str) or not ID_RE.fullmatch(run_id):
            raise _not_found(run_id)
        with self.read() as conn:
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
        "ppl"}], "params": {"ctx", "top_k", "max_tokens", "temperature", "seed"}}. `query` searches the input texts,
        the variants' specs and labels: every word must be the start of a word of the text ("fibo" finds
        "fibonacci") or occur in a spec or label ("Q2_K", "step0"); any text is taken literally, so quotes,
        AND/OR/NOT, * and column: filters are plain words; None or blank lists all. `owner` keeps
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
        sql = ["SELECT r.id, r.created_at, substr(r.text, 1, ?) AS preview, length(r.text) AS chars, r.n_tokens,",
               "r.scoring, r.reference_spec, r.ctx, r.top_k, r.max_tokens, r.temperature, r.seed FROM runs r"]
        params: list = [PREVIEW_CHARS]
        sql.append("WHERE r.sweep_id IS NULL")  # a sweep's cell runs are listed by sweeps.list, not here
        for word in _search_words(query or ""):  # each word: a prefix of the text's words, or in a spec or label
            sql.append("AND (r.rowid IN (SELECT rowid FROM runs_fts WHERE runs_fts MATCH ?) OR r.id IN (SELECT "
                       "run_id FROM run_variants WHERE spec LIKE ? ESCAPE '\\' OR label LIKE ? ESCAPE '\\'))")
            params += [_fts_prefix(word), _like(word), _like(word)]
        if owner is not None:
            column, key = self._owner_match(owner)
            sql.append(f"AND r.{column} = ?")
            params.append(key)
        sql.append("ORDER BY r.created_at DESC, r.rowid DESC LIMIT ? OFFSET ?")
        params += [min(limit, MAX_LIST_LIMIT), offset]
        with self.read() as conn:
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
        if not isinstance(run_id, str) or not ID_RE.fullmatch(run_id):
            raise _not_found(run_id)
        with self.write() as db:
            row = db.conn.execute("SELECT owner, owner_hmac FROM runs WHERE id = ?", [run_id]).fetchone()
            if row is None or (owner is not None and (row[1] if self._owner_secret else row[0])
                               != self._owner_match(owner)[1]):
                raise _not_found(run_id)
            for table in ("run_kld", "run_variants"):
                db.conn.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
            db.conn.execute("DELETE FROM runs WHERE id = ?", [run_id])

    def has(self, run_id: str) -> bool:
        """Whether a run of this id is stored (one indexed lookup: a cached download checks it is still there)."""
        if not isinstance(run_id, str) or not ID_RE.fullmatch(run_id):
            return False
        with self.read() as conn:
            return conn.execute("SELECT 1 FROM runs WHERE id = ?", [run_id]).fetchone() is not None

    def count(self) -> int:
        """How many runs are stored."""
        return self.db().conn.execute("SELECT count(*) FROM runs").fetchone()[0]


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
