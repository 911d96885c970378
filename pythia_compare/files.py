"""File primitives several modules share: the sha256 of a file, replacing a small file atomically, and reading a
user's text file (the CLI's --text-file, the library's text=Path(...)).

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
