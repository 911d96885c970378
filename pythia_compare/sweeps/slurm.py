"""Slurm: the job-array script that runs a sweep's shards, the merge job that depends on it, and `sbatch`.

Owns the two batch scripts and submitting them; the only module that runs Slurm commands. Each array task runs
`python -m pythia_compare sweep run ID --out DIR/shard-{shard}.db` (the shard comes from SLURM_ARRAY_TASK_ID −
SLURM_ARRAY_TASK_MIN and SLURM_ARRAY_TASK_COUNT, read by sweep.py); the merge job runs `sweep merge` over every
shard DB into --db once all tasks succeeded (`--dependency=afterok`). A shard exits 0 when each of its cells
finished or was recorded as failed, so one bad checkpoint does not cancel the merge. Never touches the database.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..config import PACKAGE_DIR, Settings
from ..errors import BadInput, PythiaCompareError


class SlurmError(PythiaCompareError):
    """sbatch failed or is not installed."""


@dataclass(frozen=True)
class SlurmJob:
    sweep_id: str
    directory: Path
    array_script: Path
    merge_script: Path
    shard_dbs: list[Path]


def _global_flags(settings: Settings) -> list[str]:
    flags = ["--db", str(Path(settings.db_path).expanduser().resolve()),
             "--home", str(Path(settings.home).expanduser().resolve())]
    if settings.offline:
        flags.append("--offline")
    return flags


def write_scripts(settings: Settings, sweep_id: str, *, array_size: int, partition: str | None = None,
                  time_limit: str | None = None, cpus_per_task: int = 2,
                  directory: str | Path | None = None) -> SlurmJob:
    """Write DIR/array.sbatch and DIR/merge.sbatch for the sweep (DIR defaults to sweep-ID beside --db)."""
    if isinstance(array_size, bool) or not isinstance(array_size, int) or not 1 <= array_size <= 10000:
        raise BadInput(f"--array-size {array_size} is out of range; use 1 … 10000 shards")
    if not isinstance(cpus_per_task, int) or cpus_per_task < 1:
        raise BadInput(f"--cpus-per-task {cpus_per_task} must be 1 or more")
    for name, value in (("--partition", partition), ("--time", time_limit)):
        if value is not None and (not value or any(ch.isspace() or ch in "'\"\\$`;" for ch in value)):
            raise BadInput(f"{name} {value!r} is not a plain Slurm value; e.g. --partition cpu, --time 04:00:00")
    d = Path(directory).expanduser() if directory else Path(settings.db_path).expanduser().resolve().parent / f"sweep-{sweep_id}"
    d = d.resolve()
    d.mkdir(parents=True, exist_ok=True)
    py = shlex.quote(sys.executable)
    root = shlex.quote(str(PACKAGE_DIR.parent))
    flags = " ".join(shlex.quote(f) for f in _global_flags(settings))
    env = _env_lines(settings)
    header = [f"#SBATCH --job-name=pc-sweep-{sweep_id}", f"#SBATCH --cpus-per-task={cpus_per_task}",
              "#SBATCH --ntasks=1"]
    if partition:
        header.append(f"#SBATCH --partition={partition}")
    if time_limit:
        header.append(f"#SBATCH --time={time_limit}")
    shard_pattern = d / "shard-{shard}.db"
    array = "\n".join([
        "#!/bin/bash", *header, f"#SBATCH --array=0-{array_size - 1}",
        f"#SBATCH --output={d}/shard-%a.log",
        "# One shard of the sweep per array task; the shard index comes from SLURM_ARRAY_TASK_ID.",
        "set -euo pipefail", *env,
        "export PYTHIA_COMPARE_THREADS=\"${SLURM_CPUS_PER_TASK:-" + str(cpus_per_task) + "}\"",
        f"export PYTHONPATH={root}${{PYTHONPATH:+:$PYTHONPATH}}",
        f"exec {py} -m pythia_compare {flags} sweep run {shlex.quote(sweep_id)} "
        f"--out {shlex.quote(str(shard_pattern))}", ""])
    shards = [d / f"shard-{i}.db" for i in range(array_size)]
    merge = "\n".join([
        "#!/bin/bash", *header[:1], "#SBATCH --cpus-per-task=1", "#SBATCH --ntasks=1",
        *[h for h in header if h.startswith(("#SBATCH --partition", "#SBATCH --time"))],
        f"#SBATCH --output={d}/merge.log",
        "# Runs after every shard succeeded (submitted with --dependency=afterok:<array job>).",
        "set -euo pipefail", *env,
        f"export PYTHONPATH={root}${{PYTHONPATH:+:$PYTHONPATH}}",
        f"exec {py} -m pythia_compare {flags} sweep merge --sweep {shlex.quote(sweep_id)} "
        + " ".join(shlex.quote(str(s)) for s in shards), ""])
    array_path, merge_path = d / "array.sbatch", d / "merge.sbatch"
    array_path.write_text(array)
    merge_path.write_text(merge)
    return SlurmJob(sweep_id, d, array_path, merge_path, shards)


def _env_lines(settings: Settings) -> list[str]:
    """The settings a task must see the same way as the submitting process (Hub endpoint and cache, demo dir)."""
    pairs = {"HF_ENDPOINT": settings.hub_endpoint, "HF_HUB_CACHE": str(Path(settings.hf_cache_dir).expanduser()),
             "PYTHIA_COMPARE_DEMO_DIR": str(Path(settings.demo_dir).expanduser().resolve()),
             "PYTHIA_COMPARE_GGUF_REPO": settings.gguf_repo,
             "PYTHIA_COMPARE_CHECKPOINT_REPO": settings.checkpoint_repo,
             "PYTHIA_COMPARE_MEMORY_BUDGET": str(settings.memory_budget_bytes)}
    return [f"export {k}={shlex.quote(v)}" for k, v in pairs.items()]


def _sbatch(args: list[str]) -> str:
    exe = shutil.which("sbatch")
    if exe is None:
        raise SlurmError("sbatch is not installed or not on PATH; run the scripts on a Slurm login node, or "
                         "submit them there by hand")
    proc = subprocess.run([exe, "--parsable", *args], capture_output=True, text=True, timeout=120,
                          env=os.environ.copy())
    if proc.returncode != 0:
        raise SlurmError(f"sbatch {' '.join(args)} failed (exit {proc.returncode}): "
                         f"{(proc.stderr or proc.stdout).strip()}")
    return proc.stdout.strip().split(";")[0]


def submit(job: SlurmJob) -> tuple[str, str]:
    """Submit the array, then the merge job with --dependency=afterok:<array id>. Returns both job ids."""
    array_id = _sbatch([str(job.array_script)])
    merge_id = _sbatch([f"--dependency=afterok:{array_id}", str(job.merge_script)])
    return array_id, merge_id
