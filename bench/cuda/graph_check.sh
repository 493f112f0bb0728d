#!/usr/bin/env bash
# CUDA graphs for the decode step: greedy tokens against transformers with
# graphs on, then decode steps with graphs off (DYNO_GRAPHS=0) and on, same
# call, for a dense and an MoE model; host time beside device time shows
# the harness's own overhead. Same carry as final_check.sh.
source bench/cuda/common.sh
export LD_LIBRARY_PATH=/tmp/dy
timeout 60 /tmp/dy/test_conformance 2>&1 | grep -E '^not ok|# .* on cuda' | head -20
timeout 120 python3 tests/ref/hf_check.py /tmp/dy/dyno /tmp/hf cuda 2>&1 | grep -E '^(ok|not ok)'
for model in olmoe-1b-7b llama-3.2-1b qwen1.5-moe-a2.7b llama-3.1-8b; do
    for graphs in 0 1; do
        DYNO_GRAPHS=$graphs timeout 120 /tmp/dy/dyno run --backend cuda --kv-dtype bf16 --model $model \
            --batch 1 --input-len 512 --output-len 256 --tag graphs=$graphs --db "$OUT/graphs.db" 2>&1 | grep -E '^\| cuda'
    done
done
DYNO_GRAPHS=1 timeout 200 /tmp/dy/dyno run --backend cuda --kv-dtype bf16 --model olmoe-1b-7b,llama-3.1-8b \
    --batch 64 --input-len 1024 --output-len 128 --repeat 1 --tag graphs=1 --db "$OUT/graphs.db" 2>&1 | grep -E '^\| cuda'
python3 - "$OUT/graphs.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
print('model | batch | graphs | tpot p50 ms | e2e ms (device) | e2e ms (host) | host/device')
for r in db.execute("select model, batch, tag, tpot_ms_p50, e2e_ms, host_e2e_ms from points order by id"):
    print(" | ".join(str(v) for v in r) + (" | %.3f" % (r[5] / r[4]) if r[4] else ""))
PY
