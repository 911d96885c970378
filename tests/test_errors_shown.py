"""Errors are not swallowed: a damaged run log and a failing Hub catalog say what happened, on the page and in
the log. Real SQLite files, the real huggingface_hub client against the local fake Hub."""

from __future__ import annotations

import logging

import gradio as gr
import pytest

from pythia_compare.web import dashboard
from pythia_compare.sources import hub
from pythia_compare.web.dashboard import NOT_FOUND, load_catalog
from pythia_compare.runs.store import RunLogError, RunStore
from pythia_compare.web.sweepview import SWEEP_NOT_FOUND
from pythia_compare.web.ui import Handlers, SweepHandlers
from pythia_compare.sweeps.store import SweepStore
from tests.fakehub import FakeHub
from tests.store_runs import full_run
from tests.ui_support import demo_suite, settings_for


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return demo_suite(tmp_path_factory.mktemp("demo-standin"))


@pytest.fixture
def damaged(tmp_path, suite):
    """A dashboard whose run log held a run, then had its database file overwritten with garbage."""
    dash = Handlers(settings_for(tmp_path, suite))
    run_id = dash.store.save(full_run())
    assert dash.core.find(run_id).run_id == run_id  # it opened while the file was sound
    dash.store.close()
    db = dash.settings.db_path
    for extra in (db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        extra.unlink(missing_ok=True)
    db.write_bytes(b"this is not a database, it was overwritten " * 200)
    yield dash, run_id
    dash.pool.close()


def test_opening_a_run_from_a_damaged_run_log_says_the_log_cannot_be_read_not_run_not_found(damaged, caplog):
    dash, run_id = damaged
    with caplog.at_level(logging.ERROR, logger="pythia_compare.dashboard"):
        status = dash.open_run(run_id)[0]
    assert status != NOT_FOUND and "Run not found" not in status
    assert "The run cannot be opened" in status and "the run log cannot be read (runs.db: DatabaseError" in status
    assert "restore it from a backup" in status
    logged = [r for r in caplog.records if "cannot be read" in r.getMessage()]
    assert logged and logged[0].exc_info is not None  # the traceback is in the server log


def test_the_history_of_a_damaged_run_log_says_it_cannot_be_listed_not_that_there_are_no_runs(damaged, caplog):
    dash, _ = damaged
    with caplog.at_level(logging.ERROR, logger="pythia_compare.dashboard"):
        table, note = dash.search("", None)
        shown_table, shown_note = dash.history_shown("", None)  # what opening the History tab shows
    assert table["data"] == [] and "No runs yet" not in note
    assert note.startswith("**The history cannot be listed:**") and "the run log cannot be read" in note
    assert shown_note == note and shown_table["data"] == []
    assert any(r.exc_info is not None and "cannot be read" in r.getMessage() for r in caplog.records)


def test_deleting_from_a_damaged_run_log_says_why_it_cannot(damaged):
    dash, run_id = damaged
    note, *_ = dash.delete(run_id, "", None)
    assert note.startswith("**The run cannot be deleted:**") and "the run log cannot be read" in note


@pytest.fixture
def damaged_sweeps(tmp_path, suite):
    """The Sweeps tab's handlers over a run log that was sound, then had its database file overwritten."""
    settings = settings_for(tmp_path, suite)
    store = RunStore(settings.db_path)
    assert SweepStore(store).list() == []  # the log opened while the file was sound
    store.close()
    db = settings.db_path
    for extra in (db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        extra.unlink(missing_ok=True)
    db.write_bytes(b"this is not a database, it was overwritten " * 200)
    yield SweepHandlers(settings, store)
    store.close()


def test_the_sweep_list_of_a_damaged_run_log_says_it_cannot_be_listed_not_that_there_are_no_sweeps(damaged_sweeps,
                                                                                                 caplog):
    sweeps = damaged_sweeps
    with caplog.at_level(logging.ERROR, logger="pythia_compare.sweepview"):
        with pytest.raises(RunLogError, match=r"the run log cannot be read \(runs.db: DatabaseError"):
            sweeps.desk.list()
        table, status = sweeps.listing_shown()  # what opening the Sweeps tab shows
        loaded = sweeps.on_load(None)  # what loading the page shows
    assert table["data"] == [] and status.startswith("**The sweeps cannot be listed:**")
    assert "the run log cannot be read" in status and "restore it from a backup" in status
    assert loaded[0]["data"] == [] and loaded[1] == status
    logged = [r for r in caplog.records if "cannot be read" in r.getMessage()]
    assert logged and logged[0].exc_info is not None  # the traceback is in the server log


def test_opening_a_sweep_from_a_damaged_run_log_says_the_log_cannot_be_read_not_sweep_not_found(damaged_sweeps,
                                                                                                caplog):
    sweeps = damaged_sweeps
    with caplog.at_level(logging.ERROR, logger="pythia_compare.sweepview"):
        with pytest.raises(RunLogError, match="the run log cannot be read"):
            sweeps.desk.find("abcdefgh12345678")
        status = sweeps.open_sweep("abcdefgh12345678")[0]
        with pytest.raises(gr.Error) as api:  # the "/sweep" API says the same
            sweeps.sweep("abcdefgh12345678")
    assert status != SWEEP_NOT_FOUND and "Sweep not found" not in status
    assert status.startswith("### The sweep cannot be opened") and "the run log cannot be read (runs.db" in status
    assert "the run log cannot be read" in api.value.message
    assert any(r.exc_info is not None and "cannot be read" in r.getMessage() for r in caplog.records)


def test_a_fault_in_reading_the_hub_catalog_is_logged_with_its_traceback_and_not_called_unreachable(
        tmp_path, suite, monkeypatch, caplog):
    fake = FakeHub()
    url = fake.start()
    try:
        settings = settings_for(tmp_path, suite).replace(offline=False, hub_endpoint=url)

        def broken(self, repo, revision=None):
            raise KeyError("siblings")  # a bug in hub.py reading an answer, not the network

        monkeypatch.setattr(hub.Hub, "list_gguf_files", broken)
        with caplog.at_level(logging.WARNING, logger="pythia_compare.dashboard"):
            cat = load_catalog(settings)
    finally:
        fake.stop()
    assert cat.family == "demo" and "could not be reached" not in cat.banner
    assert "Reading the Hugging Face Hub's model lists failed (KeyError: 'siblings')" in cat.banner
    failure = [r for r in caplog.records if r.name == "pythia_compare.dashboard"]
    assert failure and failure[0].levelno == logging.ERROR and failure[0].exc_info[0] is KeyError


def test_an_unreachable_hub_is_still_called_unreachable_and_its_cause_is_logged(tmp_path, suite, caplog):
    settings = settings_for(tmp_path, suite).replace(offline=False, hub_endpoint="http://127.0.0.1:9")
    with caplog.at_level(logging.WARNING, logger="pythia_compare.dashboard"):
        cat = load_catalog(settings)
    assert "could not be reached" in cat.banner
    assert any("Connection refused" in r.getMessage() for r in caplog.records if r.name == dashboard.log.name)


def test_a_hub_answer_we_can_name_is_logged_as_its_message_without_a_traceback(tmp_path, suite, caplog):
    fake = FakeHub()  # holds no repo: the default GGUF repo is missing there
    url = fake.start()
    try:
        settings = settings_for(tmp_path, suite).replace(offline=False, hub_endpoint=url)
        with caplog.at_level(logging.WARNING, logger="pythia_compare.dashboard"):
            cat = load_catalog(settings)
    finally:
        fake.stop()
    assert cat.family == "demo" and "Reading the Hugging Face Hub's model lists failed (MissingOnHub" in cat.banner
    failure = [r for r in caplog.records if r.name == "pythia_compare.dashboard"]
    assert failure and failure[0].levelno == logging.WARNING and failure[0].exc_info is None
    assert "no model repo" in failure[0].getMessage()
