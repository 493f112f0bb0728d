/* Timed repetitions and nvbench's stopping rule (timing.c). */
#ifndef DY_TIMING_H
#define DY_TIMING_H

#include <stdbool.h>
#include <stddef.h>

#include "../backends/status.h"
#include "../results/results.h"

/* The time limit when a noise target is given without one (--max-time). */
#define DY_DEFAULT_MAX_TIME_S 60.0

struct dy_stop_rule {
    int min_reps;          /* --repeat */
    double min_time_s;     /* --min-time: timed device time (sum of e2e) at least this */
    double max_noise;      /* --max-noise as a fraction (0.01 = 1 %); 0: none */
    double max_time_s;     /* --max-time: stop after this long whatever the rest; 0: none */
};

/* One point's repetitions: per repetition the prefill, e2e (device) and host
 * times, `steps` decode-step times, and the raw samples. */
struct dy_timings {
    int steps;
    int reps, capacity;
    double *prefill_ms, *e2e_ms, *host_ms;
    double *step_ms;             /* [rep * steps + step] */
    struct dy_sample *samples;
    int sample_count;
};

/* Caller frees with dy_timings_free (which frees samples unless the caller
 * took them and set the pointer to NULL). */
int dy_timings_init(struct dy_timings *t, int steps, int capacity);
/* Room for `reps` repetitions. */
int dy_timings_reserve(struct dy_timings *t, int reps);
void dy_timings_free(struct dy_timings *t);

/* Sample standard deviation over the mean; NAN below 2 values. */
double dy_rel_stddev(const double *values, int count);

/* Whether t->reps repetitions, elapsed_s after the first timed one started,
 * are enough. When the time limit ends them before the rule is met, writes
 * why into note (left alone otherwise). */
bool dy_stop_now(const struct dy_stop_rule *rule, const struct dy_timings *t, double elapsed_s,
                 char *note, size_t note_len);

#endif
