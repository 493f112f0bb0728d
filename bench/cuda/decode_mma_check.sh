#!/usr/bin/env bash
# Decode attention over bf16 caches on the tensor cores (cuda_decode.cu's
# decode_mma_kernel) against the CUDA-core kernel (DYNO_CUDA_DECODE_MMA=0)
# in one call: conformance each way, compute-sanitizer memcheck, greedy
# tokens with a bf16 cache beside the cpu backend's (head dims 64 and 128),
# kv_bench's decode attention alone (MODES: values of DYNO_CUDA_DECODE_MMA,
# e.g. warps and stages), then Llama-3.1-8B at batch 64, input = output = 1,024, and
# at batch 1 after 1,024 tokens, E2E_MODES interleaved ROUNDS times
# (CHECK_MODES: those checked). Carry:
# .carry/dyno-bin.tar.xz (pack.sh) and .carry/kv_bench (pack_bench.sh
# kv_bench, then pack.sh).
source bench/cuda/common.sh
MODES=${MODES:-"1 0"} ROUNDS=${ROUNDS:-2}
E2E_MODES=${E2E_MODES:-$MODES} CHECK_MODES=${CHECK_MODES:-$MODES}
to() { timeout "${TO:-180}" "$@" || echo "(exit $? from $1)"; }
for m in $CHECK_MODES; do
    echo "== conformance DYNO_CUDA_DECODE_MMA=$m: $(DYNO_CUDA_DECODE_MMA=$m to /tmp/dy/test_conformance 2>&1 \
        | grep -v '^ok' | tail -4 | tr '\n' ' ')"
done
for args in "--model llama-3.2-1b --layers 2 --input-len 130 --output-len 3" \
            "--model llama-3.1-8b --layers 1 --batch 3 --input-len 300 --output-len 3"; do
    echo "memcheck $args: $(to /usr/local/cuda/bin/compute-sanitizer --tool memcheck --show-backtrace no \
        /tmp/dy/dyno run --backend cuda --kv-dtype bf16 $args --repeat 1 --warmup 0 --db /tmp/memcheck.db 2>&1 \
        | tail -1)"
done
prompt=$(seq -s, 1 200)
for model in llama-3.2-1b llama-3.1-8b; do
    for m in $CHECK_MODES cpu; do
        be=cuda; [ "$m" = cpu ] && be=cpu
        echo "generate $model $m: $(DYNO_CUDA_DECODE_MMA=$m to /tmp/dy/dyno generate --model $model --layers 4 \
            --weight-dtype bf16 --kv-dtype bf16 --backend $be --prompt "$prompt" --max-new-tokens 16 2>&1 | tail -1)"
    done
done
if [ -f .carry/kv_bench/kv_bench.xz ]; then
    xz -dc .carry/kv_bench/kv_bench.xz > /tmp/kvb && chmod +x /tmp/kvb
    for m in $MODES; do
        echo "-- kv_bench DYNO_CUDA_DECODE_MMA=$m"
        DYNO_CUDA_DECODE_MMA=$m KV_BENCH_SHAPES="${SHAPES:-64x1536,64x2048,16x4096,1x8192}" to /tmp/kvb 2>&1 \
            | grep -E '^copy|^### |^\| bf16'
    done
fi
for r in $(seq "$ROUNDS"); do
    for m in $E2E_MODES; do
        echo "== DYNO_CUDA_DECODE_MMA=$m b64: $(DYNO_CUDA_DECODE_MMA=$m to /tmp/dy/dyno run --backend cuda \
            --kv-dtype bf16 --model llama-3.1-8b --batch 64 --input-len 1024 --output-len 1024 --repeat 2 \
            --db "$OUT/mma.db" 2>&1 | grep -E '^\| cuda')"
        echo "== DYNO_CUDA_DECODE_MMA=$m b1: $(DYNO_CUDA_DECODE_MMA=$m to /tmp/dy/dyno run --backend cuda \
            --kv-dtype bf16 --model llama-3.1-8b --batch 1 --input-len 1024 --output-len 128 --repeat 3 \
            --db "$OUT/mma.db" 2>&1 | grep -E '^\| cuda')"
    done
done
