#!/usr/bin/env bash
# Hopper's short-sequence prefill kernel (flash_short_kernel: head dim 64,
# at most 208 keys, e.g. a ViT's 197 tokens) on the lent card, against the
# cp.async wgmma kernel (DYNO_CUDA_FLASH_WGMMA=1) in the same call:
# conformance each way, compute-sanitizer memcheck (a bf16 ViT, a causal
# GQA prefill of 130 tokens), greedy tokens after a 150-token prompt beside
# the cpu backend, PyTorch's SDPA on ViT-L/16's shape, the kernel's per-call
# time from the op profile at ViT-L/16 and ViT-B/16 b256 (and the norms',
# with DYNO_CUDA_NORM_WARP=0 beside), then images/s,
# the modes interleaved twice, beside timm (eager). Each step has a time
# limit (TO seconds).
source bench/cuda/common.sh
MODES=${MODES:-"2 1"}
to() { timeout "${TO:-150}" "$@" || echo "(exit $? from $1)"; }
for m in $MODES; do
    echo "== conformance, DYNO_CUDA_FLASH_WGMMA=$m"
    DYNO_CUDA_FLASH_WGMMA=$m to /tmp/dy/test_conformance 2>&1 | grep -v '^ok' | tail -12
done
for args in "--workload vit --model tiny-vit --weight-dtype bf16 --batch 3" \
            "--model llama-3.2-1b --layers 2 --input-len 130 --output-len 2"; do
    echo "memcheck $args: $(to /usr/local/cuda/bin/compute-sanitizer --tool memcheck --show-backtrace no \
        /tmp/dy/dyno run --backend cuda $args --repeat 1 --warmup 0 --db /tmp/memcheck.db 2>&1 | tail -1)"
done
prompt=$(seq -s, 1 150)
for b in $MODES cpu; do
    be=cuda; [ "$b" = cpu ] && be=cpu
    echo "generate $b: $(DYNO_CUDA_FLASH_WGMMA=$b to /tmp/dy/dyno generate --model llama-3.2-1b --layers 4 \
        --weight-dtype bf16 --backend $be --prompt "$prompt" --max-new-tokens 12 2>&1 | tail -1)"
done
to python3 bench/cuda/sdpa_peer.py 2>&1 | grep sdpa
run() { to /tmp/dy/dyno run --backend cuda --workload vit --batch 256 --weight-dtype bf16 --db "$OUT/short.db" "$@"; }
for m in $MODES; do
    for model in vit-l16 vit-b16; do
        echo "== wgmma=$m $model b256: $(DYNO_CUDA_FLASH_WGMMA=$m DYNO_PROFILE_OPS=1 run --model $model \
            --repeat 2 2>&1 | grep -E 'attention_prefill|norm' | tr -s ' ' | tr '\n' ';')"
    done
done
# the norms a block a row instead of a warp a row
echo "== DYNO_CUDA_NORM_WARP=0 vit-l16 b256: $(DYNO_CUDA_NORM_WARP=0 DYNO_PROFILE_OPS=1 run --model vit-l16 \
    --repeat 2 2>&1 | grep -E 'norm' | tr -s ' ')"
for rep in 1 2; do
    for m in $MODES; do
        echo "== wgmma=$m vit-l16 b256 ($rep)"
        DYNO_CUDA_FLASH_WGMMA=$m run --model vit-l16 --repeat 5 2>&1 | grep -E '^\| cuda'
    done
done
to python3 bench/cuda/vit_peer.py 2>&1 | grep -v Warning | tail -1
