/* The caller's side of the backend interface: thin wrappers that check for
 * unsupported slots and out-of-range views, account device memory for the
 * peak-memory figure, and keep the last error's text. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"

struct dy_alloc {
    struct dy_bufh h; /* first: a dy_bufh pointer is a dy_alloc pointer */
    struct dy_alloc *prev, *next;
};

struct dy_ctx {
    const struct dy_backend *be;
    void *impl;
    int device;
    uint64_t in_use, peak;
    struct dy_alloc *allocs;
    char err[1024];
};

static int fail(dy_ctx *ctx, int status, const char *what)
{
    const char *vendor = ctx->impl && ctx->be->last_error ? ctx->be->last_error(ctx->impl) : NULL;
    if (vendor && *vendor)
        snprintf(ctx->err, sizeof ctx->err, "%s on %s: %s (%s)", what, ctx->be->name,
                 dy_strerror(status), vendor);
    else
        snprintf(ctx->err, sizeof ctx->err, "%s on %s: %s", what, ctx->be->name,
                 dy_strerror(status));
    return status;
}

static int checked(dy_ctx *ctx, int status, const char *what)
{
    return status == DY_OK ? DY_OK : fail(ctx, status, what);
}

int dy_ctx_create(const struct dy_backend *be, int device, dy_ctx **out)
{
    *out = NULL;
    if (!be || be->abi_version != DY_BACKEND_ABI)
        return DY_E_INVALID;
    dy_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return DY_E_NOMEM;
    ctx->be = be;
    ctx->device = device;
    int st = be->ctx_create ? be->ctx_create(device, &ctx->impl) : DY_E_UNSUPPORTED;
    if (st != DY_OK) {
        free(ctx);
        return st;
    }
    *out = ctx;
    return DY_OK;
}

void dy_ctx_destroy(dy_ctx *ctx)
{
    if (!ctx)
        return;
    while (ctx->allocs) {
        dy_buf b = { &ctx->allocs->h, 0 };
        dy_buf_free(ctx, &b);
    }
    if (ctx->be->ctx_destroy)
        ctx->be->ctx_destroy(ctx->impl);
    free(ctx);
}

const struct dy_backend *dy_ctx_backend(const dy_ctx *ctx) { return ctx->be; }
int dy_ctx_device(const dy_ctx *ctx) { return ctx->device; }
const char *dy_ctx_error(const dy_ctx *ctx) { return ctx->err; }
uint64_t dy_mem_in_use(const dy_ctx *ctx) { return ctx->in_use; }
uint64_t dy_mem_peak(const dy_ctx *ctx) { return ctx->peak; }
void dy_mem_reset_peak(dy_ctx *ctx) { ctx->peak = ctx->in_use; }

int dy_buf_alloc(dy_ctx *ctx, size_t bytes, dy_buf *out)
{
    out->h = NULL;
    out->off = 0;
    if (!ctx->be->buf_alloc)
        return fail(ctx, DY_E_UNSUPPORTED, "buf_alloc");
    struct dy_alloc *a = calloc(1, sizeof *a);
    if (!a)
        return fail(ctx, DY_E_NOMEM, "buf_alloc");
    /* zero-byte requests get a real allocation so views stay valid */
    int st = ctx->be->buf_alloc(ctx->impl, bytes ? bytes : 1, &a->h.impl);
    if (st != DY_OK) {
        free(a);
        char what[64];
        snprintf(what, sizeof what, "buf_alloc(%zu bytes)", bytes);
        return fail(ctx, st, what);
    }
    a->h.bytes = bytes;
    a->next = ctx->allocs;
    if (ctx->allocs)
        ctx->allocs->prev = a;
    ctx->allocs = a;
    ctx->in_use += bytes;
    if (ctx->in_use > ctx->peak)
        ctx->peak = ctx->in_use;
    out->h = &a->h;
    return DY_OK;
}

void dy_buf_free(dy_ctx *ctx, dy_buf *buf)
{
    if (!buf->h)
        return;
    struct dy_alloc *a = (struct dy_alloc *)buf->h;
    ctx->be->buf_free(ctx->impl, a->h.impl);
    if (a->prev)
        a->prev->next = a->next;
    else
        ctx->allocs = a->next;
    if (a->next)
        a->next->prev = a->prev;
    ctx->in_use -= a->h.bytes;
    free(a);
    buf->h = NULL;
    buf->off = 0;
}

static bool in_range(dy_buf b, size_t bytes)
{
    return b.h && b.off <= b.h->bytes && bytes <= b.h->bytes - b.off;
}

int dy_buf_write(dy_ctx *ctx, dy_buf dst, const void *src, size_t bytes)
{
    if (!in_range(dst, bytes))
        return fail(ctx, DY_E_INVALID, "buf_write out of range");
    return checked(ctx, ctx->be->buf_write(ctx->impl, dst, src, bytes), "buf_write");
}

int dy_buf_read(dy_ctx *ctx, dy_buf src, void *dst, size_t bytes)
{
    if (!in_range(src, bytes))
        return fail(ctx, DY_E_INVALID, "buf_read out of range");
    return checked(ctx, ctx->be->buf_read(ctx->impl, src, dst, bytes), "buf_read");
}

int dy_buf_copy(dy_ctx *ctx, dy_buf dst, dy_buf src, size_t bytes)
{
    if (!in_range(dst, bytes) || !in_range(src, bytes))
        return fail(ctx, DY_E_INVALID, "buf_copy out of range");
    return checked(ctx, ctx->be->buf_copy(ctx->impl, dst, src, bytes), "buf_copy");
}

int dy_buf_fill(dy_ctx *ctx, dy_buf dst, uint8_t byte, size_t bytes)
{
    if (!in_range(dst, bytes))
        return fail(ctx, DY_E_INVALID, "buf_fill out of range");
    return checked(ctx, ctx->be->buf_fill(ctx->impl, dst, byte, bytes), "buf_fill");
}

int dy_mem_info(dy_ctx *ctx, struct dy_mem_info *info)
{
    memset(info, 0, sizeof *info);
    if (!ctx->be->mem_info)
        return fail(ctx, DY_E_UNSUPPORTED, "mem_info");
    return checked(ctx, ctx->be->mem_info(ctx->impl, info), "mem_info");
}

int dy_sync(dy_ctx *ctx)
{
    if (!ctx->be->sync)
        return DY_OK;
    return checked(ctx, ctx->be->sync(ctx->impl), "sync");
}

int dy_event_create(dy_ctx *ctx, void **event)
{
    if (!ctx->be->event_create)
        return fail(ctx, DY_E_UNSUPPORTED, "event_create");
    return checked(ctx, ctx->be->event_create(ctx->impl, event), "event_create");
}

void dy_event_destroy(dy_ctx *ctx, void *event)
{
    if (event && ctx->be->event_destroy)
        ctx->be->event_destroy(ctx->impl, event);
}

int dy_event_record(dy_ctx *ctx, void *event)
{
    return checked(ctx, ctx->be->event_record(ctx->impl, event), "event_record");
}

int dy_event_elapsed_ns(dy_ctx *ctx, void *start, void *end, uint64_t *ns)
{
    return checked(ctx, ctx->be->event_elapsed_ns(ctx->impl, start, end, ns), "event_elapsed_ns");
}

/* Each op: NULL slot -> unsupported, else the backend's status with text. */
#define DY_OP_WRAPPER(op)                                                      \
    int dy_##op(dy_ctx *ctx, const struct dy_##op##_desc *d)                   \
    {                                                                          \
        if (!ctx->be->op)                                                      \
            return fail(ctx, DY_E_UNSUPPORTED, #op);                           \
        return checked(ctx, ctx->be->op(ctx->impl, d), #op);                   \
    }

DY_OP_WRAPPER(fill_random)
DY_OP_WRAPPER(gemm)
DY_OP_WRAPPER(norm)
DY_OP_WRAPPER(rope)
DY_OP_WRAPPER(eltwise)
DY_OP_WRAPPER(gather_rows)
DY_OP_WRAPPER(kv_append)
DY_OP_WRAPPER(attention_prefill)
DY_OP_WRAPPER(attention_decode)
DY_OP_WRAPPER(argmax)
DY_OP_WRAPPER(convert)
