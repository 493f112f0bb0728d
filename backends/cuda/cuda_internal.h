/* The CUDA backend's shared declarations (host side); the HIP build
 * compiles the same sources through gpu_compat.h. */
#ifndef DY_CUDA_INTERNAL_H
#define DY_CUDA_INTERNAL_H

#include <stdio.h>

#include "gpu_compat.h"

#include "../backend.h"

struct cuda_ctx {
    int device;
    cudaStream_t stream;
#if DY_GPU_BLAS
    cublasHandle_t blas;
#endif
    /* pinned staging ring for host-to-device writes, so small per-step
     * writes do not stall the host behind the queue */
    char *staging;
    size_t staging_size, staging_used;
    /* scratch for GEMM inputs converted to the weights' dtype */
    void *scratch;
    size_t scratch_size;
    /* split-context partial results of attention_decode */
    float *partials;
    size_t partials_size;
    /* per-chunk maxima of argmax */
    void *argmax_scratch;
    size_t argmax_scratch_size;
    /* moe_sort's per-tile expert counts */
    void *sort_scratch;
    size_t sort_scratch_size;
    int sm_count;
    int smem_per_block; /* bytes of shared memory a block may have (opted in) */
    char err[512];
};

static inline void *dy_cuda_ptr(dy_buf b)
{
    return (char *)b.h->impl + b.off;
}

/* Records a CUDA runtime failure in ctx->err; returns the dyno status. */
int dy_cuda_fail(struct cuda_ctx *c, cudaError_t e, const char *what);
/* Checks the last launch. */
int dy_cuda_check_launch(struct cuda_ctx *c, const char *what);
/* Grows a device scratch buffer to at least `bytes`. */
int dy_cuda_reserve(struct cuda_ctx *c, void **buf, size_t *size, size_t bytes);

int dy_cuda_fill_random(void *ctx, const struct dy_fill_random_desc *d);
int dy_cuda_gemm(void *ctx, const struct dy_gemm_desc *d);
int dy_cuda_norm(void *ctx, const struct dy_norm_desc *d);
int dy_cuda_rope(void *ctx, const struct dy_rope_desc *d);
int dy_cuda_eltwise(void *ctx, const struct dy_eltwise_desc *d);
int dy_cuda_gather_rows(void *ctx, const struct dy_gather_rows_desc *d);
int dy_cuda_kv_append(void *ctx, const struct dy_kv_append_desc *d);
int dy_cuda_attention_prefill(void *ctx, const struct dy_attention_prefill_desc *d);
int dy_cuda_attention_decode(void *ctx, const struct dy_attention_decode_desc *d);
int dy_cuda_argmax(void *ctx, const struct dy_argmax_desc *d);
int dy_cuda_convert(void *ctx, const struct dy_convert_desc *d);
int dy_cuda_softmax_topk(void *ctx, const struct dy_softmax_topk_desc *d);
int dy_cuda_moe_sort(void *ctx, const struct dy_moe_sort_desc *d);
int dy_cuda_gemm_grouped(void *ctx, const struct dy_gemm_grouped_desc *d);
int dy_cuda_scatter_add_rows(void *ctx, const struct dy_scatter_add_rows_desc *d);
int dy_cuda_kv_block_scores(void *ctx, const struct dy_kv_block_scores_desc *d);
/* The tensor-core prefill path; DY_E_UNSUPPORTED when the descriptor does
 * not allow it (the caller then takes the exact kernel). */
int dy_cuda_flash_prefill(struct cuda_ctx *c, const struct dy_attention_prefill_desc *d);
/* Converts count elements on the context's stream (used by gemm too). */
int dy_cuda_convert_raw(struct cuda_ctx *c, const void *src, enum dy_dtype st, void *dst,
                        enum dy_dtype dt, size_t count);

#endif
