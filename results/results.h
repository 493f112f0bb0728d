/* The results database: SQLite, schema in results/schema.sql (embedded at
 * build time). Column names are a contract (DESIGN.md section 7). */
#ifndef DY_RESULTS_H
#define DY_RESULTS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Integer axes and metrics use DY_NULL_INT / NAN for "not applicable",
 * stored as SQL NULL. */
#define DY_NULL_INT INT64_MIN

struct dy_run_info {
    char dyno_version[32];
    char git_commit[48];
    char host[128];
    char os[128];
    char argv[2048];
    char started_at[32];     /* ISO 8601 UTC */
};

struct dy_device_row {
    char backend[32];
    int device_index;
    char name[128];
    char vendor[64];
    char driver_version[64];
    char runtime_version[64];
    int64_t mem_total_bytes;
    int compute_units;
    int clock_mhz;
    double copy_gbps;        /* measured: bytes read + written per second / 1e9 */
    double gemm_tflops;      /* measured GEMM rate */
    char gemm_dtype[8];      /* dtype the GEMM ceiling was measured in */
};

struct dy_point {
    /* axes */
    char backend[32];
    char device[128];
    char workload[16];
    char model[128];
    int64_t batch, input_len, output_len;
    int64_t experts, top_k, moe_ffn_dim;
    char routing[32];
    char weight_dtype[16];
    char kv_dtype[16];
    char evict[32];
    int64_t kv_budget, block_size, image_size, patch, seed, layers;
    char tag[128];
    /* outcome */
    char status[16];         /* ok, failed, oom, skipped, mismatch */
    char reason[512];
    char source[64];         /* "dyno" or an imported study */
    /* metrics (NAN when not measured) */
    double ttft_ms, tpot_ms_p50, tpot_ms_p90, tpot_ms_p99, e2e_ms;
    double output_tok_s, total_tok_s, images_s;
    int64_t peak_mem_bytes, weight_bytes, kv_bytes;
    double energy_j, avg_power_w, bw_util, flop_util;
    /* host wall time of e2e beside the device-event figure */
    double host_e2e_ms;
    int64_t repeat, warmup;
    /* every axis value, canonical: what --resume matches (harness/run.c) */
    char config_key[768];
    /* relative standard deviation of e2e over the repetitions */
    double e2e_noise;
    double e2e_ms_p90, e2e_ms_p99;
    int64_t lora_rank, lora_merged;
    /* MoE routing (workloads/llm.h, struct dy_moe_stats) */
    double expert_load_max, expert_load_mean, expert_imbalance, experts_touched;
    int64_t step_bytes;      /* bytes a decode step reads: what bw_util divides */
    char top_k_map[512];     /* --top-k lexi:N: each layer's k, comma-separated */
    /* against the unquantized reference, teacher-forced (harness/fidelity.c) */
    double token_agreement, kl_mean;
    /* ViT LoRA: attn or attn+mlp; --lora-rank-map's ranks (workloads/vit.h,
     * dy_vit_lora_describe) */
    char lora_targets[16];
    char lora_rank_map[512];
    /* --weight-dtype mopeq:BITS: each expert's bits (dy_llm_weights.expert_bits) */
    char expert_bits[8192];
    /* --kv-budget-alloc profile: each layer's KV budget in tokens, comma-separated */
    char kv_budget_map[2048];
};

/* Fills every axis with NULL/empty and every metric with NAN, source "dyno". */
void dy_point_init(struct dy_point *p);

enum dy_sample_phase { DY_PHASE_PREFILL = 0, DY_PHASE_DECODE = 1, DY_PHASE_E2E = 2 };

struct dy_sample {
    int phase;     /* enum dy_sample_phase */
    int rep;       /* repetition, 0-based, warm-ups excluded */
    int step;      /* decode step, 0 for the others */
    int64_t ns;    /* device time */
};

typedef struct dy_db dy_db;

/* Opens or creates a dyno database. A file that is not dyno's (or a newer
 * schema) is refused with a message naming the file and nothing is written.
 * Caller closes with dy_db_close. */
int dy_db_open(const char *path, dy_db **out, char *err, size_t err_len);
void dy_db_close(dy_db *db);
const char *dy_db_error(const dy_db *db);

int dy_db_begin_run(dy_db *db, const struct dy_run_info *run, int64_t *run_id);
int dy_db_add_device(dy_db *db, int64_t run_id, const struct dy_device_row *dev,
                     int64_t *device_id);
/* One transaction: the point and all its samples, or nothing. device_id may
 * be DY_NULL_INT for a point with no device row (an imported study). */
int dy_db_add_point(dy_db *db, int64_t run_id, int64_t device_id,
                    const struct dy_point *p, const struct dy_sample *samples,
                    int sample_count, int64_t *point_id);

/* True in *stored when a point of source dyno with this config_key, backend
 * and device is stored with a final status (ok, oom, skipped): --resume
 * skips it. failed and mismatch points are measured again. */
int dy_db_point_stored(dy_db *db, const char *config_key, const char *backend,
                       const char *device, int *stored);

/* One transaction: a run and all of `points` (no device rows, no samples),
 * or nothing: how `dyno import` stores a study. */
int dy_db_add_run_with_points(dy_db *db, const struct dy_run_info *run,
                              const struct dy_point *points, int count, int64_t *run_id);

/* merge.c: whether `path` is a dyno database to read from (merge, export):
 * it exists, is not empty, is dyno's. Unlike dy_db_open, never creates a
 * file; a file of an older dyno gets the new columns, a foreign file is left
 * untouched. */
int dy_db_check_input(const char *path, char *err, size_t err_len);

struct dy_merge_counts {
    int64_t runs, points, samples;
};

/* Copies every run, device, point and sample of the dyno database at
 * in_path that `db` lacks, in one transaction, with new ids. Runs and points
 * are matched by uuid, devices by run, backend and index, so merging the
 * same input again adds nothing. Check in_path with dy_db_check_input first. */
int dy_db_merge(dy_db *db, const char *in_path, struct dy_merge_counts *added);

/* export.c: every row of points, in id order, with the columns' own names:
 * CSV (a header line; text quoted, numbers bare, NULL empty) or one JSON
 * object per line (NULL as null). *rows counts the points written. */
enum dy_export_format { DY_EXPORT_CSV, DY_EXPORT_JSONL };
int dy_db_export(dy_db *db, FILE *out, enum dy_export_format format, int64_t *rows);

/* import.c: reads LLM-Inference-Bench's results CSV (All_results.csv) into
 * points with source "LLM-Inference-Bench/<Framework>", no device rows and
 * the study's model and hardware names mapped to dyno's where known. The
 * first malformed row fails the file with "FILE:LINE: why". The caller frees
 * *points and stores them with dy_db_add_run_with_points. */
int dy_import_llm_inference_bench(const char *path, struct dy_point **points, int *count,
                                  char *err, size_t err_len);

/* Number of rows in points. */
int dy_db_count_points(dy_db *db, int64_t *count);

/* Text of results/schema.sql (generated from the file at build time). */
extern const char dy_schema_sql[];

#endif
