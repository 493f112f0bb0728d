/* `--workload moe-layer` points: one MoE layer (router, experts, shared
 * expert) alone over batch x input_len tokens, as MoE-Inference-Bench's FFN
 * and expert-count sweeps time it. The model is loaded truncated to one
 * layer; each repetition is one call of the block between device events. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "harness.h"
#include "timing.h"

int dy_moe_layer_point(dy_ctx *ctx, const struct dy_ceilings *ceil, const struct dy_model_config *cfg,
                       const struct dy_llm_weights *w, const struct dy_llm_options *opt,
                       struct dy_point *p, struct dy_sample **samples_out, int *sample_count)
{
    *samples_out = NULL;
    *sample_count = 0;
    int rows = (int)(p->batch * p->input_len), warmup = (int)p->warmup, repeat = (int)p->repeat;
    double *ms = calloc((size_t)repeat, sizeof(double));
    struct dy_sample *samples = calloc((size_t)repeat, sizeof *samples);
    void *e0 = NULL, *e1 = NULL;
    struct dy_llm *m = NULL;
    int st = ms && samples ? DY_OK : DY_E_NOMEM;
    dy_mem_reset_peak(ctx);
    if (st || (st = dy_event_create(ctx, &e0)) || (st = dy_event_create(ctx, &e1)) ||
        (st = dy_llm_create(ctx, cfg, w, opt, &m)) ||
        (st = dy_llm_moe_layer_setup(m, rows, (uint64_t)(p->seed == DY_NULL_INT ? 0 : p->seed))))
        goto done;
    for (int rep = -warmup; rep < repeat; rep++) {
        uint64_t ns;
        if ((st = dy_event_record(ctx, e0)) || (st = dy_llm_moe_layer_run(m, rows)) ||
            (st = dy_event_record(ctx, e1)) || (st = dy_sync(ctx)) ||
            (st = dy_event_elapsed_ns(ctx, e0, e1, &ns)))
            goto done;
        if (rep < 0)
            continue;
        ms[rep] = ns / 1e6;
        samples[rep] = (struct dy_sample){ DY_PHASE_E2E, rep, 0, (int64_t)ns };
    }
    struct dy_moe_stats stats;
    if ((st = dy_llm_moe_stats(m, &stats)))
        goto done;
    p->e2e_ms = dy_percentile(ms, repeat, 50);
    p->e2e_ms_p90 = dy_percentile(ms, repeat, 90);
    p->e2e_ms_p99 = dy_percentile(ms, repeat, 99);
    p->e2e_noise = dy_rel_stddev(ms, repeat);
    p->total_tok_s = rows / (p->e2e_ms / 1e3);
    p->weight_bytes = (int64_t)w->bytes;
    p->peak_mem_bytes = (int64_t)dy_mem_peak(ctx);
    p->expert_load_max = stats.load_max;
    p->expert_load_mean = stats.load_mean;
    p->expert_imbalance = stats.imbalance;
    p->experts_touched = stats.prefill_touched;
    /* what the block reads: the router, the experts routed to and the
     * shared expert; activations are left out */
    double h = cfg->hidden, esize = (double)dy_dtype_size(w->dtype);
    int k = opt->top_k ? opt->top_k : cfg->top_k;
    double bytes = esize * (h * cfg->experts + stats.prefill_touched * 3 * h * cfg->moe_ffn +
                            (cfg->shared_ffn ? 3 * h * cfg->shared_ffn + h : 0));
    double flops = 2.0 * rows * (h * cfg->experts + (double)k * 3 * h * cfg->moe_ffn +
                                 (cfg->shared_ffn ? 3 * h * cfg->shared_ffn + h : 0));
    p->step_bytes = (int64_t)bytes;
    if (ceil->copy_gbps > 0)
        p->bw_util = bytes / (p->e2e_ms / 1e3) / (ceil->copy_gbps * 1e9);
    if (ceil->gemm_tflops > 0)
        p->flop_util = flops / (p->e2e_ms / 1e3) / (ceil->gemm_tflops * 1e12);
    *samples_out = samples;
    *sample_count = repeat;
    samples = NULL;
done:
    dy_llm_destroy(m);
    dy_event_destroy(ctx, e0);
    dy_event_destroy(ctx, e1);
    free(ms);
    free(samples);
    return st;
}
