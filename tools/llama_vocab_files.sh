#!/usr/bin/env bash
# Keep llama.cpp's own tokenizer test material from the llama-cpp-python sdist of the pinned version:
# models/ggml-vocab-mpt.gguf (GPT-NeoX-20B's tokenizer, pre-tokenizer 'mpt') with its test vectors .inp/.out
# (inputs, and the ids Hugging Face's tokenizer gives them), and models/ggml-vocab-gpt-neox.gguf (the same
# vocabulary saved without a pre-tokenizer name). Vocab-only files: no weights.
# Cached beside the llama-perplexity build; later runs reuse them without downloading.
# Prints the directory holding them on stdout. Usage: tools/llama_vocab_files.sh
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
version="$(sed -n 's/^llama-cpp-python==\([0-9.]*\).*/\1/p' "$here/requirements.txt")"
dir="${PYTHIA_COMPARE_TOOLS_CACHE:-$HOME/.cache/pythia-compare-tools}/llama-vocab-$version"
files="ggml-vocab-mpt.gguf ggml-vocab-mpt.gguf.inp ggml-vocab-mpt.gguf.out ggml-vocab-gpt-neox.gguf"
complete=1
for f in $files; do [ -s "$dir/$f" ] || complete=0; done
if [ "$complete" = 1 ]; then echo "$dir"; exit 0; fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python -m pip download --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$work" >&2
members=""
for f in $files; do members="$members llama_cpp_python-$version/vendor/llama.cpp/models/$f"; done
# shellcheck disable=SC2086
tar xzf "$work"/llama_cpp_python-"$version".tar.gz -C "$work" $members
mkdir -p "$dir.tmp"
for f in $files; do cp "$work/llama_cpp_python-$version/vendor/llama.cpp/models/$f" "$dir.tmp/"; done
rm -rf "$dir" && mv "$dir.tmp" "$dir"
echo "$dir"
