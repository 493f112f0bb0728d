/* The dequantizing GEMV: C[r, j] = sum_i A[r, i] * w[j, i] for up to 8 rows
 * of A, the weights w read straight from their quantized bytes (backend.h,
 * struct dy_quant), or plain bf16/f16 rows. It serves gemm at m <= 8 and
 * gemm_grouped's decode steps; both are bandwidth bound, so the kernel is
 * built around the loads.
 *
 * A block owns C consecutive columns (rows of B) and up to M rows of A; its
 * KW warps split k. Each lane streams 16-byte loads of packed weights (32
 * int4 or 16 int8/fp8 elements), U per column, and issues all U x C = 8 of
 * them (128 bytes) before using the first. A (f32) comes through L1 and
 * each of its loads serves the C columns. The weights become exact f32
 * values without integer-to-float conversions: int4 as 2^23 + q built in
 * the mantissa by one byte permute, 2^23 + zero taken away; int8 likewise
 * (cuda_quant.h); fp8 through the f16x2 conversion. An int4 group's scale
 * multiplies a lane's partial sum over its 32 elements (which lie in one
 * group: groups are multiples of 32) for one or two rows of A; for more
 * rows it multiplies each weight once, shared by the rows. int8's row
 * scale and fp8's tensor scale multiply the finished sum. Partial sums
 * meet through shuffles and shared memory; C x M threads write C (dense:
 * beta and bias; grouped: the sorted rows of each expert's tile, found
 * from the offsets on the device as the bf16 grouped GEMV does).
 * int4 in groups of a multiple of 128 goes to the tensor-core kernels
 * further down instead: dense calls of one or two rows to the integer one,
 * more rows per tile to the bf16 one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"
#include "cuda_grouped.h"
#include "cuda_quant.h"

#define QG_MAX_WARPS 8
#define QG_LOADS 8 /* 16-byte loads in flight per lane: U x C */

/* elements per 16-byte load */
template <enum dy_dtype QT> struct qg_traits {
    static constexpr int EPL = QT == DY_I4 ? 32 : QT == DY_BF16 || QT == DY_F16 ? 8 : 16;
};

static __device__ __forceinline__ uint4 load_weights(const unsigned char *p)
{
#if DY_HIP
    return *(const uint4 *)p;
#else
    return __ldcs((const uint4 *)p); /* read once: first out of the caches */
#endif
}

/* One 32-bit word of weights as f32: int4 q - zero (zf = 2^23 + zero),
 * int8 and fp8 the values before their scale. */
template <enum dy_dtype QT>
static __device__ __forceinline__ void unpack_word(uint32_t w, float zf, float *v)
{
    if constexpr (QT == DY_I4) {
        dy_cuda_unpack8_i4(w, zf, v);
    } else if constexpr (QT == DY_BF16) {
        v[0] = __uint_as_float(w << 16);
        v[1] = __uint_as_float(w & 0xffff0000u);
    } else if constexpr (QT == DY_F16) {
        float2 f = __half22float2(*(const __half2 *)&w);
        v[0] = f.x;
        v[1] = f.y;
    } else {
        dy_cuda_unpack4<QT>(w, v);
    }
}

/* N floats of A on 4 N bytes: float4 loads, or float2 for bf16/f16's two
 * elements a word */
template <int N>
static __device__ __forceinline__ void load_a(const float *p, float *x)
{
    if constexpr (N % 4 == 0) {
#pragma unroll
        for (int j = 0; j < N; j += 4) {
            float4 f = __ldg((const float4 *)(p + j));
            x[j] = f.x;
            x[j + 1] = f.y;
            x[j + 2] = f.z;
            x[j + 3] = f.w;
        }
    } else {
        static_assert(N == 2, "two or a multiple of four");
        float2 f = __ldg((const float2 *)p);
        x[0] = f.x;
        x[1] = f.y;
    }
}

/* The paired epilogues (RoPE, SwiGLU): the finished sums of C's columns
 * ja and jb, which tile slot idx (the block's column c < C / 2, row i) and
 * its partner C / 2 columns on hold in every warp's share, with one-byte
 * formats' scales (per row of B, as the plain epilogue's) and the bias. */
template <enum dy_dtype QT, int C, int M>
static __device__ __forceinline__ float2 pair_sums(const struct dy_qgemv_args &g, const float (*red)[C * M],
                                                   int warps, int idx, const float *se, int ja, int jb, float ns)
{
    float x0 = 0.0f, x1 = 0.0f;
    for (int w = 0; w < warps; w++) {
        x0 += red[w][idx];
        x1 += red[w][idx + C / 2 * M];
    }
    x0 *= ns; /* the row's norm, 1 without */
    x1 *= ns;
    if (QT == DY_I8) {
        x0 *= se[ja];
        x1 *= se[jb];
    } else if (QT == DY_FP8) {
        x0 *= se[0];
        x1 *= se[0];
    }
    if (g.bias) {
        x0 += dy_load_f32(g.bias, g.bias_dtype, ja);
        x1 += dy_load_f32(g.bias, g.bias_dtype, jb);
    }
    return make_float2(x0, x1);
}

/* C's column col of row r as stored (dy_gemm_desc.append): into the K or V
 * cache too where it is one of their columns */
static __device__ __forceinline__ void append_kv(const struct dy_qgemv_args &g, int r, int col, float x)
{
    if (!g.k_cache)
        return;
    size_t at = (size_t)g.kv_slots[r] * g.kv_cols;
    if (col >= g.kv_k && col < g.kv_k + g.kv_cols)
        dy_cuda_store_f32(g.k_cache, g.cache_dtype, at + (col - g.kv_k), x);
    if (col >= g.kv_v && col < g.kv_v + g.kv_cols)
        dy_cuda_store_f32(g.v_cache, g.cache_dtype, at + (col - g.kv_v), x);
}

template <enum dy_dtype QT, int M, int C>
__global__ void __launch_bounds__(QG_MAX_WARPS * DY_WARP, M == 1 && QT != DY_I4 ? 4 : 0)
qgemv_kernel(struct dy_qgemv_args g)
{
    constexpr int EPL = qg_traits<QT>::EPL, EPW = EPL / 4, U = QG_LOADS / C;
    /* weights before the wait (g.early) at one row of A, where the kernel
     * needed 64 registers without them; the launch bound (four blocks of
     * eight warps an SM) holds it there with them. int4's one-row kernel
     * needs 145, so it would lose blocks; every other instance keeps the
     * registers it had (a bound of 0 is none). */
    constexpr bool EARLY = M == 1 && QT != DY_I4;
    /* int4 with many rows: scale each weight once instead of each row's sum */
    constexpr bool SCALE_EACH = QT == DY_I4 && M >= 4;
    __shared__ int tile[3];
    __shared__ float red[QG_MAX_WARPS][C * M], red_ss[QG_MAX_WARPS][M];
    /* B's row of column c: col0 + c; with SwiGLU the gate rows half0 ..
     * half0 + C/2 and their up rows swiglu_half further; with RoPE, in the
     * first rope_cols / C blocks, columns pair0 .. pair0 + C/2 of a head
     * and their partners rope_half further */
    const int half = g.swiglu_half, half0 = blockIdx.x * (C / 2);
    const int rope_blocks = g.rope_cols / C, rh = g.rope_half;
    const bool rope = (int)blockIdx.x < rope_blocks;
    const int pair0 = rope ? half0 / rh * 2 * rh + half0 % rh : 0;
    const int col0 = g.rope_cols + ((int)blockIdx.x - rope_blocks) * C;
    if (g.prefetch && threadIdx.x == 0) {
        size_t row_bytes = (size_t)(g.k / EPL) * 16;
        if (rope)
            for (int part = 0; part < 2; part++)
                dy_prefetch_weights(g.b + ((size_t)pair0 + part * rh) * row_bytes, (size_t)C / 2 * row_bytes,
                                    g.prefetch_bytes / 2);
        else if (!half && col0 < g.n)
            dy_prefetch_weights(g.b + (size_t)col0 * row_bytes, (size_t)min(C, g.n - col0) * row_bytes,
                                g.prefetch_bytes);
        else if (half && half0 < half)
            for (int part = 0; part < 2; part++)
                dy_prefetch_weights(g.b + ((size_t)part * half + half0) * row_bytes,
                                    (size_t)min(C / 2, half - half0) * row_bytes, g.prefetch_bytes / 2);
    }
    /* B's row of the block's column c */
    auto col_of = [&](int c) {
        return rope   ? pair0 + (c < C / 2 ? 0 : rh) + c % (C / 2)
               : half ? (c < C / 2 ? 0 : half) + min(half0 + c % (C / 2), half - 1)
                      : min(col0 + c, g.n - 1);
    };
    /* g.early (dense calls whose B no kernel just before wrote: the
     * caller's b_settled): the warp's first batch of weights is loaded
     * into registers before the wait, so it is on its way while the
     * kernel before finishes; only A waits for that kernel. Where a block
     * has one batch (k <= 2,048 at eight warps) that is all its weights.
     * H200, batch 1 after 1,024 tokens, with the L2 prefetch then left
     * out (dy_cuda_qgemv): Llama-3.1-8B bf16 4.51 -> 4.28 ms a step,
     * Llama-3.2-1B 1.11 -> 1.01, OLMoE-1B-7B 1.10 -> 1.05; fp8 3.30 ->
     * 3.15 and int8 3.44 -> 3.33 after 4,096 tokens (bench/README). */
    const bool early = EARLY && g.early; /* constant false elsewhere */
    uint4 raw[U][C];
    if constexpr (EARLY)
        if (early) {
            int first = threadIdx.x / DY_WARP * U * DY_WARP + threadIdx.x % DY_WARP, loads = g.k / EPL;
#pragma unroll
            for (int u = 0; u < U; u++)
                if (first + u * DY_WARP < loads)
#pragma unroll
                    for (int c = 0; c < C; c++)
                        raw[u][c] = load_weights(g.b + ((size_t)col_of(c) * loads + first + u * DY_WARP) * 16);
        }
    DY_GRID_ENTER();
    int e = 0, r0 = 0, end = g.rows;
    if (g.offsets && !grouped_tile(g.offsets, g.experts, g.rows, M, blockIdx.y, tile, &e, &r0, &end))
        return;
    int nr = min(M, end - r0);
    int warp = threadIdx.x / DY_WARP, lane = threadIdx.x % DY_WARP, warps = blockDim.x / DY_WARP;
    int loads = g.k / EPL, groups = QT == DY_I4 ? g.k / g.group : 1;
    /* the norm (dense bf16/f16 calls, its weight in B's dtype: with
     * one-byte formats, whose unpacking needs more registers, the one-row
     * kernels spilled): a lane's 16 bytes of the weight beside each of its
     * loads of B, read through L1 as A is */
    const bool norm = (QT == DY_BF16 || QT == DY_F16) && g.norm_w != NULL;
    const uint4 *nw = (const uint4 *)g.norm_w;
    const unsigned char *be = g.b + (size_t)e * g.expert_bytes;
    const float *se = g.scale + (size_t)e * g.expert_scales;
    const unsigned char *ze = g.zero ? g.zero + (size_t)e * g.expert_scales : NULL;
    const unsigned char *brow[C];
    size_t grow[C]; /* the column's first group */
#pragma unroll
    for (int c = 0; c < C; c++) {
        int col = col_of(c);
        brow[c] = be + (size_t)col * loads * 16;
        grow[c] = (size_t)col * groups;
    }
    const float *arow[M];
#pragma unroll
    for (int i = 0; i < M; i++) {
        int r = r0 + min(i, nr - 1);
        arow[i] = g.a + (size_t)(g.a_rows ? g.a_rows[r] / g.a_row_div : r) * g.lda;
    }
    float acc[C][M], ss[1][M];
#pragma unroll
    for (int i = 0; i < M; i++) {
        ss[0][i] = 0.0f;
#pragma unroll
        for (int c = 0; c < C; c++)
            acc[c][i] = 0.0f;
    }
    for (int base = warp * U * DY_WARP; base < loads; base += warps * U * DY_WARP) {
        /* (the first batch came before the wait where early) */
        if (!early || base != warp * U * DY_WARP) {
#pragma unroll
            for (int u = 0; u < U; u++) {
                int t = base + u * DY_WARP + lane;
                if (t < loads)
#pragma unroll
                    for (int c = 0; c < C; c++)
                        raw[u][c] = load_weights(brow[c] + (size_t)t * 16);
            }
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            int t = base + u * DY_WARP + lane;
            if (t >= loads)
                break;
            int kk = t * EPL;
            uint4 nv = norm ? __ldg(nw + t) : make_uint4(0u, 0u, 0u, 0u);
            float s[C], zf[C], part[C][M];
#pragma unroll
            for (int c = 0; c < C; c++) {
                s[c] = 1.0f;
                zf[c] = 0.0f;
                if constexpr (QT == DY_I4) {
                    size_t gi = grow[c] + kk / g.group;
                    s[c] = __ldg(se + gi);
                    zf[c] = 8388608.0f + (ze ? (float)__ldg(ze + gi) : 8.0f);
                }
#pragma unroll
                for (int i = 0; i < M; i++)
                    part[c][i] = 0.0f;
            }
#pragma unroll
            for (int w = 0; w < 4; w++) {
                if constexpr (SCALE_EACH) {
                    float v[C][EPW];
#pragma unroll
                    for (int c = 0; c < C; c++) {
                        unpack_word<QT>(word_of(raw[u][c], w), zf[c], v[c]);
#pragma unroll
                        for (int j = 0; j < EPW; j++)
                            v[c][j] *= s[c];
                    }
#pragma unroll
                    for (int i = 0; i < M; i++) {
                        if (i >= nr)
                            break;
                        float x[EPW];
                        load_a<EPW>(arow[i] + kk + w * EPW, x);
#pragma unroll
                        for (int c = 0; c < C; c++)
#pragma unroll
                            for (int j = 0; j < EPW; j++)
                                acc[c][i] = fmaf(v[c][j], x[j], acc[c][i]);
                    }
                } else {
                    float x[M][EPW];
#pragma unroll
                    for (int i = 0; i < M; i++) {
                        if (i >= nr)
                            break;
                        load_a<EPW>(arow[i] + kk + w * EPW, x[i]);
                        if (norm) {
                            float nf[EPW];
                            unpack_word<QT>(word_of(nv, w), 0.0f, nf);
#pragma unroll
                            for (int j = 0; j < EPW; j++) {
                                ss[0][i] = fmaf(x[i][j], x[i][j], ss[0][i]);
                                x[i][j] *= nf[j];
                            }
                        }
                    }
#pragma unroll
                    for (int c = 0; c < C; c++) {
                        float v[EPW];
                        unpack_word<QT>(word_of(raw[u][c], w), zf[c], v);
#pragma unroll
                        for (int i = 0; i < M; i++) {
                            if (i >= nr)
                                break;
#pragma unroll
                            for (int j = 0; j < EPW; j++)
                                part[c][i] = fmaf(v[j], x[i][j], part[c][i]);
                        }
                    }
                }
            }
            if constexpr (!SCALE_EACH)
#pragma unroll
                for (int c = 0; c < C; c++)
#pragma unroll
                    for (int i = 0; i < M; i++)
                        acc[c][i] = fmaf(s[c], part[c][i], acc[c][i]);
        }
    }
    dy_warp_sum(acc);
    if (norm)
        dy_warp_sum(ss);
    if (lane == 0)
#pragma unroll
        for (int i = 0; i < M; i++) {
            red_ss[warp][i] = ss[0][i];
#pragma unroll
            for (int c = 0; c < C; c++)
                red[warp][c * M + i] = acc[c][i];
        }
    __syncthreads();
    /* row i's 1 / rms (the norm kernel's arithmetic), or 1 */
    auto row_scale = [&](int i) {
        if (!norm)
            return 1.0f;
        float sq = 0.0f;
        for (int w = 0; w < warps; w++)
            sq += red_ss[w][i];
        return rsqrtf(sq / g.k + g.norm_eps);
    };
    if (rope) {
        /* columns j and j + rope_half of a head, rotated by the row's
         * position (the arithmetic of cuda_ops.cu's rope_kernel) */
        for (int idx = threadIdx.x; idx < C / 2 * M; idx += blockDim.x) {
            int c = idx / M, i = idx % M, ja = pair0 + c, jb = ja + rh;
            if (i >= nr)
                continue;
            float2 x = pair_sums<QT, C, M>(g, red, warps, idx, se, ja, jb, row_scale(i));
            float x0 = x.x, x1 = x.y, sn, cs;
            sincosf(__fmul_rn((float)g.rope_pos[r0 + i], g.rope_freq[ja % (2 * rh)]), &sn, &cs);
            float *out = g.c + (size_t)(r0 + i) * g.ldc;
            float ya = x0 * cs - x1 * sn, yb = x1 * cs + x0 * sn;
            out[ja] = ya;
            out[jb] = yb;
            append_kv(g, r0 + i, ja, ya);
            append_kv(g, r0 + i, jb, yb);
        }
        return;
    }
    if (half) {
        /* gate column j and up column half + j into C's column j (the
         * scales of one-byte formats per row of B, as below) */
        for (int idx = threadIdx.x; idx < C / 2 * M; idx += blockDim.x) {
            int c = idx / M, i = idx % M, j = half0 + c;
            if (i >= nr || j >= half)
                continue;
            float2 x = pair_sums<QT, C, M>(g, red, warps, idx, se, j, half + j, row_scale(i));
            g.c[(size_t)(r0 + i) * g.ldc + j] = dy_silu_mul(x.x, x.y); /* gate, up */
        }
        return;
    }
    for (int idx = threadIdx.x; idx < C * M; idx += blockDim.x) {
        int c = idx / M, i = idx % M, col = col0 + c;
        if (i >= nr || col >= g.n)
            continue;
        float sum = 0.0f;
        for (int w = 0; w < warps; w++)
            sum += red[w][idx];
        sum *= row_scale(i);
        if (QT == DY_I8)
            sum *= se[col];
        else if (QT == DY_FP8)
            sum *= se[0];
        float *out = g.c + (size_t)(r0 + i) * g.ldc + col;
        if (!g.offsets) {
            float add = g.bias ? dy_load_f32(g.bias, g.bias_dtype, col) : 0.0f;
            sum = (g.beta != 0.0f ? g.beta * *out : 0.0f) + sum + add;
        }
        *out = sum;
        append_kv(g, r0 + i, col, sum);
    }
}

typedef void (*qg_fn)(struct dy_qgemv_args);
#define QG_BY_C(QT, M) { qgemv_kernel<QT, M, 2>, qgemv_kernel<QT, M, 4>, qgemv_kernel<QT, M, 8> }
#define QG_BY_M(QT) { QG_BY_C(QT, 1), QG_BY_C(QT, 2), QG_BY_C(QT, 4), QG_BY_C(QT, 8) }
/* [qg_slot(dtype)][log2 M][log2 C - 1] */
static const qg_fn qg_kernels[5][4][3] = {
    QG_BY_M(DY_FP8), QG_BY_M(DY_I8), QG_BY_M(DY_I4), QG_BY_M(DY_BF16), QG_BY_M(DY_F16),
};

/* The weight dtypes this kernel reads, in qg_kernels' order; -1 others. */
static int qg_slot(enum dy_dtype t)
{
    switch (t) {
    case DY_FP8: return 0;
    case DY_I8: return 1;
    case DY_I4: return 2;
    case DY_BF16: return 3;
    case DY_F16: return 4;
    default: return -1;
    }
}

#if !DY_HIP
#include "cuda_mma.h"

/* ---- int4 on the tensor cores ----
 * The CUDA-core kernel spends about three instructions per int4 weight and
 * row of A (permute, subtract, fma): at eight rows it is bound by its
 * arithmetic, near 15 % of the copy bandwidth on an H100 (at one row its
 * loads bound it, and this kernel is no faster).
 * Here a warp owns R tiles of 16 weight rows and feeds mma.sync
 * m16n8k16 (bf16 operands, f32 accumulators): the weights are the A
 * operand, the (up to 8) rows of A the B operand, so m = 1 costs what
 * m = 8 does. Lane (g, t) loads 16 bytes (32 weights) of rows g and
 * g + 8 of each tile at k offset 32 t of a 128-wide chunk; the sum over k
 * does not care which k a fragment slot stands for, so a word's nibbles
 * j and j + 4 make one bf16 pair (one mask and or: 128 + q in the
 * mantissa, then 128 + zero taken away by an exact fma) and the lane's
 * activations are paired the same way. Activations go in as two bf16
 * terms, hi + lo (16 bits of mantissa, f32's range), so the result is as
 * exact as the CUDA-core path's. A chunk lies in one int4 group (groups
 * are multiples of 128): its tile sums are scaled in f32 and added. The
 * warps of a block split the chunks and meet in shared memory. */
#define QM_MAX_WARPS 16
#define QM_CHUNK 128

/* nibbles j and j + 4 of w as the bf16 pair (q - zero), zneg = -(128 + zero)
 * in both halves */
static __device__ __forceinline__ uint32_t i4_pair(uint32_t w, int j, uint32_t zneg)
{
    uint32_t p = ((w >> (4 * j)) & 0x000f000fu) | 0x43004300u, r;
    asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(r) : "r"(p), "r"(0x3f803f80u), "r"(zneg));
    return r;
}

template <int R, int U>
__global__ void __launch_bounds__(QM_MAX_WARPS * 32)
qmma_i4_kernel(struct dy_qgemv_args g)
{
    extern __shared__ float red[]; /* [warp][16 R rows][8 rows of A] partial sums */
    __shared__ int tile[3];
    if (g.prefetch && threadIdx.x == 0 && (int)blockIdx.x * 16 * R < g.n)
        dy_prefetch_weights(g.b + (size_t)blockIdx.x * 16 * R * (g.k / 2),
                            (size_t)min(16 * R, g.n - (int)blockIdx.x * 16 * R) * (g.k / 2), DY_PREFETCH_BYTES);
    DY_GRID_ENTER();
    int e = 0, r0 = 0, end = g.rows;
    if (g.offsets && !grouped_tile(g.offsets, g.experts, g.rows, 8, blockIdx.y, tile, &e, &r0, &end))
        return;
    int nr = min(8, end - r0);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
    int g8 = lane >> 2, t4 = lane & 3;
    int col0 = blockIdx.x * 16 * R, chunks = g.k / QM_CHUNK, groups = g.k / g.group;
    const unsigned char *be = g.b + (size_t)e * g.expert_bytes + 16 * t4;
    const float *se = g.scale + (size_t)e * g.expert_scales;
    const unsigned char *ze = g.zero ? g.zero + (size_t)e * g.expert_scales : NULL;
    uint32_t boff[R][2]; /* the host keeps a matrix under 4 GB here */
    int gbase[R][2];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            int col = min(col0 + 16 * r + g8 + 8 * h, g.n - 1);
            boff[r][h] = (uint32_t)col * (uint32_t)(g.k / 2);
            gbase[r][h] = col * groups;
        }
    const float *arow = NULL;
    if (g8 < nr) {
        int rr = r0 + g8;
        arow = g.a + (size_t)(g.a_rows ? g.a_rows[rr] / g.a_row_div : rr) * g.lda + 32 * t4;
    }
    float acc[R][4];
#pragma unroll
    for (int r = 0; r < R; r++)
        acc[r][0] = acc[r][1] = acc[r][2] = acc[r][3] = 0.0f;
    for (int base = warp * U; base < chunks; base += warps * U) {
        uint4 raw[U][R][2];
#pragma unroll
        for (int u = 0; u < U; u++)
            if (base + u < chunks)
#pragma unroll
                for (int r = 0; r < R; r++)
#pragma unroll
                    for (int h = 0; h < 2; h++)
                        raw[u][r][h] = load_weights(be + boff[r][h] + (size_t)(base + u) * (QM_CHUNK / 2));
#pragma unroll
        for (int u = 0; u < U; u++) {
            int kk = (base + u) * QM_CHUNK;
            if (kk >= g.k)
                break;
            float s[R][2], t[R][4];
            uint32_t zneg[R][2];
#pragma unroll
            for (int r = 0; r < R; r++) {
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    int gi = gbase[r][h] + kk / g.group;
                    s[r][h] = __ldg(se + gi);
                    zneg[r][h] = (0xc300u | (ze ? __ldg(ze + gi) : 8u)) * 0x00010001u;
                }
                t[r][0] = t[r][1] = t[r][2] = t[r][3] = 0.0f;
            }
#pragma unroll
            for (int w = 0; w < 4; w++) {
                float x[8];
                if (arow)
                    load_a<8>(arow + kk + 8 * w, x);
                else
#pragma unroll
                    for (int j = 0; j < 8; j++)
                        x[j] = 0.0f;
#pragma unroll
                for (int half = 0; half < 2; half++) {
                    /* the step's k slots 2t, 2t + 1, 2t + 8, 2t + 9 are the
                     * word's elements j, j + 4, j + 1, j + 5 */
                    int j = 2 * half;
                    uint32_t bh0, bl0, bh1, bl1;
                    bf16_split(x[j], x[j + 4], &bh0, &bl0);
                    bf16_split(x[j + 1], x[j + 5], &bh1, &bl1);
#pragma unroll
                    for (int r = 0; r < R; r++) {
                        uint32_t lo_row = word_of(raw[u][r][0], w), hi_row = word_of(raw[u][r][1], w);
                        uint32_t a[4] = { i4_pair(lo_row, j, zneg[r][0]), i4_pair(hi_row, j, zneg[r][1]),
                                          i4_pair(lo_row, j + 1, zneg[r][0]), i4_pair(hi_row, j + 1, zneg[r][1]) };
                        mma_bf16_16816(t[r], a, bh0, bh1);
                        mma_bf16_16816(t[r], a, bl0, bl1);
                    }
                }
            }
            /* lane holds rows g, g + 8 (c0, c1 and c2, c3), A rows 2t, 2t + 1 */
#pragma unroll
            for (int r = 0; r < R; r++) {
                acc[r][0] = fmaf(s[r][0], t[r][0], acc[r][0]);
                acc[r][1] = fmaf(s[r][0], t[r][1], acc[r][1]);
                acc[r][2] = fmaf(s[r][1], t[r][2], acc[r][2]);
                acc[r][3] = fmaf(s[r][1], t[r][3], acc[r][3]);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int q = 0; q < 4; q++)
            red[(warp * 16 * R + 16 * r + g8 + 8 * (q >> 1)) * 8 + 2 * t4 + (q & 1)] = acc[r][q];
    __syncthreads();
    for (int idx = threadIdx.x; idx < 16 * R * 8; idx += blockDim.x) {
        int row = idx / 8, i = idx % 8, col = col0 + row;
        if (i >= nr || col >= g.n)
            continue;
        float sum = 0.0f;
        for (int w = 0; w < warps; w++)
            sum += red[w * 16 * R * 8 + idx];
        float *out = g.c + (size_t)(r0 + i) * g.ldc + col;
        if (!g.offsets) {
            float add = g.bias ? dy_load_f32(g.bias, g.bias_dtype, col) : 0.0f;
            sum = (g.beta != 0.0f ? g.beta * *out : 0.0f) + sum + add;
        }
        *out = sum;
    }
}

/* [log2 R]: R tiles of 16 rows, U chunks per batch, 8 16-byte loads */
static const qg_fn qm_kernels[3] = { qmma_i4_kernel<1, 4>, qmma_i4_kernel<2, 2>, qmma_i4_kernel<4, 1> };
#endif


static int log2_ceil(int x)
{
    int l = 0;
    while ((1 << l) < x)
        l++;
    return l;
}

#if !DY_HIP
/* DYNO_CUDA_QMMA=R,KW forces the tiles per warp and the warps per block,
 * DYNO_CUDA_QMMA=0 turns this path off, DYNO_CUDA_QMMA=1 takes it for one
 * or two rows of A too (benchmarks, tests). */
static int qmma_i4(struct cuda_ctx *c, const struct dy_qgemv_args *g, int log2m, int busy)
{
    int log2r = 2, warps = 0, fr = 0, fw = 0;
    const char *force = getenv("DYNO_CUDA_QMMA");
    if ((force && !strcmp(force, "0")) || (size_t)g->n * g->k / 2 >= ((size_t)1 << 32))
        return DY_E_UNSUPPORTED;
    /* one or two rows of A: the CUDA-core kernel is as fast (measured on an
     * H100), its loads being the limit, not its arithmetic */
    if (log2m <= 1 && !force)
        return DY_E_UNSUPPORTED;
    if (dy_cuda_tuning("DYNO_CUDA_QMMA", &fr, &fw) && (fr == 1 || fr == 2 || fr == 4)) {
        log2r = log2_ceil(fr);
        warps = fw;
    }
    int rows = 16 << log2r, col_blocks = (g->n + rows - 1) / rows;
    int slots = g->offsets ? tile_slots(g->rows, g->experts, 8) : 1, live = slots < busy ? slots : busy;
    int batch = 4 >> log2r, batches = (g->k / QM_CHUNK + batch - 1) / batch;
    if (warps < 1 || warps > QM_MAX_WARPS) {
        /* split k until the grid has about 16 warps per SM */
        long long blocks = (long long)col_blocks * live;
        warps = dy_cuda_clamp((c->sm_count * 16LL + blocks - 1) / blocks, 1,
                          batches < QM_MAX_WARPS ? batches : QM_MAX_WARPS);
    }
    dim3 grid((unsigned)col_blocks, (unsigned)slots);
    dy_launch(c, qm_kernels[log2r], grid, warps * 32, (size_t)warps * rows * 8 * sizeof(float), *g);
    return dy_cuda_check_launch(c, g->offsets ? "gemm_grouped (int4 mma)" : "gemv (int4 mma)");
}

#endif

int dy_cuda_qgemv(struct cuda_ctx *c, const struct dy_qgemv_args *args, enum dy_dtype qt)
{
    /* the L2 prefetch before the wait: for bf16/f16 and int4 (8B at batch
     * 1 on an H100: 0.8 and 2 % faster steps); fp8/int8 steps were 1-2 %
     * slower with it, their tiles' 32 KB reaching past the first wave.
     * Not where the weights come into registers before the wait (one row
     * of A, qgemv_kernel's EARLY): beside those loads it cost the step
     * (H200, batch 1: Llama-3.1-8B bf16 4.29 -> 4.50 ms, Llama-3.2-1B
     * 1.01 -> 1.06, OLMoE 1.05 -> 1.08; bench/README) */
    struct dy_qgemv_args with = *args;
    with.early = c->qgemv_early && args->early && !args->offsets && args->rows == 1 && qt != DY_I4;
    with.prefetch = c->prefetch && !args->offsets && qt != DY_FP8 && qt != DY_I8 && !with.early;
    with.prefetch_bytes = c->prefetch_bytes;
    const struct dy_qgemv_args *g = &with;
    int epl = qt == DY_I4 ? 32 : qt == DY_BF16 || qt == DY_F16 ? 8 : 16;
    bool laid_out = g->k % epl == 0 && dy_cuda_aligned16(g->b) && dy_cuda_aligned16(g->a) && g->lda % 4 == 0 &&
                    g->expert_bytes % 16 == 0 && (qt != DY_I4 || (g->group % epl == 0 && g->k % g->group == 0));
    /* the norm with bf16/f16 weights (its weight in theirs, on 16 bytes),
     * the append with all but int4 (its tensor-core kernels), neither with
     * experts */
    bool parts = g->norm_w || g->k_cache;
    if (!laid_out || qg_slot(qt) < 0 || (parts && (qt == DY_I4 || g->offsets)) ||
        (g->norm_w && ((qt != DY_BF16 && qt != DY_F16) || g->norm_dtype != qt || !dy_cuda_aligned16(g->norm_w))))
        return DY_E_UNSUPPORTED;
    /* rows per block: the dense call's; for experts, one where the busy
     * experts average a row (a decode step's top-k experts are distinct),
     * else room for about twice the average, as the bf16 grouped GEMV */
    int busy = g->offsets ? (g->rows < g->experts ? g->rows : g->experts) : 1;
    int avg = (g->rows + busy - 1) / busy;
    int log2m = g->offsets ? (avg <= 1 ? 0 : avg == 2 ? 2 : 3) : log2_ceil(g->rows);
    if (log2m > 3)
        return DY_E_UNSUPPORTED;
#if !DY_HIP
    if (qt == DY_I4 && g->group % QM_CHUNK == 0 && !g->swiglu_half && !g->rope_cols) {
        const char *mma = getenv("DYNO_CUDA_QMMA");
        int st = DY_E_UNSUPPORTED;
        if (!g->offsets && g->rows >= 1 && g->rows <= 2 && (!mma || !strcmp(mma, "0")))
            st = dy_cuda_qi4_small(c, g);
        if (st == DY_E_UNSUPPORTED)
            st = qmma_i4(c, g, log2m, busy);
        if (st != DY_E_UNSUPPORTED)
            return st;
    }
#endif
    /* eight columns per block: each load of A serves eight rows of B */
    int log2c = 3, warps = 0, fc = 0, fw = 0;
    if (dy_cuda_tuning("DYNO_CUDA_QGEMV", &fc, &fw) && (fc == 2 || fc == 4 || fc == 8)) {
        log2c = log2_ceil(fc);
        warps = fw;
    }
    int cols = 1 << log2c, col_blocks = (g->n + cols - 1) / cols;
    if (g->swiglu_half) /* a block's columns are half gate, half up */
        col_blocks = (g->swiglu_half + cols / 2 - 1) / (cols / 2);
    if (g->rope_cols) { /* whole pairs of one head a block, then the rest */
        if (g->rope_half % (cols / 2))
            return DY_E_UNSUPPORTED;
        col_blocks = g->rope_cols / cols + (g->n - g->rope_cols + cols - 1) / cols;
    }
    int slots = g->offsets ? tile_slots(g->rows, g->experts, 1 << log2m) : 1;
    if (warps < 1 || warps > QG_MAX_WARPS) {
        /* k split four ways for one or two rows of A (eight for bf16/f16
         * weights), two ways for more, while every warp keeps a batch of
         * loads. Measured on an H100 at batch 1, graphs and programmatic
         * dependent launch on (cuda/b1_check.sh, DYNO_CUDA_QGEMV=8,4 vs 8,8):
         * bf16 Llama-3.1-8B 5.88 -> 5.84 ms, Llama-3.2-1B 1.30 -> 1.25,
         * OLMoE 1.50 -> 1.47 with eight. Dense bf16/f16 matrices of at
         * least 4,096 columns and at most 2^25 elements (the 8B's qkv and
         * o: 512 or more blocks of short rows) keep four: 5.92 -> 5.81 ms,
         * OLMoE 1.51 -> 1.50, the 1B (no such matrix) unchanged */
        int per_batch = QG_LOADS / cols * DY_WARP, batches = (g->k / epl + per_batch - 1) / per_batch;
        bool two_byte = qt == DY_BF16 || qt == DY_F16;
        bool many_short = !g->offsets && !g->swiglu_half && g->n >= 4096 && (long long)g->n * g->k <= (1LL << 25);
        warps = dy_cuda_clamp(log2m <= 1 ? (two_byte && !many_short ? 8 : 4) : 2, 1, batches < 1 ? 1 : batches);
    }
    dim3 grid((unsigned)col_blocks, (unsigned)slots);
    dy_launch(c, qg_kernels[qg_slot(qt)][log2m][log2c - 1], grid, warps * DY_WARP, 0, *g);
    return dy_cuda_check_launch(c, g->offsets ? "gemm_grouped (quantized gemv)" : "gemv (quantized)");
}
