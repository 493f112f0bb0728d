/* The paged KV cache (vLLM's layout): fixed-size blocks handed out from a
 * free list, a block table per sequence, slot = block * block_size + offset.
 * Block bookkeeping lives on the host; the device sees the block table. */
#include <stdlib.h>
#include <string.h>

#include "llm.h"

int dy_kv_cache_create(dy_ctx *ctx, const struct dy_model_config *cfg, enum dy_dtype dtype,
                       int block_size, int batch, int max_tokens, struct dy_kv_cache *kv)
{
    memset(kv, 0, sizeof *kv);
    if (block_size < 1 || batch < 1 || max_tokens < 1)
        return DY_E_INVALID;
    kv->layers = cfg->layers;
    kv->kv_heads = cfg->kv_heads;
    kv->head_dim = cfg->head_dim;
    kv->block_size = block_size;
    kv->batch = batch;
    kv->dtype = dtype;
    kv->max_blocks_per_seq = (max_tokens + block_size - 1) / block_size;
    kv->num_blocks = kv->max_blocks_per_seq * batch;
    size_t row = (size_t)cfg->kv_heads * cfg->head_dim * dy_dtype_size(dtype);
    kv->layer_bytes = (size_t)kv->num_blocks * block_size * row;
    size_t table_len = (size_t)batch * kv->max_blocks_per_seq;
    kv->block_table = malloc(table_len * sizeof(int32_t));
    kv->context_lens = calloc((size_t)batch, sizeof(int32_t));
    kv->free_blocks = malloc((size_t)kv->num_blocks * sizeof(int32_t));
    int st = DY_E_NOMEM;
    if (!kv->block_table || !kv->context_lens || !kv->free_blocks)
        goto fail;
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
    dy_buf_free(ctx, &kv->block_table_dev);
    dy_buf_free(ctx, &kv->context_lens_dev);
    free(kv->block_table);
    free(kv->context_lens);
    free(kv->free_blocks);
    memset(kv, 0, sizeof *kv);
}

void dy_kv_cache_reset(struct dy_kv_cache *kv)
{
    size_t table_len = (size_t)kv->batch * kv->max_blocks_per_seq;
    for (size_t i = 0; i < table_len; i++)
        kv->block_table[i] = -1;
    memset(kv->context_lens, 0, (size_t)kv->batch * sizeof(int32_t));
    /* handed out lowest id first, so a fresh cache is laid out in order */
    kv->free_count = kv->num_blocks;
    for (int i = 0; i < kv->num_blocks; i++)
        kv->free_blocks[i] = kv->num_blocks - 1 - i;
    kv->table_dirty = true;
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

uint64_t dy_kv_cache_bytes(const struct dy_kv_cache *kv)
{
    return 2ull * kv->layer_bytes * (uint64_t)kv->layers;
}
