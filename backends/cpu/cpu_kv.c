/* The paged KV cache's own ops in the cpu backend: kv_append (new tokens'
 * K and V rows into their slots, converted to the cache's dtype or
 * quantized to int8 with a scale per slot and KV head) and kv_block_scores
 * (eviction scores of whole blocks). OpenMP over tokens or blocks; each
 * head's row goes through f32 pieces on the stack, so neither op needs
 * scratch memory. */
#include <math.h>

#include "cpu_internal.h"

enum {
    PIECE = 256,
    /* below this many elements an op runs on the calling thread, as in
     * cpu_ops.c: a decode step appends a few rows */
    SERIAL_ELEMS = 1 << 14
};

static inline int min_int(int a, int b)
{
    return a < b ? a : b;
}

/* x rounded to the nearest integer, ties to even, as rintf() in the default
 * rounding mode for |x| < 2^22; unlike rintf it vectorises without SSE4.1
 * (nothing here may reassociate: no -ffast-math). */
static inline float round_even(float x)
{
    return (x + 12582912.0f) - 12582912.0f; /* 1.5 * 2^23 */
}

/* One head's row of n elements of dtype t into an int8 cache slot, the
 * integers and their scale computed as cpu-ref computes them (backend.h):
 * amax / 127 and x * (127 / amax), in f32. */
static void quantize_row(int8_t *dst, float *scale, const char *src, enum dy_dtype t, int n)
{
    float piece[PIECE], lanes[8] = { 0 };
    size_t es = dy_cpu_esize(t);
    for (int c = 0; c < n; c += PIECE) {
        int len = min_int(PIECE, n - c), j = 0;
        dy_cpu_load_row(piece, src + (size_t)c * es, t, (size_t)len);
        /* eight lanes so that the maximum vectorises (maxps is this
         * comparison, operand order included) */
        for (; j + 8 <= len; j += 8)
            for (int l = 0; l < 8; l++) {
                float a = fabsf(piece[j + l]);
                lanes[l] = a > lanes[l] ? a : lanes[l];
            }
        for (; j < len; j++) {
            float a = fabsf(piece[j]);
            lanes[0] = a > lanes[0] ? a : lanes[0];
        }
    }
    float amax = 0.0f;
    for (int l = 0; l < 8; l++)
        amax = lanes[l] > amax ? lanes[l] : amax;
    float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    for (int c = 0; c < n; c += PIECE) {
        int len = min_int(PIECE, n - c);
        if (n > PIECE) /* else the first pass left the row in the piece */
            dy_cpu_load_row(piece, src + (size_t)c * es, t, (size_t)len);
        for (int j = 0; j < len; j++)
            dst[c + j] = (int8_t)round_even(piece[j] * inv);
    }
    *scale = amax / 127.0f;
}

int dy_cpu_kv_append(void *ctx, const struct dy_kv_append_desc *d)
{
    if (!dy_cpu_float_dtype(d->src_dtype) || !dy_cpu_kv_dtype(d->cache_dtype))
        return dy_cpu_fail(ctx, DY_E_UNSUPPORTED, "cpu kv_append: dtype %d into a %d cache",
                           d->src_dtype, d->cache_dtype);
    bool int8 = d->cache_dtype == DY_I8;
    if (int8 && (!d->k_scale.h || !d->v_scale.h))
        return dy_cpu_fail(ctx, DY_E_INVALID, "cpu kv_append: int8 cache without scales");
    const char *k = DY_CPU_PTR(d->k), *v = DY_CPU_PTR(d->v);
    const int32_t *slots = DY_CPU_PTR(d->slots);
    char *kc = DY_CPU_PTR(d->k_cache), *vc = DY_CPU_PTR(d->v_cache);
    float *ks = int8 ? DY_CPU_PTR(d->k_scale) : NULL, *vs = int8 ? DY_CPU_PTR(d->v_scale) : NULL;
    int hd = d->head_dim;
    size_t width = (size_t)d->kv_heads * hd;
    size_t ss = dy_cpu_esize(d->src_dtype), cs = dy_cpu_esize(d->cache_dtype);
#pragma omp parallel for schedule(static) if ((size_t)d->tokens * width > SERIAL_ELEMS)
    for (int t = 0; t < d->tokens; t++) {
        /* a negative slot is a padding token with nowhere to go (vLLM's -1) */
        if (slots[t] < 0)
            continue;
        size_t slot = (size_t)slots[t], src_row = (size_t)t * d->src_stride * ss;
        const char *kt = k + src_row, *vt = v + src_row;
        if (!int8) {
            dy_cpu_convert_row(kc + slot * width * cs, d->cache_dtype, kt, d->src_dtype, width);
            dy_cpu_convert_row(vc + slot * width * cs, d->cache_dtype, vt, d->src_dtype, width);
            continue;
        }
        for (int h = 0; h < d->kv_heads; h++) {
            size_t dst = slot * width + (size_t)h * hd, src = (size_t)h * hd * ss;
            size_t scale = slot * d->kv_heads + h;
            quantize_row((int8_t *)kc + dst, ks + scale, kt + src, d->src_dtype, hd);
            quantize_row((int8_t *)vc + dst, vs + scale, vt + src, d->src_dtype, hd);
        }
    }
    return DY_OK;
}

/* Sum of squares of a row of n elements of dtype t (int8: of the integers),
 * in eight f32 lanes that vectorise. */
static float sum_squares(const char *row, enum dy_dtype t, int n)
{
    float piece[PIECE], lanes[8] = { 0 };
    for (int c = 0; c < n; c += PIECE) {
        int len = min_int(PIECE, n - c), j = 0;
        const float *p = (const float *)row + c;
        if (t != DY_F32) {
            dy_cpu_load_row(piece, row + (size_t)c * dy_cpu_esize(t), t, (size_t)len);
            p = piece;
        }
        for (; j + 8 <= len; j += 8)
            for (int l = 0; l < 8; l++)
                lanes[l] += p[j + l] * p[j + l];
        for (; j < len; j++)
            lanes[0] += p[j] * p[j];
    }
    float sum = 0.0f;
    for (int l = 0; l < 8; l++)
        sum += lanes[l];
    return sum;
}

int dy_cpu_kv_block_scores(void *ctx, const struct dy_kv_block_scores_desc *d)
{
    if (!dy_cpu_kv_dtype(d->cache_dtype))
        return dy_cpu_fail(ctx, DY_E_UNSUPPORTED, "cpu kv_block_scores: cache dtype %d",
                           d->cache_dtype);
    if (d->kind != DY_KV_SCORE_INV_KEY_NORM && d->kind != DY_KV_SCORE_VK_RATIO)
        return dy_cpu_fail(ctx, DY_E_INVALID, "cpu kv_block_scores: kind %d", d->kind);
    if (d->count <= 0)
        return DY_OK;
    if (d->block_size <= 0 || d->kv_heads <= 0 || d->head_dim <= 0)
        return dy_cpu_fail(ctx, DY_E_INVALID,
                           "cpu kv_block_scores: block_size %d, kv_heads %d, head_dim %d",
                           d->block_size, d->kv_heads, d->head_dim);
    bool int8 = d->cache_dtype == DY_I8;
    if (int8 && (!d->k_scale.h || !d->v_scale.h))
        return dy_cpu_fail(ctx, DY_E_INVALID, "cpu kv_block_scores: int8 cache without scales");
    const int32_t *blocks = DY_CPU_PTR(d->blocks);
    for (int i = 0; i < d->count; i++)
        if (blocks[i] < 0)
            return dy_cpu_fail(ctx, DY_E_INVALID, "cpu kv_block_scores: block %d at %d",
                               blocks[i], i);
    const char *kc = DY_CPU_PTR(d->k_cache), *vc = DY_CPU_PTR(d->v_cache);
    const float *ks = int8 ? DY_CPU_PTR(d->k_scale) : NULL;
    const float *vs = int8 ? DY_CPU_PTR(d->v_scale) : NULL;
    float *scores = DY_CPU_PTR(d->scores);
    bool ratio = d->kind == DY_KV_SCORE_VK_RATIO;
    int hd = d->head_dim;
    size_t width = (size_t)d->kv_heads * hd, cs = dy_cpu_esize(d->cache_dtype);
    /* the inverse key norm never reads V */
    size_t elems = (size_t)d->count * d->block_size * width * (ratio ? 2 : 1);
#pragma omp parallel for schedule(static) if (elems > SERIAL_ELEMS)
    for (int i = 0; i < d->count; i++) {
        double block_sum = 0.0;
        for (int tok = 0; tok < d->block_size; tok++) {
            size_t slot = (size_t)blocks[i] * d->block_size + tok;
            double token_sum = 0.0;
            for (int h = 0; h < d->kv_heads; h++) {
                size_t off = (slot * width + (size_t)h * hd) * cs, scale = slot * d->kv_heads + h;
                double knorm = sqrt((double)sum_squares(kc + off, d->cache_dtype, hd));
                knorm *= ks ? ks[scale] : 1.0;
                knorm = knorm > 1e-12 ? knorm : 1e-12;
                /* 1 / ||k||, or ||v|| / ||k|| */
                double numerator = 1.0;
                if (ratio)
                    numerator = sqrt((double)sum_squares(vc + off, d->cache_dtype, hd)) *
                                (vs ? vs[scale] : 1.0);
                token_sum += numerator / knorm;
            }
            block_sum += token_sum / d->kv_heads;
        }
        scores[i] = (float)block_sum;
    }
    return DY_OK;
}
