#!/usr/bin/env bash
# The integrated build on the lent card: CUDA and NVIDIA's OpenCL through the
# conformance suite, the default backend, Llama-3.2-1B decode on both
# backends and Llama-3.1-8B at batch 64 with input = output = 1024.
source bench/cuda/common.sh
export LD_LIBRARY_PATH=/tmp/dy OCL_ICD_FILENAMES=libnvidia-opencl.so.1
/tmp/dy/dyno devices
/tmp/dy/test_conformance 2>&1 | grep -v '^ok'
run() { /tmp/dy/dyno run --kv-dtype bf16 --db "$OUT/final.db" "$@" 2>&1 | grep -E '^\| (cuda|opencl)|copy'; }
run --backend cuda,opencl --model llama-3.2-1b --batch 1 --input-len 128 --output-len 64
run --backend auto --model llama-3.1-8b --batch 64 --input-len 1024 --output-len 1024 --repeat 1 --warmup 0
