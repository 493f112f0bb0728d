/* C[m,n] = beta * C + A . B^T (+ bias) in two regimes.
 *
 * Decode (m <= SMALL_M_MAX): memory-bound on the weights at first, so our
 * own kernel streams B once, converting f16/bf16 in registers, with every
 * row of A reused from cache; threads split the output columns. It stays
 * ahead of sgemm, which needs B converted first, well past the point where
 * it turns compute-bound.
 *
 * Prefill: compute-bound, so OpenBLAS's sgemm does the work, single-threaded
 * inside our OpenMP team, one block of C per thread (see cpu.c for why).
 * B that is not f32 is converted (quantized B dequantized) in panels of
 * rows into per-thread scratch that stays small whatever the weight's size;
 * C that is not f32 goes through scratch too. Quantized B below that
 * regime is cpu_quant.c's. */
#include <omp.h>
#include <string.h>

#include <cblas.h>

#include "cpu_internal.h"

/* Up to this many rows our kernel, which reads B once and converts it in
 * registers, beats converting B for sgemm (measured on Zen 4/5 with
 * OpenBLAS's Haswell kernels: even at 48 rows for bf16 weights). */
#define SMALL_M_MAX DY_CPU_TILE_M
/* Columns of A per pass of the small-m kernel: 32 rows of 4096 f32 are
 * 512 KiB, which stay in a 1 MiB L2 while a tile of B passes over them. */
#define SMALL_M_KC 4096
/* Columns of C per task of the small-m kernel and per piece of the
 * epilogues: a tile of C on the stack. */
#define TILE_N DY_CPU_TILE_N
/* Bytes of f32 B per sgemm panel and thread: large enough for OpenBLAS's
 * blocking to reach full speed, small enough to stay in the last-level
 * cache. */
#define PANEL_BYTES (4u << 20)
/* Fewer columns than this per thread and the threads split rows instead. */
#define MIN_SPLIT_N 128

/* The bias's dtype: B's, or the one a quantized B names. */
static enum dy_dtype bias_dtype(const struct dy_gemm_desc *d)
{
    return dy_dtype_quantized(d->b_dtype) ? d->bq.bias_dtype : d->b_dtype;
}

void dy_cpu_gemm_epilogue(const struct dy_gemm_desc *d, const float *tile, size_t ldt, int i0,
                          int rows, int j0, int nb)
{
    size_t cs = dy_cpu_esize(d->c_dtype);
    char *c = DY_CPU_PTR(d->c);
    float bias[TILE_N], row[TILE_N];
    enum dy_dtype bt = bias_dtype(d);
    if (d->bias.h)
        dy_cpu_load_row(bias, (const char *)DY_CPU_PTR(d->bias) + j0 * dy_cpu_esize(bt), bt,
                        (size_t)nb);
    for (int i = i0; i < i0 + rows; i++) {
        char *crow = c + ((size_t)i * d->ldc + j0) * cs;
        const float *t = tile + (size_t)(i - i0) * ldt;
        if (d->beta != 0.0f) {
            dy_cpu_load_row(row, crow, d->c_dtype, (size_t)nb);
            for (int j = 0; j < nb; j++)
                row[j] = d->beta * row[j] + t[j];
        } else {
            memcpy(row, t, (size_t)nb * sizeof(float));
        }
        if (d->bias.h)
            for (int j = 0; j < nb; j++)
                row[j] += bias[j];
        dy_cpu_store_row(crow, d->c_dtype, row, (size_t)nb);
    }
}

/* A as f32 rows: the caller's memory when it is f32, else converted. */
static const float *a_as_f32(struct dy_cpu_ctx *ctx, const struct dy_gemm_desc *d, size_t *lda)
{
    if (d->a_dtype == DY_F32) {
        *lda = (size_t)d->lda;
        return DY_CPU_PTR(d->a);
    }
    float *a = dy_cpu_scratch(ctx, DY_CPU_SCRATCH_A, (size_t)d->m * d->k * sizeof(float));
    if (!a)
        return NULL;
    const char *src = DY_CPU_PTR(d->a);
    size_t as = dy_cpu_esize(d->a_dtype);
#pragma omp parallel for schedule(static)
    for (int i = 0; i < d->m; i++)
        dy_cpu_load_row(a + (size_t)i * d->k, src + (size_t)i * d->lda * as, d->a_dtype,
                        (size_t)d->k);
    *lda = (size_t)d->k;
    return a;
}

void dy_cpu_gemm_tile(int m, int nb, int k, const float *a, size_t lda, const void *b,
                      size_t ldb, enum dy_dtype bt, float *tile)
{
    float part[DY_CPU_TILE_M * TILE_N];
    size_t bs = dy_cpu_esize(bt);
    for (int k0 = 0; k0 < k; k0 += SMALL_M_KC) {
        int kc = k - k0 < SMALL_M_KC ? k - k0 : SMALL_M_KC;
        dy_cpu_gemm_nt(m, nb, kc, a + k0, lda, (const char *)b + (size_t)k0 * bs, ldb, bt,
                       k0 ? part : tile, TILE_N);
        if (k0)
            for (int i = 0; i < m; i++)
                for (int j = 0; j < nb; j++)
                    tile[i * TILE_N + j] += part[i * TILE_N + j];
    }
}

int dy_cpu_panel_cols(int k)
{
    int panel = (int)(PANEL_BYTES / ((size_t)(k > 0 ? k : 1) * sizeof(float)));
    return panel < 64 ? 64 : panel & ~15;
}

static int gemm_small_m(struct dy_cpu_ctx *ctx, const struct dy_gemm_desc *d)
{
    size_t lda;
    const float *a = a_as_f32(ctx, d, &lda);
    if (!a)
        return DY_E_NOMEM;
    const char *b = DY_CPU_PTR(d->b);
    size_t bs = dy_cpu_esize(d->b_dtype);
    int tiles = (d->n + TILE_N - 1) / TILE_N;
    /* static: each thread streams one contiguous range of B */
#pragma omp parallel for schedule(static)
    for (int tile = 0; tile < tiles; tile++) {
        float c_tile[SMALL_M_MAX * TILE_N];
        int j0 = tile * TILE_N;
        int nb = d->n - j0 < TILE_N ? d->n - j0 : TILE_N;
        dy_cpu_gemm_tile(d->m, nb, d->k, a, lda, b + (size_t)j0 * d->ldb * bs, (size_t)d->ldb,
                         d->b_dtype, c_tile);
        dy_cpu_gemm_epilogue(d, c_tile, TILE_N, 0, d->m, j0, nb);
    }
    return DY_OK;
}

/* bias added to the block [i0, i1) x [j0, j0 + nb) of an f32 C that sgemm
 * wrote in place, while it is in cache */
static void add_bias_f32(const struct dy_gemm_desc *d, int i0, int i1, int j0, int nb)
{
    float *c = DY_CPU_PTR(d->c);
    const char *bias = DY_CPU_PTR(d->bias);
    enum dy_dtype bt = bias_dtype(d);
    for (int jj = 0; jj < nb; jj += TILE_N) {
        float piece[TILE_N];
        int w = nb - jj < TILE_N ? nb - jj : TILE_N;
        dy_cpu_load_row(piece, bias + (size_t)(j0 + jj) * dy_cpu_esize(bt), bt, (size_t)w);
        for (int i = i0; i < i1; i++) {
            float *crow = c + (size_t)i * d->ldc + j0 + jj;
            for (int j = 0; j < w; j++)
                crow[j] += piece[j];
        }
    }
}

/* The block of C one thread computes: rows [i0, i1), columns [j0, j1). */
struct block {
    int i0, i1, j0, j1;
};

static struct block thread_block(const struct dy_gemm_desc *d, int t, int threads)
{
    struct block blk = { 0, d->m, 0, d->n };
    if (d->n >= MIN_SPLIT_N * threads) {
        /* column ranges in multiples of 16, the sgemm kernels' width */
        int step = ((d->n + threads - 1) / threads + 15) & ~15;
        blk.j0 = t * step < d->n ? t * step : d->n;
        blk.j1 = blk.j0 + step < d->n ? blk.j0 + step : d->n;
    } else {
        blk.i0 = (int)((long)d->m * t / threads);
        blk.i1 = (int)((long)d->m * (t + 1) / threads);
    }
    return blk;
}

/* Rows [j0, j0 + nb) of B as f32, k apart. */
static void b_rows_f32(const struct dy_gemm_desc *d, int j0, int nb, float *out)
{
    if (dy_dtype_quantized(d->b_dtype)) {
        struct dy_cpu_qmat w = dy_cpu_qmat_of(d->b, &d->bq, d->b_dtype, d->k);
        w = dy_cpu_qmat_rows(w, (size_t)j0);
        dy_cpu_dequant_rows(&w, nb, out, (size_t)d->k);
        return;
    }
    const char *b = DY_CPU_PTR(d->b);
    size_t bs = dy_cpu_esize(d->b_dtype);
    for (int r = 0; r < nb; r++)
        dy_cpu_load_row(out + (size_t)r * d->k, b + (size_t)(j0 + r) * d->ldb * bs, d->b_dtype,
                        (size_t)d->k);
}

static void prefill_block(const struct dy_gemm_desc *d, const float *a, size_t lda,
                          struct block blk, int panel, float *b_panel, float *c_panel)
{
    int rows = blk.i1 - blk.i0;
    if (rows <= 0)
        return;
    for (int j0 = blk.j0; j0 < blk.j1; j0 += panel) {
        int nb = blk.j1 - j0 < panel ? blk.j1 - j0 : panel;
        const float *bp;
        size_t ldbp = (size_t)d->k;
        if (b_panel) {
            b_rows_f32(d, j0, nb, b_panel);
            bp = b_panel;
        } else {
            bp = (const float *)DY_CPU_PTR(d->b) + (size_t)j0 * d->ldb;
            ldbp = (size_t)d->ldb;
        }
        const float *ai = a + (size_t)blk.i0 * lda;
        if (c_panel) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, nb, d->k, 1.0f, ai, lda,
                        bp, ldbp, 0.0f, c_panel, nb);
            for (int jj = 0; jj < nb; jj += TILE_N) {
                int w = nb - jj < TILE_N ? nb - jj : TILE_N;
                dy_cpu_gemm_epilogue(d, c_panel + jj, (size_t)nb, blk.i0, rows, j0 + jj, w);
            }
        } else {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, nb, d->k, 1.0f, ai, lda,
                        bp, ldbp, d->beta, (float *)DY_CPU_PTR(d->c) + (size_t)blk.i0 * d->ldc + j0,
                        d->ldc);
            if (d->bias.h)
                add_bias_f32(d, blk.i0, blk.i1, j0, nb);
        }
    }
}

int dy_cpu_gemm_prefill(struct dy_cpu_ctx *ctx, const struct dy_gemm_desc *d)
{
    size_t lda;
    const float *a = a_as_f32(ctx, d, &lda);
    if (!a)
        return DY_E_NOMEM;
    int threads = ctx->threads;
    /* f32 B needs no panels: one sgemm per thread over its whole block */
    int panel = d->b_dtype != DY_F32 || d->c_dtype != DY_F32 ? dy_cpu_panel_cols(d->k) : d->n;
    float *b_panels = NULL, *c_panels = NULL;
    size_t b_floats = (size_t)panel * d->k, c_floats = (size_t)d->m * panel;
    if (d->b_dtype != DY_F32 &&
        !(b_panels = dy_cpu_scratch(ctx, DY_CPU_SCRATCH_B, threads * b_floats * sizeof(float))))
        return DY_E_NOMEM;
    if (d->c_dtype != DY_F32 &&
        !(c_panels = dy_cpu_scratch(ctx, DY_CPU_SCRATCH_C, threads * c_floats * sizeof(float))))
        return DY_E_NOMEM;
#pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num();
        prefill_block(d, a, lda, thread_block(d, t, omp_get_num_threads()), panel,
                      b_panels ? b_panels + t * b_floats : NULL,
                      c_panels ? c_panels + t * c_floats : NULL);
    }
    return DY_OK;
}

/* Quantized B takes f32 A only (backend.h) and a layout the kernels read. */
static bool dtypes_ok(const struct dy_gemm_desc *d)
{
    if (!dy_cpu_float_dtype(d->c_dtype))
        return false;
    if (!dy_dtype_quantized(d->b_dtype))
        return dy_cpu_float_dtype(d->a_dtype) && dy_cpu_float_dtype(d->b_dtype);
    return d->a_dtype == DY_F32 && dy_cpu_quant_ok(d->b_dtype, &d->bq, d->k, d->ldb) &&
           (!d->bias.h || dy_cpu_float_dtype(d->bq.bias_dtype));
}

int dy_cpu_gemm(void *opaque, const struct dy_gemm_desc *d)
{
    struct dy_cpu_ctx *ctx = opaque;
    if (!dtypes_ok(d))
        return dy_cpu_fail(ctx, DY_E_UNSUPPORTED, "cpu gemm: dtypes %d x %d -> %d (ldb=%d k=%d)",
                           d->a_dtype, d->b_dtype, d->c_dtype, d->ldb, d->k);
    if (d->m < 0 || d->n < 0 || d->k < 1 || d->lda < d->k || d->ldb < d->k || d->ldc < d->n)
        return dy_cpu_fail(ctx, DY_E_INVALID, "cpu gemm: m=%d n=%d k=%d lda=%d ldb=%d ldc=%d",
                           d->m, d->n, d->k, d->lda, d->ldb, d->ldc);
    if (d->m == 0 || d->n == 0)
        return DY_OK;
    if (d->m > SMALL_M_MAX)
        return dy_cpu_gemm_prefill(ctx, d);
    return dy_dtype_quantized(d->b_dtype) ? dy_cpu_gemm_quant_small_m(ctx, d)
                                          : gemm_small_m(ctx, d);
}
