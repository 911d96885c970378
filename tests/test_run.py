"""The run's typed schema (pythia_compare/runs/run.py) against its contract (docs/run.md) and against the runs that
earlier releases stored: the run log and run JSONs in tests/data/c3c9c7b were written by commit c3c9c7b through
the real CLI (tests/data/c3c9c7b/make.sh)."""

from __future__ import annotations

import copy
import json
import re
import shutil

import numpy as np
import pytest

from pythia_compare.runs import metrics
from pythia_compare.runs import run as runmod
from pythia_compare.runs.run import KL_STATS, Entry, KLStats, Run, RunFormatError, entries, field_table
from pythia_compare.runs.store import RunStore
from tests.store_runs import full_run
from tests.support import ROOT, run_cli

OLD = ROOT / "tests" / "data" / "c3c9c7b"
OLD_RUNS = sorted(OLD.glob("*.json"))


def old_run(name: str) -> dict:
    return json.loads((OLD / f"{name}.json").read_text(encoding="utf-8"))


def refusal(data: dict, damage) -> str:
    """The RunFormatError message for a copy of `data` after `damage(copy)`; fails if the copy reads."""
    bad = copy.deepcopy(data)
    damage(bad)
    with pytest.raises(RunFormatError) as e:
        Run.from_json(bad)
    return str(e.value)


@pytest.fixture
def old_db(tmp_path):
    """A copy of the c3c9c7b run log (opening it may write WAL files; the fixture stays untouched)."""
    path = tmp_path / "runs.db"
    shutil.copyfile(OLD / "runs.db", path)
    return path


# ------------------------------------------------------------------------------------------ the contract


def docs_table() -> list[tuple[str, str, bool]]:
    rows = []
    for line in (ROOT / "docs" / "run.md").read_text(encoding="utf-8").splitlines():
        m = re.fullmatch(r"\| `([^`]+)` \| `([^`]+)` \| (yes|no) \| (.+) \|", line)
        if m:  # a bar inside a cell is written \| (GitHub tables split cells on bare bars, even in code)
            assert m.group(4).strip(), f"docs/run.md: {m.group(1)} has no meaning"
            rows.append((m.group(1), m.group(2).replace("\\|", "|"), m.group(3) == "yes"))
    return rows


def test_the_docs_field_table_lists_every_field_of_the_run_dataclasses_with_its_type():
    documented = docs_table()
    assert documented, "docs/run.md has no field table"
    assert documented == field_table()  # same keys, same order, same types, same required flags


def test_the_kl_statistics_of_the_schema_are_the_ones_metrics_computes():
    rng = np.random.default_rng(0)
    ref, var = rng.normal(size=(40, 16)), rng.normal(size=(40, 16))
    summary = metrics.kl_summary(metrics.token_stats(ref, var, rng.integers(0, 16, size=40)))
    assert tuple(summary) == KL_STATS
    fields = [f for f, _, _ in field_table(KLStats)]
    assert fields == [*KL_STATS, "per_token", "dp_per_token"]


def test_no_module_cites_a_document_outside_the_repository():
    cited = []
    for folder in ("pythia_compare", "tests", "tools", "benchmarks"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".sh") and "DESIGN" + ".md" in path.read_text(encoding="utf-8"):
                cited.append(str(path.relative_to(ROOT)))
    assert cited == []
    for doc in re.findall(r"docs/[a-z_]+\.md", " ".join(
            p.read_text(encoding="utf-8") for p in (ROOT / "pythia_compare").rglob("*.py"))):
        assert (ROOT / doc).is_file(), f"a module cites {doc}, which does not exist"


# ------------------------------------------------------------------------------------------ old runs open


@pytest.mark.parametrize("path", OLD_RUNS, ids=[p.stem for p in OLD_RUNS])
def test_a_run_json_written_by_c3c9c7b_opens_typed_and_writes_back_unchanged(path):
    data = json.loads(path.read_text(encoding="utf-8"))
    run = Run.from_json(data)
    assert run.schema == 1 and run.run_id == data["run_id"]
    assert run.to_json() == data
    assert json.dumps(run.to_json(), ensure_ascii=False) == json.dumps(data, ensure_ascii=False)  # key order too
    assert all(isinstance(e, Entry) and e.n_scored == len(e.token_logprobs) for e in run.entries())


def test_the_old_runs_cover_every_mode_the_issue_names():
    runs = {p.stem: Run.from_json(json.loads(p.read_text(encoding="utf-8"))) for p in OLD_RUNS}
    prompt = runs["prompt-with-reference"]
    assert prompt.params.scoring == "prompt" and prompt.reference is not None
    assert all(v.kld is not None and len(v.kld.per_token) == v.n_scored for v in prompt.variants)
    corpus = runs["corpus-with-kl"]
    assert corpus.params.scoring == "corpus" and corpus.params.ctx == 64
    assert corpus.variants[0].kld.same_top is not None and corpus.variants[0].n_scored >= 100
    gen = runs["generation"]
    assert all(e.generation is not None and 0 < len(e.generation.tokens) <= 6 for e in gen.entries())
    assert gen.entries()[0].generation.text == "".join(t.text for t in gen.entries()[0].generation.tokens)
    assert runs["no-reference"].reference is None and runs["no-reference"].params.reference is None
    assert all(e.kld is None for e in runs["no-reference"].entries())


def test_the_c3c9c7b_run_log_opens_and_gives_back_the_runs_its_cli_printed(old_db):
    store = RunStore(old_db)
    assert store.count() == len(OLD_RUNS)
    for path in OLD_RUNS:
        printed = json.loads(path.read_text(encoding="utf-8"))
        assert store.get(printed["run_id"]) == printed
        run = store.get_run(printed["run_id"])
        assert run.to_json() == printed
    listed = {r["run_id"] for r in store.list()}
    assert listed == {json.loads(p.read_text())["run_id"] for p in OLD_RUNS}


def test_runs_show_and_export_read_an_old_run_through_the_schema(old_db):
    printed = old_run("corpus-with-kl")
    shown = run_cli(["--db", str(old_db), "--offline", "runs", "show", printed["run_id"], "--json"])
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == printed
    exported = run_cli(["--db", str(old_db), "--offline", "runs", "export", printed["run_id"]])
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout) == printed
    table = run_cli(["--db", str(old_db), "--offline", "runs", "show", printed["run_id"]])
    assert table.returncode == 0 and "demo step300 F16" in table.stdout and "Mean    KLD:   0.436052" in table.stdout


# ------------------------------------------------------------------------------------------ entries


def test_entries_put_the_reference_first_then_the_variants_in_the_order_given():
    run = Run.from_json(old_run("prompt-with-reference"))
    assert [e.spec for e in run.entries()] == ["demo", "demo@step300", "demo:Q8_0"]
    assert [e["spec"] for e in entries(old_run("prompt-with-reference"))] == ["demo", "demo@step300", "demo:Q8_0"]
    assert [e.spec for e in Run.from_json(old_run("no-reference")).entries()] == ["demo@step0", "demo"]


# ------------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize("damage, message", [
    (lambda r: r.pop("versions"), "run JSON: versions is missing"),
    (lambda r: r["input"].update(n_tokens=12.0), "run JSON: input.n_tokens must be an integer, got 12.0"),
    (lambda r: r["variants"][1]["next_token"][2].update(prob="high"),
     "run JSON: variants[1].next_token[2].prob must be a number, got 'high'"),
    (lambda r: r["variants"][0]["kld"].update(mean=True), "run JSON: variants[0].kld.mean must be a number, got True"),
    (lambda r: r["reference"]["timings"].pop("score_s"), "run JSON: reference.timings.score_s is missing"),
    (lambda r: r["variants"][0].update(token_logprobs=[-1.0, None]),
     "run JSON: variants[0].token_logprobs must be a list of numbers; item 1 is None"),
    (lambda r: r["input"].update(tokens="def f"), "run JSON: input.tokens must be a list of strings, got 'def f'"),
    (lambda r: r["params"].update(scoring=None), "run JSON: params.scoring must not be null"),
])
def test_a_malformed_run_is_refused_with_the_full_path_of_the_key(damage, message):
    assert refusal(old_run("prompt-with-reference"), damage) == message


def test_a_run_of_a_newer_schema_asks_for_an_upgrade_and_one_without_a_schema_is_refused():
    data = old_run("no-reference")
    with pytest.raises(RunFormatError, match="schema 7 is newer than this pythia-compare reads.*upgrade"):
        Run.from_json(dict(data, schema=7))
    with pytest.raises(RunFormatError, match="schema 0 is not a schema"):
        Run.from_json(dict(data, schema=0))
    with pytest.raises(RunFormatError, match="schema is missing"):
        Run.from_json({k: v for k, v in data.items() if k != "schema"})
    with pytest.raises(RunFormatError, match="must be an object"):
        Run.from_json([data])


def test_keys_added_by_a_newer_release_are_kept_and_written_back_in_place():
    data = old_run("generation")
    data["notes"] = ["a key of a newer release"]
    data["variants"][0]["source"]["mirror"] = "https://example.org/m.gguf"
    data["variants"][0]["generation"]["tokens"][0]["top"][0]["logit"] = 3.5
    data["params"]["pre_tokenizer"] = {"override": "mpt"}
    run = Run.from_json(data)
    assert run.extra == {"notes": ["a key of a newer release"]}
    assert run.variants[0].source.extra == {"mirror": "https://example.org/m.gguf"}
    assert run.to_json() == data
    data["params"]["pre_tokenizer"]["override"] = "gpt2"  # the Run holds its own copy
    assert run.params.extra == {"pre_tokenizer": {"override": "mpt"}}


def test_the_tokenization_keys_read_typed_and_runs_written_before_them_write_back_without_them():
    old = old_run("prompt-with-reference")
    assert "warnings" not in old and "overrides" not in old["variants"][0]
    run = Run.from_json(old)
    assert run.warnings is None and run.variants[0].overrides is None and run.reference.source.vocab_sha256 is None
    assert run.to_json() == old
    data = copy.deepcopy(old)
    data["warnings"] = ["variants from two training runs"]
    for e in entries(data):
        e["source"]["vocab_sha256"] = "ab" * 32
        e["overrides"] = {"tokenizer.ggml.pre": "mpt"}
        e["warnings"] = ["missing pre-tokenizer type, using: 'default'"]
    run = Run.from_json(data)
    assert run.warnings == ["variants from two training runs"] and run.extra == {}
    assert all(e.source.vocab_sha256 == "ab" * 32 and e.overrides == {"tokenizer.ggml.pre": "mpt"}
               and e.warnings == ["missing pre-tokenizer type, using: 'default'"] and e.extra == {}
               for e in run.entries())
    assert json.dumps(run.to_json()) == json.dumps(data)  # same keys in the same places
    data["variants"][0]["overrides"]["tokenizer.ggml.pre"] = "gpt2"  # the Run holds its own copy
    assert run.variants[0].overrides == {"tokenizer.ggml.pre": "mpt"}
    for damage, message in [
            (lambda d: d.update(warnings=None), "run JSON: warnings must not be null (leave the key out)"),
            (lambda d: d["variants"][1].update(warnings="degraded"),
             "run JSON: variants[1].warnings must be a list of strings, got 'degraded'"),
            (lambda d: d["variants"][0].update(overrides={"tokenizer.ggml.pre": 3}),
             "run JSON: variants[0].overrides['tokenizer.ggml.pre'] must be a string, got 3"),
            (lambda d: d["reference"]["source"].update(vocab_sha256=None),
             "run JSON: reference.source.vocab_sha256 must not be null (leave the key out)")]:
        assert refusal(data, damage) == message


def test_optional_keys_may_be_left_out_and_read_as_null():
    data = old_run("prompt-with-reference")
    del data["run_id"], data["created_at"], data["reference"]["kld"]
    kld = data["variants"][0]["kld"]
    del kld["cor_ln_ppl"], kld["per_token"]
    run = Run.from_json(data)
    assert run.run_id is None and run.reference.kld is None
    assert run.variants[0].kld.cor_ln_ppl is None and run.variants[0].kld.per_token is None
    assert run.variants[0].kld.mean == kld["mean"]


def test_a_typed_run_saves_and_comes_back_equal(tmp_path):
    store = RunStore(tmp_path / "runs.db")
    run = Run.from_json(full_run(seed=4))
    got = store.get_run(store.save(run))
    assert got.run_id and got.created_at
    got.run_id = got.created_at = None
    assert got == run


def test_a_stored_run_of_an_older_schema_is_migrated_when_read(old_db, monkeypatch):
    """When the schema moves on, runs stored under the old number come back in the new shape."""
    def add_warnings(data: dict) -> dict:  # a schema 2 that added a list of warnings to each entry, for this test
        for e in entries(data):
            e["warnings"] = ["migrated from schema 1"]
        return data

    monkeypatch.setattr(runmod, "SCHEMA", 2)
    monkeypatch.setitem(runmod.MIGRATIONS, 1, add_warnings)
    printed = old_run("generation")
    got = RunStore(old_db).get(printed["run_id"])
    assert got["schema"] == 2
    assert [e["warnings"] for e in entries(got)] == [["migrated from schema 1"]] * 2
    assert Run.from_json(printed).reference.warnings == ["migrated from schema 1"]
    assert printed["schema"] == 1 and "warnings" not in printed["variants"][0]


def test_a_stored_run_that_breaks_the_schema_names_the_run_and_the_key(old_db):
    import sqlite3

    printed = old_run("no-reference")
    with sqlite3.connect(old_db) as conn:
        conn.execute("UPDATE run_variants SET next_token = ? WHERE run_id = ? AND position = 1",
                     ['[{"id": 3, "text": "x"}]', printed["run_id"]])
    with pytest.raises(RunFormatError) as e:
        RunStore(old_db).get(printed["run_id"])
    assert printed["run_id"] in str(e.value) and "variants[1].next_token[0].prob is missing" in str(e.value)


def test_from_json_does_not_modify_its_argument():
    data = old_run("corpus-with-kl")
    before = copy.deepcopy(data)
    Run.from_json(data).to_json()
    assert data == before


# ------------------------------------------------------------------------------------------ new runs


def test_a_new_comparison_produces_a_run_of_the_current_schema_that_round_trips(settings, demo_dir):
    from pythia_compare.runs.compare import RunParams, run_comparison
    from pythia_compare.runs.pool import ModelPool

    pool = ModelPool(settings)
    try:
        made = run_comparison(["demo@step100", "demo:Q8_0"], "def f(x):\n    return x", RunParams(
            ctx=64, top_k=3, max_tokens=2, reference="demo"), settings=settings, pool=pool)
    finally:
        pool.close()
    data = made.to_json()
    run = Run.from_json(data)  # compare builds the Run directly: its JSON reads back to the same, typed
    assert run == made and run.schema == runmod.SCHEMA and run.to_json() == data
    assert [e.spec for e in run.entries()] == ["demo", "demo@step100", "demo:Q8_0"]
    assert all(v.kld is not None and len(v.kld.per_token) == v.n_scored for v in run.variants)
    assert all(len(e.generation.tokens) == 2 and len(e.next_token) == 3 for e in run.entries())
    stored = RunStore(settings.db_path)
    assert stored.get_run(stored.save(run)).variants == run.variants


def test_the_kl_table_finds_every_statistic_it_shows_in_a_stored_corpus_run():
    from pythia_compare.runs.report import kl_table

    columns, rows = kl_table(old_run("corpus-with-kl"))
    assert columns[1:] == ["demo step300 F16", "demo Q4_K_M"]
    missing = [row[0] for row in rows if any(cell is None for cell in row[1:])]
    assert missing == []


# ------------------------------------------------------------------------------------------ the readers


@pytest.mark.parametrize("path", OLD_RUNS, ids=lambda p: p.stem)
def test_every_reader_of_runs_opens_a_run_stored_by_the_first_release(path, old_db, tmp_path):
    """report, export and the dashboard read the typed run; a run of the old shape comes through each of them."""
    import csv
    import io
    import zipfile

    from pythia_compare.runs import export, report
    from pythia_compare.config import Settings
    from pythia_compare.web.dashboard import Catalog, Dashboard, controls_for, download

    printed = json.loads(path.read_text(encoding="utf-8"))
    run = RunStore(old_db).get_run(printed["run_id"])
    text = report.format_run(run)
    assert text.startswith(f"run {printed['run_id']}  {printed['params']['scoring']} scoring")
    assert [r[2] for r in report.summary_table(run)[1]] == [e["spec"] for e in entries(printed)]
    assert report.run_notes(run) == []  # the first release wrote no warnings or overrides
    csv_rows = list(csv.reader(io.StringIO(export.run_to_csv(run), newline="")))
    assert len(csv_rows) == 1 + sum(len(e["token_logprobs"]) for e in entries(printed))
    with zipfile.ZipFile(io.BytesIO(export.run_to_zip(run))) as z:
        assert z.read("tokens.csv").decode("utf-8") == export.run_to_csv(printed)  # a Run or its JSON alike
    dash = Dashboard(Settings(home=tmp_path / "home", db_path=old_db, offline=True), pool=object())
    assert dash.status(run).startswith(f"**Run `{printed['run_id']}`** · {printed['input']['n_tokens']} tokens")
    controls = controls_for(run, Catalog("demo", ""), 10_000)
    assert controls["reference"] == ((printed["reference"] or {}).get("spec") or "")
    assert controls["ctx"] == printed["params"]["ctx"]
    data, _, _ = download(RunStore(old_db), f"{printed['run_id']}.json")
    assert json.loads(data.decode("utf-8")) == printed  # the download is the run JSON as printed


def test_a_copy_of_a_run_is_equal_and_shares_nothing_that_keeps_changing():
    run = Run.from_json(old_run("generation"))
    snapshot = run.copy()
    assert snapshot == run and json.dumps(snapshot.to_json()) == json.dumps(run.to_json())
    run.variants[0].token_logprobs.append(-1.0)
    run.variants[0].timings.score_s = 99.0
    run.reference.generation.tokens.pop()
    run.reference.generation.tokens[0].top[0].prob = 0.5
    run.variants[0].next_token.clear()
    run.input.tokens.append("x")
    run.versions.extra["later"] = {"k": [1]}
    assert snapshot == Run.from_json(old_run("generation"))
