#!/usr/bin/env bash
# Builds the dashboard tests' fixture database DB: small real points on cpu
# and cpu-ref (two batches, two prompt lengths; MoPEQ weights on a dense
# model become skipped rows), a ViT LoRA sweep on both (ranks, targets,
# merged or not, a rank map), MoPEQ expert bits and per-layer KV budgets on
# cpu, then, with python3's sqlite3, a device and tag made of markup, a
# failed point with a hostile reason, and a point imported from a study.
# usage: make_fixture.sh DYNO DB
set -eu
dyno=$1
db=$2
rm -f "$db"
"$dyno" run --model tiny-llama --backend cpu,cpu-ref --batch 1,2 --input-len 16,32 --output-len 4 \
    --weight-dtype bf16,mopeq:3 --warmup 0 --repeat 2 --tag fixture --db "$db" >/dev/null 2>&1
map=$(mktemp)
trap 'rm -f "$map"' EXIT
printf '16 16\n8 8\n4 0\n0 4\n' >"$map"
"$dyno" run --workload vit --model tiny-vit --backend cpu,cpu-ref --lora-rank 0,4,16 \
    --lora-targets attn,attn+mlp --lora-merged 0,1 --warmup 0 --repeat 1 --tag fixture --db "$db" >/dev/null 2>&1
"$dyno" run --workload vit --model tiny-vit --backend cpu,cpu-ref --lora-rank-map "$map" \
    --lora-targets attn+mlp --lora-merged 0,1 --warmup 0 --repeat 1 --tag fixture --db "$db" >/dev/null 2>&1
"$dyno" run --workload moe --model tiny-moe --backend cpu --weight-dtype mopeq:3 --input-len 16 --output-len 4 \
    --warmup 0 --repeat 1 --tag fixture --db "$db" >/dev/null 2>&1
"$dyno" run --model tiny-llama --backend cpu --evict window --kv-budget 32 --kv-budget-alloc uniform,profile \
    --input-len 64 --output-len 4 --warmup 0 --repeat 1 --tag fixture --db "$db" >/dev/null 2>&1
python3 - "$db" <<'PY'
import sqlite3, sys, uuid
db = sqlite3.connect(sys.argv[1])
hostile = '<img src=x onerror=alert(1)>'
cols = [r[1] for r in db.execute('PRAGMA table_info(points)') if r[1] not in ('id', 'created_at')]
def copy(where, **changes):
    row = dict(zip(cols, db.execute('SELECT %s FROM points WHERE %s ORDER BY id LIMIT 1'
                                    % (','.join(cols), where)).fetchone()))
    row.update(changes)
    if 'uuid' in row:  # unique per point where the schema has it
        row['uuid'] = uuid.uuid4().hex
    db.execute('INSERT INTO points (%s) VALUES (%s)' % (','.join(row), ','.join('?' * len(row))),
               list(row.values()))
# an ok point on a device whose name is markup, at every cpu point's config
for (pid,) in db.execute("SELECT id FROM points WHERE backend = 'cpu' AND status = 'ok'").fetchall():
    half = db.execute('SELECT total_tok_s * 0.5 FROM points WHERE id = ?', (pid,)).fetchone()[0]
    copy('id = %d' % pid, device=hostile, tag='</script><script>alert(2)</script>\u2028x',
         total_tok_s=half)
copy("status = 'ok'", device=hostile, status='failed', reason='kernel said ' + hostile,
     ttft_ms=None, total_tok_s=None, output_tok_s=None)
copy("backend = 'cpu' AND status = 'ok'", source='llm-inference-bench', device='A100-SXM4-80GB',
     backend='vllm', device_id=None, total_tok_s=12345.0, output_tok_s=2469.0, tag='imported',
     bw_util=None, flop_util=None, peak_mem_bytes=None, weight_bytes=None, kv_bytes=None)
db.commit()
PY
