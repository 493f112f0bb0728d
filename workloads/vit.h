/* The ViT workload (ViTModel / ViTForImageClassification): patch embedding
 * as a GEMM over flattened patches, CLS token, position embeddings,
 * pre-LayerNorm encoder blocks with bidirectional attention and a GELU MLP,
 * final LayerNorm, the classifier when there is one. Built from backend ops. */
#ifndef DY_VIT_H
#define DY_VIT_H

#include "model.h"

struct dy_vit_config {
    char name[128];
    char arch_name[64];
    int hidden, intermediate, layers, heads;
    int image_size, patch, channels;
    float norm_eps;
    bool qkv_bias;
    int labels;              /* classifier outputs; 0 without a classifier */
};

/* Parses a ViT config.json; DY_E_FORMAT with the file and field in err. */
int dy_vit_config_load(const char *path, struct dy_vit_config *cfg, char *err, size_t err_len);
/* True when the config.json names a ViT architecture (cheap sniff). */
bool dy_config_is_vit(const char *path);
/* Tokens per image (patches + CLS) at image_size. */
int dy_vit_tokens(const struct dy_vit_config *cfg, int image_size);
uint64_t dy_vit_param_count(const struct dy_vit_config *cfg);

struct dy_vit_layer {
    dy_buf ln1_w, ln1_b, qkv, qkv_b, o, o_b, ln2_w, ln2_b, fc1, fc1_b, fc2, fc2_b;
    /* Unmerged LoRA adapters and their ranks (0: none, or merged).
     * Attention: A for q, k, v stacked [3 rank, hidden]; B for each [hidden,
     * rank]; A [rank, hidden] and B [hidden, rank] of the output projection.
     * MLP: fc1's A [rank, hidden] and B [intermediate, rank]; fc2's A
     * [rank, intermediate] and B [hidden, rank]. */
    int lora_rank_attn, lora_rank_mlp;
    dy_buf lora_a_qkv, lora_b_q, lora_b_k, lora_b_v, lora_a_o, lora_b_o;
    dy_buf lora_a_fc1, lora_b_fc1, lora_a_fc2, lora_b_fc2;
};

struct dy_vit_weights {
    enum dy_dtype dtype;
    dy_buf patch_w, patch_b;   /* [hidden, channels * patch * patch], [hidden] */
    dy_buf cls;                /* [hidden] */
    dy_buf pos;                /* [tokens at config image_size, hidden] */
    dy_buf final_w, final_b;
    dy_buf head_w, head_b;     /* classifier, when labels > 0 */
    struct dy_vit_layer *layers;
    int layer_count;
    uint64_t bytes;
    int lora_rank_max;         /* the largest unmerged adapter rank: sizes the forward's scratch */
    bool random;               /* drawn by fill_random from `seed` */
    uint64_t seed;
};

int dy_vit_weights_random(dy_ctx *ctx, const struct dy_vit_config *cfg, enum dy_dtype dtype,
                          uint64_t seed, struct dy_vit_weights *w);
int dy_vit_weights_load(dy_ctx *ctx, const struct dy_vit_config *cfg, enum dy_dtype dtype,
                        const struct dy_checkpoint *ck, struct dy_vit_weights *w, char *err,
                        size_t err_len);
void dy_vit_weights_free(dy_ctx *ctx, struct dy_vit_weights *w);
/* FLOPs of one image through the encoder at image_size, the unmerged LoRA
 * adapters of w included (they run as GEMMs of their own). */
double dy_vit_flops(const struct dy_vit_config *cfg, const struct dy_vit_weights *w, int image_size);

/* Where LoRA adapters go and how large they are: a rank per layer for the
 * attention projections q, k, v, o and for the MLP's fc1, fc2 (0: no
 * adapter there). */
struct dy_vit_lora {
    int layers;
    int *attn_rank, *mlp_rank;  /* [layers] each; owned, freed by dy_vit_lora_free */
    bool mlp;                   /* adapters on fc1 and fc2 too (--lora-targets attn+mlp) */
    bool merged;                /* folded into the weights at load */
};

/* Every layer at `rank` (1..hidden); DY_E_INVALID with the reason in err. */
int dy_vit_lora_uniform(const struct dy_vit_config *cfg, int rank, bool mlp, bool merged,
                        struct dy_vit_lora *out, char *err, size_t err_len);
/* Reads a rank map (README, "LoRA rank maps"): one line per layer of cfg,
 * RANK or, with mlp, ATTN MLP; '#' comments. DY_E_IO or DY_E_FORMAT with
 * "FILE:LINE: why" in err. */
int dy_vit_lora_map_load(const char *path, const struct dy_vit_config *cfg, bool mlp, bool merged,
                         struct dy_vit_lora *out, char *err, size_t err_len);
/* The ranks as stored in points.lora_rank_map: "8,8,0" per layer, or
 * "8/4,8/4,0/0" (attention/MLP) when the MLP is a target. */
void dy_vit_lora_describe(const struct dy_vit_lora *lora, char *out, size_t len);
void dy_vit_lora_free(struct dy_vit_lora *lora);
/* Adds random LoRA adapters where `lora` says: y = W x + (alpha / rank)
 * B (A x) with alpha = 2 rank, the scale folded into B. Merged, they are
 * folded into W on the host (W += 2 B A) and no adapter is kept, for
 * comparing the two. */
int dy_vit_lora_add(dy_ctx *ctx, const struct dy_vit_config *cfg, struct dy_vit_weights *w,
                    const struct dy_vit_lora *lora, uint64_t seed);

struct dy_vit;

/* Activations for batches of up to max_batch images of image_size pixels.
 * At another size than the config's, the position embeddings are resampled
 * on the host as Hugging Face's interpolate_pos_encoding does. Borrows cfg
 * and w. */
int dy_vit_create(dy_ctx *ctx, const struct dy_vit_config *cfg, const struct dy_vit_weights *w,
                  int max_batch, int image_size, struct dy_vit **out);
void dy_vit_destroy(struct dy_vit *m);
/* Uploads images (host f32, [batch, channels, size, size]) as patches. */
int dy_vit_set_images(struct dy_vit *m, const float *pixels, int batch);
/* Runs the encoder over the uploaded batch. */
int dy_vit_forward(struct dy_vit *m);
/* Last hidden state after the final LayerNorm, [batch, tokens, hidden] f32. */
int dy_vit_read_hidden(struct dy_vit *m, float *out);
int dy_vit_tokens_of(const struct dy_vit *m);

#endif
