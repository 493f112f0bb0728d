/* The decoder's state, shared by llm.c (attention, the dense MLP, the step
 * drivers) and moe.c (the MoE block). Not part of the workload's API. */
#ifndef DY_LLM_INTERNAL_H
#define DY_LLM_INTERNAL_H

#include "llm.h"

struct dy_moe_state {
    int top_k;                  /* the largest layer's k: what buffers hold */
    int *layer_k;               /* [layers] */
    dy_buf logits;              /* f32 [rows, experts]; the shared gate's logit after */
    dy_buf ids, weights;        /* i32, f32 [rows * k] */
    dy_buf sorted, position;    /* i32 [rows * k] */
    dy_buf gate_up, out;        /* f32 [rows * k, 2 * ffn] (SiLU-mul in the first ffn), [rows * k, hidden] */
    /* expert counts: offsets [slots, layers, experts + 1]; slot 0 is the
     * prefill, slot 1 the decode step running (fixed, so that a recorded
     * graph can replay it), copied after each step to slot 2 + its index */
    dy_buf offsets;
    int slots;
    /* forced routings, drawn once: [layers, max_rows * k] for the prefill
     * and [steps, layers, max_batch * k] for the decode steps, each step's
     * copied to forced_step before it runs */
    dy_buf forced_prefill, forced_decode, forced_step, forced_weights;
};

/* A recorded decode step, replayed while the batch and the bound on the
 * context (rounded up, see llm.c) stay the same. */
struct dy_step_graph {
    int batch, bound;
    bool ran;                     /* run once eagerly: lazy allocations are done */
    void *graph;
};

enum { DY_STEP_GRAPHS = 64 };

struct dy_kv_profiler;

struct dy_llm {
    dy_ctx *ctx;
    const struct dy_model_config *cfg;
    const struct dy_llm_weights *w;
    struct dy_llm_options opt;
    /* one paged cache per budget tier (llm_kv.c): layer l lives in
     * kv[layer_tier[l]] as its layer tier_layer[l]; one tier unless
     * per-layer budgets differ */
    struct dy_kv_cache *kv;
    int kv_count;
    int *layer_tier, *tier_layer;
    int max_rows;                 /* rows of one forward pass: a prefill chunk or a step */
    int prefill_seqs;             /* sequences per prefill pass */
    int batch;                    /* sequences in flight */
    int fwd_seq0, fwd_seqs;       /* the sequences the forward pass in flight serves */
    int step;                     /* decode steps since the prefill */
    int context_bound;            /* the decode step's max_context for attention */
    bool use_graphs;
    struct dy_step_graph graphs[DY_STEP_GRAPHS];
    int graph_count;
    /* activations: x (the residual stream), last and logits f32; xn, qkv,
     * attn and gate_up (whose first half takes the SiLU product, an MoE
     * shared expert's too) in `act`, the pass's activation dtype */
    dy_buf x, xn, qkv, attn, gate_up, last, logits;
    enum dy_dtype act;
    /* i32 inputs; slots: [kv_count, max_rows], each tier's own */
    dy_buf ids, next_ids, positions, slots, last_index;
    dy_buf inv_freq;
    int32_t *host_slots, *host_positions;
    /* eviction scores: blocks to score and their per-layer scores */
    dy_buf score_blocks, scores;
    int32_t *host_score_blocks;
    float *host_scores;
    /* PagedEviction's prefill (llm_kv.c): a pass's K and V of every layer
     * ([layers][K, V][max_rows, kv_dim] in stage_dtype) wait here while
     * their tokens are scored (stage_rows: 0, 1, ...; token_scores: f32
     * [layers, rows]) and chosen; staging: the pass in flight writes here */
    dy_buf stage, stage_rows, token_scores;
    enum dy_dtype stage_dtype;
    float *host_token_scores, *host_prompt_scores;
    bool staging;
    struct dy_kv_profiler *profile;   /* BaKlaVa's profile in progress (kv_profile.c) */
    struct dy_moe_state moe;
};

/* Sequences per prefill pass under opt, and the rows one forward pass
 * holds (a prefill pass, or a decode step's batch if that is more). */
int dy_llm_prefill_seqs(const struct dy_llm_options *opt);
int dy_llm_pass_rows(const struct dy_llm_options *opt);

/* c[rows, n] (+)= a[rows, k] . w[n, k]^T: w in the weights' matrix format
 * with its scales wq, or a vector-like matrix (the router) in their dtype
 * when wq is NULL */
int dy_llm_linear(struct dy_llm *m, dy_buf a, int lda, dy_buf w, const struct dy_quant *wq, dy_buf bias,
                  dy_buf c, int ldc, int rows, int n, int k, float beta);
/* the same with DY_ACT_SWIGLU (beta 0): silu(gate) * up into c's first n/2
 * columns, a gate/up projection and its SiLU-mul as one op */
int dy_llm_linear_swiglu(struct dy_llm *m, dy_buf a, int lda, dy_buf w, const struct dy_quant *wq, dy_buf c,
                         int ldc, int rows, int n, int k);

/* llm_kv.c: the caches, created and freed with the decoder */
int dy_llm_kv_create(struct dy_llm *m);
void dy_llm_kv_destroy(struct dy_llm *m);
void dy_llm_kv_reset(struct dy_llm *m);
/* The cache that holds `layer`, and the layer's index in it. */
struct dy_kv_cache *dy_llm_layer_kv(const struct dy_llm *m, int layer, int *index);
/* Around the forward pass of prefill sequences [seq0, seq0 + seqs): the
 * slots of their prompts in every tier (uploaded), or staging when a
 * scored policy must choose tokens, which prompt_end does. */
int dy_llm_kv_prompt(struct dy_llm *m, int seq0, int seqs, int prompt_len);
int dy_llm_kv_prompt_end(struct dy_llm *m, int seq0, int seqs, int prompt_len);
/* kv_append of `rows` tokens' k and v (f32, `stride` apart) of `layer`. */
int dy_llm_kv_append(struct dy_llm *m, int layer, dy_buf k, dy_buf v, int stride, int rows);
/* The same append as a GEMM's (dy_gemm_desc.append) of C's columns k_col
 * and v_col on; false where it cannot ride on one (int8 caches, whose
 * scales it does not write): dy_llm_kv_append then. */
bool dy_llm_gemm_append(const struct dy_llm *m, int layer, int k_col, int v_col, struct dy_gemm_append *a);
/* Before a decode step: evictions, then the new token's slot in every tier
 * and its position, uploaded with the block tables. */
int dy_llm_kv_step(struct dy_llm *m);
/* KV bytes a decode step reads at the current lengths. */
uint64_t dy_llm_kv_read_bytes(const struct dy_llm *m);
/* Device bytes of the caches, the slots and the staging under opt. */
uint64_t dy_llm_kv_state_bytes(const struct dy_model_config *cfg, const struct dy_llm_options *opt);

/* kv_profile.c: called by the forward pass around each attention block
 * while m->profile is set */
int dy_kv_profile_before(struct dy_llm *m, int rows);
int dy_kv_profile_after(struct dy_llm *m, int layer, int rows);

/* moe.c */
int dy_moe_create(struct dy_llm *m);
void dy_moe_destroy(struct dy_llm *m);
/* x += MoE(xn) for `rows` tokens of layer `layer`; xn holds the normalised
 * input. prompt_len > 0 for a prefill. */
/* from_x: the post-attention norm of m->x into m->xn is the block's (in
 * the router's op where the backend can); else m->xn is given */
int dy_moe_block(struct dy_llm *m, const struct dy_llm_layer *l, int layer, int rows, int prompt_len,
                 bool from_x);
/* RMSNorm of `rows` f32 rows of x with weight into rows of out_dtype */
int dy_llm_rms_norm(struct dy_llm *m, dy_buf x, dy_buf weight, dy_buf out, enum dy_dtype out_dtype, int rows);
/* Around a decode step: the step's forced routes in, its expert counts out. */
int dy_moe_before_step(struct dy_llm *m);
int dy_moe_after_step(struct dy_llm *m);
uint64_t dy_moe_state_bytes(const struct dy_model_config *cfg, const struct dy_llm_options *opt);
/* Experts per token of `layer` under opt (the per-layer map, --top-k, or
 * the model's). */
int dy_moe_layer_k(const struct dy_model_config *cfg, const struct dy_llm_options *opt, int layer);

#endif
