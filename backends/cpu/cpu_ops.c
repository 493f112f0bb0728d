/* Row-wise ops of the cpu backend: OpenMP over rows, each row processed in
 * pieces of PIECE elements, converted to f32 on the stack unless they are
 * f32 already, so that no op needs scratch memory whatever its width or
 * dtypes. */
#include <math.h>
#include <string.h>

#include "cpu_internal.h"

enum {
    PIECE = 256,
    /* below this many elements an op runs on the calling thread: waking
     * the team costs more than a decode step's norm of one row */
    SERIAL_ELEMS = 1 << 14
};

static inline int min_int(int a, int b)
{
    return a < b ? a : b;
}

void dy_cpu_convert_row(void *dst, enum dy_dtype dt, const void *src, enum dy_dtype st, size_t n)
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

/* Piece c of a row as f32: the row itself when it is f32, else converted
 * into `buf`. */
static const float *piece_f32(const char *row, enum dy_dtype t, int c, int len, float *buf)
{
    if (t == DY_F32)
        return (const float *)row + c;
    dy_cpu_load_row(buf, row + (size_t)c * dy_cpu_esize(t), t, (size_t)len);
    return buf;
}

/* A conversion dy_cpu_convert_row makes: between known dtypes, int8 only as a
 * copy (its integers mean nothing without their scales). */
static bool convertible(enum dy_dtype from, enum dy_dtype to)
{
    bool known = (unsigned)from < DY_DTYPE_COUNT && (unsigned)to < DY_DTYPE_COUNT;
    return known && (from == to || (from != DY_I8 && to != DY_I8));
}

/* ---- fill_random ---- */

int dy_cpu_fill_random(void *ctx, const struct dy_fill_random_desc *d)
{
    enum { BLOCK = 1 << 14 };
    if ((unsigned)d->dtype >= DY_DTYPE_COUNT)
        return dy_cpu_fail(ctx, DY_E_INVALID, "cpu fill_random: dtype %d", d->dtype);
    void *dst = DY_CPU_PTR(d->dst);
    uint64_t key = dy_random_key(d->seed, d->stream);
    size_t blocks = (d->count + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static) if (blocks > 1)
    for (size_t blk = 0; blk < blocks; blk++) {
        size_t begin = blk * BLOCK;
        size_t end = begin + BLOCK < d->count ? begin + BLOCK : d->count;
        dy_cpu_random_range(dst, d->dtype, key, begin, end, d->scale, d->offset);
    }
    return DY_OK;
}

/* ---- norm ---- */

/* Sum of (x[j] - center)^power for power 1 or 2: f32 partial sums in eight
 * lanes (the loop vectorises, where one chain of double adds would not),
 * returned in double for the caller to add up across pieces. */
static double lane_sum(const float *x, int n, float center, int power)
{
    float lanes[8] = { 0 };
    int j = 0;
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; l++) {
            float v = x[j + l] - center;
            lanes[l] += power == 2 ? v * v : v;
        }
    for (; j < n; j++) {
        float v = x[j] - center;
        lanes[0] += power == 2 ? v * v : v;
    }
    double sum = 0.0;
    for (int l = 0; l < 8; l++)
        sum += lanes[l];
    return sum;
}

int dy_cpu_norm(void *ctx, const struct dy_norm_desc *d)
{
    if (!dy_cpu_float_dtype(d->dtype) || !dy_cpu_float_dtype(d->weight_dtype) ||
        !dy_cpu_float_dtype(d->out_dtype))
        return dy_cpu_fail(ctx, DY_E_UNSUPPORTED, "cpu norm: dtype %d, weight %d, out %d",
                           d->dtype, d->weight_dtype, d->out_dtype);
    if (d->kind != DY_NORM_RMS && d->kind != DY_NORM_LAYER)
        return dy_cpu_fail(ctx, DY_E_INVALID, "cpu norm: kind %d", d->kind);
    const char *x = DY_CPU_PTR(d->x), *w = DY_CPU_PTR(d->weight);
    const char *bias = d->bias.h && d->kind == DY_NORM_LAYER ? DY_CPU_PTR(d->bias) : NULL;
    char *out = DY_CPU_PTR(d->out);
    size_t x_es = dy_cpu_esize(d->dtype), out_es = dy_cpu_esize(d->out_dtype);
#pragma omp parallel for schedule(static) if ((size_t)d->rows * d->dim > SERIAL_ELEMS)
    for (int r = 0; r < d->rows; r++) {
        float xs[PIECE], ws[PIECE], bs[PIECE], ys[PIECE];
        const char *xr = x + (size_t)r * d->x_stride * x_es;
        char *outr = out + (size_t)r * d->out_stride * out_es;
        /* LayerNorm's variance around the mean, in a second pass: E[x^2] -
         * mean^2 cancels badly when the mean is large */
        float mean = 0.0f;
        if (d->kind == DY_NORM_LAYER) {
            double sum = 0.0;
            for (int c = 0; c < d->dim; c += PIECE) {
                int len = min_int(PIECE, d->dim - c);
                sum += lane_sum(piece_f32(xr, d->dtype, c, len, xs), len, 0.0f, 1);
            }
            mean = (float)(sum / d->dim);
        }
        double sumsq = 0.0;
        for (int c = 0; c < d->dim; c += PIECE) {
            int len = min_int(PIECE, d->dim - c);
            sumsq += lane_sum(piece_f32(xr, d->dtype, c, len, xs), len, mean, 2);
        }
        float inv = (float)(1.0 / sqrt(sumsq / d->dim + d->eps));
        for (int c = 0; c < d->dim; c += PIECE) {
            int len = min_int(PIECE, d->dim - c);
            const float *xp = piece_f32(xr, d->dtype, c, len, xs);
            const float *wp = piece_f32(w, d->weight_dtype, c, len, ws);
            for (int j = 0; j < len; j++)
                ys[j] = (xp[j] - mean) * inv * wp[j];
            if (bias) {
                const float *bp = piece_f32(bias, d->weight_dtype, c, len, bs);
                for (int j = 0; j < len; j++)
                    ys[j] += bp[j];
            }
            dy_cpu_store_row(outr + (size_t)c * out_es, d->out_dtype, ys, (size_t)len);
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
    size_t elems = (size_t)d->tokens * d->heads * d->head_dim;
#pragma omp parallel for schedule(static) if (elems > SERIAL_ELEMS)
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

/* out may be a or b: each element is read before it is written. GATED_ADD
 * adds to what out holds, its row's sigmoid in `gate` (b is unused). */
static void eltwise_piece(enum dy_eltwise_op op, float *out, const float *a, const float *b,
                          float gate, int len)
{
    switch (op) {
    case DY_ELT_ADD:
        for (int j = 0; j < len; j++)
            out[j] = a[j] + b[j];
        break;
    case DY_ELT_SILU_MUL: {
        float e[PIECE];
        for (int j = 0; j < len; j++)
            e[j] = -a[j];
        dy_cpu_exp_sum(e, len, 0.0f);
        for (int j = 0; j < len; j++)
            out[j] = a[j] / (1.0f + e[j]) * b[j];
        break;
    }
    case DY_ELT_GELU:
        dy_cpu_gelu(out, a, len);
        break;
    case DY_ELT_GATED_ADD:
        for (int j = 0; j < len; j++)
            out[j] += gate * a[j];
        break;
    }
}

int dy_cpu_eltwise(void *ctx, const struct dy_eltwise_desc *d)
{
    if (!dy_cpu_float_dtype(d->dtype))
        return dy_cpu_fail(ctx, DY_E_UNSUPPORTED, "cpu eltwise: dtype %d", d->dtype);
    if (d->op != DY_ELT_ADD && d->op != DY_ELT_SILU_MUL && d->op != DY_ELT_GELU &&
        d->op != DY_ELT_GATED_ADD)
        return dy_cpu_fail(ctx, DY_E_INVALID, "cpu eltwise: op %d", d->op);
    bool gated = d->op == DY_ELT_GATED_ADD;
    const char *a = DY_CPU_PTR(d->a);
    const char *b = d->op == DY_ELT_GELU ? NULL : DY_CPU_PTR(d->b);
    char *out = DY_CPU_PTR(d->out);
    size_t es = dy_cpu_esize(d->dtype);
#pragma omp parallel for schedule(static) if ((size_t)d->rows * d->cols > SERIAL_ELEMS)
    for (int r = 0; r < d->rows; r++) {
        float as[PIECE], bs[PIECE], os[PIECE];
        const char *ar = a + (size_t)r * d->a_stride * es;
        const char *br = b ? b + (size_t)r * d->b_stride * es : NULL;
        char *outr = out + (size_t)r * d->out_stride * es;
        float gate = gated ? 1.0f / (1.0f + expf(-dy_load_f32(br, d->dtype, 0))) : 0.0f;
        for (int c = 0; c < d->cols; c += PIECE) {
            int len = min_int(PIECE, d->cols - c);
            float *op = d->dtype == DY_F32 ? (float *)outr + c : os;
            if (gated && op == os)
                dy_cpu_load_row(os, outr + (size_t)c * es, d->dtype, (size_t)len);
            eltwise_piece(d->op, op, piece_f32(ar, d->dtype, c, len, as),
                          br && !gated ? piece_f32(br, d->dtype, c, len, bs) : NULL, gate, len);
            if (op == os)
                dy_cpu_store_row(outr + (size_t)c * es, d->dtype, os, (size_t)len);
        }
    }
    return DY_OK;
}

/* ---- gather_rows, convert ---- */

int dy_cpu_gather_rows(void *ctx, const struct dy_gather_rows_desc *d)
{
    if (!convertible(d->table_dtype, d->out_dtype))
        return dy_cpu_fail(ctx, DY_E_UNSUPPORTED, "cpu gather_rows: dtype %d to %d",
                           d->table_dtype, d->out_dtype);
    const char *table = DY_CPU_PTR(d->table);
    const int32_t *ids = DY_CPU_PTR(d->ids);
    char *out = DY_CPU_PTR(d->out);
    size_t ts = dy_cpu_esize(d->table_dtype), os = dy_cpu_esize(d->out_dtype);
    for (int r = 0; r < d->rows; r++)
        if (ids[r] < 0)
            return dy_cpu_fail(ctx, DY_E_INVALID, "cpu gather_rows: id %d in row %d", ids[r], r);
#pragma omp parallel for schedule(static) if ((size_t)d->rows * d->cols > SERIAL_ELEMS)
    for (int r = 0; r < d->rows; r++)
        dy_cpu_convert_row(out + (size_t)r * d->out_stride * os, d->out_dtype,
                           table + (size_t)ids[r] * d->table_stride * ts, d->table_dtype,
                           (size_t)d->cols);
    return DY_OK;
}

int dy_cpu_convert(void *ctx, const struct dy_convert_desc *d)
{
    enum { BLOCK = 1 << 16 };
    if (!convertible(d->src_dtype, d->dst_dtype))
        return dy_cpu_fail(ctx, DY_E_UNSUPPORTED, "cpu convert: dtype %d to %d", d->src_dtype,
                           d->dst_dtype);
    const char *src = DY_CPU_PTR(d->src);
    char *dst = DY_CPU_PTR(d->dst);
    size_t ss = dy_cpu_esize(d->src_dtype), ds = dy_cpu_esize(d->dst_dtype);
    size_t blocks = (d->count + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static) if (blocks > 1)
    for (size_t blk = 0; blk < blocks; blk++) {
        size_t begin = blk * BLOCK;
        size_t len = d->count - begin < BLOCK ? d->count - begin : BLOCK;
        dy_cpu_convert_row(dst + begin * ds, d->dst_dtype, src + begin * ss, d->src_dtype, len);
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
#pragma omp parallel for schedule(static) if ((size_t)d->rows * d->cols > SERIAL_ELEMS)
    for (int r = 0; r < d->rows; r++) {
        float piece[PIECE];
        float best = -INFINITY;
        int best_index = 0;
        const char *row = x + (size_t)r * d->stride * es;
        for (int c = 0; c < d->cols; c += PIECE) {
            int len = min_int(PIECE, d->cols - c);
            const float *p = piece_f32(row, d->dtype, c, len, piece);
            for (int j = 0; j < len; j++)
                if (p[j] > best) {
                    best = p[j];
                    best_index = c + j;
                }
        }
        out[r] = best_index;
    }
    return DY_OK;
}
