/* LExI's per-layer top-k (REFERENCE.md), chosen from the weights alone:
 * each layer's MoE block on the same synthetic N(0, 1) tokens with k = 1 ..
 * K (the model's k), the distance of each output from the k = K output, and
 * the k per layer that minimise the summed distance under a total budget. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "llm_internal.h"

enum { LEXI_TOKENS = 128 };

/* Standard normal values from the seed (Box-Muller over the counter-based
 * uniforms), identical on every backend because they are made here. */
static void normal_values(float *x, size_t count, uint64_t seed)
{
    uint64_t key = dy_random_key(seed, 0x6c657869ull /* "lexi" */);
    for (size_t i = 0; i < count; i += 2) {
        double u1 = (dy_random_unit(key, i) + 1.0) * 0.5, u2 = (dy_random_unit(key, i + 1) + 1.0) * 0.5;
        double r = sqrt(-2.0 * log(u1 > 0 ? u1 : 1e-12)), t = 2.0 * M_PI * u2;
        x[i] = (float)(r * cos(t));
        if (i + 1 < count)
            x[i + 1] = (float)(r * sin(t));
    }
}

/* The k of each layer (1 .. kmax) minimising sum(delta[layer][k - 1]) with
 * sum(k) = total: dp over layers and budget spent so far. */
static int choose(const double *delta, int layers, int kmax, int total, int *layer_k)
{
    size_t width = (size_t)total + 1;
    double *best = malloc(sizeof(double) * (size_t)(layers + 1) * width);
    int *pick = malloc(sizeof(int) * (size_t)layers * width);
    if (!best || !pick) {
        free(best);
        free(pick);
        return DY_E_NOMEM;
    }
    for (size_t b = 0; b < width; b++)
        best[b] = b == 0 ? 0.0 : DBL_MAX;
    for (int layer = 0; layer < layers; layer++) {
        double *prev = best + (size_t)layer * width, *next = prev + width;
        for (size_t b = 0; b < width; b++) {
            next[b] = DBL_MAX;
            for (int k = 1; k <= kmax && (size_t)k <= b; k++) {
                if (prev[b - k] == DBL_MAX)
                    continue;
                double cost = prev[b - k] + delta[(size_t)layer * kmax + k - 1];
                if (cost < next[b]) {
                    next[b] = cost;
                    pick[(size_t)layer * width + b] = k;
                }
            }
        }
    }
    size_t b = (size_t)total;
    for (int layer = layers - 1; layer >= 0; layer--) {
        layer_k[layer] = pick[(size_t)layer * width + b];
        b -= (size_t)layer_k[layer];
    }
    free(best);
    free(pick);
    return DY_OK;
}

int dy_moe_lexi(dy_ctx *ctx, const struct dy_model_config *cfg, const struct dy_llm_weights *w,
                int total, uint64_t seed, int *layer_k)
{
    int layers = cfg->layers, kmax = cfg->top_k;
    if (!cfg->experts || total < layers || total > layers * kmax)
        return DY_E_INVALID;
    size_t n = (size_t)LEXI_TOKENS * cfg->hidden;
    int *trial_k = malloc(sizeof(int) * (size_t)layers);
    float *x = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n), *ref = malloc(sizeof(float) * n);
    double *delta = malloc(sizeof(double) * (size_t)layers * kmax);
    struct dy_llm *m = NULL;
    int st = DY_E_NOMEM;
    if (!trial_k || !x || !y || !ref || !delta)
        goto out;
    for (int layer = 0; layer < layers; layer++)
        trial_k[layer] = kmax;
    struct dy_llm_options opt = {
        .weight_dtype = w->dtype, .kv_dtype = DY_F32, .block_size = 16, .max_batch = LEXI_TOKENS,
        .max_prompt = 1, .max_tokens = 2, .layer_top_k = trial_k,
    };
    normal_values(x, n, seed);
    if ((st = dy_llm_create(ctx, cfg, w, &opt, &m)))
        goto out;
    /* the block adds into x: start each trial from zero, xn holds the input */
    for (int layer = 0; layer < layers; layer++)
        for (int k = kmax; k >= 1; k--) {
            m->moe.layer_k[layer] = k;
            if ((st = dy_buf_write(ctx, m->xn, x, n * sizeof(float))) ||
                (st = dy_buf_fill(ctx, m->x, 0, n * sizeof(float))) ||
                (st = dy_moe_block(m, &w->layers[layer], layer, LEXI_TOKENS, 1, false)) ||
                (st = dy_buf_read(ctx, m->x, k == kmax ? ref : y, n * sizeof(float))))
                goto out;
            double sq = 0;
            for (size_t i = 0; k < kmax && i < n; i++)
                sq += ((double)y[i] - ref[i]) * ((double)y[i] - ref[i]);
            delta[(size_t)layer * kmax + k - 1] = sqrt(sq);
        }
    st = choose(delta, layers, kmax, total, layer_k);
out:
    dy_llm_destroy(m);
    free(trial_k);
    free(x);
    free(y);
    free(ref);
    free(delta);
    return st;
}
