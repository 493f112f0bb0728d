/* The dense-LLM workload: weights, paged KV cache, prefill and decode steps,
 * built from backend ops only so the op sequence is the same on every
 * backend. */
#ifndef DY_LLM_H
#define DY_LLM_H

#include "model.h"

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
};

struct dy_llm_weights {
    enum dy_dtype dtype;
    dy_buf embed;         /* [vocab, hidden] */
    dy_buf final_norm;    /* [hidden] */
    dy_buf lm_head;       /* [vocab, hidden]; the embedding's view when tied */
    struct dy_llm_layer *layers;
    int layer_count;
    uint64_t bytes;       /* device bytes of all weights */
};

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
 * layers: 1/||k|| (inv-key-norm) or ||v||/||k|| (paged). A prompt longer
 * than the budget keeps the first block (not for window) and its most
 * recent tokens; the others are written to a block no sequence reads. */
enum dy_evict {
    DY_EVICT_NONE = 0,
    DY_EVICT_WINDOW,
    DY_EVICT_STREAMING,
    DY_EVICT_INV_KEY_NORM,
    DY_EVICT_PAGED,
};

/* Parses a --evict value; false when it is not one. */
bool dy_evict_parse(const char *name, enum dy_evict *out);

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
 * least two; three for the scored policies). */
int dy_kv_cache_create(dy_ctx *ctx, const struct dy_model_config *cfg, enum dy_dtype dtype,
                       int block_size, int batch, int max_tokens, struct dy_kv_cache *kv);
int dy_kv_cache_create_evicting(dy_ctx *ctx, const struct dy_model_config *cfg, enum dy_dtype dtype,
                                int block_size, int batch, int max_tokens, enum dy_evict evict,
                                int budget, struct dy_kv_cache *kv);
/* Slots of a whole prompt of `count` tokens for sequence `seq` (empty),
 * dropping what the budget cannot hold (those go to the trash block). */
int dy_kv_cache_prompt(struct dy_kv_cache *kv, int seq, int count, int32_t *slots);
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
