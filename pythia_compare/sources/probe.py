"""The first load of a GGUF file happens in a throwaway subprocess, so that no file can take the process down.

Owns deciding whether a file needs a probe, running it, and the verdicts. The probe is a child process
(`python -m pythia_compare.sources.probe`) that does what a run does, with the run's own Settings and engine.Model (the
same constructor, so the same load options): load the file, create a context, tokenize a sample, decode one
token and read its top tokens. It runs under an address-space limit (RLIMIT_AS: what its own imports map, plus
Settings.probe_memory_margin_bytes, plus 3× the file's size) and a wall-clock timeout (Settings.probe_timeout_s), since a hostile file can exhaust
memory or hang as well as abort (llama.cpp's GGML_ASSERT ends the whole process). Verdicts are kept by sha256
(and llama.cpp version) in Settings.home/probe-verdicts.json, failures too, so a file is probed once and a
hostile one is refused at once the next time. A failed probe raises ModelFileError naming the file and what is
wrong; the caller's process is untouched.

Files this installation built itself from the bundled demo suite (cache entries of repo `demo`) skip the probe:
they come from the project's own converter and quantizer on bundled checkpoints. Everything else is probed:
local files, Hub downloads, and checkpoints converted from the Hub (a hostile config.json passes through the
converter's checks into a file's hyper-parameters).

Never loads a model in the calling process: only the child imports engine.py (the calling process reads a failed
file's header with resolver.gguf_scan, which bounds every length, to name the value at fault).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from .cache import Cache, file_sha256
from ..config import Settings
from ..errors import ModelFileError, PythiaCompareError
from ..files import write_atomic
from ..variants import DEMO_ALIAS

VERDICTS = "probe-verdicts.json"
READY = "pythia-compare-probe: ready"
_MEMORY = "loading it needs more memory than the probe grants ({gb:.1f} GB over its own needs)"
PROBE_CTX = 256  # the context the probe creates (a run's smallest)
SAMPLE = "The quick brown fox jumps over the lazy dog. 12 + 7 = 19. Crème brûlée, Привет, 日本語, 🚀"
# Header values a refusal names first when they are out of range (block_count makes llama.cpp abort outright).
_HPARAM_RANGES = {"block_count": (1, 512), "attention.head_count": (1, 4096), "embedding_length": (1, 1 << 20),
                  "context_length": (1, 1 << 24), "feed_forward_length": (1, 1 << 22)}


def memory_limit(settings: Settings, file_bytes: int) -> int:
    """The address space the probe may map for a file of `file_bytes`, over what its own imports take."""
    return int(settings.probe_memory_margin_bytes + 3 * file_bytes)


def _verdict_key(sha256: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        llama = version("llama_cpp_python")
    except PackageNotFoundError:
        llama = "unknown"
    return f"{sha256}|llama_cpp {llama}"


def _built_from_demo(path: Path, settings: Settings) -> bool:
    entry = Cache(settings.home).entry_at(path)
    return entry is not None and entry.key.get("repo") == DEMO_ALIAS


def _read_verdicts(settings: Settings) -> dict:
    try:
        data = json.loads((Path(settings.home).expanduser() / VERDICTS).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _remember(settings: Settings, key: str, verdict: dict) -> None:
    from filelock import FileLock

    home = Path(settings.home).expanduser()
    try:
        home.mkdir(parents=True, exist_ok=True)
        with FileLock(str(home / f".{VERDICTS}.lock")):
            table = _read_verdicts(settings)
            table[key] = verdict
            write_atomic(home / VERDICTS, json.dumps(table, indent=1, sort_keys=True))
    except OSError:
        pass  # the verdict is an optimisation: the next run probes again


def _refusal(name: str, reason: str) -> ModelFileError:
    return ModelFileError(f"{name!r} cannot be used: {reason}. A test load in a separate process refused it, and "
                          f"nothing else was affected; re-download or re-convert the file, or choose another")


def ensure_loadable(path: str | Path, settings: Settings) -> None:
    """Return if `path` is known to load (or was built here from the demo suite); else probe it in a subprocess.

    Raises ModelFileError naming the file and what is wrong when the probe fails (now or in the verdict cache),
    and ProbeUnavailable when the probe itself cannot run (then nothing is remembered about the file).
    """
    if not (settings.probe or settings.public):
        return
    p = Path(path).expanduser()
    if _built_from_demo(p, settings):
        return
    key = _verdict_key(file_sha256(p, Cache(settings.home).hash_memo))
    known = _read_verdicts(settings).get(key)
    headroom = memory_limit(settings, p.stat().st_size)
    if isinstance(known, dict) and isinstance(known.get("ok"), bool):
        if known["ok"]:
            return
        if int(known.get("headroom") or 0) >= headroom:  # refused under as much memory as it would get now
            raise _refusal(p.name, str(known.get("reason") or "an earlier test load failed"))
    verdict = probe(p, settings)
    if verdict.get("remember", True):
        _remember(settings, key, {k: v for k, v in verdict.items() if k != "remember"})
    if not verdict["ok"]:
        raise _refusal(p.name, verdict["reason"])


class ProbeUnavailable(PythiaCompareError):
    """The probe subprocess could not start (not the file's fault): nothing is remembered, the run stops."""


def probe(path: Path, settings: Settings) -> dict:
    """Load `path` in a child process under the limits.

    Returns {"ok": True, ...} or {"ok": False, "reason": "...", "headroom": bytes, "remember": bool}; a timeout
    or a SIGKILL (the machine's OOM killer, an operator) is not remembered, since it may not be the file's doing.
    """
    headroom = memory_limit(settings, path.stat().st_size)
    env = dict(os.environ)
    env.update({"GGML_NO_BACKTRACE": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2]) + os.pathsep
                + env.get("PYTHONPATH", "")})
    child_settings = settings.replace(n_threads=min(2, settings.n_threads))
    t0 = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "pythia_compare.sources.probe"],
                              input=pickle.dumps((str(path), child_settings, headroom)), capture_output=True,
                              env=env, timeout=settings.probe_timeout_s)
    except subprocess.TimeoutExpired:
        return {"ok": False, "reason": f"loading it took longer than {settings.probe_timeout_s:g} s",
                "remember": False}
    seconds = round(time.monotonic() - t0, 3)
    out = done.stdout.decode("utf-8", "replace").strip().splitlines()
    err = done.stderr.decode("utf-8", "replace")
    if READY not in out:
        last = (err.strip().splitlines() or [f"exit code {done.returncode}"])[-1][:300]
        raise ProbeUnavailable(f"the test load of a model file could not start ({last}); check the installation "
                               f"(python -m pythia_compare.sources.probe) and Settings.probe_memory_margin_bytes")
    try:
        verdict = json.loads(out[-1])
    except ValueError:
        verdict = None
    if done.returncode == 0 and isinstance(verdict, dict) and verdict.get("ok") is True:
        return {"ok": True, "seconds": seconds}
    if isinstance(verdict, dict) and verdict.get("ok") is False:
        reason = str(verdict.get("reason"))
    else:
        reason = _crash_reason(done.returncode, err, headroom)
    return {"ok": False, "reason": _with_diagnosis(path, reason), "headroom": headroom, "seconds": seconds,
            "remember": done.returncode != -signal.SIGKILL}


def _crash_reason(code: int, stderr: str, limit: int) -> str:
    """What a child's death says: an assertion, running out of memory, or a signal."""
    if "bad_alloc" in stderr or "MemoryError" in stderr or "Cannot allocate memory" in stderr:
        return _MEMORY.format(gb=limit / 1e9)
    m = re.search(r"GGML_ASSERT\((.{1,300}?)\) failed", stderr)
    if m and re.search(r"(mem_buffer|buffer|data|ptr) != NULL", m.group(1)):  # ggml's allocation failures
        return _MEMORY.format(gb=limit / 1e9)
    if m:
        return f"llama.cpp aborts on it (its check {m.group(1)} fails)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"llama.cpp crashes on it ({name})"
    return f"the test load ended with exit code {code}"


def _with_diagnosis(path: Path, reason: str) -> str:
    """The reason, led by the header value out of range when there is one (the cause a user can act on)."""
    from .resolver import gguf_scan

    try:
        meta, _ = gguf_scan(path)
    except ModelFileError as e:
        return str(e).split(": ", 1)[-1].rsplit("; re-download", 1)[0]  # the header's own fault is the cause
    except OSError:
        return reason
    arch = meta.get("general.architecture")
    if isinstance(arch, str):
        for suffix, (lo, hi) in _HPARAM_RANGES.items():
            value = meta.get(f"{arch}.{suffix}")
            if isinstance(value, int) and not isinstance(value, bool) and not lo <= value <= hi:
                return f"its {arch}.{suffix} is {value} (out of range {lo} … {hi}); {reason}"
        n_embd, n_head = meta.get(f"{arch}.embedding_length"), meta.get(f"{arch}.attention.head_count")
        if isinstance(n_embd, int) and isinstance(n_head, int) and n_head > 0 and n_embd % n_head:
            return (f"its {arch}.embedding_length {n_embd} is not a multiple of its attention.head_count {n_head}; "
                    f"{reason}")
    return reason


# ------------------------------------------------------------------------------------------ the child
def _child() -> int:
    """The probe itself: load, context, tokenize, decode one token, under the limit. Prints READY, then one JSON line.

    The imports come first and are not limited: they are the installation's, not the file's. Then RLIMIT_AS is
    set to what is mapped now plus the headroom the parent grants, and READY says the file's turn has come.
    """
    import logging

    try:
        import resource
    except ImportError:  # not a POSIX system: the probe runs without limits (the timeout still holds)
        resource = None
    if resource is not None:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # an abort leaves no core file behind
    path, settings, headroom = pickle.loads(sys.stdin.buffer.read())
    errors: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            line = record.getMessage()
            if re.search(r"error|failed|invalid|not within|wrong|exceed|missing", line, re.IGNORECASE):
                errors.append(line)

    llama_log = logging.getLogger("pythia_compare.llama_cpp")
    llama_log.setLevel(logging.DEBUG)
    llama_log.addHandler(Collect())
    llama_log.propagate = False
    from ..models.engine import Model, init_backend

    init_backend()
    mapped = _mapped_bytes()
    if resource is not None and mapped:  # without /proc (macOS), the size of the imports is unknown
        resource.setrlimit(resource.RLIMIT_AS, (mapped + headroom,) * 2)
    print(READY, flush=True)
    try:
        model = Model(path, settings, PROBE_CTX)
        ids = model.tokenize(SAMPLE)[:8] or [max(model.bos_id, 0)]
        logits = model.logits(ids[:1], [0])
        model.top_k(logits[0], 5)
        model.close()
        print(json.dumps({"ok": True}), flush=True)
    except MemoryError:
        print(json.dumps({"ok": False, "reason": _MEMORY.format(gb=headroom / 1e9)}), flush=True)
    except Exception as e:  # every failure here is the file's: report it
        detail = next((d for x in errors if (d := _strip_func(x))), "") or str(e).replace(repr(Path(path).name), "it")
        print(json.dumps({"ok": False, "reason": f"llama.cpp cannot load it ({detail})"}), flush=True)
    return 0


def _mapped_bytes() -> int:
    """This process's address-space size now (VmSize), in bytes."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _strip_func(line: str) -> str:
    """'llama_model_load: error loading model: x' -> 'error loading model: x' (function names are noise)."""
    text = re.sub(r"\b[a-z][a-z0-9]*_[a-z0-9_]*: ", "", line.strip())  # function names, where they stand
    text = re.sub(r"\s{2,}", " ", text)
    return "" if text.lower() in ("failed to load model", "failed to read key-value pairs") else text


if __name__ == "__main__":
    sys.exit(_child())
