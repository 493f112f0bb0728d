/* The cpu backend's MoE routing ops: the router's softmax and top-k, the
 * stable counting sort of token-expert pairs, and the weighted gather-add
 * of the experts' rows back into each token's. The grouped GEMM between
 * them is in cpu_gemm_grouped.c.
 *
 * Each is OpenMP over tokens (or pairs) once there is enough work to pay
 * for waking the team; a decode step's single token runs on the calling
 * thread. Every result is independent of the thread count. */
#include <math.h>
#include <omp.h>

#include "cpu_internal.h"

enum {
    PIECE = 256,
    /* below this many elements an op runs on the calling thread */
    SERIAL_ELEMS = 1 << 14,
    /* below this many pairs one pass of the counting sort beats splitting
     * it: each thread's histogram costs an extra prefix over the experts */
    SERIAL_PAIRS = 1 << 13
};

/* ---- softmax_topk ---- */

/* The k largest logits of a row, ties to the lower expert, in descending
 * order: ids[j] their experts and top[j] the logits. An insertion into a
 * list of k, which a logit below the list's last entry skips at once. */
static void top_k(const float *row, int experts, int k, int32_t *ids, float *top)
{
    int count = 0;
    for (int e = 0; e < experts; e++) {
        float x = row[e];
        /* strictly greater: an equal logit of a lower expert stays ahead */
        if (count == k && !(x > top[k - 1]))
            continue;
        int pos = count < k ? count++ : k - 1;
        for (; pos > 0 && x > top[pos - 1]; pos--) {
            top[pos] = top[pos - 1];
            ids[pos] = ids[pos - 1];
        }
        top[pos] = x;
        ids[pos] = e;
    }
}

/* sum over the row of exp(x - max), in pieces through the AVX2 exp */
static float exp_sum_row(const float *row, int experts, float max)
{
    float piece[PIECE];
    float sum = 0.0f;
    for (int e = 0; e < experts; e += PIECE) {
        int len = experts - e < PIECE ? experts - e : PIECE;
        for (int i = 0; i < len; i++)
            piece[i] = row[e + i];
        sum += dy_cpu_exp_sum(piece, len, max);
    }
    return sum;
}

int dy_cpu_softmax_topk(void *ctx, const struct dy_softmax_topk_desc *d)
{
    if (d->k < 1 || d->k > d->experts || d->stride < d->experts || d->tokens < 0)
        return dy_cpu_fail(ctx, DY_E_INVALID,
                           "cpu softmax_topk: tokens %d experts %d k %d stride %d", d->tokens,
                           d->experts, d->k, d->stride);
    const float *logits = DY_CPU_PTR(d->logits);
    int32_t *ids = DY_CPU_PTR(d->ids);
    float *weights = DY_CPU_PTR(d->weights);
    int k = d->k;
#pragma omp parallel for schedule(static) if ((size_t)d->tokens * d->experts > SERIAL_ELEMS)
    for (int t = 0; t < d->tokens; t++) {
        const float *row = logits + (size_t)t * d->stride;
        int32_t *tid = ids + (size_t)t * k;
        /* the token's weights hold its top logits until they become
         * probabilities: the first is the row's maximum */
        float *tw = weights + (size_t)t * k;
        top_k(row, d->experts, k, tid, tw);
        float max = tw[0];
        float inv_sum = 1.0f / exp_sum_row(row, d->experts, max);
        double kept = 0.0;
        for (int j = 0; j < k; j++) {
            tw[j] = expf(tw[j] - max) * inv_sum;
            kept += tw[j];
        }
        if (d->renormalize)
            for (int j = 0; j < k; j++)
                tw[j] = (float)(tw[j] / kept);
    }
    return DY_OK;
}

/* ---- moe_sort ---- */

/* A counting sort in `parts` contiguous ranges of the pairs, one a thread:
 * each counts its range's experts, one thread turns the counts into every
 * range's first row per expert, and each range is placed in order. Ranges
 * are taken in order, so the sort is stable and its result the same for any
 * number of them. */
int dy_cpu_moe_sort(void *opaque, const struct dy_moe_sort_desc *d)
{
    struct dy_cpu_ctx *ctx = opaque;
    if (d->pairs < 0 || d->experts < 1)
        return dy_cpu_fail(ctx, DY_E_INVALID, "cpu moe_sort: pairs %d experts %d", d->pairs,
                           d->experts);
    const int32_t *ids = DY_CPU_PTR(d->ids);
    int32_t *offsets = DY_CPU_PTR(d->offsets), *sorted = DY_CPU_PTR(d->sorted);
    int32_t *position = DY_CPU_PTR(d->position);
    int experts = d->experts, pairs = d->pairs;
    int parts = pairs >= SERIAL_PAIRS ? ctx->threads : 1;
    /* next[part * experts + e]: the counts, then the next row of expert e
     * for that part's pairs */
    int32_t *next = dy_cpu_scratch(ctx, DY_CPU_SCRATCH_A, (size_t)parts * experts * sizeof *next);
    if (!next)
        return DY_E_NOMEM;
    int bad_id = -1;
#pragma omp parallel num_threads(parts) if (parts > 1)
    {
        int part = omp_get_thread_num(), used = omp_get_num_threads();
        int begin = (int)((long)pairs * part / used), end = (int)((long)pairs * (part + 1) / used);
        int32_t *mine = next + (size_t)part * experts;
        for (int e = 0; e < experts; e++)
            mine[e] = 0;
        for (int p = begin; p < end; p++) {
            if (ids[p] >= 0 && ids[p] < experts) {
                mine[ids[p]]++;
            } else {
#pragma omp atomic write
                bad_id = p;
            }
        }
#pragma omp barrier
#pragma omp single
        {
            int32_t row = 0;
            for (int e = 0; e < experts; e++) {
                offsets[e] = row;
                for (int q = 0; q < used; q++) {
                    int32_t count = next[(size_t)q * experts + e];
                    next[(size_t)q * experts + e] = row;
                    row += count;
                }
            }
            offsets[experts] = row;
        }
        int seen_bad;
#pragma omp atomic read
        seen_bad = bad_id;
        if (seen_bad < 0)
            for (int p = begin; p < end; p++) {
                int r = mine[ids[p]]++;
                sorted[r] = p;
                position[p] = r;
            }
    }
    if (bad_id >= 0)
        return dy_cpu_fail(ctx, DY_E_INVALID, "cpu moe_sort: expert %d of pair %d not in [0, %d)",
                           ids[bad_id], bad_id, experts);
    return DY_OK;
}

/* ---- scatter_add_rows ---- */

int dy_cpu_scatter_add_rows(void *ctx, const struct dy_scatter_add_rows_desc *d)
{
    if (d->tokens < 0 || d->k < 1 || d->cols < 0)
        return dy_cpu_fail(ctx, DY_E_INVALID, "cpu scatter_add_rows: tokens %d k %d cols %d",
                           d->tokens, d->k, d->cols);
    const float *src = DY_CPU_PTR(d->src), *weights = DY_CPU_PTR(d->weights);
    const int32_t *position = DY_CPU_PTR(d->position);
    float *dst = DY_CPU_PTR(d->dst);
    int k = d->k;
#pragma omp parallel for schedule(static) \
    if ((size_t)d->tokens * k * d->cols > SERIAL_ELEMS)
    for (int t = 0; t < d->tokens; t++) {
        float *out = dst + (size_t)t * d->dst_stride;
        const int32_t *pos = position + (size_t)t * k;
        const float *w = weights + (size_t)t * k;
        /* a piece of the row stays in L1 while the k rows add to it, in
         * order: the same sum on every run and thread count */
        for (int c = 0; c < d->cols; c += PIECE) {
            int len = d->cols - c < PIECE ? d->cols - c : PIECE;
            float acc[PIECE];
            for (int i = 0; i < len; i++)
                acc[i] = out[c + i];
            for (int j = 0; j < k; j++) {
                const float *s = src + (size_t)pos[j] * d->src_stride + c;
                for (int i = 0; i < len; i++)
                    acc[i] += w[j] * s[i];
            }
            for (int i = 0; i < len; i++)
                out[c + i] = acc[i];
        }
    }
    return DY_OK;
}
