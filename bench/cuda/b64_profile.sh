#!/usr/bin/env bash
# Where a Llama-3.1-8B decode step at batch 64 goes (issue 3's batch-64
# point, input = output = 1,024): the op profile (DYNO_PROFILE_OPS=1, CUDA
# graphs off, an event around each op) of the prefill alone (output 1) and
# of the prefill with STEPS decode steps after it, so that the difference
# over STEPS is one step's ops; then the point itself with graphs, as
# `dyno run` reports it. Same carry as h100_check.sh (pack.sh).
source bench/cuda/common.sh
STEPS=${STEPS:-128}
run() { /tmp/dy/dyno run --backend cuda --model llama-3.1-8b --kv-dtype bf16 --batch 64 --input-len 1024 \
    --warmup 0 --repeat 1 --db "$OUT/b64.db" "$@" 2>&1; }
echo "== prefill alone"
DYNO_PROFILE_OPS=1 run --output-len 1 | grep -E '^[a-z_]+ +[0-9]+ '
echo "== prefill + $STEPS steps"
DYNO_PROFILE_OPS=1 run --output-len $((STEPS + 1)) | grep -E '^[a-z_]+ +[0-9]+ '
echo "== the point, graphs on"
/tmp/dy/dyno run --backend cuda --model llama-3.1-8b --kv-dtype bf16 --batch 64 --input-len 1024 \
    --output-len 1024 --repeat 2 --db "$OUT/b64.db" 2>&1 | grep -E '^\| (backend|cuda)'
