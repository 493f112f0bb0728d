/* Model configuration (from a Hugging Face config.json) and checkpoint access. */
#ifndef DY_MODEL_H
#define DY_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../backends/backend.h"

enum dy_arch {
    DY_ARCH_LLAMA = 0,     /* LlamaForCausalLM, MistralForCausalLM */
    DY_ARCH_QWEN2 = 1,     /* Qwen2ForCausalLM: q/k/v bias */
    DY_ARCH_MIXTRAL = 2,   /* MixtralForCausalLM: block_sparse_moe, w1/w3/w2 */
    DY_ARCH_QWEN2_MOE = 3, /* Qwen2MoeForCausalLM: q/k/v bias, gated shared expert */
    DY_ARCH_OLMOE = 4,     /* OlmoeForCausalLM: RMSNorm over the whole q and k */
    DY_ARCH_QWEN3_MOE = 5, /* Qwen3MoeForCausalLM: RMSNorm per q and k head */
};

enum dy_qk_norm {
    DY_QK_NORM_NONE = 0,
    DY_QK_NORM_WHOLE = 1,  /* over all heads of q (and of k) at once: OLMoE */
    DY_QK_NORM_HEAD = 2,   /* over each head: Qwen3 */
};

enum dy_rope_type {
    DY_ROPE_DEFAULT = 0,
    DY_ROPE_LLAMA3 = 1,
    DY_ROPE_LINEAR = 2,
};

struct dy_model_config {
    char name[128];          /* preset name or the directory's last component */
    char arch_name[64];      /* the "architectures"[0] string */
    enum dy_arch arch;
    int hidden;              /* hidden_size */
    int intermediate;        /* intermediate_size */
    int layers;              /* num_hidden_layers (after --layers truncation) */
    int heads;               /* num_attention_heads */
    int kv_heads;            /* num_key_value_heads (defaults to heads) */
    int head_dim;            /* head_dim (defaults to hidden / heads) */
    int vocab;               /* vocab_size */
    int max_positions;       /* max_position_embeddings */
    float norm_eps;          /* rms_norm_eps */
    bool tie_embeddings;     /* tie_word_embeddings */
    bool qkv_bias;           /* Qwen2, or attention_bias: true */
    bool o_bias;             /* attention_bias: true (Llama's o_proj has one too) */
    enum dy_dtype torch_dtype; /* the checkpoint's declared dtype */
    /* rope: from top-level rope_theta/rope_scaling or from rope_parameters */
    double rope_theta;
    enum dy_rope_type rope_type;
    double rope_factor;
    double rope_low_freq_factor;
    double rope_high_freq_factor;
    int rope_original_max_positions;
    enum dy_qk_norm qk_norm;
    /* MoE (experts == 0: a dense model). Every layer's MLP is the MoE block;
     * configs that mix dense layers in (decoder_sparse_step > 1,
     * mlp_only_layers) are refused. */
    int experts;             /* num_local_experts or num_experts */
    int top_k;               /* num_experts_per_tok */
    int moe_ffn;             /* an expert's intermediate size */
    int shared_ffn;          /* shared_expert_intermediate_size, 0: none */
    bool norm_topk_prob;     /* renormalise the k routing weights */
};

/* Parses a config.json. On failure returns DY_E_FORMAT (or DY_E_IO) and
 * writes a message naming the file and the field into err. */
int dy_config_load(const char *path, struct dy_model_config *cfg, char *err, size_t err_len);

/* True for a mixture-of-experts model (cfg->experts > 0). */
bool dy_config_is_moe(const struct dy_model_config *cfg);

/* Inverse frequencies of the rotary embedding, [head_dim / 2], with the
 * config's scaling applied exactly as Hugging Face computes them. */
void dy_rope_inv_freq(const struct dy_model_config *cfg, float *inv_freq);

/* Parameters of the model (embeddings and LM head included). */
uint64_t dy_model_param_count(const struct dy_model_config *cfg);

/* Preset lookup: models/NAME.json in the preset directory. The directory is
 * $DYNO_MODELS, else ../share/dyno/models or the source tree's models/
 * relative to the executable. */
int dy_preset_path(const char *name, char *path, size_t path_len);
/* Lists preset names (without .json), sorted; caller frees each and the array. */
int dy_preset_list(char ***names, int *count);

/* ---- safetensors (workloads/safetensors.c) -----------------------------
 * A checkpoint directory: model.safetensors, or model.safetensors.index.json
 * with its shards. Files are memory-mapped; headers are validated against the
 * file sizes before anything is read. */
struct dy_tensor_view {
    const char *name;
    enum dy_dtype dtype;
    int ndim;
    int64_t shape[4];
    const void *data;      /* inside the mapping; aligned to the element size
                            * (a copy where the file placed it otherwise) */
    size_t bytes;
    const char *file;      /* the shard holding it */
};

struct dy_checkpoint;

/* Opens every shard of `dir`; on failure returns DY_E_IO or DY_E_FORMAT with
 * a message naming the file and the field. Caller frees with
 * dy_checkpoint_close. */
int dy_checkpoint_open(const char *dir, struct dy_checkpoint **out, char *err, size_t err_len);
void dy_checkpoint_close(struct dy_checkpoint *ck);
/* NULL when absent. */
const struct dy_tensor_view *dy_checkpoint_find(const struct dy_checkpoint *ck, const char *name);

/* Writes a whole tensor to dst, converted to `dtype` on the host in chunks. */
int dy_tensor_upload(dy_ctx *ctx, const struct dy_tensor_view *t, enum dy_dtype dtype, dy_buf dst);

#endif
