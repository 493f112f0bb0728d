/* Attention on CUDA, flash-decoding style: one warp walks keys with an
 * online softmax for every query head of one GQA group, so each K/V row is
 * read once per group. Lane l holds head-dim elements [l*EPL, l*EPL+EPL).
 * A warp is DY_WARP lanes (32 on NVIDIA, the wavefront on AMD): every lane
 * and shuffle count below derives from it.
 *
 * Prefill: one warp per (sequence, query token, KV head); causal or not.
 * Decode: a block of warps per (sequence, KV head, context split) over the
 * paged cache; splits are merged by a second kernel when there are several. */
#include <math.h>

#include "cuda_internal.h"

#define MAX_GROUP 8
#define DECODE_WARPS 4
#define PREFILL_WARPS 4
#define SPLIT_MIN_TOKENS 32

/* G: query heads per pass, a compile-time bound so the state stays in
 * registers; `group` <= G of them are live. */
template <int EPL, int G> struct qstate {
    float q[G][EPL];
    float acc[G][EPL];
    float m[G], l[G];
};

template <int EPL>
__device__ __forceinline__ void load_row(const void *base, enum dy_dtype t, size_t off, int lane,
                                         int head_dim, float *out)
{
#pragma unroll
    for (int e = 0; e < EPL; e++) {
        int i = lane * EPL + e;
        out[e] = i < head_dim ? dy_load_f32(base, t, off + i) : 0.0f;
    }
}

/* One key/value row into every head's running softmax. */
template <int EPL, int G>
__device__ __forceinline__ void attend_row(qstate<EPL, G> &s, int group, const float *k, const float *v,
                                           float scale)
{
#pragma unroll
    for (int g = 0; g < G; g++) {
        if (g >= group)
            break;
        float dot = 0.0f;
#pragma unroll
        for (int e = 0; e < EPL; e++)
            dot += s.q[g][e] * k[e];
        for (int o = DY_WARP / 2; o > 0; o >>= 1)
            dot += __shfl_xor_sync(0xffffffffu, dot, o);
        float score = dot * scale;
        float m_new = fmaxf(s.m[g], score);
        float corr = __expf(s.m[g] - m_new), p = __expf(score - m_new);
        s.l[g] = s.l[g] * corr + p;
#pragma unroll
        for (int e = 0; e < EPL; e++)
            s.acc[g][e] = s.acc[g][e] * corr + p * v[e];
        s.m[g] = m_new;
    }
}

template <int EPL, int G>
__device__ __forceinline__ void init_state(qstate<EPL, G> &s, int group, const void *q,
                                           enum dy_dtype qt, size_t q_off, int head_dim, int lane)
{
#pragma unroll
    for (int g = 0; g < G; g++) {
        s.m[g] = -INFINITY;
        s.l[g] = 0.0f;
#pragma unroll
        for (int e = 0; e < EPL; e++)
            s.acc[g][e] = 0.0f;
        if (g < group)
            load_row<EPL>(q, qt, q_off + (size_t)g * head_dim, lane, head_dim, s.q[g]);
    }
}

template <int EPL, int G>
__global__ void prefill_kernel(struct dy_attention_prefill_desc d, const void *q, const void *k,
                               const void *v, void *out, int head0, int group)
{
    int lane = threadIdx.x % DY_WARP;
    size_t warp = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) / DY_WARP;
    size_t total = (size_t)d.batch * d.kv_heads * d.seq_len;
    if (warp >= total)
        return;
    int t = (int)(warp % d.seq_len);
    size_t bk = warp / d.seq_len;
    int kvh = (int)(bk % d.kv_heads), b = (int)(bk / d.kv_heads);
    int heads_per_kv = d.heads / d.kv_heads, h0 = kvh * heads_per_kv + head0;
    size_t row = (size_t)b * d.seq_len + t;
    qstate<EPL, G> s;
    init_state<EPL, G>(s, group, q, d.dtype, row * d.q_stride + (size_t)h0 * d.head_dim, d.head_dim, lane);
    int keys = d.causal ? t + 1 : d.seq_len;
    for (int j = 0; j < keys; j++) {
        size_t kv_off = ((size_t)b * d.seq_len + j) * d.kv_stride + (size_t)kvh * d.head_dim;
        float kr[EPL], vr[EPL];
        load_row<EPL>(k, d.dtype, kv_off, lane, d.head_dim, kr);
        load_row<EPL>(v, d.dtype, kv_off, lane, d.head_dim, vr);
        attend_row<EPL, G>(s, group, kr, vr, d.scale);
    }
#pragma unroll
    for (int g = 0; g < G; g++)
#pragma unroll
        for (int e = 0; e < EPL; e++) {
            int i = lane * EPL + e;
            if (g < group && i < d.head_dim)
                dy_store_f32(out, d.dtype, row * d.out_stride + (size_t)(h0 + g) * d.head_dim + i,
                             s.acc[g][e] / s.l[g]);
        }
}

/* Instantiates LAUNCH(EPL, G) for the head-dim split and the smallest power
 * of two G >= group. */
#define DY_DISPATCH_G(LAUNCH, E, group)                                       \
    do {                                                                      \
        if ((group) <= 1) LAUNCH(E, 1);                                       \
        else if ((group) <= 2) LAUNCH(E, 2);                                  \
        else if ((group) <= 4) LAUNCH(E, 4);                                  \
        else LAUNCH(E, 8);                                                    \
    } while (0)
#define DY_DISPATCH(LAUNCH, epl, group)                                       \
    do {                                                                      \
        switch (epl) {                                                        \
        case 1: DY_DISPATCH_G(LAUNCH, 1, group); break;                       \
        case 2: DY_DISPATCH_G(LAUNCH, 2, group); break;                       \
        case 4: DY_DISPATCH_G(LAUNCH, 4, group); break;                       \
        default: DY_DISPATCH_G(LAUNCH, 8, group); break;                      \
        }                                                                     \
    } while (0)

static int epl_for(int head_dim)
{
    int epl = 1;
    while (epl * DY_WARP < head_dim)
        epl *= 2;
    return epl;
}

int dy_cuda_attention_prefill(void *ctx, const struct dy_attention_prefill_desc *d)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (d->kv_heads <= 0 || d->heads % d->kv_heads || d->head_dim > 256) {
        snprintf(c->err, sizeof c->err, "attention_prefill: heads %% kv_heads != 0 or head_dim > 256");
        return DY_E_UNSUPPORTED;
    }
    int per_kv = d->heads / d->kv_heads, epl = epl_for(d->head_dim);
    size_t warps = (size_t)d->batch * d->kv_heads * d->seq_len;
    if (!warps)
        return DY_OK;
    int st = dy_cuda_flash_prefill(c, d);
    if (st != DY_E_UNSUPPORTED)
        return st;
    unsigned blocks = (unsigned)((warps + PREFILL_WARPS - 1) / PREFILL_WARPS);
    const void *q = dy_cuda_ptr(d->q), *k = dy_cuda_ptr(d->k), *v = dy_cuda_ptr(d->v);
    void *out = dy_cuda_ptr(d->out);
    for (int head0 = 0; head0 < per_kv; head0 += MAX_GROUP) {
        int group = per_kv - head0 < MAX_GROUP ? per_kv - head0 : MAX_GROUP;
#define DY_PREFILL(E, G) prefill_kernel<E, G><<<blocks, PREFILL_WARPS * DY_WARP, 0, c->stream>>>(*d, q, k, v, out, head0, group)
        DY_DISPATCH(DY_PREFILL, epl, group);
#undef DY_PREFILL
    }
    return dy_cuda_check_launch(c, "attention_prefill");
}

/* Partial result of one split: m, l and the unnormalised accumulator. */
static size_t partial_floats(int head_dim)
{
    return (size_t)head_dim + 2;
}

template <int EPL, int G>
__global__ void __launch_bounds__(DECODE_WARPS * DY_WARP)
decode_kernel(struct dy_attention_decode_desc d, const void *q, const void *kc, const void *vc,
              const int32_t *table, const int32_t *lens, void *out, float *partials, int splits,
              int tokens_per_split, int head0, int group)
{
    __shared__ float sm_m[DECODE_WARPS][MAX_GROUP], sm_l[DECODE_WARPS][MAX_GROUP];
    extern __shared__ float sm_acc[]; /* [DECODE_WARPS][MAX_GROUP][head_dim] */
    int warp = threadIdx.x / DY_WARP, lane = threadIdx.x % DY_WARP;
    int b = blockIdx.x, kvh = blockIdx.y, split = blockIdx.z;
    int per_kv = d.heads / d.kv_heads, h0 = kvh * per_kv + head0;
    int len = lens[b];
    int start = split * tokens_per_split, end = min(len, start + tokens_per_split);
    size_t row = (size_t)d.kv_heads * d.head_dim;
    qstate<EPL, G> s;
    init_state<EPL, G>(s, group, q, d.dtype, (size_t)b * d.q_stride + (size_t)h0 * d.head_dim,
                       d.head_dim, lane);
    for (int j = start + warp; j < end; j += DECODE_WARPS) {
        int block = table[(size_t)b * d.max_blocks_per_seq + j / d.block_size];
        size_t off = ((size_t)block * d.block_size + j % d.block_size) * row + (size_t)kvh * d.head_dim;
        float kr[EPL], vr[EPL];
        load_row<EPL>(kc, d.cache_dtype, off, lane, d.head_dim, kr);
        load_row<EPL>(vc, d.cache_dtype, off, lane, d.head_dim, vr);
        attend_row<EPL, G>(s, group, kr, vr, d.scale);
    }
#pragma unroll
    for (int g = 0; g < G; g++) {
        if (g >= group)
            break;
        if (lane == 0) {
            sm_m[warp][g] = s.m[g];
            sm_l[warp][g] = s.l[g];
        }
#pragma unroll
        for (int e = 0; e < EPL; e++) {
            int i = lane * EPL + e;
            if (i < d.head_dim)
                sm_acc[((size_t)warp * MAX_GROUP + g) * d.head_dim + i] = s.acc[g][e];
        }
    }
    __syncthreads();
    /* merge the warps: thread i of the block owns head-dim element i */
    for (int g = 0; g < group; g++) {
        float m = -INFINITY;
        for (int w = 0; w < DECODE_WARPS; w++)
            m = fmaxf(m, sm_m[w][g]);
        float l = 0.0f;
        for (int w = 0; w < DECODE_WARPS; w++)
            l += sm_m[w][g] == -INFINITY ? 0.0f : sm_l[w][g] * __expf(sm_m[w][g] - m);
        for (int i = threadIdx.x; i < d.head_dim; i += blockDim.x) {
            float a = 0.0f;
            for (int w = 0; w < DECODE_WARPS; w++)
                if (sm_m[w][g] != -INFINITY)
                    a += sm_acc[((size_t)w * MAX_GROUP + g) * d.head_dim + i] * __expf(sm_m[w][g] - m);
            int h = h0 + g;
            if (splits == 1) {
                dy_store_f32(out, d.dtype, (size_t)b * d.out_stride + (size_t)h * d.head_dim + i, a / l);
            } else {
                float *p = partials + (((size_t)b * d.heads + h) * splits + split) * (d.head_dim + 2);
                p[2 + i] = a;
                if (i == 0) {
                    p[0] = m;
                    p[1] = l;
                }
            }
        }
    }
}

/* Loads EPL consecutive elements of a cache row with 16-byte loads. */
template <int EPL>
__device__ __forceinline__ void load_vec(const void *base, enum dy_dtype t, size_t off, float *out)
{
    if (t == DY_F32) {
#pragma unroll
        for (int e = 0; e < EPL; e += 4) {
            float4 x = *(const float4 *)((const float *)base + off + e);
            out[e] = x.x; out[e + 1] = x.y; out[e + 2] = x.z; out[e + 3] = x.w;
        }
        return;
    }
#pragma unroll
    for (int e = 0; e < EPL; e += 8) {
        uint4 raw = *(const uint4 *)((const uint16_t *)base + off + e);
        const uint16_t *h = (const uint16_t *)&raw;
#pragma unroll
        for (int i = 0; i < 8; i++)
            out[e + i] = t == DY_BF16 ? dy_bf16_to_f32(h[i]) : __half2float(*(const __half *)&h[i]);
    }
}

/* Weight of a softmax state with running max m once merged under m_new. */
__device__ __forceinline__ float merge_weight(float m, float m_new)
{
    return m == -INFINITY ? 0.0f : __expf(m - m_new);
}

/* Decode with several keys in flight per warp: the warp splits into TPW
 * token groups of LPT lanes; each group walks every TPW-th key with its
 * own online softmax (HD/LPT elements per lane, 16-byte loads, log2(LPT)
 * shuffles per dot product), and the groups, then the warps, are merged at
 * the end. Same output and split partials as decode_kernel. */
template <int HD, int LPT, int G>
__global__ void __launch_bounds__(DECODE_WARPS * DY_WARP)
decode_fast_kernel(struct dy_attention_decode_desc d, const void *q, const void *kc, const void *vc,
                   const int32_t *table, const int32_t *lens, void *out, float *partials, int splits,
                   int tokens_per_split, int head0, int group)
{
    /* LPT rather than TPW is the parameter so that EPL, and with it the
     * 16-byte loads, stays the same whatever the warp size */
    constexpr int TPW = DY_WARP / LPT, EPL = HD / LPT;
    static_assert(TPW >= 1 && EPL % 8 == 0, "whole 16-byte loads per lane");
    __shared__ float sm_m[DECODE_WARPS][MAX_GROUP], sm_l[DECODE_WARPS][MAX_GROUP];
    __shared__ float sm_acc[DECODE_WARPS][MAX_GROUP][HD];
    int warp = threadIdx.x / DY_WARP, lane = threadIdx.x % DY_WARP;
    int tg = lane / LPT, e0 = (lane % LPT) * EPL;
    int b = blockIdx.x, kvh = blockIdx.y, split = blockIdx.z;
    int h0 = kvh * (d.heads / d.kv_heads) + head0;
    int len = lens[b];
    int start = split * tokens_per_split, end = min(len, start + tokens_per_split);
    size_t row = (size_t)d.kv_heads * HD;
    float qv[G][EPL], acc[G][EPL], m[G], l[G];
#pragma unroll
    for (int g = 0; g < G; g++) {
        m[g] = -INFINITY;
        l[g] = 0.0f;
#pragma unroll
        for (int e = 0; e < EPL; e++) {
            acc[g][e] = 0.0f;
            qv[g][e] = g < group ? dy_load_f32(q, d.dtype, (size_t)b * d.q_stride +
                                                   (size_t)(h0 + g) * HD + e0 + e) : 0.0f;
        }
    }
    for (int j0 = start + warp * TPW; j0 < end; j0 += DECODE_WARPS * TPW) {
        int j = j0 + tg;
        bool valid = j < end;
        float kr[EPL], vr[EPL];
        if (valid) {
            int block = table[(size_t)b * d.max_blocks_per_seq + j / d.block_size];
            size_t off = ((size_t)block * d.block_size + j % d.block_size) * row + (size_t)kvh * HD + e0;
            load_vec<EPL>(kc, d.cache_dtype, off, kr);
            load_vec<EPL>(vc, d.cache_dtype, off, vr);
        }
#pragma unroll
        for (int g = 0; g < G; g++) {
            float dot = 0.0f;
#pragma unroll
            for (int e = 0; e < EPL; e++)
                dot += qv[g][e] * (valid ? kr[e] : 0.0f);
#pragma unroll
            for (int o = LPT / 2; o > 0; o >>= 1)
                dot += __shfl_xor_sync(0xffffffffu, dot, o);
            if (valid && g < group) {
                float score = dot * d.scale, m_new = fmaxf(m[g], score);
                float corr = __expf(m[g] - m_new), p = __expf(score - m_new);
                l[g] = l[g] * corr + p;
#pragma unroll
                for (int e = 0; e < EPL; e++)
                    acc[g][e] = acc[g][e] * corr + p * vr[e];
                m[g] = m_new;
            }
        }
    }
    /* merge the token groups of the warp */
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
    if (tg == 0) {
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
                sm_acc[warp][g][e0 + e] = acc[g][e];
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
                a += sm_acc[w][g][i] * merge_weight(sm_m[w][g], mm);
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

__global__ void merge_splits_kernel(struct dy_attention_decode_desc d, const float *partials,
                                    int splits, void *out)
{
    int b = blockIdx.x, h = blockIdx.y;
    const float *p = partials + ((size_t)b * d.heads + h) * splits * (d.head_dim + 2);
    float m = -INFINITY;
    for (int s = 0; s < splits; s++)
        m = fmaxf(m, p[(size_t)s * (d.head_dim + 2)]);
    for (int i = threadIdx.x; i < d.head_dim; i += blockDim.x) {
        float l = 0.0f, a = 0.0f;
        for (int s = 0; s < splits; s++) {
            const float *ps = p + (size_t)s * (d.head_dim + 2);
            if (ps[0] == -INFINITY)
                continue;
            float w = __expf(ps[0] - m);
            l += ps[1] * w;
            a += ps[2 + i] * w;
        }
        dy_store_f32(out, d.dtype, (size_t)b * d.out_stride + (size_t)h * d.head_dim + i, a / l);
    }
}

int dy_cuda_attention_decode(void *ctx, const struct dy_attention_decode_desc *d)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (d->kv_heads <= 0 || d->heads % d->kv_heads || d->head_dim > 256 || d->max_context < 1) {
        snprintf(c->err, sizeof c->err,
                 "attention_decode: heads %% kv_heads != 0, head_dim > 256 or no context");
        return DY_E_UNSUPPORTED;
    }
    if (d->batch <= 0)
        return DY_OK;
    /* enough blocks to fill the chip several times over (each warp walks its
     * keys one after another, so short walks hide latency), each with a
     * useful stretch of keys */
    int want = (8 * c->sm_count + d->batch * d->kv_heads - 1) / (d->batch * d->kv_heads);
    int by_len = (d->max_context + SPLIT_MIN_TOKENS - 1) / SPLIT_MIN_TOKENS;
    int splits = want < by_len ? want : by_len;
    if (splits < 1)
        splits = 1;
    int tokens_per_split = (d->max_context + splits - 1) / splits;
    if (splits > 1) {
        size_t bytes = (size_t)d->batch * d->heads * splits * partial_floats(d->head_dim) * sizeof(float);
        int st = dy_cuda_reserve(c, (void **)&c->partials, &c->partials_size, bytes);
        if (st != DY_OK)
            return st;
    }
    int per_kv = d->heads / d->kv_heads, epl = epl_for(d->head_dim);
    dim3 grid((unsigned)d->batch, (unsigned)d->kv_heads, (unsigned)splits);
    /* the vectorised kernel needs 16-byte aligned caches and a head dim it
     * was built for */
    bool fast = (d->head_dim == 64 || d->head_dim == 128) &&
                ((uintptr_t)dy_cuda_ptr(d->k_cache) % 16) == 0 &&
                ((uintptr_t)dy_cuda_ptr(d->v_cache) % 16) == 0;
    size_t shared = (size_t)DECODE_WARPS * MAX_GROUP * d->head_dim * sizeof(float);
    const void *q = dy_cuda_ptr(d->q), *kc = dy_cuda_ptr(d->k_cache), *vc = dy_cuda_ptr(d->v_cache);
    const int32_t *table = (const int32_t *)dy_cuda_ptr(d->block_table);
    const int32_t *lens = (const int32_t *)dy_cuda_ptr(d->context_lens);
    void *out = dy_cuda_ptr(d->out);
    for (int head0 = 0; head0 < per_kv; head0 += MAX_GROUP) {
        int group = per_kv - head0 < MAX_GROUP ? per_kv - head0 : MAX_GROUP;
#define DY_DECODE(E, G)                                                                           \
    decode_kernel<E, G><<<grid, DECODE_WARPS * DY_WARP, shared, c->stream>>>(                     \
        *d, q, kc, vc, table, lens, out, c->partials, splits, tokens_per_split, head0, group)
#define DY_FAST(HD, LPT, G)                                                                       \
    decode_fast_kernel<HD, LPT, G><<<grid, DECODE_WARPS * DY_WARP, 0, c->stream>>>(               \
        *d, q, kc, vc, table, lens, out, c->partials, splits, tokens_per_split, head0, group)
        /* 8 lanes per key (4 keys in flight per 32-lane warp); 16 for
         * the largest group at dim 128, whose state would not fit in registers */
        if (fast && d->head_dim == 128) {
            if (group <= 1) DY_FAST(128, 8, 1);
            else if (group <= 2) DY_FAST(128, 8, 2);
            else if (group <= 4) DY_FAST(128, 8, 4);
            else DY_FAST(128, 16, 8);
        } else if (fast) {
            if (group <= 1) DY_FAST(64, 8, 1);
            else if (group <= 2) DY_FAST(64, 8, 2);
            else if (group <= 4) DY_FAST(64, 8, 4);
            else DY_FAST(64, 8, 8);
        } else {
            DY_DISPATCH(DY_DECODE, epl, group);
        }
#undef DY_FAST
#undef DY_DECODE
    }
    int st = dy_cuda_check_launch(c, "attention_decode");
    if (st != DY_OK || splits == 1)
        return st;
    merge_splits_kernel<<<dim3((unsigned)d->batch, (unsigned)d->heads), 128, 0, c->stream>>>(
        *d, c->partials, splits, out);
    return dy_cuda_check_launch(c, "attention_decode merge");
}
