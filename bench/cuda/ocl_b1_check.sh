#!/usr/bin/env bash
# Llama-3.2-1B at batch 1 through NVIDIA's OpenCL driver on the lent card
# (issue 4), beside the CUDA backend in the same call: the conformance
# suite on that driver first (GPU kernels, gemv_old with its SwiGLU), then
# the step once per MODE (a space-separated list of settings, each a
# '+'-joined list of VAR=VALUE, or "default"), e.g.
#   MODES="DYNO_OCL_SWIGLU_GEMV=0 default" bench/cuda/ocl_b1_check.sh
# Pack with bench/cuda/pack.sh; run with carry [".carry/dyno-bin.tar.xz"].
source bench/cuda/common.sh
export LD_LIBRARY_PATH=/tmp/dy OCL_ICD_FILENAMES=libnvidia-opencl.so.1
timeout 120 /tmp/dy/test_conformance 2>&1 | tee "$OUT/conformance.txt" | grep -E '^not ok|^# b' | head -20
echo "conformance: $(grep -c '^ok' "$OUT/conformance.txt") ok, $(grep -c '^not ok' "$OUT/conformance.txt") not ok"
for mode in ${MODES:-default}; do
    settings=()
    [[ $mode != default ]] && IFS=+ read -ra settings <<<"$mode"
    echo "== $mode"
    env "${settings[@]}" timeout 240 /tmp/dy/dyno run --backend opencl,cuda --kv-dtype bf16 --model llama-3.2-1b \
        --batch 1 --input-len 128 --output-len 64 --tag "$mode" --db "$OUT/ocl.db" 2>&1 | grep -E '^\| (cuda|opencl)|copy'
done
