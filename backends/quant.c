/* Host-side weight quantization (quant.h). Divisions and rint() in IEEE
 * single precision, so the bits do not depend on the machine. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "quant.h"

bool dy_qformat_parse(const char *name, struct dy_qformat *out)
{
    struct dy_qformat f = { .bits = 8, .group = 0 };
    if (!strcmp(name, "fp8"))
        f.dtype = DY_FP8;
    else if (!strcmp(name, "int8"))
        f.dtype = DY_I8;
    else if (!strcmp(name, "int4") || !strcmp(name, "int4-asym"))
        f = (struct dy_qformat){ DY_I4, 4, DY_QUANT_GROUP, name[4] == '-' };
    else
        return false;
    *out = f;
    return true;
}

size_t dy_quant_q_bytes(const struct dy_qformat *f, size_t rows, size_t cols)
{
    return dy_dtype_bytes(f->dtype, rows * cols);
}

size_t dy_quant_scale_count(const struct dy_qformat *f, size_t rows, size_t cols)
{
    return f->dtype == DY_FP8 ? 1 : f->dtype == DY_I8 ? rows : rows * (cols / (size_t)f->group);
}

size_t dy_quant_zero_bytes(const struct dy_qformat *f, size_t rows, size_t cols)
{
    return f->dtype == DY_I4 && f->asym ? dy_quant_scale_count(f, rows, cols) : 0;
}

static float clampf(float x, float lo, float hi)
{
    return x < lo ? lo : x > hi ? hi : x;
}

/* One int4 group of n values: nibbles into q (starting at element e of the
 * matrix), its scale and zero point. */
static void quantize_group(const struct dy_qformat *f, const float *w, int n, uint8_t *q, size_t e,
                           float *scale, uint8_t *zero)
{
    float lo = 0.0f, hi = 0.0f, amax = 0.0f;
    for (int i = 0; i < n; i++) {
        lo = fminf(lo, w[i]);
        hi = fmaxf(hi, w[i]);
        amax = fmaxf(amax, fabsf(w[i]));
    }
    float s, z, qmin, qmax;
    if (f->asym) {
        float levels = (float)((1 << f->bits) - 1);
        s = hi > lo ? (hi - lo) / levels : 1.0f;
        z = clampf(rintf(-lo / s), 0.0f, levels);
        qmin = 0.0f, qmax = levels;
    } else {
        float side = (float)((1 << (f->bits - 1)) - 1);
        s = amax > 0.0f ? amax / side : 1.0f;
        z = 8.0f;
        qmin = -side, qmax = side;
    }
    for (int i = 0; i < n; i++) {
        float v = f->asym ? clampf(rintf(w[i] / s) + z, qmin, qmax) : clampf(rintf(w[i] / s), qmin, qmax) + z;
        size_t at = e + (size_t)i;
        uint8_t nib = (uint8_t)v;
        q[at / 2] = (uint8_t)(at & 1 ? (q[at / 2] & 0x0f) | (nib << 4) : (q[at / 2] & 0xf0) | nib);
    }
    *scale = s;
    if (zero)
        *zero = (uint8_t)z;
}

struct rows_job {
    const struct dy_qformat *f;
    const float *w;
    size_t cols, r0, r1;
    void *q;
    float *scale, tensor_scale;
    uint8_t *zero;
};

static void quantize_rows(const struct rows_job *j)
{
    const struct dy_qformat *f = j->f;
    for (size_t r = j->r0; r < j->r1; r++) {
        const float *row = j->w + r * j->cols;
        if (f->dtype == DY_FP8) {
            for (size_t i = 0; i < j->cols; i++)
                ((uint8_t *)j->q)[r * j->cols + i] = dy_f32_to_fp8(row[i] / j->tensor_scale);
        } else if (f->dtype == DY_I8) {
            float amax = 0.0f;
            for (size_t i = 0; i < j->cols; i++)
                amax = fmaxf(amax, fabsf(row[i]));
            float s = amax > 0.0f ? amax / 127.0f : 1.0f;
            for (size_t i = 0; i < j->cols; i++)
                ((int8_t *)j->q)[r * j->cols + i] = (int8_t)clampf(rintf(row[i] / s), -127.0f, 127.0f);
            j->scale[r] = s;
        } else {
            size_t groups = j->cols / (size_t)f->group;
            for (size_t g = 0; g < groups; g++) {
                size_t at = r * groups + g;
                quantize_group(f, row + g * f->group, f->group, j->q, r * j->cols + g * f->group,
                               &j->scale[at], j->zero ? &j->zero[at] : NULL);
            }
        }
    }
}

static void *quantize_thread(void *arg)
{
    quantize_rows(arg);
    return NULL;
}

void dy_quantize(const struct dy_qformat *f, const float *w, size_t rows, size_t cols, void *q,
                 float *scale, uint8_t *zero)
{
    float tensor_scale = 1.0f;
    if (f->dtype == DY_FP8) {
        float amax = 0.0f;
        for (size_t i = 0; i < rows * cols; i++)
            amax = fmaxf(amax, fabsf(w[i]));
        tensor_scale = amax > 0.0f ? amax / 448.0f : 1.0f;
        scale[0] = tensor_scale;
    }
    /* int4 rows share bytes only within a row (cols is even), so rows split
     * cleanly across threads */
    enum { MAX_THREADS = 64 };
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    size_t threads = rows * cols < (1u << 20) || cores < 2 ? 1 : (size_t)(cores < MAX_THREADS ? cores : MAX_THREADS);
    if (threads > rows)
        threads = rows;
    struct rows_job jobs[MAX_THREADS];
    pthread_t tids[MAX_THREADS];
    bool joined[MAX_THREADS] = { false };
    for (size_t t = 0; t < threads; t++) {
        jobs[t] = (struct rows_job){ f, w, cols, rows * t / threads, rows * (t + 1) / threads,
                                     q, scale, tensor_scale, zero };
        if (t > 0)
            joined[t] = pthread_create(&tids[t], NULL, quantize_thread, &jobs[t]) == 0;
    }
    for (size_t t = 0; t < threads; t++) {
        if (joined[t])
            pthread_join(tids[t], NULL);
        else /* the caller's share, or a thread that could not start */
            quantize_rows(&jobs[t]);
    }
}

double dy_quant_error(const struct dy_qformat *f, const float *w, size_t rows, size_t cols)
{
    size_t nq = dy_quant_q_bytes(f, rows, cols), ns = dy_quant_scale_count(f, rows, cols);
    size_t nz = dy_quant_zero_bytes(f, rows, cols);
    void *q = calloc(nq ? nq : 1, 1);
    float *s = malloc(ns * sizeof *s);
    uint8_t *z = nz ? malloc(nz) : NULL;
    double err = NAN;
    if (q && s && (z || !nz)) {
        dy_quantize(f, w, rows, cols, q, s, z);
        err = 0.0;
        for (size_t r = 0; r < rows; r++)
            for (size_t i = 0; i < cols; i++) {
                double d = (double)w[r * cols + i] - dy_dequant(q, f->dtype, s, z, (int)cols, f->group, r, i);
                err += d * d;
            }
    }
    free(q);
    free(s);
    free(z);
    return err;
}
