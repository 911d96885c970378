"""Benchmark: `import pythia_compare`, and the CLI's fixed cost per run (issue 21).

- import: the wall time of `python -c "import pythia_compare"` (and of reaching the API's functions,
  `pythia_compare.compare`) minus that of `python -c pass`, median of N fresh processes.
- the CLI's fixed cost per run: the wall time of `python -m pythia_compare --offline compare demo
  --prompt "x y" --max-tokens 0 --json` ("x" alone is one token of the demo's vocabulary, too few to score)
  minus its decode time (the run JSON's score_s + generate_s), median of N, after one untimed run that converts
  the demo's F16 and probes it (as a user's second run finds them). Its breakdown, medians of N: start-up
  (`python -c pass`), imports (a fresh interpreter importing every module the command imports at its top
  level, as `-X importtime` lists them, minus start-up), load (the run JSON's load_s), save (the run log
  opened, the run saved and read back, in a fresh process, timed around those calls) and the rest (argument
  parsing, resolving the spec to its cached file, tokenizing, printing, exiting). The parts are measured apart,
  so under load they need not add up.

Other processes slow every figure: the load average is printed before and after, with the CPU model.

Usage: python benchmarks/bench_fixed_cost.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = re.search(r"Model name:\s*(.+)", out)
    flags = re.search(r"Flags:\s*(.+)", out)
    have = [f for f in ("avx2", "avx512f", "amx_tile") if flags and f in flags.group(1).split()]
    name = model.group(1).strip() if model else "unknown CPU"
    return f"{name} ({', '.join(have) or 'no avx2'}), {os.cpu_count()} cores"


CPU_S: list[float] = []  # the CPU seconds (user + system) of each command wall() ran, in order


def wall(cmd: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    """Run a command; its wall seconds (and its CPU seconds appended to CPU_S, which load disturbs less)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(ROOT))
    seconds = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU_S.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return seconds, done


def top_level_imports(stderr: str, startup_modules: set[str]) -> list[str]:
    """The modules a command imports at the top level (`-X importtime`'s unindented lines), less those a bare
    interpreter imports too."""
    names = []
    for line in stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+\d+ \| (\s*)(\S+)", line)
        if m and not m.group(1) and m.group(2) not in startup_modules and m.group(2) not in names:
            names.append(m.group(2))
    return names


SAVE = """
import json, sys, time
from pythia_compare.runs.store import RunStore
run = json.load(open(sys.argv[1]))
t = time.perf_counter()
store = RunStore(sys.argv[2])
store.get_run(store.save(run))
store.close()
print(time.perf_counter() - t)
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    n = a.repeats
    print(f"CPU: {cpu()}; load average before: {os.getloadavg()[0]:.2f}")
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "PYTHIA_COMPARE_HOME": str(tmp / "home"), "HF_HUB_CACHE": str(tmp / "hf"),
               "HF_ENDPOINT": "http://127.0.0.1:9", "PYTHONPATH": str(ROOT)}
        env.pop("PYTHIA_COMPARE_DB", None)

        runs: dict[str, list[tuple[float, float]]] = {"pass": [], "import": [], "api": []}
        for _ in range(n):  # interleaved, so a busy moment of the machine falls on all three alike
            for key, code in (("pass", "pass"), ("import", "import pythia_compare"),
                              ("api", "import pythia_compare as pc; pc.compare")):
                runs[key].append((wall([py, "-c", code], env)[0], CPU_S[-1]))
        med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in runs.items()}
        startup = med["pass"][0]
        print(f"\n| import (minus `python -c pass`) | wall, median of {n} | CPU, median of {n} |\n|---|---|---|")
        for key, name in (("import", "`import pythia_compare`"),
                          ("api", "`import pythia_compare; pythia_compare.compare` (the API reached)")):
            print(f"| {name} | {med[key][0] - med['pass'][0]:.3f} s | {med[key][1] - med['pass'][1]:.3f} s |")
        print(f"| (`python -c pass` itself) | {med['pass'][0]:.3f} s | {med['pass'][1]:.3f} s |")

        cmd = [py, "-m", "pythia_compare", "--offline", "--db", str(tmp / "runs.db"), "compare", "demo", "--prompt",
               "x y", "--max-tokens", "0", "--json"]  # "x" alone is one token, which no scoring takes
        wall(cmd, env)  # the demo's F16 converted and probed once, as a user's second run finds it
        fixed, loads, runs, cpu_runs = [], [], [], []
        for _ in range(n):
            seconds, done = wall(cmd, env)
            cpu_runs.append(CPU_S[-1])
            run = json.loads(done.stdout)
            decode = sum(x["timings"]["score_s"] + x["timings"]["generate_s"]
                         for x in ([run["reference"]] if run["reference"] else []) + run["variants"])
            fixed.append(seconds - decode)
            loads.append(sum(x["timings"]["load_s"] for x in ([run["reference"]] if run["reference"] else [])
                             + run["variants"]))
            runs.append(run)
        bare = set(top_level_imports(wall([py, "-X", "importtime", "-c", "pass"], env)[1].stderr, set()))
        names = top_level_imports(wall([py, "-X", "importtime", *cmd[1:]], env)[1].stderr, bare)
        imports = [wall([py, "-c", f"import {', '.join(names)}"], env)[0] - startup for _ in range(n)]
        (tmp / "run.json").write_text(json.dumps(runs[-1]))
        saves = [float(wall([py, "-c", SAVE, str(tmp / "run.json"), str(tmp / f"save{i}.db")], env)[1].stdout)
                 for i in range(n)]
        parts = {"start-up (python -c pass)": startup, "imports": statistics.median(imports),
                 "load (load_s)": statistics.median(loads), "save (open the log, save, read back)":
                 statistics.median(saves)}
        total = statistics.median(fixed)
        print(f"\n| the CLI's fixed cost per run: `compare demo --prompt \"x y\" --max-tokens 0` | median of {n} |")
        print("|---|---|")
        print(f"| wall minus decode | {total:.3f} s |")
        print(f"| (the whole run's CPU time, decode included) | {statistics.median(cpu_runs):.3f} s |")
        for name, v in parts.items():
            print(f"| - {name} | {v:.3f} s |")
        print(f"| - the rest (parse, resolve, tokenize, print, exit) | {total - sum(parts.values()):.3f} s |")
        print(f"\nimported at the top level: {', '.join(names)}")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
