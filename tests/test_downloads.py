"""A run's downloads (/pc-download) are fair and bounded (issue 18, item 5), over real HTTP against the launched
dashboard: a run's zip is made once and then served from a bounded cache, abandoned requests make nothing more,
one run's zip never holds another run's download, and a deleted run is not served from the cache.

The runs are real stored runs; the zip is made by the real export code, seen through a wrapper that counts its
calls and can hold one of them (so a test can keep a big run's zip "being made" while it asks for another run).
"""

from __future__ import annotations

import socket
import threading

import httpx
import pytest

from pythia_compare.web import dashboard
from pythia_compare.runs.export import run_to_zip
from pythia_compare.runs.store import RunStore
from tests.store_runs import full_run
from tests.ui_support import app_in_process, demo_suite, settings_for


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("downloads")
    settings = settings_for(tmp, demo_suite(tmp_path_factory.mktemp("demo-standin")))
    store = RunStore(settings.db_path)
    ids = {"big": store.save(full_run(seed=1, n_tokens=20_000)), "other": store.save(full_run(seed=2)),
           "gone": store.save(full_run(seed=3))}
    with app_in_process(settings) as (_demo, url, port):
        yield url, port, store, ids


@pytest.fixture
def zips(monkeypatch):
    """Every zip the server makes, counted by run id; `hold` keeps the next one of a run waiting until released."""
    made: list[str] = []
    hold: dict[str, threading.Event] = {}
    entered = threading.Event()

    def counted(run):
        made.append(run.run_id)
        if run.run_id in hold:
            entered.set()
            assert hold.pop(run.run_id).wait(120)
        return run_to_zip(run)

    monkeypatch.setattr(dashboard, "run_to_zip", counted)
    return made, hold, entered


def abandon(port: int, path: str) -> None:
    """Send a GET and leave at once, reading nothing (the issue's 0.3 s attacker)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())


def get(url: str, path: str, timeout: float = 60) -> httpx.Response:
    return httpx.get(url + path.lstrip("/"), timeout=timeout)


def test_abandoned_requests_for_one_run_make_its_zip_once_and_later_downloads_come_from_the_cache(app, zips):
    url, port, store, ids = app
    made, _, _ = zips
    for _ in range(20):
        abandon(port, f"/pc-download/{ids['big']}.zip")
    first = get(url, f"/pc-download/{ids['big']}.zip")
    again = get(url, f"/pc-download/{ids['big']}.zip")
    assert first.status_code == again.status_code == 200
    assert first.content == again.content == run_to_zip(store.get_run(ids["big"]))
    assert made == [ids["big"]]  # 22 requests, one zip made


def test_a_run_whose_zip_is_being_made_never_holds_another_runs_download(app, zips):
    url, port, store, ids = app
    made, hold, entered = zips
    gate = hold[ids["gone"]] = threading.Event()
    slow: dict = {}
    waiting = threading.Thread(target=lambda: slow.update(r=get(url, f"/pc-download/{ids['gone']}.zip", 120)))
    waiting.start()
    try:
        assert entered.wait(60)  # that zip is being made, and held there
        other = get(url, f"/pc-download/{ids['other']}.zip", timeout=30)
        assert other.status_code == 200 and "r" not in slow  # the held zip is still being made
        assert other.content == run_to_zip(store.get_run(ids["other"]))
    finally:
        gate.set()
        waiting.join(120)
    assert slow["r"].status_code == 200


def test_a_deleted_run_is_not_served_from_the_cache(app, zips):
    url, _, store, ids = app
    run_id = store.save(full_run(seed=4))
    assert get(url, f"/pc-download/{run_id}.zip").status_code == 200  # made, and cached
    store.delete(run_id)
    gone = get(url, f"/pc-download/{run_id}.zip")
    assert gone.status_code == 404 and "Not found" in gone.text


def test_the_cache_of_finished_downloads_stays_within_its_budget(tmp_path):
    import asyncio

    store = RunStore(tmp_path / "runs.db")
    ids = [store.save(full_run(seed=s, n_tokens=2000)) for s in range(12)]
    sizes = [len(run_to_zip(store.get_run(i))) for i in ids]
    downloads = dashboard.Downloads(lambda: store, budget=4 * max(sizes))

    async def fetch_all():
        async def here():
            return False
        for run_id in ids:
            await downloads.serve(f"{run_id}.zip", here)

    asyncio.run(fetch_all())
    assert downloads.made == 12 and 0 < downloads._held <= downloads.budget
