#!/usr/bin/env bash
# Re-fetches the chart library dyno inlines into every report, from npm, at
# the pinned versions below, and copies its minified bundles and licences
# here. Run it after changing a version; commit what it writes.
set -eu
D3_VERSION=7.9.0
PLOT_VERSION=0.6.17
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
npm install --no-save --no-audit --no-fund --ignore-scripts \
    "d3@$D3_VERSION" "@observablehq/plot@$PLOT_VERSION" >/dev/null
cp node_modules/d3/dist/d3.min.js "$here/d3.min.js"
cp node_modules/d3/LICENSE "$here/LICENSE.d3"
cp node_modules/@observablehq/plot/dist/plot.umd.min.js "$here/plot.umd.min.js"
cp node_modules/@observablehq/plot/LICENSE "$here/LICENSE.plot"
# The bundles are inlined into <script> elements: a "</script" inside one
# would end it early, so refuse such a release instead of shipping it.
if grep -qi '</script' "$here/d3.min.js" "$here/plot.umd.min.js"; then
    echo "refresh.sh: a bundle contains </script; dyno report cannot inline it" >&2
    exit 1
fi
printf 'd3 %s\n@observablehq/plot %s\n' "$D3_VERSION" "$PLOT_VERSION" >"$here/VERSIONS"
