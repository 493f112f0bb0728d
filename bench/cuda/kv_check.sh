#!/usr/bin/env bash
# The KV-cache dtypes on the lent card: the conformance suite against
# cpu-ref (the cuda lines are this backend's; kv_append, attention_decode
# and kv_block_scores cover fp8 and int8), then bench/cuda/kv_bench.c
# (decode attention per cache dtype against the copy bandwidth), then
# Llama-3.1-8B end to end at batch 64 x 2048 per KV dtype (tpot, kv_bytes
# from the point database; the fp8/int8 points also run the harness's
# fidelity pass over their first 8 sequences).
# Last, the fp8 decode kernel's machine code. Pack first with
# bench/cuda/pack_bench.sh kv_bench; run with carry [".carry/kv_bench"].
cp .carry/kv_bench/dyno-bin.tar.xz .carry/dyno-bin.tar.xz
source bench/cuda/common.sh
rm -f /tmp/dy/libdyno-opencl.so # cuda alone beside cpu and cpu-ref
set -o pipefail
timeout 100 /tmp/dy/test_conformance 2>&1 | tee "$OUT/conformance.txt" | grep -v '^ok'
echo "conformance: $(grep -c '^ok' "$OUT/conformance.txt") ok"
timeout 120 .carry/kv_bench/kv_bench 2>&1 | tee "$OUT/kv_bench.txt"
timeout 200 /tmp/dy/dyno run --backend cuda --model llama-3.1-8b --batch 64 --input-len 2048 --output-len 64 \
    --kv-dtype bf16,fp8,int8 --repeat 1 --db "$OUT/kv.db" 2>&1 | tee "$OUT/e2e.txt" | grep -E '^\| (cuda|backend)'
python3 - "$OUT/kv.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
print("| tag | batch | kv | status | ttft ms | tpot p50 ms | kv GB | step GB | bw util |")
print("|---|--:|---|---|--:|--:|--:|--:|--:|")
for r in db.execute("select tag, batch, kv_dtype, status, ttft_ms, tpot_ms_p50, kv_bytes, step_bytes, bw_util"
                    " from points order by id"):
    f = lambda x: "" if x is None else f"{x:.3g}" if isinstance(x, float) else f"{x / 1e9:.2f}"
    print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {f(r[4])} | {f(r[5])} | {f(r[6])} | {f(r[7])} | {f(r[8])} |")
PY
# the fp8 kernel's machine code at Llama's shape, where cuobjdump is there
if command -v cuobjdump >/dev/null; then
    cuobjdump -arch sm_90 -sass /tmp/dy/libdyno-cuda.so 2>/dev/null | awk '/Function : .*decode_fast_kernel.*Li128ELi8ELi4EL8dy_dtype4E/{p=1} p&&/Function : /&&!/Li128ELi8ELi4EL8dy_dtype4E/{p=0} p' >"$OUT/decode_fp8.sass"
    echo "sass lines: $(wc -l <"$OUT/decode_fp8.sass")"
fi
