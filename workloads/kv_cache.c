/* The paged KV cache (vLLM's layout): fixed-size blocks handed out from a
 * free list, a block table per sequence, slot = block * block_size + offset.
 * Block bookkeeping lives on the host; the device sees the block table. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "llm.h"

bool dy_evict_parse(const char *name, enum dy_evict *out)
{
    static const char *const names[] = { "none", "window", "streaming", "inv-key-norm", "paged" };
    for (int i = 0; i < (int)(sizeof names / sizeof names[0]); i++)
        if (!strcmp(name, names[i])) {
            *out = (enum dy_evict)i;
            return true;
        }
    return false;
}

static bool scored(enum dy_evict e)
{
    return e == DY_EVICT_INV_KEY_NORM || e == DY_EVICT_PAGED;
}

int dy_evict_least_blocks(enum dy_evict evict)
{
    /* streaming and the scored policies evict after the first block and
     * before the newest, so they need one between */
    return evict == DY_EVICT_WINDOW ? 2 : 3;
}

int dy_kv_cache_create(dy_ctx *ctx, const struct dy_model_config *cfg, enum dy_dtype dtype,
                       int block_size, int batch, int max_tokens, struct dy_kv_cache *kv)
{
    return dy_kv_cache_create_evicting(ctx, cfg, cfg->layers, dtype, block_size, batch, max_tokens,
                                       DY_EVICT_NONE, 0, kv);
}

int dy_kv_cache_create_evicting(dy_ctx *ctx, const struct dy_model_config *cfg, int layers,
                                enum dy_dtype dtype, int block_size, int batch, int max_tokens,
                                enum dy_evict evict, int budget, struct dy_kv_cache *kv)
{
    memset(kv, 0, sizeof *kv);
    if (block_size < 1 || batch < 1 || max_tokens < 1 || layers < 1)
        return DY_E_INVALID;
    int full_blocks = (max_tokens + block_size - 1) / block_size;
    kv->evict = evict;
    kv->budget_blocks = full_blocks;
    if (evict != DY_EVICT_NONE) {
        kv->budget_blocks = (budget + block_size - 1) / block_size;
        if (budget < 1 || kv->budget_blocks < dy_evict_least_blocks(evict))
            return DY_E_INVALID;
        if (kv->budget_blocks >= full_blocks) /* nothing will ever be evicted */
            kv->budget_blocks = full_blocks;
    }
    kv->layers = layers;
    kv->kv_heads = cfg->kv_heads;
    kv->head_dim = cfg->head_dim;
    kv->block_size = block_size;
    kv->batch = batch;
    kv->dtype = dtype;
    kv->max_blocks_per_seq = kv->budget_blocks;
    /* one more block when evicting: the trash for a prompt's dropped tokens */
    kv->num_blocks = kv->max_blocks_per_seq * batch + (evict != DY_EVICT_NONE);
    size_t row = (size_t)cfg->kv_heads * cfg->head_dim * dy_dtype_size(dtype);
    kv->layer_bytes = (size_t)kv->num_blocks * block_size * row;
    size_t table_len = (size_t)batch * kv->max_blocks_per_seq;
    kv->block_table = malloc(table_len * sizeof(int32_t));
    kv->context_lens = calloc((size_t)batch, sizeof(int32_t));
    kv->free_blocks = malloc((size_t)kv->num_blocks * sizeof(int32_t));
    kv->seq_tokens = calloc((size_t)batch, sizeof(int32_t));
    kv->block_scores = malloc((size_t)kv->num_blocks * sizeof(float));
    int st = DY_E_NOMEM;
    if (!kv->block_table || !kv->context_lens || !kv->free_blocks || !kv->seq_tokens ||
        !kv->block_scores)
        goto fail;
    if (dtype == DY_I8) {
        kv->layer_scale_bytes = (size_t)kv->num_blocks * block_size * cfg->kv_heads * sizeof(float);
        if ((st = dy_buf_alloc(ctx, 2 * kv->layer_scale_bytes * (size_t)kv->layers, &kv->scales)))
            goto fail;
    }
    if ((st = dy_buf_alloc(ctx, 2 * kv->layer_bytes * (size_t)kv->layers, &kv->storage)) ||
        (st = dy_buf_alloc(ctx, table_len * sizeof(int32_t), &kv->block_table_dev)) ||
        (st = dy_buf_alloc(ctx, (size_t)batch * sizeof(int32_t), &kv->context_lens_dev)))
        goto fail;
    dy_kv_cache_reset(kv);
    return DY_OK;
fail:
    dy_kv_cache_free(ctx, kv);
    return st;
}

void dy_kv_cache_free(dy_ctx *ctx, struct dy_kv_cache *kv)
{
    dy_buf_free(ctx, &kv->storage);
    dy_buf_free(ctx, &kv->scales);
    dy_buf_free(ctx, &kv->block_table_dev);
    dy_buf_free(ctx, &kv->context_lens_dev);
    free(kv->block_table);
    free(kv->context_lens);
    free(kv->free_blocks);
    free(kv->seq_tokens);
    free(kv->block_scores);
    memset(kv, 0, sizeof *kv);
}

void dy_kv_cache_reset(struct dy_kv_cache *kv)
{
    size_t table_len = (size_t)kv->batch * kv->max_blocks_per_seq;
    for (size_t i = 0; i < table_len; i++)
        kv->block_table[i] = -1;
    memset(kv->context_lens, 0, (size_t)kv->batch * sizeof(int32_t));
    memset(kv->seq_tokens, 0, (size_t)kv->batch * sizeof(int32_t));
    for (int i = 0; i < kv->num_blocks; i++)
        kv->block_scores[i] = NAN;
    /* handed out lowest id first, so a fresh cache is laid out in order;
     * the trash block is the last and never handed out */
    int usable = kv->num_blocks - (kv->evict != DY_EVICT_NONE);
    kv->trash_block = kv->evict != DY_EVICT_NONE ? kv->num_blocks - 1 : -1;
    kv->free_count = usable;
    for (int i = 0; i < usable; i++)
        kv->free_blocks[i] = usable - 1 - i;
    kv->evicted_blocks = 0;
    kv->table_dirty = true;
}

static int held_blocks(const struct dy_kv_cache *kv, int seq)
{
    return (kv->context_lens[seq] + kv->block_size - 1) / kv->block_size;
}

bool dy_kv_cache_must_evict(const struct dy_kv_cache *kv, int seq)
{
    return kv->evict != DY_EVICT_NONE && kv->context_lens[seq] % kv->block_size == 0 &&
           held_blocks(kv, seq) == kv->budget_blocks;
}

int dy_kv_cache_candidates(const struct dy_kv_cache *kv, int seq, int32_t *blocks)
{
    const int32_t *table = kv->block_table + (size_t)seq * kv->max_blocks_per_seq;
    int held = held_blocks(kv, seq), count = 0;
    for (int i = 1; i + 1 < held; i++)
        blocks[count++] = table[i];
    return count;
}

int dy_kv_cache_evict(struct dy_kv_cache *kv, int seq)
{
    int32_t *table = kv->block_table + (size_t)seq * kv->max_blocks_per_seq;
    int held = held_blocks(kv, seq), victim = kv->evict == DY_EVICT_WINDOW ? 0 : 1;
    if (scored(kv->evict)) {
        for (int i = 2; i + 1 < held; i++) {
            float score = kv->block_scores[table[i]], best = kv->block_scores[table[victim]];
            if (isnan(score) || isnan(best))
                return DY_E_INVALID; /* the caller scores every candidate first */
            if (score < best)
                victim = i;
        }
    }
    if (victim + 1 >= held) /* only ever a full, older block */
        return DY_E_INVALID;
    kv->free_blocks[kv->free_count++] = table[victim];
    kv->block_scores[table[victim]] = NAN;
    memmove(table + victim, table + victim + 1, (size_t)(held - victim - 1) * sizeof *table);
    table[held - 1] = -1;
    kv->context_lens[seq] -= kv->block_size;
    kv->evicted_blocks++;
    kv->table_dirty = true;
    return DY_OK;
}

int dy_kv_cache_prompt(struct dy_kv_cache *kv, int seq, int count, int32_t *slots)
{
    int capacity = kv->budget_blocks * kv->block_size;
    if (kv->evict == DY_EVICT_NONE || count <= capacity) {
        int st = dy_kv_cache_extend(kv, seq, count, slots);
        kv->seq_tokens[seq] = kv->context_lens[seq];
        return st;
    }
    /* keep the first block (the sinks) unless the window drops it, then the
     * most recent tokens that fill the rest */
    int head = kv->evict == DY_EVICT_WINDOW ? 0 : kv->block_size;
    int tail = capacity - head, st;
    if ((st = dy_kv_cache_extend(kv, seq, head, slots)) ||
        (st = dy_kv_cache_extend(kv, seq, tail, slots + count - tail)))
        return st;
    for (int t = head; t < count - tail; t++)
        slots[t] = kv->trash_block * kv->block_size + t % kv->block_size;
    kv->seq_tokens[seq] = count;
    return DY_OK;
}

bool dy_kv_cache_selects(const struct dy_kv_cache *kv, int count)
{
    return scored(kv->evict) && count > kv->budget_blocks * kv->block_size;
}

struct ranked {
    float score;
    int token;
};

/* Highest score first, the earlier token first among equals; NaN last. */
static int by_score(const void *a, const void *b)
{
    const struct ranked *x = a, *y = b;
    float sx = isnan(x->score) ? -INFINITY : x->score, sy = isnan(y->score) ? -INFINITY : y->score;
    if (sx != sy)
        return sx > sy ? -1 : 1;
    return (x->token > y->token) - (x->token < y->token);
}

int dy_kv_cache_prompt_scored(struct dy_kv_cache *kv, int seq, int count, const float *scores,
                              int32_t *slots)
{
    if (!dy_kv_cache_selects(kv, count))
        return dy_kv_cache_prompt(kv, seq, count, slots);
    int block = kv->block_size;
    int tail = count - (count - 1) / block * block; /* the prompt's last block, 1..block tokens */
    int middle_end = count - tail, candidates = middle_end - block;
    int keep = (kv->budget_blocks - 2) * block; /* < candidates, as count > budget_blocks * block */
    struct ranked *rank = malloc((size_t)candidates * sizeof *rank);
    if (!rank)
        return DY_E_NOMEM;
    for (int i = 0; i < candidates; i++)
        rank[i] = (struct ranked){ scores[block + i], block + i };
    qsort(rank, (size_t)candidates, sizeof *rank, by_score);
    /* slots[t] >= 0 marks a kept token until it gets its slot */
    for (int t = 0; t < count; t++)
        slots[t] = t < block || t >= middle_end ? 0 : -1;
    for (int i = 0; i < keep; i++)
        slots[rank[i].token] = 0;
    free(rank);
    for (int t = 0; t < count; t++) {
        if (slots[t] < 0) {
            slots[t] = kv->trash_block * block + t % block;
            continue;
        }
        int st = dy_kv_cache_extend(kv, seq, 1, slots + t);
        if (st != DY_OK)
            return st;
    }
    kv->seq_tokens[seq] = count;
    return DY_OK;
}

int dy_kv_cache_extend(struct dy_kv_cache *kv, int seq, int count, int32_t *slots)
{
    if (seq < 0 || seq >= kv->batch)
        return DY_E_INVALID;
    int32_t *table = kv->block_table + (size_t)seq * kv->max_blocks_per_seq;
    for (int i = 0; i < count; i++) {
        int pos = kv->context_lens[seq];
        int block_index = pos / kv->block_size;
        if (block_index >= kv->max_blocks_per_seq)
            return DY_E_INVALID;
        if (table[block_index] < 0) {
            if (kv->free_count == 0)
                return DY_E_NOMEM;
            table[block_index] = kv->free_blocks[--kv->free_count];
            kv->table_dirty = true;
        }
        slots[i] = table[block_index] * kv->block_size + pos % kv->block_size;
        kv->context_lens[seq] = pos + 1;
        kv->seq_tokens[seq]++;
    }
    return DY_OK;
}

int dy_kv_cache_sync(dy_ctx *ctx, struct dy_kv_cache *kv)
{
    int st = dy_buf_write(ctx, kv->context_lens_dev, kv->context_lens,
                          (size_t)kv->batch * sizeof(int32_t));
    if (st != DY_OK || !kv->table_dirty)
        return st;
    st = dy_buf_write(ctx, kv->block_table_dev, kv->block_table,
                      (size_t)kv->batch * kv->max_blocks_per_seq * sizeof(int32_t));
    if (st == DY_OK)
        kv->table_dirty = false;
    return st;
}

dy_buf dy_kv_cache_k(const struct dy_kv_cache *kv, int layer)
{
    return dy_buf_at(kv->storage, (size_t)layer * 2 * kv->layer_bytes);
}

dy_buf dy_kv_cache_v(const struct dy_kv_cache *kv, int layer)
{
    return dy_buf_at(kv->storage, ((size_t)layer * 2 + 1) * kv->layer_bytes);
}

dy_buf dy_kv_cache_k_scale(const struct dy_kv_cache *kv, int layer)
{
    dy_buf none = { 0 };
    return kv->scales.h ? dy_buf_at(kv->scales, (size_t)layer * 2 * kv->layer_scale_bytes) : none;
}

dy_buf dy_kv_cache_v_scale(const struct dy_kv_cache *kv, int layer)
{
    dy_buf none = { 0 };
    return kv->scales.h ? dy_buf_at(kv->scales, ((size_t)layer * 2 + 1) * kv->layer_scale_bytes) : none;
}

uint64_t dy_kv_cache_bytes(const struct dy_kv_cache *kv)
{
    return 2ull * (kv->layer_bytes + kv->layer_scale_bytes) * (uint64_t)kv->layers;
}
