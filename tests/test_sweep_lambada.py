"""LAMBADA sweeps (`sweep plan --scoring lambada`) on the offline demo suite, through the real CLI, real llama.cpp
and real SQLite files: each cell's figures are a single `--scoring lambada` run's, shards and a resume keep them,
another LAMBADA file is refused, bad input is refused by name with nothing written, and the Sweeps tab draws
LAMBADA accuracy vs step (EleutherAI's published lambada_openai beside it, for the sweep's own repo only)."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import sqlite3
import zipfile
from pathlib import Path

import pytest

from pythia_compare.config import Settings
from pythia_compare.runs import lambada, published
from pythia_compare.runs.compare import RunParams, run_comparison
from pythia_compare.runs.export import run_to_zip
from pythia_compare.runs.pool import ModelPool
from pythia_compare.runs.store import RunStore
from pythia_compare.sweeps.store import LAMBADA_CELL_NUMBERS, SweepStore
from pythia_compare.web import sweepplots
from pythia_compare.web.sweepview import LAMBADA_CELL_COLUMNS, cell_run_id, published_lambada_for_sweep
from pythia_compare.web.ui import LAMBADA_FIGURE_LABEL, SweepHandlers
from tests.support import ROOT, run_cli

DEMO_FILE = ROOT / "assets" / "demo" / "lambada.jsonl"
STEPS, QUANTS, LIMIT, CTX = "100,300", "F16,Q2_K", 48, 128
CELLS = 4


def _env(tmp: Path) -> dict:
    return {"PYTHIA_COMPARE_HOME": str(tmp / "home"), "PYTHIA_COMPARE_OFFLINE": "1",
            "PYTHIA_COMPARE_THREADS": "1", "HF_HUB_CACHE": str(tmp / "hf")}


def _cli(args: list[str], tmp: Path, db: Path):
    return run_cli(["--db", str(db), *args], env=_env(tmp))


def _plan(tmp: Path, db: Path, lambada_file: Path, extra=()) -> str:
    r = _cli(["sweep", "plan", "--repo", "demo", "--steps", STEPS, "--quants", QUANTS, "--scoring", "lambada",
              "--lambada-file", str(lambada_file), "--limit", str(LIMIT), "--ctx", str(CTX), *extra], tmp, db)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().splitlines()[-1]


def _figures(db: Path, sweep_id: str) -> dict:
    with RunStore(db) as store:
        sweep = SweepStore(store).get(sweep_id)
    return {(c["step"], c["quant"]): {k: c[k] for k in ("status", *LAMBADA_CELL_NUMBERS, "bpw")}
            for c in sweep["cells"]}


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A LAMBADA sweep of the demo suite, 2 steps × 2 quants on the first 48 examples of its own LAMBADA file
    (a copy), planned and run in one process: (tmp, db, sweep id, the file)."""
    tmp = tmp_path_factory.mktemp("lambada-sweep")
    data = tmp / "lambada.jsonl"
    shutil.copy(DEMO_FILE, data)
    db = tmp / "runs.db"
    sweep_id = _plan(tmp, db, data)
    r = _cli(["sweep", "run", sweep_id], tmp, db)
    assert r.returncode == 0, r.stderr
    assert f"{CELLS} done, 0 failed" in r.stdout
    return tmp, db, sweep_id, data


# ------------------------------------------------------------------------------------------ the cells' figures


def test_each_cell_holds_the_figures_of_a_single_lambada_run_of_its_variant_on_the_same_examples(swept):
    tmp, db, sweep_id, data = swept
    with RunStore(db) as store:
        sweep = SweepStore(store).get(sweep_id)
        runs = {(c["step"], c["quant"]): store.get(c["run_id"]) for c in sweep["cells"]}
    settings = Settings.from_env(home=tmp / "home-single", offline=True)
    pool = ModelPool(settings)
    hits = 0
    try:
        for c in sweep["cells"]:
            spec = f"demo@step{c['step']}:{c['quant']}"
            single = run_comparison([spec], "", RunParams(scoring="lambada", ctx=CTX, max_tokens=0, lambada_file=data,
                                                          limit=LIMIT), settings=settings, pool=pool).to_json()
            lam = single["variants"][0]["lambada"]
            assert (c["lambada_n"], c["lambada_acc"], c["lambada_acc_stderr"], c["lambada_ppl"],
                    c["lambada_ppl_stderr"]) == (LIMIT, lam["acc"], lam["acc_stderr"], lam["ppl"], lam["ppl_stderr"])
            cell_run = runs[(c["step"], c["quant"])]
            mine = cell_run["variants"][0]
            assert mine["spec"] == spec and mine["lambada"]["is_greedy"] == lam["is_greedy"]
            assert mine["lambada"]["loglikelihood"] == lam["loglikelihood"]
            assert c["ppl"] is None and c["kld_mean"] is None  # no corpus figures: no meaning in a LAMBADA cell
            hits += sum(lam["is_greedy"])
    finally:
        pool.close()
    assert hits > 0  # some greedy hits, or equal accuracies would prove little


def test_a_cells_run_opens_as_a_lambada_run_with_its_reference_and_its_per_example_csv(swept):
    _, db, sweep_id, data = swept
    with RunStore(db) as store:
        sweep = SweepStore(store).get(sweep_id)
        cell = next(c for c in sweep["cells"] if (c["step"], c["quant"]) == (300, "Q2_K"))
        run = store.get(cell["run_id"])
        blob = run_to_zip(store.get_run(cell["run_id"]))
    texts = [json.loads(x)["text"] for x in data.read_text(encoding="utf-8").splitlines()[:LIMIT]]
    assert run["params"]["scoring"] == "lambada" and run["input"]["text"] == "\n".join(texts)
    assert run["lambada"]["file"] == "lambada.jsonl" and run["lambada"]["limit"] == LIMIT
    assert run["reference"]["spec"] == "demo@step300:F16" and run["variants"][0]["lambada"]["agreement"] is not None
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        rows = z.read("lambada.csv").decode("utf-8").splitlines()
    assert len(rows) == 1 + 2 * LIMIT  # the reference's examples and the cell's


def test_the_sweep_json_records_what_the_cells_scored_and_show_prints_the_lambada_table(swept):
    tmp, db, sweep_id, data = swept
    s = json.loads(_cli(["sweep", "show", sweep_id, "--json"], tmp, db).stdout)
    assert s["scoring"] == "lambada" and s["max_chunks"] is None
    sha = hashlib.sha256(data.read_bytes()).hexdigest()
    assert s["text_sha256"] == sha
    # the local path stays in the plan (shards read it), out of the JSON the API serves
    assert s["lambada"] == {"file": "lambada.jsonl", "sha256": sha, "repo": None, "revision": None, "limit": LIMIT,
                            "n_file": 64, "n": LIMIT}
    table = _cli(["sweep", "show", sweep_id], tmp, db).stdout
    assert f"LAMBADA: {LIMIT} of 64 examples of lambada.jsonl" in table
    header = next(line for line in table.splitlines() if line.split()[:3] == ["step", "quant", "status"])
    assert header.split()[3:6] == ["acc", "±", "PPL"] and all(len(line) <= 80 for line in table.splitlines())


# ------------------------------------------------------------------------------------------ shards, resume


def test_shards_merged_and_a_resumed_run_keep_every_cells_lambada_figures(swept, tmp_path):
    _, db1, sweep1, data = swept
    one = _figures(db1, sweep1)
    db = tmp_path / "plan.db"
    sweep_id = _plan(tmp_path, db, data)
    plan_bytes = db.read_bytes()
    out = str(tmp_path / "shard-{shard}.db")
    for i in range(2):
        r = _cli(["sweep", "run", sweep_id, "--shard", f"{i}/2", "--out", out], tmp_path, db)
        assert r.returncode == 0, r.stderr
    assert db.read_bytes() == plan_bytes  # shards only read the plan's file
    merged = tmp_path / "merged.db"
    r = _cli(["sweep", "merge", str(tmp_path / "shard-0.db"), str(tmp_path / "shard-1.db")], tmp_path, merged)
    assert r.returncode == 0 and f"{CELLS} cells added" in r.stdout, r.stderr
    assert _figures(merged, sweep_id) == one
    # A resume: half the grid (shard 0 of 2) in the plan's own log, then the rest; the done cells are kept.
    r = _cli(["sweep", "run", sweep_id, "--shard", "0/2"], tmp_path, db)
    assert r.returncode == 0 and "2 done" in r.stdout, r.stderr
    with sqlite3.connect(db) as conn:
        first = dict(conn.execute("SELECT step || quant, run_id FROM sweep_cells WHERE status = 'done'").fetchall())
    r = _cli(["sweep", "run", sweep_id], tmp_path, db)
    assert r.returncode == 0 and "2 done, 0 failed, 2 already done" in r.stdout, r.stderr
    assert _figures(db, sweep_id) == one
    with sqlite3.connect(db) as conn:
        again = dict(conn.execute("SELECT step || quant, run_id FROM sweep_cells").fetchall())
        assert conn.execute("SELECT count(*) FROM runs WHERE sweep_id = ?", [sweep_id]).fetchone()[0] == CELLS
    assert {k: again[k] for k in first} == first


def test_a_shard_or_resume_on_another_lambada_file_is_refused_and_writes_nothing(swept, tmp_path):
    data = tmp_path / "mine.jsonl"
    shutil.copy(DEMO_FILE, data)
    db = tmp_path / "runs.db"
    sweep_id = _plan(tmp_path, db, data)
    before = db.read_bytes()
    lines = data.read_text(encoding="utf-8").splitlines(keepends=True)
    data.write_text("".join(lines[1:] + lines[:1]), encoding="utf-8")  # the same lines, another order
    for extra in ([], ["--out", str(tmp_path / "shard-{shard}.db")]):
        r = _cli(["sweep", "run", sweep_id, *extra], tmp_path, db)
        assert r.returncode == 2 and "is not the one sweep" in r.stderr and "--lambada-file" in r.stderr, r.stderr
    moved = tmp_path / "elsewhere.jsonl"
    shutil.copy(DEMO_FILE, moved)
    data.unlink()
    r = _cli(["sweep", "run", sweep_id], tmp_path, db)
    assert r.returncode == 2 and "which is not at" in r.stderr and "--lambada-file PATH" in r.stderr
    other = tmp_path / "other.jsonl"
    other.write_text('{"text": "a file of other examples"}\n', encoding="utf-8")
    r = _cli(["sweep", "run", sweep_id, "--lambada-file", str(other)], tmp_path, db)
    assert r.returncode == 2 and "is not the one sweep" in r.stderr
    assert db.read_bytes() == before and not list(tmp_path.glob("shard-*.db"))
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 0
    # The plan's own file at another path (another machine) is the same examples: it runs.
    r = _cli(["sweep", "run", sweep_id, "--lambada-file", str(moved)], tmp_path, db)
    assert r.returncode == 0 and f"{CELLS} done" in r.stdout, r.stderr


# ------------------------------------------------------------------------------------------ bad input


def _bad_plans(tmp: Path) -> dict:
    def jsonl(name: str, text: str) -> str:
        p = tmp / name
        p.write_text(text, encoding="utf-8")
        return str(p)

    plan = ["sweep", "plan", "--repo", "demo", "--steps", "100", "--quants", "F16", "--ctx", "128"]
    lam = plan + ["--scoring", "lambada"]
    demo = ["--lambada-file", str(DEMO_FILE)]
    return {
        "a text with --scoring lambada": (lam + demo + ["--text-file", str(ROOT / "assets/demo/heldout.txt")],
                                          "takes no --text-file"),
        "--limit 0": (lam + demo + ["--limit", "0"], "limit 0 is not a number of examples; use 1 … 64"),
        "--limit negative": (lam + demo + ["--limit", "-3"], "limit -3 is not a number of examples"),
        "--limit not an integer": (lam + demo + ["--limit", "ten"], "limit must be a whole number of examples"),
        "--limit past the examples": (lam + demo + ["--limit", "65"], "more than the 64 examples"),
        "a LAMBADA file that does not exist": (lam + ["--lambada-file", str(tmp / "missing.jsonl")],
                                               "does not exist"),
        "a line that is not JSON": (lam + ["--lambada-file", jsonl("a.jsonl", '{"text": "fine words"}\nnope\n')],
                                    "a.jsonl, line 2 is not JSON"),
        "a line without text": (lam + ["--lambada-file", jsonl("b.jsonl", '{"txt": "the words"}\n')],
                                'b.jsonl, line 1 has no "text" key'),
        "a one-word text": (lam + ["--lambada-file", jsonl("c.jsonl", '{"text": "alone"}\n')], "the text has one word"),
        "a blank line": (lam + ["--lambada-file", jsonl("d.jsonl", '{"text": "a b"}\n\n{"text": "c d"}\n')],
                         "d.jsonl, line 2 is blank"),
        "a trailing space": (lam + ["--lambada-file", jsonl("e.jsonl", '{"text": "ends in space "}\n')],
                             "ends in whitespace"),
        "--lambada-file without --scoring lambada": (plan + demo + ["--text-file",
                                                                    str(ROOT / "assets/demo/heldout.txt")],
                                                     "belong to --scoring lambada"),
        "--limit without --scoring lambada": (plan + ["--limit", "5", "--text-file",
                                                      str(ROOT / "assets/demo/heldout.txt")],
                                              "belong to --scoring lambada"),
        "--max-chunks in a LAMBADA sweep": (lam + demo + ["--max-chunks", "4"], "--max-chunks belongs to corpus"),
        "a corpus sweep without a text": (plan, "--text-file PATH"),
    }


@pytest.mark.parametrize("case", list(_bad_plans(Path("/tmp"))))
def test_bad_lambada_sweep_input_exits_2_naming_the_flag_and_writes_nothing(case, tmp_path):
    db = tmp_path / "runs.db"
    args, says = _bad_plans(tmp_path)[case]
    r = _cli(args, tmp_path, db)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.startswith("error: ") and says in r.stderr, r.stderr
    assert not db.exists() and not (tmp_path / "home").exists()


# ------------------------------------------------------------------------------------------ the Sweeps tab


def test_the_sweeps_tab_draws_lambada_accuracy_per_quant_hides_the_corpus_figures_and_lists_lambada_columns(swept):
    _, db, sweep_id, _ = swept
    handlers = SweepHandlers(Settings.from_env(db_path=db, offline=True), RunStore(db))
    sweep = handlers.desk.find(sweep_id)
    status, lam_slot, *hidden, cells, shown_id, _pub = handlers.open_sweep(sweep_id)
    assert shown_id == sweep_id and "LAMBADA: 48 of 64 examples of lambada.jsonl" in status
    assert lam_slot["visible"] and lam_slot["label"] == LAMBADA_FIGURE_LABEL
    assert [s["visible"] for s in hidden] == [False, False, False]  # the corpus figures mean nothing here
    fig = lam_slot["value"]
    assert [t.name for t in fig.data] == ["F16", "Q2_K"] and fig.layout.xaxis.type == "log"
    for t in fig.data:  # one trace per quant: its cells' acc ± stderr, by step, each point opening its cell's run
        mine = sorted((c for c in sweep["cells"] if c["quant"] == t.name), key=lambda c: c["step"])
        assert list(t.y) == [c["lambada_acc"] for c in mine]
        assert list(t.error_y.array) == [c["lambada_acc_stderr"] for c in mine]
        assert [d[1] for d in t.customdata] == [c["run_id"] for c in mine]
    # a demo sweep of a local file: EleutherAI's numbers are another dataset's, so a note, not a line
    assert "not drawn beside it" in fig.layout.annotations[0].text
    assert cells["headers"] == LAMBADA_CELL_COLUMNS and len(cells["data"]) == CELLS
    row = next(r for r in cells["data"] if r[:2] == ["300", "Q2_K"])
    cell = next(c for c in sweep["cells"] if (c["step"], c["quant"]) == (300, "Q2_K"))
    assert cell_run_id(row) == cell["run_id"] and row[LAMBADA_CELL_COLUMNS.index("examples")] == str(LIMIT)
    # a corpus sweep after it shows its four figures again
    assert all(s["visible"] for s in handlers.views(None)[1:5])


def _pythia_lambada_sweep(repo: str, steps: list[int], *, sha256: str = lambada.HUB_SHA256) -> dict:
    cells = [{"step": s, "quant": q, "hub": False, "status": "done", "run_id": f"r{s}{q}", "lambada_n": 500,
              "lambada_acc": 0.3 + s / 1e6, "lambada_acc_stderr": 0.02} for s in steps for q in ("F16", "Q4_K_M")]
    return {"sweep_id": "sw1", "name": "pythia", "repo": repo, "steps": steps, "quants": ["F16", "Q4_K_M"],
            "scoring": "lambada", "cells": cells,
            "lambada": {"file": lambada.HUB_FILE, "sha256": sha256, "repo": lambada.HUB_REPO,
                        "revision": lambada.HUB_REVISION, "limit": 500, "n_file": lambada.HUB_EXAMPLES, "n": 500}}


@pytest.mark.parametrize("repo", ["EleutherAI/pythia-410m-deduped", "EleutherAI/pythia-410m-deduped-v0"])
def test_a_pythia_lambada_sweep_draws_its_own_repos_published_lambada_accuracy_and_never_the_other_runs(repo):
    steps = [13000, 33000, 143000]
    sweep = _pythia_lambada_sweep(repo, steps)
    fig = sweepplots.sweep_lambada_figure(sweep, published_lambada_for_sweep(sweep))
    quants = [t for t in fig.data if t.name != sweepplots.PUBLISHED_LAMBADA_NAME]
    (pub,) = [t for t in fig.data if t.name == sweepplots.PUBLISHED_LAMBADA_NAME]
    assert [t.name for t in quants] == ["F16", "Q4_K_M"]
    have = [s for s in published.steps(repo) if 13000 <= s <= 143000]
    assert list(pub.x) == [float(s) for s in have]
    assert list(pub.y) == [published.lookup(repo, s, "lambada_openai")["acc"] for s in have]
    assert pub.y[-1] == pytest.approx({"EleutherAI/pythia-410m-deduped": 0.52435,
                                       "EleutherAI/pythia-410m-deduped-v0": 0.51096}[repo], abs=5e-6)
    assert all(d[1] == "–" for d in pub.customdata)  # a published point opens no run
    # another file's examples (not lm-eval's test split): no published line, a note saying why
    other = _pythia_lambada_sweep(repo, steps, sha256="0" * 64)
    fig = sweepplots.sweep_lambada_figure(other, published_lambada_for_sweep(other))
    assert [t.name for t in fig.data] == ["F16", "Q4_K_M"] and "not drawn" in fig.layout.annotations[0].text


def test_a_sweep_of_the_hub_dataset_pins_its_revision_and_shards_score_it_from_the_cache_offline(tmp_path):
    from tests.fakehub import FakeHub
    from tests.ui_support import settings_for

    from pythia_compare.sweeps.sweep import plan_sweep, run_shard

    files = {"README.md": b"---\npretty_name: LAMBADA OpenAI\n---\n",  # the dataset's layout (docs/metrics.md)
             "data/lambada_test_en.jsonl": DEMO_FILE.read_bytes()}
    settings = settings_for(tmp_path, ROOT / "assets" / "demo")
    store = RunStore(settings.db_path)
    with FakeHub() as hub:
        commit = hub.add_dataset(lambada.HUB_REPO, files, private=False)
        online = settings.replace(offline=False, hub_endpoint=hub.endpoint, lambada_revision=commit)
        sweep_id, n = plan_sweep(online, store, steps="100", quants="F16,Q2_K", repo="demo", scoring="lambada",
                                 limit=8, ctx=CTX)
    # The shard runs offline with the default revision in its settings: it scores the plan's, from the cache.
    report = run_shard(settings, store, sweep_id, progress=False)
    assert (n, report.done, report.failed) == (2, 2, 0)
    sweep = SweepStore(store).get(sweep_id)
    assert sweep["lambada"]["repo"] == lambada.HUB_REPO and sweep["lambada"]["revision"] == commit
    assert sweep["lambada"]["file"] == lambada.HUB_FILE and "path" not in sweep["lambada"]
    for c in sweep["cells"]:
        run = store.get(c["run_id"])
        assert (run["lambada"]["repo"], run["lambada"]["revision"], run["lambada"]["limit"]) == (lambada.HUB_REPO,
                                                                                                commit, 8)
        assert c["lambada_n"] == 8 and c["lambada_acc"] == run["variants"][0]["lambada"]["acc"]
    # not lm-eval's test split (the demo's own file under that name): no published line beside it
    assert published_lambada_for_sweep(sweep)["points"] == []
    store.close()
