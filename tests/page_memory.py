"""One comparison run twice on the same input, by the CLI and through the page, each in a process of its own,
with each process's peak RSS (resource.getrusage's ru_maxrss) and wall time: what test_page_memory.py asserts
and benchmarks/bench_page.py prints.

The page side is the app itself: `python -m tests.page_memory serve` builds the dashboard (ui.build_demo) on
isolated offline settings, launches it with ui.launch_kwargs on 127.0.0.1, prints its peak RSS once it is up,
and its peak RSS again when told to stop (a line on stdin), with what the models it keeps loaded hold (the RSS that
closing its model pool gives back); the run goes through gradio_client's /compare, as
issue 18's repro did. The CLI side is `python -m pythia_compare compare … --json` in a child of a small wrapper
that prints the child's ru_maxrss (RUSAGE_CHILDREN of one child: that child's own peak). The CLI's fixed cost
(imports, no run) is measured the same way, so the figures can be compared as "what the run adds".
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support import ROOT

HELDOUT = ROOT / "assets" / "demo" / "heldout.txt"
# issue 18's repro: 8 variants of the demo suite against the demo reference, corpus scoring, ctx 512
REPRO_SPECS = ["demo", "demo:Q8_0", "demo:Q6_K", "demo:Q4_K_M", "demo:Q2_K", "demo@step0", "demo@step100",
               "demo@step300"]

_PEAK_OF_ONE_CHILD = ("import resource, subprocess, sys, json, time; t = time.monotonic(); "
                      "p = subprocess.run(sys.argv[2:], stdout=open(sys.argv[1], 'wb')); "
                      "print(json.dumps({'rc': p.returncode, 'wall_s': time.monotonic() - t, "
                      "'peak_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))")


@dataclass
class Measured:
    peak_kb: int  # the process's peak RSS
    base_kb: int  # its peak before the run (page: launched and idle; CLI: its imports, measured apart)
    wall_s: float  # the run's wall time (page: the /compare call; CLI: the whole process)
    run: dict  # the run JSON
    models_kb: int = 0  # what the models still loaded after the run hold (page: RSS freed by closing its pool)

    @property
    def added_kb(self) -> int:
        return self.peak_kb - self.base_kb


def repro_text(chars: int) -> str:
    """The demo suite's held-out text repeated to `chars` characters (the issue's T, at any size)."""
    held = HELDOUT.read_text(encoding="utf-8")
    return (held * (chars // len(held) + 1))[:chars]


def _env(tmp: Path, demo_dir: Path) -> dict:
    env = dict(os.environ)
    env.update({"PYTHIA_COMPARE_OFFLINE": "1", "PYTHIA_COMPARE_DB": str(tmp / "runs.db"),
                "PYTHIA_COMPARE_HOME": str(tmp / "home"), "HF_HUB_CACHE": str(tmp / "hf"),
                "PYTHIA_COMPARE_DEMO_DIR": str(demo_dir), "GRADIO_ANALYTICS_ENABLED": "False"})
    return env


def _peak_of(cmd: list[str], env: dict, out: Path, timeout: float) -> dict:
    p = subprocess.run([sys.executable, "-c", _PEAK_OF_ONE_CHILD, str(out), *cmd], capture_output=True, text=True,
                       env=env, cwd=str(ROOT), timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"measuring {cmd[:4]} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def cli_run(tmp: Path, demo_dir: Path, text: str, max_tokens: int, specs=REPRO_SPECS, ctx: int = 512,
            timeout: float = 1800) -> Measured:
    """The CLI on the repro: `compare SPECS --reference demo --text-file T --scoring corpus --json`."""
    tmp.mkdir(parents=True, exist_ok=True)
    text_file = tmp / "text.txt"
    text_file.write_text(text, encoding="utf-8")
    env = _env(tmp, demo_dir)
    base = _peak_of([sys.executable, "-c", "import pythia_compare.cli, pythia_compare.runs.compare, "
                     "pythia_compare.models.engine, pythia_compare.runs.pool"], env, tmp / "base.out", timeout)
    got = _peak_of([sys.executable, "-m", "pythia_compare", "compare", *specs, "--reference", specs[0],
                    "--text-file", str(text_file), "--scoring", "corpus", "--ctx", str(ctx),
                    "--max-tokens", str(max_tokens), "--json"], env, tmp / "cli.json", timeout)
    if got["rc"] != 0:
        raise RuntimeError(f"the CLI exited {got['rc']}")
    return Measured(got["peak_kb"], base["peak_kb"], got["wall_s"],
                    json.loads((tmp / "cli.json").read_text(encoding="utf-8")))


def page_run(tmp: Path, demo_dir: Path, text: str, max_tokens: int, specs=REPRO_SPECS, ctx: int = 512,
             timeout: float = 1800) -> Measured:
    """The page on the repro: the app in a process of its own, the run through gradio_client's /compare."""
    from gradio_client import Client

    tmp.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "tests.page_memory", "serve"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=open(tmp / "app.log", "wb"), text=True,
                            env=_env(tmp, demo_dir), cwd=str(ROOT))
    try:
        ready = proc.stdout.readline()
        if not ready:
            raise RuntimeError(f"the app did not start:\n{(tmp / 'app.log').read_text(errors='replace')[-3000:]}")
        up = json.loads(ready)
        client = Client(up["url"], verbose=False)
        t = time.monotonic()
        run = client.predict("demo", [], [], " ".join(specs), specs[0], "", text, None, "corpus", ctx, 10,
                             max_tokens, 0, 0, None, api_name="/compare")
        wall = time.monotonic() - t
        proc.stdin.write("stop\n")
        proc.stdin.flush()
        done = json.loads(proc.stdout.readline())
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return Measured(done["peak_kb"], up["peak_kb"], wall, run, max(0, done["rss_kb"] - done["closed_rss_kb"]))


def _serve() -> None:
    """The child: the dashboard launched on 127.0.0.1 as app.py does (offline settings from the environment)."""
    from pythia_compare.config import Settings
    from pythia_compare.web.ui import build_demo, launch_kwargs
    from tests.ui_support import free_port

    settings = Settings.from_env()
    demo = build_demo(settings, concurrency=1, max_queue=4)
    port = free_port()
    demo.launch(**{**launch_kwargs(settings), "server_name": "127.0.0.1", "server_port": port,
                   "prevent_thread_lock": True, "quiet": True})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"url": f"http://127.0.0.1:{port}/", "peak_kb": peak}), flush=True)
    sys.stdin.readline()
    peak, rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, _rss_kb()
    demo.handlers.pool.close()  # what the loaded models hold: the RSS this gives back
    print(json.dumps({"peak_kb": peak, "rss_kb": rss, "closed_rss_kb": _rss_kb()}), flush=True)
    demo.close()


def _rss_kb() -> int:
    """This process's resident set now (VmRSS), in KiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


if __name__ == "__main__" and sys.argv[1:] == ["serve"]:
    _serve()
