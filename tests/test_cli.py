"""The CLI end to end, in fresh processes: compare, runs, and bad input (exit 2, clear error, nothing written)."""

import json
import sqlite3

import pytest

from tests.support import run_cli

RUN_KEYS = {"schema", "run_id", "created_at", "input", "params", "variants", "reference", "versions", "warnings"}
VARIANT_KEYS = {"spec", "label", "source", "ppl", "ppl_err", "n_scored", "token_logprobs", "next_token",
                "generation", "kld", "timings", "overrides", "warnings", "load", "bits_per_byte", "word_ppl"}
KLD_KEYS = {"mean", "mean_err", "max", "p99_9", "p99", "p95", "p90", "median", "p10", "p5", "p1", "p0_1", "min",
            "per_token", "dp_per_token", "dp_mean", "dp_mean_err", "dp_rms", "dp_rms_err", "same_top",
            "same_top_err", "ppl_ratio", "ppl_ratio_err", "ln_ratio", "ln_ratio_err", "ppl_diff", "ppl_diff_err",
            "cor_ln_ppl"}


def _base(tmp_path):
    return ["--offline", "--db", str(tmp_path / "runs.db"), "--home", str(tmp_path / "home")]


def _runs_in_db(tmp_path) -> int:
    db = tmp_path / "runs.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
        return conn.execute("select count(*) from runs").fetchone()[0] if "runs" in tables else 0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, sample_text):
    p = tmp_path_factory.mktemp("text") / "corpus.txt"
    p.write_text(sample_text * 3)
    return p


def test_compare_prints_ppl_and_the_kl_block_and_json_follows_the_schema(tiny_ggufs, corpus, tmp_path):
    specs = [str(tiny_ggufs[q]) for q in ("Q8_0", "Q4_K_M", "Q2_K")]
    common = [*_base(tmp_path), "compare", *specs, "--reference", str(tiny_ggufs["F16"]), "--text-file", str(corpus),
              "--ctx", "128", "--max-tokens", "4"]
    proc = run_cli(common)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for word in ("PPL", "Mean    KLD", "Same top p", "tiny-Q4_K_M.gguf", "reference"):
        assert word in out, word
    proc = run_cli([*common, "--json"])
    assert proc.returncode == 0, proc.stderr
    run = json.loads(proc.stdout)  # stdout holds the JSON and nothing else
    assert set(run) == RUN_KEYS and run["schema"] == 1 and len(run["run_id"]) >= 11
    assert [v["label"] for v in run["variants"]] == ["tiny-Q8_0.gguf", "tiny-Q4_K_M.gguf", "tiny-Q2_K.gguf"]
    assert run["params"] == {"scoring": "corpus", "ctx": 128, "top_k": 10, "max_tokens": 4, "temperature": 0.0,
                             "seed": 0, "flash_attn": True, "reference": str(tiny_ggufs["F16"])}
    for v in run["variants"]:
        assert set(v) == VARIANT_KEYS and set(v["kld"]) >= KLD_KEYS
        assert v["n_scored"] == len(v["token_logprobs"]) == len(v["kld"]["per_token"])
        assert v["source"]["sha256"] and v["source"]["bytes"] > 0 and v["ppl"] > 1
        assert v["source"]["vocab_sha256"] == run["reference"]["source"]["vocab_sha256"]
        assert v["overrides"] == {} and v["warnings"] == []
        assert len(v["next_token"]) == 10 and v["generation"] is not None
    assert run["reference"]["kld"] is None and "kld" in run["reference"]
    klds = [v["kld"]["mean"] for v in run["variants"]]
    assert klds[2] > klds[1] > klds[0] > 0  # Q2_K > Q4_K_M > Q8_0 > 0
    shown = run_cli([*_base(tmp_path), "runs", "show", run["run_id"], "--json"])
    assert json.loads(shown.stdout) == run  # the stored run is the printed run


def test_models_scored_side_by_side_on_several_cores_give_the_numbers_of_one_at_a_time(tiny_ggufs, corpus, tmp_path):
    specs = [str(tiny_ggufs[q]) for q in ("Q8_0", "Q4_K_M")]
    args = [*_base(tmp_path), "compare", *specs, "--reference", str(tiny_ggufs["F16"]), "--text-file", str(corpus),
            "--ctx", "128", "--max-tokens", "2", "--json"]
    runs = []
    for threads in ("1", "2"):  # one model at a time on one thread; two models at once, a thread each
        proc = run_cli(args, env={"PYTHIA_COMPARE_THREADS": threads})
        assert proc.returncode == 0, proc.stderr
        runs.append(json.loads(proc.stdout))
    for run in runs:
        for v in [run["reference"], *run["variants"]]:
            del v["timings"]
        del run["run_id"], run["created_at"]
    assert runs[0] == runs[1]


def test_runs_list_show_export_and_delete(tiny_ggufs, tmp_path):
    proc = run_cli([*_base(tmp_path), "compare", str(tiny_ggufs["Q8_0"]), "--prompt", "A prompt about foxes",
                    "--json", "--max-tokens", "3"])
    assert proc.returncode == 0, proc.stderr
    rid = json.loads(proc.stdout)["run_id"]
    listed = run_cli([*_base(tmp_path), "runs", "list", "--query", "foxes"])
    assert rid in listed.stdout
    csv_out = run_cli([*_base(tmp_path), "runs", "export", rid, "--format", "csv"])
    assert csv_out.returncode == 0 and "logprob" in csv_out.stdout.splitlines()[0]
    js = run_cli([*_base(tmp_path), "runs", "export", rid, "--format", "json", "--out", str(tmp_path / "r.json")])
    assert js.returncode == 0 and json.loads((tmp_path / "r.json").read_text())["run_id"] == rid
    assert run_cli([*_base(tmp_path), "runs", "delete", rid]).returncode == 0
    gone = run_cli([*_base(tmp_path), "runs", "show", rid])
    assert gone.returncode == 2 and "no stored run" in gone.stderr


def _bad_cases(tiny_ggufs, tmp_path, sample_text):
    nongguf = tmp_path / "notes.gguf"
    nongguf.write_text("just text")
    data = tiny_ggufs["Q8_0"].read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) // 3])
    short = tmp_path / "short.txt"
    short.write_text("only a few words here")
    between = tmp_path / "between.txt"
    between.write_text(sample_text[:900])
    ok = str(tiny_ggufs["Q8_0"])
    return {
        "missing file": (["compare", str(tmp_path / "nope.gguf"), "--prompt", "hi there"], "does not exist"),
        "non-GGUF file": (["compare", str(nongguf), "--prompt", "hi there"], "not a GGUF"),
        "truncated GGUF": (["compare", str(cut), "--prompt", "hi there"], "truncated"),
        "unknown quant": (["compare", "Q9_K", "--prompt", "hi there"], "unknown quant"),
        "imatrix quant": (["compare", "IQ2_XXS", "--prompt", "hi there"], "importance matrix"),
        "empty prompt": (["compare", ok, "--prompt", ""], "empty"),
        "one-token prompt": (["compare", ok, "--prompt", "a"], "at least 2"),
        "prompt over ctx": (["compare", ok, "--prompt", sample_text, "--ctx", "16", "--scoring", "prompt"],
                            "more than the context"),
        "text too short for corpus": (["compare", ok, "--text-file", str(short), "--scoring", "corpus", "--ctx", "64"],
                                      "corpus scoring needs"),
        "text between the limits": (["compare", ok, "--text-file", str(between), "--ctx", "150"], "too short for corpus"),
        "missing text file": (["compare", ok, "--text-file", str(tmp_path / "none.txt")], "does not exist"),
        "unknown run id": (["runs", "show", "doesnotexist"], "no stored run"),
        "hostile run id": (["runs", "show", "1' OR '1'='1"], "no stored run"),
        "bad top-k": (["compare", ok, "--prompt", "hi there", "--top-k", "0"], "top-k"),
        "bad convert quant": (["convert", str(tmp_path), "--out", str(tmp_path / "x.gguf"), "--quant", "Q7"], "unknown"),
        "bad convert dir": (["convert", str(tmp_path / "nodir"), "--out", str(tmp_path / "x.gguf")], "does not exist"),
    }


@pytest.mark.parametrize("case", ["missing file", "non-GGUF file", "truncated GGUF", "unknown quant", "imatrix quant",
                                  "empty prompt", "one-token prompt", "prompt over ctx", "text too short for corpus",
                                  "text between the limits", "missing text file", "unknown run id", "hostile run id",
                                  "bad top-k", "bad convert quant", "bad convert dir"])
def test_bad_input_exits_2_with_a_clear_error_and_writes_no_run(case, tiny_ggufs, tmp_path, sample_text):
    args, words = _bad_cases(tiny_ggufs, tmp_path, sample_text)[case]
    proc = run_cli([*_base(tmp_path), *args])
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert words.lower() in proc.stderr.lower(), proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert _runs_in_db(tmp_path) == 0
    assert not (tmp_path / "x.gguf").exists()


def test_models_over_the_memory_budget_exit_2_naming_the_budget(tiny_ggufs, tmp_path):
    proc = run_cli([*_base(tmp_path), "compare", str(tiny_ggufs["F16"]), str(tiny_ggufs["Q8_0"]), "--prompt",
                    "hello world again"], env={"PYTHIA_COMPARE_MEMORY_BUDGET": "1M"})
    assert proc.returncode == 2 and "memory budget" in proc.stderr and "MB" in proc.stderr
    assert _runs_in_db(tmp_path) == 0


def test_variants_with_different_vocabularies_stop_the_run_naming_both_files(tiny_ggufs, other_tokenizer_gguf,
                                                                            tmp_path):
    proc = run_cli([*_base(tmp_path), "compare", str(tiny_ggufs["Q8_0"]), str(other_tokenizer_gguf), "--prompt",
                    "Tokenizers differ on this sentence, surely."])
    assert proc.returncode == 2, proc.stderr
    assert "vocabularies differ" in proc.stderr
    assert other_tokenizer_gguf.name in proc.stderr and tiny_ggufs["Q8_0"].name in proc.stderr
    assert _runs_in_db(tmp_path) == 0


def test_the_cli_imports_neither_gradio_nor_plotly():
    import subprocess
    import sys

    from tests.support import ROOT

    code = ("import sys; sys.argv=['x','--help']\nfrom pythia_compare import cli\ntry: cli.main(['runs','list','--limit','1'])\n"
            "except SystemExit: pass\nprint(sorted(m for m in sys.modules if m.split('.')[0] in ('gradio','plotly','torch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHIA_COMPARE_DB": "/tmp/pc-cli-import-test.db", "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr
