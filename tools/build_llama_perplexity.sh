#!/usr/bin/env bash
# Build llama.cpp's own `llama-perplexity` (the peer the tests and benchmarks compare against) from the
# llama-cpp-python sdist of the pinned version, with the same build flags pip uses for the project
# (a default, native Release build of shared libraries, as scikit-build-core makes it), and cache it so
# later runs reuse it. The binary finds its libraries beside it ($ORIGIN).
# With the argument `static` (or PYTHIA_COMPARE_PEER_BUILD=static) it builds the same sources as one static
# binary instead (-DBUILD_SHARED_LIBS=OFF), cached under its own key; the shared build's key is unchanged.
# Prints the path of the binary on stdout. Usage: tools/build_llama_perplexity.sh [shared|static]
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
kind="${1:-${PYTHIA_COMPARE_PEER_BUILD:-shared}}"
version="$(sed -n 's/^llama-cpp-python==\([0-9.]*\).*/\1/p' "$here/requirements.txt")"
case "$kind" in
  shared) libs=ON ;;
  static) libs=OFF ;;
  *) echo "unknown build kind '$kind'; use shared or static" >&2; exit 2 ;;
esac
cmake_flags="-DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=$libs"
key="$(printf '%s %s %s' "$version" "$cmake_flags" "$(uname -m)" | sha256sum | cut -c1-12)"
cache="${PYTHIA_COMPARE_TOOLS_CACHE:-$HOME/.cache/pythia-compare-tools}/llama-perplexity-$version-$key"
bin="$cache/bin/llama-perplexity"
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python -m pip download --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$work" >&2
tar xzf "$work"/llama_cpp_python-"$version".tar.gz -C "$work"
src="$work/llama_cpp_python-$version/vendor/llama.cpp"
# shellcheck disable=SC2086
cmake -S "$src" -B "$work/build" $cmake_flags -DCMAKE_BUILD_RPATH='$ORIGIN' >&2
cmake --build "$work/build" --target llama-perplexity -j "$(nproc)" >&2
mkdir -p "$cache/bin.tmp"
cp -a "$work/build/bin/llama-perplexity" "$cache/bin.tmp/"
if [ "$libs" = ON ]; then cp -a "$work"/build/bin/lib*.so* "$cache/bin.tmp/"; fi
rm -rf "$cache/bin" && mv "$cache/bin.tmp" "$cache/bin"
echo "$bin"
