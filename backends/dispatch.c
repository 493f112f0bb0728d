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

/* DYNO_PROFILE_OPS=1: device time of every op, summed per op and printed
 * when the context is destroyed. Events are pooled and resolved at dy_sync. */
enum { OP_COUNT = 17, PROFILE_PENDING = 8192 };
static const char *const op_names[OP_COUNT] = {
    "fill_random", "gemm", "norm", "rope", "eltwise", "gather_rows", "kv_append",
    "attention_prefill", "attention_decode", "argmax", "convert",
    "softmax_topk", "moe_sort", "gemm_grouped", "scatter_add_rows", "kv_block_scores",
    "dequantize",
};

struct op_profile {
    void *events[2 * PROFILE_PENDING];
    int ops[PROFILE_PENDING];
    int pending;
    uint64_t calls[OP_COUNT], ns[OP_COUNT];
};

struct dy_ctx {
    const struct dy_backend *be;
    void *impl;
    int device;
    uint64_t in_use, peak;
    struct dy_alloc *allocs;
    struct op_profile *profile;
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
    const char *prof = getenv("DYNO_PROFILE_OPS");
    if (prof && *prof && strcmp(prof, "0") && be->event_create)
        ctx->profile = calloc(1, sizeof *ctx->profile);
    *out = ctx;
    return DY_OK;
}

/* Adds the finished ops' times to the totals and frees their events. */
static void profile_resolve(dy_ctx *ctx)
{
    struct op_profile *p = ctx->profile;
    for (int i = 0; i < p->pending; i++) {
        uint64_t ns = 0;
        if (ctx->be->event_elapsed_ns(ctx->impl, p->events[2 * i], p->events[2 * i + 1], &ns) == DY_OK) {
            p->calls[p->ops[i]]++;
            p->ns[p->ops[i]] += ns;
        }
        ctx->be->event_destroy(ctx->impl, p->events[2 * i]);
        ctx->be->event_destroy(ctx->impl, p->events[2 * i + 1]);
    }
    p->pending = 0;
}

void dy_profile_reset(dy_ctx *ctx)
{
    if (!ctx->profile)
        return;
    dy_sync(ctx);
    memset(ctx->profile->calls, 0, sizeof ctx->profile->calls);
    memset(ctx->profile->ns, 0, sizeof ctx->profile->ns);
}

void dy_profile_print(dy_ctx *ctx, const char *title)
{
    struct op_profile *p = ctx->profile;
    if (!p)
        return;
    dy_sync(ctx);
    uint64_t total = 0;
    for (int i = 0; i < OP_COUNT; i++)
        total += p->ns[i];
    if (!total)
        return;
    fprintf(stderr, "dyno: op profile on %s, %s (device time)\n%-18s %10s %12s %10s %7s\n",
            ctx->be->name, title, "op", "calls", "total ms", "mean us", "share");
    for (int i = 0; i < OP_COUNT; i++)
        if (p->calls[i])
            fprintf(stderr, "%-18s %10llu %12.3f %10.2f %6.1f%%\n", op_names[i],
                    (unsigned long long)p->calls[i], p->ns[i] / 1e6, p->ns[i] / 1e3 / p->calls[i],
                    total ? 100.0 * p->ns[i] / total : 0.0);
    memset(p->calls, 0, sizeof p->calls);
    memset(p->ns, 0, sizeof p->ns);
}

void dy_ctx_destroy(dy_ctx *ctx)
{
    if (!ctx)
        return;
    if (ctx->profile) {
        dy_profile_print(ctx, "since the last report");
        free(ctx->profile);
    }
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

int dy_energy_read(dy_ctx *ctx, double *joules)
{
    *joules = 0.0;
    if (!ctx->be->energy_read)
        return DY_E_UNSUPPORTED; /* no telemetry is not an error to record */
    return ctx->be->energy_read(ctx->impl, joules);
}

int dy_sync(dy_ctx *ctx)
{
    if (!ctx->be->sync)
        return DY_OK;
    int st = checked(ctx, ctx->be->sync(ctx->impl), "sync");
    if (st == DY_OK && ctx->profile)
        profile_resolve(ctx);
    return st;
}

/* Runs one op, timing it when profiling. */
static int run_op(dy_ctx *ctx, int op, int (*call)(dy_ctx *, const void *), const void *desc)
{
    struct op_profile *p = ctx->profile;
    /* a full pool of events: the queue drains and its ops are counted, so
     * a long run's later ops are timed too (they went uncounted before) */
    if (p && p->pending == PROFILE_PENDING)
        dy_sync(ctx);
    if (!p || p->pending == PROFILE_PENDING)
        return call(ctx, desc);
    void **ev = &p->events[2 * p->pending];
    if (ctx->be->event_create(ctx->impl, &ev[0]) != DY_OK)
        return call(ctx, desc);
    if (ctx->be->event_create(ctx->impl, &ev[1]) != DY_OK) {
        ctx->be->event_destroy(ctx->impl, ev[0]);
        return call(ctx, desc);
    }
    ctx->be->event_record(ctx->impl, ev[0]);
    int st = call(ctx, desc);
    ctx->be->event_record(ctx->impl, ev[1]);
    p->ops[p->pending++] = op;
    return st;
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

bool dy_graph_available(const dy_ctx *ctx)
{
    const char *env = getenv("DYNO_GRAPHS");
    return ctx->be->graph_begin && ctx->be->graph_end && ctx->be->graph_launch &&
           ctx->be->graph_destroy && !ctx->profile && !(env && !strcmp(env, "0"));
}

int dy_graph_begin(dy_ctx *ctx)
{
    if (!dy_graph_available(ctx))
        return fail(ctx, DY_E_UNSUPPORTED, "graph_begin");
    return checked(ctx, ctx->be->graph_begin(ctx->impl), "graph_begin");
}

int dy_graph_end(dy_ctx *ctx, void **graph)
{
    *graph = NULL;
    return checked(ctx, ctx->be->graph_end(ctx->impl, graph), "graph_end");
}

int dy_graph_launch(dy_ctx *ctx, void *graph)
{
    return checked(ctx, ctx->be->graph_launch(ctx->impl, graph), "graph_launch");
}

void dy_graph_destroy(dy_ctx *ctx, void *graph)
{
    if (graph)
        ctx->be->graph_destroy(ctx->impl, graph);
}

/* Each op: NULL slot (or `refused`, a condition on d) -> unsupported, else
 * the backend's status with text. */
#define DY_OP_WRAPPER_IF(op, index, refused)                                   \
    static int call_##op(dy_ctx *ctx, const void *d)                           \
    {                                                                          \
        return ctx->be->op(ctx->impl, (const struct dy_##op##_desc *)d);       \
    }                                                                          \
    int dy_##op(dy_ctx *ctx, const struct dy_##op##_desc *d)                   \
    {                                                                          \
        if (!ctx->be->op || (refused))                                         \
            return fail(ctx, DY_E_UNSUPPORTED, #op);                           \
        return checked(ctx, run_op(ctx, index, call_##op, d), #op);            \
    }
#define DY_OP_WRAPPER(op, index) DY_OP_WRAPPER_IF(op, index, false)
/* A backend takes quantized weights in gemm and gemm_grouped when it has
 * the dequantize slot: without it, such a call is unsupported rather than
 * read as plain integers. */
#define DY_OP_WRAPPER_QUANT(op, index) \
    DY_OP_WRAPPER_IF(op, index, dy_dtype_quantized(d->b_dtype) && !ctx->be->dequantize)

DY_OP_WRAPPER(fill_random, 0)
DY_OP_WRAPPER(norm, 2)
DY_OP_WRAPPER(eltwise, 4)
DY_OP_WRAPPER(gather_rows, 5)
DY_OP_WRAPPER(kv_append, 6)
DY_OP_WRAPPER(attention_prefill, 7)
DY_OP_WRAPPER(attention_decode, 8)
DY_OP_WRAPPER(argmax, 9)
DY_OP_WRAPPER(convert, 10)
DY_OP_WRAPPER(moe_sort, 12)
DY_OP_WRAPPER(scatter_add_rows, 14)
DY_OP_WRAPPER(kv_block_scores, 15)
DY_OP_WRAPPER(dequantize, 16)

/* The backend's call of d where it declares every part of d that is set
 * (`whole`): true when the backend took it (its status in *st), false
 * when the caller composes the parts (not declared, or DY_E_UNSUPPORTED). */
static bool try_whole(dy_ctx *ctx, bool whole, int op, int (*call)(dy_ctx *, const void *), const void *d,
                      const char *what, int *st)
{
    if (!whole)
        return false;
    struct op_profile *p = ctx->profile;
    int pending = p ? p->pending : 0;
    *st = run_op(ctx, op, call, d);
    if (*st == DY_E_UNSUPPORTED) {
        /* a declined call is not an op of the profile: the parts that
         * run instead are */
        if (p && p->pending > pending) {
            p->pending--;
            ctx->be->event_destroy(ctx->impl, p->events[2 * p->pending]);
            ctx->be->event_destroy(ctx->impl, p->events[2 * p->pending + 1]);
        }
        return false;
    }
    *st = checked(ctx, *st, what);
    return true;
}

/* silu(gate) * up over C's first n/2 columns (the gate) with its second
 * (the up), in place: SwiGLU composed after a GEMM */
static int swiglu_in_place(dy_ctx *ctx, dy_buf c, int rows, int n, int ldc, enum dy_dtype dtype)
{
    struct dy_eltwise_desc e = { .op = DY_ELT_SILU_MUL, .a = c, .out = c, .rows = rows, .cols = n / 2,
                                 .b = dy_buf_at(c, (size_t)(n / 2) * dy_dtype_size(dtype)), .a_stride = ldc,
                                 .b_stride = ldc, .out_stride = ldc, .dtype = dtype };
    return dy_eltwise(ctx, &e);
}

static int call_softmax_topk(dy_ctx *ctx, const void *d)
{
    return ctx->be->softmax_topk(ctx->impl, (const struct dy_softmax_topk_desc *)d);
}

/* softmax and top-k, the router's logits before them and the pairs' sort
 * after when d asks for them: the backend's in one where it declares the
 * parts, else dy_norm and dy_gemm before, dy_moe_sort after. */
int dy_softmax_topk(dy_ctx *ctx, const struct dy_softmax_topk_desc *d)
{
    if (!ctx->be->softmax_topk)
        return fail(ctx, DY_E_UNSUPPORTED, "softmax_topk");
    int st;
    const struct dy_topk_router *r = &d->router;
    if (r->x.h) {
        if (!r->norm_weight.h || !r->xn.h || !r->w.h || r->hidden <= 0 || d->stride < d->experts)
            return fail(ctx, DY_E_INVALID, "softmax_topk (a router needs x, its norm's weight, xn, w, "
                                           "hidden > 0 and stride >= experts)");
        if (try_whole(ctx, ctx->be->topk_router && (!d->offsets.h || ctx->be->topk_sort), 11, call_softmax_topk,
                      d, "softmax_topk", &st))
            return st;
        struct dy_norm_desc nd = { .kind = DY_NORM_RMS, .x = r->x, .weight = r->norm_weight, .out = r->xn,
                                   .rows = d->tokens, .dim = r->hidden, .x_stride = r->hidden,
                                   .out_stride = r->hidden, .eps = r->eps, .dtype = DY_F32,
                                   .weight_dtype = r->weight_dtype, .out_dtype = DY_F32 };
        struct dy_gemm_desc gd = { .a = r->xn, .b = r->w, .c = d->logits, .m = d->tokens, .n = d->experts,
                                   .k = r->hidden, .lda = r->hidden, .ldb = r->hidden, .ldc = d->stride,
                                   .a_dtype = DY_F32, .b_dtype = r->weight_dtype, .c_dtype = DY_F32,
                                   .b_settled = true };
        struct dy_softmax_topk_desc plain = *d;
        plain.router = (struct dy_topk_router){ 0 };
        if ((st = dy_norm(ctx, &nd)) || (st = dy_gemm(ctx, &gd)))
            return st;
        return dy_softmax_topk(ctx, &plain);
    }
    if (try_whole(ctx, d->offsets.h && ctx->be->topk_sort, 11, call_softmax_topk, d, "softmax_topk", &st))
        return st;
    struct dy_softmax_topk_desc plain = *d;
    plain.offsets = plain.sorted = plain.position = (dy_buf){ 0 };
    if ((st = checked(ctx, run_op(ctx, 11, call_softmax_topk, &plain), "softmax_topk")) || !d->offsets.h)
        return st;
    struct dy_moe_sort_desc sd = { .ids = d->ids, .offsets = d->offsets, .sorted = d->sorted,
                                   .position = d->position, .pairs = d->tokens * d->k, .experts = d->experts };
    return dy_moe_sort(ctx, &sd);
}

static int call_gemm_grouped(dy_ctx *ctx, const void *d)
{
    return ctx->be->gemm_grouped(ctx->impl, (const struct dy_gemm_grouped_desc *)d);
}

/* The grouped GEMM with its SiLU-mul and its scatter-add: the backend's
 * where it declares the parts set, else the GEMM and each part's op. */
int dy_gemm_grouped(dy_ctx *ctx, const struct dy_gemm_grouped_desc *d)
{
    if (!ctx->be->gemm_grouped || (dy_dtype_quantized(d->b_dtype) && !ctx->be->dequantize))
        return fail(ctx, DY_E_UNSUPPORTED, "gemm_grouped");
    if ((d->act != DY_ACT_NONE && d->act != DY_ACT_SWIGLU) ||
        (d->act == DY_ACT_SWIGLU && (d->n % 2 || d->ldc < d->n)))
        return fail(ctx, DY_E_INVALID, "gemm_grouped (the act is SwiGLU of an even n, ldc >= n, or none)");
    const struct dy_grouped_scatter *sc = &d->scatter;
    if (sc->dst.h && (d->act != DY_ACT_NONE || !sc->weights.h || !sc->position.h || sc->tokens < 0 || sc->k < 1 ||
                      (long long)sc->tokens * sc->k != d->rows || sc->dst_stride < d->n))
        return fail(ctx, DY_E_INVALID, "gemm_grouped (a scatter needs weights, position, tokens * k = rows, "
                                       "dst_stride >= n and no act)");
    bool whole = (d->act == DY_ACT_NONE || (ctx->be->grouped_acts & (1u << d->act))) &&
                 (!sc->dst.h || ctx->be->grouped_scatter);
    int st;
    if (try_whole(ctx, whole && (d->act != DY_ACT_NONE || sc->dst.h), 13, call_gemm_grouped, d, "gemm_grouped",
                  &st))
        return st;
    struct dy_gemm_grouped_desc plain = *d;
    plain.act = DY_ACT_NONE;
    plain.scatter = (struct dy_grouped_scatter){ 0 };
    if ((st = checked(ctx, run_op(ctx, 13, call_gemm_grouped, &plain), "gemm_grouped")))
        return st;
    if (d->act == DY_ACT_SWIGLU)
        return swiglu_in_place(ctx, d->c, d->rows, d->n, d->ldc, DY_F32);
    if (!sc->dst.h)
        return DY_OK;
    struct dy_scatter_add_rows_desc ad = { .src = d->c, .dst = sc->dst, .weights = sc->weights,
                                           .position = sc->position, .tokens = sc->tokens, .k = sc->k,
                                           .cols = d->n, .src_stride = d->ldc, .dst_stride = sc->dst_stride };
    return dy_scatter_add_rows(ctx, &ad);
}

/* A KV append's fields are whole and its K and V columns lie in the first
 * `cols` of a row (an int8 cache has no composed path here). */
static bool append_fits(const struct dy_gemm_append *ap, int cols)
{
    long long kvd = (long long)ap->kv_heads * ap->head_dim;
    return ap->v_cache.h && ap->slots.h && kvd > 0 && ap->k_col >= 0 && ap->v_col >= 0 && ap->k_col + kvd <= cols &&
           ap->v_col + kvd <= cols && ap->cache_dtype != DY_I8;
}

/* dy_kv_append of the K and V columns ap names in `rows` rows of src,
 * `stride` elements apart: an append composed after the op that wrote them */
static int append_columns(dy_ctx *ctx, const struct dy_gemm_append *ap, dy_buf src, int stride, int rows,
                          enum dy_dtype dtype)
{
    size_t es = dy_dtype_size(dtype);
    struct dy_kv_append_desc kd = {
        .k = dy_buf_at(src, (size_t)ap->k_col * es), .v = dy_buf_at(src, (size_t)ap->v_col * es),
        .src_stride = stride, .slots = ap->slots, .k_cache = ap->k_cache, .v_cache = ap->v_cache,
        .tokens = rows, .kv_heads = ap->kv_heads, .head_dim = ap->head_dim, .src_dtype = dtype,
        .cache_dtype = ap->cache_dtype,
    };
    return dy_kv_append(ctx, &kd);
}

static int call_rope(dy_ctx *ctx, const void *d)
{
    return ctx->be->rope(ctx->impl, (const struct dy_rope_desc *)d);
}

/* The rotation with its q/k norms before and its KV append after: the
 * backend's where it declares them, else dy_norm of each part in place,
 * the plain rotation and dy_kv_append of the K and V columns. */
int dy_rope(dy_ctx *ctx, const struct dy_rope_desc *d)
{
    if (!ctx->be->rope)
        return fail(ctx, DY_E_UNSUPPORTED, "rope");
    const struct dy_rope_norm *nm = &d->norm;
    const struct dy_gemm_append *ap = &d->append;
    if (nm->q_weight.h && (!nm->k_weight.h || nm->q_cols <= 0 || nm->k_cols <= 0 || nm->group < 0 ||
                           nm->q_cols + nm->k_cols > d->row_stride ||
                           (nm->group && (nm->q_cols % nm->group || nm->k_cols % nm->group))))
        return fail(ctx, DY_E_INVALID, "rope (q/k norms need both weights, columns inside the row and "
                                       "whole groups)");
    if (ap->k_cache.h && !append_fits(ap, d->row_stride))
        return fail(ctx, DY_E_INVALID, "rope (a KV append needs slots, both caches, K and V "
                                       "columns inside the row, a cache that is not int8)");
    if (!nm->q_weight.h && !ap->k_cache.h)
        return checked(ctx, run_op(ctx, 3, call_rope, d), "rope");
    int st;
    if (try_whole(ctx, ctx->be->rope_fused, 3, call_rope, d, "rope", &st))
        return st;
    size_t es = dy_dtype_size(d->dtype);
    /* whole parts: one norm of every token's row a part; groups: a norm a
     * token and part, over its groups as rows */
    for (int t = 0; nm->q_weight.h && t < (nm->group ? d->tokens : 1); t++)
        for (int part = 0; part < 2; part++) {
            int cols = part ? nm->k_cols : nm->q_cols;
            dy_buf x = dy_buf_at(d->x, ((size_t)t * d->row_stride + (part ? (size_t)nm->q_cols : 0)) * es);
            struct dy_norm_desc nd = {
                .kind = DY_NORM_RMS, .x = x, .weight = part ? nm->k_weight : nm->q_weight, .out = x,
                .rows = nm->group ? cols / nm->group : d->tokens, .dim = nm->group ? nm->group : cols,
                .x_stride = nm->group ? nm->group : d->row_stride, .eps = nm->eps, .dtype = d->dtype,
                .weight_dtype = nm->weight_dtype, .out_dtype = d->dtype,
            };
            nd.out_stride = nd.x_stride;
            if ((st = dy_norm(ctx, &nd)))
                return st;
        }
    struct dy_rope_desc plain = *d;
    plain.norm = (struct dy_rope_norm){ 0 };
    plain.append = (struct dy_gemm_append){ 0 };
    if ((st = checked(ctx, run_op(ctx, 3, call_rope, &plain), "rope")) || !ap->k_cache.h)
        return st;
    return append_columns(ctx, ap, d->x, d->row_stride, d->tokens, d->dtype);
}

static int call_gemm(dy_ctx *ctx, const void *d)
{
    return ctx->be->gemm(ctx->impl, (const struct dy_gemm_desc *)d);
}

/* dy_gemm of d without its KV append, then dy_kv_append over C's K and V
 * columns. */
static int gemm_then_append(dy_ctx *ctx, const struct dy_gemm_desc *d)
{
    const struct dy_gemm_append *ap = &d->append;
    struct dy_gemm_desc plain = *d;
    plain.append = (struct dy_gemm_append){ 0 };
    int st = dy_gemm(ctx, &plain);
    return st ? st : append_columns(ctx, ap, d->c, d->ldc, d->m, d->c_dtype);
}

/* A GEMM with a norm of A: the backend's where it offers one for this
 * call, else dy_norm into A and the GEMM. With a KV append: the
 * backend's, else the GEMM and dy_kv_append over C. With an activation: the
 * backend's fused epilogue where it offers one for this call, else the
 * plain GEMM and the element-wise op over C (SwiGLU: over C's first half,
 * the gate, with its second, the up; RoPE: dy_rope over C's first heads). */
int dy_gemm(dy_ctx *ctx, const struct dy_gemm_desc *d)
{
    if (!ctx->be->gemm || (dy_dtype_quantized(d->b_dtype) && !ctx->be->dequantize))
        return fail(ctx, DY_E_UNSUPPORTED, "gemm");
    if ((unsigned)d->act > DY_ACT_ROPE || (d->act != DY_ACT_NONE && d->beta != 0.0f))
        return fail(ctx, DY_E_INVALID, "gemm (an activation needs beta 0)");
    if (d->act == DY_ACT_SWIGLU && (d->n % 2 || d->ldc < d->n))
        return fail(ctx, DY_E_INVALID, "gemm (SwiGLU needs an even n and ldc >= n)");
    const struct dy_gemm_rope *r = &d->rope;
    if (d->act == DY_ACT_ROPE && (r->head_dim <= 0 || r->head_dim % 2 || r->heads < 0 ||
                                  (long long)r->heads * r->head_dim > d->n || !r->positions.h || !r->inv_freq.h))
        return fail(ctx, DY_E_INVALID, "gemm (RoPE needs an even head_dim, heads * head_dim <= n, "
                                       "positions and inv_freq)");
    const struct dy_gemm_norm *nm = &d->norm;
    const struct dy_gemm_append *ap = &d->append;
    if (nm->x.h && (!nm->weight.h || nm->x_stride < d->k))
        return fail(ctx, DY_E_INVALID, "gemm (a norm needs its weight and x_stride >= k)");
    if (ap->k_cache.h && !append_fits(ap, d->n))
        return fail(ctx, DY_E_INVALID, "gemm (a KV append needs slots, both caches, K and V "
                                       "columns inside C, a cache that is not int8)");
    /* a backend sees only the parts it declares: the rest is composed
     * around its call */
    bool act_ok = d->act == DY_ACT_NONE || (ctx->be->gemm_acts & (1u << d->act));
    if (ap->k_cache.h && !ctx->be->gemm_append)
        return gemm_then_append(ctx, d);
    int st;
    if (nm->x.h) {
        if (try_whole(ctx, ctx->be->gemm_norm && act_ok, 1, call_gemm, d, "gemm", &st))
            return st;
        struct dy_norm_desc nd = { .kind = DY_NORM_RMS, .x = nm->x, .weight = nm->weight, .out = d->a,
                                   .rows = d->m, .dim = d->k, .x_stride = nm->x_stride, .out_stride = d->lda,
                                   .eps = nm->eps, .dtype = nm->x_dtype, .weight_dtype = nm->weight_dtype,
                                   .out_dtype = d->a_dtype };
        if ((st = dy_norm(ctx, &nd)))
            return st;
        struct dy_gemm_desc plain = *d;
        plain.norm = (struct dy_gemm_norm){ 0 };
        return dy_gemm(ctx, &plain);
    }
    if (ap->k_cache.h)
        return try_whole(ctx, act_ok, 1, call_gemm, d, "gemm", &st) ? st : gemm_then_append(ctx, d);
    if (d->act == DY_ACT_NONE)
        return checked(ctx, run_op(ctx, 1, call_gemm, d), "gemm");
    if (try_whole(ctx, act_ok, 1, call_gemm, d, "gemm", &st))
        return st;
    struct dy_gemm_desc plain = *d;
    plain.act = DY_ACT_NONE;
    if ((st = dy_gemm(ctx, &plain)))
        return st;
    if (d->act == DY_ACT_ROPE) {
        struct dy_rope_desc rd = { .x = d->c, .positions = r->positions, .inv_freq = r->inv_freq,
                                   .tokens = d->m, .heads = r->heads, .head_dim = r->head_dim,
                                   .row_stride = d->ldc, .dtype = d->c_dtype };
        return dy_rope(ctx, &rd);
    }
    if (d->act == DY_ACT_SWIGLU)
        return swiglu_in_place(ctx, d->c, d->m, d->n, d->ldc, d->c_dtype);
    struct dy_eltwise_desc e = { .op = DY_ELT_GELU, .a = d->c, .out = d->c, .rows = d->m, .cols = d->n,
                                 .a_stride = d->ldc, .out_stride = d->ldc, .dtype = d->c_dtype };
    return dy_eltwise(ctx, &e);
}
