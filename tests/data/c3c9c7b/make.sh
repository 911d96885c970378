#!/usr/bin/env bash
# How the files beside this script were made: the run log and run JSONs written by pythia-compare at commit
# c3c9c7b (schema 1), kept so that every later release is tested to open them (tests/test_run.py).
# Run from a checkout of c3c9c7b (e.g. `git archive c3c9c7b | tar -x -C /tmp/old`):
#   bash tests/data/c3c9c7b/make.sh OUT_DIR
# Offline, on the bundled demo suite; ctx 64 and a few tokens keep the files small.
set -euo pipefail
out="$(realpath "$1")"
home="$(mktemp -d)"
db="$out/runs.db"
rm -f "$db"
pc() { python -m pythia_compare --db "$db" --home "$home" --offline compare "$@" --ctx 64 --top-k 5 --json; }
# 1. a prompt run with a reference (KL statistics per prompt token), no generation
pc demo@step300 demo:Q8_0 --reference demo --prompt $'def f(x):\n    return x + 1\n' --max-tokens 0 \
  > "$out/prompt-with-reference.json"
# 2. a corpus run with KL statistics: the first 800 characters of the held-out text, 64-token chunks
head -c 800 assets/demo/heldout.txt > "$home/slice.txt"
pc demo@step300 demo:Q4_K_M --reference demo --text-file "$home/slice.txt" --scoring corpus --max-tokens 0 \
  > "$out/corpus-with-kl.json"
# 3. a run with generation (sampled, seeded), with a reference
pc demo@step100 --reference demo --prompt "import os" --max-tokens 6 --temperature 0.8 --seed 7 \
  > "$out/generation.json"
# 4. a run without a reference (greedy generation of 3 tokens)
pc demo@step0 demo --prompt "class A:" --max-tokens 3 > "$out/no-reference.json"
rm -rf "$home"
# Fold the write-ahead log into the file, so the fixture is one file (it stays in WAL mode, as written).
python -c 'import sqlite3, sys; sqlite3.connect(sys.argv[1]).execute("PRAGMA wal_checkpoint(TRUNCATE)")' "$db"
rm -f "$db-wal" "$db-shm"
