/* Shared by the device-machine micro-benchmarks (kv_bench.c, quant_bench.c,
 * moe_ops_bench.c):
 * the context, a failing call's exit, allocation, seeded fills, and the
 * median time of a run of calls between two device events. Define REPS
 * (timed repetitions) and BENCH_SEED before including it; one benchmark
 * per executable, so the statics are its own. */
#ifndef DY_BENCH_UTIL_H
#define DY_BENCH_UTIL_H

#include <stdio.h>
#include <stdlib.h>

#include "backends/backend.h"

static dy_ctx *ctx;

#define CHECK(call)                                                                        \
    do {                                                                                   \
        if ((call) != DY_OK) {                                                             \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, dy_ctx_error(ctx)); \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

static dy_buf alloc(size_t bytes)
{
    dy_buf b;
    CHECK(dy_buf_alloc(ctx, bytes, &b));
    return b;
}

static void fill(dy_buf b, size_t count, enum dy_dtype t, uint64_t stream, float scale, float offset)
{
    struct dy_fill_random_desc d = { .dst = b, .count = count, .dtype = t, .seed = BENCH_SEED,
                                     .stream = stream, .scale = scale, .offset = offset };
    CHECK(dy_fill_random(ctx, &d));
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Called before each repetition's first event when set (moe_ops_bench:
 * evicting the weights from L2). */
static void (*before_rep)(void);

/* op(arg, i) enqueues call i of `calls` back to back; median seconds per call */
typedef void (*op_fn)(void *arg, int i);

static double time_calls(op_fn op, void *arg, int calls)
{
    void *e0, *e1;
    double s[REPS];
    CHECK(dy_event_create(ctx, &e0));
    CHECK(dy_event_create(ctx, &e1));
    for (int r = -2; r < REPS; r++) {
        uint64_t ns;
        if (before_rep)
            before_rep();
        CHECK(dy_event_record(ctx, e0));
        for (int i = 0; i < calls; i++)
            op(arg, i);
        CHECK(dy_event_record(ctx, e1));
        CHECK(dy_event_elapsed_ns(ctx, e0, e1, &ns));
        if (r >= 0)
            s[r] = ns * 1e-9 / calls;
    }
    dy_event_destroy(ctx, e0);
    dy_event_destroy(ctx, e1);
    qsort(s, REPS, sizeof s[0], cmp_double);
    return s[REPS / 2];
}

static void do_graph_launch(void *graph, int i)
{
    (void)i;
    CHECK(dy_graph_launch(ctx, graph));
}

/* The same calls recorded as one graph, as a decode step runs them: median
 * seconds per call of its replays (NAN without graphs). */
__attribute__((unused)) static double time_calls_graph(op_fn op, void *arg, int calls)
{
    void *graph;
    if (!dy_graph_available(ctx))
        return NAN;
    /* once outside the graph: scratch the ops grow is not allocated
     * while a graph records */
    for (int i = 0; i < calls; i++)
        op(arg, i);
    CHECK(dy_graph_begin(ctx));
    for (int i = 0; i < calls; i++)
        op(arg, i);
    CHECK(dy_graph_end(ctx, &graph));
    double t = time_calls(do_graph_launch, graph, 1) / calls;
    dy_graph_destroy(ctx, graph);
    return t;
}

/* the copy-bandwidth ceiling: buf_copy of `bytes` */
struct copy_arg { dy_buf src, dst; size_t bytes; };

static void do_copy(void *arg, int i)
{
    struct copy_arg *a = arg;
    (void)i;
    CHECK(dy_buf_copy(ctx, a->dst, a->src, a->bytes));
}

/* the device open_cuda opened */
static struct dy_device_info device;

/* Opens cuda device 0 into ctx and prints its header line; false (the
 * caller exits 77, "skipped") when there is none. */
static bool open_cuda(const char *bench)
{
    char why[256];
    const struct dy_backend *be = dy_registry_find("cuda", why, sizeof why);
    if (!be || be->device_info(0, &device) != DY_OK || dy_ctx_create(be, 0, &ctx) != DY_OK) {
        fprintf(stderr, "%s: no cuda backend: %s\n", bench, why);
        return false;
    }
    printf("## %s (%s), %d SMs\n\n", device.name, device.driver_version, device.compute_units);
    return true;
}

/* GB/s read + written by a 1 GiB buf_copy: the bandwidth ceiling */
static double copy_gbps(void)
{
    struct copy_arg ca = { alloc((size_t)1 << 30), alloc((size_t)1 << 30), (size_t)1 << 30 };
    fill(ca.src, ca.bytes / 4, DY_F32, 1, 1.0f, 0.0f);
    double gbps = 2.0 * ca.bytes / time_calls(do_copy, &ca, 1) * 1e-9;
    dy_buf_free(ctx, &ca.src);
    dy_buf_free(ctx, &ca.dst);
    return gbps;
}

#endif
