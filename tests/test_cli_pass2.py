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
    at = SUMMARY_COLUMNS.index("spec") + 1
    header = ["run_id", *SUMMARY_COLUMNS[:at], "repo", "step", *SUMMARY_COLUMNS[at:]]
    assert summary[0] == header and len(summary) == 3  # header + one row per model
    assert [r[3] for r in summary[1:]] == ["demo", "demo:Q2_K"]
    assert [(r[4], r[5]) for r in summary[1:]] == [("demo", "800"), ("demo", "800")]  # the demo's last step
    refused = run_cli([*_base(shared), "runs", "export", "--format", "zip", "--", rid])
    assert refused.returncode == 2 and "--out" in refused.stderr


# ------------------------------------------------------------------------------------------ issue 20, item 4

def _cli_elsewhere(args: list[str], cwd, env_extra: dict | None = None):
    """The CLI in a fresh process started outside the checkout, with no COLUMNS (not a terminal: 80 columns)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "pythia_compare", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600)


def test_demo_heldout_names_the_demo_text_from_any_directory_and_every_line_fits_80_columns_escaped(shared,
                                                                                                    tmp_path):
    base = _base(shared)
    out = _cli_elsewhere([*base, "compare", "demo@step0", "demo", "--text-file", "demo:heldout", "--ctx", "64",
                          "--max-tokens", "24"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "corpus scoring" in out.stdout and "demo step0 F16 generates" in out.stdout
    long = [line for line in out.stdout.splitlines() if len(line) > 80]
    assert long == [], long  # the KL footnote and the "saved to" lines included
    # step 0's random generation holds control bytes: escaped (\x0e), never sent to the terminal raw
    assert not any(ord(c) < 32 and c not in "\n\t" or 0x7f <= ord(c) < 0xa0 for c in out.stdout)
    for args in (["runs", "list"], ["cache", "list"]):
        listed = _cli_elsewhere([*base, *args], tmp_path)
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.strip() and all(len(line) <= 80 for line in listed.stdout.splitlines()), listed.stdout
    bad = _cli_elsewhere([*base, "compare", "demo@step0", "demo", "--text-file", "demo:nosuch"], tmp_path)
    assert bad.returncode == 2 and "demo:heldout" in bad.stderr


def test_a_step0_generation_prints_its_control_bytes_escaped():
    from pythia_compare.runs.report import terminal_text

    assert terminal_text("a\x0eb\x07c\n\td\x1b[31m\x7f\x85\u2028é😀") == "a\\x0eb\\x07c\n\td\\x1b[31m\\x7f\\x85\\u2028é😀"
