"""The package's shape: wings that import downward only, no import circles, no private names taken, and the
boundaries of docs/architecture.md (tests/shape.py reads the imports; these tests hold it to its rules)."""

from __future__ import annotations

import re

import pytest

from tests import shape
from tests.support import ROOT

DATA = ROOT / "tests" / "data" / "shape"
DOC = ROOT / "docs" / "architecture.md"


def test_the_package_keeps_every_rule_of_its_architecture():
    assert shape.check(ROOT / "pythia_compare") == []


def test_the_wing_order_and_the_base_are_the_ones_docs_architecture_md_states():
    text = DOC.read_text(encoding="utf-8")
    order = re.search(r"^Order, highest first: (.+)$", text, re.M)
    assert order, "docs/architecture.md states the wing order on a line 'Order, highest first: …'"
    assert tuple(w.strip(" `.") for w in order.group(1).split("→")) == ("entry points", *shape.WINGS, "base")
    base = re.search(r"^The base: (.+)$", text, re.M)
    assert base and tuple(m.strip(" `.") for m in base.group(1).split(",")) == shape.BASE


def test_the_package_top_holds_only_the_wings_the_base_and_the_entry_points():
    pkg = ROOT / "pythia_compare"
    modules = sorted(p.stem for p in pkg.glob("*.py"))
    wings = sorted(p.name for p in pkg.iterdir() if (p / "__init__.py").is_file())
    assert wings == sorted(shape.WINGS)
    assert set(modules) <= set(shape.BASE) | set(shape.ENTRY_POINTS), modules


@pytest.mark.parametrize("wing", shape.WINGS)
def test_each_wing_says_what_it_owns_and_what_it_must_never_import(wing):
    doc = (ROOT / "pythia_compare" / wing / "__init__.py").read_text(encoding="utf-8")
    assert "Owns" in doc and "May import" in doc and "Must never import" in doc


def test_a_package_that_keeps_the_rules_gets_no_finding():
    assert shape.check(DATA / "clean" / "pkg") == []


def test_an_import_circle_is_reported_even_through_a_function_body_and_an_absolute_import():
    assert shape.check(DATA / "circle" / "pkg") == ["circle: pkg.runs.store <-> pkg.runs.sweepstore"]


def test_a_lower_wing_importing_a_higher_one_is_reported_even_under_type_checking():
    assert shape.check(DATA / "upward" / "pkg") == [
        "upward: models/engine.py:4 (models) imports pkg.web.ui (web)"]


def test_a_private_name_taken_from_another_module_is_reported_by_name_and_through_the_module():
    assert shape.check(DATA / "private" / "pkg") == [
        "private: sweeps/cli.py:1 takes _read_text_file from pkg.files",
        "private: sweeps/cli.py:4 takes _limit from pkg.config"]


def test_each_boundary_broken_is_reported_with_where_that_import_is_allowed():
    found = shape.check(DATA / "boundary" / "pkg")
    assert [f.split(" allowed only in ")[0] for f in found] == [
        "boundary: runs/compare.py:2 imports llama_cpp,",
        "boundary: runs/compare.py:3 imports sqlite3,",
        "boundary: runs/compare.py:4 imports urllib.request,",
        "boundary: web/dashboard.py:1 imports gradio,",
        "boundary: web/dashboard.py:2 imports httpx2,",
        "boundary: web/dashboard.py:3 imports huggingface_hub,"]
    assert found[0].endswith("allowed only in models/*") and found[3].endswith("allowed only in web/ui.py")


def test_an_import_of_a_module_that_does_not_exist_is_reported_as_a_path_left_behind_by_a_move():
    assert shape.check(DATA / "missing" / "pkg") == [
        "missing: sweeps/cli.py:2 imports pkg.sweeps.cli, the module itself (a path left behind by a move)",
        "missing: web/plots.py:2 imports pkg.web.report, which is not a module of the package",
        "missing: web/ui.py:1 imports pkg.web.engine, which is not a module of the package"]
