#!/usr/bin/env bash
# After bench/cuda/pack_bench.sh quant_bench BUILD_DIR: moves quant_bench,
# with a CUDA plugin built with -DDY_GPU_BLAS=0 (NOBLAS_DIR, a build tree
# configured with -Dcuda_args=-DDY_GPU_BLAS=0) when there is one, into
# .carry/quant_bench/extra.tar.xz, which bench/cuda/quant_check.sh unpacks.
# Usage: bench/cuda/pack_quant.sh [NOBLAS_DIR]
set -eu
d=$(mktemp -d)
mv .carry/quant_bench/quant_bench "$d/"
if [ -n "${1:-}" ]; then
    ninja -C "$1" backends/cuda/libdyno-cuda.so >/dev/null
    cp "$1/backends/cuda/libdyno-cuda.so" "$d/libdyno-cuda-noblas.so"
    strip "$d/libdyno-cuda-noblas.so"
fi
tar cJf .carry/quant_bench/extra.tar.xz -C "$d" .
rm -rf "$d"
ls -la .carry/quant_bench
