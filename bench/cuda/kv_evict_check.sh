#!/usr/bin/env bash
# KV-cache dtypes and eviction on the lent card: Llama-3.1-8B decode with
# bf16, fp8 and int8 caches, and with paged/streaming eviction to a quarter
# of the context, batch 64 after 2,048-token prompts; fidelity (token
# agreement, KL against the f32 unevicted reference) comes with each lossy
# point. Same carry as final_check.sh (bench/cuda/pack.sh).
source bench/cuda/common.sh
export LD_LIBRARY_PATH=/tmp/dy
timeout 120 /tmp/dy/test_conformance 2>&1 | grep -E '^not ok|on cuda' | head -20
timeout 120 python3 tests/ref/hf_check.py /tmp/dy/dyno /tmp/hf cuda 2>&1 | grep -E '^(ok|not ok)'
run() { timeout 240 /tmp/dy/dyno run --backend cuda --model llama-3.1-8b --warmup 0 --repeat 1 \
            --db "$OUT/kv.db" "$@" 2>&1 | grep -E '^\| cuda|copy'; }
run --batch 64 --input-len 2048 --output-len 64 --kv-dtype bf16,fp8,int8
run --batch 64 --input-len 2048 --output-len 64 --kv-dtype bf16 --evict paged,streaming --kv-budget 512
run --batch 1 --input-len 4096 --output-len 64 --kv-dtype bf16,fp8,int8
timeout 120 /tmp/dy/dyno run --backend cuda --model olmoe-1b-7b --batch 1,64 --input-len 1024 --output-len 128 \
    --kv-dtype bf16 --repeat 1 --db "$OUT/moe.db" 2>&1 | grep -E '^\| cuda'
python3 - "$OUT/kv.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
print('batch | in | kv | evict | budget | status | tpot p50 ms | kv GB | bw_util | agreement | KL')
for r in db.execute("select batch, input_len, kv_dtype, evict, kv_budget, status, tpot_ms_p50, kv_bytes / 1e9, "
                    "bw_util, token_agreement, kl_mean, reason from points order by id"):
    print(' | '.join('-' if v is None else ('%.4g' % v if isinstance(v, float) else str(v)) for v in r))
PY
