"""Where a variant's GGUF file comes from: local file, Hub GGUF download, or checkpoint -> convert -> quantize.

Owns turning a `Variant` into a local GGUF path plus its provenance (the run JSON's "source": repo,
commit, file, sha256, bytes, quant). Uses hub.py for the network, convert.py and quantize.py to build
files, and cache.py to keep them. Never loads a model for inference and never writes the run log.
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .cache import Cache, file_sha256
from .config import Settings
from .errors import MissingOnHub, OfflineMissing, SpecError
from .variants import DEMO_ALIAS, QUANTS, Variant

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
        self._steps: dict[str, list[int] | None] = {}  # repo -> its steps, asked once per resolver

    @property
    def hub(self):
        if self._hub is None:
            from .hub import Hub  # imported on first use: huggingface_hub costs time at start-up
            self._hub = Hub(self.settings)
        return self._hub

    def resolve(self, variant: Variant, progress: Progress | None = None) -> Resolved:
        say = progress or _noop
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
        from .variants import PYTHIA_STEPS, V0_STEPS

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
        from .engine import check_gguf_file  # validates existence and the GGUF magic

        p = check_gguf_file(variant.path or "")
        quant = _gguf_quant(p) or _quant_from_name(p.name)
        return Resolved(variant, p, {"repo": None, "commit": None, "file": str(p), "sha256": file_sha256(p, self.cache.hash_memo),
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
            have = ", ".join(sorted(files, key=lambda q: -QUANTS[q].bpw)) or "none"
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
        from .convert import CONVERTER_VERSION, convert_checkpoint
        from .engine import llama_cpp_version

        quant = variant.quant or "F16"
        base_type = quant if QUANTS[quant].native else "F16"
        stem = f"{repo.replace('/', '--')}-{(revision or variant.revision or commit[:12])}"

        def key(q: str) -> dict:
            return {"repo": repo, "commit": commit, "quant": q, "converter": CONVERTER_VERSION,
                    "llama_cpp": llama_cpp_version()}

        def build_base(target: Path) -> None:
            ckpt_dir = fetch()
            say(f"{variant.label}: converting to GGUF {base_type}")
            convert_checkpoint(Path(ckpt_dir), target, base_type)

        base = self.cache.get_or_build(key(base_type), f"{stem}-{base_type}.gguf", build_base)
        entry = base
        if quant != base_type:
            from .quantize import quantize_file

            def build_quant(target: Path) -> None:
                say(f"{variant.label}: quantizing to {quant}")
                quantize_file(base.path, target, quant, n_threads=self.settings.n_threads)

            entry = self.cache.get_or_build(key(quant), f"{stem}-{quant}.gguf", build_quant)
        return Resolved(variant, entry.path, {"repo": repo, "commit": commit, "file": entry.path.name,
                                              "sha256": entry.sha256, "bytes": entry.bytes, "quant": quant})


# GGUF metadata value types (ggml's gguf.h): fixed sizes in bytes; 8 = string, 9 = array.
_GGUF_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_GGUF_STRING, _GGUF_ARRAY, _GGUF_UINT32 = 8, 9, 4


def _gguf_quant(path: Path) -> str | None:
    """The quant named by a GGUF's general.file_type, or None if absent or unreadable.

    Scans the metadata header only until that key and skips every other value without decoding it (a full
    reader decodes the whole vocabulary first: seconds for a 50k-token model).
    """
    try:
        with open(path, "rb") as f:
            magic, version, _n_tensors, n_kv = struct.unpack("<4sIQQ", f.read(24))
            if magic != b"GGUF" or version < 2:
                return None
            def read(fmt: str) -> int:
                return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]

            def skip(vtype: int, count: int = 1) -> None:
                if vtype == _GGUF_STRING:
                    for _ in range(count):
                        f.seek(read("<Q"), 1)
                elif vtype == _GGUF_ARRAY:
                    for _ in range(count):
                        etype = read("<I")
                        skip(etype, read("<Q"))
                else:
                    f.seek(_GGUF_SIZES[vtype] * count, 1)

            for _ in range(n_kv):
                key = f.read(read("<Q"))
                vtype = read("<I")
                if key == b"general.file_type" and vtype == _GGUF_UINT32:
                    ftype = read("<I")
                    return next((q.name for q in QUANTS.values() if q.ftype == ftype), None)
                skip(vtype)
    except (OSError, struct.error, KeyError, ValueError):
        return None  # a damaged file is reported by the engine when it loads, with llama.cpp's reason
    return None


def _quant_from_name(name: str) -> str:
    """Best guess of a local file's quant from its name ('model.Q4_K_M.gguf' -> 'Q4_K_M'), else 'unknown'."""
    from .variants import QUANT_ALIASES

    stem = name.rsplit(".", 1)[0].upper()
    for q in sorted(list(QUANTS) + list(QUANT_ALIASES), key=len, reverse=True):
        if re.search(rf"(^|[^A-Z0-9]){q}($|[^A-Z0-9])", stem):
            return QUANT_ALIASES.get(q, q)
    return "unknown"
