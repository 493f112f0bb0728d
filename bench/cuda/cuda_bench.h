/* Shared by the stand-alone CUDA benchmarks that call the CUDA libraries
 * directly (lt_search.cu, lt_skinny.cu, gemm_pingpong.cu): a failing
 * call's exit, a seeded fill of bf16 values and a median of timed calls. */
#ifndef DY_CUDA_BENCH_H
#define DY_CUDA_BENCH_H

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#define CK(x)                                                                           \
    do {                                                                                \
        auto r_ = (x);                                                                  \
        if ((int)r_ != 0) {                                                             \
            fprintf(stderr, "%s:%d: %s failed (%d)\n", __FILE__, __LINE__, #x, (int)r_); \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)

/* p[i] uniform in [-scale / 2, scale / 2), from a hash of i and the seed */
__global__ void fill_kernel(__nv_bfloat16 *p, size_t n, unsigned seed, float scale)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        unsigned h = (unsigned)i * 2654435761u ^ seed;
        h ^= h >> 15;
        h *= 2246822519u;
        h ^= h >> 13;
        p[i] = __float2bfloat16(((h & 0xffff) / 65536.0f - 0.5f) * scale);
    }
}

/* Median microseconds a call over `reps` samples, each `calls` calls of
 * call(0 .. calls - 1) on stream s between events e0 and e1; < 0 when the
 * calls left an error */
template <class F>
static double median_us(cudaStream_t s, cudaEvent_t e0, cudaEvent_t e1, int calls, int reps, F call)
{
    std::vector<double> t;
    for (int r = 0; r < reps; r++) {
        CK(cudaEventRecord(e0, s));
        for (int i = 0; i < calls; i++)
            call(i);
        CK(cudaEventRecord(e1, s));
        CK(cudaEventSynchronize(e1));
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        t.push_back(ms * 1e3 / calls);
    }
    if (cudaGetLastError() != cudaSuccess)
        return -1.0;
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

#endif
