/* The decoder forward pass (Llama, Mistral, Qwen2 and the MoE models'
 * attention; moe.c has their MoE block) from backend ops.
 *
 * Activations are f32; weights and the KV cache are in their own dtypes.
 * Per layer: RMSNorm, one GEMM for q/k/v (bias for Qwen2), RoPE on q and k,
 * KV append into the paged cache, attention (causal prefill over the prompt,
 * or paged decode), the output projection accumulated into the residual
 * (beta = 1), RMSNorm, one GEMM for gate/up, SiLU-mul, and the down
 * projection accumulated into the residual. Greedy argmax stays on the
 * device, so a decode step needs no host round trip for its input.
 * Models that normalise each q and k head (Qwen3) get q, k and v as three
 * separate blocks instead of interleaved rows, so that the heads to
 * normalise are evenly strided; OLMoE normalises all of q (and k) at once,
 * in place inside the rows. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "llm_internal.h"

static int q_dim(const struct dy_model_config *c) { return c->heads * c->head_dim; }
static int kv_dim(const struct dy_model_config *c) { return c->kv_heads * c->head_dim; }

int dy_llm_create(dy_ctx *ctx, const struct dy_model_config *cfg, const struct dy_llm_weights *w,
                  const struct dy_llm_options *opt, struct dy_llm **out)
{
    *out = NULL;
    if (opt->max_batch < 1 || opt->max_prompt < 1 || opt->max_tokens < opt->max_prompt)
        return DY_E_INVALID;
    struct dy_llm *m = calloc(1, sizeof *m);
    if (!m)
        return DY_E_NOMEM;
    m->ctx = ctx;
    m->cfg = cfg;
    m->w = w;
    m->opt = *opt;
    m->use_graphs = dy_graph_available(ctx);
    m->prefill_seqs = dy_llm_prefill_seqs(opt);
    m->max_rows = dy_llm_pass_rows(opt);
    size_t rows = (size_t)m->max_rows, f = sizeof(float), i4 = sizeof(int32_t);
    size_t qkv_cols = (size_t)q_dim(cfg) + 2 * (size_t)kv_dim(cfg);
    size_t batch = (size_t)opt->max_batch;
    /* an MoE model's dense MLP buffer serves its shared expert, if any */
    size_t mlp_cols = cfg->experts ? (size_t)cfg->shared_ffn : (size_t)cfg->intermediate;
    int st = dy_llm_kv_create(m);
    if (st != DY_OK)
        goto fail;
    if ((st = dy_buf_alloc(ctx, rows * cfg->hidden * f, &m->x)) ||
        (st = dy_buf_alloc(ctx, rows * cfg->hidden * f, &m->xn)) ||
        (st = dy_buf_alloc(ctx, rows * qkv_cols * f, &m->qkv)) ||
        (st = dy_buf_alloc(ctx, rows * q_dim(cfg) * f, &m->attn)) ||
        (mlp_cols && (st = dy_buf_alloc(ctx, rows * 2 * mlp_cols * f, &m->gate_up))) ||
        (st = dy_buf_alloc(ctx, batch * cfg->hidden * f, &m->last)) ||
        (st = dy_buf_alloc(ctx, batch * cfg->vocab * f, &m->logits)) ||
        (st = dy_buf_alloc(ctx, rows * i4, &m->ids)) ||
        (st = dy_buf_alloc(ctx, batch * i4, &m->next_ids)) ||
        (st = dy_buf_alloc(ctx, rows * i4, &m->positions)) ||
        (st = dy_buf_alloc(ctx, batch * i4, &m->last_index)) ||
        (st = dy_buf_alloc(ctx, (size_t)cfg->head_dim / 2 * f, &m->inv_freq)) ||
        (cfg->experts && (st = dy_moe_create(m))))
        goto fail;
    m->host_positions = malloc(rows * i4);
    float *inv_freq = malloc((size_t)cfg->head_dim / 2 * f);
    if (!m->host_positions || !inv_freq) {
        free(inv_freq);
        st = DY_E_NOMEM;
        goto fail;
    }
    dy_rope_inv_freq(cfg, inv_freq);
    st = dy_buf_write(ctx, m->inv_freq, inv_freq, (size_t)cfg->head_dim / 2 * f);
    free(inv_freq);
    if (st != DY_OK)
        goto fail;
    *out = m;
    return DY_OK;
fail:
    dy_llm_destroy(m);
    return st;
}

void dy_llm_destroy(struct dy_llm *m)
{
    if (!m)
        return;
    dy_buf *bufs[] = { &m->x, &m->xn, &m->qkv, &m->attn, &m->gate_up, &m->last,
                       &m->logits, &m->ids, &m->next_ids, &m->positions, &m->last_index,
                       &m->inv_freq };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        dy_buf_free(m->ctx, bufs[i]);
    dy_llm_kv_destroy(m);
    dy_moe_destroy(m);
    for (int i = 0; i < m->graph_count; i++)
        dy_graph_destroy(m->ctx, m->graphs[i].graph);
    free(m->host_positions);
    free(m);
}

int dy_llm_prefill_seqs(const struct dy_llm_options *opt)
{
    return opt->prefill_seqs > 0 && opt->prefill_seqs < opt->max_batch ? opt->prefill_seqs
                                                                       : opt->max_batch;
}

int dy_llm_pass_rows(const struct dy_llm_options *opt)
{
    int rows = dy_llm_prefill_seqs(opt) * opt->max_prompt;
    return rows > opt->max_batch ? rows : opt->max_batch;
}

/* dy_llm_linear with A of dtype at and C of dtype ct; rope: DY_ACT_ROPE's
 * rotation (act is then DY_ACT_ROPE); norm: A made from the residual
 * stream by the GEMM where the backend can (else normalised into a);
 * append: C's K and V columns into the KV cache */
static int linear_act(struct dy_llm *m, dy_buf a, enum dy_dtype at, int lda, dy_buf w, const struct dy_quant *wq,
                      dy_buf bias, dy_buf c, enum dy_dtype ct, int ldc, int rows, int n, int k, float beta,
                      enum dy_gemm_act act, const struct dy_gemm_rope *rope, const struct dy_gemm_norm *norm,
                      const struct dy_gemm_append *append)
{
    enum dy_dtype bt = wq ? m->w->mat_dtype : m->w->dtype;
    struct dy_gemm_desc d = {
        .a = a, .b = w, .c = c, .bias = bias, .m = rows, .n = n, .k = k,
        .lda = lda, .ldb = k, .ldc = ldc,
        .a_dtype = at, .b_dtype = bt, .c_dtype = ct, .beta = beta, .act = act,
        .b_settled = true, /* a weight: no op of a step writes it */
    };
    if (rope)
        d.rope = *rope;
    if (norm)
        d.norm = *norm;
    if (append)
        d.append = *append;
    if (dy_dtype_quantized(bt))
        d.bq = *wq;
    return dy_gemm(m->ctx, &d);
}

static int linear_as(struct dy_llm *m, dy_buf a, enum dy_dtype at, int lda, dy_buf w, const struct dy_quant *wq,
                     dy_buf bias, dy_buf c, enum dy_dtype ct, int ldc, int rows, int n, int k, float beta)
{
    return linear_act(m, a, at, lda, w, wq, bias, c, ct, ldc, rows, n, k, beta, DY_ACT_NONE, NULL, NULL, NULL);
}

int dy_llm_linear(struct dy_llm *m, dy_buf a, int lda, dy_buf w, const struct dy_quant *wq, dy_buf bias,
                  dy_buf c, int ldc, int rows, int n, int k, float beta)
{
    return linear_as(m, a, DY_F32, lda, w, wq, bias, c, DY_F32, ldc, rows, n, k, beta);
}

int dy_llm_linear_swiglu(struct dy_llm *m, dy_buf a, int lda, dy_buf w, const struct dy_quant *wq, dy_buf c,
                         int ldc, int rows, int n, int k)
{
    dy_buf none = { 0 };
    return linear_act(m, a, DY_F32, lda, w, wq, none, c, DY_F32, ldc, rows, n, k, 0.0f, DY_ACT_SWIGLU, NULL, NULL,
                      NULL);
}

/* The pass's activation dtype: a prefill with f16/bf16 weights keeps the
 * rows between the residual stream and the GEMMs in the weights' dtype, as
 * the frameworks run such models, so no backend spends a pass rounding f32
 * rows for its matrix units; decode steps (GEMVs that read f32 rows as
 * they stream the weights) and quantized or f32 weights stay f32. */
static enum dy_dtype pass_act(const struct dy_llm *m, int prompt_len)
{
    enum dy_dtype t = m->w->dtype;
    bool half = (t == DY_F16 || t == DY_BF16) && m->w->mat_dtype == t;
    return prompt_len > 0 && half ? t : DY_F32;
}

/* The RMSNorm of `rows` f32 rows of x with weight, as a GEMM's A */
static struct dy_gemm_norm gemm_norm(const struct dy_llm *m, dy_buf x, dy_buf weight)
{
    return (struct dy_gemm_norm){ .x = x, .weight = weight, .x_stride = m->cfg->hidden, .eps = m->cfg->norm_eps,
                                  .x_dtype = DY_F32, .weight_dtype = m->w->dtype };
}

int dy_llm_rms_norm(struct dy_llm *m, dy_buf x, dy_buf weight, dy_buf out, enum dy_dtype out_dtype, int rows)
{
    struct dy_norm_desc d = {
        .kind = DY_NORM_RMS, .x = x, .weight = weight, .out = out,
        .rows = rows, .dim = m->cfg->hidden, .x_stride = m->cfg->hidden,
        .out_stride = m->cfg->hidden, .eps = m->cfg->norm_eps,
        .dtype = DY_F32, .weight_dtype = m->w->dtype, .out_dtype = out_dtype,
    };
    return dy_norm(m->ctx, &d);
}

static int qk_norm(struct dy_llm *m, dy_buf x, dy_buf weight, int rows, int dim, int stride)
{
    struct dy_norm_desc d = {
        .kind = DY_NORM_RMS, .x = x, .weight = weight, .out = x, .rows = rows, .dim = dim,
        .x_stride = stride, .out_stride = stride, .eps = m->cfg->norm_eps,
        .dtype = m->act, .weight_dtype = m->w->dtype, .out_dtype = m->act,
    };
    return dy_norm(m->ctx, &d);
}

static int rope(struct dy_llm *m, dy_buf x, int rows, int heads, int stride)
{
    struct dy_rope_desc d = {
        .x = x, .positions = m->positions, .inv_freq = m->inv_freq, .tokens = rows,
        .heads = heads, .head_dim = m->cfg->head_dim, .row_stride = stride, .dtype = m->act,
    };
    return dy_rope(m->ctx, &d);
}

/* Rows [row0, ...) of a matrix with k columns in the weights' matrix
 * format: where they start and where their scales do. */
static void matrix_rows(const struct dy_llm_weights *w, dy_buf mat, const struct dy_quant *q, int row0,
                        int k, dy_buf *rows, struct dy_quant *rows_q)
{
    *rows = dy_buf_at(mat, dy_dtype_bytes(w->mat_dtype, (size_t)row0 * k));
    *rows_q = *q;
    if (!dy_dtype_quantized(w->mat_dtype))
        return;
    size_t first = (size_t)row0 * dy_quant_row_scales(w->mat_dtype, k, q->group);
    rows_q->scale = dy_buf_at(q->scale, first * sizeof(float));
    if (q->zero.h)
        rows_q->zero = dy_buf_at(q->zero, first);
}

/* q/k/v of `rows` tokens of the residual stream, through the layer's
 * norm (in the projection where a single one reads it, else into m->xn
 * first), normalised (qk_norm) and rotated; *q, *k, *v and the strides
 * say where they are in m->qkv. */
static int project_qkv(struct dy_llm *m, const struct dy_llm_layer *l, int layer, int rows, dy_buf *q,
                       dy_buf *k, dy_buf *v, int *q_stride, int *kv_stride, bool *appended)
{
    const struct dy_model_config *c = m->cfg;
    int qd = q_dim(c), kvd = kv_dim(c), h = c->hidden, hd = c->head_dim, st;
    enum dy_dtype act = m->act;
    size_t f = dy_dtype_size(act), esize = dy_dtype_size(m->w->dtype);
    /* one token (a batch-1 step): Qwen3's q/k norms a head also run on the
     * stacked q/k/v rows, in the rotation's op */
    if (c->qk_norm != DY_QK_NORM_HEAD || rows == 1) {
        int cols = qd + 2 * kvd;
        *q = m->qkv;
        *k = dy_buf_at(m->qkv, (size_t)qd * f);
        *v = dy_buf_at(m->qkv, (size_t)(qd + kvd) * f);
        *q_stride = *kv_stride = cols;
        /* k's heads follow q's in each row: one rotation covers both, in
         * the projection's op unless a norm comes between */
        struct dy_gemm_rope rot = { .positions = m->positions, .inv_freq = m->inv_freq,
                                    .heads = c->heads + c->kv_heads, .head_dim = hd };
        struct dy_gemm_norm nrm = gemm_norm(m, m->x, l->attn_norm);
        if (c->qk_norm == DY_QK_NORM_NONE) { /* and the new K and V into the cache */
            struct dy_gemm_append kv;
            *appended = dy_llm_gemm_append(m, layer, qd, qd + kvd, &kv);
            return linear_act(m, m->xn, act, h, l->qkv, &l->qkv_q, l->qkv_bias, m->qkv, act, cols, rows, cols, h,
                              0.0f, DY_ACT_ROPE, &rot, &nrm, *appended ? &kv : NULL);
        }
        /* q and k norms (whole rows, or a head each): in the rotation's
         * op, with the append */
        if ((st = linear_act(m, m->xn, act, h, l->qkv, &l->qkv_q, l->qkv_bias, m->qkv, act, cols, rows, cols, h,
                             0.0f, DY_ACT_NONE, NULL, &nrm, NULL)))
            return st;
        struct dy_rope_desc d = {
            .x = m->qkv, .positions = m->positions, .inv_freq = m->inv_freq, .tokens = rows,
            .heads = rot.heads, .head_dim = hd, .row_stride = cols, .dtype = act,
            .norm = { .q_weight = l->q_norm, .k_weight = l->k_norm, .q_cols = qd, .k_cols = kvd,
                      .group = c->qk_norm == DY_QK_NORM_HEAD ? hd : 0, .eps = c->norm_eps,
                      .weight_dtype = m->w->dtype },
        };
        *appended = dy_llm_gemm_append(m, layer, qd, qd + kvd, &d.append);
        if (!*appended)
            d.append = (struct dy_gemm_append){ 0 };
        return dy_rope(m->ctx, &d);
    }
    *q = m->qkv;
    *k = dy_buf_at(m->qkv, (size_t)rows * qd * f);
    *v = dy_buf_at(m->qkv, (size_t)rows * (qd + kvd) * f);
    *q_stride = qd;
    *kv_stride = kvd;
    dy_buf none = { 0 }, bias = l->qkv_bias, wk, wv;
    struct dy_quant wk_q, wv_q;
    if ((st = dy_llm_rms_norm(m, m->x, l->attn_norm, m->xn, act, rows)))
        return st;
    matrix_rows(m->w, l->qkv, &l->qkv_q, qd, h, &wk, &wk_q);
    matrix_rows(m->w, l->qkv, &l->qkv_q, qd + kvd, h, &wv, &wv_q);
    if ((st = linear_as(m, m->xn, act, h, l->qkv, &l->qkv_q, bias, *q, act, qd, rows, qd, h, 0.0f)) ||
        (st = linear_as(m, m->xn, act, h, wk, &wk_q, bias.h ? dy_buf_at(bias, (size_t)qd * esize) : none, *k,
                        act, kvd, rows, kvd, h, 0.0f)) ||
        (st = linear_as(m, m->xn, act, h, wv, &wv_q, bias.h ? dy_buf_at(bias, (size_t)(qd + kvd) * esize) : none,
                        *v, act, kvd, rows, kvd, h, 0.0f)) ||
        (st = qk_norm(m, *q, l->q_norm, rows * c->heads, hd, hd)) ||
        (st = qk_norm(m, *k, l->k_norm, rows * c->kv_heads, hd, hd)) ||
        (st = rope(m, *q, rows, c->heads, qd)))
        return st;
    return rope(m, *k, rows, c->kv_heads, kvd);
}

static int attention_block(struct dy_llm *m, const struct dy_llm_layer *l, int layer, int rows,
                           int prompt_len)
{
    const struct dy_model_config *c = m->cfg;
    int qd = q_dim(c), q_stride, kv_stride;
    dy_buf q, k, v;
    float scale = 1.0f / sqrtf((float)c->head_dim);
    bool appended = false;
    int st;
    if ((st = project_qkv(m, l, layer, rows, &q, &k, &v, &q_stride, &kv_stride, &appended)) ||
        (!appended && (st = dy_llm_kv_append(m, layer, k, v, kv_stride, rows))))
        return st;
    if (prompt_len > 0) {
        struct dy_attention_prefill_desc a = {
            .q = q, .k = k, .v = v, .out = m->attn, .batch = m->fwd_seqs,
            .seq_len = prompt_len, .heads = c->heads, .kv_heads = c->kv_heads,
            .head_dim = c->head_dim, .q_stride = q_stride, .kv_stride = kv_stride,
            .out_stride = qd, .scale = scale, .causal = true, .dtype = m->act,
            .compute_dtype = m->w->dtype,
        };
        st = dy_attention_prefill(m->ctx, &a);
    } else {
        int index;
        const struct dy_kv_cache *kv = dy_llm_layer_kv(m, layer, &index);
        int room = kv->max_blocks_per_seq * kv->block_size;
        struct dy_attention_decode_desc a = {
            .q = q, .out = m->attn, .q_stride = q_stride, .out_stride = qd,
            .k_cache = dy_kv_cache_k(kv, index), .v_cache = dy_kv_cache_v(kv, index),
            .block_table = kv->block_table_dev, .context_lens = kv->context_lens_dev,
            .batch = m->batch, .heads = c->heads, .kv_heads = c->kv_heads,
            .head_dim = c->head_dim, .block_size = kv->block_size,
            .max_blocks_per_seq = kv->max_blocks_per_seq,
            .max_context = m->context_bound < room ? m->context_bound : room,
            .scale = scale, .dtype = DY_F32, .cache_dtype = kv->dtype,
            .k_scale = dy_kv_cache_k_scale(kv, index), .v_scale = dy_kv_cache_v_scale(kv, index),
            .fresh_tokens = 1, /* the append just above wrote each sequence's new token */
        };
        st = dy_attention_decode(m->ctx, &a);
    }
    if (st != DY_OK)
        return st;
    return linear_as(m, m->attn, m->act, qd, l->o, &l->o_q, l->o_bias, m->x, DY_F32, c->hidden, rows, c->hidden,
                     qd, 1.0f);
}

static int mlp_block(struct dy_llm *m, const struct dy_llm_layer *l, int layer, int rows,
                     int prompt_len)
{
    const struct dy_model_config *c = m->cfg;
    int inter = c->intermediate;
    if (c->experts)
        return dy_moe_block(m, l, layer, rows, prompt_len, true);
    dy_buf none = { 0 };
    enum dy_dtype at = m->act;
    /* gate/up and SiLU·mul as one op (the decode GEMV pairs the rows on
     * CUDA; elsewhere the GEMM, then the element-wise op in place): the
     * product lands in gate_up's first half, which down reads */
    struct dy_gemm_norm nrm = gemm_norm(m, m->x, l->mlp_norm);
    int st = linear_act(m, m->xn, at, c->hidden, l->gate_up, &l->gate_up_q, none, m->gate_up, at, 2 * inter,
                        rows, 2 * inter, c->hidden, 0.0f, DY_ACT_SWIGLU, NULL, &nrm, NULL);
    if (st != DY_OK)
        return st;
    return linear_as(m, m->gate_up, at, 2 * inter, l->down, &l->down_q, none, m->x, DY_F32, c->hidden, rows,
                     c->hidden, inter, 1.0f);
}

/* Runs `rows` tokens (ids on the device) through the model; prompt_len > 0
 * for a prefill of batch sequences of prompt_len tokens, 0 for a decode
 * step of one token per sequence. Leaves the argmax in next_ids. */
static int forward(struct dy_llm *m, dy_buf ids, int rows, int prompt_len)
{
    const struct dy_model_config *c = m->cfg;
    struct dy_gather_rows_desc embed = {
        .table = m->w->embed, .ids = ids, .out = m->x, .rows = rows, .cols = c->hidden,
        .table_stride = c->hidden, .out_stride = c->hidden,
        .table_dtype = m->w->dtype, .out_dtype = DY_F32,
    };
    int st = dy_gather_rows(m->ctx, &embed);
    m->act = pass_act(m, prompt_len);
    for (int i = 0; i < c->layers && st == DY_OK; i++) {
        if (m->profile && (st = dy_kv_profile_before(m, rows)))
            break;
        st = attention_block(m, &m->w->layers[i], i, rows, prompt_len);
        if (st == DY_OK && m->profile)
            st = dy_kv_profile_after(m, i, rows);
        if (st == DY_OK)
            st = mlp_block(m, &m->w->layers[i], i, rows, prompt_len);
    }
    if (st != DY_OK)
        return st;
    dy_buf hidden = m->x;
    if (prompt_len > 0) {
        struct dy_gather_rows_desc last = {
            .table = m->x, .ids = m->last_index, .out = m->last, .rows = m->fwd_seqs,
            .cols = c->hidden, .table_stride = c->hidden, .out_stride = c->hidden,
            .table_dtype = DY_F32, .out_dtype = DY_F32,
        };
        if ((st = dy_gather_rows(m->ctx, &last)))
            return st;
        hidden = m->last;
    }
    dy_buf none = { 0 };
    dy_buf logits = dy_buf_at(m->logits, (size_t)m->fwd_seq0 * c->vocab * sizeof(float));
    struct dy_argmax_desc am = {
        .x = logits, .out = dy_buf_at(m->next_ids, (size_t)m->fwd_seq0 * sizeof(int32_t)),
        .rows = m->fwd_seqs, .cols = c->vocab, .stride = c->vocab, .dtype = DY_F32,
    };
    struct dy_gemm_norm nrm = gemm_norm(m, hidden, m->w->final_norm);
    if ((st = linear_act(m, m->xn, DY_F32, c->hidden, m->w->lm_head, &m->w->lm_head_q, none, logits, DY_F32, c->vocab,
                         m->fwd_seqs, c->vocab, c->hidden, 0.0f, DY_ACT_NONE, NULL, &nrm, NULL)))
        return st;
    return dy_argmax(m->ctx, &am);
}

int dy_llm_prefill(struct dy_llm *m, const int32_t *tokens, int batch, int prompt_len)
{
    if (batch < 1 || batch > m->opt.max_batch || prompt_len < 1 || prompt_len > m->opt.max_prompt)
        return DY_E_INVALID;
    int st;
    m->batch = batch;
    m->step = 0;
    /* a generation's graphs may point at backend scratch that a later,
     * larger step reallocated: each generation records its own */
    for (int i = 0; i < m->graph_count; i++)
        dy_graph_destroy(m->ctx, m->graphs[i].graph);
    m->graph_count = 0;
    m->use_graphs = dy_graph_available(m->ctx);
    dy_llm_kv_reset(m);
    for (size_t i = 0; i < (size_t)batch * prompt_len; i++)
        if (tokens[i] < 0 || tokens[i] >= m->cfg->vocab)
            return DY_E_INVALID;
    /* prefill_seqs sequences per pass, so activations need not hold them all */
    for (int seq0 = 0; seq0 < batch; seq0 += m->prefill_seqs) {
        int seqs = batch - seq0 < m->prefill_seqs ? batch - seq0 : m->prefill_seqs;
        int rows = seqs * prompt_len;
        int32_t last_index[seqs];
        if ((st = dy_llm_kv_prompt(m, seq0, seqs, prompt_len)))
            return st;
        for (int b = 0; b < seqs; b++) {
            for (int t = 0; t < prompt_len; t++)
                m->host_positions[(size_t)b * prompt_len + t] = t;
            last_index[b] = b * prompt_len + prompt_len - 1;
        }
        size_t bytes = (size_t)rows * sizeof(int32_t);
        m->fwd_seq0 = seq0;
        m->fwd_seqs = seqs;
        if ((st = dy_buf_write(m->ctx, m->ids, tokens + (size_t)seq0 * prompt_len, bytes)) ||
            (st = dy_buf_write(m->ctx, m->positions, m->host_positions, bytes)) ||
            (st = dy_buf_write(m->ctx, m->last_index, last_index, (size_t)seqs * sizeof(int32_t))) ||
            (st = forward(m, m->ids, rows, prompt_len)) ||
            (st = dy_llm_kv_prompt_end(m, seq0, seqs, prompt_len)))
            return st;
    }
    return DY_OK;
}

/* The decode step's bound on the context, rounded up so that a recorded
 * step replays for many steps: attention sizes its context splits by it
 * and reads each sequence's true length on the device. */
static int context_bound(const struct dy_llm *m)
{
    enum { ROUND = 256 };
    int max_context = 0, cap = 0;
    for (int t = 0; t < m->kv_count; t++) { /* a tier's attention caps it at its room */
        const struct dy_kv_cache *kv = &m->kv[t];
        for (int b = 0; b < m->batch; b++)
            max_context = kv->context_lens[b] > max_context ? kv->context_lens[b] : max_context;
        cap = kv->max_blocks_per_seq * kv->block_size > cap ? kv->max_blocks_per_seq * kv->block_size : cap;
    }
    if (!m->use_graphs)
        return max_context;
    int bound = (max_context + ROUND - 1) / ROUND * ROUND;
    return bound < cap ? bound : cap;
}

/* The step's ops: the first time for a (batch, bound) run one by one, the
 * second recorded into a graph, then the graph replayed. A backend without
 * graphs, or a recording that fails, runs them one by one. */
static int decode_forward(struct dy_llm *m)
{
    m->context_bound = context_bound(m);
    m->fwd_seq0 = 0;
    m->fwd_seqs = m->batch;
    struct dy_step_graph *g = NULL;
    for (int i = 0; m->use_graphs && i < m->graph_count && !g; i++)
        if (m->graphs[i].batch == m->batch && m->graphs[i].bound == m->context_bound)
            g = &m->graphs[i];
    if (m->use_graphs && !g && m->graph_count < DY_STEP_GRAPHS) {
        g = &m->graphs[m->graph_count++];
        *g = (struct dy_step_graph){ .batch = m->batch, .bound = m->context_bound };
    }
    if (!g || !g->ran) {
        if (g)
            g->ran = true;
        return forward(m, m->ids, m->batch, 0);
    }
    if (!g->graph) {
        int st = dy_graph_begin(m->ctx);
        if (st == DY_OK) {
            int fst = forward(m, m->ids, m->batch, 0);
            st = dy_graph_end(m->ctx, &g->graph);
            st = fst ? fst : st;
        }
        if (st != DY_OK) { /* record nothing more; this step runs op by op */
            m->use_graphs = false;
            return forward(m, m->ids, m->batch, 0);
        }
    }
    return dy_graph_launch(m->ctx, g->graph);
}

int dy_llm_decode(struct dy_llm *m)
{
    int st = dy_llm_kv_step(m); /* evictions, the new tokens' slots and positions */
    if (st != DY_OK)
        return st;
    size_t bytes = (size_t)m->batch * sizeof(int32_t);
    if (m->cfg->experts && m->step + 1 > m->opt.max_tokens - m->opt.max_prompt)
        return DY_E_INVALID; /* more steps than the routing tables hold */
    m->step++;
    /* this step's input is the last step's argmax: copy it so argmax can
     * overwrite next_ids while the step runs */
    if ((st = dy_buf_copy(m->ctx, m->ids, m->next_ids, bytes)) ||
        (m->cfg->experts && (st = dy_moe_before_step(m))) || (st = decode_forward(m)))
        return st;
    return m->cfg->experts ? dy_moe_after_step(m) : DY_OK;
}

int dy_llm_force_tokens(struct dy_llm *m, const int32_t *tokens)
{
    for (int b = 0; b < m->batch; b++)
        if (tokens[b] < 0 || tokens[b] >= m->cfg->vocab)
            return DY_E_INVALID;
    return dy_buf_write(m->ctx, m->next_ids, tokens, (size_t)m->batch * sizeof(int32_t));
}

int dy_llm_read_tokens(struct dy_llm *m, int32_t *tokens)
{
    return dy_buf_read(m->ctx, m->next_ids, tokens, (size_t)m->batch * sizeof(int32_t));
}

int dy_llm_read_logits(struct dy_llm *m, float *logits)
{
    return dy_buf_read(m->ctx, m->logits, logits, (size_t)m->batch * m->cfg->vocab * sizeof(float));
}

uint64_t dy_llm_kv_bytes(const struct dy_llm *m)
{
    uint64_t bytes = 0;
    for (int t = 0; t < m->kv_count; t++)
        bytes += dy_kv_cache_bytes(&m->kv[t]);
    return bytes;
}

uint64_t dy_llm_decode_bytes(const struct dy_llm *m)
{
    const struct dy_model_config *c = m->cfg;
    const struct dy_llm_weights *w = m->w;
    uint64_t bytes = w->bytes;
    /* the embedding is gathered, not read whole (a tied lm_head in the
     * weights' dtype reads it) */
    if (!c->tie_embeddings || w->mat_dtype != w->dtype)
        bytes -= (uint64_t)c->vocab * c->hidden * dy_dtype_size(w->dtype);
    if (c->experts) /* only the experts routed to are read: dy_moe_stats */
        bytes -= (uint64_t)c->layers * c->experts * dy_llm_expert_bytes(w, c);
    return bytes + dy_llm_kv_read_bytes(m);
}

double dy_llm_prefill_flops(const struct dy_model_config *c, int batch, int prompt_len,
                            const struct dy_llm_options *opt)
{
    double tokens = (double)batch * prompt_len;
    double qd = q_dim(c), kvd = kv_dim(c), h = c->hidden, inter = c->intermediate;
    double mlp = 2.0 * h * 3 * inter;
    double per_token_layer = 2.0 * h * (qd + 2 * kvd) + 2.0 * qd * h;
    /* causal attention: QK^T and PV over on average (len + 1) / 2 keys */
    double attn = 4.0 * qd * (prompt_len + 1) / 2.0;
    double layers = c->layers * tokens * (per_token_layer + attn);
    for (int layer = 0; layer < c->layers; layer++) /* router, k experts, shared expert and gate */
        layers += tokens * (c->experts ? 2.0 * h * c->experts +
                                         2.0 * h * 3 * c->moe_ffn * dy_moe_layer_k(c, opt, layer) +
                                         (c->shared_ffn ? 2.0 * h * 3 * c->shared_ffn + 2.0 * h : 0.0)
                                       : mlp);
    return layers + 2.0 * batch * h * c->vocab;
}

uint64_t dy_llm_state_bytes(const struct dy_model_config *c, const struct dy_llm_options *opt)
{
    uint64_t kv = dy_llm_kv_state_bytes(c, opt);
    uint64_t rows = (uint64_t)dy_llm_pass_rows(opt);
    uint64_t mlp_cols = c->experts ? (uint64_t)c->shared_ffn : (uint64_t)c->intermediate;
    uint64_t act = rows * 4ull * (2ull * c->hidden + (uint64_t)(c->heads + 2 * c->kv_heads) * c->head_dim +
                                  (uint64_t)c->heads * c->head_dim + 2ull * mlp_cols + 4);
    uint64_t logits = (uint64_t)opt->max_batch * (c->vocab + c->hidden) * 4ull;
    return kv + act + logits + (c->experts ? dy_moe_state_bytes(c, opt) : 0);
}
