#!/usr/bin/env bash
# Issue 8's eviction point: Llama-3.1-8B, batch 64 after 8,192-token
# prompts (prefilled a few sequences per pass), fp8 KV cache so that the
# unevicted baseline fits 80 GB, with and without --evict paged --kv-budget
# 1024. Same carry as final_check.sh.
source bench/cuda/common.sh
export LD_LIBRARY_PATH=/tmp/dy
run() { timeout 280 /tmp/dy/dyno run --backend cuda --model llama-3.1-8b --batch 64 --input-len 8192 \
            --output-len 32 --kv-dtype fp8 --warmup 0 --repeat 1 --db "$OUT/evict8k.db" "$@" 2>&1 \
            | grep -E '^\| cuda|copy'; }
run
run --evict paged --kv-budget 1024
python3 - "$OUT/evict8k.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
for r in db.execute("select evict, kv_budget, status, ttft_ms, tpot_ms_p50, kv_bytes / 1e9, bw_util, token_agreement, kl_mean, reason from points order by id"):
    print(' | '.join('-' if v is None else ('%.4g' % v if isinstance(v, float) else str(v)) for v in r))
PY
