#!/usr/bin/env bash
# The CUDA MoE ops on the lent card: the conformance suite against cpu-ref
# (the cuda lines are this backend's), the grouped GEMM's cases once more
# through each of its paths, then bench/cuda/moe_ops_bench.c. Pack first
# with bench/cuda/pack_bench.sh moe_ops_bench; run with carry [".carry/moe_ops_bench"]. moe_check.sh runs
# the workload.
cp .carry/moe_ops_bench/dyno-bin.tar.xz .carry/dyno-bin.tar.xz
source bench/cuda/common.sh
rm -f /tmp/dy/libdyno-opencl.so # cuda alone beside cpu and cpu-ref
set -o pipefail
timeout 90 /tmp/dy/test_conformance 2>&1 | tee "$OUT/conformance.txt" | grep -v '^ok'
for path in gemv mma blas tiled; do
    echo "## gemm_grouped cases through $path"
    DYNO_CUDA_MOE_GEMM=$path timeout 25 /tmp/dy/test_conformance gemm_grouped 2>&1 | grep -v '^ok.*SKIP'
done
timeout 200 .carry/moe_ops_bench/moe_ops_bench 2>&1 | tee "$OUT/moe_ops_bench.txt"
