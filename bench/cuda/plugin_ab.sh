#!/usr/bin/env bash
# Two or more builds of the CUDA plugin A/B'd in one device call. Each build
# is carried as .carry/ab/NAME.so.xz (made here by
# `bench/cuda/plugin_ab.sh --save NAME [BUILD_DIR]` after building it); the
# rest (dyno, tests, attn_bench) comes from .carry/attn_bench (pack_bench.sh
# attn_bench). On the device machine, `bench/cuda/plugin_ab.sh` runs, for
# every build: conformance; then, builds interleaved ROUNDS times: the
# attention kernels alone (attn_bench) and, with E2E=1, Llama-3.1-8B TTFT at
# 16 x 1,024 and 4 x 4,096 and ViT-L/16 b256 images/s; with GEN=1 greedy
# tokens of each build beside the cpu backend's; then PyTorch's SDPA and
# timm (eager) on the same shapes. MEMCHECK names the builds run under compute-sanitizer
# (a ViT, a causal GQA prefill at head dims 64 and 128, one 8B layer over
# 2 x 700 tokens); SASS names the builds whose flash_ws and flash_short
# kernels' machine code comes back as sass_NAME.txt. Each step has a time limit (TO seconds).
set -u
if [ "${1:-}" = --save ]; then
    b=${3:-build}
    mkdir -p .carry/ab
    strip -o ".carry/ab/$2.so" "$b/backends/cuda/libdyno-cuda.so"
    xz -f -T0 ".carry/ab/$2.so"
    ls -la ".carry/ab/$2.so.xz"
    exit 0
fi
source bench/cuda/ab_common.sh .carry/attn_bench/dyno-bin.tar.xz
rm -f /tmp/dy/libdyno-opencl.so # cuda alone beside cpu and cpu-ref
ab=.carry/attn_bench/attn_bench
[ -f $ab.xz ] && { xz -dc $ab.xz > /tmp/dy/attn_bench; chmod +x /tmp/dy/attn_bench; ab=/tmp/dy/attn_bench; }
MEMCHECK=${MEMCHECK:-}
for n in ${SASS:-}; do
    cuobjdump -sass "/tmp/ab/$n/libdyno-cuda.so" | awk '/Function : .*flash_(ws|short)/{f=1} /Function : /&&!/flash_(ws|short)/{f=0} f' \
        > "$OUT/sass_$n.txt"
    echo "SASS $n: $(wc -l < "$OUT/sass_$n.txt") lines"
done
for n in $BUILDS; do
    use "$n"
    echo "== conformance $n: $(to /tmp/dy/test_conformance 2>&1 | grep -v '^ok' | tail -3 | tr '\n' ' ')"
done
for n in $MEMCHECK; do
    use "$n"
    for args in "--workload vit --model tiny-vit --weight-dtype bf16 --batch 3" \
                "--model llama-3.2-1b --layers 2 --input-len 130 --output-len 2" \
                "--model llama-3.1-8b --layers 1 --batch 2 --input-len 700 --output-len 2"; do
        echo "memcheck $n $args: $(to /usr/local/cuda/bin/compute-sanitizer --tool memcheck --show-backtrace no \
            /tmp/dy/dyno run --backend cuda --kv-dtype bf16 $args --repeat 1 --warmup 0 --db /tmp/memcheck.db 2>&1 \
            | tail -1)"
    done
done
for r in $(seq "$ROUNDS"); do
    for n in $BUILDS; do
        use "$n"
        echo "-- attn_bench $n: $(to $ab | grep attention | sed 's/attention //' \
            | tr '\n' ';')"
    done
done
if [ "${E2E:-0}" = 1 ]; then
    for r in $(seq "$ROUNDS"); do
        for n in $BUILDS; do
            use "$n"
            echo "== $n TTFT 8b 16 x 1024: $(to /tmp/dy/dyno run --backend cuda --kv-dtype bf16 --db "$OUT/ab.db" \
                --model llama-3.1-8b --batch 16 --input-len 1024 --output-len 1 --repeat 3 2>&1 | grep -E '^\| cuda')"
            echo "== $n TTFT 8b 4 x 4096: $(to /tmp/dy/dyno run --backend cuda --kv-dtype bf16 --db "$OUT/ab.db" \
                --model llama-3.1-8b --batch 4 --input-len 4096 --output-len 1 --repeat 3 2>&1 | grep -E '^\| cuda')"
            echo "== $n vit-l16 b256: $(to /tmp/dy/dyno run --backend cuda --db "$OUT/ab.db" --workload vit \
                --model vit-l16 --batch 256 --weight-dtype bf16 --repeat 5 2>&1 | grep -E '^\| cuda')"
        done
    done
fi
# greedy tokens after a 300-token prompt through 4 layers of Llama-3.1-8B
# (head dim 128, bf16): each build on cuda beside the cpu backend
if [ "${GEN:-0}" = 1 ]; then
    prompt=$(seq -s, 1 300)
    for n in $BUILDS cpu; do
        be=cuda; [ "$n" = cpu ] && be=cpu || use "$n"
        echo "generate $n: $(to /tmp/dy/dyno generate --model llama-3.1-8b --layers 4 --weight-dtype bf16 \
            --backend $be --prompt "$prompt" --max-new-tokens 12 2>&1 | tail -1)"
    done
fi
to python3 bench/cuda/sdpa_peer.py 2>&1 | grep sdpa
[ "${E2E:-0}" = 1 ] && to python3 bench/cuda/vit_peer.py 2>&1 | grep -v Warning | tail -1
exit 0
