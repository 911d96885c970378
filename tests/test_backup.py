"""The run backup against the local fake Hub: what reaches the dataset, what a restart restores, what breaks it.

Real huggingface_hub client code (CommitScheduler, create_repo, create_commit, dataset_info, hf_hub_download)
talks to tests/fakehub.py on 127.0.0.1; real SQLite files; the dashboard's own save and delete paths.
Pushes are triggered by the tests (the schedule is set to an hour), so nothing waits on a clock.
"""

from __future__ import annotations

import copy
import json
import logging

import pytest

from tests.fakehub import FakeHub
from pythia_compare.runs.backup import Backup
from pythia_compare.config import Settings
from pythia_compare.web.dashboard import Dashboard
from pythia_compare.runs.store import RunStore
from tests.store_runs import full_run

WRITE = "hf_" + "w" * 34  # alice's write token
READ = "hf_" + "r" * 34  # alice's read-only token
SECRET = "the-owner-secret-of-these-tests"
REPO = "alice/pythia-runs"
OWNER_A = "browserA_" + "a" * 20
OWNER_B = "browserB_" + "b" * 20


@pytest.fixture
def hub():
    with FakeHub() as h:
        h.add_token(WRITE, "alice")
        h.add_token(READ, "alice", write=False)
        yield h


@pytest.fixture
def started():
    """Backups started by a test, closed (final push) at its end even if it fails."""
    backups: list[Backup] = []
    yield backups
    for b in backups:
        b.close()


def settings_of(tmp_path, hub, name: str, **changes) -> Settings:
    """One app instance: its own run log and caches, the fake Hub, backup configured, pushes hourly."""
    base = dict(db_path=tmp_path / name / "runs.db", home=tmp_path / name / "home", hf_cache_dir=tmp_path / name / "hf",
                offline=False, hub_endpoint=hub.endpoint, hf_token=WRITE, backup_repo=REPO, owner_secret=SECRET,
                backup_minutes=60.0, public=True)
    base.update(changes)
    return Settings(**base)


def start(settings: Settings, started: list) -> tuple[Backup, RunStore]:
    backup = Backup.start(settings)
    started.append(backup)
    return backup, RunStore(settings.db_path, owner_secret=settings.owner_secret)


def save(store: RunStore, backup: Backup, seed: int, owner: str | None = None, **run_changes) -> dict:
    """What the dashboard does when a run finishes: save, then record, then show the stored run."""
    run = full_run(seed=seed, text=f"run number {seed}")
    run.update(run_changes)
    stored = store.get(store.save(run, owner=owner))
    backup.record(stored, owner=owner)
    return stored


def dataset_lines(hub: FakeHub) -> dict[str, list[dict]]:
    return {name: [json.loads(line) for line in data.decode().splitlines()]
            for name, data in hub.dataset_files(REPO).items() if name.endswith(".jsonl")}


# ------------------------------------------------------------------------------------------ restore


def test_a_restart_on_a_fresh_disk_restores_every_acknowledged_run_with_its_id_and_owner(tmp_path, hub, started):
    backup, store = start(settings_of(tmp_path, hub, "first"), started)
    assert backup.on, backup.reason
    runs = [save(store, backup, 1, OWNER_A), save(store, backup, 2, OWNER_B), save(store, backup, 3)]
    backup.close()  # shutdown: the last push

    again, fresh = start(settings_of(tmp_path, hub, "second"), started)  # a new disk: an empty run log
    assert again.on and again.restore.imported == 3 and again.restore.skipped == []
    for run in runs:
        assert fresh.get(run["run_id"]) == run  # a permalink shows the same run, bit for bit
    assert [r["run_id"] for r in fresh.list(owner=OWNER_A)] == [runs[0]["run_id"]]  # each History survives
    assert [r["run_id"] for r in fresh.list(owner=OWNER_B)] == [runs[1]["run_id"]]
    assert fresh.list(owner="browserC_" + "c" * 20) == []


def test_the_backup_files_a_restore_downloads_count_in_the_cache_budget_and_a_prune_takes_them(tmp_path, hub,
                                                                                                 started):
    from pythia_compare.sources.budget import CacheBudget

    backup, store = start(settings_of(tmp_path, hub, "first"), started)
    runs = [save(store, backup, s, OWNER_A) for s in (1, 2)]
    backup.close()
    settings = settings_of(tmp_path, hub, "second")
    again, fresh = start(settings, started)
    assert again.restore.imported == 2
    hf = settings.hf_cache_dir / ("datasets--" + REPO.replace("/", "--"))
    assert any((hf / "blobs").iterdir())  # the restore read the dataset's files through huggingface_hub's cache
    CacheBudget(settings).prune(0)  # what a public app does at start and after each run, with no room at all
    assert not (hf / "blobs").exists() or not any((hf / "blobs").iterdir())
    assert [fresh.get(r["run_id"]) for r in runs] == runs  # the runs live in the run log, not in those copies


def test_restoring_the_same_dataset_twice_changes_nothing(tmp_path, hub, started):
    backup, store = start(settings_of(tmp_path, hub, "first"), started)
    ids = [save(store, backup, s, OWNER_A)["run_id"] for s in (1, 2)]
    backup.push()
    second, _ = start(settings_of(tmp_path, hub, "first"), started)  # the same disk, started again
    assert (second.restore.imported, second.restore.present) == (0, 2)
    assert store.count() == 2 and sorted(r["run_id"] for r in store.list()) == sorted(ids)


def test_a_deleted_run_stays_deleted_after_a_restore(tmp_path, hub, started):
    settings = settings_of(tmp_path, hub, "first")
    backup = Backup.start(settings)
    started.append(backup)
    page = Dashboard(settings, pool=object(), backup=backup)  # the page's delete path (no model needed)
    keep = save(page.store, backup, 1, OWNER_A)
    gone = save(page.store, backup, 2, OWNER_A)
    assert page.delete(gone["run_id"], OWNER_A)
    backup.push()
    lines = [line for lines in dataset_lines(hub).values() for line in lines]
    assert {"backup": 1, "deleted": gone["run_id"], "at": lines[-1]["at"]} == lines[-1]  # the tombstone

    fresh_backup, fresh = start(settings_of(tmp_path, hub, "second"), started)
    assert [r["run_id"] for r in fresh.list()] == [keep["run_id"]]
    # A log that still holds the run (restored before the deletion was pushed) loses it at the next restore.
    stale = RunStore(tmp_path / "stale" / "runs.db", owner_secret=SECRET)
    stale.import_run(gone, owner=stale.owner_key(OWNER_A))
    start(settings_of(tmp_path, hub, "stale"), started)
    assert stale.count() == 1 and stale.list()[0]["run_id"] == keep["run_id"]


# ------------------------------------------------------------------------------------------ pushing


def test_a_run_is_in_the_local_backup_file_before_its_id_is_returned(tmp_path, hub, started):
    backup, store = start(settings_of(tmp_path, hub, "first"), started)
    run = save(store, backup, 1, OWNER_A)
    written = [json.loads(line) for f in backup.folder.glob("*.jsonl") for line in f.read_text().splitlines()]
    assert [w["run"]["run_id"] for w in written] == [run["run_id"]]  # so the next push carries it


def test_a_commit_that_fails_with_500_loses_nothing_the_next_push_carries_it(tmp_path, hub, started, caplog):
    backup, store = start(settings_of(tmp_path, hub, "first"), started)
    first = save(store, backup, 1, OWNER_A)
    hub.fail_next_commit(500)
    with caplog.at_level(logging.ERROR):
        with pytest.raises(Exception, match="HTTP 500"):
            backup.push()
    assert "The last backup step failed" in backup.status_markdown() and "HTTP 500" in backup.status_markdown()
    assert not any(first["run_id"] in json.dumps(v) for v in dataset_lines(hub).values())
    backup.push()  # the next push, with nothing new written since: it carries the run the failed one did not
    assert "failed" not in backup.status_markdown()
    assert [line["run"]["run_id"] for lines in dataset_lines(hub).values() for line in lines] == [first["run_id"]]
    second = save(store, backup, 2, OWNER_A)
    backup.push()
    pushed = [line["run"]["run_id"] for lines in dataset_lines(hub).values() for line in lines]
    assert pushed == [first["run_id"], second["run_id"]]

    _, fresh = start(settings_of(tmp_path, hub, "second"), started)
    assert fresh.get(first["run_id"]) == first and fresh.get(second["run_id"]) == second


def test_two_instances_write_their_own_files_and_never_clobber_each_other(tmp_path, hub, started):
    one, store_one = start(settings_of(tmp_path, hub, "one"), started)
    two, store_two = start(settings_of(tmp_path, hub, "two"), started)
    assert one.instance != two.instance
    ids_one, ids_two = [], []
    for seed in range(3):  # interleaved saves and pushes
        ids_one.append(save(store_one, one, seed, OWNER_A)["run_id"])
        one.push()
        ids_two.append(save(store_two, two, 10 + seed, OWNER_B)["run_id"])
        two.push()
    files = dataset_lines(hub)
    by_instance = {b.instance: [line["run"]["run_id"] for name, lines in files.items()
                                if name.startswith(f"runs/{b.instance}/") for line in lines] for b in (one, two)}
    assert by_instance == {one.instance: ids_one, two.instance: ids_two}
    assert {n.split("/")[1] for n in hub.dataset_files(REPO) if n.startswith("runs/")} == {one.instance, two.instance}

    _, merged = start(settings_of(tmp_path, hub, "three"), started)
    assert sorted(r["run_id"] for r in merged.list()) == sorted(ids_one + ids_two)


def test_an_absent_dataset_is_created_private_and_the_page_says_where_runs_are_kept(tmp_path, hub, started):
    backup, _ = start(settings_of(tmp_path, hub, "first"), started)
    assert hub.dataset_is_private(REPO) is True
    text = backup.status_markdown()
    assert REPO in text and f"{hub.endpoint}/datasets/{REPO}" in text and "private" in text
    assert "every 60 minutes" in text and "A crash can lose the runs of the last 60 minutes" in text


def test_the_page_warns_when_the_dataset_is_public(tmp_path, hub, started):
    hub.add_dataset(REPO, {}, private=False)
    backup, _ = start(settings_of(tmp_path, hub, "first"), started)
    assert backup.on and "**public: anyone can read every run in it" in backup.status_markdown()


# ------------------------------------------------------------------------------------------ privacy


def test_the_backup_holds_no_token_no_server_path_and_no_raw_owner(tmp_path, hub, started):
    backup, store = start(settings_of(tmp_path, hub, "first"), started)
    local = full_run(seed=4)
    local["variants"][0]["source"] = {**local["variants"][0]["source"], "repo": None, "commit": None,
                                      "file": str(tmp_path / "models" / "secret-dir" / "mine.gguf")}
    stored = store.get(store.save(local, owner=OWNER_A))
    backup.record(stored, owner=OWNER_A)
    backup.close()
    everything = b"".join(hub.dataset_files(REPO).values()).decode()
    for secret in (WRITE, OWNER_A, SECRET, str(tmp_path), "secret-dir"):
        assert secret not in everything, secret
    line = next(line for lines in dataset_lines(hub).values() for line in lines)
    assert line["run"]["variants"][0]["source"]["file"] == "mine.gguf"
    assert line["owner"] == store.owner_key(OWNER_A) and len(line["owner"]) == 64
    assert stored["variants"][0]["source"]["file"].endswith("mine.gguf")  # the local log is unchanged

    _, fresh = start(settings_of(tmp_path, hub, "second"), started)
    restored = fresh.get(stored["run_id"])
    assert restored["variants"][0]["source"]["file"] == "mine.gguf"
    assert [r["run_id"] for r in fresh.list(owner=OWNER_A)] == [stored["run_id"]]


def test_without_the_owner_secret_backup_is_off_and_the_page_says_why(tmp_path, hub, started):
    backup, _ = start(settings_of(tmp_path, hub, "first", owner_secret=None), started)
    assert not backup.on
    assert "PYTHIA_COMPARE_OWNER_SECRET is not set" in backup.status_markdown()
    assert hub.requests == [] and hub.dataset_files(REPO) == {}


# ------------------------------------------------------------------------------------------ bad input


def _seed_malformed(hub: FakeHub) -> dict:
    good = full_run(seed=9, text="a run in a damaged file")
    good.update(run_id="restoredGood_0001", created_at="2026-01-02T03:04:05.000006+00:00")
    lines = [json.dumps({"backup": 1, "owner": None, "run": good}), "{not json", json.dumps([1, 2]),
             json.dumps({"backup": 1, "owner": None, "run": {"run_id": "broken_0001", "schema": 1}})]
    hub.add_dataset(REPO, {"runs/old-instance/2026-01-02T03Z.jsonl": "\n".join(lines).encode(),
                           "runs/old-instance/2026-01-02T04Z.jsonl": b"\xff\xfe binary \x00 junk",
                           "README.md": b"# runs\n"})
    return good


BAD_INPUT = {
    "no token": (dict(hf_token=None), "HF_TOKEN is not set"),
    "a refused token": (dict(hf_token="hf_" + "x" * 34), "refused the token in HF_TOKEN (HTTP 401)"),
    "a read-only token": (dict(hf_token=READ), "may not write to the dataset alice/pythia-runs (HTTP 403)"),
    "a repo in a namespace the token cannot write": (dict(backup_repo="bob/runs"),
                                                     "may not create the dataset bob/runs (HTTP 403)"),
    "a repo id that is not owner/name": (dict(backup_repo="just-a-name"), "is not a dataset id; use owner/name"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_with_bad_backup_settings_the_app_starts_serves_its_runs_and_says_backup_is_off(tmp_path, hub, case,
                                                                                         caplog):
    from pythia_compare.web.ui import build_demo

    hub.add_dataset(REPO, {})  # alice's dataset exists (the read-only token may read it)
    changes, why = BAD_INPUT[case]
    settings = settings_of(tmp_path, hub, "app", **changes)
    local = RunStore(settings.db_path, owner_secret=SECRET)
    run_id = local.save(full_run(seed=1), owner=OWNER_A)
    with caplog.at_level(logging.WARNING, logger="pythia_compare.backup"):
        demo = build_demo(settings)
    try:
        note = next(c for c in demo.config["components"] if c.get("props", {}).get("elem_id") == "pc-backup")
        assert note["props"]["value"].startswith("**Backup is off:**") and why in note["props"]["value"]
        assert note["props"]["visible"] is True
        assert any(why in r.getMessage() for r in caplog.records)
        assert demo.handlers.core.find(run_id).run_id == run_id  # its link still opens it
        assert [r[0] for r in demo.handlers.core.history("", OWNER_A)] == [run_id]
        for token in (WRITE, READ, "hf_" + "x" * 34):
            assert token not in note["props"]["value"]
        assert hub.dataset_files(REPO).keys() == {".gitattributes"}  # nothing was written
    finally:
        demo.handlers.core.backup.close()


def test_a_dataset_holding_a_malformed_file_restores_the_rest_and_names_what_it_skipped(tmp_path, hub, started,
                                                                                         caplog):
    good = _seed_malformed(hub)
    with caplog.at_level(logging.WARNING, logger="pythia_compare.backup"):
        backup, store = start(settings_of(tmp_path, hub, "first"), started)
    assert backup.on and backup.restore.imported == 1
    assert store.get("restoredGood_0001") == good
    text = backup.status_markdown()
    assert "**Restore skipped**" in text
    assert "runs/old-instance/2026-01-02T03Z.jsonl line 2: not JSON" in text
    skipped = "\n".join(backup.restore.skipped)
    assert "line 3: not a backup line" in skipped and "line 4:" in skipped
    assert "2026-01-02T04Z.jsonl: not UTF-8 text" in skipped
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "line 2: not JSON" in logged and "not UTF-8 text" in logged
    # The backup itself works: a new run is pushed next to the old files, which are left as they were.
    before = copy.deepcopy(hub.dataset_files(REPO))
    run = save(store, backup, 5, OWNER_A)
    backup.push()
    after = hub.dataset_files(REPO)
    assert all(after[name] == data for name, data in before.items())
    assert any(run["run_id"] in data.decode(errors="replace") for data in after.values())


def test_an_unreachable_hub_leaves_backup_off_with_the_reason(tmp_path, hub, started):
    settings = settings_of(tmp_path, hub, "first", hub_endpoint="http://127.0.0.1:9")
    backup, _ = start(settings, started)
    assert not backup.on and "cannot reach the Hub at http://127.0.0.1:9" in backup.status_markdown()


def test_the_backup_is_configured_by_environment_variables_and_off_by_default():
    env = {"PYTHIA_COMPARE_BACKUP_REPO": " you/runs ", "PYTHIA_COMPARE_BACKUP_MINUTES": "0.5", "HF_TOKEN": WRITE,
           "PYTHIA_COMPARE_OWNER_SECRET": SECRET}
    s = Settings.from_env(env)
    assert (s.backup_repo, s.backup_minutes, s.hf_token, s.owner_secret) == ("you/runs", 0.5, WRITE, SECRET)
    default = Settings.from_env({})
    assert default.backup_repo is None and default.backup_minutes == 5.0 and default.owner_secret is None
    assert Backup.start(default).status_markdown() == ""  # locally, nothing is said and nothing is tried


@pytest.mark.parametrize("minutes", ["five", "0", "-1", "nan", "inf"])
def test_a_bad_interval_leaves_the_app_running_with_backup_off_and_says_which_variable(tmp_path, hub, minutes):
    settings = Settings.from_env({"PYTHIA_COMPARE_BACKUP_MINUTES": minutes},
                                 **{k: v for k, v in vars(settings_of(tmp_path, hub, "x")).items()
                                    if k != "backup_minutes"})
    backup = Backup.start(settings)
    assert not backup.on and "PYTHIA_COMPARE_BACKUP_MINUTES is not a number of minutes" in backup.status_markdown()
    assert hub.requests == []
