#!/usr/bin/env bash
# Quantized weights end to end on the lent card (issue 8): the quantized
# ops against cpu-ref (test_conformance_quant; the cuda lines are this
# backend's), then Llama-3.1-8B decode at batch 1 after a 4,096-token prompt
# per weight format (step time, speed-up over bf16, weight bytes, bw_util
# over the bytes a step reads, fidelity against the bf16 weights over 63
# teacher-forced steps), then OLMoE-1B-7B with int4 and MoPEQ experts.
# Pack with bench/cuda/pack.sh; run with carry [".carry"].
source bench/cuda/common.sh
rm -f /tmp/dy/libdyno-opencl.so # cuda alone beside cpu and cpu-ref
set -o pipefail
timeout 150 /tmp/dy/test_conformance_quant 2>&1 | tee "$OUT/conformance_quant.txt" | grep -v '^ok'
echo "conformance_quant: $(grep -c '^ok' "$OUT/conformance_quant.txt") ok"
timeout 300 /tmp/dy/dyno run --backend cuda --model llama-3.1-8b --batch 1 --input-len 4096 --output-len 64 \
    --weight-dtype ${FORMATS:-bf16,fp8,int8,int4,int4-asym} --repeat 2 --db "$OUT/quant.db" 2>&1 |
    tee "$OUT/e2e.txt" | grep -E '^\| (cuda|backend)'
timeout 200 /tmp/dy/dyno run --backend cuda --model olmoe-1b-7b --batch 1 --input-len 1024 --output-len 64 \
    --weight-dtype bf16,int4,mopeq:3,mopeq:2.5 --repeat 2 --db "$OUT/quant.db" 2>&1 | tee -a "$OUT/e2e.txt" |
    grep -E '^\| (cuda|backend)'
python3 - "$OUT/quant.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
rows = db.execute("select model, weight_dtype, status, reason, tpot_ms_p50, ttft_ms, weight_bytes, step_bytes,"
                  " bw_util, token_agreement, kl_mean from points order by id").fetchall()
base = {r[0]: r[4] for r in rows if r[1] == "bf16" and r[4]}
print("| model | weights | status | tpot p50 ms | × bf16 | tok/s | ttft ms | weight GB | step GB | bw util | agree | KL |")
print("|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
for m, w, st, why, tpot, ttft, wb, sb, bw, agree, kl in rows:
    f = lambda x, p=3: "" if x is None else f"{x:.{p}g}"
    up = f(base[m] / tpot) if tpot and m in base else ""
    print(f"| {m} | {w} | {st} {why or ''} | {f(tpot)} | {up} | {f(1e3 / tpot if tpot else None, 4)} |"
          f" {f(ttft, 4)} | {f(wb / 1e9 if wb else None)} | {f(sb / 1e9 if sb else None)} | {f(bw)} | {f(agree)} | {f(kl)} |")
PY
