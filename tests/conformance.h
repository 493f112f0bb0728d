/* Shared by the conformance tests: the backends under test, host data,
 * device buffers with guard bytes, and comparison against cpu-ref. Static
 * functions in a header: each test executable includes it once. */
#ifndef DY_TEST_CONFORMANCE_H
#define DY_TEST_CONFORMANCE_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../backends/backend.h"
#include "dy_test.h"

#define GUARD 64
#define GUARD_BYTE 0xA5

struct dut {
    const char *name;
    dy_ctx *ctx;
};

static dy_ctx *ref_ctx;
static struct dut duts[16];
static int dut_count;

/* Backends under test: every device of every available backend except the
 * oracle itself and the fault-injection plugin of the test tree. A
 * backend's first device goes by the backend's name, its others by
 * "name:N" (a machine with PoCL and a GPU's OpenCL driver has both). */
static void open_backends(void)
{
    static char names[16][48];
    if (ref_ctx)
        return;
    const struct dy_backend_entry *list;
    int count;
    dy_registry_list(&list, &count);
    for (int i = 0; i < count; i++) {
        if (!list[i].be || !strcmp(list[i].name, "faulty"))
            continue;
        bool oracle = !strcmp(list[i].name, "cpu-ref");
        int devices = 1;
        if (!oracle && list[i].be->device_count && list[i].be->device_count(&devices) != DY_OK)
            devices = 1;
        for (int dev = 0; dev < (devices > 1 ? devices : 1); dev++) {
            dy_ctx *ctx;
            if (dy_ctx_create(list[i].be, dev, &ctx) != DY_OK)
                continue;
            if (oracle) {
                ref_ctx = ctx;
            } else if (dut_count < 16) {
                snprintf(names[dut_count], sizeof names[0], dev ? "%s:%d" : "%s", list[i].name, dev);
                duts[dut_count] = (struct dut){ names[dut_count], ctx };
                dut_count++;
            } else {
                dy_ctx_destroy(ctx);
            }
        }
    }
    printf("# backends under test against cpu-ref:");
    for (int i = 0; i < dut_count; i++)
        printf(" %s", duts[i].name);
    printf("\n");
}

static uint64_t rng_state = 0x12345678;

static float frand(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng_state >> 40) & 0xffffff) / 16777216.0f * 2.0f - 1.0f;
}

/* Host array of `count` values of dtype t, uniform in [-scale, scale). */
static void *host_random(enum dy_dtype t, size_t count, float scale)
{
    void *p = malloc(count * dy_dtype_size(t) + 1);
    for (size_t i = 0; i < count; i++)
        dy_store_f32(p, t, i, frand() * scale);
    return p;
}

static dy_buf upload(dy_ctx *ctx, const void *host, size_t bytes)
{
    dy_buf b;
    DY_REQUIRE(dy_buf_alloc(ctx, bytes + GUARD, &b) == DY_OK);
    DY_REQUIRE(dy_buf_fill(ctx, b, GUARD_BYTE, bytes + GUARD) == DY_OK);
    if (host)
        DY_REQUIRE(dy_buf_write(ctx, b, host, bytes) == DY_OK);
    return b;
}

/* Frees each of `count` buffers (those never allocated are NULL views). */
static inline void free_bufs(dy_ctx *ctx, dy_buf *const *bufs, size_t count)
{
    for (size_t i = 0; i < count; i++)
        dy_buf_free(ctx, bufs[i]);
}
#define FREE_BUFS(ctx, ...)                                                                        \
    free_bufs(ctx, (dy_buf *const[]){ __VA_ARGS__ },                                               \
              sizeof((dy_buf *const[]){ __VA_ARGS__ }) / sizeof(dy_buf *))

/* Reads `bytes` back and checks the guard after them. */
static void *download(dy_ctx *ctx, dy_buf b, size_t bytes)
{
    unsigned char *p = malloc(bytes + GUARD);
    DY_REQUIRE(dy_buf_read(ctx, b, p, bytes + GUARD) == DY_OK);
    for (int i = 0; i < GUARD; i++) {
        if (p[bytes + i] != GUARD_BYTE) {
            printf("# %s wrote past its output (guard byte %d)\n", dy_ctx_backend(ctx)->name, i);
            DY_CHECK(p[bytes + i] == GUARD_BYTE);
            break;
        }
    }
    return p;
}

/* max |a - b| / max |ref| over count values of dtype t; prints on failure. */
static bool close_enough(const char *what, const char *backend, const void *ref, const void *got,
                         enum dy_dtype t, size_t count, double tol)
{
    double max_ref = 1e-6, max_err = 0.0;
    size_t worst = 0;
    for (size_t i = 0; i < count; i++) {
        double r = dy_load_f32(ref, t, i), g = dy_load_f32(got, t, i);
        if (fabs(r) > max_ref)
            max_ref = fabs(r);
        double e = fabs(r - g);
        if (!(e <= max_err)) { /* NaN counts as the worst */
            max_err = isnan(e) ? INFINITY : e;
            worst = i;
        }
    }
    double rel = max_err / max_ref;
    if (!(rel <= tol)) {
        printf("# %s on %s: relative error %.3g > %.3g at %zu (ref %g, got %g)\n", what, backend,
               rel, tol, worst, dy_load_f32(ref, t, worst), dy_load_f32(got, t, worst));
        return false;
    }
    return true;
}


static void require_backends(void)
{
    open_backends();
    DY_REQUIRE(ref_ctx != NULL);
    if (dut_count == 0)
        DY_SKIP("no backend besides cpu-ref");
}

/* Compares one output of the reference run (u < 0) with each backend's. */
static void *compare_or_keep(int u, void *want, void *got, const char *what, enum dy_dtype t,
                             size_t count, double tol)
{
    if (u < 0)
        return got;
    DY_CHECK(close_enough(what, duts[u].name, want, got, t, count, tol));
    free(got);
    return want;
}

#define CTX_OF(u) ((u) < 0 ? ref_ctx : duts[u].ctx)

static int32_t *random_ids(int pairs, int experts, bool skewed)
{
    int32_t *ids = malloc(sizeof *ids * (size_t)pairs + 1);
    for (int p = 0; p < pairs; p++) {
        int e = (int)((frand() + 1.0f) * 0.5f * experts) % experts;
        ids[p] = skewed && p % 4 ? 1 % experts : e;
    }
    return ids;
}

/* A host-side stable grouping, to give gemm_grouped and scatter_add_rows
 * their inputs without depending on moe_sort. */
static void host_sort(const int32_t *ids, int pairs, int experts, int32_t *offsets, int32_t *sorted,
                      int32_t *position)
{
    memset(offsets, 0, ((size_t)experts + 1) * 4);
    for (int p = 0; p < pairs; p++)
        offsets[ids[p] + 1]++;
    for (int e = 0; e < experts; e++)
        offsets[e + 1] += offsets[e];
    int32_t *next = malloc(((size_t)experts + 1) * 4);
    memcpy(next, offsets, ((size_t)experts + 1) * 4);
    for (int p = 0; p < pairs; p++) {
        int r = next[ids[p]]++;
        sorted[r] = p;
        position[p] = r;
    }
    free(next);
}

/* The fused parts of gemm_grouped (dy_gemm_grouped_desc.act, .scatter) as
 * the grouped cases run them. */
enum grouped_part { GROUPED_PLAIN, GROUPED_SWIGLU, GROUPED_SCATTER };

/* What the part makes of the plain grouped GEMM's C (tokens * topk rows,
 * ldc apart) on the host, cpu-ref's check of its composition: SwiGLU in
 * place in each row's first n/2 columns (the rest zeroed), or a copy of
 * dst0 with each token's weighted rows added (c is freed). */
static float *grouped_part_host(enum grouped_part part, float *c, int tokens, int topk, int n, int ldc,
                                int dst_stride, const void *dst0, const float *weights, const int32_t *position)
{
    if (part == GROUPED_SWIGLU) {
        for (int r = 0; r < tokens * topk; r++)
            for (int j = 0; j < n / 2; j++) {
                float *row = c + (size_t)r * ldc;
                double x = row[j];
                row[j] = (float)(x / (1.0 + exp(-x)) * row[n / 2 + j]);
                row[n / 2 + j] = 0.0f;
            }
        return c;
    }
    size_t dst_n = (size_t)tokens * dst_stride;
    float *dst = malloc(dst_n * 4);
    memcpy(dst, dst0, dst_n * 4);
    for (int t = 0; t < tokens; t++)
        for (int i = 0; i < n; i++) {
            double acc = dst[(size_t)t * dst_stride + i];
            for (int j = 0; j < topk; j++) {
                size_t p = (size_t)t * topk + j;
                acc += (double)weights[p] * c[(size_t)position[p] * ldc + i];
            }
            dst[(size_t)t * dst_stride + i] = (float)acc;
        }
    free(c);
    return dst;
}

/* A grouped case's routes, uploaded before the rest (so that a settled
 * promise holds): the offsets, and for a scatter its weights and position
 * (rows = tokens * topk pairs). */
static void grouped_routes_upload(dy_ctx *ctx, struct dy_gemm_grouped_desc *d, enum grouped_part part,
                                  const int32_t *offsets, const float *weights, const int32_t *position,
                                  int tokens, int topk, int dst_stride)
{
    d->offsets = upload(ctx, offsets, ((size_t)d->experts + 1) * 4);
    if (part == GROUPED_SCATTER)
        d->scatter = (struct dy_grouped_scatter){ .weights = upload(ctx, weights, (size_t)d->rows * 4),
                                                  .position = upload(ctx, position, (size_t)d->rows * 4),
                                                  .tokens = tokens, .k = topk, .dst_stride = dst_stride };
}

/* Runs d with C zeroed first and, for a scatter, dst from dst0; returns
 * what a case compares: dst for a scatter, else C with its undefined
 * columns zeroed (past n, past n/2 under SwiGLU). Frees C and dst. */
static float *grouped_run_desc(dy_ctx *ctx, struct dy_gemm_grouped_desc *d, enum grouped_part part,
                               const void *dst0)
{
    size_t c_n = (size_t)d->rows * d->ldc, dst_n = (size_t)d->scatter.tokens * d->scatter.dst_stride;
    void *zeros = calloc(c_n, 4);
    d->c = upload(ctx, zeros, c_n * 4);
    free(zeros);
    if (part == GROUPED_SCATTER)
        d->scatter.dst = upload(ctx, dst0, dst_n * 4);
    DY_CHECK(dy_gemm_grouped(ctx, d) == DY_OK);
    float *got;
    if (part == GROUPED_SCATTER) {
        got = download(ctx, d->scatter.dst, dst_n * 4);
    } else {
        got = download(ctx, d->c, c_n * 4);
        int cols = part == GROUPED_SWIGLU ? d->n / 2 : d->n;
        for (int r = 0; r < d->rows; r++)
            memset(got + (size_t)r * d->ldc + cols, 0, (size_t)(d->ldc - cols) * 4);
    }
    FREE_BUFS(ctx, &d->c, &d->scatter.dst);
    return got;
}

#endif
