"""A sweep on a real one-node Slurm cluster started here: Debian's slurmctld, slurmd and munged (tools/test.sh
installs them). The job array runs the shards, the merge job waits for them (afterok), and the merged run log
must hold every cell once with the numbers of a one-process sweep."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.support import ROOT, run_cli

SLURM_TIMEOUT_S = 600


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _real_memory_mb() -> int:
    with open("/proc/meminfo") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:"))
    return max(256, int(kb / 1024 * 0.8))


def _wait(what: str, check, timeout: float, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    tails = "\n".join(f"--- {p}:\n{p.read_text()[-3000:]}" for p in logs if p.exists())
    raise AssertionError(f"timed out waiting for {what}\n{tails}")


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A one-node Slurm cluster on this machine (munged as user munge; slurmctld and slurmd as root, in the
    foreground so their PIDs are ours); yields the environment the Slurm commands need. Stops them by PID."""
    for tool in ("munged", "slurmctld", "slurmd", "sbatch", "sinfo", "squeue"):
        assert shutil.which(tool), f"{tool} is not installed; tools/test.sh installs slurmd slurmctld slurm-client munge"
    assert os.geteuid() == 0, "the Slurm test starts slurmctld and slurmd as root (SlurmUser=root)"
    # Not under pytest's tmp dir: that is private to root, and munged (user munge) must reach its socket dir.
    d = Path(tempfile.mkdtemp(prefix="pythia-compare-slurm-"))
    os.chmod(d, 0o755)
    munge = d / "munge"
    munge.mkdir(mode=0o755)
    key = munge / "munge.key"
    if not key.exists():  # a fresh key for this cluster
        key.write_bytes(os.urandom(1024))
    user = pwd.getpwnam("munge")
    for p in (munge, key):
        os.chown(p, user.pw_uid, user.pw_gid)
    os.chmod(key, 0o600)
    sock = munge / "munge.socket"
    host = socket.gethostname().split(".")[0]
    (d / "state").mkdir()
    (d / "spool").mkdir()
    conf = d / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=pythiacompare", f"SlurmctldHost={host}", "SlurmUser=root", "SlurmdUser=root",
        "AuthType=auth/munge", f"AuthInfo=socket={sock}", "CredType=cred/munge",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core", "SchedulerType=sched/backfill", "MpiDefault=none", "ReturnToService=2",
        "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
        f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
        f"StateSaveLocation={d / 'state'}", f"SlurmdSpoolDir={d / 'spool'}",
        f"SlurmctldPidFile={d / 'slurmctld.pid'}", f"SlurmdPidFile={d / 'slurmd.pid'}",
        f"SlurmctldLogFile={d / 'slurmctld.log'}", f"SlurmdLogFile={d / 'slurmd.log'}",
        "SlurmctldTimeout=30", "SlurmdTimeout=30", "MinJobAge=300",
        f"NodeName={host} CPUs=2 RealMemory={_real_memory_mb()} State=UNKNOWN",
        f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP", ""]))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    logs = [d / "slurmctld.log", d / "slurmd.log", munge / "munged.log"]
    procs: list[subprocess.Popen] = []
    try:
        procs.append(subprocess.Popen(
            ["runuser", "-u", "munge", "--", "munged", "--foreground", "--force", f"--key-file={key}",
             f"--socket={sock}", f"--pid-file={munge / 'munged.pid'}", f"--log-file={munge / 'munged.log'}",
             f"--seed-file={munge / 'munged.seed'}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait("munged's socket", sock.exists, 30, logs)
        procs.append(subprocess.Popen(["slurmctld", "-D", "-f", str(conf)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen(["slurmd", "-D", "-f", str(conf)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        def idle() -> bool:
            r = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True)
            return r.returncode == 0 and r.stdout.strip() == "idle"

        _wait("the node to be idle in sinfo", idle, 90, logs)
        yield {"env": {"SLURM_CONF": str(conf)}, "dir": d, "logs": logs}
    finally:
        munged_pid = munge / "munged.pid"
        for p in reversed(procs):  # stop exactly the daemons started here, by PID
            if p is procs[0] and munged_pid.exists():  # munged runs under runuser: signal munged itself
                try:
                    os.kill(int(munged_pid.read_text().split()[0]), signal.SIGTERM)
                except (ValueError, ProcessLookupError):
                    pass
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        shutil.rmtree(d, ignore_errors=True)


def _env(tmp_path) -> dict:
    return {"PYTHIA_COMPARE_HOME": str(tmp_path / "home"), "PYTHIA_COMPARE_OFFLINE": "1",
            "PYTHIA_COMPARE_THREADS": "1", "HF_HUB_CACHE": str(tmp_path / "hf")}


def _plan(tmp_path, db: Path, env: dict) -> str:
    r = run_cli(["--db", str(db), "sweep", "plan", "--repo", "demo", "--steps", "25,100,300,800",
                 "--quants", "F16,Q8_0,Q4_K_M", "--text-file", str(ROOT / "assets/demo/heldout.txt"), "--ctx", "64",
                 "--max-chunks", "2"], env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().splitlines()[-1]


def _cells(db: Path) -> dict:
    keys = ("ppl", "ppl_err", "kld_mean", "kld_mean_err", "kld_p99", "ln_ratio", "ln_ratio_err", "bpw")
    with sqlite3.connect(db) as conn:
        rows = conn.execute(f"SELECT step, quant, status, run_id, {', '.join(keys)} FROM sweep_cells").fetchall()
    return {(r[0], r[1]): dict(zip(("status", "run_id", *keys), r[2:])) for r in rows}


def test_a_demo_sweep_runs_as_a_slurm_array_and_merges_to_the_numbers_of_one_process(slurm_cluster, tmp_path):
    env = {**_env(tmp_path), **slurm_cluster["env"]}
    one_db = tmp_path / "one.db"
    one_id = _plan(tmp_path, one_db, env)
    r = run_cli(["--db", str(one_db), "sweep", "run", one_id], env=env)
    assert r.returncode == 0, r.stderr

    db = tmp_path / "cluster" / "runs.db"
    sweep_id = _plan(tmp_path, db, env)
    r = run_cli(["--db", str(db), "sweep", "slurm", sweep_id, "--array-size", "3", "--cpus-per-task", "1",
                 "--submit"], env=env)
    assert r.returncode == 0, r.stderr
    merge_job = r.stdout.strip().splitlines()[-1]
    assert "afterok:" in r.stdout
    array_script = (tmp_path / "cluster" / f"sweep-{sweep_id}" / "array.sbatch").read_text()
    assert "#SBATCH --array=0-2" in array_script and f"sweep run {sweep_id}" in array_script

    def gone() -> bool:
        q = subprocess.run(["squeue", "-h", "-o", "%i %t"], env={**os.environ, **env}, capture_output=True,
                           text=True)
        return q.returncode == 0 and not q.stdout.strip()

    work = tmp_path / "cluster" / f"sweep-{sweep_id}"
    _wait("the array and the merge job to finish", gone, SLURM_TIMEOUT_S,
          slurm_cluster["logs"] + sorted(work.glob("*.log")))
    merge_log = work / "merge.log"
    assert merge_log.exists(), f"merge job {merge_job} never ran: " + "\n".join(
        p.read_text()[-2000:] for p in sorted(work.glob("shard-*.log")))
    assert "12 cells added" in merge_log.read_text(), merge_log.read_text()
    for i in range(3):  # three array tasks, each with its own shard DB and whole steps
        assert (work / f"shard-{i}.db").exists()
    st = run_cli(["--db", str(db), "sweep", "status", sweep_id, "--json"], env=env)
    status = json.loads(st.stdout)
    assert (status["done"], status["total"], status["failed"]) == (12, 12, 0)

    cluster, one = _cells(db), _cells(one_db)
    assert cluster.keys() == one.keys() and len(cluster) == 12
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT id) FROM runs WHERE sweep_id = ?",
                            [sweep_id]).fetchone() == (12, 12)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    for cell, row in cluster.items():
        assert row["status"] == "done" and row["run_id"]
        for k, x in row.items():
            if k in ("status", "run_id"):
                continue
            y = one[cell][k]
            assert (x is None) == (y is None), (cell, k)
            if x is not None:
                assert abs(x - y) <= 1e-6 * max(abs(x), abs(y)), (cell, k, x, y)


def test_a_lambada_sweep_runs_as_a_slurm_array_and_merges_to_the_figures_of_one_process(slurm_cluster, tmp_path):
    env = {**_env(tmp_path), **slurm_cluster["env"]}
    plan = ["sweep", "plan", "--repo", "demo", "--steps", "100,300,800", "--quants", "F16,Q2_K", "--scoring",
            "lambada", "--lambada-file", str(ROOT / "assets/demo/lambada.jsonl"), "--limit", "24", "--ctx", "128"]
    keys = ("lambada_n", "lambada_acc", "lambada_acc_stderr", "lambada_ppl", "lambada_ppl_stderr")

    def figures(db: Path) -> dict:
        with sqlite3.connect(db) as conn:
            rows = conn.execute(f"SELECT step, quant, status, {', '.join(keys)} FROM sweep_cells").fetchall()
        return {(r[0], r[1]): r[2:] for r in rows}

    one_db, db = tmp_path / "one.db", tmp_path / "cluster" / "runs.db"
    ids = []
    for d in (one_db, db):
        r = run_cli(["--db", str(d), *plan], env=env)
        assert r.returncode == 0, r.stderr
        ids.append(r.stdout.strip().splitlines()[-1])
    r = run_cli(["--db", str(one_db), "sweep", "run", ids[0]], env=env)
    assert r.returncode == 0, r.stderr
    r = run_cli(["--db", str(db), "sweep", "slurm", ids[1], "--array-size", "2", "--cpus-per-task", "1", "--submit"],
                env=env)
    assert r.returncode == 0, r.stderr
    work = tmp_path / "cluster" / f"sweep-{ids[1]}"

    def gone() -> bool:
        q = subprocess.run(["squeue", "-h", "-o", "%i %t"], env={**os.environ, **env}, capture_output=True,
                           text=True)
        return q.returncode == 0 and not q.stdout.strip()

    _wait("the array and the merge job to finish", gone, SLURM_TIMEOUT_S,
          slurm_cluster["logs"] + sorted(work.glob("*.log")))
    assert "6 cells added" in (work / "merge.log").read_text()
    cluster, one = figures(db), figures(one_db)
    assert len(cluster) == 6 and all(v[0] == "done" and v[1] == 24 for v in cluster.values())
    assert cluster == one  # the same examples, the same figures, whichever node scored them
