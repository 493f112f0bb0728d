#!/usr/bin/env bash
# Quantized weights on the lent card: the quantized conformance suite
# against cpu-ref (dequantize, gemm and gemm_grouped with fp8, int8, int4),
# again with fp8 sent to the bf16 path or to cuBLASLt alone, the GEMV
# cases through other launch shapes and paths, the grouped cases through
# the inner bf16 paths, the same suite on a plugin built with
# -DDY_GPU_BLAS=0 (the HIP build's paths) where one was packed, the whole
# conformance suite, bench/cuda/quant_bench.c (--tune adds the tuning
# tables), then compute-sanitizer over the quantized gemm cases. Pack first
# with bench/cuda/pack_bench.sh quant_bench BUILD_DIR, then
# bench/cuda/pack_quant.sh [NOBLAS_DIR]; run with carry
# [".carry/quant_bench"]. Arguments go to quant_bench.
cp .carry/quant_bench/dyno-bin.tar.xz .carry/dyno-bin.tar.xz
source bench/cuda/common.sh
mkdir -p /tmp/qb && tar xJf .carry/quant_bench/extra.tar.xz -C /tmp/qb
rm -f /tmp/dy/libdyno-opencl.so # cuda alone beside cpu and cpu-ref
set -o pipefail
q=/tmp/dy/test_conformance_quant
timeout 120 $q 2>&1 | tee "$OUT/conformance_quant.txt" | grep -v '^ok'
echo "## fp8 through the bf16 path, then through cuBLASLt only"
DYNO_CUDA_FP8_GEMM=0 timeout 60 $q test_gemm_quant 2>&1 | grep -v '^ok'
DYNO_CUDA_FP8_GEMM=require timeout 60 $q test_gemm_quant 2>&1 | grep -v '^ok'
for v in DYNO_CUDA_QMMA=0 DYNO_CUDA_QMMA=1 DYNO_CUDA_QMMA=1,8 DYNO_CUDA_QMMA=2,3 DYNO_CUDA_QMMA=4,1 \
         DYNO_CUDA_QMMA=4,8 DYNO_CUDA_QGEMV=2,1 DYNO_CUDA_QGEMV=8,8; do
    echo "## int4 and int8/fp8 GEMV with $v"
    env $v timeout 60 $q gemm 2>&1 | grep -v '^ok'
done
for path in tiled blas mma; do
    echo "## gemm_grouped quantized, large calls through $path"
    DYNO_CUDA_MOE_GEMM=$path timeout 60 $q test_gemm_grouped_quant 2>&1 | grep -v '^ok'
done
if [ -f /tmp/qb/libdyno-cuda-noblas.so ]; then
    echo "## no-BLAS plugin (-DDY_GPU_BLAS=0)"
    mkdir -p /tmp/nb && cp /tmp/qb/libdyno-cuda-noblas.so /tmp/nb/libdyno-cuda.so && cp $q /tmp/nb/
    DYNO_PLUGIN_PATH=/tmp/nb timeout 120 /tmp/nb/test_conformance_quant 2>&1 | grep -v '^ok'
fi
timeout 120 /tmp/dy/test_conformance 2>&1 | tee "$OUT/conformance.txt" | grep -v '^ok'
echo "conformance: $(grep -c '^ok' "$OUT/conformance.txt") ok"
timeout 240 /tmp/qb/quant_bench "$@" 2>&1 | tee "$OUT/quant_bench.txt"
if command -v compute-sanitizer >/dev/null; then
    echo "## compute-sanitizer memcheck"
    timeout 150 compute-sanitizer --tool memcheck --print-limit 5 $q test_gemm_quant 2>&1 | tail -4
    timeout 90 compute-sanitizer --tool memcheck --print-limit 5 $q test_gemm_grouped_quant 2>&1 | tail -3
fi
