/* Harness internals shared between the CLI commands. */
#ifndef DY_HARNESS_H
#define DY_HARNESS_H

#include <stddef.h>
#include <stdint.h>

#include "../backends/backend.h"
#include "../results/results.h"
#include "../workloads/llm.h"

/* ---- stats.c ---- */
/* Percentile (0..100) by linear interpolation between closest ranks; sorts
 * `values` in place. NAN when count is 0. */
double dy_percentile(double *values, int count, double pct);

/* ---- ceilings.c ---- */
struct dy_ceilings {
    double copy_gbps;     /* bytes read + written per second / 1e9 */
    double gemm_tflops;
    enum dy_dtype gemm_dtype;
    int gemm_size;        /* m = n = k */
};

/* Measures the device's copy bandwidth and GEMM rate through the backend's
 * own ops (best of several repetitions, as BabelStream reports). */
int dy_measure_ceilings(dy_ctx *ctx, struct dy_ceilings *out);

/* ---- run_vit.c ---- */
/* Runs one `--workload vit` point on ctx and fills its metrics; *samples_out
 * (caller frees) holds one sample per timed batch. */
int dy_vit_point(dy_ctx *ctx, const struct dy_ceilings *ceil, const char *values[],
                 struct dy_point *p, struct dy_sample **samples_out, int *sample_count);
/* Frees the weights the ViT points keep between points. */
void dy_vit_cache_release(void);
/* ---- run_moe_layer.c ---- */
/* Times one `--workload moe-layer` point: layer 0's MoE block of a model
 * loaded with one layer, over batch x input_len tokens; fills p's metrics
 * (e2e_ms per call, total_tok_s, bw_util over the experts routed to,
 * flop_util, expert load). *samples_out (caller frees): one per call. */
int dy_moe_layer_point(dy_ctx *ctx, const struct dy_ceilings *ceil, const struct dy_model_config *cfg,
                       const struct dy_llm_weights *w, const struct dy_llm_options *opt,
                       struct dy_point *p, struct dy_sample **samples_out, int *sample_count);
/* ---- fidelity.c ---- */
/* A lossy point's cost in output (a KV cache in fp8 or int8, eviction, or
 * quantized weights: w is not ref_w; nothing to do otherwise), untimed,
 * over its first sequences of `prompts` and first decode steps: a
 * reference decoder (weights ref_w, f32 KV cache, nothing evicted) prefills
 * and generates greedily, then the point's (opt, weights w) prefills the
 * same prompts and is fed the reference's tokens; one decoder on the
 * device at a time, each prefill in as many passes as it needs to fit.
 * Fills p->token_agreement (share of steps and sequences whose argmax is
 * the reference's token) and p->kl_mean (mean KL(reference || tested) of
 * the next-token distributions), or leaves them NAN and says why in
 * p->reason, starting "fidelity not measured:", and returns the failure
 * (the point keeps its timing either way). Destroy the point's own decoder
 * first: its memory is the room the pass has. */
int dy_fidelity_point(dy_ctx *ctx, const struct dy_model_config *cfg, const struct dy_llm_weights *ref_w,
                      const struct dy_llm_weights *w, const struct dy_llm_options *opt, const int32_t *prompts,
                      struct dy_point *p);
/* ---- run.c ---- */
/* Halves opt->prefill_seqs (0: all max_batch sequences in one pass) until
 * the decoder's device state (dy_llm_state_bytes) fits nine tenths of
 * free_bytes or one sequence per pass is left; returns the bytes it needs
 * then (which may still exceed free_bytes). */
uint64_t dy_fit_prefill_seqs(const struct dy_model_config *cfg, struct dy_llm_options *opt, uint64_t free_bytes);
/* ---- encode.c ---- */
int dy_cmd_encode(int argc, char **argv);

/* ---- sweep_cmd.c ---- */
int dy_cmd_run(int argc, char **argv, const char *cmdline);
int dy_cmd_sweep(int argc, char **argv, const char *cmdline);
/* ---- data_cmds.c ---- */
int dy_cmd_merge(int argc, char **argv);
int dy_cmd_export(int argc, char **argv);
int dy_cmd_import(int argc, char **argv, const char *cmdline);
/* ---- generate.c ---- */
int dy_cmd_generate(int argc, char **argv);
/* ---- info.c ---- */
int dy_cmd_devices(int argc, char **argv);
int dy_cmd_models(int argc, char **argv);

/* The backend `auto` resolves to: the first available GPU backend, else cpu. */
const char *dy_best_backend(void);

#endif
