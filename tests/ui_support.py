"""Helpers for the dashboard tests: the demo suite to run on, isolated settings, the app as a real server, the
browser that drives it.

Owns finding the demo suite (the bundled assets/demo; a stand-in built from tinymodels only while the real
one is absent), starting app.py in a subprocess on a free port (offline, its own database and cache) or the
dashboard's handlers in this process, launching the project's headless Chromium (Debian's, with the
project's flags), and running the CLI for reference JSON. Never fakes a model, a database or HTTP.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tests.support import ROOT

BUNDLED_DEMO = ROOT / "assets" / "demo"
PROMPT = "The quick brown fox jumps over the lazy dog"
MAX_TOKENS = 6
CHROMIUM = "/usr/bin/chromium"  # Debian's
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update"]


def demo_suite(scratch: Path) -> Path:
    """The bundled demo suite; while it is not there yet, a stand-in of three tiny checkpoints in `scratch`."""
    from pythia_compare.sources.resolver import demo_steps

    if demo_steps(BUNDLED_DEMO):
        return BUNDLED_DEMO
    from tests.tinymodels import make_checkpoint

    for seed, step in enumerate((0, 1000, 4000)):
        if not (scratch / f"step{step}" / "config.json").is_file():
            make_checkpoint(scratch / f"step{step}", seed=seed)
    return scratch


def settings_for(tmp: Path, demo_dir: Path, **changes):
    """Settings isolated in `tmp`: own run log, cache and Hub cache; offline; on `demo_dir`."""
    from pythia_compare.config import Settings

    return Settings(db_path=tmp / "runs.db", home=tmp / "home", hf_cache_dir=tmp / "hf", offline=True,
                    hub_endpoint="http://127.0.0.1:9", demo_dir=demo_dir, **changes)


@contextmanager
def dashboard(tmp: Path, demo_dir: Path) -> Iterator:
    """The dashboard's handlers in this process (ui.Handlers) on settings_for(tmp, demo_dir), for the length of
    the block; their model pool is closed after."""
    from pythia_compare.web.ui import Handlers

    handlers = Handlers(settings_for(tmp, demo_dir))
    try:
        yield handlers
    finally:
        handlers.pool.close()


def three_specs(demo_dir: Path) -> tuple[list[str], str]:
    """Three demo variants and a reference: (variants, reference), as the e2e test selects them."""
    from pythia_compare.sources.resolver import demo_steps

    return ["demo:Q4_K_M", "demo:Q2_K", f"demo@step{demo_steps(demo_dir)[0]}"], "demo:F16"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app_env(tmp: Path, demo_dir: Path, port: int) -> dict:
    env = dict(os.environ)
    env.update({"PYTHIA_COMPARE_OFFLINE": "1", "PYTHIA_COMPARE_DB": str(tmp / "runs.db"),
                "PYTHIA_COMPARE_HOME": str(tmp / "home"), "HF_HUB_CACHE": str(tmp / "hf"),
                "PYTHIA_COMPARE_DEMO_DIR": str(demo_dir), "GRADIO_SERVER_PORT": str(port),
                "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_ANALYTICS_ENABLED": "False"})
    env.pop("SPACE_ID", None)
    env.pop("PYTHIA_COMPARE_PUBLIC", None)
    return env


def start_app(tmp: Path, demo_dir: Path, deadline_s: float = 300.0) -> tuple[subprocess.Popen, str]:
    """`python app.py` in a subprocess, offline on the demo suite; returns (process, base URL) once it answers."""
    port = free_port()
    log = open(tmp / "app.log", "w")
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=str(tmp), env=app_env(tmp, demo_dir, port),
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    wait_until_up(url, proc, tmp / "app.log", deadline_s)
    return proc, url


def wait_until_up(url: str, proc: subprocess.Popen | None = None, log: Path | None = None,
                  deadline_s: float = 300.0) -> None:
    end = time.monotonic() + deadline_s
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"app.py exited with {proc.returncode}:\n{log.read_text() if log else ''}")
        try:
            with urllib.request.urlopen(url + "config", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > end:
            raise RuntimeError(f"the app did not answer at {url}:\n{log.read_text() if log else ''}")
        time.sleep(0.5)


@contextmanager
def served_app(tmp: Path, demo_dir: Path) -> Iterator[str]:
    """`python app.py` as start_app starts it, for the length of the block: yields its base URL, then stops it."""
    proc, url = start_app(tmp, demo_dir)
    try:
        yield url
    finally:
        stop(proc)


@contextmanager
def app_in_process(settings, max_queue: int = 2) -> Iterator[tuple]:
    """The dashboard built on `settings` and launched in this process with launch_kwargs (one run at a time,
    `max_queue` waiting) on a free port, for the length of the block: yields (the Blocks, its base URL, the port);
    then closed, with its model pool."""
    from pythia_compare.web.ui import build_demo, launch_kwargs

    demo = build_demo(settings, concurrency=1, max_queue=max_queue)
    port = free_port()
    demo.launch(**{**launch_kwargs(settings), "server_port": port, "prevent_thread_lock": True, "quiet": True})
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_until_up(url)
        yield demo, url, port
    finally:
        demo.close()
        demo.handlers.pool.close()


def launch_chromium(p):
    """Headless Chromium, the project's way (Debian's binary and flags), from a sync_playwright() `p`."""
    return p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


@contextmanager
def chromium() -> Iterator:
    """A headless Chromium (launch_chromium) for the length of the block; closed after."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            yield browser
        finally:
            browser.close()


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cli_json(tmp: Path, demo_dir: Path, specs: list[str], reference: str | None, prompt: str = PROMPT,
             max_tokens: int = MAX_TOKENS, db_name: str = "cli.db") -> dict:
    """The CLI's `compare --json` for the same input (its own run log, the same model cache)."""
    args = [sys.executable, "-m", "pythia_compare", "--offline", "--db", str(tmp / db_name), "--home", str(tmp / "home"),
            "compare", *specs, "--prompt", prompt, "--max-tokens", str(max_tokens)]
    args += ["--reference", reference or "none"]  # none: as the page's "none" (the CLI's default is the best one)
    env = app_env(tmp, demo_dir, 0)
    done = subprocess.run(args + ["--json"], capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def comparable(run: dict) -> dict:
    """A run JSON without what differs between two executions of the same input: id, time, timings, and how the
    models were loaded (a long-lived app's models count the tokens they generated before, which decides when their
    repacked generation handle pays for its load; a one-shot CLI's start from none)."""
    out = json.loads(json.dumps(run))
    out.pop("run_id", None)
    out.pop("created_at", None)
    for e in ([out["reference"]] if out.get("reference") else []) + out["variants"]:
        e.pop("timings", None)
        e.pop("load", None)
    return out


def demo_sweep_steps(demo_dir: Path) -> list[int]:
    """Three steps of the demo suite for a test sweep: the first (step0), one in the middle, the last."""
    from pythia_compare.sources.resolver import demo_steps

    steps = demo_steps(demo_dir)
    return sorted({steps[0], steps[len(steps) // 2], steps[-1]})


DEMO_SWEEP_QUANTS = ["F16", "Q8_0", "Q2_K"]


def make_demo_sweep(tmp: Path, demo_dir: Path, db: Path, name: str = "demo test grid") -> str:
    """A small real demo sweep made as a user makes one: `sweep plan` then `sweep run` through the CLI
    (3 steps × 3 quants, ctx 64, 2 chunks) into the run log `db`; returns the sweep's id."""
    env = app_env(tmp, demo_dir, 0)
    base = [sys.executable, "-m", "pythia_compare", "--offline", "--db", str(db), "--home", str(tmp / "home"), "sweep"]
    steps = ",".join(str(s) for s in demo_sweep_steps(demo_dir))
    plan = subprocess.run(base + ["plan", "--repo", "demo", "--steps", steps, "--quants", ",".join(DEMO_SWEEP_QUANTS),
                                  "--text-file", str(demo_dir / "heldout.txt"), "--ctx", "64", "--max-chunks", "2",
                                  "--name", name], capture_output=True, text=True, env=env, cwd=str(ROOT),
                          timeout=600)
    assert plan.returncode == 0, plan.stderr
    sweep_id = plan.stdout.strip().splitlines()[-1].strip()
    run = subprocess.run(base + ["run", sweep_id], capture_output=True, text=True, env=env, cwd=str(ROOT),
                         timeout=1800)
    assert run.returncode == 0, run.stderr
    return sweep_id
