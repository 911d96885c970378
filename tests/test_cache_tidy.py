"""The app tidies its model cache (issue 18, "Also"): the `.part` file a killed build leaves behind is swept when
the app starts (unless that entry is being built now), and a public app (a Space) prunes the cache to its
budget, least recently used first, as `cache prune` does. Real cache folders, real file locks, the real app
builder (ui.build_demo)."""

from __future__ import annotations

import json
import time

from filelock import FileLock

from pythia_compare.sources.cache import Cache
from pythia_compare.web.ui import build_demo
from tests.ui_support import demo_suite, settings_for


def entry(home, name: str, size: int, last_used: float) -> None:
    """A finished cache entry as Cache writes one: the GGUF, then its meta.json."""
    d = home / "models" / name
    d.mkdir(parents=True)
    (d / f"{name}.gguf").write_bytes(b"G" * size)
    (d / "meta.json").write_text(json.dumps({"key": {"repo": name}, "file": f"{name}.gguf", "sha256": "0" * 64,
                                             "bytes": size, "created": last_used, "last_used": last_used}))


def test_the_app_sweeps_a_killed_builds_part_file_at_start_but_not_one_being_built(tmp_path):
    settings = settings_for(tmp_path, demo_suite(tmp_path / "demo-standin"))
    entry(settings.home, "done", 100, time.time())
    stale = settings.home / "models" / "killed" / ".model.gguf.abc123.part"
    live = settings.home / "models" / "building" / ".model.gguf.def456.part"
    for part in (stale, live):
        part.parent.mkdir(parents=True)
        part.write_bytes(b"half a model")
    with FileLock(str(live.parent / ".lock")):  # another process is building this entry now
        demo = build_demo(settings)
    assert not stale.exists() and live.exists()
    assert [e.key["repo"] for e in Cache(settings.home).entries()] == ["done"]  # finished entries untouched
    demo.handlers.pool.close()


def test_a_public_app_prunes_the_model_cache_to_its_budget_least_recently_used_first(tmp_path):
    settings = settings_for(tmp_path, demo_suite(tmp_path / "demo-standin"), public=True, cache_budget_bytes=2500)
    now = time.time()
    for age, name in enumerate(["newest", "middle", "oldest"]):
        entry(settings.home, name, 1000, now - 3600 * age)
    demo = build_demo(settings)
    assert [e.key["repo"] for e in Cache(settings.home).entries()] == ["newest", "middle"]
    demo.handlers.pool.close()


def test_a_local_app_leaves_the_cache_budget_to_cache_prune(tmp_path):
    settings = settings_for(tmp_path, demo_suite(tmp_path / "demo-standin"), cache_budget_bytes=10)
    entry(settings.home, "kept", 1000, time.time())
    demo = build_demo(settings)
    assert [e.key["repo"] for e in Cache(settings.home).entries()] == ["kept"]
    demo.handlers.pool.close()
