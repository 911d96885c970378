"""The cache budget (Settings.cache_budget_bytes, `cache prune --max-size`): the model cache and the Hugging Face
cache counted together and pruned least recently used first across both.

Owns what the budget counts and the order things go in: the model cache's entries (cache.Cache: converted and
quantized GGUFs, last used when a run last looked one up) and the Hugging Face cache's revisions pythia-compare
used (hub.HfCache: GGUF downloads, checkpoint step revisions, the LAMBADA dataset, last used when a run last used
them, recorded whatever the filesystem does with access times). Deleting is theirs: an entry being built or held
by a run (Cache.hold) and a repo a run holds (hub.Hub) are left, and pruning goes on with the next oldest. A run
holds what it uses until it ends (Resolver.release, called by runs.compare.iter_comparison). Never downloads or
builds.
huggingface_hub is imported only when the Hugging Face cache is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import Settings
from .cache import Cache, CacheEntry


@dataclass
class Pruned:
    """What one prune did: the model cache entries and Hugging Face revisions it deleted, the bytes it freed,
    and the bytes both caches hold after it."""
    entries: list[CacheEntry] = field(default_factory=list)
    revisions: list = field(default_factory=list)  # hub.HfRevision
    freed_bytes: int = 0
    left_bytes: int = 0

    @property
    def entries_bytes(self) -> int:
        return sum(e.bytes for e in self.entries)

    @property
    def revisions_bytes(self) -> int:
        return self.freed_bytes - self.entries_bytes


class CacheBudget:
    """Both caches of one Settings: Settings.home's model cache and Settings.hf_cache_dir's revisions."""

    def __init__(self, settings: Settings):
        self.models = Cache(settings.home)
        self.hf_cache_dir = Path(settings.hf_cache_dir).expanduser()
        self._hf = None

    @property
    def hf(self):
        """hub.HfCache of the Hugging Face cache (imported on first use: huggingface_hub costs time at start)."""
        if self._hf is None:
            from .hub import HfCache

            self._hf = HfCache(self.hf_cache_dir)
        return self._hf

    def total_bytes(self) -> int:
        """What the budget counts now: the model cache's files and the Hugging Face revisions pythia-compare used."""
        return self.models.total_bytes() + self.hf.total_bytes()

    def prune(self, max_bytes: int) -> Pruned:
        """Delete the least recently used model files and Hugging Face revisions, oldest first whichever cache
        holds them, until both together hold at most max_bytes (0: everything not in use). What is being built or
        used by a run in progress is skipped, so the result may stay above max_bytes until those runs end."""
        done = Pruned()
        skipped: set[tuple] = set()
        while True:
            entries, revisions = self.models.entries(), self.hf.revisions()
            total = sum(e.bytes for e in entries) + self.hf.total_bytes(revisions)
            done.left_bytes = total
            if total <= max_bytes:
                return done
            candidates = ([(e.last_used, ("model", str(e.path)), e) for e in entries]
                          + [(r.last_used, ("hf", str(r.repo_path), r.commit), r) for r in revisions])
            candidates = sorted((c for c in candidates if c[1] not in skipped), key=lambda c: c[0])
            if not candidates:
                return done  # everything left is in use
            _, key, item = candidates[0]
            if key[0] == "model":
                if self.models.remove(item):
                    done.entries.append(item)
                    done.freed_bytes += item.bytes
                else:
                    skipped.add(key)
            else:
                freed = self.hf.remove(item)
                if freed is None:
                    skipped.add(key)
                else:
                    done.revisions.append(item)
                    done.freed_bytes += freed
