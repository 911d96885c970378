"""Where a variant's GGUF file comes from: local file, Hub GGUF download, or checkpoint -> convert -> quantize.

Owns turning a `Variant` into a local GGUF path plus its provenance (the run JSON's "source": repo,
commit, file, sha256, bytes, quant). Uses hub.py for the network, convert.py and quantize.py to build
files, and cache.py to keep them. Never loads a model for inference and never writes the run log.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .cache import CONVERTER_VERSION, Cache, file_sha256
from ..config import Settings
from ..errors import MissingOnHub, ModelFileError, OfflineMissing, SpecError
from .policy import check_conversion, check_variant
from ..variants import DEMO_ALIAS, QUANTS, Variant, quant_from_filename, quant_rank

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Resolved:
    variant: Variant
    path: Path  # the local GGUF file to load
    source: dict  # {"repo", "commit", "file", "sha256", "bytes", "quant"} as in the run JSON


def _noop(_msg: str) -> None:
    pass


def demo_steps(demo_dir: Path) -> list[int]:
    """Steps of the bundled demo suite, ascending (folders named stepN holding a config.json)."""
    if not demo_dir.is_dir():
        return []
    steps = []
    for d in demo_dir.iterdir():
        m = re.fullmatch(r"step(\d+)", d.name)
        if m and (d / "config.json").is_file():
            steps.append(int(m.group(1)))
    return sorted(steps)


class Resolver:
    def __init__(self, settings: Settings, hub=None):
        self.settings = settings
        self._hub = hub
        self.cache = Cache(settings.home)
        self.conversions = 0  # checkpoints this resolver converted anew (public mode caps them per run)
        self._steps: dict[str, list[int] | None] = {}  # repo -> its steps, asked once per resolver
        self._held: dict[str, object] = {}  # model cache entries in use by this resolver's run (Cache.hold)

    @property
    def hub(self):
        if self._hub is None:
            from .hub import Hub  # imported on first use: huggingface_hub costs time at start-up
            self._hub = Hub(self.settings)
        return self._hub

    def release(self) -> None:
        """The run that used this resolver has ended: the model cache entries and the Hugging Face cache's repos
        it used may be pruned from now on (Cache.hold, hub.Hub.release). The resolver stays usable; its next run
        holds what it uses again."""
        held, self._held = list(self._held.values()), {}
        for lock in held:
            lock.release()
        if self._hub is not None and hasattr(self._hub, "release"):
            self._hub.release()

    def _hold(self, key: dict) -> None:
        """Hold a model cache entry in use until release() (bookkeeping: a home that cannot be written is
        reported by the build itself)."""
        name = json.dumps(key, sort_keys=True)
        if name not in self._held:
            try:
                self._held[name] = self.cache.hold(key)
            except OSError:
                pass

    def resolve(self, variant: Variant, progress: Progress | None = None) -> Resolved:
        say = progress or _noop
        check_variant(variant, self.settings)  # public mode: Hub and demo specs only, allowed repos only
        if variant.kind == "local":
            return self._local(variant)
        if variant.kind == "gguf":
            return self._hub_gguf(variant, self.settings.gguf_repo, variant.revision, say)
        if variant.kind == "repo":
            files = self.hub.list_gguf_files(variant.repo)
            if files:
                return self._hub_gguf(variant, variant.repo, None, say)
            return self._checkpoint(variant, variant.repo, "main", say)
        if variant.kind == "checkpoint":
            if variant.repo == DEMO_ALIAS:
                return self._demo(variant, say)
            repo = variant.repo or self.settings.checkpoint_repo
            return self._checkpoint(variant, repo, variant.revision or "main", say)
        raise SpecError(f"variant {variant.spec!r} has an unknown kind {variant.kind!r}")

    def check_step(self, variant: Variant) -> None:
        """Refuse, before any download, a checkpoint step its repo does not have (SpecError naming the nearest
        steps it has). The repo's own branch list decides (hub.checkpoint_steps); when none is known, the
        revision is left to resolve (or fail) as any other."""
        if variant.kind != "checkpoint" or variant.repo == DEMO_ALIAS or variant.step is None:
            return
        from .lineage import describe_steps, nearest_steps
        from ..variants import PYTHIA_STEPS, V0_STEPS

        repo = variant.repo or self.settings.checkpoint_repo
        if repo not in self._steps:
            self._steps[repo] = self.hub.checkpoint_steps(repo)
        steps = self._steps[repo]
        if not steps or variant.step in steps:
            return
        near = ", ".join(f"step{s}" for s in nearest_steps(steps, variant.step))
        hint = ""
        if steps == V0_STEPS and variant.step in PYTHIA_STEPS:
            hint = (f"; step{variant.step} exists in the current repos (e.g. EleutherAI/pythia-410m-deduped@"
                    f"step{variant.step}), a different training run from the v0 models")
        raise SpecError(f"variant {variant.spec!r}: {repo} has no checkpoint at step {variant.step}; the nearest it "
                        f"has are {near} ({describe_steps(steps)}){hint}")

    # --- kinds ---
    def _local(self, variant: Variant) -> Resolved:
        from ..models.engine import check_gguf_file  # validates existence and the GGUF magic

        p = check_gguf_file(variant.path or "")
        quant = _gguf_quant(p) or quant_from_filename(p.name) or "unknown"
        # The file's name only: a run's JSON never carries a server path.
        return Resolved(variant, p, {"repo": None, "commit": None, "file": p.name, "sha256": file_sha256(p, self.cache.hash_memo),
                                     "bytes": p.stat().st_size, "quant": quant})

    def _hub_gguf(self, variant: Variant, repo: str, revision: str | None, say: Progress) -> Resolved:
        if not variant.quant:
            raise SpecError(f"variant {variant.spec!r}: {repo} holds GGUF files; name a quant, e.g. {repo}:Q4_K_M")
        say(f"{variant.label}: looking up {repo}")
        commit = self.hub.resolve_commit(repo, revision)
        files = self.hub.list_gguf_files(repo, commit)
        if variant.quant not in files and self.settings.offline:
            raise OfflineMissing(f"offline, and no {variant.quant} GGUF of {repo} is cached (cached: "
                                 f"{', '.join(sorted(files)) or 'none'}); run once online to fetch it, or use the "
                                 f"bundled demo suite: demo:{variant.quant}")
        if variant.quant not in files:
            have = ", ".join(sorted(files, key=quant_rank)) or "none"
            raise MissingOnHub(f"{repo} has no {variant.quant} GGUF file (it has: {have}); pick one of those, or "
                               f"convert a checkpoint with a spec like step143000:{variant.quant}")
        say(f"{variant.label}: downloading {files[variant.quant]}")
        path = Path(self.hub.download(repo, files[variant.quant], commit))
        return Resolved(variant, path, {"repo": repo, "commit": commit, "file": files[variant.quant],
                                        "sha256": file_sha256(path, self.cache.hash_memo), "bytes": path.stat().st_size,
                                        "quant": variant.quant})

    def _checkpoint(self, variant: Variant, repo: str, revision: str, say: Progress) -> Resolved:
        self.check_step(variant)
        say(f"{variant.label}: looking up {repo}@{revision}")
        commit = self.hub.resolve_commit(repo, revision)
        return self._build(variant, repo, commit, lambda: self.hub.download_checkpoint(repo, commit), say)

    def _demo(self, variant: Variant, say: Progress) -> Resolved:
        demo_dir = self.settings.demo_dir
        steps = demo_steps(demo_dir)
        if not steps:
            raise OfflineMissing(f"the demo suite is missing: no stepN folders under {demo_dir}; reinstall the "
                                 f"project or set PYTHIA_COMPARE_DEMO_DIR")
        rev = variant.revision or f"step{steps[-1]}"
        ckpt = demo_dir / rev
        if not (ckpt / "config.json").is_file():
            raise SpecError(f"variant {variant.spec!r}: the demo suite has no {rev}; it has "
                            f"{', '.join(f'step{s}' for s in steps)}")
        # The demo suite has no git history: its "commit" is a content hash of the checkpoint's files.
        h = hashlib.sha256()
        for f in sorted(p for p in ckpt.iterdir() if p.is_file()):
            h.update(f.name.encode() + b"\0" + file_sha256(f, self.cache.hash_memo).encode())
        commit = h.hexdigest()[:40]
        return self._build(variant, DEMO_ALIAS, commit, lambda: ckpt, say, revision=rev)

    def _build(self, variant: Variant, repo: str, commit: str, fetch: Callable[[], Path], say: Progress,
               revision: str | None = None) -> Resolved:
        from ..models.engine import llama_cpp_version

        quant = variant.quant or "F16"
        base_type = quant if QUANTS[quant].native else "F16"
        stem = f"{repo.replace('/', '--')}-{(revision or variant.revision or commit[:12])}"

        def key(q: str) -> dict:
            return {"repo": repo, "commit": commit, "quant": q, "converter": CONVERTER_VERSION,
                    "llama_cpp": llama_cpp_version()}

        def build_base(target: Path) -> None:
            from .convert import convert_checkpoint  # only to build (it imports gguf): a cached file needs none

            ckpt_dir = fetch()
            say(f"{variant.label}: converting to GGUF {base_type}")
            convert_checkpoint(Path(ckpt_dir), target, base_type)

        if repo != DEMO_ALIAS and (self.cache.lookup(key(base_type)) is None or self.cache.lookup(key(quant)) is None):
            check_conversion(variant, self.conversions, self.settings)  # public mode: a few per run
            self.conversions += 1
        self._hold(key(base_type))  # in use until the run ends: a prune meanwhile leaves it
        base = self.cache.get_or_build(key(base_type), f"{stem}-{base_type}.gguf", build_base)
        entry = base
        if quant != base_type:
            from ..models.quantize import quantize_file

            def build_quant(target: Path) -> None:
                say(f"{variant.label}: quantizing to {quant}")
                quantize_file(base.path, target, quant, n_threads=self.settings.n_threads)

            self._hold(key(quant))
            entry = self.cache.get_or_build(key(quant), f"{stem}-{quant}.gguf", build_quant)
        return Resolved(variant, entry.path, {"repo": repo, "commit": commit, "file": entry.path.name,
                                              "sha256": entry.sha256, "bytes": entry.bytes, "quant": quant})


# GGUF metadata value types (ggml's gguf.h): fixed sizes in bytes; 8 = string, 9 = array.
_GGUF_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_GGUF_FMT = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9
_GGUF_MAX_KEY = 65535  # the GGUF format's limit on a key's length
_GGUF_KEEP_STRING = 256  # string values up to this length are returned; longer ones are skipped


def gguf_scan(path: Path, stop_at: str | None = None) -> tuple[dict[str, object], dict[str, int]]:
    """The scalar metadata of a GGUF header: ({key: int | float | bool | short str}, {"n_tensors", "n_kv"}).

    Reads at most the key-value section, and stops early once `stop_at` is read. Every length and count is
    checked against the bytes left in the file before anything is read or allocated, so a hostile header
    costs nothing; arrays are skipped without decoding (the vocabulary is not read). Raises ModelFileError
    naming the file and what is wrong with its header.
    """
    p = Path(path)
    name = p.name

    def bad(what: str) -> ModelFileError:
        return ModelFileError(f"{name!r} is not a usable GGUF file: {what}; re-download or re-convert it")

    out: dict[str, object] = {}
    with open(p, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(24)
        if len(head) < 4 or head[:4] != b"GGUF":
            raise bad("it does not start with 'GGUF'")
        if len(head) < 24:
            raise bad(f"it ends inside its 24-byte header (the file has {size} bytes)")
        _magic, version, n_tensors, n_kv = struct.unpack("<4sIQQ", head)
        if version not in (2, 3):
            raise bad(f"its header says GGUF version {version}; llama.cpp reads versions 2 and 3")
        # Each key-value pair takes at least 13 bytes, each tensor description at least 33.
        if n_kv > (size - 24) // 13:
            raise bad(f"its header counts {n_kv} metadata entries, more than its {size} bytes can hold")
        if n_tensors > (size - 24) // 33:
            raise bad(f"its header counts {n_tensors} tensors, more than its {size} bytes can hold")
        counts = {"n_tensors": n_tensors, "n_kv": n_kv}

        def take(n: int, what: str) -> bytes:
            if n > size - f.tell():
                raise bad(f"{what} runs past the end of the file")
            data = f.read(n)
            if len(data) != n:
                raise bad(f"{what} runs past the end of the file")
            return data

        def number(fmt: str, what: str):
            return struct.unpack(fmt, take(struct.calcsize(fmt), what))[0]

        def skip(n: int, what: str) -> None:
            if n > size - f.tell():
                raise bad(f"{what} ({n} bytes) runs past the end of the file")
            f.seek(n, 1)

        def value(vtype: int, key: str):
            if vtype == _GGUF_STRING:
                n = number("<Q", f"the length of {key!r}")
                if n <= _GGUF_KEEP_STRING:
                    return take(n, f"the value of {key!r}").decode("utf-8", "replace")
                skip(n, f"the value of {key!r}")
                return None
            if vtype == _GGUF_ARRAY:
                etype, count = number("<I", f"the type of {key!r}"), number("<Q", f"the length of {key!r}")
                if etype == _GGUF_ARRAY or (etype != _GGUF_STRING and etype not in _GGUF_SIZES):
                    raise bad(f"the array {key!r} has elements of an unknown type {etype}")
                least = 8 if etype == _GGUF_STRING else _GGUF_SIZES[etype]
                if count > (size - f.tell()) // least:
                    raise bad(f"the array {key!r} counts {count} elements, more than the file can hold")
                if etype == _GGUF_STRING:
                    for _ in range(count):
                        skip(number("<Q", f"a string in {key!r}"), f"a string in {key!r}")
                else:
                    skip(count * least, f"the array {key!r}")
                return None
            if vtype not in _GGUF_FMT:
                raise bad(f"the entry {key!r} has an unknown type {vtype}")
            return number(_GGUF_FMT[vtype], f"the value of {key!r}")

        for i in range(n_kv):
            n = number("<Q", f"the key of metadata entry {i}")
            if n == 0 or n > _GGUF_MAX_KEY:
                raise bad(f"metadata entry {i} has a key of {n} bytes (a key has 1 … {_GGUF_MAX_KEY})")
            key = take(n, f"the key of metadata entry {i}").decode("utf-8", "replace")
            v = value(number("<I", f"the type of {key!r}"), key)
            if v is not None:
                out[key] = v
            if key == stop_at:
                return out, counts
        if stop_at is None:  # the whole header: the tensor descriptions too, each inside the file
            align = out.get("general.alignment", 32)
            if not isinstance(align, int) or isinstance(align, bool) or not 0 < align <= 1 << 20:
                raise bad(f"its general.alignment {align!r} is not a power of two up to 1 MiB")
            starts = []
            for i in range(n_tensors):
                n = number("<Q", f"the name of tensor {i}")
                if n > _GGUF_MAX_KEY:
                    raise bad(f"tensor {i} has a name of {n} bytes")
                tname = take(n, f"the name of tensor {i}").decode("utf-8", "replace")
                n_dims = number("<I", f"the description of tensor {tname!r}")
                if not 1 <= n_dims <= 4:
                    raise bad(f"tensor {tname!r} has {n_dims} dimensions (a tensor has 1 … 4)")
                skip(8 * n_dims + 4, f"the description of tensor {tname!r}")
                starts.append((tname, number("<Q", f"the data offset of tensor {tname!r}")))
            data_start = -(-f.tell() // align) * align
            for tname, offset in starts:
                if offset >= size - data_start:
                    raise bad(f"the data of tensor {tname!r} would start at byte {offset} of the data section, past "
                              f"the end of the file (it is truncated or corrupt)")
    return out, counts


def _gguf_quant(path: Path) -> str | None:
    """The quant named by a GGUF's general.file_type, or None if absent or unreadable.

    Scans the metadata header only until that key and skips every other value without decoding it (a full
    reader decodes the whole vocabulary first: seconds for a 50k-token model). A header whose lengths or
    counts do not fit the file raises ModelFileError naming what is wrong.
    """
    try:
        meta, _ = gguf_scan(path, stop_at="general.file_type")
    except OSError:
        return None  # unreadable: reported by the engine when it loads, with the reason
    ftype = meta.get("general.file_type")
    if not isinstance(ftype, int) or isinstance(ftype, bool):
        return None
    return next((q.name for q in QUANTS.values() if q.ftype == ftype), None)
