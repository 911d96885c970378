"""Notebooks without a browser: the typed notebook, its log of revisions, bad input, running cells, exports, the CLI,
the backup.

Real SQLite files, real llama.cpp on the demo suite (a notebook's cells are ordinary runs), the real huggingface_hub
client against tests/fakehub.py, nbformat's own validator. Each bad input is checked for its message and for the
log being left exactly as it was (a dump of every notebook table before and after).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import nbformat
import pytest

from pythia_compare.config import Settings
from pythia_compare.errors import BadInput
from pythia_compare.params import NOTEBOOK
from pythia_compare.runs.backup import Backup
from pythia_compare.runs.notebook import Notebook, NotebookFormatError
from pythia_compare.runs.notebookrun import run_cells
from pythia_compare.runs.notebookstore import (NotebookConflict, NotebookNotFound, NotebookNotYours, NotebookStore)
from pythia_compare.runs.pool import ModelPool
from pythia_compare.runs.store import RunStore
from pythia_compare.web.dashboard import Dashboard
from pythia_compare.web.notebooks import NotebookDesk, compare_call, render_note, to_html, to_ipynb
from tests.fakehub import FakeHub
from tests.support import ROOT
from tests.ui_support import app_env, demo_suite, settings_for

TABLES = ("notebooks", "notebook_revisions", "notebook_revision_cells", "notebook_cells", "runs")
OWNER_A = "browserA_" + "a" * 20
OWNER_B = "browserB_" + "b" * 20
HOSTILE_PROMPT = 'say """ and then\n__import__(\'os\').system("echo pwned") \\ \U0001F600 end'


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return demo_suite(tmp_path_factory.mktemp("demo"))


def _settings(tmp_path, demo=None, **changes) -> Settings:
    return settings_for(tmp_path, demo or tmp_path, **changes)


def _stores(settings: Settings) -> tuple[RunStore, NotebookStore]:
    runs = RunStore(settings.db_path, owner_secret=settings.owner_secret)
    return runs, NotebookStore(runs, settings)


def dump(runs: RunStore) -> dict:
    """Every row of the notebook tables and the runs' ids: what 'nothing in the log changed' compares."""
    conn = runs.db().conn
    return {t: sorted(map(tuple, conn.execute(f"SELECT * FROM {t}").fetchall())) for t in TABLES}


def small(settings: Settings, cells: int = 2) -> Notebook:
    nb = Notebook.new("probes", ["demo:Q8_0", "demo:Q2_K"], "demo:F16", settings, max_tokens=3, ctx=64)
    nb.add_note("# Probes\nWhat each shows.")
    for i in range(cells - 1):
        nb.add_comparison(prompt=f"The capital of France is {i}")
    return nb


# ------------------------------------------------------------------------------------------ the typed notebook
def test_a_notebook_round_trips_through_its_json_and_names_the_key_path_of_a_bad_value(tmp_path):
    s = _settings(tmp_path)
    nb = small(s, 3)
    nb.add_comparison(text="long text " * 20, scoring="corpus", specs=["demo@step0"], reference=None, ctx=16)
    again = Notebook.from_json(json.loads(json.dumps(nb.to_json())), s)
    assert again.to_json() == nb.to_json()
    bad = nb.to_json()
    bad["cells"][3]["overrides"] = {"ctx": 0}
    with pytest.raises(NotebookFormatError, match=r"cells\[3\]\.overrides\.ctx is 0, out of range; use 8 … 8192"):
        Notebook.from_json(bad, s)
    bad = nb.to_json()
    bad["cells"][1]["prompt"] = 7
    with pytest.raises(NotebookFormatError, match=r"cells\[1\]\.prompt must be a string or null, got 7"):
        Notebook.from_json(bad, s)
    bad = nb.to_json()
    bad["variants"]["specs"] = ["demo:Q9_X"]
    with pytest.raises(NotebookFormatError, match=r"variants\.specs\[0\] is not a spec"):
        Notebook.from_json(bad, s)


def test_changing_the_variant_set_marks_only_the_cells_computed_with_another_set_stale(tmp_path):
    s = _settings(tmp_path)
    nb = small(s, 2)
    own = nb.add_comparison(prompt="x y", specs=["demo@step0"])
    from pythia_compare.runs.notebookrun import computed

    computed(nb, nb.cells[1].id, "run1")
    computed(nb, own.id, "run2")
    assert not nb.is_stale(nb.cells[1]) and not nb.is_stale(own)
    nb.variants.specs = ["demo:Q4_K_M"]
    assert nb.is_stale(nb.cells[1]) and not nb.is_stale(own)  # the cell with its own set keeps it
    from pythia_compare.web.notebooks import cell_status

    said = cell_status(nb, nb.cells[1])
    assert "Stale" in said and "demo:Q8\\_0, demo:Q2\\_K" in said and "run1" in nb.cells[1].run_id


# ------------------------------------------------------------------------------------------ the log
def test_every_save_is_a_new_revision_and_each_revision_opens_exactly(tmp_path):
    s = _settings(tmp_path)
    runs, store = _stores(s)
    first = store.save(small(s), owner=OWNER_A)
    second = first.copy()
    second.add_note("a second thought")
    second = store.save(second)
    assert (first.revision, second.revision) == (1, 2)
    assert store.get(first.notebook_id).to_json() == second.to_json()
    assert store.get(f"{first.notebook_id}@1").to_json() == first.to_json()
    assert [r["revision"] for r in store.revisions(first.notebook_id)] == [1, 2]


def test_a_cells_text_is_stored_once_however_many_revisions_hold_it(tmp_path):
    s = _settings(tmp_path)
    runs, store = _stores(s)
    nb = small(s)
    nb.cells[0].markdown = "a long note " * 1000
    nb = store.save(nb)
    for _ in range(5):
        nb.title += "!"
        nb = store.save(nb)
    conn = runs.db().conn
    assert conn.execute("SELECT count(*) FROM notebook_revisions").fetchone()[0] == 6
    assert conn.execute("SELECT count(*) FROM notebook_cells WHERE body LIKE '%a long note%'").fetchone()[0] == 1


def test_a_save_based_on_an_older_revision_is_refused_and_offers_a_copy(tmp_path):
    s = _settings(tmp_path)
    runs, store = _stores(s)
    opened = store.save(small(s))
    mine, theirs = opened.copy(), opened.copy()
    theirs.title = "theirs"
    store.save(theirs)  # the other browser saved first
    mine.title = "mine"
    before = dump(runs)
    with pytest.raises(NotebookConflict, match="changed since it was opened .* keep your version as a copy"):
        store.save(mine)
    assert dump(runs) == before
    copy = store.save(mine, as_copy=True)
    assert copy.notebook_id != opened.notebook_id and copy.revision == 1 and copy.title == "mine"
    assert store.get(opened.notebook_id).title == "theirs"


def test_only_the_owner_changes_or_deletes_a_notebook_but_anyone_can_copy_it(tmp_path):
    s = _settings(tmp_path, owner_secret="secret of the test")
    runs, store = _stores(s)
    nb = store.save(small(s), owner=OWNER_A)
    before = dump(runs)
    with pytest.raises(NotebookNotYours, match="another browser.*Make a copy"):
        store.save(nb, owner=OWNER_B)
    with pytest.raises(NotebookNotYours):
        store.delete(nb.notebook_id, owner=OWNER_B)
    assert dump(runs) == before
    assert OWNER_A not in json.dumps(dump(runs))  # kept as an HMAC only
    theirs = store.save(store.get(nb.notebook_id), owner=OWNER_B, as_copy=True)
    assert store.is_owner(theirs.notebook_id, OWNER_B) and not store.is_owner(theirs.notebook_id, OWNER_A)
    assert "owner" not in json.dumps(store.get(nb.notebook_id).to_json())  # the JSON (the API's) holds no owner
    store.delete(nb.notebook_id, owner=OWNER_A)


def test_deleting_a_notebook_removes_every_revision_and_every_cell_text_only_it_held(tmp_path):
    s = _settings(tmp_path)
    runs, store = _stores(s)
    keep = store.save(small(s, 2))
    gone = small(s, 3)
    gone.cells[0].markdown = "only here"
    gone = store.save(gone)
    store.save(gone)
    store.delete(gone.notebook_id)
    conn = runs.db().conn
    assert store.ids() == [keep.notebook_id]
    left = conn.execute("SELECT count(*) FROM notebook_revisions WHERE notebook_id = ?", [gone.notebook_id])
    assert left.fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM notebook_cells WHERE body LIKE '%only here%'").fetchone()[0] == 0
    assert len(store.get(keep.notebook_id).cells) == 2  # shared cell texts stay for the notebook that holds them
    with pytest.raises(NotebookNotFound):
        store.get(gone.notebook_id)


# ------------------------------------------------------------------------------------------ bad input (section 5)
BAD = {
    "an id that does not exist": (lambda s, store, nb: store.get("NoSuchNotebook1"), NotebookNotFound,
                                  "no stored notebook has the id 'NoSuchNotebook1'"),
    "a malformed id": (lambda s, store, nb: store.get("../../etc/passwd"), NotebookNotFound,
                       r"no stored notebook has the id '\.\./\.\./etc/passwd'"),
    "a revision that does not exist": (lambda s, store, nb: store.get(f"{nb.notebook_id}@99"), NotebookNotFound,
                                       r"has no revision 99; its revisions are 1 … 1"),
    "a 51st cell": (lambda s, store, nb: [nb.add_note(str(i)) for i in range(NOTEBOOK.max_cells + 1)],
                    NotebookFormatError, "a notebook holds at most 50 cells"),
    "a 51st cell in the JSON": (lambda s, store, nb: store.save(Notebook.from_json(
        {**nb.to_json(), "cells": [{"id": f"c{i}", "kind": "note", "markdown": ""} for i in range(51)]}, s)),
        NotebookFormatError, r"cells holds 51 cells; a notebook holds at most 50"),
    "a note of 10 MB": (lambda s, store, nb: nb.add_note("x" * 10_000_000), NotebookFormatError,
                        r"markdown has 10,000,000 characters; a note holds at most 20,000"),
    "a note of 10 MB in the JSON": (lambda s, store, nb: store.save(Notebook.from_json(
        {**nb.to_json(), "cells": [{"id": "n1", "kind": "note", "markdown": "x" * 10_000_000}]}, s)),
        NotebookFormatError, r"cells\[0\]\.markdown has 10,000,000 characters"),
    "a prompt over the run's cap": (lambda s, store, nb: nb.add_comparison(prompt="x" * (s.max_prompt_chars + 1)),
                                    NotebookFormatError, "prompt has 4,001 characters; the limit is 4,000"),
    "a revision over 2 MB": (lambda s, store, nb: store.save(Notebook.from_json({**nb.to_json(), "cells": [
        {"id": f"c{i}", "kind": "comparison", "text": "y" * 100_000} for i in range(22)]}, s)),
        NotebookFormatError, r"bytes as saved; a revision holds at most 2,097,152 bytes"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gets_a_clear_message_and_leaves_the_log_unchanged(tmp_path, case):
    s = _settings(tmp_path)
    runs, store = _stores(s)
    nb = store.save(small(s))
    before = dump(runs)
    do, error, message = BAD[case]
    with pytest.raises(error, match=message):
        do(s, store, nb)
    assert dump(runs) == before


def test_a_notebook_keeps_at_most_200_revisions_and_then_offers_a_copy(tmp_path):
    s = _settings(tmp_path)
    runs, store = _stores(s)
    nb = store.save(small(s))
    for _ in range(NOTEBOOK.max_revisions - 1):
        nb = store.save(nb)
    assert nb.revision == NOTEBOOK.max_revisions
    before = dump(runs)
    with pytest.raises(NotebookFormatError, match="has 200 revisions, the most one notebook keeps.*copy"):
        store.save(nb)
    assert dump(runs) == before
    assert store.save(nb, as_copy=True).revision == 1


# ------------------------------------------------------------------------------------------ running cells
def test_running_all_five_cells_loads_each_model_once_and_a_failing_cell_does_not_stop_the_others(tmp_path, demo):
    s = settings_for(tmp_path, demo)
    runs, store = _stores(s)
    nb = Notebook.new("five", ["demo:Q8_0", "demo:Q2_K"], "demo:F16", s, max_tokens=2, ctx=64)
    prompts = ["The capital of France is", "def f(x):", "Once upon a time", "12 + 7 =", "The quick brown fox"]
    for p in prompts[:3]:
        nb.add_comparison(prompt=p)
    bad = nb.add_comparison(prompt="a cell whose variant fails", specs=["demo:Q8_0", "./no-such-model.gguf"])
    for p in prompts[3:]:
        nb.add_comparison(prompt=p)
    nb = store.save(nb)
    pool = ModelPool(s)
    seen = []
    try:
        run_cells(nb, settings=s, pool=pool, store=runs, on_cell=lambda i, n, c: seen.append(f"cell {i} of {n}"))
        assert pool.loads == 3  # F16, Q8_0 and Q2_K: each loaded once over the five cells
    finally:
        pool.close()
    assert seen == [f"cell {i} of 6" for i in range(1, 7)]
    saved = store.save(nb)
    cells = saved.cells
    assert "no-such-model.gguf" in cells[3].error and cells[3].run_id is None
    ok = [c for c in cells if c.id != bad.id]
    assert all(c.run_id and not c.error and not saved.is_stale(c) for c in ok)
    assert [runs.get_run(c.run_id).input.text for c in ok] == prompts  # each an ordinary run of the log


# ------------------------------------------------------------------------------------------ notes and exports
HOSTILE_NOTES = [
    "<script>window.__pwned = 1; alert(1)</script>",
    "<iframe src=\"https://example.com\"></iframe>",
    "<img src=x onerror=\"window.__pwned = 1\">",
    "[click me](javascript:window.__pwned=1)",
    "[click me](JaVaScRiPt&#58;window.__pwned=1)",
    "![x](javascript:alert(1))",
    "<a href=\"javascript:alert(1)\" onclick=\"window.__pwned=1\">x</a>",
    "[x](vbscript:msgbox) [y](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "<svg onload=alert(1)>",
]


def unsafe_parts(markup: str) -> list[str]:
    """What in a piece of HTML could run: script-capable elements, on* attributes, URLs not http(s)/mailto/relative."""
    from html.parser import HTMLParser

    found: list[str] = []

    class Check(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag in ("script", "iframe", "object", "embed", "svg", "math", "base", "form", "meta", "link", "style"):
                found.append(f"<{tag}>")
            for name, value in attrs:
                if name.startswith("on"):
                    found.append(f"{tag} {name}")
                if name in ("href", "src", "action", "formaction", "xlink:href") and value:
                    scheme = value.strip().split(":", 1)[0].lower() if ":" in value.split("/", 1)[0] else ""
                    if scheme not in ("", "http", "https", "mailto"):
                        found.append(f"{tag} {name}={value[:30]}")

    Check().feed(markup)
    return found


@pytest.mark.parametrize("note", HOSTILE_NOTES)
def test_a_hostile_note_renders_as_text_with_no_tag_handler_or_script_url(note):
    out = render_note(note)
    assert unsafe_parts(out) == [], out
    assert out.startswith("<p>") and ("&lt;" in out or "javascript" in out.lower() or "script" in out.lower())


def test_a_note_keeps_its_markdown_headings_lists_links_and_code():
    out = render_note("# Title\n\n- a **bold** item\n\n[docs](https://example.com/x) `code`")
    assert "<h1>Title</h1>" in out and "<strong>bold</strong>" in out and "<code>code</code>" in out
    assert 'href="https://example.com/x"' in out and 'rel="noopener noreferrer nofollow"' in out


def test_a_code_cell_embeds_every_input_as_a_literal_and_calls_only_pc_compare(tmp_path):
    s = _settings(tmp_path)
    nb = Notebook.new("t", ["demo:Q8_0", 'demo:Q2_K'], None, s, temperature=0.7, seed=3)
    cell = nb.add_comparison(prompt=HOSTILE_PROMPT)
    code = compare_call(nb, cell, "cell_1")
    tree = ast.parse(code)
    assign, last = tree.body
    call = assign.value
    assert ast.unparse(call.func) == "pc.compare" and isinstance(last, ast.Expr)
    assert [ast.literal_eval(a) for a in call.args] == ["demo:Q8_0", "demo:Q2_K"]
    kw = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    assert kw == {"prompt": HOSTILE_PROMPT, "reference": None, "scoring": "auto", "ctx": 512, "top_k": 10,
                  "max_tokens": 32, "temperature": 0.7, "seed": 3}
    calls = [ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert calls == ["pc.compare"]  # __import__('os') is inside a string, never called


def test_the_ipynb_is_valid_nbformat_4_with_notes_code_and_embedded_outputs(tmp_path, demo):
    s = settings_for(tmp_path, demo)
    runs, store = _stores(s)
    nb = small(s, 2)
    nb.cells[0].markdown = "<script>alert(1)</script> **note**"
    nb.add_comparison(prompt=HOSTILE_PROMPT)
    pool = ModelPool(s)
    try:
        run_cells(nb, settings=s, pool=pool, store=runs)
    finally:
        pool.close()
    nb = store.save(nb)
    doc = to_ipynb(nb, runs.get_run)
    nbformat.validate(nbformat.from_dict(doc))
    kinds = [c["cell_type"] for c in doc["cells"]]
    assert kinds == ["markdown", "code", "markdown", "code", "code"]
    assert doc["cells"][2]["source"] == nb.cells[0].markdown
    first = doc["cells"][3]
    outputs = {k for o in first["outputs"] for k in o["data"]}
    assert {"text/html", "text/plain", "application/vnd.plotly.v1+json"} <= outputs
    run = runs.get_run(nb.cells[1].run_id)
    plain = first["outputs"][0]["data"]["text/plain"]
    assert f"{run.variants[0].ppl:.4f}"[:5] in plain.replace(",", "")
    figs = [o["data"]["application/vnd.plotly.v1+json"] for o in first["outputs"][1:]]
    assert len(figs) == 4 and all("data" in f and "layout" in f for f in figs)
    code = "".join(doc["cells"][4]["source"])
    assert ast.literal_eval(ast.parse(code).body[0].value.keywords[0].value) == HOSTILE_PROMPT


def test_the_html_export_is_one_page_with_plotly_inlined_once_and_notes_safe(tmp_path, demo):
    s = settings_for(tmp_path, demo)
    runs, store = _stores(s)
    nb = small(s, 2)
    nb.cells[0].markdown = "\n\n".join(HOSTILE_NOTES)
    pool = ModelPool(s)
    try:
        run_cells(nb, settings=s, pool=pool, store=runs)
    finally:
        pool.close()
    page = to_html(store.save(nb), runs.get_run)
    assert page.count("Plotly.newPlot") >= 4 and page.count("plotly.js v") == 1
    assert "default-src 'none'" in page  # nothing is fetched: it opens offline
    note_part = page.split('<section class="pc-cell pc-note">', 1)[1].split("</section>", 1)[0]
    assert unsafe_parts(note_part) == [] and "&lt;script&gt;" in note_part


# ------------------------------------------------------------------------------------------ the page's decisions
def test_a_history_run_opens_as_a_one_cell_notebook_and_a_compare_run_joins_one(tmp_path, demo):
    s = settings_for(tmp_path, demo)
    core = Dashboard(s)
    try:
        desk = NotebookDesk(core)
        specs, text, params = core.prepare("demo", ["Q8_0", "Q2_K"], [], "", "demo:F16", "Hello there", "", None,
                                           "auto", 64, 5, 2, 0.0, 0)
        run = [r for k, _f, _m, r in core.run(specs, text, params, OWNER_A) if k == "done"][0]
        one = desk.one_cell(run.run_id)
        assert len(one.cells) == 1 and one.cells[0].run_id == run.run_id and not one.is_stale(one.cells[0])
        assert one.variants.specs == ["demo:Q8_0", "demo:Q2_K"] and one.variants.reference == "demo:F16"
        grown = desk.with_run(small(s), run.run_id)
        assert grown.cells[-1].run_id == run.run_id and grown.cells[-1].prompt == "Hello there"
        with pytest.raises(BadInput, match="no stored run"):
            desk.with_run(small(s), "NoSuchRun")
    finally:
        core.pool.close()


def test_public_run_all_runs_at_most_ten_cells_and_says_so(tmp_path):
    s = _settings(tmp_path, public=True)
    desk = NotebookDesk(Dashboard(s, pool=object()))
    nb = small(s, 13)
    ids, note = desk.run_all_plan(nb)
    assert len(ids) == 10 and ids == [c.id for c in nb.cells if c.kind == "comparison"][:10]
    assert "at most 10 cells" in note
    local = NotebookDesk(Dashboard(_settings(tmp_path), pool=object()))
    assert len(local.run_all_plan(nb)[0]) == 12


# ------------------------------------------------------------------------------------------ the CLI
def _cli(tmp_path, demo, *args):
    env = app_env(tmp_path, demo, 0)
    return subprocess.run([sys.executable, "-m", "pythia_compare", "--offline", "--db", str(tmp_path / "runs.db"),
                           "--home", str(tmp_path / "home"), "notebook", *args], capture_output=True, text=True,
                          env=env, cwd=str(ROOT), timeout=600)


def test_the_cli_lists_shows_runs_exports_and_deletes_a_notebook(tmp_path, demo):
    s = settings_for(tmp_path, demo)
    runs, store = _stores(s)
    nb = store.save(small(s, 2))
    listed = _cli(tmp_path, demo, "list")
    assert listed.returncode == 0 and nb.notebook_id in listed.stdout and "probes" in listed.stdout
    ran = _cli(tmp_path, demo, "run", nb.notebook_id)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == f"{nb.notebook_id}@2" and "cell 1 of 1" in ran.stderr
    after = store.get(nb.notebook_id)
    assert after.cells[1].run_id and runs.get_run(after.cells[1].run_id).input.text == nb.cells[1].prompt
    shown = _cli(tmp_path, demo, "show", nb.notebook_id, "--json")
    assert json.loads(shown.stdout) == after.to_json()
    out = tmp_path / "nb.ipynb"
    exported = _cli(tmp_path, demo, "export", nb.notebook_id, "--format", "ipynb", "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    nbformat.validate(nbformat.reads(out.read_text(encoding="utf-8"), as_version=4))
    html_out = _cli(tmp_path, demo, "export", f"{nb.notebook_id}@1", "--format", "html")
    assert html_out.returncode == 0 and html_out.stdout.startswith("<!DOCTYPE html>")
    missing = _cli(tmp_path, demo, "show", "NoSuchNotebook")
    assert missing.returncode == 2 and "no stored notebook has the id 'NoSuchNotebook'" in missing.stderr
    assert _cli(tmp_path, demo, "delete", nb.notebook_id).returncode == 0
    assert store.count() == 0


# ------------------------------------------------------------------------------------------ the backup
WRITE = "hf_" + "w" * 34
SECRET = "the-owner-secret-of-these-tests"
REPO = "alice/pythia-runs"


def test_notebook_revisions_and_deletions_survive_a_restart_through_the_backup(tmp_path):
    with FakeHub() as hub:
        hub.add_token(WRITE, "alice")

        def settings(name):
            return Settings(db_path=tmp_path / name / "runs.db", home=tmp_path / name / "home",
                            hf_cache_dir=tmp_path / name / "hf", offline=False, hub_endpoint=hub.endpoint,
                            hf_token=WRITE, backup_repo=REPO, owner_secret=SECRET, backup_minutes=60.0, public=True)

        first = settings("first")
        backup = Backup.start(first)
        try:
            assert backup.on, backup.reason
            desk = NotebookDesk(Dashboard(first, pool=object(), backup=backup))
            kept = desk.save(small(first), OWNER_A)
            assert kept.ok
            second = kept.notebook.copy()
            second.title = "second revision"
            kept2 = desk.save(second, OWNER_A).notebook
            gone = desk.save(small(first), OWNER_A).notebook
            assert desk.delete(gone.notebook_id, OWNER_A).startswith("Deleted")
            backup.push()
        finally:
            backup.close()
        lines = [json.loads(x) for name, data in hub.dataset_files(REPO).items() if name.endswith(".jsonl")
                 for x in data.decode().splitlines()]
        assert {"deleted_notebook": gone.notebook_id} .items() <= lines[-1].items()
        assert OWNER_A not in json.dumps(lines)

        fresh = settings("second")
        again = Backup.start(fresh)
        try:
            assert again.on and again.restore.notebook_revisions == 2 and again.restore.skipped == []
            runs, store = _stores(fresh)
            assert store.ids() == [kept2.notebook_id]  # the deleted one stays deleted
            assert store.get(kept2.notebook_id).to_json() == kept2.to_json()  # the link opens the same notebook
            assert store.get(f"{kept2.notebook_id}@1").to_json() == kept.notebook.to_json()
            assert store.is_owner(kept2.notebook_id, OWNER_A) and not store.is_owner(kept2.notebook_id, OWNER_B)
        finally:
            again.close()


# ------------------------------------------------------------------------------------------ links, in process
class _Link:
    """What gradio hands the page-load handler: the link's query parameters."""

    def __init__(self, **query):
        self.query_params = query


@pytest.mark.parametrize("hostile", ["' OR 1=1 --", "x" * 10_000, "ünïcödé-☃", "../../etc/passwd", "", "AAAA@-1",
                                     "AAAAAAAAAAAA@99999999999"])
def test_a_bad_notebook_link_opens_a_new_notebook_saying_not_found_and_loads_no_model(tmp_path, hostile):
    from pythia_compare.web.ui import Handlers, NotebookHandlers

    app = Handlers(_settings(tmp_path))
    nh = NotebookHandlers(app)
    out = nh.on_load("o" * 24, _Link(notebook=hostile))
    assert out[2].startswith("### Notebook not found") and out[3] == ""  # no ref: no link, no downloads
    assert app.pool.loaded() == [] and NotebookStore(app.store).count() == 0


def test_a_link_with_a_revision_opens_that_revision_and_the_plain_link_the_latest(tmp_path):
    from pythia_compare.web.ui import Handlers, NotebookHandlers

    s = _settings(tmp_path)
    app = Handlers(s)
    store = NotebookStore(app.store, s)
    first = store.save(small(s))
    later = first.copy()
    later.title = "later"
    later = store.save(later)
    nh = NotebookHandlers(app)
    assert nh.on_load(None, _Link(notebook=f"{first.notebook_id}@1"))[0] == first.to_json()
    assert nh.on_load(None, _Link(notebook=first.notebook_id))[0] == later.to_json()
    assert nh.api(f"{first.notebook_id}@1") == first.to_json()
    assert app.pool.loaded() == []


def test_a_cell_with_the_lens_switch_stores_a_lens_run_its_export_asks_for_it_and_a_corpus_cell_says_why_not(
        tmp_path, demo):
    s = settings_for(tmp_path, demo)
    runs, store = _stores(s)
    nb = Notebook.new("layers", ["demo:Q2_K"], "demo:F16", s, max_tokens=0, ctx=64)
    lens_cell = nb.add_comparison(prompt="The capital of France is")
    plain = nb.add_comparison(prompt="def f(x):")
    desk = NotebookDesk(Dashboard(s, store=runs))
    nb = desk.set_cell_options(nb, 0, "prompt", "", "", "", True)
    corpus = nb.add_comparison(text=(ROOT / "assets" / "demo" / "heldout.txt").read_text(encoding="utf-8"))
    nb = desk.set_cell_options(nb, 2, "corpus", "", "", "", True)
    assert [c.lens for c in nb.cells] == [True, False, True]
    again = Notebook.from_json(json.loads(json.dumps(nb.to_json())), s)
    assert [c.lens for c in again.cells] == [True, False, True] and "lens" not in nb.cells[1].to_json()
    pool = ModelPool(s)
    try:
        run_cells(nb, settings=s, pool=pool, store=runs)
    finally:
        pool.close()
    by_id = {c.id: c for c in nb.cells}
    with_lens = runs.get_run(by_id[lens_cell.id].run_id)
    assert with_lens.params.lens_positions is not None
    assert all(e.lens is not None and e.lens.status == "ok" for e in with_lens.entries())
    assert runs.get_run(by_id[plain.id].run_id).params.lens_positions is None
    assert by_id[corpus.id].run_id is None and "prompt runs only" in by_id[corpus.id].error
    assert "lens=True" in compare_call(nb, nb.cells[0], "r1") and "lens=" not in compare_call(nb, nb.cells[1], "r2")
    with pytest.raises(NotebookFormatError, match=r"cells\[0\]\.lens.*true or false"):
        Notebook.from_json({**nb.to_json(), "cells": [{**nb.cells[0].to_json(), "lens": "yes"}]}, s)
