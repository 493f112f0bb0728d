#!/usr/bin/env bash
# ViT on the lent card: the conformance suite on CUDA (after the HIP port
# touched its sources), ViT-L/16 at 224 px, bf16, batch 256 through dyno and
# through timm (eager) in the same call.
source bench/cuda/common.sh
/tmp/dy/test_conformance 2>&1 | grep -v '^ok'
/tmp/dy/dyno generate --model tiny-llama --prompt 1,2,3,4 --max-new-tokens 8 --backend cuda
/tmp/dy/dyno run --backend cuda --workload vit --model vit-l16 --batch 256 --weight-dtype bf16 \
    --repeat 5 --db "$OUT/vit.db" 2>&1 | grep -E '^\| cuda|copy'
python3 bench/cuda/vit_peer.py 2>&1 | grep -v Warning | tail -2
