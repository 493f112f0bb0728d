/* Attention on CUDA, flash-decoding style: one warp walks keys with an
 * online softmax for every query head of one GQA group, so each K/V row is
 * read once per group. Lane l holds head-dim elements [l*EPL, l*EPL+EPL).
 * This file has prefill, the generic decode kernel (any head dim and
 * alignment) and the merge of decode's splits; the vectorised decode
 * kernel for dims 64 and 128 is cuda_decode.cu.
 * A warp is DY_WARP lanes (32 on NVIDIA, the wavefront on AMD): every lane
 * and shuffle count below derives from it.
 *
 * Prefill: one warp per (sequence, query token, KV head); causal or not.
 * Decode: a block of warps per (sequence, KV head, context split) over the
 * paged cache; splits are merged by a second kernel when there are several. */
#include <math.h>

#include "cuda_decode.h"
#include "cuda_quant.h"

#define PREFILL_WARPS 4
/* Splits of a sequence's context for the generic kernel: blocks for about
 * SPLIT_BLOCKS_PER_SM per multiprocessor (the vectorised kernel: as many
 * as fit at once), each at least SPLIT_MIN_TOKENS keys (measured on an
 * H100 with bench/cuda/kv_bench.c at Llama-3.1-8B's shape: against 8
 * blocks of 32 keys, batch 1 x 4,096 took 19.5 instead of 28.8 us a
 * layer, batch 64 x 2,048 197 instead of 211;
 * DYNO_CUDA_DECODE_SPLIT=BLOCKS,KEYS sets both, for either kernel) */
#define SPLIT_BLOCKS_PER_SM 2
#define SPLIT_MIN_TOKENS 64

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

/* One key/value row into every head's running softmax; v_scale multiplies
 * the row of values (an int8 cache's scale, folded into the weight). */
template <int EPL, int G>
__device__ __forceinline__ void attend_row(qstate<EPL, G> &s, int group, const float *k, const float *v,
                                           float scale, float v_scale)
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
        float pv = p * v_scale;
#pragma unroll
        for (int e = 0; e < EPL; e++)
            s.acc[g][e] = s.acc[g][e] * corr + pv * v[e];
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
        attend_row<EPL, G>(s, group, kr, vr, d.scale, 1.0f);
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
    if (d->kv_heads <= 0 || d->heads % d->kv_heads || d->head_dim > 256 ||
        !dy_cuda_is_activation_dtype(d->dtype)) {
        snprintf(c->err, sizeof c->err,
                 "attention_prefill: heads %% kv_heads != 0, head_dim > 256 or not f32/f16/bf16");
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
              const float *ks, const float *vs, const int32_t *table, const int32_t *lens, void *out,
              float *partials, int splits, int tokens_per_split, int head0, int group)
{
    DY_GRID_ENTER();
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
        size_t slot = (size_t)block * d.block_size + j % d.block_size, off = slot * row + (size_t)kvh * d.head_dim;
        float kr[EPL], vr[EPL];
        load_row<EPL>(kc, d.cache_dtype, off, lane, d.head_dim, kr);
        load_row<EPL>(vc, d.cache_dtype, off, lane, d.head_dim, vr);
        /* int8: the key's scale joins the dot product's, the value's the weight */
        float k_scale = ks ? ks[slot * d.kv_heads + kvh] : 1.0f, v_scale = vs ? vs[slot * d.kv_heads + kvh] : 1.0f;
        attend_row<EPL, G>(s, group, kr, vr, d.scale * k_scale, v_scale);
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

/* Sum over the block of v (max when take_max); every thread gets it.
 * `shared` holds one float per warp. */
__device__ float block_reduce(float v, bool take_max, float *shared)
{
    for (int o = DY_WARP / 2; o > 0; o >>= 1) {
        float other = __shfl_xor_sync(0xffffffffu, v, o);
        v = take_max ? fmaxf(v, other) : v + other;
    }
    int warp = threadIdx.x / DY_WARP, lane = threadIdx.x % DY_WARP;
    __syncthreads();
    if (lane == 0)
        shared[warp] = v;
    __syncthreads();
    float total = shared[0];
    for (int w = 1; w < (int)blockDim.x / DY_WARP; w++)
        total = take_max ? fmaxf(total, shared[w]) : total + shared[w];
    return total;
}

/* One block per (sequence, head) of head_dim * shares threads (rounded up
 * to whole warps; the threads past them only reduce): thread (share r,
 * element i) merges splits r, r + shares, ..., so a long context's many
 * splits are read in parallel. Its first MERGE_HELD splits' m, l and
 * element i are loaded at once, one trip to L2 (a split's partials were
 * written by the kernel just before); then the block's maximum, each
 * share's weighted sums, the shares added at the end. Measured on an H200
 * against the first merge, which read m, then l, then the elements, with
 * a block reduction between: Llama-3.1-8B b1 after 1,024 tokens 4.593 ->
 * 4.558 ms a step, Llama-3.2-1B 1.151 -> 1.132, OLMoE 1.269 -> 1.246.
 * Dynamic shared memory: blockDim.x + shares floats. */
#define MERGE_HELD 8
__global__ void merge_splits_kernel(struct dy_attention_decode_desc d, const float *partials, int splits, void *out)
{
    DY_GRID_ENTER();
    extern __shared__ float merge_space[];
    __shared__ float reduce_space[1024 / DY_WARP];
    int b = blockIdx.x, h = blockIdx.y, hd = d.head_dim, shares = blockDim.x / hd;
    int i = threadIdx.x % hd, share = threadIdx.x / hd;
    size_t stride = (size_t)hd + 2;
    const float *p = partials + ((size_t)b * d.heads + h) * splits * stride + (size_t)share * stride;
    int mine = share < shares ? (splits - share + shares - 1) / shares : 0;
    float ms[MERGE_HELD], ls[MERGE_HELD], as[MERGE_HELD], m = -INFINITY;
#pragma unroll
    for (int r = 0; r < MERGE_HELD; r++) {
        const float *at = p + (size_t)r * shares * stride;
        ms[r] = r < mine ? at[0] : -INFINITY;
        ls[r] = r < mine ? at[1] : 0.0f;
        as[r] = r < mine ? at[2 + i] : 0.0f;
    }
#pragma unroll
    for (int r = 0; r < MERGE_HELD; r++)
        m = fmaxf(m, ms[r]);
    for (int r = MERGE_HELD; r < mine; r++)
        m = fmaxf(m, p[(size_t)r * shares * stride]);
    m = block_reduce(m, true, reduce_space);
    float l = 0.0f, a = 0.0f;
#pragma unroll
    for (int r = 0; r < MERGE_HELD; r++) {
        float w = merge_weight(ms[r], m);
        l += w * ls[r];
        a += w * as[r];
    }
    for (int r = MERGE_HELD; r < mine; r++) {
        const float *at = p + (size_t)r * shares * stride;
        float w = merge_weight(at[0], m);
        l += w * at[1];
        a += w * at[2 + i];
    }
    float *sums = merge_space, *share_l = merge_space + blockDim.x;
    sums[threadIdx.x] = a;
    if (i == 0 && share < shares)
        share_l[share] = l;
    __syncthreads();
    if ((int)threadIdx.x < hd) {
        float total = share_l[0];
        for (int r = 1; r < shares; r++) {
            a += sums[r * hd + i];
            total += share_l[r];
        }
        dy_store_f32(out, d.dtype, (size_t)b * d.out_stride + (size_t)h * hd + i, a / total);
    }
}

int dy_cuda_attention_decode(void *ctx, const struct dy_attention_decode_desc *d)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    struct dy_attention_decode_desc early_off;
    if (!c->early_kv) {
        early_off = *d;
        early_off.fresh_tokens = 0;
        d = &early_off;
    }
    if (d->kv_heads <= 0 || d->heads % d->kv_heads || d->head_dim > 256 || d->max_context < 1 ||
        !dy_cuda_is_activation_dtype(d->dtype) || !dy_cuda_is_cache_dtype(d->cache_dtype)) {
        snprintf(c->err, sizeof c->err,
                 "attention_decode: heads %% kv_heads != 0, head_dim > 256, no context or dtypes "
                 "%d / %d", (int)d->dtype, (int)d->cache_dtype);
        return DY_E_UNSUPPORTED;
    }
    bool int8 = d->cache_dtype == DY_I8;
    if (int8 && (!d->k_scale.h || !d->v_scale.h)) {
        snprintf(c->err, sizeof c->err, "attention_decode: an int8 cache needs k_scale and v_scale");
        return DY_E_INVALID;
    }
    if (d->batch <= 0)
        return DY_OK;
    int per_kv = d->heads / d->kv_heads, epl = epl_for(d->head_dim);
    /* the vectorised kernel needs 16-byte aligned caches and a head dim it
     * was built for */
    bool fast = (d->head_dim == 64 || d->head_dim == 128) &&
                ((uintptr_t)dy_cuda_ptr(d->k_cache) % 16) == 0 &&
                ((uintptr_t)dy_cuda_ptr(d->v_cache) % 16) == 0;
    /* Enough blocks to fill the chip, each with a useful stretch of keys.
     * The vectorised kernel gets the most splits whose blocks all fit on
     * the multiprocessors at once, one wave (H200, bench/README twentieth
     * session: 16 x 4,096 93 -> 78 us a layer, 1 x 8,192 24.2 -> 22.7);
     * the generic kernel about SPLIT_BLOCKS_PER_SM a multiprocessor. */
    int units = d->batch * d->kv_heads, resident = 0;
    int per_sm = SPLIT_BLOCKS_PER_SM, min_tokens = SPLIT_MIN_TOKENS, want;
    bool tuned = dy_cuda_tuning("DYNO_CUDA_DECODE_SPLIT", &per_sm, &min_tokens);
    if (tuned) {
        per_sm = per_sm < 1 ? 1 : per_sm;
        min_tokens = min_tokens < 1 ? 1 : min_tokens;
    }
    if (fast && !tuned) {
        int group = per_kv < MAX_GROUP ? per_kv : MAX_GROUP;
        int st = dy_cuda_decode_fast(c, d, dim3(1, 1, 1), 1, d->max_context, 0, group, &resident);
        if (st != DY_OK && st != DY_E_UNSUPPORTED)
            return st;
    }
    if (resident > 0)
        want = resident * c->sm_count / units;
    else
        want = (per_sm * c->sm_count + units - 1) / units;
    int by_len = (d->max_context + min_tokens - 1) / min_tokens;
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
    dim3 grid((unsigned)d->batch, (unsigned)d->kv_heads, (unsigned)splits);
    size_t shared = (size_t)DECODE_WARPS * MAX_GROUP * d->head_dim * sizeof(float);
    const void *q = dy_cuda_ptr(d->q), *kc = dy_cuda_ptr(d->k_cache), *vc = dy_cuda_ptr(d->v_cache);
    const float *ks = int8 ? (const float *)dy_cuda_ptr(d->k_scale) : NULL;
    const float *vs = int8 ? (const float *)dy_cuda_ptr(d->v_scale) : NULL;
    const int32_t *table = (const int32_t *)dy_cuda_ptr(d->block_table);
    const int32_t *lens = (const int32_t *)dy_cuda_ptr(d->context_lens);
    void *out = dy_cuda_ptr(d->out);
    for (int head0 = 0; head0 < per_kv; head0 += MAX_GROUP) {
        int group = per_kv - head0 < MAX_GROUP ? per_kv - head0 : MAX_GROUP;
#define DY_DECODE(E, G)                                                                           \
    dy_launch(c, decode_kernel<E, G>, grid, DECODE_WARPS * DY_WARP, shared, *d, q, kc, vc, ks, vs, table, lens, \
              out, c->partials, splits, tokens_per_split, head0, group)
        /* the vectorised kernel, unless its tiles do not fit the device's
         * shared memory (f32 on a 64 KB part) */
        int st = fast ? dy_cuda_decode_fast(c, d, grid, splits, tokens_per_split, head0, group, NULL)
                      : DY_E_UNSUPPORTED;
        if (st == DY_E_UNSUPPORTED)
            DY_DISPATCH(DY_DECODE, epl, group);
        else if (st != DY_OK)
            return st;
#undef DY_DECODE
    }
    int st = dy_cuda_check_launch(c, "attention_decode");
    if (st != DY_OK || splits == 1)
        return st;
    /* about 8 splits per thread, at most 1024 threads */
    int shares = splits / 8, most = 1024 / d->head_dim;
    shares = shares < 1 ? 1 : shares > most ? most : shares;
    /* whole warps: the reductions shuffle across every lane */
    unsigned threads = (unsigned)((shares * d->head_dim + DY_WARP - 1) / DY_WARP * DY_WARP);
    dy_launch(c, merge_splits_kernel, dim3((unsigned)d->batch, (unsigned)d->heads), threads,
              (threads + shares) * sizeof(float), *d, c->partials, splits, out);
    return dy_cuda_check_launch(c, "attention_decode merge");
}
