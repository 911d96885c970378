"""Helpers shared by the test modules (import them as `from tests.support import …`): the repository root, the
quants every engine test covers, and the CLI run in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The quants every engine test covers (issue: at least these).
TEST_QUANTS = ["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K"]


def run_cli(args: list[str], env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python -m pythia_compare ARGS` in a fresh process (the installed package); returns CompletedProcess."""
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "pythia_compare", *args], capture_output=True, text=True,
                          env=e, timeout=timeout, cwd=str(ROOT))
