/* C[m,n] = beta * C + A . B^T (+ bias) with the portable kernels of
 * backends/opencl/kernels/gemm.cl: the GEMV kernel below GEMV_MAX_M rows of
 * A (memory-bound: each weight streamed once, f16/bf16 converted in
 * registers), the tiled kernel above (both in kernel_ops.inc). There is no
 * CLBlast on this path. Quantized B goes to kernel_quant.inc, which comes
 * back here with f32 panels of B for many rows of A. */
#include "level_zero_internal.h"

/* Below this many rows of A, the GEMV kernel. */
#define GEMV_MAX_M 16

int dy_ze_gemm(void *ctx, const struct dy_gemm_desc *d)
{
    struct dy_ze_ctx *c = ctx;
    if (dy_dtype_quantized(d->b_dtype))
        return dy_ze_gemm_quant(c, d);
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
    return d->m < GEMV_MAX_M ? dy_ze_gemv(c, d) : dy_ze_gemm_tiled(c, d);
}
