# Sourced by the shell tests: a scratch directory removed on exit, TAP output
# (ok, not_ok, check) and sql DB QUERY, which prints result rows with '|'
# between columns. The sourcing script prints its plan and ends with
# `finish`.
DYNO=${DYNO:-build/dyno}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; }
check() { local name=$1; shift; if "$@" >/dev/null 2>&1; then ok "$name"; else not_ok "$name"; fi; }
sql() { python3 - "$1" "$2" <<'PY'
import sqlite3, sys
for row in sqlite3.connect(sys.argv[1]).execute(sys.argv[2]):
    print('|'.join('' if v is None else str(v) for v in row))
PY
}
finish() { echo "# $n checks, $failed failed"; [ "$failed" -eq 0 ]; }
