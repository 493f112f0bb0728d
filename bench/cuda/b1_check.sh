#!/usr/bin/env bash
# The batch-1 decode step (issues 3, 7, 8): its GEMVs, norms, attention and
# the launches between them. Correctness first: the plugin's conformance
# (every op, quantized ones too, against cpu-ref), `dyno generate` against
# transformers, compute-sanitizer memcheck over generate on bf16 and MoE
# checkpoints. Then, per MODE (a space-separated list of settings, each a
# '+'-joined list of VAR=VALUE, or "default"), in one call: Llama-3.1-8B
# at batch 1 after 4,096 tokens per weight format, after 1,024 in bf16,
# Llama-3.2-1B and OLMoE-1B-7B after 1,024 (FORMATS=none: not the 4,096
# runs; MODELS: the 1,024 runs' models). E.g.
#   MODES="default DYNO_CUDA_PDL=0 DYNO_CUDA_GEMV=warp" bench/cuda/b1_check.sh
# Pack with bench/cuda/pack.sh; run with carry [".carry/dyno-bin.tar.xz"].
source bench/cuda/common.sh
rm -f /tmp/dy/libdyno-opencl.so # cuda alone beside cpu and cpu-ref
export LD_LIBRARY_PATH=/tmp/dy
set -o pipefail
timeout 90 /tmp/dy/test_conformance 2>&1 | tee "$OUT/conformance.txt" | grep -E '^not ok' | head -20
echo "conformance: $(grep -c '^ok' "$OUT/conformance.txt") ok, $(grep -c '^not ok' "$OUT/conformance.txt") not ok"
timeout 120 /tmp/dy/test_conformance_quant 2>&1 | tee "$OUT/conformance_quant.txt" | grep -E '^not ok' | head -20
echo "conformance_quant: $(grep -c '^ok' "$OUT/conformance_quant.txt") ok, $(grep -c '^not ok' "$OUT/conformance_quant.txt") not ok"
timeout 150 python3 tests/ref/hf_check.py /tmp/dy/dyno /tmp/hf cuda 2>&1 | grep -E '^(ok|not ok)'
for d in /tmp/hf/llama-bfloat16 /tmp/hf/qwen2-bfloat16 /tmp/hf/olmoe-float32; do
    echo "memcheck $(basename "$d"): $(timeout 120 /usr/local/cuda/bin/compute-sanitizer --tool memcheck \
        --show-backtrace no /tmp/dy/dyno generate --model-dir "$d" --prompt 5,17,42,7,99,3 --max-new-tokens 4 \
        --backend cuda 2>&1 | tail -1)"
done
for mode in ${MODES:-default}; do
    settings=()
    [[ $mode != default ]] && IFS=+ read -ra settings <<<"$mode"
    run() { env "${settings[@]}" timeout 240 /tmp/dy/dyno run --backend cuda --repeat 2 --tag "${mode//,/;}" \
                --db "$OUT/b1.db" "$@" 2>&1 | grep -E '^\| cuda'; }
    [[ ${FORMATS:-} != none ]] &&
        run --model llama-3.1-8b --batch 1 --input-len 4096 --output-len 64 --weight-dtype ${FORMATS:-bf16,fp8,int8,int4}
    run --kv-dtype bf16 --model ${MODELS:-llama-3.1-8b,llama-3.2-1b,olmoe-1b-7b} --batch 1 --input-len 1024 \
        --output-len 128
done
python3 - "$OUT/b1.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
rows = db.execute("select model, input_len, weight_dtype, tag, status, tpot_ms_p50, bw_util, kl_mean, energy_j,"
                  " avg_power_w from points order by model, input_len, weight_dtype, id").fetchall()
bf16 = {(r[0], r[1], r[3]): r[5] for r in rows if r[2] in ("bf16", None, "") and r[5]}
print("| model | context | weights | mode | tpot p50 ms | tok/s | × bf16 (same mode) | bw_util | KL | J a run | W |")
print("|---|--:|---|---|--:|--:|--:|--:|--:|--:|--:|")
for m, n, w, tag, st, tpot, bw, kl, joules, watts in rows:
    f = lambda x, p=3: "" if x is None else f"{x:.{p}g}"
    base = bf16.get((m, n, tag))
    print(f"| {m} | {n} | {w} | {tag} {'' if st == 'ok' else st} | {f(tpot, 4)} | {f(1e3 / tpot if tpot else None, 4)} |"
          f" {f(base / tpot if base and tpot else None)} | {f(bw)} | {f(kl)} | {f(joules)} | {f(watts)} |")
PY
