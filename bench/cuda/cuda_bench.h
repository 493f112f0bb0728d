/* Shared by the stand-alone CUDA benchmarks that call the CUDA libraries
 * directly (lt_search.cu, gemm_pingpong.cu): a failing call's exit and a
 * seeded fill of bf16 values. */
#ifndef DY_CUDA_BENCH_H
#define DY_CUDA_BENCH_H

#include <cstdio>
#include <cstdlib>

#include <cuda_bf16.h>

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

#endif
