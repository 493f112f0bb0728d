#!/usr/bin/env bash
# Installs what is missing, builds, runs every test, and ends with the line
# "N passed, N failed, N skipped".
set -u
cd "$(dirname "$0")"
scripts/install-deps.sh --tests || exit 1
if [ ! -f build/build.ninja ]; then
    meson setup build --buildtype=release >/dev/null || exit 1
fi
ninja -C build >build/ninja.log 2>&1 || { cat build/ninja.log; exit 1; }
meson test -C build --print-errorlogs --num-processes 2 >build/test-output.log 2>&1
meson_rc=$?
tail -n 40 build/test-output.log
python3 tests/summarize.py build/meson-logs/testlog.json
summary_rc=$?
[ $meson_rc -eq 0 ] && [ $summary_rc -eq 0 ]
