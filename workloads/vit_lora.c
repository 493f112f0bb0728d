/* LoRA adapters on the ViT: where they go (every layer at one rank, or a
 * rank map file giving each layer its own, as LangVision-LoRA-NAS and
 * PreLoRA produce), random adapters drawn from the seed, and merging them
 * into the weights on the host. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vit_internal.h"

static int lora_alloc(const struct dy_vit_config *c, bool mlp, bool merged, struct dy_vit_lora *out)
{
    memset(out, 0, sizeof *out);
    out->attn_rank = calloc(2 * (size_t)c->layers, sizeof(int));
    if (!out->attn_rank)
        return DY_E_NOMEM;
    out->mlp_rank = out->attn_rank + c->layers;
    out->layers = c->layers;
    out->mlp = mlp;
    out->merged = merged;
    return DY_OK;
}

void dy_vit_lora_free(struct dy_vit_lora *lora)
{
    free(lora->attn_rank);
    memset(lora, 0, sizeof *lora);
}

int dy_vit_lora_uniform(const struct dy_vit_config *c, int rank, bool mlp, bool merged,
                        struct dy_vit_lora *out, char *err, size_t err_len)
{
    if (rank < 1 || rank > c->hidden) {
        memset(out, 0, sizeof *out);
        snprintf(err, err_len, "LoRA rank %d is outside 1..%d (the hidden size of %s)", rank,
                 c->hidden, c->name);
        return DY_E_INVALID;
    }
    int st = lora_alloc(c, mlp, merged, out);
    for (int i = 0; st == DY_OK && i < c->layers; i++) {
        out->attn_rank[i] = rank;
        out->mlp_rank[i] = mlp ? rank : 0;
    }
    if (st != DY_OK)
        snprintf(err, err_len, "LoRA ranks: out of memory");
    return st;
}

/* One rank field of a map line: a whole number in 0..hidden. */
static int parse_rank(const char *field, const char *path, int line, int hidden, int *out,
                      char *err, size_t err_len)
{
    char *end;
    errno = 0;
    long v = strtol(field, &end, 10);
    if (end == field || *end || errno) {
        snprintf(err, err_len, "%s:%d: \"%s\" is not a rank (a whole number)", path, line, field);
        return DY_E_FORMAT;
    }
    if (v < 0) {
        snprintf(err, err_len, "%s:%d: rank %ld is negative (0 means no adapter)", path, line, v);
        return DY_E_FORMAT;
    }
    if (v > hidden) {
        snprintf(err, err_len, "%s:%d: rank %ld exceeds the hidden size %d", path, line, v, hidden);
        return DY_E_FORMAT;
    }
    *out = (int)v;
    return DY_OK;
}

/* One line of a map: nothing (blank or comment), RANK, or ATTN MLP. */
static int parse_line(char *text, const char *path, int line, const struct dy_vit_config *c,
                      struct dy_vit_lora *lora, int *layer, char *err, size_t err_len)
{
    char *hash = strchr(text, '#');
    if (hash)
        *hash = '\0';
    char *fields[3], *save = NULL;
    int n = 0;
    for (char *f = strtok_r(text, " \t\r\n", &save); f; f = strtok_r(NULL, " \t\r\n", &save))
        if (n++ < 3)
            fields[n - 1] = f;
    if (n == 0)
        return DY_OK;
    if (n > 2) {
        snprintf(err, err_len, "%s:%d: %d fields; a layer's line is RANK, or ATTN MLP", path,
                 line, n);
        return DY_E_FORMAT;
    }
    if (n == 2 && !lora->mlp) {
        snprintf(err, err_len, "%s:%d: two ranks (attention, MLP) need --lora-targets attn+mlp",
                 path, line);
        return DY_E_FORMAT;
    }
    if (*layer == c->layers) {
        snprintf(err, err_len, "%s:%d: a layer line beyond the %d layer%s %s runs", path, line,
                 c->layers, c->layers == 1 ? "" : "s", c->name);
        return DY_E_FORMAT;
    }
    int attn, mlp = 0, st = parse_rank(fields[0], path, line, c->hidden, &attn, err, err_len);
    if (st == DY_OK && n == 2)
        st = parse_rank(fields[1], path, line, c->hidden, &mlp, err, err_len);
    else if (lora->mlp)
        mlp = attn;
    if (st == DY_OK) {
        lora->attn_rank[*layer] = attn;
        lora->mlp_rank[*layer] = mlp;
        (*layer)++;
    }
    return st;
}

int dy_vit_lora_map_load(const char *path, const struct dy_vit_config *c, bool mlp, bool merged,
                         struct dy_vit_lora *out, char *err, size_t err_len)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        memset(out, 0, sizeof *out);
        snprintf(err, err_len, "%s: cannot open the LoRA rank map: %s", path, strerror(errno));
        return DY_E_IO;
    }
    int st = lora_alloc(c, mlp, merged, out), line = 0, layer = 0;
    char *text = NULL;
    size_t cap = 0;
    if (st != DY_OK)
        snprintf(err, err_len, "%s: out of memory", path);
    while (st == DY_OK && getline(&text, &cap, f) != -1)
        st = parse_line(text, path, ++line, c, out, &layer, err, err_len);
    if (st == DY_OK && ferror(f)) {
        snprintf(err, err_len, "%s: read error", path);
        st = DY_E_IO;
    }
    if (st == DY_OK && layer != c->layers) {
        snprintf(err, err_len, "%s: %d layer line%s, but %s runs %d layers", path, layer,
                 layer == 1 ? "" : "s", c->name, c->layers);
        st = DY_E_FORMAT;
    }
    free(text);
    fclose(f);
    if (st != DY_OK)
        dy_vit_lora_free(out);
    return st;
}

void dy_vit_lora_describe(const struct dy_vit_lora *lora, char *out, size_t len)
{
    size_t used = 0;
    out[0] = '\0';
    for (int i = 0; i < lora->layers && used < len; i++) {
        int n = lora->mlp ? snprintf(out + used, len - used, "%s%d/%d", i ? "," : "",
                                     lora->attn_rank[i], lora->mlp_rank[i])
                          : snprintf(out + used, len - used, "%s%d", i ? "," : "",
                                     lora->attn_rank[i]);
        used += n > 0 ? (size_t)n : 0;
    }
}

/* W[row0 .. row0 + out, :] += B . A on the host: W [out, in] in the
 * weights' dtype, B [out, rank] and A [rank, in] in f32. */
static int fold(dy_ctx *ctx, const struct dy_vit_weights *w, dy_buf weight, size_t row0, int out,
                int in, const float *b, const float *a, int rank)
{
    size_t esize = dy_dtype_size(w->dtype), count = (size_t)out * in;
    void *host = malloc(count * esize);
    dy_buf at = dy_buf_at(weight, row0 * in * esize);
    int st = host ? dy_buf_read(ctx, at, host, count * esize) : DY_E_NOMEM;
    for (int o = 0; st == DY_OK && o < out; o++)
        for (int i = 0; i < in; i++) {
            double acc = dy_load_f32(host, w->dtype, (size_t)o * in + i);
            for (int k = 0; k < rank; k++)
                acc += (double)b[(size_t)o * rank + k] * a[(size_t)k * in + i];
            dy_store_f32(host, w->dtype, (size_t)o * in + i, (float)acc);
        }
    if (st == DY_OK)
        st = dy_buf_write(ctx, at, host, count * esize);
    free(host);
    return st;
}

/* Reads a device tensor of `count` values as f32. */
static int read_f32(dy_ctx *ctx, const struct dy_vit_weights *w, dy_buf src, size_t count,
                    float *out)
{
    size_t esize = dy_dtype_size(w->dtype);
    void *host = malloc(count * esize);
    int st = host ? dy_buf_read(ctx, src, host, count * esize) : DY_E_NOMEM;
    for (size_t i = 0; st == DY_OK && i < count; i++)
        out[i] = dy_load_f32(host, w->dtype, i);
    free(host);
    return st;
}

/* W += B A for one adapter, row0 being its first row of W (q, k and v
 * share one stacked weight). */
static int fold_adapter(dy_ctx *ctx, struct dy_vit_weights *w, dy_buf weight, size_t row0,
                        int out, int in, dy_buf a_buf, size_t a_off, dy_buf b_buf, int rank)
{
    float *a = malloc((size_t)rank * in * sizeof(float));
    float *b = malloc((size_t)out * rank * sizeof(float));
    int st = a && b ? DY_OK : DY_E_NOMEM;
    if (st == DY_OK &&
        (st = read_f32(ctx, w, dy_buf_at(a_buf, a_off * dy_dtype_size(w->dtype)),
                       (size_t)rank * in, a)) == DY_OK &&
        (st = read_f32(ctx, w, b_buf, (size_t)out * rank, b)) == DY_OK)
        st = fold(ctx, w, weight, row0, out, in, b, a, rank);
    free(a);
    free(b);
    return st;
}

/* Folds a layer's adapters into its weights and frees them. */
static int fold_layer(dy_ctx *ctx, const struct dy_vit_config *c, struct dy_vit_weights *w,
                      struct dy_vit_layer *l)
{
    int h = c->hidden, in = c->intermediate, ra = l->lora_rank_attn, rm = l->lora_rank_mlp;
    dy_buf bs[3] = { l->lora_b_q, l->lora_b_k, l->lora_b_v };
    int st = DY_OK;
    for (int j = 0; ra && j < 3 && st == DY_OK; j++)
        st = fold_adapter(ctx, w, l->qkv, (size_t)j * h, h, h, l->lora_a_qkv,
                          (size_t)j * ra * h, bs[j], ra);
    if (ra && st == DY_OK)
        st = fold_adapter(ctx, w, l->o, 0, h, h, l->lora_a_o, 0, l->lora_b_o, ra);
    if (rm && st == DY_OK &&
        (st = fold_adapter(ctx, w, l->fc1, 0, in, h, l->lora_a_fc1, 0, l->lora_b_fc1, rm)) == DY_OK)
        st = fold_adapter(ctx, w, l->fc2, 0, h, in, l->lora_a_fc2, 0, l->lora_b_fc2, rm);
    dy_buf *adapters[] = { &l->lora_a_qkv, &l->lora_b_q, &l->lora_b_k, &l->lora_b_v,
                           &l->lora_a_o, &l->lora_b_o, &l->lora_a_fc1, &l->lora_b_fc1,
                           &l->lora_a_fc2, &l->lora_b_fc2 };
    for (size_t i = 0; i < sizeof adapters / sizeof adapters[0]; i++)
        dy_vit_free_tensor(ctx, w, adapters[i]);
    l->lora_rank_attn = l->lora_rank_mlp = 0;
    return st;
}

/* A's entries over U(-sqrt(3 / in), ...), B's over 2 (alpha / rank) times
 * a tenth of that at its rank, so the adapters move the output visibly but
 * do not swamp W. */
static int add_attn(dy_ctx *ctx, const struct dy_vit_config *c, struct dy_vit_weights *w,
                    struct dy_vit_layer *l, int layer, int rank, uint64_t seed)
{
    size_t h = (size_t)c->hidden, r = (size_t)rank;
    float a_scale = sqrtf(3.0f / (float)h), b_scale = 2.0f * sqrtf(3.0f / (float)rank) * 0.1f;
    uint64_t s = 0x4000 + 8 * (uint64_t)layer;
    int st;
    if ((st = dy_vit_alloc_tensor(ctx, w, 3 * r * h, &l->lora_a_qkv)) ||
        (st = dy_vit_alloc_tensor(ctx, w, h * r, &l->lora_b_q)) ||
        (st = dy_vit_alloc_tensor(ctx, w, h * r, &l->lora_b_k)) ||
        (st = dy_vit_alloc_tensor(ctx, w, h * r, &l->lora_b_v)) ||
        (st = dy_vit_alloc_tensor(ctx, w, r * h, &l->lora_a_o)) ||
        (st = dy_vit_alloc_tensor(ctx, w, h * r, &l->lora_b_o)) ||
        (st = dy_vit_fill(ctx, w, l->lora_a_qkv, seed, s, a_scale, 0.0f)) ||
        (st = dy_vit_fill(ctx, w, l->lora_b_q, seed, s + 1, b_scale, 0.0f)) ||
        (st = dy_vit_fill(ctx, w, l->lora_b_k, seed, s + 2, b_scale, 0.0f)) ||
        (st = dy_vit_fill(ctx, w, l->lora_b_v, seed, s + 3, b_scale, 0.0f)) ||
        (st = dy_vit_fill(ctx, w, l->lora_a_o, seed, s + 4, a_scale, 0.0f)) ||
        (st = dy_vit_fill(ctx, w, l->lora_b_o, seed, s + 5, b_scale, 0.0f)))
        return st;
    l->lora_rank_attn = rank;
    return DY_OK;
}

/* fc1's and fc2's adapters, from streams of their own so that adding them
 * leaves the attention adapters of the same seed unchanged. */
static int add_mlp(dy_ctx *ctx, const struct dy_vit_config *c, struct dy_vit_weights *w,
                   struct dy_vit_layer *l, int layer, int rank, uint64_t seed)
{
    size_t h = (size_t)c->hidden, in = (size_t)c->intermediate, r = (size_t)rank;
    float b_scale = 2.0f * sqrtf(3.0f / (float)rank) * 0.1f;
    uint64_t s = 0x5000 + 8 * (uint64_t)layer;
    int st;
    if ((st = dy_vit_alloc_tensor(ctx, w, r * h, &l->lora_a_fc1)) ||
        (st = dy_vit_alloc_tensor(ctx, w, in * r, &l->lora_b_fc1)) ||
        (st = dy_vit_alloc_tensor(ctx, w, r * in, &l->lora_a_fc2)) ||
        (st = dy_vit_alloc_tensor(ctx, w, h * r, &l->lora_b_fc2)) ||
        (st = dy_vit_fill(ctx, w, l->lora_a_fc1, seed, s, sqrtf(3.0f / (float)h), 0.0f)) ||
        (st = dy_vit_fill(ctx, w, l->lora_b_fc1, seed, s + 1, b_scale, 0.0f)) ||
        (st = dy_vit_fill(ctx, w, l->lora_a_fc2, seed, s + 2, sqrtf(3.0f / (float)in), 0.0f)) ||
        (st = dy_vit_fill(ctx, w, l->lora_b_fc2, seed, s + 3, b_scale, 0.0f)))
        return st;
    l->lora_rank_mlp = rank;
    return DY_OK;
}

int dy_vit_lora_add(dy_ctx *ctx, const struct dy_vit_config *c, struct dy_vit_weights *w,
                    const struct dy_vit_lora *lora, uint64_t seed)
{
    if (lora->layers != c->layers || lora->layers != w->layer_count)
        return DY_E_INVALID;
    int st = DY_OK;
    for (int i = 0; i < c->layers && st == DY_OK; i++) {
        struct dy_vit_layer *l = &w->layers[i];
        int ra = lora->attn_rank[i], rm = lora->mlp_rank[i];
        if (ra < 0 || rm < 0 || ra > c->hidden || rm > c->hidden)
            return DY_E_INVALID;
        if ((ra && (st = add_attn(ctx, c, w, l, i, ra, seed))) ||
            (rm && (st = add_mlp(ctx, c, w, l, i, rm, seed))))
            break;
        if (lora->merged)
            st = fold_layer(ctx, c, w, l);
        else if (ra > w->lora_rank_max || rm > w->lora_rank_max)
            w->lora_rank_max = ra > rm ? ra : rm;
    }
    return st;
}
