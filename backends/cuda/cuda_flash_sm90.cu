/* Causal or bidirectional prefill attention on Hopper's warpgroup matrix
 * units (wgmma, sm_90a), for bf16 rows at head dim 64 or 128, in three
 * kernels. At head dim 128 the warp-specialized one further down (a
 * producer warpgroup loading with TMA) serves; at 64 the short-sequence one
 * at the end for at most 208 keys, else the first. A block of two
 * warpgroups owns 64 query rows of two query heads that share a KV head
 * (GQA), or 128 rows of one head; each warpgroup's 64 rows of Q stay in
 * shared memory for the whole walk over tiles of K and V, which cp.async
 * brings in one tile ahead into three stages that mbarriers guard. S = Q K^T
 * is a wgmma with both operands in shared memory; the online softmax (as
 * cuda_flash.cu's) runs on S in registers, and its probabilities, rounded to
 * bf16 in the A-fragment layout, feed O += P V with A in registers and V
 * read transposed. At head dim 128 the warpgroups take turns to issue their
 * products, so one's softmax overlaps the other's matrix work. Every tile
 * sits in shared memory in the layout wgmma reads without a copy: 64-element
 * (128-byte) column blocks of rows with the 128-byte swizzle, the 16-byte
 * chunk c of row r stored at c ^ (r % 8), each 8-row group 1,024 bytes (one
 * K/V layout serves K as a K-major B and V as an MN-major B). This file
 * alone is built for sm_90a; the mma.sync kernel in cuda_flash.cu serves
 * every other case. */
#include "cuda_internal.h"
#include "sm90_wgmma.cuh"

#include <cuda.h> /* CUtensorMap and its enums; the driver call goes through the runtime */
#include <cuda_bf16.h>
#include <type_traits>

#define FW_THREADS 256 /* two warpgroups */
#define FW_ROWS 64     /* query rows of a warpgroup */
#define FW_STAGES 3    /* K/V tiles in shared memory */

template <int HD, int KEYS> struct fw_layout {
    static constexpr int Q_BYTES = FW_ROWS * HD * 2; /* one warpgroup's Q */
    static constexpr int KV_BYTES = KEYS * HD * 2;   /* one K or V tile */
    /* 1,024 bytes of slack to align the tiles to the swizzle's period */
    static constexpr size_t bytes = 1024 + 2 * Q_BYTES + FW_STAGES * 2 * KV_BYTES;
    /* the launch bound: two blocks an SM where the registers allow */
    static constexpr int blocks_per_sm = HD == 64 && KEYS == 64 ? 2 : 1;
    /* the warpgroups take turns to issue their products (faster at head
     * dim 128 with one block an SM; at 64, with two, it was slower) */
    static constexpr bool pingpong = HD == 128;
};

/* byte offset of 16-byte chunk `ch` (along the head dim) of row r in a
 * swizzled tile of `rows` rows */
__device__ __forceinline__ int sw_offset(int r, int ch, int rows)
{
    return (ch / 8) * rows * 128 + r * 128 + (((ch % 8) ^ (r % 8)) << 4);
}

/* 16 bytes global -> shared without registers; zeros when !in */
__device__ __forceinline__ void cp_async16(unsigned dst, const void *src, bool in)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(in ? 16 : 0));
}

__device__ __forceinline__ void cp_async16(unsigned dst, const void *src)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi)
{
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&v;
}

/* 2^x, flushing results below 2^-126 to 0 (probabilities that small
 * vanish beside the row's maximum, whose term is 1) */
__device__ __forceinline__ float ex2(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

/* One thread's share of the copies of a swizzled ROWS x HD tile that NT
 * threads load together: thread i takes chunk i % (HD / 8) of rows
 * i / (HD / 8) + STEP j. Those rows are STEP apart, a multiple of 8, so
 * every copy of a thread keeps its swizzle: its offsets are fixed steps
 * from the first, worked out once. */
template <int HD, int ROWS, int NT> struct tile_share {
    static constexpr int CPR = HD / 8, STEP = NT / CPR, N = ROWS / STEP;
    static_assert(STEP % 8 == 0 && ROWS % STEP == 0, "whole swizzle periods");
    int row;        /* the first row this thread copies */
    unsigned soff;  /* its shared-memory offset in the tile */
    size_t goff;    /* its element offset from the tile's first row */
    __device__ tile_share(int i, size_t stride)
    {
        int ch = i % CPR;
        row = i / CPR;
        soff = (unsigned)sw_offset(row, ch, ROWS);
        goff = (size_t)row * stride + ch * 8;
    }
    /* rows r0 .. r0 + ROWS - 1 of src into the tile at `tile`; rows at or
     * past `limit` become zeros */
    __device__ __forceinline__ void load(unsigned tile, const __nv_bfloat16 *src, size_t stride, int r0,
                                         int limit) const
    {
        const __nv_bfloat16 *p = src + (size_t)r0 * stride + goff;
        if (r0 + ROWS <= limit) {
#pragma unroll
            for (int j = 0; j < N; j++)
                cp_async16(tile + soff + j * STEP * 128, p + (size_t)j * STEP * stride);
        } else {
#pragma unroll
            for (int j = 0; j < N; j++) {
                bool in = r0 + row + j * STEP < limit;
                cp_async16(tile + soff + j * STEP * 128, in ? p + (size_t)j * STEP * stride : src, in);
            }
        }
    }
};

/* A thread's two rows (row0 and row0 + 8 of the sequence): their running
 * maxima (log2 units of the scaled score) and sums */
struct fw_rows {
    float m0, m1, l0, l1;
};

/* S = Q K^T for the warpgroup's 64 rows and a tile of KEYS keys: 16
 * elements (32 bytes) of a 128-byte row a step, the 64-wide column blocks a
 * whole tile of rows apart */
template <int HD, int KEYS> __device__ __forceinline__ void issue_scores(float *s, unsigned qs, unsigned kt)
{
    unsigned ql = sw128_lo(qs, 0), kl = sw128_lo(kt, 0);
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) {
        uint64_t qd = sw128_at(ql, (kk / 4) * FW_ROWS * 128 + (kk % 4) * 32);
        uint64_t kd = sw128_at(kl, (kk / 4) * KEYS * 128 + (kk % 4) * 32);
        if (kk == 0)
            wgmma_ss<KEYS, false>(s, qd, kd);
        else
            wgmma_ss<KEYS, true>(s, qd, kd);
    }
}

/* O += P V (O = P V where FRESH: O is born at its first product, not
 * zeroed beforehand): keys 16 kk .. 16 kk + 15 of the tile are its 8-row
 * groups 2 kk and 2 kk + 1, 2,048 bytes apart; over N columns of V's
 * stage (HD, or HD + 8 where a block of ones follows V) */
template <int HD, int KEYS, bool FRESH = false, int N = HD>
__device__ __forceinline__ void issue_pv(float *o, const uint32_t (*pa)[4], unsigned vt)
{
    unsigned vl = sw128_lo(vt, KEYS * 128);
#pragma unroll
    for (int kk = 0; kk < KEYS / 16; kk++)
        if (FRESH && kk == 0)
            wgmma_rs<N, false>(o, pa[kk], sw128_at(vl, kk * 2048));
        else
            wgmma_rs<N>(o, pa[kk], sw128_at(vl, kk * 2048));
}

/* Masks a tile's scores (only where the tile crosses the diagonal or the
 * end: a row sees keys up to min(row, seq_len - 1); as an offset from this
 * thread's first column, each column's test is one compare) and returns
 * the maxima of the thread's two rows over the tile. WIDE (the short
 * kernel's one tile of up to 208 keys) tests only the 8-key column tiles
 * that some row of the warpgroup cannot wholly see and keeps four running
 * maxima a row, so the compares do not wait on each other; the two long
 * kernels measured slower that way (Llama-3.1-8B 16 x 1,024: 0.466 ->
 * 0.474 ms a layer). */
template <int KEYS, bool WIDE = false, int NMIN = 0, int CHECK = 1>
__device__ __forceinline__ void mask_max(float *s, float &mx0, float &mx1, const struct dy_attention_prefill_desc &d,
                                         int k0, int wrow, int row0, int t)
{
    constexpr int NT = KEYS / 8;
    if (CHECK == 2 || (CHECK == 1 && (k0 + KEYS > d.seq_len || (d.causal && k0 + KEYS - 1 > wrow)))) {
        int last0 = d.causal ? min(row0, d.seq_len - 1) : d.seq_len - 1;
        int last1 = d.causal ? min(row0 + 8, d.seq_len - 1) : d.seq_len - 1;
        /* the last key every row of the warpgroup sees (the same in all
         * its threads) */
        int seen = (d.causal ? min(wrow, d.seq_len - 1) : d.seq_len - 1) - k0;
        last0 -= k0 + 2 * t;
        last1 -= k0 + 2 * t;
        if (WIDE && !d.causal) {
            /* only the end: column tiles below NMIN lie before it */
#pragma unroll
            for (int n = NMIN; n < NT; n++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    if (n * 8 + (e & 1) > last0)
                        s[n * 4 + e] = -INFINITY;
        } else {
#pragma unroll
            for (int n = 0; n < NT; n++)
                if (!WIDE || n * 8 + 7 > seen)
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        if (n * 8 + (e & 1) > (e < 2 ? last0 : last1))
                            s[n * 4 + e] = -INFINITY;
        }
    }
    if constexpr (WIDE) {
        float m0[4], m1[4];
#pragma unroll
        for (int i = 0; i < 4; i++) {
            m0[i] = fmaxf(s[i * 4], s[i * 4 + 1]);
            m1[i] = fmaxf(s[i * 4 + 2], s[i * 4 + 3]);
        }
#pragma unroll
        for (int n = 4; n < NT; n++) {
            m0[n % 4] = fmaxf(m0[n % 4], fmaxf(s[n * 4], s[n * 4 + 1]));
            m1[n % 4] = fmaxf(m1[n % 4], fmaxf(s[n * 4 + 2], s[n * 4 + 3]));
        }
        mx0 = fmaxf(fmaxf(m0[0], m0[1]), fmaxf(m0[2], m0[3]));
        mx1 = fmaxf(fmaxf(m1[0], m1[1]), fmaxf(m1[2], m1[3]));
    } else {
        mx0 = -INFINITY;
        mx1 = -INFINITY;
#pragma unroll
        for (int n = 0; n < NT; n++) {
            mx0 = fmaxf(mx0, fmaxf(s[n * 4], s[n * 4 + 1]));
            mx1 = fmaxf(mx1, fmaxf(s[n * 4 + 2], s[n * 4 + 3]));
        }
    }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
}

/* O's rows scaled by c0 and c1 (a grown maximum's correction) */
template <int HD> __device__ __forceinline__ void rescale_o(float *o, float c0, float c1)
{
#pragma unroll
    for (int j = 0; j < HD / 8; j++) {
        o[j * 4] *= c0;
        o[j * 4 + 1] *= c0;
        o[j * 4 + 2] *= c1;
        o[j * 4 + 3] *= c1;
    }
}

/* The online softmax of a tile of scores (cuda_flash.cu's): masks keys past
 * the end or the diagonal, updates the rows' maxima and sums, rescales O
 * when a maximum grew, and leaves the probabilities as bf16 A fragments */
template <int HD, int KEYS>
__device__ __forceinline__ void softmax_tile(float *s, uint32_t (*pa)[4], float *o, fw_rows &r,
                                             const struct dy_attention_prefill_desc &d, float scale, int k0,
                                             int wrow, int row0, int t)
{
    constexpr int NT = KEYS / 8;
    float mx0, mx1;
    mask_max<KEYS>(s, mx0, mx1, d, k0, wrow, row0, t);
    /* every row has a key in its warpgroup's first tile (key 0), so the
     * maxima are finite from then on and exp2(-inf - n) is 0 */
    float n0 = fmaxf(r.m0, mx0 * scale), n1 = fmaxf(r.m1, mx1 * scale);
    float c0 = ex2(r.m0 - n0), c1 = ex2(r.m1 - n1);
    float sum0 = 0.0f, sum1 = 0.0f;
#pragma unroll
    for (int n = 0; n < NT; n++) {
        float p0 = ex2(fmaf(s[n * 4], scale, -n0)), p1 = ex2(fmaf(s[n * 4 + 1], scale, -n0));
        float p2 = ex2(fmaf(s[n * 4 + 2], scale, -n1)), p3 = ex2(fmaf(s[n * 4 + 3], scale, -n1));
        sum0 += p0 + p1;
        sum1 += p2 + p3;
        pa[n / 2][(n & 1) * 2 + 0] = pack_bf16(p0, p1);
        pa[n / 2][(n & 1) * 2 + 1] = pack_bf16(p2, p3);
    }
    sum0 += __shfl_xor_sync(0xffffffffu, sum0, 1);
    sum0 += __shfl_xor_sync(0xffffffffu, sum0, 2);
    sum1 += __shfl_xor_sync(0xffffffffu, sum1, 1);
    sum1 += __shfl_xor_sync(0xffffffffu, sum1, 2);
    r.l0 = r.l0 * c0 + sum0;
    r.l1 = r.l1 * c1 + sum1;
    r.m0 = n0;
    r.m1 = n1;
    /* rescale only when some row's maximum grew (after the first tiles it
     * seldom does) */
    if (__any_sync(0xffffffffu, c0 != 1.0f || c1 != 1.0f))
        rescale_o<HD>(o, c0, c1);
}

/* O divided by the rows' sums, as bf16, into rows row0 and row0 + 8 of
 * head h of the sequence whose first row is seq0 (rows past its end are
 * not written) */
template <int HD>
__device__ __forceinline__ void store_rows(__nv_bfloat16 *out, const float *o, const fw_rows &r,
                                           const struct dy_attention_prefill_desc &d, size_t seq0, int h, int row0,
                                           int t)
{
    float inv0 = r.l0 > 0.0f ? 1.0f / r.l0 : 0.0f, inv1 = r.l1 > 0.0f ? 1.0f / r.l1 : 0.0f;
    int row1 = row0 + 8;
#pragma unroll
    for (int j = 0; j < HD / 8; j++) {
        size_t c = (size_t)h * HD + j * 8 + 2 * t;
        if (row0 < d.seq_len)
            *(uint32_t *)(out + (seq0 + row0) * d.out_stride + c) = pack_bf16(o[j * 4] * inv0, o[j * 4 + 1] * inv0);
        if (row1 < d.seq_len)
            *(uint32_t *)(out + (seq0 + row1) * d.out_stride + c) =
                pack_bf16(o[j * 4 + 2] * inv1, o[j * 4 + 3] * inv1);
    }
}

/* Warpgroup w's warp (threadIdx / 32) % 4 holds rows 16 warp + g and + 8
 * of the warpgroup's 64 (g = lane / 4), columns 8 i + 2 t and + 1 of each
 * 8-wide accumulator tile i (t = lane % 4): s[4 i .. 4 i + 3] and o
 * likewise, the mma.sync m16n8 layout, which is also the A fragments'.
 * Each tile's S, softmax and P V run in turn within a warpgroup; the two
 * warpgroups of a block (and at head dim 64 the two blocks of an SM)
 * overlap one's softmax with the other's matrix work. */
template <int HD, int KEYS>
__global__ void __launch_bounds__(FW_THREADS, fw_layout<HD, KEYS>::blocks_per_sm)
flash_wgmma_kernel(struct dy_attention_prefill_desc d, int hpb, const __nv_bfloat16 *q, const __nv_bfloat16 *k,
                   const __nv_bfloat16 *v, __nv_bfloat16 *out)
{
    constexpr int NT = KEYS / 8;
    constexpr int QB = fw_layout<HD, KEYS>::Q_BYTES, KVB = fw_layout<HD, KEYS>::KV_BYTES;
    constexpr bool PINGPONG = fw_layout<HD, KEYS>::pingpong;
    extern __shared__ __align__(1024) unsigned char smem[];
    unsigned base = (unsigned)__cvta_generic_to_shared(smem);
    base = (base + 1023u) & ~1023u;
    int tid = threadIdx.x, wg = warpgroup_index(), wtid = tid % 128;
    int warp = wtid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
    int group = d.heads / d.kv_heads, rows = FW_ROWS * 2 / hpb;
    /* causal: the longest rows first, so the short ones fill the tail */
    int q0 = (d.causal ? (int)gridDim.x - 1 - (int)blockIdx.x : (int)blockIdx.x) * rows;
    int h = (int)blockIdx.y * hpb + (hpb == 2 ? wg : 0), kvh = (int)blockIdx.y * hpb / group;
    int wrow = q0 + (hpb == 2 ? 0 : wg * FW_ROWS);
    size_t seq0 = (size_t)blockIdx.z * d.seq_len;
    unsigned qs = base + wg * QB, ks = base + 2 * QB, vs = ks + FW_STAGES * KVB;
    const __nv_bfloat16 *kb = k + seq0 * d.kv_stride + (size_t)kvh * HD;
    const __nv_bfloat16 *vb = v + seq0 * d.kv_stride + (size_t)kvh * HD;
    const tile_share<HD, KEYS, FW_THREADS> kv_share(tid, d.kv_stride);
    int key_end = d.causal ? min(d.seq_len, q0 + rows) : d.seq_len;
    int tiles = (key_end + KEYS - 1) / KEYS;
    {
        const tile_share<HD, FW_ROWS, 128> q_share(wtid, d.q_stride);
        q_share.load(qs, q + seq0 * d.q_stride + (size_t)h * HD, d.q_stride, wrow, d.seq_len);
    }
    /* per stage: `full` when every thread's copies of its tile have landed
     * (Q's too, with the first), `empty` when every thread is done with it */
    __shared__ __align__(8) uint64_t bars[2 * FW_STAGES];
    unsigned full = (unsigned)__cvta_generic_to_shared(bars), empty = full + 8 * FW_STAGES;
    if (tid == 0)
        for (int i = 0; i < 2 * FW_STAGES; i++)
            mbar_init(full + 8 * i, FW_THREADS);
    __syncthreads();
    kv_share.load(ks, kb, d.kv_stride, 0, d.seq_len);
    kv_share.load(vs, vb, d.kv_stride, 0, d.seq_len);
    mbar_arrive_copies(full);

    float o[HD / 2];
#pragma unroll
    for (int i = 0; i < HD / 2; i++)
        o[i] = 0.0f;
    fw_rows r = {-INFINITY, -INFINITY, 0.0f, 0.0f};
    const float scale = d.scale * 1.4426950408889634f; /* base 2 */
    int row0 = wrow + warp * 16 + g;
    /* the warpgroup's tiles: a warpgroup whose rows all precede a tile
     * (causal) or lie past the sequence's end only helps load it */
    int wg_last = min(wrow + FW_ROWS - 1, d.seq_len - 1);
    int live = wrow >= d.seq_len ? 0 : d.causal ? min(tiles, wg_last / KEYS + 1) : tiles;
    float s[NT * 4];
    uint32_t pa[NT / 2][4];
    /* tile j + 1 into the stage of tile j - 2, once every thread is done
     * with that: with three stages a warpgroup may run up to a tile ahead of
     * the other, so one's products keep the matrix units busy while the
     * other runs its softmax */
    auto load_ahead = [&](int j) {
        if (j + 1 < tiles) {
            int next = (j + 1) % FW_STAGES;
            if (j + 1 >= FW_STAGES)
                mbar_wait(empty + 8 * next, ((j + 1) / FW_STAGES - 1) & 1);
            kv_share.load(ks + next * KVB, kb, d.kv_stride, (j + 1) * KEYS, d.seq_len);
            kv_share.load(vs + next * KVB, vb, d.kv_stride, (j + 1) * KEYS, d.seq_len);
            mbar_arrive_copies(full + 8 * next);
        }
    };
    if (PINGPONG) {
        /* Phase j issues tile j - 1's P V and tile j's S together, then
         * waits for both and runs tile j's softmax. The warpgroups take
         * turns to issue (named barriers 1 and 2: FlashAttention-3's
         * ping-pong), so one's products run on the matrix units while the
         * other runs its softmax. Both run all tiles + 1 phases, issuing
         * nothing in those past their rows. */
        if (wg == 1)
            named_arrive(1);
        for (int j = 0; j <= tiles; j++) {
            bool pv = j >= 1 && j - 1 < live, sc = j < live;
            int stage = j % FW_STAGES, prev = (j + FW_STAGES - 1) % FW_STAGES;
            if (j < tiles) {
                mbar_wait(full + 8 * stage, (j / FW_STAGES) & 1);
                fence_async_proxy();
            }
            if (wg == 0)
                named_sync(1);
            else
                named_sync(2);
            fence_regs<HD / 2>(o);
            if (pv && sc) {
                wgmma_fence();
                issue_pv<HD, KEYS>(o, pa, vs + prev * KVB);
                issue_scores<HD, KEYS>(s, qs, ks + stage * KVB);
                wgmma_commit();
            } else if (sc) {
                wgmma_fence();
                issue_scores<HD, KEYS>(s, qs, ks + stage * KVB);
                wgmma_commit();
            } else if (pv) {
                wgmma_fence();
                issue_pv<HD, KEYS>(o, pa, vs + prev * KVB);
                wgmma_commit();
            }
            if (wg == 0)
                named_arrive(2);
            else if (j < tiles)
                named_arrive(1);
            load_ahead(j);
            wgmma_wait_all();
            fence_regs<NT * 4>(s);
            fence_regs<HD / 2>(o);
            /* tile j - 1's K (its S ran in the phase before) and V are done */
            if (j >= 1)
                mbar_arrive(empty + 8 * prev);
            if (sc)
                softmax_tile<HD, KEYS>(s, pa, o, r, d, scale, j * KEYS, wrow, row0, t);
        }
    } else {
        for (int j = 0; j < tiles; j++) {
            load_ahead(j);
            int stage = j % FW_STAGES;
            mbar_wait(full + 8 * stage, (j / FW_STAGES) & 1);
            fence_async_proxy();
            if (j < live) {
                wgmma_fence();
                issue_scores<HD, KEYS>(s, qs, ks + stage * KVB);
                wgmma_commit();
                wgmma_wait_all();
                fence_regs<NT * 4>(s);
                softmax_tile<HD, KEYS>(s, pa, o, r, d, scale, j * KEYS, wrow, row0, t);
                fence_regs<HD / 2>(o);
                wgmma_fence();
                issue_pv<HD, KEYS>(o, pa, vs + stage * KVB);
                wgmma_commit();
                wgmma_wait_all();
                fence_regs<HD / 2>(o);
            }
            mbar_arrive(empty + 8 * stage);
        }
    }
    store_rows<HD>(out, o, r, d, seq0, h, row0, t);
}

/* ---- the warp-specialized kernel: TMA loads from a producer warpgroup ----
 *
 * Three warpgroups a block. The first gives its registers back
 * (setmaxnreg) and one of its threads loads each item's Q and each K and V
 * tile with the tensor memory accelerator into STAGES stages, each with its
 * own full (the bytes landed) and empty (both consumers are done) mbarrier
 * for K and for V. The other two (240 registers a thread) are the consumers
 * of the kernel above, with FlashAttention-3's schedule within a warpgroup
 * as well as between them as written: phase j issues S_j = Q K_j^T,
 * rescales O for tile j - 1's maxima, issues O += P_{j-1} V_{j-1}, and runs
 * tile j's softmax (ptxas moves the wait for that last product above it;
 * see the loop). */

#define WS_THREADS 384 /* a producer and two consumer warpgroups */

/* the first kernel's Q and tile sizes, in STAGES stages */
template <int HD, int KEYS, int STAGES> struct ws_layout : fw_layout<HD, KEYS> {
    using F = fw_layout<HD, KEYS>;
    /* a V stage: the tile, then a 64-column block of ones */
    static constexpr int V_BYTES = F::KV_BYTES + KEYS * 128;
    static constexpr size_t bytes = 1024 + 2 * F::Q_BYTES + STAGES * (F::KV_BYTES + V_BYTES);
};

/* the tensor maps of Q, K and V (encode_map) */
struct ws_maps {
    CUtensorMap q, k, v;
};

/* rows r0 .. r0 + ROWS - 1 of head column `col` of sequence b: HD / 64
 * column blocks, each ROWS x 128 bytes */
template <int HD, int ROWS>
__device__ __forceinline__ void tma_tile(unsigned dst, const CUtensorMap *map, int col, int r0, int b, unsigned bar)
{
#pragma unroll
    for (int cb = 0; cb < HD / 64; cb++)
        tma_load(dst + cb * ROWS * 128, map, col + cb * 64, r0, b, bar);
}

/* tile j's softmax for the overlapped schedule: the probabilities stay in
 * s (f32) until the product that reads the previous ones is done; c0 and
 * c1 are what O must be scaled by before this tile's product is added.
 * SUMS: the rows' running sums in r, this thread's share (its four lanes of
 * a row add up at the end); the warp-specialized kernel has the tensor
 * cores sum P instead (P V over HD + 8 columns). CHECK: 1, mask where the tile crosses
 * the diagonal or the end (a runtime branch); 0, never; 2, always, by
 * selects alone (mask_max) */
template <int KEYS, bool FIRST, bool WIDE = false, int NMIN = 0, bool LAZY = false, int CHECK = 1, bool SUMS = true>
__device__ __forceinline__ bool ws_softmax(float *s, fw_rows &r, float &c0, float &c1,
                                           const struct dy_attention_prefill_desc &d, float scale, int k0, int wrow,
                                           int row0, int t)
{
    constexpr int NT = KEYS / 8;
    float mx0, mx1;
    mask_max<KEYS, WIDE, NMIN, CHECK>(s, mx0, mx1, d, k0, wrow, row0, t);
    float n0 = FIRST ? mx0 * scale : fmaxf(r.m0, mx0 * scale);
    float n1 = FIRST ? mx1 * scale : fmaxf(r.m1, mx1 * scale);
    /* LAZY: the rows' maxima move only where some row of the warp grew
     * past its own by more than 8 (log2 units), so the probabilities stay
     * at most 2^8 (exact in f32 and as bf16 as before) and most tiles need
     * no rescale of O; the answer (warp-uniform) says whether this one does */
    bool moved = true;
    if constexpr (LAZY && !FIRST) {
        moved = __any_sync(0xffffffffu, n0 > r.m0 + 8.0f || n1 > r.m1 + 8.0f);
        if (!moved) {
            n0 = r.m0;
            n1 = r.m1;
        }
    }
    c0 = FIRST ? 1.0f : ex2(r.m0 - n0);
    c1 = FIRST ? 1.0f : ex2(r.m1 - n1);
    /* running sums a row: four where WIDE, else one */
    constexpr int A = WIDE ? 4 : 1;
    float a0[A] = {}, a1[A] = {};
#pragma unroll
    for (int n = 0; n < NT; n++) {
        s[n * 4] = ex2(fmaf(s[n * 4], scale, -n0));
        s[n * 4 + 1] = ex2(fmaf(s[n * 4 + 1], scale, -n0));
        s[n * 4 + 2] = ex2(fmaf(s[n * 4 + 2], scale, -n1));
        s[n * 4 + 3] = ex2(fmaf(s[n * 4 + 3], scale, -n1));
        a0[n % A] += s[n * 4] + s[n * 4 + 1];
        a1[n % A] += s[n * 4 + 2] + s[n * 4 + 3];
    }
    float sum0 = a0[0], sum1 = a1[0];
#pragma unroll
    for (int i = 1; i < A; i++) {
        sum0 += a0[i];
        sum1 += a1[i];
    }
    if (SUMS) {
        r.l0 = FIRST ? sum0 : r.l0 * c0 + sum0;
        r.l1 = FIRST ? sum1 : r.l1 * c1 + sum1;
    }
    r.m0 = n0;
    r.m1 = n1;
    return !FIRST && moved;
}

template <int KEYS> __device__ __forceinline__ void ws_pack(const float *s, uint32_t (*pa)[4])
{
#pragma unroll
    for (int n = 0; n < KEYS / 8; n++) {
        pa[n / 2][(n & 1) * 2 + 0] = pack_bf16(s[n * 4], s[n * 4 + 1]);
        pa[n / 2][(n & 1) * 2 + 1] = pack_bf16(s[n * 4 + 2], s[n * 4 + 3]);
    }
}

/* which rows, heads and sequence work item `item` covers: the items run
 * from the longest causal walks (the last query rows) to the shortest, so
 * the blocks that take them in turn end together; within one row block,
 * neighbouring items are neighbouring heads of one sequence (K and V of a
 * KV head read by several blocks at once, from L2) */
struct ws_item {
    int q0, hg, b, tiles;
};

/* the item a block takes in its n-th turn: the blocks take the items in
 * turn, in the opposite order every other turn, so that the block that
 * drew a turn's longest walk draws the next turn's shortest. In the same
 * order every turn the first blocks drew the longest each time, 3 % more
 * than the mean at 4 x 4,096, left to them at the end (H200: 541-547 ->
 * 549-560 TFLOP/s). Taking the next untaken item from a device counter
 * instead measured slower (539-543, and 386-412 against 408-441 at
 * 16 x 1,024): bench/README. */
__device__ __forceinline__ int ws_turn(int n)
{
    int g = (int)gridDim.x, b = (int)blockIdx.x;
    return n * g + (n % 2 ? g - 1 - b : b);
}

__device__ __forceinline__ ws_item ws_decode(int item, const struct dy_attention_prefill_desc &d, int hpb, int rows,
                                             int keys)
{
    int hgs = d.heads / hpb, per = hgs * d.batch, nq = (d.seq_len + rows - 1) / rows;
    int qi = item / per, rem = item % per;
    ws_item w;
    w.q0 = (d.causal ? nq - 1 - qi : qi) * rows;
    w.hg = rem % hgs;
    w.b = rem / hgs;
    int key_end = d.causal ? min(d.seq_len, w.q0 + rows) : d.seq_len;
    w.tiles = (key_end + keys - 1) / keys;
    return w;
}

/* The blocks stay resident (one an SM) and walk work items (64 query rows
 * of two heads, or 128 of one, as above) in turn, so the producer loads the
 * next item's Q and first tiles while the consumers finish this one. The
 * stages' phases run on across items (a block-wide tile count). Each
 * warpgroup issues tile j's scores and tile j - 1's P V together, then
 * runs tile j's softmax while P V is in flight (FlashAttention-3's
 * intra-warpgroup overlap), and O's rows gather their sums of P through a
 * column of ones after V rather than 64 adds a tile: P V runs over HD + 8
 * columns, the stage's 8 of ones after V's, so o[HD / 2 .. HD / 2 + 3]
 * hold the rows' sums of P (as rounded to bf16, as the products see it),
 * and a grown maximum's rescale of O rescales them too. */
template <int HD, int KEYS, int STAGES>
__global__ void __launch_bounds__(WS_THREADS, 1)
flash_ws_kernel(const __grid_constant__ ws_maps maps, struct dy_attention_prefill_desc d, int hpb, int items,
                __nv_bfloat16 *out)
{
    using L = ws_layout<HD, KEYS, STAGES>;
    constexpr int NT = KEYS / 8, QB = L::Q_BYTES, KVB = L::KV_BYTES, VB = L::V_BYTES, OC = HD / 2 + 4;
    extern __shared__ __align__(1024) unsigned char smem[];
    unsigned base = (unsigned)__cvta_generic_to_shared(smem);
    base = (base + 1023u) & ~1023u;
    int tid = threadIdx.x, wg = warpgroup_index();
    int group = d.heads / d.kv_heads, rows = FW_ROWS * 2 / hpb;
    unsigned qs = base, ks = base + 2 * QB, vs = ks + STAGES * KVB;
    /* each V stage's block of ones (bf16 1.0), written once; the products
     * read it through the async proxy */
    for (int st = 0; st < STAGES; st++)
        for (int i = tid; i < KEYS * 128 / 16; i += WS_THREADS)
            asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};" ::"r"(vs + st * VB + KVB + i * 16),
                         "r"(0x3f803f80u)
                         : "memory");
    fence_async_proxy();
    /* bars: q_full, q_empty, then per stage k_full, v_full, k_empty, v_empty */
    __shared__ __align__(8) uint64_t bars[2 + 4 * STAGES];
    unsigned q_full = (unsigned)__cvta_generic_to_shared(bars), q_empty = q_full + 8;
    unsigned k_full = q_empty + 8, v_full = k_full + 8 * STAGES, k_empty = v_full + 8 * STAGES,
             v_empty = k_empty + 8 * STAGES;
    if (tid == 0) {
        mbar_init(q_full, 1);
        mbar_init(q_empty, 2);
        for (int i = 0; i < STAGES; i++) {
            mbar_init(k_full + 8 * i, 1);
            mbar_init(v_full + 8 * i, 1);
            mbar_init(k_empty + 8 * i, 2);
            mbar_init(v_empty + 8 * i, 2);
        }
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();

    if (wg == 0) {
        /* the producer */
        asm volatile("setmaxnreg.dec.sync.aligned.u32 24;\n");
        if (tid == 0) {
            int it = 0; /* tiles loaded so far */
            for (int n = 0, item = ws_turn(0); item < items; item = ws_turn(++n)) {
                ws_item w = ws_decode(item, d, hpb, rows, KEYS);
                int kvh = w.hg * hpb / group;
                /* Q once the consumers' last scores of the item before are done */
                if (n > 0)
                    mbar_wait(q_empty, (n - 1) & 1);
                mbar_expect(q_full, 2 * QB);
                for (int cw = 0; cw < 2; cw++) {
                    int h = w.hg * hpb + (hpb == 2 ? cw : 0);
                    tma_tile<HD, FW_ROWS>(qs + cw * QB, &maps.q, h * HD, w.q0 + (hpb == 2 ? 0 : cw * FW_ROWS), w.b,
                                          q_full);
                }
                /* K runs a tile ahead of V: K of tile j + 1 is wanted a
                 * phase before V of tile j, and its stage is free earlier
                 * (once the scores, not the products, have read it) */
                auto load_v = [&](int j, int x) {
                    int st = x % STAGES;
                    if (x >= STAGES)
                        mbar_wait(v_empty + 8 * st, (x / STAGES - 1) & 1);
                    mbar_expect(v_full + 8 * st, KVB);
                    tma_tile<HD, KEYS>(vs + st * VB, &maps.v, kvh * HD, j * KEYS, w.b, v_full + 8 * st);
                };
                for (int j = 0; j < w.tiles; j++, it++) {
                    int st = it % STAGES;
                    if (it >= STAGES)
                        mbar_wait(k_empty + 8 * st, (it / STAGES - 1) & 1);
                    mbar_expect(k_full + 8 * st, KVB);
                    tma_tile<HD, KEYS>(ks + st * KVB, &maps.k, kvh * HD, j * KEYS, w.b, k_full + 8 * st);
                    if (j > 0)
                        load_v(j - 1, it - 1);
                }
                load_v(w.tiles - 1, it - 1);
            }
            /* the block ends once the consumers have read the last tiles */
            for (int j = max(it - STAGES, 0); j < it; j++) {
                mbar_wait(k_empty + 8 * (j % STAGES), (j / STAGES) & 1);
                mbar_wait(v_empty + 8 * (j % STAGES), (j / STAGES) & 1);
            }
        }
        return;
    }
    asm volatile("setmaxnreg.inc.sync.aligned.u32 240;\n");
    /* a consumer warpgroup: cw 0 or 1 */
    int cw = wg - 1, wtid = tid % 128, warp = wtid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
    unsigned wq = qs + cw * QB;
    const float scale = d.scale * 1.4426950408889634f;
    /* one thread of a warpgroup arrives on an empty barrier: a wgmma is
     * the whole warpgroup's, so once it has completed for this thread it
     * has read its operands for all (CUTLASS's pipelines do the same) */
    auto release = [&](unsigned bar) {
        if (wtid == 0)
            mbar_arrive(bar);
    };
    int it = 0; /* tiles consumed so far */
    for (int n = 0, item = ws_turn(0); item < items; item = ws_turn(++n)) {
        ws_item w = ws_decode(item, d, hpb, rows, KEYS);
        int tiles = w.tiles;
        int h = w.hg * hpb + (hpb == 2 ? cw : 0);
        int wrow = w.q0 + (hpb == 2 ? 0 : cw * FW_ROWS);
        int wg_last = min(wrow + FW_ROWS - 1, d.seq_len - 1);
        int live = wrow >= d.seq_len ? 0 : d.causal ? min(tiles, wg_last / KEYS + 1) : tiles;
        int row0 = wrow + warp * 16 + g;
        float o[OC], s[NT * 4], c0 = 1.0f, c1 = 1.0f;
#pragma unroll
        for (int i = 0; i < OC; i++)
            o[i] = 0.0f;
        fw_rows r = {-INFINITY, -INFINITY, 0.0f, 0.0f};
        mbar_wait(q_full, n & 1);
        if (live > 0) {
            uint32_t pa[NT / 2][4];
            mbar_wait(k_full + 8 * (it % STAGES), (it / STAGES) & 1);
            wgmma_fence();
            issue_scores<HD, KEYS>(s, wq, ks + (it % STAGES) * KVB);
            wgmma_commit();
            wgmma_wait_all();
            fence_regs<NT * 4>(s);
            release(k_empty + 8 * (it % STAGES));
            bool moved = ws_softmax<KEYS, true, false, 0, false, 1, false>(s, r, c0, c1, d, scale, 0, wrow, row0, t);
            ws_pack<KEYS>(s, pa);
            /* tile j's scores, P V of tile j - 1, then tile j's softmax.
             * No branch may sit between wgmma.wait_group 1 and 0: at the
             * join after one, ptxas waits for every product, so the softmax
             * would not overlap P V. So the tiles that need no mask run in
             * a loop of their own without the mask's test, and the ones
             * that may (at most one a warpgroup's item) mask by selects */
            auto step = [&](int j, auto check) {
                int x = it + j, st = x % STAGES, pv = (x - 1) % STAGES;
                mbar_wait(k_full + 8 * st, (x / STAGES) & 1);
                wgmma_fence();
                issue_scores<HD, KEYS>(s, wq, ks + st * KVB);
                wgmma_commit();
                if (moved)
                    rescale_o<2 * OC>(o, c0, c1);
                mbar_wait(v_full + 8 * pv, ((x - 1) / STAGES) & 1);
                fence_regs<OC>(o);
                wgmma_fence();
                issue_pv<HD, KEYS, false, HD + 8>(o, pa, vs + pv * VB);
                wgmma_commit();
                wgmma_wait_one();
                fence_regs<NT * 4>(s);
                release(k_empty + 8 * st);
                moved = ws_softmax<KEYS, false, false, 0, true, decltype(check)::value, false>(
                    s, r, c0, c1, d, scale, j * KEYS, wrow, row0, t);
                wgmma_wait_all();
                fence_regs<OC>(o);
                release(v_empty + 8 * pv);
                ws_pack<KEYS>(s, pa);
            };
            /* the tiles before `plain` lie wholly before the sequence's end
             * and the warpgroup's first row */
            int plain = min(live, d.causal ? min(d.seq_len, wrow + 1) / KEYS : d.seq_len / KEYS), j = 1;
            for (; j < plain; j++)
                step(j, std::integral_constant<int, 0>());
            for (; j < live; j++)
                step(j, std::integral_constant<int, 2>());
            /* every score product of the item is done: Q may be replaced */
            release(q_empty);
            int x = it + live - 1, pv = x % STAGES;
            if (moved)
                rescale_o<2 * OC>(o, c0, c1);
            mbar_wait(v_full + 8 * pv, (x / STAGES) & 1);
            fence_regs<OC>(o);
            wgmma_fence();
            issue_pv<HD, KEYS, false, HD + 8>(o, pa, vs + pv * VB);
            wgmma_commit();
            wgmma_wait_all();
            fence_regs<OC>(o);
            release(v_empty + 8 * pv);
        } else {
            release(q_empty);
        }
        /* tiles past this warpgroup's rows: released unread (the producer's
         * loads wait for both warpgroups' releases) */
        for (int j = live; j < tiles; j++) {
            int x = it + j;
            mbar_wait(k_full + 8 * (x % STAGES), (x / STAGES) & 1);
            release(k_empty + 8 * (x % STAGES));
            mbar_wait(v_full + 8 * (x % STAGES), (x / STAGES) & 1);
            release(v_empty + 8 * (x % STAGES));
        }
        it += tiles;
        /* the rows' sums, from the columns of ones */
        r.l0 = o[HD / 2];
        r.l1 = o[HD / 2 + 2];
        store_rows<HD>(out, o, r, d, (size_t)w.b * d.seq_len, h, row0, t);
    }
}

/* ---- short sequences: one tile holds every key ----
 *
 * For sequences of at most 208 keys at head dim 64 (a ViT's 197 tokens)
 * the kernels above spend most of a block's short life waiting for its
 * first tiles, and their 64- or 128-key tiles pad 197 keys to 256. Here
 * the blocks stay resident (one an SM) and walk work items, each one head
 * of one sequence: its query rows (up to four 64-row chunks) and the
 * head's whole K and V (KN rows: 64, 128 or 208, the tensor maps reading
 * rows past the sequence's end as zeros) land in one of STAGES stages by
 * three TMA copies, so the next item's loads overlap this one's products.
 * Three warpgroups share an item's chunks, taking the extra one in turn
 * from item to item (a 197-row sequence has four, the last of five rows).
 * For a chunk a warpgroup computes S = Q K^T as one wgmma of KN columns a
 * k step, a single-pass softmax (no running maxima), O = P V, and stores
 * the rows. The warpgroups run unsynchronised, so one's softmax overlaps
 * the others' products: the softmax is a chain of dependent instructions,
 * and three warps a scheduler hide more of its latency than two (the
 * producer warpgroup this kernel had took a fourth of the registers; now
 * the last warpgroup done with a stage loads its next item itself). */

#define SH_CONSUMERS 3                /* warpgroups */
#define SH_THREADS (128 * SH_CONSUMERS)

template <int KN> struct sh_layout {
    /* query rows of an item: 64-row chunks to cover KN */
    static constexpr int CHUNKS = (KN + 63) / 64;
    static constexpr int Q_BYTES = CHUNKS * 64 * 128, KV_BYTES = KN * 128, STAGE = Q_BYTES + 2 * KV_BYTES;
    static constexpr int O_BYTES = 64 * 128; /* a consumer's output rows, for the TMA store */
    /* as many stages (up to 4) as 227 KB of shared memory holds beside them */
    static constexpr int ROOM = 227 * 1024 - 1024 - SH_CONSUMERS * O_BYTES;
    static constexpr int STAGES = ROOM / STAGE < 4 ? ROOM / STAGE : 4;
    static_assert(STAGES >= 2, "two stages at least");
    static constexpr size_t bytes = 1024 + (size_t)STAGES * STAGE + SH_CONSUMERS * O_BYTES;
    /* keys below the shortest sequence sent here (one past the next
     * smaller KN) are never past the end: the mask skips their columns */
    static constexpr int NMIN = KN == 208 ? 16 : KN == 128 ? 8 : 0;
};

/* the maps of Q, K and V, and of the output rows for the short kernel */
struct sh_maps : ws_maps {
    CUtensorMap o;
};

/* named barrier 3 + w over the 128 threads of consumer warpgroup w */
__device__ __forceinline__ void wg_sync(int w)
{
    asm volatile("bar.sync %0, 128;\n" ::"r"(3 + w) : "memory");
}

/* shared memory at src into box (c0, c1, c2) of the map (rows past the
 * map's end are not written), as a bulk async group of this thread */
__device__ __forceinline__ void tma_store(const CUtensorMap *map, unsigned src, int c0, int c1, int c2)
{
    asm volatile("cp.async.bulk.tensor.3d.global.shared::cta.bulk_group [%0, {%2, %3, %4}], [%1];\n"
                 "cp.async.bulk.commit_group;\n" ::"l"((uint64_t)map),
                 "r"(src), "r"(c0), "r"(c1), "r"(c2)
                 : "memory");
}

/* O divided by the rows' sums, as bf16, into a 64 x 64 tile at `tile` with
 * the 128-byte swizzle: each stmatrix.x4 stores 16 columns of the warp's
 * 16 rows (its four 8 x 8 matrices take their rows' addresses from lanes
 * 0-7, 8-15, 16-23 and 24-31; each thread's registers are the
 * accumulator's layout) */
__device__ __forceinline__ void stage_rows(unsigned tile, const float *o, const fw_rows &r, int warp, int lane)
{
    float inv0 = r.l0 > 0.0f ? 1.0f / r.l0 : 0.0f, inv1 = r.l1 > 0.0f ? 1.0f / r.l1 : 0.0f;
    int i = lane / 8, row = warp * 16 + (i & 1) * 8 + lane % 8;
#pragma unroll
    for (int jj = 0; jj < 4; jj++) {
        int chunk = 2 * jj + (i >> 1);
        unsigned a = tile + row * 128 + ((chunk ^ (row % 8)) << 4);
        const float *x = o + 8 * jj, *y = o + 8 * jj + 4;
        asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(a),
                     "r"(pack_bf16(x[0] * inv0, x[1] * inv0)), "r"(pack_bf16(x[2] * inv1, x[3] * inv1)),
                     "r"(pack_bf16(y[0] * inv0, y[1] * inv0)), "r"(pack_bf16(y[2] * inv1, y[3] * inv1))
                     : "memory");
    }
}

/* a stage's loads for work item `item` (one head h of sequence b): its
 * query rows, the head's K and V, completing the stage's full barrier */
template <int KN>
__device__ __forceinline__ void sh_load(const sh_maps &maps, unsigned sb, unsigned bar, int item,
                                        const struct dy_attention_prefill_desc &d)
{
    using L = sh_layout<KN>;
    int h = item % d.heads, b = item / d.heads, kvh = h / (d.heads / d.kv_heads);
    mbar_expect(bar, L::STAGE);
    tma_load(sb, &maps.q, h * 64, 0, b, bar);
    tma_load(sb + L::Q_BYTES, &maps.k, kvh * 64, 0, b, bar);
    tma_load(sb + L::Q_BYTES + L::KV_BYTES, &maps.v, kvh * 64, 0, b, bar);
}

template <int KN>
__global__ void __launch_bounds__(SH_THREADS, 1)
flash_short_kernel(const __grid_constant__ sh_maps maps, struct dy_attention_prefill_desc d, int items)
{
    using L = sh_layout<KN>;
    constexpr int NT = KN / 8, STAGES = L::STAGES, QB = L::Q_BYTES, KVB = L::KV_BYTES;
    extern __shared__ __align__(1024) unsigned char smem[];
    unsigned base = (unsigned)__cvta_generic_to_shared(smem);
    base = (base + 1023u) & ~1023u;
    int tid = threadIdx.x, cw = warpgroup_index(), wtid = tid % 128, warp = wtid / 32, lane = tid % 32, g = lane / 4,
        t = lane % 4;
    int chunks = (d.seq_len + 63) / 64;
    /* per stage: the full barrier (the three copies landed) and how many
     * warpgroups are done with its item */
    __shared__ __align__(8) uint64_t bars[STAGES];
    __shared__ unsigned done[STAGES];
    unsigned full = (unsigned)__cvta_generic_to_shared(bars);
    if (tid == 0) {
        for (int i = 0; i < STAGES; i++) {
            mbar_init(full + 8 * i, 1);
            done[i] = 0u;
        }
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
        for (int i = 0; i < STAGES && (int)blockIdx.x + i * (int)gridDim.x < items; i++)
            sh_load<KN>(maps, base + i * L::STAGE, full + 8 * i, (int)blockIdx.x + i * (int)gridDim.x, d);
    }
    __syncthreads();

    const float scale = d.scale * 1.4426950408889634f;
    unsigned obuf = base + STAGES * L::STAGE + cw * L::O_BYTES;
    float o[32], s[NT * 4], c0, c1;
    uint32_t pa[NT / 2][4];
    int it = 0;
    for (int item = (int)blockIdx.x; item < items; item += (int)gridDim.x, it++) {
        int st = it % STAGES, h = item % d.heads, b = item / d.heads;
        unsigned sb = base + st * L::STAGE;
        mbar_wait(full + 8 * st, (it / STAGES) & 1);
        /* this warpgroup's chunks: cw - it (mod 3) and every third after,
         * so the warpgroups take the extra chunks in turn */
        for (int c = (cw + SH_CONSUMERS - it % SH_CONSUMERS) % SH_CONSUMERS; c < chunks; c += SH_CONSUMERS) {
            int wrow = c * 64, row0 = wrow + warp * 16 + g;
            fw_rows r;
            wgmma_fence();
            issue_scores<64, KN>(s, sb + c * 64 * 128, sb + QB);
            wgmma_commit();
            wgmma_wait_all();
            fence_regs<NT * 4>(s);
            /* a warp whose 16 rows all lie past the end skips the softmax:
             * its rows of P V are never stored, so its probabilities may
             * be the raw scores (rows of a product depend on their own row
             * of P alone) */
            if (wrow + warp * 16 < d.seq_len)
                ws_softmax<KN, true, true, L::NMIN>(s, r, c0, c1, d, scale, 0, wrow, row0, t);
            else
                r.l0 = r.l1 = 0.0f;
            ws_pack<KN>(s, pa);
            wgmma_fence();
            issue_pv<64, KN, true>(o, pa, sb + QB + KVB);
            wgmma_commit();
            wgmma_wait_all();
            fence_regs<32>(o);
            /* the rows through shared memory and one TMA store, once the
             * warpgroup's previous store has read its buffer */
            r.l0 += __shfl_xor_sync(0xffffffffu, r.l0, 1);
            r.l0 += __shfl_xor_sync(0xffffffffu, r.l0, 2);
            r.l1 += __shfl_xor_sync(0xffffffffu, r.l1, 1);
            r.l1 += __shfl_xor_sync(0xffffffffu, r.l1, 2);
            if (wtid == 0)
                asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
            wg_sync(cw);
            stage_rows(obuf, o, r, warp, lane);
            fence_async_proxy();
            wg_sync(cw);
            if (wtid == 0)
                tma_store(&maps.o, obuf, h * 64, wrow, b);
        }
        /* once every thread of the warpgroup is past its products (the
         * barriers above, or none to wait for), one thread counts the
         * warpgroup done with the stage; the last of the three loads the
         * stage's next item. Every warpgroup counts after the stage's full
         * phase, so a stage's k-th item gets counts 3 k .. 3 k + 2. */
        if (wtid == 0) {
            unsigned was;
            asm volatile("atom.acq_rel.cta.shared::cta.add.u32 %0, [%1], 1;\n"
                         : "=r"(was)
                         : "r"((unsigned)__cvta_generic_to_shared(&done[st]))
                         : "memory");
            int next = item + STAGES * (int)gridDim.x;
            if (was % SH_CONSUMERS == SH_CONSUMERS - 1 && next < items) {
                fence_async_proxy();
                sh_load<KN>(maps, sb, full + 8 * st, next, d);
            }
        }
    }
    if (wtid == 0)
        asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory");
}

typedef CUresult (*tensor_map_encoder)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *, const cuuint64_t *,
                                       const cuuint64_t *, const cuuint32_t *, const cuuint32_t *,
                                       CUtensorMapInterleave, CUtensorMapSwizzle, CUtensorMapL2promotion,
                                       CUtensorMapFloatOOBfill);

/* cuTensorMapEncodeTiled from the driver, through the runtime (the plugin
 * links no libcuda); NULL where the driver has none */
static tensor_map_encoder find_encoder(void)
{
    void *fn = NULL;
    cudaDriverEntryPointQueryResult q;
#if CUDART_VERSION >= 12050
    cudaError_t e = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q);
#else
    cudaError_t e = cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &fn, cudaEnableDefault, &q);
#endif
    if (e != cudaSuccess ||
        q != cudaDriverEntryPointSuccess)
        return NULL;
    return (tensor_map_encoder)fn;
}

/* a tensor map of rows of `cols` bf16 elements `stride` apart, seq_len
 * rows a sequence, read in boxes of 64 elements (one swizzled 128-byte
 * column block) by `box_rows` rows; rows past a sequence's end read as
 * zeros */
static bool encode_map(tensor_map_encoder enc, CUtensorMap *m, const void *p, int cols, const struct dy_attention_prefill_desc *d,
                       int stride, int box_rows)
{
    cuuint64_t dim[3] = {(cuuint64_t)cols, (cuuint64_t)d->seq_len, (cuuint64_t)d->batch};
    cuuint64_t strides[2] = {(cuuint64_t)stride * 2, (cuuint64_t)d->seq_len * stride * 2};
    cuuint32_t box[3] = {64, (cuuint32_t)box_rows, 1}, step[3] = {1, 1, 1};
    return enc(m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, (void *)p, dim, strides, box, step,
               CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
               CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

/* find_encoder's answer, looked up once */
static tensor_map_encoder encoder(void)
{
    static const tensor_map_encoder enc = find_encoder();
    return enc;
}

/* the maps of Q, K and V at head dim HD, read in boxes of q_rows and
 * kv_rows rows; false where the driver cannot encode them */
static bool encode_maps(ws_maps *maps, const struct dy_attention_prefill_desc *d, int q_rows, int kv_rows)
{
    tensor_map_encoder enc = encoder();
    int hd = d->head_dim;
    return enc && encode_map(enc, &maps->q, dy_cuda_ptr(d->q), d->heads * hd, d, d->q_stride, q_rows) &&
           encode_map(enc, &maps->k, dy_cuda_ptr(d->k), d->kv_heads * hd, d, d->kv_stride, kv_rows) &&
           encode_map(enc, &maps->v, dy_cuda_ptr(d->v), d->kv_heads * hd, d, d->kv_stride, kv_rows);
}

template <int HD, int KEYS, int STAGES>
static int launch_ws(struct cuda_ctx *c, const struct dy_attention_prefill_desc *d)
{
    ws_maps maps;
    if (!encode_maps(&maps, d, FW_ROWS, KEYS))
        return DY_E_UNSUPPORTED;
    size_t bytes = ws_layout<HD, KEYS, STAGES>::bytes;
    cudaError_t e = cudaFuncSetAttribute(flash_ws_kernel<HD, KEYS, STAGES>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
    if (e != cudaSuccess)
        return dy_cuda_fail(c, e, "cudaFuncSetAttribute(warp-specialized flash prefill)");
    int group = d->heads / d->kv_heads, hpb = group % 2 == 0 ? 2 : 1, rows = FW_ROWS * 2 / hpb;
    int items = (d->seq_len + rows - 1) / rows * (d->heads / hpb) * d->batch;
    /* one resident block an SM walking the items (DYNO_CUDA_FLASH_WGMMA=3:
     * a block an item, as before the blocks stayed resident) */
    int grid = c->flash_wgmma == 3 ? items : c->flash_blocks > 0 ? c->flash_blocks : c->sm_count;
    grid = grid < items ? grid : items;
    flash_ws_kernel<HD, KEYS, STAGES>
        <<<grid, WS_THREADS, bytes, c->stream>>>(maps, *d, hpb, items, (__nv_bfloat16 *)dy_cuda_ptr(d->out));
    return dy_cuda_check_launch(c, "warp-specialized flash attention prefill");
}

/* head dim 64, at most KN keys (64, 128 or 208) */
template <int KN> static int launch_short(struct cuda_ctx *c, const struct dy_attention_prefill_desc *d)
{
    using L = sh_layout<KN>;
    sh_maps maps;
    if (d->out_stride % 8 != 0 || !dy_cuda_aligned16(dy_cuda_ptr(d->out)) ||
        !encode_maps(&maps, d, L::CHUNKS * 64, KN) ||
        !encode_map(encoder(), &maps.o, dy_cuda_ptr(d->out), d->heads * 64, d, d->out_stride, 64))
        return DY_E_UNSUPPORTED;
    cudaError_t e = cudaFuncSetAttribute(flash_short_kernel<KN>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)L::bytes);
    if (e != cudaSuccess)
        return dy_cuda_fail(c, e, "cudaFuncSetAttribute(short-sequence flash prefill)");
    int items = d->batch * d->heads; /* one head of one sequence each */
    flash_short_kernel<KN><<<(unsigned)(items < c->sm_count ? items : c->sm_count), SH_THREADS, L::bytes, c->stream>>>(
        maps, *d, items);
    return dy_cuda_check_launch(c, "short-sequence flash attention prefill");
}

template <int HD, int KEYS> static int launch(struct cuda_ctx *c, const struct dy_attention_prefill_desc *d)
{
    size_t bytes = fw_layout<HD, KEYS>::bytes;
    cudaError_t e = cudaFuncSetAttribute(flash_wgmma_kernel<HD, KEYS>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
    if (e != cudaSuccess)
        return dy_cuda_fail(c, e, "cudaFuncSetAttribute(wgmma flash prefill)");
    /* two query heads of one KV head share each K/V tile where the group allows */
    int group = d->heads / d->kv_heads, hpb = group % 2 == 0 ? 2 : 1, rows = FW_ROWS * 2 / hpb;
    dim3 grid((unsigned)((d->seq_len + rows - 1) / rows), (unsigned)(d->heads / hpb), (unsigned)d->batch);
    flash_wgmma_kernel<HD, KEYS><<<grid, FW_THREADS, bytes, c->stream>>>(
        *d, hpb, (const __nv_bfloat16 *)dy_cuda_ptr(d->q), (const __nv_bfloat16 *)dy_cuda_ptr(d->k),
        (const __nv_bfloat16 *)dy_cuda_ptr(d->v), (__nv_bfloat16 *)dy_cuda_ptr(d->out));
    return dy_cuda_check_launch(c, "wgmma flash attention prefill");
}

int dy_cuda_flash_wgmma(struct cuda_ctx *c, const struct dy_attention_prefill_desc *d)
{
    /* dy_cuda_flash_prefill has checked the rest (head dim 64 or 128, whole
     * GQA groups, 16-byte aligned rows of K and V); here bf16 rows and Q's
     * rows 16-byte aligned too, for cp.async */
    if (!c->flash_wgmma || d->dtype != DY_BF16 || d->q_stride % 8 != 0)
        return DY_E_UNSUPPORTED;
    /* head dim 64 and at most 208 keys (a ViT's 197 tokens): the
     * short-sequence kernel, K and V whole in one tile */
    if (c->flash_wgmma == 2 && d->head_dim == 64 && d->seq_len <= 208) {
        int n = d->seq_len;
        int st = n <= 64 ? launch_short<64>(c, d) : n <= 128 ? launch_short<128>(c, d) : launch_short<208>(c, d);
        if (st != DY_E_UNSUPPORTED)
            return st;
    }
    /* head dim 128: the warp-specialized kernel with two stages (three
     * measured slower; at head dim 64 it measured slower than the cp.async
     * kernel, which serves the sequences too long for the one above) */
    if (c->flash_wgmma >= 2 && d->head_dim == 128) {
        int st = launch_ws<128, 128, 2>(c, d);
        if (st != DY_E_UNSUPPORTED)
            return st;
    }
    /* head dim 128: 128-key tiles (248 registers a thread, one block an
     * SM); 64: 64-key tiles, two blocks an SM */
    return d->head_dim == 64 ? launch<64, 64>(c, d) : launch<128, 128>(c, d);
}
