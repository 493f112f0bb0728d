/* The CUDA backend's shared declarations (host side); the HIP build
 * compiles the same sources through gpu_compat.h. */
#ifndef DY_CUDA_INTERNAL_H
#define DY_CUDA_INTERNAL_H

#include <stdio.h>
#include <stdlib.h>

#include "gpu_compat.h"

#include "../backend.h"

#if DY_GPU_BLAS
#define DY_CUDA_FP8_ALGOS 8
struct dy_cuda_fp8_algo {
    int m, n, k, ld;
    cublasLtMatmulAlgo_t algo;
};
#endif

/* cuda_ctx.gemm_parts: the norm before a plain GEMV, one with RoPE, one
 * with SwiGLU; the KV append */
enum { GEMM_PART_NORM = 1, GEMM_PART_NORM_ROPE = 2, GEMM_PART_NORM_SWIGLU = 4, GEMM_PART_APPEND = 8 };

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
    /* blocks of the router kernel done, counted by each block and reset to
     * 0 by the last (cuda_moe.cu; allocated and zeroed with the context) */
    unsigned *route_count;
    /* quantized weights (cuda_quant_gemm.cu): B dequantized for the
     * matrix units (bf16) or for shapes the GEMV does not take (f32); the
     * FP8 path's max|A| and A's scale, and cuBLASLt's workspace */
    void *wscratch;
    size_t wscratch_size;
    void *fp8_scalars;
    size_t fp8_scalars_size;
    void *lt_workspace;
    size_t lt_workspace_size;
    int fp8_units; /* FP8 tensor cores: 0 not asked yet, 1 yes, -1 no */
#if DY_GPU_BLAS
    cublasLtHandle_t lt; /* created on first use */
    /* cuBLASLt's FP8 algorithm for the last few shapes, so a prefill's
     * GEMMs do not ask its heuristic again each call */
    struct dy_cuda_fp8_algo fp8_algos[DY_CUDA_FP8_ALGOS];
    int fp8_algos_added;
#endif
    /* NVML for the energy counter (cuda_backend.cu): 0 not asked yet,
     * 1 open, -1 unavailable */
    int nvml_state;
    void *nvml_lib, *nvml_device, *nvml_energy;
    int sm_count;
    int smem_per_block; /* bytes of shared memory a block may have (opted in) */
    /* kernels of dy_launch start before their predecessor ends (Hopper's
     * programmatic dependent launch; DYNO_CUDA_PDL=0 turns it off) */
    bool pdl;
    /* decode GEMVs fetch their first weights into L2 before they wait for
     * the kernel before them (with pdl; DYNO_CUDA_PREFETCH=0 turns it off) */
    bool prefetch;
    /* bytes of a streaming-GEMV block's weights so fetched
     * (DYNO_CUDA_PREFETCH_BYTES; DY_PREFETCH_BYTES by default) */
    int prefetch_bytes;
    /* the streaming GEMV at one row of A loads each warp's first weights
     * into registers before it waits (with pdl; DYNO_CUDA_QGEMV_EARLY=0
     * turns it off) */
    bool qgemv_early;
    /* decode attention fetches the cache rows the append before it did not
     * write before it waits for the append (dy_attention_decode_desc's
     * fresh_tokens; with pdl, DYNO_CUDA_EARLY_KV=0 turns it off) */
    bool early_kv;
    /* fused activations, each with a switch to measure it against its
     * pass of its own: the GEMM's GELU in cuBLASLt's epilogue
     * (DYNO_CUDA_GELU_EPILOGUE=0), SwiGLU in the decode GEMV
     * (DYNO_CUDA_SWIGLU_GEMV=0) */
    bool gelu_epilogue, swiglu_gemv;
    bool norm_warp; /* 16-bit norms a warp a row (DYNO_CUDA_NORM_WARP=0: a block a row) */
    /* dy_rope_desc's q/k norms and KV append in the rotation's launch
     * (DYNO_CUDA_ROPE_FUSED=0: composed, four launches) */
    bool rope_fused;
    /* a decode token's post-attention norm and router GEMV in softmax_topk's
     * launch (dy_softmax_topk_desc.router; DYNO_CUDA_ROUTER_FUSED=0:
     * composed, three launches) */
    bool router_fused;
    /* dy_gemm_desc.norm and .append in the decode GEMV, a bit each
     * (GEMM_PART_*, above; DYNO_CUDA_GEMM_PARTS=0: composed, a norm before
     * and an append after) */
    unsigned gemm_parts;
    /* RoPE in the decode GEMV (DY_ACT_ROPE; DYNO_CUDA_ROPE_GEMV=0 turns
     * it off). H200, batch 1: Llama-3.1-8B after 1,024 tokens 4.555 ->
     * 4.505 ms a step, fp8 after 4,096 3.24 -> 3.165, Llama-3.2-1B 1.138
     * -> 1.112 */
    bool rope_gemv;
    /* a decode step's MoE ops in fewer launches, bits of
     * DYNO_CUDA_MOE_FUSE (default all; 0 turns them off): FUSE_TOPK_SORT
     * softmax_topk with the sort, FUSE_SWIGLU the gate/up grouped GEMV
     * with its SiLU-mul, FUSE_SCATTER the down one with the weighted sum
     * into the residual */
    unsigned fuse_moe;
    /* the down scatter kernel's shape: 0 by its grid, 1 or 2 forced
     * (DYNO_CUDA_SCATTER; cuda_moe_gemm.cu) */
    int scatter_variant;
    /* prefill attention on wgmma (cuda_flash_sm90.cu), compute capability
     * 9.0 only: 2 the warp-specialized kernel (TMA loads), 1 the one whose
     * consumers load with cp.async, 0 none; 3 the first with a block an
     * item instead of resident blocks walking items (DYNO_CUDA_FLASH_WGMMA) */
    int flash_wgmma;
    /* at most this many resident blocks walk the warp-specialized kernel's
     * items (DYNO_CUDA_FLASH_BLOCKS, for tests: few blocks make each walk
     * many items); 0: one an SM */
    int flash_blocks;
    char err[512];
    /* decode attention over bf16 caches on the tensor cores
     * (cuda_decode.cu; DYNO_CUDA_DECODE_MMA): 0 off, the default (the
     * CUDA-core kernel: as fast or faster at a decode batch, bench/README),
     * 1 on, a number WS on with W warps a block (2-4) and S stages of
     * 16-key tiles a warp */
    int decode_mma;
};

enum { FUSE_TOPK_SORT = 1, FUSE_SWIGLU = 2, FUSE_SCATTER = 4 };

/* silu(gate) * up, as every SwiGLU epilogue and dy_eltwise compute it */
static __device__ __forceinline__ float dy_silu_mul(float gate, float up)
{
    return gate / (1.0f + expf(-gate)) * up;
}

/* 8 elements from element i on, 16-byte aligned: f32 as two float4, f16 or
 * bf16 as one uint4 */
template <enum dy_dtype T> static __device__ __forceinline__ void dy_cuda_load8(const void *p, size_t i, float *f)
{
    if constexpr (T == DY_F32) {
        float4 lo = *(const float4 *)((const float *)p + i), hi = *(const float4 *)((const float *)p + i + 4);
        f[0] = lo.x, f[1] = lo.y, f[2] = lo.z, f[3] = lo.w, f[4] = hi.x, f[5] = hi.y, f[6] = hi.z, f[7] = hi.w;
    } else {
        uint4 raw = *(const uint4 *)((const uint16_t *)p + i);
        const uint16_t *h = (const uint16_t *)&raw;
#pragma unroll
        for (int e = 0; e < 8; e++)
            f[e] = T == DY_BF16 ? dy_bf16_to_f32(h[e]) : __half2float(*(const __half *)&h[e]);
    }
}

/* each of a GEMV's per-lane sums, summed over the warp's lanes */
template <int C, int M> static __device__ __forceinline__ void dy_warp_sum(float (&acc)[C][M])
{
#pragma unroll
    for (int c = 0; c < C; c++)
#pragma unroll
        for (int i = 0; i < M; i++)
            for (int o = DY_WARP / 2; o > 0; o >>= 1)
                acc[c][i] += __shfl_xor_sync(0xffffffffu, acc[c][i], o);
}

static inline void *dy_cuda_ptr(dy_buf b)
{
    return (char *)b.h->impl + b.off;
}

/* Launches kernel<<<grid, block, smem>>>(args) on the context's stream,
 * allowed to overlap the end of the kernel before it when c->pdl is set:
 * the kernel must then call DY_GRID_WAIT() before touching what earlier
 * work writes (gpu_compat.h). Errors surface through dy_cuda_check_launch. */
template <typename... Params, typename... Args>
static inline void dy_launch(struct cuda_ctx *c, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                             Args... args)
{
#if !DY_HIP
    if (c->pdl) {
        cudaLaunchAttribute attr[1];
        attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        attr[0].val.programmaticStreamSerializationAllowed = 1;
        cudaLaunchConfig_t cfg = {};
        cfg.gridDim = grid;
        cfg.blockDim = block;
        cfg.dynamicSmemBytes = smem;
        cfg.stream = c->stream;
        cfg.attrs = attr;
        cfg.numAttrs = 1;
        cudaLaunchKernelEx(&cfg, kernel, ((Params)args)...);
        return;
    }
#endif
    kernel<<<grid, block, smem, c->stream>>>(((Params)args)...);
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
int dy_cuda_dequantize(void *ctx, const struct dy_dequantize_desc *d);
/* gemm and gemm_grouped with fp8, int8 or int4 B (cuda_quant_gemm.cu) */
int dy_cuda_gemm_quant(struct cuda_ctx *c, const struct dy_gemm_desc *d);
int dy_cuda_gemm_grouped_quant(struct cuda_ctx *c, const struct dy_gemm_grouped_desc *d);
/* Frees what the quantized paths made for the context. */
void dy_cuda_quant_release(struct cuda_ctx *c);
/* Element-wise ops over at least this many tokens (prefill) take kernels
 * that walk rows; decode steps keep the flat kernels they were timed with. */
#define ROWS_MIN_TOKENS 64
#if DY_GPU_BLAS
/* cuBLASLt's handle and workspace, made on first use */
int dy_cuda_lt_ready(struct cuda_ctx *c);
/* The descriptors of one cuBLASLt call C[m, n] (ldc) = A[m, k] (lda) .
 * B[n, k]^T (ldb): cuBLASLt's A is our B ([k, n] column-major, transposed),
 * its B our A; f32 compute and scale; the preference holds the workspace
 * limit. dy_cuda_lt_begin returns the first status that failed (the caller
 * then sets its own attributes: epilogue, scales); dy_cuda_lt_end frees
 * whatever was made. */
struct dy_cuda_lt {
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t lb, la, lc;
    cublasLtMatmulPreference_t pref;
};
cublasStatus_t dy_cuda_lt_begin(struct cuda_ctx *c, struct dy_cuda_lt *l, cudaDataType_t bt, int ldb,
                                cudaDataType_t at, int lda, cudaDataType_t ct, int ldc, int m, int n, int k);
void dy_cuda_lt_end(struct dy_cuda_lt *l);
#endif

/* The dequantizing GEMV's operands (cuda_qgemv.cu): C[r, :] = A[a_row(r), :]
 * . w^T for up to 8 rows. Dense when offsets is NULL: one tile of `rows`
 * rows, C = beta * C + ... + bias[n] (bias_dtype). Grouped otherwise, as
 * gemm_grouped: expert e's bytes and scales (and zero points)
 * expert_bytes and expert_scales after expert e - 1's, no beta or bias. */
struct dy_qgemv_args {
    const float *a;
    const int32_t *a_rows;        /* NULL: row r of A */
    const unsigned char *b;
    const float *scale;
    const unsigned char *zero;    /* int4; NULL: 8 */
    float *c;
    const void *bias;
    const int32_t *offsets;
    int rows, experts, n, k, group, a_row_div, lda, ldc;
    enum dy_dtype bias_dtype;
    float beta;
    size_t expert_bytes, expert_scales;
    bool prefetch; /* dense calls: fetch the block's first weights before waiting */
    int prefetch_bytes; /* ... at most this many (qgemv_kernel) */
    /* dense calls at one row whose B is settled (dy_gemm_desc's
     * b_settled): a warp's first weights into registers before waiting */
    bool early;
    /* dense calls: 0, or n / 2 for DY_ACT_SWIGLU: a block's first half of
     * columns are gate rows j, its second the up rows n / 2 + j, and C's
     * column j gets silu(gate) * up */
    int swiglu_half;
    /* dense calls: 0, or for DY_ACT_ROPE the rotated columns (heads x
     * head_dim) and half a head: the first rope_cols / C blocks each take
     * C / 2 pairs of columns (j, j + rope_half) of one head and write them
     * rotated at the row's position, as dy_rope does */
    int rope_cols, rope_half;
    const int32_t *rope_pos;
    const float *rope_freq;
    /* dense calls (dy_gemm_desc.norm): A is RMSNorm(a) * norm_w. Each
     * block sums its rows' squares beside the dot and scales the sums */
    const void *norm_w;
    enum dy_dtype norm_dtype;
    float norm_eps;
    /* dense calls (dy_gemm_desc.append): C's columns kv_k .. kv_k + kv_cols
     * also into k_cache, kv_v .. into v_cache, at row r's slot kv_slots[r] */
    const int32_t *kv_slots;
    void *k_cache, *v_cache;
    int kv_k, kv_v, kv_cols;
    enum dy_dtype cache_dtype;
};
/* The GEMV's arguments for a dense gemm of at most 8 rows (plain bf16/f16
 * or quantized B) */
struct dy_qgemv_args dy_cuda_gemv_args(const struct dy_gemm_desc *d);
/* DY_E_UNSUPPORTED when the operands are not laid out for its 16-byte
 * loads (k, group, alignment) or there are more than 8 rows per tile. */
int dy_cuda_qgemv(struct cuda_ctx *c, const struct dy_qgemv_args *g, enum dy_dtype qt);
/* Dense int4 calls of one or two rows on the integer tensor cores
 * (cuda_qi4.cu); DY_E_UNSUPPORTED when shared memory or DYNO_CUDA_QI4=0
 * rules it out. */
int dy_cuda_qi4_small(struct cuda_ctx *c, const struct dy_qgemv_args *g);

/* "A,B" from the environment (tuning overrides of benchmarks and tests);
 * false when unset. */
static inline bool dy_cuda_tuning(const char *name, int *a, int *b)
{
    const char *v = getenv(name);
    return v && sscanf(v, "%d,%d", a, b) == 2;
}

/* Whether a pointer allows 16-byte vector accesses. */
static inline bool dy_cuda_aligned16(const void *p)
{
    return ((uintptr_t)p & 15u) == 0;
}

static inline int dy_cuda_clamp(long long x, int lo, int hi)
{
    return (int)(x < lo ? lo : x > hi ? hi : x);
}
/* The tensor-core prefill path; DY_E_UNSUPPORTED when the descriptor does
 * not allow it (the caller then takes the exact kernel). */
int dy_cuda_flash_prefill(struct cuda_ctx *c, const struct dy_attention_prefill_desc *d);
/* Its wgmma kernel for Hopper (cuda_flash_sm90.cu, CUDA only, absent when
 * nvcc had no sm_90a: DY_NO_SM90A), which dy_cuda_flash_prefill tries
 * first, after its own checks; DY_E_UNSUPPORTED likewise. */
int dy_cuda_flash_wgmma(struct cuda_ctx *c, const struct dy_attention_prefill_desc *d);
/* Converts count elements on the context's stream (used by gemm too). */
int dy_cuda_convert_raw(struct cuda_ctx *c, const void *src, enum dy_dtype st, void *dst,
                        enum dy_dtype dt, size_t count);

#endif
