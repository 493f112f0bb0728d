#!/usr/bin/env bash
# Prefill-focused device call: conformance (bf16 tensor-core attention
# included), transformers checkpoints, TTFT of Llama-3.1-8B at 16 x 1024 and
# 4 x 4096 with the per-op profile, and decode at batch 1 and 64. Same
# carry as h100_check.sh.
source bench/cuda/common.sh
/tmp/dy/test_conformance 2>&1 | grep -v '^ok' | tail -20
python3 tests/ref/hf_check.py /tmp/dy/dyno /tmp/hf cuda 2>&1 | grep -E '^(ok|not ok)'
run() { /tmp/dy/dyno run --backend cuda --model llama-3.1-8b --kv-dtype bf16 --db "$OUT/prefill.db" "$@"; }
for args in "--batch 16 --input-len 1024 --output-len 1" "--batch 4 --input-len 4096 --output-len 1"; do
    DYNO_PROFILE_OPS=1 run $args --repeat 2 2>&1 | grep -E 'attention_prefill|gemm  '
    run $args --repeat 3 2>&1 | grep -E '^\| cuda'
done
for args in "--batch 1 --input-len 1024 --output-len 64" "--batch 64 --input-len 1024 --output-len 64 --repeat 2"; do
    run $args 2>&1 | grep -E '^\| cuda'
done
run --batch 64 --input-len 1024 --output-len 1024 --repeat 1 --warmup 0 2>&1 | grep -E '^\| cuda'
