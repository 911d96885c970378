"""The CLI beside the page (issue 11, point 9, and the zip export of point 7), in fresh processes on the demo
suite and tiny models: one default-reference rule, tables that fit the terminal, --json complete."""

from __future__ import annotations

import csv
import io
import json
import zipfile

import pytest

from tests.support import run_cli
from pythia_compare.runs.export import run_to_zip
from pythia_compare.runs.report import SUMMARY_COLUMNS
from pythia_compare.runs.store import RunStore

PROMPT = "The quick brown fox jumps over the lazy dog and keeps on running"


def _base(tmp_path):
    return ["--offline", "--db", str(tmp_path / "runs.db"), "--home", str(tmp_path / "home")]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return tmp_path_factory.mktemp("cli2")


def test_without_reference_the_cli_takes_the_dashboards_default_and_none_opts_out(shared, demo_dir):
    args = [*_base(shared), "compare", "demo:Q2_K", "demo@step0", "demo", "--prompt", PROMPT, "--max-tokens", "0",
            "--json"]
    proc = run_cli(args)
    assert proc.returncode == 0, proc.stderr
    run = json.loads(proc.stdout)
    assert run["params"]["reference"] == "demo" and run["reference"]["spec"] == "demo"  # F16 of the last step
    assert [v["spec"] for v in run["variants"]] == ["demo:Q2_K", "demo@step0"]
    assert all(v["kld"] is not None for v in run["variants"])
    proc = run_cli([*args, "--reference", "none"])
    assert proc.returncode == 0, proc.stderr
    run = json.loads(proc.stdout)
    assert run["reference"] is None and run["params"]["reference"] is None
    assert all(v["kld"] is None for v in run["variants"]) and len(run["variants"]) == 3


def test_compare_help_states_the_default_reference_rule():
    out = run_cli(["compare", "--help"]).stdout
    flat = " ".join(out.split())
    assert "highest-precision variant" in flat and "'none'" in flat and "as on the dashboard" in flat


@pytest.mark.parametrize("columns", [80, 60])
def test_the_table_fits_the_terminal_and_json_stays_complete(tiny_ggufs, tmp_path, columns):
    specs = [str(tiny_ggufs[q]) for q in ("Q8_0", "Q4_K_M", "Q2_K")]
    args = [*_base(tmp_path), "compare", *specs, "--reference", str(tiny_ggufs["F16"]), "--prompt", PROMPT,
            "--max-tokens", "0"]
    proc = run_cli(args, env={"COLUMNS": str(columns)})
    assert proc.returncode == 0, proc.stderr
    report = proc.stdout.split("\n== ")[0].rstrip("\n").splitlines()
    assert report and all(len(line) <= columns for line in report), [l for l in report if len(l) > columns]
    assert any(line.startswith("variant") and "PPL" in line for line in report) and "tiny-Q4_K_M" in proc.stdout
    assert any(line.startswith("(not shown to fit") for line in report) and "--json has everything" in " ".join(report)
    run = json.loads(run_cli([*args, "--json"], env={"COLUMNS": str(columns)}).stdout)
    assert len(run["variants"]) == 3 and all(v["token_logprobs"] and v["timings"] for v in run["variants"])
    wide = run_cli([*_base(tmp_path), "runs", "show", "--", run["run_id"]], env={"COLUMNS": "400"}).stdout
    assert "not shown to fit" not in wide and all(c in wide for c in ("load s", "generate s", "size MB"))


def test_runs_export_zip_holds_the_summary_and_the_tokens_as_the_page_does(shared, demo_dir):
    proc = run_cli([*_base(shared), "compare", "demo:Q2_K", "demo", "--prompt", PROMPT, "--max-tokens", "0",
                    "--json"])
    assert proc.returncode == 0, proc.stderr
    rid = json.loads(proc.stdout)["run_id"]
    out = shared / "run.zip"
    done = run_cli([*_base(shared), "runs", "export", "--format", "zip", "--out", str(out), "--", rid])
    assert done.returncode == 0, done.stderr
    run = RunStore(shared / "runs.db").get(rid)
    assert out.read_bytes() == run_to_zip(run)  # byte for byte what the page's download holds
    with zipfile.ZipFile(out) as z:
        summary = list(csv.reader(io.StringIO(z.read("summary.csv").decode("utf-8"), newline="")))
    assert summary[0] == ["run_id", *SUMMARY_COLUMNS] and len(summary) == 3  # header + one row per model
    assert [r[3] for r in summary[1:]] == ["demo", "demo:Q2_K"]
    refused = run_cli([*_base(shared), "runs", "export", "--format", "zip", "--", rid])
    assert refused.returncode == 2 and "--out" in refused.stderr
