#!/usr/bin/env bash
# Installs what dyno needs on Debian or Ubuntu, skipping what is there.
#   scripts/install-deps.sh          build and run
#   scripts/install-deps.sh --tests  also the test suite's reference (PyTorch)
set -eu
packages="build-essential meson ninja-build pkg-config python3 libsqlite3-dev libcsv-dev
          libopenblas-dev libjansson-dev"
if [ "${1:-}" = "--tests" ]; then
    packages="$packages python3-torch"
fi
missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "installing:$missing" >&2
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
