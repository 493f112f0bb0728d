/* cpu-ref attention: exact softmax in double, GQA by head grouping. */
#include <math.h>
#include <stdlib.h>

#include "cpu_ref.h"

/* out = softmax(q . K^T * scale) . V over `len` keys fetched by key_row(). */
static void attend(const void *q, size_t q_off, enum dy_dtype q_dtype, int head_dim,
                   const void *kbase, const void *vbase, enum dy_dtype kv_dtype,
                   const size_t *key_offsets, int len, double scale, double *scores,
                   void *out, size_t out_off, enum dy_dtype out_dtype)
{
    double max = -INFINITY;
    for (int j = 0; j < len; j++) {
        double dot = 0.0;
        for (int i = 0; i < head_dim; i++)
            dot += (double)dy_load_f32(q, q_dtype, q_off + i) *
                   dy_load_f32(kbase, kv_dtype, key_offsets[j] + i);
        scores[j] = dot * scale;
        if (scores[j] > max)
            max = scores[j];
    }
    double sum = 0.0;
    for (int j = 0; j < len; j++) {
        scores[j] = exp(scores[j] - max);
        sum += scores[j];
    }
    for (int i = 0; i < head_dim; i++) {
        double acc = 0.0;
        for (int j = 0; j < len; j++)
            acc += scores[j] * dy_load_f32(vbase, kv_dtype, key_offsets[j] + i);
        dy_store_f32(out, out_dtype, out_off + i, (float)(acc / sum));
    }
}

int dy_ref_attention_prefill(void *ctx, const struct dy_attention_prefill_desc *d)
{
    if (d->heads % d->kv_heads)
        return DY_E_INVALID;
    const void *q = dy_ref_ptr(d->q), *k = dy_ref_ptr(d->k), *v = dy_ref_ptr(d->v);
    void *out = dy_ref_ptr(d->out);
    int group = d->heads / d->kv_heads;
    double *scores = malloc(sizeof(double) * (size_t)d->seq_len);
    size_t *offs = malloc(sizeof(size_t) * (size_t)d->seq_len);
    if (!scores || !offs) {
        free(scores);
        free(offs);
        return DY_E_NOMEM;
    }
    for (int b = 0; b < d->batch; b++) {
        for (int h = 0; h < d->heads; h++) {
            int kvh = h / group;
            for (int t = 0; t < d->seq_len; t++) {
                size_t row = (size_t)b * d->seq_len + t;
                int len = d->causal ? t + 1 : d->seq_len;
                for (int j = 0; j < len; j++)
                    offs[j] = ((size_t)b * d->seq_len + j) * d->kv_stride + (size_t)kvh * d->head_dim;
                attend(q, row * d->q_stride + (size_t)h * d->head_dim, d->dtype, d->head_dim, k, v,
                       d->dtype, offs, len, d->scale, scores, out,
                       row * d->out_stride + (size_t)h * d->head_dim, d->dtype);
            }
        }
    }
    free(scores);
    free(offs);
    return DY_OK;
}

int dy_ref_attention_decode(void *ctx, const struct dy_attention_decode_desc *d)
{
    if (d->heads % d->kv_heads)
        return DY_E_INVALID;
    const void *q = dy_ref_ptr(d->q);
    const void *kc = dy_ref_ptr(d->k_cache), *vc = dy_ref_ptr(d->v_cache);
    const int32_t *table = dy_ref_ptr(d->block_table), *lens = dy_ref_ptr(d->context_lens);
    void *out = dy_ref_ptr(d->out);
    int group = d->heads / d->kv_heads;
    size_t row = (size_t)d->kv_heads * d->head_dim;
    int max_len = d->block_size * d->max_blocks_per_seq;
    double *scores = malloc(sizeof(double) * (size_t)max_len);
    size_t *offs = malloc(sizeof(size_t) * (size_t)max_len);
    if (!scores || !offs) {
        free(scores);
        free(offs);
        return DY_E_NOMEM;
    }
    int status = DY_OK;
    for (int b = 0; b < d->batch; b++) {
        int len = lens[b];
        if (len < 1 || len > max_len) {
            status = DY_E_INVALID;
            break;
        }
        for (int h = 0; h < d->heads; h++) {
            for (int j = 0; j < len; j++) {
                int block = table[(size_t)b * d->max_blocks_per_seq + j / d->block_size];
                size_t slot = (size_t)block * d->block_size + j % d->block_size;
                offs[j] = slot * row + (size_t)(h / group) * d->head_dim;
            }
            attend(q, (size_t)b * d->q_stride + (size_t)h * d->head_dim, d->dtype, d->head_dim,
                   kc, vc, d->cache_dtype, offs, len, d->scale, scores, out,
                   (size_t)b * d->out_stride + (size_t)h * d->head_dim, d->dtype);
        }
    }
    free(scores);
    free(offs);
    return status;
}
