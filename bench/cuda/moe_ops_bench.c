/* How close the CUDA backend's MoE ops run to the card's limits, through the
 * dy_* API. In one run: the copy bandwidth (buf_copy, bytes read + written)
 * and the dense bf16 GEMM rate as ceilings; OLMoE-1B-7B's expert GEMMs
 * (64 experts, top-8, hidden 2048, expert ffn 1024, bf16) at decode as GB/s
 * over the touched experts' bytes, and at prefill as TFLOP/s beside a dense
 * GEMM of the same FLOPs and beside the roofline (the touched weights at
 * copy bandwidth, the FLOPs at the dense rate); every grouped-GEMM path
 * (DYNO_CUDA_MOE_GEMM) checked against per-expert dy_gemm; the routing ops'
 * times. Each figure is the median of REPS timed runs after warm-up. Before
 * each run an argmax over 128 MB evicts the weights from L2 and keeps the
 * queue busy while the run is enqueued, so that the events time the device
 * and not the host's launch; the routing sets rotate as well. Decode adds
 * the per-call time of 8 calls back to back (8 routing sets; at one token
 * they take disjoint experts), as the calls follow each other in a step.
 *
 * Built by bench/cuda/pack_bench.sh moe_ops_bench against a build tree's static libraries;
 * on the device machine bench/cuda/moe_check.sh runs it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/backend.h"

#define REPS 15
#define SETS 8 /* rotating routing sets */
#define EXPERTS 64
#define TOPK 8
#define HIDDEN 2048
#define FFN 1024
#define BENCH_SEED 7
#include "bench/cuda/bench_util.h"

static struct dy_argmax_desc flush; /* reads 128 MB, writes 32 ints */

static dy_buf upload(const void *host, size_t bytes)
{
    dy_buf b = alloc(bytes);
    CHECK(dy_buf_write(ctx, b, host, bytes));
    return b;
}

/* One run of op(arg, set) after the flush, the sets rotating; median
 * seconds */
static double time_op(op_fn op, void *arg)
{
    void *e0, *e1;
    double s[REPS];
    CHECK(dy_event_create(ctx, &e0));
    CHECK(dy_event_create(ctx, &e1));
    for (int r = -3; r < REPS; r++) {
        uint64_t ns;
        CHECK(dy_argmax(ctx, &flush));
        CHECK(dy_event_record(ctx, e0));
        op(arg, (r + 3) % SETS);
        CHECK(dy_event_record(ctx, e1));
        CHECK(dy_event_elapsed_ns(ctx, e0, e1, &ns));
        if (r >= 0)
            s[r] = ns * 1e-9;
    }
    dy_event_destroy(ctx, e0);
    dy_event_destroy(ctx, e1);
    qsort(s, REPS, sizeof s[0], cmp_double);
    return s[REPS / 2];
}

static void flush_l2(void)
{
    CHECK(dy_argmax(ctx, &flush));
}

/* Per-call seconds with SETS calls back to back on the SETS input sets,
 * as a decode step's kernels follow each other in the queue: launches
 * overlap the previous call, kernel boundaries remain. Median of REPS. */
static double time_op_stream(op_fn op, void *arg)
{
    before_rep = flush_l2;
    double t = time_calls(op, arg, SETS);
    before_rep = NULL;
    return t;
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static int rand_below(int n)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (int)((rng >> 33) % (uint64_t)n);
}

/* ---- ceilings ---- */
static void do_gemm(void *arg, int set)
{
    CHECK(dy_gemm(ctx, arg));
}

/* dense C[m,n] = A[m,k] . B[n,k]^T, A and B bf16: TFLOP/s */
static double dense_tflops(int m, int n, int k)
{
    struct dy_gemm_desc d = { .m = m, .n = n, .k = k, .lda = k, .ldb = k, .ldc = n,
                              .a_dtype = DY_BF16, .b_dtype = DY_BF16, .c_dtype = DY_F32 };
    d.a = alloc((size_t)m * k * 2);
    d.b = alloc((size_t)n * k * 2);
    d.c = alloc((size_t)m * n * 4);
    fill(d.a, (size_t)m * k, DY_BF16, 100, 1.0f, 0.0f);
    fill(d.b, (size_t)n * k, DY_BF16, 101, 0.05f, 0.0f);
    double t = time_op(do_gemm, &d);
    dy_buf_free(ctx, &d.a);
    dy_buf_free(ctx, &d.b);
    dy_buf_free(ctx, &d.c);
    return 2.0 * m * n * k / t * 1e-12;
}

/* ---- routing sets: each token's top-k experts, distinct, sorted on the host ---- */
struct routing {
    int tokens, rows;
    dy_buf offsets[SETS], sorted[SETS];
    int32_t *h_offsets[SETS], *h_sorted[SETS];
    int touched[SETS]; /* experts with rows */
};

/* Decode sets at one token take disjoint expert groups so that no set
 * finds its weights in L2; larger sets draw uniformly. */
static void make_routing(struct routing *rt, int tokens)
{
    rt->tokens = tokens;
    rt->rows = tokens * TOPK;
    int32_t *ids = malloc(sizeof *ids * rt->rows);
    for (int s = 0; s < SETS; s++) {
        for (int t = 0; t < tokens; t++) {
            int perm[EXPERTS];
            for (int e = 0; e < EXPERTS; e++)
                perm[e] = e;
            for (int j = 0; j < TOPK; j++) {
                int pick = j + rand_below(EXPERTS - j), tmp = perm[j];
                perm[j] = perm[pick];
                perm[pick] = tmp;
                ids[t * TOPK + j] = tokens == 1 ? (s * TOPK + j) % EXPERTS : perm[j];
            }
        }
        int32_t *off = calloc(EXPERTS + 1, sizeof *off), *sorted = malloc(sizeof *sorted * rt->rows);
        int next[EXPERTS];
        for (int p = 0; p < rt->rows; p++)
            off[ids[p] + 1]++;
        for (int e = 0; e < EXPERTS; e++)
            off[e + 1] += off[e];
        memcpy(next, off, sizeof next);
        for (int p = 0; p < rt->rows; p++)
            sorted[next[ids[p]]++] = p;
        rt->touched[s] = 0;
        for (int e = 0; e < EXPERTS; e++)
            rt->touched[s] += off[e + 1] > off[e];
        rt->h_offsets[s] = off;
        rt->h_sorted[s] = sorted;
        rt->offsets[s] = upload(off, sizeof *off * (EXPERTS + 1));
        rt->sorted[s] = upload(sorted, sizeof *sorted * rt->rows);
    }
    free(ids);
}

static void free_routing(struct routing *rt)
{
    for (int s = 0; s < SETS; s++) {
        dy_buf_free(ctx, &rt->offsets[s]);
        dy_buf_free(ctx, &rt->sorted[s]);
        free(rt->h_offsets[s]);
        free(rt->h_sorted[s]);
    }
}

/* One projection: gate_up (A = tokens' rows, gathered) or down (A = the
 * sorted rows as they are). */
struct proj {
    struct routing *rt;
    struct dy_gemm_grouped_desc d;
    bool gather;
};

static void do_grouped(void *arg, int set)
{
    struct proj *p = arg;
    p->d.offsets = p->rt->offsets[set];
    p->d.a_rows = p->gather ? p->rt->sorted[set] : (dy_buf){ 0 };
    CHECK(dy_gemm_grouped(ctx, &p->d));
}

static void set_path(const char *path)
{
    if (path)
        setenv("DYNO_CUDA_MOE_GEMM", path, 1);
    else
        unsetenv("DYNO_CUDA_MOE_GEMM");
}

/* max |C - C_ref| / max |C_ref| of set 0's output, the reference one
 * dy_gemm per expert (cuBLAS, or the GEMV for a few rows) on the rows
 * gathered on the host */
static double check_proj(struct proj *p, dy_buf weights)
{
    struct routing *rt = p->rt;
    int rows = rt->rows, n = p->d.n, k = p->d.k;
    do_grouped(p, 0);
    float *got = malloc(sizeof *got * rows * n), *want = malloc(sizeof *want * rows * n);
    float *a = malloc(sizeof *a * rows * k), *a_all = malloc(sizeof *a_all * (size_t)p->d.lda * rows);
    int a_rows_total = p->gather ? rt->tokens : rows;
    CHECK(dy_buf_read(ctx, p->d.c, got, sizeof *got * rows * n));
    CHECK(dy_buf_read(ctx, p->d.a, a_all, sizeof *a_all * (size_t)p->d.lda * a_rows_total));
    for (int r = 0; r < rows; r++) {
        int src = p->gather ? rt->h_sorted[0][r] / TOPK : r;
        memcpy(a + (size_t)r * k, a_all + (size_t)src * p->d.lda, sizeof *a * k);
    }
    dy_buf a_dev = upload(a, sizeof *a * rows * k), c_dev = alloc(sizeof *want * rows * n);
    for (int e = 0; e < EXPERTS; e++) {
        int r0 = rt->h_offsets[0][e], r1 = rt->h_offsets[0][e + 1];
        if (r1 <= r0)
            continue;
        struct dy_gemm_desc g = { .m = r1 - r0, .n = n, .k = k, .lda = k, .ldb = k, .ldc = n,
                                  .a_dtype = DY_F32, .b_dtype = DY_BF16, .c_dtype = DY_F32 };
        g.a = dy_buf_at(a_dev, sizeof *a * r0 * k);
        g.b = dy_buf_at(weights, (size_t)e * p->d.b_expert_stride * 2);
        g.c = dy_buf_at(c_dev, sizeof *want * r0 * n);
        CHECK(dy_gemm(ctx, &g));
    }
    CHECK(dy_buf_read(ctx, c_dev, want, sizeof *want * rows * n));
    double max_ref = 1e-30, max_err = 0.0;
    for (size_t i = 0; i < (size_t)rows * n; i++) {
        double err = fabs((double)got[i] - want[i]);
        max_ref = fmax(max_ref, fabs(want[i]));
        max_err = isnan(err) ? INFINITY : fmax(max_err, err);
    }
    dy_buf_free(ctx, &a_dev);
    dy_buf_free(ctx, &c_dev);
    free(got);
    free(want);
    free(a);
    free(a_all);
    return max_err / max_ref;
}

struct summary {
    char line[24][200];
    int count;
};

static struct summary sum;

#define SUMMARY(...) snprintf(sum.line[sum.count++], sizeof sum.line[0], __VA_ARGS__)

/* ---- decode: gate_up and down at a few batch sizes, auto and each path ---- */
static void bench_decode(dy_buf w1, dy_buf w2, double copy)
{
    static const int batches[] = { 1, 4, 8, 16, 32 };
    static const char *const paths[] = { NULL, "gemv", "mma" };
    printf("\n| decode | tokens | rows | path | experts touched | MB touched | time us | GB/s | of copy |"
           " in stream us | GB/s | of copy | err |\n|---|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for (size_t b = 0; b < sizeof batches / sizeof batches[0]; b++) {
        struct routing rt;
        make_routing(&rt, batches[b]);
        double touched = 0;
        for (int s = 0; s < SETS; s++)
            touched += rt.touched[s];
        touched /= SETS;
        dy_buf x = alloc(sizeof(float) * rt.tokens * HIDDEN), h = alloc(sizeof(float) * rt.rows * FFN);
        dy_buf c1 = alloc(sizeof(float) * rt.rows * 2 * FFN), c2 = alloc(sizeof(float) * rt.rows * HIDDEN);
        fill(x, (size_t)rt.tokens * HIDDEN, DY_F32, 10, 1.0f, 0.0f);
        fill(h, (size_t)rt.rows * FFN, DY_F32, 11, 1.0f, 0.0f);
        struct proj projs[2] = {
            { &rt, { .a = x, .b = w1, .c = c1, .rows = rt.rows, .experts = EXPERTS, .n = 2 * FFN,
                     .k = HIDDEN, .a_row_div = TOPK, .lda = HIDDEN, .ldc = 2 * FFN,
                     .b_expert_stride = (size_t)2 * FFN * HIDDEN, .b_dtype = DY_BF16 }, true },
            { &rt, { .a = h, .b = w2, .c = c2, .rows = rt.rows, .experts = EXPERTS, .n = HIDDEN,
                     .k = FFN, .a_row_div = 1, .lda = FFN, .ldc = HIDDEN,
                     .b_expert_stride = (size_t)HIDDEN * FFN, .b_dtype = DY_BF16 }, false },
        };
        static const char *const names[2] = { "gate_up", "down" };
        for (size_t pi = 0; pi < sizeof paths / sizeof paths[0]; pi++) {
            const char *path = paths[pi] ? paths[pi] : "auto";
            double t_both = 0, ts_both = 0, bytes_both = 0;
            set_path(paths[pi]);
            for (int i = 0; i < 2; i++) {
                double err = check_proj(&projs[i], i ? w2 : w1);
                double t = time_op(do_grouped, &projs[i]), ts = time_op_stream(do_grouped, &projs[i]);
                double bytes = touched * projs[i].d.n * projs[i].d.k * 2.0;
                t_both += t;
                ts_both += ts;
                bytes_both += bytes;
                printf("| %s | %d | %d | %s | %.1f | %.1f | %.1f | %.0f | %.2f | %.1f | %.0f | %.2f | %.1e |\n",
                       names[i], rt.tokens, rt.rows, path, touched, bytes / 1e6, t * 1e6, bytes / t * 1e-9,
                       bytes / t * 1e-9 / copy, ts * 1e6, bytes / ts * 1e-9, bytes / ts * 1e-9 / copy, err);
            }
            printf("| both | %d | %d | %s | %.1f | %.1f | %.1f | %.0f | %.2f | %.1f | %.0f | %.2f | |\n",
                   rt.tokens, rt.rows, path, touched, bytes_both / 1e6, t_both * 1e6,
                   bytes_both / t_both * 1e-9, bytes_both / t_both * 1e-9 / copy, ts_both * 1e6,
                   bytes_both / ts_both * 1e-9, bytes_both / ts_both * 1e-9 / copy);
            if (!paths[pi])
                SUMMARY("decode batch %d, gate_up + down over %.0f MB: one call each %.1f us = %.2f of copy;"
                        " in stream %.1f us = %.2f", rt.tokens, bytes_both / 1e6, t_both * 1e6,
                        bytes_both / t_both * 1e-9 / copy, ts_both * 1e6, bytes_both / ts_both * 1e-9 / copy);
        }
        set_path(NULL);
        dy_buf_free(ctx, &x);
        dy_buf_free(ctx, &h);
        dy_buf_free(ctx, &c1);
        dy_buf_free(ctx, &c2);
        free_routing(&rt);
    }
}

/* ---- prefill: each path beside the dense GEMM and the roofline ---- */
static void bench_prefill(dy_buf w1, dy_buf w2, double copy)
{
    static const int token_counts[] = { 256, 1024, 4096 };
    static const char *const paths[] = { NULL, "mma", "blas", "gemv", "tiled" };
    printf("\n| prefill | tokens | path | time us | TFLOP/s | dense TFLOP/s | of dense | roofline us | of roofline | err |\n"
           "|---|--:|---|--:|--:|--:|--:|--:|--:|--:|\n");
    for (size_t tc = 0; tc < sizeof token_counts / sizeof token_counts[0]; tc++) {
        struct routing rt;
        make_routing(&rt, token_counts[tc]);
        dy_buf x = alloc(sizeof(float) * rt.tokens * HIDDEN), h = alloc(sizeof(float) * rt.rows * FFN);
        dy_buf c1 = alloc(sizeof(float) * rt.rows * 2 * FFN), c2 = alloc(sizeof(float) * rt.rows * HIDDEN);
        fill(x, (size_t)rt.tokens * HIDDEN, DY_F32, 20, 1.0f, 0.0f);
        fill(h, (size_t)rt.rows * FFN, DY_F32, 21, 1.0f, 0.0f);
        struct proj projs[2] = {
            { &rt, { .a = x, .b = w1, .c = c1, .rows = rt.rows, .experts = EXPERTS, .n = 2 * FFN,
                     .k = HIDDEN, .a_row_div = TOPK, .lda = HIDDEN, .ldc = 2 * FFN,
                     .b_expert_stride = (size_t)2 * FFN * HIDDEN, .b_dtype = DY_BF16 }, true },
            { &rt, { .a = h, .b = w2, .c = c2, .rows = rt.rows, .experts = EXPERTS, .n = HIDDEN,
                     .k = FFN, .a_row_div = 1, .lda = FFN, .ldc = HIDDEN,
                     .b_expert_stride = (size_t)HIDDEN * FFN, .b_dtype = DY_BF16 }, false },
        };
        static const char *const names[2] = { "gate_up", "down" };
        for (int i = 0; i < 2; i++) {
            struct dy_gemm_grouped_desc *d = &projs[i].d;
            double flops = 2.0 * d->rows * d->n * d->k;
            double dense = dense_tflops(d->rows, d->n, d->k);
            double bytes = EXPERTS * (double)d->n * d->k * 2 + (double)d->rows * d->n * 4 +
                           (projs[i].gather ? rt.tokens : d->rows) * (double)d->k * 4;
            double floor_s = fmax(bytes / (copy * 1e9), flops / (dense * 1e12));
            for (size_t pi = 0; pi < sizeof paths / sizeof paths[0]; pi++) {
                if (paths[pi] && (!strcmp(paths[pi], "gemv") || !strcmp(paths[pi], "tiled")) && tc > 0)
                    continue; /* the CUDA-core paths at the smallest size only */
                set_path(paths[pi]);
                double err = check_proj(&projs[i], i ? w2 : w1);
                double t = time_op(do_grouped, &projs[i]);
                double tflops = flops / t * 1e-12;
                printf("| %s | %d | %s | %.1f | %.1f | %.1f | %.2f | %.1f | %.2f | %.1e |\n", names[i],
                       rt.tokens, paths[pi] ? paths[pi] : "auto", t * 1e6, tflops, dense, tflops / dense,
                       floor_s * 1e6, floor_s / t, err);
                if (!paths[pi])
                    SUMMARY("prefill %d tok %s: %.0f TFLOP/s = %.2f of dense %.0f; %.2f of roofline (%.0f us)",
                            rt.tokens, names[i], tflops, tflops / dense, dense, floor_s / t, floor_s * 1e6);
            }
            set_path(NULL);
        }
        dy_buf_free(ctx, &x);
        dy_buf_free(ctx, &h);
        dy_buf_free(ctx, &c1);
        dy_buf_free(ctx, &c2);
        free_routing(&rt);
    }
}

/* ---- routing ops and a whole decode MoE block ---- */
struct route_arg {
    struct dy_softmax_topk_desc topk;
    struct dy_moe_sort_desc sort;
    struct dy_scatter_add_rows_desc scatter;
    struct dy_eltwise_desc silu;
    struct proj up, down;
};

static void do_topk(void *arg, int set)
{
    CHECK(dy_softmax_topk(ctx, &((struct route_arg *)arg)->topk));
}

static void do_sort(void *arg, int set)
{
    CHECK(dy_moe_sort(ctx, &((struct route_arg *)arg)->sort));
}

static void do_scatter(void *arg, int set)
{
    CHECK(dy_scatter_add_rows(ctx, &((struct route_arg *)arg)->scatter));
}

/* router output to the block's output, as the workload chains it */
static void do_block(void *arg, int set)
{
    struct route_arg *r = arg;
    struct dy_softmax_topk_desc topk = r->topk;
    topk.logits = dy_buf_at(topk.logits, (size_t)set * topk.tokens * topk.stride * 4);
    CHECK(dy_softmax_topk(ctx, &topk));
    CHECK(dy_moe_sort(ctx, &r->sort));
    struct dy_gemm_grouped_desc up = r->up.d, down = r->down.d;
    up.offsets = down.offsets = r->sort.offsets;
    up.a_rows = r->sort.sorted;
    CHECK(dy_gemm_grouped(ctx, &up));
    CHECK(dy_eltwise(ctx, &r->silu));
    CHECK(dy_gemm_grouped(ctx, &down));
    CHECK(dy_scatter_add_rows(ctx, &r->scatter));
}

static void bench_routing(dy_buf w1, dy_buf w2)
{
    static const int token_counts[] = { 1, 256, 4096 };
    printf("\n| op | tokens | time us |\n|---|--:|--:|\n");
    for (size_t tc = 0; tc < sizeof token_counts / sizeof token_counts[0]; tc++) {
        int tokens = token_counts[tc], pairs = tokens * TOPK;
        struct route_arg r = { 0 };
        dy_buf logits = alloc(sizeof(float) * SETS * tokens * EXPERTS);
        fill(logits, (size_t)SETS * tokens * EXPERTS, DY_F32, 30, 3.0f, 0.0f);
        r.topk = (struct dy_softmax_topk_desc){ .logits = logits, .ids = alloc(4 * pairs),
                                                .weights = alloc(4 * pairs), .tokens = tokens,
                                                .experts = EXPERTS, .k = TOPK, .stride = EXPERTS };
        r.sort = (struct dy_moe_sort_desc){ .ids = r.topk.ids, .offsets = alloc(4 * (EXPERTS + 1)),
                                            .sorted = alloc(4 * pairs), .position = alloc(4 * pairs),
                                            .pairs = pairs, .experts = EXPERTS };
        dy_buf x = alloc(sizeof(float) * tokens * HIDDEN), gu = alloc(sizeof(float) * pairs * 2 * FFN);
        dy_buf act = alloc(sizeof(float) * pairs * FFN), y = alloc(sizeof(float) * pairs * HIDDEN);
        dy_buf out = alloc(sizeof(float) * tokens * HIDDEN);
        fill(x, (size_t)tokens * HIDDEN, DY_F32, 31, 1.0f, 0.0f);
        fill(out, (size_t)tokens * HIDDEN, DY_F32, 32, 1.0f, 0.0f);
        r.scatter = (struct dy_scatter_add_rows_desc){ .src = y, .dst = out, .weights = r.topk.weights,
                                                       .position = r.sort.position, .tokens = tokens,
                                                       .k = TOPK, .cols = HIDDEN, .src_stride = HIDDEN,
                                                       .dst_stride = HIDDEN };
        r.silu = (struct dy_eltwise_desc){ .op = DY_ELT_SILU_MUL, .a = gu, .b = dy_buf_at(gu, 4 * FFN),
                                           .out = act, .rows = pairs, .cols = FFN, .a_stride = 2 * FFN,
                                           .b_stride = 2 * FFN, .out_stride = FFN, .dtype = DY_F32 };
        r.up.d = (struct dy_gemm_grouped_desc){ .a = x, .b = w1, .c = gu, .rows = pairs,
                                                .experts = EXPERTS, .n = 2 * FFN, .k = HIDDEN,
                                                .a_row_div = TOPK, .lda = HIDDEN, .ldc = 2 * FFN,
                                                .b_expert_stride = (size_t)2 * FFN * HIDDEN,
                                                .b_dtype = DY_BF16 };
        r.down.d = (struct dy_gemm_grouped_desc){ .a = act, .b = w2, .c = y, .rows = pairs,
                                                  .experts = EXPERTS, .n = HIDDEN, .k = FFN,
                                                  .a_row_div = 1, .lda = FFN, .ldc = HIDDEN,
                                                  .b_expert_stride = (size_t)HIDDEN * FFN,
                                                  .b_dtype = DY_BF16 };
        do_topk(&r, 0);
        double t_topk = time_op(do_topk, &r), t_sort = time_op(do_sort, &r);
        double t_scatter = time_op(do_scatter, &r), t_block = time_op(do_block, &r);
        printf("| softmax_topk | %d | %.1f |\n| moe_sort | %d | %.1f |\n| scatter_add_rows | %d | %.1f |\n"
               "| whole MoE block (6 ops) | %d | %.1f |\n",
               tokens, t_topk * 1e6, tokens, t_sort * 1e6, tokens, t_scatter * 1e6, tokens, t_block * 1e6);
        SUMMARY("routing at %d tok: topk %.1f us, sort %.1f us, scatter %.1f us; MoE block %.1f us",
                tokens, t_topk * 1e6, t_sort * 1e6, t_scatter * 1e6, t_block * 1e6);
        dy_buf *bufs[] = { &logits, &r.topk.ids, &r.topk.weights, &r.sort.offsets, &r.sort.sorted,
                           &r.sort.position, &x, &gu, &act, &y, &out };
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            dy_buf_free(ctx, bufs[i]);
    }
}

int main(void)
{
    if (!open_cuda("moe_ops_bench"))
        return 77;
    flush = (struct dy_argmax_desc){ .x = alloc((size_t)128 << 20), .out = alloc(32 * 4), .rows = 32,
                                     .cols = 1 << 20, .stride = 1 << 20, .dtype = DY_F32 };
    fill(flush.x, (size_t)32 << 20, DY_F32, 99, 1.0f, 0.0f);
    double copy = copy_gbps();
    double dense = dense_tflops(8192, 8192, 8192), dense2k = dense_tflops(2048, 2048, 2048);
    printf("copy %.0f GB/s (read + written); dense bf16 GEMM 8192^3 %.0f TFLOP/s, 2048^3 %.0f TFLOP/s\n",
           copy, dense, dense2k);
    SUMMARY("ceilings: copy %.0f GB/s, dense bf16 GEMM %.0f TFLOP/s (8192^3), %.0f (2048^3)", copy, dense,
            dense2k);
    size_t w1_n = (size_t)EXPERTS * 2 * FFN * HIDDEN, w2_n = (size_t)EXPERTS * HIDDEN * FFN;
    dy_buf w1 = alloc(w1_n * 2), w2 = alloc(w2_n * 2);
    fill(w1, w1_n, DY_BF16, 2, 0.03f, 0.0f);
    fill(w2, w2_n, DY_BF16, 3, 0.03f, 0.0f);
    bench_decode(w1, w2, copy);
    bench_prefill(w1, w2, copy);
    bench_routing(w1, w2);
    printf("\n## summary (%s)\n", device.name);
    for (int i = 0; i < sum.count; i++)
        printf("%s\n", sum.line[i]);
    dy_ctx_destroy(ctx);
    return 0;
}
