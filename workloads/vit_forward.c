/* The ViT encoder's forward pass from backend ops. Activations f32. The
 * embedding rows are assembled with one gather: patch embeddings for every
 * image, then one CLS row after them; position embeddings are added from a
 * table gathered once per model. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "vit.h"

struct dy_vit {
    dy_ctx *ctx;
    const struct dy_vit_config *cfg;
    const struct dy_vit_weights *w;
    int max_batch, image_size, tokens, patches, batch;
    dy_buf patch_in, emb, x, xn, qkv, attn, mlp, pos_full, pos_own, ids_x, ids_pos, ids_cls,
        cls_rows, logits;
    dy_buf lora_t;              /* [rows, 3 rank]: A x of the unmerged adapters */
};

int dy_vit_tokens_of(const struct dy_vit *m)
{
    return m->tokens;
}

void dy_vit_destroy(struct dy_vit *m)
{
    if (!m)
        return;
    dy_buf *bufs[] = { &m->patch_in, &m->emb, &m->x, &m->xn, &m->qkv, &m->attn, &m->mlp,
                       &m->pos_full, &m->pos_own, &m->ids_x, &m->ids_pos, &m->ids_cls,
                       &m->cls_rows, &m->logits, &m->lora_t };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        dy_buf_free(m->ctx, bufs[i]);
    free(m);
}

/* The position table at this model's token count: the checkpoint's at its
 * own size; random weights draw a table of the right size (interpolating a
 * random table would be no more faithful). */
static int position_table(struct dy_vit *m, dy_buf *table)
{
    if (m->image_size == m->cfg->image_size) {
        *table = m->w->pos;
        return DY_OK;
    }
    if (!m->w->random)
        return DY_E_UNSUPPORTED;
    size_t count = (size_t)m->tokens * m->cfg->hidden;
    int st = dy_buf_alloc(m->ctx, count * dy_dtype_size(m->w->dtype), &m->pos_own);
    struct dy_fill_random_desc d = { .dst = m->pos_own, .count = count, .dtype = m->w->dtype,
                                     .seed = m->w->seed, .stream = 0x7604, .scale = 0.5f };
    if (st == DY_OK)
        st = dy_fill_random(m->ctx, &d);
    *table = m->pos_own;
    return st;
}

int dy_vit_create(dy_ctx *ctx, const struct dy_vit_config *cfg, const struct dy_vit_weights *w,
                  int max_batch, int image_size, struct dy_vit **out)
{
    *out = NULL;
    if (max_batch < 1 || image_size < cfg->patch || image_size % cfg->patch)
        return DY_E_INVALID;
    struct dy_vit *m = calloc(1, sizeof *m);
    if (!m)
        return DY_E_NOMEM;
    m->ctx = ctx;
    m->cfg = cfg;
    m->w = w;
    m->max_batch = max_batch;
    m->image_size = image_size;
    m->tokens = dy_vit_tokens(cfg, image_size);
    m->patches = m->tokens - 1;
    size_t rows = (size_t)max_batch * m->tokens, h = (size_t)cfg->hidden, f = sizeof(float);
    size_t patch_in = (size_t)cfg->channels * cfg->patch * cfg->patch, np = (size_t)max_batch * m->patches;
    int32_t *ids = malloc(rows * 2 * sizeof(int32_t));
    int st = ids ? DY_OK : DY_E_NOMEM;
    dy_buf pos_table;
    if (st || (st = dy_buf_alloc(ctx, np * patch_in * f, &m->patch_in)) ||
        (st = dy_buf_alloc(ctx, (np + 1) * h * f, &m->emb)) ||
        (st = dy_buf_alloc(ctx, rows * h * f, &m->x)) || (st = dy_buf_alloc(ctx, rows * h * f, &m->xn)) ||
        (st = dy_buf_alloc(ctx, rows * 3 * h * f, &m->qkv)) ||
        (st = dy_buf_alloc(ctx, rows * h * f, &m->attn)) ||
        (st = dy_buf_alloc(ctx, rows * cfg->intermediate * f, &m->mlp)) ||
        (st = dy_buf_alloc(ctx, rows * h * f, &m->pos_full)) ||
        (st = dy_buf_alloc(ctx, rows * sizeof(int32_t), &m->ids_x)) ||
        (st = dy_buf_alloc(ctx, rows * sizeof(int32_t), &m->ids_pos)) ||
        (st = dy_buf_alloc(ctx, (size_t)max_batch * sizeof(int32_t), &m->ids_cls)) ||
        (cfg->labels && ((st = dy_buf_alloc(ctx, (size_t)max_batch * h * f, &m->cls_rows)) ||
                         (st = dy_buf_alloc(ctx, (size_t)max_batch * cfg->labels * f, &m->logits)))) ||
        (w->lora_rank && !w->lora_merged &&
         (st = dy_buf_alloc(ctx, rows * 3 * (size_t)w->lora_rank * f, &m->lora_t))) ||
        (st = position_table(m, &pos_table)))
        goto done;
    /* image b's rows: the CLS row (after every patch row), then its patches */
    int32_t *ids_x = ids, *ids_pos = ids + rows;
    for (int b = 0; b < max_batch; b++)
        for (int t = 0; t < m->tokens; t++) {
            size_t r = (size_t)b * m->tokens + t;
            ids_x[r] = t == 0 ? (int32_t)np : (int32_t)((size_t)b * m->patches + t - 1);
            ids_pos[r] = t;
        }
    struct dy_convert_desc cls = { .src = w->cls, .dst = dy_buf_at(m->emb, np * h * f), .count = h,
                                   .src_dtype = w->dtype, .dst_dtype = DY_F32 };
    struct dy_gather_rows_desc pos = {
        .table = pos_table, .ids = m->ids_pos, .out = m->pos_full, .rows = (int)rows,
        .cols = (int)h, .table_stride = (int)h, .out_stride = (int)h,
        .table_dtype = w->dtype, .out_dtype = DY_F32,
    };
    if ((st = dy_buf_write(ctx, m->ids_x, ids_x, rows * sizeof(int32_t))) ||
        (st = dy_buf_write(ctx, m->ids_pos, ids_pos, rows * sizeof(int32_t))) ||
        (st = dy_convert(ctx, &cls)) || (st = dy_gather_rows(ctx, &pos)))
        goto done;
    for (int b = 0; b < max_batch; b++)
        ids[b] = b * m->tokens;
    st = dy_buf_write(ctx, m->ids_cls, ids, (size_t)max_batch * sizeof(int32_t));
done:
    free(ids);
    if (st != DY_OK)
        dy_vit_destroy(m);
    else
        *out = m;
    return st;
}

int dy_vit_set_images(struct dy_vit *m, const float *pixels, int batch)
{
    const struct dy_vit_config *c = m->cfg;
    if (batch < 1 || batch > m->max_batch)
        return DY_E_INVALID;
    int side = m->image_size / c->patch, p = c->patch, s = m->image_size;
    size_t patch_in = (size_t)c->channels * p * p;
    float *patches = malloc((size_t)batch * m->patches * patch_in * sizeof(float));
    if (!patches)
        return DY_E_NOMEM;
    /* rows are patches in raster order, columns (channel, y, x) as the
     * convolution's weight is laid out */
    for (int b = 0; b < batch; b++)
        for (int py = 0; py < side; py++)
            for (int px = 0; px < side; px++) {
                float *row = patches + ((size_t)b * m->patches + (size_t)py * side + px) * patch_in;
                for (int ch = 0; ch < c->channels; ch++)
                    for (int ky = 0; ky < p; ky++)
                        memcpy(row + ((size_t)ch * p + ky) * p,
                               pixels + (((size_t)b * c->channels + ch) * s + (size_t)py * p + ky) * s +
                                   (size_t)px * p,
                               (size_t)p * sizeof(float));
            }
    int st = dy_buf_write(m->ctx, m->patch_in, patches, (size_t)batch * m->patches * patch_in * sizeof(float));
    free(patches);
    if (st == DY_OK)
        m->batch = batch;
    return st;
}

static int linear(struct dy_vit *m, dy_buf a, int k, dy_buf w, dy_buf bias, dy_buf c, int n,
                  int rows, float beta)
{
    struct dy_gemm_desc d = {
        .a = a, .b = w, .c = c, .bias = bias, .m = rows, .n = n, .k = k, .lda = k, .ldb = k,
        .ldc = n, .a_dtype = DY_F32, .b_dtype = m->w->dtype, .c_dtype = DY_F32, .beta = beta,
    };
    return dy_gemm(m->ctx, &d);
}

/* c[rows, n] (ldc) += a[rows, k] (lda) . b[n, k]^T, for the adapters */
static int gemm_acc(struct dy_vit *m, dy_buf a, int lda, dy_buf b, dy_buf c, int ldc, int rows,
                    int n, int k)
{
    struct dy_gemm_desc d = {
        .a = a, .b = b, .c = c, .m = rows, .n = n, .k = k, .lda = lda, .ldb = k, .ldc = ldc,
        .a_dtype = DY_F32, .b_dtype = m->w->dtype, .c_dtype = DY_F32, .beta = 1.0f,
    };
    return dy_gemm(m->ctx, &d);
}

/* Unmerged LoRA on q, k and v: qkv += B (A xn), one GEMM for the three A's. */
static int lora_qkv(struct dy_vit *m, const struct dy_vit_layer *l, int rows)
{
    int h = m->cfg->hidden, r = m->w->lora_rank, st;
    size_t f = sizeof(float);
    dy_buf none = { 0 }, bs[3] = { l->lora_b_q, l->lora_b_k, l->lora_b_v };
    if ((st = linear(m, m->xn, h, l->lora_a_qkv, none, m->lora_t, 3 * r, rows, 0.0f)))
        return st;
    for (int j = 0; j < 3 && st == DY_OK; j++)
        st = gemm_acc(m, dy_buf_at(m->lora_t, (size_t)j * r * f), 3 * r, bs[j],
                      dy_buf_at(m->qkv, (size_t)j * h * f), 3 * h, rows, h, r);
    return st;
}

/* ... and on the output projection: x += B (A attn). */
static int lora_o(struct dy_vit *m, const struct dy_vit_layer *l, int rows)
{
    int h = m->cfg->hidden, r = m->w->lora_rank, st;
    dy_buf none = { 0 };
    if ((st = linear(m, m->attn, h, l->lora_a_o, none, m->lora_t, r, rows, 0.0f)))
        return st;
    return gemm_acc(m, m->lora_t, r, l->lora_b_o, m->x, h, rows, h, r);
}

static int layer_norm(struct dy_vit *m, dy_buf x, dy_buf w, dy_buf b, dy_buf out, int rows)
{
    int h = m->cfg->hidden;
    struct dy_norm_desc d = { .kind = DY_NORM_LAYER, .x = x, .weight = w, .bias = b, .out = out,
                              .rows = rows, .dim = h, .x_stride = h, .out_stride = h,
                              .eps = m->cfg->norm_eps, .dtype = DY_F32, .weight_dtype = m->w->dtype };
    return dy_norm(m->ctx, &d);
}

static int encoder_layer(struct dy_vit *m, const struct dy_vit_layer *l, int rows)
{
    const struct dy_vit_config *c = m->cfg;
    int h = c->hidden, hd = h / c->heads, st;
    struct dy_attention_prefill_desc att = {
        .q = m->qkv, .k = dy_buf_at(m->qkv, (size_t)h * sizeof(float)),
        .v = dy_buf_at(m->qkv, (size_t)2 * h * sizeof(float)), .out = m->attn,
        .batch = m->batch, .seq_len = m->tokens, .heads = c->heads, .kv_heads = c->heads,
        .head_dim = hd, .q_stride = 3 * h, .kv_stride = 3 * h, .out_stride = h,
        .scale = 1.0f / sqrtf((float)hd), .causal = false, .dtype = DY_F32,
        .compute_dtype = m->w->dtype,
    };
    struct dy_eltwise_desc gelu = { .op = DY_ELT_GELU, .a = m->mlp, .out = m->mlp, .rows = rows,
                                    .cols = c->intermediate, .a_stride = c->intermediate,
                                    .out_stride = c->intermediate, .dtype = DY_F32 };
    bool lora = m->w->lora_rank && !m->w->lora_merged;
    if ((st = layer_norm(m, m->x, l->ln1_w, l->ln1_b, m->xn, rows)) ||
        (st = linear(m, m->xn, h, l->qkv, l->qkv_b, m->qkv, 3 * h, rows, 0.0f)) ||
        (lora && (st = lora_qkv(m, l, rows))) ||
        (st = dy_attention_prefill(m->ctx, &att)) ||
        (st = linear(m, m->attn, h, l->o, l->o_b, m->x, h, rows, 1.0f)) ||
        (lora && (st = lora_o(m, l, rows))) ||
        (st = layer_norm(m, m->x, l->ln2_w, l->ln2_b, m->xn, rows)) ||
        (st = linear(m, m->xn, h, l->fc1, l->fc1_b, m->mlp, c->intermediate, rows, 0.0f)) ||
        (st = dy_eltwise(m->ctx, &gelu)))
        return st;
    return linear(m, m->mlp, c->intermediate, l->fc2, l->fc2_b, m->x, h, rows, 1.0f);
}

int dy_vit_forward(struct dy_vit *m)
{
    const struct dy_vit_config *c = m->cfg;
    int h = c->hidden, rows = m->batch * m->tokens, st;
    int patch_in = c->channels * c->patch * c->patch;
    if (m->batch < 1)
        return DY_E_INVALID;
    struct dy_gather_rows_desc assemble = {
        .table = m->emb, .ids = m->ids_x, .out = m->x, .rows = rows, .cols = h,
        .table_stride = h, .out_stride = h, .table_dtype = DY_F32, .out_dtype = DY_F32,
    };
    struct dy_eltwise_desc add_pos = { .op = DY_ELT_ADD, .a = m->x, .b = m->pos_full, .out = m->x,
                                       .rows = rows, .cols = h, .a_stride = h, .b_stride = h,
                                       .out_stride = h, .dtype = DY_F32 };
    if ((st = linear(m, m->patch_in, patch_in, m->w->patch_w, m->w->patch_b, m->emb, h,
                     m->batch * m->patches, 0.0f)) ||
        (st = dy_gather_rows(m->ctx, &assemble)) || (st = dy_eltwise(m->ctx, &add_pos)))
        return st;
    for (int i = 0; i < c->layers && st == DY_OK; i++)
        st = encoder_layer(m, &m->w->layers[i], rows);
    if (st || (st = layer_norm(m, m->x, m->w->final_w, m->w->final_b, m->xn, rows)) || !c->labels)
        return st;
    struct dy_gather_rows_desc cls = {
        .table = m->xn, .ids = m->ids_cls, .out = m->cls_rows, .rows = m->batch, .cols = h,
        .table_stride = h, .out_stride = h, .table_dtype = DY_F32, .out_dtype = DY_F32,
    };
    if ((st = dy_gather_rows(m->ctx, &cls)))
        return st;
    return linear(m, m->cls_rows, h, m->w->head_w, m->w->head_b, m->logits, c->labels, m->batch, 0.0f);
}

int dy_vit_read_hidden(struct dy_vit *m, float *out)
{
    return dy_buf_read(m->ctx, m->xn, out, (size_t)m->batch * m->tokens * m->cfg->hidden * sizeof(float));
}
