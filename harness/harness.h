/* Harness internals shared between the CLI commands. */
#ifndef DY_HARNESS_H
#define DY_HARNESS_H

#include <stddef.h>
#include <stdint.h>

#include "../backends/backend.h"
#include "../results/results.h"

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
