/* Decode attention, the vectorised kernel: head dims 64 and 128, caches
 * aligned to 16 bytes, every cache dtype (f32, f16, bf16, fp8, int8 with
 * scales). It streams the cache once and is bound by memory bandwidth when
 * enough bytes are in flight, so:
 *  - each warp copies its tiles of TILE keys' K and V rows (and int8
 *    scales) into its own shared memory with asynchronous copies, `stages`
 *    tiles deep, so tens of KB per block are in flight whatever the
 *    registers allow, and warps wait only for their own copies;
 *  - a warp is DY_WARP / LPT token groups; a group of LPT lanes takes KEYS
 *    keys of each tile, each lane HD / LPT elements of every query head of
 *    the GQA group, read from shared memory in 16-byte (or 8-byte) chunks;
 *  - the online softmax is rescaled once per KEYS keys, and only when some
 *    lane's maximum grew (a warp vote; elsewhere the factor is 1);
 *  - q carries the softmax scale and log2(e): scores are in log2 units and
 *    each weight is one exp2;
 *  - int8 scales fold into the score (key) and the weight (value); fp8
 *    becomes f16 two bytes at a time, exactly.
 * The token groups, then the warps, are merged at the end; several splits
 * of the context are merged by merge_splits_kernel (cuda_attention.cu). */
#include <math.h>

#include "cuda_decode.h"
#include "cuda_quant.h"

#define KEYS 2                     /* keys per token group and tile */
#define AHEAD_BYTES (8 << 10)      /* cache bytes a warp keeps in flight */
#define MAX_STAGES 8

/* ---- asynchronous copies to shared memory -------------------------------
 * cp.async from sm_80 on, completing in commit groups; elsewhere (HIP) plain
 * copies, complete at once, so the waits have nothing to wait for. An
 * invalid source fills zeros and reads nothing. */
#if !DY_HIP && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define DY_CP_ASYNC 1
#else
#define DY_CP_ASYNC 0
#endif

__device__ __forceinline__ void copy16(void *dst, const void *src, bool valid)
{
#if DY_CP_ASYNC
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"((unsigned)__cvta_generic_to_shared(dst)),
                 "l"(src), "r"(valid ? 16 : 0)
                 : "memory");
#else
    *(uint4 *)dst = valid ? *(const uint4 *)src : make_uint4(0u, 0u, 0u, 0u);
#endif
}

__device__ __forceinline__ void copy4(void *dst, const void *src, bool valid)
{
#if DY_CP_ASYNC
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"((unsigned)__cvta_generic_to_shared(dst)),
                 "l"(src), "r"(valid ? 4 : 0)
                 : "memory");
#else
    *(float *)dst = valid ? *(const float *)src : 0.0f;
#endif
}

__device__ __forceinline__ void copy_commit()
{
#if DY_CP_ASYNC
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

/* Waits until at most `pending` (< MAX_STAGES) commit groups are in flight. */
__device__ __forceinline__ void copy_wait(int pending)
{
#if DY_CP_ASYNC
    switch (pending) {
#define DY_WAIT(n) case n: asm volatile("cp.async.wait_group " #n ";\n" ::: "memory"); break;
    DY_WAIT(0) DY_WAIT(1) DY_WAIT(2) DY_WAIT(3) DY_WAIT(4) DY_WAIT(5)
    default: asm volatile("cp.async.wait_group 6;\n" ::: "memory"); break;
#undef DY_WAIT
    }
#endif
}

/* ---- the cache dtype at compile time ---------------------------------- */
template <enum dy_dtype CT> struct cache_type {
    static constexpr int bytes = CT == DY_F32 ? 4 : CT == DY_F16 || CT == DY_BF16 ? 2 : 1;
    static constexpr int per_word = 4 / bytes; /* elements in 32 bits */
};

/* The elements of one 32-bit word of the cache, exactly. */
template <enum dy_dtype CT> __device__ __forceinline__ void unpack_word(uint32_t w, float *out)
{
    if constexpr (CT == DY_FP8 || CT == DY_I8) {
        dy_cuda_unpack4<CT>(w, out);
    } else if constexpr (CT == DY_BF16) {
        out[0] = __uint_as_float(w << 16);
        out[1] = __uint_as_float(w & 0xffff0000u);
    } else if constexpr (CT == DY_F16) {
        float2 f = __half22float2(*(const __half2 *)&w);
        out[0] = f.x;
        out[1] = f.y;
    } else {
        out[0] = __uint_as_float(w);
    }
}

/* A lane's EPL elements are chunks of CPL elements (16 bytes, or the lane's
 * 8) LPT chunks apart, so that the LPT lanes of a token group read
 * consecutive chunks of a row (no shared-memory bank conflicts): element e
 * of lane l is this one of the head. */
template <int LPT, int CPL>
__device__ __forceinline__ int head_element(int l, int e)
{
    return ((e / CPL) * LPT + l) * CPL + e % CPL;
}

/* One tile's rows for one lane: KEYS keys' K and V words, int8 scales. */
template <int WORDS> struct tile_rows {
    uint32_t k[KEYS][WORDS], v[KEYS][WORDS];
    float k_scale[KEYS], v_scale[KEYS];
    bool valid[KEYS];
};

/* A warp's tile in shared memory: K rows [TILE][ROW], V rows [TILE][ROW],
 * then for int8 the K and V scales [TILE] each. The warp's lanes copy it,
 * DY_WARP / TILE lanes a row, so each lane looks up one slot. */
template <int ROW, int TILE, bool INT8>
__device__ __forceinline__ void load_tile(unsigned char *buf, const struct dy_attention_decode_desc &d,
                                          const uint8_t *kc, const uint8_t *vc, const float *ks, const float *vs,
                                          const int32_t *blocks, int block_shift, int kvh, int first, int end)
{
    constexpr int PARTS = ROW / 16, LANES = DY_WARP / TILE;
    static_assert(DY_WARP % TILE == 0 && PARTS % LANES == 0, "whole 16-byte parts per lane");
    int lane = threadIdx.x % DY_WARP, row = lane / LANES, key = first + row;
    bool valid = key < end;
    size_t slot = 0;
    if (valid) {
        /* block sizes are powers of two in practice: a shift, not a division */
        int index = block_shift >= 0 ? key >> block_shift : key / d.block_size;
        int offset = block_shift >= 0 ? key & ((1 << block_shift) - 1) : key % d.block_size;
        slot = (size_t)blocks[index] * d.block_size + offset;
    }
    size_t off = (slot * d.kv_heads + kvh) * ROW;
#pragma unroll
    for (int part = lane % LANES; part < PARTS; part += LANES) {
        copy16(buf + row * ROW + part * 16, kc + off + part * 16, valid);
        copy16(buf + (TILE + row) * ROW + part * 16, vc + off + part * 16, valid);
    }
    if constexpr (INT8) {
        if (lane % LANES == 0) {
            float *scales = (float *)(buf + 2 * TILE * ROW);
            copy4(scales + row, ks + slot * d.kv_heads + kvh, valid);
            copy4(scales + TILE + row, vs + slot * d.kv_heads + kvh, valid);
        }
    }
}

/* 2^x by the approximate unit (what exp2f also uses), flushing results
 * below 2^-126 to zero: weights that small do not count beside the
 * maximum's 1. */
__device__ __forceinline__ float fast_exp2(float x)
{
#if DY_HIP
    return exp2f(x);
#else
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
#endif
}

/* One tile for one lane: the KEYS keys' scores for every head of the
 * group, the online softmax (log2 units), the weighted values into acc. */
template <int EPL, int LPT, int G, enum dy_dtype CT>
__device__ __forceinline__ void attend(const tile_rows<EPL / cache_type<CT>::per_word> &r,
                                       const float (&qv)[G][EPL], float (&acc)[G][EPL], float (&m)[G], float (&l)[G])
{
    constexpr int EPW = cache_type<CT>::per_word, WORDS = EPL / EPW;
    float dot[G][KEYS];
#pragma unroll
    for (int g = 0; g < G; g++)
#pragma unroll
        for (int u = 0; u < KEYS; u++)
            dot[g][u] = 0.0f;
#pragma unroll
    for (int w = 0; w < WORDS; w++)
#pragma unroll
        for (int u = 0; u < KEYS; u++) {
            float kf[EPW];
            unpack_word<CT>(r.k[u][w], kf);
#pragma unroll
            for (int i = 0; i < EPW; i++)
#pragma unroll
                for (int g = 0; g < G; g++)
                    dot[g][u] = fmaf(qv[g][w * EPW + i], kf[i], dot[g][u]);
        }
#pragma unroll
    for (int g = 0; g < G; g++)
#pragma unroll
        for (int u = 0; u < KEYS; u++)
#pragma unroll
            for (int o = LPT / 2; o > 0; o >>= 1)
                dot[g][u] += __shfl_xor_sync(0xffffffffu, dot[g][u], o);
    float weight[G][KEYS], corr[G];
    bool grew = false;
#pragma unroll
    for (int g = 0; g < G; g++) {
        float s[KEYS], m_new = m[g];
#pragma unroll
        for (int u = 0; u < KEYS; u++) {
            s[u] = r.valid[u] ? (CT == DY_I8 ? dot[g][u] * r.k_scale[u] : dot[g][u]) : -INFINITY;
            m_new = fmaxf(m_new, s[u]);
        }
        /* 1 where the maximum stayed: no NaN from -inf - -inf before any key */
        corr[g] = m_new > m[g] ? fast_exp2(m[g] - m_new) : 1.0f;
        grew |= m_new > m[g];
        float sum = 0.0f;
#pragma unroll
        for (int u = 0; u < KEYS; u++) {
            float p = r.valid[u] ? fast_exp2(s[u] - m_new) : 0.0f;
            sum += p;
            weight[g][u] = CT == DY_I8 ? p * r.v_scale[u] : p;
        }
        l[g] = l[g] * corr[g] + sum;
        m[g] = m_new;
    }
    /* the maximum settles after a few keys: most tiles skip the rescale */
    if (__any_sync(0xffffffffu, grew)) {
#pragma unroll
        for (int g = 0; g < G; g++)
#pragma unroll
            for (int e = 0; e < EPL; e++)
                acc[g][e] *= corr[g];
    }
#pragma unroll
    for (int w = 0; w < WORDS; w++) {
        float vf[KEYS][EPW];
#pragma unroll
        for (int u = 0; u < KEYS; u++)
            unpack_word<CT>(r.v[u][w], vf[u]);
#pragma unroll
        for (int i = 0; i < EPW; i++)
#pragma unroll
            for (int g = 0; g < G; g++)
#pragma unroll
                for (int u = 0; u < KEYS; u++)
                    acc[g][w * EPW + i] = fmaf(weight[g][u], vf[u][i], acc[g][w * EPW + i]);
    }
}

/* Ends a block: merges the warp's token groups (lanes LPT apart hold the
 * same elements), then the warps through shared memory (`sm_acc`, the
 * tiles' space, DECODE_WARPS * MAX_GROUP * HD floats), and writes the
 * output (one split) or this split's partial. m in natural-log units. */
template <int HD, int LPT, int G, int CPL>
__device__ __forceinline__ void finish(const struct dy_attention_decode_desc &d, float (&m)[G], float (&l)[G],
                                       float (&acc)[G][HD / LPT], float *sm_acc, int group, int h0, int split,
                                       int splits, void *out, float *partials)
{
    constexpr int EPL = HD / LPT;
    __shared__ float sm_m[DECODE_WARPS][MAX_GROUP], sm_l[DECODE_WARPS][MAX_GROUP];
    int warp = threadIdx.x / DY_WARP, lane = threadIdx.x % DY_WARP, b = blockIdx.x;
#pragma unroll
    for (int o = LPT; o < DY_WARP; o <<= 1) {
#pragma unroll
        for (int g = 0; g < G; g++) {
            float m2 = __shfl_xor_sync(0xffffffffu, m[g], o), l2 = __shfl_xor_sync(0xffffffffu, l[g], o);
            float m_new = fmaxf(m[g], m2);
            float w1 = merge_weight(m[g], m_new), w2 = merge_weight(m2, m_new);
            l[g] = l[g] * w1 + l2 * w2;
#pragma unroll
            for (int e = 0; e < EPL; e++) {
                float a2 = __shfl_xor_sync(0xffffffffu, acc[g][e], o);
                acc[g][e] = acc[g][e] * w1 + a2 * w2;
            }
            m[g] = m_new;
        }
    }
    if (lane < LPT) {
#pragma unroll
        for (int g = 0; g < G; g++) {
            if (g >= group)
                break;
            if (lane == 0) {
                sm_m[warp][g] = m[g];
                sm_l[warp][g] = l[g];
            }
#pragma unroll
            for (int e = 0; e < EPL; e++)
                sm_acc[(warp * MAX_GROUP + g) * HD + head_element<LPT, CPL>(lane, e)] = acc[g][e];
        }
    }
    __syncthreads();
    for (int g = 0; g < group; g++) {
        float mm = -INFINITY;
        for (int w = 0; w < DECODE_WARPS; w++)
            mm = fmaxf(mm, sm_m[w][g]);
        float ll = 0.0f;
        for (int w = 0; w < DECODE_WARPS; w++)
            ll += sm_l[w][g] * merge_weight(sm_m[w][g], mm);
        for (int i = threadIdx.x; i < HD; i += blockDim.x) {
            float a = 0.0f;
            for (int w = 0; w < DECODE_WARPS; w++)
                a += sm_acc[(w * MAX_GROUP + g) * HD + i] * merge_weight(sm_m[w][g], mm);
            int h = h0 + g;
            if (splits == 1) {
                dy_store_f32(out, d.dtype, (size_t)b * d.out_stride + (size_t)h * HD + i, a / ll);
            } else {
                float *p = partials + (((size_t)b * d.heads + h) * splits + split) * (HD + 2);
                p[2 + i] = a;
                if (i == 0) {
                    p[0] = mm;
                    p[1] = ll;
                }
            }
        }
    }
}

template <int HD, int LPT, enum dy_dtype CT> struct fast_layout {
    static constexpr int bytes = cache_type<CT>::bytes;
    static constexpr int row = HD * bytes;                /* bytes of one head's row */
    static constexpr int tile = (DY_WARP / LPT) * KEYS;     /* a warp's keys per tile */
    static constexpr int tile_bytes = 2 * tile * row + (CT == DY_I8 ? 2 * tile * 4 : 0);
    static constexpr int finish_bytes = DECODE_WARPS * MAX_GROUP * HD * 4;
};

/* Blocks per multiprocessor to fit the registers for (warps to hide
 * latency with): up to group 4, 16 lanes a key leave 4 blocks room, and a
 * one-byte cache's state at 8 lanes fits 3 without spilling. */
template <int LPT, int G, enum dy_dtype CT> constexpr int min_blocks()
{
    return G <= 4 && LPT == 16 ? 4 : cache_type<CT>::bytes == 1 && G <= 4 ? 3 : 2;
}

/* Grid (batch, KV heads, splits) of DECODE_WARPS warps; `group` <= G heads
 * live. Warp w takes tiles w, w + DECODE_WARPS, ... of the block's keys
 * through its `stages` tiles of shared memory (dynamic). */
template <int HD, int LPT, int G, enum dy_dtype CT>
__global__ void __launch_bounds__(DECODE_WARPS * DY_WARP, (min_blocks<LPT, G, CT>()))
decode_fast_kernel(struct dy_attention_decode_desc d, const void *q, const uint8_t *kc, const uint8_t *vc,
                   const float *ks, const float *vs, const int32_t *table, const int32_t *lens, void *out,
                   float *partials, int splits, int tokens_per_split, int head0, int group, int block_shift,
                   int stages)
{
    typedef fast_layout<HD, LPT, CT> layout;
    constexpr int TPW = DY_WARP / LPT, EPL = HD / LPT, EPW = cache_type<CT>::per_word, WORDS = EPL / EPW;
    constexpr int LANE_BYTES = EPL * layout::bytes, CHUNK = LANE_BYTES < 16 ? LANE_BYTES : 16;
    constexpr int CPL = CHUNK / layout::bytes, TILE = layout::tile;
    static_assert(TPW >= 1 && LANE_BYTES % 8 == 0 && LANE_BYTES % CHUNK == 0, "8- or 16-byte chunks per lane");
    extern __shared__ __align__(16) unsigned char smem[];
    int warp = threadIdx.x / DY_WARP, lane = threadIdx.x % DY_WARP;
    int tg = lane / LPT, l8 = lane % LPT;
    int b = blockIdx.x, kvh = blockIdx.y, split = blockIdx.z;
    int h0 = kvh * (d.heads / d.kv_heads) + head0;
    int len = lens[b];
    int start = split * tokens_per_split, end = min(len, start + tokens_per_split);
    /* this warp's tiles start at first + t * stride */
    int first = start + warp * TILE, stride = DECODE_WARPS * TILE;
    int tiles = end > first ? (end - first + stride - 1) / stride : 0;
    const int32_t *blocks = table + (size_t)b * d.max_blocks_per_seq;
    unsigned char *space = smem + (size_t)warp * stages * layout::tile_bytes;
    /* The lengths and block tables come from the host. Keys before
     * `settled` were not written by the kernel before this one (the
     * append; d.fresh_tokens), so the first tiles that hold only such keys
     * are on their way before the wait: the cache's latency overlaps the
     * append instead of following it (H200, Llama-3.1-8B b1 after 1,024
     * tokens: 4.575 -> 4.558 ms a step; OLMoE 1.255 -> 1.246). */
    int settled = d.fresh_tokens > 0 ? len - d.fresh_tokens : 0, s = 0;
    for (; s < stages - 1 && s < tiles && min(end, first + s * stride + TILE) <= settled; s++) {
        load_tile<layout::row, TILE, CT == DY_I8>(space + s * layout::tile_bytes, d, kc, vc, ks, vs, blocks,
                                                  block_shift, kvh, first + s * stride, end);
        copy_commit();
    }
    DY_GRID_ENTER();
    for (; s < stages - 1; s++) {
        if (s < tiles)
            load_tile<layout::row, TILE, CT == DY_I8>(space + s * layout::tile_bytes, d, kc, vc, ks, vs, blocks,
                                                      block_shift, kvh, first + s * stride, end);
        copy_commit();
    }
    const float q_scale = d.scale * 1.4426950408889634f; /* log2(e): scores in log2 units */
    float qv[G][EPL], acc[G][EPL], m[G], l[G];
#pragma unroll
    for (int g = 0; g < G; g++) {
        m[g] = -INFINITY;
        l[g] = 0.0f;
#pragma unroll
        for (int e = 0; e < EPL; e++) {
            acc[g][e] = 0.0f;
            size_t at = (size_t)b * d.q_stride + (size_t)(h0 + g) * HD + head_element<LPT, CPL>(l8, e);
            qv[g][e] = g < group ? q_scale * dy_load_f32(q, d.dtype, at) : 0.0f;
        }
    }
    for (int t = 0; t < tiles; t++) {
        copy_wait(stages - 2);
        __syncwarp(); /* tile t is in; every lane is done with tile t - 1 */
        if (t + stages - 1 < tiles)
            load_tile<layout::row, TILE, CT == DY_I8>(space + (t + stages - 1) % stages * layout::tile_bytes, d,
                                                      kc, vc, ks, vs, blocks, block_shift, kvh,
                                                      first + (t + stages - 1) * stride, end);
        copy_commit();
        const unsigned char *buf = space + t % stages * layout::tile_bytes;
        tile_rows<WORDS> r;
#pragma unroll
        for (int u = 0; u < KEYS; u++) {
            int row = u * TPW + tg;
            r.valid[u] = first + t * stride + row < end;
#pragma unroll
            for (int c = 0; c < LANE_BYTES / CHUNK; c++) {
                int at = row * layout::row + (c * LPT + l8) * CHUNK;
                const unsigned char *kp = buf + at, *vp = buf + TILE * layout::row + at;
                if constexpr (CHUNK == 16) {
                    uint4 kx = *(const uint4 *)kp, vx = *(const uint4 *)vp;
                    r.k[u][4 * c] = kx.x; r.k[u][4 * c + 1] = kx.y; r.k[u][4 * c + 2] = kx.z; r.k[u][4 * c + 3] = kx.w;
                    r.v[u][4 * c] = vx.x; r.v[u][4 * c + 1] = vx.y; r.v[u][4 * c + 2] = vx.z; r.v[u][4 * c + 3] = vx.w;
                } else {
                    uint2 kx = *(const uint2 *)kp, vx = *(const uint2 *)vp;
                    r.k[u][2 * c] = kx.x; r.k[u][2 * c + 1] = kx.y;
                    r.v[u][2 * c] = vx.x; r.v[u][2 * c + 1] = vx.y;
                }
            }
            if constexpr (CT == DY_I8) {
                const float *scales = (const float *)(buf + 2 * TILE * layout::row);
                r.k_scale[u] = scales[row];
                r.v_scale[u] = scales[TILE + row];
            }
        }
        attend<EPL, LPT, G, CT>(r, qv, acc, m, l);
    }
    copy_wait(0);
    __syncthreads(); /* the tiles' space becomes the merge's */
#pragma unroll
    for (int g = 0; g < G; g++)
        m[g] *= 0.6931471805599453f; /* back to natural-log units for the merges */
    finish<HD, LPT, G, CPL>(d, m, l, acc, (float *)smem, group, h0, split, splits, out, partials);
}

template <int HD, int LPT, int G, enum dy_dtype CT>
static int launch(struct cuda_ctx *c, const struct dy_attention_decode_desc *d, dim3 grid, int splits,
                  int tokens_per_split, int head0, int group, int block_shift)
{
    typedef fast_layout<HD, LPT, CT> layout;
    /* AHEAD_BYTES per warp in flight beside the tile in use, as far as the
     * device's shared memory allows (the static part is 256 bytes) */
    int stages = 1 + (AHEAD_BYTES + layout::tile_bytes - 1) / layout::tile_bytes;
    stages = stages > MAX_STAGES ? MAX_STAGES : stages;
    while (stages > 2 && DECODE_WARPS * stages * layout::tile_bytes + 256 > c->smem_per_block)
        stages--;
    size_t bytes = (size_t)DECODE_WARPS * stages * layout::tile_bytes;
    bytes = bytes > layout::finish_bytes ? bytes : layout::finish_bytes;
    if (bytes + 256 > (size_t)c->smem_per_block)
        return DY_E_UNSUPPORTED;
    void (*kernel)(struct dy_attention_decode_desc, const void *, const uint8_t *, const uint8_t *, const float *,
                   const float *, const int32_t *, const int32_t *, void *, float *, int, int, int, int, int, int) =
        decode_fast_kernel<HD, LPT, G, CT>;
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
    if (e != cudaSuccess)
        return dy_cuda_fail(c, e, "cudaFuncSetAttribute(attention_decode)");
    bool int8 = CT == DY_I8;
    dy_launch(c, kernel, grid, DECODE_WARPS * DY_WARP, bytes, *d, dy_cuda_ptr(d->q), dy_cuda_ptr(d->k_cache),
              dy_cuda_ptr(d->v_cache), int8 ? dy_cuda_ptr(d->k_scale) : NULL, int8 ? dy_cuda_ptr(d->v_scale) : NULL,
              dy_cuda_ptr(d->block_table), dy_cuda_ptr(d->context_lens), dy_cuda_ptr(d->out), c->partials, splits,
              tokens_per_split, head0, group, block_shift, stages);
    return dy_cuda_check_launch(c, "attention_decode");
}

/* Lanes per key. At dim 128, 8 (a lane holds 16 elements: 16 bytes of
 * fp8/int8, 32 of f16/bf16) or 16, whose state is half the registers, so
 * 4 blocks fit a multiprocessor instead of 2 or 3. Measured on an H100 at
 * Llama-3.1-8B's group of 4 (bench/cuda/kv_bench.c): 16 lanes won for
 * bf16 everywhere (batch 64 x 2048: 225 against 249 us a layer) and for
 * fp8/int8 on short splits (batch 1 x 8192, 63 keys a split: 37 against
 * 52 us), 8 lanes for fp8/int8 on long ones (batch 64 x 2048, 683 keys:
 * 192 against 199 us; batch 16 x 4096, 456 keys: 114 against 119). Groups
 * of 1 and 2 have registers to spare at 8 lanes; the group of 8 needs 16.
 * At dim 64, 4 lanes for one-byte caches (16 bytes each) and 8 for the
 * others. */
template <enum dy_dtype CT>
static int launch_for(struct cuda_ctx *c, const struct dy_attention_decode_desc *d, dim3 grid, int splits,
                      int tokens_per_split, int head0, int group, int block_shift)
{
    constexpr bool byte_cache = cache_type<CT>::bytes == 1;
#define DY_FAST(HD, LPT, G) \
    return launch<HD, LPT, G, CT>(c, d, grid, splits, tokens_per_split, head0, group, block_shift)
    if (d->head_dim == 128) {
        if (group <= 1) DY_FAST(128, 8, 1);
        if (group <= 2) DY_FAST(128, 8, 2);
        if (group <= 4 && byte_cache && tokens_per_split > 256) DY_FAST(128, 8, 4);
        if (group <= 4) DY_FAST(128, 16, 4);
        DY_FAST(128, 16, 8);
    }
    if (group <= 1) DY_FAST(64, byte_cache ? 4 : 8, 1);
    if (group <= 2) DY_FAST(64, byte_cache ? 4 : 8, 2);
    if (group <= 4) DY_FAST(64, byte_cache ? 4 : 8, 4);
    DY_FAST(64, 8, 8);
#undef DY_FAST
}

int dy_cuda_decode_fast(struct cuda_ctx *c, const struct dy_attention_decode_desc *d, dim3 grid, int splits,
                        int tokens_per_split, int head0, int group)
{
    int block_shift = -1;
    for (int s = 0; s < 31; s++)
        if (d->block_size == 1 << s)
            block_shift = s;
    switch (d->cache_dtype) {
    case DY_F32: return launch_for<DY_F32>(c, d, grid, splits, tokens_per_split, head0, group, block_shift);
    case DY_F16: return launch_for<DY_F16>(c, d, grid, splits, tokens_per_split, head0, group, block_shift);
    case DY_BF16: return launch_for<DY_BF16>(c, d, grid, splits, tokens_per_split, head0, group, block_shift);
    case DY_FP8: return launch_for<DY_FP8>(c, d, grid, splits, tokens_per_split, head0, group, block_shift);
    default: return launch_for<DY_I8>(c, d, grid, splits, tokens_per_split, head0, group, block_shift);
    }
}
