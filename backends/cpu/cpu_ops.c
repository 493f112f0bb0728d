/* Row-wise ops of the cpu backend: OpenMP over rows, each row processed in
 * pieces of PIECE elements converted to f32 on the stack, so that no op
 * needs scratch memory whatever its width or dtypes. */
#include <math.h>
#include <string.h>

#include "cpu_internal.h"

enum { PIECE = 256 };

static inline int min_int(int a, int b)
{
    return a < b ? a : b;
}

/* dst = src converted between dtypes, n elements. */
static void convert_row(void *dst, enum dy_dtype dt, const void *src, enum dy_dtype st, size_t n)
{
    if (dt == st) {
        memcpy(dst, src, n * dy_cpu_esize(st));
        return;
    }
    float piece[PIECE];
    for (size_t i = 0; i < n; i += PIECE) {
        size_t len = n - i < PIECE ? n - i : PIECE;
        dy_cpu_load_row(piece, (const char *)src + i * dy_cpu_esize(st), st, len);
        dy_cpu_store_row((char *)dst + i * dy_cpu_esize(dt), dt, piece, len);
    }
}

/* ---- fill_random ---- */

/* Bit-identical with every backend only if offset + scale * u rounds twice:
 * this file is built with -ffp-contract=off and without FMA, and the
 * product is its own statement. */
static void fill_range(void *dst, enum dy_dtype t, uint64_t key, size_t begin, size_t end,
                       float scale, float offset)
{
    for (size_t i = begin; i < end; i++) {
        float scaled = scale * dy_random_unit(key, i);
        float value = offset + scaled;
        switch (t) {
        case DY_F16: ((uint16_t *)dst)[i] = dy_f32_to_f16(value); break;
        case DY_BF16: ((uint16_t *)dst)[i] = dy_f32_to_bf16(value); break;
        case DY_F32: ((float *)dst)[i] = value; break;
        default: dy_store_f32(dst, t, i, value); break;
        }
    }
}

int dy_cpu_fill_random(void *ctx, const struct dy_fill_random_desc *d)
{
    enum { BLOCK = 1 << 14 };
    void *dst = DY_CPU_PTR(d->dst);
    uint64_t key = dy_random_key(d->seed, d->stream);
    size_t blocks = (d->count + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static)
    for (size_t blk = 0; blk < blocks; blk++) {
        size_t begin = blk * BLOCK;
        size_t end = begin + BLOCK < d->count ? begin + BLOCK : d->count;
        fill_range(dst, d->dtype, key, begin, end, d->scale, d->offset);
    }
    return DY_OK;
}

/* ---- norm ---- */

int dy_cpu_norm(void *ctx, const struct dy_norm_desc *d)
{
    if (!dy_cpu_float_dtype(d->dtype) || !dy_cpu_float_dtype(d->weight_dtype))
        return dy_cpu_fail(ctx, DY_E_UNSUPPORTED, "cpu norm: dtype %d, weight %d", d->dtype, d->weight_dtype);
    if (d->kind != DY_NORM_RMS && d->kind != DY_NORM_LAYER)
        return dy_cpu_fail(ctx, DY_E_INVALID, "cpu norm: kind %d", d->kind);
    const char *x = DY_CPU_PTR(d->x), *w = DY_CPU_PTR(d->weight);
    const char *bias = d->bias.h && d->kind == DY_NORM_LAYER ? DY_CPU_PTR(d->bias) : NULL;
    char *out = DY_CPU_PTR(d->out);
    size_t es = dy_cpu_esize(d->dtype), ws = dy_cpu_esize(d->weight_dtype);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < d->rows; r++) {
        float xs[PIECE], ys[PIECE];
        const char *xr = x + (size_t)r * d->x_stride * es;
        char *outr = out + (size_t)r * d->out_stride * es;
        /* statistics in double: one pass, no cancellation worth the name */
        double sum = 0.0, sumsq = 0.0;
        for (int c = 0; c < d->dim; c += PIECE) {
            int len = min_int(PIECE, d->dim - c);
            dy_cpu_load_row(xs, xr + (size_t)c * es, d->dtype, (size_t)len);
            for (int j = 0; j < len; j++) {
                sum += xs[j];
                sumsq += (double)xs[j] * xs[j];
            }
        }
        float mean = 0.0f;
        double var = sumsq / d->dim;
        if (d->kind == DY_NORM_LAYER) {
            mean = (float)(sum / d->dim);
            var = var - (sum / d->dim) * (sum / d->dim);
            var = var > 0.0 ? var : 0.0;
        }
        float inv = (float)(1.0 / sqrt(var + d->eps));
        for (int c = 0; c < d->dim; c += PIECE) {
            int len = min_int(PIECE, d->dim - c);
            dy_cpu_load_row(xs, xr + (size_t)c * es, d->dtype, (size_t)len);
            dy_cpu_load_row(ys, w + (size_t)c * ws, d->weight_dtype, (size_t)len);
            for (int j = 0; j < len; j++)
                ys[j] = (xs[j] - mean) * inv * ys[j];
            if (bias) {
                dy_cpu_load_row(xs, bias + (size_t)c * ws, d->weight_dtype, (size_t)len);
                for (int j = 0; j < len; j++)
                    ys[j] += xs[j];
            }
            dy_cpu_store_row(outr + (size_t)c * es, d->dtype, ys, (size_t)len);
        }
    }
    return DY_OK;
}

/* ---- rope ---- */

int dy_cpu_rope(void *ctx, const struct dy_rope_desc *d)
{
    if (!dy_cpu_float_dtype(d->dtype))
        return dy_cpu_fail(ctx, DY_E_UNSUPPORTED, "cpu rope: dtype %d", d->dtype);
    if (d->head_dim % 2 != 0)
        return dy_cpu_fail(ctx, DY_E_INVALID, "cpu rope: odd head_dim %d", d->head_dim);
    char *x = DY_CPU_PTR(d->x);
    const int32_t *pos = DY_CPU_PTR(d->positions);
    const float *inv_freq = DY_CPU_PTR(d->inv_freq);
    size_t es = dy_cpu_esize(d->dtype);
    int half = d->head_dim / 2;
#pragma omp parallel for schedule(static)
    for (int t = 0; t < d->tokens; t++) {
        float cosv[PIECE], sinv[PIECE], lo[PIECE], hi[PIECE];
        char *row = x + (size_t)t * d->row_stride * es;
        for (int c = 0; c < half; c += PIECE) {
            int len = min_int(PIECE, half - c);
            for (int i = 0; i < len; i++) {
                /* the angle rounded to f32 first, as Hugging Face has it */
                float angle = (float)pos[t] * inv_freq[c + i];
                cosv[i] = cosf(angle);
                sinv[i] = sinf(angle);
            }
            for (int h = 0; h < d->heads; h++) {
                char *lo_p = row + ((size_t)h * d->head_dim + c) * es;
                char *hi_p = lo_p + (size_t)half * es;
                dy_cpu_load_row(lo, lo_p, d->dtype, (size_t)len);
                dy_cpu_load_row(hi, hi_p, d->dtype, (size_t)len);
                for (int i = 0; i < len; i++) {
                    float x0 = lo[i], x1 = hi[i];
                    lo[i] = x0 * cosv[i] - x1 * sinv[i];
                    hi[i] = x1 * cosv[i] + x0 * sinv[i];
                }
                dy_cpu_store_row(lo_p, d->dtype, lo, (size_t)len);
                dy_cpu_store_row(hi_p, d->dtype, hi, (size_t)len);
            }
        }
    }
    return DY_OK;
}

/* ---- eltwise ---- */

static void eltwise_piece(enum dy_eltwise_op op, float *a, const float *b, int len)
{
    switch (op) {
    case DY_ELT_ADD:
        for (int j = 0; j < len; j++)
            a[j] += b[j];
        break;
    case DY_ELT_SILU_MUL: {
        float e[PIECE];
        for (int j = 0; j < len; j++)
            e[j] = -a[j];
        dy_cpu_exp_sum(e, len, 0.0f);
        for (int j = 0; j < len; j++)
            a[j] = a[j] / (1.0f + e[j]) * b[j];
        break;
    }
    case DY_ELT_GELU:
        /* 1 + erf(x / sqrt 2) as erfc(-x / sqrt 2): no cancellation for
         * negative x, where the result is tiny */
        for (int j = 0; j < len; j++)
            a[j] = 0.5f * a[j] * erfcf(-a[j] * (float)M_SQRT1_2);
        break;
    }
}

int dy_cpu_eltwise(void *ctx, const struct dy_eltwise_desc *d)
{
    if (!dy_cpu_float_dtype(d->dtype))
        return dy_cpu_fail(ctx, DY_E_UNSUPPORTED, "cpu eltwise: dtype %d", d->dtype);
    if (d->op != DY_ELT_ADD && d->op != DY_ELT_SILU_MUL && d->op != DY_ELT_GELU)
        return dy_cpu_fail(ctx, DY_E_INVALID, "cpu eltwise: op %d", d->op);
    const char *a = DY_CPU_PTR(d->a);
    const char *b = d->op == DY_ELT_GELU ? NULL : DY_CPU_PTR(d->b);
    char *out = DY_CPU_PTR(d->out);
    size_t es = dy_cpu_esize(d->dtype);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < d->rows; r++) {
        float as[PIECE], bs[PIECE];
        for (int c = 0; c < d->cols; c += PIECE) {
            int len = min_int(PIECE, d->cols - c);
            dy_cpu_load_row(as, a + ((size_t)r * d->a_stride + c) * es, d->dtype, (size_t)len);
            if (b)
                dy_cpu_load_row(bs, b + ((size_t)r * d->b_stride + c) * es, d->dtype, (size_t)len);
            eltwise_piece(d->op, as, bs, len);
            dy_cpu_store_row(out + ((size_t)r * d->out_stride + c) * es, d->dtype, as, (size_t)len);
        }
    }
    return DY_OK;
}

/* ---- gather_rows, kv_append, convert ---- */

int dy_cpu_gather_rows(void *ctx, const struct dy_gather_rows_desc *d)
{
    const char *table = DY_CPU_PTR(d->table);
    const int32_t *ids = DY_CPU_PTR(d->ids);
    char *out = DY_CPU_PTR(d->out);
    size_t ts = dy_cpu_esize(d->table_dtype), os = dy_cpu_esize(d->out_dtype);
    for (int r = 0; r < d->rows; r++)
        if (ids[r] < 0)
            return dy_cpu_fail(ctx, DY_E_INVALID, "cpu gather_rows: id %d in row %d", ids[r], r);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < d->rows; r++)
        convert_row(out + (size_t)r * d->out_stride * os, d->out_dtype,
                    table + (size_t)ids[r] * d->table_stride * ts, d->table_dtype, (size_t)d->cols);
    return DY_OK;
}

int dy_cpu_kv_append(void *ctx, const struct dy_kv_append_desc *d)
{
    const char *k = DY_CPU_PTR(d->k), *v = DY_CPU_PTR(d->v);
    const int32_t *slots = DY_CPU_PTR(d->slots);
    char *kc = DY_CPU_PTR(d->k_cache), *vc = DY_CPU_PTR(d->v_cache);
    size_t width = (size_t)d->kv_heads * d->head_dim;
    size_t ss = dy_cpu_esize(d->src_dtype), cs = dy_cpu_esize(d->cache_dtype);
#pragma omp parallel for schedule(static)
    for (int t = 0; t < d->tokens; t++) {
        /* a negative slot is a padding token with nowhere to go (vLLM's -1) */
        if (slots[t] < 0)
            continue;
        size_t src = (size_t)t * d->src_stride * ss, dst = (size_t)slots[t] * width * cs;
        convert_row(kc + dst, d->cache_dtype, k + src, d->src_dtype, width);
        convert_row(vc + dst, d->cache_dtype, v + src, d->src_dtype, width);
    }
    return DY_OK;
}

int dy_cpu_convert(void *ctx, const struct dy_convert_desc *d)
{
    enum { BLOCK = 1 << 16 };
    const char *src = DY_CPU_PTR(d->src);
    char *dst = DY_CPU_PTR(d->dst);
    size_t ss = dy_cpu_esize(d->src_dtype), ds = dy_cpu_esize(d->dst_dtype);
    size_t blocks = (d->count + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static)
    for (size_t blk = 0; blk < blocks; blk++) {
        size_t begin = blk * BLOCK;
        size_t len = d->count - begin < BLOCK ? d->count - begin : BLOCK;
        convert_row(dst + begin * ds, d->dst_dtype, src + begin * ss, d->src_dtype, len);
    }
    return DY_OK;
}

/* ---- argmax ---- */

int dy_cpu_argmax(void *ctx, const struct dy_argmax_desc *d)
{
    if (!dy_cpu_float_dtype(d->dtype))
        return dy_cpu_fail(ctx, DY_E_UNSUPPORTED, "cpu argmax: dtype %d", d->dtype);
    const char *x = DY_CPU_PTR(d->x);
    int32_t *out = DY_CPU_PTR(d->out);
    size_t es = dy_cpu_esize(d->dtype);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < d->rows; r++) {
        float piece[PIECE];
        float best = -INFINITY;
        int best_index = 0;
        for (int c = 0; c < d->cols; c += PIECE) {
            int len = min_int(PIECE, d->cols - c);
            dy_cpu_load_row(piece, x + ((size_t)r * d->stride + c) * es, d->dtype, (size_t)len);
            for (int j = 0; j < len; j++)
                if (piece[j] > best) {
                    best = piece[j];
                    best_index = c + j;
                }
        }
        out[r] = best_index;
    }
    return DY_OK;
}
