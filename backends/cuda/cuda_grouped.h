/* The grouped GEMMs' tiles (backend.h, gemm_grouped): each block finds
 * its (expert, rows) tile from the offsets on the device, so no launch
 * waits on them from the host. Shared by the bf16/f32 kernels
 * (cuda_moe_gemm.cu) and the quantized GEMV (cuda_quant_gemm.cu). */
#ifndef DY_CUDA_GROUPED_H
#define DY_CUDA_GROUPED_H

#include "gpu_compat.h"

/* The block's tile: the slot-th run of at most bm consecutive rows of one
 * expert, experts in order, rows past `rows` ignored. False when the slot
 * is past the last tile. Block-wide: the first warp scans the offsets with
 * shuffles (one barrier, short ahead of the first weight load) and leaves
 * the tile in `tile` (3 ints of shared memory). */
static __device__ inline bool grouped_tile(const int32_t *offsets, int experts, int rows, int bm,
                                           int slot, int *tile, int *e_out, int *r0_out, int *end_out)
{
    if (threadIdx.x < DY_WARP) {
        int lane = threadIdx.x, carry = 0, found = -1, found_r0 = 0, found_end = 0;
        for (int base = 0; base < experts; base += DY_WARP) {
            int e = base + lane, b0 = 0, b1 = 0, tiles = 0;
            if (e < experts) {
                b0 = min(offsets[e], rows);
                b1 = min(offsets[e + 1], rows);
                tiles = b1 > b0 ? (b1 - b0 + bm - 1) / bm : 0;
            }
            int incl = tiles;
            for (int o = 1; o < DY_WARP; o <<= 1) {
                int v = __shfl_up_sync(0xffffffffu, incl, o);
                if (lane >= o)
                    incl += v;
            }
            incl += carry;
            if (slot < incl && slot >= incl - tiles) {
                found = e;
                found_r0 = b0 + (slot - (incl - tiles)) * bm;
                found_end = b1;
            }
            carry = __shfl_sync(0xffffffffu, incl, DY_WARP - 1);
            if (carry > slot)
                break;
        }
        int any = found;
        for (int o = DY_WARP / 2; o > 0; o >>= 1)
            any = max(any, __shfl_xor_sync(0xffffffffu, any, o));
        if (found >= 0) {
            tile[0] = found;
            tile[1] = found_r0;
            tile[2] = found_end;
        } else if (any < 0 && lane == 0) {
            tile[0] = -1;
        }
    }
    __syncthreads();
    *e_out = tile[0];
    *r0_out = tile[1];
    *end_out = tile[2];
    return tile[0] >= 0;
}

/* Upper bound on the tiles of bm rows: every tile has a row, and each busy
 * expert adds at most one partial tile. */
static inline int tile_slots(int rows, int experts, int bm)
{
    long long slots = (rows + (long long)bm - 1) / bm + (experts < rows ? experts : rows);
    return (int)(slots < rows ? slots : rows);
}

#endif
