"""The sweep log's one home: `SweepStore(store)` (sweeps/store.py) over a RunStore's own file and transactions."""

from __future__ import annotations

import sqlite3

import pytest

from pythia_compare.errors import BadInput
from pythia_compare.runs.store import RunStore
from pythia_compare.sweeps.store import LAMBADA_CELL_NUMBERS, SweepNotFound, SweepStore, read_sweep_file
from tests.store_runs import full_run

def _plan(run: dict) -> dict:
    return {"name": "t", "repo": "demo", "steps": [25, 100], "quants": ["F16", "Q8_0"], "hub_repo": None,
            "hub_quants": [], "reference": "F16", "ctx": 64, "max_chunks": 2, "text": run["input"]["text"],
            "text_sha256": "0" * 64, "n_tokens": run["input"]["n_tokens"], "params": {"top_k": 10}}


def test_a_sweep_made_through_one_run_logs_sweeps_is_read_back_by_another_opened_on_the_same_file(tmp_path):
    run = full_run(3)
    grid = [(25, "F16", False), (25, "Q8_0", False), (100, "F16", False)]
    writer = RunStore(tmp_path / "runs.db")
    sweep_id = SweepStore(writer).create(_plan(run), grid)
    run_id = SweepStore(writer).save_cell_run(sweep_id, 25, "Q8_0", False, run, {"ppl": 2.5}, 1.0)
    with RunStore(tmp_path / "runs.db") as reader:
        assert SweepStore(reader).ids() == [sweep_id]
        assert SweepStore(reader).plan(sweep_id)["cells"] == grid
        assert [c["status"] for c in SweepStore(reader).cells(sweep_id)] == ["pending", "done", "pending"]
        assert reader.get(run_id)["input"] == run["input"]  # the run log fills a cell run's text from its sweep
        assert reader.list() == [] and reader.count() == 1  # a cell's run is a run, listed with its sweep only
    writer.close()


def test_a_refused_cell_write_leaves_the_run_log_as_it_was(tmp_path):
    run = full_run(3)
    store = RunStore(tmp_path / "runs.db")
    sweep_id = SweepStore(store).create(_plan(run), [(25, "F16", False)])
    with pytest.raises(BadInput, match=f"sweep {sweep_id} has no cell step 100 Q8_0"):
        SweepStore(store).save_cell_run(sweep_id, 100, "Q8_0", False, run, {"ppl": 2.5}, 1.0)
    with pytest.raises(SweepNotFound, match="no stored sweep has the id 'nope'; `python -m pythia_compare sweep list`"):
        SweepStore(store).save_cell_run("nope", 25, "F16", False, run, {"ppl": 2.5}, 1.0)
    store.close()
    with sqlite3.connect(tmp_path / "runs.db") as conn:  # the store's own transaction rolled everything back
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 0
        assert conn.execute("SELECT status, run_id FROM sweep_cells").fetchall() == [("pending", None)]



def test_a_run_log_from_before_lambada_sweeps_opens_with_its_sweeps_as_they_were_corpus_sweeps(tmp_path):
    run = full_run(3)
    path = tmp_path / "runs.db"
    with RunStore(path) as store:
        sweep_id = SweepStore(store).create(_plan(run), [(25, "F16", False), (100, "F16", False)])
        SweepStore(store).save_cell_run(sweep_id, 25, "F16", False, run, {"ppl": 2.5}, 1.0)
    with sqlite3.connect(path) as conn:  # the log as the code before migration m012 left it
        for column in ("scoring", "lambada"):
            conn.execute(f"ALTER TABLE sweeps DROP COLUMN {column}")
        for column in LAMBADA_CELL_NUMBERS:
            conn.execute(f"ALTER TABLE sweep_cells DROP COLUMN {column}")
        assert conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm012_sweep_lambada'").rowcount == 1
    # A shard of it reads its plan without migrating it (read-only), and gets a corpus sweep.
    row, cells = read_sweep_file(path, sweep_id)
    assert "scoring" not in row
    with RunStore(tmp_path / "shard.db") as shard:
        SweepStore(shard).import_plan(row, cells)
        assert SweepStore(shard).plan(sweep_id)["scoring"] == "corpus"
    with RunStore(path) as store:  # opening it applies m012: its sweep is a corpus sweep, its numbers kept
        s = SweepStore(store).get(sweep_id)
    assert s["scoring"] == "corpus" and s["lambada"] is None
    done, pending = s["cells"]
    assert (done["status"], done["ppl"], done["lambada_acc"]) == ("done", 2.5, None) and pending["status"] == "pending"
