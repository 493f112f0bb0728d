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
/* FLOPs of one image through the encoder at image_size. */
double dy_vit_flops(const struct dy_vit_config *cfg, int image_size);

struct dy_vit_layer {
    dy_buf ln1_w, ln1_b, qkv, qkv_b, o, o_b, ln2_w, ln2_b, fc1, fc1_b, fc2, fc2_b;
    /* unmerged LoRA adapters: A for q, k, v stacked [3 rank, hidden]; B for
     * each [hidden, rank]; A and B of the output projection */
    dy_buf lora_a_qkv, lora_b_q, lora_b_k, lora_b_v, lora_a_o, lora_b_o;
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
    int lora_rank;             /* 0: no adapters */
    bool lora_merged;          /* adapters folded into q, k, v and o */
    bool random;               /* drawn by fill_random from `seed` */
    uint64_t seed;
};

int dy_vit_weights_random(dy_ctx *ctx, const struct dy_vit_config *cfg, enum dy_dtype dtype,
                          uint64_t seed, struct dy_vit_weights *w);
int dy_vit_weights_load(dy_ctx *ctx, const struct dy_vit_config *cfg, enum dy_dtype dtype,
                        const struct dy_checkpoint *ck, struct dy_vit_weights *w, char *err,
                        size_t err_len);
void dy_vit_weights_free(dy_ctx *ctx, struct dy_vit_weights *w);
/* Adds random LoRA adapters of `rank` on the attention projections q, k, v
 * and o: y = W x + (alpha / rank) B (A x) with alpha = 2 rank, the scale
 * folded into B. `merged` folds them into W on the host (W += 2 B A) and
 * keeps no adapters, for comparing the two. */
int dy_vit_lora_add(dy_ctx *ctx, const struct dy_vit_config *cfg, struct dy_vit_weights *w,
                    int rank, bool merged, uint64_t seed);

struct dy_vit;

/* Activations for batches of up to max_batch images of image_size pixels
 * (position embeddings interpolated on the host when it differs from the
 * config's). Borrows cfg and w. */
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
