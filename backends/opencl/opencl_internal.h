/* The OpenCL backend's shared internals: the context, the kernels built
 * into it, and the helpers its op files use. */
#ifndef DY_OPENCL_INTERNAL_H
#define DY_OPENCL_INTERNAL_H

#include <CL/cl.h>

#include "backends/backend.h"

/* Work-group size of every kernel that reduces over a work-group; the
 * kernels' WG (kernels/common.cl) is the same number. */
#define DY_OCL_WG 128

/* Every kernel of the .cl files, created once per context. */
#define DY_OCL_KERNELS(X)                                                      \
    X(fill_random) X(convert) X(eltwise) X(gather_rows) X(kv_append) X(rope)   \
    X(norm) X(argmax) X(argmax_merge) X(gemv) X(gemv1) X(gemm_tiled) X(gemm_bias_beta)        \
    X(rows_to_f32) X(attention_prefill) X(attention_decode)                    \
    X(attention_decode_combine) X(softmax_topk) X(moe_sort_small)              \
    X(moe_sort_count) X(moe_sort_scan) X(moe_sort_place) X(gemv_grouped)       \
    X(moe_tile_plan) X(gemm_grouped_tiled) X(scatter_add_rows)                 \
    X(kv_append_int8) X(kv_block_scores) X(dequantize) X(gemv_q) X(gemv_q1)    \
    X(gemv_grouped_q) X(gemv_old) X(gemv1_old) X(gemv1_gpu) X(gemv_q_old) X(gemv_q1_old)    \
    X(eltwise_span) X(rope_span) X(norm_span) X(kv_append_span)              \
    X(attention_decode_span) X(gemv_q_span) X(gemv_q1_span) X(attention_decode_gqa)

enum dy_ocl_kernel {
#define DY_OCL_KERNEL_ENUM(name) DY_OCL_K_##name,
    DY_OCL_KERNELS(DY_OCL_KERNEL_ENUM)
#undef DY_OCL_KERNEL_ENUM
    DY_OCL_KERNEL_COUNT
};

#define DY_OCL_STAGE_SLOTS 16
#define DY_OCL_STAGE_BYTES 65536

struct dy_ocl_ctx {
    cl_device_id device;
    cl_context context;
    cl_command_queue queue; /* in order, profiling on */
    cl_program program;
    cl_kernel kernels[DY_OCL_KERNEL_COUNT];
    uint64_t mem_total;     /* CL_DEVICE_GLOBAL_MEM_SIZE */
    uint64_t max_alloc;     /* CL_DEVICE_MAX_MEM_ALLOC_SIZE */
    uint64_t local_mem;     /* CL_DEVICE_LOCAL_MEM_SIZE */
    int compute_units;      /* CL_DEVICE_MAX_COMPUTE_UNITS */
    int gemv_lanes;         /* items per row of B in the GEMV: 1 on CPUs, 32 else */
    bool gemv_old;          /* the GEMV kernels before gemv_lanes (GPUs; DYNO_OCL_GEMV) */
    bool swiglu_gemv;       /* DY_ACT_SWIGLU in gemv_old (DYNO_OCL_SWIGLU_GEMV=0: composed) */
    bool gemv1_gpu;         /* one row of A in gemv1_gpu (with gemv_old; DYNO_OCL_GEMV1) */
    /* gemv1_gpu takes the norm, RoPE, KV append (DYNO_OCL_GEMV1_NORM, _ROPE, _APPEND=0: no) */
    bool gemv1_norm, gemv1_rope, gemv1_append;
    bool spans;             /* the span kernels (kernels/ops.cl; CPUs; DYNO_OCL_OPS) */
    bool gqa_decode;        /* attention_decode_gqa for grouped heads (DYNO_OCL_GQA_DECODE=0: off) */
    uint64_t allocated;     /* bytes in buffers of this context, scratch too */
    cl_mem scratch;         /* f32 weight panels for CLBlast, decode splits, MoE */
    size_t scratch_bytes;
    /* small buf_writes (a step's positions, slots, block tables) leave
     * from host copies here, without waiting for the queue to drain; a
     * slot is reused once its write has completed */
    struct dy_ocl_stage {
        void *host;
        cl_event done;
    } stage[DY_OCL_STAGE_SLOTS];
    unsigned stage_next;
    char err[512];
};

/* One kernel argument: a value and its size, or local memory of `size`
 * bytes when `value` is NULL (clSetKernelArg's convention). */
struct dy_ocl_arg {
    size_t size;
    const void *value;
};

#define DY_OCL_ARG(x) ((struct dy_ocl_arg){ sizeof(x), &(x) })
#define DY_OCL_LOCAL(bytes) ((struct dy_ocl_arg){ (bytes), NULL })
#define DY_OCL_ARGS(...)                                                       \
    (const struct dy_ocl_arg[]){ __VA_ARGS__ },                                \
        (cl_uint)(sizeof((struct dy_ocl_arg[]){ __VA_ARGS__ }) / sizeof(struct dy_ocl_arg))

/* The cl_mem of a view (NULL for a missing optional buffer, which kernels
 * see as a NULL pointer) and its byte offset as a kernel argument. */
static inline cl_mem dy_ocl_mem(dy_buf b)
{
    return b.h ? (cl_mem)b.h->impl : NULL;
}

static inline cl_ulong dy_ocl_off(dy_buf b)
{
    return (cl_ulong)b.off;
}

/* The plugin links nothing of dyno's, so not backend.h's dy_dtype_name. */
static inline const char *dy_ocl_dtype_name(enum dy_dtype t)
{
    static const char *const names[] = { "f32", "f16", "bf16", "i32", "fp8", "int8", "int4" };
    return (unsigned)t < sizeof names / sizeof names[0] ? names[t] : "unknown";
}

/* Records `call` failing with `code` in the context's error text and
 * returns the matching status. */
int dy_ocl_fail(struct dy_ocl_ctx *c, cl_int code, const char *call);
/* Records a message of our own and returns `status`. */
int dy_ocl_failf(struct dy_ocl_ctx *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
const char *dy_ocl_error_name(cl_int code);

/* Sets the arguments and enqueues kernel `k`. Global sizes are rounded up
 * to multiples of the local ones (the kernels check bounds); a zero global
 * size enqueues nothing. */
int dy_ocl_launch(struct dy_ocl_ctx *c, enum dy_ocl_kernel k, cl_uint dims, const size_t *global,
                  const size_t *local, const struct dy_ocl_arg *args, cl_uint nargs);

/* A scratch buffer of at least `bytes`, owned by the context; its content
 * is undefined. Grows on demand and counts toward the context's memory. */
int dy_ocl_scratch(struct dy_ocl_ctx *c, size_t bytes, cl_mem *out);

/* Whether gemm.cl's gemv1_gpu takes the call: one row of A, f32 on 16
 * bytes (the norm's x when there is one, its weight on 16 bytes too),
 * f16/bf16 rows of B on 16 bytes, k a multiple of 8; RoPE heads of a
 * multiple of 8; a KV cache that is not int8. It alone takes the norm,
 * RoPE and the KV append. */
static inline bool dy_ocl_gemv1_fits(const struct dy_ocl_ctx *c, const struct dy_gemm_desc *d)
{
    dy_buf a = d->norm.x.h ? d->norm.x : d->a;
    enum dy_dtype at = d->norm.x.h ? d->norm.x_dtype : d->a_dtype;
    bool b16 = d->b_dtype == DY_F16 || d->b_dtype == DY_BF16;
    const struct dy_gemm_norm *nm = &d->norm;
    bool norm_ok = !nm->x.h || (c->gemv1_norm && nm->weight.off % 16 == 0 &&
                                (nm->weight_dtype == DY_F32 || nm->weight_dtype == DY_F16 ||
                                 nm->weight_dtype == DY_BF16));
    bool append_ok = !d->append.k_cache.h || (c->gemv1_append && d->append.cache_dtype != DY_I8);
    return c->gemv1_gpu && d->m == 1 && at == DY_F32 && a.off % 16 == 0 && b16 && d->b.off % 16 == 0 &&
           d->ldb % 8 == 0 && d->k > 0 && d->k % 8 == 0 && d->act != DY_ACT_GELU && norm_ok && append_ok &&
           (d->act != DY_ACT_ROPE || (c->gemv1_rope && d->rope.head_dim % 8 == 0));
}

/* Called once the last context is destroyed, to drop cached programs. */
void dy_ocl_gemm_release_cache(void);

int dy_ocl_fill_random(void *ctx, const struct dy_fill_random_desc *d);
int dy_ocl_gemm(void *ctx, const struct dy_gemm_desc *d);
int dy_ocl_norm(void *ctx, const struct dy_norm_desc *d);
int dy_ocl_rope(void *ctx, const struct dy_rope_desc *d);
int dy_ocl_eltwise(void *ctx, const struct dy_eltwise_desc *d);
int dy_ocl_gather_rows(void *ctx, const struct dy_gather_rows_desc *d);
int dy_ocl_kv_append(void *ctx, const struct dy_kv_append_desc *d);
int dy_ocl_attention_prefill(void *ctx, const struct dy_attention_prefill_desc *d);
int dy_ocl_attention_decode(void *ctx, const struct dy_attention_decode_desc *d);
int dy_ocl_argmax(void *ctx, const struct dy_argmax_desc *d);
int dy_ocl_convert(void *ctx, const struct dy_convert_desc *d);
int dy_ocl_softmax_topk(void *ctx, const struct dy_softmax_topk_desc *d);
int dy_ocl_moe_sort(void *ctx, const struct dy_moe_sort_desc *d);
int dy_ocl_gemm_grouped(void *ctx, const struct dy_gemm_grouped_desc *d);
int dy_ocl_scatter_add_rows(void *ctx, const struct dy_scatter_add_rows_desc *d);
int dy_ocl_kv_block_scores(void *ctx, const struct dy_kv_block_scores_desc *d);
int dy_ocl_dequantize(void *ctx, const struct dy_dequantize_desc *d);

/* The portable GEMM kernels (kernel_ops.inc), shared with the Level Zero backend. */
int dy_ocl_gemv(struct dy_ocl_ctx *c, const struct dy_gemm_desc *d);
int dy_ocl_gemm_tiled(struct dy_ocl_ctx *c, const struct dy_gemm_desc *d);
/* gemm with fp8, int8 or int4 B (kernel_quant.inc), which dy_ocl_gemm
 * hands over. */
int dy_ocl_gemm_quant(struct dy_ocl_ctx *c, const struct dy_gemm_desc *d);

#endif
