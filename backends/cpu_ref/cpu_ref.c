/* cpu-ref: table, device, memory and events. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cpu_ref.h"

struct ref_ctx {
    char err[256];
};

static int ref_probe(char *why, size_t len)
{
    if (len)
        why[0] = '\0';
    return DY_OK;
}

static int ref_device_count(int *count)
{
    *count = 1;
    return DY_OK;
}

static int ref_device_info(int device, struct dy_device_info *info)
{
    if (device != 0)
        return DY_E_INVALID;
    memset(info, 0, sizeof *info);
    snprintf(info->name, sizeof info->name, "host CPU (reference)");
    snprintf(info->vendor, sizeof info->vendor, "dyno");
    snprintf(info->driver_version, sizeof info->driver_version, "none");
    snprintf(info->runtime_version, sizeof info->runtime_version, "C");
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    info->mem_total_bytes = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
    info->compute_units = 1;
    info->caps = DY_CAP_UNIFIED;
    return DY_OK;
}

static int ref_ctx_create(int device, void **ctx)
{
    if (device != 0)
        return DY_E_INVALID;
    *ctx = calloc(1, sizeof(struct ref_ctx));
    return *ctx ? DY_OK : DY_E_NOMEM;
}

static void ref_ctx_destroy(void *ctx)
{
    free(ctx);
}

static const char *ref_last_error(void *ctx)
{
    return ((struct ref_ctx *)ctx)->err;
}

static int ref_buf_alloc(void *ctx, size_t bytes, void **impl)
{
    *impl = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!*impl) {
        snprintf(((struct ref_ctx *)ctx)->err, sizeof ((struct ref_ctx *)ctx)->err,
                 "aligned_alloc of %zu bytes failed", bytes);
        return DY_E_NOMEM;
    }
    return DY_OK;
}

static void ref_buf_free(void *ctx, void *impl)
{
    free(impl);
}

static int ref_buf_write(void *ctx, dy_buf dst, const void *src, size_t bytes)
{
    memcpy(dy_ref_ptr(dst), src, bytes);
    return DY_OK;
}

static int ref_buf_read(void *ctx, dy_buf src, void *dst, size_t bytes)
{
    memcpy(dst, dy_ref_ptr(src), bytes);
    return DY_OK;
}

static int ref_buf_copy(void *ctx, dy_buf dst, dy_buf src, size_t bytes)
{
    memmove(dy_ref_ptr(dst), dy_ref_ptr(src), bytes);
    return DY_OK;
}

static int ref_buf_fill(void *ctx, dy_buf dst, uint8_t byte, size_t bytes)
{
    memset(dy_ref_ptr(dst), byte, bytes);
    return DY_OK;
}

static int ref_mem_info(void *ctx, struct dy_mem_info *info)
{
    long pages = sysconf(_SC_PHYS_PAGES), avail = sysconf(_SC_AVPHYS_PAGES);
    long page = sysconf(_SC_PAGESIZE);
    info->total_bytes = (uint64_t)pages * (uint64_t)page;
    info->free_bytes = (uint64_t)avail * (uint64_t)page;
    return DY_OK;
}

static int ref_sync(void *ctx)
{
    return DY_OK;
}

/* Ops run synchronously, so an event is the host clock at record time. */
static int ref_event_create(void *ctx, void **event)
{
    *event = calloc(1, sizeof(uint64_t));
    return *event ? DY_OK : DY_E_NOMEM;
}

static void ref_event_destroy(void *ctx, void *event)
{
    free(event);
}

static int ref_event_record(void *ctx, void *event)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    *(uint64_t *)event = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    return DY_OK;
}

static int ref_event_elapsed_ns(void *ctx, void *start, void *end, uint64_t *ns)
{
    uint64_t a = *(uint64_t *)start, b = *(uint64_t *)end;
    *ns = b > a ? b - a : 0;
    return DY_OK;
}

const struct dy_backend dy_backend_cpu_ref = {
    .abi_version = DY_BACKEND_ABI,
    .name = "cpu-ref",
    .description = "naive reference (double accumulation, one thread): the oracle",
    .probe = ref_probe,
    .device_count = ref_device_count,
    .device_info = ref_device_info,
    .ctx_create = ref_ctx_create,
    .ctx_destroy = ref_ctx_destroy,
    .last_error = ref_last_error,
    .buf_alloc = ref_buf_alloc,
    .buf_free = ref_buf_free,
    .buf_write = ref_buf_write,
    .buf_read = ref_buf_read,
    .buf_copy = ref_buf_copy,
    .buf_fill = ref_buf_fill,
    .mem_info = ref_mem_info,
    .sync = ref_sync,
    .event_create = ref_event_create,
    .event_destroy = ref_event_destroy,
    .event_record = ref_event_record,
    .event_elapsed_ns = ref_event_elapsed_ns,
    .fill_random = dy_ref_fill_random,
    .gemm = dy_ref_gemm,
    .norm = dy_ref_norm,
    .rope = dy_ref_rope,
    .eltwise = dy_ref_eltwise,
    .gather_rows = dy_ref_gather_rows,
    .kv_append = dy_ref_kv_append,
    .attention_prefill = dy_ref_attention_prefill,
    .attention_decode = dy_ref_attention_decode,
    .argmax = dy_ref_argmax,
    .convert = dy_ref_convert,
    .softmax_topk = dy_ref_softmax_topk,
    .moe_sort = dy_ref_moe_sort,
    .gemm_grouped = dy_ref_gemm_grouped,
    .scatter_add_rows = dy_ref_scatter_add_rows,
    .kv_block_scores = dy_ref_kv_block_scores,
    .dequantize = dy_ref_dequantize,
};
