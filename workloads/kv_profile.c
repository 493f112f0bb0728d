/* BaKlaVa's per-layer KV budgets (REFERENCE.md): a one-time profile of how
 * much each layer's attention changes the residual stream, then tiers of
 * budgets that keep the total. BaKlaVa gives each KV head its own budget;
 * the attention kernels take one block table per layer, so here a whole
 * layer gets one (llm_kv.c keeps one cache per budget tier). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "llm_internal.h"

/* The residual stream of the profile's prompt before the attention block
 * in flight, and each layer's importance as it is measured. */
struct dy_kv_profiler {
    float *before, *after;   /* host [rows, hidden] */
    double *importance;      /* [layers] */
};

int dy_kv_profile_before(struct dy_llm *m, int rows)
{
    return dy_buf_read(m->ctx, m->x, m->profile->before, (size_t)rows * m->cfg->hidden * sizeof(float));
}

int dy_kv_profile_after(struct dy_llm *m, int layer, int rows)
{
    struct dy_kv_profiler *p = m->profile;
    int hidden = m->cfg->hidden;
    int st = dy_buf_read(m->ctx, m->x, p->after, (size_t)rows * hidden * sizeof(float));
    if (st != DY_OK)
        return st;
    double change = 0;
    for (int r = 0; r < rows; r++) {
        const float *x = p->before + (size_t)r * hidden, *y = p->after + (size_t)r * hidden;
        double xy = 0, xx = 0, yy = 0;
        for (int i = 0; i < hidden; i++) {
            xy += (double)x[i] * y[i];
            xx += (double)x[i] * x[i];
            yy += (double)y[i] * y[i];
        }
        change += xx > 0 && yy > 0 ? 1.0 - xy / sqrt(xx * yy) : 0.0;
    }
    p->importance[layer] = change / rows;
    return DY_OK;
}

int dy_kv_profile(dy_ctx *ctx, const struct dy_model_config *cfg, const struct dy_llm_weights *w,
                  uint64_t seed, double *importance)
{
    int tokens = cfg->max_positions < DY_KV_PROFILE_TOKENS ? cfg->max_positions : DY_KV_PROFILE_TOKENS;
    struct dy_llm_options opt = {
        .weight_dtype = w->dtype, .kv_dtype = DY_F32, .block_size = 16, .max_batch = 1,
        .max_prompt = tokens, .max_tokens = tokens, .seed = seed,
    };
    struct dy_kv_profiler p = {
        .before = malloc((size_t)tokens * cfg->hidden * sizeof(float)),
        .after = malloc((size_t)tokens * cfg->hidden * sizeof(float)),
        .importance = importance,
    };
    int32_t *prompt = malloc((size_t)tokens * sizeof(int32_t));
    struct dy_llm *m = NULL;
    int st = DY_E_NOMEM;
    if (!p.before || !p.after || !prompt)
        goto out;
    uint64_t key = dy_random_key(seed, 0x6b7670726f66ull /* "kvprof" */);
    for (int i = 0; i < tokens; i++)
        prompt[i] = (int32_t)(dy_mix64(key + (uint64_t)i) % (uint64_t)cfg->vocab);
    if ((st = dy_llm_create(ctx, cfg, w, &opt, &m)))
        goto out;
    m->profile = &p;
    st = dy_llm_prefill(m, prompt, 1, tokens);
out:
    dy_llm_destroy(m);
    free(p.before);
    free(p.after);
    free(prompt);
    return st;
}

int dy_kv_tier_budgets(const double *importance, int layers, int budget, int block_size,
                       enum dy_evict evict, int *layer_budget)
{
    int base = budget > 0 && block_size > 0 ? (budget + block_size - 1) / block_size : 0;
    int least = dy_evict_least_blocks(evict);
    if (layers < 1 || base < least)
        return DY_E_INVALID;
    int step = (int)lround(DY_KV_TIER_STEP * base);
    if (step > base - least)
        step = base - least;
    int *order = malloc((size_t)layers * sizeof(int));
    if (!order)
        return DY_E_NOMEM;
    /* most important first, the lower layer first among equals */
    for (int i = 0; i < layers; i++) {
        int j = i;
        while (j > 0 && importance[order[j - 1]] < importance[i])
            j--;
        memmove(order + j + 1, order + j, (size_t)(i - j) * sizeof(int));
        order[j] = i;
    }
    int third = layers / 3;
    for (int rank = 0; rank < layers; rank++) {
        int blocks = rank < third ? base + step : rank >= layers - third ? base - step : base;
        layer_budget[order[rank]] = blocks * block_size;
    }
    free(order);
    return DY_OK;
}
