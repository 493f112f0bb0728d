/* The decoder's KV caches: one paged cache (kv_cache.c) per budget tier,
 * one unless per-layer budgets (BaKlaVa, kv_profile.c) differ, each with
 * its own block tables, free list and slots, so that the attention kernels
 * see one ordinary cache per layer. Here: the slots of a prefill pass and
 * of a decode step in every tier, PagedEviction's choice of a long prompt's
 * tokens, and the evictions before a step.
 *
 * PagedEviction scores each prompt token (||v|| / ||k||, or 1 / ||k|| for
 * inv-key-norm, averaged over KV heads) before the tokens are laid into
 * blocks. A token's K and V exist only once the pass has run every layer
 * before it, and the choice is one per sequence for all the layers of a
 * tier, so a pass that must choose writes every layer's K and V to a
 * staging area instead of the cache; then kv_block_scores with a block of
 * one token scores every staged token of every layer, the host sums each
 * token's scores over the tier's layers and picks, and one kv_append per
 * layer copies the staged rows into their slots (the dropped ones into the
 * trash block). Staging is in the cache's dtype when that is f32, f16 or
 * bf16 (the copy is exact) and f32 for fp8 and int8 (so the cache gets the
 * bits a direct write would give it). Prefill attention reads the pass's
 * own k and v, so it still sees the whole prompt. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "llm_internal.h"

static bool scored(enum dy_evict e)
{
    return e == DY_EVICT_INV_KEY_NORM || e == DY_EVICT_PAGED;
}

static size_t kv_dim(const struct dy_model_config *c)
{
    return (size_t)c->kv_heads * c->head_dim;
}

static enum dy_dtype stage_dtype(enum dy_dtype cache)
{
    return cache == DY_F32 || cache == DY_F16 || cache == DY_BF16 ? cache : DY_F32;
}

/* Layers whose budgets are the same number of blocks share a tier, tiers
 * numbered by their first layer; tier_budget gets each tier's budget in
 * tokens. Returns the tier count. */
static int tiers_of(const struct dy_model_config *c, const struct dy_llm_options *opt, int *layer_tier,
                    int *tier_budget)
{
    int count = 0, block = opt->block_size;
    for (int l = 0; l < c->layers; l++) {
        int budget = opt->evict != DY_EVICT_NONE && opt->layer_kv_budget ? opt->layer_kv_budget[l]
                                                                        : opt->kv_budget;
        int tokens = (budget + block - 1) / block * block, t = 0;
        while (t < count && tier_budget[t] != tokens)
            t++;
        if (t == count)
            tier_budget[count++] = tokens;
        layer_tier[l] = t;
    }
    return count;
}

/* A prompt this long makes some tier choose its tokens. */
static bool chooses(const struct dy_llm *m, int prompt_len)
{
    for (int t = 0; t < m->kv_count; t++)
        if (dy_kv_cache_selects(&m->kv[t], prompt_len))
            return true;
    return false;
}

static dy_buf stage_k(const struct dy_llm *m, int layer)
{
    size_t bytes = dy_dtype_bytes(m->stage_dtype, (size_t)m->max_rows * kv_dim(m->cfg));
    return dy_buf_at(m->stage, 2 * (size_t)layer * bytes);
}

static dy_buf stage_v(const struct dy_llm *m, int layer)
{
    size_t bytes = dy_dtype_bytes(m->stage_dtype, (size_t)m->max_rows * kv_dim(m->cfg));
    return dy_buf_at(m->stage, (2 * (size_t)layer + 1) * bytes);
}

static dy_buf tier_slots(const struct dy_llm *m, int tier)
{
    return dy_buf_at(m->slots, (size_t)tier * m->max_rows * sizeof(int32_t));
}

static int create_staging(struct dy_llm *m)
{
    const struct dy_model_config *c = m->cfg;
    size_t rows = (size_t)m->max_rows, layers = (size_t)c->layers;
    m->stage_dtype = stage_dtype(m->opt.kv_dtype);
    m->host_token_scores = malloc(layers * rows * sizeof(float));
    m->host_prompt_scores = malloc((size_t)m->opt.max_prompt * sizeof(float));
    int32_t *ids = malloc(rows * sizeof(int32_t));
    int st = DY_E_NOMEM;
    if (m->host_token_scores && m->host_prompt_scores && ids) {
        for (size_t i = 0; i < rows; i++)
            ids[i] = (int32_t)i;
        if (!(st = dy_buf_alloc(m->ctx, 2 * layers * dy_dtype_bytes(m->stage_dtype, rows * kv_dim(c)),
                                &m->stage)) &&
            !(st = dy_buf_alloc(m->ctx, rows * sizeof(int32_t), &m->stage_rows)) &&
            !(st = dy_buf_alloc(m->ctx, layers * rows * sizeof(float), &m->token_scores)))
            st = dy_buf_write(m->ctx, m->stage_rows, ids, rows * sizeof(int32_t));
    }
    free(ids);
    return st;
}

int dy_llm_kv_create(struct dy_llm *m)
{
    const struct dy_model_config *c = m->cfg;
    const struct dy_llm_options *o = &m->opt;
    int *budget = malloc((size_t)c->layers * sizeof(int)), st = DY_E_NOMEM;
    m->layer_tier = malloc((size_t)c->layers * sizeof(int));
    m->tier_layer = malloc((size_t)c->layers * sizeof(int));
    if (!budget || !m->layer_tier || !m->tier_layer)
        goto out;
    int count = tiers_of(c, o, m->layer_tier, budget);
    if (!(m->kv = calloc((size_t)count, sizeof *m->kv)))
        goto out;
    m->kv_count = count;
    int most_blocks = 0, least_room = o->max_tokens;
    for (int t = 0; t < count; t++) {
        int layers = 0;
        for (int l = 0; l < c->layers; l++)
            if (m->layer_tier[l] == t)
                m->tier_layer[l] = layers++;
        if ((st = dy_kv_cache_create_evicting(m->ctx, c, layers, o->kv_dtype, o->block_size, o->max_batch,
                                              o->max_tokens, o->evict, budget[t], &m->kv[t])))
            goto out;
        most_blocks = m->kv[t].num_blocks > most_blocks ? m->kv[t].num_blocks : most_blocks;
        int room = m->kv[t].budget_blocks * o->block_size;
        least_room = room < least_room ? room : least_room;
    }
    size_t rows = (size_t)m->max_rows * count;
    m->host_slots = malloc(rows * sizeof(int32_t));
    st = DY_E_NOMEM;
    if (!m->host_slots || (st = dy_buf_alloc(m->ctx, rows * sizeof(int32_t), &m->slots)))
        goto out;
    if (scored(o->evict)) {
        size_t most = (size_t)most_blocks;
        m->host_score_blocks = malloc(most * sizeof(int32_t));
        m->host_scores = malloc(most * c->layers * sizeof(float));
        st = DY_E_NOMEM;
        if (!m->host_score_blocks || !m->host_scores ||
            (st = dy_buf_alloc(m->ctx, most * sizeof(int32_t), &m->score_blocks)) ||
            (st = dy_buf_alloc(m->ctx, most * c->layers * sizeof(float), &m->scores)))
            goto out;
        if (o->max_prompt > least_room && (st = create_staging(m)))
            goto out;
    }
    st = DY_OK;
out:
    free(budget);
    return st;
}

void dy_llm_kv_destroy(struct dy_llm *m)
{
    dy_buf *bufs[] = { &m->slots, &m->score_blocks, &m->scores, &m->stage, &m->stage_rows,
                       &m->token_scores };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        dy_buf_free(m->ctx, bufs[i]);
    for (int t = 0; t < m->kv_count; t++)
        dy_kv_cache_free(m->ctx, &m->kv[t]);
    free(m->kv);
    free(m->layer_tier);
    free(m->tier_layer);
    free(m->host_slots);
    free(m->host_score_blocks);
    free(m->host_scores);
    free(m->host_token_scores);
    free(m->host_prompt_scores);
}

void dy_llm_kv_reset(struct dy_llm *m)
{
    for (int t = 0; t < m->kv_count; t++)
        dy_kv_cache_reset(&m->kv[t]);
    m->staging = false;
}

struct dy_kv_cache *dy_llm_layer_kv(const struct dy_llm *m, int layer, int *index)
{
    *index = m->tier_layer[layer];
    return &m->kv[m->layer_tier[layer]];
}

static int sync_tiers(struct dy_llm *m)
{
    int st = DY_OK;
    for (int t = 0; t < m->kv_count && st == DY_OK; t++)
        st = dy_kv_cache_sync(m->ctx, &m->kv[t]);
    return st;
}

static int upload_slots(struct dy_llm *m, int tier, int rows)
{
    return dy_buf_write(m->ctx, tier_slots(m, tier), m->host_slots + (size_t)tier * m->max_rows,
                        (size_t)rows * sizeof(int32_t));
}

int dy_llm_kv_prompt(struct dy_llm *m, int seq0, int seqs, int prompt_len)
{
    m->staging = m->stage.h && chooses(m, prompt_len);
    if (m->staging) /* the slots come once the tokens are chosen */
        return DY_OK;
    int st = DY_OK;
    for (int t = 0; t < m->kv_count && st == DY_OK; t++) {
        int32_t *slots = m->host_slots + (size_t)t * m->max_rows;
        for (int b = 0; b < seqs && st == DY_OK; b++)
            st = dy_kv_cache_prompt(&m->kv[t], seq0 + b, prompt_len, slots + (size_t)b * prompt_len);
        if (st == DY_OK)
            st = upload_slots(m, t, seqs * prompt_len);
    }
    return st ? st : sync_tiers(m);
}

/* Where layer `layer`'s new K and V rows go: the tier's cache and slots,
 * or while staging (eviction's scoring prefill) the staging rows. */
static struct dy_kv_append_desc append_desc(const struct dy_llm *m, int layer)
{
    int index;
    const struct dy_kv_cache *kv = dy_llm_layer_kv(m, layer, &index);
    struct dy_kv_append_desc d = {
        .slots = tier_slots(m, m->layer_tier[layer]),
        .k_cache = dy_kv_cache_k(kv, index), .v_cache = dy_kv_cache_v(kv, index),
        .kv_heads = m->cfg->kv_heads, .head_dim = m->cfg->head_dim, .cache_dtype = kv->dtype,
        .k_scale = dy_kv_cache_k_scale(kv, index), .v_scale = dy_kv_cache_v_scale(kv, index),
    };
    if (m->staging) {
        dy_buf none = { 0 };
        d.slots = m->stage_rows;
        d.k_cache = stage_k(m, layer);
        d.v_cache = stage_v(m, layer);
        d.cache_dtype = m->stage_dtype;
        d.k_scale = d.v_scale = none;
    }
    return d;
}

int dy_llm_kv_append(struct dy_llm *m, int layer, dy_buf k, dy_buf v, int stride, int rows)
{
    struct dy_kv_append_desc d = append_desc(m, layer);
    d.k = k;
    d.v = v;
    d.src_stride = stride;
    d.tokens = rows;
    d.src_dtype = m->act;
    return dy_kv_append(m->ctx, &d);
}

bool dy_llm_gemm_append(const struct dy_llm *m, int layer, int k_col, int v_col, struct dy_gemm_append *a)
{
    struct dy_kv_append_desc d = append_desc(m, layer);
    *a = (struct dy_gemm_append){ .slots = d.slots, .k_cache = d.k_cache, .v_cache = d.v_cache, .k_col = k_col,
                                  .v_col = v_col, .kv_heads = d.kv_heads, .head_dim = d.head_dim,
                                  .cache_dtype = d.cache_dtype };
    return d.cache_dtype != DY_I8;
}

/* Every staged token's score in every layer, read back: [layers, rows]. */
static int score_tokens(struct dy_llm *m, int rows)
{
    const struct dy_model_config *c = m->cfg;
    int st = DY_OK;
    for (int l = 0; l < c->layers && st == DY_OK; l++) {
        struct dy_kv_block_scores_desc d = {
            .k_cache = stage_k(m, l), .v_cache = stage_v(m, l), .blocks = m->stage_rows,
            .scores = dy_buf_at(m->token_scores, (size_t)l * rows * sizeof(float)),
            .count = rows, .block_size = 1, .kv_heads = c->kv_heads, .head_dim = c->head_dim,
            .kind = m->opt.evict == DY_EVICT_PAGED ? DY_KV_SCORE_VK_RATIO : DY_KV_SCORE_INV_KEY_NORM,
            .cache_dtype = m->stage_dtype,
        };
        st = dy_kv_block_scores(m->ctx, &d);
    }
    if (st == DY_OK)
        st = dy_buf_read(m->ctx, m->token_scores, m->host_token_scores,
                         (size_t)c->layers * rows * sizeof(float));
    return st;
}

/* Sequence b's prompt scores summed over the layers of `tier`, in layer
 * order (as the decode's block scores). */
static void tier_scores(struct dy_llm *m, int tier, int rows, int b, int prompt_len)
{
    float *sum = m->host_prompt_scores;
    memset(sum, 0, (size_t)prompt_len * sizeof *sum);
    for (int l = 0; l < m->cfg->layers; l++) {
        if (m->layer_tier[l] != tier)
            continue;
        const float *layer = m->host_token_scores + (size_t)l * rows + (size_t)b * prompt_len;
        for (int i = 0; i < prompt_len; i++)
            sum[i] += layer[i];
    }
}

/* The staged rows of every layer of `tier` into their slots. */
static int unstage(struct dy_llm *m, int tier, int rows)
{
    const struct dy_model_config *c = m->cfg;
    const struct dy_kv_cache *kv = &m->kv[tier];
    int st = DY_OK;
    for (int l = 0; l < c->layers && st == DY_OK; l++) {
        if (m->layer_tier[l] != tier)
            continue;
        int index = m->tier_layer[l];
        struct dy_kv_append_desc d = {
            .k = stage_k(m, l), .v = stage_v(m, l), .src_stride = (int)kv_dim(c),
            .slots = tier_slots(m, tier), .k_cache = dy_kv_cache_k(kv, index),
            .v_cache = dy_kv_cache_v(kv, index), .tokens = rows, .kv_heads = c->kv_heads,
            .head_dim = c->head_dim, .src_dtype = m->stage_dtype, .cache_dtype = kv->dtype,
            .k_scale = dy_kv_cache_k_scale(kv, index), .v_scale = dy_kv_cache_v_scale(kv, index),
        };
        st = dy_kv_append(m->ctx, &d);
    }
    return st;
}

int dy_llm_kv_prompt_end(struct dy_llm *m, int seq0, int seqs, int prompt_len)
{
    if (!m->staging)
        return DY_OK;
    m->staging = false;
    int rows = seqs * prompt_len, st = score_tokens(m, rows);
    for (int t = 0; t < m->kv_count && st == DY_OK; t++) {
        struct dy_kv_cache *kv = &m->kv[t];
        int32_t *slots = m->host_slots + (size_t)t * m->max_rows;
        bool choose = dy_kv_cache_selects(kv, prompt_len);
        for (int b = 0; b < seqs && st == DY_OK; b++) {
            if (choose)
                tier_scores(m, t, rows, b, prompt_len);
            st = dy_kv_cache_prompt_scored(kv, seq0 + b, prompt_len, m->host_prompt_scores,
                                           slots + (size_t)b * prompt_len);
        }
        if (st == DY_OK && !(st = upload_slots(m, t, rows)))
            st = unstage(m, t, rows);
    }
    return st ? st : sync_tiers(m);
}

/* Scores, summed over the tier's layers, of every block the scored
 * policies may evict from the tier's sequences that must evict before
 * this step, where not scored yet: one kv_block_scores per layer over all
 * of them, one read. */
static int score_blocks(struct dy_llm *m, struct dy_kv_cache *kv)
{
    int count = 0;
    for (int b = 0; b < m->batch; b++) {
        if (!dy_kv_cache_must_evict(kv, b))
            continue;
        int32_t candidates[kv->max_blocks_per_seq];
        int n = dy_kv_cache_candidates(kv, b, candidates);
        for (int i = 0; i < n; i++)
            if (isnan(kv->block_scores[candidates[i]]))
                m->host_score_blocks[count++] = candidates[i];
    }
    if (!count)
        return DY_OK;
    int st = dy_buf_write(m->ctx, m->score_blocks, m->host_score_blocks, (size_t)count * sizeof(int32_t));
    for (int layer = 0; layer < kv->layers && st == DY_OK; layer++) {
        struct dy_kv_block_scores_desc d = {
            .k_cache = dy_kv_cache_k(kv, layer), .v_cache = dy_kv_cache_v(kv, layer),
            .k_scale = dy_kv_cache_k_scale(kv, layer), .v_scale = dy_kv_cache_v_scale(kv, layer),
            .blocks = m->score_blocks, .scores = dy_buf_at(m->scores, (size_t)layer * count * sizeof(float)),
            .count = count, .block_size = kv->block_size, .kv_heads = kv->kv_heads,
            .head_dim = kv->head_dim,
            .kind = kv->evict == DY_EVICT_PAGED ? DY_KV_SCORE_VK_RATIO : DY_KV_SCORE_INV_KEY_NORM,
            .cache_dtype = kv->dtype,
        };
        st = dy_kv_block_scores(m->ctx, &d);
    }
    if (st == DY_OK)
        st = dy_buf_read(m->ctx, m->scores, m->host_scores, (size_t)kv->layers * count * sizeof(float));
    for (int i = 0; i < count && st == DY_OK; i++) {
        float sum = 0;
        for (int layer = 0; layer < kv->layers; layer++)
            sum += m->host_scores[(size_t)layer * count + i];
        kv->block_scores[m->host_score_blocks[i]] = sum;
    }
    return st;
}

int dy_llm_kv_step(struct dy_llm *m)
{
    int st = DY_OK;
    for (int t = 0; t < m->kv_count && st == DY_OK; t++) {
        struct dy_kv_cache *kv = &m->kv[t];
        if (kv->evict == DY_EVICT_NONE)
            continue;
        /* sequences whose newest block is full and that hold their budget
         * give up a block, decided once for all the tier's layers */
        if (scored(kv->evict))
            st = score_blocks(m, kv);
        for (int b = 0; b < m->batch && st == DY_OK; b++)
            if (dy_kv_cache_must_evict(kv, b))
                st = dy_kv_cache_evict(kv, b);
    }
    for (int b = 0; b < m->batch; b++) /* every tier has seen the same tokens */
        m->host_positions[b] = m->kv[0].seq_tokens[b];
    for (int t = 0; t < m->kv_count && st == DY_OK; t++) {
        int32_t *slots = m->host_slots + (size_t)t * m->max_rows;
        for (int b = 0; b < m->batch && st == DY_OK; b++)
            st = dy_kv_cache_extend(&m->kv[t], b, 1, slots + b);
        if (st == DY_OK)
            st = upload_slots(m, t, m->batch);
    }
    if (st == DY_OK)
        st = dy_buf_write(m->ctx, m->positions, m->host_positions, (size_t)m->batch * sizeof(int32_t));
    return st ? st : sync_tiers(m);
}

uint64_t dy_llm_kv_read_bytes(const struct dy_llm *m)
{
    uint64_t bytes = 0;
    for (int t = 0; t < m->kv_count; t++) {
        const struct dy_kv_cache *kv = &m->kv[t];
        uint64_t row = 2ull * kv->kv_heads *
                       (kv->head_dim * dy_dtype_size(kv->dtype) + (kv->dtype == DY_I8 ? 4 : 0)) * kv->layers;
        for (int b = 0; b < m->batch; b++)
            bytes += row * (uint64_t)kv->context_lens[b];
    }
    return bytes;
}

uint64_t dy_llm_kv_state_bytes(const struct dy_model_config *c, const struct dy_llm_options *opt)
{
    int *layer_tier = malloc((size_t)c->layers * sizeof(int));
    int *budget = malloc((size_t)c->layers * sizeof(int));
    if (!layer_tier || !budget) {
        free(layer_tier);
        free(budget);
        return UINT64_MAX; /* cannot even plan it */
    }
    int count = tiers_of(c, opt, layer_tier, budget);
    uint64_t block = (uint64_t)opt->block_size, full = ((uint64_t)opt->max_tokens + block - 1) / block;
    uint64_t row = 2ull * c->kv_heads * (c->head_dim * dy_dtype_size(opt->kv_dtype) + (opt->kv_dtype == DY_I8 ? 4 : 0));
    uint64_t bytes = 0, least_room = opt->max_tokens;
    for (int t = 0; t < count; t++) {
        uint64_t blocks = full, layers = 0;
        if (opt->evict != DY_EVICT_NONE && budget[t] / block < full)
            blocks = budget[t] / block;
        least_room = blocks * block < least_room ? blocks * block : least_room;
        for (int l = 0; l < c->layers; l++)
            layers += layer_tier[l] == t;
        /* and the trash block when evicting */
        bytes += row * layers * block * (blocks * opt->max_batch + (opt->evict != DY_EVICT_NONE));
    }
    uint64_t rows = (uint64_t)dy_llm_pass_rows(opt);
    bytes += rows * count * sizeof(int32_t);
    if (scored(opt->evict) && (uint64_t)opt->max_prompt > least_room)
        bytes += rows * c->layers * (2 * dy_dtype_bytes(stage_dtype(opt->kv_dtype), kv_dim(c)) + sizeof(float)) +
                 rows * sizeof(int32_t);
    free(layer_tier);
    free(budget);
    return bytes;
}
