#!/usr/bin/env bash
# Decode-focused device call: conformance of the CUDA plugin, then
# Llama-3.1-8B decode at batch 1 and 64 (context 1024). Same carry as
# h100_check.sh.
source bench/cuda/common.sh
/tmp/dy/test_conformance 2>&1 | grep -v '^ok' | tail -20
python3 tests/ref/hf_check.py /tmp/dy/dyno /tmp/hf cuda 2>&1 | grep -E '^(ok|not ok)'
for args in "--batch 1 --input-len 1024 --output-len 64" "--batch 64 --input-len 1024 --output-len 64 --repeat 2"; do
    /tmp/dy/dyno run --backend cuda --model llama-3.1-8b --kv-dtype bf16 $args --db "$OUT/decode.db" \
        2>&1 | grep -E '^\| cuda|copy'
done
echo "== op profile, batch 1"
DYNO_PROFILE_OPS=1 /tmp/dy/dyno run --backend cuda --model llama-3.1-8b --kv-dtype bf16 --batch 1 \
    --input-len 1024 --output-len 32 --repeat 1 --db "$OUT/decode.db" 2>&1 | grep -A12 'op profile'
