/* Quantized LLM weights (--weight-dtype fp8, int8, int4, int4-asym,
 * mopeq:BITS), made from bf16 weights already on the device: each matrix
 * is read back, quantized on the host by backends/quant.c, so every
 * backend runs the same bits, and uploaded. The vectors, the embedding
 * and the router stay bf16 and are borrowed from the base weights, which
 * also serve as the unquantized reference for fidelity. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm.h"

bool dy_llm_format_parse(const char *name, struct dy_llm_format *out)
{
    struct dy_llm_format f = { .dtype = DY_BF16 };
    enum dy_dtype plain;
    if (dy_dtype_parse(name, &plain) && plain <= DY_BF16) {
        f.dtype = f.quant.dtype = plain;
    } else if (!strncmp(name, "mopeq:", 6)) {
        char *end;
        errno = 0;
        f.mopeq_bits = strtod(name + 6, &end);
        if (errno || end == name + 6 || *end || !(f.mopeq_bits >= 2 && f.mopeq_bits <= 4))
            return false;
        f.quant = (struct dy_qformat){ DY_I4, 4, DY_QUANT_GROUP, false };
    } else if (!dy_qformat_parse(name, &f.quant)) {
        return false;
    }
    *out = f;
    return true;
}

uint64_t dy_llm_mat_bytes(const struct dy_llm_weights *w, enum dy_dtype dtype, size_t rows, size_t cols)
{
    if (!dy_dtype_quantized(dtype))
        return (uint64_t)rows * cols * dy_dtype_size(dtype);
    struct dy_qformat f = w->quant;
    f.dtype = dtype;
    return dy_quant_q_bytes(&f, rows, cols) + dy_quant_scale_count(&f, rows, cols) * sizeof(float) +
           dy_quant_zero_bytes(&f, rows, cols);
}

uint64_t dy_llm_expert_bytes(const struct dy_llm_weights *w, const struct dy_model_config *cfg)
{
    size_t h = (size_t)cfg->hidden, ffn = (size_t)cfg->moe_ffn;
    return dy_llm_mat_bytes(w, w->expert_dtype, 2 * ffn, h) + dy_llm_mat_bytes(w, w->expert_dtype, h, ffn);
}

/* Host scratch for one matrix (an expert, or a whole dense matrix). */
struct qwork {
    dy_ctx *ctx;
    struct dy_llm_weights *w;
    void *raw;          /* the base dtype's bytes */
    float *f32;
    void *q;
    float *scale;
    uint8_t *zero;
    char *err;
    size_t err_len;
};

static int grow(void **p, size_t *cap, size_t bytes)
{
    if (bytes <= *cap)
        return DY_OK;
    void *n = realloc(*p, bytes);
    if (!n)
        return DY_E_NOMEM;
    *p = n;
    *cap = bytes;
    return DY_OK;
}

/* Reads `count` base-dtype elements at src into qw->f32. */
static int read_f32(struct qwork *qw, dy_buf src, enum dy_dtype t, size_t count)
{
    int st = dy_buf_read(qw->ctx, src, qw->raw, count * dy_dtype_size(t));
    if (st == DY_OK && t == DY_BF16) { /* the common case, in a loop that vectorizes */
        const uint16_t *h = qw->raw;
        for (size_t i = 0; i < count; i++) {
            uint32_t bits = (uint32_t)h[i] << 16;
            memcpy(&qw->f32[i], &bits, sizeof bits);
        }
        return st;
    }
    for (size_t i = 0; i < count && st == DY_OK; i++)
        qw->f32[i] = dy_load_f32(qw->raw, t, i);
    return st;
}

/* Quantizes `planes` matrices [rows, cols] that follow each other at src
 * (base dtype t) into *dst and *qp; bits[p] (or NULL) overrides the
 * format's bits of plane p. */
static int quantize_planes(struct qwork *qw, dy_buf src, enum dy_dtype t, int planes, size_t rows,
                           size_t cols, const struct dy_qformat *base_fmt, const int *bits, dy_buf *dst,
                           struct dy_quant *qp)
{
    size_t qb = dy_quant_q_bytes(base_fmt, rows, cols), ns = dy_quant_scale_count(base_fmt, rows, cols);
    size_t zb = dy_quant_zero_bytes(base_fmt, rows, cols), count = rows * cols;
    *qp = (struct dy_quant){ .group = base_fmt->group, .bias_dtype = qw->w->dtype };
    int st;
    if ((st = dy_buf_alloc(qw->ctx, qb * planes, dst)) ||
        (st = dy_buf_alloc(qw->ctx, ns * planes * sizeof(float), &qp->scale)) ||
        (zb && (st = dy_buf_alloc(qw->ctx, zb * planes, &qp->zero)))) {
        snprintf(qw->err, qw->err_len, "allocating quantized weights: %s", dy_ctx_error(qw->ctx));
        return st;
    }
    /* the quantized matrices take the place of the base's in the count */
    qw->w->bytes += (qb + ns * sizeof(float) + zb) * (uint64_t)planes;
    qw->w->bytes -= (uint64_t)planes * count * dy_dtype_size(t);
    for (int p = 0; p < planes; p++) {
        struct dy_qformat f = *base_fmt;
        if (bits)
            f.bits = bits[p];
        if ((st = read_f32(qw, dy_buf_at(src, (size_t)p * count * dy_dtype_size(t)), t, count)))
            break;
        memset(qw->q, 0, qb);
        dy_quantize(&f, qw->f32, rows, cols, qw->q, qw->scale, qw->zero);
        if ((st = dy_buf_write(qw->ctx, dy_buf_at(*dst, (size_t)p * qb), qw->q, qb)) ||
            (st = dy_buf_write(qw->ctx, dy_buf_at(qp->scale, (size_t)p * ns * sizeof(float)), qw->scale,
                               ns * sizeof(float))) ||
            (zb && (st = dy_buf_write(qw->ctx, dy_buf_at(qp->zero, (size_t)p * zb), qw->zero, zb))))
            break;
    }
    if (st != DY_OK && !qw->err[0])
        snprintf(qw->err, qw->err_len, "quantizing weights: %s", dy_ctx_error(qw->ctx));
    return st;
}

/* MoPEQ's sensitivity of one expert (REFERENCE.md): the proxy loss is
 * ||W||_F, whose Hessian has trace (n - 1) / ||W||_F, the value Hutchinson's
 * estimator converges to; weighted by the 2-bit quantization error as
 * HAWQ weighs a perturbation: Omega = tr(H) / n * ||W - Q2(W)||^2. */
static double sensitivity(const float *w, size_t rows, size_t cols, int group)
{
    double norm2 = 0;
    size_t n = rows * cols;
    for (size_t i = 0; i < n; i++)
        norm2 += (double)w[i] * w[i];
    if (norm2 <= 0)
        return 0;
    struct dy_qformat two = { DY_I4, 2, group, false };
    return ((double)n - 1) / sqrt(norm2) / (double)n * dy_quant_error(&two, w, rows, cols);
}

/* 1-D k-means with k = 3 over the sensitivities (centroids start at the
 * minimum, the mean and the maximum); tiers ordered by centroid become 2, 3
 * and 4 bits. Then the budget: while the total exceeds round(mean * count)
 * the least sensitive expert above 2 bits loses one, while it falls short
 * the most sensitive below 4 gains one. */
static void mopeq_bits(const double *s, int count, double mean_bits, int *bits)
{
    double c[3], lo = s[0], hi = s[0], sum = 0;
    for (int i = 0; i < count; i++) {
        lo = fmin(lo, s[i]);
        hi = fmax(hi, s[i]);
        sum += s[i];
    }
    c[0] = lo, c[1] = sum / count, c[2] = hi;
    for (int iter = 0; iter < 100; iter++) {
        double acc[3] = { 0 };
        int n[3] = { 0 };
        for (int i = 0; i < count; i++) {
            int best = 0;
            for (int j = 1; j < 3; j++)
                if (fabs(s[i] - c[j]) < fabs(s[i] - c[best]))
                    best = j;
            bits[i] = best;
            acc[best] += s[i];
            n[best]++;
        }
        bool moved = false;
        for (int j = 0; j < 3; j++) {
            double next = n[j] ? acc[j] / n[j] : c[j];
            moved |= next != c[j];
            c[j] = next;
        }
        if (!moved)
            break;
    }
    /* centroids stay ordered (they start ordered, and 1-D Lloyd keeps it) */
    long total = 0, want = lround(mean_bits * count);
    for (int i = 0; i < count; i++)
        total += bits[i] += 2;
    while (total != want) {
        int pick = -1;
        for (int i = 0; i < count; i++) {
            bool can = total > want ? bits[i] > 2 : bits[i] < 4;
            if (can && (pick < 0 || (total > want ? s[i] < s[pick] : s[i] > s[pick])))
                pick = i;
        }
        bits[pick] += total > want ? -1 : 1;
        total += total > want ? -1 : 1;
    }
}

/* Every expert's bits (layers x experts) for a mean of f->mopeq_bits. */
static int choose_expert_bits(struct qwork *qw, const struct dy_model_config *cfg,
                              const struct dy_llm_weights *base, const struct dy_llm_format *f, int *bits)
{
    size_t h = (size_t)cfg->hidden, ffn = (size_t)cfg->moe_ffn;
    int count = cfg->layers * cfg->experts, st = DY_OK;
    double *s = calloc((size_t)count, sizeof *s);
    if (!s)
        return DY_E_NOMEM;
    for (int l = 0; l < cfg->layers && st == DY_OK; l++) {
        for (int e = 0; e < cfg->experts && st == DY_OK; e++) {
            const struct dy_llm_layer *ly = &base->layers[l];
            size_t esz = dy_dtype_size(base->dtype);
            if ((st = read_f32(qw, dy_buf_at(ly->expert_gate_up, (size_t)e * 2 * ffn * h * esz), base->dtype,
                               2 * ffn * h)))
                break;
            double a = sensitivity(qw->f32, 2 * ffn, h, f->quant.group);
            if ((st = read_f32(qw, dy_buf_at(ly->expert_down, (size_t)e * h * ffn * esz), base->dtype, h * ffn)))
                break;
            s[l * cfg->experts + e] = a + sensitivity(qw->f32, h, ffn, f->quant.group);
        }
    }
    if (st == DY_OK)
        mopeq_bits(s, count, f->mopeq_bits, bits);
    else
        snprintf(qw->err, qw->err_len, "reading experts for MoPEQ: %s", dy_ctx_error(qw->ctx));
    free(s);
    return st;
}

static char *bits_map(const struct dy_model_config *cfg, const int *bits)
{
    char *map = malloc((size_t)cfg->layers * (cfg->experts + 1) + 1), *p = map;
    if (!map)
        return NULL;
    for (int l = 0; l < cfg->layers; l++) {
        if (l)
            *p++ = ',';
        for (int e = 0; e < cfg->experts; e++)
            *p++ = (char)('0' + bits[l * cfg->experts + e]);
    }
    *p = '\0';
    return map;
}

int dy_llm_weights_quantize(dy_ctx *ctx, const struct dy_model_config *cfg,
                            const struct dy_llm_weights *base, const struct dy_llm_format *f,
                            struct dy_llm_weights *out, char *err, size_t err_len)
{
    *out = *base;
    out->borrowed = true;
    out->expert_bits = NULL;
    out->lm_head_q = (struct dy_quant){ 0 };
    out->quant = f->quant;
    out->expert_dtype = f->quant.dtype;
    out->mat_dtype = f->mopeq_bits > 0 ? base->dtype : f->quant.dtype;
    out->layers = calloc((size_t)cfg->layers, sizeof *out->layers);
    err[0] = '\0';
    if (!out->layers)
        return DY_E_NOMEM;
    memcpy(out->layers, base->layers, (size_t)cfg->layers * sizeof *out->layers);
    /* the matrices to be quantized are ours, not the base's views: clear
     * them all first, so that a failure halfway frees only what exists */
    for (int l = 0; l < cfg->layers; l++) {
        struct dy_llm_layer *q = &out->layers[l];
        q->expert_gate_up = q->expert_down = (dy_buf){ 0 };
        if (out->mat_dtype != base->dtype)
            q->qkv = q->o = q->gate_up = q->down = q->shared_gate_up = q->shared_down = (dy_buf){ 0 };
    }
    if (out->mat_dtype != base->dtype)
        out->lm_head = (dy_buf){ 0 };
    out->bytes = base->bytes; /* each quantized matrix replaces its base one below */
    size_t h = (size_t)cfg->hidden, qd = (size_t)cfg->heads * cfg->head_dim;
    size_t kvd = (size_t)cfg->kv_heads * cfg->head_dim, ffn = (size_t)cfg->moe_ffn;
    size_t inter = (size_t)cfg->intermediate, shared = (size_t)cfg->shared_ffn;
    /* the largest matrix read at once: the lm_head, a dense MLP, an expert */
    size_t biggest = (size_t)cfg->vocab * h, caps[5] = { 0 };
    size_t cands[] = { (qd + 2 * kvd) * h, 2 * inter * h, 2 * ffn * h, 2 * shared * h };
    for (size_t i = 0; i < sizeof cands / sizeof cands[0]; i++)
        biggest = cands[i] > biggest ? cands[i] : biggest;
    struct qwork qw = { .ctx = ctx, .w = out, .err = err, .err_len = err_len };
    struct dy_qformat widest = f->quant;
    int *bits = NULL, st;
    if ((st = grow(&qw.raw, &caps[0], biggest * dy_dtype_size(base->dtype))) ||
        (st = grow((void **)&qw.f32, &caps[1], biggest * sizeof(float))) ||
        (st = grow(&qw.q, &caps[2], dy_quant_q_bytes(&widest, 1, biggest) + 1)) ||
        (st = grow((void **)&qw.scale, &caps[3], (biggest + 1) * sizeof(float))) ||
        (st = grow((void **)&qw.zero, &caps[4], biggest + 1)))
        goto out;
    enum dy_dtype bt = base->dtype;
    if (f->mopeq_bits > 0) {
        if (!cfg->experts) {
            snprintf(err, err_len, "--weight-dtype mopeq:%g quantizes experts: %s is a dense model",
                     f->mopeq_bits, cfg->name);
            st = DY_E_UNSUPPORTED;
            goto out;
        }
        bits = malloc((size_t)cfg->layers * cfg->experts * sizeof *bits);
        if (!bits || (st = choose_expert_bits(&qw, cfg, base, f, bits))) {
            st = bits ? st : DY_E_NOMEM;
            goto out;
        }
        if (!(out->expert_bits = bits_map(cfg, bits))) {
            st = DY_E_NOMEM;
            goto out;
        }
    } else {
        if ((st = quantize_planes(&qw, base->lm_head, bt, 1, (size_t)cfg->vocab, h, &f->quant, NULL,
                                  &out->lm_head, &out->lm_head_q)))
            goto out;
        if (cfg->tie_embeddings) /* its base is the embedding, which stays */
            out->bytes += (uint64_t)cfg->vocab * h * dy_dtype_size(bt);
    }
    for (int l = 0; l < cfg->layers; l++) {
        const struct dy_llm_layer *b = &base->layers[l];
        struct dy_llm_layer *q = &out->layers[l];
        if (f->mopeq_bits <= 0) {
            if ((st = quantize_planes(&qw, b->qkv, bt, 1, qd + 2 * kvd, h, &f->quant, NULL, &q->qkv, &q->qkv_q)) ||
                (st = quantize_planes(&qw, b->o, bt, 1, h, qd, &f->quant, NULL, &q->o, &q->o_q)) ||
                (!cfg->experts &&
                 ((st = quantize_planes(&qw, b->gate_up, bt, 1, 2 * inter, h, &f->quant, NULL, &q->gate_up,
                                        &q->gate_up_q)) ||
                  (st = quantize_planes(&qw, b->down, bt, 1, h, inter, &f->quant, NULL, &q->down, &q->down_q)))) ||
                (shared &&
                 ((st = quantize_planes(&qw, b->shared_gate_up, bt, 1, 2 * shared, h, &f->quant, NULL,
                                        &q->shared_gate_up, &q->shared_gate_up_q)) ||
                  (st = quantize_planes(&qw, b->shared_down, bt, 1, h, shared, &f->quant, NULL, &q->shared_down,
                                        &q->shared_down_q)))))
                goto out;
        }
        if (cfg->experts) {
            const int *lb = bits ? bits + (size_t)l * cfg->experts : NULL;
            if ((st = quantize_planes(&qw, b->expert_gate_up, bt, cfg->experts, 2 * ffn, h, &f->quant, lb,
                                      &q->expert_gate_up, &q->expert_gate_up_q)) ||
                (st = quantize_planes(&qw, b->expert_down, bt, cfg->experts, h, ffn, &f->quant, lb,
                                      &q->expert_down, &q->expert_down_q)))
                goto out;
        }
    }
out:
    free(qw.raw);
    free(qw.f32);
    free(qw.q);
    free(qw.scale);
    free(qw.zero);
    free(bits);
    if (st != DY_OK) {
        if (!err[0])
            snprintf(err, err_len, "quantizing %s: %s", cfg->name, dy_strerror(st));
        dy_llm_weights_free(ctx, out);
    }
    return st;
}
