/* cpu-ref ops other than attention: plain loops, double accumulation.
 * Built with -ffp-contract=off so that fill_random's multiply and add round
 * separately, as every backend must. */
#include <math.h>
#include <string.h>

#include "cpu_ref.h"

int dy_ref_fill_random(void *ctx, const struct dy_fill_random_desc *d)
{
    uint64_t key = dy_random_key(d->seed, d->stream);
    void *dst = dy_ref_ptr(d->dst);
    for (size_t i = 0; i < d->count; i++) {
        float scaled = d->scale * dy_random_unit(key, i);
        dy_store_f32(dst, d->dtype, i, d->offset + scaled);
    }
    return DY_OK;
}

int dy_ref_gemm(void *ctx, const struct dy_gemm_desc *d)
{
    const void *a = dy_ref_ptr(d->a);
    struct dy_ref_weights w = dy_ref_weights_of(d->b, d->b_dtype, &d->bq, d->k, d->ldb);
    const void *bias = d->bias.h ? dy_ref_ptr(d->bias) : NULL;
    enum dy_dtype bias_dtype = dy_dtype_quantized(d->b_dtype) ? d->bq.bias_dtype : d->b_dtype;
    void *c = dy_ref_ptr(d->c);
    if (dy_dtype_quantized(d->b_dtype) &&
        (d->a_dtype != DY_F32 || d->ldb != d->k || (d->b_dtype == DY_I4 && d->k % d->bq.group)))
        return DY_E_UNSUPPORTED;
    for (int i = 0; i < d->m; i++) {
        for (int j = 0; j < d->n; j++) {
            double acc = 0.0;
            for (int p = 0; p < d->k; p++)
                acc += (double)dy_load_f32(a, d->a_dtype, (size_t)i * d->lda + p) *
                       dy_ref_weight(&w, (size_t)j, (size_t)p);
            if (bias)
                acc += dy_load_f32(bias, bias_dtype, (size_t)j);
            size_t ci = (size_t)i * d->ldc + j;
            if (d->beta != 0.0f)
                acc += (double)d->beta * dy_load_f32(c, d->c_dtype, ci);
            dy_store_f32(c, d->c_dtype, ci, (float)acc);
        }
    }
    return DY_OK;
}

int dy_ref_dequantize(void *ctx, const struct dy_dequantize_desc *d)
{
    if (!dy_dtype_quantized(d->q_dtype) || (d->q_dtype == DY_I4 && d->k % d->qp.group))
        return DY_E_UNSUPPORTED;
    struct dy_ref_weights w = dy_ref_weights_of(d->q, d->q_dtype, &d->qp, d->k, d->k);
    void *out = dy_ref_ptr(d->out);
    for (int r = 0; r < d->rows; r++)
        for (int i = 0; i < d->k; i++)
            dy_store_f32(out, d->out_dtype, (size_t)r * d->out_stride + i,
                         (float)dy_ref_weight(&w, (size_t)r, (size_t)i));
    return DY_OK;
}

int dy_ref_norm(void *ctx, const struct dy_norm_desc *d)
{
    const void *x = dy_ref_ptr(d->x), *w = dy_ref_ptr(d->weight);
    const void *bias = d->bias.h ? dy_ref_ptr(d->bias) : NULL;
    void *out = dy_ref_ptr(d->out);
    for (int r = 0; r < d->rows; r++) {
        size_t xr = (size_t)r * d->x_stride, orow = (size_t)r * d->out_stride;
        double mean = 0.0, sq = 0.0;
        for (int i = 0; i < d->dim; i++) {
            double v = dy_load_f32(x, d->dtype, xr + i);
            mean += v;
            sq += v * v;
        }
        mean /= d->dim;
        double var = d->kind == DY_NORM_RMS ? sq / d->dim : sq / d->dim - mean * mean;
        double center = d->kind == DY_NORM_RMS ? 0.0 : mean;
        double inv = 1.0 / sqrt(var + d->eps);
        for (int i = 0; i < d->dim; i++) {
            double v = (dy_load_f32(x, d->dtype, xr + i) - center) * inv *
                       dy_load_f32(w, d->weight_dtype, (size_t)i);
            if (bias)
                v += dy_load_f32(bias, d->weight_dtype, (size_t)i);
            dy_store_f32(out, d->out_dtype, orow + i, (float)v);
        }
    }
    return DY_OK;
}

int dy_ref_rope(void *ctx, const struct dy_rope_desc *d)
{
    void *x = dy_ref_ptr(d->x);
    const int32_t *pos = dy_ref_ptr(d->positions);
    const float *inv_freq = dy_ref_ptr(d->inv_freq);
    int half = d->head_dim / 2;
    for (int t = 0; t < d->tokens; t++) {
        for (int h = 0; h < d->heads; h++) {
            size_t base = (size_t)t * d->row_stride + (size_t)h * d->head_dim;
            for (int i = 0; i < half; i++) {
                float angle = (float)pos[t] * inv_freq[i];
                double c = cos((double)angle), s = sin((double)angle);
                double x0 = dy_load_f32(x, d->dtype, base + i);
                double x1 = dy_load_f32(x, d->dtype, base + i + half);
                dy_store_f32(x, d->dtype, base + i, (float)(x0 * c - x1 * s));
                dy_store_f32(x, d->dtype, base + i + half, (float)(x1 * c + x0 * s));
            }
        }
    }
    return DY_OK;
}

int dy_ref_eltwise(void *ctx, const struct dy_eltwise_desc *d)
{
    const void *a = dy_ref_ptr(d->a);
    const void *b = d->b.h ? dy_ref_ptr(d->b) : NULL;
    void *out = dy_ref_ptr(d->out);
    if (d->op != DY_ELT_GELU && !b)
        return DY_E_INVALID;
    if (d->op == DY_ELT_GATED_ADD) {
        for (int r = 0; r < d->rows; r++) {
            double g = 1.0 / (1.0 + exp(-(double)dy_load_f32(b, d->dtype, (size_t)r * d->b_stride)));
            for (int i = 0; i < d->cols; i++) {
                size_t o = (size_t)r * d->out_stride + i;
                double x = dy_load_f32(a, d->dtype, (size_t)r * d->a_stride + i);
                dy_store_f32(out, d->dtype, o, (float)(dy_load_f32(out, d->dtype, o) + g * x));
            }
        }
        return DY_OK;
    }
    for (int r = 0; r < d->rows; r++) {
        for (int i = 0; i < d->cols; i++) {
            double x = dy_load_f32(a, d->dtype, (size_t)r * d->a_stride + i), y;
            switch (d->op) {
            case DY_ELT_ADD:
                y = x + dy_load_f32(b, d->dtype, (size_t)r * d->b_stride + i);
                break;
            case DY_ELT_SILU_MUL:
                y = x / (1.0 + exp(-x)) * dy_load_f32(b, d->dtype, (size_t)r * d->b_stride + i);
                break;
            case DY_ELT_GELU:
                y = 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
                break;
            default:
                return DY_E_INVALID;
            }
            dy_store_f32(out, d->dtype, (size_t)r * d->out_stride + i, (float)y);
        }
    }
    return DY_OK;
}

int dy_ref_gather_rows(void *ctx, const struct dy_gather_rows_desc *d)
{
    const void *table = dy_ref_ptr(d->table);
    const int32_t *ids = dy_ref_ptr(d->ids);
    void *out = dy_ref_ptr(d->out);
    for (int r = 0; r < d->rows; r++)
        for (int i = 0; i < d->cols; i++)
            dy_store_f32(out, d->out_dtype, (size_t)r * d->out_stride + i,
                         dy_load_f32(table, d->table_dtype, (size_t)ids[r] * d->table_stride + i));
    return DY_OK;
}

/* One head's row of k or v into an int8 cache slot: the integers and the
 * row's scale (backend.h). */
static void store_int8_row(const void *src, enum dy_dtype src_dtype, size_t src_off, int n,
                           int8_t *dst, float *scale)
{
    float amax = 0.0f;
    for (int i = 0; i < n; i++) {
        float x = fabsf(dy_load_f32(src, src_dtype, src_off + i));
        amax = x > amax ? x : amax;
    }
    float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    for (int i = 0; i < n; i++)
        dst[i] = (int8_t)rintf(dy_load_f32(src, src_dtype, src_off + i) * inv);
    *scale = amax / 127.0f;
}

int dy_ref_kv_append(void *ctx, const struct dy_kv_append_desc *d)
{
    const void *k = dy_ref_ptr(d->k), *v = dy_ref_ptr(d->v);
    const int32_t *slots = dy_ref_ptr(d->slots);
    void *kc = dy_ref_ptr(d->k_cache), *vc = dy_ref_ptr(d->v_cache);
    size_t row = (size_t)d->kv_heads * d->head_dim;
    if (d->cache_dtype == DY_I8) {
        if (!d->k_scale.h || !d->v_scale.h)
            return DY_E_INVALID;
        float *ks = dy_ref_ptr(d->k_scale), *vs = dy_ref_ptr(d->v_scale);
        for (int t = 0; t < d->tokens; t++)
            for (int h = 0; h < d->kv_heads; h++) {
                size_t src = (size_t)t * d->src_stride + (size_t)h * d->head_dim;
                size_t dst = (size_t)slots[t] * row + (size_t)h * d->head_dim;
                size_t si = (size_t)slots[t] * d->kv_heads + h;
                store_int8_row(k, d->src_dtype, src, d->head_dim, (int8_t *)kc + dst, ks + si);
                store_int8_row(v, d->src_dtype, src, d->head_dim, (int8_t *)vc + dst, vs + si);
            }
        return DY_OK;
    }
    for (int t = 0; t < d->tokens; t++) {
        for (size_t i = 0; i < row; i++) {
            size_t dst = (size_t)slots[t] * row + i, src = (size_t)t * d->src_stride + i;
            dy_store_f32(kc, d->cache_dtype, dst, dy_load_f32(k, d->src_dtype, src));
            dy_store_f32(vc, d->cache_dtype, dst, dy_load_f32(v, d->src_dtype, src));
        }
    }
    return DY_OK;
}

int dy_ref_argmax(void *ctx, const struct dy_argmax_desc *d)
{
    const void *x = dy_ref_ptr(d->x);
    int32_t *out = dy_ref_ptr(d->out);
    for (int r = 0; r < d->rows; r++) {
        int best = 0;
        float best_v = dy_load_f32(x, d->dtype, (size_t)r * d->stride);
        for (int i = 1; i < d->cols; i++) {
            float v = dy_load_f32(x, d->dtype, (size_t)r * d->stride + i);
            if (v > best_v) {
                best_v = v;
                best = i;
            }
        }
        out[r] = best;
    }
    return DY_OK;
}

int dy_ref_convert(void *ctx, const struct dy_convert_desc *d)
{
    const void *src = dy_ref_ptr(d->src);
    void *dst = dy_ref_ptr(d->dst);
    for (size_t i = 0; i < d->count; i++)
        dy_store_f32(dst, d->dst_dtype, i, dy_load_f32(src, d->src_dtype, i));
    return DY_OK;
}
