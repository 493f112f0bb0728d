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
 *  - a token group's scores are summed by a reduce-scatter over its lanes
 *    and each lane does one score's softmax (spread_softmax), where the
 *    group's G x KEYS scores fit one a lane;
 *  - the online softmax is rescaled once per KEYS keys, and only when some
 *    lane's maximum grew (a warp vote; elsewhere the factor is 1);
 *  - q carries the softmax scale and log2(e): scores are in log2 units and
 *    each weight is one exp2;
 *  - int8 scales fold into the score (key) and the weight (value); fp8
 *    becomes f16 two bytes at a time, exactly.
 * The token groups, then the warps, are merged at the end; several splits
 * of the context are merged by merge_splits_kernel (cuda_attention.cu).
 * At a decode batch the kernel is bound by its instructions, not the
 * cache: on an H200 at 64 x 1,536 (bf16) the same loop without the
 * arithmetic streams the cache at 0.95 of the copy bandwidth, the whole
 * kernel at 0.89 (0.70 before the spread softmax and the stage counters;
 * bench/README, twentieth session). */
#include <math.h>

#include "cuda_decode.h"
#include "cuda_quant.h"

#if DY_HIP
#define cudaOccupancyMaxActiveBlocksPerMultiprocessor(n, fn, threads, smem) \
    hipOccupancyMaxActiveBlocksPerMultiprocessor(n, (const void *)(fn), threads, smem)
#endif

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

/* A warp's tile in shared memory: K rows [TILE][PITCH], V rows
 * [TILE][PITCH] (ROW bytes of each), then for int8 the K and V scales
 * [TILE] each. The warp's lanes copy it, DY_WARP / TILE lanes a row, so
 * each lane looks up one slot. kc, vc, ks and vs point at the block's KV
 * head in slot 0. */
template <int ROW, int TILE, bool INT8, int PITCH = ROW>
__device__ __forceinline__ void load_tile(unsigned char *buf, const struct dy_attention_decode_desc &d,
                                          const uint8_t *kc, const uint8_t *vc, const float *ks, const float *vs,
                                          const int32_t *blocks, int block_shift, int first, int end)
{
    constexpr int PARTS = ROW / 16, LANES = DY_WARP / TILE;
    static_assert(DY_WARP % TILE == 0 && PARTS % LANES == 0, "whole 16-byte parts per lane");
    int lane = threadIdx.x % DY_WARP, row = lane / LANES, key = first + row;
    bool valid = key < end;
    unsigned slot = 0;
    if (valid) {
        /* block sizes are powers of two in practice: a shift, not a division */
        if (block_shift >= 0)
            slot = ((unsigned)blocks[key >> block_shift] << block_shift) | (key & ((1u << block_shift) - 1));
        else
            slot = (unsigned)blocks[key / d.block_size] * d.block_size + key % d.block_size;
    }
    size_t off = (size_t)slot * (unsigned)(d.kv_heads * ROW);
#pragma unroll
    for (int part = lane % LANES; part < PARTS; part += LANES) {
        copy16(buf + row * PITCH + part * 16, kc + off + part * 16, valid);
        copy16(buf + (TILE + row) * PITCH + part * 16, vc + off + part * 16, valid);
    }
    if constexpr (INT8) {
        if (lane % LANES == 0) {
            float *scales = (float *)(buf + 2 * TILE * PITCH);
            copy4(scales + row, ks + (size_t)slot * d.kv_heads, valid);
            copy4(scales + TILE + row, vs + (size_t)slot * d.kv_heads, valid);
        }
    }
}

/* A warp's keys: the tiles first + t * stride, t < tiles, of its block's
 * split [start, end) of the sequence's len keys, W warps a block, TILE keys
 * a tile. */
struct warp_keys {
    int len, end, first, stride, tiles;
};

__device__ __forceinline__ warp_keys keys_of(int len, int split, int tokens_per_split, int warps, int tile)
{
    warp_keys w;
    int start = split * tokens_per_split, warp = threadIdx.x / DY_WARP;
    w.len = len;
    w.end = min(len, start + tokens_per_split);
    w.first = start + warp * tile;
    w.stride = warps * tile;
    w.tiles = w.end > w.first ? (w.end - w.first + w.stride - 1) / w.stride : 0;
    return w;
}

/* Puts a warp's first stages - 1 tiles in flight (stage s at space + s *
 * tile_bytes), then waits for the grid before (programmatic dependent
 * launch). The lengths and block tables come from the host. Keys before
 * `settled` were not written by the kernel before this one (the append;
 * d.fresh_tokens), so the first tiles that hold only such keys are on
 * their way before the wait: the cache's latency overlaps the append
 * instead of following it (H200, Llama-3.1-8B b1 after 1,024 tokens:
 * 4.575 -> 4.558 ms a step; OLMoE 1.255 -> 1.246). */
template <int ROW, int TILE, bool INT8, int PITCH = ROW>
__device__ __forceinline__ void start_tiles(unsigned char *space, int tile_bytes, int stages,
                                            const struct dy_attention_decode_desc &d, const uint8_t *kc,
                                            const uint8_t *vc, const float *ks, const float *vs,
                                            const int32_t *blocks, int block_shift, const warp_keys &w)
{
    int settled = d.fresh_tokens > 0 ? w.len - d.fresh_tokens : 0, s = 0;
    for (; s < stages - 1 && s < w.tiles && min(w.end, w.first + s * w.stride + TILE) <= settled; s++) {
        load_tile<ROW, TILE, INT8, PITCH>(space + s * tile_bytes, d, kc, vc, ks, vs, blocks, block_shift,
                                          w.first + s * w.stride, w.end);
        copy_commit();
    }
    DY_GRID_ENTER();
    for (; s < stages - 1; s++) {
        if (s < w.tiles)
            load_tile<ROW, TILE, INT8, PITCH>(space + s * tile_bytes, d, kc, vc, ks, vs, blocks, block_shift,
                                              w.first + s * w.stride, w.end);
        copy_commit();
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

/* Whether a token group's softmax is spread over its lanes: when its G x
 * KEYS scores fit one a lane, each lane finishes the sum of one score and
 * does that score's softmax alone, instead of every lane reducing and
 * exponentiating all of them (Llama-3.1-8B's group of 4, bf16, 16 lanes a
 * key: 30 instructions for the sums instead of 64, and a quarter of the
 * softmax's). A lane then carries its own head's maximum in m[0] and its
 * own keys' share of that head's sum in l[0], until the kernel gathers
 * every head's state for finish(). */
template <int LPT, int G> __host__ __device__ constexpr bool spread_softmax()
{
    return G * KEYS <= LPT;
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
    float weight[G][KEYS];
    if constexpr (spread_softmax<LPT, G>()) {
        /* reduce-scatter: each level halves the values a lane carries, so
         * the G x KEYS sums take V - 1 + log2(SPREAD) shuffles instead of
         * V log2(LPT); the lane keeps value j = l8 / SPREAD */
        constexpr int V = G * KEYS, SPREAD = LPT / V;
        float v[V];
#pragma unroll
        for (int g = 0; g < G; g++)
#pragma unroll
            for (int u = 0; u < KEYS; u++)
                v[g * KEYS + u] = dot[g][u];
        int l8 = threadIdx.x % LPT, base = threadIdx.x % DY_WARP - l8; /* the token group's first lane */
#pragma unroll
        for (int half = V / 2; half >= 1; half /= 2) {
            int o = half * SPREAD; /* lanes o apart carry the two halves */
            bool up = l8 & o;
#pragma unroll
            for (int k = 0; k < half; k++) {
                float send = up ? v[k] : v[k + half], keep = up ? v[k + half] : v[k];
                v[k] = keep + __shfl_xor_sync(0xffffffffu, send, o);
            }
        }
#pragma unroll
        for (int o = SPREAD / 2; o > 0; o >>= 1)
            v[0] += __shfl_xor_sync(0xffffffffu, v[0], o);
        /* this lane's key u of head l8 / (SPREAD KEYS); m[0], l[0] are its
         * head's maximum and its own keys' share of the sum */
        int u = l8 / SPREAD % KEYS;
        bool valid = r.valid[0];
        float k_scale = 1.0f, v_scale = 1.0f;
        if constexpr (CT == DY_I8) {
            k_scale = r.k_scale[0];
            v_scale = r.v_scale[0];
        }
#pragma unroll
        for (int k = 1; k < KEYS; k++)
            if (u == k) {
                valid = r.valid[k];
                if constexpr (CT == DY_I8) {
                    k_scale = r.k_scale[k];
                    v_scale = r.v_scale[k];
                }
            }
        float s = valid ? (CT == DY_I8 ? v[0] * k_scale : v[0]) : -INFINITY, mx = s;
#pragma unroll
        for (int o = SPREAD; o < SPREAD * KEYS; o <<= 1)
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        float m_new = fmaxf(m[0], mx);
        bool grew = m_new > m[0];
        float corr = grew ? fast_exp2(m[0] - m_new) : 1.0f;
        float p = valid ? fast_exp2(s - m_new) : 0.0f;
        l[0] = l[0] * corr + p;
        m[0] = m_new;
        if (__any_sync(0xffffffffu, grew)) {
#pragma unroll
            for (int g = 0; g < G; g++) {
                float c = __shfl_sync(0xffffffffu, corr, base + g * KEYS * SPREAD);
#pragma unroll
                for (int e = 0; e < EPL; e++)
                    acc[g][e] *= c;
            }
        }
        float w = CT == DY_I8 ? p * v_scale : p;
#pragma unroll
        for (int g = 0; g < G; g++)
#pragma unroll
            for (int k = 0; k < KEYS; k++)
                weight[g][k] = __shfl_sync(0xffffffffu, w, base + (g * KEYS + k) * SPREAD);
    } else {
#pragma unroll
        for (int g = 0; g < G; g++)
#pragma unroll
            for (int u = 0; u < KEYS; u++)
#pragma unroll
                for (int o = LPT / 2; o > 0; o >>= 1)
                    dot[g][u] += __shfl_xor_sync(0xffffffffu, dot[g][u], o);
        float corr[G];
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

/* The block's W warps' states (m natural-log units, l, acc in shared
 * memory, [W][MAX_GROUP] and [W][MAX_GROUP][HD]) merged per head, written
 * as the output (one split) or this split's partial. */
template <int HD, int W>
__device__ __forceinline__ void merge_warps(const struct dy_attention_decode_desc &d, const float (*sm_m)[MAX_GROUP],
                                            const float (*sm_l)[MAX_GROUP], const float *sm_acc, int group, int h0,
                                            int b, int split, int splits, void *out, float *partials)
{
    for (int g = 0; g < group; g++) {
        float mm = -INFINITY;
        for (int w = 0; w < W; w++)
            mm = fmaxf(mm, sm_m[w][g]);
        float ll = 0.0f;
        for (int w = 0; w < W; w++)
            ll += sm_l[w][g] * merge_weight(sm_m[w][g], mm);
        for (int i = threadIdx.x; i < HD; i += blockDim.x) {
            float a = 0.0f;
            for (int w = 0; w < W; w++)
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
    merge_warps<HD, DECODE_WARPS>(d, sm_m, sm_l, sm_acc, group, h0, b, split, splits, out, partials);
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
    const warp_keys w = keys_of(lens[b], split, tokens_per_split, DECODE_WARPS, TILE);
    const int32_t *blocks = table + (size_t)b * d.max_blocks_per_seq;
    kc += (size_t)kvh * layout::row;
    vc += (size_t)kvh * layout::row;
    if constexpr (CT == DY_I8) {
        ks += kvh;
        vs += kvh;
    }
    unsigned char *space = smem + (size_t)warp * stages * layout::tile_bytes;
    start_tiles<layout::row, TILE, CT == DY_I8>(space, layout::tile_bytes, stages, d, kc, vc, ks, vs, blocks,
                                                block_shift, w);
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
    /* tile t is in stage t % stages, counted without a division */
    int use = 0, fill = stages - 1;
    for (int t = 0; t < w.tiles; t++) {
        copy_wait(stages - 2);
        __syncwarp(); /* tile t is in; every lane is done with tile t - 1 */
        if (t + stages - 1 < w.tiles)
            load_tile<layout::row, TILE, CT == DY_I8>(space + fill * layout::tile_bytes, d, kc, vc, ks, vs, blocks,
                                                      block_shift, w.first + (t + stages - 1) * w.stride, w.end);
        copy_commit();
        const unsigned char *buf = space + use * layout::tile_bytes;
        use = use + 1 == stages ? 0 : use + 1;
        fill = fill + 1 == stages ? 0 : fill + 1;
        tile_rows<WORDS> r;
#pragma unroll
        for (int u = 0; u < KEYS; u++) {
            int row = u * TPW + tg;
            r.valid[u] = w.first + t * w.stride + row < w.end;
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
    if constexpr (spread_softmax<LPT, G>()) {
        /* every lane of the token group takes every head's maximum and sum */
        constexpr int SPREAD = LPT / (G * KEYS);
        float mine = m[0], sum = l[0];
        int base = lane - lane % LPT; /* the token group's first lane */
#pragma unroll
        for (int o = SPREAD; o < SPREAD * KEYS; o <<= 1)
            sum += __shfl_xor_sync(0xffffffffu, sum, o);
#pragma unroll
        for (int g = 0; g < G; g++) {
            m[g] = __shfl_sync(0xffffffffu, mine, base + g * KEYS * SPREAD);
            l[g] = __shfl_sync(0xffffffffu, sum, base + g * KEYS * SPREAD);
        }
    }
#pragma unroll
    for (int g = 0; g < G; g++)
        m[g] *= 0.6931471805599453f; /* back to natural-log units for the merges */
    finish<HD, LPT, G, CPL>(d, m, l, acc, (float *)smem, group, h0, split, splits, out, partials);
}

/* Launches the kernel, or with `resident` set only says how many of its
 * blocks a multiprocessor holds (the occupancy calculator's answer,
 * remembered per instantiation and shared-memory size). */
template <int HD, int LPT, int G, enum dy_dtype CT>
static int launch(struct cuda_ctx *c, const struct dy_attention_decode_desc *d, dim3 grid, int splits,
                  int tokens_per_split, int head0, int group, int block_shift, int *resident)
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
    if (resident) {
        static size_t known_bytes;
        static int known;
        if (known_bytes != bytes) {
            int n = 0;
            e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, DECODE_WARPS * DY_WARP, bytes);
            if (e != cudaSuccess)
                return dy_cuda_fail(c, e, "cudaOccupancyMaxActiveBlocksPerMultiprocessor(attention_decode)");
            known = n;
            known_bytes = bytes;
        }
        *resident = known;
        return DY_OK;
    }
    bool int8 = CT == DY_I8;
    dy_launch(c, kernel, grid, DECODE_WARPS * DY_WARP, bytes, *d, dy_cuda_ptr(d->q), dy_cuda_ptr(d->k_cache),
              dy_cuda_ptr(d->v_cache), int8 ? dy_cuda_ptr(d->k_scale) : NULL, int8 ? dy_cuda_ptr(d->v_scale) : NULL,
              dy_cuda_ptr(d->block_table), dy_cuda_ptr(d->context_lens), dy_cuda_ptr(d->out), c->partials, splits,
              tokens_per_split, head0, group, block_shift, stages);
    return dy_cuda_check_launch(c, "attention_decode");
}

#if !DY_HIP
#include "cuda_mma.h"

/* ---- bf16 caches on the tensor cores (DYNO_CUDA_DECODE_MMA, off) -------
 * The kernel above spent about 120 warp instructions a key and KV head at
 * Llama-3.1-8B's group of four; on an H200 at batch 64 it read the cache
 * at 0.70 of the copy bandwidth. This kernel, with a fifth of them,
 * measured slower (H200: 158 against 137 us a layer at 64 x 1,536): with
 * three warps a block and one tile in flight each, it waits on its block
 * table reads and on its chains of mma.sync (Nsight Compute: 20 cycles
 * between a warp's instructions, mostly long and short scoreboard). It
 * is faster only on long splits of few sequences (1 x 8,192: 25 against
 * 28 us), so it stays a switch (bench/README, nineteenth and twentieth
 * sessions); the kernel above, with its softmax spread over the lanes,
 * now reads at 0.89.
 * Here a warp takes 16 keys a tile and puts both products on mma.sync
 * m16n8k16 (bf16, f32 accumulators), keys and head dims as the M side and
 * the group's (up to 8) query heads as N:
 *   S^T = K Q^T: A = the tile's K rows (ldmatrix), B = q, 16 keys x 8 heads;
 *   O^T += V^T P^T: A = V (ldmatrix .trans), B = P^T, the C fragment of S^T
 *   packed and transposed in registers (movmatrix).
 * q (f32) and the weights P go in as two bf16 terms each, hi + lo (16 bits
 * of mantissa, as the int4 mma GEMV does), so the scores and the sums keep
 * about f32's accuracy; the cache is exact in bf16. Rows in shared memory
 * are padded by 16 bytes, so ldmatrix's eight rows fall in distinct banks.
 * A head's maximum moves only when some key beats it by more than 2^8 (a
 * warp vote), so most tiles skip O's rescale and the weights stay <= 2^8.
 * The warps' states merge as the kernel above's do. */
#define MMA_KEYS 16
#define MMA_WARPS 3  /* a block's warps: 2 stages of 8.7 KB tiles each leave room for 4 blocks an SM */
#define MMA_STAGES 2

template <int HD, int W> struct mma_layout {
    static constexpr int rs = HD * 2 + 16; /* a key's row in shared memory */
    static constexpr int tile_bytes = 2 * MMA_KEYS * rs;
    static constexpr int finish_bytes = W * MAX_GROUP * HD * 4;
};

/* Grid (batch, KV heads, splits) as decode_fast_kernel's, of W warps; warp
 * w takes the 16-key tiles w, w + W, ... of the block's keys through
 * `stages` tiles of its own shared memory. */
template <int HD, int W>
__global__ void __launch_bounds__(W * DY_WARP)
decode_mma_kernel(struct dy_attention_decode_desc d, const void *q, const uint8_t *kc, const uint8_t *vc,
                  const int32_t *table, const int32_t *lens, void *out, float *partials, int splits,
                  int tokens_per_split, int head0, int group, int block_shift, int stages)
{
    typedef mma_layout<HD, W> layout;
    constexpr int KS = HD / 16, RS = layout::rs; /* k steps of S; 16-dim tiles of O */
    extern __shared__ __align__(16) unsigned char smem[];
    __shared__ float sm_m[W][MAX_GROUP], sm_l[W][MAX_GROUP];
    int warp = threadIdx.x / DY_WARP, lane = threadIdx.x % DY_WARP, g = lane / 4, t = lane % 4;
    int b = blockIdx.x, kvh = blockIdx.y, split = blockIdx.z;
    int h0 = kvh * (d.heads / d.kv_heads) + head0;
    const warp_keys w = keys_of(lens[b], split, tokens_per_split, W, MMA_KEYS);
    const int32_t *blocks = table + (size_t)b * d.max_blocks_per_seq;
    kc += (size_t)kvh * HD * 2;
    vc += (size_t)kvh * HD * 2;
    unsigned char *space = smem + (size_t)warp * stages * layout::tile_bytes;
    start_tiles<HD * 2, MMA_KEYS, false, RS>(space, layout::tile_bytes, stages, d, kc, vc, NULL, NULL, blocks,
                                             block_shift, w);
    /* q as B fragments of S^T = K Q^T: head g, dims 16 kk + 2t, + 1 (and
     * + 8), scaled into log2 units, in two bf16 terms */
    const float q_scale = d.scale * 1.4426950408889634f;
    uint32_t qh[KS][2], ql[KS][2];
#pragma unroll
    for (int kk = 0; kk < KS; kk++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            float x0 = 0.0f, x1 = 0.0f;
            if (g < group) {
                size_t at = (size_t)b * d.q_stride + (size_t)(h0 + g) * HD + 16 * kk + 8 * h + 2 * t;
                x0 = q_scale * dy_load_f32(q, d.dtype, at);
                x1 = q_scale * dy_load_f32(q, d.dtype, at + 1);
            }
            bf16_split(x0, x1, &qh[kk][h], &ql[kk][h]);
        }
    /* O^T (dims x heads) as KS C fragments: dims 16 mt + g (+ 8), heads 2t
     * and 2t + 1; the running maxima (log2 units) and this lane's share of
     * the sums of heads 2t and 2t + 1 */
    float acc[KS][4], m[2] = { -INFINITY, -INFINITY }, l[2] = { 0.0f, 0.0f };
#pragma unroll
    for (int mt = 0; mt < KS; mt++)
        acc[mt][0] = acc[mt][1] = acc[mt][2] = acc[mt][3] = 0.0f;
    int ka = (lane / 8 % 2) * 8 + lane % 8, kd = (lane / 16) * 8; /* K: matrix lane / 8's row */
    int va = (lane / 16) * 8 + lane % 8, vd = (lane / 8 % 2) * 8;  /* V, transposed */
    int use = 0, fill = stages - 1; /* the stages of tiles `tile` and `tile` + stages - 1 */
    for (int tile = 0; tile < w.tiles; tile++) {
        copy_wait(stages - 2);
        __syncwarp(); /* tile `tile` is in; every lane is done with the one before */
        if (tile + stages - 1 < w.tiles)
            load_tile<HD * 2, MMA_KEYS, false, RS>(space + fill * layout::tile_bytes, d, kc, vc, NULL, NULL, blocks,
                                                   block_shift, w.first + (tile + stages - 1) * w.stride, w.end);
        copy_commit();
        const unsigned char *kb = space + use * layout::tile_bytes, *vb = kb + MMA_KEYS * RS;
        use = use + 1 == stages ? 0 : use + 1;
        fill = fill + 1 == stages ? 0 : fill + 1;
        /* S^T: keys g and g + 8 of the tile, heads 2t and 2t + 1 */
        float sc[4] = { 0.0f, 0.0f, 0.0f, 0.0f };
#pragma unroll
        for (int kk = 0; kk < KS; kk++) {
            uint32_t a[4];
            ldsm_x4(kb + ka * RS + (16 * kk + kd) * 2, a);
            mma_bf16_16816(sc, a, qh[kk][0], qh[kk][1]);
            mma_bf16_16816(sc, a, ql[kk][0], ql[kk][1]);
        }
        int key0 = w.first + tile * w.stride;
        if (key0 + g >= w.end)
            sc[0] = sc[1] = -INFINITY;
        if (key0 + g + 8 >= w.end)
            sc[2] = sc[3] = -INFINITY;
        float mx0 = fmaxf(sc[0], sc[2]), mx1 = fmaxf(sc[1], sc[3]);
#pragma unroll
        for (int o = 4; o < DY_WARP; o <<= 1) {
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, o));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, o));
        }
        /* key0 is in range, so every head's maximum over the tile is
         * finite; the first tile always moves the maxima off -inf */
        if (__any_sync(0xffffffffu, mx0 > m[0] + 8.0f || mx1 > m[1] + 8.0f)) {
            float n0 = fmaxf(m[0], mx0), n1 = fmaxf(m[1], mx1);
            float c0 = fast_exp2(m[0] - n0), c1 = fast_exp2(m[1] - n1);
            m[0] = n0;
            m[1] = n1;
            l[0] *= c0;
            l[1] *= c1;
#pragma unroll
            for (int mt = 0; mt < KS; mt++) {
                acc[mt][0] *= c0;
                acc[mt][1] *= c1;
                acc[mt][2] *= c0;
                acc[mt][3] *= c1;
            }
        }
        float p0 = fast_exp2(sc[0] - m[0]), p1 = fast_exp2(sc[1] - m[1]);
        float p2 = fast_exp2(sc[2] - m[0]), p3 = fast_exp2(sc[3] - m[1]);
        l[0] += p0 + p2;
        l[1] += p1 + p3;
        /* P^T as B fragments: keys 2t, 2t + 1 (and + 8) of head g */
        uint32_t h01, l01, h23, l23;
        bf16_split(p0, p1, &h01, &l01);
        bf16_split(p2, p3, &h23, &l23);
        uint32_t bh0 = movmatrix_trans(h01), bh1 = movmatrix_trans(h23);
        uint32_t bl0 = movmatrix_trans(l01), bl1 = movmatrix_trans(l23);
#pragma unroll
        for (int mt = 0; mt < KS; mt++) {
            uint32_t a[4];
            ldsm_x4_trans(vb + va * RS + (16 * mt + vd) * 2, a);
            mma_bf16_16816(acc[mt], a, bh0, bh1);
            mma_bf16_16816(acc[mt], a, bl0, bl1);
        }
    }
    copy_wait(0);
    __syncthreads(); /* the tiles' space becomes the merge's */
    float *sm_acc = (float *)smem;
#pragma unroll
    for (int j = 0; j < 2; j++) {
        for (int o = 4; o < DY_WARP; o <<= 1)
            l[j] += __shfl_xor_sync(0xffffffffu, l[j], o);
        int head = 2 * t + j;
        if (head < group) {
            if (g == 0) {
                sm_m[warp][head] = m[j] * 0.6931471805599453f; /* natural-log units for the merges */
                sm_l[warp][head] = l[j];
            }
#pragma unroll
            for (int mt = 0; mt < KS; mt++) {
                sm_acc[(warp * MAX_GROUP + head) * HD + 16 * mt + g] = acc[mt][j];
                sm_acc[(warp * MAX_GROUP + head) * HD + 16 * mt + g + 8] = acc[mt][2 + j];
            }
        }
    }
    __syncthreads();
    merge_warps<HD, W>(d, sm_m, sm_l, sm_acc, group, h0, b, split, splits, out, partials);
}

template <int HD, int W>
static int launch_mma(struct cuda_ctx *c, const struct dy_attention_decode_desc *d, dim3 grid, int splits,
                      int tokens_per_split, int head0, int group, int block_shift, int stages)
{
    typedef mma_layout<HD, W> layout;
    stages = stages < 2 ? 2 : stages > MAX_STAGES ? MAX_STAGES : stages;
    while (stages > 2 && W * stages * layout::tile_bytes + 256 > c->smem_per_block)
        stages--;
    size_t bytes = (size_t)W * stages * layout::tile_bytes;
    bytes = bytes > layout::finish_bytes ? bytes : layout::finish_bytes;
    if (bytes + 256 > (size_t)c->smem_per_block)
        return DY_E_UNSUPPORTED;
    cudaError_t e = cudaFuncSetAttribute(decode_mma_kernel<HD, W>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)bytes);
    if (e != cudaSuccess)
        return dy_cuda_fail(c, e, "cudaFuncSetAttribute(attention_decode on the tensor cores)");
    dy_launch(c, decode_mma_kernel<HD, W>, grid, W * DY_WARP, bytes, *d, dy_cuda_ptr(d->q),
              (const uint8_t *)dy_cuda_ptr(d->k_cache), (const uint8_t *)dy_cuda_ptr(d->v_cache),
              (const int32_t *)dy_cuda_ptr(d->block_table), (const int32_t *)dy_cuda_ptr(d->context_lens),
              dy_cuda_ptr(d->out), c->partials, splits, tokens_per_split, head0, group, block_shift, stages);
    return dy_cuda_check_launch(c, "attention_decode (tensor cores)");
}
#endif

/* Lanes per key. At dim 128, 8 (a lane holds 16 elements: 16 bytes of
 * fp8/int8, 32 of f16/bf16) or 16, whose state is half the registers, so
 * 4 blocks fit a multiprocessor instead of 2 or 3. Measured at
 * Llama-3.1-8B's group of 4 (bench/cuda/kv_bench.c): on an H100, 16 lanes
 * won for bf16 everywhere (batch 64 x 2048: 225 against 249 us a layer);
 * fp8/int8 took 8 lanes on long splits until the softmax was spread over
 * the lanes, after which 16 won there too (H200, batch 64 x 1,536: fp8
 * 105.7 against 115.8 us, int8 115.3 against 129.6; 1 x 8,192 21.8
 * against 23.1; 16 x 4,096 77.2 against 76.4; bench/README twentieth
 * session). Groups of 1 and 2 have registers to spare at 8 lanes; the
 * group of 8 needs 16. At dim 64, 4 lanes for one-byte caches (16 bytes
 * each) and 8 for the others. */
template <enum dy_dtype CT>
static int launch_for(struct cuda_ctx *c, const struct dy_attention_decode_desc *d, dim3 grid, int splits,
                      int tokens_per_split, int head0, int group, int block_shift, int *resident)
{
    constexpr bool byte_cache = cache_type<CT>::bytes == 1;
#define DY_FAST(HD, LPT, G) \
    return launch<HD, LPT, G, CT>(c, d, grid, splits, tokens_per_split, head0, group, block_shift, resident)
    if (d->head_dim == 128) {
        if (group <= 1) DY_FAST(128, 8, 1);
        if (group <= 2) DY_FAST(128, 8, 2);
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
                        int tokens_per_split, int head0, int group, int *resident)
{
    int block_shift = -1;
    for (int s = 0; s < 31; s++)
        if (d->block_size == 1 << s)
            block_shift = s;
    switch (d->cache_dtype) {
    case DY_F32: return launch_for<DY_F32>(c, d, grid, splits, tokens_per_split, head0, group, block_shift, resident);
    case DY_F16: return launch_for<DY_F16>(c, d, grid, splits, tokens_per_split, head0, group, block_shift, resident);
    case DY_BF16:
#if !DY_HIP
        if (c->decode_mma > 0 && !resident) {
            /* DYNO_CUDA_DECODE_MMA=WS: W warps a block (2, 3 or 4), S stages */
            int w = c->decode_mma >= 20 ? c->decode_mma / 10 : MMA_WARPS;
            int stages = c->decode_mma >= 20 ? c->decode_mma % 10 : MMA_STAGES, st;
#define DY_MMA(HD, W) launch_mma<HD, W>(c, d, grid, splits, tokens_per_split, head0, group, block_shift, stages)
            if (d->head_dim == 128)
                st = w == 2 ? DY_MMA(128, 2) : w == 4 ? DY_MMA(128, 4) : DY_MMA(128, 3);
            else
                st = w == 2 ? DY_MMA(64, 2) : w == 4 ? DY_MMA(64, 4) : DY_MMA(64, 3);
#undef DY_MMA
            if (st != DY_E_UNSUPPORTED)
                return st;
        }
#endif
        return launch_for<DY_BF16>(c, d, grid, splits, tokens_per_split, head0, group, block_shift, resident);
    case DY_FP8: return launch_for<DY_FP8>(c, d, grid, splits, tokens_per_split, head0, group, block_shift, resident);
    default: return launch_for<DY_I8>(c, d, grid, splits, tokens_per_split, head0, group, block_shift, resident);
    }
}
