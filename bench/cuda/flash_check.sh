#!/usr/bin/env bash
# The register-resident (mma.sync) flash prefill kernel on the lent card:
# conformance, TTFT of Llama-3.1-8B at 16 x 1024 and 4 x 4096 with the
# attention's share from the op profile, ViT-L/16 at batch 256 beside timm.
source bench/cuda/common.sh
/tmp/dy/test_conformance 2>&1 | grep -v '^ok'
run() { /tmp/dy/dyno run --backend cuda --kv-dtype bf16 --db "$OUT/flash.db" "$@"; }
for args in "--batch 16 --input-len 1024" "--batch 4 --input-len 4096"; do
    DYNO_PROFILE_OPS=1 run --model llama-3.1-8b $args --output-len 1 --repeat 2 2>&1 | grep -E 'attention_prefill|^gemm'
    run --model llama-3.1-8b $args --output-len 1 --repeat 3 2>&1 | grep -E '^\| cuda'
done
run --workload vit --model vit-l16 --batch 256 --weight-dtype bf16 --repeat 5 2>&1 | grep -E '^\| cuda'
python3 bench/cuda/vit_peer.py 2>&1 | grep -v Warning | tail -1
