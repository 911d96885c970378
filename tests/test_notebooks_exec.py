"""The exported .ipynb executed in a fresh Jupyter kernel (nbclient, ipykernel): its code cells call the library
(`pc.compare`, pythia_compare/api.py, issue 21) and reproduce the numbers the notebook's runs hold.

Real llama.cpp on the demo suite, a real kernel process; the kernel writes to a run log of its own, so the
numbers it prints come from its own runs, not from the notebook's.
"""

from __future__ import annotations

import json
import os

import nbformat
from nbclient import NotebookClient

from pythia_compare.runs.notebook import Notebook
from pythia_compare.runs.notebookrun import run_cells
from pythia_compare.runs.notebookstore import NotebookStore
from pythia_compare.runs.pool import ModelPool
from pythia_compare.runs.store import RunStore
from pythia_compare.web.notebooks import to_ipynb
from tests.support import ROOT
from tests.test_notebooks import HOSTILE_PROMPT
from tests.ui_support import app_env, demo_suite, settings_for

CHECK = """import json
print(json.dumps({name: [[e.spec, e.ppl, e.generation.text if e.generation else None]
                         for e in value.run.entries()] for name, value in sorted(globals().items())
                  if name.startswith("cell_")}))"""


def test_the_exported_ipynb_executes_in_a_fresh_kernel_to_the_same_numbers(tmp_path, monkeypatch):
    demo = demo_suite(tmp_path / "demo-standin")
    s = settings_for(tmp_path, demo)
    runs = RunStore(s.db_path)
    nb = Notebook.new("executed", ["demo:Q8_0", "demo:Q2_K"], "demo:F16", s, max_tokens=4, ctx=64)
    nb.add_note("# A note\n<script>alert(1)</script>")
    nb.add_comparison(prompt=HOSTILE_PROMPT)
    nb.add_comparison(text=(ROOT / "assets" / "demo" / "heldout.txt").read_text(encoding="utf-8")[:2500],
                      scoring="corpus", specs=["demo@step0", "demo"], reference=None, max_tokens=2)
    pool = ModelPool(s)
    try:
        run_cells(nb, settings=s, pool=pool, store=runs)
    finally:
        pool.close()
    nb = NotebookStore(runs, s).save(nb)
    assert all(c.run_id for c in nb.cells if c.kind == "comparison")
    expected = {f"cell_{i + 1}": [[e.spec, e.ppl, e.generation.text if e.generation else None]
                                  for e in runs.get_run(c.run_id).entries()]
                for i, c in enumerate(nb.cells) if c.kind == "comparison"}

    doc = nbformat.from_dict(to_ipynb(nb, runs.get_run))
    nbformat.validate(doc)
    doc.cells.append(nbformat.v4.new_code_cell(CHECK))
    env = app_env(tmp_path, demo, 0)
    env.update(PYTHIA_COMPARE_DB=str(tmp_path / "kernel.db"), PYTHONPATH=str(ROOT))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    NotebookClient(doc, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = [o for o in doc.cells[-1].outputs if o.get("name") == "stdout"]
    got = json.loads("".join(o["text"] for o in printed))
    assert got == expected
    for cell in doc.cells:  # every comparison cell drew its result
        if cell.cell_type == "code" and cell.source.startswith("cell_"):
            assert any("text/html" in (o.get("data") or {}) for o in cell.outputs), cell.source[:80]
    assert os.path.isfile(tmp_path / "kernel.db")
