/* ViT weights: random from fill_random, or from a Hugging Face checkpoint
 * (ViTModel without a prefix, ViTForImageClassification under "vit.").
 * q/k/v are stacked into one [3 hidden, hidden] matrix, as in the LLM. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vit_internal.h"

int dy_vit_tokens(const struct dy_vit_config *c, int image_size)
{
    int side = image_size / c->patch;
    return side * side + 1;
}

uint64_t dy_vit_param_count(const struct dy_vit_config *c)
{
    uint64_t h = (uint64_t)c->hidden, in = (uint64_t)c->intermediate;
    uint64_t patch_in = (uint64_t)c->channels * c->patch * c->patch;
    uint64_t layer = 4 * h * h + 4 * h + 2 * h * in + in + h + 4 * h;
    return h * patch_in + h + h + (uint64_t)dy_vit_tokens(c, c->image_size) * h +
           c->layers * layer + 2 * h + (c->labels ? (uint64_t)c->labels * (h + 1) : 0);
}

double dy_vit_flops(const struct dy_vit_config *c, const struct dy_vit_weights *w, int image_size)
{
    double t = dy_vit_tokens(c, image_size), h = c->hidden, in = c->intermediate;
    double patches = t - 1, patch_in = (double)c->channels * c->patch * c->patch;
    /* q/k/v, o, the MLP; attention scores and the weighted sum over t keys */
    double layer = t * (2 * h * 3 * h + 2 * h * h + 4 * h * in) + 4 * t * t * h;
    double adapters = 0;
    /* A x then B (A x) per adapted projection: q, k, v and o take 2 (h r +
     * r h) each, fc1 and fc2 2 (h r + r in) each */
    for (int i = 0; i < w->layer_count; i++)
        adapters += t * (16 * h * w->layers[i].lora_rank_attn +
                         4 * (h + in) * w->layers[i].lora_rank_mlp);
    return 2 * patches * patch_in * h + c->layers * layer + adapters;
}

int dy_vit_alloc_tensor(dy_ctx *ctx, struct dy_vit_weights *w, size_t elements, dy_buf *out)
{
    size_t bytes = elements * dy_dtype_size(w->dtype);
    int st = dy_buf_alloc(ctx, bytes, out);
    if (st == DY_OK)
        w->bytes += bytes;
    return st;
}

void dy_vit_free_tensor(dy_ctx *ctx, struct dy_vit_weights *w, dy_buf *buf)
{
    if (buf->h)
        w->bytes -= buf->h->bytes;
    dy_buf_free(ctx, buf);
}

static int alloc_all(dy_ctx *ctx, const struct dy_vit_config *c, struct dy_vit_weights *w)
{
    size_t h = (size_t)c->hidden, in = (size_t)c->intermediate;
    size_t patch_in = (size_t)c->channels * c->patch * c->patch;
    int st;
    w->layers = calloc((size_t)c->layers, sizeof *w->layers);
    if (!w->layers)
        return DY_E_NOMEM;
    w->layer_count = c->layers;
#define ALLOC(count, dst) dy_vit_alloc_tensor(ctx, w, count, dst)
    if ((st = ALLOC(h * patch_in, &w->patch_w)) || (st = ALLOC(h, &w->patch_b)) ||
        (st = ALLOC(h, &w->cls)) ||
        (st = ALLOC((size_t)dy_vit_tokens(c, c->image_size) * h, &w->pos)) ||
        (st = ALLOC(h, &w->final_w)) || (st = ALLOC(h, &w->final_b)))
        return st;
    if (c->labels && ((st = ALLOC((size_t)c->labels * h, &w->head_w)) ||
                      (st = ALLOC((size_t)c->labels, &w->head_b))))
        return st;
    for (int i = 0; i < c->layers; i++) {
        struct dy_vit_layer *l = &w->layers[i];
        if ((st = ALLOC(h, &l->ln1_w)) || (st = ALLOC(h, &l->ln1_b)) ||
            (st = ALLOC(3 * h * h, &l->qkv)) || (st = ALLOC(3 * h, &l->qkv_b)) ||
            (st = ALLOC(h * h, &l->o)) || (st = ALLOC(h, &l->o_b)) ||
            (st = ALLOC(h, &l->ln2_w)) || (st = ALLOC(h, &l->ln2_b)) ||
            (st = ALLOC(in * h, &l->fc1)) || (st = ALLOC(in, &l->fc1_b)) ||
            (st = ALLOC(h * in, &l->fc2)) || (st = ALLOC(h, &l->fc2_b)))
            return st;
    }
#undef ALLOC
    return DY_OK;
}

void dy_vit_weights_free(dy_ctx *ctx, struct dy_vit_weights *w)
{
    dy_buf *top[] = { &w->patch_w, &w->patch_b, &w->cls, &w->pos, &w->final_w, &w->final_b,
                      &w->head_w, &w->head_b };
    for (size_t i = 0; i < sizeof top / sizeof top[0]; i++)
        dy_buf_free(ctx, top[i]);
    for (int i = 0; i < w->layer_count && w->layers; i++) {
        struct dy_vit_layer *l = &w->layers[i];
        dy_buf *bufs[] = { &l->ln1_w, &l->ln1_b, &l->qkv, &l->qkv_b, &l->o, &l->o_b,
                           &l->ln2_w, &l->ln2_b, &l->fc1, &l->fc1_b, &l->fc2, &l->fc2_b,
                           &l->lora_a_qkv, &l->lora_b_q, &l->lora_b_k, &l->lora_b_v,
                           &l->lora_a_o, &l->lora_b_o, &l->lora_a_fc1, &l->lora_b_fc1,
                           &l->lora_a_fc2, &l->lora_b_fc2 };
        for (size_t b = 0; b < sizeof bufs / sizeof bufs[0]; b++)
            dy_buf_free(ctx, bufs[b]);
    }
    free(w->layers);
    memset(w, 0, sizeof *w);
}

/* Streams 0x7600.. keep ViT weights apart from the LLM's for the same seed. */
int dy_vit_fill(dy_ctx *ctx, const struct dy_vit_weights *w, dy_buf dst, uint64_t seed,
                uint64_t stream, float scale, float offset)
{
    struct dy_fill_random_desc d = {
        .dst = dst, .count = dst.h->bytes / dy_dtype_size(w->dtype), .dtype = w->dtype,
        .seed = seed, .stream = 0x7600 + stream, .scale = scale, .offset = offset,
    };
    return dy_fill_random(ctx, &d);
}

int dy_vit_weights_random(dy_ctx *ctx, const struct dy_vit_config *c, enum dy_dtype dtype,
                          uint64_t seed, struct dy_vit_weights *w)
{
    memset(w, 0, sizeof *w);
    w->dtype = dtype;
    w->random = true;
    w->seed = seed;
    int st = alloc_all(ctx, c, w);
    float h = (float)c->hidden, in = (float)c->intermediate;
    float patch_in = (float)(c->channels * c->patch * c->patch);
    if (st || (st = dy_vit_fill(ctx, w, w->patch_w, seed, 1, sqrtf(3.0f / patch_in), 0.0f)) ||
        (st = dy_vit_fill(ctx, w, w->patch_b, seed, 2, 0.1f, 0.0f)) ||
        (st = dy_vit_fill(ctx, w, w->cls, seed, 3, 1.0f, 0.0f)) ||
        (st = dy_vit_fill(ctx, w, w->pos, seed, 4, 0.5f, 0.0f)) ||
        (st = dy_vit_fill(ctx, w, w->final_w, seed, 5, 0.1f, 1.0f)) ||
        (st = dy_vit_fill(ctx, w, w->final_b, seed, 6, 0.1f, 0.0f)) ||
        (c->labels && ((st = dy_vit_fill(ctx, w, w->head_w, seed, 7, sqrtf(3.0f / h), 0.0f)) ||
                       (st = dy_vit_fill(ctx, w, w->head_b, seed, 8, 0.1f, 0.0f)))))
        goto fail;
    for (int i = 0; i < c->layers; i++) {
        struct dy_vit_layer *l = &w->layers[i];
        uint64_t s = 16 + 16 * (uint64_t)i;
        if ((st = dy_vit_fill(ctx, w, l->ln1_w, seed, s, 0.1f, 1.0f)) ||
            (st = dy_vit_fill(ctx, w, l->ln1_b, seed, s + 1, 0.1f, 0.0f)) ||
            (st = dy_vit_fill(ctx, w, l->qkv, seed, s + 2, sqrtf(3.0f / h), 0.0f)) ||
            (st = dy_vit_fill(ctx, w, l->qkv_b, seed, s + 3, 0.1f, 0.0f)) ||
            (st = dy_vit_fill(ctx, w, l->o, seed, s + 4, sqrtf(3.0f / h), 0.0f)) ||
            (st = dy_vit_fill(ctx, w, l->o_b, seed, s + 5, 0.1f, 0.0f)) ||
            (st = dy_vit_fill(ctx, w, l->ln2_w, seed, s + 6, 0.1f, 1.0f)) ||
            (st = dy_vit_fill(ctx, w, l->ln2_b, seed, s + 7, 0.1f, 0.0f)) ||
            (st = dy_vit_fill(ctx, w, l->fc1, seed, s + 8, sqrtf(3.0f / h), 0.0f)) ||
            (st = dy_vit_fill(ctx, w, l->fc1_b, seed, s + 9, 0.1f, 0.0f)) ||
            (st = dy_vit_fill(ctx, w, l->fc2, seed, s + 10, sqrtf(3.0f / in), 0.0f)) ||
            (st = dy_vit_fill(ctx, w, l->fc2_b, seed, s + 11, 0.1f, 0.0f)))
            goto fail;
    }
    return DY_OK;
fail:
    dy_vit_weights_free(ctx, w);
    return st;
}

/* Loads `name` (under the checkpoint's prefix) into dst at element `off`;
 * its element count must be `count`. */
static int load(dy_ctx *ctx, const struct dy_checkpoint *ck, const char *prefix, const char *name,
                size_t count, const struct dy_vit_weights *w, dy_buf dst, size_t off, char *err,
                size_t err_len)
{
    char full[200];
    snprintf(full, sizeof full, "%s%s", prefix, name);
    const struct dy_tensor_view *t = dy_checkpoint_find(ck, full);
    if (!t) {
        snprintf(err, err_len, "checkpoint has no tensor \"%s\"", full);
        return DY_E_FORMAT;
    }
    if (t->bytes / dy_dtype_size(t->dtype) != count) {
        snprintf(err, err_len, "%s: tensor \"%s\" has %zu elements, expected %zu", t->file, full,
                 t->bytes / dy_dtype_size(t->dtype), count);
        return DY_E_FORMAT;
    }
    int st = dy_tensor_upload(ctx, t, w->dtype, dy_buf_at(dst, off * dy_dtype_size(w->dtype)));
    if (st != DY_OK)
        snprintf(err, err_len, "loading \"%s\": %s", full, dy_ctx_error(ctx));
    return st;
}

int dy_vit_weights_load(dy_ctx *ctx, const struct dy_vit_config *c, enum dy_dtype dtype,
                        const struct dy_checkpoint *ck, struct dy_vit_weights *w, char *err,
                        size_t err_len)
{
    memset(w, 0, sizeof *w);
    w->dtype = dtype;
    int st = alloc_all(ctx, c, w);
    if (st != DY_OK) {
        snprintf(err, err_len, "allocating %s weights: %s", c->name, dy_ctx_error(ctx));
        goto fail;
    }
    const char *pre = dy_checkpoint_find(ck, "vit.embeddings.cls_token") ? "vit." : "";
    size_t h = (size_t)c->hidden, in = (size_t)c->intermediate;
    size_t patch_in = (size_t)c->channels * c->patch * c->patch;
    size_t t = (size_t)dy_vit_tokens(c, c->image_size);
#define LOAD(name, count, dst, off) load(ctx, ck, pre, name, count, w, dst, off, err, err_len)
    if ((st = LOAD("embeddings.patch_embeddings.projection.weight", h * patch_in, w->patch_w, 0)) ||
        (st = LOAD("embeddings.patch_embeddings.projection.bias", h, w->patch_b, 0)) ||
        (st = LOAD("embeddings.cls_token", h, w->cls, 0)) ||
        (st = LOAD("embeddings.position_embeddings", t * h, w->pos, 0)) ||
        (st = LOAD("layernorm.weight", h, w->final_w, 0)) ||
        (st = LOAD("layernorm.bias", h, w->final_b, 0)))
        goto fail;
    if (c->labels &&
        ((st = load(ctx, ck, "", "classifier.weight", (size_t)c->labels * h, w, w->head_w, 0, err, err_len)) ||
         (st = load(ctx, ck, "", "classifier.bias", (size_t)c->labels, w, w->head_b, 0, err, err_len))))
        goto fail;
    for (int i = 0; i < c->layers; i++) {
        struct dy_vit_layer *l = &w->layers[i];
        char n[160];
#define LAYER(suffix, count, dst, off) \
        (snprintf(n, sizeof n, "encoder.layer.%d.%s", i, suffix), LOAD(n, count, dst, off))
        if ((st = LAYER("layernorm_before.weight", h, l->ln1_w, 0)) ||
            (st = LAYER("layernorm_before.bias", h, l->ln1_b, 0)) ||
            (st = LAYER("attention.attention.query.weight", h * h, l->qkv, 0)) ||
            (st = LAYER("attention.attention.key.weight", h * h, l->qkv, h * h)) ||
            (st = LAYER("attention.attention.value.weight", h * h, l->qkv, 2 * h * h)) ||
            (st = LAYER("attention.output.dense.weight", h * h, l->o, 0)) ||
            (st = LAYER("attention.output.dense.bias", h, l->o_b, 0)) ||
            (st = LAYER("layernorm_after.weight", h, l->ln2_w, 0)) ||
            (st = LAYER("layernorm_after.bias", h, l->ln2_b, 0)) ||
            (st = LAYER("intermediate.dense.weight", in * h, l->fc1, 0)) ||
            (st = LAYER("intermediate.dense.bias", in, l->fc1_b, 0)) ||
            (st = LAYER("output.dense.weight", h * in, l->fc2, 0)) ||
            (st = LAYER("output.dense.bias", h, l->fc2_b, 0)))
            goto fail;
        if (c->qkv_bias) {
            if ((st = LAYER("attention.attention.query.bias", h, l->qkv_b, 0)) ||
                (st = LAYER("attention.attention.key.bias", h, l->qkv_b, h)) ||
                (st = LAYER("attention.attention.value.bias", h, l->qkv_b, 2 * h)))
                goto fail;
        } else if ((st = dy_buf_fill(ctx, l->qkv_b, 0, 3 * h * dy_dtype_size(dtype)))) {
            goto fail;
        }
#undef LAYER
    }
#undef LOAD
    return DY_OK;
fail:
    dy_vit_weights_free(ctx, w);
    return st;
}
