"""The cache of converted and quantized GGUF files under Settings.home (`--home`).

Owns where built files live, their metadata (key, sha256, size, last use), the per-entry file lock
that makes two processes building the same entry do the work once, the per-entry use lock a run holds while it
uses an entry (`hold`), and pruning, which leaves an entry being built or used. Never downloads,
converts or quantizes by itself: callers pass a build function that writes the file atomically.

Layout: HOME/models/<key hash>/<file name>.gguf with meta.json beside it (and the lock files `.lock`, the build's,
and `.in-use`, the runs'). An entry counts only once its meta.json exists, and meta.json is written after the GGUF
has been renamed into place.
"""

from __future__ import annotations

import errno
import hashlib
import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from filelock import FileLock, Timeout

from ..errors import DiskFull
from ..files import UseLock, sha256_file, write_atomic

# The version of this project's checkpoint converter (convert.py), part of every converted file's key: a change to
# what it writes gets new files. Kept here, with the keys, so that finding a cached file never imports the converter
# (and gguf with it).
CONVERTER_VERSION = "1"

_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path, memo: Path | None = None) -> str:
    """sha256 hex of a file, streamed; remembered per (real path, size, mtime) within the process and,
    when `memo` (a JSON file) is given, across processes, so a big model is hashed once, not per run."""
    p = Path(path)
    st = p.stat()
    real = str(p.resolve())
    key = (real, st.st_size, st.st_mtime_ns)
    if key in _HASH_CACHE:
        return _HASH_CACHE[key]
    # Hugging Face's cache names LFS blobs by their sha256, which huggingface_hub verified on download.
    if re.fullmatch(r"[0-9a-f]{64}", Path(real).name) and Path(real).parent.name == "blobs":
        _HASH_CACHE[key] = Path(real).name
        return Path(real).name
    memo_key = f"{real}|{st.st_size}|{st.st_mtime_ns}"
    table: dict = {}
    if memo is not None:
        try:
            table = json.loads(memo.read_text())
        except (OSError, ValueError):
            table = {}
        if isinstance(table.get(memo_key), str):
            _HASH_CACHE[key] = table[memo_key]
            return table[memo_key]
    _HASH_CACHE[key] = sha256_file(p)
    if memo is not None:
        table = {k: v for k, v in table.items() if not k.startswith(real + "|")}
        table[memo_key] = _HASH_CACHE[key]
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(memo, json.dumps(table))
        except OSError:
            pass  # the memo is an optimisation only
    return _HASH_CACHE[key]


@dataclass(frozen=True)
class CacheEntry:
    path: Path  # the GGUF file
    key: dict  # repo, commit, quant, converter, llama_cpp
    sha256: str
    bytes: int
    last_used: float


class Cache:
    def __init__(self, home: str | Path):
        self.root = Path(home).expanduser() / "models"
        self.hash_memo = Path(home).expanduser() / "sha256-memo.json"

    def _dir(self, key: dict) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        return self.root / digest

    def hold(self, key: dict) -> UseLock:
        """Hold the entry of `key` (built or still to build) in use until the returned lock is released: `remove`
        and `prune` leave it meanwhile. A run holds each entry it uses from before it looks it up to its end."""
        return UseLock(self._dir(key) / ".in-use").share()

    def lookup(self, key: dict) -> CacheEntry | None:
        """The finished entry for `key`, or None."""
        return self._read(self._dir(key))

    def get_or_build(self, key: dict, filename: str, build: Callable[[Path], None]) -> CacheEntry:
        """Return the cached file for `key`, building it under a file lock if absent.

        `build(path)` must write the GGUF at `path` atomically (temporary file + rename).
        """
        d = self._dir(key)
        entry = self._read(d)
        if entry is not None:
            self._touch(d)
            return entry
        d.mkdir(parents=True, exist_ok=True)
        with FileLock(str(d / ".lock")):
            entry = self._read(d)  # another process may have finished while we waited
            if entry is not None:
                return entry
            target = d / filename
            build(target)
            meta = {"key": key, "file": filename, "sha256": file_sha256(target), "bytes": target.stat().st_size,
                    "created": time.time(), "last_used": time.time()}
            self._write_meta(d, meta)
            return self._read(d)  # type: ignore[return-value]

    def entry_at(self, path: str | Path) -> CacheEntry | None:
        """The finished entry whose file is `path`, or None for a file that is not one of this cache's."""
        p = Path(path).expanduser().resolve()
        root = self.root.resolve()
        if p.parent.parent != root:
            return None
        entry = self._read(p.parent)
        return entry if entry is not None and entry.path.resolve() == p else None

    def entries(self) -> list[CacheEntry]:
        if not self.root.is_dir():
            return []
        out = [e for d in sorted(self.root.iterdir()) if (e := self._read(d)) is not None]
        return sorted(out, key=lambda e: e.last_used, reverse=True)

    def total_bytes(self) -> int:
        return sum(e.bytes for e in self.entries())

    def prune(self, max_bytes: int = 0) -> list[CacheEntry]:
        """Delete least recently used entries until the cache holds at most max_bytes. Entries being
        built or used under their lock by another process are skipped. Returns the removed entries."""
        removed: list[CacheEntry] = []
        entries = self.entries()
        total = sum(e.bytes for e in entries)
        for e in reversed(entries):  # oldest first
            if total <= max_bytes:
                break
            if not self.remove(e):
                continue
            total -= e.bytes
            removed.append(e)
        return removed

    def sweep_parts(self) -> list[Path]:
        """Delete the `.part` files a killed build left behind (convert.py and quantize.py write one, then rename
        it into place), skipping any entry another process is building now (its lock is held). Returns them."""
        removed: list[Path] = []
        if not self.root.is_dir():
            return removed
        for d in sorted(p for p in self.root.iterdir() if p.is_dir()):
            parts = list(d.glob(".*.part"))
            if not parts:
                continue
            lock = FileLock(str(d / ".lock"))
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue  # being built: its .part is live
            try:
                for part in parts:
                    part.unlink(missing_ok=True)
                    removed.append(part)
            finally:
                lock.release()
        return removed

    def remove(self, entry: CacheEntry) -> bool:
        """Delete one entry (a sweep's step files once done), unless another process holds its build lock or a run
        holds it in use (`hold`); True if it was removed."""
        lock = FileLock(str(entry.path.parent / ".lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return False
        in_use = UseLock(entry.path.parent / ".in-use")
        try:
            if not in_use.take():
                return False
            (entry.path.parent / "meta.json").unlink(missing_ok=True)
            entry.path.unlink(missing_ok=True)
            shutil.rmtree(entry.path.parent, ignore_errors=True)  # while held: a run waiting to hold it looks again
        except OSError:
            return False
        finally:
            in_use.release()
            lock.release()
        return True

    # --- internals ---
    def _read(self, d: Path) -> CacheEntry | None:
        try:
            meta = json.loads((d / "meta.json").read_text())
            path = d / meta["file"]
            if not path.is_file() or path.stat().st_size != meta["bytes"]:
                return None
            return CacheEntry(path=path, key=meta["key"], sha256=meta["sha256"], bytes=meta["bytes"],
                              last_used=float(meta.get("last_used", 0)))
        except (OSError, ValueError, KeyError):
            return None

    def _touch(self, d: Path) -> None:
        try:
            meta = json.loads((d / "meta.json").read_text())
            meta["last_used"] = time.time()
            self._write_meta(d, meta)
        except (OSError, ValueError, DiskFull):
            pass  # last-use bookkeeping is best effort

    def _write_meta(self, d: Path, meta: dict) -> None:
        try:
            write_atomic(d / "meta.json", json.dumps(meta, indent=1, sort_keys=True))
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise DiskFull(f"disk full while writing cache metadata in {d}; free a few kB") from None
            raise
