#!/usr/bin/env bash
# dyno report at scale: a database of 100,000 synthetic points
# (make_report_db.py), then the time `dyno report` takes, the size of the
# page, and the time until the page is interactive in headless Chromium
# (its last view drawn). Targets (issue 6): < 5 s, < 15 MB, < 3 s.
# usage: bench/report_bench.sh [build dir]   (needs tests/browser/node_modules)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 "$root/bench/make_report_db.py" "$root/results/schema.sql" "$tmp/points.db" 100000
for i in 1 2 3; do
    start=$(date +%s%N)
    "$build/dyno" report --db "$tmp/points.db" -o "$tmp/report.html" >/dev/null
    end=$(date +%s%N)
    echo "dyno report: $(( (end - start) / 1000000 )) ms"
done
echo "page: $(stat -c %s "$tmp/report.html") bytes"
for i in 1 2 3; do
    node "$root/tests/browser/report_test.mjs" --time "$tmp/report.html" | grep interactive_ms
done
