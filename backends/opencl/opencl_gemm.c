/* C[m,n] = beta * C + A . B^T (+ bias) in two regimes (quantized B goes
 * to kernel_quant.inc, which comes back here with f32 panels of B).
 *
 * Decode (m < GEMV_MAX_M): memory-bound on B, so our own kernel streams
 * each weight from memory once, converting f16/bf16 in registers
 * (kernels/gemm.cl's gemv).
 *
 * Prefill: compute-bound, so CLBlast's SGEMM does the work where A and C
 * are f32. B that is not f32 is converted in panels of rows into a scratch
 * buffer of bounded size (an LM head in f32 can exceed the device's largest
 * allocation), one SGEMM per panel. Bias and beta are applied to C first
 * and SGEMM accumulates with beta 1. Where CLBlast is absent, or A or C
 * is not f32, a plain tiled kernel does the whole product.
 *
 * CLBlast is loaded at run time, so that the plugin loads where only the
 * OpenCL driver is installed. */
#include "opencl_internal.h"

#ifdef DY_HAVE_CLBLAST
#include <dlfcn.h>

#include <clblast_c.h>
#endif

/* Below this many rows of A, the GEMV kernel. */
#define GEMV_MAX_M 16
/* Largest f32 panel of B converted for CLBlast at once. */
#define PANEL_MAX_BYTES ((size_t)128 << 20)

#ifdef DY_HAVE_CLBLAST
static __typeof__(CLBlastSgemm) *clblast_sgemm;
static __typeof__(CLBlastClearCache) *clblast_clear_cache;
static bool clblast_tried;

static bool have_clblast(void)
{
    if (clblast_tried)
        return clblast_sgemm != NULL;
    clblast_tried = true;
    void *so = dlopen("libclblast.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!so)
        return false;
    clblast_sgemm = (__typeof__(CLBlastSgemm) *)dlsym(so, "CLBlastSgemm");
    clblast_clear_cache = (__typeof__(CLBlastClearCache) *)dlsym(so, "CLBlastClearCache");
    if (!clblast_sgemm || !clblast_clear_cache) {
        clblast_sgemm = NULL;
        clblast_clear_cache = NULL;
        dlclose(so);
    }
    return clblast_sgemm != NULL;
}

/* CLBlast returns OpenCL's codes as they are and its own below -1000. */
static int clblast_fail(struct dy_ocl_ctx *c, CLBlastStatusCode s, const char *call)
{
    if (s > -1000)
        return dy_ocl_fail(c, (cl_int)s, call);
    dy_ocl_failf(c, DY_E_DEVICE, "%s: CLBlast status %d", call, (int)s);
    return s == CLBlastInsufficientMemoryTemp ? DY_E_NOMEM : DY_E_DEVICE;
}

/* C = beta * C + bias, so that SGEMM can add A . B^T with beta 1. */
static int apply_bias_beta(struct dy_ocl_ctx *c, const struct dy_gemm_desc *d)
{
    cl_mem cm = dy_ocl_mem(d->c), bias = dy_ocl_mem(d->bias);
    cl_ulong c_off = dy_ocl_off(d->c), bias_off = dy_ocl_off(d->bias);
    cl_int bias_dtype = d->b_dtype;
    size_t global[2] = { (size_t)d->n, (size_t)d->m };
    const size_t local[2] = { 64, 1 };
    return dy_ocl_launch(c, DY_OCL_K_gemm_bias_beta, 2, global, local,
                         DY_OCL_ARGS(DY_OCL_ARG(cm), DY_OCL_ARG(c_off), DY_OCL_ARG(d->ldc),
                                     DY_OCL_ARG(bias), DY_OCL_ARG(bias_off),
                                     DY_OCL_ARG(bias_dtype), DY_OCL_ARG(d->beta), DY_OCL_ARG(d->m),
                                     DY_OCL_ARG(d->n)));
}

/* Rows [row0, row0 + rows) of B into `panel` as dense f32 [rows, k]. */
static int panel_to_f32(struct dy_ocl_ctx *c, const struct dy_gemm_desc *d, cl_mem panel,
                        cl_int row0, cl_int rows)
{
    cl_mem b = dy_ocl_mem(d->b);
    cl_ulong b_off = dy_ocl_off(d->b);
    cl_int b_dtype = d->b_dtype;
    size_t global[2] = { (size_t)d->k, (size_t)rows };
    const size_t local[2] = { 64, 1 };
    return dy_ocl_launch(c, DY_OCL_K_rows_to_f32, 2, global, local,
                         DY_OCL_ARGS(DY_OCL_ARG(b), DY_OCL_ARG(b_off), DY_OCL_ARG(d->ldb),
                                     DY_OCL_ARG(b_dtype), DY_OCL_ARG(panel), DY_OCL_ARG(row0),
                                     DY_OCL_ARG(rows), DY_OCL_ARG(d->k)));
}

static int gemm_clblast(struct dy_ocl_ctx *c, const struct dy_gemm_desc *d)
{
    int st;
    float beta = d->beta;
    if (d->bias.h) {
        if ((st = apply_bias_beta(c, d)) != DY_OK)
            return st;
        beta = 1.0f;
    }
    cl_mem a = dy_ocl_mem(d->a), cm = dy_ocl_mem(d->c);
    size_t a_off = d->a.off / 4, c_off = d->c.off / 4;
    if (d->b_dtype == DY_F32) {
        CLBlastStatusCode s = clblast_sgemm(CLBlastLayoutRowMajor, CLBlastTransposeNo,
                                           CLBlastTransposeYes, (size_t)d->m, (size_t)d->n,
                                           (size_t)d->k, 1.0f, a, a_off, (size_t)d->lda,
                                           dy_ocl_mem(d->b), d->b.off / 4, (size_t)d->ldb, beta,
                                           cm, c_off, (size_t)d->ldc, &c->queue, NULL);
        return s == CLBlastSuccess ? DY_OK : clblast_fail(c, s, "CLBlastSgemm");
    }
    size_t row_bytes = (size_t)d->k * sizeof(float);
    size_t panel_rows = PANEL_MAX_BYTES / row_bytes;
    if (panel_rows > (size_t)d->n)
        panel_rows = (size_t)d->n;
    if (panel_rows == 0)
        panel_rows = 1;
    cl_mem panel;
    if ((st = dy_ocl_scratch(c, panel_rows * row_bytes, &panel)) != DY_OK)
        return st;
    for (size_t row0 = 0; row0 < (size_t)d->n; row0 += panel_rows) {
        size_t rows = (size_t)d->n - row0 < panel_rows ? (size_t)d->n - row0 : panel_rows;
        if ((st = panel_to_f32(c, d, panel, (cl_int)row0, (cl_int)rows)) != DY_OK)
            return st;
        CLBlastStatusCode s = clblast_sgemm(CLBlastLayoutRowMajor, CLBlastTransposeNo,
                                           CLBlastTransposeYes, (size_t)d->m, rows, (size_t)d->k,
                                           1.0f, a, a_off, (size_t)d->lda, panel, 0, (size_t)d->k,
                                           beta, cm, c_off + row0, (size_t)d->ldc, &c->queue, NULL);
        if (s != CLBlastSuccess)
            return clblast_fail(c, s, "CLBlastSgemm");
    }
    return DY_OK;
}

void dy_ocl_gemm_release_cache(void)
{
    if (clblast_clear_cache)
        clblast_clear_cache();
}

static bool clblast_fits(const struct dy_gemm_desc *d)
{
    /* CLBlast takes offsets in elements */
    return have_clblast() && d->a_dtype == DY_F32 && d->c_dtype == DY_F32 && d->k > 0 &&
           d->a.off % 4 == 0 && d->c.off % 4 == 0 && (d->b_dtype != DY_F32 || d->b.off % 4 == 0);
}
#else
void dy_ocl_gemm_release_cache(void)
{
}
#endif

int dy_ocl_gemm(void *ctx, const struct dy_gemm_desc *d)
{
    struct dy_ocl_ctx *c = ctx;
    /* the norm, RoPE and KV append only in gemv1_gpu, SwiGLU there and in the GPU
     * GEMV (gemm.cl's gemv_rows pairs gate and up rows); elsewhere dy_gemm
     * composes */
    bool gemv1 = dy_ocl_gemv1_fits(c, d);
    if ((d->norm.x.h || d->act == DY_ACT_ROPE || d->append.k_cache.h) && !gemv1)
        return DY_E_UNSUPPORTED;
    if (d->act == DY_ACT_GELU ||
        (d->act == DY_ACT_SWIGLU &&
         (!c->swiglu_gemv ||
          (!gemv1 && (!c->gemv_old || dy_dtype_quantized(d->b_dtype) || d->m <= 0 || d->m >= GEMV_MAX_M)))))
        return DY_E_UNSUPPORTED;
    if (dy_dtype_quantized(d->b_dtype))
        return dy_ocl_gemm_quant(c, d);
    enum dy_dtype types[3] = { d->a_dtype, d->b_dtype, d->c_dtype };
    for (int i = 0; i < 3; i++)
        if (types[i] != DY_F32 && types[i] != DY_F16 && types[i] != DY_BF16)
            return dy_ocl_failf(c, DY_E_UNSUPPORTED, "gemm: dtype %s is not supported",
                                dy_ocl_dtype_name(types[i]));
    if (d->m < 0 || d->n < 0 || d->k < 0 || d->lda < d->k || d->ldb < d->k || d->ldc < d->n)
        return dy_ocl_failf(c, DY_E_INVALID, "gemm: m %d n %d k %d with lda %d ldb %d ldc %d",
                            d->m, d->n, d->k, d->lda, d->ldb, d->ldc);
    if (d->m == 0 || d->n == 0)
        return DY_OK;
    if (d->m < GEMV_MAX_M)
        return dy_ocl_gemv(c, d);
#ifdef DY_HAVE_CLBLAST
    if (clblast_fits(d))
        return gemm_clblast(c, d);
#endif
    return dy_ocl_gemm_tiled(c, d);
}
