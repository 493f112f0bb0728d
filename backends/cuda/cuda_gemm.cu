/* GEMM on CUDA: C[m,n] = beta*C + A[m,k] . B[n,k]^T (+bias).
 *
 * Decode (m <= 8): our own kernels read each weight once with 16-byte loads,
 * A in f32 as given: bandwidth bound. bf16/f16 rows go to the streaming
 * GEMV of the quantized formats (cuda_qgemv.cu: eight columns per block,
 * eight loads in flight per lane), anything else to one warp per output
 * column here.
 * Otherwise cuBLAS. With f16/bf16 weights the tensor cores take operands of
 * one type, so A is rounded to the weights' dtype first (backend.h allows
 * this); accumulation is f32. C in B's f16/bf16 (reduced-precision
 * activations) always takes this path, rounded once by cuBLASLt's epilogue.
 * Builds without a vendor BLAS (HIP on Debian; nvcc with -DDY_GPU_BLAS=0 to
 * check that path on an NVIDIA card) take a shared-memory tiled kernel
 * instead, A read in its own dtype. Quantized B: cuda_quant_gemm.cu. */
#include <string.h>

#include "cuda_internal.h"
#include "cuda_tile.h"
#include "cuda_quant.h"

#define GEMV_WARPS 8
#define GEMV_MAX_M 8

__device__ __forceinline__ void load8(const void *b, enum dy_dtype t, size_t i, float *w)
{
    if (t == DY_F32)
        dy_cuda_load8<DY_F32>(b, i, w);
    else if (t == DY_BF16)
        dy_cuda_load8<DY_BF16>(b, i, w);
    else
        dy_cuda_load8<DY_F16>(b, i, w);
}

template <int M>
__global__ void __launch_bounds__(GEMV_WARPS * DY_WARP)
gemv_kernel(const float *a, int lda, const void *b, int ldb, enum dy_dtype bt, const void *bias,
            float *c, int ldc, int n, int k, float beta, bool prefetch)
{
    int warp = threadIdx.x / DY_WARP, lane = threadIdx.x % DY_WARP;
    int col = blockIdx.x * GEMV_WARPS + warp;
    size_t esize = bt == DY_F32 ? 4 : 2;
    if (prefetch && lane == 0 && col < n)
        dy_prefetch_weights((const char *)b + (size_t)col * ldb * esize, k * esize,
                            DY_PREFETCH_BYTES / GEMV_WARPS);
    DY_GRID_ENTER();
    if (col >= n)
        return;
    float acc[M];
#pragma unroll
    for (int r = 0; r < M; r++)
        acc[r] = 0.0f;
    size_t brow = (size_t)col * ldb;
#pragma unroll 4
    for (int k0 = lane * 8; k0 < k; k0 += DY_WARP * 8) {
        float w[8];
        load8(b, bt, brow + k0, w);
#pragma unroll
        for (int r = 0; r < M; r++) {
            const float *ar = a + (size_t)r * lda + k0;
            float4 lo = __ldg((const float4 *)ar), hi = __ldg((const float4 *)(ar + 4));
            acc[r] += w[0] * lo.x + w[1] * lo.y + w[2] * lo.z + w[3] * lo.w +
                      w[4] * hi.x + w[5] * hi.y + w[6] * hi.z + w[7] * hi.w;
        }
    }
#pragma unroll
    for (int r = 0; r < M; r++)
        for (int o = DY_WARP / 2; o > 0; o >>= 1)
            acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], o);
    if (lane == 0) {
        float add = bias ? dy_load_f32(bias, bt, col) : 0.0f;
#pragma unroll
        for (int r = 0; r < M; r++) {
            float *out = c + (size_t)r * ldc + col;
            *out = (beta != 0.0f ? beta * *out : 0.0f) + acc[r] + add;
        }
    }
}

typedef void (*gemv_fn)(const float *, int, const void *, int, enum dy_dtype, const void *, float *,
                        int, int, int, float, bool);
static const gemv_fn gemv_kernels[GEMV_MAX_M + 1] = {
    NULL, gemv_kernel<1>, gemv_kernel<2>, gemv_kernel<3>, gemv_kernel<4>,
    gemv_kernel<5>, gemv_kernel<6>, gemv_kernel<7>, gemv_kernel<8>,
};

static bool gemv_fits(const struct dy_gemm_desc *d, const void *a, const void *b)
{
    size_t bsize = dy_dtype_size(d->b_dtype);
    return d->m <= GEMV_MAX_M && d->a_dtype == DY_F32 && d->c_dtype == DY_F32 &&
           d->b_dtype != DY_I32 && d->k % 8 == 0 && dy_cuda_aligned16(a) && dy_cuda_aligned16(b) &&
           (d->lda * 4) % 16 == 0 && (d->ldb * bsize) % 16 == 0;
}

#if DY_GPU_BLAS
#include <cuda_bf16.h>

/* c[i, :] += bias for rows of a 2-D grid (y strides over the rows) */
__global__ void add_bias_kernel(void *c, enum dy_dtype ct, int ldc, int m, int n, const void *bias,
                                enum dy_dtype bt)
{
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= n)
        return;
    float add = dy_load_f32(bias, bt, j);
    for (int i = blockIdx.y; i < m; i += gridDim.y) {
        size_t at = (size_t)i * ldc + j;
        dy_store_f32(c, ct, at, dy_load_f32(c, ct, at) + add);
    }
}

__global__ void bias_f32_kernel(const void *bias, enum dy_dtype bt, int n, float *out)
{
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j < n)
        out[j] = dy_load_f32(bias, bt, j);
}

/* A[m, k] with leading dimension lda into a compact [m, k] of dtype t. */
__global__ void pack_a_kernel(const float *a, int lda, int m, int k, void *out, enum dy_dtype t)
{
    size_t total = (size_t)m * k;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x)
        dy_store_f32(out, t, idx, a[(idx / k) * lda + idx % k]);
}

/* The same with eight elements a thread (k % 8 == 0, 16-byte rows): two
 * float4 loads, one 16-byte store; y strides over the rows. */
template <bool BF16>
__global__ void pack_a8_kernel(const float *a, int lda, int m, int k, uint16_t *out)
{
    int c = (blockIdx.x * blockDim.x + threadIdx.x) * 8;
    if (c >= k)
        return;
    for (int i = blockIdx.y; i < m; i += gridDim.y) {
        const float4 *src = (const float4 *)(a + (size_t)i * lda + c);
        float4 lo = src[0], hi = src[1];
        float x[8] = { lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w };
        uint4 v;
        uint32_t *w = (uint32_t *)&v;
#pragma unroll
        for (int e = 0; e < 4; e++) {
            if (BF16) {
                __nv_bfloat162 p = __floats2bfloat162_rn(x[2 * e], x[2 * e + 1]);
                w[e] = *(uint32_t *)&p;
            } else {
                __half2 p = __floats2half2_rn(x[2 * e], x[2 * e + 1]);
                w[e] = *(uint32_t *)&p;
            }
        }
        *(uint4 *)(out + (size_t)i * k + c) = v;
    }
}

static cudaDataType_t cuda_type(enum dy_dtype t)
{
    return t == DY_F16 ? CUDA_R_16F : t == DY_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

static unsigned grid_for(size_t n)
{
    size_t b = (n + 255) / 256;
    return (unsigned)(b < 65535u * 16 ? b : 65535u * 16);
}

/* blocks of 256 over n columns by up to 65,535 rows */
static dim3 grid_2d(int n, int m)
{
    return dim3((unsigned)((n + 255) / 256), (unsigned)(m < 65535 ? m : 65535));
}

static int pack_a(struct cuda_ctx *c, const struct dy_gemm_desc *d, const void *a, void *out)
{
    bool wide = d->k % 8 == 0 && d->lda % 4 == 0 && dy_cuda_aligned16(a);
    if (!wide)
        pack_a_kernel<<<grid_for((size_t)d->m * d->k), 256, 0, c->stream>>>((const float *)a, d->lda, d->m,
                                                                           d->k, out, d->b_dtype);
    else if (d->b_dtype == DY_BF16)
        pack_a8_kernel<true><<<grid_2d(d->k / 8, d->m), 256, 0, c->stream>>>((const float *)a, d->lda, d->m,
                                                                           d->k, (uint16_t *)out);
    else
        pack_a8_kernel<false><<<grid_2d(d->k / 8, d->m), 256, 0, c->stream>>>((const float *)a, d->lda, d->m,
                                                                            d->k, (uint16_t *)out);
    return dy_cuda_check_launch(c, "gemm pack");
}

/* C = act(A B^T + beta C + bias) through cuBLASLt, the bias and the GELU
 * applied by its epilogue instead of passes of their own over C. The
 * epilogue's bias has C's type: f32 C takes the bias converted to f32, an
 * f16/bf16 C B's own. DY_E_UNSUPPORTED when cuBLASLt offers no algorithm. */
static int gemm_lt_bias(struct cuda_ctx *c, const struct dy_gemm_desc *d, const void *a_op, int lda,
                        const void *b, const void *bias_c, void *cp)
{
    int st = dy_cuda_lt_ready(c);
    if (st != DY_OK)
        return st;
    struct dy_cuda_lt l;
    cublasLtMatmulHeuristicResult_t algos[4];
    int found = 0;
    bool gelu = d->act == DY_ACT_GELU;
    cublasLtEpilogue_t epi = bias_c ? (gelu ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_BIAS)
                                    : CUBLASLT_EPILOGUE_GELU;
    size_t ws = c->lt_workspace_size;
    cudaDataType_t t = cuda_type(d->b_dtype);
    cublasStatus_t s = dy_cuda_lt_begin(c, &l, t, d->ldb, t, lda, cuda_type(d->c_dtype), d->ldc, d->m, d->n, d->k);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulDescSetAttribute(l.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi);
    if (s == CUBLAS_STATUS_SUCCESS && bias_c)
        s = cublasLtMatmulDescSetAttribute(l.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias_c, sizeof bias_c);
    if (s == CUBLAS_STATUS_SUCCESS &&
        cublasLtMatmulAlgoGetHeuristic(c->lt, l.op, l.lb, l.la, l.lc, l.lc, l.pref, 4, algos, &found) !=
            CUBLAS_STATUS_SUCCESS)
        found = 0;
    float alpha = 1.0f, beta = d->beta;
    st = DY_E_UNSUPPORTED;
    for (int i = 0; s == CUBLAS_STATUS_SUCCESS && i < found && st == DY_E_UNSUPPORTED; i++) {
        if (algos[i].state != CUBLAS_STATUS_SUCCESS || algos[i].workspaceSize > ws)
            continue;
        cublasStatus_t r = cublasLtMatmul(c->lt, l.op, &alpha, b, l.lb, a_op, l.la, &beta, cp, l.lc, cp, l.lc,
                                          &algos[i].algo, c->lt_workspace, ws, c->stream);
        if (r == CUBLAS_STATUS_SUCCESS)
            st = DY_OK;
    }
    dy_cuda_lt_end(&l);
    return st;
}

static int gemm_blas(struct cuda_ctx *c, const struct dy_gemm_desc *d, const void *a, const void *b,
                     const void *bias, void *cp)
{
    const void *a_op = a;
    int lda = d->lda, st;
    bool pack = d->a_dtype != d->b_dtype;
    /* scratch: A in B's dtype, then the bias in f32 for an f32 C */
    size_t a_bytes = pack ? ((size_t)d->m * d->k * 2 + 255) / 256 * 256 : 0;
    bool lt = (bias || d->act != DY_ACT_NONE) && d->b_dtype != DY_F32, bias32 = bias && lt && d->c_dtype == DY_F32;
    if ((st = dy_cuda_reserve(c, &c->scratch, &c->scratch_size, a_bytes + (bias32 ? (size_t)d->n * 4 : 0))))
        return st;
    if (pack) {
        if ((st = pack_a(c, d, a, c->scratch)) != DY_OK)
            return st;
        a_op = c->scratch;
        lda = d->k;
    }
    if (lt) {
        const void *bias_c = bias;
        if (bias32) {
            float *f = (float *)((char *)c->scratch + a_bytes);
            bias_f32_kernel<<<(d->n + 255) / 256, 256, 0, c->stream>>>(bias, d->b_dtype, d->n, f);
            if ((st = dy_cuda_check_launch(c, "gemm bias")) != DY_OK)
                return st;
            bias_c = f;
        }
        st = gemm_lt_bias(c, d, a_op, lda, b, bias_c, cp);
        if (st != DY_E_UNSUPPORTED || d->act != DY_ACT_NONE)
            return st; /* an activation without an algorithm: dy_gemm composes */
    }
    float alpha = 1.0f, beta = d->beta;
    /* row-major C = A B^T is column-major C^T = B A^T */
    cublasStatus_t s = cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, d->n, d->m, d->k, &alpha, b,
                                    cuda_type(d->b_dtype), d->ldb, a_op, cuda_type(d->b_dtype), lda,
                                    &beta, cp, cuda_type(d->c_dtype), d->ldc, CUBLAS_COMPUTE_32F,
                                    CUBLAS_GEMM_DEFAULT);
    if (s != CUBLAS_STATUS_SUCCESS) {
        snprintf(c->err, sizeof c->err, "cublasGemmEx: %s", cublasGetStatusString(s));
        return s == CUBLAS_STATUS_ALLOC_FAILED ? DY_E_NOMEM : DY_E_DEVICE;
    }
    if (bias) {
        add_bias_kernel<<<grid_2d(d->n, d->m), 256, 0, c->stream>>>(cp, d->c_dtype, d->ldc, d->m, d->n, bias,
                                                                    d->b_dtype);
        return dy_cuda_check_launch(c, "gemm bias");
    }
    return DY_OK;
}
#else
/* The portable GEMM: a block of 256 threads owns a TILE_M x TILE_N tile of C
 * and walks k in TILE_K slices (cuda_tile.h). */
__global__ void __launch_bounds__(TILE_THREADS)
gemm_tiled_kernel(const void *a, enum dy_dtype at, int lda, const void *b, enum dy_dtype bt, int ldb,
                  const void *bias, void *c, enum dy_dtype ct, int ldc, int m, int n, int k, float beta)
{
    __shared__ float as[TILE_K][TILE_M + 1], bs[TILE_K][TILE_N + 1];
    int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    int row0 = blockIdx.y * TILE_M, col0 = blockIdx.x * TILE_N;
    float acc[4][4] = {};
    for (int k0 = 0; k0 < k; k0 += TILE_K) {
        /* 64 x 16 elements of each operand, 4 per thread, rows along k */
        for (int idx = threadIdx.x; idx < TILE_M * TILE_K; idx += TILE_THREADS) {
            int r = idx / TILE_K, kk = idx % TILE_K;
            bool in_k = k0 + kk < k;
            as[kk][r] = in_k && row0 + r < m ? dy_load_f32(a, at, (size_t)(row0 + r) * lda + k0 + kk) : 0.0f;
            bs[kk][r] = in_k && col0 + r < n ? dy_load_f32(b, bt, (size_t)(col0 + r) * ldb + k0 + kk) : 0.0f;
        }
        __syncthreads();
        tile_accumulate(as, bs, acc, tx, ty);
        __syncthreads(); /* the slice is no longer read */
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int row = row0 + ty + 16 * i;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int col = col0 + tx + 16 * j;
            if (row < m && col < n) {
                size_t at = (size_t)row * ldc + col;
                float add = bias ? dy_load_f32(bias, bt, col) : 0.0f;
                dy_store_f32(c, ct, at, (beta != 0.0f ? beta * dy_load_f32(c, ct, at) : 0.0f) + acc[i][j] + add);
            }
        }
    }
}

static int gemm_tiled(struct cuda_ctx *c, const struct dy_gemm_desc *d, const void *a, const void *b,
                      const void *bias, void *cp)
{
    dim3 grid((unsigned)((d->n + TILE_N - 1) / TILE_N), (unsigned)((d->m + TILE_M - 1) / TILE_M));
    gemm_tiled_kernel<<<grid, TILE_THREADS, 0, c->stream>>>(a, d->a_dtype, d->lda, b, d->b_dtype, d->ldb,
                                                          bias, cp, d->c_dtype, d->ldc, d->m, d->n, d->k,
                                                          d->beta);
    return dy_cuda_check_launch(c, "gemm");
}
#endif

int dy_cuda_gemm(void *ctx, const struct dy_gemm_desc *d)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    /* GELU only in cuBLASLt's epilogue, on an f16/bf16 C (where rounding
     * hides its GELU's form); SwiGLU and RoPE only in the streaming GEMV (a
     * decode step's gate/up or q/k/v, f32 rows, bf16/f16/fp8/int8 weights:
     * it pairs the gate and up rows, or a head's rotated pairs, in each
     * block); elsewhere dy_gemm composes */
    if (d->act == DY_ACT_GELU &&
        (!DY_GPU_BLAS || !c->gelu_epilogue || (d->b_dtype != DY_F16 && d->b_dtype != DY_BF16) || d->c_dtype != d->b_dtype))
        return DY_E_UNSUPPORTED;
    /* a norm of A, a KV append: the streaming GEMV's, as the acts below;
     * dy_gemm composes them elsewhere. The norm beside SwiGLU only up to
     * 2^25 weights: on an H200 at batch 1 after 1,024 tokens it took
     * Llama-3.2-1B's gate/up (16,384 x 2,048) from 1.007 to 0.993 ms a
     * step, but Llama-3.1-8B's (28,672 x 4,096) from 4.28 to 4.36
     * (bench/README, twenty-fifth session) */
    const struct dy_gemm_append *ap = &d->append;
    bool norm = d->norm.x.h, append = ap->k_cache.h;
    bool short_swiglu = (long long)d->n * d->k <= (1LL << 25);
    unsigned want = append ? (unsigned)GEMM_PART_APPEND : 0u;
    if (norm) /* ~0: a longer SwiGLU only where every bit is set (-1) */
        want |= d->act == DY_ACT_ROPE     ? (unsigned)GEMM_PART_NORM_ROPE
                : d->act != DY_ACT_SWIGLU ? (unsigned)GEMM_PART_NORM
                : short_swiglu            ? (unsigned)GEMM_PART_NORM_SWIGLU
                                          : ~0u;
    if ((norm || append) &&
        ((c->gemm_parts & want) != want || d->act == DY_ACT_GELU || (norm && d->norm.x_dtype != DY_F32) ||
         (append && (d->act == DY_ACT_SWIGLU || !dy_cuda_is_cache_dtype(ap->cache_dtype) ||
                     ap->cache_dtype == DY_I8))))
        return DY_E_UNSUPPORTED;
    if (d->act == DY_ACT_SWIGLU || d->act == DY_ACT_ROPE || norm || append) {
        /* (the GEMV declines a head its blocks' column pairs do not tile) */
        bool on = d->act == DY_ACT_SWIGLU ? c->swiglu_gemv : d->act == DY_ACT_ROPE ? c->rope_gemv : true;
        if (!on || d->m > 8 || (!norm && d->a_dtype != DY_F32) || d->c_dtype != DY_F32 || d->ldb != d->k ||
            d->b_dtype == DY_I4 || d->b_dtype == DY_F32 || d->m <= 0 || d->n <= 0 || d->k <= 0)
            return DY_E_UNSUPPORTED;
        struct dy_qgemv_args g = dy_cuda_gemv_args(d);
        return dy_cuda_qgemv(c, &g, d->b_dtype);
    }
    if (dy_dtype_quantized(d->b_dtype) && d->m > 0 && d->n > 0 && d->k > 0)
        return dy_cuda_gemm_quant(c, d);
    bool a_ok = d->a_dtype == DY_F32 || d->a_dtype == d->b_dtype;
    bool c_ok = d->c_dtype == DY_F32 || (d->c_dtype == d->b_dtype && d->b_dtype != DY_F32);
    bool beta_ok = d->c_dtype == DY_F32 || d->beta == 0.0f || d->beta == 1.0f;
    if (d->m <= 0 || d->n <= 0 || d->k <= 0 || !c_ok || !beta_ok || !a_ok || d->b_dtype == DY_I32) {
        snprintf(c->err, sizeof c->err,
                 "gemm supports f32/f16/bf16 B, A in f32 or B's dtype, C in f32 or B's dtype");
        return d->m <= 0 || d->n <= 0 || d->k <= 0 ? DY_E_INVALID : DY_E_UNSUPPORTED;
    }
    const void *a = dy_cuda_ptr(d->a), *b = dy_cuda_ptr(d->b);
    const void *bias = d->bias.h ? dy_cuda_ptr(d->bias) : NULL;
    void *cp = dy_cuda_ptr(d->c);
    if (gemv_fits(d, a, b)) {
        /* the streaming GEMV of the quantized formats reads bf16/f16 rows
         * too, with more loads in flight per lane than the kernel here
         * (DYNO_CUDA_GEMV=warp keeps the one-warp-per-column kernel) */
        const char *pick = getenv("DYNO_CUDA_GEMV");
        if (d->b_dtype != DY_F32 && d->ldb == d->k && !(pick && !strcmp(pick, "warp"))) {
            struct dy_qgemv_args g = dy_cuda_gemv_args(d);
            int st = dy_cuda_qgemv(c, &g, d->b_dtype);
            if (st != DY_E_UNSUPPORTED)
                return st;
        }
        unsigned blocks = (unsigned)((d->n + GEMV_WARPS - 1) / GEMV_WARPS);
        dy_launch(c, gemv_kernels[d->m], blocks, GEMV_WARPS * DY_WARP, 0, a, d->lda, b, d->ldb, d->b_dtype, bias,
                  (float *)cp, d->ldc, d->n, d->k, d->beta, c->prefetch);
        return dy_cuda_check_launch(c, "gemv");
    }
#if DY_GPU_BLAS
    return gemm_blas(c, d, a, b, bias, cp);
#else
    return gemm_tiled(c, d, a, b, bias, cp);
#endif
}
