"""The test tiers: every entry of the tier table (tests/support.py) names a test module or test that exists, so a
renamed test cannot drop out of its tier unnoticed."""

from __future__ import annotations

import ast
from functools import cache

from tests.support import ROOT, TIERS


@cache
def _tests_in(path) -> set[str]:
    return {n.name for n in ast.parse(path.read_text(encoding="utf-8")).body if isinstance(n, ast.FunctionDef)}


def test_every_tier_entry_names_an_existing_test_module_or_test():
    for key, markers in TIERS.items():
        module, _, name = key.partition("::")
        path = ROOT / "tests" / f"{module}.py"
        assert path.is_file(), f"{key}: no tests/{module}.py"
        if name:
            assert name in _tests_in(path), f"{key}: no test {name} in tests/{module}.py"
        assert markers <= {"browser", "peer", "slow"}, key
