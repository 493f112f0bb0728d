/* C[m,n] = beta * C + A . B^T (+ bias) with the portable kernels of
 * backends/opencl/kernels/gemm.cl: the GEMV kernel below GEMV_MAX_M rows of
 * A (memory-bound: each weight streamed once, f16/bf16 converted in
 * registers), the tiled kernel above. There is no CLBlast on this path;
 * argument lists mirror opencl_gemm.c's. */
#include "level_zero_internal.h"

/* Below this many rows of A, the GEMV kernel; gemm.cl's GEMV_ROWS (rows of
 * B per work-group). */
#define GEMV_MAX_M 16
#define GEMV_ROWS (DY_ZE_WG / 32)
/* gemm.cl's TILE */
#define TILE 16

static int gemv(struct dy_ze_ctx *c, const struct dy_gemm_desc *d)
{
    dy_ze_devptr a = dy_ze_mem(d->a), b = dy_ze_mem(d->b), bias = dy_ze_mem(d->bias);
    dy_ze_devptr cm = dy_ze_mem(d->c);
    uint64_t a_off = dy_ze_off(d->a), b_off = dy_ze_off(d->b), bias_off = dy_ze_off(d->bias);
    uint64_t c_off = dy_ze_off(d->c);
    int32_t a_dtype = d->a_dtype, b_dtype = d->b_dtype, c_dtype = d->c_dtype;
    /* wide loads need every row to start on 16 bytes */
    bool b_aligned = d->b.off % 16 == 0 && (size_t)d->ldb * dy_dtype_size(d->b_dtype) % 16 == 0;
    int32_t a_vec = d->a_dtype == DY_F32 && d->a.off % 16 == 0 && d->lda % 4 == 0;
    int32_t k_vec = b_aligned ? d->k / 8 * 8 : 0;
    size_t global = ((size_t)d->n + GEMV_ROWS - 1) / GEMV_ROWS * DY_ZE_WG;
    const size_t local = DY_ZE_WG;
    return dy_ze_launch(c, d->m == 1 ? DY_ZE_K_gemv1 : DY_ZE_K_gemv, 1, &global, &local,
                        DY_ZE_ARGS(DY_ZE_ARG(a), DY_ZE_ARG(a_off), DY_ZE_ARG(d->lda),
                                   DY_ZE_ARG(a_dtype), DY_ZE_ARG(a_vec), DY_ZE_ARG(b),
                                   DY_ZE_ARG(b_off), DY_ZE_ARG(d->ldb), DY_ZE_ARG(b_dtype),
                                   DY_ZE_ARG(bias), DY_ZE_ARG(bias_off), DY_ZE_ARG(cm),
                                   DY_ZE_ARG(c_off), DY_ZE_ARG(d->ldc), DY_ZE_ARG(c_dtype),
                                   DY_ZE_ARG(d->beta), DY_ZE_ARG(d->m), DY_ZE_ARG(d->n),
                                   DY_ZE_ARG(d->k), DY_ZE_ARG(k_vec)));
}

static int gemm_tiled(struct dy_ze_ctx *c, const struct dy_gemm_desc *d)
{
    dy_ze_devptr a = dy_ze_mem(d->a), b = dy_ze_mem(d->b), bias = dy_ze_mem(d->bias);
    dy_ze_devptr cm = dy_ze_mem(d->c);
    uint64_t a_off = dy_ze_off(d->a), b_off = dy_ze_off(d->b), bias_off = dy_ze_off(d->bias);
    uint64_t c_off = dy_ze_off(d->c);
    int32_t a_dtype = d->a_dtype, b_dtype = d->b_dtype, c_dtype = d->c_dtype;
    size_t global[2] = { (size_t)d->n, (size_t)d->m };
    const size_t local[2] = { TILE, TILE };
    return dy_ze_launch(c, DY_ZE_K_gemm_tiled, 2, global, local,
                        DY_ZE_ARGS(DY_ZE_ARG(a), DY_ZE_ARG(a_off), DY_ZE_ARG(d->lda),
                                   DY_ZE_ARG(a_dtype), DY_ZE_ARG(b), DY_ZE_ARG(b_off),
                                   DY_ZE_ARG(d->ldb), DY_ZE_ARG(b_dtype), DY_ZE_ARG(bias),
                                   DY_ZE_ARG(bias_off), DY_ZE_ARG(cm), DY_ZE_ARG(c_off),
                                   DY_ZE_ARG(d->ldc), DY_ZE_ARG(c_dtype), DY_ZE_ARG(d->beta),
                                   DY_ZE_ARG(d->m), DY_ZE_ARG(d->n), DY_ZE_ARG(d->k)));
}

int dy_ze_gemm(void *ctx, const struct dy_gemm_desc *d)
{
    struct dy_ze_ctx *c = ctx;
    enum dy_dtype types[3] = { d->a_dtype, d->b_dtype, d->c_dtype };
    for (int i = 0; i < 3; i++)
        if (types[i] != DY_F32 && types[i] != DY_F16 && types[i] != DY_BF16)
            return dy_ze_failf(c, DY_E_UNSUPPORTED, "gemm: dtype %s is not supported",
                               dy_ze_dtype_name(types[i]));
    if (d->m < 0 || d->n < 0 || d->k < 0 || d->lda < d->k || d->ldb < d->k || d->ldc < d->n)
        return dy_ze_failf(c, DY_E_INVALID, "gemm: m %d n %d k %d with lda %d ldb %d ldc %d",
                           d->m, d->n, d->k, d->lda, d->ldb, d->ldc);
    if (d->m == 0 || d->n == 0)
        return DY_OK;
    return d->m < GEMV_MAX_M ? gemv(c, d) : gemm_tiled(c, d);
}
