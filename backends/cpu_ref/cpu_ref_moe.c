/* cpu-ref MoE ops: the router's softmax and top-k, the counting sort of
 * token-expert pairs, the grouped GEMM and the weighted gather-add. Plain
 * loops, double accumulation where there is a sum. */
#include <math.h>
#include <stdlib.h>

#include "cpu_ref.h"

int dy_ref_softmax_topk(void *ctx, const struct dy_softmax_topk_desc *d)
{
    const float *logits = dy_ref_ptr(d->logits);
    int32_t *ids = dy_ref_ptr(d->ids);
    float *weights = dy_ref_ptr(d->weights);
    if (d->k < 1 || d->k > d->experts)
        return DY_E_INVALID;
    float *p = malloc((size_t)d->experts * sizeof *p);
    if (!p)
        return DY_E_NOMEM;
    for (int t = 0; t < d->tokens; t++) {
        const float *row = logits + (size_t)t * d->stride;
        float max = row[0];
        for (int e = 1; e < d->experts; e++)
            max = row[e] > max ? row[e] : max;
        double sum = 0.0;
        for (int e = 0; e < d->experts; e++)
            sum += exp((double)row[e] - max);
        for (int e = 0; e < d->experts; e++)
            p[e] = (float)(exp((double)row[e] - max) / sum);
        double kept = 0.0;
        for (int j = 0; j < d->k; j++) {
            int best = -1;
            for (int e = 0; e < d->experts; e++)
                if (p[e] >= 0.0f && (best < 0 || row[e] > row[best]))
                    best = e;
            ids[(size_t)t * d->k + j] = best;
            weights[(size_t)t * d->k + j] = p[best];
            kept += p[best];
            p[best] = -1.0f; /* taken */
        }
        if (d->renormalize)
            for (int j = 0; j < d->k; j++)
                weights[(size_t)t * d->k + j] = (float)(weights[(size_t)t * d->k + j] / kept);
    }
    free(p);
    return DY_OK;
}

int dy_ref_moe_sort(void *ctx, const struct dy_moe_sort_desc *d)
{
    const int32_t *ids = dy_ref_ptr(d->ids);
    int32_t *offsets = dy_ref_ptr(d->offsets), *sorted = dy_ref_ptr(d->sorted);
    int32_t *position = dy_ref_ptr(d->position);
    for (int e = 0; e <= d->experts; e++)
        offsets[e] = 0;
    for (int p = 0; p < d->pairs; p++) {
        if (ids[p] < 0 || ids[p] >= d->experts)
            return DY_E_INVALID;
        offsets[ids[p] + 1]++;
    }
    for (int e = 0; e < d->experts; e++)
        offsets[e + 1] += offsets[e];
    int32_t *next = malloc(((size_t)d->experts + 1) * sizeof *next);
    if (!next)
        return DY_E_NOMEM;
    for (int e = 0; e < d->experts; e++)
        next[e] = offsets[e];
    for (int p = 0; p < d->pairs; p++) {
        int r = next[ids[p]]++;
        sorted[r] = p;
        position[p] = r;
    }
    free(next);
    return DY_OK;
}

int dy_ref_gemm_grouped(void *ctx, const struct dy_gemm_grouped_desc *d)
{
    const float *a = dy_ref_ptr(d->a);
    const int32_t *a_rows = d->a_rows.h ? dy_ref_ptr(d->a_rows) : NULL;
    const int32_t *offsets = dy_ref_ptr(d->offsets);
    float *c = dy_ref_ptr(d->c);
    bool quantized = dy_dtype_quantized(d->b_dtype);
    if ((d->a_row_div < 1 && a_rows) ||
        (quantized && (d->b_expert_stride != (size_t)d->n * d->k ||
                       (d->b_dtype == DY_I4 && d->k % d->bq.group))))
        return quantized ? DY_E_UNSUPPORTED : DY_E_INVALID;
    size_t scales = quantized ? dy_quant_scales(d->b_dtype, d->n, d->k, d->bq.group) : 0;
    for (int e = 0; e < d->experts; e++) {
        struct dy_quant qe = d->bq;
        qe.scale = dy_buf_at(d->bq.scale, e * scales * sizeof(float));
        if (qe.zero.h)
            qe.zero = dy_buf_at(d->bq.zero, e * scales);
        dy_buf be = dy_buf_at(d->b, dy_dtype_bytes(d->b_dtype, (size_t)e * d->b_expert_stride));
        struct dy_ref_weights w = dy_ref_weights_of(be, d->b_dtype, &qe, d->k, d->k);
        for (int r = offsets[e]; r < offsets[e + 1] && r < d->rows; r++) {
            const float *ar = a + (size_t)(a_rows ? a_rows[r] / d->a_row_div : r) * d->lda;
            for (int j = 0; j < d->n; j++) {
                double acc = 0.0;
                for (int p = 0; p < d->k; p++)
                    acc += (double)ar[p] * dy_ref_weight(&w, (size_t)j, (size_t)p);
                c[(size_t)r * d->ldc + j] = (float)acc;
            }
        }
    }
    return DY_OK;
}

int dy_ref_scatter_add_rows(void *ctx, const struct dy_scatter_add_rows_desc *d)
{
    const float *src = dy_ref_ptr(d->src), *w = dy_ref_ptr(d->weights);
    const int32_t *position = dy_ref_ptr(d->position);
    float *dst = dy_ref_ptr(d->dst);
    for (int t = 0; t < d->tokens; t++) {
        for (int i = 0; i < d->cols; i++) {
            double acc = dst[(size_t)t * d->dst_stride + i];
            for (int j = 0; j < d->k; j++) {
                size_t p = (size_t)t * d->k + j;
                acc += (double)w[p] * src[(size_t)position[p] * d->src_stride + i];
            }
            dst[(size_t)t * d->dst_stride + i] = (float)acc;
        }
    }
    return DY_OK;
}
