"""File primitives several modules share: the sha256 of a file, replacing a small file atomically, reading a
user's text file (the CLI's --text-file, the library's text=Path(...)), and a lock file many users share while one
deleter waits for none of them (UseLock: what a run uses is never pruned under it).

Owns how a file is hashed (streamed in 1 MiB blocks) and how a small text file (metadata, memos) is written so that
a reader sees the old content or the new, never a part: a temporary file beside it, then os.replace. Never decides
what a failure means: OSError goes to the caller, which knows whether the write mattered (cache metadata) or was
an optimisation (a memo). Big files (converted and quantized GGUFs) are written by their producers the same way.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX (Windows): UseLock holds nothing there
    fcntl = None  # type: ignore[assignment]

from .errors import BadInput


def sha256_file(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_atomic(path: str | Path, text: str) -> None:
    """Replace `path` with `text` (UTF-8) atomically; on any error the temporary file is removed and the error
    raised, and `path` keeps its old content. The folder must exist."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


DEMO_TEXT_PREFIX = "demo:"  # --text-file demo:heldout: a text of the demo suite, wherever the command runs


def text_file_path(given: str | Path, demo_dir: str | Path | None = None) -> Path:
    """The file a --text-file names: `demo:NAME` is the demo suite's NAME.txt (in Settings.demo_dir, inside the
    installed package too), so the README's commands work from any directory; anything else is a path."""
    given = str(given)
    if demo_dir is not None and given.startswith(DEMO_TEXT_PREFIX):
        name = given[len(DEMO_TEXT_PREFIX):]
        texts = sorted(p.stem for p in Path(demo_dir).glob("*.txt"))
        if name not in texts:
            raise BadInput(f"--text-file {given!r}: the demo suite has no text {name!r}; it has "
                           f"{', '.join(DEMO_TEXT_PREFIX + t for t in texts) or 'none'}")
        return Path(demo_dir) / f"{name}.txt"
    return Path(given).expanduser()


def read_text_file(path: str | Path, limit: int, demo_dir: str | Path | None = None, what: str = "text file") -> str:
    """A user's UTF-8 text file (or, given the demo suite's folder, `demo:NAME`) of at most `limit` characters;
    BadInput naming the file and what would work otherwise."""
    p = text_file_path(path, demo_dir)
    if not p.is_file():
        demo = f", or {DEMO_TEXT_PREFIX}heldout for the demo suite's held-out text" if demo_dir is not None else ""
        raise BadInput(f"{what} {str(path)!r} does not exist; give the path of a UTF-8 .txt file{demo}")
    if p.stat().st_size > limit * 4:
        raise BadInput(f"{what} {str(path)!r} is {p.stat().st_size} bytes; the limit is {limit} characters")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise BadInput(f"{what} {str(path)!r} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None


def read_bounded(path: str | Path, what: str, max_bytes: int, hint: str, error: type[BadInput] = BadInput) -> bytes:
    """The bytes of a user's file of at most max_bytes, refused before it is read; `error` (a BadInput) names the
    file as `what` and, when it does not exist, says what to give (`hint`)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise error(f"{what} {str(path)[:80]!r} does not exist (or is not a file); {hint}")
    size = p.stat().st_size
    if size > max_bytes:
        raise error(f"{p.name} is {size:,} bytes; the limit is {max_bytes:,} bytes; give a smaller file")
    return p.read_bytes()


class UseLock:
    """A lock file that any number of users hold at once (`share`, waiting for a deleter to finish) and a deleter
    takes only when no one holds it (`take`, never waiting): the cache budget's guard for what a run is using.

    flock(2) locks belong to an open file, so two holders in one process see each other as two processes do, and
    the kernel drops a dead process's holds. The file is empty; only a deleter that holds it removes it (with what
    it guards), and a holder checks after locking that the file it locked is still the one at the path. Without
    fcntl (not POSIX), or on a filesystem without flock, nothing is guarded: `share` holds nothing and `take`
    succeeds. OSError from making the file (a read-only folder) goes to the caller."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd: int | None = None

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o664)

    def share(self) -> "UseLock":
        """Hold the lock shared (waits only while a deleter holds it); a second call while held does nothing.

        A deleter may remove the folder holding the file while this waits: the lock is then taken again on the
        file now at the path, so it is never held on a file no deleter can see."""
        while self._fd is None:
            fd = self._open()
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH)
                except OSError:  # a filesystem without flock: the user goes on, unguarded
                    pass
            if self._still_named(fd):
                self._fd = fd
            else:
                os.close(fd)
        return self

    def take(self) -> bool:
        """Hold the lock alone if no one else holds it, without waiting; False (nothing held) when someone does.
        A deleter holding it may remove the file, and its folder, before `release`."""
        if self._fd is not None:
            return True
        fd = self._open()
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # someone holds it
                os.close(fd)
                return False
            except OSError:  # a filesystem without flock: no one can hold it either
                pass
        if not self._still_named(fd):  # another deleter removed it meanwhile
            os.close(fd)
            return False
        self._fd = fd
        return True

    def _still_named(self, fd: int) -> bool:
        """Whether the open file is still the one at self.path (not removed or replaced since it was opened)."""
        try:
            now, held = os.stat(self.path), os.fstat(fd)
        except OSError:
            return False
        return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the file drops its flock

    def __del__(self):
        try:
            self.release()
        except Exception:  # noqa: BLE001 - at interpreter exit; the kernel drops the lock with the process
            pass
