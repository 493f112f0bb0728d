#!/usr/bin/env bash
# Packs a device-machine micro-benchmark with pack.sh's binaries into
# .carry/BENCH/: dyno-bin.tar.xz (kept apart from other scripts' packs) and
# bench/cuda/BENCH.c, built against the build tree's static libraries as
# bench/meson.build links opencl_bench.
# Usage: bench/cuda/pack_bench.sh attn_bench|kv_bench|moe_ops_bench|quant_bench [BUILD_DIR]
set -eu
bench=$1
b=${2:-build}
bash bench/cuda/pack.sh "$b"
mkdir -p ".carry/$bench"
mv .carry/dyno-bin.tar.xz ".carry/$bench/dyno-bin.tar.xz"
cc -std=gnu11 -O2 -Wall -Wextra -Wno-unused-parameter -I. -I"$b" "bench/cuda/$bench.c" \
   -o ".carry/$bench/$bench" -Wl,--start-group "$b"/backends/libdy_backends.a \
   "$b"/backends/libdy_cpu_ref.a -lm -ldl -fopenmp \
   /usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.a -Wl,--end-group -pthread
strip ".carry/$bench/$bench"
ls -la ".carry/$bench"
