"""EleutherAI's published numbers, bundled: the values a user would check against github.com/EleutherAI/pythia's
evals/ files, the v0 step renaming, "not published for this step" instead of a neighbour's value, the clear
error for a repo we have none for, the lineage rule for the Hub's GGUF files, what the Compare tab and the
Sweeps tab decide to show, and tools/import_pythia_evals.py rebuilding the bundle from an evals/ tree of the
same layout (CI cannot fetch the real repo, so the test writes a small one)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pythia_compare.runs import published
from pythia_compare.web import dashboard
from pythia_compare.config import DEFAULT_GGUF_REPO, Settings
from pythia_compare.web.sweepview import published_for_sweep
from tests.plots_runs import make_run
from tests.sweep_data import make_sweep

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "import_pythia_evals.py"
CURRENT, V0 = "EleutherAI/pythia-410m-deduped", "EleutherAI/pythia-410m-deduped-v0"


def test_the_bundle_holds_eleutherais_lambada_numbers_at_step143000_exactly():
    # evals/pythia-v1/pythia-410m-deduped/zero-shot/410m-deduped_step143000.json
    assert published.lookup(CURRENT, 143000, "lambada_openai") == {
        "acc": 0.5243547448088492, "acc_stderr": 0.0069577089602958775,
        "ppl": 10.574119701765504, "ppl_stderr": 0.3200973708253127}
    # evals/pythia-v0/…/zero-shot/pythia-410m-deduped-0shot-global_step71500_eval_results_12-30-2022-22-09-21.json
    v0 = published.lookup(V0, 143000, "lambada_openai")
    assert v0["acc"] == 0.5109644867067727 and v0["acc_stderr"] == 0.006964302556554798
    assert v0["ppl"] == 10.924817655049603
    assert published.source_file(V0, 143000).endswith("global_step71500_eval_results_12-30-2022-22-09-21.json")
    assert published.lookup(V0, 143000, "wikitext") == {"word_perplexity": 23.02153179677403,
                                                         "bits_per_byte": 0.8461811487968391}
    # five-shot numbers of the current models are their own files
    assert published.lookup(CURRENT, 143000, "lambada_openai", shots=5)["acc"] == 0.46574810789831167


def test_the_bundle_says_where_it_comes_from_and_stays_small():
    src = published.provenance()
    assert src["repo"] == "https://github.com/EleutherAI/pythia" and src["license"] == "Apache-2.0"
    assert len(src["commit"]) == 40 and int(src["commit"], 16) >= 0
    assert published.PUBLISHED_FILE.stat().st_size < 100_000
    data = published.bundle()
    paths = [f["path"] for r in data["runs"].values() for f in r["files"]]
    assert len(paths) == 15 + 27 + 15
    assert all(p.startswith(("evals/pythia-v0/pythia-410m-deduped/", "evals/pythia-v1/pythia-410m-deduped/"))
               for p in paths)
    assert not [p for p in paths if "baseline" in p or "intervention" in p]
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"published/*.json"' in pyproject


def test_v0_global_steps_are_hub_steps_twice_and_its_five_shot_files_are_not_called_five_shot():
    assert published.steps(V0) == [3000] + list(range(13000, 143001, 10000))
    df = published.published(V0, "piqa")
    assert (df["step"] == 2 * df["source_step"]).all()
    left_out = published.bundle()["runs"][V0]["left_out"]
    assert len(left_out) == 15 and all("/five-shot/" in x["path"] and "num_fewshot 0" in x["why"] for x in left_out)
    with pytest.raises(published.NoPublishedNumbers, match="no 5-shot numbers published for "
                                                           "EleutherAI/pythia-410m-deduped-v0; it has 0-shot"):
        published.published(V0, "piqa", shots=5)


def test_a_step_without_published_numbers_answers_none_never_a_neighbours_value():
    assert 4000 not in published.steps(CURRENT) and 3000 in published.steps(CURRENT)
    assert published.lookup(CURRENT, 4000, "lambada_openai") is None
    assert published.scores(CURRENT, 142000) is None
    # the current models' files have no wikitext: absent, not borrowed from v0
    assert published.lookup(CURRENT, 143000, "wikitext") is None


def test_published_returns_a_dataframe_with_a_step_column_in_step_order():
    df = published.published(CURRENT, "lambada_openai")
    assert list(df.columns[:6]) == ["step", "source_step", "acc", "acc_stderr", "ppl", "ppl_stderr"]
    assert df["step"].tolist() == sorted(df["step"]) and len(df) == 27
    row = df[df["step"] == 143000].iloc[0]
    assert row["acc"] == 0.5243547448088492 and row["path"].endswith("410m-deduped_step143000.json")
    # step0 and step1: identical weights, identical scores (EleutherAI/pythia#83)
    assert df[df["step"] == 0].iloc[0]["ppl"] == df[df["step"] == 1].iloc[0]["ppl"]


@pytest.mark.parametrize("repo, named", [("demo", "the demo suite"), ("someone/other-model", "'someone/other-model'"),
                                         (None, "a local file")])
def test_published_numbers_for_a_repo_we_have_none_for_name_the_repos_we_have(repo, named):
    with pytest.raises(published.NoPublishedNumbers) as e:
        published.published(repo, "lambada_openai")
    assert f"no published numbers for {named}" in str(e.value)
    assert CURRENT in str(e.value) and V0 in str(e.value)


def test_an_unknown_task_is_refused_naming_the_bundled_tasks():
    with pytest.raises(published.NoPublishedNumbers, match="task 'hellaswag'.*lambada_openai, piqa"):
        published.published(CURRENT, "hellaswag")


def test_bare_quants_are_the_gguf_repos_files_and_so_v0_step143000():
    assert published.training_point("Q4_K_M") == (V0, 143000)
    assert published.training_point("Q4_K_M", DEFAULT_GGUF_REPO) == (V0, 143000)
    assert published.training_point(f"{DEFAULT_GGUF_REPO}:Q8_0", DEFAULT_GGUF_REPO) == (V0, 143000)
    assert published.published(DEFAULT_GGUF_REPO, "lambada_openai")["acc"].iloc[-1] == 0.5109644867067727
    assert published.training_point("step3000", CURRENT) == (CURRENT, 3000)
    assert published.training_point(f"{CURRENT}@step33000:Q4_K_M", CURRENT) == (CURRENT, 33000)
    assert published.training_point(CURRENT, CURRENT) == (CURRENT, 143000)  # main is the final step
    assert published.training_point("step3000", settings=Settings()) == (V0, 3000)  # the default checkpoint repo
    assert published.training_point("demo@step0", "demo") is None
    assert published.training_point("./model.Q4_K_M.gguf") is None
    assert published.training_point("someone/other-model@step1000", "someone/other-model") is None


def _with_sources(run: dict, repos: dict[str, str]) -> dict:
    for e in [run["reference"], *run["variants"]]:
        e["source"]["repo"] = repos.get(e["spec"], e["source"]["repo"])
    return run


def test_the_compare_tab_shows_published_numbers_per_pythia_step_and_says_when_a_step_has_none():
    run = _with_sources(make_run([f"{CURRENT}@step143000:Q4_K_M", f"{CURRENT}@step4000", "Q8_0"],
                                 reference=f"{CURRENT}@step143000"), {"Q8_0": DEFAULT_GGUF_REPO})
    note, table = dashboard.published_table(run, Settings())
    assert table["headers"] == dashboard.PUBLISHED_COLUMNS
    rows = {r[0]: r for r in table["data"]}
    assert [r[0] for r in table["data"]][0] == "pythia-410m-deduped step143000 F16"  # the reference first
    assert rows["pythia-410m-deduped step143000 Q4_K_M"][1:4] == ["pythia-410m-deduped step143000",
                                                                  "0.5244 ± 0.0070", "10.574 ± 0.32"]
    assert rows["pythia-410m-deduped step4000 F16"][2] == published.NOT_PUBLISHED
    assert set(rows["pythia-410m-deduped step4000 F16"][3:]) == {""}
    assert rows["Q8_0"][1:3] == ["pythia-410m-deduped-v0 step143000", "0.5110 ± 0.0070"]
    assert "EleutherAI" in note and "v0 step143000" in note


def test_a_demo_run_says_it_has_no_published_numbers_and_a_local_file_run_shows_nothing():
    demo = _with_sources(make_run(["demo:Q4_K_M", "demo@step0"], reference="demo"),
                         {"demo:Q4_K_M": "demo", "demo@step0": "demo", "demo": "demo"})
    assert dashboard.published_table(demo, Settings()) == (dashboard.NO_PUBLISHED_DEMO, None)
    assert dashboard.NO_PUBLISHED_DEMO.startswith("No published numbers for demo")
    local = make_run(["./a.Q4_K_M.gguf"], reference="./b.F16.gguf")
    assert dashboard.published_table(local, Settings()) == ("", None)


def test_a_sweep_gets_the_published_numbers_of_its_own_repo_within_its_steps_only():
    sweep = make_sweep(steps=[1000, 13000, 33000, 143000], quants=["F16", "Q4_K_M"], hub_quants=["Q4_K_M"])
    sweep["repo"] = CURRENT
    pub = published_for_sweep(sweep)
    assert pub["repo"] == CURRENT and pub["note"] is None
    lam = pub["points"]["LAMBADA"]
    assert [s for s, _, _ in lam] == [s for s in published.steps(CURRENT) if 1000 <= s <= 143000]
    assert lam[-1] == (143000, 0.5243547448088492, 0.0069577089602958775)  # current, never v0's 0.51096…
    sweep["repo"] = V0
    assert published_for_sweep(sweep)["points"]["LAMBADA"][-1][1] == 0.5109644867067727
    sweep["repo"] = "demo"
    assert published_for_sweep(sweep) == {"repo": "demo", "points": {},
                                          "note": "No published numbers for demo: the demo suite is a tiny model "
                                                  "trained by this project."}
    early = make_sweep(steps=[4, 8], quants=["F16"])
    early["repo"] = V0
    assert "published no numbers for EleutherAI/pythia-410m-deduped-v0 between this sweep's steps" in \
        published_for_sweep(early)["note"]


# --------------------------------------------------------------------------------------- the import tool
def _result(step_scale: float, shots: int, model: str) -> dict:
    """A result file shaped like EleutherAI/pythia's (lm-eval's output): results, versions, config."""
    r = {"lambada_openai": {"ppl": 10.0 / step_scale, "ppl_stderr": 0.3, "acc": 0.5 * step_scale,
                            "acc_stderr": 0.007},
         "piqa": {"acc": 0.67, "acc_stderr": 0.011, "acc_norm": 0.68, "acc_norm_stderr": 0.0109},
         "wsc": {"acc": 0.37, "acc_stderr": 0.047},
         "hendrycksTest-virology": {"acc": 0.31, "acc_stderr": 0.036}}
    if model == "neox":
        r["wikitext"] = {"word_perplexity": 23.0, "byte_perplexity": 1.79, "bits_per_byte": 0.846}
    return {"results": r, "versions": {k: 0 for k in r}, "config": {"model": model, "num_fewshot": shots}}


def _fake_evals(root: Path) -> None:
    def put(rel: str, doc: dict) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(json.dumps(doc, indent=4))

    v0 = "evals/pythia-v0/pythia-410m-deduped"
    put(f"{v0}/zero-shot/pythia-410m-deduped-0shot-global_step71500_eval_results_12-30-2022-22-09-21.json",
        _result(1.0, 0, "neox"))
    put(f"{v0}/zero-shot/pythia-410m-deduped-0shot-global_step1500_eval_results_12-30-2022-22-07-51.json",
        _result(0.1, 0, "neox"))
    put(f"{v0}/five-shot/pythia-410m-deduped-5shot-global_step71500_eval_results_12-30-2022-22-05-30.json",
        _result(1.0, 0, "neox"))  # records num_fewshot 0, as the real ones do
    v1 = "evals/pythia-v1/pythia-410m-deduped"
    put(f"{v1}/zero-shot/410m-deduped_step143000.json", _result(1.05, 0, "hf-causal"))
    put(f"{v1}/zero-shot/410m-deduped_step0.json", _result(0.01, 0, "hf-causal"))
    put(f"{v1}/five-shot/410m-deduped-5shot_step143000.json", _result(0.9, 5, "hf-causal"))
    put(f"{v1}/intervention/intervention-410m-deduped_step143000.json", _result(2.0, 0, "hf-causal"))
    put(f"{v1}/baseline/baseline-410m-deduped_step143000.json", _result(2.0, 0, "hf-causal"))
    put("evals/pythia-v1/pythia-160m-deduped/zero-shot/160m-deduped_step143000.json", _result(3.0, 0, "hf-causal"))


def _tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=120)


def test_the_import_tool_rebuilds_the_bundle_from_an_evals_tree_and_a_git_dir_alike(tmp_path):
    tree = tmp_path / "pythia"
    _fake_evals(tree)
    done = _tool("--tree", str(tree), "--commit", "f" * 40, "-o", str(tmp_path / "tree.json"))
    assert done.returncode == 0, done.stderr
    out = json.loads((tmp_path / "tree.json").read_text())
    assert out["source"] == {"repo": "https://github.com/EleutherAI/pythia", "commit": "f" * 40,
                             "license": "Apache-2.0", "made_by": "tools/import_pythia_evals.py",
                             "folders": ["evals/pythia-v0/pythia-410m-deduped", "evals/pythia-v1/pythia-410m-deduped"]}
    v0, cur = out["runs"][V0], out["runs"][CURRENT]
    assert [(f["step"], f["source_step"], f["num_fewshot"]) for f in v0["files"]] == [(3000, 1500, 0),
                                                                                      (143000, 71500, 0)]
    assert [x["path"].split("/")[-2] for x in v0["left_out"]] == ["five-shot"]
    assert [(f["step"], f["num_fewshot"]) for f in cur["files"]] == [(0, 0), (143000, 0), (143000, 5)]
    assert not [f for f in cur["files"] if "intervention" in f["path"] or "baseline" in f["path"]]
    last = v0["files"][-1]["scores"]
    assert last == {"lambada_openai": {"acc": 0.5, "acc_stderr": 0.007, "ppl": 10.0, "ppl_stderr": 0.3},
                    "piqa": {"acc": 0.67, "acc_stderr": 0.011, "acc_norm": 0.68, "acc_norm_stderr": 0.0109},
                    "wsc": {"acc": 0.37, "acc_stderr": 0.047},
                    "wikitext": {"word_perplexity": 23.0, "bits_per_byte": 0.846}}
    assert "wikitext" not in cur["files"][1]["scores"]

    # the same tree committed to git and read through --git-dir: the same bundle, under the real commit
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false", "-C", str(tree)]
    subprocess.run(git[:-2] + ["init", "-q", str(tree)], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-qm", "evals"], check=True)
    head = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    done = _tool("--git-dir", str(tree / ".git"), "-o", str(tmp_path / "git.json"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "git.json").read_text() == (tmp_path / "tree.json").read_text().replace("f" * 40, head)


def test_the_import_tool_refuses_a_tree_that_is_not_the_pythia_repo_and_writes_nothing(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    done = _tool("--tree", str(tmp_path / "elsewhere"), "--commit", "0" * 40, "-o", str(tmp_path / "out.json"))
    assert done.returncode != 0 and "is this a checkout of EleutherAI/pythia?" in done.stderr
    done = _tool("--tree", str(tmp_path / "elsewhere"), "-o", str(tmp_path / "out.json"))
    assert done.returncode != 0 and "not a git work tree; say which commit it is with --commit" in done.stderr
    assert not (tmp_path / "out.json").exists()
