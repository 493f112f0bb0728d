/* The portable tiled GEMM's shape and inner product, shared by the dense
 * kernel (cuda_gemm.cu) and the grouped one (cuda_moe_gemm.cu): 64 x 64
 * tiles of C over 16-deep slices of A and B staged in shared memory
 * transposed (k-major, so a thread's reads along m or n are consecutive);
 * each of 256 threads accumulates a 4 x 4 micro-tile of rows ty + 16 i and
 * columns tx + 16 j, which keeps the shared reads free of bank conflicts
 * and the C stores coalesced. */
#ifndef DY_CUDA_TILE_H
#define DY_CUDA_TILE_H

#define TILE_M 64
#define TILE_N 64
#define TILE_K 16
#define TILE_THREADS 256
/* the staging loops fill both operands with one index */
static_assert(TILE_M == TILE_N && TILE_THREADS == 16 * 16 && TILE_M == 4 * 16, "tile shape");

/* acc += the staged slices' product for thread (tx, ty) */
__device__ __forceinline__ void tile_accumulate(const float (*as)[TILE_M + 1],
                                                const float (*bs)[TILE_N + 1], float acc[4][4],
                                                int tx, int ty)
{
#pragma unroll
    for (int kk = 0; kk < TILE_K; kk++) {
        float av[4], bv[4];
#pragma unroll
        for (int i = 0; i < 4; i++) {
            av[i] = as[kk][ty + 16 * i];
            bv[i] = bs[kk][tx + 16 * i];
        }
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++)
                acc[i][j] += av[i] * bv[j];
    }
}

#endif
