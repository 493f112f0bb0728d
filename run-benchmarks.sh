#!/usr/bin/env bash
# The main job: installs what is missing, builds, runs the default sweep on
# the best available backend (the CPU when there is no GPU) into
# dyno-results.db, prints the summary table and writes the dashboard,
# dyno-report.html.
#   ./run-benchmarks.sh [extra dyno run flags]
set -eu
cd "$(dirname "$0")"
scripts/install-deps.sh
if [ ! -f build/build.ninja ]; then
    meson setup build --buildtype=release >/dev/null
fi
ninja -C build >/dev/null
build/dyno devices
backend=$(build/dyno devices | sed -n 's/^default backend (auto): //p')
db=${DYNO_DB:-dyno-results.db}
if [ "$backend" = cpu ]; then
    # a small sweep a laptop finishes in a few minutes
    build/dyno run --backend cpu --model tiny-llama,llama-3.2-1b --batch 1,4 \
        --input-len 128 --output-len 32 --warmup 1 --repeat 2 --db "$db" "$@"
    build/dyno run --backend cpu --workload vit --model tiny-vit,vit-b16 --batch 1,8 \
        --warmup 1 --repeat 2 --db "$db" "$@"
    # MoE: the expert/top-k and routing axes; the KV cache: dtypes and eviction
    build/dyno run --backend cpu --model tiny-moe --top-k 1,2,4 --routing model,zipf:1.2 --batch 1,4 \
        --input-len 128 --output-len 32 --warmup 1 --repeat 2 --db "$db" "$@"
    build/dyno run --backend cpu --model tiny-llama --kv-dtype f16,fp8,int8 --batch 4 --input-len 256 \
        --output-len 64 --warmup 1 --repeat 2 --db "$db" "$@"
    build/dyno run --backend cpu --model tiny-llama --evict streaming,paged --kv-budget 64,128 --batch 4 \
        --input-len 256 --output-len 64 --warmup 1 --repeat 2 --db "$db" "$@"
    # quantized weights, and MoPEQ's per-expert bits
    build/dyno run --backend cpu --model llama-3.2-1b --weight-dtype bf16,fp8,int8,int4 --batch 1 \
        --input-len 128 --output-len 32 --warmup 1 --repeat 2 --db "$db" "$@"
    build/dyno run --backend cpu --model tiny-moe --weight-dtype int4,mopeq:3,mopeq:2.5 --batch 4 \
        --input-len 128 --output-len 32 --warmup 1 --repeat 2 --db "$db" "$@"
else
    build/dyno run --backend "$backend" --model llama-3.2-1b,llama-3.1-8b --batch 1,16,64 \
        --input-len 128,1024 --output-len 128 --db "$db" "$@"
    build/dyno run --backend "$backend" --workload vit --model vit-b16,vit-l16 --batch 1,64,256 \
        --db "$db" "$@"
    build/dyno run --backend "$backend" --model olmoe-1b-7b,qwen1.5-moe-a2.7b --batch 1,64 \
        --input-len 1024 --output-len 128 --db "$db" "$@"
    build/dyno run --backend "$backend" --workload moe-layer --model olmoe-1b-7b --top-k 1,2,4,8 \
        --batch 256 --input-len 1 --db "$db" "$@"
    build/dyno run --backend "$backend" --model llama-3.1-8b --kv-dtype bf16,fp8,int8 --batch 64 \
        --input-len 2048 --output-len 64 --repeat 1 --db "$db" "$@"
    build/dyno run --backend "$backend" --model llama-3.1-8b --evict paged,streaming --kv-budget 512,1024 \
        --batch 64 --input-len 4096 --output-len 64 --repeat 1 --db "$db" "$@"
    build/dyno run --backend "$backend" --model llama-3.1-8b --weight-dtype bf16,fp8,int8,int4 --batch 1 \
        --input-len 4096 --output-len 64 --repeat 1 --db "$db" "$@"
    build/dyno run --backend "$backend" --model olmoe-1b-7b --weight-dtype int4,mopeq:3 --batch 1 \
        --input-len 1024 --output-len 64 --repeat 1 --db "$db" "$@"
fi
build/dyno report --db "$db" -o dyno-report.html
echo "results: $db; dashboard: dyno-report.html"
