/* The point runner (run.c) as the sweep commands (sweep_cmd.c) drive it:
 * one database, one run row, devices opened and models loaded on demand and
 * kept while consecutive points share them. */
#ifndef DY_RUNNER_H
#define DY_RUNNER_H

#include <stdbool.h>
#include <stdio.h>

#include "../results/results.h"
#include "sweep.h"
#include "timing.h"

typedef struct dy_runner dy_runner;

enum dy_point_outcome {
    DY_POINT_STORED,     /* run (or found not runnable) and stored */
    DY_POINT_RESUMED,    /* already stored with a final status: not run again */
    DY_POINT_LOST,       /* could not be stored; the message is on stderr */
};

/* Opens (or creates) the database at db_path and records the run with its
 * command line. Caller closes with dy_runner_close, which frees the devices
 * and the model. */
int dy_runner_open(const char *db_path, const char *cmdline, dy_runner **out, char *err,
                   size_t err_len);
void dy_runner_close(dy_runner *r);

struct dy_point_options {
    /* a point stored before with a final status is not run again */
    bool resume;
    /* > 0: a point still running after that long is stopped at the next step
     * boundary and stored as failed */
    double timeout_s;
    /* when to stop repeating; min_reps is each point's --repeat */
    struct dy_stop_rule rule;
};

/* Runs one point (values: one per axis, NULL when unset) and stores it.
 * Fills *p either way. */
enum dy_point_outcome dy_runner_point(dy_runner *r, const char *values[DY_AX_COUNT],
                                      const struct dy_point_options *opt, struct dy_point *p);

/* The run row of this process: version, commit, host, OS, the command line. */
void dy_fill_run_info(struct dy_run_info *run, const char *cmdline);

/* Checks the axis values that name things (backends, models, checkpoints)
 * before anything is stored: a typo is an error, not a sweep of failures. */
int dy_sweep_validate(const struct dy_sweep *s, char *err, size_t err_len);

/* Clears a progress bar from the terminal before a message is printed
 * (progress.c); does nothing when none is shown. */
void dy_progress_clear(void);

#endif
