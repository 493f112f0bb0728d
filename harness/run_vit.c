/* `--workload vit` points: batches of random images through the encoder,
 * timed with device events; weights kept while consecutive points share
 * them. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../workloads/vit.h"
#include "harness.h"
#include "sweep.h"

static struct {
    dy_ctx *ctx;
    char key[2500];
    struct dy_vit_config cfg;
    struct dy_vit_weights w;
    char rank_map[sizeof ((struct dy_point *)0)->lora_rank_map]; /* as stored */
    bool loaded;
} cache;

void dy_vit_cache_release(void)
{
    if (cache.loaded)
        dy_vit_weights_free(cache.ctx, &cache.w);
    memset(&cache, 0, sizeof cache);
}

static void skip(struct dy_point *p, const char *status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void skip(struct dy_point *p, const char *status, const char *fmt, ...)
{
    va_list ap;
    snprintf(p->status, sizeof p->status, "%s", status);
    va_start(ap, fmt);
    vsnprintf(p->reason, sizeof p->reason, fmt, ap);
    va_end(ap);
}

/* Axes that mean nothing to an image encoder, or not yet. */
static bool vit_unsupported(const char *v[DY_AX_COUNT], struct dy_point *p)
{
    static const enum dy_axis llm_only[] = { DY_AX_EXPERTS, DY_AX_TOP_K, DY_AX_MOE_FFN_DIM,
                                             DY_AX_ROUTING, DY_AX_KV_BUDGET, DY_AX_KV_BUDGET_ALLOC };
    for (size_t i = 0; i < sizeof llm_only / sizeof llm_only[0]; i++)
        if (v[llm_only[i]]) {
            skip(p, "skipped", "--%s does not apply to the ViT workload", dy_axis_flag(llm_only[i]));
            return true;
        }
    if (v[DY_AX_LORA_RANK] && v[DY_AX_LORA_RANK_MAP]) {
        skip(p, "skipped", "--lora-rank and --lora-rank-map both give the ranks: use one");
        return true;
    }
    bool rank = (v[DY_AX_LORA_RANK] && strcmp(v[DY_AX_LORA_RANK], "0")) || v[DY_AX_LORA_RANK_MAP];
    if (v[DY_AX_LORA_MERGED] && !strcmp(v[DY_AX_LORA_MERGED], "1") && !rank) {
        skip(p, "skipped", "--lora-merged 1 needs a --lora-rank above 0 or a --lora-rank-map");
        return true;
    }
    if (v[DY_AX_LORA_TARGETS] && !strcmp(v[DY_AX_LORA_TARGETS], "attn+mlp") && !rank) {
        skip(p, "skipped", "--lora-targets attn+mlp needs a --lora-rank above 0 or a --lora-rank-map");
        return true;
    }
    if (strcmp(p->weight_dtype, "f32") && strcmp(p->weight_dtype, "f16") && strcmp(p->weight_dtype, "bf16")) {
        skip(p, "skipped", "--weight-dtype %s: quantized weights are not implemented yet", p->weight_dtype);
        return true;
    }
    return false;
}

static int load(dy_ctx *ctx, const char *v[DY_AX_COUNT], enum dy_dtype wdtype, struct dy_point *p)
{
    char key[sizeof cache.key];
    snprintf(key, sizeof key, "%p|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s", (void *)ctx,
             v[DY_AX_MODEL_DIR] ? v[DY_AX_MODEL_DIR] : "", v[DY_AX_MODEL] ? v[DY_AX_MODEL] : "",
             v[DY_AX_WEIGHT_DTYPE], v[DY_AX_PATCH] ? v[DY_AX_PATCH] : "", v[DY_AX_SEED],
             v[DY_AX_LAYERS] ? v[DY_AX_LAYERS] : "", v[DY_AX_LORA_RANK] ? v[DY_AX_LORA_RANK] : "0",
             v[DY_AX_LORA_MERGED] ? v[DY_AX_LORA_MERGED] : "0",
             v[DY_AX_LORA_TARGETS] ? v[DY_AX_LORA_TARGETS] : "attn",
             v[DY_AX_LORA_RANK_MAP] ? v[DY_AX_LORA_RANK_MAP] : "");
    if (cache.loaded && !strcmp(key, cache.key))
        return DY_OK;
    dy_vit_cache_release();
    char path[1200], err[1024];
    if (v[DY_AX_MODEL_DIR])
        snprintf(path, sizeof path, "%s/config.json", v[DY_AX_MODEL_DIR]);
    else if (dy_preset_path(v[DY_AX_MODEL], path, sizeof path) != DY_OK) {
        skip(p, "failed", "unknown model \"%s\"", v[DY_AX_MODEL]);
        return DY_E_INVALID;
    }
    int st = dy_vit_config_load(path, &cache.cfg, err, sizeof err);
    if (st != DY_OK) {
        skip(p, "skipped", "%s", err);
        return st;
    }
    if (p->patch != DY_NULL_INT && p->patch != cache.cfg.patch) {
        if (v[DY_AX_MODEL_DIR]) {
            skip(p, "skipped", "--patch %lld: a checkpoint's patch size (%d) is fixed",
                 (long long)p->patch, cache.cfg.patch);
            return DY_E_UNSUPPORTED;
        }
        cache.cfg.patch = (int)p->patch;
        cache.cfg.image_size = cache.cfg.image_size / cache.cfg.patch * cache.cfg.patch;
    }
    if (p->layers != DY_NULL_INT) {
        if (p->layers > cache.cfg.layers) {
            skip(p, "skipped", "--layers %lld exceeds the model's %d layers", (long long)p->layers,
                 cache.cfg.layers);
            return DY_E_INVALID;
        }
        cache.cfg.layers = (int)p->layers;
    }
    /* the adapters' places before the weights, so a bad rank map costs no
     * loading; it is a failed point (fixed, --resume runs it again), a
     * rank this model cannot take a skipped one */
    struct dy_vit_lora lora = { 0 };
    bool mlp = !strcmp(p->lora_targets, "attn+mlp"), merged = p->lora_merged == 1;
    if (v[DY_AX_LORA_RANK_MAP])
        st = dy_vit_lora_map_load(v[DY_AX_LORA_RANK_MAP], &cache.cfg, mlp, merged, &lora, err,
                                  sizeof err);
    else if (p->lora_rank > 0)
        st = dy_vit_lora_uniform(&cache.cfg, (int)p->lora_rank, mlp, merged, &lora, err,
                                 sizeof err);
    if (st != DY_OK) {
        skip(p, v[DY_AX_LORA_RANK_MAP] ? "failed" : "skipped", "%s", err);
        return st;
    }
    if (v[DY_AX_MODEL_DIR]) {
        struct dy_checkpoint *ck;
        st = dy_checkpoint_open(v[DY_AX_MODEL_DIR], &ck, err, sizeof err);
        if (st == DY_OK) {
            st = dy_vit_weights_load(ctx, &cache.cfg, wdtype, ck, &cache.w, err, sizeof err);
            dy_checkpoint_close(ck);
        }
    } else {
        st = dy_vit_weights_random(ctx, &cache.cfg, wdtype, (uint64_t)(p->seed == DY_NULL_INT ? 0 : p->seed),
                                   &cache.w);
        snprintf(err, sizeof err, "random weights: %s", dy_ctx_error(ctx));
    }
    uint64_t seed = (uint64_t)(p->seed == DY_NULL_INT ? 0 : p->seed);
    if (st == DY_OK && lora.layers) {
        cache.loaded = true; /* the weights exist: freed with the cache on failure */
        cache.ctx = ctx;
        st = dy_vit_lora_add(ctx, &cache.cfg, &cache.w, &lora, seed);
        snprintf(err, sizeof err, "LoRA adapters: %s", dy_ctx_error(ctx));
        if (v[DY_AX_LORA_RANK_MAP])
            dy_vit_lora_describe(&lora, cache.rank_map, sizeof cache.rank_map);
    }
    dy_vit_lora_free(&lora);
    if (st != DY_OK) {
        skip(p, st == DY_E_NOMEM ? "oom" : "failed", "%s", err);
        if (cache.loaded)
            dy_vit_cache_release();
        return st;
    }
    cache.ctx = ctx;
    cache.loaded = true;
    snprintf(cache.key, sizeof cache.key, "%s", key);
    return DY_OK;
}

int dy_vit_point(dy_ctx *ctx, const struct dy_ceilings *ceil, const char *v[],
                 struct dy_point *p, struct dy_sample **samples_out, int *sample_count)
{
    *samples_out = NULL;
    *sample_count = 0;
    p->input_len = p->output_len = DY_NULL_INT;
    snprintf(p->kv_dtype, sizeof p->kv_dtype, "%s", "");
    snprintf(p->evict, sizeof p->evict, "%s", "");
    p->block_size = DY_NULL_INT;
    if (vit_unsupported(v, p))
        return DY_OK;
    enum dy_dtype wdtype;
    dy_dtype_parse(p->weight_dtype, &wdtype);
    if (load(ctx, v, wdtype, p) != DY_OK)
        return DY_OK;
    snprintf(p->lora_rank_map, sizeof p->lora_rank_map, "%s", cache.rank_map);
    const struct dy_vit_config *cfg = &cache.cfg;
    int size = p->image_size == DY_NULL_INT ? cfg->image_size : (int)p->image_size;
    p->image_size = size;
    p->patch = cfg->patch;
    if (size % cfg->patch) {
        skip(p, "skipped", "--image-size %d is not a multiple of the patch size %d", size, cfg->patch);
        return DY_OK;
    }
    int batch = (int)p->batch, warmup = (int)p->warmup, repeat = (int)p->repeat;
    size_t pixels = (size_t)batch * cfg->channels * size * size;
    float *images = malloc(pixels * sizeof(float));
    double *ms = calloc((size_t)repeat, sizeof(double));
    struct dy_sample *samples = calloc((size_t)repeat, sizeof *samples);
    void *e0 = NULL, *e1 = NULL;
    struct dy_vit *m = NULL;
    int st = images && ms && samples ? DY_OK : DY_E_NOMEM;
    uint64_t key = dy_random_key((uint64_t)(p->seed == DY_NULL_INT ? 0 : p->seed), 0x696d616765ull);
    for (size_t i = 0; st == DY_OK && i < pixels; i++)
        images[i] = dy_random_unit(key, i);
    dy_mem_reset_peak(ctx);
    if (st || (st = dy_event_create(ctx, &e0)) || (st = dy_event_create(ctx, &e1)) ||
        (st = dy_vit_create(ctx, cfg, &cache.w, batch, size, &m)) ||
        (st = dy_vit_set_images(m, images, batch)))
        goto done;
    for (int rep = -warmup; rep < repeat; rep++) {
        uint64_t ns;
        if (rep == 0) /* DYNO_PROFILE_OPS: the timed forwards alone */
            dy_profile_reset(ctx);
        if ((st = dy_event_record(ctx, e0)) || (st = dy_vit_forward(m)) ||
            (st = dy_event_record(ctx, e1)) || (st = dy_sync(ctx)) ||
            (st = dy_event_elapsed_ns(ctx, e0, e1, &ns)))
            goto done;
        if (rep < 0)
            continue;
        ms[rep] = ns / 1e6;
        samples[rep] = (struct dy_sample){ DY_PHASE_E2E, rep, 0, (int64_t)ns };
    }
    p->e2e_ms = dy_percentile(ms, repeat, 50);
    p->e2e_ms_p90 = dy_percentile(ms, repeat, 90);
    p->e2e_ms_p99 = dy_percentile(ms, repeat, 99);
    p->images_s = batch / (p->e2e_ms / 1e3);
    p->weight_bytes = (int64_t)cache.w.bytes;
    p->peak_mem_bytes = (int64_t)dy_mem_peak(ctx);
    if (ceil->gemm_tflops > 0)
        p->flop_util = dy_vit_flops(cfg, &cache.w, size) * batch / (p->e2e_ms / 1e3) /
                       (ceil->gemm_tflops * 1e12);
    *samples_out = samples;
    *sample_count = repeat;
    samples = NULL;
done:
    if (st != DY_OK)
        skip(p, st == DY_E_NOMEM ? "oom" : "failed", "%s", dy_ctx_error(ctx));
    dy_vit_destroy(m);
    dy_event_destroy(ctx, e0);
    dy_event_destroy(ctx, e1);
    free(images);
    free(ms);
    free(samples);
    return st;
}
