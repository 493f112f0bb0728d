#!/usr/bin/env bash
# Builds of the CUDA plugin A/B'd on decode in one device call. Each build
# is carried as .carry/ab/NAME.so.xz (`bench/cuda/plugin_ab.sh --save NAME`
# after building it); dyno, test_conformance and kv_bench come from
# .carry/kv_bench (pack_bench.sh kv_bench, kv_bench then xz'd). For every
# build (BUILDS, default all): conformance; greedy tokens beside the cpu
# backend's (Llama-3.2-1B and Llama-3.1-8B, 4 layers, 200-token prompt,
# KVS cache dtypes); then, builds interleaved ROUNDS times: kv_bench
# (SHAPES) and Llama-3.1-8B at batch 64, input = output = 1,024, and at
# batch 1 after 1,024 tokens (E2E=0 skips). MEMCHECK names the builds run
# under compute-sanitizer.
source bench/cuda/ab_common.sh .carry/kv_bench/dyno-bin.tar.xz
rm -f /tmp/dy/libdyno-opencl.so # cuda alone beside cpu and cpu-ref
xz -dc .carry/kv_bench/kv_bench.xz > /tmp/dy/kv_bench && chmod +x /tmp/dy/kv_bench
KVS=${KVS:-"bf16 fp8 int8"}
for n in $BUILDS; do
    use "$n"
    echo "== conformance $n: $(to /tmp/dy/test_conformance 2>&1 | grep -v '^ok' | tail -3 | tr '\n' ' ')"
done
for n in ${MEMCHECK:-}; do
    use "$n"
    for args in "--model llama-3.2-1b --layers 2 --input-len 130 --output-len 3" \
                "--model llama-3.1-8b --layers 1 --batch 3 --input-len 300 --output-len 3 --kv-dtype int8"; do
        echo "memcheck $n $args: $(to /usr/local/cuda/bin/compute-sanitizer --tool memcheck --show-backtrace no \
            /tmp/dy/dyno run --backend cuda $args --repeat 1 --warmup 0 --db /tmp/memcheck.db 2>&1 | tail -1)"
    done
done
prompt=$(seq -s, 1 200)
for model in llama-3.2-1b llama-3.1-8b; do
    for kv in $KVS; do
        for n in $BUILDS cpu; do
            be=cuda; [ "$n" = cpu ] && be=cpu || use "$n"
            echo "generate $model $kv $n: $(to /tmp/dy/dyno generate --model $model --layers 4 --weight-dtype bf16 \
                --kv-dtype $kv --backend $be --prompt "$prompt" --max-new-tokens 16 2>&1 | tail -1)"
        done
    done
done
for r in $(seq "$ROUNDS"); do
    for n in $BUILDS; do
        use "$n"
        echo "-- kv_bench $n"
        KV_BENCH_SHAPES="${SHAPES:-64x1536,64x2048,16x4096,1x8192}" to /tmp/dy/kv_bench 2>&1 \
            | grep -E '^copy|^### |^\| (bf16|fp8|int8)'
    done
done
[ "${E2E:-1}" = 1 ] && for r in $(seq "$ROUNDS"); do
    for n in $BUILDS; do
        use "$n"
        echo "== $n b64: $(to /tmp/dy/dyno run --backend cuda --kv-dtype bf16 --model llama-3.1-8b --batch 64 \
            --input-len 1024 --output-len 1024 --repeat 2 --db "$OUT/ab.db" 2>&1 | grep -E '^\| cuda')"
        echo "== $n b1: $(to /tmp/dy/dyno run --backend cuda --kv-dtype bf16 --model llama-3.1-8b --batch 1 \
            --input-len 1024 --output-len 128 --repeat 3 --db "$OUT/ab.db" 2>&1 | grep -E '^\| cuda')"
    done
done
exit 0
