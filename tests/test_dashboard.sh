#!/usr/bin/env bash
# dyno report and dyno compare from the command line: the page's embedded
# data (escaped, complete), defaults, refused input, and the markdown table.
# The page itself is checked in a browser by test_browser.sh.
set -u
source "$(dirname "$0")/tap.sh"
root=${DYNO_SOURCE_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
case $DYNO in /*) ;; *) DYNO=$PWD/$DYNO ;; esac

echo "1..16"
db=$tmp/fixture.db
"$root/tests/browser/make_fixture.sh" "$DYNO" "$db"
check "fixture database built" test -s "$db"

"$DYNO" report --db "$db" -o "$tmp/r.html" >"$tmp/out" 2>&1
check "report exits 0 and names the file" grep -q "r.html" "$tmp/out"
# The embedded JSON holds every point, and no string in it can end the
# <script> element or break a line for old parsers.
python3 - "$tmp/r.html" "$db" >"$tmp/json" 2>&1 <<'PY'
import json, sqlite3, sys
html = open(sys.argv[1], encoding='utf-8').read()
start = html.index('<script type="application/json" id="dy-data">') + len('<script type="application/json" id="dy-data">')
body = html[start:html.index('</script>', start)]
data = json.loads(body)
points = data['points']
count = len(points['status']['idx'])
want = sqlite3.connect(sys.argv[2]).execute('select count(*) from points').fetchone()[0]
devices = points['device']['dict']
assert count == want, (count, want)
assert '<img src=x onerror=alert(1)>' in devices, devices
assert '<' not in body and '\u2028' not in body and '\u2029' not in body
print('ok')
PY
check "embedded JSON: every point, hostile strings escaped, U+2028 escaped" grep -qx ok "$tmp/json"
check "page inlines the vendored library and loads nothing" bash -c \
    "grep -q '@observablehq/plot v0.6.17' '$tmp/r.html' && ! grep -qiE '<(link|script)[^>]* (src|href)=' '$tmp/r.html'"

mkdir "$tmp/elsewhere"
cp "$db" "$tmp/elsewhere/dyno.db"
(cd "$tmp/elsewhere" && "$DYNO" report >/dev/null 2>&1)
check "defaults: dyno.db to dyno-report.html, from any directory" test -s "$tmp/elsewhere/dyno-report.html"

"$DYNO" report --db "$tmp/missing.db" -o "$tmp/m.html" 2>"$tmp/err"; rc=$?
check "missing database: fails, named, not created" test $rc -ne 0 -a -n "$(grep missing.db "$tmp/err")" -a ! -e "$tmp/missing.db" -a ! -e "$tmp/m.html"
echo "not a database" >"$tmp/foreign.db"
sum=$(md5sum <"$tmp/foreign.db")
"$DYNO" report --db "$tmp/foreign.db" -o "$tmp/f.html" 2>"$tmp/err"; rc=$?
check "foreign file refused, named, unchanged" test $rc -ne 0 -a -n "$(grep foreign.db "$tmp/err")" -a "$(md5sum <"$tmp/foreign.db")" = "$sum" -a ! -e "$tmp/f.html"
"$DYNO" report --frobnicate 2>"$tmp/err"; rc=$?
check "report: unknown option exits 2 and names it" test $rc -eq 2 -a -n "$(grep frobnicate "$tmp/err")"

"$DYNO" compare --db "$db" --baseline cpu-ref --vs "cpu:AMD EPYC" >"$tmp/cmp" 2>&1; rc=$?
check "compare: exit 0, four matching points with ratios" test $rc -eq 0 -a "$(grep -c '^| tiny-llama | llm |' "$tmp/cmp")" = 4 -a -n "$(grep 'geometric mean' "$tmp/cmp")"
# throughput: vs / base; latencies: base / vs (× > 1 is faster either way)
check "compare: ratios say how many times faster than the baseline" python3 -c "
import re, sys
rows = [l for l in open('$tmp/cmp') if l.startswith('| tiny-llama')]
def close(r, a, b): return abs(r - a / b) <= 0.01 * a / b + 0.005
good = True
for l in rows:
    c = [x.strip().strip('*').rstrip('×') for x in l.strip().strip('|').split('|')]
    f = [float(x) for x in c[6:15]]
    good &= close(f[2], f[1], f[0]) and close(f[5], f[3], f[4]) and close(f[8], f[6], f[7])
sys.exit(0 if rows and good else 1)"
# the fixture's ViT points on both: one without adapters, ranks 4 and 16 on
# attn and attn+mlp, merged or not, and a rank map merged or not; paired
# only with their own configuration, their throughput in images/s
check "compare: ViT points apart only in their LoRA axes are rows of their own" python3 -c "
rows = [l.split('|') for l in open('$tmp/cmp') if l.startswith('| tiny-vit | vit |')]
configs = [r[6].strip() for r in rows]
want = ['bf16/', 'bf16/ lora map 16/16,8/8,4/0,0/4 attn+mlp', 'bf16/ lora map 16/16,8/8,4/0,0/4 attn+mlp merged']
want += ['bf16/ lora r%d %s%s' % (k, t, m) for k in (4, 16) for t in ('attn', 'attn+mlp') for m in ('', ' merged')]
assert sorted(configs) == sorted(want), configs
assert all(r[7].endswith(' img/s ') and r[9].strip().startswith('**') for r in rows), rows"
# LoRA flags left out are stored as NULL and mean rank 0 on attn, unmerged
python3 -c "
import shutil, sqlite3
shutil.copy('$db', '$tmp/unset.db')
db = sqlite3.connect('$tmp/unset.db')
db.execute(\"UPDATE points SET lora_rank = NULL, lora_targets = NULL, lora_merged = NULL WHERE backend = 'cpu-ref' AND workload = 'vit' AND lora_rank = 0\")
db.commit()"
"$DYNO" compare --db "$tmp/unset.db" --baseline cpu-ref --vs "cpu:AMD EPYC" >"$tmp/unset" 2>&1
check "compare: a ViT point without LoRA flags pairs with one at rank 0" grep -q '^| tiny-vit | vit | 1 | — | — | bf16/ | .* img/s |' "$tmp/unset"
"$DYNO" compare --db "$db" --baseline "cpu-ref" >"$tmp/all" 2>&1
check "compare without --vs: every other device, imported ones too" bash -c \
    "grep -q '^## cpu:AMD EPYC vs' '$tmp/all' && grep -q '^## cpu:<img src=x onerror=alert(1)> vs' '$tmp/all' && grep -q '^## vllm:A100-SXM4-80GB vs' '$tmp/all'"
"$DYNO" compare --db "$db" --baseline cpu 2>"$tmp/err"; rc=$?
check "compare: an ambiguous baseline exits 2 and says how to name it" test $rc -eq 2 -a -n "$(grep BACKEND:DEVICE "$tmp/err")"
"$DYNO" compare --db "$db" --baseline no-such-device 2>"$tmp/err"; rc=$?
check "compare: an unknown baseline exits 2 and names it" test $rc -eq 2 -a -n "$(grep no-such-device "$tmp/err")"
"$DYNO" compare --db "$db" 2>"$tmp/err"; rc=$?
check "compare: --baseline is required" test $rc -eq 2 -a -n "$(grep -- --baseline "$tmp/err")"

finish
