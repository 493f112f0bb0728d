/* Attention for the cpu backend: flash-attention style tiles with an online
 * softmax, so memory stays O(tile) whatever the sequence length.
 *
 * Prefill: one task per (query block, batch, head); scores of a BQ x BK tile
 * come from dy_cpu_gemm_nt straight off K (any dtype, strided), and P . V is
 * accumulated by dy_cpu_gemm_nn_acc. Causal tasks skip the keys above the
 * diagonal, so the work is half of the full square.
 *
 * Decode: one task per (sequence, split of the context), over every head:
 * a KV block is then one contiguous run of memory read once, where a task
 * per KV head would read short strided pieces of scattered blocks. Each GQA
 * group's query heads form the rows of one tile, so each K and V row is
 * read once per group. The context is split (flash decoding) only when
 * there are too few sequences to keep every thread busy; the splits'
 * partial softmax states are then merged. fp8 and int8 caches are decoded
 * in registers by the same tiles, a quarter of f32's bytes; an int8 key's
 * scale multiplies its scores, a value's its probabilities. */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "cpu_internal.h"

enum {
    BQ = 64,  /* query rows per prefill tile */
    BK = 64,  /* keys per prefill tile */
    SEG = 64  /* keys per decode tile, within one KV block */
};

/* Online softmax state of `rows` query rows, with the running output. */
struct softmax_state {
    float *m;  /* running maximum score */
    float *l;  /* running sum of exp(score - m) */
    float *o;  /* running sum of exp(score - m) * v, [rows, head_dim] */
};

static void state_reset(struct softmax_state *st, int rows, int head_dim)
{
    for (int i = 0; i < rows; i++) {
        st->m[i] = -INFINITY;
        st->l[i] = 0.0f;
    }
    memset(st->o, 0, (size_t)rows * head_dim * sizeof(float));
}

/* Folds scores s[i, 0:valid[i]] into row i's state and turns them into
 * probabilities in place (the rest of the row zeroed up to nk), ready for
 * O += P . V. valid == NULL: every row has nk keys. */
static void softmax_update(struct softmax_state *st, float *s, size_t lds, int rows, int nk,
                           const int *valid, int head_dim)
{
    for (int i = 0; i < rows; i++) {
        float *srow = s + (size_t)i * lds;
        int n = valid ? valid[i] : nk;
        if (n <= 0) {
            memset(srow, 0, (size_t)nk * sizeof(float));
            continue;
        }
        float mx = srow[0];
        for (int j = 1; j < n; j++)
            mx = srow[j] > mx ? srow[j] : mx;
        float m_new = mx > st->m[i] ? mx : st->m[i];
        float sum = dy_cpu_exp_sum(srow, n, m_new);
        if (n < nk)
            memset(srow + n, 0, (size_t)(nk - n) * sizeof(float));
        if (m_new > st->m[i]) {
            /* exp(-inf) = 0 drops the empty initial state */
            float alpha = expf(st->m[i] - m_new);
            st->l[i] *= alpha;
            dy_cpu_scale(st->o + (size_t)i * head_dim, head_dim, alpha);
            st->m[i] = m_new;
        }
        st->l[i] += sum;
    }
}

/* out row = o / l in the output dtype; every row has seen a key (l >= 1). */
static void store_rows(const struct softmax_state *st, int rows, int head_dim, char *out,
                       size_t out_row_bytes, enum dy_dtype dtype)
{
    for (int i = 0; i < rows; i++) {
        float *orow = st->o + (size_t)i * head_dim;
        dy_cpu_scale(orow, head_dim, 1.0f / st->l[i]);
        dy_cpu_store_row(out + (size_t)i * out_row_bytes, dtype, orow, (size_t)head_dim);
    }
}

/* Query rows converted to f32 and pre-multiplied by the softmax scale. */
static void load_queries(float *qf, const char *q, size_t q_row_bytes, int rows, int head_dim,
                         enum dy_dtype dtype, float scale)
{
    for (int i = 0; i < rows; i++) {
        float *row = qf + (size_t)i * head_dim;
        dy_cpu_load_row(row, q + (size_t)i * q_row_bytes, dtype, (size_t)head_dim);
        dy_cpu_scale(row, head_dim, scale);
    }
}

static int check_heads(struct dy_cpu_ctx *ctx, const char *op, int heads, int kv_heads,
                       int head_dim, enum dy_dtype dtype, enum dy_dtype kv_dtype)
{
    if (!dy_cpu_float_dtype(dtype) || !dy_cpu_kv_dtype(kv_dtype))
        return dy_cpu_fail(ctx, DY_E_UNSUPPORTED, "cpu %s: dtype %d, kv %d", op, dtype, kv_dtype);
    if (heads <= 0 || kv_heads <= 0 || heads % kv_heads != 0 || head_dim <= 0)
        return dy_cpu_fail(ctx, DY_E_INVALID, "cpu %s: heads %d, kv_heads %d, head_dim %d", op,
                           heads, kv_heads, head_dim);
    return DY_OK;
}

/* ---- prefill ---- */

int dy_cpu_attention_prefill(void *opaque, const struct dy_attention_prefill_desc *d)
{
    struct dy_cpu_ctx *ctx = opaque;
    int status = check_heads(ctx, "attention_prefill", d->heads, d->kv_heads, d->head_dim,
                             d->dtype, d->dtype);
    if (status != DY_OK)
        return status;
    if (d->batch <= 0 || d->seq_len <= 0)
        return DY_OK;
    int hd = d->head_dim, group = d->heads / d->kv_heads;
    size_t per_thread = (size_t)BQ * hd * 2 + (size_t)BQ * BK + 2 * BQ;
    float *scratch = dy_cpu_scratch(ctx, DY_CPU_SCRATCH_A,
                                    (size_t)ctx->threads * per_thread * sizeof(float));
    if (!scratch)
        return DY_E_NOMEM;
    const char *q = DY_CPU_PTR(d->q), *k = DY_CPU_PTR(d->k), *v = DY_CPU_PTR(d->v);
    char *out = DY_CPU_PTR(d->out);
    size_t es = dy_cpu_esize(d->dtype);
    int qblocks = (d->seq_len + BQ - 1) / BQ;
    int pairs = d->batch * d->heads;
    int tasks = qblocks * pairs;

#pragma omp parallel num_threads(ctx->threads)
    {
        float *qf = scratch + (size_t)omp_get_thread_num() * per_thread;
        float *s = qf + (size_t)BQ * hd;
        struct softmax_state st = { s + BQ * BK, s + BQ * BK + BQ, s + BQ * BK + 2 * BQ };
        int valid[BQ];
        /* the last query blocks first: under a causal mask they have the
         * most keys, and dynamic scheduling then balances the tail */
#pragma omp for schedule(dynamic, 1)
        for (int task = 0; task < tasks; task++) {
            int qb = qblocks - 1 - task / pairs;
            int b = task % pairs / d->heads, h = task % d->heads, kvh = h / group;
            int q0 = qb * BQ, nq = d->seq_len - q0 < BQ ? d->seq_len - q0 : BQ;
            size_t row0 = (size_t)b * d->seq_len;
            load_queries(qf, q + ((row0 + q0) * d->q_stride + (size_t)h * hd) * es,
                         (size_t)d->q_stride * es, nq, hd, d->dtype, d->scale);
            state_reset(&st, nq, hd);
            int kv_end = d->causal ? q0 + nq : d->seq_len;
            for (int k0 = 0; k0 < kv_end; k0 += BK) {
                int nk = kv_end - k0 < BK ? kv_end - k0 : BK;
                size_t kv_off = ((row0 + k0) * d->kv_stride + (size_t)kvh * hd) * es;
                dy_cpu_gemm_nt(nq, nk, hd, qf, hd, k + kv_off, d->kv_stride, d->dtype, s, BK);
                bool masked = d->causal && k0 + nk > q0;
                if (masked)
                    for (int i = 0; i < nq; i++) {
                        int n = q0 + i - k0 + 1;
                        valid[i] = n < nk ? n : nk;
                    }
                softmax_update(&st, s, BK, nq, nk, masked ? valid : NULL, hd);
                dy_cpu_gemm_nn_acc(nq, hd, nk, s, BK, v + kv_off, d->kv_stride, d->dtype, st.o, hd);
            }
            store_rows(&st, nq, hd, out + ((row0 + q0) * d->out_stride + (size_t)h * hd) * es,
                       (size_t)d->out_stride * es, d->dtype);
        }
    }
    return DY_OK;
}

/* ---- decode ---- */

/* Splits of each sequence's context: enough (sequence, split) tasks for
 * every thread twice over, but never under 256 keys a split. */
static int decode_splits(const struct dy_attention_decode_desc *d, int threads)
{
    int want = (2 * threads + d->batch - 1) / d->batch;
    int most = (d->max_context + 255) / 256;
    if (want > most)
        want = most;
    return want > 1 ? want : 1;
}

/* Asks for a block's K and V (every KV head: one contiguous run each)
 * while the previous block computes; blocks are scattered by the block
 * table, so the hardware prefetchers cannot run ahead on their own. */
static void prefetch_block(const char *kc, const char *vc, size_t offset, size_t bytes)
{
    for (size_t line = 0; line < bytes; line += 64) {
        __builtin_prefetch(kc + offset + line, 0, 1);
        __builtin_prefetch(vc + offset + line, 0, 1);
    }
}

/* s[i, j] *= scales[j * stride] for i < rows, j < n: an int8 cache's
 * scales of n consecutive slots of one KV head, on their scores or
 * probabilities. */
static void scale_columns(float *s, size_t lds, int rows, int n, const float *scales,
                          size_t stride)
{
    float column[SEG];
    for (int j = 0; j < n; j++)
        column[j] = scales[(size_t)j * stride];
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < n; j++)
            s[(size_t)i * lds + j] *= column[j];
}

/* Merges the splits' states of one sequence into the first one's. */
static void merge_splits(float *first, size_t stride, int splits, int rows, int hd)
{
    float *m = first, *l = first + rows, *o = first + 2 * rows;
    for (int sp = 1; sp < splits; sp++) {
        const float *ms = first + sp * stride, *ls = ms + rows, *os = ms + 2 * rows;
        for (int g = 0; g < rows; g++) {
            if (ls[g] == 0.0f)
                continue;
            float m_new = ms[g] > m[g] ? ms[g] : m[g];
            float a = expf(m[g] - m_new), b = expf(ms[g] - m_new);
            for (int j = 0; j < hd; j++)
                o[(size_t)g * hd + j] = o[(size_t)g * hd + j] * a + os[(size_t)g * hd + j] * b;
            l[g] = l[g] * a + ls[g] * b;
            m[g] = m_new;
        }
    }
}

int dy_cpu_attention_decode(void *opaque, const struct dy_attention_decode_desc *d)
{
    struct dy_cpu_ctx *ctx = opaque;
    int status = check_heads(ctx, "attention_decode", d->heads, d->kv_heads, d->head_dim,
                             d->dtype, d->cache_dtype);
    if (status != DY_OK)
        return status;
    if (d->block_size <= 0)
        return dy_cpu_fail(ctx, DY_E_INVALID, "cpu attention_decode: block_size %d", d->block_size);
    bool int8 = d->cache_dtype == DY_I8;
    if (int8 && (!d->k_scale.h || !d->v_scale.h))
        return dy_cpu_fail(ctx, DY_E_INVALID, "cpu attention_decode: int8 cache without scales");
    const int32_t *lens = DY_CPU_PTR(d->context_lens);
    for (int b = 0; b < d->batch; b++)
        if (lens[b] < 1 || lens[b] > d->max_blocks_per_seq * d->block_size)
            return dy_cpu_fail(ctx, DY_E_INVALID, "cpu attention_decode: context %d of sequence %d",
                               lens[b], b);

    int hd = d->head_dim, heads = d->heads, group = heads / d->kv_heads;
    int splits = decode_splits(d, ctx->threads);
    int tasks = d->batch * splits;
    /* a state per task: m and l of every head, then the outputs */
    size_t state_floats = (size_t)heads * (2 + hd);
    size_t per_thread = (size_t)heads * hd + (size_t)group * SEG + (splits == 1 ? state_floats : 0);
    float *scratch = dy_cpu_scratch(ctx, DY_CPU_SCRATCH_A,
                                    (size_t)ctx->threads * per_thread * sizeof(float));
    float *states = NULL;
    if (!scratch)
        return DY_E_NOMEM;
    if (splits > 1 &&
        !(states = dy_cpu_scratch(ctx, DY_CPU_SCRATCH_B, tasks * state_floats * sizeof(float))))
        return DY_E_NOMEM;

    const char *q = DY_CPU_PTR(d->q), *kc = DY_CPU_PTR(d->k_cache), *vc = DY_CPU_PTR(d->v_cache);
    const int32_t *table = DY_CPU_PTR(d->block_table);
    const float *ks = int8 ? DY_CPU_PTR(d->k_scale) : NULL;
    const float *vs = int8 ? DY_CPU_PTR(d->v_scale) : NULL;
    char *out = DY_CPU_PTR(d->out);
    size_t es = dy_cpu_esize(d->dtype), cs = dy_cpu_esize(d->cache_dtype);
    size_t slot_elems = (size_t)d->kv_heads * hd;
    size_t block_bytes = (size_t)d->block_size * slot_elems * cs;
    size_t block_scales = (size_t)d->block_size * d->kv_heads;

#pragma omp parallel num_threads(ctx->threads)
    {
        float *qf = scratch + (size_t)omp_get_thread_num() * per_thread;
        float *s = qf + (size_t)heads * hd;
        float *own_state = s + (size_t)group * SEG;
#pragma omp for schedule(dynamic, 1)
        for (int task = 0; task < tasks; task++) {
            int sp = task % splits, b = task / splits;
            float *state = splits == 1 ? own_state : states + (size_t)task * state_floats;
            struct softmax_state st = { state, state + heads, state + 2 * heads };
            int len = lens[b];
            int blocks = (len + d->block_size - 1) / d->block_size;
            int per_split = (blocks + splits - 1) / splits;
            int blk_end = (sp + 1) * per_split < blocks ? (sp + 1) * per_split : blocks;
            const int32_t *entries = table + (size_t)b * d->max_blocks_per_seq;
            load_queries(qf, q + (size_t)b * d->q_stride * es, (size_t)hd * es, heads, hd, d->dtype,
                         d->scale);
            state_reset(&st, heads, hd);
            /* a block holds every KV head's rows: one contiguous run of K
             * and one of V, read once by this task */
            for (int blk = sp * per_split; blk < blk_end; blk++) {
                size_t slot0 = (size_t)entries[blk] * d->block_size;
                int in_block = len - blk * d->block_size < d->block_size ? len - blk * d->block_size
                                                                         : d->block_size;
                if (blk + 1 < blk_end) {
                    prefetch_block(kc, vc, (size_t)entries[blk + 1] * block_bytes, block_bytes);
                    /* and int8's scales of the block, as scattered */
                    if (int8)
                        prefetch_block((const char *)ks, (const char *)vs,
                                       (size_t)entries[blk + 1] * block_scales * sizeof(float),
                                       block_scales * sizeof(float));
                }
                for (int t0 = 0; t0 < in_block; t0 += SEG) {
                    int nk = in_block - t0 < SEG ? in_block - t0 : SEG;
                    for (int kvh = 0; kvh < d->kv_heads; kvh++) {
                        size_t off = ((slot0 + t0) * slot_elems + (size_t)kvh * hd) * cs;
                        size_t scale0 = (slot0 + t0) * d->kv_heads + kvh;
                        int h0 = kvh * group;
                        struct softmax_state gst = { st.m + h0, st.l + h0, st.o + (size_t)h0 * hd };
                        dy_cpu_gemm_nt(group, nk, hd, qf + (size_t)h0 * hd, hd, kc + off,
                                       slot_elems, d->cache_dtype, s, SEG);
                        if (int8)
                            scale_columns(s, SEG, group, nk, ks + scale0, (size_t)d->kv_heads);
                        softmax_update(&gst, s, SEG, group, nk, NULL, hd);
                        if (int8)
                            scale_columns(s, SEG, group, nk, vs + scale0, (size_t)d->kv_heads);
                        dy_cpu_gemm_nn_acc(group, hd, nk, s, SEG, vc + off, slot_elems,
                                           d->cache_dtype, gst.o, hd);
                    }
                }
            }
            if (splits == 1)
                store_rows(&st, heads, hd, out + (size_t)b * d->out_stride * es, (size_t)hd * es,
                           d->dtype);
        }
        if (splits > 1) {
            /* the implicit barrier of the loop above has every split done */
#pragma omp for schedule(static)
            for (int b = 0; b < d->batch; b++) {
                float *first = states + (size_t)b * splits * state_floats;
                merge_splits(first, state_floats, splits, heads, hd);
                struct softmax_state st = { first, first + heads, first + 2 * heads };
                store_rows(&st, heads, hd, out + (size_t)b * d->out_stride * es, (size_t)hd * es,
                           d->dtype);
            }
        }
    }
    return DY_OK;
}
