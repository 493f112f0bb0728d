/* cpu-ref attention: exact softmax in double, GQA by head grouping. */
#include <math.h>
#include <stdlib.h>

#include "cpu_ref.h"

/* Scales of an int8 cache: key j's K and V elements are multiplied by
 * k[idx[j]] and v[idx[j]]; NULL k for the other dtypes. */
struct kv_scales {
    const float *k, *v;
    const size_t *idx;
};

static double key_scale(const struct kv_scales *s, int j, bool value)
{
    return s->k ? (value ? s->v : s->k)[s->idx[j]] : 1.0;
}

/* out = softmax(q . K^T * scale) . V over `len` keys at key_offsets. */
static void attend(const void *q, size_t q_off, enum dy_dtype q_dtype, int head_dim,
                   const void *kbase, const void *vbase, enum dy_dtype kv_dtype,
                   const size_t *key_offsets, const struct kv_scales *kvs, int len, double scale,
                   double *scores, void *out, size_t out_off, enum dy_dtype out_dtype)
{
    double max = -INFINITY;
    for (int j = 0; j < len; j++) {
        double dot = 0.0;
        for (int i = 0; i < head_dim; i++)
            dot += (double)dy_load_f32(q, q_dtype, q_off + i) *
                   dy_load_f32(kbase, kv_dtype, key_offsets[j] + i);
        scores[j] = dot * key_scale(kvs, j, false) * scale;
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
            acc += scores[j] * key_scale(kvs, j, true) * dy_load_f32(vbase, kv_dtype, key_offsets[j] + i);
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
                struct kv_scales none = { 0 };
                attend(q, row * d->q_stride + (size_t)h * d->head_dim, d->dtype, d->head_dim, k, v,
                       d->dtype, offs, &none, len, d->scale, scores, out,
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
    size_t *scale_idx = malloc(sizeof(size_t) * (size_t)max_len);
    struct kv_scales kvs = { 0 };
    if (d->cache_dtype == DY_I8) {
        if (!d->k_scale.h || !d->v_scale.h)
            max_len = 0; /* reported below */
        else
            kvs = (struct kv_scales){ dy_ref_ptr(d->k_scale), dy_ref_ptr(d->v_scale), scale_idx };
    }
    if (!scores || !offs || !scale_idx) {
        free(scores);
        free(offs);
        free(scale_idx);
        return DY_E_NOMEM;
    }
    int status = max_len ? DY_OK : DY_E_INVALID;
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
                scale_idx[j] = slot * d->kv_heads + (size_t)(h / group);
            }
            attend(q, (size_t)b * d->q_stride + (size_t)h * d->head_dim, d->dtype, d->head_dim,
                   kc, vc, d->cache_dtype, offs, &kvs, len, d->scale, scores, out,
                   (size_t)b * d->out_stride + (size_t)h * d->head_dim, d->dtype);
        }
    }
    free(scores);
    free(offs);
    free(scale_idx);
    return status;
}

int dy_ref_kv_block_scores(void *ctx, const struct dy_kv_block_scores_desc *d)
{
    const void *kc = dy_ref_ptr(d->k_cache), *vc = dy_ref_ptr(d->v_cache);
    const int32_t *blocks = dy_ref_ptr(d->blocks);
    float *scores = dy_ref_ptr(d->scores);
    const float *ks = NULL, *vs = NULL;
    if (d->cache_dtype == DY_I8) {
        if (!d->k_scale.h || !d->v_scale.h)
            return DY_E_INVALID;
        ks = dy_ref_ptr(d->k_scale);
        vs = dy_ref_ptr(d->v_scale);
    }
    size_t row = (size_t)d->kv_heads * d->head_dim;
    for (int i = 0; i < d->count; i++) {
        double sum = 0.0;
        for (int t = 0; t < d->block_size; t++) {
            size_t slot = (size_t)blocks[i] * d->block_size + t;
            double token = 0.0;
            for (int h = 0; h < d->kv_heads; h++) {
                double kk = 0.0, vv = 0.0;
                for (int e = 0; e < d->head_dim; e++) {
                    double kx = dy_load_f32(kc, d->cache_dtype, slot * row + (size_t)h * d->head_dim + e);
                    double vx = dy_load_f32(vc, d->cache_dtype, slot * row + (size_t)h * d->head_dim + e);
                    kk += kx * kx;
                    vv += vx * vx;
                }
                double knorm = sqrt(kk) * (ks ? ks[slot * d->kv_heads + h] : 1.0);
                double vnorm = sqrt(vv) * (vs ? vs[slot * d->kv_heads + h] : 1.0);
                knorm = knorm > 1e-12 ? knorm : 1e-12;
                token += d->kind == DY_KV_SCORE_VK_RATIO ? vnorm / knorm : 1.0 / knorm;
            }
            sum += token / d->kv_heads;
        }
        scores[i] = (float)sum;
    }
    return DY_OK;
}
