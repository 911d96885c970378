"""The cache budget covers the Hugging Face cache too (issue 18, "Also"): a public app and `cache prune` bring the
model cache plus the Hugging Face revisions pythia-compare used under the budget, least recently used first across
both, and leave what a run in progress uses. The real huggingface_hub client downloads from the fake Hub
(tests/fakehub.py) into a temporary Hugging Face cache; real files, real runs, the real CLI in its own process."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from pythia_compare.config import Settings
from pythia_compare.runs.compare import RunParams, run_comparison
from pythia_compare.runs.pool import ModelPool
from pythia_compare.sources.budget import CacheBudget
from pythia_compare.sources.hub import Hub
from pythia_compare.web.dashboard import Dashboard
from tests.fakehub import FakeHub, files_from_dir
from tests.support import ROOT, run_cli

REPO = "org/pythia-gguf"  # a GGUF repo with two revisions: an older one (branch "old") and main
OLD_FILE, MAIN_FILE = "tiny.Q8_0.gguf", "tiny.Q4_K_M.gguf"
LAMBADA = "EleutherAI/lambada_openai"
CKPT = "org/pythia-ckpt"  # a checkpoint repo with a step branch, converted by the run that names it
PROMPT = "The cache budget counts both caches."
HOUR = 3600.0


@pytest.fixture(scope="module")
def hub(tiny_ggufs, tiny_ckpt):
    h = FakeHub()
    h.add_revision(CKPT, "step1", files_from_dir(tiny_ckpt))
    h.add_revision(REPO, "old", {OLD_FILE: tiny_ggufs["Q8_0"].read_bytes()})
    h.add_revision(REPO, "main", {MAIN_FILE: tiny_ggufs["Q4_K_M"].read_bytes()})
    h.lambada_commit = h.add_dataset(LAMBADA, {"data/lambada_test_en.jsonl": (ROOT / "assets" / "demo" /
                                                                              "lambada.jsonl").read_bytes()},
                                     private=False)
    with h:
        yield h


def online(tmp_path: Path, hub: FakeHub, **kw) -> Settings:
    return Settings(db_path=tmp_path / "runs.db", home=tmp_path / "home", hf_cache_dir=tmp_path / "hf",
                    hub_endpoint=hub.endpoint, gguf_repo=REPO, allowed_repos=(REPO,), flash_attn=False,
                    lambada_revision=hub.lambada_commit, **kw)


def cli(settings: Settings, *args: str):
    return run_cli(["--db", str(settings.db_path), "--home", str(settings.home), "cache", *args],
                   env={"HF_HUB_CACHE": str(settings.hf_cache_dir), "HF_ENDPOINT": settings.hub_endpoint,
                        "COLUMNS": "200"})


def fetch(settings: Settings, branch: str, filename: str) -> tuple[str, Path]:
    """Download one file of REPO at `branch` as a run does (hub.py), and end that use; (its commit, its path)."""
    hub = Hub(settings)
    commit = hub.resolve_commit(REPO, branch)
    path = hub.download(REPO, filename, commit)
    hub.release()
    return commit, path


def snapshot(settings: Settings, commit: str, repo_type: str = "model", repo: str = REPO) -> Path:
    return settings.hf_cache_dir / f"{repo_type}s--{repo.replace('/', '--')}" / "snapshots" / commit


def used_ago(settings: Settings, commit: str, seconds: float, repo_type: str = "model", repo: str = REPO) -> None:
    """Make a revision look last used `seconds` ago: its use record and its files' times (hub.HfCache)."""
    folder = f"{repo_type}s--{repo.replace('/', '--')}"
    then = time.time() - seconds
    for p in [settings.hf_cache_dir / ".locks" / "pythia-compare" / folder / commit,
              *(f.resolve() for f in snapshot(settings, commit, repo_type, repo).rglob("*") if f.is_file())]:
        os.utime(p, (then, then))


def model_entry(settings: Settings, name: str, size: int, seconds_ago: float) -> Path:
    """A finished model cache entry as cache.Cache writes one (the GGUF, then its meta.json), last used then."""
    d = settings.home / "models" / name
    d.mkdir(parents=True)
    (d / f"{name}.gguf").write_bytes(b"G" * size)
    used = time.time() - seconds_ago
    (d / "meta.json").write_text(json.dumps({"key": {"repo": name, "quant": "Q8_0", "commit": "c" * 40},
                                             "file": f"{name}.gguf", "sha256": "0" * 64, "bytes": size,
                                             "created": used, "last_used": used}))
    return d / f"{name}.gguf"


def revisions(settings: Settings) -> list[str]:
    return [r.commit for r in CacheBudget(settings).hf.revisions()]


# ------------------------------------------------------------------------------------------ a public app
def test_a_public_app_prunes_the_oldest_hugging_face_revision_after_a_run_and_keeps_the_one_the_run_used(hub,
                                                                                                      tmp_path):
    main_size = len(hub._revision(REPO, "main").files[MAIN_FILE].data)
    old_size = len(hub._revision(REPO, "old").files[OLD_FILE].data)
    room = max(main_size, old_size) + 1000  # either revision fits, both do not
    assert room < main_size + old_size
    settings = online(tmp_path, hub, public=True, cache_budget_bytes=room)
    old, old_path = fetch(settings, "old", OLD_FILE)  # an earlier run's download, an hour ago
    used_ago(settings, old, HOUR)
    core = Dashboard(settings)
    try:
        core.tidy_cache()  # at start: one revision, within the budget
        assert old_path.is_file()
        events = list(core.run([f"{REPO}:Q4_K_M"], PROMPT, RunParams(max_tokens=0, top_k=3), None))
    finally:
        core.pool.close()
    assert events[-1][0] == "done" and events[-1][3].variants[0].source.file == MAIN_FILE
    main = hub._revision(REPO, "main").commit
    assert revisions(settings) == [main]  # the old revision went, the one the run used stayed
    assert not snapshot(settings, old).exists() and not old_path.exists()
    kept = snapshot(settings, main) / MAIN_FILE
    assert kept.read_bytes() == hub._revision(REPO, "main").files[MAIN_FILE].data
    assert CacheBudget(settings).total_bytes() == main_size <= settings.cache_budget_bytes


def test_a_public_app_starts_and_tidies_with_a_hugging_face_cache_that_is_missing_or_empty(tmp_path, caplog):
    for state in ("missing", "empty"):
        settings = Settings(db_path=tmp_path / state / "runs.db", home=tmp_path / state / "home",
                            hf_cache_dir=tmp_path / state / "hf", offline=True, public=True, cache_budget_bytes=0)
        if state == "empty":
            settings.hf_cache_dir.mkdir(parents=True)
        core = Dashboard(settings)
        try:
            core.tidy_cache()
        finally:
            core.pool.close()
        assert settings.hf_cache_dir.is_dir() == (state == "empty")  # nothing made, nothing removed
    assert "failed" not in caplog.text


# ------------------------------------------------------------------------------------------ the CLI
def test_cache_list_shows_both_caches_and_prune_takes_the_least_recently_used_first_across_them(hub, tmp_path):
    settings = online(tmp_path, hub)
    old, _ = fetch(settings, "old", OLD_FILE)
    main, _ = fetch(settings, "main", MAIN_FILE)
    built = model_entry(settings, "step3000-Q8_0", 5000, seconds_ago=HOUR)
    used_ago(settings, old, 2 * HOUR)  # oldest: the old revision; then the model file; the main revision is newest
    sizes = {f: len(hub._revision(REPO, b).files[f].data) for b, f in (("old", OLD_FILE), ("main", MAIN_FILE))}

    listed = cli(settings, "list")
    assert listed.returncode == 0, listed.stderr
    assert "step3000-Q8_0.gguf" in listed.stdout  # the model cache, as before
    assert f"{REPO}@{old[:8]}" in listed.stdout and f"{REPO}@{main[:8]}" in listed.stdout and "old" in listed.stdout
    total = 5000 + sizes[OLD_FILE] + sizes[MAIN_FILE]
    assert f"{total / 1e6:.1f} MB in all" in listed.stdout

    first = cli(settings, "prune", "--max-size", str(5000 + sizes[MAIN_FILE]))
    assert first.returncode == 0 and "removed 0 files" in first.stdout and "1 Hugging Face revisions" in first.stdout
    assert revisions(settings) == [main] and built.is_file()
    second = cli(settings, "prune", "--max-size", str(sizes[MAIN_FILE]))
    assert "removed 1 files" in second.stdout and "0 Hugging Face revisions" in second.stdout
    assert revisions(settings) == [main] and not built.exists()
    last = cli(settings, "prune")  # default --max-size 0: everything no run uses
    assert "1 Hugging Face revisions" in last.stdout and "0.0 MB left" in last.stdout
    assert revisions(settings) == [] and not (settings.hf_cache_dir / "models--org--pythia-gguf").exists()


@pytest.mark.parametrize("state", ["missing", "empty", "a file"])
def test_cache_list_and_prune_are_fine_with_a_hugging_face_cache_that_is_missing_empty_or_not_a_folder(tmp_path,
                                                                                                     state):
    settings = Settings(db_path=tmp_path / "runs.db", home=tmp_path / "home", hf_cache_dir=tmp_path / "hf",
                        hub_endpoint="http://127.0.0.1:9")
    if state == "empty":
        settings.hf_cache_dir.mkdir()
    elif state == "a file":
        settings.hf_cache_dir.write_text("not a folder")
    listed = cli(settings, "list")
    assert listed.returncode == 0, listed.stderr
    assert "nothing pythia-compare used" in listed.stdout and "0.0 MB in all" in listed.stdout
    pruned = cli(settings, "prune")
    assert pruned.returncode == 0 and "removed 0 files (0.0 MB) and 0 Hugging Face revisions" in pruned.stdout
    assert settings.hf_cache_dir.exists() == (state != "missing")
    assert settings.hf_cache_dir.is_file() == (state == "a file")


def test_a_revision_a_run_finds_already_cached_counts_as_just_used(hub, tmp_path):
    settings = online(tmp_path, hub)
    old, _ = fetch(settings, "old", OLD_FILE)
    main, _ = fetch(settings, "main", MAIN_FILE)
    used_ago(settings, old, HOUR)
    used_ago(settings, main, 2 * HOUR)
    fetch(settings, "main", MAIN_FILE)  # a later run finds main's file in the cache: nothing is downloaded or read
    assert revisions(settings) == [main, old]
    CacheBudget(settings).prune(len(hub._revision(REPO, "main").files[MAIN_FILE].data))
    assert revisions(settings) == [main]


# ------------------------------------------------------------------------------------------ what a run is using
def run_with_a_prune(settings, specs: list[str], text: str, params, when) -> tuple:
    """(the run, [the CompletedProcess of `cache prune`]): a run on its own pool, and another process's `cache prune`
    (--max-size 0) at the first of its events for which when(event) is true."""
    during = []

    def prune_now(event) -> None:
        if when(event) and not during:
            during.append(cli(settings, "prune"))

    pool = ModelPool(settings)
    try:
        run = run_comparison(specs, text, params, settings=settings, pool=pool, on_event=prune_now)
    finally:
        pool.close()
    return run, during


def test_a_prune_while_a_run_uses_a_repo_leaves_that_repo_whole_and_takes_it_once_the_run_has_ended(hub, tmp_path):
    settings = online(tmp_path, hub)
    old, old_path = fetch(settings, "old", OLD_FILE)
    used_ago(settings, old, HOUR)
    # downloaded, about to load: the run is using it
    run, during = run_with_a_prune(settings, [f"{REPO}:Q4_K_M"], PROMPT, RunParams(max_tokens=0, top_k=3),
                                   lambda event: event.message == "loading models")
    main = hub._revision(REPO, "main").commit
    assert run.variants[0].source.commit == main
    assert during and "removed 0 files (0.0 MB) and 0 Hugging Face revisions" in during[0].stdout
    assert "in use" in during[0].stderr
    assert old_path.is_file()  # the repo's other revision too: a whole repo is left while a run uses it
    after = cli(settings, "prune")
    assert "2 Hugging Face revisions" in after.stdout and revisions(settings) == []


def test_the_pinned_lambada_revision_is_kept_while_a_lambada_run_reads_it_and_pruned_after(hub, tmp_path):
    settings = online(tmp_path, hub)
    # the first event comes after the dataset was fetched
    run, during = run_with_a_prune(settings, ["demo"], "", RunParams(scoring="lambada", ctx=128, limit=4),
                                   lambda event: True)
    assert run.lambada.revision == hub.lambada_commit and len(run.variants[0].lambada.loglikelihood) == 4
    data = snapshot(settings, hub.lambada_commit, "dataset", LAMBADA) / "data" / "lambada_test_en.jsonl"
    assert during and "0 Hugging Face revisions" in during[0].stdout
    assert data.is_file()
    after = cli(settings, "prune")
    assert "1 Hugging Face revisions" in after.stdout and not data.exists()


def test_a_download_under_way_keeps_its_repo_whole_and_ends_with_the_right_bytes(hub, tmp_path):
    settings = online(tmp_path, hub)
    old, old_path = fetch(settings, "old", OLD_FILE)
    used_ago(settings, old, HOUR)
    during = []

    def prune_mid_download(request) -> None:
        if request.path.endswith(MAIN_FILE) or request.query.get("file") == MAIN_FILE:
            during.append((CacheBudget(settings).prune(0), old_path.is_file()))

    hub.before_download = prune_mid_download
    try:
        commit, path = fetch(settings, "main", MAIN_FILE)
    finally:
        hub.before_download = None
    assert during and all(not done.revisions and kept for done, kept in during)
    assert path.read_bytes() == hub._revision(REPO, "main").files[MAIN_FILE].data
    assert len(CacheBudget(settings).prune(0).revisions) == 2


def test_a_download_by_another_tool_is_left_alone_and_only_what_pythia_compare_used_is_pruned(hub, tmp_path):
    from huggingface_hub import hf_hub_download

    settings = online(tmp_path, hub)
    old, old_path = fetch(settings, "old", OLD_FILE)  # pythia-compare's
    main = hub._revision(REPO, "main").commit
    during = []

    def prune_mid_download(request) -> None:
        if request.path.endswith(MAIN_FILE) or request.query.get("file") == MAIN_FILE:
            during.append((CacheBudget(settings).prune(0), old_path.is_file()))

    hub.before_download = prune_mid_download
    try:  # another tool (here huggingface_hub itself) downloads main into the same cache
        theirs = Path(hf_hub_download(REPO, MAIN_FILE, revision=main, cache_dir=settings.hf_cache_dir,
                                      endpoint=hub.endpoint))
    finally:
        hub.before_download = None
    assert during and all(not done.revisions and kept for done, kept in during)  # its download was under way
    assert theirs.read_bytes() == hub._revision(REPO, "main").files[MAIN_FILE].data
    done = CacheBudget(settings).prune(0)
    assert [r.commit for r in done.revisions] == [old] and not old_path.exists()
    assert theirs.is_file() and revisions(settings) == []  # never pythia-compare's: neither counted nor deleted


def test_a_checkpoint_being_converted_and_its_gguf_are_left_and_after_the_run_the_checkpoint_goes_first(hub,
                                                                                                        tmp_path):
    settings = online(tmp_path, hub)
    during = []

    def prune_now(event) -> None:
        if "converting" in event.message and not during:
            during.append(cli(settings, "prune"))

    pool = ModelPool(settings)
    try:
        run = run_comparison([f"{CKPT}@step1"], PROMPT, RunParams(max_tokens=0, top_k=3), settings=settings,
                             pool=pool, on_event=prune_now)
    finally:
        pool.close()
    step1 = hub._revision(CKPT, "step1").commit
    assert during and "removed 0 files (0.0 MB) and 0 Hugging Face revisions" in during[0].stdout  # both in use
    converted = CacheBudget(settings).models.entries()
    assert [e.path.name for e in converted] == [run.variants[0].source.file]
    assert revisions(settings) == [step1]  # the checkpoint's files are still there after the run
    # the converted file was made after the download: the checkpoint is the older, and goes first
    after = cli(settings, "prune", "--max-size", str(converted[0].bytes))
    assert "removed 0 files" in after.stdout and "1 Hugging Face revisions" in after.stdout
    assert revisions(settings) == [] and converted[0].path.is_file()
