"""Quantization with llama.cpp's own quantizer (llama_cpp.llama_model_quantize).

Owns turning an F16/F32 GGUF into any quant type of variants.QUANTS. Writes to a temporary file beside
the target and renames it, so no partial GGUF ever stands at the final path. Never decides where files
live (cache.py does) and never loads models for inference (engine.py does).
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import llama_cpp

from .engine import init_backend, last_llama_error
from ..errors import DiskFull, ModelFileError
from ..variants import QUANTS, normalize_quant


def quantize_file(src: str | Path, dst: str | Path, quant: str, *, n_threads: int = 0) -> Path:
    """Quantize GGUF `src` to `quant` at `dst` (atomic). Returns dst.

    Raises SpecError for unknown or importance-matrix-only quants, ModelFileError if llama.cpp refuses
    the input, DiskFull on ENOSPC. (F32/F16/BF16 work too, though the converter writes those directly.)
    """
    q = normalize_quant(quant)
    qt = QUANTS[q]
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise ModelFileError(f"cannot quantize {src.name!r}: the file does not exist")
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=dst.parent)
    os.close(fd)
    try:
        init_backend()
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = qt.ftype
        params.nthread = int(n_threads)
        rc = llama_cpp.llama_model_quantize(str(src).encode(), tmp.encode(), params)
        if rc != 0:
            need = src.stat().st_size
            free = _free_bytes(dst.parent)
            if free < need:
                raise DiskFull(f"quantizing {src.name} to {q} needs up to {need / 1e6:.0f} MB in {dst.parent}, "
                               f"but only {free / 1e6:.0f} MB is free; free some space or prune the cache "
                               f"(`python -m pythia_compare cache prune`)")
            raise ModelFileError(f"llama.cpp could not quantize {src.name!r} to {q} ({last_llama_error() or rc}); "
                                 f"is it a valid "
                                 f"F16/F32 GGUF with row sizes that are multiples of 256 for K-quants?")
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a quantized file is as readable as its source
        os.replace(tmp, dst)
        return dst
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise DiskFull(f"disk full while quantizing {src.name} to {q} in {dst.parent}; it needs up to "
                           f"{src.stat().st_size / 1e6:.0f} MB") from None
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize
