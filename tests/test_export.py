"""CSV export of a run: parses back with the csv module, one row per (model, scored position)."""

from __future__ import annotations

import csv
import io
import math

from pythia_compare.runs.export import COLUMNS, run_to_csv, scored_token_indices
from pythia_compare.runs.store import RunStore
from tests.store_runs import full_run


def rows_of(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def test_a_saved_run_exports_one_row_per_model_and_scored_position(tmp_path):
    store = RunStore(tmp_path / "runs.db")
    run = store.get(store.save(full_run(seed=2)))
    rows = rows_of(run_to_csv(run))
    n = run["variants"][0]["n_scored"]
    assert list(rows[0]) == list(COLUMNS)
    assert len(rows) == 3 * n
    assert [r["role"] for r in rows[::n]] == ["reference", "variant", "variant"]
    assert [r["spec"] for r in rows[::n]] == ["F16", "Q8_0", "step3000:Q4_K_M"]
    assert {r["run_id"] for r in rows} == {run["run_id"]}
    v = run["variants"][1]
    for j, r in enumerate(rows[2 * n:]):
        assert int(r["position"]) == j and int(r["token_index"]) == j + 1
        assert float(r["logprob"]) == v["token_logprobs"][j]  # exact: written with repr
        assert math.isclose(float(r["surprisal_bits"]), -v["token_logprobs"][j] / math.log(2))
        assert float(r["kld"]) == v["kld"]["per_token"][j] and float(r["dp"]) == v["kld"]["dp_per_token"][j]
    assert all(r["kld"] == "" and r["dp"] == "" for r in rows[:n])  # the reference has none


def test_token_texts_survive_newlines_quotes_and_formula_characters():
    run = full_run()
    rows = rows_of(run_to_csv(run))
    texts = [r["token"] for r in rows if r["role"] == "variant" and r["spec"] == "Q8_0"]
    expected = ["'" + t if t[:1] in "=+-@\t\r" and t else t for t in run["input"]["tokens"][1:]]
    assert texts == expected[:-1] + ["\ufffd"]  # the lone surrogate token is replaced
    assert "\n" in texts and " \"quoted\"" in texts and "'\t=1+1" in texts
    run_to_csv(run).encode("utf-8")  # always encodable: a file write cannot fail on it


def test_corpus_runs_align_each_position_with_its_chunk_token():
    run = full_run(n_tokens=48)
    ctx = 16
    run["params"].update(scoring="corpus", ctx=ctx)
    per_chunk = ctx - ctx // 2 - 1
    for e in [run["reference"], *run["variants"]]:
        e["token_logprobs"] = e["token_logprobs"][:3 * per_chunk]
    assert scored_token_indices(run)[:per_chunk + 1] == [*range(9, 16), 25]
    rows = rows_of(run_to_csv(run))
    assert len(rows) == 3 * 3 * per_chunk
    assert [int(r["token_index"]) for r in rows[per_chunk - 1:per_chunk + 1]] == [15, 25]


def test_a_run_without_reference_or_aligned_tokens_still_exports():
    run = full_run()
    run["reference"] = None
    run["input"]["tokens"] = run["input"]["tokens"][:3]  # too few to align
    rows = rows_of(run_to_csv(run))
    assert len(rows) == 2 * run["variants"][0]["n_scored"]
    assert all(r["token_index"] == "" and r["token"] == "" and r["logprob"] for r in rows)


def test_summary_csv_gives_same_top_in_percent_as_the_page_and_step_repo_quant_columns_in_both_files(tmp_path):
    from pythia_compare.runs.export import summary_to_csv
    from pythia_compare.runs.report import format_cell, summary_table

    store = RunStore(tmp_path / "runs.db")
    run = store.get(store.save(full_run(seed=2)))
    summary = rows_of(summary_to_csv(run))
    columns, page_rows = summary_table(run)
    page = [dict(zip(columns, format_cell_row)) for format_cell_row in
            [[format_cell(c, columns[i]) for i, c in enumerate(r)] for r in page_rows]]
    for row, shown, entry in zip(summary, page, [run["reference"], *run["variants"]]):
        if entry.get("kld"):
            # the same value and header as the page's table (99.358, not 0.99358)
            assert float(row["same top %"]) == 100.0 * entry["kld"]["same_top"]
            assert f"{float(row['same top %']):.3f}" == shown["same top %"]
    assert [(r["spec"], r["repo"], r["step"], r["quant"]) for r in summary] == [
        ("F16", run["reference"]["source"]["repo"] or "", "143000", "F16"),
        ("Q8_0", run["variants"][0]["source"]["repo"] or "", "143000", "Q8_0"),
        ("step3000:Q4_K_M", run["variants"][1]["source"]["repo"] or "", "3000", "Q4_K_M")]
    tokens = rows_of(run_to_csv(run))
    by_spec = {r["spec"]: (r["repo"], r["step"], r["quant"]) for r in tokens}
    assert by_spec == {r["spec"]: (r["repo"], r["step"], r["quant"]) for r in summary}
    assert [c for c in COLUMNS[:7]] == ["run_id", "role", "spec", "label", "repo", "step", "quant"]


def test_the_step_of_a_demo_final_or_local_file_is_its_own_or_empty():
    from pythia_compare.runs.report import step_of
    from pythia_compare.runs.run import as_run

    run = as_run(full_run())
    e = run.variants[0]
    e.spec, e.source.file = "demo", "demo-step800-F16.gguf"
    assert step_of(e) == 800
    e.spec, e.source.file = "/tmp/x/model.gguf", "model.gguf"
    assert step_of(e) is None
    e.spec = "demo@step25:Q2_K"
    assert step_of(e) == 25


def test_the_json_download_of_a_run_whose_tokens_hold_a_lone_surrogate_encodes_and_reads_back_the_same():
    import json

    from pythia_compare.runs.export import run_to_json_text
    from pythia_compare.runs.run import Run

    run = full_run(4)
    run["input"]["tokens"][1] = "\ud83d"  # the first half of an emoji split across two tokens
    run["variants"][0]["next_token"][0]["text"] = "x\udc00"
    text = run_to_json_text(run)
    data = text.encode("utf-8")  # a download's bytes (the page's and `runs export`'s)
    back = json.loads(data.decode("utf-8"))
    assert back["input"]["tokens"][1] == "\ud83d" and back["variants"][0]["next_token"][0]["text"] == "x\udc00"
    assert Run.from_json(back).to_json() == Run.from_json(run).to_json()
    assert "\\ud83d" in text  # the escape, not the raw half
