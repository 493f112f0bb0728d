/* LLM weights on the device: random from fill_random, or from a checkpoint.
 * q/k/v and gate/up are stacked into one matrix each so a layer runs two
 * fewer GEMMs; checkpoints are written into the stacked rows. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm.h"

static int q_dim(const struct dy_model_config *c) { return c->heads * c->head_dim; }
static int kv_dim(const struct dy_model_config *c) { return c->kv_heads * c->head_dim; }
static int qkv_rows(const struct dy_model_config *c) { return q_dim(c) + 2 * kv_dim(c); }

static int alloc_tensor(dy_ctx *ctx, struct dy_llm_weights *w, size_t elements, dy_buf *out)
{
    size_t bytes = elements * dy_dtype_size(w->dtype);
    int st = dy_buf_alloc(ctx, bytes, out);
    if (st == DY_OK)
        w->bytes += bytes;
    return st;
}

static int alloc_mlp(dy_ctx *ctx, const struct dy_model_config *cfg, struct dy_llm_weights *w,
                     struct dy_llm_layer *l)
{
    size_t h = (size_t)cfg->hidden, inter = (size_t)cfg->intermediate;
    size_t e = (size_t)cfg->experts, ffn = (size_t)cfg->moe_ffn, shared = (size_t)cfg->shared_ffn;
    int st;
    if (!cfg->experts) {
        if ((st = alloc_tensor(ctx, w, 2 * inter * h, &l->gate_up)) ||
            (st = alloc_tensor(ctx, w, h * inter, &l->down)))
            return st;
        return DY_OK;
    }
    if ((st = alloc_tensor(ctx, w, e * h, &l->router)) ||
        (st = alloc_tensor(ctx, w, e * 2 * ffn * h, &l->expert_gate_up)) ||
        (st = alloc_tensor(ctx, w, e * h * ffn, &l->expert_down)))
        return st;
    if (shared &&
        ((st = alloc_tensor(ctx, w, 2 * shared * h, &l->shared_gate_up)) ||
         (st = alloc_tensor(ctx, w, h * shared, &l->shared_down)) ||
         (st = alloc_tensor(ctx, w, h, &l->shared_gate))))
        return st;
    return DY_OK;
}

/* Elements of q_norm and k_norm. */
static size_t qk_norm_len(const struct dy_model_config *cfg, bool k)
{
    if (cfg->qk_norm == DY_QK_NORM_HEAD)
        return (size_t)cfg->head_dim;
    if (cfg->qk_norm == DY_QK_NORM_WHOLE)
        return (size_t)(k ? kv_dim(cfg) : q_dim(cfg));
    return 0;
}

static int alloc_all(dy_ctx *ctx, const struct dy_model_config *cfg, struct dy_llm_weights *w)
{
    int st;
    size_t h = (size_t)cfg->hidden;
    w->layers = calloc((size_t)cfg->layers, sizeof *w->layers);
    if (!w->layers)
        return DY_E_NOMEM;
    w->layer_count = cfg->layers;
    if ((st = alloc_tensor(ctx, w, (size_t)cfg->vocab * h, &w->embed)) ||
        (st = alloc_tensor(ctx, w, h, &w->final_norm)))
        return st;
    if (cfg->tie_embeddings)
        w->lm_head = w->embed;
    else if ((st = alloc_tensor(ctx, w, (size_t)cfg->vocab * h, &w->lm_head)))
        return st;
    for (int i = 0; i < cfg->layers; i++) {
        struct dy_llm_layer *l = &w->layers[i];
        if ((st = alloc_tensor(ctx, w, h, &l->attn_norm)) ||
            (st = alloc_tensor(ctx, w, (size_t)qkv_rows(cfg) * h, &l->qkv)) ||
            (cfg->qkv_bias && (st = alloc_tensor(ctx, w, (size_t)qkv_rows(cfg), &l->qkv_bias))) ||
            (st = alloc_tensor(ctx, w, h * (size_t)q_dim(cfg), &l->o)) ||
            (cfg->o_bias && (st = alloc_tensor(ctx, w, h, &l->o_bias))) ||
            (cfg->qk_norm && (st = alloc_tensor(ctx, w, qk_norm_len(cfg, false), &l->q_norm))) ||
            (cfg->qk_norm && (st = alloc_tensor(ctx, w, qk_norm_len(cfg, true), &l->k_norm))) ||
            (st = alloc_tensor(ctx, w, h, &l->mlp_norm)) ||
            (st = alloc_mlp(ctx, cfg, w, l)))
            return st;
    }
    return DY_OK;
}

static void free_quant(dy_ctx *ctx, struct dy_quant *q)
{
    dy_buf_free(ctx, &q->scale);
    dy_buf_free(ctx, &q->zero);
}

void dy_llm_weights_free(dy_ctx *ctx, struct dy_llm_weights *w)
{
    if (w->lm_head.h != w->embed.h && (!w->borrowed || w->mat_dtype != w->dtype))
        dy_buf_free(ctx, &w->lm_head);
    free_quant(ctx, &w->lm_head_q);
    if (!w->borrowed) {
        dy_buf_free(ctx, &w->embed);
        dy_buf_free(ctx, &w->final_norm);
    }
    for (int i = 0; i < w->layer_count && w->layers; i++) {
        struct dy_llm_layer *l = &w->layers[i];
        dy_buf *mats[] = { &l->qkv, &l->o, &l->gate_up, &l->down, &l->expert_gate_up,
                           &l->expert_down, &l->shared_gate_up, &l->shared_down };
        dy_buf *vecs[] = { &l->attn_norm, &l->qkv_bias, &l->o_bias, &l->q_norm, &l->k_norm,
                           &l->mlp_norm, &l->router, &l->shared_gate };
        struct dy_quant *scales[] = { &l->qkv_q, &l->o_q, &l->gate_up_q, &l->down_q,
                                      &l->expert_gate_up_q, &l->expert_down_q,
                                      &l->shared_gate_up_q, &l->shared_down_q };
        /* borrowed weights own only the matrices they quantized */
        bool expert_owned = !w->borrowed || w->expert_dtype != w->dtype;
        bool mat_owned = !w->borrowed || w->mat_dtype != w->dtype;
        for (size_t b = 0; b < sizeof mats / sizeof mats[0]; b++) {
            bool expert = mats[b] == &l->expert_gate_up || mats[b] == &l->expert_down;
            if (expert ? expert_owned : mat_owned)
                dy_buf_free(ctx, mats[b]);
            free_quant(ctx, scales[b]);
        }
        for (size_t b = 0; b < sizeof vecs / sizeof vecs[0] && !w->borrowed; b++)
            dy_buf_free(ctx, vecs[b]);
    }
    free(w->layers);
    free(w->expert_bits);
    memset(w, 0, sizeof *w);
}

/* One stream per tensor, so that truncating the model (--layers) keeps the
 * weights of the layers that remain. */
static int fill(dy_ctx *ctx, const struct dy_llm_weights *w, dy_buf dst, size_t count,
                uint64_t seed, uint64_t stream, float scale, float offset)
{
    struct dy_fill_random_desc d = {
        .dst = dst, .count = count, .dtype = w->dtype, .seed = seed,
        .stream = stream, .scale = scale, .offset = offset,
    };
    return dy_fill_random(ctx, &d);
}

static float fan_in_scale(int fan_in)
{
    /* uniform(-s, s) with unit output variance for unit-variance inputs */
    return sqrtf(3.0f / (float)fan_in);
}

enum { STREAM_EMBED = 1, STREAM_FINAL_NORM, STREAM_LM_HEAD, STREAM_LAYER0 = 16 };

/* The MoE tensors of one layer: streams s + 8 .. s + 13 of the layer's 16. */
static int fill_moe(dy_ctx *ctx, const struct dy_model_config *cfg, const struct dy_llm_weights *w,
                    const struct dy_llm_layer *l, uint64_t seed, uint64_t s)
{
    size_t h = (size_t)cfg->hidden, e = (size_t)cfg->experts, ffn = (size_t)cfg->moe_ffn;
    size_t shared = (size_t)cfg->shared_ffn;
    int st;
    if ((st = fill(ctx, w, l->router, e * h, seed, s + 8, fan_in_scale(cfg->hidden), 0.0f)) ||
        (st = fill(ctx, w, l->expert_gate_up, e * 2 * ffn * h, seed, s + 9,
                   fan_in_scale(cfg->hidden), 0.0f)) ||
        (st = fill(ctx, w, l->expert_down, e * h * ffn, seed, s + 10, fan_in_scale(cfg->moe_ffn),
                   0.0f)))
        return st;
    if (shared &&
        ((st = fill(ctx, w, l->shared_gate_up, 2 * shared * h, seed, s + 11,
                    fan_in_scale(cfg->hidden), 0.0f)) ||
         (st = fill(ctx, w, l->shared_down, h * shared, seed, s + 12,
                    fan_in_scale(cfg->shared_ffn), 0.0f)) ||
         (st = fill(ctx, w, l->shared_gate, h, seed, s + 13, fan_in_scale(cfg->hidden), 0.0f))))
        return st;
    return DY_OK;
}

int dy_llm_weights_random(dy_ctx *ctx, const struct dy_model_config *cfg, enum dy_dtype dtype,
                          uint64_t seed, struct dy_llm_weights *w)
{
    memset(w, 0, sizeof *w);
    w->dtype = w->mat_dtype = w->expert_dtype = dtype;
    int st = alloc_all(ctx, cfg, w);
    if (st != DY_OK)
        goto fail;
    size_t h = (size_t)cfg->hidden, inter = (size_t)cfg->intermediate;
    if ((st = fill(ctx, w, w->embed, (size_t)cfg->vocab * h, seed, STREAM_EMBED, 1.0f, 0.0f)) ||
        (st = fill(ctx, w, w->final_norm, h, seed, STREAM_FINAL_NORM, 0.1f, 1.0f)) ||
        (!cfg->tie_embeddings &&
         (st = fill(ctx, w, w->lm_head, (size_t)cfg->vocab * h, seed, STREAM_LM_HEAD,
                    fan_in_scale(cfg->hidden), 0.0f))))
        goto fail;
    for (int i = 0; i < cfg->layers; i++) {
        struct dy_llm_layer *l = &w->layers[i];
        uint64_t s = STREAM_LAYER0 + 16 * (uint64_t)i;
        if ((st = fill(ctx, w, l->attn_norm, h, seed, s + 0, 0.1f, 1.0f)) ||
            (st = fill(ctx, w, l->qkv, (size_t)qkv_rows(cfg) * h, seed, s + 1,
                       fan_in_scale(cfg->hidden), 0.0f)) ||
            (cfg->qkv_bias &&
             (st = fill(ctx, w, l->qkv_bias, (size_t)qkv_rows(cfg), seed, s + 2, 0.1f, 0.0f))) ||
            (st = fill(ctx, w, l->o, h * (size_t)q_dim(cfg), seed, s + 3,
                       fan_in_scale(q_dim(cfg)), 0.0f)) ||
            (cfg->o_bias && (st = fill(ctx, w, l->o_bias, h, seed, s + 7, 0.1f, 0.0f))) ||
            (st = fill(ctx, w, l->mlp_norm, h, seed, s + 4, 0.1f, 1.0f)) ||
            (cfg->qk_norm &&
             ((st = fill(ctx, w, l->q_norm, qk_norm_len(cfg, false), seed, s + 14, 0.1f, 1.0f)) ||
              (st = fill(ctx, w, l->k_norm, qk_norm_len(cfg, true), seed, s + 15, 0.1f, 1.0f)))))
            goto fail;
        if (cfg->experts)
            st = fill_moe(ctx, cfg, w, l, seed, s);
        else if ((st = fill(ctx, w, l->gate_up, 2 * inter * h, seed, s + 5,
                            fan_in_scale(cfg->hidden), 0.0f)) == DY_OK)
            st = fill(ctx, w, l->down, h * inter, seed, s + 6, fan_in_scale(cfg->intermediate), 0.0f);
        if (st != DY_OK)
            goto fail;
    }
    return DY_OK;
fail:
    dy_llm_weights_free(ctx, w);
    return st;
}

/* One tensor the model reads from a checkpoint: [rows, cols] (cols 0: a
 * vector of `rows`; planes > 0: [planes, rows, cols]), written at element
 * `off` of *dst (NULL when checking). */
struct tensor_spec {
    char name[160];
    int64_t planes, rows, cols;
    dy_buf *dst;
    size_t off;
};

typedef int (*tensor_fn)(const struct tensor_spec *t, void *arg);

static int visit(tensor_fn fn, void *arg, const char *name, int64_t rows, int64_t cols, dy_buf *dst,
                 int64_t off)
{
    struct tensor_spec t = { .rows = rows, .cols = cols, .dst = dst, .off = (size_t)off };
    snprintf(t.name, sizeof t.name, "%s", name);
    return fn(&t, arg);
}

/* Where a checkpoint keeps a layer's experts. Hub checkpoints name each
 * expert's matrices; transformers 5 saves them fused into 3-D tensors
 * (gate and up stacked as we stack them). Mixtral's block is
 * "block_sparse_moe" with w1 (gate), w3 (up), w2 (down). */
struct moe_names {
    char block[32];
    bool fused;
    const char *gate, *up, *down;
};

static struct moe_names moe_names_of(const struct dy_model_config *cfg,
                                     const struct dy_checkpoint *ck)
{
    struct moe_names n = { "mlp", false, "gate_proj", "up_proj", "down_proj" };
    if (cfg->arch == DY_ARCH_MIXTRAL &&
        (!ck || dy_checkpoint_find(ck, "model.layers.0.block_sparse_moe.gate.weight"))) {
        snprintf(n.block, sizeof n.block, "block_sparse_moe");
        n.gate = "w1", n.up = "w3", n.down = "w2";
    }
    char name[96];
    snprintf(name, sizeof name, "model.layers.0.%s.experts.gate_up_proj", n.block);
    n.fused = ck && dy_checkpoint_find(ck, name);
    return n;
}

static int moe_tensors(const struct dy_model_config *cfg, struct dy_llm_layer *l, int layer,
                       const struct moe_names *mn, tensor_fn fn, void *arg)
{
    int64_t h = cfg->hidden, e = cfg->experts, ffn = cfg->moe_ffn, shared = cfg->shared_ffn;
    char name[160];
    int st;
#define MOE(suffix, rows, cols, field, off)                                                  \
    (snprintf(name, sizeof name, "model.layers.%d.%s.%s", layer, mn->block, suffix),         \
     visit(fn, arg, name, rows, cols, l ? &l->field : NULL, off))
    if ((st = MOE("gate.weight", e, h, router, 0)))
        return st;
    if (mn->fused) {
        struct tensor_spec t = { .planes = e, .rows = 2 * ffn, .cols = h,
                                 .dst = l ? &l->expert_gate_up : NULL };
        snprintf(t.name, sizeof t.name, "model.layers.%d.%s.experts.gate_up_proj", layer, mn->block);
        if ((st = fn(&t, arg)))
            return st;
        t = (struct tensor_spec){ .planes = e, .rows = h, .cols = ffn,
                                  .dst = l ? &l->expert_down : NULL };
        snprintf(t.name, sizeof t.name, "model.layers.%d.%s.experts.down_proj", layer, mn->block);
        if ((st = fn(&t, arg)))
            return st;
    } else {
        for (int64_t j = 0; j < e; j++) {
            char suffix[96];
#define EXPERT(which, rows, cols, field, off)                                                \
    (snprintf(suffix, sizeof suffix, "experts.%lld.%s.weight", (long long)j, which),        \
     MOE(suffix, rows, cols, field, off))
            if ((st = EXPERT(mn->gate, ffn, h, expert_gate_up, j * 2 * ffn * h)) ||
                (st = EXPERT(mn->up, ffn, h, expert_gate_up, (j * 2 + 1) * ffn * h)) ||
                (st = EXPERT(mn->down, h, ffn, expert_down, j * h * ffn)))
                return st;
#undef EXPERT
        }
    }
    if (shared &&
        ((st = MOE("shared_expert.gate_proj.weight", shared, h, shared_gate_up, 0)) ||
         (st = MOE("shared_expert.up_proj.weight", shared, h, shared_gate_up, shared * h)) ||
         (st = MOE("shared_expert.down_proj.weight", h, shared, shared_down, 0)) ||
         (st = MOE("shared_expert_gate.weight", 1, h, shared_gate, 0))))
        return st;
#undef MOE
    return DY_OK;
}

/* Calls fn for every tensor the model reads, stopping at the first failure.
 * With w NULL the destinations are NULL; ck (or NULL) picks among the
 * layouts a checkpoint may use. */
static int each_tensor(const struct dy_model_config *cfg, struct dy_llm_weights *w,
                       const struct dy_checkpoint *ck, tensor_fn fn, void *arg)
{
    int64_t h = cfg->hidden, inter = cfg->intermediate, vocab = cfg->vocab;
    int64_t qd = q_dim(cfg), kvd = kv_dim(cfg);
    struct moe_names mn = moe_names_of(cfg, ck);
    int st;
    if ((st = visit(fn, arg, "model.embed_tokens.weight", vocab, h, w ? &w->embed : NULL, 0)) ||
        (st = visit(fn, arg, "model.norm.weight", h, 0, w ? &w->final_norm : NULL, 0)) ||
        (!cfg->tie_embeddings &&
         (st = visit(fn, arg, "lm_head.weight", vocab, h, w ? &w->lm_head : NULL, 0))))
        return st;
    for (int i = 0; i < cfg->layers; i++) {
        struct dy_llm_layer *l = w ? &w->layers[i] : NULL;
        char name[160];
#define LAYER(suffix, rows, cols, field, off)                                           \
        (snprintf(name, sizeof name, "model.layers.%d.%s", i, suffix),                    \
         visit(fn, arg, name, rows, cols, l ? &l->field : NULL, off))
        if ((st = LAYER("input_layernorm.weight", h, 0, attn_norm, 0)) ||
            (st = LAYER("self_attn.q_proj.weight", qd, h, qkv, 0)) ||
            (st = LAYER("self_attn.k_proj.weight", kvd, h, qkv, qd * h)) ||
            (st = LAYER("self_attn.v_proj.weight", kvd, h, qkv, (qd + kvd) * h)) ||
            (st = LAYER("self_attn.o_proj.weight", h, qd, o, 0)) ||
            (st = LAYER("post_attention_layernorm.weight", h, 0, mlp_norm, 0)))
            return st;
        if (cfg->experts)
            st = moe_tensors(cfg, l, i, &mn, fn, arg);
        else if ((st = LAYER("mlp.gate_proj.weight", inter, h, gate_up, 0)) == DY_OK &&
                 (st = LAYER("mlp.up_proj.weight", inter, h, gate_up, inter * h)) == DY_OK)
            st = LAYER("mlp.down_proj.weight", h, inter, down, 0);
        if (st != DY_OK)
            return st;
        if (cfg->qk_norm &&
            ((st = LAYER("self_attn.q_norm.weight", (int64_t)qk_norm_len(cfg, false), 0, q_norm, 0)) ||
             (st = LAYER("self_attn.k_norm.weight", (int64_t)qk_norm_len(cfg, true), 0, k_norm, 0))))
            return st;
        if (cfg->qkv_bias &&
            ((st = LAYER("self_attn.q_proj.bias", qd, 0, qkv_bias, 0)) ||
             (st = LAYER("self_attn.k_proj.bias", kvd, 0, qkv_bias, qd)) ||
             (st = LAYER("self_attn.v_proj.bias", kvd, 0, qkv_bias, qd + kvd))))
            return st;
        if (cfg->o_bias && (st = LAYER("self_attn.o_proj.bias", h, 0, o_bias, 0)))
            return st;
#undef LAYER
    }
    return DY_OK;
}

struct load_arg {
    dy_ctx *ctx;
    const struct dy_checkpoint *ck;
    const struct dy_llm_weights *w;
    char *err;
    size_t err_len;
};

/* The checkpoint's tensor for t, or NULL with the reason in err. */
static const struct dy_tensor_view *find_tensor(const struct tensor_spec *t,
                                                const struct dy_checkpoint *ck, char *err,
                                                size_t err_len)
{
    const struct dy_tensor_view *v = dy_checkpoint_find(ck, t->name);
    if (!v) {
        snprintf(err, err_len, "checkpoint has no tensor \"%s\"", t->name);
        return NULL;
    }
    int want_ndim = t->planes ? 3 : t->cols ? 2 : 1;
    int64_t want_shape[3] = { t->rows, t->cols, 0 };
    if (t->planes)
        want_shape[0] = t->planes, want_shape[1] = t->rows, want_shape[2] = t->cols;
    bool same = v->ndim == want_ndim;
    for (int d = 0; same && d < want_ndim; d++)
        same = v->shape[d] == want_shape[d];
    if (same)
        return v;
    char got[96] = "", want[64];
    size_t used = 0;
    for (int d = 0; d < v->ndim && used < sizeof got; d++)
        used += (size_t)snprintf(got + used, sizeof got - used, "%s%lld", d ? ", " : "",
                                 (long long)v->shape[d]);
    if (t->planes)
        snprintf(want, sizeof want, "%lld, %lld, %lld", (long long)t->planes, (long long)t->rows,
                 (long long)t->cols);
    else if (t->cols)
        snprintf(want, sizeof want, "%lld, %lld", (long long)t->rows, (long long)t->cols);
    else
        snprintf(want, sizeof want, "%lld", (long long)t->rows);
    snprintf(err, err_len, "%s: tensor \"%s\" has shape [%s], expected [%s]", v->file, t->name, got,
             want);
    return NULL;
}

static int check_one(const struct tensor_spec *t, void *p)
{
    struct load_arg *a = p;
    return find_tensor(t, a->ck, a->err, a->err_len) ? DY_OK : DY_E_FORMAT;
}

int dy_llm_checkpoint_check(const struct dy_model_config *cfg, const struct dy_checkpoint *ck,
                            char *err, size_t err_len)
{
    struct load_arg a = { .ck = ck, .err = err, .err_len = err_len };
    return each_tensor(cfg, NULL, ck, check_one, &a);
}

int dy_tensor_upload(dy_ctx *ctx, const struct dy_tensor_view *v, enum dy_dtype dtype, dy_buf dst)
{
    size_t esize = dy_dtype_size(dtype), count = v->bytes / dy_dtype_size(v->dtype);
    if (v->dtype == dtype)
        return dy_buf_write(ctx, dst, v->data, count * esize);
    /* convert in chunks to bound host memory */
    enum { CHUNK = 1 << 20 };
    void *tmp = malloc((size_t)CHUNK * esize);
    if (!tmp)
        return DY_E_NOMEM;
    int st = DY_OK;
    for (size_t done = 0; done < count && st == DY_OK; done += CHUNK) {
        size_t n = count - done < CHUNK ? count - done : CHUNK;
        for (size_t i = 0; i < n; i++)
            dy_store_f32(tmp, dtype, i, dy_load_f32(v->data, v->dtype, done + i));
        st = dy_buf_write(ctx, dy_buf_at(dst, done * esize), tmp, n * esize);
    }
    free(tmp);
    return st;
}

/* Copies one tensor into its destination, converting on the host. */
static int load_one(const struct tensor_spec *t, void *p)
{
    struct load_arg *a = p;
    const struct dy_tensor_view *v = find_tensor(t, a->ck, a->err, a->err_len);
    if (!v)
        return DY_E_FORMAT;
    return dy_tensor_upload(a->ctx, v, a->w->dtype,
                            dy_buf_at(*t->dst, t->off * dy_dtype_size(a->w->dtype)));
}

int dy_llm_weights_load(dy_ctx *ctx, const struct dy_model_config *cfg, enum dy_dtype dtype,
                        const struct dy_checkpoint *ck, struct dy_llm_weights *w, char *err,
                        size_t err_len)
{
    memset(w, 0, sizeof *w);
    w->dtype = w->mat_dtype = w->expert_dtype = dtype;
    int st = alloc_all(ctx, cfg, w);
    if (st != DY_OK) {
        snprintf(err, err_len, "allocating %s weights: %s", cfg->name, dy_ctx_error(ctx));
        goto fail;
    }
    struct load_arg a = { .ctx = ctx, .ck = ck, .w = w, .err = err, .err_len = err_len };
    if ((st = each_tensor(cfg, w, ck, load_one, &a))) {
        if (st != DY_E_FORMAT)
            snprintf(err, err_len, "loading %s weights: %s", cfg->name, dy_ctx_error(ctx));
        goto fail;
    }
    return DY_OK;
fail:
    dy_llm_weights_free(ctx, w);
    return st;
}
