"""File primitives several modules share: the sha256 of a file, replacing a small file atomically, and reading a
user's text file.

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


def read_text_file(path: str, limit: int) -> str:
    """The UTF-8 text of a user's file of at most `limit` characters; BadInput naming the file otherwise."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise BadInput(f"text file {path!r} does not exist; give the path of a UTF-8 .txt file")
    if p.stat().st_size > limit * 4:
        raise BadInput(f"text file {path!r} is {p.stat().st_size} bytes; the limit is {limit} characters")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise BadInput(f"text file {path!r} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
