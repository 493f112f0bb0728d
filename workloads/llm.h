/* The dense-LLM workload: weights, paged KV cache, prefill and decode steps,
 * built from backend ops only so the op sequence is the same on every
 * backend. */
#ifndef DY_LLM_H
#define DY_LLM_H

#include "model.h"
#include "../backends/quant.h"

/* ---- weights (workloads/weights.c) ----------------------------------- */

struct dy_llm_layer {
    dy_buf attn_norm;     /* [hidden] */
    dy_buf qkv;           /* [q_dim + 2 * kv_dim, hidden]: q, k, v stacked */
    dy_buf qkv_bias;      /* [q_dim + 2 * kv_dim] or none */
    dy_buf o;             /* [hidden, q_dim] */
    dy_buf o_bias;        /* [hidden] or none (attention_bias on Llama) */
    dy_buf q_norm, k_norm; /* [q_dim], [kv_dim] (OLMoE) or [head_dim] (Qwen3), or none */
    dy_buf mlp_norm;      /* [hidden] */
    /* dense models */
    dy_buf gate_up;       /* [2 * intermediate, hidden]: gate, up stacked */
    dy_buf down;          /* [hidden, intermediate] */
    /* MoE models */
    dy_buf router;        /* [experts, hidden] */
    dy_buf expert_gate_up; /* [experts, 2 * moe_ffn, hidden]: each expert's gate, up stacked */
    dy_buf expert_down;   /* [experts, hidden, moe_ffn] */
    dy_buf shared_gate_up; /* [2 * shared_ffn, hidden] (Qwen2-MoE) or none */
    dy_buf shared_down;   /* [hidden, shared_ffn] */
    dy_buf shared_gate;   /* [1, hidden]: sigmoid gate of the shared expert */
    /* scales of the matrices above when they are quantized (see
     * dy_llm_weights.mat_dtype); each expert has its own, one expert's
     * after another's */
    struct dy_quant qkv_q, o_q, gate_up_q, down_q, expert_gate_up_q, expert_down_q,
        shared_gate_up_q, shared_down_q;
};

struct dy_llm_weights {
    enum dy_dtype dtype;  /* vectors, embedding, router; matrices unless quantized */
    /* The matrices' dtype (q/k/v, o, MLP, shared expert, lm_head) and the
     * experts': dtype, or fp8/int8/int4 with scales beside them */
    enum dy_dtype mat_dtype, expert_dtype;
    struct dy_qformat quant; /* group and symmetry of the quantized ones */
    dy_buf embed;         /* [vocab, hidden] */
    dy_buf final_norm;    /* [hidden] */
    dy_buf lm_head;       /* [vocab, hidden]; the embedding's view when tied */
    struct dy_quant lm_head_q;
    struct dy_llm_layer *layers;
    int layer_count;
    uint64_t bytes;       /* device bytes of all weights */
    /* quantized weights borrow the vectors, the embedding and the router
     * from the weights they were made from, which must outlive them */
    bool borrowed;
    char *expert_bits;    /* MoPEQ: each expert's bits, a digit per expert,
                           * layers comma-separated; NULL otherwise */
};

/* A --weight-dtype: every matrix in `dtype` (f32, f16, bf16); or quantized
 * from bf16 weights, every matrix in quant (fp8, int8, int4, int4-asym);
 * or MoPEQ (mopeq_bits > 0): each expert of an MoE model gets 2, 3 or 4
 * bits (symmetric, group 128, in int4 storage) from its sensitivity, the
 * mean being mopeq_bits, other matrices staying bf16. */
struct dy_llm_format {
    enum dy_dtype dtype;
    struct dy_qformat quant;  /* quant.dtype == dtype: not quantized */
    double mopeq_bits;
};

/* Parses a --weight-dtype value; false when it names no format. */
bool dy_llm_format_parse(const char *name, struct dy_llm_format *out);
static inline bool dy_llm_format_quantized(const struct dy_llm_format *f)
{
    return f->quant.dtype != f->dtype || f->mopeq_bits > 0;
}

/* Random weights from fill_random(seed): bit-identical on every backend.
 * The caller owns *w and frees it with dy_llm_weights_free. */
int dy_llm_weights_random(dy_ctx *ctx, const struct dy_model_config *cfg, enum dy_dtype dtype,
                          uint64_t seed, struct dy_llm_weights *w);
/* Weights from a checkpoint, converted to `dtype` on the host. On a missing
 * or misshapen tensor returns DY_E_FORMAT with the file and tensor in err. */
int dy_llm_weights_load(dy_ctx *ctx, const struct dy_model_config *cfg, enum dy_dtype dtype,
                        const struct dy_checkpoint *ck, struct dy_llm_weights *w, char *err,
                        size_t err_len);
void dy_llm_weights_free(dy_ctx *ctx, struct dy_llm_weights *w);
/* Quantizes base's matrices into *out (workloads/weights_quant.c): each
 * read back, quantized on the host by backends/quant.c (the same bits for
 * every backend), and uploaded. *out borrows the rest from base. On failure
 * err says why. */
int dy_llm_weights_quantize(dy_ctx *ctx, const struct dy_model_config *cfg,
                            const struct dy_llm_weights *base, const struct dy_llm_format *f,
                            struct dy_llm_weights *out, char *err, size_t err_len);
/* Device bytes of one [rows, cols] matrix of `dtype` (scales included),
 * as the weights' format stores it. */
uint64_t dy_llm_mat_bytes(const struct dy_llm_weights *w, enum dy_dtype dtype, size_t rows, size_t cols);
/* Device bytes of one expert (gate, up and down). */
uint64_t dy_llm_expert_bytes(const struct dy_llm_weights *w, const struct dy_model_config *cfg);
/* Checks that the checkpoint holds every tensor the model reads, with the
 * right shape, without reading any data: DY_E_FORMAT with the file and the
 * tensor in err otherwise. */
int dy_llm_checkpoint_check(const struct dy_model_config *cfg, const struct dy_checkpoint *ck,
                            char *err, size_t err_len);

/* ---- paged KV cache (workloads/kv_cache.c) ---------------------------- */

/* Eviction (REFERENCE.md), whole blocks at a time: freeing a block-table
 * entry is all it takes, so the attention kernels are unchanged. A
 * sequence holds at most budget_blocks blocks; when its newest block is
 * full and another is needed, one goes: the oldest (window), the oldest
 * after the first, which holds the attention sinks (streaming), or the
 * middle block (not the first, not the newest) of lowest score summed over
 * the cache's layers: 1/||k|| (inv-key-norm) or ||v||/||k|| (paged). A
 * prompt longer than the budget keeps the first block (not for window) and
 * its most recent tokens (window, streaming) or, for the scored policies,
 * PagedEviction's choice by token score (dy_kv_cache_prompt_scored); the
 * others are written to a block no sequence reads. */
enum dy_evict {
    DY_EVICT_NONE = 0,
    DY_EVICT_WINDOW,
    DY_EVICT_STREAMING,
    DY_EVICT_INV_KEY_NORM,
    DY_EVICT_PAGED,
};

/* Parses a --evict value; false when it is not one. */
bool dy_evict_parse(const char *name, enum dy_evict *out);
/* The fewest blocks a budget may hold under the policy: two for window
 * (the oldest and the newest), three for the others, which evict neither
 * the first block nor the newest. */
int dy_evict_least_blocks(enum dy_evict evict);

struct dy_kv_cache {
    int layers, kv_heads, head_dim, block_size;
    int num_blocks, batch, max_blocks_per_seq;
    enum dy_dtype dtype;
    dy_buf storage;             /* all layers' K then V blocks */
    size_t layer_bytes;         /* bytes of one layer's K (or V) */
    dy_buf scales;              /* int8: all layers' K then V scales [slots, kv_heads] f32 */
    size_t layer_scale_bytes;
    int32_t *block_table;       /* host [batch, max_blocks_per_seq], -1 = none */
    int32_t *context_lens;      /* host [batch] */
    int32_t *free_blocks;       /* stack of free block ids */
    int free_count;
    /* eviction */
    enum dy_evict evict;
    int budget_blocks;          /* blocks a sequence may hold (evict != none) */
    int32_t trash_block;        /* where a prompt's dropped tokens are written */
    int32_t *seq_tokens;        /* host [batch]: tokens seen, the next position */
    float *block_scores;        /* host [num_blocks], summed over layers; NAN: not scored */
    uint64_t evicted_blocks;    /* since the last reset */
    dy_buf block_table_dev, context_lens_dev;
    bool table_dirty;
};

/* Room for `batch` sequences of up to `max_tokens` tokens each, or with
 * evict != none of budget tokens each (rounded up to whole blocks, at
 * least dy_evict_least_blocks), for every layer of cfg. */
int dy_kv_cache_create(dy_ctx *ctx, const struct dy_model_config *cfg, enum dy_dtype dtype,
                       int block_size, int batch, int max_tokens, struct dy_kv_cache *kv);
/* The same for `layers` of the model's layers (a budget tier holds some). */
int dy_kv_cache_create_evicting(dy_ctx *ctx, const struct dy_model_config *cfg, int layers,
                                enum dy_dtype dtype, int block_size, int batch, int max_tokens,
                                enum dy_evict evict, int budget, struct dy_kv_cache *kv);
/* Slots of a whole prompt of `count` tokens for sequence `seq` (empty),
 * dropping what the budget cannot hold (those go to the trash block). */
int dy_kv_cache_prompt(struct dy_kv_cache *kv, int seq, int count, int32_t *slots);
/* True when a prompt of `count` tokens is chosen by token score: a scored
 * policy and a prompt longer than the budget's whole blocks. */
bool dy_kv_cache_selects(const struct dy_kv_cache *kv, int count);
/* PagedEviction's prefill: of a prompt of `count` tokens, keeps the first
 * block, the tokens of the prompt's last block (1 to block_size of them)
 * and the budget_blocks * block_size - 2 * block_size middle tokens of
 * highest scores[t] (ties: the earlier token), in their order, laid into
 * blocks; the others go to the trash block. Without dy_kv_cache_selects,
 * dy_kv_cache_prompt. */
int dy_kv_cache_prompt_scored(struct dy_kv_cache *kv, int seq, int count, const float *scores,
                              int32_t *slots);
/* True when the next token of `seq` needs a block and the sequence holds
 * its budget: one of its blocks must go first. */
bool dy_kv_cache_must_evict(const struct dy_kv_cache *kv, int seq);
/* The blocks of `seq` that the scored policies may evict (the middle ones);
 * returns their count. */
int dy_kv_cache_candidates(const struct dy_kv_cache *kv, int seq, int32_t *blocks);
/* Frees one block of `seq` by the policy (scored policies: every candidate
 * scored). */
int dy_kv_cache_evict(struct dy_kv_cache *kv, int seq);
void dy_kv_cache_free(dy_ctx *ctx, struct dy_kv_cache *kv);
/* Empties every sequence and returns all blocks to the free list. */
void dy_kv_cache_reset(struct dy_kv_cache *kv);
/* Reserves the slots of `count` new tokens of sequence `seq`, writing them to
 * slots[0..count). DY_E_NOMEM when no block is free. */
int dy_kv_cache_extend(struct dy_kv_cache *kv, int seq, int count, int32_t *slots);
/* Uploads the block table and context lengths if they changed. */
int dy_kv_cache_sync(dy_ctx *ctx, struct dy_kv_cache *kv);
dy_buf dy_kv_cache_k(const struct dy_kv_cache *kv, int layer);
dy_buf dy_kv_cache_v(const struct dy_kv_cache *kv, int layer);
/* An int8 cache's per-slot, per-head scales of K and V (none otherwise). */
dy_buf dy_kv_cache_k_scale(const struct dy_kv_cache *kv, int layer);
dy_buf dy_kv_cache_v_scale(const struct dy_kv_cache *kv, int layer);
/* Device bytes of the whole cache. */
uint64_t dy_kv_cache_bytes(const struct dy_kv_cache *kv);

/* BaKlaVa's per-layer budgets (workloads/kv_profile.c), per layer rather
 * than per KV head: the attention kernels take one block table per call,
 * so layers of one budget share a cache (a tier) and heads cannot differ.
 * The profile prefills DY_KV_PROFILE_TOKENS seeded tokens (a KV cache in
 * f32, nothing evicted) and gives each layer the importance 1 - cos(x, x')
 * of the residual stream x before and x' after its attention block, the
 * mean over the tokens. importance gets cfg->layers values. */
enum { DY_KV_PROFILE_TOKENS = 128 };
int dy_kv_profile(dy_ctx *ctx, const struct dy_model_config *cfg, const struct dy_llm_weights *w,
                  uint64_t seed, double *importance);
/* Tiered budgets from importance[layers], in tokens: the most important
 * third of the layers (ties to the lower layer) gets C (1 + a), the least
 * important third C (1 - a), the rest C, with C the budget in whole blocks
 * and a = DY_KV_TIER_STEP (BaKlaVa's alpha = beta, so that the sum stays
 * layers * C), the step rounded to whole blocks and cut so that no layer
 * holds fewer than dy_evict_least_blocks. DY_E_INVALID when C is below
 * that least. */
#define DY_KV_TIER_STEP 0.5
int dy_kv_tier_budgets(const double *importance, int layers, int budget, int block_size,
                       enum dy_evict evict, int *layer_budget);

/* ---- the model (workloads/llm.c) -------------------------------------- */

/* How an MoE layer picks its experts. Forced routings replace the router's
 * choice (the router still runs) with draws fixed by the seed, to study
 * load balance apart from what random weights happen to route. */
enum dy_routing {
    DY_ROUTING_MODEL = 0,  /* the router's softmax and top-k */
    DY_ROUTING_UNIFORM,    /* k distinct experts, uniformly at random, weights 1/k */
    DY_ROUTING_ZIPF,       /* k distinct experts drawn with P(e) ~ 1/(e+1)^s, weights 1/k */
};

struct dy_llm_options {
    enum dy_dtype weight_dtype;
    enum dy_dtype kv_dtype;
    int block_size;
    int max_batch;
    int max_prompt;       /* longest prompt to be prefilled */
    int max_tokens;       /* longest sequence: prompt + generated */
    int prefill_seqs;     /* sequences per prefill pass (activations scale with it); 0: all */
    enum dy_evict evict;  /* KV eviction (DY_EVICT_NONE: none) */
    int kv_budget;        /* tokens kept per sequence when evicting */
    const int *layer_kv_budget; /* [layers] per-layer budgets (BaKlaVa) when evicting; NULL: kv_budget */
    /* MoE only */
    int top_k;            /* experts per token; 0: the model's */
    const int *layer_top_k; /* [layers] per-layer k (LExI), overriding top_k; NULL: none */
    enum dy_routing routing;
    double zipf_s;        /* DY_ROUTING_ZIPF's exponent */
    uint64_t seed;        /* of the forced routings */
};

/* Expert load and traffic of an MoE model's last prefill and decode steps,
 * from the per-layer expert counts kept on the device. */
struct dy_moe_stats {
    double load_max;          /* prefill: tokens of the busiest expert, mean over layers */
    double load_mean;         /* prefill: tokens per expert (tokens x k / experts) */
    double imbalance;         /* load_max / load_mean */
    double prefill_touched;   /* prefill: experts with a token, per layer (mean) */
    double experts_touched;   /* decode: experts with a token, per layer and step (mean) */
    double expert_bytes;      /* decode: expert weight bytes read per step (mean) */
};

struct dy_llm;

/* Creates the model's activations and KV cache around loaded weights; the
 * model borrows cfg and w, which must outlive it. */
int dy_llm_create(dy_ctx *ctx, const struct dy_model_config *cfg, const struct dy_llm_weights *w,
                  const struct dy_llm_options *opt, struct dy_llm **out);
void dy_llm_destroy(struct dy_llm *m);

/* Starts `batch` sequences from `prompt_len` tokens each (host ids
 * [batch * prompt_len]); runs the prefill and leaves the first generated
 * token of each sequence on the device. */
int dy_llm_prefill(struct dy_llm *m, const int32_t *tokens, int batch, int prompt_len);
/* One decode step for every sequence: feeds the last generated tokens and
 * leaves the next ones on the device. */
int dy_llm_decode(struct dy_llm *m);
/* Replaces the last generated tokens ([batch], host) with these: the next
 * decode step feeds them (teacher forcing). */
int dy_llm_force_tokens(struct dy_llm *m, const int32_t *tokens);
/* Reads the last generated token of each sequence ([batch]). */
int dy_llm_read_tokens(struct dy_llm *m, int32_t *tokens);
/* Reads the logits behind the last generated tokens ([batch, vocab], f32). */
int dy_llm_read_logits(struct dy_llm *m, float *logits);

/* Reads the routing statistics of the last prefill and decode steps
 * (a device read: call it outside timed regions). DY_E_INVALID for a dense
 * model. */
int dy_llm_moe_stats(struct dy_llm *m, struct dy_moe_stats *out);

/* --workload moe-layer: layer 0's MoE block alone, as MoE-Inference-Bench
 * times its FFN and expert sweeps. Setup writes `rows` tokens (at most
 * max_batch * max_prompt) of seeded random normalised activations; each run
 * routes them and adds the block's output to the residual. Routing
 * statistics land where a prefill's do. */
int dy_llm_moe_layer_setup(struct dy_llm *m, int rows, uint64_t seed);
int dy_llm_moe_layer_run(struct dy_llm *m, int rows);

/* LExI (REFERENCE.md): per-layer top-k from the weights alone. Feeds the
 * same seeded N(0, 1) tokens through each layer's MoE block with k = 1 ..
 * the model's k, measures each output's distance from the model's k
 * (Frobenius norm), and picks the k of every layer that minimise the summed
 * distance with sum(k) = total (dynamic programming, exact). layer_k gets
 * cfg->layers values; DY_E_INVALID when total is outside [layers,
 * layers x k]. */
int dy_moe_lexi(dy_ctx *ctx, const struct dy_model_config *cfg, const struct dy_llm_weights *w,
                int total, uint64_t seed, int *layer_k);

/* Byte and FLOP counts used for bw_util and flop_util. */
uint64_t dy_llm_kv_bytes(const struct dy_llm *m);
/* Bytes a decode step reads: weights (the embedding gather excepted; for an
 * MoE model the experts too, which dy_moe_stats.expert_bytes counts) and the
 * KV rows of every sequence at its current length. */
uint64_t dy_llm_decode_bytes(const struct dy_llm *m);
/* FLOPs of the prefill of `batch` prompts of `prompt_len` tokens (an MoE
 * model's with the experts per token opt gives). */
double dy_llm_prefill_flops(const struct dy_model_config *cfg, int batch, int prompt_len,
                            const struct dy_llm_options *opt);
/* Device bytes dy_llm_create allocates besides the weights: activations,
 * KV cache and MoE routing tables. */
uint64_t dy_llm_state_bytes(const struct dy_model_config *cfg, const struct dy_llm_options *opt);

#endif
