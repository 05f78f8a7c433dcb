#!/usr/bin/env bash
# Installs onnxq's Debian build dependencies and builds it into ./build.
#   scripts/setup.sh           release build in ./build
#   scripts/setup.sh --asan    also an AddressSanitizer+UBSan build in ./build-asan
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake pkg-config
  protobuf-c-compiler libprotobuf-c-dev   # ONNX wire format
  libjansson-dev                          # JSON (API, reports, inspect --json)
  libmicrohttpd-dev                       # HTTP daemon
  libopenblas-dev                         # SGEMM
  zlib1g-dev                              # .npz members (deflate)
  check libsubunit-dev                    # unit tests
  curl python3                            # end-to-end tests
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# ONNX Runtime (CPU) from npm: the reference runtime tests and benchmarks
# check our output models with. --ignore-scripts skips its install script's
# download; the package already ships the CPU library.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm
fi
if [ ! -d tools/ort/node_modules/onnxruntime-node ]; then
  (cd tools/ort && npm install --ignore-scripts --no-audit --no-fund --loglevel=error)
fi

jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$jobs"

if [ "${1:-}" = "--asan" ]; then
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DOQ_SANITIZE=ON
  cmake --build build-asan -j"$jobs"
fi
