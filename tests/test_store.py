"""The run log on real SQLite files: schema, upgrades, exact round trips, concurrency, crashes, search, ids."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlite_utils

from pythia_compare.errors import BadInput, RunNotFound
from pythia_compare.runs.migrations import migrations
from pythia_compare.runs.runrows import KLD_STATS
from pythia_compare.runs.store import RunFormatError, RunLogError, RunStore
from tests.store_runs import full_run


def saved(run: dict, run_id: str, got: dict) -> dict:
    """What get() must return for `run` saved as `run_id`."""
    return {**run, "run_id": run_id, "created_at": got["created_at"]}


# ------------------------------------------------------------------------------------------ schema


def test_a_blank_database_gets_the_expected_schema(tmp_path):
    path = tmp_path / "deep" / "er" / "runs.db"
    RunStore(path)
    db = sqlite_utils.Database(path)
    assert db["runs"].columns_dict == {
        "id": str, "created_at": str, "text": str, "n_tokens": int, "tokens": str, "scoring": str, "ctx": int,
        "top_k": int, "max_tokens": int, "temperature": float, "seed": int, "flash_attn": int,
        "reference_spec": str, "schema": int, "versions": str, "extra": str, "owner": str,
        "owner_hmac": str, "sweep_id": str}  # m004 owners as HMACs; m011 (sweeps): a sweep cell's run
    assert db["run_variants"].columns_dict == {
        "run_id": str, "position": int, "role": str, "spec": str, "label": str, "repo": str, "commit_sha": str,
        "file": str, "sha256": str, "bytes": int, "quant": str, "ppl": float, "ppl_err": float, "n_scored": int,
        "token_logprobs": str, "next_token": str, "generation": str, "load_s": float, "score_s": float,
        "generate_s": float, "extra": str}
    stats = ("mean mean_err max p99_9 p99 p95 p90 median p10 p5 p1 p0_1 min dp_mean dp_mean_err dp_rms dp_rms_err "
             "dp_max dp_p99_9 dp_p99 dp_p95 dp_p90 dp_p75 dp_median dp_p25 dp_p10 dp_p5 dp_p1 dp_p0_1 dp_min "
             "same_top same_top_err ppl_ratio ppl_ratio_err ln_ratio ln_ratio_err ppl_diff ppl_diff_err cor_ln_ppl "
             "ppl ppl_err ppl_ref ppl_ref_err").split()
    assert db["run_kld"].columns_dict == {"run_id": str, "position": int, **{c: float for c in stats},
                                          "per_token": str, "dp_per_token": str, "extra": str}
    assert tuple(stats) == KLD_STATS  # the row codec writes exactly the migrated columns
    assert db["runs"].pks == ["id"]
    assert db["run_variants"].pks == ["run_id", "position"] and db["run_kld"].pks == ["run_id", "position"]
    assert {(fk.column, fk.other_table, fk.other_column) for fk in db["run_variants"].foreign_keys} == {
        ("run_id", "runs", "id")}
    assert {tuple(i.columns) for i in db["runs"].indexes} >= {("created_at",), ("owner",), ("owner_hmac",)}
    assert ("run_id",) in {tuple(i.columns) for i in db["run_variants"].indexes}
    assert ("run_id",) in {tuple(i.columns) for i in db["run_kld"].indexes}
    assert db["runs"].detect_fts() == "runs_fts"
    assert {t.name for t in db["runs"].triggers} == {"runs_ai", "runs_ad", "runs_au"}
    assert db.journal_mode == "wal"
    assert [m.name for m in migrations.applied(db)] == ["m001_initial", "m002_runs_fts", "m003_owner",
                                                        "m004_owner_hmac", "m010_sweeps",
                                                        "m011_runs_sweep_id", "m012_sweep_lambada", "m020_notebooks"]


def test_opening_a_current_database_again_applies_nothing_twice(tmp_path):
    path = tmp_path / "runs.db"
    run_id = RunStore(path).save(full_run())
    store = RunStore(path)
    assert store.count() == 1 and store.get(run_id)["run_id"] == run_id
    assert sqlite_utils.Database(path)["_sqlite_migrations"].count == 8


def test_a_database_at_the_first_migration_upgrades_and_keeps_its_old_run(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite_utils.Database(path)
    migrations.apply(db, stop_before="m002_runs_fts")
    assert "owner" not in db["runs"].columns_dict and not db["runs"].detect_fts()
    # A run written the way the first release wrote it (no owner, no search index).
    db["runs"].insert({"id": "oldrun_0001", "created_at": "2024-05-01T10:00:00+00:00",
                       "text": "An aardvark walks into a library", "n_tokens": 6,
                       "tokens": json.dumps(["An", " a", "ardvark", " walks", " into", " a library"]),
                       "scoring": "prompt", "ctx": 512, "top_k": 1, "max_tokens": 0, "temperature": 0.0,
                       "seed": 7, "flash_attn": 0, "reference_spec": None, "schema": 1,
                       "versions": json.dumps({"pythia_compare": "0.0.1", "llama_cpp_python": "0.3.0"})})
    db["run_variants"].insert({"run_id": "oldrun_0001", "position": 0, "role": "variant", "spec": "Q8_0",
                               "label": "Q8_0", "repo": "r/x", "commit_sha": "c" * 40, "file": "x.gguf",
                               "sha256": "d" * 64, "bytes": 10, "quant": "Q8_0", "ppl": 12.5, "ppl_err": 0.25,
                               "n_scored": 5, "token_logprobs": json.dumps([-1.0, -2.0, -0.5, -3.0, -1.5]),
                               "next_token": json.dumps([{"id": 1, "text": "!", "prob": 0.5}]),
                               "generation": None, "load_s": 0.5, "score_s": 0.25, "generate_s": 0.0})
    db.conn.close()

    store = RunStore(path)
    db = sqlite_utils.Database(path)
    assert db["runs"].columns_dict["owner"] is str and db["runs"].detect_fts() == "runs_fts"
    assert [m.name for m in migrations.applied(db)] == ["m001_initial", "m002_runs_fts", "m003_owner",
                                                        "m004_owner_hmac", "m010_sweeps",
                                                        "m011_runs_sweep_id", "m012_sweep_lambada", "m020_notebooks"]
    old = store.get("oldrun_0001")
    assert old["input"]["text"] == "An aardvark walks into a library" and old["params"]["flash_attn"] is False
    assert old["variants"][0]["token_logprobs"] == [-1.0, -2.0, -0.5, -3.0, -1.5] and old["reference"] is None
    assert [r["run_id"] for r in store.list(query="aardvark")] == ["oldrun_0001"]
    new_id = store.save(full_run(text="a newer aardvark"))
    assert [r["run_id"] for r in store.list(query="aardvark")] == [new_id, "oldrun_0001"]
    store.delete("oldrun_0001")
    assert store.count() == 1


# ------------------------------------------------------------------------------------------ round trip


def test_a_full_run_round_trips_exactly(tmp_path):
    store = RunStore(tmp_path / "runs.db")
    run = full_run(seed=3)
    before = copy.deepcopy(run)
    run_id = store.save(run)
    assert run == before  # save does not touch the caller's dict
    got = store.get(run_id)
    assert got == saved(run, run_id, got)
    assert json.dumps(got, sort_keys=True) == json.dumps(saved(run, run_id, got), sort_keys=True)
    # Bit-exact floats, including ones repr needs 17 digits for and a subnormal.
    assert [x.hex() for x in got["variants"][1]["token_logprobs"]] == [
        x.hex() for x in run["variants"][1]["token_logprobs"]]
    assert got["variants"][0]["token_logprobs"][1] == -5e-324
    assert got["input"]["tokens"][-1] == "\ud83d" and "a\x00b" in got["input"]["text"]
    assert got["variants"][0]["kld"]["cor_ln_ppl"] is None and got["reference"]["kld"] is None
    assert list(got) == ["schema", "run_id", "created_at", "input", "params", "variants", "reference", "versions"]
    assert len(run_id) >= 16 and run_id.replace("-", "").replace("_", "").isalnum()
    assert got["created_at"].endswith("+00:00")


def test_keys_left_out_null_or_unknown_to_the_schema_round_trip(tmp_path):
    store = RunStore(tmp_path / "runs.db")
    run = full_run(seed=5)
    del run["run_id"], run["created_at"]
    del run["reference"]["kld"]  # docs/run.md: the reference's kld may be left out
    kld = run["variants"][0]["kld"]
    for k in ("ppl", "ppl_err", "ppl_ref", "ppl_ref_err", "dp_max"):
        del kld[k]  # a kld object without these optional keys
    kld.update(p75=0.25, p25=0.125, dp_median=None)  # statistics without a column, and a null one
    run["variants"][1]["kld"] = None
    run["note"] = {"from": "a newer release"}
    run["params"]["batch"] = 64
    run["variants"][1]["source"]["mirror"] = "hf-mirror"
    run["reference"]["generation"] = None
    run["reference"]["ppl"] = None
    run_id = store.save(run)
    got = store.get(run_id)
    assert got == saved(run, run_id, got)
    assert "kld" not in got["reference"] and "ppl" not in got["variants"][0]["kld"]
    assert got["variants"][0]["kld"]["dp_median"] is None and got["variants"][1]["kld"] is None


@pytest.mark.parametrize("damage, words", [
    (lambda r: r.pop("input"), ["input", "missing"]),
    (lambda r: r.update(variants={"Q8_0": {}}), ["variants", "list"]),
    (lambda r: r["params"].update(ctx="512"), ["params.ctx", "integer"]),
    (lambda r: r["params"].update(flash_attn=1), ["params.flash_attn", "true or false"]),
    (lambda r: r["variants"][1].update(ppl=float("nan")), ["variants[1].ppl", "NaN"]),
    (lambda r: r["variants"][0]["source"].pop("sha256"), ["variants[0].source.sha256", "missing"]),
    (lambda r: r["variants"][0].update(token_logprobs=["-1.0"]), ["variants[0].token_logprobs", "numbers"]),
    (lambda r: r["variants"][0]["kld"].update(per_token="x"), ["variants[0].kld.per_token", "numbers"]),
    (lambda r: r.update(reference=[1]), ["reference", "object"]),
    (lambda r: r["input"].update(text="bad \udc80 text"), ["input.text", "surrogate"]),
    (lambda r: r.update(extra_blob=object()), ["JSON"]),
])
def test_a_malformed_run_is_refused_by_name_and_nothing_is_written(tmp_path, damage, words):
    store = RunStore(tmp_path / "runs.db")
    run = full_run()
    damage(run)
    with pytest.raises(RunFormatError) as e:
        store.save(run)
    assert all(w in str(e.value) for w in words), str(e.value)
    assert store.count() == 0
    db = sqlite_utils.Database(tmp_path / "runs.db")
    assert db["run_variants"].count == 0 and db["run_kld"].count == 0


def test_a_run_that_is_not_a_dict_is_refused(tmp_path):
    store = RunStore(tmp_path / "runs.db")
    for bad in (None, [], "run", 3):
        with pytest.raises(RunFormatError):
            store.save(bad)


def test_a_file_that_is_not_a_database_is_refused_clearly(tmp_path):
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database" * 100)
    with pytest.raises(RunLogError, match="cannot open the run log"):
        RunStore(path)


# ------------------------------------------------------------------------------------------ concurrency


def test_twenty_four_writer_threads_lose_nothing(tmp_path):
    path = tmp_path / "runs.db"
    shared = RunStore(path)
    ids: list[list[str]] = [[] for _ in range(24)]
    errors: list[BaseException] = []
    start = threading.Barrier(24)

    def write(k: int) -> None:
        try:
            store = shared if k % 2 else RunStore(path)  # half share one store, half open their own
            start.wait()
            for j in range(4):
                ids[k].append(store.save(full_run(seed=k * 10 + j, text=f"thread{k} run{j}"), owner=f"u{k}"))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    every = [i for chunk in ids for i in chunk]
    assert len(every) == 96 and len(set(every)) == 96
    fresh = RunStore(path)
    assert fresh.count() == 96
    for k, chunk in enumerate(ids):
        for j, run_id in enumerate(chunk):
            assert fresh.get(run_id)["input"]["text"] == f"thread{k} run{j}"
        assert sorted(r["run_id"] for r in fresh.list(owner=f"u{k}")) == sorted(chunk)


def test_threads_opening_a_new_database_together_migrate_it_once(tmp_path):
    path = tmp_path / "new.db"
    errors: list[BaseException] = []
    start = threading.Barrier(12)

    def open_and_save() -> None:
        try:
            start.wait()
            RunStore(path).save(full_run())
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=open_and_save) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    db = sqlite_utils.Database(path)
    assert db["_sqlite_migrations"].count == 8 and db["runs"].count == 12


WRITER = """
import json, sys
from pythia_compare.runs.store import RunStore
run = json.load(open(sys.argv[2]))
store = RunStore(sys.argv[1])
while True:
    print(store.save(run), flush=True)
"""


def test_a_writer_killed_mid_run_leaves_a_sound_database_with_every_reported_run(tmp_path):
    path, run_file = tmp_path / "runs.db", tmp_path / "run.json"
    run_file.write_text(json.dumps(full_run(n_tokens=400)))
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(run_file)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(120, proc.kill)
    watchdog.start()
    try:
        printed = [proc.stdout.readline() for _ in range(25)]
        os.kill(proc.pid, signal.SIGKILL)
        rest, err = proc.communicate()
    finally:
        watchdog.cancel()
    assert proc.returncode == -signal.SIGKILL, err
    ids = [line.strip() for line in printed + rest.splitlines(keepends=True) if line.endswith("\n")]
    assert len(ids) >= 25 and all(ids), err
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()
    store = RunStore(path)
    assert store.count() >= len(ids)
    expected = json.loads(run_file.read_text())
    for run_id in ids:
        got = store.get(run_id)
        assert got == saved(expected, run_id, got)
    # Every stored run is whole: none has a runs row without its variants.
    db = sqlite_utils.Database(path)
    assert db.execute("SELECT count(*) FROM runs WHERE id NOT IN (SELECT run_id FROM run_variants)").fetchone() == (0,)


# ------------------------------------------------------------------------------------------ search, ids, owners


@pytest.fixture(scope="module")
def searchable_log(tmp_path_factory):
    """Four runs saved once per module into a closed log file: (its path, their ids by name)."""
    path = tmp_path_factory.mktemp("searchable") / "runs.db"
    store = RunStore(path)
    ids = {name: store.save(full_run(text=text), owner=owner) for name, text, owner in [
        ("fox", "The quick brown fox jumps over the lazy dog", "alice"),
        ("paris", "The capital of France is Paris, on the Seine", "bob"),
        ("code", "def add(a, b):\n    return a + b  # NOT a fox", None),
        ("tokyo", "東京は日本の首都です Ünïcode", "alice"),
    ]}
    store.close()
    return path, ids


@pytest.fixture
def searchable(searchable_log, tmp_path):
    """This test's own copy of the four-run log, open: (its RunStore, the runs' ids by name)."""
    template, ids = searchable_log
    for suffix in ("", "-wal"):
        if Path(f"{template}{suffix}").exists():
            shutil.copyfile(f"{template}{suffix}", f"{tmp_path / 'runs.db'}{suffix}")
    return RunStore(tmp_path / "runs.db"), dict(ids)


def test_search_finds_runs_by_the_words_of_their_text(searchable):
    store, ids = searchable
    found = lambda q: {r["run_id"] for r in store.list(query=q)}
    assert found("fox") == {ids["fox"], ids["code"]}
    assert found("brown FOX") == {ids["fox"]}
    assert found("paris seine") == {ids["paris"]}
    assert found("東京は日本の首都です") == {ids["tokyo"]}
    assert found("unicode") == {ids["tokyo"]}
    assert found("NOT") == {ids["code"]}  # an operator word is just a word
    assert found("zebra") == set()
    assert found("") == found("   ") == set(ids.values()) == {r["run_id"] for r in store.list()}


def test_search_matches_prefixes_of_the_texts_words_and_anything_in_a_variants_spec_or_label(searchable):
    """Issue 20: "fibo" and "Q2_K" found nothing, as search took whole words of the text only."""
    store, ids = searchable
    found = lambda q: {r["run_id"] for r in store.list(query=q)}
    assert found("qui") == {ids["fox"]} and found("cap fra") == {ids["paris"]}  # starts of words
    assert found("ret") == {ids["code"]}
    every = set(ids.values())
    assert found("Q4_K_M") == found("q4_k") == found("step3000") == every  # every run of full_run has these
    assert found("Q4_K_M paris") == {ids["paris"]}  # each word must match, in the text or a variant
    assert found("Q2_K") == set() and found("Q8") == every
    assert found("q_k") == set()  # "_" is a character, not a wildcard
    assert found("%") == set() and found("step3000:Q4%") == set()


@pytest.mark.parametrize("query", ['"', 'a"b', "NOT", "foo OR", "OR", "AND", "*", "fox*", "(", ")", "text:x",
                                   "text:fox", "NEAR(a b)", "NEAR", "^fox", "-fox", "+", "'", "fox\x00",
                                   "'; DROP TABLE runs; --", "\\", "ünï 🙂 東京", "\ud83d", "x" * 10_000,
                                   "fox " * 2_500, '"' * 10_000], ids=lambda q: ascii(q)[:24])
def test_hostile_search_queries_return_without_error(searchable, query):
    store, ids = searchable
    rows = store.list(query=query)
    assert isinstance(rows, list) and all(r["run_id"] in ids.values() for r in rows)
    assert store.count() == 4


def test_summary_rows_hold_what_a_run_list_shows(searchable):
    store, ids = searchable
    row = next(r for r in store.list() if r["run_id"] == ids["paris"])
    run = store.get(ids["paris"])
    assert row["preview"] == "The capital of France is Paris, on the Seine"
    assert row["created_at"] == run["created_at"] and row["n_tokens"] == run["input"]["n_tokens"]
    assert row["scoring"] == "prompt" and row["reference"] == "F16"
    assert row["reference_ppl"] == run["reference"]["ppl"]
    assert row["variants"] == [{"spec": v["spec"], "label": v["label"], "ppl": v["ppl"]} for v in run["variants"]]
    long_id = store.save(full_run(text="word " * 100))
    assert store.list(query="word")[0]["preview"] == ("word " * 16) + "…"
    assert store.list(query="word")[0]["run_id"] == long_id


def test_the_list_is_newest_first_and_pages(tmp_path):
    store = RunStore(tmp_path / "runs.db")
    ids = [store.save(full_run(seed=i)) for i in range(7)]
    newest_first = list(reversed(ids))
    assert [r["run_id"] for r in store.list()] == newest_first
    assert [r["run_id"] for r in store.list(limit=3)] == newest_first[:3]
    assert [r["run_id"] for r in store.list(limit=3, offset=3)] == newest_first[3:6]
    assert store.list(limit=3, offset=7) == [] and store.list(limit=0) == []
    for bad in ({"limit": -1}, {"offset": -5}, {"limit": "10"}):
        with pytest.raises(BadInput):
            store.list(**bad)


@pytest.mark.parametrize("run_id", ["", "nope", "' OR 1=1 --", "x'; DROP TABLE runs; --", "../../etc/passwd",
                                    "%", "_", "*", "ünïcödé", "🙂" * 3, "a\x00b", "A" * 10_000, " ", "\n",
                                    None, 42, b"bytes"], ids=lambda i: ascii(i)[:24])
def test_hostile_ids_raise_run_not_found_with_a_short_message(searchable, run_id):
    store, ids = searchable
    with pytest.raises(RunNotFound) as e:
        store.get(run_id)
    assert len(str(e.value)) < 300 and "runs list" in str(e.value)
    with pytest.raises(RunNotFound):
        store.delete(run_id)
    assert store.count() == 4


def test_an_id_of_the_right_shape_that_was_never_stored_is_not_found(searchable):
    store, ids = searchable
    with pytest.raises(RunNotFound, match="AAAAAAAAAAAAAAAA"):
        store.get("AAAAAAAAAAAAAAAA")


def test_lists_and_deletes_are_scoped_to_an_owner(searchable):
    store, ids = searchable
    assert {r["run_id"] for r in store.list(owner="alice")} == {ids["fox"], ids["tokyo"]}
    assert {r["run_id"] for r in store.list(owner="bob")} == {ids["paris"]}
    assert store.list(owner="mallory") == []
    assert {r["run_id"] for r in store.list(query="fox", owner="alice")} == {ids["fox"]}
    with pytest.raises(RunNotFound):
        store.delete(ids["paris"], owner="alice")  # bob's run: as if absent
    with pytest.raises(RunNotFound):
        store.delete(ids["code"], owner="alice")  # an unowned run is not alice's either
    assert store.count() == 4
    store.delete(ids["paris"], owner="bob")
    store.delete(ids["code"])  # no owner given: any run may go
    assert store.count() == 2 and {r["run_id"] for r in store.list()} == {ids["fox"], ids["tokyo"]}
    with pytest.raises(RunNotFound):
        store.get(ids["paris"])
    with pytest.raises(RunNotFound):
        store.delete(ids["paris"])


def test_deleting_a_run_removes_every_row_and_its_search_entry(searchable, tmp_path):
    store, ids = searchable
    store.delete(ids["fox"])
    db = sqlite_utils.Database(tmp_path / "runs.db")
    for table in ("run_variants", "run_kld"):
        assert db.execute(f"SELECT count(*) FROM {table} WHERE run_id = ?", [ids["fox"]]).fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM run_variants").fetchone() == (9,)
    assert {r["run_id"] for r in store.list(query="fox")} == {ids["code"]}
    db.conn.execute("INSERT INTO runs_fts(runs_fts) VALUES('integrity-check')")  # raises if the index is stale


def test_new_ids_never_start_with_a_dash_or_an_underscore_so_they_read_as_ids_everywhere():
    from pythia_compare.runs.store import ID_RE, new_id

    ids = [new_id(12) for _ in range(3000)]  # about 1 in 32 token_urlsafe draws starts with '-' or '_'
    assert all(i[0].isalnum() and ID_RE.fullmatch(i) and len(i) == 16 for i in ids)
    assert len(set(ids)) == len(ids)
