"""The run log's owners and imports: tokens kept only as HMACs, older logs hashed in place, runs imported
under their own ids (what a backup restore and a sweep merge rely on). Real SQLite files."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
import sqlite_utils

from pythia_compare.runs.migrations import migrations
from pythia_compare.runs.runrows import rows_of
from pythia_compare.runs.store import RunFormatError, RunStore
from tests.store_runs import full_run

SECRET = "a-secret-only-the-server-knows"
ALICE = "alice_browser_token_" + "A" * 12
BOB = "bob_browser_token___" + "B" * 12


def file_bytes(path) -> bytes:
    """The database file and its WAL, as they lie on disk."""
    return b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def stored(run: dict, run_id: str, created_at: str) -> dict:
    return {**run, "run_id": run_id, "created_at": created_at}


# ------------------------------------------------------------------------------------------ import_run


def test_an_imported_run_keeps_its_id_and_time_and_importing_it_again_changes_nothing(tmp_path):
    source = RunStore(tmp_path / "a.db")
    original = source.get(source.save(full_run(seed=2)))
    target = RunStore(tmp_path / "b.db", owner_secret=SECRET)
    assert target.import_run(original, owner=target.owner_key(ALICE)) is True
    assert target.get(original["run_id"]) == original  # bit for bit, id and created_at included
    assert target.import_run(original) is False and target.count() == 1
    changed = {**original, "input": {**original["input"], "text": "something else"}}
    assert target.import_run(changed) is False  # an id already stored is never overwritten
    assert target.get(original["run_id"]) == original
    assert [r["run_id"] for r in target.list(owner=ALICE)] == [original["run_id"]]
    new_id = target.save(full_run(seed=3))  # save still draws a fresh id
    assert new_id != original["run_id"] and target.count() == 2


def test_imported_runs_list_in_the_order_of_their_own_times(tmp_path):
    store = RunStore(tmp_path / "runs.db")
    for i, when in enumerate(["2026-03-01T10:00:00.000000+00:00", "2026-01-01T10:00:00+01:00",
                              "2026-02-01T10:00:00.5+00:00"]):
        store.import_run(stored(full_run(seed=i, text=f"run {i}"), f"imported_{i}", when))
    assert [r["run_id"] for r in store.list()] == ["imported_0", "imported_2", "imported_1"]
    assert store.get("imported_1")["created_at"] == "2026-01-01T09:00:00.000000+00:00"  # kept in UTC


@pytest.mark.parametrize("bad, what", [
    (dict(run_id=None), "run_id must be a run id"),
    (dict(run_id="has spaces in it"), "run_id must be a run id"),
    (dict(run_id="x" * 65), "run_id must be a run id"),
    (dict(created_at=None), "created_at must be an ISO 8601 time"),
    (dict(created_at="yesterday"), "created_at must be an ISO 8601 time"),
    (dict(created_at="2026-01-01T10:00:00"), "with its UTC offset"),
    (dict(owner=ALICE), "owner must be an owner key"),
    (dict(variants="nope"), "variants must be a list"),
])
def test_importing_a_malformed_run_names_what_is_wrong_and_writes_nothing(tmp_path, bad, what):
    store = RunStore(tmp_path / "runs.db")
    run = stored(full_run(seed=1), "good_id_0001", "2026-01-01T00:00:00+00:00")
    owner = bad.pop("owner", None)
    run.update(bad)
    with pytest.raises(RunFormatError, match=what):
        store.import_run(run, owner=owner)
    assert store.count() == 0


# ------------------------------------------------------------------------------------------ owners as HMACs


def test_with_a_secret_the_log_keeps_only_an_hmac_of_each_owner_token(tmp_path):
    path = tmp_path / "runs.db"
    store = RunStore(path, owner_secret=SECRET)
    a = store.save(full_run(seed=1), owner=ALICE)
    b = store.save(full_run(seed=2), owner=BOB)
    rows = dict(sqlite_utils.Database(path).execute("SELECT id, owner_hmac FROM runs WHERE owner IS NULL").fetchall())
    assert rows == {a: hmac.new(SECRET.encode(), ALICE.encode(), hashlib.sha256).hexdigest(),
                    b: hmac.new(SECRET.encode(), BOB.encode(), hashlib.sha256).hexdigest()}
    assert ALICE.encode() not in file_bytes(path) and BOB.encode() not in file_bytes(path)
    assert [r["run_id"] for r in store.list(owner=ALICE)] == [a]
    with pytest.raises(Exception, match="no stored run"):
        store.delete(b, owner=ALICE)  # bob's run is not alice's
    store.delete(b, owner=BOB)
    assert store.count() == 1
    other = RunStore(path, owner_secret="another secret")  # another secret matches nobody's History
    assert other.list(owner=ALICE) == [] and other.count() == 1


def test_an_older_log_with_raw_owner_tokens_is_hashed_in_place_when_opened_with_the_secret(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite_utils.Database(path)
    migrations.apply(db, stop_before="m004_owner_hmac")  # a log as the previous release left it
    ids = {}
    for name, owner in (("alice_run_0001", ALICE), ("bob_run_00001", BOB), ("nobody_run_01", None)):
        run_row, variant_rows, kld_rows = rows_of(full_run(seed=len(ids), text=f"{name} text"))
        db["runs"].insert({**run_row, "id": name, "created_at": f"2025-01-0{len(ids) + 1}T00:00:00+00:00",
                           "owner": owner})
        db["run_variants"].insert_all([{**r, "run_id": name} for r in variant_rows])
        db["run_kld"].insert_all([{**r, "run_id": name} for r in kld_rows])
        ids[name] = owner
    db.conn.close()
    assert ALICE.encode() in file_bytes(path)

    RunStore(path)  # without the secret: migrated, the raw tokens still work as before
    assert [r["run_id"] for r in RunStore(path).list(owner=ALICE)] == ["alice_run_0001"]
    store = RunStore(path, owner_secret=SECRET)  # with it: every raw token becomes its HMAC
    raw = sqlite_utils.Database(path).execute("SELECT count(*) FROM runs WHERE owner IS NOT NULL").fetchone()[0]
    assert raw == 0
    assert ALICE.encode() not in file_bytes(path) and BOB.encode() not in file_bytes(path)
    assert [r["run_id"] for r in store.list(owner=ALICE)] == ["alice_run_0001"]  # History still matches
    assert [r["run_id"] for r in store.list(owner=BOB)] == ["bob_run_00001"]
    assert store.count() == 3 and json.loads(json.dumps(store.get("nobody_run_01")))["run_id"] == "nobody_run_01"
    RunStore(path, owner_secret=SECRET)  # opening again changes nothing
    assert [r["run_id"] for r in RunStore(path, owner_secret=SECRET).list(owner=ALICE)] == ["alice_run_0001"]
