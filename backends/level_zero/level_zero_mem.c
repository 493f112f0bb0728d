/* The Level Zero backend's memory, ordering, events and kernel launches.
 * Buffers are device allocations (zeMemAllocDevice) whose pointer is the
 * dy_buf's impl; a view's offset is added to it for copies and passed
 * beside it to kernels. */
#include <stdlib.h>
#include <stdio.h>

#include "level_zero_internal.h"

/* Allocations are aligned for the kernels' 16-byte loads and beyond. */
#define ALLOC_ALIGN 64

/* ---- ordering ---- */

/* Commands of a Level Zero command list may overlap unless separated by a
 * barrier, and the in-order flag for immediate lists is newer than
 * Debian's headers (API 1.4): every command is followed by a barrier, so
 * the list behaves as the in-order queue backend.h promises. */
static int ordered(struct dy_ze_ctx *c, ze_result_t r, const char *call)
{
    if (r != ZE_RESULT_SUCCESS)
        return dy_ze_fail(c, r, call);
    r = zeCommandListAppendBarrier(c->list, NULL, 0, NULL);
    return r == ZE_RESULT_SUCCESS ? DY_OK : dy_ze_fail(c, r, "zeCommandListAppendBarrier");
}

int dy_ze_sync(void *ctx)
{
    struct dy_ze_ctx *c = ctx;
    ze_result_t r = zeCommandListAppendBarrier(c->list, c->fence, 0, NULL);
    if (r != ZE_RESULT_SUCCESS)
        return dy_ze_fail(c, r, "zeCommandListAppendBarrier");
    r = zeEventHostSynchronize(c->fence, UINT64_MAX);
    if (r != ZE_RESULT_SUCCESS)
        return dy_ze_fail(c, r, "zeEventHostSynchronize");
    r = zeEventHostReset(c->fence);
    return r == ZE_RESULT_SUCCESS ? DY_OK : dy_ze_fail(c, r, "zeEventHostReset");
}

/* ---- memory ---- */

/* Accounted as the driver reports the allocation, on both sides, so that
 * a size it rounds up (or the one byte of an empty buffer) adds and
 * subtracts the same. */
static size_t allocation_size(struct dy_ze_ctx *c, void *ptr)
{
    size_t bytes = 0;
    return zeMemGetAddressRange(c->context, ptr, NULL, &bytes) == ZE_RESULT_SUCCESS ? bytes : 0;
}

static int alloc_device(struct dy_ze_ctx *c, size_t bytes, void **out)
{
    *out = NULL;
    if (bytes > c->max_alloc)
        return dy_ze_failf(c, DY_E_NOMEM,
                           "allocation of %zu bytes exceeds the device's max allocation %llu",
                           bytes, (unsigned long long)c->max_alloc);
    if (c->allocated + bytes > c->mem_total)
        return dy_ze_failf(c, DY_E_NOMEM,
                           "allocation of %zu bytes exceeds the %llu bytes of device memory "
                           "this context has not allocated",
                           bytes, (unsigned long long)(c->mem_total - c->allocated));
    ze_device_mem_alloc_desc_t desc = { .stype = ZE_STRUCTURE_TYPE_DEVICE_MEM_ALLOC_DESC };
    /* a zero-byte allocation is an error for Level Zero, not for dyno */
    ze_result_t r = zeMemAllocDevice(c->context, &desc, bytes ? bytes : 1, ALLOC_ALIGN, c->device,
                                     out);
    if (r != ZE_RESULT_SUCCESS) {
        *out = NULL;
        return dy_ze_fail(c, r, "zeMemAllocDevice");
    }
    c->allocated += allocation_size(c, *out);
    return DY_OK;
}

/* Unlike clReleaseMemObject, zeMemFree does not wait for queued work that
 * uses the memory: the queue is drained first. */
static void free_device(struct dy_ze_ctx *c, void *ptr)
{
    size_t bytes = allocation_size(c, ptr);
    dy_ze_sync(c);
    c->allocated -= bytes < c->allocated ? bytes : c->allocated;
    zeMemFree(c->context, ptr);
}

int dy_ze_buf_alloc(void *ctx, size_t bytes, void **impl)
{
    return alloc_device(ctx, bytes, impl);
}

void dy_ze_buf_free(void *ctx, void *impl)
{
    free_device(ctx, impl);
}

int dy_ze_scratch(struct dy_ze_ctx *c, size_t bytes, dy_ze_devptr *out)
{
    if (c->scratch_bytes < bytes) {
        if (c->scratch)
            free_device(c, c->scratch);
        c->scratch = NULL;
        c->scratch_bytes = 0;
        int st = alloc_device(c, bytes, &c->scratch);
        if (st != DY_OK)
            return st;
        c->scratch_bytes = bytes;
    }
    *out = c->scratch;
    return DY_OK;
}

/* Blocking: the caller may reuse `src` as soon as we return. */
int dy_ze_buf_write(void *ctx, dy_buf dst, const void *src, size_t bytes)
{
    struct dy_ze_ctx *c = ctx;
    if (bytes == 0)
        return DY_OK;
    int st = ordered(c, zeCommandListAppendMemoryCopy(c->list, dy_ze_ptr(dst), src, bytes, NULL,
                                                      0, NULL),
                     "zeCommandListAppendMemoryCopy");
    return st == DY_OK ? dy_ze_sync(c) : st;
}

int dy_ze_buf_read(void *ctx, dy_buf src, void *dst, size_t bytes)
{
    struct dy_ze_ctx *c = ctx;
    if (bytes == 0)
        return DY_OK;
    int st = ordered(c, zeCommandListAppendMemoryCopy(c->list, dst, dy_ze_ptr(src), bytes, NULL,
                                                      0, NULL),
                     "zeCommandListAppendMemoryCopy");
    return st == DY_OK ? dy_ze_sync(c) : st;
}

/* Overlapping ranges (memmove's case) are an error for
 * zeCommandListAppendMemoryCopy: they go through a temporary allocation. */
int dy_ze_buf_copy(void *ctx, dy_buf dst, dy_buf src, size_t bytes)
{
    struct dy_ze_ctx *c = ctx;
    if (bytes == 0)
        return DY_OK;
    if (dst.h->impl != src.h->impl || dst.off >= src.off + bytes || src.off >= dst.off + bytes)
        return ordered(c, zeCommandListAppendMemoryCopy(c->list, dy_ze_ptr(dst), dy_ze_ptr(src),
                                                        bytes, NULL, 0, NULL),
                       "zeCommandListAppendMemoryCopy");
    void *tmp;
    int st = alloc_device(c, bytes, &tmp);
    if (st != DY_OK)
        return st;
    st = ordered(c, zeCommandListAppendMemoryCopy(c->list, tmp, dy_ze_ptr(src), bytes, NULL, 0,
                                                  NULL),
                 "zeCommandListAppendMemoryCopy");
    if (st == DY_OK)
        st = ordered(c, zeCommandListAppendMemoryCopy(c->list, dy_ze_ptr(dst), tmp, bytes, NULL,
                                                      0, NULL),
                     "zeCommandListAppendMemoryCopy");
    free_device(c, tmp);
    return st;
}

int dy_ze_buf_fill(void *ctx, dy_buf dst, uint8_t byte, size_t bytes)
{
    struct dy_ze_ctx *c = ctx;
    if (bytes == 0)
        return DY_OK;
    return ordered(c, zeCommandListAppendMemoryFill(c->list, dy_ze_ptr(dst), &byte, 1, bytes, NULL,
                                                    0, NULL),
                   "zeCommandListAppendMemoryFill");
}

/* Free memory needs Sysman, which is not used: total less what this
 * context holds. */
int dy_ze_mem_info(void *ctx, struct dy_mem_info *info)
{
    struct dy_ze_ctx *c = ctx;
    info->total_bytes = c->mem_total;
    info->free_bytes = c->allocated < c->mem_total ? c->mem_total - c->allocated : 0;
    return DY_OK;
}

/* ---- events ---- */

/* A point in the list: a global timestamp the device writes into host
 * memory once everything before it is done, and an event it signals
 * then. One pool per event keeps them independent of each other. */
struct dy_ze_event {
    ze_event_pool_handle_t pool;
    ze_event_handle_t done;
    uint64_t *stamp; /* host allocation the device writes */
    bool recorded;
};

void dy_ze_event_destroy(void *ctx, void *event)
{
    struct dy_ze_ctx *c = ctx;
    struct dy_ze_event *ev = event;
    if (!ev)
        return;
    /* the device may still be about to write the stamp */
    if (ev->recorded)
        zeEventHostSynchronize(ev->done, UINT64_MAX);
    if (ev->stamp)
        zeMemFree(c->context, ev->stamp);
    if (ev->done)
        zeEventDestroy(ev->done);
    if (ev->pool)
        zeEventPoolDestroy(ev->pool);
    free(ev);
}

int dy_ze_event_create(void *ctx, void **event)
{
    struct dy_ze_ctx *c = ctx;
    *event = NULL;
    struct dy_ze_event *ev = calloc(1, sizeof *ev);
    if (!ev)
        return DY_E_NOMEM;
    int st;
    ze_event_pool_desc_t pd = { .stype = ZE_STRUCTURE_TYPE_EVENT_POOL_DESC,
                                .flags = ZE_EVENT_POOL_FLAG_HOST_VISIBLE, .count = 1 };
    ze_result_t r = zeEventPoolCreate(c->context, &pd, 1, &c->device, &ev->pool);
    if (r != ZE_RESULT_SUCCESS) {
        ev->pool = NULL;
        st = dy_ze_fail(c, r, "zeEventPoolCreate");
        goto fail;
    }
    ze_event_desc_t ed = { .stype = ZE_STRUCTURE_TYPE_EVENT_DESC, .index = 0,
                           .signal = ZE_EVENT_SCOPE_FLAG_HOST, .wait = ZE_EVENT_SCOPE_FLAG_HOST };
    r = zeEventCreate(ev->pool, &ed, &ev->done);
    if (r != ZE_RESULT_SUCCESS) {
        ev->done = NULL;
        st = dy_ze_fail(c, r, "zeEventCreate");
        goto fail;
    }
    ze_host_mem_alloc_desc_t hd = { .stype = ZE_STRUCTURE_TYPE_HOST_MEM_ALLOC_DESC };
    void *stamp = NULL;
    r = zeMemAllocHost(c->context, &hd, sizeof(uint64_t), sizeof(uint64_t), &stamp);
    if (r != ZE_RESULT_SUCCESS) {
        st = dy_ze_fail(c, r, "zeMemAllocHost");
        goto fail;
    }
    ev->stamp = stamp;
    *event = ev;
    return DY_OK;
fail:
    dy_ze_event_destroy(c, ev);
    return st;
}

int dy_ze_event_record(void *ctx, void *event)
{
    struct dy_ze_ctx *c = ctx;
    struct dy_ze_event *ev = event;
    /* a stamp still to be written must not land after the reset */
    if (ev->recorded)
        zeEventHostSynchronize(ev->done, UINT64_MAX);
    ev->recorded = false;
    ze_result_t r = zeEventHostReset(ev->done);
    if (r != ZE_RESULT_SUCCESS)
        return dy_ze_fail(c, r, "zeEventHostReset");
    int st = ordered(c, zeCommandListAppendWriteGlobalTimestamp(c->list, ev->stamp, ev->done, 0,
                                                                NULL),
                     "zeCommandListAppendWriteGlobalTimestamp");
    ev->recorded = st == DY_OK;
    return st;
}

/* Ticks of the device's global timer between the two stamps, counted
 * modulo its valid bits (the counter wraps), times its resolution. */
int dy_ze_event_elapsed_ns(void *ctx, void *start, void *end, uint64_t *ns)
{
    struct dy_ze_ctx *c = ctx;
    struct dy_ze_event *a = start, *b = end;
    *ns = 0;
    if (!a->recorded || !b->recorded)
        return dy_ze_failf(c, DY_E_INVALID, "event_elapsed_ns: event not recorded");
    ze_result_t r = zeEventHostSynchronize(a->done, UINT64_MAX);
    if (r == ZE_RESULT_SUCCESS)
        r = zeEventHostSynchronize(b->done, UINT64_MAX);
    if (r != ZE_RESULT_SUCCESS)
        return dy_ze_fail(c, r, "zeEventHostSynchronize");
    uint64_t mask = c->timestamp_bits == 0 || c->timestamp_bits >= 64
                        ? UINT64_MAX
                        : ((uint64_t)1 << c->timestamp_bits) - 1;
    uint64_t ticks = (*b->stamp - *a->stamp) & mask;
    *ns = ticks * c->timer_ns;
    return DY_OK;
}

/* ---- kernels ---- */

int dy_ze_launch(struct dy_ze_ctx *c, enum dy_ze_kernel k, uint32_t dims, const size_t *global,
                 const size_t *local, const struct dy_ze_arg *args, uint32_t nargs)
{
    uint32_t group[3] = { 1, 1, 1 }, count[3] = { 1, 1, 1 };
    for (uint32_t i = 0; i < dims; i++) {
        if (global[i] == 0)
            return DY_OK;
        group[i] = (uint32_t)local[i];
        count[i] = (uint32_t)((global[i] + local[i] - 1) / local[i]);
    }
    ze_kernel_handle_t kernel = c->kernels[k];
    char call[96];
    ze_result_t r = zeKernelSetGroupSize(kernel, group[0], group[1], group[2]);
    if (r != ZE_RESULT_SUCCESS) {
        snprintf(call, sizeof call, "zeKernelSetGroupSize(%s)", dy_ze_kernel_names[k]);
        return dy_ze_fail(c, r, call);
    }
    for (uint32_t i = 0; i < nargs; i++) {
        r = zeKernelSetArgumentValue(kernel, i, args[i].size, args[i].value);
        if (r != ZE_RESULT_SUCCESS) {
            snprintf(call, sizeof call, "zeKernelSetArgumentValue(%s, %u)", dy_ze_kernel_names[k],
                     (unsigned)i);
            return dy_ze_fail(c, r, call);
        }
    }
    ze_group_count_t groups = { count[0], count[1], count[2] };
    snprintf(call, sizeof call, "zeCommandListAppendLaunchKernel(%s)", dy_ze_kernel_names[k]);
    return ordered(c, zeCommandListAppendLaunchKernel(c->list, kernel, &groups, NULL, 0, NULL),
                   call);
}
