#!/usr/bin/env bash
# The cpu backend on Llama-3.2-1B: decode at batch 1 against the copy
# bandwidth dyno measures, and prefill against the measured GEMM rate.
# Prints the run's summary table and the ceilings it was measured against.
#   bench/llm_cpu.sh [build dir]
set -eu
build=${1:-build}
db=$(mktemp -d)/bench.db
"$build/dyno" run --backend cpu --model llama-3.2-1b --batch 1 --input-len 128 --output-len 32 \
    --warmup 1 --repeat 3 --db "$db" --tag bench-llm-cpu
python3 - "$db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
for name, copy, gemm, ttft, tpot, wb, kvb, bw, fl in db.execute(
        "select d.name, d.copy_gbps, d.gemm_tflops, p.ttft_ms, p.tpot_ms_p50, p.weight_bytes,"
        " p.kv_bytes, p.bw_util, p.flop_util from points p join devices d on d.id = p.device_id"):
    print(f"device {name}: copy {copy:.1f} GB/s, f32 GEMM {gemm * 1e3:.1f} GFLOP/s")
    print(f"decode step p50 {tpot:.1f} ms over {wb / 1e9:.2f} GB of weights: "
          f"{wb / tpot / 1e6:.1f} GB/s, bw_util {bw:.2f} of copy")
    print(f"prefill 128 tokens {ttft:.0f} ms: flop_util {fl:.2f} of the measured GEMM rate")
PY
