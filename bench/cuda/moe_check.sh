#!/usr/bin/env bash
# The MoE workload on the lent card: greedy tokens against transformers on
# MoE checkpoints it saved, then OLMoE-1B-7B and Qwen1.5-MoE-A2.7B decode at
# batch 1 and 64, prefill, one MoE layer at 256 tokens x top-k and at 16 x
# 1024 tokens, the per-op profile, and transformers on the same shapes.
# Same carry as final_check.sh (bench/cuda/pack.sh, carry [".carry"]).
source bench/cuda/common.sh
export LD_LIBRARY_PATH=/tmp/dy
timeout 120 python3 tests/ref/hf_check.py /tmp/dy/dyno /tmp/hf cuda 2>&1 | grep -E '^(ok|not ok|#)' | tail -40
run() { timeout 120 /tmp/dy/dyno run --backend cuda --kv-dtype bf16 --db "$OUT/moe.db" "$@" 2>&1 | grep -E '^\| cuda|copy'; }
for model in olmoe-1b-7b qwen1.5-moe-a2.7b; do
    run --model $model --batch 1 --input-len 128 --output-len 128
    run --model $model --batch 64 --input-len 1024 --output-len 128 --repeat 1 --warmup 1
    run --model $model --batch 4 --input-len 1024 --output-len 2
    run --workload moe-layer --model $model --batch 256 --input-len 1 --repeat 20
    run --workload moe-layer --model $model --batch 16 --input-len 1024 --repeat 5
done
echo "== op profile, OLMoE batch 1"
DYNO_PROFILE_OPS=1 timeout 60 /tmp/dy/dyno run --backend cuda --model olmoe-1b-7b --kv-dtype bf16 --batch 1 \
    --input-len 128 --output-len 32 --repeat 1 --db "$OUT/moe.db" 2>&1 | grep -A18 'op profile'
(cd bench/cuda && timeout 240 python3 moe_peer.py "$DYNO_MODELS" olmoe-1b-7b qwen1.5-moe-a2.7b 2>&1 | grep -v Warning)
