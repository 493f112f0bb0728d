/* The ViT encoder's forward pass from backend ops. With f16/bf16 weights
 * every activation is in the weights' dtype: the residual stream, the
 * LayerNorms' outputs, q/k/v, attention, the MLP, as timm and transformers
 * run a model cast to bf16 (GEMMs accumulate in f32 and round once, the
 * LayerNorm computes in f32), so no backend spends passes moving f32 rows
 * its matrix units do not read; f32 weights: f32 throughout. The final
 * LayerNorm writes f32. The embedding rows are assembled with one
 * gather: patch embeddings for every image, then one CLS row after them;
 * position embeddings are added from a table gathered once per model. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "vit.h"

struct dy_vit {
    dy_ctx *ctx;
    const struct dy_vit_config *cfg;
    const struct dy_vit_weights *w;
    int max_batch, image_size, tokens, patches, batch;
    enum dy_dtype act;          /* x, pos_full, xn (but the final norm's), qkv, attn, mlp, lora_t */
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

/* PyTorch's bicubic kernel, cubic convolution with A = -0.75, for taps at
 * distance |x| <= 1 and 1 < |x| < 2. */
static double cubic_near(double x)
{
    const double a = -0.75;
    return ((a + 2) * x - (a + 3)) * x * x + 1;
}

static double cubic_far(double x)
{
    const double a = -0.75;
    return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
}

/* Patch rows of a position table [1 + from^2, h] resampled to [1 + to^2,
 * h] as torch.nn.functional.interpolate(mode="bicubic", align_corners=False,
 * size=(to, to)) does: the source of output index o is (o + 0.5) from/to -
 * 0.5, taps outside the grid clamped to its edge. Row 0 (CLS) is kept. */
static void resample_positions(const float *src, int from, float *dst, int to, int h)
{
    double scale = (double)from / to;
    memcpy(dst, src, (size_t)h * sizeof(float));
    for (int oy = 0; oy < to; oy++)
        for (int ox = 0; ox < to; ox++) {
            double sy = (oy + 0.5) * scale - 0.5, sx = (ox + 0.5) * scale - 0.5;
            double fy = floor(sy), fx = floor(sx), ty = sy - fy, tx = sx - fx;
            /* taps at floor - 1 .. floor + 2 */
            double wy[4] = { cubic_far(ty + 1), cubic_near(ty), cubic_near(1 - ty),
                             cubic_far(2 - ty) };
            double wx[4] = { cubic_far(tx + 1), cubic_near(tx), cubic_near(1 - tx),
                             cubic_far(2 - tx) };
            float *out = dst + (1 + (size_t)oy * to + ox) * h;
            for (int d = 0; d < h; d++) {
                double acc = 0;
                for (int i = 0; i < 4; i++) {
                    int y = (int)fy - 1 + i;
                    y = y < 0 ? 0 : y >= from ? from - 1 : y;
                    for (int j = 0; j < 4; j++) {
                        int x = (int)fx - 1 + j;
                        x = x < 0 ? 0 : x >= from ? from - 1 : x;
                        acc += wy[i] * wx[j] * src[(1 + (size_t)y * from + x) * h + d];
                    }
                }
                out[d] = (float)acc;
            }
        }
}

/* The position table at this model's token count: the weights' own at the
 * config's image size, else theirs interpolated on the host (once per
 * model, so it stays out of the timed forward), for a checkpoint and for
 * random weights alike, as Hugging Face's ViTEmbeddings does with
 * interpolate_pos_encoding=True. */
static int position_table(struct dy_vit *m, dy_buf *table)
{
    const struct dy_vit_config *c = m->cfg;
    if (m->image_size == c->image_size) {
        *table = m->w->pos;
        return DY_OK;
    }
    enum dy_dtype dt = m->w->dtype;
    int h = c->hidden, from = c->image_size / c->patch, to = m->image_size / c->patch;
    size_t esize = dy_dtype_size(dt), n_from = (size_t)(1 + from * from) * h;
    size_t n_to = (size_t)m->tokens * h;
    void *raw = malloc((n_from > n_to ? n_from : n_to) * esize);
    float *src = malloc(n_from * sizeof(float)), *dst = malloc(n_to * sizeof(float));
    int st = raw && src && dst ? DY_OK : DY_E_NOMEM;
    if (st == DY_OK && (st = dy_buf_read(m->ctx, m->w->pos, raw, n_from * esize)) == DY_OK) {
        for (size_t i = 0; i < n_from; i++)
            src[i] = dy_load_f32(raw, dt, i);
        resample_positions(src, from, dst, to, h);
        for (size_t i = 0; i < n_to; i++)
            dy_store_f32(raw, dt, i, dst[i]);
        if ((st = dy_buf_alloc(m->ctx, n_to * esize, &m->pos_own)) == DY_OK)
            st = dy_buf_write(m->ctx, m->pos_own, raw, n_to * esize);
    }
    free(raw);
    free(src);
    free(dst);
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
    m->act = w->dtype == DY_F16 || w->dtype == DY_BF16 ? w->dtype : DY_F32;
    size_t rows = (size_t)max_batch * m->tokens, h = (size_t)cfg->hidden, f = sizeof(float);
    size_t e = dy_dtype_size(m->act);
    size_t patch_in = (size_t)cfg->channels * cfg->patch * cfg->patch, np = (size_t)max_batch * m->patches;
    int32_t *ids = malloc(rows * 2 * sizeof(int32_t));
    int st = ids ? DY_OK : DY_E_NOMEM;
    dy_buf pos_table;
    if (st || (st = dy_buf_alloc(ctx, np * patch_in * e, &m->patch_in)) ||
        (st = dy_buf_alloc(ctx, (np + 1) * h * e, &m->emb)) ||
        (st = dy_buf_alloc(ctx, rows * h * e, &m->x)) || (st = dy_buf_alloc(ctx, rows * h * f, &m->xn)) ||
        (st = dy_buf_alloc(ctx, rows * 3 * h * e, &m->qkv)) ||
        (st = dy_buf_alloc(ctx, rows * h * e, &m->attn)) ||
        (st = dy_buf_alloc(ctx, rows * cfg->intermediate * e, &m->mlp)) ||
        (st = dy_buf_alloc(ctx, rows * h * e, &m->pos_full)) ||
        (st = dy_buf_alloc(ctx, rows * sizeof(int32_t), &m->ids_x)) ||
        (st = dy_buf_alloc(ctx, rows * sizeof(int32_t), &m->ids_pos)) ||
        (st = dy_buf_alloc(ctx, (size_t)max_batch * sizeof(int32_t), &m->ids_cls)) ||
        (cfg->labels && ((st = dy_buf_alloc(ctx, (size_t)max_batch * h * f, &m->cls_rows)) ||
                         (st = dy_buf_alloc(ctx, (size_t)max_batch * cfg->labels * f, &m->logits)))) ||
        (w->lora_rank_max &&
         (st = dy_buf_alloc(ctx, rows * 3 * (size_t)w->lora_rank_max * e, &m->lora_t))) ||
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
    struct dy_convert_desc cls = { .src = w->cls, .dst = dy_buf_at(m->emb, np * h * e), .count = h,
                                   .src_dtype = w->dtype, .dst_dtype = m->act };
    struct dy_gather_rows_desc pos = {
        .table = pos_table, .ids = m->ids_pos, .out = m->pos_full, .rows = (int)rows,
        .cols = (int)h, .table_stride = (int)h, .out_stride = (int)h,
        .table_dtype = w->dtype, .out_dtype = m->act,
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
    /* in the activation dtype, as the patch embedding's GEMM reads them
     * (f16/bf16 rounded here, outside the timed forward and with no device
     * buffer beside them to raise the point's peak memory) */
    size_t n = (size_t)batch * m->patches * patch_in, es = dy_dtype_size(m->act);
    void *in = patches;
    if (m->act != DY_F32 && (in = malloc(n * es)))
        for (size_t i = 0; i < n; i++)
            dy_store_f32(in, m->act, i, patches[i]);
    int st = in ? dy_buf_write(m->ctx, m->patch_in, in, n * es) : DY_E_NOMEM;
    if (in != patches)
        free(in);
    free(patches);
    if (st == DY_OK)
        m->batch = batch;
    return st;
}

/* c[rows, n] (ldc) = beta c + a[rows, k] (lda) . b[n, k]^T (+ bias); A
 * and C in the activation dtype (at, ct) given */
static struct dy_gemm_desc gemm_desc(struct dy_vit *m, dy_buf a, enum dy_dtype at, int lda, dy_buf b,
                                     dy_buf bias, dy_buf c, enum dy_dtype ct, int ldc, int rows, int n, int k,
                                     float beta)
{
    return (struct dy_gemm_desc){
        .a = a, .b = b, .c = c, .bias = bias, .m = rows, .n = n, .k = k, .lda = lda, .ldb = k,
        .ldc = ldc, .a_dtype = at, .b_dtype = m->w->dtype, .c_dtype = ct, .beta = beta,
    };
}

static int gemm(struct dy_vit *m, dy_buf a, enum dy_dtype at, int lda, dy_buf b, dy_buf bias, dy_buf c,
                enum dy_dtype ct, int ldc, int rows, int n, int k, float beta)
{
    struct dy_gemm_desc d = gemm_desc(m, a, at, lda, b, bias, c, ct, ldc, rows, n, k, beta);
    return dy_gemm(m->ctx, &d);
}

/* A layer's projection, A and C in the activation dtype (beta 1: into the
 * residual stream) */
static int linear(struct dy_vit *m, dy_buf a, int k, dy_buf w, dy_buf bias, dy_buf c, int n, int rows,
                  float beta)
{
    return gemm(m, a, m->act, k, w, bias, c, m->act, n, rows, n, k, beta);
}

/* c[rows, n] (ldc) += a[rows, k] (lda) . b[n, k]^T, for the adapters */
static int gemm_acc(struct dy_vit *m, dy_buf a, int lda, dy_buf b, dy_buf c, int ldc, int rows, int n, int k)
{
    dy_buf none = { 0 };
    return gemm(m, a, m->act, lda, b, none, c, m->act, ldc, rows, n, k, 1.0f);
}

/* Unmerged LoRA on q, k and v: qkv += B (A xn), one GEMM for the three A's. */
static int lora_qkv(struct dy_vit *m, const struct dy_vit_layer *l, int rows)
{
    int h = m->cfg->hidden, r = l->lora_rank_attn, st;
    size_t e = dy_dtype_size(m->act);
    dy_buf none = { 0 }, bs[3] = { l->lora_b_q, l->lora_b_k, l->lora_b_v };
    if ((st = linear(m, m->xn, h, l->lora_a_qkv, none, m->lora_t, 3 * r, rows, 0.0f)))
        return st;
    for (int j = 0; j < 3 && st == DY_OK; j++)
        st = gemm_acc(m, dy_buf_at(m->lora_t, (size_t)j * r * e), 3 * r, bs[j],
                      dy_buf_at(m->qkv, (size_t)j * h * e), 3 * h, rows, h, r);
    return st;
}

/* ... and on one other projection from k to n features: c += B (A a),
 * into the projection's output (o and fc2: the residual stream; fc1: before
 * the GELU). */
static int lora_proj(struct dy_vit *m, dy_buf a, int k, dy_buf lora_a, dy_buf lora_b, int rank,
                     dy_buf c, int n, int rows)
{
    dy_buf none = { 0 };
    int st = linear(m, a, k, lora_a, none, m->lora_t, rank, rows, 0.0f);
    return st ? st : gemm_acc(m, m->lora_t, rank, lora_b, c, n, rows, n, rank);
}

/* LayerNorm of the residual stream into out, rounded to out_dtype */
static int layer_norm(struct dy_vit *m, dy_buf x, dy_buf w, dy_buf b, dy_buf out, enum dy_dtype out_dtype,
                      int rows)
{
    int h = m->cfg->hidden;
    struct dy_norm_desc d = { .kind = DY_NORM_LAYER, .x = x, .weight = w, .bias = b, .out = out,
                              .rows = rows, .dim = h, .x_stride = h, .out_stride = h,
                              .eps = m->cfg->norm_eps, .dtype = m->act, .weight_dtype = m->w->dtype,
                              .out_dtype = out_dtype };
    return dy_norm(m->ctx, &d);
}

static int encoder_layer(struct dy_vit *m, const struct dy_vit_layer *l, int rows)
{
    const struct dy_vit_config *c = m->cfg;
    int h = c->hidden, hd = h / c->heads, st;
    enum dy_dtype act = m->act;
    size_t e = dy_dtype_size(act);
    struct dy_attention_prefill_desc att = {
        .q = m->qkv, .k = dy_buf_at(m->qkv, (size_t)h * e), .v = dy_buf_at(m->qkv, (size_t)2 * h * e),
        .out = m->attn, .batch = m->batch, .seq_len = m->tokens, .heads = c->heads, .kv_heads = c->heads,
        .head_dim = hd, .q_stride = 3 * h, .kv_stride = 3 * h, .out_stride = h,
        .scale = 1.0f / sqrtf((float)hd), .causal = false, .dtype = act, .compute_dtype = m->w->dtype,
    };
    struct dy_eltwise_desc gelu = { .op = DY_ELT_GELU, .a = m->mlp, .out = m->mlp, .rows = rows,
                                    .cols = c->intermediate, .a_stride = c->intermediate,
                                    .out_stride = c->intermediate, .dtype = act };
    int ra = l->lora_rank_attn, rm = l->lora_rank_mlp, in = c->intermediate;
    /* fc1 with its GELU in one op (a fused epilogue where the backend has
     * one), unless an adapter must add to fc1's output before the GELU */
    struct dy_gemm_desc fc1 = gemm_desc(m, m->xn, act, h, l->fc1, l->fc1_b, m->mlp, act, in, rows, in, h, 0.0f);
    fc1.act = rm ? DY_ACT_NONE : DY_ACT_GELU;
    if ((st = layer_norm(m, m->x, l->ln1_w, l->ln1_b, m->xn, act, rows)) ||
        (st = linear(m, m->xn, h, l->qkv, l->qkv_b, m->qkv, 3 * h, rows, 0.0f)) ||
        (ra && (st = lora_qkv(m, l, rows))) ||
        (st = dy_attention_prefill(m->ctx, &att)) ||
        (st = linear(m, m->attn, h, l->o, l->o_b, m->x, h, rows, 1.0f)) ||
        (ra && (st = lora_proj(m, m->attn, h, l->lora_a_o, l->lora_b_o, ra, m->x, h, rows))) ||
        (st = layer_norm(m, m->x, l->ln2_w, l->ln2_b, m->xn, act, rows)) ||
        (st = dy_gemm(m->ctx, &fc1)) ||
        (rm && ((st = lora_proj(m, m->xn, h, l->lora_a_fc1, l->lora_b_fc1, rm, m->mlp, in, rows)) ||
                (st = dy_eltwise(m->ctx, &gelu)))) ||
        (st = linear(m, m->mlp, in, l->fc2, l->fc2_b, m->x, h, rows, 1.0f)))
        return st;
    return rm ? lora_proj(m, m->mlp, in, l->lora_a_fc2, l->lora_b_fc2, rm, m->x, h, rows) : DY_OK;
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
        .table_stride = h, .out_stride = h, .table_dtype = m->act, .out_dtype = m->act,
    };
    struct dy_eltwise_desc add_pos = { .op = DY_ELT_ADD, .a = m->x, .b = m->pos_full, .out = m->x,
                                       .rows = rows, .cols = h, .a_stride = h, .b_stride = h,
                                       .out_stride = h, .dtype = m->act };
    if ((st = gemm(m, m->patch_in, m->act, patch_in, m->w->patch_w, m->w->patch_b, m->emb, m->act, h,
                   m->batch * m->patches, h, patch_in, 0.0f)) ||
        (st = dy_gather_rows(m->ctx, &assemble)) || (st = dy_eltwise(m->ctx, &add_pos)))
        return st;
    for (int i = 0; i < c->layers && st == DY_OK; i++)
        st = encoder_layer(m, &m->w->layers[i], rows);
    if (st || (st = layer_norm(m, m->x, m->w->final_w, m->w->final_b, m->xn, DY_F32, rows)) || !c->labels)
        return st;
    struct dy_gather_rows_desc cls = {
        .table = m->xn, .ids = m->ids_cls, .out = m->cls_rows, .rows = m->batch, .cols = h,
        .table_stride = h, .out_stride = h, .table_dtype = DY_F32, .out_dtype = DY_F32,
    };
    if ((st = dy_gather_rows(m->ctx, &cls)))
        return st;
    return gemm(m, m->cls_rows, DY_F32, h, m->w->head_w, m->w->head_b, m->logits, DY_F32, c->labels, m->batch,
                c->labels, h, 0.0f);
}

int dy_vit_read_hidden(struct dy_vit *m, float *out)
{
    return dy_buf_read(m->ctx, m->xn, out, (size_t)m->batch * m->tokens * m->cfg->hidden * sizeof(float));
}
