"""Packaging: pyproject.toml's pins agree with requirements.txt (what the Space installs), and a non-editable
`pip install .` into a fresh virtual environment gives a working `pythia-compare` command with the demo suite."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path


from tests.support import ROOT


def pins(path: Path) -> set[str]:
    """The requirement lines of a requirements file (comments, blank lines and -r includes left out)."""
    out = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            out.add(line)
    return out


def normalized(reqs) -> set[str]:
    return {re.sub(r"[-_.]+", "-", r.split("==")[0]).lower() + "==" + r.split("==")[1] for r in reqs}


def test_pyproject_pins_the_same_dependencies_as_requirements_txt():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert all("==" in r for r in project["dependencies"])  # pinned, like requirements.txt
    assert normalized(project["dependencies"]) == normalized(pins(ROOT / "requirements.txt"))
    assert normalized(project["optional-dependencies"]["test"]) == normalized(pins(ROOT / "requirements-dev.txt"))
    assert project["scripts"] == {"pythia-compare": "pythia_compare.cli:main"}


def test_a_fresh_venv_with_pip_install_dot_runs_the_demo_compare_from_its_own_copy(tmp_path):
    """The venv sees the system's site-packages for the (pinned, already installed) dependencies only; the
    project itself is built from a copy of the tree and installed non-editable, and the check below proves the
    command runs that installed copy, with the demo suite and css shipped inside it."""
    src = tmp_path / "src"
    tracked = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split("\n")
    for name in filter(None, tracked):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py, exe = venv / "bin" / "python", venv / "bin" / "pythia-compare"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    done = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "-q", str(src)], capture_output=True,
                          text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    shutil.rmtree(src)  # nothing may still read the source tree

    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    where = subprocess.run([str(py), "-c", "import pythia_compare, pythia_compare.config as c; "
                                           "print(pythia_compare.__file__); print(c.Settings().demo_dir)"],
                           capture_output=True, text=True, cwd=cwd, env=env, check=True).stdout.split("\n")
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    assert Path(where[0]).is_relative_to(site), where
    demo = Path(where[1])
    assert demo.is_relative_to(site / "pythia_compare" / "assets") and (demo / "step0" / "model.safetensors").is_file()
    assert (site / "pythia_compare" / "assets" / "style.css").is_file()
    assert (site / "pythia_compare" / "assets" / "published" / "pythia-410m-deduped-evals.json").is_file()

    run = subprocess.run([str(exe), "--db", str(tmp_path / "runs.db"), "--home", str(tmp_path / "home"), "--offline",
                          "compare", "demo@step0", "demo", "--prompt", "def f(x):"],
                         capture_output=True, text=True, cwd=cwd, env=env, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "PPL" in run.stdout and "demo step0 F16" in run.stdout and "saved to" in run.stdout
