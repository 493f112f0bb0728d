/* The MoE axes of a point (--experts, --moe-ffn-dim, --top-k, --routing):
 * what they do to a loaded model's config and to the decoder's options.
 * Their syntax was checked when the sweep was parsed (sweep.c). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moe_axes.h"

static bool parse_routing(const char *text, enum dy_routing *routing, double *zipf_s)
{
    *zipf_s = 0;
    if (!text || !strcmp(text, "model")) {
        *routing = DY_ROUTING_MODEL;
        return true;
    }
    if (!strcmp(text, "uniform")) {
        *routing = DY_ROUTING_UNIFORM;
        return true;
    }
    if (strncmp(text, "zipf:", 5))
        return false;
    char *end;
    errno = 0;
    *zipf_s = strtod(text + 5, &end);
    *routing = DY_ROUTING_ZIPF;
    return !errno && end != text + 5 && !*end && *zipf_s > 0 && isfinite(*zipf_s);
}

/* --top-k N, or lexi:TOTAL (*lexi_total set, *k 0). */
static bool parse_top_k(const char *text, int *k, int *lexi_total)
{
    *k = 0;
    *lexi_total = 0;
    if (!text)
        return true;
    const char *num = strncmp(text, "lexi:", 5) ? text : text + 5;
    char *end;
    errno = 0;
    long v = strtol(num, &end, 10);
    if (errno || end == num || *end || v < 1 || v > 1 << 20)
        return false;
    *(num == text ? k : lexi_total) = (int)v;
    return true;
}

static bool any_moe_axis(const char *v[DY_AX_COUNT], const char **flag)
{
    static const enum dy_axis axes[] = { DY_AX_EXPERTS, DY_AX_MOE_FFN_DIM, DY_AX_TOP_K, DY_AX_ROUTING };
    for (size_t i = 0; i < sizeof axes / sizeof axes[0]; i++)
        if (v[axes[i]]) {
            *flag = dy_axis_flag(axes[i]);
            return true;
        }
    return false;
}

bool dy_moe_axes_shape(const char *v[DY_AX_COUNT], struct dy_model_config *cfg, char *why,
                       size_t why_len)
{
    const char *flag;
    if (!cfg->experts) {
        if (!any_moe_axis(v, &flag))
            return true;
        snprintf(why, why_len, "--%s applies to MoE models; %s is dense", flag, cfg->name);
        return false;
    }
    if ((v[DY_AX_EXPERTS] || v[DY_AX_MOE_FFN_DIM]) && v[DY_AX_MODEL_DIR]) {
        snprintf(why, why_len, "--%s reshapes the experts: it needs random weights, not a checkpoint",
                 v[DY_AX_EXPERTS] ? "experts" : "moe-ffn-dim");
        return false;
    }
    if (v[DY_AX_EXPERTS])
        cfg->experts = atoi(v[DY_AX_EXPERTS]);
    if (v[DY_AX_MOE_FFN_DIM])
        cfg->moe_ffn = atoi(v[DY_AX_MOE_FFN_DIM]);
    if (cfg->top_k > cfg->experts)
        cfg->top_k = cfg->experts; /* the model's k, capped; an explicit --top-k is checked below */
    return true;
}

bool dy_moe_axes_options(const char *v[DY_AX_COUNT], const struct dy_model_config *cfg,
                         struct dy_llm_options *opt, int *lexi_total, char *why, size_t why_len)
{
    int k = 0;
    opt->top_k = 0;
    opt->routing = DY_ROUTING_MODEL;
    *lexi_total = 0;
    if (!cfg->experts)
        return true;
    parse_top_k(v[DY_AX_TOP_K], &k, lexi_total);
    parse_routing(v[DY_AX_ROUTING], &opt->routing, &opt->zipf_s);
    if (*lexi_total) {
        int lo = cfg->layers, hi = cfg->layers * cfg->top_k;
        if (*lexi_total < lo || *lexi_total > hi) {
            snprintf(why, why_len, "--top-k lexi:%d: the total must be between %d and %d (%d layers, "
                     "k 1 to %d each)", *lexi_total, lo, hi, cfg->layers, cfg->top_k);
            return false;
        }
        if (opt->routing != DY_ROUTING_MODEL) {
            snprintf(why, why_len, "--top-k lexi:%d chooses k for the router: it does not combine "
                     "with --routing %s", *lexi_total, v[DY_AX_ROUTING]);
            return false;
        }
        return true;
    }
    if (k > cfg->experts) {
        snprintf(why, why_len, "--top-k %d exceeds the %d experts", k, cfg->experts);
        return false;
    }
    opt->top_k = k;
    return true;
}
