"""Boot the app the way a Hugging Face Space does: a fresh virtualenv holding only requirements.txt.

It catches a runtime dependency that only the development requirements install. The venv sees no system or
user site-packages and does not hold this project (a Space does not pip-install it: `python app.py` imports the
package from the folder app.py is in, the checkout here); `python app.py` runs in it with SPACE_ID set, on port 7860 (another free port only if
7860 is taken, which the test says), with a home directory of its own (a Space's defaults for the run log and
caches) and the run backup configured against the local fake Hub. The page must answer, a demo run must
complete through gradio_client, and SIGTERM must leave that run in the backup dataset.

The venv is built once per requirements.txt and Python version and cached under
$PYTHIA_COMPARE_TOOLS_CACHE (default ~/.cache/pythia-compare-tools); pip reuses its cached llama-cpp-python
wheel, so a rebuild takes minutes, a reuse none.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
import warnings
from pathlib import Path

from filelock import FileLock
from gradio_client import Client

from tests.fakehub import FakeHub
from tests.support import ROOT
from tests.ui_support import free_port, wait_until_up

SPACE_PORT = 7860
TOKEN = "hf_" + "b" * 34
REPO = "alice/boot-runs"
OWNER = "bootTestOwner_" + "q" * 14


def tools_cache() -> Path:
    return Path(os.environ.get("PYTHIA_COMPARE_TOOLS_CACHE") or Path.home() / ".cache" / "pythia-compare-tools")


def space_venv() -> Path:
    """A venv with `pip install -r requirements.txt` and nothing else, built once per requirements and Python."""
    key = hashlib.sha256((ROOT / "requirements.txt").read_bytes() + sys.version.encode()).hexdigest()[:16]
    cache = tools_cache()
    cache.mkdir(parents=True, exist_ok=True)
    venv = cache / f"space-venv-{key}"
    ready = venv / ".requirements-installed"
    with FileLock(str(cache / f"space-venv-{key}.lock")):
        if not ready.is_file():
            shutil.rmtree(venv, ignore_errors=True)
            env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
            done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-r",
                                   str(ROOT / "requirements.txt")], env=env, capture_output=True, text=True)
            assert done.returncode == 0, f"pip install -r requirements.txt failed:\n{done.stdout}\n{done.stderr}"
            ready.write_text((ROOT / "requirements.txt").read_text())
    return venv


def space_port() -> int:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is no obstacle
        try:
            s.bind(("127.0.0.1", SPACE_PORT))
            return SPACE_PORT
        except OSError:
            pass
    port = free_port()
    warnings.warn(f"port {SPACE_PORT} is taken on this machine; the Space boot test runs on port {port} instead")
    return port


def test_a_fresh_venv_with_only_the_runtime_requirements_boots_the_space_and_completes_a_demo_run(tmp_path):
    venv = space_venv()
    python = venv / "bin" / "python"
    # The venv holds none of the development packages, and not this project either: app.py imports
    # pythia_compare from its own folder (the script's directory is first on sys.path), as on a Space, whose
    # repository root holds app.py beside the pythia_compare package. Asked from a folder outside the checkout.
    probe = subprocess.run([str(python), "-c", "import importlib.util as u; print([m for m in ('torch', "
                            "'transformers', 'pytest', 'playwright', 'pythia_compare') if u.find_spec(m)])"],
                           capture_output=True, text=True, cwd=str(tmp_path),
                           env={"PATH": os.environ["PATH"], "PYTHONNOUSERSITE": "1"})
    assert probe.stdout.strip() == "[]", probe.stdout + probe.stderr

    home = tmp_path / "home"
    home.mkdir()
    port = space_port()
    with FakeHub() as hub:
        hub.add_token(TOKEN, "alice")
        env = {"PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "HOME": str(home), "LANG": "C.UTF-8",
               "PYTHONNOUSERSITE": "1", "PYTHONUNBUFFERED": "1", "SPACE_ID": "alice/pythia-compare",
               "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1",
               "GRADIO_ANALYTICS_ENABLED": "False", "HF_ENDPOINT": hub.endpoint, "HF_TOKEN": TOKEN,
               "PYTHIA_COMPARE_BACKUP_REPO": REPO, "PYTHIA_COMPARE_OWNER_SECRET": "boot-test-secret"}
        log_path = tmp_path / "app.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen([str(python), str(ROOT / "app.py")], cwd=str(tmp_path), env=env, stdout=log,
                                    stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}/"
        try:
            wait_until_up(url, proc, log_path, deadline_s=600)
            with urllib.request.urlopen(url, timeout=30) as r:
                assert r.status == 200 and b"pythia-compare" in r.read()
            with urllib.request.urlopen(url + "config", timeout=30) as r:
                assert b"Runs are backed up" in r.read()
            run = Client(url, verbose=False).predict(
                "demo", [], [], "demo demo:Q2_K", "", "The capital of France is", "", None, "auto", 512, 5, 2, 0, 0,
                OWNER, api_name="/compare")
            assert run["run_id"] and len(run["variants"]) == 2
            assert all(v["ppl"] > 0 and v["generation"]["text"] for v in run["variants"])
            assert (home / ".local" / "share" / "pythia-compare" / "runs.db").is_file()  # the Space's default place
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=120)
            finally:
                if proc.poll() is None:
                    proc.kill()
        text = log_path.read_text()
        assert code == 0, text
        assert "Traceback" not in text, text
        pushed = b"".join(d for n, d in hub.dataset_files(REPO).items() if n.endswith(".jsonl")).decode()
        assert run["run_id"] in pushed and OWNER not in pushed
