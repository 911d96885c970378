"""CI's count check (.ci/run with .ci/count.py): passed tests are counted from the junit report and compared with
what pytest collects without a marker filter, so deselected, failed or skipped tests cannot pass CI."""

from __future__ import annotations

import subprocess
import sys

from tests.support import ROOT

COUNT = ROOT / ".ci" / "count.py"
SUITE = '''
import pytest

def test_passes():
    assert True

def test_fails():
    assert False

def test_skips():
    pytest.skip("no")

@pytest.mark.slow
def test_slow_passes():
    assert True
'''


def test_ci_counts_only_passed_tests_and_every_collected_one(tmp_path):
    (tmp_path / "test_sample.py").write_text(SUITE)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: slow\n")
    run = lambda *args, **kw: subprocess.run([sys.executable, *args], cwd=tmp_path, capture_output=True, text=True, **kw)
    run("-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", "--junitxml", "junit.xml")
    collected = run("-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only")
    assert run(str(COUNT), "collected", input=collected.stdout).stdout.strip() == "4"
    assert run(str(COUNT), "passed", "junit.xml").stdout.strip() == "1"  # not the failed, skipped or deselected
    bad = run(str(COUNT), "collected", input="no tests ran")
    assert bad.returncode != 0 and "tests collected" in bad.stderr

