#!/usr/bin/env bash
# The flash prefill kernel on the lent card: conformance, PyTorch SDPA on
# the same shapes (sdpa_peer.py), the kernel's per-call time from the op
# profile at Llama-3.1-8B 16 x 1024 and 4 x 4096 and the TTFT there,
# ViT-L/16 at batch 256 with its op profile, beside timm; compute-sanitizer
# memcheck over a bf16 prefill and a ViT forward first.
source bench/cuda/common.sh
/tmp/dy/test_conformance 2>&1 | grep -v '^ok'
/tmp/dy/test_conformance_quant 2>&1 | grep -v '^ok'
# compute-sanitizer over the bf16-activation prefill (row kernels past 64
# tokens) and a ViT forward
for args in "--model tiny-llama --batch 2 --input-len 130 --output-len 2" "--workload vit --model tiny-vit --batch 3"; do
    echo "memcheck $args: $(/usr/local/cuda/bin/compute-sanitizer --tool memcheck --show-backtrace no \
        /tmp/dy/dyno run --backend cuda $args --repeat 1 --warmup 0 --db /tmp/memcheck.db 2>&1 | tail -1)"
done
python3 bench/cuda/sdpa_peer.py 2>&1 | grep sdpa
run() { /tmp/dy/dyno run --backend cuda --kv-dtype bf16 --db "$OUT/flash.db" "$@"; }
for args in "--batch 16 --input-len 1024" "--batch 4 --input-len 4096"; do
    echo "== $args"
    DYNO_PROFILE_OPS=1 run --model llama-3.1-8b $args --output-len 1 --repeat 2 2>&1 | grep -E 'op profile|attention_prefill|^gemm|^norm|^rope|^eltwise|^kv_append'
    run --model llama-3.1-8b $args --output-len 1 --repeat 3 2>&1 | grep -E '^\| cuda'
done
echo "== vit-l16 b256"
DYNO_PROFILE_OPS=1 run --workload vit --model vit-l16 --batch 256 --weight-dtype bf16 --repeat 2 2>&1 | grep -vE '^dyno: (\[|measuring)|^$|^\|--|points? stored'
run --workload vit --model vit-l16 --batch 256 --weight-dtype bf16 --repeat 5 2>&1 | grep -E '^\| cuda'
python3 bench/cuda/vit_peer.py 2>&1 | grep -v Warning | tail -1
