/* gemm_grouped: one GEMM per expert over its rows of the sorted order.
 *
 * Our small-m tile (cpu_gemm.c) does most of the work: it streams a tile of
 * the expert's weights once, converting f16/bf16 in registers, and passes
 * the expert's rows over it 32 at a time while the tile stays in cache.
 * In a decode step (a row or two per expert) that makes a grouped GEMV,
 * bound by reading the experts' weights; in prefill it is compute-bound and
 * still ahead of sgemm, whose f32 B must first be converted, until an
 * expert has hundreds of rows. Those experts go to OpenBLAS's sgemm,
 * single-threaded per task, on panels of B converted into per-thread
 * scratch.
 *
 * One OpenMP region does it all: the gather of A's rows into sorted order,
 * then the tiles, then the sgemm panels, both taken dynamically since
 * experts differ in rows. */
#include <omp.h>
#include <string.h>

#include <cblas.h>

#include "cpu_internal.h"

/* Up to this many rows an expert goes through the small-m tile. Measured at
 * n = k = 2048 with bf16 weights on Zen (AVX2) with OpenBLAS's Haswell
 * kernels, against a dense GEMM of the same FLOPs: all experts on the tile
 * 0.91 at 32 rows each, 0.90 at 128 (sgemm 0.60 and 0.88); the two even at
 * 256 to 512 rows; sgemm 0.94 against the tile's 0.83 at 1024. */
#define TILE_ROWS_MAX 256
/* Up to this many floats of A (a decode step's few rows) the calling thread
 * gathers them: a barrier after a parallel gather costs more, and on a
 * loaded machine, where the team's threads are not all running, much more. */
#define SERIAL_GATHER_FLOATS (1 << 16)

/* A unit of work: columns [j0, j0 + tile or panel width) of one expert's
 * rows of C. */
struct grouped_task {
    int expert, j0;
};

/* What every task reads: the op, A's rows in sorted order, and the tasks. */
struct grouped_plan {
    const struct dy_gemm_grouped_desc *d;
    const int32_t *offsets;
    const float *a;            /* row r of the sorted order at a + r * lda */
    size_t lda;
    struct grouped_task *tasks;
    int tile_tasks, sgemm_tasks;
    int panel;                 /* columns of C per sgemm task */
    float *b_panels;           /* f32 B, panel * k floats per thread; NULL for f32 B */
};

/* Rows [*begin, *end) of expert e, within the op's rows (offsets past them
 * are ignored, as cpu-ref does). */
static void expert_rows(const struct grouped_plan *p, int e, int *begin, int *end)
{
    int rows = p->d->rows;
    *begin = p->offsets[e] < rows ? p->offsets[e] : rows;
    *end = p->offsets[e + 1] < rows ? p->offsets[e + 1] : rows;
}

static const char *expert_b(const struct grouped_plan *p, int e, int j0)
{
    const struct dy_gemm_grouped_desc *d = p->d;
    size_t element = (size_t)e * d->b_expert_stride + (size_t)j0 * d->k;
    return (const char *)DY_CPU_PTR(d->b) + element * dy_cpu_esize(d->b_dtype);
}

/* The expert's rows in chunks of DY_CPU_TILE_M against one tile of B, which
 * comes from memory for the first chunk and from cache for the others. */
static void tile_task(const struct grouped_plan *p, struct grouped_task task)
{
    const struct dy_gemm_grouped_desc *d = p->d;
    float tile[DY_CPU_TILE_M * DY_CPU_TILE_N];
    int begin, end;
    expert_rows(p, task.expert, &begin, &end);
    int nb = d->n - task.j0 < DY_CPU_TILE_N ? d->n - task.j0 : DY_CPU_TILE_N;
    const char *b = expert_b(p, task.expert, task.j0);
    float *c = (float *)DY_CPU_PTR(d->c) + task.j0;
    for (int r0 = begin; r0 < end; r0 += DY_CPU_TILE_M) {
        int m = end - r0 < DY_CPU_TILE_M ? end - r0 : DY_CPU_TILE_M;
        dy_cpu_gemm_tile(m, nb, d->k, p->a + (size_t)r0 * p->lda, p->lda, b, (size_t)d->k,
                         d->b_dtype, tile);
        for (int r = 0; r < m; r++)
            memcpy(c + (size_t)(r0 + r) * d->ldc, tile + (size_t)r * DY_CPU_TILE_N,
                   (size_t)nb * sizeof(float));
    }
}

static void sgemm_task(const struct grouped_plan *p, struct grouped_task task, float *b_panel)
{
    const struct dy_gemm_grouped_desc *d = p->d;
    int begin, end;
    expert_rows(p, task.expert, &begin, &end);
    int nb = d->n - task.j0 < p->panel ? d->n - task.j0 : p->panel;
    const char *b = expert_b(p, task.expert, task.j0);
    const float *bp = (const float *)b;
    if (b_panel) {
        size_t row_bytes = (size_t)d->k * dy_cpu_esize(d->b_dtype);
        for (int j = 0; j < nb; j++)
            dy_cpu_load_row(b_panel + (size_t)j * d->k, b + j * row_bytes, d->b_dtype,
                            (size_t)d->k);
        bp = b_panel;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, end - begin, nb, d->k, 1.0f,
                p->a + (size_t)begin * p->lda, (int)p->lda, bp, d->k, 0.0f,
                (float *)DY_CPU_PTR(d->c) + (size_t)begin * d->ldc + task.j0, d->ldc);
}

/* Rows [begin, end) of the sorted order: the rows of A they read. */
static void gather_rows(const struct dy_gemm_grouped_desc *d, float *gathered, int begin, int end)
{
    const float *a = DY_CPU_PTR(d->a);
    const int32_t *a_rows = DY_CPU_PTR(d->a_rows);
    for (int r = begin; r < end; r++)
        memcpy(gathered + (size_t)r * d->k, a + (size_t)(a_rows[r] / d->a_row_div) * d->lda,
               (size_t)d->k * sizeof(float));
}

/* The tasks into scratch, the tile experts' first. Offsets must not
 * decrease: an expert with negative rows is refused rather than skipped. */
static int plan_tasks(struct dy_cpu_ctx *ctx, struct grouped_plan *p)
{
    const struct dy_gemm_grouped_desc *d = p->d;
    for (int e = 0; e < d->experts; e++)
        if (p->offsets[e] < 0 || p->offsets[e + 1] < p->offsets[e])
            return dy_cpu_fail(ctx, DY_E_INVALID, "cpu gemm_grouped: offsets[%d], [%d] = %d, %d",
                               e, e + 1, p->offsets[e], p->offsets[e + 1]);
    int tiles = (d->n + DY_CPU_TILE_N - 1) / DY_CPU_TILE_N;
    int panels = (d->n + p->panel - 1) / p->panel;
    /* panel >= DY_CPU_TILE_N: an expert has at most `tiles` tasks */
    p->tasks = dy_cpu_scratch(ctx, DY_CPU_SCRATCH_C,
                              (size_t)d->experts * tiles * sizeof *p->tasks);
    if (!p->tasks)
        return DY_E_NOMEM;
    int count = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int e = 0; e < d->experts; e++) {
            int begin, end;
            expert_rows(p, e, &begin, &end);
            bool on_tile = end - begin <= TILE_ROWS_MAX;
            if (end == begin || on_tile != (pass == 0))
                continue;
            int step = on_tile ? DY_CPU_TILE_N : p->panel;
            for (int t = 0; t < (on_tile ? tiles : panels); t++)
                p->tasks[count++] = (struct grouped_task){ e, t * step };
        }
        if (pass == 0)
            p->tile_tasks = count;
    }
    p->sgemm_tasks = count - p->tile_tasks;
    return DY_OK;
}

int dy_cpu_gemm_grouped(void *opaque, const struct dy_gemm_grouped_desc *d)
{
    struct dy_cpu_ctx *ctx = opaque;
    if (!dy_cpu_float_dtype(d->b_dtype))
        return dy_cpu_fail(ctx, DY_E_UNSUPPORTED, "cpu gemm_grouped: B dtype %d", d->b_dtype);
    bool gather = d->a_rows.h != NULL;
    if (d->rows < 0 || d->experts < 1 || d->n < 1 || d->k < 1 || d->lda < d->k ||
        d->ldc < d->n || (gather && d->a_row_div < 1))
        return dy_cpu_fail(ctx, DY_E_INVALID,
                           "cpu gemm_grouped: rows=%d experts=%d n=%d k=%d lda=%d ldc=%d div=%d",
                           d->rows, d->experts, d->n, d->k, d->lda, d->ldc, d->a_row_div);
    if (d->rows == 0)
        return DY_OK;
    struct grouped_plan p = { .d = d, .offsets = DY_CPU_PTR(d->offsets),
                              .a = DY_CPU_PTR(d->a), .lda = (size_t)d->lda,
                              .panel = dy_cpu_panel_cols(d->k) };
    int status = plan_tasks(ctx, &p);
    if (status != DY_OK)
        return status;
    /* A's rows gathered into sorted order: every expert's rows are then
     * one matrix, as both kernels want */
    float *gathered = NULL;
    if (gather) {
        gathered = dy_cpu_scratch(ctx, DY_CPU_SCRATCH_A, (size_t)d->rows * d->k * sizeof(float));
        if (!gathered)
            return DY_E_NOMEM;
        p.a = gathered;
        p.lda = (size_t)d->k;
    }
    size_t panel_floats = (size_t)p.panel * d->k;
    if (d->b_dtype != DY_F32 && p.sgemm_tasks &&
        !(p.b_panels = dy_cpu_scratch(ctx, DY_CPU_SCRATCH_B,
                                      (size_t)ctx->threads * panel_floats * sizeof(float))))
        return DY_E_NOMEM;
    bool gather_here = gather && (size_t)d->rows * d->k <= SERIAL_GATHER_FLOATS;
    if (gather_here)
        gather_rows(d, gathered, 0, d->rows);
    /* one barrier, at the end, unless the gather needs the team */
#pragma omp parallel num_threads(ctx->threads)
    {
        if (gather && !gather_here) {
            int t = omp_get_thread_num(), threads = omp_get_num_threads();
            gather_rows(d, gathered, (int)((long)d->rows * t / threads),
                        (int)((long)d->rows * (t + 1) / threads));
#pragma omp barrier
        }
#pragma omp for schedule(dynamic) nowait
        for (int i = 0; i < p.tile_tasks; i++)
            tile_task(&p, p.tasks[i]);
        float *b_panel = p.b_panels ? p.b_panels + omp_get_thread_num() * panel_floats : NULL;
#pragma omp for schedule(dynamic) nowait
        for (int i = 0; i < p.sgemm_tasks; i++)
            sgemm_task(&p, p.tasks[p.tile_tasks + i], b_panel);
    }
    return DY_OK;
}
