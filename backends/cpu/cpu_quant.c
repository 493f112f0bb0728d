/* Quantized weights (backend.h's struct dy_quant) in the cpu backend: the
 * dequantize op, and the GEMM with quantized B up to DY_CPU_TILE_M rows of
 * A; past that cpu_gemm.c's sgemm path dequantizes panels of B.
 *
 * Decode (m <= DY_CPU_QGEMV_M) is bound by reading the weights, which is
 * what quantizing them saves: threads split the rows of B, and each tile of
 * 64 rows is read once, as bytes, and dequantized in registers
 * (dy_cpu_qgemv_tile). A few more rows of A and the work per byte grows
 * with them; B is then dequantized once per tile into per-thread f32
 * scratch, still in cache when the float tile multiplies it. */
#include <omp.h>

#include "cpu_internal.h"

/* Elements per piece of an f16/bf16 row: dequantized on the stack, then
 * rounded. */
#define PIECE 256
/* Below this many elements dequantize runs on the calling thread. */
#define PARALLEL_ELEMENTS (1 << 16)

bool dy_cpu_quant_ok(enum dy_dtype t, const struct dy_quant *q, int k, int ldb)
{
    if (!dy_dtype_quantized(t) || !q->scale.h || ldb != k)
        return false;
    return t != DY_I4 || (q->group >= 2 && q->group % 2 == 0 && k % q->group == 0);
}

int dy_cpu_dequantize(void *opaque, const struct dy_dequantize_desc *d)
{
    struct dy_cpu_ctx *ctx = opaque;
    if (!dy_cpu_quant_ok(d->q_dtype, &d->qp, d->k, d->k) || !dy_cpu_float_dtype(d->out_dtype))
        return dy_cpu_fail(ctx, DY_E_UNSUPPORTED, "cpu dequantize: %d to %d, k=%d group=%d",
                           d->q_dtype, d->out_dtype, d->k, d->qp.group);
    if (d->rows < 0 || d->k < 1 || d->out_stride < d->k)
        return dy_cpu_fail(ctx, DY_E_INVALID, "cpu dequantize: rows=%d k=%d out_stride=%d",
                           d->rows, d->k, d->out_stride);
    struct dy_cpu_qmat w = dy_cpu_qmat_of(d->q, &d->qp, d->q_dtype, d->k);
    char *out = DY_CPU_PTR(d->out);
    size_t os = dy_cpu_esize(d->out_dtype);
#pragma omp parallel for schedule(static) num_threads(ctx->threads) \
    if ((size_t)d->rows * d->k >= PARALLEL_ELEMENTS)
    for (int r = 0; r < d->rows; r++) {
        char *row = out + (size_t)r * d->out_stride * os;
        if (d->out_dtype == DY_F32) {
            dy_cpu_dequant_range(&w, (size_t)r, 0, d->k, (float *)row);
            continue;
        }
        float piece[PIECE];
        for (int i0 = 0; i0 < d->k; i0 += PIECE) {
            int i1 = d->k - i0 < PIECE ? d->k : i0 + PIECE;
            dy_cpu_dequant_range(&w, (size_t)r, i0, i1, piece);
            dy_cpu_store_row(row + (size_t)i0 * os, d->out_dtype, piece, (size_t)(i1 - i0));
        }
    }
    return DY_OK;
}

int dy_cpu_gemm_quant_small_m(struct dy_cpu_ctx *ctx, const struct dy_gemm_desc *d)
{
    const float *a = DY_CPU_PTR(d->a);
    struct dy_cpu_qmat w = dy_cpu_qmat_of(d->b, &d->bq, d->b_dtype, d->k);
    struct dy_cpu_qa qa = { a, (size_t)d->lda, NULL, 0, d->m };
    bool in_registers = d->m <= DY_CPU_QGEMV_M;
    if (in_registers && w.dtype == DY_I4 &&
        (qa.packed_ld = dy_cpu_q4_packed_floats(d->k, w.group)) > 0) {
        float *packed = dy_cpu_scratch(ctx, DY_CPU_SCRATCH_PACK,
                                       (size_t)d->m * qa.packed_ld * sizeof(float));
        if (!packed)
            return DY_E_NOMEM;
        dy_cpu_q4_pack(a, qa.lda, d->m, d->k, packed, qa.packed_ld);
        qa.packed = packed;
    }
    size_t tile_floats = (size_t)DY_CPU_TILE_N * d->k;
    float *b_tiles = NULL;
    if (!in_registers &&
        !(b_tiles = dy_cpu_scratch(ctx, DY_CPU_SCRATCH_B,
                                   (size_t)ctx->threads * tile_floats * sizeof(float))))
        return DY_E_NOMEM;
    int tiles = (d->n + DY_CPU_TILE_N - 1) / DY_CPU_TILE_N;
    /* static: each thread streams one contiguous range of B */
#pragma omp parallel for schedule(static) num_threads(ctx->threads)
    for (int tile = 0; tile < tiles; tile++) {
        float c_tile[DY_CPU_TILE_M * DY_CPU_TILE_N];
        int j0 = tile * DY_CPU_TILE_N;
        int nb = d->n - j0 < DY_CPU_TILE_N ? d->n - j0 : DY_CPU_TILE_N;
        struct dy_cpu_qmat wt = dy_cpu_qmat_rows(w, (size_t)j0);
        if (in_registers) {
            dy_cpu_qgemv_tile(nb, &qa, &wt, c_tile);
        } else {
            float *bt = b_tiles + (size_t)omp_get_thread_num() * tile_floats;
            dy_cpu_dequant_rows(&wt, nb, bt, (size_t)d->k);
            dy_cpu_gemm_tile(d->m, nb, d->k, a, qa.lda, bt, (size_t)d->k, DY_F32, c_tile);
        }
        dy_cpu_gemm_epilogue(d, c_tile, DY_CPU_TILE_N, 0, d->m, j0, nb);
    }
    return DY_OK;
}
