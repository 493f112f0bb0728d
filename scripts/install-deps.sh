#!/usr/bin/env bash
# Installs what dyno needs on Debian or Ubuntu, skipping what is there.
#   scripts/install-deps.sh          build and run
#   scripts/install-deps.sh --tests  also the test suite's reference (PyTorch)
#                                    and the browser test (Chromium, playwright-core)
set -eu
packages="build-essential meson ninja-build pkg-config python3 libsqlite3-dev libcsv-dev
          libopenblas-dev libjansson-dev ocl-icd-opencl-dev opencl-headers libclblast-dev
          hipcc libamdhip64-dev
          libze-dev libze1 clang-14 llvm-14 llvm-spirv-14 spirv-tools"
if [ "${1:-}" = "--tests" ]; then
    # PoCL: a real OpenCL device on the CPU for the OpenCL backend's tests
    packages="$packages python3-torch pocl-opencl-icd"
    packages="$packages chromium"
    # a Node.js from elsewhere (NodeSource) brings its own npm
    command -v npm >/dev/null || packages="$packages nodejs npm"
fi
missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "installing:$missing" >&2
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
# The browser test's driver, at the version tests/browser/package-lock.json pins.
if [ "${1:-}" = "--tests" ] && [ ! -d "$(dirname "$0")/../tests/browser/node_modules/playwright-core" ]; then
    (cd "$(dirname "$0")/../tests/browser" && npm ci --no-audit --no-fund >/dev/null)
fi
