"""Backup of the run log to a Hub dataset, and restore from it: what goes there, and how a restore merges it.

A Space's disk is wiped at every restart, and the run log with it. With a backup repo configured, every saved
run and every deletion is appended as one JSON line to a local file the moment it happens (before the run's
id reaches the page), huggingface_hub's CommitScheduler pushes the new lines to the dataset every
`backup_minutes` and at shutdown, and the next start pulls the dataset and imports every run the local log
lacks. What a crash can lose: the runs of at most one interval.

Owns when the backup is on (PYTHIA_COMPARE_BACKUP_REPO, HF_TOKEN and PYTHIA_COMPARE_OWNER_SECRET all set,
not offline), the line format, the per-instance files, the restore merge and the sentence the page shows
about it. The network calls are hub.py's (BackupDataset), the SQL store.py's (RunStore.import_run). `start`
never raises: a backup that cannot work is off, and the log and the page say why.

Dataset layout (one folder per process lifetime, so instances and restarts never write the same file):

    runs/<instance>/instance.json           written at start; its push checks the token's write access
    runs/<instance>/<YYYY-MM-DDTHH>Z.jsonl  append-only, one file per UTC hour with runs in it

<instance> is the UTC start time plus a random suffix. Lines (JSON, ASCII):

    {"backup": 1, "owner": <HMAC hex or null>, "run": {run JSON: "schema", "run_id", "created_at", ...}}
    {"backup": 1, "deleted": "<run_id>", "at": "<UTC time>"}        a tombstone: restore leaves that run out
    {"backup": 1, "owner": <HMAC hex or null>, "notebook": {notebook JSON of one revision: "notebook_id",
     "revision", "created_at", ...}}                                 a notebook revision (docs/notebook.md)
    {"backup": 1, "deleted_notebook": "<notebook_id>", "at": ...}   a notebook deleted with every revision

Privacy: a line holds no token (owners are HMAC-SHA256(PYTHIA_COMPARE_OWNER_SECRET, browser token), the
form the run log keeps them in, so a restored History still matches its browser) and no server path (a
local model file's `source.file` is cut to its name). The SQLite file itself is never uploaded.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import re
import secrets
import signal
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PureWindowsPath

from ..config import Settings, __version__
from ..errors import PythiaCompareError, RunNotFound
from .report import plain_markdown
from .run import Run
from .notebook import NotebookFormatError
from .notebookstore import NotebookStore
from .store import RunFormatError, RunStore

log = logging.getLogger("pythia_compare.backup")

LINE_VERSION = 1  # the "backup" key of every line
RUNS_DIR = "runs"  # the dataset folder holding one folder per instance
_REPO_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_OWNER_RE = re.compile(r"[0-9a-f]{64}")
MAX_SKIPPED_SHOWN = 3  # skipped lines or files named on the page (the log names all)
# A dataset file a restore reads: runs/<folder>/…/<name>.jsonl, every part a plain name (never "." or "..", no
# slash, backslash, control character or space). Other names under runs/ ending in .jsonl are skipped and named.
_PART = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}"
_FILE_RE = re.compile(rf"{RUNS_DIR}/(?:{_PART}/)*{_PART}\.jsonl")


def local_root(settings: Settings) -> Path:
    """Where this machine keeps the backup's files before they are pushed: beside the run log."""
    return Path(settings.db_path).expanduser().parent / "backup"


def new_instance_id(now: datetime | None = None) -> str:
    """A name no other process lifetime will pick: UTC start time + 8 random hex digits."""
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def window_name(now: datetime | None = None) -> str:
    """The file a line written now goes to: one per UTC hour."""
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y-%m-%dT%H}Z.jsonl"


def backup_copy(run: dict) -> dict:
    """The run as the backup keeps it: a copy with every `source.file` cut to the file's name (no server path)."""
    out = dict(run)
    for key in ("reference", "variants"):
        entries = out.get(key)
        if isinstance(entries, dict):
            out[key] = _entry_copy(entries)
        elif isinstance(entries, list):
            out[key] = [_entry_copy(e) if isinstance(e, dict) else e for e in entries]
    return out


def _entry_copy(entry: dict) -> dict:
    source = entry.get("source")
    if not isinstance(source, dict) or not isinstance(source.get("file"), str):
        return entry
    name = source["file"]
    if "/" in name or "\\" in name:
        name = PureWindowsPath(name).name  # handles / and \ alike
    return {**entry, "source": {**source, "file": name}}


def run_line(run: dict, owner_key: str | None) -> str:
    """One line (no newline) recording a saved run."""
    return json.dumps({"backup": LINE_VERSION, "owner": owner_key, "run": backup_copy(run)}, ensure_ascii=True)


def tombstone_line(run_id: str, now: datetime | None = None) -> str:
    """One line (no newline) recording a deletion."""
    at = (now or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    return json.dumps({"backup": LINE_VERSION, "deleted": run_id, "at": at}, ensure_ascii=True)


@dataclass
class Parsed:
    """What the dataset's files say: runs by id (with their owner key), deleted ids, and what was skipped."""
    runs: dict[str, tuple[dict, str | None, str]] = field(default_factory=dict)  # id -> (run, owner, where)
    deleted: set[str] = field(default_factory=set)
    skipped: list[str] = field(default_factory=list)  # "runs/…/x.jsonl line 3: not JSON", one per problem
    # notebooks (issue 22): (id, revision) -> (notebook JSON, owner, where); deleted notebook ids
    notebooks: dict[tuple[str, int], tuple[dict, str | None, str]] = field(default_factory=dict)
    deleted_notebooks: set[str] = field(default_factory=set)


def restorable(name: str) -> bool | None:
    """True for a dataset file a restore reads (_FILE_RE); None for one it leaves alone (not under runs/ or not
    .jsonl: the Hub's .gitattributes, a README); False for a backup-looking name it refuses to fetch (a ".."
    or "." part, an empty part, a backslash, a control character, …)."""
    if not isinstance(name, str) or not name.lower().startswith(RUNS_DIR + "/") or \
            not name.lower().rstrip("/").endswith(".jsonl"):
        return None
    return bool(_FILE_RE.fullmatch(name))


def shown_name(name: str) -> str:
    """A dataset file's name as the log and the page name it: quoted, control characters escaped, cut short."""
    return json.dumps(name if len(name) <= 120 else name[:117] + "…", ensure_ascii=False)


def check_restored(run: dict, settings: Settings) -> None:
    """A restored run must be a run the page could have made: one this release reads (Run.from_json: the run
    contract, so schema 0 or 999 is refused) within the page's own caps (text, prompt-free: the corpus text's
    cap; variants). Raises RunFormatError naming what is wrong."""
    parsed = Run.from_json(run)
    n = len(parsed.input.text)
    if n > settings.max_text_chars:
        raise RunFormatError(f"its text has {n} characters; this app's limit is {settings.max_text_chars}")
    entries = len(parsed.variants) + (parsed.reference is not None)
    if entries > settings.max_variants:
        raise RunFormatError(f"it has {entries} variants; this app's limit is {settings.max_variants}")


def parse_file(name: str, data: bytes, into: Parsed, check=None) -> None:
    """Read one backup file's lines into `into`; a line that is not a backup line is skipped and named.

    `check(run)` (check_restored) may refuse a run (RunFormatError): that line is skipped and named, and its id
    stays free for a later line that holds a valid run."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        into.skipped.append(f"{name}: not UTF-8 text (byte {e.start}); the whole file was skipped")
        return
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        where = f"{name} line {number}"
        try:
            item = json.loads(line)
        except ValueError:
            into.skipped.append(f"{where}: not JSON")
            continue
        if not isinstance(item, dict) or item.get("backup") != LINE_VERSION:
            into.skipped.append(f"{where}: not a backup line (version {LINE_VERSION})")
        elif isinstance(item.get("deleted"), str):
            into.deleted.add(item["deleted"])
        elif isinstance(item.get("deleted_notebook"), str):
            into.deleted_notebooks.add(item["deleted_notebook"])
        elif isinstance(item.get("notebook"), dict):
            nb, owner = item["notebook"], item.get("owner")
            if not (isinstance(nb.get("notebook_id"), str) and isinstance(nb.get("revision"), int)):
                into.skipped.append(f"{where}: a notebook revision without notebook_id and revision")
            elif owner is not None and not (isinstance(owner, str) and _OWNER_RE.fullmatch(owner)):
                into.skipped.append(f"{where}: owner is not an owner key (64 hex digits)")
            else:
                into.notebooks.setdefault((nb["notebook_id"], nb["revision"]), (nb, owner, where))
        elif isinstance(item.get("run"), dict) and isinstance(item["run"].get("run_id"), str):
            owner = item.get("owner")
            if owner is not None and not (isinstance(owner, str) and _OWNER_RE.fullmatch(owner)):
                into.skipped.append(f"{where}: owner is not an owner key (64 hex digits)")
                continue
            if item["run"]["run_id"] in into.runs:
                continue  # the first valid line of an id wins
            if check is not None:
                try:
                    check(item["run"])
                except RunFormatError as e:
                    into.skipped.append(f"{where}: {e}")
                    continue
            into.runs[item["run"]["run_id"]] = (item["run"], owner, where)
        else:
            into.skipped.append(f"{where}: neither a run nor a deletion")


@dataclass
class RestoreReport:
    imported: int = 0  # runs added to the local log
    present: int = 0  # runs the local log already had
    removed: int = 0  # local runs a tombstone deleted
    skipped: list[str] = field(default_factory=list)
    notebook_revisions: int = 0  # notebook revisions added to the local log (issue 22)
    notebooks_removed: int = 0  # local notebooks a notebook tombstone deleted


def merge(store: RunStore, parsed: Parsed) -> RestoreReport:
    """Import every run the log lacks, under its own id, unless a tombstone deleted it; delete tombstoned runs
    the log still holds. Idempotent: a second merge of the same lines changes nothing."""
    report = RestoreReport(skipped=list(parsed.skipped))
    for run_id, (run, owner, where) in parsed.runs.items():
        if run_id in parsed.deleted:
            continue
        try:
            if store.import_run(run, owner=owner):
                report.imported += 1
            else:
                report.present += 1
        except RunFormatError as e:
            report.skipped.append(f"{where}: {e}")
    for run_id in sorted(parsed.deleted):
        try:
            store.delete(run_id)
            report.removed += 1
        except RunNotFound:
            pass
    _merge_notebooks(store, parsed, report)
    return report


def _merge_notebooks(store: RunStore, parsed: Parsed, report: RestoreReport) -> None:
    """Notebook revisions under their own ids and numbers (oldest first), unless a tombstone deleted the notebook;
    tombstoned notebooks the log still holds are deleted with every revision."""
    if not (parsed.notebooks or parsed.deleted_notebooks):
        return
    notebooks = NotebookStore(store)
    for (nb_id, _rev), (nb, owner, where) in sorted(parsed.notebooks.items()):
        if nb_id in parsed.deleted_notebooks:
            continue
        try:
            if notebooks.import_revision(nb, owner=owner):
                report.notebook_revisions += 1
        except NotebookFormatError as e:
            report.skipped.append(f"{where}: {e}")
    for nb_id in sorted(parsed.deleted_notebooks):
        try:
            notebooks.delete(nb_id)
            report.notebooks_removed += 1
        except RunNotFound:
            pass


def notebook_line(notebook: dict, owner_key: str | None) -> str:
    """One line (no newline) recording a saved notebook revision (its JSON holds no owner: `owner_key` is the
    HMAC the log keeps)."""
    return json.dumps({"backup": LINE_VERSION, "owner": owner_key, "notebook": notebook}, ensure_ascii=True)


def notebook_tombstone_line(notebook_id: str, now: datetime | None = None) -> str:
    """One line (no newline) recording a notebook deleted with every revision."""
    at = (now or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    return json.dumps({"backup": LINE_VERSION, "deleted_notebook": notebook_id, "at": at}, ensure_ascii=True)


class Backup:
    """The backup of one process: off (with the reason), or on, restoring at start and pushing while it runs.

    `record` and `deleted` are called by the dashboard right after the run log changed, before the page is told.
    """

    def __init__(self, settings: Settings, store: RunStore | None = None):
        self.settings = settings
        self.repo = (settings.backup_repo or "").strip() or None
        self.on = False
        self.reason = ""  # why it is off ('' when it is on, or not configured)
        self.private: bool | None = None
        self.restore: RestoreReport | None = None
        self.instance = new_instance_id()
        self.folder = local_root(settings) / self.instance
        self.write_error: str | None = None
        self._store = store
        self._dataset = None
        self._lock = threading.Lock()
        self._closed = False

    # ---------------------------------------------------------------------------- start
    @classmethod
    def start(cls, settings: Settings, store: RunStore | None = None) -> "Backup":
        """Restore from the dataset, then start pushing to it. Never raises: on any problem the backup is off."""
        backup = cls(settings, store)
        try:
            backup._start()
        except Exception as e:  # noqa: BLE001 - a backup problem must not stop the app
            backup._off(_plain(e) if isinstance(e, PythiaCompareError) else
                        f"an unexpected {type(e).__name__} (details in the server log)", exc=e)
        return backup

    def _start(self) -> None:
        s = self.settings
        if self.repo is None:
            return
        if not _REPO_RE.fullmatch(self.repo):
            return self._off(f"PYTHIA_COMPARE_BACKUP_REPO={self.repo!r} is not a dataset id; use owner/name")
        if not (math.isfinite(s.backup_minutes) and s.backup_minutes > 0):
            return self._off("PYTHIA_COMPARE_BACKUP_MINUTES is not a number of minutes > 0; use e.g. 5 or 0.5")
        if s.offline:
            return self._off("the app runs offline (PYTHIA_COMPARE_OFFLINE), so it cannot reach the Hub")
        if not s.owner_secret:
            return self._off("PYTHIA_COMPARE_OWNER_SECRET is not set. Each browser's runs are kept under an HMAC "
                             "of its token made with that secret; without it the backup could not match a "
                             "restored History to its browser without holding the tokens, so nothing is backed up")
        if not s.hf_token:
            return self._off(f"HF_TOKEN is not set; the backup needs a token with write access to {self.repo}")
        from ..sources.hub import BackupDataset  # the network module, only when the backup is on

        if self._store is None:
            self._store = RunStore(s.db_path, owner_secret=s.owner_secret)
        self._dataset = BackupDataset(s, self.repo)
        snap = self._dataset.snapshot()
        self.private = snap.private if snap.exists else True
        self.restore = self._restore(snap) if snap.exists else RestoreReport()
        self.folder.mkdir(parents=True, exist_ok=True)
        marker = {"instance": self.instance, "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "pythia_compare": __version__}
        (self.folder / "instance.json").write_text(json.dumps(marker) + "\n", encoding="utf-8")
        try:
            self._dataset.start_pushing(self.folder, f"{RUNS_DIR}/{self.instance}", s.backup_minutes)
        except Exception:
            self._dataset.close(final=False)
            raise
        self.on = True
        r = self.restore
        log.info("backup on: %s (%s), every %g min; restored %d runs (%d already here, %d deleted, %d skipped)",
                 self._dataset.url, "private" if self.private else "PUBLIC", s.backup_minutes, r.imported, r.present,
                 r.removed, len(r.skipped))

    def _restore(self, snap) -> RestoreReport:
        parsed = Parsed()
        for name in snap.files:
            kind = restorable(name)
            if kind is None:
                continue
            if not kind:
                parsed.skipped.append(f"{shown_name(name)}: not a name this backup writes (runs/<folder>/<file>"
                                      f".jsonl of plain names); the file was not fetched")
                continue
            try:
                data = self._dataset.download(name, snap.commit).read_bytes()
            except Exception as e:  # noqa: BLE001 - one unreadable file never stops the restore of the rest
                if not isinstance(e, (PythiaCompareError, OSError)):
                    log.error("restore: reading %s failed", shown_name(name), exc_info=e)
                parsed.skipped.append(f"{name}: could not be read ({_plain(e)}); the whole file was skipped")
                continue
            parse_file(name, data, parsed, check=lambda run: check_restored(run, self.settings))
        report = merge(self._store, parsed)
        for problem in report.skipped:
            log.warning("restore skipped %s", problem)
        return report

    def _off(self, reason: str, exc: BaseException | None = None) -> None:
        self.on, self.reason = False, reason
        if exc is not None and not isinstance(exc, PythiaCompareError):
            log.error("backup is off: %s", reason, exc_info=exc)
        else:
            log.warning("backup is off: %s", reason)

    # ---------------------------------------------------------------------------- while running
    def record(self, run: dict, owner: str | None = None) -> None:
        """Append a just-saved run (with its owner token, kept only as its HMAC) to this hour's file."""
        if self.on:
            key = self._store.owner_key(owner) if owner else None
            self._append(run_line(run, key), f"run {run.get('run_id')}")

    def deleted(self, run_id: str) -> None:
        """Append a tombstone for a run just deleted from the log."""
        if self.on:
            self._append(tombstone_line(run_id), f"the deletion of run {run_id}")

    # notebooks (issue 22): called by web/notebooks.py right after the notebook log changed
    def notebook_saved(self, notebook: dict, owner_key: str | None = None) -> None:
        """Append a just-saved notebook revision (owner as the log keeps it: the HMAC)."""
        if self.on:
            self._append(notebook_line(notebook, owner_key),
                         f"notebook {notebook.get('notebook_id')} revision {notebook.get('revision')}")

    def notebook_deleted(self, notebook_id: str) -> None:
        """Append a tombstone for a notebook just deleted with every revision."""
        if self.on:
            self._append(notebook_tombstone_line(notebook_id), f"the deletion of notebook {notebook_id}")

    def _append(self, line: str, what: str) -> None:
        data = (line + "\n").encode("ascii")
        try:
            with self._dataset.lock, self._lock:  # the scheduler lists files under the same lock: no half lines
                fd = os.open(self.folder / window_name(), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, data)
                finally:
                    os.close(fd)
            self.write_error = None
        except OSError as e:
            self.write_error = f"{what} could not be written to the backup folder ({e.strerror or e})"
            log.error("backup: %s", self.write_error)

    def push(self) -> None:
        """Push now (the schedule also does); raises hub.BackupError if the push fails."""
        if self.on:
            self._dataset.push()

    def close(self) -> None:
        """Stop the schedule and push the last lines (at shutdown). Safe to call twice."""
        with self._lock:
            if self._closed or not self.on:
                self._closed = True
                return
            self._closed = True
        try:
            self._dataset.close()
            log.info("backup: final push to %s done", self.repo)
        except Exception as e:  # noqa: BLE001 - at shutdown, say it and go
            log.error("backup: the final push to %s failed: %s", self.repo, _plain(e))

    def close_on_exit(self) -> None:
        """Push the last lines when the process ends: at exit, and on SIGTERM (what a Space sends on restart),
        which is turned into the KeyboardInterrupt that makes Gradio close its server and the script end."""
        atexit.register(self.close)
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            def on_term(signum, frame):
                signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
                raise KeyboardInterrupt

            signal.signal(signal.SIGTERM, on_term)

    # ---------------------------------------------------------------------------- the page
    def status_markdown(self) -> str:
        """What the page says about where runs are kept ('' locally with no backup configured)."""
        minutes = f"{self.settings.backup_minutes:g} minute{'' if self.settings.backup_minutes == 1 else 's'}"
        if not self.on:
            disk = ("this server's disk, which a Space wipes at every restart: share links and each browser's "
                    "History do not survive one" if self.settings.public else "this server's disk")
            if self.repo is None:
                return f"**Runs are not backed up.** They are kept on {disk}." if self.settings.public else ""
            return f"**Backup is off:** {self.reason}. Runs are kept only on {disk}."
        url = self._dataset.url
        who = ("private: only its owners can read it" if self.private else
               "**public: anyone can read every run in it, input texts included**")
        text = (f"**Runs are backed up** to the Hub dataset [{self.repo}]({url}) ({who}) every {minutes} and at "
                f"shutdown, and restored at start, so share links and each browser's History survive a restart. "
                f"A crash can lose the runs of the last {minutes}.")
        r = self.restore
        if r is not None and r.skipped:
            shown = "; ".join(plain_markdown(x) for x in r.skipped[:MAX_SKIPPED_SHOWN])
            more = f" (and {len(r.skipped) - MAX_SKIPPED_SHOWN} more)" if len(r.skipped) > MAX_SKIPPED_SHOWN else ""
            text += f" **Restore skipped** {shown}{more}."
        problem = self.write_error or self._dataset.last_error
        if problem:
            text += f" **The last backup step failed:** {problem}; it is retried at the next push."
        return text


def _plain(e: BaseException) -> str:
    """An error's message for the log and the page: its first line, no trailing period."""
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text.rstrip(".")
