"""Sweeps on the offline demo suite, through the real CLI, real llama.cpp and real SQLite files: plan, run,
shards and merge, a shard killed mid-cell, failed cells, cleanup of a step's files, bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import ROOT, run_cli

from pythia_compare.sweeps.sweep import Cell, SweepError, grid, parse_steps, shard_cells, shard_of_env
from pythia_compare.variants import PYTHIA_STEPS
from pythia_compare.sweeps.store import SweepStore

STEPS = "25,300"
QUANTS = "F16,Q8_0,Q2_K"
CELLS = 6


def _env(tmp_path) -> dict:
    return {"PYTHIA_COMPARE_HOME": str(tmp_path / "home"), "PYTHIA_COMPARE_OFFLINE": "1",
            "PYTHIA_COMPARE_THREADS": "1", "HF_HUB_CACHE": str(tmp_path / "hf")}


def _cli(args: list[str], tmp_path, db: Path, env: dict | None = None):
    return run_cli(["--db", str(db), *args], env={**_env(tmp_path), **(env or {})})


def _plan(tmp_path, db: Path, *, steps=STEPS, quants=QUANTS, extra=(), env=None) -> str:
    r = _cli(["sweep", "plan", "--repo", "demo", "--steps", steps, "--quants", quants, "--text-file",
              str(ROOT / "assets/demo/heldout.txt"), "--ctx", "64", "--max-chunks", "2", *extra], tmp_path, db, env)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().splitlines()[-1]


def _numbers(db: Path, sweep_id: str) -> dict:
    from pythia_compare.runs.store import RunStore

    with RunStore(db) as store:
        sweep = SweepStore(store).get(sweep_id)
    keys = ("ppl", "ppl_err", "kld_mean", "kld_mean_err", "kld_p99", "ln_ratio", "ln_ratio_err", "bpw")
    return {(c["step"], c["quant"], c["hub"]): {k: c[k] for k in keys} for c in sweep["cells"]}


def _close(a: dict, b: dict, rel: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for cell in a:
        for k, x in a[cell].items():
            y = b[cell][k]
            assert (x is None) == (y is None), (cell, k)
            if x is not None:
                assert abs(x - y) <= rel * max(abs(x), abs(y), 1e-300), (cell, k, x, y)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The demo grid (2 steps × 3 quants, ctx 64, 2 chunks) planned and run in one process."""
    tmp = tmp_path_factory.mktemp("one")
    db = tmp / "runs.db"
    sweep_id = _plan(tmp, db)
    r = _cli(["sweep", "run", sweep_id], tmp, db)
    assert r.returncode == 0, r.stderr
    return tmp, db, sweep_id, r


def test_a_demo_sweep_runs_every_cell_and_status_says_done(one_process):
    tmp, db, sweep_id, r = one_process
    assert "6 done, 0 failed" in r.stdout
    assert "cell" in r.stderr and "ETA" not in r.stdout  # tqdm progress goes to stderr
    s = _cli(["sweep", "status", sweep_id, "--json"], tmp, db)
    st = json.loads(s.stdout)
    assert (st["sweep"], st["done"], st["total"], st["failed"]) == (sweep_id, CELLS, CELLS, 0)
    table = _cli(["sweep", "show", sweep_id], tmp, db).stdout
    assert [line.split()[2] for line in table.splitlines()[2:]] == ["done"] * CELLS


def test_every_cell_opens_as_a_full_run_with_the_numbers_of_compare(one_process):
    from pythia_compare.runs.compare import RunParams, run_comparison
    from pythia_compare.config import Settings
    from pythia_compare.runs.pool import ModelPool
    from pythia_compare.runs.store import RunStore

    tmp, db, sweep_id, _ = one_process
    with RunStore(db) as store:
        sweep = SweepStore(store).get(sweep_id)
        text = SweepStore(store).plan(sweep_id)["text"]
        runs = {(c["step"], c["quant"]): store.get(c["run_id"]) for c in sweep["cells"]}
    for (step, quant), run in runs.items():
        assert run["input"]["text"] == text and len(run["input"]["tokens"]) == run["input"]["n_tokens"]
        assert run["params"]["scoring"] == "corpus" and run["params"]["ctx"] == 64
        assert run["variants"][0]["n_scored"] == 2 * (64 - 1 - 32)  # --max-chunks 2: two chunks of ctx 64
        assert [v["spec"] for v in run["variants"]] == [f"demo@step{step}:{quant}"]
        if quant == "F16":
            assert run["reference"] is None
        else:
            assert run["reference"]["spec"] == f"demo@step{step}:F16"
    # A cell's numbers are those of a plain comparison of its step's F16 with its quant, bit for bit.
    settings = Settings.from_env(home=tmp / "home2", offline=True)
    pool = ModelPool(settings)
    try:
        direct = run_comparison(["demo@step300:Q2_K"], text, RunParams(scoring="corpus", ctx=64, max_tokens=0,
                                                                      reference="demo@step300"),
                                settings=settings, pool=pool).to_json()
    finally:
        pool.close()
    cell = next(c for c in sweep["cells"] if (c["step"], c["quant"]) == (300, "Q2_K"))
    assert cell["ppl"] == direct["variants"][0]["ppl"]
    assert cell["kld_mean"] == direct["variants"][0]["kld"]["mean"]
    assert cell["ln_ratio"] == direct["variants"][0]["kld"]["ln_ratio"]
    assert runs[(300, "Q2_K")]["variants"][0]["token_logprobs"] == direct["variants"][0]["token_logprobs"]
    assert runs[(300, "F16")]["variants"][0]["ppl"] == direct["reference"]["ppl"]
    # Fewer bits per weight as the quant gets coarser; more divergence.
    by = {(c["step"], c["quant"]): c for c in sweep["cells"]}
    assert by[(25, "F16")]["bpw"] > by[(25, "Q8_0")]["bpw"] > by[(25, "Q2_K")]["bpw"]
    assert by[(25, "Q2_K")]["kld_mean"] > by[(25, "Q8_0")]["kld_mean"] > 0


def test_the_sweep_text_is_stored_and_indexed_once_and_cell_runs_stay_out_of_the_run_list(one_process):
    tmp, db, sweep_id, _ = one_process
    with sqlite3.connect(db) as conn:
        text = conn.execute("SELECT text FROM sweeps WHERE id = ?", [sweep_id]).fetchone()[0]
        assert len(text) > 200
        cell_texts = [r[0] for r in conn.execute("SELECT text FROM runs WHERE sweep_id = ?", [sweep_id])]
        assert cell_texts == [""] * CELLS
        word = max(text.split(), key=len).strip(".,;:()\"'")
        assert conn.execute("SELECT count(*) FROM runs_fts WHERE runs_fts MATCH ?", [f'"{word}"']).fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM sweeps_fts WHERE sweeps_fts MATCH ?", [f'"{word}"']).fetchone()[0] == 1
        tokens = [r[0] for r in conn.execute("SELECT tokens FROM runs WHERE sweep_id = ?", [sweep_id])]
        assert tokens == [None] * CELLS
    listed = _cli(["runs", "list"], tmp, db)
    assert "no runs yet" in listed.stdout
    sweeps = _cli(["sweep", "list"], tmp, db)
    assert sweep_id in sweeps.stdout and "6/6 done" in sweeps.stdout


def test_a_run_deletes_the_files_it_built_for_a_step_but_keeps_files_that_were_there_before(tmp_path):
    from pythia_compare.sources.cache import Cache

    db = tmp_path / "runs.db"
    pre = run_cli(["--db", str(tmp_path / "other.db"), "convert", "demo@step25", "--quant", "Q8_0", "--out",
                   str(tmp_path / "x.gguf")], env=_env(tmp_path))
    assert pre.returncode == 0, pre.stderr
    before = {e.path for e in Cache(tmp_path / "home").entries()}
    assert len(before) == 2  # step25's F16 and Q8_0, made before the sweep
    sweep_id = _plan(tmp_path, db)
    assert _cli(["sweep", "run", sweep_id], tmp_path, db).returncode == 0
    assert {e.path for e in Cache(tmp_path / "home").entries()} == before
    sweep2 = _plan(tmp_path, db, steps="100")
    assert _cli(["sweep", "run", sweep2, "--keep"], tmp_path, db).returncode == 0
    kept = {e.path for e in Cache(tmp_path / "home").entries()} - before
    assert sorted(p.name.rsplit("-", 1)[-1] for p in kept) == ["F16.gguf", "Q2_K.gguf", "Q8_0.gguf"]


def test_shard_dbs_merge_into_one_sweep_with_the_numbers_of_one_process_and_merge_is_idempotent(one_process, tmp_path):
    _, db1, sweep1, _ = one_process
    db = tmp_path / "plan.db"
    sweep_id = _plan(tmp_path, db)
    out = str(tmp_path / "shard-{shard}.db")
    plan_bytes = db.read_bytes()
    for i in range(2):
        r = _cli(["sweep", "run", sweep_id, "--shard", f"{i}/2", "--out", out], tmp_path, db)
        assert r.returncode == 0, r.stderr
    # Shards only read the plan's file (no lock, no -wal/-shm): safe for many nodes on a shared filesystem.
    assert db.read_bytes() == plan_bytes and not list(tmp_path.glob("plan.db-*"))
    shards = [str(tmp_path / f"shard-{i}.db") for i in range(2)]
    assert _numbers(Path(shards[0]), sweep_id) != _numbers(Path(shards[1]), sweep_id)
    merged = tmp_path / "merged.db"
    r = _cli(["sweep", "merge", *shards], tmp_path, merged)
    assert r.returncode == 0, r.stderr and "6 cells added" in r.stdout
    _close(_numbers(merged, sweep_id), _numbers(db1, sweep1))
    with sqlite3.connect(merged) as conn:
        n_runs = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
        ids = conn.execute("SELECT group_concat(id) FROM runs").fetchone()[0]
    assert n_runs == CELLS
    again = _cli(["sweep", "merge", *shards, "--sweep", sweep_id], tmp_path, merged)
    assert again.returncode == 0 and "0 cells added" in again.stdout
    with sqlite3.connect(merged) as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == n_runs
        assert conn.execute("SELECT group_concat(id) FROM runs").fetchone()[0] == ids
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # The run ids of the shards are kept, so links made before the merge still open the cells.
    shard_ids = set()
    for s in shards:
        with sqlite3.connect(s) as conn:
            shard_ids |= {r[0] for r in conn.execute("SELECT id FROM runs")}
    assert set(ids.split(",")) == shard_ids
    # Into the plan's own DB too: its pending cells become done.
    r = _cli(["sweep", "merge", *shards], tmp_path, db)
    st = json.loads(_cli(["sweep", "status", sweep_id, "--json"], tmp_path, db).stdout)
    assert r.returncode == 0 and st["done"] == CELLS
    # A shard of another sweep is refused, and nothing is written.
    before = merged.read_bytes()
    other = _cli(["sweep", "merge", shards[0], str(db1)], tmp_path, merged)
    assert other.returncode == 2 and "different sweeps" in other.stderr
    wrong = _cli(["sweep", "merge", shards[0], "--sweep", sweep1], tmp_path, merged)
    assert wrong.returncode == 2 and sweep1 in wrong.stderr
    assert merged.read_bytes() == before


def test_sharding_covers_every_cell_exactly_once_for_1_to_7_shards():
    cells = grid([0, 25, 100, 300, 800], ["F16", "Q8_0", "Q6_K", "Q4_K_M", "Q3_K_M", "Q2_K"], ["Q4_K_M", "Q8_0"])
    assert len(cells) == 32
    for n in range(1, 8):
        shards = [shard_cells(cells, i, n) for i in range(n)]
        flat = [c for s in shards for c in s]
        assert sorted(flat, key=repr) == sorted(cells, key=repr) and len(set(flat)) == len(cells)
        for s in shards:  # whole steps: one download serves every quant of a step
            for step in {c.step for c in s}:
                assert {c for c in s if c.step == step} == {c for c in cells if c.step == step}
    assert Cell(800, "Q8_0", True) in shard_cells(cells, 4, 5)
    assert shard_of_env({"SLURM_ARRAY_TASK_ID": "12", "SLURM_ARRAY_TASK_MIN": "10",
                         "SLURM_ARRAY_TASK_COUNT": "3"}) == (2, 3)
    assert shard_of_env({}) is None


def test_step_specs_select_from_the_repos_list():
    assert parse_steps("1000-143000/1000", PYTHIA_STEPS) == list(range(1000, 143001, 1000))
    assert len(parse_steps("all", PYTHIA_STEPS)) == 154
    twelve = parse_steps("log:12", PYTHIA_STEPS)
    assert len(twelve) == 12 == len(set(twelve)) and twelve[0] == 0 and twelve[-1] == 143000
    assert twelve == sorted(twelve) and any(1 <= s <= 512 for s in twelve)
    assert parse_steps("2000,step1000", PYTHIA_STEPS) == [1000, 2000]
    for bad, says in (("1500", "no step 1500"), ("banana", "not a step spec"), ("200000-300000/1", "none"),
                      ("log:0", "N must be"), ("", "names no steps")):
        with pytest.raises(SweepError, match=says):
            parse_steps(bad, PYTHIA_STEPS, "EleutherAI/pythia-410m-deduped-v0")


def test_a_shard_killed_mid_cell_then_rerun_has_every_cell_once(tmp_path):
    db = tmp_path / "runs.db"
    sweep_id = _plan(tmp_path, db, steps="25,100,300", quants="F16,Q8_0,Q4_K_M,Q2_K",
                     extra=["--max-chunks", "0"])
    env = {**os.environ, **_env(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "pythia_compare", "--db", str(db), "sweep", "run", sweep_id],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(ROOT))
    done = 0
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists():
            with sqlite3.connect(db, timeout=30) as conn:
                done = conn.execute("SELECT count(*) FROM sweep_cells WHERE status = 'done'").fetchone()[0]
            if done >= 1:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the shard finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(db) as conn:
        done_at_kill = conn.execute("SELECT count(*) FROM sweep_cells WHERE status = 'done'").fetchone()[0]
    assert 1 <= done_at_kill < 12
    r = _cli(["sweep", "run", sweep_id], tmp_path, db)
    assert r.returncode == 0, r.stderr
    assert f"{12 - done_at_kill} done" in r.stdout and f"{done_at_kill} already done" in r.stdout
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM sweep_cells WHERE status = 'done'").fetchone()[0] == 12
        assert conn.execute("SELECT count(*), count(DISTINCT run_id) FROM sweep_cells").fetchone() == (12, 12)
        assert conn.execute("SELECT count(*) FROM runs WHERE sweep_id = ?", [sweep_id]).fetchone()[0] == 12
        assert conn.execute("SELECT count(*) FROM runs r JOIN sweep_cells c ON c.run_id = r.id").fetchone()[0] == 12


def test_a_bad_checkpoint_fails_its_cells_with_the_error_the_shard_goes_on_and_a_rerun_retries(tmp_path):
    demo = tmp_path / "demo"
    for step in ("step25", "step100"):
        shutil.copytree(ROOT / "assets/demo" / step, demo / step)
    env = {"PYTHIA_COMPARE_DEMO_DIR": str(demo)}
    db = tmp_path / "runs.db"
    sweep_id = _plan(tmp_path, db, steps="all", env=env)
    weights = demo / "step100" / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 3])
    r = _cli(["sweep", "run", sweep_id], tmp_path, db, env)
    assert r.returncode == 0, r.stderr
    assert "3 done, 3 failed" in r.stdout
    st = _cli(["sweep", "status", sweep_id], tmp_path, db, env)
    assert st.stdout.count("failed: step100") == 3 and "model.safetensors" in st.stdout
    weights.write_bytes(good)
    r = _cli(["sweep", "run", sweep_id], tmp_path, db, env)
    assert r.returncode == 0 and "3 done, 0 failed, 3 already done" in r.stdout
    s = json.loads(_cli(["sweep", "show", sweep_id, "--json"], tmp_path, db, env).stdout)
    assert s["done"] == 6 and s["failed"] == 0
    assert {c["attempts"] for c in s["cells"] if c["step"] == 100} == {2}


def _bad_cases(tmp_path):
    text = str(ROOT / "assets/demo/heldout.txt")
    short = tmp_path / "short.txt"
    short.write_text("A short text of a few words, far fewer than two chunks.")
    plan = ["sweep", "plan", "--repo", "demo", "--text-file", text, "--ctx", "64"]
    return {
        "unknown step spec": (plan + ["--steps", "sometimes", "--quants", "F16"], "not a step spec"),
        "step not in the repo": (plan + ["--steps", "25,26", "--quants", "F16"], "no step 26"),
        "empty grid (no step selected)": (plan + ["--steps", "1000-2000/1", "--quants", "F16"], "selects none"),
        "empty grid (no quant)": (plan + ["--steps", "25", "--quants", ","], "names no quant"),
        "text too short": (["sweep", "plan", "--repo", "demo", "--text-file", str(short), "--ctx", "64",
                            "--steps", "25", "--quants", "F16"], "needs at least 128"),
        "shard out of range": (["sweep", "run", "SWEEP", "--shard", "3/3"], "out of range"),
        "merging a DB with no sweep": (["sweep", "merge", str(tmp_path / "nosweep.db")], "holds no sweep"),
    }


@pytest.mark.parametrize("case", list(_bad_cases(Path("/tmp"))))
def test_bad_input_exits_2_with_a_clear_message_and_writes_nothing(case, tmp_path):
    db = tmp_path / "runs.db"
    args, says = _bad_cases(tmp_path)[case]
    if case == "shard out of range":
        sweep_id = _plan(tmp_path, db)
        args = [a.replace("SWEEP", sweep_id) for a in args]
    if case == "merging a DB with no sweep":
        with sqlite3.connect(tmp_path / "nosweep.db") as conn:
            conn.execute("CREATE TABLE notes (x)")
    before = db.read_bytes() if db.exists() else None
    r = _cli(args + (["--out", str(tmp_path / "s{shard}.db")] if case == "shard out of range" else []),
             tmp_path, db)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert says in r.stderr and r.stderr.startswith("error: ")
    assert (db.read_bytes() if db.exists() else None) == before
    assert not list(tmp_path.glob("s*.db")) and not (tmp_path / "home").exists()


@pytest.fixture(scope="module")
def hub_repos(tmp_path_factory):
    """A fake Hub serving the demo steps as a checkpoint repo with stepN branches, and a GGUF repo whose files
    were made from its final step (so they share its vocabulary)."""
    from tests.fakehub import FakeHub, files_from_dir

    from pythia_compare.sources.convert import convert_checkpoint
    from pythia_compare.models.quantize import quantize_file

    out = tmp_path_factory.mktemp("hubgguf")
    hub = FakeHub()
    for step in (25, 100, 300):
        hub.add_revision("org/tiny-pythia", f"step{step}", files_from_dir(ROOT / "assets/demo" / f"step{step}"))
    f16 = convert_checkpoint(ROOT / "assets/demo/step300", out / "f16.gguf", "F16")
    hub.add_revision("org/tiny-pythia-gguf", "main", {
        "tiny.Q8_0.gguf": quantize_file(f16, out / "q8.gguf", "Q8_0").read_bytes(),
        "tiny.Q4_K.gguf": quantize_file(f16, out / "q4.gguf", "Q4_K_M").read_bytes(), "README.md": b"# gguf"})
    with hub:
        yield hub


def test_a_hub_checkpoint_repo_sweep_adds_hub_quants_and_deletes_only_what_it_downloaded(hub_repos, tmp_path):
    env = {"PYTHIA_COMPARE_OFFLINE": "0", "HF_ENDPOINT": hub_repos.endpoint,
           "PYTHIA_COMPARE_GGUF_REPO": "org/tiny-pythia-gguf"}
    db = tmp_path / "runs.db"
    r = _cli(["sweep", "plan", "--repo", "org/tiny-pythia", "--steps", "log:2", "--quants", "F16,Q2_K",
              "--hub-quants", "--text-file", str(ROOT / "assets/demo/heldout.txt"), "--ctx", "64",
              "--max-chunks", "2"], tmp_path, db, env)
    assert r.returncode == 0, r.stderr
    sweep_id = r.stdout.strip().splitlines()[-1]
    assert "2 hub cells" in r.stdout
    # Only the tokenizer and config were fetched to count the text's tokens: no weights.
    assert not hub_repos.downloads_of("model.safetensors")
    assert hub_repos.downloads_of("tokenizer.json")
    hf = tmp_path / "hf"
    r = _cli(["sweep", "run", sweep_id], tmp_path, db, env)
    assert r.returncode == 0, r.stderr
    s = json.loads(_cli(["sweep", "show", sweep_id, "--json"], tmp_path, db, env).stdout)
    assert s["steps"] == [25, 300] and s["hub_repo"] == "org/tiny-pythia-gguf"
    assert [(c["step"], c["quant"], c["hub"]) for c in s["cells"]] == [
        (25, "F16", False), (25, "Q2_K", False), (300, "F16", False), (300, "Q2_K", False),
        (300, "Q8_0", True), (300, "Q4_K_M", True)]
    assert s["done"] == 6, s
    from pythia_compare.runs.store import RunStore

    with RunStore(db) as store:
        hub_run = store.get(next(c["run_id"] for c in s["cells"] if c["hub"] and c["quant"] == "Q8_0"))
    assert hub_run["variants"][0]["source"]["repo"] == "org/tiny-pythia-gguf"
    assert hub_run["reference"]["spec"] == "org/tiny-pythia@step300:F16"
    # The weights and GGUF files the sweep downloaded, and the files it built, are gone; the small files
    # `plan` fetched before (tokenizer, config) stay.
    assert len(hub_repos.downloads_of("model.safetensors")) == 2
    left = sorted(p.name for p in hf.rglob("*") if p.is_file() or p.is_symlink())
    assert not [n for n in left if n.endswith((".safetensors", ".gguf"))], left
    assert not list((tmp_path / "home").rglob("*.gguf"))


def test_a_sweep_wide_reference_compares_every_cell_with_one_model_and_its_files_go_at_the_end(tmp_path):
    db = tmp_path / "runs.db"
    sweep_id = _plan(tmp_path, db, steps="25,100", quants="F16,Q2_K", extra=["--reference", "demo@step800"])
    r = _cli(["sweep", "run", sweep_id], tmp_path, db)
    assert r.returncode == 0 and "4 done, 0 failed" in r.stdout, r.stderr
    s = json.loads(_cli(["sweep", "show", sweep_id, "--json"], tmp_path, db).stdout)
    assert s["reference"] == "demo@step800"
    assert all(c["kld_mean"] is not None and c["kld_mean"] > 0 for c in s["cells"])  # F16 cells compared too
    from pythia_compare.runs.store import RunStore

    with RunStore(db) as store:
        run = store.get(s["cells"][0]["run_id"])
    assert run["reference"]["spec"] == "demo@step800" and run["variants"][0]["spec"] == "demo@step25:F16"
    assert not list((tmp_path / "home").rglob("*.gguf"))


def test_a_hub_file_of_another_model_fails_only_its_own_cell(other_tokenizer_gguf, tmp_path):
    from tests.fakehub import FakeHub, files_from_dir

    from pythia_compare.sources.convert import convert_checkpoint
    from pythia_compare.models.quantize import quantize_file

    f16 = convert_checkpoint(ROOT / "assets/demo/step300", tmp_path / "f16.gguf", "F16")
    good = quantize_file(f16, tmp_path / "q4.gguf", "Q4_K_M")
    hub = FakeHub()
    hub.add_revision("org/tiny-pythia", "step300", files_from_dir(ROOT / "assets/demo/step300"))
    hub.add_revision("org/tiny-pythia-gguf", "main", {"tiny.Q4_K.gguf": good.read_bytes(),
                                                     "tiny.Q8_0.gguf": other_tokenizer_gguf.read_bytes()})
    env = {"PYTHIA_COMPARE_OFFLINE": "0", "PYTHIA_COMPARE_GGUF_REPO": "org/tiny-pythia-gguf"}
    db = tmp_path / "runs.db"
    with hub:
        env["HF_ENDPOINT"] = hub.endpoint
        r = _cli(["sweep", "plan", "--repo", "org/tiny-pythia", "--steps", "all", "--quants", "F16",
                  "--hub-quants", "--text-file", str(ROOT / "assets/demo/heldout.txt"), "--ctx", "64",
                  "--max-chunks", "2"], tmp_path, db, env)
        assert r.returncode == 0, r.stderr
        sweep_id = r.stdout.strip().splitlines()[-1]
        r = _cli(["sweep", "run", sweep_id], tmp_path, db, env)
    assert r.returncode == 0 and "2 done, 1 failed" in r.stdout, (r.stdout, r.stderr)
    s = json.loads(_cli(["sweep", "show", sweep_id, "--json"], tmp_path, db, env).stdout)
    by = {(c["quant"], c["hub"]): c for c in s["cells"]}
    assert by[("F16", False)]["status"] == "done" and by[("Q4_K_M", True)]["status"] == "done"
    assert by[("Q8_0", True)]["status"] == "failed" and "vocabularies differ" in by[("Q8_0", True)]["error"]


def test_the_store_keeps_a_cells_run_whole_and_refuses_another_plan_under_the_same_id(tmp_path):
    from tests.store_runs import full_run

    from pythia_compare.errors import BadInput
    from pythia_compare.runs.store import RunStore
    from pythia_compare.sweeps.store import SweepMismatch, SweepNotFound

    run = full_run(3)
    plan = {"name": "t", "repo": "demo", "steps": [25, 100], "quants": ["F16", "Q8_0"], "hub_repo": None,
            "hub_quants": [], "reference": "F16", "ctx": 64, "max_chunks": 2, "text": run["input"]["text"],
            "text_sha256": "0" * 64, "n_tokens": run["input"]["n_tokens"], "params": {"top_k": 10}}
    a, b = RunStore(tmp_path / "a.db"), RunStore(tmp_path / "b.db")
    sweep_id = SweepStore(a).create(plan, [(25, "F16", False), (25, "Q8_0", False), (100, "F16", False)])
    run_id = SweepStore(a).save_cell_run(sweep_id, 25, "Q8_0", False, run, {"ppl": 2.5, "bpw": 8.5}, 1.0)
    got = a.get(run_id)
    assert {k: v for k, v in got.items() if k not in ("run_id", "created_at")} == \
        {k: v for k, v in run.items() if k not in ("run_id", "created_at")}  # text and tokens filled back in
    other = {**run, "input": {**run["input"], "text": run["input"]["text"] + " more"}}
    with pytest.raises(BadInput, match="another text"):
        SweepStore(a).save_cell_run(sweep_id, 100, "F16", False, other, {}, 1.0)
    SweepStore(a).record_cell_failure(sweep_id, 25, "Q8_0", False, "late failure")  # a done cell stays done
    s = SweepStore(a).get(sweep_id)
    assert (s["done"], s["failed"], s["pending"], s["total"]) == (1, 0, 2, 3)
    assert s["cells"][1]["run_id"] == run_id and s["cells"][1]["ppl"] == 2.5
    assert SweepStore(b).merge_from(a, sweep_id) == {"added": 1, "failed": 0, "skipped": 0}
    assert b.get(run_id)["input"] == run["input"]
    with sqlite3.connect(tmp_path / "b.db") as conn:
        conn.execute("UPDATE sweeps SET ctx = 128")
    with pytest.raises(SweepMismatch, match="another sweep under the id"):
        SweepStore(b).merge_from(a, sweep_id)
    with pytest.raises(SweepNotFound):
        SweepStore(a).get("nope")
    assert SweepStore(a).list()[0]["done"] == 1 and a.list() == []


def test_a_steps_quants_are_scored_in_passes_that_fit_the_memory_budget_beside_the_reference(tmp_path):
    from pythia_compare.sources.resolver import Resolved
    from pythia_compare.sweeps.sweep import _passes
    from pythia_compare.variants import parse_spec

    def file_of(cell: Cell, size: int) -> tuple[Cell, Resolved]:  # only a file's size counts against the budget
        path = tmp_path / f"{cell.label}.gguf"
        path.write_bytes(b"\0" * size)
        return cell, Resolved(parse_spec(f"demo@step25:{cell.quant}"), path, {})

    ref = tmp_path / "F16.gguf"
    ref.write_bytes(b"\0" * 100)
    f16 = Cell(25, "F16")
    ready = [file_of(Cell(25, "Q8_0"), 60), file_of(Cell(25, "Q6_K"), 50), file_of(Cell(25, "Q2_K"), 30),
             file_of(Cell(25, "Q4_K_M", True), 40), file_of(Cell(25, "Q8_0", True), 60)]

    def passes(ready, ref_cell, budget):
        return [([f"{c.quant}{' hub' if c.hub else ''}" for c, _ in g], with_f16)
                for g, with_f16 in _passes(ready, ref, ref_cell, budget)]

    # 100 + 60 + 50 > 200 starts a new pass; 100 + 50 + 30 fits; hub files never share a pass with converted ones
    assert passes(ready, f16, 200) == [(["Q8_0"], True), (["Q6_K", "Q2_K"], False),
                                       (["Q4_K_M hub", "Q8_0 hub"], False)]
    assert passes(ready, None, 10**9) == [(["Q8_0", "Q6_K", "Q2_K"], False), (["Q4_K_M hub", "Q8_0 hub"], False)]
    assert passes(ready, f16, 1) == [([q], i == 0) for i, q in
                                     enumerate(["Q8_0", "Q6_K", "Q2_K", "Q4_K_M hub", "Q8_0 hub"])]
    assert passes([], f16, 200) == [([], True)]  # the step's F16 cell alone: the F16 with no reference
