"""Two lifetimes of `python app.py` as a Space runs it (SPACE_ID set, backup configured) on one fake Hub dataset.

The first lifetime takes runs from a real headless Chromium and from gradio_client, then gets SIGTERM (what a
Space restart sends); the second starts on an empty disk on the same address. The browser, with the same
profile, opens the first run's link and its History; both must be as they were.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from gradio_client import Client

from tests.fakehub import FakeHub
from pythia_compare.runs.store import RunStore
from pythia_compare.web.ui import OWNER_KEY
from tests.support import ROOT
from tests.ui_support import app_env, chromium, demo_suite, free_port, wait_until_up

TOKEN = "hf_" + "s" * 34
SECRET = "space-secret-for-the-owner-hmacs"
REPO = "alice/space-runs"
OTHER_OWNER = "gradioClientOwner_" + "z" * 10
LONG_MS = 600_000
_TABLE_JS = """(id) => Array.from(document.querySelectorAll('#' + id + ' [role=row]'))
  .map(r => Array.from(r.querySelectorAll('[role=gridcell]')).map(c => c.innerText.trim()))
  .filter(r => r.length)"""


def start_space(disk, suite, hub: FakeHub, port: int) -> subprocess.Popen:
    env = app_env(disk, suite, port)
    env.pop("PYTHIA_COMPARE_OFFLINE")
    env.update({"SPACE_ID": "alice/pythia-compare", "HF_ENDPOINT": hub.endpoint, "HF_TOKEN": TOKEN,
                "PYTHIA_COMPARE_BACKUP_REPO": REPO, "PYTHIA_COMPARE_OWNER_SECRET": SECRET,
                "PYTHIA_COMPARE_BACKUP_MINUTES": "60"})
    log = open(disk / "app.log", "a")
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=str(disk), env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    wait_until_up(f"http://127.0.0.1:{port}/", proc, disk / "app.log")
    return proc


def terminate(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def test_after_a_space_restart_links_and_each_browsers_history_show_the_same_runs(tmp_path, browser):
    suite = demo_suite(tmp_path / "demo-standin")
    first_disk, second_disk = tmp_path / "first", tmp_path / "second"
    first_disk.mkdir()
    second_disk.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with FakeHub() as hub:
        hub.add_token(TOKEN, "alice")
        proc = start_space(first_disk, suite, hub, port)
        try:
            profile = browser.new_context(viewport={"width": 1280, "height": 900})
            page = profile.new_page()
            page.goto(url)
            page.locator("#pc-run").wait_for()
            page.wait_for_function(f"() => localStorage.getItem({OWNER_KEY!r})", timeout=LONG_MS)
            assert "Runs are backed up" in page.locator("#pc-backup").inner_text()
            assert REPO in page.locator("#pc-backup").inner_text()
            page.locator("#pc-specs input, #pc-specs textarea").first.fill("demo demo:Q2_K")
            page.locator("#pc-run").click()
            page.wait_for_function("() => (document.querySelector('#pc-link textarea') || {}).value?.includes('?run=')",
                                   timeout=LONG_MS)
            link = page.locator("#pc-link textarea").input_value()
            browser_run = link.split("?run=", 1)[1]
            # The id is on the page: the run is already in the file the next push sends.
            staged = "".join(p.read_text() for p in (first_disk / "backup").rglob("*.jsonl"))
            assert browser_run in staged
            for staged_file in (first_disk / "backup").rglob("*.jsonl"):  # and that file is not served
                try:
                    with urllib.request.urlopen(f"{url}gradio_api/file={staged_file}", timeout=30) as r:
                        status, body = r.status, r.read()
                except urllib.error.HTTPError as e:
                    status, body = e.code, e.read()
                assert status in (403, 404) and browser_run.encode() not in body, (staged_file, status)

            args = dict(family="demo", quants=[], steps=[], specs="demo demo:Q4_K_M", reference="", prompt="Hello",
                        text="", text_file=None, scoring="auto", ctx=512, top_k=5, max_tokens=2, temperature=0,
                        seed=0, owner=OTHER_OWNER)
            client_run = Client(url, verbose=False).predict(*args.values(), api_name="/compare")
            first_log = RunStore(first_disk / "runs.db", owner_secret=SECRET)
            before = {rid: first_log.get(rid) for rid in (browser_run, client_run["run_id"])}
        finally:
            code = terminate(proc)  # a Space restart: SIGTERM, then the disk is gone
        log = (first_disk / "app.log").read_text()
        assert code == 0, log
        # No scheduled push came due (hourly): what is in the dataset now, the shutdown pushed.
        pushed = "".join(d.decode() for n, d in hub.dataset_files(REPO).items() if n.endswith(".jsonl"))
        assert browser_run in pushed and client_run["run_id"] in pushed
        for secret in (TOKEN, OTHER_OWNER, SECRET, str(tmp_path)):
            assert secret not in pushed

        proc = start_space(second_disk, suite, hub, port)  # the same address, an empty disk
        try:
            second_log = RunStore(second_disk / "runs.db", owner_secret=SECRET)
            assert {rid: second_log.get(rid) for rid in before} == before
            assert [r["run_id"] for r in second_log.list(owner=OTHER_OWNER)] == [client_run["run_id"]]

            page = profile.new_page()  # the same browser profile: its owner token survived in localStorage
            page.goto(link)
            page.wait_for_function(
                f"() => (document.querySelector('#pc-status') || {{}}).innerText?.includes({browser_run!r})",
                timeout=LONG_MS)
            assert "Run not found" not in page.locator("#pc-status").inner_text()
            page.get_by_role("tab", name="History").click()
            page.wait_for_function(
                f"() => (document.querySelector('#pc-history') || {{}}).innerText?.includes({browser_run!r})",
                timeout=LONG_MS)
            history = page.evaluate(_TABLE_JS, "pc-history")
            assert [row[0] for row in history] == [browser_run]  # its own run, not the other owner's
            profile.close()
        finally:
            assert terminate(proc) == 0
