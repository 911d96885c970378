"""The sweep log's one home: `SweepStore(store)` (sweeps/store.py) over a RunStore's own file and transactions."""

from __future__ import annotations

import sqlite3

import pytest

from pythia_compare.errors import BadInput
from pythia_compare.runs.store import RunStore
from pythia_compare.sweeps.store import SweepNotFound, SweepStore
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

