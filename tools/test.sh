#!/usr/bin/env bash
# Install everything the test suite needs and run it: the README's test command, and what CI runs.
# - Python packages from requirements-dev.txt (llama-cpp-python builds from source the first time);
# - Debian's chromium for the browser tests (never a downloaded browser);
# - Debian's slurmd, slurmctld, slurm-client and munge for the real-Slurm sweep test;
# - llama.cpp's llama-perplexity, the peer of the metric tests (built once, cached);
# - llama.cpp's tokenizer test material (ggml-vocab-*.gguf and test vectors, kept once, cached).
# Extra arguments go to pytest (e.g. -m "not slow" for the fast tier). Exits non-zero on any failure, on
# "no tests ran", and on any skip.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -r requirements-dev.txt
# The package itself, editable: the tests import the installed package, which is this working tree.
python -m pip install -q --no-deps -e .
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
fi
# Debian's Slurm and munge for the sweep test's one-node cluster (tests/test_slurm.py starts and stops it).
if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmd slurmctld slurm-client munge >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmd slurmctld slurm-client munge >/dev/null
  fi
fi
PYTHIA_COMPARE_LLAMA_PERPLEXITY="$(bash tools/build_llama_perplexity.sh)"
export PYTHIA_COMPARE_LLAMA_PERPLEXITY
PYTHIA_COMPARE_LLAMA_VOCAB_DIR="$(bash tools/llama_vocab_files.sh)"
export PYTHIA_COMPARE_LLAMA_VOCAB_DIR
exec python -m pytest "$@"
