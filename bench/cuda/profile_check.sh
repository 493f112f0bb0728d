#!/usr/bin/env bash
# Per-op device time (DYNO_PROFILE_OPS=1) of Llama-3.1-8B on the CUDA
# backend: decode at batch 1 and 64 and the batch-16 prefill. Same carry as
# h100_check.sh.
source bench/cuda/common.sh
for args in "--batch 1 --input-len 1024 --output-len 64" "--batch 64 --input-len 1024 --output-len 32 --repeat 1" \
            "--batch 16 --input-len 1024 --output-len 1 --repeat 2"; do
    echo "== $args"
    DYNO_PROFILE_OPS=1 /tmp/dy/dyno run --backend cuda --model llama-3.1-8b --kv-dtype bf16 $args \
        --warmup 1 --db "$OUT/profile.db" 2>&1 | grep -vE '^dyno: (\[|measuring)|^$|^\|--|points? stored'
done
