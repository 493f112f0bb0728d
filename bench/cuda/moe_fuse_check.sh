#!/usr/bin/env bash
# A decode step's MoE ops in fewer launches (issue 7): conformance (every
# op, the fused parts included, against cpu-ref), `generate` against
# transformers, memcheck over MoE generates; then OLMoE-1B-7B and
# Qwen1.5-MoE-A2.7B steps with the fusions on and off, interleaved
# (MODES as in b1_check.sh, e.g. DYNO_CUDA_MOE_FUSE=0 or a mask of its
# bits; ROUNDS, BATCHES), and the kernels of one OLMoE step under ncu.
# Pack with bench/cuda/pack.sh; run with carry [".carry/dyno-bin.tar.xz"].
source bench/cuda/common.sh
rm -f /tmp/dy/libdyno-opencl.so
export LD_LIBRARY_PATH=/tmp/dy
set -o pipefail
timeout 120 /tmp/dy/test_conformance 2>&1 | tee "$OUT/conformance.txt" | grep -E '^not ok|^# ' | head -20
echo "conformance: $(grep -c '^ok' "$OUT/conformance.txt") ok, $(grep -c '^not ok' "$OUT/conformance.txt") not ok"
timeout 120 /tmp/dy/test_conformance_quant 2>&1 | tee "$OUT/conformance_quant.txt" | grep -E '^not ok|^# ' | head -20
echo "conformance_quant: $(grep -c '^ok' "$OUT/conformance_quant.txt") ok, $(grep -c '^not ok' "$OUT/conformance_quant.txt") not ok"
timeout 150 python3 tests/ref/hf_check.py /tmp/dy/dyno /tmp/hf cuda 2>&1 | grep -E '^(ok|not ok)'
for d in /tmp/hf/olmoe-float32 /tmp/hf/qwen2_moe-float32; do
    [[ -d $d ]] || continue
    echo "memcheck $(basename "$d"): $(timeout 120 /usr/local/cuda/bin/compute-sanitizer --tool memcheck \
        --show-backtrace no /tmp/dy/dyno generate --model-dir "$d" --prompt 5,17,42,7,99,3 --max-new-tokens 4 \
        --backend cuda 2>&1 | tail -1)"
done
for round in ${ROUNDS:-1 2}; do
    for mode in ${MODES:-default DYNO_CUDA_MOE_FUSE=0}; do
        settings=()
        [[ $mode != default ]] && IFS=+ read -ra settings <<<"$mode"
        env "${settings[@]}" timeout 240 /tmp/dy/dyno run --backend cuda --repeat 2 --tag "$mode" --db "$OUT/b1.db" \
            --kv-dtype bf16 --model olmoe-1b-7b,qwen1.5-moe-a2.7b --batch ${BATCHES:-1,8} --input-len 1024 \
            --output-len 128 2>&1 | grep -E '^\| cuda' | cut -d'|' -f4,5,7,12,13,14,16
    done
done
DYNO_GRAPHS=0 timeout 200 /usr/local/cuda/bin/ncu --clock-control none --metrics gpu__time_duration.sum --csv \
    /tmp/dy/dyno run --backend cuda --model olmoe-1b-7b --kv-dtype bf16 --batch 1 --input-len 1000 \
    --output-len 3 --warmup 0 --repeat 1 --db "$OUT/ncu.db" > "$OUT/ncu.csv" 2> "$OUT/ncu.err"
python3 - "$OUT/ncu.csv" <<'PY'
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
hdr = rows[0]; rows = rows[1:]
ki, vi = hdr.index("Kernel Name"), hdr.index("Metric Value")
ks = [(r[ki].split("(")[0].split("<")[0].replace("void ", ""), float(r[vi].replace(",", "")) / 1e3) for r in rows]
starts = [i for i, (n, _) in enumerate(ks) if "gather" in n]
step = ks[starts[-1]:]
print(f"last step: {len(step)} kernels, {sum(t for _, t in step):.1f} us summed alone; first layer:")
for n, us in step[:16]:
    print(f"  {n[:50]:50s} {us:8.2f} us")
PY
