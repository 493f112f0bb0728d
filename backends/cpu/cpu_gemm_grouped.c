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
 * Quantized B (each expert a matrix with its own scales, one after another):
 * an expert of up to DY_CPU_QGEMV_M rows takes the quantized GEMV tile,
 * which reads its bytes once in registers (int4 with A's rows packed once
 * per call); one of more rows has each tile or panel dequantized to f32
 * first, into the same per-thread scratch as the panels.
 *
 * One OpenMP region does it all: the gather of A's rows into sorted order
 * (and the int4 packing), then the tiles, then the sgemm panels, both taken
 * dynamically since experts differ in rows. */
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
    /* quantized B */
    bool quantized;
    struct dy_cpu_qmat w;      /* expert 0 */
    size_t expert_scales;      /* scales (and zero points) per expert */
    bool dequant_tiles;        /* some tile expert has more than DY_CPU_QGEMV_M rows */
    int *pack_row;             /* int4: expert e's first row in packed, when it has one */
    int pack_rows;
    float *packed;             /* NULL: no packed rows */
    size_t packed_ld;
};

/* Rows [*begin, *end) of expert e, within the op's rows (offsets past them
 * are ignored, as cpu-ref does). */
static void expert_rows(const struct grouped_plan *p, int e, int *begin, int *end)
{
    int rows = p->d->rows;
    *begin = p->offsets[e] < rows ? p->offsets[e] : rows;
    *end = p->offsets[e + 1] < rows ? p->offsets[e + 1] : rows;
}

/* Rows [j0, n) of expert e's quantized B. */
static struct dy_cpu_qmat expert_qmat(const struct grouped_plan *p, int e, int j0)
{
    struct dy_cpu_qmat w = p->w;
    w.q += dy_dtype_bytes(w.dtype, (size_t)e * p->d->b_expert_stride);
    w.scale += (size_t)e * p->expert_scales;
    if (w.zero)
        w.zero += (size_t)e * p->expert_scales;
    return dy_cpu_qmat_rows(w, (size_t)j0);
}

static const char *expert_b(const struct grouped_plan *p, int e, int j0)
{
    const struct dy_gemm_grouped_desc *d = p->d;
    size_t element = (size_t)e * d->b_expert_stride + (size_t)j0 * d->k;
    return (const char *)DY_CPU_PTR(d->b) + element * dy_cpu_esize(d->b_dtype);
}

/* A quantized expert's few rows through the GEMV tile. */
static void qgemv_task(const struct grouped_plan *p, struct grouped_task task, int begin, int end,
                       int nb, float *tile)
{
    struct dy_cpu_qmat w = expert_qmat(p, task.expert, task.j0);
    struct dy_cpu_qa qa = { p->a + (size_t)begin * p->lda, p->lda, NULL, p->packed_ld,
                            end - begin };
    if (p->packed)
        qa.packed = p->packed + (size_t)p->pack_row[task.expert] * p->packed_ld;
    dy_cpu_qgemv_tile(nb, &qa, &w, tile);
}

/* The expert's rows in chunks of DY_CPU_TILE_M against one tile of B, which
 * comes from memory for the first chunk and from cache for the others
 * (quantized B: dequantized into b_tile first, or read in registers). */
static void tile_task(const struct grouped_plan *p, struct grouped_task task, float *b_tile)
{
    const struct dy_gemm_grouped_desc *d = p->d;
    float tile[DY_CPU_TILE_M * DY_CPU_TILE_N];
    int begin, end;
    expert_rows(p, task.expert, &begin, &end);
    int nb = d->n - task.j0 < DY_CPU_TILE_N ? d->n - task.j0 : DY_CPU_TILE_N;
    float *c = (float *)DY_CPU_PTR(d->c) + task.j0;
    const void *b;
    enum dy_dtype bt = d->b_dtype;
    if (p->quantized && end - begin <= DY_CPU_QGEMV_M) {
        qgemv_task(p, task, begin, end, nb, tile);
        for (int r = begin; r < end; r++)
            memcpy(c + (size_t)r * d->ldc, tile + (size_t)(r - begin) * DY_CPU_TILE_N,
                   (size_t)nb * sizeof(float));
        return;
    }
    if (p->quantized) {
        struct dy_cpu_qmat w = expert_qmat(p, task.expert, task.j0);
        dy_cpu_dequant_rows(&w, nb, b_tile, (size_t)d->k);
        b = b_tile;
        bt = DY_F32;
    } else {
        b = expert_b(p, task.expert, task.j0);
    }
    for (int r0 = begin; r0 < end; r0 += DY_CPU_TILE_M) {
        int m = end - r0 < DY_CPU_TILE_M ? end - r0 : DY_CPU_TILE_M;
        dy_cpu_gemm_tile(m, nb, d->k, p->a + (size_t)r0 * p->lda, p->lda, b, (size_t)d->k, bt,
                         tile);
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
    const float *bp = NULL;
    if (p->quantized) {
        struct dy_cpu_qmat w = expert_qmat(p, task.expert, task.j0);
        dy_cpu_dequant_rows(&w, nb, b_panel, (size_t)d->k);
        bp = b_panel;
    } else if (b_panel) {
        const char *b = expert_b(p, task.expert, task.j0);
        size_t row_bytes = (size_t)d->k * dy_cpu_esize(d->b_dtype);
        for (int j = 0; j < nb; j++)
            dy_cpu_load_row(b_panel + (size_t)j * d->k, b + j * row_bytes, d->b_dtype,
                            (size_t)d->k);
        bp = b_panel;
    } else {
        bp = (const float *)expert_b(p, task.expert, task.j0);
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

/* The tasks into scratch, the tile experts' first, and for int4 B each GEMV
 * expert's place among the packed rows. Offsets must not decrease: an
 * expert with negative rows is refused rather than skipped. */
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
    size_t task_bytes = (size_t)d->experts * tiles * sizeof *p->tasks;
    p->tasks = dy_cpu_scratch(ctx, DY_CPU_SCRATCH_C, task_bytes + (size_t)d->experts * sizeof(int));
    if (!p->tasks)
        return DY_E_NOMEM;
    p->pack_row = (int *)((char *)p->tasks + task_bytes);
    int count = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int e = 0; e < d->experts; e++) {
            int begin, end;
            expert_rows(p, e, &begin, &end);
            bool on_tile = end - begin <= TILE_ROWS_MAX;
            if (end == begin || on_tile != (pass == 0))
                continue;
            if (p->quantized && on_tile && end - begin <= DY_CPU_QGEMV_M) {
                p->pack_row[e] = p->pack_rows;
                p->pack_rows += end - begin;
            } else if (p->quantized && on_tile) {
                p->dequant_tiles = true;
            }
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

/* The int4 GEMV experts among [e0, e1): their rows of A packed. */
static void pack_experts(const struct grouped_plan *p, int e0, int e1)
{
    for (int e = e0; e < e1; e++) {
        int begin, end;
        expert_rows(p, e, &begin, &end);
        if (end > begin && end - begin <= DY_CPU_QGEMV_M)
            dy_cpu_q4_pack(p->a + (size_t)begin * p->lda, p->lda, end - begin, p->d->k,
                           p->packed + (size_t)p->pack_row[e] * p->packed_ld, p->packed_ld);
    }
}

/* Quantized B: the layout the kernels read, else unsupported. */
static int plan_quant(struct dy_cpu_ctx *ctx, struct grouped_plan *p)
{
    const struct dy_gemm_grouped_desc *d = p->d;
    if (!dy_cpu_quant_ok(d->b_dtype, &d->bq, d->k, d->k) ||
        d->b_expert_stride != (size_t)d->n * d->k)
        return dy_cpu_fail(ctx, DY_E_UNSUPPORTED,
                           "cpu gemm_grouped: B dtype %d, group %d, k=%d, expert stride %zu",
                           d->b_dtype, d->bq.group, d->k, d->b_expert_stride);
    p->quantized = true;
    p->w = dy_cpu_qmat_of(d->b, &d->bq, d->b_dtype, d->k);
    p->expert_scales = dy_quant_scales(d->b_dtype, d->n, d->k, d->bq.group);
    if (d->b_dtype == DY_I4)
        p->packed_ld = dy_cpu_q4_packed_floats(d->k, d->bq.group);
    return DY_OK;
}

int dy_cpu_gemm_grouped(void *opaque, const struct dy_gemm_grouped_desc *d)
{
    struct dy_cpu_ctx *ctx = opaque;
    if (!dy_cpu_float_dtype(d->b_dtype) && !dy_dtype_quantized(d->b_dtype))
        return dy_cpu_fail(ctx, DY_E_UNSUPPORTED, "cpu gemm_grouped: B dtype %d", d->b_dtype);
    bool gather = d->a_rows.h != NULL;
    if (d->rows < 0 || d->experts < 1 || d->n < 1 || d->k < 1 || d->lda < d->k ||
        d->ldc < d->n || (gather && d->a_row_div < 1))
        return dy_cpu_fail(ctx, DY_E_INVALID,
                           "cpu gemm_grouped: rows=%d experts=%d n=%d k=%d lda=%d ldc=%d div=%d",
                           d->rows, d->experts, d->n, d->k, d->lda, d->ldc, d->a_row_div);
    struct grouped_plan p = { .d = d, .offsets = DY_CPU_PTR(d->offsets),
                              .a = DY_CPU_PTR(d->a), .lda = (size_t)d->lda,
                              .panel = dy_cpu_panel_cols(d->k) };
    int status = dy_dtype_quantized(d->b_dtype) ? plan_quant(ctx, &p) : DY_OK;
    if (status != DY_OK || d->rows == 0 || (status = plan_tasks(ctx, &p)) != DY_OK)
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
    if (p.packed_ld && p.pack_rows &&
        !(p.packed = dy_cpu_scratch(ctx, DY_CPU_SCRATCH_PACK,
                                    (size_t)p.pack_rows * p.packed_ld * sizeof(float))))
        return DY_E_NOMEM;
    size_t panel_floats = (size_t)p.panel * d->k;
    if (d->b_dtype != DY_F32 && (p.sgemm_tasks || p.dequant_tiles) &&
        !(p.b_panels = dy_cpu_scratch(ctx, DY_CPU_SCRATCH_B,
                                      (size_t)ctx->threads * panel_floats * sizeof(float))))
        return DY_E_NOMEM;
    bool gather_here = gather && (size_t)d->rows * d->k <= SERIAL_GATHER_FLOATS;
    if (gather_here)
        gather_rows(d, gathered, 0, d->rows);
    bool pack_here = p.packed && (!gather || gather_here) &&
                     (size_t)p.pack_rows * d->k <= SERIAL_GATHER_FLOATS;
    if (pack_here)
        pack_experts(&p, 0, d->experts);
    /* one barrier, at the end, unless the gather or the packing needs the
     * team */
#pragma omp parallel num_threads(ctx->threads)
    {
        if (gather && !gather_here) {
            int t = omp_get_thread_num(), threads = omp_get_num_threads();
            gather_rows(d, gathered, (int)((long)d->rows * t / threads),
                        (int)((long)d->rows * (t + 1) / threads));
#pragma omp barrier
        }
        if (p.packed && !pack_here) {
#pragma omp for schedule(dynamic)
            for (int e = 0; e < d->experts; e++)
                pack_experts(&p, e, e + 1);
        }
        /* f32 B of a tile or panel: one task at a time per thread */
        float *b_scratch = p.b_panels ? p.b_panels + omp_get_thread_num() * panel_floats : NULL;
#pragma omp for schedule(dynamic) nowait
        for (int i = 0; i < p.tile_tasks; i++)
            tile_task(&p, p.tasks[i], b_scratch);
#pragma omp for schedule(dynamic) nowait
        for (int i = 0; i < p.sgemm_tasks; i++)
            sgemm_task(&p, p.tasks[p.tile_tasks + i], b_scratch);
    }
    return DY_OK;
}
