/* The axes of `dyno run` and their cartesian product. */
#ifndef DY_SWEEP_H
#define DY_SWEEP_H

#include <stdbool.h>
#include <stdio.h>
#include <stdint.h>

#include "axes.h"

/* In nesting order: the first axis changes slowest, so loaded weights are
 * reused across the points that follow. */
#define DY_AXES(X)                                                                              \
    X(BACKEND, "backend", STR, 0, NULL, "auto", "backend(s): auto, cpu, cpu-ref, cuda, ...")     \
    X(DEVICE, "device", INT, 0, NULL, "0", "device index within the backend")                    \
    X(WORKLOAD, "workload", ENUM, 0, "llm,moe,moe-layer,vit", "llm", "workload family")          \
    X(MODEL, "model", STR, 0, NULL, "tiny-llama", "preset name(s), see `dyno models`")            \
    X(MODEL_DIR, "model-dir", STR, 0, NULL, NULL, "Hugging Face checkpoint dir(s); overrides --model") \
    X(WEIGHT_DTYPE, "weight-dtype", STR, 0, NULL, "bf16", "weights: f32, f16, bf16, fp8, int8, int4, int4-asym, mopeq:BITS") \
    X(LAYERS, "layers", INT, 1, NULL, NULL, "truncate the model to N layers")                    \
    X(SEED, "seed", INT, 0, NULL, "0", "seed of the random weights and prompts")                 \
    X(KV_DTYPE, "kv-dtype", ENUM, 0, "f32,f16,bf16,fp8,int8", "f16", "KV-cache dtype")           \
    X(BLOCK_SIZE, "block-size", INT, 1, NULL, "16", "KV-cache block size in tokens")            \
    X(EVICT, "evict", ENUM, 0, "none,window,streaming,paged,inv-key-norm", "none", "KV eviction policy") \
    X(KV_BUDGET, "kv-budget", INT, 1, NULL, NULL, "KV tokens kept per sequence")                 \
    X(KV_BUDGET_ALLOC, "kv-budget-alloc", ENUM, 0, "uniform,profile", NULL, "per-layer budgets") \
    X(EXPERTS, "experts", INT, 1, NULL, NULL, "MoE expert count")                                 \
    X(TOP_K, "top-k", STR, 0, NULL, NULL, "MoE experts per token")                                \
    X(MOE_FFN_DIM, "moe-ffn-dim", INT, 1, NULL, NULL, "MoE expert FFN width")                     \
    X(ROUTING, "routing", STR, 0, NULL, NULL, "MoE routing: model, uniform, zipf:S")             \
    X(IMAGE_SIZE, "image-size", INT, 1, NULL, NULL, "ViT image size")                             \
    X(PATCH, "patch", INT, 1, NULL, NULL, "ViT patch size")                                       \
    X(LORA_RANK, "lora-rank", INT, 0, NULL, NULL, "ViT LoRA rank (0: none)")                      \
    X(LORA_MERGED, "lora-merged", ENUM, 0, "0,1", NULL, "1: fold the LoRA adapters into the weights") \
    X(LORA_TARGETS, "lora-targets", ENUM, 0, "attn,attn+mlp", NULL, "ViT LoRA on q, k, v, o, or on fc1, fc2 too") \
    X(LORA_RANK_MAP, "lora-rank-map", STR, 0, NULL, NULL, "ViT LoRA rank per layer from a file (README)") \
    X(BATCH, "batch", INT, 1, NULL, "1", "sequences (or images) per batch")                      \
    X(INPUT_LEN, "input-len", INT, 1, NULL, "128", "prompt tokens per sequence")                 \
    X(OUTPUT_LEN, "output-len", INT, 1, NULL, "32", "generated tokens per sequence")             \
    X(WARMUP, "warmup", INT, 0, NULL, "1", "untimed repetitions")                                 \
    X(REPEAT, "repeat", INT, 1, NULL, "3", "timed repetitions")                                   \
    X(TAG, "tag", STR, 0, NULL, NULL, "free text stored with the point")

enum dy_axis {
#define DY_AXIS_ENUM(id, flag, kind, min, choices, def, help) DY_AX_##id,
    DY_AXES(DY_AXIS_ENUM)
#undef DY_AXIS_ENUM
    DY_AX_COUNT
};

struct dy_sweep {
    struct dy_list values[DY_AX_COUNT];
    bool given[DY_AX_COUNT];
    /* options of the run, not axes */
    char db_path[1024];
    bool db_given;
    bool resume;             /* skip points stored with a final status */
    bool dry_run;            /* print the points, run nothing */
    double point_timeout_s;  /* 0: none */
    /* nvbench's stopping rule beside --repeat (timing.h); 0: not given */
    double min_time_s, max_noise_pct, max_time_s;
    int shard_index, shard_count;  /* --shard I/N, 0-based; count 0 when not given */
};

/* Parses `dyno run` arguments argv[0..argc). Unknown flags and malformed
 * values are errors naming the flag. Caller frees with dy_sweep_free. */
int dy_sweep_parse(int argc, char **argv, struct dy_sweep *s, char *err, size_t err_len);
/* The axis named `name` (a flag without its dashes; '_' may stand for '-'),
 * or -1. */
int dy_axis_lookup(const char *name, size_t len);
/* Sets one axis from text as its flag would ("1,2", "16-128*2"). */
int dy_sweep_set(struct dy_sweep *s, enum dy_axis a, const char *text, char *err, size_t err_len);
/* Parses "I/N" with 0 <= I < N. */
int dy_parse_shard(const char *text, int *index, int *count);
void dy_sweep_free(struct dy_sweep *s);
/* Number of points of the cartesian product. */
uint64_t dy_sweep_count(const struct dy_sweep *s);
/* The point with linear index i: value of each axis (NULL when unset). */
void dy_sweep_point(const struct dy_sweep *s, uint64_t i, const char *values[DY_AX_COUNT]);
const char *dy_axis_flag(enum dy_axis a);
/* The canonical text of a point's axes, the backend resolved from "auto":
 * "backend=cpu;device=0;workload=llm;...". Unset axes are left out. What
 * --resume matches (points.config_key). */
void dy_config_key(const char *values[DY_AX_COUNT], char *out, size_t len);
void dy_sweep_usage(FILE *out);

#endif
