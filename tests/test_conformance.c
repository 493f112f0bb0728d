/* Op conformance: every op of every available backend against cpu-ref, over
 * several shapes and dtypes (as ggml's test-backend-ops). Outputs carry guard
 * bytes that must survive the op. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../backends/backend.h"
#include "dy_test.h"
#include "conformance.h"

static double tol_for(enum dy_dtype t)
{
    return t == DY_BF16 ? 1.6e-2 : t == DY_F16 ? 2e-3 : 2e-5;
}

/* ---- fill_random: bit-identical everywhere ---- */
static void test_fill_random(void)
{
    require_backends();
    const size_t counts[] = { 1, 1000, 100003 };
    for (int t = DY_F32; t <= DY_BF16; t++) {
        for (size_t c = 0; c < 3; c++) {
            size_t bytes = counts[c] * dy_dtype_size((enum dy_dtype)t);
            struct dy_fill_random_desc d = { .count = counts[c], .dtype = (enum dy_dtype)t,
                                             .seed = 42 + c, .stream = 7, .scale = 0.37f,
                                             .offset = t == DY_F32 ? 1.0f : 0.0f };
            d.dst = upload(ref_ctx, NULL, bytes);
            DY_REQUIRE(dy_fill_random(ref_ctx, &d) == DY_OK);
            void *want = download(ref_ctx, d.dst, bytes);
            for (int u = 0; u < dut_count; u++) {
                d.dst = upload(duts[u].ctx, NULL, bytes);
                DY_CHECK(dy_fill_random(duts[u].ctx, &d) == DY_OK);
                void *got = download(duts[u].ctx, d.dst, bytes);
                if (memcmp(want, got, bytes)) {
                    printf("# fill_random %s x %zu differs on %s\n",
                           dy_dtype_name((enum dy_dtype)t), counts[c], duts[u].name);
                    DY_CHECK(!"bit-identical");
                }
                free(got);
                dy_buf_free(duts[u].ctx, &d.dst);
            }
            free(want);
            d.dst.h = NULL;
        }
    }
}

/* ---- gemm ---- */
/* act: A and C in B's dtype (reduced-precision activations) instead of f32;
 * fn: the activation applied to C (SwiGLU: each row's first n/2 columns
 * are compared, the rest is scratch) */
static void gemm_case_fn(int m, int n, int k, int pad, enum dy_dtype bt, bool bias, float beta, bool act,
                         enum dy_gemm_act fn)
{
    int lda = k + pad, ldb = k + pad, ldc = n + pad;
    enum dy_dtype at = act ? bt : DY_F32;
    size_t a_n = (size_t)m * lda, b_n = (size_t)n * ldb, c_n = (size_t)m * ldc, ae = dy_dtype_size(at);
    void *a = host_random(at, a_n, 1.0f), *b = host_random(bt, b_n, 0.5f);
    void *bi = host_random(bt, (size_t)n, 1.0f), *c0 = host_random(at, c_n, 1.0f);
    void *want = NULL;
    /* B comes by upload, so either promise holds: the dtypes of a shape
     * take turns making it (the CUDA GEMV's loads before its wait) */
    bool settled = (n / 2 + k / 2 + (int)bt) % 2 == 0;
    for (int u = -1; u < dut_count; u++) {
        dy_ctx *ctx = CTX_OF(u);
        struct dy_gemm_desc d = { .m = m, .n = n, .k = k, .lda = lda, .ldb = ldb, .ldc = ldc,
                                  .a_dtype = at, .b_dtype = bt, .c_dtype = at, .beta = beta, .act = fn,
                                  .b_settled = settled };
        d.a = upload(ctx, a, a_n * ae);
        d.b = upload(ctx, b, b_n * dy_dtype_size(bt));
        d.c = upload(ctx, c0, c_n * ae);
        if (bias)
            d.bias = upload(ctx, bi, (size_t)n * dy_dtype_size(bt));
        DY_CHECK(dy_gemm(ctx, &d) == DY_OK);
        char *got = download(ctx, d.c, c_n * ae);
        size_t count = c_n;
        if (fn == DY_ACT_SWIGLU) {
            for (int r = 1; r < m; r++)
                memmove(got + (size_t)r * (n / 2) * ae, got + (size_t)r * ldc * ae, (size_t)(n / 2) * ae);
            count = (size_t)m * (n / 2);
        }
        char what[128];
        snprintf(what, sizeof what, "gemm m%d n%d k%d %s bias%d beta%g%s%s", m, n, k, dy_dtype_name(bt), bias,
                 beta, act ? " A, C in B's dtype" : "",
                 fn == DY_ACT_GELU ? " gelu" : fn == DY_ACT_SWIGLU ? " swiglu" : "");
        /* A may be rounded to B's dtype (backend.h) */
        double tol = bt == DY_F32 ? 1e-4 : bt == DY_F16 ? 3e-3 : 1.6e-2;
        want = compare_or_keep(u, want, got, what, at, count, tol);
        dy_buf_free(ctx, &d.a);
        dy_buf_free(ctx, &d.b);
        dy_buf_free(ctx, &d.c);
        dy_buf_free(ctx, &d.bias);
    }
    free(want);
    free(a);
    free(b);
    free(bi);
    free(c0);
}

static void gemm_case_as(int m, int n, int k, int pad, enum dy_dtype bt, bool bias, float beta, bool act)
{
    gemm_case_fn(m, n, k, pad, bt, bias, beta, act, DY_ACT_NONE);
}

static void gemm_case(int m, int n, int k, int pad, enum dy_dtype bt, bool bias, float beta)
{
    gemm_case_as(m, n, k, pad, bt, bias, beta, false);
}

/* RoPE on the output (the decode GEMV's epilogue, or composed): the first
 * `rot` of `heads` heads rotated at positions past a prompt, the rest (v)
 * as projected */
static void gemm_rope_case(int m, int heads, int rot, int hd, int k, enum dy_dtype bt, bool bias)
{
    int n = heads * hd;
    float *a = host_random(DY_F32, (size_t)m * k, 1.0f), freq[128];
    void *b = host_random(bt, (size_t)n * k, 0.5f), *bi = host_random(bt, (size_t)n, 1.0f);
    int32_t pos[32];
    for (int i = 0; i < m && i < 32; i++)
        pos[i] = 37 + 101 * i;
    for (int i = 0; i < hd / 2; i++)
        freq[i] = powf(10000.0f, -2.0f * (float)i / (float)hd);
    void *want = NULL;
    for (int u = -1; u < dut_count; u++) {
        dy_ctx *ctx = CTX_OF(u);
        struct dy_gemm_desc d = { .m = m, .n = n, .k = k, .lda = k, .ldb = k, .ldc = n, .a_dtype = DY_F32,
                                  .b_dtype = bt, .c_dtype = DY_F32, .act = DY_ACT_ROPE,
                                  .rope = { .heads = rot, .head_dim = hd },
                                  .b_settled = (heads + rot + (int)bt) % 2 == 0 };
        d.a = upload(ctx, a, (size_t)m * k * 4);
        d.b = upload(ctx, b, (size_t)n * k * dy_dtype_size(bt));
        d.c = upload(ctx, NULL, (size_t)m * n * 4);
        if (bias)
            d.bias = upload(ctx, bi, (size_t)n * dy_dtype_size(bt));
        d.rope.positions = upload(ctx, pos, (size_t)m * 4);
        d.rope.inv_freq = upload(ctx, freq, (size_t)hd / 2 * 4);
        DY_CHECK(dy_gemm(ctx, &d) == DY_OK);
        char what[96];
        snprintf(what, sizeof what, "gemm rope m%d heads %d/%d d%d k%d %s bias%d", m, rot, heads, hd, k,
                 dy_dtype_name(bt), bias);
        want = compare_or_keep(u, want, download(ctx, d.c, (size_t)m * n * 4), what, DY_F32, (size_t)m * n,
                               bt == DY_F32 ? 1e-4 : 3e-3);
        FREE_BUFS(ctx, &d.a, &d.b, &d.c, &d.bias, &d.rope.positions, &d.rope.inv_freq);
    }
    free(want);
    free(a);
    free(b);
    free(bi);
}

/* A made by an RMSNorm of the residual stream x (the decode GEMV's
 * prologue, or dy_norm into A composed), with an activation: n is C's
 * columns (SwiGLU: twice them), RoPE rotating all of n as heads of 64 at
 * position 77. x's rows are x_pad wider than k. cache (f32, f16, bf16,
 * fp8; DY_I32: none): C's second head and its last also stored as K and
 * V rows into a paged cache of 8 slots (dy_gemm_desc.append). */
static void gemm_norm_case_kv(int m, int n, int k, int x_pad, enum dy_dtype bt, bool bias, float beta,
                              enum dy_gemm_act fn, enum dy_dtype cache)
{
    enum { SLOTS = 8, HD = 64 };
    size_t cache_bytes = SLOTS * HD * dy_dtype_size(cache);
    int32_t slots[8];
    for (int i = 0; i < 8; i++)
        slots[i] = (3 + 5 * i) % SLOTS;
    void *want_k = NULL, *want_v = NULL;
    int xs = k + x_pad;
    float *x = host_random(DY_F32, (size_t)m * xs, 1.0f), freq[32];
    void *g = host_random(bt, (size_t)k, 1.0f), *b = host_random(bt, (size_t)n * k, 0.5f);
    void *bi = host_random(bt, (size_t)n, 1.0f), *c0 = host_random(DY_F32, (size_t)m * n, 1.0f);
    int32_t pos[8];
    for (int i = 0; i < 8; i++)
        pos[i] = 77 + 13 * i;
    for (int i = 0; i < 32; i++)
        freq[i] = powf(10000.0f, -2.0f * (float)i / 64.0f);
    int cols = fn == DY_ACT_SWIGLU ? n / 2 : n;
    void *want = NULL;
    for (int u = -1; u < dut_count; u++) {
        dy_ctx *ctx = CTX_OF(u);
        struct dy_gemm_desc d = { .m = m, .n = n, .k = k, .lda = k, .ldb = k, .ldc = n, .a_dtype = DY_F32,
                                  .b_dtype = bt, .c_dtype = DY_F32, .beta = beta, .act = fn,
                                  .rope = { .heads = n / 64, .head_dim = 64 },
                                  .norm = { .x_stride = xs, .eps = 1e-5f, .x_dtype = DY_F32,
                                            .weight_dtype = bt } };
        d.a = upload(ctx, NULL, (size_t)m * k * 4);
        d.b = upload(ctx, b, (size_t)n * k * dy_dtype_size(bt));
        d.c = upload(ctx, c0, (size_t)m * n * 4);
        d.norm.x = upload(ctx, x, (size_t)m * xs * 4);
        d.norm.weight = upload(ctx, g, (size_t)k * dy_dtype_size(bt));
        if (bias)
            d.bias = upload(ctx, bi, (size_t)n * dy_dtype_size(bt));
        if (fn == DY_ACT_ROPE) {
            d.rope.positions = upload(ctx, pos, sizeof pos);
            d.rope.inv_freq = upload(ctx, freq, sizeof freq);
        }
        if (cache != DY_I32) {
            void *zeros = calloc(1, cache_bytes);
            d.append = (struct dy_gemm_append){ .slots = upload(ctx, slots, sizeof slots),
                                                .k_cache = upload(ctx, zeros, cache_bytes),
                                                .v_cache = upload(ctx, zeros, cache_bytes), .k_col = HD,
                                                .v_col = n - HD, .kv_heads = 1, .head_dim = HD,
                                                .cache_dtype = cache };
            free(zeros);
        }
        DY_CHECK(dy_gemm(ctx, &d) == DY_OK);
        if (cache != DY_I32) {
            /* the cache's rounding on top of the GEMM's */
            double tol = cache == DY_FP8 ? 0.07 : cache == DY_BF16 ? 1.6e-2 : bt == DY_F32 ? 1e-4 : 3e-3;
            char kv_what[96];
            snprintf(kv_what, sizeof kv_what, "gemm norm m%d %s append into %s K", m, dy_dtype_name(bt),
                     dy_dtype_name(cache));
            want_k = compare_or_keep(u, want_k, download(ctx, d.append.k_cache, cache_bytes), kv_what, cache,
                                     SLOTS * HD, tol);
            want_v = compare_or_keep(u, want_v, download(ctx, d.append.v_cache, cache_bytes), kv_what, cache,
                                     SLOTS * HD, tol);
        }
        float *got = download(ctx, d.c, (size_t)m * n * 4);
        for (int r = 1; r < m && cols < n; r++)
            memmove(got + (size_t)r * cols, got + (size_t)r * n, (size_t)cols * 4);
        char what[128];
        snprintf(what, sizeof what, "gemm norm m%d n%d k%d x+%d %s bias%d beta%g%s", m, n, k, x_pad,
                 dy_dtype_name(bt), bias, beta,
                 fn == DY_ACT_SWIGLU ? " swiglu" : fn == DY_ACT_ROPE ? " rope" : "");
        want = compare_or_keep(u, want, got, what, DY_F32, (size_t)m * cols, bt == DY_F32 ? 1e-4 : 3e-3);
        FREE_BUFS(ctx, &d.a, &d.b, &d.c, &d.bias, &d.norm.x, &d.norm.weight, &d.rope.positions,
                  &d.rope.inv_freq, &d.append.slots, &d.append.k_cache, &d.append.v_cache);
    }
    free(want);
    free(want_k);
    free(want_v);
    free(x);
    free(g);
    free(b);
    free(bi);
    free(c0);
}

static void gemm_norm_case(int m, int n, int k, int x_pad, enum dy_dtype bt, bool bias, float beta,
                           enum dy_gemm_act fn)
{
    gemm_norm_case_kv(m, n, k, x_pad, bt, bias, beta, fn, DY_I32);
}

static void test_gemm(void)
{
    require_backends();
    static const int shapes[][4] = {
        { 1, 64, 64, 0 }, { 3, 50, 70, 5 }, { 15, 128, 96, 0 }, { 16, 64, 64, 3 },
        { 33, 100, 257, 0 }, { 128, 256, 512, 0 }, { 2, 1000, 300, 0 },
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int t = DY_F32; t <= DY_BF16; t++)
            gemm_case(shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3], (enum dy_dtype)t,
                      s % 2 == 0, s % 3 == 0 ? 1.0f : 0.0f);
    /* bias and accumulation together past the GEMV's rows (a bias in the
     * vendor GEMM's epilogue), A's rows strided */
    gemm_case(40, 72, 64, 0, DY_BF16, true, 1.0f);
    gemm_case(40, 72, 64, 4, DY_F16, true, 1.0f);
    /* reduced-precision activations: A and C in B's dtype, with and
     * without bias and accumulation, decode- and prefill-sized */
    for (int t = DY_F16; t <= DY_BF16; t++) {
        gemm_case_as(3, 50, 64, 0, (enum dy_dtype)t, true, 0.0f, true);
        gemm_case_as(40, 72, 64, 4, (enum dy_dtype)t, true, 1.0f, true);
        gemm_case_as(130, 256, 320, 0, (enum dy_dtype)t, false, 0.0f, true);
        gemm_case_as(64, 96, 128, 0, (enum dy_dtype)t, false, 1.0f, true);
    }
    /* GELU on the output (a fused epilogue, or composed), with and without
     * bias, in every dtype */
    for (int t = DY_F32; t <= DY_BF16; t++) {
        gemm_case_fn(3, 50, 64, 0, (enum dy_dtype)t, true, 0.0f, t != DY_F32, DY_ACT_GELU);
        gemm_case_fn(130, 256, 320, 4, (enum dy_dtype)t, true, 0.0f, t != DY_F32, DY_ACT_GELU);
        gemm_case_fn(64, 96, 128, 0, (enum dy_dtype)t, false, 0.0f, t != DY_F32, DY_ACT_GELU);
    }
    /* SwiGLU on the output: decode-sized (the fused GEMV, which needs
     * ldb == k: no padding) and larger (composed), f32 rows with every
     * float B, A and C in B's dtype */
    static const int sw[][3] = { { 1, 128, 64 }, { 3, 200, 256 }, { 8, 64, 512 }, { 40, 96, 128 } };
    for (size_t s = 0; s < sizeof sw / sizeof sw[0]; s++)
        for (int t = DY_F32; t <= DY_BF16; t++) {
            gemm_case_fn(sw[s][0], sw[s][1], sw[s][2], 0, (enum dy_dtype)t, s % 2 == 1, 0.0f, false, DY_ACT_SWIGLU);
            if (t != DY_F32 && s == 3)
                gemm_case_fn(sw[s][0], sw[s][1], sw[s][2], 0, (enum dy_dtype)t, true, 0.0f, true, DY_ACT_SWIGLU);
        }
    /* RoPE on the output: decode-sized (the fused GEMV) and prefill-sized
     * (composed), grouped heads with v after them, dims 64 and 128 */
    for (int t = DY_F32; t <= DY_BF16; t++) {
        gemm_rope_case(1, 6, 4, 128, 256, (enum dy_dtype)t, false);
        gemm_rope_case(3, 5, 3, 64, 192, (enum dy_dtype)t, true);
        gemm_rope_case(8, 3, 3, 64, 64, (enum dy_dtype)t, false);
        gemm_rope_case(20, 4, 3, 64, 128, (enum dy_dtype)t, true);
    }
    /* A as the RMSNorm of x: one row (the decode GEMV's prologue where a
     * backend has it) and several (composed), plain with accumulation into
     * C (the residual), SwiGLU and RoPE, x's rows wider than k (one whose
     * rows are off 16 bytes goes composed) */
    for (int t = DY_F32; t <= DY_BF16; t++) {
        gemm_norm_case(1, 96, 256, 0, (enum dy_dtype)t, false, 1.0f, DY_ACT_NONE);
        gemm_norm_case(1, 128, 512, 8, (enum dy_dtype)t, true, 0.0f, DY_ACT_SWIGLU);
        gemm_norm_case(1, 192, 128, 0, (enum dy_dtype)t, true, 0.0f, DY_ACT_ROPE);
        gemm_norm_case(3, 128, 64, 3, (enum dy_dtype)t, false, 0.0f, DY_ACT_ROPE);
        gemm_norm_case(5, 100, 200, 0, (enum dy_dtype)t, true, 1.0f, DY_ACT_NONE);
    }
    /* with the KV append (the q/k/v projection of a decode step): fused
     * and composed, every cache dtype but int8 (refused: its scales) */
    static const enum dy_dtype caches[] = { DY_F32, DY_F16, DY_BF16, DY_FP8 };
    for (int t = DY_F16; t <= DY_BF16; t++)
        for (size_t c = 0; c < sizeof caches / sizeof caches[0]; c++) {
            gemm_norm_case_kv(1, 256, 128, 0, (enum dy_dtype)t, c % 2 == 0, 0.0f, DY_ACT_ROPE, caches[c]);
            gemm_norm_case_kv(3, 192, 64, 0, (enum dy_dtype)t, c % 2 == 1, 0.0f, DY_ACT_ROPE, caches[c]);
        }
    gemm_norm_case_kv(1, 256, 128, 0, DY_F32, true, 0.0f, DY_ACT_NONE, DY_F16);
    /* an activation with accumulation is refused everywhere */
    for (int u = 0; u < dut_count; u++) {
        struct dy_gemm_desc d = { .m = 1, .n = 1, .k = 1, .lda = 1, .ldb = 1, .ldc = 1, .beta = 1.0f,
                                  .act = DY_ACT_GELU };
        DY_CHECK(dy_gemm(duts[u].ctx, &d) == DY_E_INVALID);
    }
}


/* ---- norm ---- */
static void norm_in_place(void)
{
    /* OLMoE normalises q and k inside the qkv rows: x == out, strided */
    int rows = 5, dim = 96, stride = 160;
    size_t xn = (size_t)rows * stride;
    void *x = host_random(DY_F32, xn, 2.0f), *w = host_random(DY_BF16, dim, 1.0f), *want = NULL;
    for (int u = -1; u < dut_count; u++) {
        dy_ctx *ctx = CTX_OF(u);
        struct dy_norm_desc d = { .kind = DY_NORM_RMS, .rows = rows, .dim = dim, .x_stride = stride,
                                  .out_stride = stride, .eps = 1e-6f, .dtype = DY_F32,
                                  .weight_dtype = DY_BF16, .out_dtype = DY_F32 };
        d.x = d.out = upload(ctx, x, xn * 4);
        d.weight = upload(ctx, w, (size_t)dim * 2);
        DY_CHECK(dy_norm(ctx, &d) == DY_OK);
        want = compare_or_keep(u, want, download(ctx, d.x, xn * 4), "rmsnorm in place", DY_F32, xn, 1e-5);
        dy_buf_free(ctx, &d.x);
        dy_buf_free(ctx, &d.weight);
    }
    free(want);
    free(x);
    free(w);
}

/* rows of dim values, x's and out's rows x_pad and out_pad elements longer */
static void norm_case(enum dy_norm_kind kind, int rows, int dim, int x_pad, int out_pad,
                      enum dy_dtype xt, enum dy_dtype wt, enum dy_dtype ot)
{
    int x_stride = dim + x_pad, out_stride = dim + out_pad;
    size_t xn = (size_t)rows * x_stride, on = (size_t)rows * out_stride;
    size_t xb = xn * dy_dtype_size(xt), wb = (size_t)dim * dy_dtype_size(wt);
    size_t oes = dy_dtype_size(ot), ob = on * oes;
    void *x = host_random(xt, xn, 3.0f), *w = host_random(wt, dim, 1.0f);
    void *bias = host_random(wt, dim, 0.5f), *want = NULL;
    char what[128];
    snprintf(what, sizeof what, "%s %dx%d strides %d %d x %s weight %s out %s",
             kind ? "layernorm" : "rmsnorm", rows, dim, x_stride, out_stride, dy_dtype_name(xt),
             dy_dtype_name(wt), dy_dtype_name(ot));
    /* computed in f32 everywhere: backends differ by out's one rounding */
    double tol = ot == DY_F32 ? 1e-5 : tol_for(ot);
    for (int u = -1; u < dut_count; u++) {
        dy_ctx *ctx = CTX_OF(u);
        struct dy_norm_desc d = { .kind = kind, .rows = rows, .dim = dim, .x_stride = x_stride,
                                  .out_stride = out_stride, .eps = 1e-5f, .dtype = xt,
                                  .weight_dtype = wt, .out_dtype = ot };
        d.x = upload(ctx, x, xb);
        d.weight = upload(ctx, w, wb);
        if (kind == DY_NORM_LAYER)
            d.bias = upload(ctx, bias, wb);
        d.out = upload(ctx, NULL, ob);
        DY_CHECK(dy_norm(ctx, &d) == DY_OK);
        /* only the rows' first dim values are defined */
        char *got = download(ctx, d.out, ob);
        for (int r = 0; r < rows; r++)
            memset(got + ((size_t)r * out_stride + dim) * oes, 0, (size_t)out_pad * oes);
        want = compare_or_keep(u, want, got, what, ot, on, tol);
        dy_buf_free(ctx, &d.x);
        dy_buf_free(ctx, &d.weight);
        dy_buf_free(ctx, &d.bias);
        dy_buf_free(ctx, &d.out);
    }
    free(want);
    free(x);
    free(w);
    free(bias);
}

static void test_norm(void)
{
    require_backends();
    norm_in_place();
    static const int shapes[][3] = { { 1, 64, 0 }, { 7, 256, 16 }, { 33, 2048, 0 } };
    for (int kind = DY_NORM_RMS; kind <= DY_NORM_LAYER; kind++)
        for (size_t s = 0; s < 3; s++)
            for (int wt = DY_F32; wt <= DY_BF16; wt++)
                norm_case((enum dy_norm_kind)kind, shapes[s][0], shapes[s][1], shapes[s][2],
                          shapes[s][2], DY_F32, (enum dy_dtype)wt, DY_F32);
    /* reduced-precision activations: an f32 residual stream into f16 and
     * bf16 rows, bf16 rows into f32, and f16/bf16 rows into their own
     * dtype (a ViT's bf16 residual stream). Rows, dim, x's and out's padding:
     * odd dims and strides take the kernels' scalar tails and unaligned
     * rows, 4,100 is past the GPU norm's register path; the weights' dtype
     * cycles through f32, f16 and bf16 with the shape. */
    static const int mixed[][4] = {
        { 1, 64, 0, 0 }, { 7, 256, 16, 4 }, { 3, 67, 5, 3 }, { 5, 4100, 1, 7 }, { 33, 2048, 0, 0 },
    };
    static const enum dy_dtype x_out[][2] = { { DY_F32, DY_BF16 }, { DY_F32, DY_F16 }, { DY_BF16, DY_F32 },
                                              { DY_BF16, DY_BF16 }, { DY_F16, DY_F16 } };
    for (int kind = DY_NORM_RMS; kind <= DY_NORM_LAYER; kind++)
        for (size_t s = 0; s < sizeof mixed / sizeof mixed[0]; s++)
            for (size_t p = 0; p < sizeof x_out / sizeof x_out[0]; p++)
                norm_case((enum dy_norm_kind)kind, mixed[s][0], mixed[s][1], mixed[s][2],
                          mixed[s][3], x_out[p][0], (enum dy_dtype)(s % 3), x_out[p][1]);
    /* every operand bf16 (a ViT's LayerNorms; CUDA's warp-a-row kernel):
     * ViT-L's and ViT-B's widths, a last block of rows part full */
    for (int kind = DY_NORM_RMS; kind <= DY_NORM_LAYER; kind++) {
        norm_case((enum dy_norm_kind)kind, 37, 1024, 8, 16, DY_BF16, DY_BF16, DY_BF16);
        norm_case((enum dy_norm_kind)kind, 5, 768, 0, 0, DY_BF16, DY_BF16, DY_BF16);
    }
}

/* ---- rope ---- */
static void test_rope(void)
{
    require_backends();
    static const int shapes[][4] = { { 1, 1, 16, 0 }, { 5, 4, 64, 32 }, { 40, 8, 128, 0 } };
    for (size_t s = 0; s < 3; s++) {
        int tokens = shapes[s][0], heads = shapes[s][1], hd = shapes[s][2];
        int stride = heads * hd + shapes[s][3];
        size_t n = (size_t)tokens * stride;
        void *x = host_random(DY_F32, n, 2.0f), *want = NULL;
        int32_t *pos = malloc(sizeof(int32_t) * (size_t)tokens);
        float *inv = malloc(sizeof(float) * (size_t)hd / 2);
        for (int t = 0; t < tokens; t++)
            pos[t] = t == 0 ? 0 : (int32_t)((frand() + 1.0f) * 4000.0f);
        for (int i = 0; i < hd / 2; i++)
            inv[i] = powf(500000.0f, -2.0f * i / hd);
        for (int u = -1; u < dut_count; u++) {
            dy_ctx *ctx = CTX_OF(u);
            struct dy_rope_desc d = { .tokens = tokens, .heads = heads, .head_dim = hd,
                                      .row_stride = stride, .dtype = DY_F32 };
            d.x = upload(ctx, x, n * 4);
            d.positions = upload(ctx, pos, (size_t)tokens * 4);
            d.inv_freq = upload(ctx, inv, (size_t)hd / 2 * 4);
            DY_CHECK(dy_rope(ctx, &d) == DY_OK);
            want = compare_or_keep(u, want, download(ctx, d.x, n * 4), "rope", DY_F32, n, 2e-5);
            dy_buf_free(ctx, &d.x);
            dy_buf_free(ctx, &d.positions);
            dy_buf_free(ctx, &d.inv_freq);
        }
        free(want);
        free(x);
        free(pos);
        free(inv);
    }
}

/* The rotation with whole-row q/k norms before it and the K and V columns
 * stored into a paged cache after it (dy_rope_desc.norm, .append), as
 * OLMoE's attention takes its q/k/v: rows of q heads, k heads, v heads
 * (+ pad), rotating the q and k heads. norm false: the append alone; cache
 * DY_I32: the norms alone; rot_heads < all q and k heads: columns normed
 * but not rotated. A backend that declares rope_fused is checked against
 * cpu-ref's composition of dy_norm, the rotation and dy_kv_append. */
static void rope_fused_case(int tokens, int heads, int kv_heads, int rot_heads, int hd, int pad, int norm,
                            enum dy_dtype t, enum dy_dtype wt, enum dy_dtype cache)
{
    /* norm: 0 none, 1 whole rows, 2 a head each (Qwen3's) */
    int group = norm == 2 ? hd : 0;
    enum { SLOTS = 96 };
    int qd = heads * hd, kvd = kv_heads * hd, stride = qd + 2 * kvd + pad;
    size_t n = (size_t)tokens * stride, cache_n = (size_t)SLOTS * kvd;
    size_t cache_bytes = cache == DY_I32 ? 0 : cache_n * dy_dtype_size(cache);
    size_t qwn = group ? (size_t)group : (size_t)qd, kwn = group ? (size_t)group : (size_t)kvd;
    void *x = host_random(t, n, 3.0f), *qw = host_random(wt, qwn, 1.5f);
    void *kw = host_random(wt, kwn, 1.5f), *want = NULL, *want_k = NULL, *want_v = NULL;
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)tokens), *slots = malloc(sizeof(int32_t) * (size_t)tokens);
    float *inv = malloc(sizeof(float) * (size_t)hd / 2);
    for (int i = 0; i < tokens; i++) {
        pos[i] = 17 + 29 * i;
        slots[i] = (7 + 37 * i) % SLOTS;
    }
    for (int i = 0; i < hd / 2; i++)
        inv[i] = powf(10000.0f, -2.0f * i / hd);
    double tol = t == DY_F32 ? 2e-5 : 8e-3;
    char what[128];
    snprintf(what, sizeof what, "rope fused t%d heads %d/%d rot %d d%d %s w %s norm%d into %s", tokens, heads,
             kv_heads, rot_heads, hd, dy_dtype_name(t), dy_dtype_name(wt), norm,
             cache == DY_I32 ? "none" : dy_dtype_name(cache));
    for (int u = -1; u < dut_count; u++) {
        dy_ctx *ctx = CTX_OF(u);
        struct dy_rope_desc d = { .tokens = tokens, .heads = rot_heads, .head_dim = hd, .row_stride = stride,
                                  .dtype = t };
        d.x = upload(ctx, x, n * dy_dtype_size(t));
        d.positions = upload(ctx, pos, (size_t)tokens * 4);
        d.inv_freq = upload(ctx, inv, (size_t)hd / 2 * 4);
        if (norm)
            d.norm = (struct dy_rope_norm){ .q_weight = upload(ctx, qw, qwn * dy_dtype_size(wt)),
                                            .k_weight = upload(ctx, kw, kwn * dy_dtype_size(wt)),
                                            .q_cols = qd, .k_cols = kvd, .group = group, .eps = 1e-6f,
                                            .weight_dtype = wt };
        if (cache != DY_I32) {
            void *zeros = calloc(1, cache_bytes);
            d.append = (struct dy_gemm_append){ .slots = upload(ctx, slots, (size_t)tokens * 4),
                                                .k_cache = upload(ctx, zeros, cache_bytes),
                                                .v_cache = upload(ctx, zeros, cache_bytes), .k_col = qd,
                                                .v_col = qd + kvd, .kv_heads = kv_heads, .head_dim = hd,
                                                .cache_dtype = cache };
            free(zeros);
        }
        DY_CHECK(dy_rope(ctx, &d) == DY_OK);
        want = compare_or_keep(u, want, download(ctx, d.x, n * dy_dtype_size(t)), what, t, n, tol);
        if (cache != DY_I32) {
            double ctol = cache == DY_FP8 ? 0.07 : cache == DY_BF16 ? 1.6e-2 : tol;
            want_k = compare_or_keep(u, want_k, download(ctx, d.append.k_cache, cache_bytes), what, cache,
                                     cache_n, ctol);
            want_v = compare_or_keep(u, want_v, download(ctx, d.append.v_cache, cache_bytes), what, cache,
                                     cache_n, ctol);
        }
        FREE_BUFS(ctx, &d.x, &d.positions, &d.inv_freq, &d.norm.q_weight, &d.norm.k_weight, &d.append.slots,
                  &d.append.k_cache, &d.append.v_cache);
    }
    free(want);
    free(want_k);
    free(want_v);
    free(x);
    free(qw);
    free(kw);
    free(pos);
    free(slots);
    free(inv);
}

static void test_rope_fused(void)
{
    require_backends();
    /* OLMoE's shape in small (16 heads of 128, no GQA), then GQA */
    rope_fused_case(1, 4, 4, 8, 128, 0, true, DY_F32, DY_BF16, DY_BF16);
    rope_fused_case(2, 4, 2, 6, 64, 8, true, DY_F32, DY_F32, DY_F32);
    rope_fused_case(3, 4, 2, 6, 64, 0, true, DY_F32, DY_F16, DY_FP8);
    rope_fused_case(1, 8, 8, 16, 128, 0, true, DY_F32, DY_BF16, DY_F16);
    rope_fused_case(70, 4, 2, 6, 64, 4, true, DY_BF16, DY_BF16, DY_BF16);
    rope_fused_case(5, 3, 1, 4, 32, 0, true, DY_F16, DY_F16, DY_F16);
    /* the norms alone, the append alone, columns normed but not rotated */
    rope_fused_case(4, 4, 2, 6, 64, 0, true, DY_F32, DY_BF16, DY_I32);
    rope_fused_case(4, 4, 2, 6, 64, 0, false, DY_F32, DY_BF16, DY_BF16);
    rope_fused_case(2, 4, 2, 4, 64, 0, true, DY_F32, DY_BF16, DY_F32);
    /* too wide for the fused kernel's sums: composed */
    rope_fused_case(1, 48, 48, 96, 128, 0, true, DY_F32, DY_BF16, DY_BF16);
    /* a norm a head (Qwen3's): heads of 128, 64 and 32 columns */
    rope_fused_case(1, 8, 2, 10, 128, 0, 2, DY_F32, DY_BF16, DY_BF16);
    rope_fused_case(3, 4, 4, 8, 64, 4, 2, DY_F32, DY_F32, DY_F32);
    rope_fused_case(2, 6, 2, 8, 32, 0, 2, DY_BF16, DY_BF16, DY_F16);
    rope_fused_case(70, 4, 2, 6, 64, 0, 2, DY_F32, DY_BF16, DY_BF16);
}

/* ---- eltwise ---- */
static void test_eltwise(void)
{
    require_backends();
    /* odd rows (an output stride of 301), and rows of whole 16-byte
     * vectors in every dtype, which GPU backends may take a vector at a
     * time (296 wide, strides 704 and 304) */
    for (int op = DY_ELT_ADD; op <= DY_ELT_GATED_ADD; op++)
        for (int t = DY_F32; t <= DY_BF16 * 2; t++) {
            enum dy_dtype dt = (enum dy_dtype)(t % (DY_BF16 + 1));
            bool vec = t > DY_BF16;
            int rows = 9, cols = vec ? 296 : 300, as = vec ? 704 : 700, bs = as, os = vec ? 304 : 301;
            void *a = host_random(dt, (size_t)rows * as, 6.0f), *b = host_random(dt, (size_t)rows * bs, 2.0f);
            void *want = NULL;
            size_t on = (size_t)rows * os, esz = dy_dtype_size(dt);
            for (int u = -1; u < dut_count; u++) {
                dy_ctx *ctx = CTX_OF(u);
                struct dy_eltwise_desc d = { .op = op, .rows = rows, .cols = cols, .a_stride = as,
                                             .b_stride = bs, .out_stride = os, .dtype = dt };
                d.a = upload(ctx, a, (size_t)rows * as * esz);
                d.b = upload(ctx, b, (size_t)rows * bs * esz);
                /* GATED_ADD accumulates into out */
                rng_state = 99;
                void *out0 = op == DY_ELT_GATED_ADD ? host_random(dt, on, 1.0f) : calloc(on, esz);
                d.out = upload(ctx, out0, on * esz);
                free(out0);
                DY_CHECK(dy_eltwise(ctx, &d) == DY_OK);
                want = compare_or_keep(u, want, download(ctx, d.out, on * esz), "eltwise", dt, on,
                                       tol_for(dt));
                dy_buf_free(ctx, &d.a);
                dy_buf_free(ctx, &d.b);
                dy_buf_free(ctx, &d.out);
            }
            free(want);
            free(a);
            free(b);
        }
}

/* ---- gather_rows and convert ---- */
static void test_gather_rows(void)
{
    require_backends();
    /* into f32 rows, and into rows of the table's own dtype (a ViT's
     * bf16 embeddings; whole 16-byte rows, then rows 4 elements apart
     * further, which are not) */
    for (int t = DY_F32; t <= DY_BF16; t++)
        for (int v = 0; v < 3; v++) {
            enum dy_dtype dt = (enum dy_dtype)t, ot = v ? dt : DY_F32;
            int vocab = 1000, cols = 96, rows = 13, os = cols + (v == 2 ? 4 : 0);
            size_t out_n = (size_t)rows * os, oes = dy_dtype_size(ot);
            void *table = host_random(dt, (size_t)vocab * cols, 1.0f), *want = NULL;
            int32_t ids[13];
            for (int i = 0; i < rows; i++)
                ids[i] = (int32_t)((frand() + 1.0f) * 499.0f);
            ids[3] = vocab - 1;
            for (int u = -1; u < dut_count; u++) {
                dy_ctx *ctx = CTX_OF(u);
                struct dy_gather_rows_desc d = { .rows = rows, .cols = cols, .table_stride = cols,
                                                 .out_stride = os, .table_dtype = dt, .out_dtype = ot };
                d.table = upload(ctx, table, (size_t)vocab * cols * dy_dtype_size(dt));
                d.ids = upload(ctx, ids, sizeof ids);
                d.out = upload(ctx, NULL, out_n * oes);
                DY_CHECK(dy_gather_rows(ctx, &d) == DY_OK);
                /* only the rows' first cols values are defined */
                char *got = download(ctx, d.out, out_n * oes);
                for (int r = 0; r < rows; r++)
                    memset(got + ((size_t)r * os + cols) * oes, 0, (size_t)(os - cols) * oes);
                want = compare_or_keep(u, want, got, "gather_rows", ot, out_n, 0.0);
                dy_buf_free(ctx, &d.table);
                dy_buf_free(ctx, &d.ids);
                dy_buf_free(ctx, &d.out);
            }
            free(want);
            free(table);
        }
}

static void test_convert(void)
{
    require_backends();
    size_t n = 10007;
    for (int s = DY_F32; s <= DY_BF16; s++)
        for (int t = DY_F32; t <= DY_BF16; t++) {
            void *src = host_random((enum dy_dtype)s, n, 70000.0f), *want = NULL;
            size_t db = n * dy_dtype_size((enum dy_dtype)t);
            for (int u = -1; u < dut_count; u++) {
                dy_ctx *ctx = CTX_OF(u);
                struct dy_convert_desc d = { .count = n, .src_dtype = (enum dy_dtype)s,
                                             .dst_dtype = (enum dy_dtype)t };
                d.src = upload(ctx, src, n * dy_dtype_size((enum dy_dtype)s));
                d.dst = upload(ctx, NULL, db);
                DY_CHECK(dy_convert(ctx, &d) == DY_OK);
                void *got = download(ctx, d.dst, db);
                if (u < 0) {
                    want = got;
                } else {
                    /* conversion is exact rounding: bit-identical */
                    DY_CHECK(memcmp(want, got, db) == 0);
                    free(got);
                }
                dy_buf_free(ctx, &d.src);
                dy_buf_free(ctx, &d.dst);
            }
            free(want);
            free(src);
        }
}

/* ---- kv_append ---- */
static void test_kv_append(void)
{
    require_backends();
    static const enum dy_dtype cache_types[] = { DY_F32, DY_F16, DY_BF16, DY_FP8, DY_I8 };
    for (size_t t = 0; t < sizeof cache_types / sizeof cache_types[0]; t++) {
        enum dy_dtype ct = cache_types[t];
        int tokens = 21, kvh = 2, hd = 64, stride = 4 * kvh * hd, slots_total = 64;
        size_t row = (size_t)kvh * hd, cache_n = (size_t)slots_total * row;
        void *k = host_random(DY_F32, (size_t)tokens * stride, 3.0f);
        void *v = host_random(DY_F32, (size_t)tokens * stride, 3.0f);
        int32_t slots[21];
        for (int i = 0; i < tokens; i++)
            slots[i] = (i * 37 + 5) % slots_total; /* distinct, scattered */
        if (ct == DY_FP8) /* beyond fp8's range: saturates to 448 */
            ((float *)k)[7] = 1000.0f;
        void *want_k = NULL, *want_v = NULL, *want_ks = NULL, *want_vs = NULL;
        size_t scales_n = (size_t)slots_total * kvh;
        for (int u = -1; u < dut_count; u++) {
            dy_ctx *ctx = CTX_OF(u);
            struct dy_kv_append_desc d = { .src_stride = stride, .tokens = tokens, .kv_heads = kvh,
                                           .head_dim = hd, .src_dtype = DY_F32, .cache_dtype = ct };
            if (ct == DY_I8) {
                void *ones = calloc(scales_n, 4);
                d.k_scale = upload(ctx, ones, scales_n * 4);
                d.v_scale = upload(ctx, ones, scales_n * 4);
                free(ones);
            }
            size_t cb = cache_n * dy_dtype_size(ct);
            void *zeros = calloc(cache_n, dy_dtype_size(ct));
            d.k = upload(ctx, k, (size_t)tokens * stride * 4);
            d.v = upload(ctx, v, (size_t)tokens * stride * 4);
            d.slots = upload(ctx, slots, sizeof slots);
            d.k_cache = upload(ctx, zeros, cb);
            d.v_cache = upload(ctx, zeros, cb);
            free(zeros);
            DY_CHECK(dy_kv_append(ctx, &d) == DY_OK);
            /* int8: x * (127 / max) may round the other way where a backend's
             * division is not exact (OpenCL's need not be): one step of 127 */
            double tol = ct == DY_I8 ? 1.01 / 127 : 0.0;
            char what[64];
            snprintf(what, sizeof what, "kv_append %s k", dy_dtype_name(ct));
            want_k = compare_or_keep(u, want_k, download(ctx, d.k_cache, cb), what, ct, cache_n, tol);
            want_v = compare_or_keep(u, want_v, download(ctx, d.v_cache, cb), what, ct, cache_n, tol);
            if (ct == DY_I8) {
                want_ks = compare_or_keep(u, want_ks, download(ctx, d.k_scale, scales_n * 4),
                                          "kv_append int8 k scales", DY_F32, scales_n, 1e-6);
                want_vs = compare_or_keep(u, want_vs, download(ctx, d.v_scale, scales_n * 4),
                                          "kv_append int8 v scales", DY_F32, scales_n, 1e-6);
                dy_buf_free(ctx, &d.k_scale);
                dy_buf_free(ctx, &d.v_scale);
            }
            dy_buf_free(ctx, &d.k);
            dy_buf_free(ctx, &d.v);
            dy_buf_free(ctx, &d.slots);
            dy_buf_free(ctx, &d.k_cache);
            dy_buf_free(ctx, &d.v_cache);
        }
        if (ct == DY_FP8) /* 448 is the largest E4M3 value */
            DY_CHECK(dy_load_f32(want_k, DY_FP8, (size_t)slots[0] * row + 7) == 448.0f);
        free(want_k);
        free(want_v);
        free(want_ks);
        free(want_vs);
        free(k);
        free(v);
    }
}

/* ---- attention ---- */
/* q, k, v and out in dtype (f32, or bf16 activations), products in compute */
static void prefill_case_as(int batch, int seq, int heads, int kvh, int hd, bool causal, enum dy_dtype compute,
                            enum dy_dtype dtype)
{
    int q_stride = (heads + 2 * kvh) * hd, kv_stride = q_stride, out_stride = heads * hd + 8;
    size_t rows = (size_t)batch * seq, qkv_n = rows * q_stride, out_n = rows * out_stride;
    size_t e = dy_dtype_size(dtype);
    void *qkv = host_random(dtype, qkv_n, 2.0f), *want = NULL;
    for (int u = -1; u < dut_count; u++) {
        dy_ctx *ctx = CTX_OF(u);
        dy_buf qkv_b = upload(ctx, qkv, qkv_n * e);
        void *zeros = calloc(out_n, e);
        struct dy_attention_prefill_desc d = {
            .q = qkv_b, .k = dy_buf_at(qkv_b, (size_t)heads * hd * e),
            .v = dy_buf_at(qkv_b, (size_t)(heads + kvh) * hd * e), .out = upload(ctx, zeros, out_n * e),
            .batch = batch, .seq_len = seq, .heads = heads, .kv_heads = kvh, .head_dim = hd,
            .q_stride = q_stride, .kv_stride = kv_stride, .out_stride = out_stride,
            .scale = 1.0f / sqrtf((float)hd), .causal = causal, .dtype = dtype,
            .compute_dtype = compute,
        };
        free(zeros);
        DY_CHECK(dy_attention_prefill(ctx, &d) == DY_OK);
        char what[96];
        snprintf(what, sizeof what, "attention_prefill b%d s%d h%d/%d d%d causal%d %s in %s", batch, seq,
                 heads, kvh, hd, causal, dy_dtype_name(compute), dy_dtype_name(dtype));
        /* bf16 operands: q, k, v and probabilities rounded (backend.h) */
        double tol = compute == DY_F32 && dtype == DY_F32 ? 1e-5 : 2e-2;
        want = compare_or_keep(u, want, download(ctx, d.out, out_n * e), what, dtype, out_n, tol);
        dy_buf_free(ctx, &qkv_b);
        dy_buf_free(ctx, &d.out);
    }
    free(want);
    free(qkv);
}

static void prefill_case(int batch, int seq, int heads, int kvh, int hd, bool causal, enum dy_dtype compute)
{
    prefill_case_as(batch, seq, heads, kvh, hd, causal, compute, DY_F32);
}

static void test_attention_prefill(void)
{
    require_backends();
    for (int t = DY_F32; t <= DY_BF16; t += DY_BF16 - DY_F32) {
        enum dy_dtype c = (enum dy_dtype)t;
        prefill_case(1, 1, 4, 2, 16, true, c);
        prefill_case(2, 7, 4, 2, 16, true, c);
        prefill_case(2, 33, 8, 8, 64, true, c);
        prefill_case(1, 100, 8, 2, 64, true, c);
        prefill_case(3, 70, 4, 1, 128, true, c);
        prefill_case(2, 50, 4, 4, 64, false, c);
        prefill_case(1, 300, 8, 2, 128, true, c);
        /* the tensor-core kernel's block shapes: 2 and 8 query heads per
         * KV head, several row blocks and key tiles, ViT's 197 tokens */
        prefill_case(1, 90, 4, 2, 64, true, c);
        prefill_case(1, 129, 8, 1, 128, true, c);
        prefill_case(2, 197, 4, 4, 64, false, c);
    }
    /* bf16 activations in and out (the tensor-core kernels read them as
     * they are); on Hopper the wgmma kernel's blocks: two heads of a KV
     * head over 64 rows (even groups), else 128 rows of one head (causal,
     * where the block's second warpgroup walks a tile more; an odd group),
     * one row, several key tiles with a partial last one */
    prefill_case_as(1, 129, 8, 2, 128, true, DY_BF16, DY_BF16);
    prefill_case_as(2, 197, 4, 4, 64, false, DY_BF16, DY_BF16);
    prefill_case_as(2, 33, 4, 2, 16, true, DY_BF16, DY_BF16);
    prefill_case_as(1, 300, 8, 2, 128, true, DY_BF16, DY_BF16);
    prefill_case_as(2, 130, 4, 4, 128, true, DY_BF16, DY_BF16);
    prefill_case_as(1, 77, 6, 2, 64, false, DY_BF16, DY_BF16);
    prefill_case_as(1, 200, 4, 2, 64, true, DY_BF16, DY_BF16);
    prefill_case_as(3, 1, 4, 2, 128, true, DY_BF16, DY_BF16);
    prefill_case_as(1, 150, 6, 2, 128, false, DY_BF16, DY_BF16);
    /* more tiles than the kernel's stages, so each stage is reused */
    prefill_case_as(1, 600, 4, 2, 128, true, DY_BF16, DY_BF16);
    prefill_case_as(1, 520, 2, 2, 128, false, DY_BF16, DY_BF16);
    prefill_case_as(1, 400, 2, 2, 64, false, DY_BF16, DY_BF16);
    /* Hopper's short-sequence kernel (head dim 64, at most 208 keys): more
     * work items than its resident blocks hold stages, at 64 and 208 keys,
     * and a sequence that fills its 208 */
    prefill_case_as(340, 20, 2, 1, 64, true, DY_BF16, DY_BF16);
    prefill_case_as(140, 150, 2, 2, 64, false, DY_BF16, DY_BF16);
    prefill_case_as(1, 208, 4, 4, 64, false, DY_BF16, DY_BF16);
}

static void decode_case(int batch, const int *lens, int heads, int kvh, int hd, int block,
                        enum dy_dtype ct)
{
    int max_len = 0;
    for (int b = 0; b < batch; b++)
        max_len = lens[b] > max_len ? lens[b] : max_len;
    int max_blocks = (max_len + block - 1) / block, num_blocks = max_blocks * batch;
    size_t row = (size_t)kvh * hd, cache_n = (size_t)num_blocks * block * row;
    int q_stride = heads * hd + 16, out_stride = heads * hd;
    void *q = host_random(DY_F32, (size_t)batch * q_stride, 2.0f);
    /* int8: integers over the whole range with scales near 2 / 127 */
    float value_range = ct == DY_I8 ? 127.0f : 2.0f;
    void *kc = host_random(ct, cache_n, value_range), *vc = host_random(ct, cache_n, value_range);
    size_t scales_n = (size_t)num_blocks * block * kvh;
    float *ks = host_random(DY_F32, scales_n, 0.005f), *vs = host_random(DY_F32, scales_n, 0.005f);
    for (size_t i = 0; i < scales_n; i++) {
        ks[i] += 0.012f;
        vs[i] += 0.012f;
    }
    int32_t *table = malloc(sizeof(int32_t) * (size_t)batch * max_blocks);
    /* blocks handed out in a scrambled order, unused entries -1 */
    for (int i = 0; i < batch * max_blocks; i++)
        table[i] = -1;
    int next = 0;
    for (int b = 0; b < batch; b++)
        for (int j = 0; j < (lens[b] + block - 1) / block; j++)
            table[(size_t)b * max_blocks + j] = (next++ * 7 + 3) % num_blocks;
    void *want = NULL;
    size_t out_n = (size_t)batch * out_stride;
    for (int u = -1; u < dut_count; u++) {
        dy_ctx *ctx = CTX_OF(u);
        size_t cb = cache_n * dy_dtype_size(ct);
        struct dy_attention_decode_desc d = {
            .q_stride = q_stride, .out_stride = out_stride, .batch = batch, .heads = heads,
            .kv_heads = kvh, .head_dim = hd, .block_size = block, .max_blocks_per_seq = max_blocks,
            .max_context = max_len, .scale = 1.0f / sqrtf((float)hd), .dtype = DY_F32, .cache_dtype = ct,
            /* the promise of an append just before (most cases): the
             * result must not change */
            .fresh_tokens = block == 16,
        };
        d.q = upload(ctx, q, (size_t)batch * q_stride * 4);
        d.out = upload(ctx, NULL, out_n * 4);
        d.k_cache = upload(ctx, kc, cb);
        d.v_cache = upload(ctx, vc, cb);
        d.block_table = upload(ctx, table, sizeof(int32_t) * (size_t)batch * max_blocks);
        d.context_lens = upload(ctx, lens, sizeof(int32_t) * (size_t)batch);
        if (ct == DY_I8) {
            d.k_scale = upload(ctx, ks, scales_n * 4);
            d.v_scale = upload(ctx, vs, scales_n * 4);
        }
        DY_CHECK(dy_attention_decode(ctx, &d) == DY_OK);
        char what[96];
        snprintf(what, sizeof what, "attention_decode b%d h%d/%d d%d block%d %s", batch, heads, kvh,
                 hd, block, dy_dtype_name(ct));
        want = compare_or_keep(u, want, download(ctx, d.out, out_n * 4), what, DY_F32, out_n, 1e-5);
        dy_buf *bufs[] = { &d.q, &d.out, &d.k_cache, &d.v_cache, &d.block_table, &d.context_lens,
                           &d.k_scale, &d.v_scale };
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            dy_buf_free(ctx, bufs[i]);
    }
    free(want);
    free(q);
    free(kc);
    free(vc);
    free(ks);
    free(vs);
    free(table);
}

static void test_attention_decode(void)
{
    require_backends();
    const int lens1[] = { 1 }, lens3[] = { 1, 17, 100 }, lens2[] = { 300, 64 };
    decode_case(1, lens1, 4, 2, 16, 16, DY_F32);
    for (int t = DY_F32; t <= DY_BF16; t++) {
        decode_case(3, lens3, 8, 2, 64, 16, (enum dy_dtype)t);
        decode_case(2, lens2, 4, 4, 128, 16, (enum dy_dtype)t);
    }
    decode_case(3, lens3, 8, 8, 64, 8, DY_F16);
    const int long_len[] = { 2500 };
    decode_case(1, long_len, 32, 8, 64, 16, DY_F16);
    for (int t = DY_FP8; t <= DY_I8; t++) { /* the quantized caches */
        decode_case(3, lens3, 8, 2, 64, 16, (enum dy_dtype)t);
        decode_case(2, lens2, 4, 4, 128, 16, (enum dy_dtype)t);
        decode_case(1, long_len, 32, 8, 128, 16, (enum dy_dtype)t);
        decode_case(3, lens3, 6, 2, 96, 8, (enum dy_dtype)t); /* a head dim no fast path takes */
    }
}

/* ---- kv_block_scores ---- */
static void test_kv_block_scores(void)
{
    require_backends();
    static const enum dy_dtype cache_types[] = { DY_F32, DY_F16, DY_BF16, DY_FP8, DY_I8 };
    int num_blocks = 40, block = 16, kvh = 4, hd = 64, count = 13;
    size_t cache_n = (size_t)num_blocks * block * kvh * hd, scales_n = (size_t)num_blocks * block * kvh;
    int32_t blocks[13];
    for (int i = 0; i < count; i++)
        blocks[i] = (i * 11 + 3) % num_blocks;
    for (size_t t = 0; t < sizeof cache_types / sizeof cache_types[0]; t++)
        for (int kind = DY_KV_SCORE_INV_KEY_NORM; kind <= DY_KV_SCORE_VK_RATIO; kind++) {
            enum dy_dtype ct = cache_types[t];
            float range = ct == DY_I8 ? 127.0f : 2.0f;
            void *kc = host_random(ct, cache_n, range), *vc = host_random(ct, cache_n, range);
            float *ks = host_random(DY_F32, scales_n, 0.005f), *vs = host_random(DY_F32, scales_n, 0.005f);
            for (size_t i = 0; i < scales_n; i++) {
                ks[i] += 0.012f;
                vs[i] += 0.012f;
            }
            void *want = NULL;
            for (int u = -1; u < dut_count; u++) {
                dy_ctx *ctx = CTX_OF(u);
                struct dy_kv_block_scores_desc d = { .count = count, .block_size = block,
                                                     .kv_heads = kvh, .head_dim = hd, .kind = kind,
                                                     .cache_dtype = ct };
                size_t cb = cache_n * dy_dtype_size(ct);
                d.k_cache = upload(ctx, kc, cb);
                d.v_cache = upload(ctx, vc, cb);
                d.blocks = upload(ctx, blocks, sizeof blocks);
                d.scores = upload(ctx, NULL, (size_t)count * 4);
                if (ct == DY_I8) {
                    d.k_scale = upload(ctx, ks, scales_n * 4);
                    d.v_scale = upload(ctx, vs, scales_n * 4);
                }
                DY_CHECK(dy_kv_block_scores(ctx, &d) == DY_OK);
                char what[64];
                snprintf(what, sizeof what, "kv_block_scores %s kind %d", dy_dtype_name(ct), kind);
                want = compare_or_keep(u, want, download(ctx, d.scores, (size_t)count * 4), what,
                                       DY_F32, (size_t)count, 1e-5);
                dy_buf *bufs[] = { &d.k_cache, &d.v_cache, &d.blocks, &d.scores, &d.k_scale, &d.v_scale };
                for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
                    dy_buf_free(ctx, bufs[i]);
            }
            free(want);
            free(kc);
            free(vc);
            free(ks);
            free(vs);
        }
}

/* ---- argmax ---- */
static void test_argmax(void)
{
    require_backends();
    static const int cols_list[] = { 1, 1000, 128256 };
    for (size_t c = 0; c < 3; c++) {
        int rows = 4, cols = cols_list[c], stride = cols + 3;
        float *x = host_random(DY_F32, (size_t)rows * stride, 1.0f);
        if (cols > 10) { /* a tie: the first maximum wins */
            x[5] = 7.0f;
            x[9] = 7.0f;
            x[(size_t)stride + cols - 1] = 9.0f;
            /* and a tie far apart (a long row may be split into chunks) */
            x[2 * (size_t)stride + 3] = 8.0f;
            x[2 * (size_t)stride + cols - 2] = 8.0f;
        }
        int32_t want[4];
        for (int u = -1; u < dut_count; u++) {
            dy_ctx *ctx = CTX_OF(u);
            struct dy_argmax_desc d = { .rows = rows, .cols = cols, .stride = stride, .dtype = DY_F32 };
            d.x = upload(ctx, x, (size_t)rows * stride * 4);
            d.out = upload(ctx, NULL, sizeof want);
            DY_CHECK(dy_argmax(ctx, &d) == DY_OK);
            int32_t *got = download(ctx, d.out, sizeof want);
            if (u < 0)
                memcpy(want, got, sizeof want);
            else if (memcmp(want, got, sizeof want)) {
                printf("# argmax cols %d on %s: %d %d %d %d, want %d %d %d %d\n", cols, duts[u].name,
                       got[0], got[1], got[2], got[3], want[0], want[1], want[2], want[3]);
                DY_CHECK(!"argmax equal");
            }
            free(got);
            dy_buf_free(ctx, &d.x);
            dy_buf_free(ctx, &d.out);
        }
        if (cols > 10)
            DY_CHECK(want[0] == 5 && want[1] == cols - 1 && want[2] == 3);
        free(x);
    }
}

/* ---- MoE: router, grouping, grouped GEMM, weighted gather-add ---- */
static void test_softmax_topk(void)
{
    require_backends();
    static const int shapes[][3] = { { 1, 8, 2 }, { 7, 60, 4 }, { 300, 64, 8 }, { 33, 128, 8 },
                                     { 5, 16, 1 }, { 4, 8, 8 }, { 3, 96, 40 } };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int renorm = 0; renorm <= 1; renorm++) {
            int tokens = shapes[s][0], experts = shapes[s][1], k = shapes[s][2];
            int stride = experts + (int)(s % 2) * 3;
            size_t n = (size_t)tokens * stride, pairs = (size_t)tokens * k;
            float *logits = host_random(DY_F32, n, 4.0f);
            if (tokens > 2) /* ties: the lower expert first */
                for (int e = 0; e < experts; e++)
                    logits[(size_t)2 * stride + e] = e % 3 == 0 ? 1.5f : -1.0f;
            int32_t *want_ids = NULL;
            float *want_w = NULL;
            for (int u = -1; u < dut_count; u++) {
                dy_ctx *ctx = CTX_OF(u);
                struct dy_softmax_topk_desc d = { .tokens = tokens, .experts = experts, .k = k,
                                                  .stride = stride, .renormalize = renorm };
                d.logits = upload(ctx, logits, n * 4);
                d.ids = upload(ctx, NULL, pairs * 4);
                d.weights = upload(ctx, NULL, pairs * 4);
                DY_CHECK(dy_softmax_topk(ctx, &d) == DY_OK);
                int32_t *ids = download(ctx, d.ids, pairs * 4);
                float *w = download(ctx, d.weights, pairs * 4);
                if (u < 0) {
                    want_ids = ids;
                    want_w = w;
                } else {
                    if (memcmp(ids, want_ids, pairs * 4)) {
                        printf("# softmax_topk t%d e%d k%d ids differ on %s\n", tokens, experts, k,
                               duts[u].name);
                        DY_CHECK(!"topk ids equal");
                    }
                    DY_CHECK(close_enough("softmax_topk weights", duts[u].name, want_w, w, DY_F32,
                                          pairs, 1e-5));
                    free(ids);
                    free(w);
                }
                dy_buf_free(ctx, &d.logits);
                dy_buf_free(ctx, &d.ids);
                dy_buf_free(ctx, &d.weights);
            }
            if (tokens > 2 && k <= 3) /* the tie row picks experts 0, 3, 6 */
                for (int j = 0; j < k; j++)
                    DY_CHECK(want_ids[(size_t)2 * k + j] == 3 * j);
            if (renorm) {
                double sum = 0.0;
                for (int j = 0; j < k; j++)
                    sum += want_w[j];
                DY_CHECK(fabs(sum - 1.0) < 1e-5);
            }
            free(want_ids);
            free(want_w);
            free(logits);
        }
}

/* softmax_topk making its logits from the residual stream
 * (dy_softmax_topk_desc.router): the post-attention RMSNorm into xn and the
 * router GEMM before the routing and the sort, against cpu-ref's
 * composition. Router rows are one random row scaled by 1 + 0.04 * a
 * permutation of the experts, so the logits stand 1 % of the largest apart
 * and every backend must choose the same experts. */
static void topk_router_case(int tokens, int hidden, int experts, int k, enum dy_dtype wt, bool renorm)
{
    static const char *const names[4] = { "ids", "offsets", "sorted", "position" };
    int pairs = tokens * k;
    size_t pb = (size_t)pairs * 4, ob = ((size_t)experts + 1) * 4, xb = (size_t)tokens * hidden * 4;
    float *x = host_random(DY_F32, (size_t)tokens * hidden, 2.0f), *base = host_random(DY_F32, (size_t)hidden, 1.0f);
    void *nw = host_random(wt, (size_t)hidden, 1.0f), *w = malloc((size_t)experts * hidden * dy_dtype_size(wt));
    for (int e = 0; e < experts; e++)
        for (int i = 0; i < hidden; i++)
            dy_store_f32(w, wt, (size_t)e * hidden + i, base[i] * (1.0f + 0.04f * (float)((e * 37 + 11) % experts)));
    const size_t bytes[4] = { pb, ob, pb, pb };
    int32_t *want[4] = { 0 };
    float *want_w = NULL, *want_xn = NULL, *want_l = NULL;
    double tol = wt == DY_F32 ? 1e-5 : 3e-3;
    char what[96];
    snprintf(what, sizeof what, "softmax_topk router t%d h%d e%d k%d %s", tokens, hidden, experts, k,
             dy_dtype_name(wt));
    for (int u = -1; u < dut_count; u++) {
        dy_ctx *ctx = CTX_OF(u);
        struct dy_softmax_topk_desc d = { .tokens = tokens, .experts = experts, .k = k, .stride = experts,
                                          .renormalize = renorm };
        d.logits = upload(ctx, NULL, (size_t)tokens * experts * 4);
        d.ids = upload(ctx, NULL, pb);
        d.weights = upload(ctx, NULL, pb);
        d.offsets = upload(ctx, NULL, ob);
        d.sorted = upload(ctx, NULL, pb);
        d.position = upload(ctx, NULL, pb);
        d.router = (struct dy_topk_router){ .x = upload(ctx, x, xb),
                                            .norm_weight = upload(ctx, nw, (size_t)hidden * dy_dtype_size(wt)),
                                            .xn = upload(ctx, NULL, xb),
                                            .w = upload(ctx, w, (size_t)experts * hidden * dy_dtype_size(wt)),
                                            .hidden = hidden, .eps = 1e-6f, .weight_dtype = wt };
        DY_CHECK(dy_softmax_topk(ctx, &d) == DY_OK);
        const dy_buf out[4] = { d.ids, d.offsets, d.sorted, d.position };
        want_xn = compare_or_keep(u, want_xn, download(ctx, d.router.xn, xb), what, DY_F32,
                                  (size_t)tokens * hidden, 1e-5);
        want_l = compare_or_keep(u, want_l, download(ctx, d.logits, (size_t)tokens * experts * 4), what, DY_F32,
                                 (size_t)tokens * experts, tol);
        want_w = compare_or_keep(u, want_w, download(ctx, d.weights, pb), what, DY_F32, (size_t)pairs, tol);
        for (int i = 0; i < 4; i++) {
            int32_t *got = download(ctx, out[i], bytes[i]);
            if (u < 0) {
                want[i] = got;
                continue;
            }
            if (memcmp(got, want[i], bytes[i])) {
                printf("# %s: %s differ on %s\n", what, names[i], duts[u].name);
                DY_CHECK(!"router routes equal");
            }
            free(got);
        }
        FREE_BUFS(ctx, &d.logits, &d.ids, &d.weights, &d.offsets, &d.sorted, &d.position, &d.router.x,
                  &d.router.norm_weight, &d.router.xn, &d.router.w);
    }
    for (int i = 0; i < 4; i++)
        free(want[i]);
    free(want_w);
    free(want_xn);
    free(want_l);
    free(x);
    free(base);
    free(nw);
    free(w);
}

static void test_topk_router(void)
{
    require_backends();
    topk_router_case(1, 2048, 64, 8, DY_BF16, false); /* OLMoE's */
    topk_router_case(1, 2048, 60, 4, DY_BF16, true);  /* Qwen1.5-MoE's */
    topk_router_case(1, 4096, 8, 2, DY_F32, true);    /* Mixtral's, f32 */
    topk_router_case(1, 1024, 128, 8, DY_F16, true);
    topk_router_case(1, 200, 16, 2, DY_BF16, false);  /* rows not whole vectors of a block */
    topk_router_case(3, 512, 64, 8, DY_BF16, false);  /* more tokens: composed */
}

/* softmax_topk with the pairs grouped by expert in the same op
 * (dy_softmax_topk_desc's offsets, sorted, position): the integers
 * bit-identical, and cpu-ref's grouping the host's of its own ids */
static void test_softmax_topk_sort(void)
{
    require_backends();
    static const int token_counts[] = { 1, 2, 8, 33, 300 };
    static const int experts_k[][2] = { { 64, 8 }, { 60, 4 }, { 128, 8 } };
    static const char *const names[4] = { "ids", "offsets", "sorted", "position" };
    for (size_t s = 0; s < sizeof token_counts / sizeof token_counts[0]; s++)
        for (size_t e = 0; e < sizeof experts_k / sizeof experts_k[0]; e++)
            for (int renorm = 0; renorm <= 1; renorm++) {
                int tokens = token_counts[s], experts = experts_k[e][0], k = experts_k[e][1];
                int stride = experts + (int)(e % 2) * 3, pairs = tokens * k;
                size_t n = (size_t)tokens * stride, pb = (size_t)pairs * 4, ob = ((size_t)experts + 1) * 4;
                const size_t bytes[4] = { pb, ob, pb, pb };
                float *logits = host_random(DY_F32, n, 4.0f);
                if (tokens > 2) /* ties: the lower expert first */
                    for (int x = 0; x < experts; x++)
                        logits[(size_t)2 * stride + x] = x % 3 == 0 ? 1.5f : -1.0f;
                int32_t *want[4] = { 0 }, *host[3] = { malloc(ob), malloc(pb), malloc(pb) };
                float *want_w = NULL;
                for (int u = -1; u < dut_count; u++) {
                    dy_ctx *ctx = CTX_OF(u);
                    struct dy_softmax_topk_desc d = { .tokens = tokens, .experts = experts, .k = k,
                                                      .stride = stride, .renormalize = renorm };
                    d.logits = upload(ctx, logits, n * 4);
                    d.ids = upload(ctx, NULL, pb);
                    d.weights = upload(ctx, NULL, pb);
                    d.offsets = upload(ctx, NULL, ob);
                    d.sorted = upload(ctx, NULL, pb);
                    d.position = upload(ctx, NULL, pb);
                    DY_CHECK(dy_softmax_topk(ctx, &d) == DY_OK);
                    int32_t *got[4] = { download(ctx, d.ids, pb), download(ctx, d.offsets, ob),
                                        download(ctx, d.sorted, pb), download(ctx, d.position, pb) };
                    float *w = download(ctx, d.weights, pb);
                    if (u < 0) { /* the oracle: its ids grouped as moe_sort groups them */
                        host_sort(got[0], pairs, experts, host[0], host[1], host[2]);
                        for (int i = 1; i < 4; i++)
                            if (memcmp(host[i - 1], got[i], bytes[i])) {
                                printf("# softmax_topk t%d e%d k%d: cpu-ref's %s are not its ids grouped\n",
                                       tokens, experts, k, names[i]);
                                DY_CHECK(!"cpu-ref's grouping");
                            }
                    }
                    for (int i = 0; i < 4; i++) {
                        if (u < 0) {
                            want[i] = got[i];
                            continue;
                        }
                        if (memcmp(want[i], got[i], bytes[i])) {
                            printf("# softmax_topk t%d e%d k%d renorm%d with the sort: %s differ on %s\n",
                                   tokens, experts, k, renorm, names[i], duts[u].name);
                            DY_CHECK(!"softmax_topk sort equal");
                        }
                        free(got[i]);
                    }
                    if (u < 0) {
                        want_w = w;
                    } else {
                        DY_CHECK(close_enough("softmax_topk weights (with the sort)", duts[u].name, want_w, w,
                                              DY_F32, (size_t)pairs, 1e-5));
                        free(w);
                    }
                    FREE_BUFS(ctx, &d.logits, &d.ids, &d.weights, &d.offsets, &d.sorted, &d.position);
                }
                for (int i = 0; i < 4; i++)
                    free(want[i]);
                free(want_w);
                for (int i = 0; i < 3; i++)
                    free(host[i]);
                free(logits);
            }
}

static void test_moe_sort(void)
{
    require_backends();
    static const int shapes[][3] = { { 1, 8, 0 }, { 8, 64, 0 }, { 1000, 60, 0 }, { 40000, 128, 0 },
                                     { 777, 8, 1 }, { 5000, 256, 1 } };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int pairs = shapes[s][0], experts = shapes[s][1];
        int32_t *ids = random_ids(pairs, experts, shapes[s][2]);
        size_t pb = (size_t)pairs * 4, ob = ((size_t)experts + 1) * 4;
        int32_t *want[3] = { 0 };
        for (int u = -1; u < dut_count; u++) {
            dy_ctx *ctx = CTX_OF(u);
            struct dy_moe_sort_desc d = { .pairs = pairs, .experts = experts };
            d.ids = upload(ctx, ids, pb);
            d.offsets = upload(ctx, NULL, ob);
            d.sorted = upload(ctx, NULL, pb);
            d.position = upload(ctx, NULL, pb);
            DY_CHECK(dy_moe_sort(ctx, &d) == DY_OK);
            int32_t *got[3] = { download(ctx, d.offsets, ob), download(ctx, d.sorted, pb),
                                download(ctx, d.position, pb) };
            static const char *const names[3] = { "offsets", "sorted", "position" };
            for (int i = 0; i < 3; i++) {
                if (u < 0) {
                    want[i] = got[i];
                    continue;
                }
                if (memcmp(want[i], got[i], i ? pb : ob)) {
                    printf("# moe_sort pairs %d experts %d: %s differ on %s\n", pairs, experts,
                           names[i], duts[u].name);
                    DY_CHECK(!"moe_sort equal");
                }
                free(got[i]);
            }
            dy_buf_free(ctx, &d.ids);
            dy_buf_free(ctx, &d.offsets);
            dy_buf_free(ctx, &d.sorted);
            dy_buf_free(ctx, &d.position);
        }
        /* the oracle itself: a stable grouping */
        DY_CHECK(want[0][0] == 0 && want[0][experts] == pairs);
        for (int r = 1; r < pairs; r++) {
            int32_t a = want[1][r - 1], b = want[1][r];
            DY_CHECK(ids[a] < ids[b] || (ids[a] == ids[b] && a < b));
            DY_CHECK(want[2][b] == r);
        }
        for (int i = 0; i < 3; i++)
            free(want[i]);
        free(ids);
    }
}

/* The parts a grouped GEMM may take in (dy_gemm_grouped_desc.act and
 * .scatter): none, SwiGLU over each row's halves (gate/up), or the rows'
 * weighted sum into the tokens' rows of dst (down) */

struct grouped_case {
    int tokens, topk, experts, n, k, rows, lda, ldc, dst_stride;
    enum dy_dtype bt;
    bool gather, settled;
    void *a, *b, *dst0;
    float *weights;
    int32_t *offsets, *sorted, *position;
};

/* One run on ctx with `part`; returns what a case compares: dst for a
 * scatter, else C with its undefined columns zeroed (past n, past n/2 under
 * SwiGLU). The routes are written first, so that a settled promise holds. */
static float *grouped_run(dy_ctx *ctx, const struct grouped_case *g, enum grouped_part part)
{
    size_t a_n = (size_t)(g->gather ? g->tokens : g->rows) * g->lda;
    struct dy_gemm_grouped_desc d = { .rows = g->rows, .experts = g->experts, .n = g->n, .k = g->k,
                                      .a_row_div = g->topk, .lda = g->lda, .ldc = g->ldc,
                                      .b_expert_stride = (size_t)g->n * g->k, .b_dtype = g->bt,
                                      .act = part == GROUPED_SWIGLU ? DY_ACT_SWIGLU : DY_ACT_NONE,
                                      .routes_settled = g->settled };
    grouped_routes_upload(ctx, &d, part, g->offsets, g->weights, g->position, g->tokens, g->topk, g->dst_stride);
    if (g->gather)
        d.a_rows = upload(ctx, g->sorted, (size_t)g->rows * 4);
    d.a = upload(ctx, g->a, a_n * 4);
    d.b = upload(ctx, g->b, (size_t)g->experts * g->n * g->k * dy_dtype_size(g->bt));
    float *got = grouped_run_desc(ctx, &d, part, g->dst0);
    FREE_BUFS(ctx, &d.a, &d.b, &d.offsets, &d.a_rows, &d.scatter.weights, &d.scatter.position);
    return got;
}

/* gather: A's rows are the tokens' (a_rows the sorted pairs), else A's row
 * r is sorted row r; a scatter without gather reads A as the down
 * projection reads gate/up's buffer, rows 2k apart. settled: the routes'
 * promise (dy_gemm_grouped_desc.routes_settled). */
static void gemm_grouped_case_as(int tokens, int topk, int experts, int n, int k, enum dy_dtype bt,
                                 bool gather, bool skewed, enum grouped_part part, bool settled)
{
    int pairs = tokens * topk;
    struct grouped_case g = { .tokens = tokens, .topk = topk, .experts = experts, .n = n, .k = k,
                              .rows = pairs, .lda = part == GROUPED_SCATTER && !gather ? 2 * k : k + 3,
                              .ldc = n + 5, .dst_stride = n + 3, .bt = bt, .gather = gather,
                              .settled = settled };
    int32_t *ids = random_ids(pairs, experts, skewed);
    g.offsets = malloc(((size_t)experts + 1) * 4);
    g.sorted = malloc((size_t)pairs * 4 + 4);
    g.position = malloc((size_t)pairs * 4 + 4);
    host_sort(ids, pairs, experts, g.offsets, g.sorted, g.position);
    size_t a_n = (size_t)(gather ? tokens : pairs) * g.lda, b_n = (size_t)experts * n * k;
    g.a = host_random(DY_F32, a_n, 1.0f);
    g.b = host_random(bt, b_n, 0.5f);
    if (part == GROUPED_SCATTER) {
        g.dst0 = host_random(DY_F32, (size_t)tokens * g.dst_stride, 1.0f);
        g.weights = host_random(DY_F32, (size_t)pairs, 0.5f);
        for (int p = 0; p < pairs; p++) /* router weights: positive */
            g.weights[p] += 0.5f;
    }
    size_t count = part == GROUPED_SCATTER ? (size_t)tokens * g.dst_stride : (size_t)pairs * g.ldc;
    double tol = bt == DY_F32 ? 1e-4 : bt == DY_F16 ? 3e-3 : 1.6e-2;
    char what[128];
    snprintf(what, sizeof what, "gemm_grouped t%d k%d e%d n%d k%d %s gather%d%s%s", tokens, topk, experts, n,
             k, dy_dtype_name(bt), gather, part == GROUPED_SWIGLU ? " swiglu" : part ? " scatter" : "",
             settled ? " settled" : "");
    float *want = NULL;
    for (int u = -1; u < dut_count; u++) {
        float *got = grouped_run(CTX_OF(u), &g, part);
        if (u < 0 && part != GROUPED_PLAIN) { /* the oracle against its plain GEMM and the part */
            float *host = grouped_part_host(part, grouped_run(ref_ctx, &g, GROUPED_PLAIN), g.tokens, g.topk, g.n,
                                            g.ldc, g.dst_stride, g.dst0, g.weights, g.position);
            DY_CHECK(close_enough(what, "cpu-ref's parts", host, got, DY_F32, count, 1e-5));
            free(host);
        }
        want = compare_or_keep(u, want, got, what, DY_F32, count, tol);
    }
    free(want);
    free(g.a);
    free(g.b);
    free(g.dst0);
    free(g.weights);
    free(ids);
    free(g.offsets);
    free(g.sorted);
    free(g.position);
}

static void gemm_grouped_case(int tokens, int topk, int experts, int n, int k, enum dy_dtype bt,
                              bool gather, bool skewed)
{
    gemm_grouped_case_as(tokens, topk, experts, n, k, bt, gather, skewed, GROUPED_PLAIN, false);
}

static void test_gemm_grouped(void)
{
    require_backends();
    /* tokens, top-k, experts, n, k, gather, skewed */
    static const int shapes[][7] = {
        { 1, 2, 8, 64, 64, 1, 0 },      /* decode: one row per expert */
        { 1, 8, 64, 256, 128, 1, 0 },   /* OLMoE-like decode, most experts idle */
        { 4, 4, 60, 96, 160, 1, 0 },
        { 64, 8, 16, 128, 256, 1, 0 },
        { 200, 2, 8, 384, 96, 1, 1 },   /* one hot expert */
        { 300, 1, 4, 130, 70, 0, 0 },   /* rows already sorted, no gather */
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int t = DY_F32; t <= DY_BF16; t++)
            gemm_grouped_case(shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3], shapes[s][4],
                              (enum dy_dtype)t, shapes[s][5], shapes[s][6]);
}

/* The grouped GEMM with its SiLU-mul (gate/up) and with its scatter-add
 * into the tokens' rows (down), in one op where a backend has them */
static void test_gemm_grouped_fused(void)
{
    require_backends();
    /* tokens, top-k, experts, n, k */
    static const int shapes[][5] = {
        { 1, 8, 64, 256, 128 }, /* OLMoE-like decode, most experts idle */
        { 1, 2, 8, 64, 64 },    /* decode: one row per expert */
        { 4, 4, 60, 96, 160 },
        { 64, 8, 16, 128, 256 },
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int t = DY_F32; t <= DY_BF16; t++)
            for (int part = GROUPED_SWIGLU; part <= GROUPED_SCATTER; part++)
                gemm_grouped_case_as(shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3], shapes[s][4],
                                     (enum dy_dtype)t, true, false, (enum grouped_part)part,
                                     (s + (size_t)part) % 2 == 0);
    /* the down projection as the workload runs it: A is gate/up's buffer,
     * its rows in sorted order (no gather), the SwiGLU in their first half */
    for (int t = DY_F32; t <= DY_BF16; t++) {
        gemm_grouped_case_as(1, 8, 64, 128, 128, (enum dy_dtype)t, false, false, GROUPED_SCATTER, true);
        gemm_grouped_case_as(33, 4, 16, 96, 160, (enum dy_dtype)t, false, t == DY_F16, GROUPED_SCATTER,
                             t != DY_BF16);
    }
}

static void test_scatter_add_rows(void)
{
    require_backends();
    static const int shapes[][4] = { { 1, 1, 7, 1 }, { 1, 8, 2048, 8 }, { 5, 2, 300, 4 },
                                     { 333, 4, 1000, 60 } };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int tokens = shapes[s][0], k = shapes[s][1], cols = shapes[s][2], experts = shapes[s][3];
        int pairs = tokens * k, ss = cols + 1, ds = cols + 4;
        int32_t *ids = random_ids(pairs, experts, false);
        int32_t offsets[experts + 1], *sorted = malloc((size_t)pairs * 4), *pos = malloc((size_t)pairs * 4);
        host_sort(ids, pairs, experts, offsets, sorted, pos);
        size_t sn = (size_t)pairs * ss, dn = (size_t)tokens * ds;
        void *src = host_random(DY_F32, sn, 2.0f), *dst = host_random(DY_F32, dn, 1.0f);
        void *w = host_random(DY_F32, (size_t)pairs, 1.0f), *want = NULL;
        for (int u = -1; u < dut_count; u++) {
            dy_ctx *ctx = CTX_OF(u);
            struct dy_scatter_add_rows_desc d = { .tokens = tokens, .k = k, .cols = cols,
                                                  .src_stride = ss, .dst_stride = ds };
            d.src = upload(ctx, src, sn * 4);
            d.dst = upload(ctx, dst, dn * 4);
            d.weights = upload(ctx, w, (size_t)pairs * 4);
            d.position = upload(ctx, pos, (size_t)pairs * 4);
            DY_CHECK(dy_scatter_add_rows(ctx, &d) == DY_OK);
            want = compare_or_keep(u, want, download(ctx, d.dst, dn * 4), "scatter_add_rows", DY_F32,
                                   dn, 1e-5);
            dy_buf_free(ctx, &d.src);
            dy_buf_free(ctx, &d.dst);
            dy_buf_free(ctx, &d.weights);
            dy_buf_free(ctx, &d.position);
        }
        free(want);
        free(src);
        free(dst);
        free(w);
        free(ids);
        free(sorted);
        free(pos);
    }
}

DY_TESTS(DY_TEST(test_fill_random) DY_TEST(test_gemm) DY_TEST(test_norm) DY_TEST(test_rope) DY_TEST(test_rope_fused)
         DY_TEST(test_eltwise) DY_TEST(test_gather_rows) DY_TEST(test_convert)
         DY_TEST(test_kv_append) DY_TEST(test_attention_prefill) DY_TEST(test_attention_decode)
         DY_TEST(test_argmax) DY_TEST(test_softmax_topk) DY_TEST(test_softmax_topk_sort) DY_TEST(test_topk_router)
         DY_TEST(test_moe_sort) DY_TEST(test_gemm_grouped) DY_TEST(test_gemm_grouped_fused)
         DY_TEST(test_scatter_add_rows) DY_TEST(test_kv_block_scores))
