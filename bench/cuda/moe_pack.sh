#!/usr/bin/env bash
# Packs what bench/cuda/moe_ops_check.sh runs into .carry/moe/: pack.sh's
# binaries (dyno-bin.tar.xz, kept apart from other scripts' packs) and
# moe_ops_bench, built against the same build tree's static libraries as
# bench/meson.build links opencl_bench. Usage: bench/cuda/moe_pack.sh [BUILD_DIR]
set -eu
b=${1:-build}
bash bench/cuda/pack.sh "$b"
mkdir -p .carry/moe
mv .carry/dyno-bin.tar.xz .carry/moe/dyno-bin.tar.xz
cc -std=gnu11 -O2 -Wall -Wextra -Wno-unused-parameter -I. -I"$b" bench/cuda/moe_ops_bench.c \
   -o .carry/moe/moe_ops_bench -Wl,--start-group "$b"/backends/libdy_backends.a \
   "$b"/backends/libdy_cpu_ref.a -lm -ldl -fopenmp \
   /usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.a -Wl,--end-group -pthread
strip .carry/moe/moe_ops_bench
ls -la .carry/moe
