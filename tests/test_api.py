"""The library face (issue 21): `import pythia_compare as pc` stays light, pc.compare() runs and logs as the CLI
does, models stay loaded between calls, results give DataFrames, figures and a link, and bad input gets a typed
error in the API's words with nothing logged. On the bundled demo suite, offline, with real llama.cpp and SQLite."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import sqlite3
import subprocess
import sys

import pytest

import pythia_compare as pc
from pythia_compare.errors import BadInput, InputTextError, OfflineMissing, RunNotFound, SpecError
from tests.support import ROOT, run_cli

PROMPT = "def fibonacci(n):"
CLI_FLAGS = re.compile(r"--(prompt|text-file|scoring|ctx|top-k|max-tokens|temperature|seed|reference|offline|db|"
                       r"home)\b")
HEAVY = ("gradio", "plotly", "pandas", "llama_cpp", "torch", "numpy")


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One cache of converted demo files for the module (the conversions happen once)."""
    return tmp_path_factory.mktemp("api")


@pytest.fixture
def env(shared, monkeypatch, demo_dir):
    """The environment a user sets: offline, the cache in `shared`, an empty Hugging Face cache, no Hub."""
    monkeypatch.setenv("PYTHIA_COMPARE_HOME", str(shared / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(shared / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("PYTHIA_COMPARE_DB", str(shared / "default-log.db"))
    monkeypatch.delenv("PYTHIA_COMPARE_OFFLINE", raising=False)
    yield shared
    pc.close()


def _runs_in(db) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT count(*) FROM runs").fetchone()[0]


def test_importing_pythia_compare_and_reaching_its_functions_loads_no_heavy_library():
    code = ("import sys, pythia_compare as pc\n"
            "fns = (pc.compare, pc.open_run, pc.list_runs, pc.open_sweep, pc.close)\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


def test_every_api_name_still_works_after_every_submodule_is_imported(tmp_path, demo_dir):
    """No API name equals a module or subpackage: importing them all first leaves each name the API's."""
    code = f"""
import importlib, pkgutil, sys, pythia_compare as pc
for m in pkgutil.walk_packages(pc.__path__, 'pythia_compare.'):
    importlib.import_module(m.name)
from pythia_compare import api
from pythia_compare.errors import RunNotFound
changed = [n for n in pc._API if getattr(pc, n) is not getattr(api, n)]
assert not changed, changed
db = {str(tmp_path / 'runs.db')!r}
with pc.session():
    r = pc.compare('demo:Q8_0', 'demo', prompt='def f(x):', max_tokens=0, offline=True, db=db, progress=False)
    assert isinstance(r, pc.Result) and pc.model_pool().loads == 2
assert pc.model_pool() is None
assert pc.open_run(r.run.run_id, db=db).run.to_json() == r.run.to_json()
assert list(pc.list_runs(db=db)['run']) == [r.run.run_id]
try:
    pc.open_sweep('nope', db=db)
except RunNotFound as e:
    print('sweep:', e)
pc.close()
assert pc.SweepResult.__module__ == 'pythia_compare.api'
print('ok')
"""
    env = {"PYTHIA_COMPARE_HOME": str(tmp_path / "home"), "HF_HUB_CACHE": str(tmp_path / "hf"),
           "HF_ENDPOINT": "http://127.0.0.1:9"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT),
                         env={**__import__("os").environ, **env}, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[-1] == "ok" and lines[-2].startswith("sweep: ") and "'nope'" in lines[-2]


def test_a_second_compare_on_the_same_variants_loads_nothing_and_close_frees_them(env):
    db = env / "loads.db"
    first = pc.compare("demo:Q8_0", "demo", prompt=PROMPT, max_tokens=4, offline=True, db=db, progress=False)
    pool = pc.model_pool()
    assert pool.loads == 2 and len(pool.loaded()) == 2
    second = pc.compare("demo:Q8_0", "demo", prompt=PROMPT, max_tokens=4, offline=True, db=db, progress=False)
    assert pc.model_pool() is pool and pool.loads == 2  # both models came from the pool
    assert second.run.run_id != first.run.run_id and _runs_in(db) == 2
    for a, b in zip(first.run.entries(), second.run.entries()):
        assert a.ppl == b.ppl and a.token_logprobs == b.token_logprobs
    third = pc.compare("demo:Q8_0", "demo@step100", prompt=PROMPT, max_tokens=0, offline=True, db=db, progress=False)
    assert pool.loads == 3 and third.run.reference.spec == "demo@step100"  # only step100 (F16) was new
    pc.close()
    assert pc.model_pool() is None and pool.loaded() == []
    pc.compare("demo:Q8_0", "demo", prompt=PROMPT, max_tokens=0, offline=True, db=db, progress=False)
    assert pc.model_pool() is not pool and pc.model_pool().loads == 2


def test_compare_gives_the_numbers_of_the_cli_and_logs_the_run_where_db_says(env):
    db = env / "same.db"
    r = pc.compare("demo:Q4_K_M", "demo@step300", "demo", prompt=PROMPT, max_tokens=4, offline=True, db=db,
                   progress=False)
    proc = run_cli(["--offline", "--db", str(env / "cli.db"), "--home", str(env / "home"), "compare", "demo:Q4_K_M",
                    "demo@step300", "demo", "--prompt", PROMPT, "--max-tokens", "4", "--json"])
    assert proc.returncode == 0, proc.stderr
    cli = json.loads(proc.stdout)
    ours = r.run.to_json()
    assert ours["params"] == cli["params"] and ours["params"]["reference"] == "demo"
    for mine, theirs in zip([ours["reference"], *ours["variants"]], [cli["reference"], *cli["variants"]]):
        assert (mine["spec"], mine["ppl"], mine["token_logprobs"]) == (theirs["spec"], theirs["ppl"],
                                                                        theirs["token_logprobs"])
        assert mine["generation"]["text"] == theirs["generation"]["text"]
        assert (mine["kld"] or {}).get("mean") == (theirs["kld"] or {}).get("mean")
    assert _runs_in(db) == 1 and pc.open_run(r.run.run_id, db=db).run.to_json() == ours
    unlogged = pc.compare("demo:Q4_K_M", "demo", prompt=PROMPT, max_tokens=0, offline=True, db=False,
                          progress=False)
    assert unlogged.run.run_id is None and _runs_in(db) == 1
    with pytest.raises(BadInput, match="not logged"):
        unlogged.link()
    default = pc.compare("demo:Q4_K_M", "demo", prompt=PROMPT, max_tokens=0, offline=True, progress=False)
    assert default.db_path == env / "default-log.db" and _runs_in(env / "default-log.db") == 1


def test_a_result_gives_the_cli_table_the_tokens_csv_rows_the_figures_and_a_link(env):
    from pythia_compare.runs.export import run_to_csv
    from pythia_compare.runs.report import SUMMARY_COLUMNS, summary_table

    db = env / "result.db"
    r = pc.compare("demo:Q2_K", "demo", prompt=PROMPT, max_tokens=3, offline=True, db=db, progress=False)
    summary = r.summary()
    assert list(summary.columns) == SUMMARY_COLUMNS and list(summary["spec"]) == ["demo", "demo:Q2_K"]
    assert list(summary["variant"]) == [e.label for e in r.run.entries()]
    assert list(summary["role"]) == ["reference", "variant"]
    assert list(summary["PPL"]) == [e.ppl for e in r.run.entries()]
    assert summary["mean KLD"][1] == r.run.variants[0].kld.mean and math.isnan(summary["mean KLD"][0])
    assert list(summary["n scored"]) == [row[SUMMARY_COLUMNS.index("n scored")] for row in summary_table(r.run)[1]]

    tokens = r.tokens()
    rows = list(csv.DictReader(io.StringIO(run_to_csv(r.run))))
    assert len(tokens) == len(rows) == sum(e.n_scored for e in r.run.entries())
    for (_, t), row in zip(tokens.iterrows(), rows):
        assert (t["run_id"], t["role"], t["spec"], t["token"]) == (row["run_id"], row["role"], row["spec"],
                                                                   row["token"].lstrip("'"))
        assert t["logprob"] == float(row["logprob"]) and t["surprisal_bits"] == float(row["surprisal_bits"])
        assert (math.isnan(t["kld"]) if row["kld"] == "" else t["kld"] == float(row["kld"]))

    figs = r.figures()
    assert set(figs) == {"next_token", "ppl", "surprisal", "kld"}
    labels = [e.label for e in r.run.entries()]
    assert {t.name for t in figs["ppl"].data} >= {f"{labels[0]} (reference)", labels[1]}
    assert r.link() == f"http://127.0.0.1:7860/?run={r.run.run_id}"
    assert r.link("https://x.hf.space") == f"https://x.hf.space/?run={r.run.run_id}"
    assert pc.open_run(r.link(), db=db).run.run_id == r.run.run_id

    bundle = r._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/html", "application/vnd.plotly.v1+json"}
    assert "PPL ±" in bundle["text/html"] and labels[1] in bundle["text/html"]
    assert bundle["text/html"].count('class="plotly-graph-div"') == 3  # ppl, next token, KLD
    assert bundle["application/vnd.plotly.v1+json"]["data"][0]["type"]
    assert r.run.run_id in bundle["text/plain"] and r.run.run_id in repr(r)


def test_list_runs_is_the_history_table_newest_first_and_searches_the_text(env):
    from pythia_compare.web.dashboard import HISTORY_COLUMNS

    db = env / "history.db"
    assert pc.list_runs(db=db).empty and not db.exists()  # no log yet: no runs, and no file made
    a = pc.compare("demo:Q8_0", "demo", prompt="alpha beta gamma", max_tokens=0, offline=True, db=db, progress=False)
    b = pc.compare("demo:Q8_0", "demo", prompt="delta epsilon", max_tokens=0, offline=True, db=db, progress=False)
    table = pc.list_runs(db=db)
    assert list(table.columns) == HISTORY_COLUMNS and list(table["run"]) == [b.run.run_id, a.run.run_id]
    assert list(pc.list_runs("gamma", db=db)["run"]) == [a.run.run_id]
    assert list(pc.list_runs(limit=1, db=db)["run"]) == [b.run.run_id]
    with pytest.raises(BadInput, match="limit must be"):
        pc.list_runs(limit=0, db=db)


BAD = {
    "an unknown spec": (dict(specs=("demo:Q9_Z", "demo")), SpecError, "Q9_Z"),
    "prompt and text together": (dict(text="some text"), InputTextError, "not both"),
    "neither prompt nor text": (dict(prompt=None), InputTextError, "neither was given"),
    "one variant too many": (dict(specs=("demo:F16", "demo:Q8_0", "demo:Q6_K", "demo:Q5_K_M", "demo:Q4_K_M",
                                         "demo:Q3_K_M", "demo:Q2_K", "demo@step0", "demo@step25")),
                             SpecError, "9 variants chosen"),
    "ctx as text": (dict(ctx="big"), InputTextError, "ctx must be a whole number, not 'big'"),
    "a negative ctx": (dict(ctx=-1), InputTextError, "ctx -1 is out of range; use 8 … 8192"),
    "a NaN temperature": (dict(temperature=float("nan")), InputTextError, "temperature must be a number, not NaN"),
    "top_k as a fraction": (dict(top_k=2.5), InputTextError, "top_k must be a whole number"),
    "max_tokens out of range": (dict(max_tokens=10**6), InputTextError, "max_tokens 1000000 is out of range"),
    "a Hub spec while offline": (dict(specs=("Q4_K_M", "demo")), OfflineMissing, "offline"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_raises_a_typed_error_in_the_apis_words_and_logs_nothing(case, env, caplog):
    change, error, words = BAD[case]
    args = dict(prompt=PROMPT, offline=True, db=env / f"bad-{case.replace(' ', '-')}.db", progress=False)
    specs = change.pop("specs", ("demo:Q8_0", "demo"))
    args.update(change)
    logged = _runs_in(env / "default-log.db")
    with pytest.raises(error) as got:
        pc.compare(*specs, **args)
    message = str(got.value)
    assert words in message, message
    assert not CLI_FLAGS.search(message), message  # the CLI's flags are not the API's words
    assert not args["db"].exists() and _runs_in(env / "default-log.db") == logged
    assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]


def test_a_run_id_that_does_not_exist_raises_run_not_found_naming_the_id_and_what_lists_runs(env):
    db = env / "ids.db"
    pc.compare("demo:Q8_0", "demo", prompt=PROMPT, max_tokens=0, offline=True, db=db, progress=False)
    with pytest.raises(RunNotFound) as got:
        pc.open_run("doesNotExist123", db=db)
    assert "'doesNotExist123'" in str(got.value) and "list_runs()" in str(got.value)
    with pytest.raises(RunNotFound, match="there is no run log at"):
        pc.open_run("doesNotExist123", db=env / "never-written.db")
    assert not (env / "never-written.db").exists()
    with pytest.raises(BadInput, match=r"run_id_or_link must be an id"):
        pc.open_run(42, db=db)
    with pytest.raises(BadInput, match=r"holds no \?run=ID"):
        pc.open_run("http://127.0.0.1:7860/?sweep=abc", db=db)
    assert _runs_in(db) == 1


def test_a_text_path_reads_the_file_and_a_missing_one_names_it(env, demo_dir):
    from pathlib import Path

    with pytest.raises(BadInput, match="does not exist"):
        pc.compare("demo:Q8_0", "demo", text=Path(env / "missing.txt"), offline=True, db=False, progress=False)
    r = pc.compare("demo:Q8_0", "demo", text=demo_dir / "heldout.txt", ctx=256, max_tokens=0, offline=True,
                   db=False, progress=False)
    assert r.run.params.scoring == "corpus" and r.run.input.text == (demo_dir / "heldout.txt").read_text()


def test_open_sweep_gives_the_grid_the_figures_and_the_cells_runs(env, demo_dir):
    from pythia_compare.web.sweepview import CELL_COLUMNS

    db = env / "sweep.db"
    base = ["--offline", "--db", str(db), "--home", str(env / "home")]
    plan = run_cli([*base, "sweep", "plan", "--repo", "demo", "--steps", "0,100", "--quants", "F16,Q8_0",
                    "--text-file", str(demo_dir / "heldout.txt"), "--ctx", "64", "--max-chunks", "2"])
    assert plan.returncode == 0, plan.stderr
    sweep_id = plan.stdout.strip().splitlines()[-1]
    done = run_cli([*base, "sweep", "run", sweep_id])
    assert done.returncode == 0, done.stderr
    s = pc.open_sweep(sweep_id, db=db)
    shown = json.loads(run_cli([*base, "sweep", "show", sweep_id, "--json"]).stdout)
    assert s.sweep == shown
    grid = s.grid()
    assert list(grid.columns) == CELL_COLUMNS and len(grid) == 4
    assert list(grid["PPL"]) == [c["ppl"] for c in shown["cells"]] and set(grid["status"]) == {"done"}
    assert set(s.figures()) == {"ppl", "kld", "bpw", "heatmap"}
    cell = s.run(100, "Q8_0")
    assert cell.run.variants[0].ppl == next(c["ppl"] for c in shown["cells"]
                                            if (c["step"], c["quant"]) == (100, "Q8_0"))
    bundle = s._repr_mimebundle_()
    assert sweep_id in bundle["text/html"] and bundle["text/html"].count('class="plotly-graph-div"') == 2
    assert pc.open_sweep(f"http://127.0.0.1:7860/?sweep={sweep_id}", db=db).sweep_id == sweep_id
    with pytest.raises(RunNotFound):
        pc.open_sweep("noSuchSweep", db=db)


def test_a_run_on_cached_files_imports_neither_the_converter_nor_gguf(env):
    """The fixed cost of a run: a demo file converted once is found in the cache by its key, without importing the
    converter (gguf and yaml: a tenth of a second of every run)."""
    pc.compare("demo", prompt=PROMPT, max_tokens=0, offline=True, db=False, progress=False)  # built once
    code = ("import sys, pythia_compare as pc\n"
            "pc.compare('demo', prompt='x y', max_tokens=0, offline=True, db=False, progress=False)\n"
            "print(sorted(m for m in ('gguf', 'pythia_compare.sources.convert') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT), timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


def test_a_lambada_compare_from_python_gives_the_clis_numbers_and_refuses_a_prompt_beside_it(env):
    lam = ROOT / "assets" / "demo" / "lambada.jsonl"
    r = pc.compare("demo:Q8_0", "demo", scoring="lambada", lambada_file=lam, limit=6, offline=True, db=False,
                   progress=False)
    proc = run_cli(["--offline", "--db", str(env / "cli-lambada.db"), "--home", str(env / "home"), "compare",
                    "demo:Q8_0", "demo", "--scoring", "lambada", "--lambada-file", str(lam), "--limit", "6", "--json"])
    assert proc.returncode == 0, proc.stderr
    cli = json.loads(proc.stdout)
    ours = r.run.to_json()
    assert ours["params"]["scoring"] == "lambada" and ours["lambada"]["limit"] == 6
    for mine, theirs in zip([ours["reference"], *ours["variants"]], [cli["reference"], *cli["variants"]]):
        assert mine["lambada"]["is_greedy"] == theirs["lambada"]["is_greedy"]
        assert (mine["lambada"]["acc"], mine["lambada"]["ppl"]) == (theirs["lambada"]["acc"], theirs["lambada"]["ppl"])
    before = _runs_in(env / "default-log.db")
    with pytest.raises(InputTextError, match=r"scoring='lambada' .* takes no prompt= or text="):
        pc.compare("demo:Q8_0", "demo", scoring="lambada", prompt=PROMPT, offline=True, progress=False)
    with pytest.raises(BadInput, match=r"lambada_file= and limit= belong to scoring='lambada'"):
        pc.compare("demo:Q8_0", "demo", prompt=PROMPT, limit=5, offline=True, progress=False)
    with pytest.raises(BadInput, match=r"limit"):
        pc.compare("demo:Q8_0", "demo", scoring="lambada", lambada_file=lam, limit=0, offline=True, progress=False)
    assert _runs_in(env / "default-log.db") == before


def test_published_gives_a_task_over_steps_and_names_the_repos_there_are_for_an_unknown_one():
    table = pc.published("EleutherAI/pythia-410m-deduped", "lambada_openai")
    assert list(table["step"]) == sorted(table["step"]) and 143000 in set(table["step"])
    assert table.loc[table["step"] == 143000, "acc"].iloc[0] == pytest.approx(0.5243547448088492, abs=0)
    v0 = pc.published("EleutherAI/pythia-410m-deduped-v0", "lambada_openai")
    assert v0.loc[v0["step"] == 143000, "acc"].iloc[0] == pytest.approx(0.5109644867067727, abs=0)
    with pytest.raises(BadInput, match="EleutherAI/pythia-410m-deduped-v0"):
        pc.published("EleutherAI/pythia-70m", "lambada_openai")


def test_a_lens_compare_gives_every_layer_of_every_variant_as_the_cli_does_and_refuses_what_the_lens_cannot_do(env):
    prompt = "The capital of France is Paris, and the capital of Italy is"
    r = pc.compare("demo:Q4_K_M", "demo", prompt=prompt, max_tokens=0, lens=True, positions=[2, 5], offline=True,
                   db=False, progress=False)
    proc = run_cli(["--offline", "--db", str(env / "cli-lens.db"), "--home", str(env / "home"), "compare",
                    "demo:Q4_K_M", "demo", "--prompt", prompt, "--max-tokens", "0", "--lens", "--lens-positions", "2,5",
                    "--json"])
    assert proc.returncode == 0, proc.stderr
    cli = json.loads(proc.stdout)
    assert r.run.to_json()["variants"][0]["lens"] == cli["variants"][0]["lens"]
    assert r.run.to_json()["reference"]["lens"] == cli["reference"]["lens"]
    lens = r.lens()
    n_layers = len(r.run.variants[0].lens.positions[0].layers)
    assert set(lens["spec"]) == {"demo", "demo:Q4_K_M"} and set(lens["position"]) == {2, 5}
    assert sorted(set(lens["layer"])) == list(range(n_layers)) and set(lens["status"]) == {"ok"}
    ref = lens[lens["role"] == "reference"]
    assert ref["kl_from_baseline"].isna().all() and lens[lens["role"] == "variant"]["kl_from_baseline"].notna().all()
    assert "lens" in r.figures()
    plain = pc.compare("demo:Q4_K_M", "demo", prompt=prompt, max_tokens=0, offline=True, db=False, progress=False)
    with pytest.raises(BadInput, match=r"without the logit lens; run compare\(\.\.\., lens=True\)"):
        plain.lens()
    before = _runs_in(env / "default-log.db")
    with pytest.raises(InputTextError, match="9 lens positions asked; the limit is 8") as e:
        pc.compare("demo:Q4_K_M", "demo", prompt=prompt, lens=True, positions=list(range(9)), offline=True,
                   progress=False)
    assert not CLI_FLAGS.search(str(e.value))
    with pytest.raises(InputTextError, match="positions") as e:
        pc.compare("demo:Q4_K_M", "demo", prompt=prompt, positions=[1], offline=True, progress=False)
    assert "lens=True" in str(e.value) and "--lens" not in str(e.value)
    with pytest.raises(InputTextError, match="out of range"):
        pc.compare("demo:Q4_K_M", "demo", prompt=prompt, lens=True, positions=[500], offline=True, progress=False)
    with pytest.raises(InputTextError, match="prompt runs only"):
        pc.compare("demo:Q4_K_M", "demo", text=(ROOT / "assets" / "demo" / "heldout.txt").read_text(), lens=True,
                   offline=True, progress=False)
    assert _runs_in(env / "default-log.db") == before


def test_a_notebook_built_from_python_runs_on_the_shared_pool_saves_and_opens_again_by_id_and_link(env, tmp_path):
    db = env / "notebooks.db"
    nb = pc.Notebook("Quants on prompts", ["demo:Q8_0", "demo:Q2_K"], reference="demo", max_tokens=2, db=db,
                     offline=True)
    nb.add_note("## Two prompts")
    for prompt in ("def fibonacci(n):", "The capital of France is"):
        nb.add_comparison(prompt=prompt)
    loads = pc.model_pool().loads
    nb.run(progress=False)
    assert pc.model_pool().loads - loads <= 3  # each of demo, Q8_0 and Q2_K loaded at most once for both cells
    ref = nb.save()
    runs = nb.runs()
    assert len(runs) == 2 and all(r is not None and r.params.reference == "demo" for r in runs)
    again = pc.open_notebook(ref, db=db, offline=True)
    assert again.notebook.to_json() == nb.notebook.to_json()
    by_link = pc.open_notebook(f"http://127.0.0.1:7860/?notebook={ref.split('@')[0]}", db=db, offline=True)
    assert [c.run_id for c in by_link.notebook.cells] == [c.run_id for c in nb.notebook.cells]
    assert "<h3>Quants on prompts</h3>" in again._repr_html_()
    out = again.export(tmp_path / "nb.ipynb")
    import nbformat

    nbformat.validate(nbformat.read(str(out), as_version=4))
    with pytest.raises(BadInput, match="notebook"):
        pc.open_notebook("no-such-notebook", db=db, offline=True)
