/* The Level Zero backend's shared internals: the context, the kernels of
 * the embedded SPIR-V module, and the helpers its op files use. The
 * kernels are the OpenCL backend's own (the .cl files under
 * backends/opencl/kernels), compiled offline, so argument lists here
 * mirror opencl_ops.c's. */
#ifndef DY_LEVEL_ZERO_INTERNAL_H
#define DY_LEVEL_ZERO_INTERNAL_H

#include <level_zero/ze_api.h>

#include "backends/backend.h"

/* Work-group size of every kernel that reduces over a work-group; the
 * kernels' WG (backends/opencl/kernels/common.cl) is the same number. */
#define DY_ZE_WG 128

/* Every kernel of the module, created once per context. */
#define DY_ZE_KERNELS(X)                                                       \
    X(fill_random) X(convert) X(eltwise) X(gather_rows) X(kv_append) X(rope)   \
    X(norm) X(argmax) X(argmax_merge) X(gemv) X(gemv1) X(gemm_tiled) X(gemm_bias_beta)          \
    X(attention_prefill) X(attention_decode) X(attention_decode_combine)        \
    X(softmax_topk) X(moe_sort_small) X(moe_sort_count) X(moe_sort_scan)        \
    X(moe_sort_place) X(gemv_grouped) X(moe_tile_plan) X(gemm_grouped_tiled)    \
    X(scatter_add_rows) X(kv_append_int8) X(kv_block_scores) X(dequantize)      \
    X(gemv_q) X(gemv_q1) X(gemv_grouped_q) X(attention_decode_gqa)

enum dy_ze_kernel {
#define DY_ZE_KERNEL_ENUM(name) DY_ZE_K_##name,
    DY_ZE_KERNELS(DY_ZE_KERNEL_ENUM)
#undef DY_ZE_KERNEL_ENUM
    DY_ZE_KERNEL_COUNT
};

struct dy_ze_ctx {
    ze_driver_handle_t driver;
    ze_device_handle_t device;
    ze_context_handle_t context;
    ze_command_list_handle_t list;  /* immediate; ordered by barriers */
    ze_event_pool_handle_t fence_pool;
    ze_event_handle_t fence;        /* signalled by sync's barrier */
    ze_module_handle_t module;
    ze_kernel_handle_t kernels[DY_ZE_KERNEL_COUNT];
    uint64_t mem_total;             /* sum of the device's memories */
    uint64_t max_alloc;             /* maxMemAllocSize */
    uint64_t local_mem;             /* maxSharedLocalMemory */
    int compute_units;              /* EUs */
    uint64_t timer_ns;              /* timerResolution: nanoseconds per tick */
    uint32_t timestamp_bits;        /* timestampValidBits */
    uint64_t allocated;             /* bytes in buffers of this context, scratch too */
    void *scratch;                  /* decode splits, MoE counts and tiles,
                                     * dequantized panels of weights */
    size_t scratch_bytes;
    char err[512];
};

/* One kernel argument: a value and its size, or local memory of `size`
 * bytes when `value` is NULL (zeKernelSetArgumentValue's convention, the
 * same as clSetKernelArg's). */
struct dy_ze_arg {
    size_t size;
    const void *value;
};

#define DY_ZE_ARG(x) ((struct dy_ze_arg){ sizeof(x), &(x) })
#define DY_ZE_LOCAL(bytes) ((struct dy_ze_arg){ (bytes), NULL })
#define DY_ZE_ARGS(...)                                                        \
    (const struct dy_ze_arg[]){ __VA_ARGS__ },                                 \
        (uint32_t)(sizeof((struct dy_ze_arg[]){ __VA_ARGS__ }) / sizeof(struct dy_ze_arg))

/* A device pointer as a kernel argument (one name, so that declarations
 * of several read as one type). */
typedef void *dy_ze_devptr;

/* The kernels take (base, byte offset) pairs, as OpenCL 1.2 has no device
 * pointers: a view passes its allocation's base pointer (NULL for a
 * missing optional buffer) and its offset apart. */
static inline dy_ze_devptr dy_ze_mem(dy_buf b)
{
    return b.h ? b.h->impl : NULL;
}

static inline uint64_t dy_ze_off(dy_buf b)
{
    return (uint64_t)b.off;
}

/* A view as one pointer, for copies and fills. */
static inline void *dy_ze_ptr(dy_buf b)
{
    return (char *)b.h->impl + b.off;
}

/* The plugin links nothing of dyno's, so not backend.h's dy_dtype_name. */
static inline const char *dy_ze_dtype_name(enum dy_dtype t)
{
    static const char *const names[] = { "f32", "f16", "bf16", "i32", "fp8", "int8", "int4" };
    return (unsigned)t < sizeof names / sizeof names[0] ? names[t] : "unknown";
}

/* Records `call` failing with `code` in the context's error text and
 * returns the matching status. */
int dy_ze_fail(struct dy_ze_ctx *c, ze_result_t code, const char *call);
/* Records a message of our own and returns `status`. */
int dy_ze_failf(struct dy_ze_ctx *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Kernel names, in enum dy_ze_kernel's order (level_zero.c). */
extern const char *const dy_ze_kernel_names[];

/* Sets the arguments and appends kernel `k`. Global sizes are rounded up
 * to multiples of the local ones (the kernels check bounds); a zero global
 * size appends nothing. */
int dy_ze_launch(struct dy_ze_ctx *c, enum dy_ze_kernel k, uint32_t dims, const size_t *global,
                 const size_t *local, const struct dy_ze_arg *args, uint32_t nargs);

/* A scratch allocation of at least `bytes`, owned by the context; its
 * content is undefined. Grows on demand and counts toward the context's
 * memory. */
int dy_ze_scratch(struct dy_ze_ctx *c, size_t bytes, dy_ze_devptr *out);

/* level_zero_mem.c: the table's memory, ordering and event slots. */
int dy_ze_buf_alloc(void *ctx, size_t bytes, void **impl);
void dy_ze_buf_free(void *ctx, void *impl);
int dy_ze_buf_write(void *ctx, dy_buf dst, const void *src, size_t bytes);
int dy_ze_buf_read(void *ctx, dy_buf src, void *dst, size_t bytes);
int dy_ze_buf_copy(void *ctx, dy_buf dst, dy_buf src, size_t bytes);
int dy_ze_buf_fill(void *ctx, dy_buf dst, uint8_t byte, size_t bytes);
int dy_ze_mem_info(void *ctx, struct dy_mem_info *info);
int dy_ze_sync(void *ctx);
int dy_ze_event_create(void *ctx, void **event);
void dy_ze_event_destroy(void *ctx, void *event);
int dy_ze_event_record(void *ctx, void *event);
int dy_ze_event_elapsed_ns(void *ctx, void *start, void *end, uint64_t *ns);

int dy_ze_fill_random(void *ctx, const struct dy_fill_random_desc *d);
int dy_ze_gemm(void *ctx, const struct dy_gemm_desc *d);
int dy_ze_norm(void *ctx, const struct dy_norm_desc *d);
int dy_ze_rope(void *ctx, const struct dy_rope_desc *d);
int dy_ze_eltwise(void *ctx, const struct dy_eltwise_desc *d);
int dy_ze_gather_rows(void *ctx, const struct dy_gather_rows_desc *d);
int dy_ze_kv_append(void *ctx, const struct dy_kv_append_desc *d);
int dy_ze_attention_prefill(void *ctx, const struct dy_attention_prefill_desc *d);
int dy_ze_attention_decode(void *ctx, const struct dy_attention_decode_desc *d);
int dy_ze_argmax(void *ctx, const struct dy_argmax_desc *d);
int dy_ze_convert(void *ctx, const struct dy_convert_desc *d);
int dy_ze_softmax_topk(void *ctx, const struct dy_softmax_topk_desc *d);
int dy_ze_moe_sort(void *ctx, const struct dy_moe_sort_desc *d);
int dy_ze_gemm_grouped(void *ctx, const struct dy_gemm_grouped_desc *d);
int dy_ze_scatter_add_rows(void *ctx, const struct dy_scatter_add_rows_desc *d);
int dy_ze_kv_block_scores(void *ctx, const struct dy_kv_block_scores_desc *d);
int dy_ze_dequantize(void *ctx, const struct dy_dequantize_desc *d);

/* The portable GEMM kernels (kernel_ops.inc), shared with the OpenCL backend. */
int dy_ze_gemv(struct dy_ze_ctx *c, const struct dy_gemm_desc *d);
int dy_ze_gemm_tiled(struct dy_ze_ctx *c, const struct dy_gemm_desc *d);
/* gemm with fp8, int8 or int4 B (kernel_quant.inc), which dy_ze_gemm
 * hands over. */
int dy_ze_gemm_quant(struct dy_ze_ctx *c, const struct dy_gemm_desc *d);

#endif
