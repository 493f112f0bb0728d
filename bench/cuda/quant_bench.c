/* Quantized weights on the CUDA backend, through the dy_* API.
 *
 * 1. The decode GEMV (gemm at m = 1, 2 and 8) at Llama-3.1-8B's shapes for
 *    bf16, fp8, int8, int4 and int4-asym weights (int4 groups of 128): the
 *    per-call time of calls back to back over enough copies of the weights
 *    that together they pass L2 (as a decode step walks its layers), median
 *    of REPS, launched one by one and replayed as a graph (as a decode step
 *    runs: no host time between kernels), as GB/s over the bytes read
 *    (weights, scales, zero points) beside the copy bandwidth measured in
 *    the same run (buf_copy, bytes read + written), and a decode step's
 *    GEMMs summed over 32 layers and the LM head.
 * 2. Tuning tables (--tune): fp8's columns per block and warps per block
 *    (DYNO_CUDA_QGEMV=C,KW), int4's 16-row tiles per warp and warps per
 *    block on the tensor cores (DYNO_CUDA_QMMA=R,KW); --sweep: int4 at one
 *    and two rows on the integer tensor cores by DYNO_CUDA_QI4=KW,B.
 * 3. Prefill GEMMs at m = 1024: fp8 through cuBLASLt's FP8 path (A
 *    quantized on the device included), the bf16 path over dequantized
 *    weights (DYNO_CUDA_FP8_GEMM=0, and int4), and bf16 weights, in TFLOP/s
 *    beside a square bf16 GEMM (the peak).
 * First, each format's GEMV at m = 1, 2 and 8 against cpu-ref at the o
 * shape and at small odd shapes (A spanning 2^-40 .. 2^40 by chunk there),
 * int4 through several launch shapes, each call run twice to see that it
 * gives the same bits; and the fp8 GEMM against the bf16 path at m = 1024
 * (--gemv leaves out the prefill part).
 *
 * Built by bench/cuda/pack_bench.sh quant_bench against a build tree's
 * static libraries; on the device machine bench/cuda/quant_check.sh runs it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/backend.h"

#define REPS 15
#define MAX_SETS 48
#define GROUP 128
#define BENCH_SEED 5
#include "bench/cuda/bench_util.h"

struct shape { const char *name; int n, k; };
static const struct shape shapes[] = {
    { "qkv", 6144, 4096 }, { "o", 4096, 4096 }, { "gate_up", 28672, 4096 }, { "down", 4096, 14336 },
    { "lm_head", 128256, 4096 },
};
#define SHAPES (int)(sizeof shapes / sizeof shapes[0])

/* env: path settings for the variants (cuda_qgemv.cu), "NAME=VALUE ..." */
struct format { const char *name; enum dy_dtype t; bool asym; const char *env; };
static const struct format formats[] = {
    { "bf16", DY_BF16, false, NULL }, { "fp8", DY_FP8, false, NULL }, { "int8", DY_I8, false, NULL },
    { "int4", DY_I4, false, NULL }, { "int4-asym", DY_I4, true, NULL },
    { "int4 (bf16 tensor cores)", DY_I4, false, "DYNO_CUDA_QMMA=1" },
    { "int4 (CUDA cores)", DY_I4, false, "DYNO_CUDA_QMMA=0 DYNO_CUDA_QI4=0" },
};

/* sets (on) or unsets each NAME=VALUE of env */
static void apply_env(const char *env, bool on)
{
    char buf[256];
    if (!env)
        return;
    snprintf(buf, sizeof buf, "%s", env);
    for (char *save = NULL, *tok = strtok_r(buf, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq)
            continue;
        *eq = '\0';
        if (on)
            setenv(tok, eq + 1, 1);
        else
            unsetenv(tok);
    }
}
#define FORMATS (int)(sizeof formats / sizeof formats[0])

/* copies of one weight matrix, rotated by the calls */
struct wset {
    int sets;
    size_t bytes; /* one copy: weights, scales, zero points */
    struct dy_gemm_desc d[MAX_SETS];
    dy_buf b[MAX_SETS], scale[MAX_SETS], zero[MAX_SETS];
};

static void wset_make(struct wset *w, const struct format *f, int n, int k, int copies_bytes)
{
    bool quant = dy_dtype_quantized(f->t);
    size_t count = (size_t)n * k, qb = f->t == DY_BF16 ? count * 2 : dy_dtype_bytes(f->t, count);
    size_t sc = quant ? dy_quant_scales(f->t, n, k, GROUP) : 0, zb = f->asym ? sc : 0;
    w->bytes = qb + sc * 4 + zb;
    w->sets = (int)ceil((double)copies_bytes * 1e6 / w->bytes);
    w->sets = w->sets < 1 ? 1 : w->sets > MAX_SETS ? MAX_SETS : w->sets;
    for (int s = 0; s < w->sets; s++) {
        w->b[s] = alloc(qb);
        w->scale[s] = (dy_buf){ 0 };
        w->zero[s] = (dy_buf){ 0 };
        uint64_t stream = 1000 + 8 * s;
        if (f->t == DY_BF16)
            fill(w->b[s], count, DY_BF16, stream, 0.05f, 0.0f);
        else if (f->t == DY_FP8)
            fill(w->b[s], count, DY_FP8, stream, 300.0f, 0.0f);
        else /* int8 values, or any bytes: two int4 nibbles */
            fill(w->b[s], qb, DY_I8, stream, 127.0f, 0.0f);
        if (quant) {
            w->scale[s] = alloc(sc * 4);
            fill(w->scale[s], sc, DY_F32, stream + 1, 0.001f, 0.002f);
        }
        if (zb) {
            w->zero[s] = alloc(zb);
            fill(w->zero[s], zb, DY_I8, stream + 2, 7.0f, 8.0f);
        }
    }
}

static void wset_free(struct wset *w)
{
    for (int s = 0; s < w->sets; s++) {
        dy_buf_free(ctx, &w->b[s]);
        dy_buf_free(ctx, &w->scale[s]);
        dy_buf_free(ctx, &w->zero[s]);
    }
}

/* descriptors C[m, n] = A[m, k] . B^T over each copy */
static void wset_descs(struct wset *w, const struct format *f, int m, int n, int k, dy_buf a, dy_buf c)
{
    for (int s = 0; s < w->sets; s++) {
        w->d[s] = (struct dy_gemm_desc){
            .a = a, .b = w->b[s], .c = c, .m = m, .n = n, .k = k, .lda = k, .ldb = k, .ldc = n,
            .a_dtype = DY_F32, .b_dtype = f->t, .c_dtype = DY_F32, .beta = 0.0f,
            .bq = { .scale = w->scale[s], .zero = w->zero[s], .group = GROUP, .bias_dtype = DY_BF16 },
        };
    }
}

static void do_gemm(void *arg, int i)
{
    struct wset *w = arg;
    CHECK(dy_gemm(ctx, &w->d[i % w->sets]));
}

static int wset_calls(const struct wset *w)
{
    return w->sets * ((20 + w->sets - 1) / w->sets);
}

static double time_wset(struct wset *w)
{
    return time_calls(do_gemm, w, wset_calls(w));
}

/* the same calls replayed as one graph, as a decode step runs them */
static double time_wset_graph(struct wset *w)
{
    return time_calls_graph(do_gemm, w, wset_calls(w));
}

/* ---- checks ---- */
static double max_rel_err(const float *want, const float *got, size_t count)
{
    double max_ref = 1e-30, max_err = 0.0;
    for (size_t i = 0; i < count; i++) {
        max_ref = fmax(max_ref, fabs(want[i]));
        double e = fabs((double)want[i] - got[i]);
        max_err = isnan(e) ? INFINITY : fmax(max_err, e);
    }
    return max_err / max_ref;
}

/* A[m, k]: uniform in [-1, 1), or (wide) each 128-wide chunk scaled by
 * its own power of two in 2^-40 .. 2^40, the second chunk zeros */
static void host_a(float *a, int m, int k, bool wide)
{
    uint32_t state = 12345u;
    for (int r = 0; r < m; r++)
        for (int i = 0; i < k; i++) {
            state = state * 1664525u + 1013904223u;
            float x = (float)(state >> 8) / 8388608.0f - 1.0f;
            int chunk = i / 128 + 5 * r;
            a[(size_t)r * k + i] = !wide ? x : chunk % 7 == 1 ? 0.0f : ldexpf(x, (chunk * 37) % 81 - 40);
        }
}

/* max rel err of one GEMV (beta 1, with a bias where asked) on the device
 * against cpu-ref, same bytes; *same: a second run gave the same bits */
static double check_one(dy_ctx *ref, const struct format *f, int m, int n, int k, bool wide, bool bias,
                        const char *env, bool *same)
{
    struct wset w;
    wset_make(&w, f, n, k, 0);
    size_t qb = dy_dtype_bytes(f->t, (size_t)n * k), sc = dy_quant_scales(f->t, n, k, GROUP);
    void *hq = malloc(qb), *hs = malloc(sc * 4), *hz = malloc(sc), *hb = malloc((size_t)n * 2);
    float *ha = malloc((size_t)m * k * 4), *c0 = malloc((size_t)m * n * 4);
    float *got = malloc((size_t)m * n * 4), *again = malloc((size_t)m * n * 4), *want = malloc((size_t)m * n * 4);
    host_a(ha, m, k, wide);
    for (int i = 0; i < m * n; i++)
        c0[i] = (float)((i * 7) % 13) - 6.0f;
    for (int i = 0; i < n; i++)
        ((uint16_t *)hb)[i] = (uint16_t)(0x3f00 + (i * 29) % 256); /* bf16 in [0.5, 1) */
    dy_buf a = alloc((size_t)m * k * 4), c = alloc((size_t)m * n * 4), bb = bias ? alloc((size_t)n * 2) : (dy_buf){ 0 };
    CHECK(dy_buf_write(ctx, a, ha, (size_t)m * k * 4));
    if (bias)
        CHECK(dy_buf_write(ctx, bb, hb, (size_t)n * 2));
    wset_descs(&w, f, m, n, k, a, c);
    w.d[0].beta = 1.0f;
    w.d[0].bias = bb;
    CHECK(dy_buf_read(ctx, w.b[0], hq, qb));
    CHECK(dy_buf_read(ctx, w.scale[0], hs, sc * 4));
    if (f->asym)
        CHECK(dy_buf_read(ctx, w.zero[0], hz, sc));
    apply_env(f->env, true);
    apply_env(env, true);
    for (int run = 0; run < 2; run++) {
        CHECK(dy_buf_write(ctx, c, c0, (size_t)m * n * 4));
        CHECK(dy_gemm(ctx, &w.d[0]));
        CHECK(dy_buf_read(ctx, c, run ? again : got, (size_t)m * n * 4));
    }
    apply_env(env, false);
    apply_env(f->env, false);
    *same = !memcmp(got, again, (size_t)m * n * 4);
    dy_ctx *saved = ctx;
    ctx = ref;
    struct dy_gemm_desc r = w.d[0];
    r.a = alloc((size_t)m * k * 4);
    r.b = alloc(qb);
    r.c = alloc((size_t)m * n * 4);
    r.bq.scale = alloc(sc * 4);
    r.bq.zero = f->asym ? alloc(sc) : (dy_buf){ 0 };
    r.bias = bias ? alloc((size_t)n * 2) : (dy_buf){ 0 };
    CHECK(dy_buf_write(ctx, r.a, ha, (size_t)m * k * 4));
    CHECK(dy_buf_write(ctx, r.b, hq, qb));
    CHECK(dy_buf_write(ctx, r.c, c0, (size_t)m * n * 4));
    CHECK(dy_buf_write(ctx, r.bq.scale, hs, sc * 4));
    if (f->asym)
        CHECK(dy_buf_write(ctx, r.bq.zero, hz, sc));
    if (bias)
        CHECK(dy_buf_write(ctx, r.bias, hb, (size_t)n * 2));
    CHECK(dy_gemm(ctx, &r));
    CHECK(dy_buf_read(ctx, r.c, want, (size_t)m * n * 4));
    dy_buf *rb[] = { &r.a, &r.b, &r.c, &r.bq.scale, &r.bq.zero, &r.bias };
    for (int i = 0; i < 6; i++)
        dy_buf_free(ctx, rb[i]);
    ctx = saved;
    double err = max_rel_err(want, got, (size_t)m * n);
    free(hq), free(hs), free(hz), free(hb), free(ha), free(c0), free(got), free(again), free(want);
    dy_buf_free(ctx, &a);
    dy_buf_free(ctx, &c);
    dy_buf_free(ctx, &bb);
    wset_free(&w);
    return err;
}

/* each format, int4 also through other launch shapes of its kernels */
static void check_gemv(void)
{
    char why[256];
    const struct dy_backend *ref_be = dy_registry_find("cpu-ref", why, sizeof why);
    dy_ctx *ref;
    if (!ref_be || dy_ctx_create(ref_be, 0, &ref) != DY_OK) {
        printf("no cpu-ref: %s\n", why);
        return;
    }
    /* m, n, k, wide A */
    static const int cases[][4] = {
        { 1, 4096, 4096, 0 }, { 2, 4096, 4096, 0 }, { 8, 4096, 4096, 0 }, { 1, 300, 512, 1 }, { 2, 300, 512, 1 },
        { 2, 130, 384, 1 }, { 1, 64, 128, 1 }, { 2, 16, 1152, 1 }, { 3, 96, 256, 1 },
    };
    static const char *const int4_envs[] = {
        NULL, "DYNO_CUDA_QI4=8,2", "DYNO_CUDA_QI4=1,1", "DYNO_CUDA_QI4=3,5", "DYNO_CUDA_QI4=5,300", "DYNO_CUDA_QI4=0",
    };
    printf("| check | weights | m x n x k | A | runs | max rel err vs cpu-ref | same bits twice |\n"
           "|---|---|---|---|--:|--:|---|\n");
    for (size_t cs = 0; cs < sizeof cases / sizeof cases[0]; cs++)
        for (int f = 1; f < FORMATS; f++) {
            int m = cases[cs][0], n = cases[cs][1], k = cases[cs][2], runs = 1;
            bool wide = cases[cs][3], plain_int4 = formats[f].t == DY_I4 && !formats[f].env, same_all = true;
            if (plain_int4)
                runs = (int)(sizeof int4_envs / sizeof int4_envs[0]);
            double err = 0.0;
            for (int v = 0; v < runs; v++) {
                bool same;
                double e = check_one(ref, &formats[f], m, n, k, wide, (cs + f + v) % 2 == 0,
                                     plain_int4 ? int4_envs[v] : NULL, &same);
                err = isnan(e) || e > err ? e : err;
                same_all = same_all && same;
            }
            printf("| %s | %s | %d x %d x %d | %s | %d | %.2g | %s |\n", err <= 1e-4 ? "ok" : "FAILED",
                   formats[f].name, m, n, k, wide ? "wide" : "uniform", runs, err, same_all ? "yes" : "NO");
        }
    dy_ctx_destroy(ref);
}

/* ---- 1. decode GEMV ---- */
#define GEMV_MS 3
static double gemv_time[GEMV_MS][FORMATS][SHAPES], gemv_graph[GEMV_MS][FORMATS][SHAPES];

static void bench_gemv(double copy)
{
    static const int ms[GEMV_MS] = { 1, 2, 8 };
    for (int mi = 0; mi < GEMV_MS; mi++) {
        int m = ms[mi];
        printf("\n### GEMV, m = %d (int4 groups of %d): calls one by one, and replayed as a graph\n\n"
               "| shape | n x k | weights | MB | us | of copy | graph us | GB/s | of copy | vs bf16 |\n"
               "|---|---|---|--:|--:|--:|--:|--:|--:|--:|\n", m, GROUP);
        for (int s = 0; s < SHAPES; s++) {
            int n = shapes[s].n, k = shapes[s].k;
            dy_buf a = alloc((size_t)m * k * 4), c = alloc((size_t)m * n * 4);
            fill(a, (size_t)m * k, DY_F32, 3, 1.0f, 0.0f);
            for (int f = 0; f < FORMATS; f++) {
                struct wset *w = calloc(1, sizeof *w);
                wset_make(w, &formats[f], n, k, 400);
                wset_descs(w, &formats[f], m, n, k, a, c);
                apply_env(formats[f].env, true);
                double t = time_wset(w), tg = time_wset_graph(w);
                apply_env(formats[f].env, false);
                gemv_time[mi][f][s] = t;
                gemv_graph[mi][f][s] = tg;
                printf("| %s | %d x %d | %s | %.1f | %.1f | %.2f | %.1f | %.0f | %.2f | %.2f |\n", shapes[s].name, n,
                       k, formats[f].name, w->bytes / 1e6, t * 1e6, w->bytes / t * 1e-9 / copy, tg * 1e6,
                       w->bytes / tg * 1e-9, w->bytes / tg * 1e-9 / copy, tg / gemv_graph[mi][0][s]);
                wset_free(w);
                free(w);
            }
            dy_buf_free(ctx, &a);
            dy_buf_free(ctx, &c);
        }
        /* Llama-3.1-8B: 32 layers of qkv, o, gate_up, down, then the LM head */
        printf("\nm = %d, a decode step's GEMMs (32 layers + LM head):\n\n"
               "| weights | ms | graph ms | vs bf16 (graph) |\n|---|--:|--:|--:|\n", m);
        double bf16_step = 0.0;
        for (int f = 0; f < FORMATS; f++) {
            double step = gemv_time[mi][f][4], graph = gemv_graph[mi][f][4];
            for (int s = 0; s < 4; s++) {
                step += 32 * gemv_time[mi][f][s];
                graph += 32 * gemv_graph[mi][f][s];
            }
            if (f == 0)
                bf16_step = graph;
            printf("| %s | %.3f | %.3f | %.2fx |\n", formats[f].name, step * 1e3, graph * 1e3, bf16_step / graph);
        }
    }
}

/* ---- 2. tuning ---- */
/* one row: the default, then each value of `var` */
static void tune_row(const struct format *f, int m, const struct shape *sh, const char *var, const char *const *vals,
                     int count, bool graph)
{
    dy_buf a = alloc((size_t)m * sh->k * 4), c = alloc((size_t)m * sh->n * 4);
    fill(a, (size_t)m * sh->k, DY_F32, 3, 1.0f, 0.0f);
    struct wset *w = calloc(1, sizeof *w);
    wset_make(w, f, sh->n, sh->k, 200);
    wset_descs(w, f, m, sh->n, sh->k, a, c);
    unsetenv(var);
    printf("| %s | %d | %s | %.1f |", f->name, m, sh->name, (graph ? time_wset_graph(w) : time_wset(w)) * 1e6);
    for (int i = 0; i < count; i++) {
        setenv(var, vals[i], 1);
        printf(" %.1f |", (graph ? time_wset_graph(w) : time_wset(w)) * 1e6);
    }
    printf("\n");
    unsetenv(var);
    wset_free(w);
    free(w);
    dy_buf_free(ctx, &a);
    dy_buf_free(ctx, &c);
}

static void bench_tuning(void)
{
    static const char *const core_vals[] = { "8,1", "8,2", "8,4", "8,8" };
    static const char *const mma_vals[] = { "1,2", "1,4", "1,8", "2,2", "2,4", "2,8", "4,1", "4,2", "4,4", "4,8" };
    printf("\n### GEMV tuning, us per call: fp8 by DYNO_CUDA_QGEMV=C,KW (default first)\n\n"
           "| weights | m | shape | default |");
    for (int i = 0; i < 4; i++)
        printf(" %s |", core_vals[i]);
    printf("\n|---|--:|---|--:|--:|--:|--:|--:|\n");
    for (int m = 1; m <= 8; m *= 8)
        for (int s = 0; s < 4; s++)
            tune_row(&formats[1], m, &shapes[s], "DYNO_CUDA_QGEMV", core_vals, 4, false);
    printf("\n### int4 on the tensor cores by DYNO_CUDA_QMMA=R,KW (default first)\n\n| weights | m | shape | default |");
    for (int i = 0; i < 10; i++)
        printf(" %s |", mma_vals[i]);
    printf("\n|---|--:|---|--:|");
    for (int i = 0; i < 10; i++)
        printf("--:|");
    printf("\n");
    for (int m = 1; m <= 8; m *= 8)
        for (int s = 0; s < SHAPES; s++)
            tune_row(&formats[3], m, &shapes[s], "DYNO_CUDA_QMMA", mma_vals, 10, false);
}

static void bench_sweep(void)
{
    static const char *const vals[] = { "8,2", "8,1", "12,1", "4,4", "4,2", "16,2" };
    int count = (int)(sizeof vals / sizeof vals[0]);
    printf("\n### int4 at m <= 2 on the integer tensor cores by DYNO_CUDA_QI4=KW,B, graph us per call"
           " (default first)\n\n| weights | m | shape | default |");
    for (int i = 0; i < count; i++)
        printf(" %s |", vals[i]);
    printf("\n|---|--:|---|--:|");
    for (int i = 0; i < count; i++)
        printf("--:|");
    printf("\n");
    for (int m = 1; m <= 2; m++)
        for (int f = 3; f <= 4; f++)
            for (int s = 0; s < SHAPES; s++)
                tune_row(&formats[f], m, &shapes[s], "DYNO_CUDA_QI4", vals, count, true);
}

/* ---- 3. prefill GEMM ---- */
static double square_bf16(void)
{
    int s = 8192;
    struct wset w = { .sets = 1 };
    dy_buf a = alloc((size_t)s * s * 2), b = alloc((size_t)s * s * 2), c = alloc((size_t)s * s * 4);
    fill(a, (size_t)s * s, DY_BF16, 1, 1.0f, 0.0f);
    fill(b, (size_t)s * s, DY_BF16, 2, 1.0f, 0.0f);
    w.d[0] = (struct dy_gemm_desc){ .a = a, .b = b, .c = c, .m = s, .n = s, .k = s, .lda = s, .ldb = s, .ldc = s,
                                    .a_dtype = DY_BF16, .b_dtype = DY_BF16, .c_dtype = DY_F32 };
    double t = time_calls(do_gemm, &w, 3);
    dy_buf_free(ctx, &a);
    dy_buf_free(ctx, &b);
    dy_buf_free(ctx, &c);
    return 2.0 * s * s * (double)s / t * 1e-12;
}

static void bench_prefill(void)
{
    int m = 1024;
    double peak = square_bf16();
    printf("\n### prefill GEMM, m = %d, A f32 (bf16 peak: 8192^3 bf16 x bf16 at %.0f TFLOP/s)\n\n", m, peak);
    printf("| shape | bf16 | fp8 (cuBLASLt FP8) | fp8 (dequant + bf16) | int4 (dequant + bf16) | fp8 vs bf16 |"
           " fp8 err vs bf16 path |\n|---|--:|--:|--:|--:|--:|--:|\n");
    static const int fs[] = { 0, 1, 1, 3 };
    for (int s = 0; s < 4; s++) {
        int n = shapes[s].n, k = shapes[s].k;
        dy_buf a = alloc((size_t)m * k * 4), c = alloc((size_t)m * n * 4);
        fill(a, (size_t)m * k, DY_F32, 3, 1.0f, 0.0f);
        double tf[4];
        float *out[2] = { NULL, NULL };
        for (int i = 0; i < 4; i++) {
            struct wset *w = calloc(1, sizeof *w);
            wset_make(w, &formats[fs[i]], n, k, 0);
            wset_descs(w, &formats[fs[i]], m, n, k, a, c);
            setenv("DYNO_CUDA_FP8_GEMM", i == 2 ? "0" : "require", 1);
            tf[i] = 0.0;
            if (dy_gemm(ctx, &w->d[0]) != DY_OK)
                printf("%s %s: %s\n", shapes[s].name, i == 1 ? "fp8" : formats[fs[i]].name, dy_ctx_error(ctx));
            else
                tf[i] = 2.0 * m * n * (double)k / time_calls(do_gemm, w, 5) * 1e-12;
            if ((i == 1 || i == 2) && tf[i] > 0.0) {
                out[i - 1] = calloc((size_t)m * n, 4);
                CHECK(dy_gemm(ctx, &w->d[0]));
                CHECK(dy_buf_read(ctx, c, out[i - 1], (size_t)m * n * 4));
            }
            unsetenv("DYNO_CUDA_FP8_GEMM");
            wset_free(w);
            free(w);
        }
        printf("| %s %dx%d | %.0f | %.0f | %.0f | %.0f | %.2fx | %.2g |\n", shapes[s].name, n, k, tf[0], tf[1], tf[2],
               tf[3], tf[1] / tf[0], out[0] && out[1] ? max_rel_err(out[1], out[0], (size_t)m * n) : NAN);
        free(out[0]);
        free(out[1]);
        dy_buf_free(ctx, &a);
        dy_buf_free(ctx, &c);
    }
}

int main(int argc, char **argv)
{
    if (!open_cuda("quant_bench"))
        return 77;
    double copy = copy_gbps();
    check_gemv();
    printf("\ncopy %.0f GB/s (read + written)\n", copy);
    bool tune = false, sweep = false, prefill = true;
    for (int i = 1; i < argc; i++) {
        tune = tune || !strcmp(argv[i], "--tune");
        sweep = sweep || !strcmp(argv[i], "--sweep");
        prefill = prefill && strcmp(argv[i], "--gemv");
    }
    bench_gemv(copy);
    if (tune)
        bench_tuning();
    if (sweep)
        bench_sweep();
    if (prefill)
        bench_prefill();
    dy_ctx_destroy(ctx);
    return 0;
}
