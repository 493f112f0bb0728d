#!/usr/bin/env bash
# The report page in headless Chromium, driven by playwright-core
# (tests/browser/report_test.mjs). Skipped, and says why, only where Chromium
# or tests/browser/node_modules is missing: scripts/install-deps.sh --tests
# installs both.
set -u
DYNO=${DYNO:-build/dyno}
root=${DYNO_SOURCE_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
browser=$root/tests/browser
chromium=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
    echo "1..0 # SKIP $chromium is not installed (scripts/install-deps.sh --tests installs it)"
    exit 0
fi
if ! command -v node >/dev/null || [ ! -d "$browser/node_modules/playwright-core" ]; then
    echo "1..0 # SKIP node or tests/browser/node_modules is missing (scripts/install-deps.sh --tests runs npm ci)"
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail_setup() { echo "1..1"; echo "not ok 1 - $1"; exit 1; }

"$browser/make_fixture.sh" "$DYNO" "$tmp/fixture.db" || fail_setup "fixture database"
"$DYNO" report --db "$tmp/fixture.db" -o "$tmp/report.html" >/dev/null || fail_setup "dyno report"
python3 - "$root/results/schema.sql" "$tmp/empty.db" <<'PY' || fail_setup "empty database"
import sqlite3, sys
db = sqlite3.connect(sys.argv[2])
db.executescript(open(sys.argv[1]).read())
db.execute('PRAGMA application_id = %d' % 0x64796E6F)
db.commit()
PY
"$DYNO" report --db "$tmp/empty.db" -o "$tmp/empty.html" >/dev/null || fail_setup "dyno report of an empty database"
# the screenshot stays in the build directory for a person to look at
CHROMIUM=$chromium node "$browser/report_test.mjs" "$tmp/report.html" "$PWD/dashboard-report.png" "$tmp/empty.html"
