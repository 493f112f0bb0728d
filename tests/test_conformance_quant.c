/* Quantized weights: the host quantizer's formats (backends/quant.c), and
 * dequantize, gemm and gemm_grouped with fp8, int8 and int4 weights on every
 * backend against cpu-ref. */
#include "conformance.h"
#include "../backends/quant.h"

/* A quantized matrix on the host, made by the one quantizer. */
struct qmat {
    struct dy_qformat f;
    int rows, cols;
    void *q;
    float *scale;
    uint8_t *zero;
    size_t q_bytes, scales, zero_bytes;
};

static struct qmat qmat_make(const struct dy_qformat *f, const float *w, int rows, int cols)
{
    struct qmat m = { .f = *f, .rows = rows, .cols = cols };
    m.q_bytes = dy_quant_q_bytes(f, (size_t)rows, (size_t)cols);
    m.scales = dy_quant_scale_count(f, (size_t)rows, (size_t)cols);
    m.zero_bytes = dy_quant_zero_bytes(f, (size_t)rows, (size_t)cols);
    m.q = calloc(m.q_bytes + 1, 1);
    m.scale = malloc(m.scales * sizeof(float));
    m.zero = m.zero_bytes ? malloc(m.zero_bytes) : NULL;
    dy_quantize(f, w, (size_t)rows, (size_t)cols, m.q, m.scale, m.zero);
    return m;
}

static void qmat_free(struct qmat *m)
{
    free(m->q);
    free(m->scale);
    free(m->zero);
}

/* The matrix's buffers on ctx; b and *bq for a descriptor. */
static void qmat_upload(dy_ctx *ctx, const struct qmat *m, dy_buf *b, struct dy_quant *bq)
{
    *b = upload(ctx, m->q, m->q_bytes);
    *bq = (struct dy_quant){ .group = m->f.group, .bias_dtype = DY_BF16 };
    bq->scale = upload(ctx, m->scale, m->scales * sizeof(float));
    if (m->zero)
        bq->zero = upload(ctx, m->zero, m->zero_bytes);
}

static void quant_free(dy_ctx *ctx, dy_buf *b, struct dy_quant *bq)
{
    dy_buf_free(ctx, b);
    dy_buf_free(ctx, &bq->scale);
    dy_buf_free(ctx, &bq->zero);
}

static float *random_f32(size_t count, float scale)
{
    return host_random(DY_F32, count, scale);
}

static const char *format_name(const struct dy_qformat *f)
{
    static char name[32];
    snprintf(name, sizeof name, "%s%s/%d", dy_dtype_name(f->dtype), f->asym ? "-asym" : "", f->bits);
    return name;
}

static const struct dy_qformat formats[] = {
    { DY_FP8, 8, 0, false }, { DY_I8, 8, 0, false }, { DY_I4, 4, 128, false },
    { DY_I4, 4, 128, true }, { DY_I4, 3, 128, false }, { DY_I4, 2, 64, false },
};
#define FORMAT_COUNT (int)(sizeof formats / sizeof formats[0])

/* ---- the host quantizer: each element within half a step of its value,
 * and the levels the format allows ---- */
static void test_quantize_host(void)
{
    int rows = 7, cols = 256;
    float *w = random_f32((size_t)rows * cols, 2.0f);
    w[5] = 0.0f; /* an exact zero stays zero in symmetric formats */
    for (int f = 0; f < FORMAT_COUNT; f++) {
        const struct dy_qformat *fmt = &formats[f];
        struct qmat m = qmat_make(fmt, w, rows, cols);
        double worst = 0.0;
        for (int r = 0; r < rows; r++) {
            for (int i = 0; i < cols; i++) {
                double got = dy_dequant(m.q, fmt->dtype, m.scale, m.zero, cols, fmt->group, (size_t)r, (size_t)i);
                double want = w[(size_t)r * cols + i];
                /* the step is the element's scale; fp8 has 3 mantissa bits */
                double step = fmt->dtype == DY_FP8 ? fabs(want) / 8 + m.scale[0] / 512
                              : fmt->dtype == DY_I8 ? m.scale[r]
                              : m.scale[(size_t)r * (cols / fmt->group) + i / fmt->group];
                double err = fabs(got - want) / (step * 0.5 + 1e-30);
                worst = err > worst ? err : worst;
                if (fmt->dtype == DY_I4) {
                    size_t e = (size_t)r * cols + i;
                    int nib = (((uint8_t *)m.q)[e / 2] >> (4 * (e & 1))) & 15;
                    int side = (1 << (fmt->bits - 1)) - 1;
                    DY_CHECK(fmt->asym ? nib <= (1 << fmt->bits) - 1 : nib >= 8 - side && nib <= 8 + side);
                }
            }
        }
        if (!fmt->asym)
            DY_CHECK(dy_dequant(m.q, fmt->dtype, m.scale, m.zero, cols, fmt->group, 0, 5) == 0.0);
        if (!(worst <= 1.0 + 1e-5)) {
            printf("# quantize %s: an element is %.3g half-steps from its value\n", format_name(fmt), worst);
            DY_CHECK(!"within half a step");
        }
        qmat_free(&m);
    }
    /* a worked example: int4 symmetric, one group of 4 */
    struct dy_qformat tiny = { DY_I4, 4, 4, false };
    float v[4] = { 0.7f, -0.35f, 0.1f, 0.0f };
    uint8_t q[2];
    float s;
    dy_quantize(&tiny, v, 1, 4, q, &s, NULL);
    DY_CHECK(s == 0.7f / 7.0f);
    DY_CHECK(q[0] == (uint8_t)(15 | (4 << 4)) && q[1] == (uint8_t)(9 | (8 << 4)));
    /* -0.35 / 0.1 = -3.5 rounds to even, -4: off by 0.05 */
    DY_CHECK(fabs(dy_quant_error(&tiny, v, 1, 4) - 0.0025) < 1e-6);
    free(w);
}

/* ---- dequantize: the same values everywhere ---- */
static void test_dequantize(void)
{
    require_backends();
    int rows = 33, cols = 384;
    float *w = random_f32((size_t)rows * cols, 0.5f);
    for (int f = 0; f < FORMAT_COUNT; f++) {
        struct qmat m = qmat_make(&formats[f], w, rows, cols);
        for (enum dy_dtype out = DY_F32; out <= DY_BF16; out++) {
            int stride = cols + 8;
            size_t out_bytes = (size_t)rows * stride * dy_dtype_size(out);
            void *want = NULL;
            for (int u = -1; u < dut_count; u++) {
                dy_ctx *ctx = CTX_OF(u);
                struct dy_dequantize_desc d = { .rows = rows, .k = cols, .out_stride = stride,
                                                .q_dtype = m.f.dtype, .out_dtype = out };
                qmat_upload(ctx, &m, &d.q, &d.qp);
                void *zeros = calloc(out_bytes, 1);
                d.out = upload(ctx, zeros, out_bytes);
                free(zeros);
                DY_CHECK(dy_dequantize(ctx, &d) == DY_OK);
                char what[96];
                snprintf(what, sizeof what, "dequantize %s to %s", format_name(&m.f), dy_dtype_name(out));
                want = compare_or_keep(u, want, download(ctx, d.out, out_bytes), what, out,
                                       (size_t)rows * stride, 0.0);
                quant_free(ctx, &d.q, &d.qp);
                dy_buf_free(ctx, &d.out);
            }
            free(want);
        }
        qmat_free(&m);
    }
    free(w);
}

/* Tolerance of a quantized GEMM: backends may take bf16 matrix units (and
 * fp8 ones for fp8 weights) on large calls; a decode-sized call reads the
 * weights as they are. */
static double quant_tol(const struct dy_qformat *f, int m)
{
    return m <= 8 ? 1e-3 : f->dtype == DY_FP8 ? 8e-2 : 1.6e-2;
}

/* C = A . B^T over rows [r0, r0 + n) of a quantized [r0 + n + 5, k] matrix
 * (act SwiGLU: C's first n/2 columns compared, the rest is scratch; act
 * RoPE: all but the last of n / 64 heads of 64 rotated); norm: A the
 * RMSNorm of the random rows times a bf16 weight (dy_gemm_desc.norm). */
static void gemm_quant_case_as(int m, int n, int k, int r0, const struct dy_qformat *f, bool bias, float beta,
                               enum dy_gemm_act act, bool norm)
{
    int rows = r0 + n + 5, lda = k + 4, ldc = n + 3;
    float *w = random_f32((size_t)rows * k, 0.5f), *a = random_f32((size_t)m * lda, 1.0f);
    float *c0 = random_f32((size_t)m * ldc, 1.0f);
    void *bi = host_random(DY_BF16, (size_t)n, 1.0f), *want = NULL;
    struct qmat q = qmat_make(f, w, rows, k);
    size_t row_scales = dy_quant_row_scales(f->dtype, k, f->group);
    char what[128];
    snprintf(what, sizeof what, "gemm m%d n%d k%d rows %d.. %s bias%d beta%g%s%s", m, n, k, r0, format_name(f),
             bias, beta, act == DY_ACT_SWIGLU ? " swiglu" : act == DY_ACT_ROPE ? " rope" : "", norm ? " norm" : "");
    void *nw = host_random(DY_BF16, (size_t)k, 1.0f);
    int32_t pos[32];
    float freq[32];
    for (int i = 0; i < 32; i++) {
        pos[i] = 5 + 211 * i;
        freq[i] = powf(10000.0f, -(float)i / 32.0f);
    }
    int cols = act == DY_ACT_SWIGLU ? n / 2 : ldc; /* compared columns of each row */
    /* B comes by upload, so either promise holds: the formats of a shape
     * take turns making it (the CUDA GEMV's loads before its wait) */
    bool settled = (n / 64 + (int)(f - formats)) % 2 == 0;
    for (int u = -1; u < dut_count; u++) {
        dy_ctx *ctx = CTX_OF(u);
        struct dy_gemm_desc d = { .m = m, .n = n, .k = k, .lda = lda, .ldb = k, .ldc = ldc,
                                  .a_dtype = DY_F32, .b_dtype = f->dtype, .c_dtype = DY_F32, .beta = beta,
                                  .act = act, .b_settled = settled };
        dy_buf whole;
        struct dy_quant whole_q;
        qmat_upload(ctx, &q, &whole, &whole_q);
        d.b = dy_buf_at(whole, dy_dtype_bytes(f->dtype, (size_t)r0 * k));
        d.bq = whole_q;
        d.bq.scale = dy_buf_at(whole_q.scale, (size_t)r0 * row_scales * sizeof(float));
        if (whole_q.zero.h)
            d.bq.zero = dy_buf_at(whole_q.zero, (size_t)r0 * row_scales);
        d.a = upload(ctx, norm ? NULL : a, (size_t)m * lda * 4);
        if (norm)
            d.norm = (struct dy_gemm_norm){ .x = upload(ctx, a, (size_t)m * lda * 4),
                                            .weight = upload(ctx, nw, (size_t)k * 2), .x_stride = lda,
                                            .eps = 1e-5f, .x_dtype = DY_F32, .weight_dtype = DY_BF16 };
        d.c = upload(ctx, c0, (size_t)m * ldc * 4);
        if (bias)
            d.bias = upload(ctx, bi, (size_t)n * 2);
        if (act == DY_ACT_ROPE) {
            d.rope = (struct dy_gemm_rope){ .heads = n / 64 - 1, .head_dim = 64 };
            d.rope.positions = upload(ctx, pos, (size_t)m * 4);
            d.rope.inv_freq = upload(ctx, freq, sizeof freq);
        }
        DY_CHECK(dy_gemm(ctx, &d) == DY_OK);
        dy_buf_free(ctx, &d.rope.positions);
        dy_buf_free(ctx, &d.rope.inv_freq);
        float *got = download(ctx, d.c, (size_t)m * ldc * 4);
        for (int r = 1; r < m; r++)
            memmove(got + (size_t)r * cols, got + (size_t)r * ldc, (size_t)cols * 4);
        want = compare_or_keep(u, want, got, what, DY_F32, (size_t)m * cols, quant_tol(f, m));
        quant_free(ctx, &whole, &whole_q);
        FREE_BUFS(ctx, &d.a, &d.c, &d.bias, &d.norm.x, &d.norm.weight);
    }
    free(want);
    qmat_free(&q);
    free(w);
    free(a);
    free(c0);
    free(bi);
    free(nw);
}

static void gemm_quant_case(int m, int n, int k, int r0, const struct dy_qformat *f, bool bias, float beta,
                            enum dy_gemm_act act)
{
    gemm_quant_case_as(m, n, k, r0, f, bias, beta, act, false);
}

static void test_gemm_quant(void)
{
    require_backends();
    /* m, n, k, first row */
    static const int shapes[][4] = {
        { 1, 64, 128, 0 }, { 1, 300, 512, 7 }, { 3, 96, 256, 0 }, { 8, 130, 384, 2 },
        { 17, 64, 256, 0 }, { 64, 192, 512, 5 }, { 200, 256, 1024, 0 },
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int f = 0; f < FORMAT_COUNT; f++)
            gemm_quant_case(shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3], &formats[f],
                            (s + f) % 2 == 0, s % 3 == 1 ? 1.0f : 0.0f, DY_ACT_NONE);
    /* gate/up with SwiGLU: decode-sized (a fused GEMV) and not */
    static const int sw[][4] = { { 1, 128, 256, 0 }, { 3, 300, 512, 7 }, { 8, 64, 384, 2 }, { 17, 96, 256, 0 } };
    for (size_t s = 0; s < sizeof sw / sizeof sw[0]; s++)
        for (int f = 0; f < FORMAT_COUNT; f++)
            gemm_quant_case(sw[s][0], sw[s][1], sw[s][2], sw[s][3], &formats[f], (s + f) % 2 == 0, 0.0f,
                            DY_ACT_SWIGLU);
    /* q/k/v with RoPE: decode-sized (a fused GEMV) and not */
    static const int rot[][4] = { { 1, 192, 256, 0 }, { 3, 256, 512, 7 }, { 8, 128, 384, 2 }, { 17, 192, 256, 0 } };
    for (size_t s = 0; s < sizeof rot / sizeof rot[0]; s++)
        for (int f = 0; f < FORMAT_COUNT; f++)
            gemm_quant_case(rot[s][0], rot[s][1], rot[s][2], rot[s][3], &formats[f], (s + f) % 2 == 1, 0.0f,
                            DY_ACT_ROPE);
    /* A as the RMSNorm of x: one row (the GEMV's prologue where a backend
     * has it) and three (composed), plain with accumulation, SwiGLU, RoPE */
    for (int f = 0; f < FORMAT_COUNT; f++) {
        gemm_quant_case_as(1, 300, 512, 7, &formats[f], f % 2 == 0, 1.0f, DY_ACT_NONE, true);
        gemm_quant_case_as(1, 128, 256, 0, &formats[f], f % 2 == 1, 0.0f, DY_ACT_SWIGLU, true);
        gemm_quant_case_as(1, 192, 256, 0, &formats[f], f % 2 == 0, 0.0f, DY_ACT_ROPE, true);
        gemm_quant_case_as(3, 96, 256, 0, &formats[f], true, 0.0f, DY_ACT_NONE, true);
    }
}

/* The parts a grouped GEMM may take in (dy_gemm_grouped_desc.act and
 * .scatter), as test_conformance.c has them: none, SwiGLU over each row's
 * halves, or the rows' weighted sum into the tokens' rows of dst */

struct grouped_quant_case {
    int tokens, topk, experts, n, k, lda, ldc, dst_stride;
    bool settled;
    const struct qmat *all;
    float *a, *dst0, *weights;
    int32_t *offsets, *sorted, *position;
};

/* One run on ctx with `part`; returns dst for a scatter, else C with its
 * undefined columns zeroed (past n, past n/2 under SwiGLU). */
static float *grouped_quant_run(dy_ctx *ctx, const struct grouped_quant_case *g, enum grouped_part part)
{
    int pairs = g->tokens * g->topk;
    struct dy_gemm_grouped_desc d = { .rows = pairs, .experts = g->experts, .n = g->n, .k = g->k,
                                      .a_row_div = g->topk, .lda = g->lda, .ldc = g->ldc,
                                      .b_expert_stride = (size_t)g->n * g->k, .b_dtype = g->all->f.dtype,
                                      .act = part == GROUPED_SWIGLU ? DY_ACT_SWIGLU : DY_ACT_NONE,
                                      .routes_settled = g->settled };
    grouped_routes_upload(ctx, &d, part, g->offsets, g->weights, g->position, g->tokens, g->topk, g->dst_stride);
    d.a_rows = upload(ctx, g->sorted, (size_t)pairs * 4);
    qmat_upload(ctx, g->all, &d.b, &d.bq);
    d.a = upload(ctx, g->a, (size_t)g->tokens * g->lda * 4);
    float *got = grouped_run_desc(ctx, &d, part, g->dst0);
    quant_free(ctx, &d.b, &d.bq);
    FREE_BUFS(ctx, &d.a, &d.offsets, &d.a_rows, &d.scatter.weights, &d.scatter.position);
    return got;
}

static void gemm_grouped_quant_case_as(int tokens, int topk, int experts, int n, int k,
                                       const struct dy_qformat *f, enum grouped_part part, bool settled)
{
    int pairs = tokens * topk;
    struct grouped_quant_case g = { .tokens = tokens, .topk = topk, .experts = experts, .n = n, .k = k,
                                    .lda = k + 3, .ldc = n + 5, .dst_stride = n + 3, .settled = settled };
    int32_t *ids = random_ids(pairs, experts, false);
    g.offsets = malloc(((size_t)experts + 1) * 4);
    g.sorted = malloc((size_t)pairs * 4 + 4);
    g.position = malloc((size_t)pairs * 4 + 4);
    host_sort(ids, pairs, experts, g.offsets, g.sorted, g.position);
    /* each expert quantized on its own, laid out one after another */
    float *w = random_f32((size_t)experts * n * k, 0.5f);
    g.a = random_f32((size_t)tokens * g.lda, 1.0f);
    struct qmat all = qmat_make(f, w, n, k);
    size_t qb = all.q_bytes, sc = all.scales, zb = all.zero_bytes;
    qmat_free(&all);
    all = (struct qmat){ *f, experts * n, k, calloc(qb * experts + 1, 1), malloc(sc * experts * 4),
                         zb ? malloc(zb * experts) : NULL, qb * experts, sc * experts, zb * experts };
    for (int e = 0; e < experts; e++) {
        struct qmat one = qmat_make(f, w + (size_t)e * n * k, n, k);
        memcpy((char *)all.q + e * qb, one.q, qb);
        memcpy(all.scale + e * sc, one.scale, sc * 4);
        if (zb)
            memcpy(all.zero + e * zb, one.zero, zb);
        qmat_free(&one);
    }
    g.all = &all;
    if (part == GROUPED_SCATTER) {
        g.dst0 = random_f32((size_t)tokens * g.dst_stride, 1.0f);
        g.weights = random_f32((size_t)pairs, 0.5f);
        for (int p = 0; p < pairs; p++) /* router weights: positive */
            g.weights[p] += 0.5f;
    }
    size_t count = part == GROUPED_SCATTER ? (size_t)tokens * g.dst_stride : (size_t)pairs * g.ldc;
    float *want = NULL;
    char what[128];
    snprintf(what, sizeof what, "gemm_grouped t%d k%d e%d n%d k%d %s%s%s", tokens, topk, experts, n, k,
             format_name(f), part == GROUPED_SWIGLU ? " swiglu" : part ? " scatter" : "",
             settled ? " settled" : "");
    for (int u = -1; u < dut_count; u++) {
        float *got = grouped_quant_run(CTX_OF(u), &g, part);
        if (u < 0 && part != GROUPED_PLAIN) { /* the oracle against its plain GEMM and the part */
            float *host = grouped_part_host(part, grouped_quant_run(ref_ctx, &g, GROUPED_PLAIN), g.tokens, g.topk, g.n,
                                            g.ldc, g.dst_stride, g.dst0, g.weights, g.position);
            DY_CHECK(close_enough(what, "cpu-ref's parts", host, got, DY_F32, count, 1e-5));
            free(host);
        }
        want = compare_or_keep(u, want, got, what, DY_F32, count, quant_tol(f, pairs > 4 * experts ? 64 : 1));
    }
    free(want);
    qmat_free(&all);
    free(w);
    free(g.a);
    free(g.dst0);
    free(g.weights);
    free(ids);
    free(g.offsets);
    free(g.sorted);
    free(g.position);
}

static void gemm_grouped_quant_case(int tokens, int topk, int experts, int n, int k,
                                    const struct dy_qformat *f)
{
    gemm_grouped_quant_case_as(tokens, topk, experts, n, k, f, GROUPED_PLAIN, false);
}

static void test_gemm_grouped_quant(void)
{
    require_backends();
    /* tokens, top-k, experts, n, k */
    static const int shapes[][5] = {
        { 1, 2, 8, 64, 128 }, { 1, 8, 64, 256, 256 }, { 4, 4, 16, 96, 384 }, { 128, 4, 8, 128, 256 },
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int f = 0; f < FORMAT_COUNT; f++)
            gemm_grouped_quant_case(shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3], shapes[s][4],
                                    &formats[f]);
    /* a decode step's gate/up with its SiLU-mul and down with its
     * scatter-add, in one op where a backend has them */
    for (int f = 0; f < FORMAT_COUNT; f++) {
        gemm_grouped_quant_case_as(1, 8, 64, 256, 256, &formats[f], GROUPED_SWIGLU, f % 2 == 0);
        gemm_grouped_quant_case_as(1, 8, 64, 256, 256, &formats[f], GROUPED_SCATTER, f % 2 == 1);
    }
}

DY_TESTS(DY_TEST(test_quantize_host) DY_TEST(test_dequantize) DY_TEST(test_gemm_quant)
         DY_TEST(test_gemm_grouped_quant))
