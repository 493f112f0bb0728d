/* How close the cpu backend runs to this machine's limits.
 *
 * Measures the ceilings (copy bandwidth through buf_copy, read-only
 * bandwidth, raw OpenBLAS sgemm) and the backend's GEMMs against them:
 * decode (m = 1..32, bandwidth-bound on the weights, then compute-bound)
 * and prefill (m = 512, compute-bound); then the MoE grouped GEMM at an
 * OLMoE-like shape, decode against the bandwidth ceilings and prefill
 * against a dense GEMM of the same FLOPs; then decode attention over a
 * paged KV cache of each dtype against the bandwidth ceilings; then the
 * decode GEMV with quantized weights (fp8, int8, int4) at Llama-3.2-1B's
 * shapes against bf16 and the ceilings. Calls the backend's slots
 * directly, so it builds without the wrapper layer:
 *
 *   gcc -O2 -fopenmp -I. -I/usr/include/x86_64-linux-gnu/openblas-pthread \
 *       bench/cpu_ops_bench.c backends/cpu/cpu.c backends/cpu/cpu_*.c -lopenblas -lm
 *
 * Each figure is the best of REPEATS timed runs after a warm-up run, as
 * STREAM reports: the machine's capability, not its noise. With the
 * argument `quant` it measures the ceilings and the quantized GEMV only. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>

#include "backends/cpu/cpu.h"

#define REPEATS 9

static const struct dy_backend *be = &dy_backend_cpu;
static void *ctx;
static void *ev_start, *ev_end;

/* A buffer of the backend with its handle; the handle must outlive views. */
struct bench_buf {
    struct dy_bufh h;
    dy_buf b;
};

static void die(const char *what, int status)
{
    fprintf(stderr, "cpu_ops_bench: %s: status %d (%s)\n", what, status,
            ctx ? be->last_error(ctx) : "no context");
    exit(1);
}

static struct bench_buf *buf_new(size_t bytes)
{
    struct bench_buf *buf = calloc(1, sizeof *buf);
    if (!buf)
        die("calloc", DY_E_NOMEM);
    int status = be->buf_alloc(ctx, bytes, &buf->h.impl);
    if (status != DY_OK)
        die("buf_alloc", status);
    buf->h.bytes = bytes;
    buf->b.h = &buf->h;
    return buf;
}

static void buf_delete(struct bench_buf *buf)
{
    be->buf_free(ctx, buf->h.impl);
    free(buf);
}

/* Random values in [-1, 1) so that no kernel meets only zeros. */
static void buf_random(struct bench_buf *buf, size_t count, enum dy_dtype t, uint64_t stream)
{
    struct dy_fill_random_desc d = { buf->b, count, t, 42, stream, 1.0f, 0.0f };
    int status = be->fill_random(ctx, &d);
    if (status != DY_OK)
        die("fill_random", status);
}

/* dy_dtype_name() lives in dtype.c, outside the standalone build. */
static const char *type_name(enum dy_dtype t)
{
    return t == DY_F32 ? "f32" : t == DY_F16 ? "f16" : t == DY_BF16 ? "bf16" : t == DY_FP8 ? "fp8"
           : t == DY_I8 ? "int8" : t == DY_I4 ? "int4" : "?";
}

enum bench_kind {
    BENCH_COPY, BENCH_READ, BENCH_SGEMM, BENCH_GEMM, BENCH_GROUPED, BENCH_DECODE, BENCH_QGEMV
};

/* The routings a grouped case takes in turn: offsets and the sorted pairs. */
#define MAX_ROUTES 8

struct bench_case {
    enum bench_kind kind;
    struct bench_buf *src, *dst;
    size_t bytes;
    struct dy_gemm_desc gemm;
    struct dy_gemm_grouped_desc grouped;
    struct dy_attention_decode_desc decode;
    struct bench_buf *offsets[MAX_ROUTES], *sorted[MAX_ROUTES];
    int routes;
    /* BENCH_QGEMV: `copies` weight matrices one after another in src, their
     * scales and zero points in scales and zeros, taken in turn */
    struct bench_buf *scales, *zeros;
    size_t weight_bytes, scale_count, zero_bytes;
    int copies;
};

/* Calls of grouped cases so far: each call takes the next routing; and of
 * quantized GEMV cases, each taking the next copy of the weights. */
static unsigned grouped_calls, qgemv_calls;

/* Reads every 64-bit word of the buffer, a cache line an iteration; the
 * xor keeps the compiler from dropping the loads, and the prefetch 4 KiB
 * ahead is worth 10% over the hardware prefetcher alone on some machines. */
static uint64_t read_all(const uint64_t *p, size_t words)
{
    uint64_t acc = 0;
#pragma omp parallel for reduction(^ : acc) schedule(static)
    for (size_t line = 0; line < words / 8; line++) {
        const uint64_t *w = p + 8 * line;
        __builtin_prefetch(w + 512);
        acc ^= w[0] ^ w[1] ^ w[2] ^ w[3] ^ w[4] ^ w[5] ^ w[6] ^ w[7];
    }
    return acc;
}

static volatile uint64_t read_sink;

static void run_case(const struct bench_case *c)
{
    int status = DY_OK;
    switch (c->kind) {
    case BENCH_COPY:
        status = be->buf_copy(ctx, c->dst->b, c->src->b, c->bytes);
        break;
    case BENCH_READ:
        read_sink = read_all(c->src->h.impl, c->bytes / sizeof(uint64_t));
        break;
    case BENCH_SGEMM: {
        const struct dy_gemm_desc *g = &c->gemm;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g->m, g->n, g->k, 1.0f,
                    g->a.h->impl, g->lda, g->b.h->impl, g->ldb, 0.0f, g->c.h->impl, g->ldc);
        break;
    }
    case BENCH_GEMM:
        status = be->gemm(ctx, &c->gemm);
        break;
    case BENCH_GROUPED: {
        struct dy_gemm_grouped_desc g = c->grouped;
        int route = (int)(grouped_calls++ % (unsigned)c->routes);
        g.offsets = c->offsets[route]->b;
        g.a_rows = c->sorted[route]->b;
        status = be->gemm_grouped(ctx, &g);
        break;
    }
    case BENCH_DECODE:
        status = be->attention_decode(ctx, &c->decode);
        break;
    case BENCH_QGEMV: {
        struct dy_gemm_desc g = c->gemm;
        size_t copy = qgemv_calls++ % (unsigned)c->copies;
        g.b = dy_buf_at(c->src->b, copy * c->weight_bytes);
        if (c->scales)
            g.bq.scale = dy_buf_at(c->scales->b, copy * c->scale_count * sizeof(float));
        if (c->zeros)
            g.bq.zero = dy_buf_at(c->zeros->b, copy * c->zero_bytes);
        status = be->gemm(ctx, &g);
        break;
    }
    }
    if (status != DY_OK)
        die("op", status);
}

/* Fewest seconds of each case over REPEATS rounds, timed with the
 * backend's events. A round runs every case once, so that a ceiling and the
 * kernel compared with it see the same state of a machine whose memory
 * bandwidth drifts (a VM whose neighbours come and go). */
static void time_cases(const struct bench_case *const *cases, int count, double *best)
{
    for (int i = 0; i < count; i++)
        run_case(cases[i]);
    for (int r = 0; r < REPEATS; r++)
        for (int i = 0; i < count; i++) {
            uint64_t ns = 0;
            be->event_record(ctx, ev_start);
            run_case(cases[i]);
            be->event_record(ctx, ev_end);
            int status = be->event_elapsed_ns(ctx, ev_start, ev_end, &ns);
            if (status != DY_OK)
                die("event_elapsed_ns", status);
            if (r == 0 || (double)ns * 1e-9 < best[i])
                best[i] = (double)ns * 1e-9;
        }
}

static double time_case(const struct bench_case *c)
{
    double best;
    time_cases(&c, 1, &best);
    return best;
}

/* A gemm case of C[m,n] = A[m,k] . B[n,k]^T with f32 A and C. */
static struct bench_case gemm_case(enum bench_kind kind, int m, int n, int k, enum dy_dtype bt,
                                   struct bench_buf **bufs)
{
    bufs[0] = buf_new((size_t)m * k * sizeof(float));
    bufs[1] = buf_new((size_t)n * k * (bt == DY_F32 ? 4 : 2));
    bufs[2] = buf_new((size_t)m * n * sizeof(float));
    buf_random(bufs[0], (size_t)m * k, DY_F32, 1);
    buf_random(bufs[1], (size_t)n * k, bt, 2);
    struct bench_case c = { .kind = kind };
    c.gemm = (struct dy_gemm_desc){
        .a = bufs[0]->b, .b = bufs[1]->b, .c = bufs[2]->b,
        .m = m, .n = n, .k = k, .lda = k, .ldb = k, .ldc = n,
        .a_dtype = DY_F32, .b_dtype = bt, .c_dtype = DY_F32, .beta = 0.0f,
    };
    return c;
}

static void free_bufs(struct bench_buf **bufs, int count)
{
    for (int i = 0; i < count; i++)
        buf_delete(bufs[i]);
}

static double gflops(int m, int n, int k, double seconds)
{
    return 2.0 * m * n * k / seconds * 1e-9;
}

/* ---- MoE: grouped GEMM over tokens routed to top_k of `experts` ---- */

/* Adds a routing to a grouped case, given each pair's expert: moe_sort
 * groups the pairs, as the model's forward pass does. */
static void add_route(struct bench_case *c, const int32_t *ids, int pairs, int experts)
{
    struct bench_buf *id_buf = buf_new((size_t)pairs * 4), *position = buf_new((size_t)pairs * 4);
    struct bench_buf *offsets = buf_new(((size_t)experts + 1) * 4);
    struct bench_buf *sorted = buf_new((size_t)pairs * 4);
    int status = be->buf_write(ctx, id_buf->b, ids, (size_t)pairs * 4);
    struct dy_moe_sort_desc d = { id_buf->b, offsets->b, sorted->b, position->b, pairs, experts };
    if (status != DY_OK || (status = be->moe_sort(ctx, &d)) != DY_OK)
        die("moe_sort", status);
    buf_delete(id_buf);
    buf_delete(position);
    c->offsets[c->routes] = offsets;
    c->sorted[c->routes] = sorted;
    c->routes++;
}

/* A grouped case over `tokens` rows of A and every expert's [n, k] weight
 * of dtype bt; its routings are added with add_route. */
static struct bench_case grouped_case(int tokens, int top_k, int experts, int n, int k,
                                      enum dy_dtype bt, struct bench_buf **bufs)
{
    int rows = tokens * top_k;
    bufs[0] = buf_new((size_t)tokens * k * sizeof(float));
    bufs[1] = buf_new((size_t)experts * n * k * (bt == DY_F32 ? 4 : 2));
    bufs[2] = buf_new((size_t)rows * n * sizeof(float));
    buf_random(bufs[0], (size_t)tokens * k, DY_F32, 5);
    buf_random(bufs[1], (size_t)experts * n * k, bt, 6);
    struct bench_case c = { .kind = BENCH_GROUPED };
    c.grouped = (struct dy_gemm_grouped_desc){
        .a = bufs[0]->b, .b = bufs[1]->b, .c = bufs[2]->b,
        .rows = rows, .experts = experts, .n = n, .k = k, .a_row_div = top_k,
        .lda = k, .ldc = n, .b_expert_stride = (size_t)n * k, .b_dtype = bt,
    };
    return c;
}

static void free_grouped(struct bench_case *c, struct bench_buf **bufs)
{
    for (int r = 0; r < c->routes; r++) {
        buf_delete(c->offsets[r]);
        buf_delete(c->sorted[r]);
    }
    free_bufs(bufs, 3);
}

/* Decode, one token: the calls take eight routings of disjoint experts in
 * turn, so each reads weights the seven before it did not, from memory, as
 * each layer of a decode step does (the dense peer re-reads one weight);
 * the GB/s are of the experts' weights a call touches. */
static void bench_moe_decode(const struct bench_case *copy, const struct bench_case *read,
                             size_t ceiling_bytes)
{
    enum { experts = 64, top_k = 8 };
    const int shapes[][2] = { { 2048, 2048 }, { 2048, 1024 } };
    const char *names[] = { "gate_up", "down" };
    printf("\nMoE decode, 1 token, top-%d of %d experts, B=bf16: grouped GEMV, GB/s of the\n"
           "%d experts' weights, %% of the ceilings, and the ratio to a dense m=1 GEMV of as\n"
           "many bytes (n * %d), all measured in the same rounds\n", top_k, experts, top_k,
           top_k);
    for (int s = 0; s < 2; s++) {
        int n = shapes[s][0], k = shapes[s][1];
        struct bench_buf *bufs[3], *dense_bufs[3];
        struct bench_case c = grouped_case(1, top_k, experts, n, k, DY_BF16, bufs);
        for (int r = 0; r < experts / top_k && r < MAX_ROUTES; r++) {
            int32_t ids[top_k];
            for (int j = 0; j < top_k; j++) /* descending, as top-k gives them */
                ids[j] = r * top_k + top_k - 1 - j;
            add_route(&c, ids, top_k, experts);
        }
        struct bench_case dense = gemm_case(BENCH_GEMM, 1, n * top_k, k, DY_BF16, dense_bufs);
        const struct bench_case *round[] = { copy, read, &c, &dense };
        double best[4];
        time_cases(round, 4, best);
        double copy_gbs = 2.0 * ceiling_bytes / best[0] * 1e-9;
        double read_gbs = ceiling_bytes / best[1] * 1e-9;
        double gbs = (double)top_k * n * k * 2 / best[2] * 1e-9;
        printf("  %-7s n=%d k=%d %6.1f GB/s  %5.1f%% of read %5.1f  %5.1f%% of copy %5.1f"
               "  %.2f x dense (%.0f us)\n", names[s], n, k, gbs, 100 * gbs / read_gbs,
               read_gbs, 100 * gbs / copy_gbs, copy_gbs, best[3] / best[2], best[2] * 1e6);
        free_bufs(dense_bufs, 3);
        free_grouped(&c, bufs);
    }
}

/* Prefill: 256 tokens routed by softmax_topk over random logits, against
 * dense GEMMs of the same FLOPs (m = tokens * top_k) in the same rounds:
 * with the same bf16 weights, and with f32 ones (sgemm with nothing to
 * convert). */
static void bench_moe_prefill(double sgemm_rate)
{
    const int tokens = 256, experts = 64, top_k = 8, n = 2048, k = 2048, rows = tokens * top_k;
    struct bench_buf *bufs[3], *dense_bufs[3], *f32_bufs[3];
    struct bench_case c = grouped_case(tokens, top_k, experts, n, k, DY_BF16, bufs);
    struct bench_buf *logits = buf_new((size_t)tokens * experts * 4);
    struct bench_buf *ids = buf_new((size_t)rows * 4), *weights = buf_new((size_t)rows * 4);
    buf_random(logits, (size_t)tokens * experts, DY_F32, 7);
    struct dy_softmax_topk_desc topk = { .logits = logits->b, .ids = ids->b, .weights = weights->b,
                                         .tokens = tokens, .experts = experts, .k = top_k,
                                         .stride = experts, .renormalize = true };
    int status = be->softmax_topk(ctx, &topk);
    if (status != DY_OK)
        die("softmax_topk", status);
    add_route(&c, ids->h.impl, rows, experts);
    const int32_t *offsets = c.offsets[0]->h.impl;
    int fewest = rows, most = 0;
    for (int e = 0; e < experts; e++) {
        int m = offsets[e + 1] - offsets[e];
        fewest = m < fewest ? m : fewest;
        most = m > most ? m : most;
    }
    struct bench_case dense = gemm_case(BENCH_GEMM, rows, n, k, DY_BF16, dense_bufs);
    struct bench_case dense_f32 = gemm_case(BENCH_GEMM, rows, n, k, DY_F32, f32_bufs);
    const struct bench_case *round[] = { &c, &dense, &dense_f32 };
    double best[3];
    time_cases(round, 3, best);
    double rate = gflops(rows, n, k, best[0]), dense_rate = gflops(rows, n, k, best[1]);
    double f32_rate = gflops(rows, n, k, best[2]);
    printf("\nMoE prefill, %d tokens, top-%d of %d experts (%d..%d rows each), n=%d k=%d"
           " B=bf16:\n  grouped %6.1f GFLOP/s  %.2f x dense gemm m=%d B=bf16 (%.1f),"
           " %.2f x B=f32 (%.1f);\n  %.1f%% of sgemm 2048^3 at the start\n", tokens, top_k,
           experts, fewest, most, n, k, rate, rate / dense_rate, rows, dense_rate,
           rate / f32_rate, f32_rate, 100 * rate / sgemm_rate);
    buf_delete(logits);
    buf_delete(ids);
    buf_delete(weights);
    free_bufs(dense_bufs, 3);
    free_bufs(f32_bufs, 3);
    free_grouped(&c, bufs);
}

/* ---- decode attention over a paged KV cache ---- */

/* `count` values offset + scale * u, u uniform in [-1, 1), of dtype t. */
static void buf_fill_range(struct bench_buf *buf, size_t count, enum dy_dtype t, uint64_t stream,
                           float scale, float offset)
{
    struct dy_fill_random_desc d = { buf->b, count, t, 42, stream, scale, offset };
    int status = be->fill_random(ctx, &d);
    if (status != DY_OK)
        die("fill_random", status);
}

/* One layer of Llama-3-8B's attention (32 heads on 8 KV heads of 128) for
 * 16 sequences of 4096 tokens, in blocks of 16 handed out in a scrambled
 * order as a paged cache's are: GB/s of the K and V bytes a call reads
 * (with int8's scales, one f32 per token and KV head each), per cache
 * dtype, and % of the ceilings measured in the same rounds. The f32 cache
 * (512 MiB) and the 1-byte ones (128 MiB) all lie far beyond the LLC. */
static void bench_decode_attention(const struct bench_case *copy, const struct bench_case *read,
                                   size_t ceiling_bytes)
{
    enum { batch = 16, context = 4096, heads = 32, kv_heads = 8, head_dim = 128, block = 16 };
    enum { blocks_per_seq = context / block, blocks = batch * blocks_per_seq };
    const enum dy_dtype types[] = { DY_F32, DY_BF16, DY_F16, DY_FP8, DY_I8 };
    size_t slots = (size_t)blocks * block, cache_elems = slots * kv_heads * head_dim;
    struct bench_buf *q = buf_new((size_t)batch * heads * head_dim * 4);
    struct bench_buf *out = buf_new((size_t)batch * heads * head_dim * 4);
    struct bench_buf *table = buf_new((size_t)blocks * 4), *lens = buf_new((size_t)batch * 4);
    int32_t *entries = table->h.impl, *len = lens->h.impl;
    for (int i = 0; i < blocks; i++) /* 7919 is prime, so this permutes */
        entries[i] = (int32_t)((i * 7919ull + 13) % blocks);
    for (int b = 0; b < batch; b++)
        len[b] = context;
    buf_random(q, (size_t)batch * heads * head_dim, DY_F32, 8);
    printf("\ndecode attention, %d sequences x %d tokens, %d heads on %d KV heads of %d,"
           " blocks of %d:\nGB/s of the KV cache read, %% of the ceilings measured in the same"
           " rounds\n", batch, context, heads, kv_heads, head_dim, block);
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        enum dy_dtype ct = types[t];
        size_t es = ct == DY_F32 ? 4 : ct == DY_FP8 || ct == DY_I8 ? 1 : 2;
        struct bench_buf *kc = buf_new(cache_elems * es), *vc = buf_new(cache_elems * es);
        struct bench_buf *ks = buf_new(slots * kv_heads * 4), *vs = buf_new(slots * kv_heads * 4);
        /* int8: integers over the whole range, scales near 1 / 127 */
        float range = ct == DY_I8 ? 127.0f : 1.0f;
        buf_fill_range(kc, cache_elems, ct, 9, range, 0.0f);
        buf_fill_range(vc, cache_elems, ct, 10, range, 0.0f);
        buf_fill_range(ks, slots * kv_heads, DY_F32, 11, 0.002f, 0.008f);
        buf_fill_range(vs, slots * kv_heads, DY_F32, 12, 0.002f, 0.008f);
        struct bench_case c = { .kind = BENCH_DECODE };
        c.decode = (struct dy_attention_decode_desc){
            .q = q->b, .out = out->b, .q_stride = heads * head_dim, .out_stride = heads * head_dim,
            .k_cache = kc->b, .v_cache = vc->b, .block_table = table->b, .context_lens = lens->b,
            .batch = batch, .heads = heads, .kv_heads = kv_heads, .head_dim = head_dim,
            .block_size = block, .max_blocks_per_seq = blocks_per_seq, .max_context = context,
            .scale = 0.08838834764831845f, .dtype = DY_F32, .cache_dtype = ct,
            .k_scale = ks->b, .v_scale = vs->b,
        };
        const struct bench_case *round[] = { copy, read, &c };
        double best[3];
        time_cases(round, 3, best);
        double copy_gbs = 2.0 * ceiling_bytes / best[0] * 1e-9;
        double read_gbs = ceiling_bytes / best[1] * 1e-9;
        double bytes = 2.0 * cache_elems * es + (ct == DY_I8 ? 2.0 * slots * kv_heads * 4 : 0.0);
        double gbs = bytes / best[2] * 1e-9;
        printf("  cache=%-4s %6.1f GB/s  %5.1f%% of read %5.1f  %5.1f%% of copy %5.1f"
               "  %7.0f us\n", type_name(ct), gbs, 100 * gbs / read_gbs, read_gbs,
               100 * gbs / copy_gbs, copy_gbs, best[2] * 1e6);
        buf_delete(kc);
        buf_delete(vc);
        buf_delete(ks);
        buf_delete(vs);
    }
    buf_delete(q);
    buf_delete(out);
    buf_delete(table);
    buf_delete(lens);
}

/* ---- quantized weights: the decode GEMV ---- */

/* A GEMV case, m = 1, over `copies` weight matrices [n, k] of dtype bt
 * (bf16, or fp8, int8 and int4 with random bytes and scales: the kernels'
 * work does not depend on the values), zero points when asym (int4). */
static struct bench_case qgemv_case(int n, int k, enum dy_dtype bt, bool asym, int copies,
                                    struct bench_buf **a, struct bench_buf **c_out)
{
    const int group = 128;
    struct bench_case c = { .kind = BENCH_QGEMV, .copies = copies };
    size_t elems = (size_t)n * k;
    c.weight_bytes = bt == DY_BF16 ? elems * 2 : dy_dtype_bytes(bt, elems);
    c.src = buf_new(c.weight_bytes * copies);
    /* fp8 values without NaN codes; int8 over the whole range, whose
     * bytes are as random as int4's nibbles need */
    buf_fill_range(c.src, c.weight_bytes * copies / (bt == DY_BF16 ? 2 : 1),
                   bt == DY_BF16 || bt == DY_FP8 ? bt : DY_I8, 13, bt == DY_BF16 ? 1.0f
                   : bt == DY_FP8 ? 448.0f : 127.0f, 0.0f);
    if (dy_dtype_quantized(bt)) {
        c.scale_count = dy_quant_scales(bt, n, k, group);
        c.scales = buf_new(c.scale_count * copies * sizeof(float));
        buf_fill_range(c.scales, c.scale_count * copies, DY_F32, 14, 0.001f, 0.01f);
    }
    if (asym) {
        c.zero_bytes = c.scale_count;
        c.zeros = buf_new(c.zero_bytes * copies);
        buf_fill_range(c.zeros, c.zero_bytes * copies, DY_I8, 15, 7.0f, 8.0f);
    }
    *a = buf_new((size_t)k * sizeof(float));
    *c_out = buf_new((size_t)n * sizeof(float));
    buf_random(*a, (size_t)k, DY_F32, 16);
    c.gemm = (struct dy_gemm_desc){
        .a = (*a)->b, .c = (*c_out)->b, .m = 1, .n = n, .k = k, .lda = k, .ldb = k, .ldc = n,
        .a_dtype = DY_F32, .b_dtype = bt, .c_dtype = DY_F32, .beta = 0.0f,
        .bq = { .group = group, .bias_dtype = DY_BF16 },
    };
    return c;
}

static void free_qgemv(struct bench_case *c, struct bench_buf *a, struct bench_buf *c_out)
{
    buf_delete(c->src);
    if (c->scales)
        buf_delete(c->scales);
    if (c->zeros)
        buf_delete(c->zeros);
    buf_delete(a);
    buf_delete(c_out);
}

/* m = 1 at Llama-3.2-1B's gate/up (n = 8192, k = 2048) and down (2048 x
 * 8192) shapes, per weight dtype: each call reads the next of enough copies
 * of the weights to hold four times the last-level cache, as a decode step
 * reads each layer's from memory. GB/s of the bytes of weights, scales and
 * zero points read, % of the ceilings measured in the same rounds, and the
 * time against bf16's. */
static void bench_quant_decode(const struct bench_case *copy, const struct bench_case *read,
                               size_t ceiling_bytes, uint64_t llc_bytes)
{
    const int shapes[][2] = { { 8192, 2048 }, { 2048, 8192 } };
    const struct {
        enum dy_dtype t;
        bool asym;
        const char *name;
    } types[] = { { DY_BF16, false, "bf16" }, { DY_FP8, false, "fp8" }, { DY_I8, false, "int8" },
                  { DY_I4, false, "int4" }, { DY_I4, true, "int4-asym" } };
    enum { TYPES = sizeof types / sizeof types[0] };
    printf("\nquantized decode GEMV, m=1 (int4: groups of 128): GB/s of weights + scales +"
           "\nzero points read, %% of the ceilings measured in the same rounds, speed-up over"
           " bf16\n");
    for (int s = 0; s < 2; s++) {
        int n = shapes[s][0], k = shapes[s][1];
        double bf16_seconds = 0.0;
        for (int t = 0; t < TYPES; t++) {
            size_t elems = (size_t)n * k;
            size_t bytes = types[t].t == DY_BF16 ? elems * 2 : dy_dtype_bytes(types[t].t, elems);
            int copies = (int)((4 * llc_bytes + bytes - 1) / bytes);
            copies = copies < 2 ? 2 : copies;
            struct bench_buf *a, *c_out;
            struct bench_case c = qgemv_case(n, k, types[t].t, types[t].asym, copies, &a, &c_out);
            const struct bench_case *round[] = { copy, read, &c };
            double best[3];
            time_cases(round, 3, best);
            double copy_gbs = 2.0 * ceiling_bytes / best[0] * 1e-9;
            double read_gbs = ceiling_bytes / best[1] * 1e-9;
            double read_bytes = (double)c.weight_bytes + c.scale_count * 4.0 + c.zero_bytes;
            double gbs = read_bytes / best[2] * 1e-9;
            if (types[t].t == DY_BF16)
                bf16_seconds = best[2];
            printf("  n=%-4d k=%-4d B=%-9s %6.1f us %6.1f GB/s  %5.1f%% of read %5.1f"
                   "  %5.1f%% of copy %5.1f  %.2f x bf16\n", n, k, types[t].name,
                   best[2] * 1e6, gbs, 100 * gbs / read_gbs, read_gbs, 100 * gbs / copy_gbs,
                   copy_gbs, bf16_seconds / best[2]);
            free_qgemv(&c, a, c_out);
        }
    }
}

/* The prefill GEMM's shape: 512 tokens through a 4096 x 4096 projection. */
enum { PREFILL_M = 512, PREFILL_N = 4096, PREFILL_K = 4096 };

/* Raw sgemm with OpenBLAS's own threads, at 2048^3 and at the prefill
 * shape; the backend keeps OpenBLAS single-threaded (cpu.c says why), so
 * give that back afterwards and let its threads stop spinning before the
 * next measurement. */
static void bench_raw_sgemm(double *sgemm_rate, double *raw_rate)
{
    struct bench_buf *bufs[3];
    openblas_set_num_threads(omp_get_max_threads());
    struct bench_case sgemm = gemm_case(BENCH_SGEMM, 2048, 2048, 2048, DY_F32, bufs);
    *sgemm_rate = gflops(2048, 2048, 2048, time_case(&sgemm));
    free_bufs(bufs, 3);
    struct bench_case raw = gemm_case(BENCH_SGEMM, PREFILL_M, PREFILL_N, PREFILL_K, DY_F32, bufs);
    *raw_rate = gflops(PREFILL_M, PREFILL_N, PREFILL_K, time_case(&raw));
    free_bufs(bufs, 3);
    openblas_set_num_threads(1);
    usleep(300 * 1000);
    printf("cblas_sgemm 2048^3     %7.1f GFLOP/s (OpenBLAS threads: %d)\n", *sgemm_rate,
           omp_get_max_threads());
}

static const enum dy_dtype float_types[] = { DY_BF16, DY_F16, DY_F32 };
#define FLOAT_TYPES (sizeof float_types / sizeof float_types[0])

/* decode: a 14336 x 4096 weight (Llama-3-8B's FFN), far beyond the LLC;
 * each line against the ceilings measured in the same rounds */
static void bench_dense_decode(const struct bench_case *copy, const struct bench_case *read,
                               size_t ceiling_bytes)
{
    const int n = 14336, k = 4096;
    const int decode_m[] = { 1, 4, 16, 32 };
    struct bench_buf *bufs[3];
    printf("decode gemm, n=%d k=%d: GB/s of weights read, and %% of the ceilings measured in\n"
           "the same rounds\n", n, k);
    for (size_t t = 0; t < FLOAT_TYPES; t++)
        for (size_t i = 0; i < sizeof decode_m / sizeof decode_m[0]; i++) {
            int m = decode_m[i];
            struct bench_case c = gemm_case(BENCH_GEMM, m, n, k, float_types[t], bufs);
            const struct bench_case *round[] = { copy, read, &c };
            double best[3];
            time_cases(round, 3, best);
            double copy_gbs = 2.0 * ceiling_bytes / best[0] * 1e-9;
            double read_gbs = ceiling_bytes / best[1] * 1e-9;
            double gbs = (double)n * k * (float_types[t] == DY_F32 ? 4 : 2) / best[2] * 1e-9;
            printf("  m=%-2d B=%-4s %6.1f GB/s  %5.1f%% of read %5.1f  %5.1f%% of copy %5.1f"
                   "  %6.1f GFLOP/s\n", m, type_name(float_types[t]), gbs, 100 * gbs / read_gbs,
                   read_gbs, 100 * gbs / copy_gbs, copy_gbs, gflops(m, n, k, best[2]));
            free_bufs(bufs, 3);
        }
}

static void bench_prefill(double sgemm_rate, double raw_rate)
{
    struct bench_buf *bufs[3];
    printf("\nprefill gemm, m=%d n=%d k=%d: GFLOP/s, %% of raw sgemm at this shape (%.1f)"
           " and at 2048^3\n", PREFILL_M, PREFILL_N, PREFILL_K, raw_rate);
    for (size_t t = 0; t < FLOAT_TYPES; t++) {
        struct bench_case c = gemm_case(BENCH_GEMM, PREFILL_M, PREFILL_N, PREFILL_K,
                                        float_types[t], bufs);
        double rate = gflops(PREFILL_M, PREFILL_N, PREFILL_K, time_case(&c));
        printf("  B=%-4s %8.1f GFLOP/s  %5.1f%% raw  %5.1f%% 2048^3\n", type_name(float_types[t]),
               rate, 100 * rate / raw_rate, 100 * rate / sgemm_rate);
        free_bufs(bufs, 3);
    }
}

int main(int argc, char **argv)
{
    bool quant_only = argc > 1 && strcmp(argv[1], "quant") == 0;
    int status = be->ctx_create(0, &ctx);
    if (status != DY_OK)
        die("ctx_create", status);
    if ((status = be->event_create(ctx, &ev_start)) != DY_OK ||
        (status = be->event_create(ctx, &ev_end)) != DY_OK)
        die("event_create", status);
    struct dy_device_info info;
    if ((status = be->device_info(0, &info)) != DY_OK)
        die("device_info", status);
    printf("device   %s (%s), %d threads, %.0f MiB last-level cache, %d MHz\n", info.name,
           info.vendor, info.compute_units, (double)info.l2_bytes / (1 << 20), info.clock_mhz);
    printf("runtime  %s; %s\n\n", info.driver_version, info.runtime_version);
    double sgemm_rate = 0.0, raw_rate = 0.0;
    if (!quant_only)
        bench_raw_sgemm(&sgemm_rate, &raw_rate);

    /* ceilings: 512 MiB buffers, far beyond any cache */
    size_t bytes = (size_t)512 << 20;
    struct bench_buf *src = buf_new(bytes), *dst = buf_new(bytes);
    buf_random(src, bytes / 4, DY_F32, 3);
    buf_random(dst, bytes / 4, DY_F32, 4);
    struct bench_case copy = { .kind = BENCH_COPY, .src = src, .dst = dst, .bytes = bytes };
    struct bench_case read = { .kind = BENCH_READ, .src = src, .bytes = bytes };
    const struct bench_case *ceilings[] = { &copy, &read };
    double best[2];
    time_cases(ceilings, 2, best);
    printf("memcpy (buf_copy)      %7.1f GB/s (read + write)\n", 2.0 * bytes / best[0] * 1e-9);
    printf("read-only              %7.1f GB/s\n\n", bytes / best[1] * 1e-9);
    if (!quant_only) {
        bench_dense_decode(&copy, &read, bytes);
        bench_moe_decode(&copy, &read, bytes);
        bench_decode_attention(&copy, &read, bytes);
    }
    bench_quant_decode(&copy, &read, bytes, info.l2_bytes);
    buf_delete(src);
    buf_delete(dst);
    if (!quant_only) {
        bench_prefill(sgemm_rate, raw_rate);
        bench_moe_prefill(sgemm_rate);
    }

    be->event_destroy(ctx, ev_start);
    be->event_destroy(ctx, ev_end);
    be->ctx_destroy(ctx);
    return 0;
}
