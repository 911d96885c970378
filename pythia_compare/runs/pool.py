"""The models a process keeps loaded: `ModelPool`, under a memory budget (bytes of the GGUF files, which
llama.cpp maps, plus what a model's repacked generation handle costs), thread-safe, evicting the least recently
used model that no run holds. A logit-lens context (models/lenscapture.py) counts too: it asks `may_grow` before it is
made and is added to its model's extra_bytes while it lives.

Loads through engine.Model and never calls llama_cpp itself; a run holds its models with `hold()` for as long as
it uses them, and `check_budget()` refuses, before any work, a run whose models cannot be loaded together.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..config import Settings
from ..models.engine import Model, check_gguf_file
from ..errors import BudgetError


class ModelPool:
    """Loaded models under a memory budget (bytes of their GGUF files), thread-safe, LRU-evicting.

    A model held by `hold()` is never evicted. `hold()` checks first that the run's models fit together.
    `loads` counts the models it has loaded (a model reused from the pool is not a load).
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self._lock = threading.Lock()
        self._models: OrderedDict[str, Model] = OrderedDict()
        self._pins: dict[str, int] = {}
        self._loading: dict[str, threading.Lock] = {}
        self.loads = 0  # models loaded by this pool so far (a reuse counts nothing): Run all loads each model once

    @staticmethod
    def model_bytes(path: str | Path) -> int:
        return check_gguf_file(path).stat().st_size

    def check_budget(self, paths: list[str | Path], labels: list[str] | None = None) -> None:
        """Raise BudgetError, before any work, if these models cannot be loaded together."""
        sizes = [self.model_bytes(p) for p in paths]
        total = sum(sizes)
        budget = self.settings.memory_budget_bytes
        if total > budget:
            names = labels or [Path(p).name for p in paths]
            parts = ", ".join(f"{n} {_mb(s)}" for n, s in zip(names, sizes))
            raise BudgetError(f"these models need {_mb(total)} together but the memory budget is {_mb(budget)} "
                              f"({parts}); compare fewer or smaller variants, or raise the budget "
                              f"(PYTHIA_COMPARE_MEMORY_BUDGET, e.g. {max(1, -(-total // 1024**3))}G)")

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._models)

    @contextmanager
    def hold(self, paths: list[str | Path], n_ctx: int, labels: list[str] | None = None) -> Iterator[list[Model]]:
        """Load (or reuse) every model in `paths`, pinned against eviction for the duration."""
        self.check_budget(paths, labels)
        keys = [str(Path(p).expanduser().resolve()) for p in paths]
        from ..sources.probe import ensure_loadable

        for p, key in zip(paths, keys):
            if key not in self._models:  # a file never loaded here is first loaded in a throwaway subprocess
                ensure_loadable(p, self.settings)
        acquired: list[str] = []
        try:
            models = []
            for key in keys:
                models.append(self._acquire(key, n_ctx, keys))
                acquired.append(key)
            yield models
        finally:
            with self._lock:
                for key in acquired:
                    self._pins[key] -= 1
                    if self._pins[key] == 0:
                        del self._pins[key]

    def _acquire(self, key: str, n_ctx: int, run_keys: list[str]) -> Model:
        with self._lock:
            load_lock = self._loading.setdefault(key, threading.Lock())
        with load_lock:
            with self._lock:
                model = self._models.get(key)
                if model is not None:
                    self._models.move_to_end(key)
                    self._pins[key] = self._pins.get(key, 0) + 1
                    return model
                self._make_room(self.model_bytes(key), run_keys)
            model = Model(key, self.settings, n_ctx)
            model.may_grow = self._may_grow
            with self._lock:
                self.loads += 1
                self._models[key] = model
                self._pins[key] = self._pins.get(key, 0) + 1
            return model

    def _may_grow(self, nbytes: int) -> bool:
        """Whether a loaded model may take nbytes more (its generation handle) under the budget."""
        with self._lock:
            used = sum(m.file_bytes + m.extra_bytes for m in self._models.values())
            return used + nbytes <= self.settings.memory_budget_bytes

    def _make_room(self, need: int, keep: list[str]) -> None:
        budget = self.settings.memory_budget_bytes
        used = sum(m.file_bytes + m.extra_bytes for m in self._models.values())
        for key in list(self._models):
            if used + need <= budget:
                break
            if self._pins.get(key) or key in keep:
                continue
            victim = self._models.pop(key)
            used -= victim.file_bytes + victim.extra_bytes
            victim.close()
        if used + need > budget:
            held = ", ".join(f"{Path(k).name} {_mb(self._models[k].file_bytes)}" for k in self._models)
            raise BudgetError(f"cannot load another {_mb(need)} under the memory budget of {_mb(budget)}: models "
                              f"in use by other runs hold {_mb(used)} ({held}); try again when they finish")

    def close(self) -> None:
        with self._lock:
            for m in self._models.values():
                m.close()
            self._models.clear()


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"
