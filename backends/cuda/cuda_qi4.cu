/* The int4 GEMV for one or two rows of A on the integer tensor cores
 * (dense calls; cuda_qgemv.cu dispatches here). CUDA only: HIP builds
 * compile this file empty. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"
#include "cuda_quant.h"

#if !DY_HIP
/* ---- int4 at one or two rows of A: integer tensor cores ----
 * At m <= 2 the CUDA-core kernel spends about three instructions per weight
 * and the bf16 mma kernel (cuda_qgemv.cu) two mmas per 256 weights, for work the
 * loads should bound. Here the weights go to mma.sync m16n8k32 as bytes
 * (q in [0, 15]: one and or one shift and and turn a word into the low and
 * the high nibbles of its four bytes) and A as integers: each 128-wide
 * chunk of a row of A is X * 2^E with |X| <= 2^22 (E from the chunk's
 * max|x|, so X keeps 23 bits, f32's precision at the chunk's largest
 * value), X written as three signed 8-bit digits d0 + 256 d1 + 65536 d2,
 * each digit a column of the mma's B (m = 1: three columns, m = 2: six
 * of the eight). A chunk's four mmas sum q * d exactly in s32, from a
 * start of 1.5 * 2^23 as float bits, so the sum reads as an exact float
 * after one subtraction. Each column's sum times 2^(E + 8 d) and the
 * group's scale adds to an f32 accumulator; the zero point comes off as
 * zero * sum(X) * 2^E, sum(X) exact in s32. So the result is the exact
 * dot product of the weights with A rounded to 23 bits per chunk, summed
 * in f32: as exact as the CUDA-core kernel (for chunks whose max|x| is
 * under 2^-104, E stops at -126 and X keeps fewer bits).
 * The slot-to-element map is the bf16 kernel's idea: k slot 4t + b of a
 * step is element 2b of word w of lane t's 16 bytes, slot 16 + 4t + b
 * element 2b + 1, so a lane's loads feed its own fragments unpermuted.
 * A block is persistent (two of 8 warps per SM): it owns a contiguous run
 * of 16-row tiles, and its warps split k, each warp a fixed run of chunks
 * of every tile. A warp loads its chunks of A, then its first weights,
 * writes the digits of those chunks to shared memory laid out as the B
 * fragments while the weights arrive, then streams (tile, chunk) units in
 * batches, each unit one 16-byte load of two rows per lane plus their
 * scales. A tile's sums go to shared memory per warp; after one barrier
 * the block adds the warps' sums in a fixed order (no atomics: the same
 * result every run) and writes C with beta and the bias.
 * Measured on an H100 (graph replay, m = 1): 0.91 of the copy bandwidth at
 * the LM head, 0.77 at gate_up, 0.57 at down, 0.39 to 0.46 at o and qkv.
 * What is left is a cost of about 5 us per call that does not shrink with
 * the shape (as the fp8 and bf16 GEMVs show too): at o it is two thirds of
 * the call. */
typedef void (*qi_fn)(struct dy_qgemv_args);

#define QI_CHUNK 128
#define QI_MAX_WARPS 16
#define QI_UNITS 4 /* (tile, chunk) units per batch: 8 16-byte loads a lane */
#define QI_STAGE 8 /* chunks of A loaded at once for the digits */
#define QI_FLOAT_BIAS 0x4B400000 /* 1.5 * 2^23 as float bits */

static __device__ __forceinline__ void mma_s8(int *d, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                              uint32_t b0, uint32_t b1)
{
    asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* 16 bytes read once: not kept in L1, and L2 asked for the whole 256-byte
 * block, the row's next chunks, which this warp or its neighbour reads
 * next (measured on an H100: 0.96 of the copy bandwidth at the LM head
 * instead of 0.84) */
static __device__ __forceinline__ uint4 load_stream(const unsigned char *p)
{
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
    return r;
}

/* Shared memory of a block: per chunk, (2^(E + 8 d), zero term) for each
 * of 8 columns, then the digits as B fragments, [chunk][half][column][t]
 * 16 bytes (words 2 half and 2 half + 1 of lane t: b0, b1 each), then the
 * warps' tile sums, 16 M floats per tile and warp. */
template <int M> struct qi_smem {
    static constexpr size_t FX_BYTES = 8 * 2 * sizeof(float);
    static constexpr size_t DIGIT_BYTES = QI_CHUNK * 3 * M;
    static size_t chunk_bytes(int chunks) { return (size_t)chunks * (FX_BYTES + DIGIT_BYTES); }
};

/* Digits of chunk c of one row of A (column block i), by one warp: lane l
 * holds elements 4l .. 4l + 3 in x. */
template <int M>
static __device__ __forceinline__ void qi_stage(float4 x, int c, int i, int lane, float2 *fx, unsigned char *digits)
{
    constexpr int COLS = 3 * M;
    float v[4] = { x.x, x.y, x.z, x.w };
    /* max|x| as bits (non-negative floats order as integers; NaN is above
     * infinity, so either makes the exponent 255) */
    uint32_t amax = 0;
#pragma unroll
    for (int j = 0; j < 4; j++)
        amax = max(amax, __float_as_uint(v[j]) & 0x7fffffffu);
    amax = __reduce_max_sync(0xffffffffu, amax);
    /* max|x| < 2^(eb - 126): scaled by 2^(148 - eb) it is under 2^22 */
    int eb = max((int)(amax >> 23), 22);
    float mul = __uint_as_float((uint32_t)(275 - eb) << 23);
    float unit = eb == 255 ? __uint_as_float(0x7fc00000u) : __uint_as_float((uint32_t)(eb - 21) << 23);
    /* X by the add of 1.5 * 2^23 (round to nearest even), then
     * y = X + 0x8080: byte 0 of y is d0 ^ 0x80, byte 1 d1 ^ 0x80, byte 2 d2
     * for the balanced digits X = d0 + 256 d1 + 65536 d2 */
    uint32_t y[4], sum = 0; /* sum(X) in two's complement */
#pragma unroll
    for (int j = 0; j < 4; j++) {
        uint32_t b = __float_as_uint(__fmaf_rn(v[j], mul, 12582912.0f));
        sum += b - (uint32_t)QI_FLOAT_BIAS;
        y[j] = b - ((uint32_t)QI_FLOAT_BIAS - 0x8080u);
    }
    sum = __reduce_add_sync(0xffffffffu, sum);
    /* element 4l + j is byte 2 (l & 1) + j / 2 of b0 (j even) or b1 (j odd)
     * of word (l & 7) / 2 of lane l / 8 */
    int half = (lane & 7) >> 2, word = (lane >> 1) & 1, t = lane >> 3;
#pragma unroll
    for (int d = 0; d < 3; d++) {
        unsigned sel = (unsigned)d | ((4u + d) << 4);
        uint32_t even = __byte_perm(y[0], y[2], sel), odd = __byte_perm(y[1], y[3], sel);
        if (d < 2) {
            even ^= 0x8080u;
            odd ^= 0x8080u;
        }
        size_t fragment = (((size_t)c * 2 + half) * COLS + 3 * i + d) * 4 + t;
        unsigned char *p = digits + fragment * 16 + word * 8 + 2 * (lane & 1);
        *(uint16_t *)p = (uint16_t)even;
        *(uint16_t *)(p + 4) = (uint16_t)odd;
    }
    int d = lane - 3 * i;
    if (lane < 8 && ((d >= 0 && d < 3) || (i == M - 1 && lane >= COLS))) {
        float2 f = make_float2(0.0f, 0.0f);
        if (d >= 0 && d < 3)
            f = make_float2(unit * (d == 0 ? 1.0f : d == 1 ? 256.0f : 65536.0f),
                            d == 0 ? (float)(int)sum * unit : 0.0f);
        fx[c * 8 + lane] = f;
    }
}

template <int M>
__global__ void __launch_bounds__(QI_MAX_WARPS * 32)
qi4_kernel(struct dy_qgemv_args g)
{
    constexpr int COLS = 3 * M, U = QI_UNITS;
    extern __shared__ float4 qi_shared[];
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
    int g8 = lane >> 2, t4 = lane & 3;
    int chunks = g.k / QI_CHUNK, tiles = (g.n + 15) / 16, grid = (int)gridDim.x;
    int t_begin = (int)((long long)blockIdx.x * tiles / grid);
    int t_end = (int)((long long)(blockIdx.x + 1) * tiles / grid);
    float2 *fx = (float2 *)qi_shared;
    unsigned char *digits = (unsigned char *)qi_shared + (size_t)chunks * qi_smem<M>::FX_BYTES;
    float *red = (float *)(digits + (size_t)chunks * qi_smem<M>::DIGIT_BYTES); /* [tile][warp][16][M] */
    int c_begin = (int)((long long)warp * chunks / warps), c_end = (int)((long long)(warp + 1) * chunks / warps);
    int span = c_end - c_begin, units = (t_end - t_begin) * span;
    int groups = g.k / g.group, chunks_per_group = g.group / QI_CHUNK;
    size_t row_bytes = (size_t)g.k / 2;
    const unsigned char *bl = g.b + 16 * t4 + (size_t)c_begin * (QI_CHUNK / 2);
    if (g.prefetch && threadIdx.x == 0 && t_end > t_begin)
        dy_prefetch_weights(g.b + (size_t)16 * t_begin * row_bytes,
                            (size_t)(min(16 * t_end, g.n) - 16 * t_begin) * row_bytes, DY_PREFETCH_BYTES);
    DY_GRID_ENTER();

    uint4 raw[U][2];
    /* lane t4 of a quad holds the scale of row g8 (t4 0) or g8 + 8 (1),
     * or the zero point of row g8 (2) or g8 + 8 (3), for the others */
    uint32_t meta[U];
    /* the units p .. p + U - 1 of the warp's stream: weights, scales, zeros */
    auto load_batch = [&](int p, int tile, int off) {
#pragma unroll
        for (int u = 0; u < U; u++) {
            if (p + u < units) {
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    int row = min(16 * tile + g8 + 8 * h, g.n - 1);
                    raw[u][h] = load_stream(bl + (size_t)row * row_bytes + (size_t)off * (QI_CHUNK / 2));
                }
                int row = min(16 * tile + g8 + 8 * (t4 & 1), g.n - 1);
                size_t gi = (size_t)row * groups + (c_begin + off) / chunks_per_group;
                meta[u] = t4 < 2 ? __float_as_uint(__ldg(g.scale + gi)) : g.zero ? __ldg(g.zero + gi) : 8u;
            }
            if (++off == span) {
                off = 0;
                tile++;
            }
        }
    };
    /* A's chunks (item it: row it % M of chunk c_begin + it / M), QI_STAGE
     * at a time, the first ones loaded ahead of the first weights */
    int items = units > 0 ? span * M : 0;
    float4 x[QI_STAGE];
    auto load_a = [&](int it0) {
#pragma unroll
        for (int j = 0; j < QI_STAGE; j++) {
            int it = it0 + j;
            if (it < items)
                x[j] = __ldg((const float4 *)(g.a + (size_t)(it % M) * g.lda + (size_t)(c_begin + it / M) * QI_CHUNK) +
                             lane);
        }
    };
    load_a(0);
    load_batch(0, t_begin, 0);
    for (int j = t_begin; j < t_end; j++)
        for (int idx = lane; idx < 16 * M; idx += 32)
            red[((size_t)(j - t_begin) * warps + warp) * 16 * M + idx] = 0.0f;
    for (int it0 = 0; it0 < items; it0 += QI_STAGE) {
        if (it0 > 0)
            load_a(it0);
#pragma unroll
        for (int j = 0; j < QI_STAGE; j++) {
            int it = it0 + j;
            if (it < items)
                qi_stage<M>(x[j], c_begin + it / M, it % M, lane, fx, digits);
        }
    }
    __syncwarp();

    float acc[4] = { 0.0f, 0.0f, 0.0f, 0.0f };
    /* a tile's sums, digit columns added, to red */
    auto flush = [&](int tile) {
        float part[M][2];
#pragma unroll
        for (int i = 0; i < M; i++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                float even = (2 * t4) / 3 == i ? acc[2 * h] : 0.0f, odd = (2 * t4 + 1) / 3 == i ? acc[2 * h + 1] : 0.0f;
                part[i][h] = even + odd;
                part[i][h] += __shfl_xor_sync(0xffffffffu, part[i][h], 1);
                part[i][h] += __shfl_xor_sync(0xffffffffu, part[i][h], 2);
            }
        if (t4 == 0)
#pragma unroll
            for (int i = 0; i < M; i++)
#pragma unroll
                for (int h = 0; h < 2; h++)
                    red[(((size_t)(tile - t_begin) * warps + warp) * 16 + g8 + 8 * h) * M + i] = part[i][h];
        acc[0] = acc[1] = acc[2] = acc[3] = 0.0f;
    };

    int tile = t_begin, off = 0, current = t_begin;
    for (int p = 0; p < units; p += U) {
        if (p > 0)
            load_batch(p, tile, off);
#pragma unroll
        for (int u = 0; u < U; u++) {
            if (p + u >= units)
                break;
            if (tile != current) {
                flush(current);
                current = tile;
            }
            int c = c_begin + off;
            uint4 b[2] = { make_uint4(0, 0, 0, 0), make_uint4(0, 0, 0, 0) };
            if (g8 < COLS)
#pragma unroll
                for (int h = 0; h < 2; h++)
                    b[h] = *(const uint4 *)(digits + (((size_t)c * 2 + h) * COLS + g8) * 64 + 16 * t4);
            float4 f = *(const float4 *)(fx + c * 8 + 2 * t4);
            float sc[2], zf[2];
#pragma unroll
            for (int h = 0; h < 2; h++) {
                sc[h] = __uint_as_float(__shfl_sync(0xffffffffu, meta[u], (lane & ~3) | h));
                zf[h] = (float)__shfl_sync(0xffffffffu, meta[u], (lane & ~3) | 2 | h);
            }
            int d[4] = { QI_FLOAT_BIAS, QI_FLOAT_BIAS, QI_FLOAT_BIAS, QI_FLOAT_BIAS };
#pragma unroll
            for (int w = 0; w < 4; w++) {
                uint32_t r0 = word_of(raw[u][0], w), r8 = word_of(raw[u][1], w);
                uint32_t b0 = w & 1 ? b[w >> 1].z : b[w >> 1].x, b1 = w & 1 ? b[w >> 1].w : b[w >> 1].y;
                /* rows g8 and g8 + 8: low nibbles at slots 4 t4 + b, high
                 * ones at 16 + 4 t4 + b */
                mma_s8(d, r0 & 0x0f0f0f0fu, r8 & 0x0f0f0f0fu, (r0 >> 4) & 0x0f0f0f0fu, (r8 >> 4) & 0x0f0f0f0fu, b0, b1);
            }
            /* d: rows g8 (0, 1) and g8 + 8 (2, 3), columns 2 t4 and 2 t4 + 1 */
#pragma unroll
            for (int q = 0; q < 4; q++) {
                int h = q >> 1;
                float col_unit = q & 1 ? f.z : f.x, col_zero = q & 1 ? f.w : f.y;
                float s = __int_as_float(d[q]) - 12582912.0f;
                acc[q] = fmaf(sc[h], fmaf(s, col_unit, -zf[h] * col_zero), acc[q]);
            }
            if (++off == span) {
                off = 0;
                tile++;
            }
        }
    }
    if (units > 0)
        flush(current);
    __syncthreads();
    int outputs = (t_end - t_begin) * 16 * M;
    for (int idx = threadIdx.x; idx < outputs; idx += blockDim.x) {
        int j = idx / (16 * M), r = idx / M % 16, i = idx % M, col = 16 * (t_begin + j) + r;
        if (col >= g.n)
            continue;
        float sum = 0.0f;
        for (int w = 0; w < warps; w++)
            sum += red[(((size_t)j * warps + w) * 16 + r) * M + i];
        float *out = g.c + (size_t)i * g.ldc + col;
        float add = g.bias ? dy_load_f32(g.bias, g.bias_dtype, col) : 0.0f;
        *out = (g.beta != 0.0f ? g.beta * *out : 0.0f) + sum + add;
    }
}

/* [rows - 1] */
static const qi_fn qi_kernels[2] = { qi4_kernel<1>, qi4_kernel<2> };

/* Dense calls of one or two rows. DYNO_CUDA_QI4=0 turns this path off,
 * DYNO_CUDA_QI4=KW,B forces the warps per block and the blocks per SM
 * (benchmarks, tests). */
int dy_cuda_qi4_small(struct cuda_ctx *c, const struct dy_qgemv_args *g)
{
    const char *force = getenv("DYNO_CUDA_QI4");
    if (force && !strcmp(force, "0"))
        return DY_E_UNSUPPORTED;
    /* two blocks of 8 warps per SM. Alone (graph replay, no programmatic
     * dependent launch) one block of 16 was the fastest at Llama-3.1-8B's
     * shapes or within 4 %, 8 x 2 the best at gate_up and the LM head; in
     * the decode step with PDL, 8 x 2 made the step 1.2 % faster than
     * 16 x 1 (3.13 against 3.17 ms after 4,096 tokens on an H100), 12 x 1
     * and 16 x 2 3 and 11 % slower */
    int warps = 8, per_sm = 2, fw = 0, fb = 0;
    if (dy_cuda_tuning("DYNO_CUDA_QI4", &fw, &fb)) {
        warps = fw;
        per_sm = fb < 1 ? 1 : fb;
    }
    int m = g->rows, chunks = g->k / QI_CHUNK, tiles = (g->n + 15) / 16;
    warps = dy_cuda_clamp(warps, 1, chunks < QI_MAX_WARPS ? chunks : QI_MAX_WARPS);
    size_t fixed = m == 1 ? qi_smem<1>::chunk_bytes(chunks) : qi_smem<2>::chunk_bytes(chunks);
    size_t per_tile = (size_t)warps * 16 * m * sizeof(float);
    if (fixed + per_tile > (size_t)c->smem_per_block)
        return DY_E_UNSUPPORTED;
    /* a persistent grid, unless shared memory bounds the tiles per block */
    long long fit = ((long long)c->smem_per_block - (long long)fixed) / (long long)per_tile;
    int grid = dy_cuda_clamp((long long)c->sm_count * per_sm, 1, tiles);
    if ((tiles + grid - 1) / grid > fit)
        grid = dy_cuda_clamp((tiles + fit - 1) / fit, 1, tiles);
    size_t smem = fixed + (size_t)((tiles + grid - 1) / grid) * per_tile;
    qi_fn kernel = qi_kernels[m - 1];
    if (smem > 48 * 1024) {
        cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (e != cudaSuccess)
            return dy_cuda_fail(c, e, "cudaFuncSetAttribute(gemv int4)");
    }
    dy_launch(c, kernel, grid, warps * 32, smem, *g);
    return dy_cuda_check_launch(c, "gemv (int4 integer mma)");
}
#endif
