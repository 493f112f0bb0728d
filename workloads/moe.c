/* The MoE block of Mixtral, Qwen2-MoE, OLMoE and Qwen3-MoE from backend ops:
 * router GEMM, softmax and top-k with the pairs grouped by expert, one
 * grouped GEMM for every expert's gate/up with its SiLU-mul, one for the
 * down projections with the weighted gather-add of each token's k rows into
 * the residual; then Qwen2-MoE's shared expert behind its sigmoid gate. A
 * backend runs each of the three as one op where it can (backend.h), else
 * dy_* composes them from the parts.
 *
 * Each layer's expert counts (moe_sort's offsets) are written straight into
 * a table of every step and layer, so load statistics cost the timed steps
 * nothing; dy_llm_moe_stats reads the table afterwards. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "llm_internal.h"

int dy_moe_layer_k(const struct dy_model_config *c, const struct dy_llm_options *opt, int layer)
{
    if (opt->layer_top_k)
        return opt->layer_top_k[layer];
    return opt->top_k > 0 ? opt->top_k : c->top_k;
}

/* The largest layer's k. */
static int top_k_of(const struct dy_model_config *c, const struct dy_llm_options *opt)
{
    int k = 0;
    for (int layer = 0; layer < c->layers; layer++) {
        int kl = dy_moe_layer_k(c, opt, layer);
        k = kl > k ? kl : k;
    }
    return k;
}

static int decode_steps(const struct dy_llm_options *opt)
{
    return opt->max_tokens - opt->max_prompt;
}

uint64_t dy_moe_state_bytes(const struct dy_model_config *c, const struct dy_llm_options *opt)
{
    uint64_t k = (uint64_t)top_k_of(c, opt), rows = (uint64_t)dy_llm_pass_rows(opt);
    uint64_t pairs = rows * k, slots = 2 + (uint64_t)decode_steps(opt);
    uint64_t bytes = rows * c->experts * 4 + pairs * 4 * 4 +
                     pairs * (2ull * c->moe_ffn + c->hidden) * 4 +
                     slots * c->layers * (c->experts + 1ull) * 4;
    if (opt->routing != DY_ROUTING_MODEL)
        bytes += (c->layers * pairs + slots * c->layers * opt->max_batch * k + pairs) * 4;
    return bytes;
}

/* Uniform in (0, 1) from a counter. */
static double unit_open(uint64_t key, uint64_t i)
{
    return ((dy_mix64(key + i * 0x9E3779B97F4A7C15ull) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

/* k distinct experts for each of `tokens` tokens, drawn without replacement
 * with probabilities proportional to weight[e] (Efraimidis and Spirakis:
 * the k largest u^(1/w)). */
static void draw_routes(uint64_t key, const double *weight, int experts, int k, size_t tokens,
                        int32_t *out, double *score)
{
    for (size_t t = 0; t < tokens; t++) {
        for (int e = 0; e < experts; e++)
            score[e] = log(unit_open(key, t * (uint64_t)experts + e)) / weight[e];
        for (int j = 0; j < k; j++) {
            int best = 0;
            for (int e = 1; e < experts; e++)
                if (score[e] > score[best])
                    best = e;
            out[t * k + j] = best;
            score[best] = -INFINITY;
        }
    }
}

/* Draws and uploads the forced routes of every prefill layer and decode
 * step, so the timed steps only read them. */
static int upload_forced_routes(struct dy_llm *m)
{
    const struct dy_model_config *c = m->cfg;
    struct dy_moe_state *s = &m->moe;
    int k = s->top_k, steps = decode_steps(&m->opt);
    size_t prefill_pairs = (size_t)m->max_rows * k, step_pairs = (size_t)m->opt.max_batch * k;
    double *weight = malloc(sizeof(double) * (size_t)c->experts);
    double *score = malloc(sizeof(double) * (size_t)c->experts);
    int32_t *ids = malloc(sizeof(int32_t) * (prefill_pairs > step_pairs ? prefill_pairs : step_pairs));
    float *route_w = malloc(sizeof(float) * prefill_pairs);
    int st = DY_E_NOMEM;
    if (!weight || !score || !ids || !route_w)
        goto out;
    for (int e = 0; e < c->experts; e++)
        weight[e] = m->opt.routing == DY_ROUTING_ZIPF ? pow(e + 1.0, -m->opt.zipf_s) : 1.0;
    for (size_t i = 0; i < prefill_pairs; i++)
        route_w[i] = 1.0f / (float)k;
    if ((st = dy_buf_write(m->ctx, s->forced_weights, route_w, prefill_pairs * sizeof(float))))
        goto out;
    for (int layer = 0; layer < c->layers; layer++) {
        draw_routes(dy_random_key(m->opt.seed, 0x726f757465ull + (uint64_t)layer), weight,
                    c->experts, k, (size_t)m->max_rows, ids, score);
        if ((st = dy_buf_write(m->ctx, dy_buf_at(s->forced_prefill, layer * prefill_pairs * 4), ids,
                               prefill_pairs * 4)))
            goto out;
    }
    for (int step = 0; step < steps; step++)
        for (int layer = 0; layer < c->layers; layer++) {
            size_t slot = (size_t)step * c->layers + layer;
            draw_routes(dy_random_key(m->opt.seed, 0x6465636f6465ull + slot), weight, c->experts, k,
                        (size_t)m->opt.max_batch, ids, score);
            if ((st = dy_buf_write(m->ctx, dy_buf_at(s->forced_decode, slot * step_pairs * 4), ids,
                                   step_pairs * 4)))
                goto out;
        }
    st = DY_OK;
out:
    free(weight);
    free(score);
    free(ids);
    free(route_w);
    return st;
}

int dy_moe_create(struct dy_llm *m)
{
    const struct dy_model_config *c = m->cfg;
    struct dy_moe_state *s = &m->moe;
    s->top_k = top_k_of(c, &m->opt);
    s->layer_k = malloc(sizeof(int) * (size_t)c->layers);
    if (!s->layer_k)
        return DY_E_NOMEM;
    for (int layer = 0; layer < c->layers; layer++) {
        s->layer_k[layer] = dy_moe_layer_k(c, &m->opt, layer);
        if (s->layer_k[layer] < 1 || s->layer_k[layer] > c->experts)
            return DY_E_INVALID;
    }
    /* forced routes are drawn k per token for one k */
    if (m->opt.layer_top_k && m->opt.routing != DY_ROUTING_MODEL)
        return DY_E_UNSUPPORTED;
    m->opt.layer_top_k = NULL; /* the caller's array need not outlive create */
    size_t rows = (size_t)m->max_rows, pairs = rows * s->top_k, f = 4;
    size_t ffn = (size_t)c->moe_ffn, h = (size_t)c->hidden;
    s->slots = 2 + decode_steps(&m->opt);
    int st;
    if ((st = dy_buf_alloc(m->ctx, rows * c->experts * f, &s->logits)) ||
        (st = dy_buf_alloc(m->ctx, pairs * 4, &s->ids)) ||
        (st = dy_buf_alloc(m->ctx, pairs * f, &s->weights)) ||
        (st = dy_buf_alloc(m->ctx, pairs * 4, &s->sorted)) ||
        (st = dy_buf_alloc(m->ctx, pairs * 4, &s->position)) ||
        (st = dy_buf_alloc(m->ctx, pairs * 2 * ffn * f, &s->gate_up)) ||
        (st = dy_buf_alloc(m->ctx, pairs * h * f, &s->out)) ||
        (st = dy_buf_alloc(m->ctx, (size_t)s->slots * c->layers * (c->experts + 1) * 4, &s->offsets)) ||
        (st = dy_buf_fill(m->ctx, s->offsets, 0, (size_t)s->slots * c->layers * (c->experts + 1) * 4)))
        return st;
    if (m->opt.routing == DY_ROUTING_MODEL)
        return DY_OK;
    size_t step_pairs = (size_t)m->opt.max_batch * s->top_k;
    if ((st = dy_buf_alloc(m->ctx, (size_t)c->layers * pairs * 4, &s->forced_prefill)) ||
        (st = dy_buf_alloc(m->ctx, (size_t)(s->slots - 2) * c->layers * step_pairs * 4 + 4,
                           &s->forced_decode)) ||
        (st = dy_buf_alloc(m->ctx, (size_t)c->layers * step_pairs * 4, &s->forced_step)) ||
        (st = dy_buf_alloc(m->ctx, pairs * f, &s->forced_weights)))
        return st;
    return upload_forced_routes(m);
}

void dy_moe_destroy(struct dy_llm *m)
{
    struct dy_moe_state *s = &m->moe;
    dy_buf *bufs[] = { &s->logits, &s->ids, &s->weights, &s->sorted, &s->position, &s->gate_up,
                       &s->out, &s->offsets, &s->forced_prefill, &s->forced_decode,
                       &s->forced_step, &s->forced_weights };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        dy_buf_free(m->ctx, bufs[i]);
    free(s->layer_k);
    s->layer_k = NULL;
}

/* Where this layer's routes come from (the router, or the forced table),
 * and the pairs grouped by expert into offsets. from_x: m->xn is the
 * post-attention norm of m->x, made here (in the router's op where the
 * model routes); else m->xn is given. */
static int route(struct dy_llm *m, const struct dy_llm_layer *l, int layer, int rows,
                 int prompt_len, bool from_x, dy_buf offsets, dy_buf *ids, dy_buf *weights)
{
    const struct dy_model_config *c = m->cfg;
    struct dy_moe_state *s = &m->moe;
    dy_buf none = { 0 };
    bool model = m->opt.routing == DY_ROUTING_MODEL, in_topk = model && from_x;
    int st;
    /* the norm, where it is the block's, and the router GEMM as ops of their
     * own unless the routing op makes the logits */
    if (!in_topk && ((from_x && (st = dy_llm_rms_norm(m, m->x, l->mlp_norm, m->xn, DY_F32, rows))) ||
                     (st = dy_llm_linear(m, m->xn, c->hidden, l->router, NULL, none, s->logits, c->experts, rows,
                                         c->experts, c->hidden, 0.0f))))
        return st;
    if (model) {
        struct dy_softmax_topk_desc d = {
            .logits = s->logits, .ids = s->ids, .weights = s->weights, .tokens = rows,
            .experts = c->experts, .k = s->layer_k[layer], .stride = c->experts,
            .renormalize = c->norm_topk_prob, .offsets = offsets, .sorted = s->sorted,
            .position = s->position,
        };
        if (in_topk)
            d.router = (struct dy_topk_router){ .x = m->x, .norm_weight = l->mlp_norm, .xn = m->xn,
                                                .w = l->router, .hidden = c->hidden, .eps = c->norm_eps,
                                                .weight_dtype = m->w->dtype };
        *ids = s->ids;
        *weights = s->weights;
        return dy_softmax_topk(m->ctx, &d);
    }
    size_t k = (size_t)s->top_k;
    if (prompt_len > 0)
        *ids = dy_buf_at(s->forced_prefill, (size_t)layer * m->max_rows * k * 4);
    else
        *ids = dy_buf_at(s->forced_step, (size_t)layer * m->opt.max_batch * k * 4);
    *weights = s->forced_weights;
    struct dy_moe_sort_desc sort = {
        .ids = *ids, .offsets = offsets, .sorted = s->sorted, .position = s->position,
        .pairs = rows * s->layer_k[layer], .experts = c->experts,
    };
    return dy_moe_sort(m->ctx, &sort);
}

static int shared_expert(struct dy_llm *m, const struct dy_llm_layer *l, int rows)
{
    const struct dy_model_config *c = m->cfg;
    struct dy_moe_state *s = &m->moe;
    int sf = c->shared_ffn, h = c->hidden, st;
    dy_buf none = { 0 };
    /* the routed experts are already in x: s->out and s->logits are free */
    struct dy_eltwise_desc gate = {
        .op = DY_ELT_GATED_ADD, .a = s->out, .b = s->logits, .out = m->x, .rows = rows,
        .cols = h, .a_stride = h, .b_stride = 1, .out_stride = h, .dtype = DY_F32,
    };
    /* gate/up with its SiLU-mul in gate_up's first half, which down reads */
    if ((st = dy_llm_linear_swiglu(m, m->xn, h, l->shared_gate_up, &l->shared_gate_up_q, m->gate_up, 2 * sf, rows,
                                   2 * sf, h)) ||
        (st = dy_llm_linear(m, m->gate_up, 2 * sf, l->shared_down, &l->shared_down_q, none, s->out, h, rows, h, sf,
                            0.0f)) ||
        (st = dy_llm_linear(m, m->xn, h, l->shared_gate, NULL, none, s->logits, 1, rows, 1, h, 0.0f)))
        return st;
    return dy_eltwise(m->ctx, &gate);
}

int dy_moe_block(struct dy_llm *m, const struct dy_llm_layer *l, int layer, int rows, int prompt_len,
                 bool from_x)
{
    const struct dy_model_config *c = m->cfg;
    struct dy_moe_state *s = &m->moe;
    int k = s->layer_k[layer], pairs = rows * k, ffn = c->moe_ffn, h = c->hidden, e = c->experts;
    int slot = prompt_len > 0 ? 0 : 1;
    dy_buf offsets = dy_buf_at(s->offsets, ((size_t)slot * c->layers + layer) * (e + 1) * 4);
    dy_buf ids, weights;
    int st = route(m, l, layer, rows, prompt_len, from_x, offsets, &ids, &weights);
    if (st != DY_OK)
        return st;
    struct dy_gemm_grouped_desc gate_up = {
        .a = m->xn, .a_rows = s->sorted, .b = l->expert_gate_up, .c = s->gate_up,
        .offsets = offsets, .rows = pairs, .experts = e, .n = 2 * ffn, .k = h, .a_row_div = k,
        .lda = h, .ldc = 2 * ffn, .b_expert_stride = (size_t)2 * ffn * h, .b_dtype = m->w->expert_dtype,
        .bq = l->expert_gate_up_q, .act = DY_ACT_SWIGLU,
    };
    /* the routes were written before the gate/up op: the down op may fetch
     * its experts while that one runs */
    struct dy_gemm_grouped_desc down = {
        .a = s->gate_up, .b = l->expert_down, .c = s->out, .offsets = offsets, .rows = pairs,
        .experts = e, .n = h, .k = ffn, .a_row_div = 1, .lda = 2 * ffn, .ldc = h,
        .b_expert_stride = (size_t)h * ffn, .b_dtype = m->w->expert_dtype, .bq = l->expert_down_q,
        .scatter = { .dst = m->x, .weights = weights, .position = s->position, .tokens = rows, .k = k,
                     .dst_stride = h },
        .routes_settled = true,
    };
    if ((st = dy_gemm_grouped(m->ctx, &gate_up)) || (st = dy_gemm_grouped(m->ctx, &down)))
        return st;
    return c->shared_ffn ? shared_expert(m, l, rows) : DY_OK;
}

int dy_moe_before_step(struct dy_llm *m)
{
    struct dy_moe_state *s = &m->moe;
    if (m->opt.routing == DY_ROUTING_MODEL)
        return DY_OK;
    size_t bytes = (size_t)m->cfg->layers * m->opt.max_batch * s->top_k * 4;
    return dy_buf_copy(m->ctx, s->forced_step, dy_buf_at(s->forced_decode, (size_t)(m->step - 1) * bytes),
                       bytes);
}

int dy_moe_after_step(struct dy_llm *m)
{
    size_t bytes = (size_t)m->cfg->layers * (m->cfg->experts + 1) * 4;
    return dy_buf_copy(m->ctx, dy_buf_at(m->moe.offsets, (size_t)(1 + m->step) * bytes),
                       dy_buf_at(m->moe.offsets, bytes), bytes);
}

int dy_llm_moe_layer_setup(struct dy_llm *m, int rows, uint64_t seed)
{
    if (!m->cfg->experts || rows < 1 || rows > m->max_rows)
        return DY_E_INVALID;
    struct dy_fill_random_desc d = {
        .dst = m->xn, .count = (size_t)rows * m->cfg->hidden, .dtype = DY_F32, .seed = seed,
        .stream = 0x6d6f656c61796572ull /* "moelayer" */, .scale = 1.0f,
    };
    m->step = 0;
    int st = dy_fill_random(m->ctx, &d);
    return st ? st : dy_buf_fill(m->ctx, m->x, 0, (size_t)rows * m->cfg->hidden * sizeof(float));
}

int dy_llm_moe_layer_run(struct dy_llm *m, int rows)
{
    return dy_moe_block(m, &m->w->layers[0], 0, rows, 1, false);
}

int dy_llm_moe_stats(struct dy_llm *m, struct dy_moe_stats *out)
{
    const struct dy_model_config *c = m->cfg;
    memset(out, 0, sizeof *out);
    if (!c->experts)
        return DY_E_INVALID;
    int e = c->experts, slots = 2 + m->step;
    size_t n = (size_t)slots * c->layers * (e + 1);
    int32_t *off = malloc(n * sizeof *off);
    if (!off)
        return DY_E_NOMEM;
    int st = dy_buf_read(m->ctx, m->moe.offsets, off, n * sizeof *off);
    if (st != DY_OK) {
        free(off);
        return st;
    }
    uint64_t expert_bytes = dy_llm_expert_bytes(m->w, c);
    double touched = 0;
    for (int slot = 0; slot < slots; slot++)
        for (int layer = 0; layer < c->layers && slot != 1; layer++) {
            const int32_t *o = off + ((size_t)slot * c->layers + layer) * (e + 1);
            int max = 0, active = 0;
            for (int x = 0; x < e; x++) {
                int count = o[x + 1] - o[x];
                max = count > max ? count : max;
                active += count > 0;
            }
            if (slot == 0) {
                out->load_max += (double)max / c->layers;
                out->load_mean += (double)o[e] / e / c->layers;
                out->prefill_touched += (double)active / c->layers;
            } else {
                touched += active;
            }
        }
    free(off);
    out->imbalance = out->load_mean > 0 ? out->load_max / out->load_mean : 0;
    if (m->step > 0) {
        out->experts_touched = touched / ((double)m->step * c->layers);
        out->expert_bytes = touched / m->step * (double)expert_bytes;
    }
    return DY_OK;
}
