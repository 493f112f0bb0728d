#!/usr/bin/env bash
# Packs what bench/cuda/kv_check.sh runs into .carry/kv/: pack.sh's
# binaries (dyno-bin.tar.xz, kept apart from other scripts' packs) and
# kv_bench, built against the same build tree's static libraries as
# bench/meson.build links opencl_bench. Usage: bench/cuda/kv_pack.sh [BUILD_DIR]
set -eu
b=${1:-build}
bash bench/cuda/pack.sh "$b"
mkdir -p .carry/kv
mv .carry/dyno-bin.tar.xz .carry/kv/dyno-bin.tar.xz
cc -std=gnu11 -O2 -Wall -Wextra -Wno-unused-parameter -I. -I"$b" bench/cuda/kv_bench.c \
   -o .carry/kv/kv_bench -Wl,--start-group "$b"/backends/libdy_backends.a \
   "$b"/backends/libdy_cpu_ref.a -lm -ldl -fopenmp \
   /usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.a -Wl,--end-group -pthread
strip .carry/kv/kv_bench
ls -la .carry/kv
