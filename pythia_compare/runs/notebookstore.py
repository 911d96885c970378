"""The notebook log: `NotebookStore` keeps notebooks (docs/notebook.md) as append-only revisions in the run log's file.

Owns the tables notebooks, notebook_revisions, notebook_revision_cells and notebook_cells (migration m020):
saving a notebook as a new revision (its cells' bodies stored once each, by sha256), the limits of a revision
(params.NOTEBOOK: 2 MB, 200 revisions), refusing a save based on an older revision (NotebookConflict, which
offers a copy under a new id), owners as the run log keeps them (a token, or its HMAC when the log has a
secret), opening the latest or an exact revision, listing, deleting every revision, and importing a revision
under its own id and number (backups). Composition, not a second database: it works over one RunStore
(`NotebookStore(run_store)`) through that store's connections and transactions. Never runs a cell (notebookrun.py),
never renders or exports (web/notebooks.py).
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..errors import BadInput, RunNotFound
from ..params import NOTEBOOK
from .notebook import Notebook, NotebookFormatError
from .store import ID_RE, describe_id, new_id

if TYPE_CHECKING:
    from ..config import Settings
    from .store import RunStore

__all__ = ["NotebookStore", "NotebookNotFound", "NotebookConflict", "NotebookNotYours", "parse_ref"]

_REF_RE = re.compile(r"([A-Za-z0-9_-]{1,64})(?:@(\d{1,9}))?")
_OWNER_KEY_RE = re.compile(r"[0-9a-f]{64}")


class NotebookNotFound(RunNotFound):
    """No stored notebook (or no such revision of it) has the given id."""


class NotebookConflict(BadInput):
    """A save based on a revision older than the notebook's latest: nothing was saved."""

    def __init__(self, message: str, notebook_id: str, base: int | None, latest: int):
        super().__init__(message)
        self.notebook_id, self.base, self.latest = notebook_id, base, latest


class NotebookNotYours(BadInput):
    """A change or delete of a notebook another browser owns (public deployments)."""


def _not_found(ref: Any) -> NotebookNotFound:
    return NotebookNotFound(f"no stored notebook has the id {describe_id(ref)}; `python -m pythia_compare notebook "
                            f"list` shows the stored notebooks (a link is ?notebook=ID, or ?notebook=ID@REVISION)")


def parse_ref(ref: Any) -> tuple[str, int | None]:
    """"ID" or "ID@REV" -> (id, revision or None); NotebookNotFound naming it for anything else."""
    if not isinstance(ref, str):
        raise _not_found(ref)
    m = _REF_RE.fullmatch(ref.strip())
    if not m:
        raise _not_found(ref)
    return m.group(1), (int(m.group(2)) if m.group(2) is not None else None)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def cell_body(cell_json: dict) -> tuple[str, str]:
    """(sha256 hex, body): how a cell is stored once, whatever revisions hold it."""
    body = json.dumps(cell_json, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode("utf-8")).hexdigest(), body


class NotebookStore:
    """Notebooks in the run log's SQLite file, over a RunStore's connections (NotebookStore(run_store)).

    Owners: `owner` is a browser's token. With it given, a change or delete of a notebook someone else owns is
    refused (NotebookNotYours); None changes any notebook (the CLI, a local app). A new notebook records its
    saver's token as the run log keeps owners (its HMAC when the log has an owner secret)."""

    def __init__(self, store: "RunStore", settings: "Settings | None" = None):
        self.store = store
        self.settings = settings
        self._keyed = store.owner_key("probe") is not None  # the log keeps owners as HMACs
        if self._keyed:
            self._hash_raw_owners()

    # ------------------------------------------------------------------------ owners
    def _owner_columns(self, owner: str | None) -> dict:
        if self._keyed:
            return {"owner": None, "owner_hmac": self.store.owner_key(owner)}
        return {"owner": owner, "owner_hmac": None}

    def _owned_by(self, row: tuple, owner: str) -> bool:
        """Whether (owner, owner_hmac) of a notebooks row are this token's."""
        return (row[1] == self.store.owner_key(owner)) if self._keyed else (row[0] == owner)

    def _hash_raw_owners(self) -> None:
        conn = self.store.db().conn
        if conn.execute("SELECT 1 FROM notebooks WHERE owner IS NOT NULL LIMIT 1").fetchone() is None:
            return
        with self.store.write() as db:
            rows = db.conn.execute("SELECT id, owner FROM notebooks WHERE owner IS NOT NULL").fetchall()
            db.conn.executemany("UPDATE notebooks SET owner_hmac = ?, owner = NULL WHERE id = ?",
                                [(self.store.owner_key(o), i) for i, o in rows])

    # ------------------------------------------------------------------------ saving
    def save(self, nb: Notebook, owner: str | None = None, *, as_copy: bool = False) -> Notebook:
        """Store `nb` as a new revision and return it as stored (id, revision, created_at set).

        A notebook without an id (or `as_copy`) becomes a new notebook, owned by `owner`, at revision 1. One with
        an id must be at that notebook's latest revision (`nb.revision`), else NotebookConflict and nothing is
        written; with `owner`, it must be that owner's (NotebookNotYours). Limits: params.NOTEBOOK (2 MB a
        revision, 200 revisions, then a copy is offered). The notebook is validated first (NotebookFormatError)."""
        nb = Notebook.from_json(nb.to_json() if isinstance(nb, Notebook) else nb, self.settings)
        if as_copy:
            nb = nb.as_new()
        created = _now()
        for _attempt in range(5):
            new = nb.notebook_id is None
            nb_id = new_id(9) if new else nb.notebook_id
            try:
                return self._write_revision(nb, nb_id, new, created, owner)
            except sqlite3.IntegrityError as e:
                if not new or "notebooks.id" not in str(e):
                    raise
        raise BadInput("could not draw an unused notebook id in 5 attempts")  # pragma: no cover

    def _write_revision(self, nb: Notebook, nb_id: str, new: bool, created: str, owner: str | None) -> Notebook:
        with self.store.write() as db:
            conn = db.conn
            if new:
                revision, base = 1, None
            else:
                row = conn.execute("SELECT owner, owner_hmac, latest FROM notebooks WHERE id = ?", [nb_id]).fetchone()
                if row is None:
                    raise _not_found(nb_id)
                if owner is not None and not self._owned_by(row, owner):
                    raise NotebookNotYours(f"notebook {nb_id!r} belongs to another browser: you can open it and "
                                           f"Make a copy, but only its owner can change or delete it")
                latest = row[2]
                if nb.revision != latest:
                    raise NotebookConflict(
                        f"notebook {nb_id!r} changed since it was opened (you opened revision {nb.revision}, it is "
                        f"at revision {latest} now), so nothing was saved; keep your version as a copy under a new "
                        f"id (Save as a copy), or open the latest revision", nb_id, nb.revision, latest)
                count = conn.execute("SELECT count(*) FROM notebook_revisions WHERE notebook_id = ?",
                                     [nb_id]).fetchone()[0]
                if count >= NOTEBOOK.max_revisions:
                    raise NotebookFormatError(
                        f"notebook {nb_id!r} has {count} revisions, the most one notebook keeps; nothing was saved. "
                        f"Keep your version as a copy under a new id (Save as a copy): the copy starts at revision 1")
                revision, base = latest + 1, latest
            stored = Notebook.from_json({**nb.to_json(), "notebook_id": nb_id, "revision": revision,
                                         "created_at": created}, self.settings)
            self._insert(conn, db, stored, base, owner_cols=self._owner_columns(owner) if new else None)
        return stored

    def _insert(self, conn: sqlite3.Connection, db, nb: Notebook, base: int | None, owner_cols: dict | None) -> None:
        """Write one revision (inside a write transaction); owner_cols: create the notebooks row with them."""
        data = nb.to_json()
        size = len(json.dumps(data, ensure_ascii=False).encode("utf-8"))
        if size > NOTEBOOK.max_revision_bytes:
            raise NotebookFormatError(f"this notebook is {size:,} bytes as saved; a revision holds at most "
                                      f"{NOTEBOOK.max_revision_bytes:,} bytes (move long texts to notebooks of "
                                      f"their own); nothing was saved")
        if owner_cols is not None:
            db["notebooks"].insert({"id": nb.notebook_id, "created_at": nb.created_at, "updated_at": nb.created_at,
                                    "latest": nb.revision, "title": nb.title, **owner_cols})
        else:
            conn.execute("UPDATE notebooks SET latest = max(latest, ?), updated_at = CASE WHEN ? >= latest THEN ? "
                         "ELSE updated_at END, title = CASE WHEN ? >= latest THEN ? ELSE title END WHERE id = ?",
                         [nb.revision, nb.revision, nb.created_at, nb.revision, nb.title, nb.notebook_id])
        db["notebook_revisions"].insert({
            "notebook_id": nb.notebook_id, "revision": nb.revision, "created_at": nb.created_at, "base": base,
            "title": nb.title, "variants": json.dumps(data["variants"], ensure_ascii=False),
            "settings": json.dumps(data["settings"]), "schema": nb.schema, "bytes": size})
        bodies = [cell_body(c) for c in data["cells"]]
        conn.executemany("INSERT OR IGNORE INTO notebook_cells (hash, body) VALUES (?, ?)", bodies)
        conn.executemany("INSERT INTO notebook_revision_cells (notebook_id, revision, position, hash) "
                         "VALUES (?, ?, ?, ?)",
                         [(nb.notebook_id, nb.revision, i, h) for i, (h, _) in enumerate(bodies)])

    def import_revision(self, data: dict, owner: str | None = None) -> bool:
        """Store a revision under its own notebook_id, revision and created_at (a backup's); True when added, False
        when that revision is already here. `owner`: an owner key (64 hex digits, RunStore.owner_key) or None.
        A malformed revision raises NotebookFormatError before anything is written."""
        nb = Notebook.from_json(data, self.settings)
        if nb.notebook_id is None or nb.revision is None or not nb.created_at:
            raise NotebookFormatError("notebook JSON: a backup revision needs notebook_id, revision and created_at")
        if owner is not None and not (isinstance(owner, str) and _OWNER_KEY_RE.fullmatch(owner)):
            raise NotebookFormatError(f"owner must be an owner key (64 hex digits) or None, got {owner!r:.80}")
        with self.store.write() as db:
            conn = db.conn
            if conn.execute("SELECT 1 FROM notebook_revisions WHERE notebook_id = ? AND revision = ?",
                            [nb.notebook_id, nb.revision]).fetchone():
                return False
            exists = conn.execute("SELECT 1 FROM notebooks WHERE id = ?", [nb.notebook_id]).fetchone()
            cols = None if exists else {"owner": None, "owner_hmac": owner}
            self._insert(conn, db, nb, nb.revision - 1 if nb.revision > 1 else None, cols)
        return True

    # ------------------------------------------------------------------------ reading
    def get(self, ref: Any, revision: int | None = None) -> Notebook:
        """The notebook of "ID" (its latest revision) or "ID@REV" (that revision exactly); NotebookNotFound names
        what does not exist."""
        nb_id, rev = parse_ref(ref)
        rev = revision if revision is not None else rev
        with self.store.read() as conn:
            row = conn.execute("SELECT latest FROM notebooks WHERE id = ?", [nb_id]).fetchone()
            if row is None:
                raise _not_found(ref)
            want = row[0] if rev is None else rev
            r = conn.execute("SELECT created_at, title, variants, settings, schema FROM notebook_revisions "
                             "WHERE notebook_id = ? AND revision = ?", [nb_id, want]).fetchone()
            if r is None:
                revs = [x[0] for x in conn.execute("SELECT revision FROM notebook_revisions WHERE notebook_id = ? "
                                                   "ORDER BY revision", [nb_id])]
                shown = f"{revs[0]} … {revs[-1]}" if revs else "none"
                raise NotebookNotFound(f"notebook {nb_id!r} has no revision {want}; its revisions are {shown} "
                                       f"(open ?notebook={nb_id} for the latest)")
            cells = [json.loads(b) for (b,) in conn.execute(
                "SELECT c.body FROM notebook_revision_cells rc JOIN notebook_cells c ON c.hash = rc.hash "
                "WHERE rc.notebook_id = ? AND rc.revision = ? ORDER BY rc.position", [nb_id, want])]
        created, title, variants, settings, schema = r
        return Notebook.from_json({"schema": schema, "notebook_id": nb_id, "revision": want, "created_at": created,
                                   "title": title, "variants": json.loads(variants),
                                   "settings": json.loads(settings), "cells": cells}, self.settings)

    def latest(self, nb_id: str) -> int:
        return self.get(nb_id).revision or 0

    def owner_of(self, nb_id: str) -> str | None:
        """How the log keeps this notebook's owner (token or HMAC), for a backup line; NotebookNotFound."""
        row = self.store.db().conn.execute("SELECT owner, owner_hmac FROM notebooks WHERE id = ?", [nb_id]).fetchone()
        if row is None:
            raise _not_found(nb_id)
        return row[1] if self._keyed else row[0]

    def is_owner(self, nb_id: str, owner: str | None) -> bool:
        row = self.store.db().conn.execute("SELECT owner, owner_hmac FROM notebooks WHERE id = ?", [nb_id]).fetchone()
        return row is not None and owner is not None and self._owned_by(row, owner)

    def revisions(self, ref: Any) -> list[dict]:
        """[{"revision", "created_at", "title", "cells"}] of a notebook, oldest first."""
        nb_id, _ = parse_ref(ref)
        with self.store.read() as conn:
            rows = conn.execute("SELECT r.revision, r.created_at, r.title, (SELECT count(*) FROM "
                                "notebook_revision_cells c WHERE c.notebook_id = r.notebook_id AND c.revision = "
                                "r.revision) FROM notebook_revisions r WHERE r.notebook_id = ? ORDER BY r.revision",
                                [nb_id]).fetchall()
        if not rows:
            raise _not_found(ref)
        return [{"revision": a, "created_at": b, "title": t, "cells": n} for a, b, t, n in rows]

    def list(self, owner: str | None = None, limit: int = 100) -> list[dict]:
        """[{"notebook_id", "title", "updated_at", "revision", "cells"}], the latest first; `owner` keeps only
        that browser's."""
        sql = ("SELECT n.id, n.title, n.updated_at, n.latest, (SELECT count(*) FROM notebook_revision_cells c "
               "WHERE c.notebook_id = n.id AND c.revision = n.latest) FROM notebooks n")
        params: list = []
        if owner is not None:
            sql += " WHERE " + ("n.owner_hmac = ?" if self._keyed else "n.owner = ?")
            params.append(self.store.owner_key(owner) if self._keyed else owner)
        sql += " ORDER BY n.updated_at DESC LIMIT ?"
        params.append(max(0, min(int(limit), 1000)))
        with self.store.read() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [{"notebook_id": i, "title": t, "updated_at": u, "revision": r, "cells": n} for i, t, u, r, n in rows]

    def ids(self) -> list[str]:
        return [r[0] for r in self.store.db().conn.execute("SELECT id FROM notebooks ORDER BY created_at")]

    def count(self) -> int:
        return self.store.db().conn.execute("SELECT count(*) FROM notebooks").fetchone()[0]

    # ------------------------------------------------------------------------ deleting
    def delete(self, ref: Any, owner: str | None = None) -> None:
        """Delete a notebook and every revision of it (the cells' bodies no other revision holds go too). With
        `owner`, only that owner's (NotebookNotYours otherwise); NotebookNotFound when there is none. The runs its
        cells computed stay in the run log."""
        nb_id, _ = parse_ref(ref)
        with self.store.write() as db:
            conn = db.conn
            row = conn.execute("SELECT owner, owner_hmac FROM notebooks WHERE id = ?", [nb_id]).fetchone()
            if row is None:
                raise _not_found(ref)
            if owner is not None and not self._owned_by(row, owner):
                raise NotebookNotYours(f"notebook {nb_id!r} belongs to another browser: only its owner can delete it")
            hashes = [h for (h,) in conn.execute("SELECT DISTINCT hash FROM notebook_revision_cells WHERE "
                                                 "notebook_id = ?", [nb_id])]
            conn.execute("DELETE FROM notebook_revision_cells WHERE notebook_id = ?", [nb_id])
            conn.execute("DELETE FROM notebook_revisions WHERE notebook_id = ?", [nb_id])
            conn.execute("DELETE FROM notebooks WHERE id = ?", [nb_id])
            conn.executemany("DELETE FROM notebook_cells WHERE hash = ? AND NOT EXISTS (SELECT 1 FROM "
                             "notebook_revision_cells WHERE hash = ?)", [(h, h) for h in hashes])


def check_id(ref: Any) -> str:
    """A notebook id as given (no revision), else NotebookNotFound."""
    if not isinstance(ref, str) or not ID_RE.fullmatch(ref):
        raise _not_found(ref)
    return ref
