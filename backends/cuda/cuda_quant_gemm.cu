/* Quantized weights on CUDA (backend.h, struct dy_quant): the dequantize op,
 * and gemm / gemm_grouped with fp8, int8 or int4 B.
 *   - m <= 8, and grouped calls of up to 4 rows per expert (decode): the
 *     dequantizing GEMV of cuda_qgemv.cu, reading the quantized bytes.
 *   - fp8 past that, on a chip with FP8 tensor cores and cuBLASLt: A
 *     rounded to E4M3 with one scale, max|A| / 448, found on the device (no
 *     host round trip), then cublasLtMatmul in the "TN" layout FP8 asks for:
 *     row-major C = A B^T is column-major C^T = B A^T, B transposed and A
 *     not; both scales by device pointer (bq.scale copied beside A's, both
 *     256-byte aligned), C and D f32, so beta reads C in place. Where
 *     cuBLASLt declines C in place (an ldc it has no algorithm for), the
 *     product goes to a scratch and a kernel adds beta * C and the bias.
 *   - int8, int4 past decode (fp8 too without FP8 units, and in HIP): B
 *     dequantized into a bf16 scratch, then dy_cuda_gemm's bf16 path (cuBLAS
 *     with A rounded to bf16, or the portable tiled kernel). gemm_grouped
 *     dequantizes every expert and runs its bf16 paths.
 *   - weights the GEMV's 16-byte loads cannot take (k or the int4 group not
 *     a multiple of 32, unaligned views): B dequantized to f32 and the f32
 *     paths, exact as the GEMV.
 * The bias (bq.bias_dtype) is added by the GEMV, else by its own kernel.
 * DYNO_CUDA_FP8_GEMM=0 sends fp8 to the bf16 path, =require makes a shape
 * cuBLASLt declines an error instead (benchmarks, tests). */
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"
#include "cuda_quant.h"

#define THREADS 256
#define LT_WORKSPACE ((size_t)32 << 20)

struct qmat {
    const unsigned char *q;
    const float *scale;
    const unsigned char *zero; /* int4 only; NULL: 8 */
    int group;
    enum dy_dtype t;
};

static unsigned grid_for(size_t n)
{
    size_t b = (n + THREADS - 1) / THREADS;
    return (unsigned)(b < 65535u * 16 ? b : 65535u * 16);
}

static bool aligned(const void *p, unsigned bytes)
{
    return ((uintptr_t)p & (bytes - 1)) == 0;
}

/* ---- dequantize: w = scale * (q - zero) in f32, one multiply, as
 * backend.h's dy_dequant, then rounded to the output dtype ---- */

/* eight values at out[i..i + 8): one 16-byte store (two for f32) when vec */
static __device__ __forceinline__ void store8(void *out, enum dy_dtype ot, size_t i, const float *v, bool vec)
{
    if (vec && ot == DY_F32) {
        float4 *p = (float4 *)((float *)out + i);
        p[0] = make_float4(v[0], v[1], v[2], v[3]);
        p[1] = make_float4(v[4], v[5], v[6], v[7]);
    } else if (vec) {
        uint4 packed;
        uint16_t *h = (uint16_t *)&packed;
#pragma unroll
        for (int e = 0; e < 8; e++)
            h[e] = ot == DY_BF16 ? dy_f32_to_bf16(v[e]) : dy_f32_to_f16(v[e]);
        *(uint4 *)((uint16_t *)out + i) = packed;
    } else {
#pragma unroll
        for (int e = 0; e < 8; e++)
            dy_store_f32(out, ot, i + e, v[e]);
    }
}

/* Eight consecutive elements per thread: k % 8 == 0, int4 groups a
 * multiple of 8, q aligned to 8 bytes. fp8's scale is shared by
 * `tensor_rows` rows (one expert's). */
template <enum dy_dtype QT>
__global__ void dequant8_kernel(struct qmat w, int rows, int k, int tensor_rows, void *out, int out_stride,
                                enum dy_dtype ot, bool vec_out)
{
    size_t chunks = (size_t)k / 8, total = (size_t)rows * chunks;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        size_t j = idx / chunks;
        int i0 = (int)(idx % chunks) * 8;
        float v[8], s;
        if constexpr (QT == DY_I4) {
            size_t gi = j * (size_t)(k / w.group) + i0 / w.group;
            float zf = 8388608.0f + (w.zero ? (float)w.zero[gi] : 8.0f);
            dy_cuda_unpack8_i4(*(const uint32_t *)(w.q + (j * k + i0) / 2), zf, v);
            s = w.scale[gi];
        } else {
            uint2 raw = *(const uint2 *)(w.q + j * k + i0);
            dy_cuda_unpack4<QT>(raw.x, v);
            dy_cuda_unpack4<QT>(raw.y, v + 4);
            s = QT == DY_I8 ? w.scale[j] : w.scale[j / tensor_rows];
        }
#pragma unroll
        for (int e = 0; e < 8; e++)
            v[e] = s * v[e];
        store8(out, ot, j * out_stride + i0, v, vec_out);
    }
}

/* Any shape: one element per thread. */
__global__ void dequant1_kernel(struct qmat w, int rows, int k, int tensor_rows, void *out, int out_stride,
                                enum dy_dtype ot)
{
    size_t total = (size_t)rows * k;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        size_t j = idx / k, i = idx % k;
        const float *scale = w.t == DY_FP8 ? w.scale + j / tensor_rows : w.scale;
        dy_store_f32(out, ot, j * out_stride + i, dy_dequant(w.q, w.t, scale, w.zero, k, w.group, j, i));
    }
}

static int dequantize(struct cuda_ctx *c, const struct qmat *w, int rows, int k, int tensor_rows, void *out,
                      int out_stride, enum dy_dtype ot)
{
    if (rows <= 0)
        return DY_OK;
    bool vec = k % 8 == 0 && aligned(w->q, 8) && (w->t != DY_I4 || w->group % 8 == 0);
    bool vec_out = aligned(out, 16) && (out_stride * dy_dtype_size(ot)) % 16 == 0;
    if (!vec) {
        dequant1_kernel<<<grid_for((size_t)rows * k), THREADS, 0, c->stream>>>(*w, rows, k, tensor_rows, out,
                                                                             out_stride, ot);
    } else {
        void (*kernel)(struct qmat, int, int, int, void *, int, enum dy_dtype, bool) =
            w->t == DY_I4 ? dequant8_kernel<DY_I4> : w->t == DY_I8 ? dequant8_kernel<DY_I8>
                                                                   : dequant8_kernel<DY_FP8>;
        kernel<<<grid_for((size_t)rows * (k / 8)), THREADS, 0, c->stream>>>(*w, rows, k, tensor_rows, out,
                                                                         out_stride, ot, vec_out);
    }
    return dy_cuda_check_launch(c, "dequantize");
}

static bool quant_layout_ok(enum dy_dtype t, int k, int group)
{
    return t != DY_I4 || (group > 0 && group % 2 == 0 && k % group == 0);
}

static struct qmat qmat_of(dy_buf b, enum dy_dtype t, const struct dy_quant *qp)
{
    struct qmat w = { (const unsigned char *)dy_cuda_ptr(b), (const float *)dy_cuda_ptr(qp->scale),
                      t == DY_I4 && qp->zero.h ? (const unsigned char *)dy_cuda_ptr(qp->zero) : NULL,
                      qp->group, t };
    return w;
}

int dy_cuda_dequantize(void *ctx, const struct dy_dequantize_desc *d)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    bool out_ok = d->out_dtype == DY_F32 || d->out_dtype == DY_F16 || d->out_dtype == DY_BF16;
    if (!dy_dtype_quantized(d->q_dtype) || !out_ok || !quant_layout_ok(d->q_dtype, d->k, d->qp.group)) {
        snprintf(c->err, sizeof c->err, "dequantize: fp8/int8/int4 (groups dividing k) to f32/f16/bf16");
        return DY_E_UNSUPPORTED;
    }
    if (d->rows < 0 || d->k <= 0 || d->out_stride < d->k)
        return DY_E_INVALID;
    struct qmat w = qmat_of(d->q, d->q_dtype, &d->qp);
    return dequantize(c, &w, d->rows, d->k, d->rows > 0 ? d->rows : 1, dy_cuda_ptr(d->out), d->out_stride,
                      d->out_dtype);
}

/* ---- gemm ---- */
__global__ void quant_bias_kernel(float *c, int ldc, int m, int n, const void *bias, enum dy_dtype bt)
{
    size_t total = (size_t)m * n;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x)
        c[(idx / n) * ldc + idx % n] += dy_load_f32(bias, bt, idx % n);
}

static int add_bias(struct cuda_ctx *c, const struct dy_gemm_desc *d)
{
    if (!d->bias.h)
        return DY_OK;
    quant_bias_kernel<<<grid_for((size_t)d->m * d->n), THREADS, 0, c->stream>>>(
        (float *)dy_cuda_ptr(d->c), d->ldc, d->m, d->n, dy_cuda_ptr(d->bias), d->bq.bias_dtype);
    return dy_cuda_check_launch(c, "gemm bias");
}

/* B dequantized to wt (bf16 for the matrix units, f32 for exactness) and
 * dy_cuda_gemm over it, then the bias. */
static int gemm_dequantized(struct cuda_ctx *c, const struct dy_gemm_desc *d, const struct qmat *w,
                            enum dy_dtype wt)
{
    size_t bytes = (size_t)d->n * d->k * dy_dtype_size(wt);
    int st = dy_cuda_reserve(c, &c->wscratch, &c->wscratch_size, bytes);
    if (st == DY_OK)
        st = dequantize(c, w, d->n, d->k, d->n, c->wscratch, d->k, wt);
    if (st != DY_OK)
        return st;
    struct dy_bufh scratch = { c->wscratch, bytes };
    struct dy_gemm_desc e = *d;
    e.b = (dy_buf){ &scratch, 0 };
    e.b_dtype = wt;
    e.ldb = d->k;
    e.bias = (dy_buf){ NULL, 0 };
    memset(&e.bq, 0, sizeof e.bq);
    st = dy_cuda_gemm(c, &e);
    return st == DY_OK ? add_bias(c, d) : st;
}

#if DY_GPU_BLAS
/* amax[0] = max|A| as float bits (non-negative floats order as integers);
 * the grid is a few blocks per SM, so few atomics meet on the one word */
__global__ void amax_kernel(const float *a, int lda, int m, int k, unsigned *amax)
{
    float v = 0.0f;
    size_t total = (size_t)m * k;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x)
        v = fmaxf(v, fabsf(a[(idx / k) * lda + idx % k]));
    for (int o = DY_WARP / 2; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    if (threadIdx.x % DY_WARP == 0)
        atomicMax(amax, __float_as_uint(v));
}

/* out [m, k] = E4M3(A / scale), scale = max|A| / 448 (1 when A is all zero
 * or not finite), which goes to *scale_out for cuBLASLt */
__global__ void quantize_a_kernel(const float *a, int lda, int m, int k, const float *amax_in, float *scale_out,
                                  unsigned char *out)
{
    float amax = *amax_in;
    float scale = amax > 0.0f && amax <= 3.0e38f ? amax / 448.0f : 1.0f, inv = 1.0f / scale;
    if (blockIdx.x == 0 && threadIdx.x == 0)
        *scale_out = scale;
    size_t total = (size_t)m * k;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x)
        out[idx] = dy_cuda_f32_to_fp8(a[(idx / k) * lda + idx % k] * inv);
}

static int lt_fail(struct cuda_ctx *c, cublasStatus_t s, const char *what)
{
    snprintf(c->err, sizeof c->err, "%s: %s", what, cublasGetStatusString(s));
    return s == CUBLAS_STATUS_ALLOC_FAILED ? DY_E_NOMEM : DY_E_DEVICE;
}

static bool fp8_units(struct cuda_ctx *c)
{
    if (!c->fp8_units) {
        int major = 0, minor = 0;
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, c->device);
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, c->device);
        c->fp8_units = major * 10 + minor >= 89 ? 1 : -1;
    }
    return c->fp8_units > 0;
}

/* out [m, n] (f32, ld ldo) = beta * out + (a_scale * a8) . (b_scale * B)^T
 * through cublasLtMatmul; DY_E_UNSUPPORTED when no algorithm it offers
 * runs the shape. */
static int lt_fp8(struct cuda_ctx *c, const struct dy_gemm_desc *d, const unsigned char *b, const void *b_scale,
                  const unsigned char *a8, const void *a_scale, float *out, int ldo, float beta)
{
    struct dy_cuda_lt l;
    cublasLtMatmulHeuristicResult_t algos[4];
    int found = 0, st = DY_E_UNSUPPORTED;
    size_t ws = c->lt_workspace_size;
    cublasStatus_t s = dy_cuda_lt_begin(c, &l, CUDA_R_8F_E4M3, d->k, CUDA_R_8F_E4M3, d->k, CUDA_R_32F, ldo, d->m,
                                        d->n, d->k);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulDescSetAttribute(l.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &b_scale, sizeof b_scale);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulDescSetAttribute(l.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &a_scale, sizeof a_scale);
    float alpha = 1.0f;
    struct dy_cuda_fp8_algo *cached = NULL;
    int used = c->fp8_algos_added < DY_CUDA_FP8_ALGOS ? c->fp8_algos_added : DY_CUDA_FP8_ALGOS;
    for (int i = 0; i < used; i++) {
        struct dy_cuda_fp8_algo *f = &c->fp8_algos[i];
        if (f->m == d->m && f->n == d->n && f->k == d->k && f->ld == ldo)
            cached = f;
    }
    if (s == CUBLAS_STATUS_SUCCESS && cached &&
        cublasLtMatmul(c->lt, l.op, &alpha, b, l.lb, a8, l.la, &beta, out, l.lc, out, l.lc, &cached->algo,
                       c->lt_workspace, ws, c->stream) == CUBLAS_STATUS_SUCCESS)
        st = DY_OK;
    if (s == CUBLAS_STATUS_SUCCESS && st != DY_OK &&
        cublasLtMatmulAlgoGetHeuristic(c->lt, l.op, l.lb, l.la, l.lc, l.lc, l.pref, 4, algos, &found) !=
            CUBLAS_STATUS_SUCCESS)
        found = 0;
    if (s != CUBLAS_STATUS_SUCCESS)
        st = lt_fail(c, s, "cublasLt (fp8 setup)");
    else if (st != DY_OK)
        snprintf(c->err, sizeof c->err, "cublasLt (fp8): no algorithm for m %d n %d k %d ld %d", d->m, d->n, d->k, ldo);
    for (int i = 0; i < found && st == DY_E_UNSUPPORTED; i++) {
        if (algos[i].state != CUBLAS_STATUS_SUCCESS || algos[i].workspaceSize > ws)
            continue;
        s = cublasLtMatmul(c->lt, l.op, &alpha, b, l.lb, a8, l.la, &beta, out, l.lc, out, l.lc, &algos[i].algo,
                           c->lt_workspace, ws, c->stream);
        if (s == CUBLAS_STATUS_SUCCESS) {
            st = DY_OK;
            if (!cached) /* the oldest entry goes once all are used */
                cached = &c->fp8_algos[c->fp8_algos_added++ % DY_CUDA_FP8_ALGOS];
            cached->m = d->m;
            cached->n = d->n;
            cached->k = d->k;
            cached->ld = ldo;
            cached->algo = algos[i].algo;
        } else if (s != CUBLAS_STATUS_NOT_SUPPORTED) {
            st = lt_fail(c, s, "cublasLtMatmul (fp8)");
        } else {
            snprintf(c->err, sizeof c->err, "cublasLtMatmul (fp8): algorithm %d of %d not supported (ld %d)", i + 1,
                     found, ldo);
        }
    }
    dy_cuda_lt_end(&l);
    return st;
}

/* C = beta * C + D (+ bias): the product computed apart */
__global__ void fp8_epilogue_kernel(float *c, int ldc, const float *d, int m, int n, float beta, const void *bias,
                                    enum dy_dtype bt)
{
    size_t total = (size_t)m * n;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        float *out = c + (idx / n) * ldc + idx % n;
        *out = (beta != 0.0f ? beta * *out : 0.0f) + d[idx] + (bias ? dy_load_f32(bias, bt, idx % n) : 0.0f);
    }
}

int dy_cuda_lt_ready(struct cuda_ctx *c)
{
    if (!c->lt) {
        cublasStatus_t s = cublasLtCreate(&c->lt);
        if (s != CUBLAS_STATUS_SUCCESS)
            return lt_fail(c, s, "cublasLtCreate");
    }
    return dy_cuda_reserve(c, &c->lt_workspace, &c->lt_workspace_size, LT_WORKSPACE);
}

cublasStatus_t dy_cuda_lt_begin(struct cuda_ctx *c, struct dy_cuda_lt *l, cudaDataType_t bt, int ldb,
                                cudaDataType_t at, int lda, cudaDataType_t ct, int ldc, int m, int n, int k)
{
    cublasOperation_t trans = CUBLAS_OP_T, none = CUBLAS_OP_N;
    size_t ws = c->lt_workspace_size;
    memset(l, 0, sizeof *l);
    cublasStatus_t s = cublasLtMatmulDescCreate(&l->op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulDescSetAttribute(l->op, CUBLASLT_MATMUL_DESC_TRANSA, &trans, sizeof trans);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulDescSetAttribute(l->op, CUBLASLT_MATMUL_DESC_TRANSB, &none, sizeof none);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatrixLayoutCreate(&l->lb, bt, k, n, ldb);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatrixLayoutCreate(&l->la, at, k, m, lda);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatrixLayoutCreate(&l->lc, ct, n, m, ldc);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulPreferenceCreate(&l->pref);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulPreferenceSetAttribute(l->pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    return s;
}

void dy_cuda_lt_end(struct dy_cuda_lt *l)
{
    cublasLtMatmulPreferenceDestroy(l->pref);
    cublasLtMatrixLayoutDestroy(l->lc);
    cublasLtMatrixLayoutDestroy(l->la);
    cublasLtMatrixLayoutDestroy(l->lb);
    cublasLtMatmulDescDestroy(l->op);
}

/* Scales live 256 bytes apart in fp8_scalars: max|A| bits, A's scale, B's. */
#define FP8_SCALARS 3
#define FP8_SCALAR_STRIDE 64

/* DY_E_UNSUPPORTED where FP8 does not run (no FP8 units, a layout or shape
 * cuBLASLt declines): the caller takes the bf16 path. */
static int gemm_fp8(struct cuda_ctx *c, const struct dy_gemm_desc *d, const struct qmat *w)
{
    if (!fp8_units(c) || d->k % 16 || !aligned(w->q, 16))
        return DY_E_UNSUPPORTED;
    int st = dy_cuda_lt_ready(c);
    if (st == DY_OK)
        st = dy_cuda_reserve(c, &c->fp8_scalars, &c->fp8_scalars_size,
                             FP8_SCALARS * FP8_SCALAR_STRIDE * sizeof(float));
    if (st == DY_OK)
        st = dy_cuda_reserve(c, &c->scratch, &c->scratch_size, (size_t)d->m * d->k);
    if (st != DY_OK)
        return st;
    float *amax = (float *)c->fp8_scalars, *a_scale = amax + FP8_SCALAR_STRIDE, *b_scale = a_scale + FP8_SCALAR_STRIDE;
    const float *a = (const float *)dy_cuda_ptr(d->a);
    unsigned char *a8 = (unsigned char *)c->scratch;
    size_t total = (size_t)d->m * d->k;
    /* B's scale beside A's, both aligned as cuBLASLt's own buffers are */
    cudaError_t e = cudaMemcpyAsync(b_scale, w->scale, sizeof(float), cudaMemcpyDeviceToDevice, c->stream);
    if (e == cudaSuccess)
        e = cudaMemsetAsync(amax, 0, sizeof(float), c->stream);
    if (e != cudaSuccess)
        return dy_cuda_fail(c, e, "gemm fp8 (scales)");
    unsigned amax_blocks = grid_for(total), few = (unsigned)c->sm_count * 4;
    amax_kernel<<<few && amax_blocks > few ? few : amax_blocks, THREADS, 0, c->stream>>>(a, d->lda, d->m, d->k,
                                                                                       (unsigned *)amax);
    if ((st = dy_cuda_check_launch(c, "gemm fp8 (max|A|)")) != DY_OK)
        return st;
    quantize_a_kernel<<<grid_for(total), THREADS, 0, c->stream>>>(a, d->lda, d->m, d->k, amax, a_scale, a8);
    if ((st = dy_cuda_check_launch(c, "gemm fp8 (A to E4M3)")) != DY_OK)
        return st;
    float *cp = (float *)dy_cuda_ptr(d->c);
    st = lt_fp8(c, d, w->q, b_scale, a8, a_scale, cp, d->ldc, d->beta);
    if (st == DY_OK)
        return add_bias(c, d);
    if (st != DY_E_UNSUPPORTED)
        return st;
    /* the product into a scratch of its own, then beta and the bias */
    st = dy_cuda_reserve(c, &c->wscratch, &c->wscratch_size, (size_t)d->m * d->n * sizeof(float));
    if (st == DY_OK)
        st = lt_fp8(c, d, w->q, b_scale, a8, a_scale, (float *)c->wscratch, d->n, 0.0f);
    if (st != DY_OK)
        return st;
    fp8_epilogue_kernel<<<grid_for((size_t)d->m * d->n), THREADS, 0, c->stream>>>(
        cp, d->ldc, (const float *)c->wscratch, d->m, d->n, d->beta, d->bias.h ? dy_cuda_ptr(d->bias) : NULL,
        d->bq.bias_dtype);
    return dy_cuda_check_launch(c, "gemm fp8 (epilogue)");
}
#endif

struct dy_qgemv_args dy_cuda_gemv_args(const struct dy_gemm_desc *d)
{
    struct dy_qgemv_args g = {};
    bool quant = dy_dtype_quantized(d->b_dtype);
    struct qmat w = quant ? qmat_of(d->b, d->b_dtype, &d->bq) : qmat{};
    g.a = (const float *)dy_cuda_ptr(d->a);
    g.b = quant ? w.q : (const unsigned char *)dy_cuda_ptr(d->b);
    g.scale = w.scale;
    g.zero = w.zero;
    g.c = (float *)dy_cuda_ptr(d->c);
    g.bias = d->bias.h ? dy_cuda_ptr(d->bias) : NULL;
    g.bias_dtype = quant ? d->bq.bias_dtype : d->b_dtype;
    g.rows = d->m;
    g.experts = 1;
    g.n = d->n;
    g.k = d->k;
    g.group = d->bq.group;
    g.lda = d->lda;
    g.ldc = d->ldc;
    g.beta = d->beta;
    g.early = d->b_settled;
    g.swiglu_half = d->act == DY_ACT_SWIGLU ? d->n / 2 : 0;
    if (d->act == DY_ACT_ROPE) {
        g.rope_cols = d->rope.heads * d->rope.head_dim;
        g.rope_half = d->rope.head_dim / 2;
        g.rope_pos = (const int32_t *)dy_cuda_ptr(d->rope.positions);
        g.rope_freq = (const float *)dy_cuda_ptr(d->rope.inv_freq);
    }
    if (d->norm.x.h) { /* A comes from x, normalised as it is read */
        g.a = (const float *)dy_cuda_ptr(d->norm.x);
        g.lda = d->norm.x_stride;
        g.norm_w = dy_cuda_ptr(d->norm.weight);
        g.norm_dtype = d->norm.weight_dtype;
        g.norm_eps = d->norm.eps;
    }
    const struct dy_gemm_append *ap = &d->append;
    if (ap->k_cache.h) {
        g.kv_slots = (const int32_t *)dy_cuda_ptr(ap->slots);
        g.k_cache = dy_cuda_ptr(ap->k_cache);
        g.v_cache = dy_cuda_ptr(ap->v_cache);
        g.kv_k = ap->k_col;
        g.kv_v = ap->v_col;
        g.kv_cols = ap->kv_heads * ap->head_dim;
        g.cache_dtype = ap->cache_dtype;
    }
    return g;
}

int dy_cuda_gemm_quant(struct cuda_ctx *c, const struct dy_gemm_desc *d)
{
    enum dy_dtype bias_t = d->bq.bias_dtype;
    bool bias_ok = !d->bias.h || bias_t == DY_F32 || bias_t == DY_F16 || bias_t == DY_BF16;
    if (d->a_dtype != DY_F32 || d->c_dtype != DY_F32 || d->ldb != d->k || !bias_ok ||
        !quant_layout_ok(d->b_dtype, d->k, d->bq.group)) {
        snprintf(c->err, sizeof c->err, "gemm with quantized B: f32 A and C, ldb == k, int4 groups dividing k");
        return DY_E_UNSUPPORTED;
    }
    struct qmat w = qmat_of(d->b, d->b_dtype, &d->bq);
    if (d->m <= 8) {
        struct dy_qgemv_args g = dy_cuda_gemv_args(d);
        int st = dy_cuda_qgemv(c, &g, d->b_dtype);
        return st == DY_E_UNSUPPORTED ? gemm_dequantized(c, d, &w, DY_F32) : st;
    }
#if DY_GPU_BLAS
    const char *fp8 = getenv("DYNO_CUDA_FP8_GEMM");
    if (d->b_dtype == DY_FP8 && !(fp8 && !strcmp(fp8, "0"))) {
        int st = gemm_fp8(c, d, &w);
        if (st != DY_E_UNSUPPORTED || (fp8 && !strcmp(fp8, "require")))
            return st;
    }
#endif
    return gemm_dequantized(c, d, &w, DY_BF16);
}

/* ---- gemm_grouped ---- */
int dy_cuda_gemm_grouped_quant(struct cuda_ctx *c, const struct dy_gemm_grouped_desc *d)
{
    if (d->b_expert_stride != (size_t)d->n * d->k || !quant_layout_ok(d->b_dtype, d->k, d->bq.group)) {
        snprintf(c->err, sizeof c->err, "gemm_grouped with quantized B: experts n x k apart, int4 groups dividing k");
        return DY_E_UNSUPPORTED;
    }
    if (d->rows == 0)
        return DY_OK;
    struct qmat w = qmat_of(d->b, d->b_dtype, &d->bq);
    bool decode = d->rows <= 4 * d->experts;
    if (decode) {
        struct dy_qgemv_args g = {};
        g.a = (const float *)dy_cuda_ptr(d->a);
        g.a_rows = d->a_rows.h ? (const int32_t *)dy_cuda_ptr(d->a_rows) : NULL;
        g.b = w.q;
        g.scale = w.scale;
        g.zero = w.zero;
        g.c = (float *)dy_cuda_ptr(d->c);
        g.offsets = (const int32_t *)dy_cuda_ptr(d->offsets);
        g.rows = d->rows;
        g.experts = d->experts;
        g.n = d->n;
        g.k = d->k;
        g.group = d->bq.group;
        g.a_row_div = d->a_row_div;
        g.lda = d->lda;
        g.ldc = d->ldc;
        g.expert_bytes = dy_dtype_bytes(d->b_dtype, d->b_expert_stride);
        g.expert_scales = dy_quant_scales(d->b_dtype, d->n, d->k, d->bq.group);
        int st = dy_cuda_qgemv(c, &g, d->b_dtype);
        if (st != DY_E_UNSUPPORTED)
            return st;
    }
    /* every expert as one [experts * n, k] matrix: int8 and int4 scales
     * run on from expert to expert; fp8 has one per expert (n rows) */
    enum dy_dtype wt = decode ? DY_F32 : DY_BF16;
    int rows = d->experts * d->n;
    size_t bytes = (size_t)rows * d->k * dy_dtype_size(wt);
    int st = dy_cuda_reserve(c, &c->wscratch, &c->wscratch_size, bytes);
    if (st == DY_OK)
        st = dequantize(c, &w, rows, d->k, d->n, c->wscratch, d->k, wt);
    if (st != DY_OK)
        return st;
    struct dy_bufh scratch = { c->wscratch, bytes };
    struct dy_gemm_grouped_desc e = *d;
    e.b = (dy_buf){ &scratch, 0 };
    e.b_dtype = wt;
    memset(&e.bq, 0, sizeof e.bq);
    return dy_cuda_gemm_grouped(c, &e);
}

void dy_cuda_quant_release(struct cuda_ctx *c)
{
    cudaFree(c->wscratch);
    cudaFree(c->fp8_scalars);
    cudaFree(c->lt_workspace);
#if DY_GPU_BLAS
    if (c->lt)
        cublasLtDestroy(c->lt);
#endif
}
