/* Timed repetitions of a point and when to stop them, as nvbench does:
 * after the warm-ups, repeat until a minimum count AND a minimum of timed
 * device time AND a relative-noise target are all met, or a time limit is
 * hit. Every repetition's times are kept (the samples table). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "timing.h"

int dy_timings_init(struct dy_timings *t, int steps, int capacity)
{
    memset(t, 0, sizeof *t);
    t->steps = steps;
    return dy_timings_reserve(t, capacity);
}

static int grow(void **array, size_t elem, size_t count)
{
    void *grown = realloc(*array, elem * (count ? count : 1));
    if (!grown)
        return DY_E_NOMEM;
    *array = grown;
    return DY_OK;
}

int dy_timings_reserve(struct dy_timings *t, int reps)
{
    if (reps <= t->capacity)
        return DY_OK;
    /* doubling: an open-ended noise target adds one repetition at a time */
    int cap = t->capacity * 2 > reps ? t->capacity * 2 : reps;
    size_t steps = (size_t)t->steps;
    if (grow((void **)&t->prefill_ms, sizeof(double), (size_t)cap) ||
        grow((void **)&t->e2e_ms, sizeof(double), (size_t)cap) ||
        grow((void **)&t->host_ms, sizeof(double), (size_t)cap) ||
        grow((void **)&t->step_ms, sizeof(double), (size_t)cap * steps) ||
        grow((void **)&t->samples, sizeof(struct dy_sample), (size_t)cap * (steps + 1)))
        return DY_E_NOMEM;
    t->capacity = cap;
    return DY_OK;
}

void dy_timings_free(struct dy_timings *t)
{
    free(t->prefill_ms);
    free(t->e2e_ms);
    free(t->host_ms);
    free(t->step_ms);
    free(t->samples);
    memset(t, 0, sizeof *t);
}

double dy_rel_stddev(const double *values, int count)
{
    if (count < 2)
        return NAN;
    double mean = 0, sq = 0;
    for (int i = 0; i < count; i++)
        mean += values[i];
    mean /= count;
    for (int i = 0; i < count; i++)
        sq += (values[i] - mean) * (values[i] - mean);
    return mean > 0 ? sqrt(sq / (count - 1)) / mean : NAN;
}

bool dy_stop_now(const struct dy_stop_rule *rule, const struct dy_timings *t, double elapsed_s,
                 char *note, size_t note_len)
{
    double timed_s = 0;
    for (int i = 0; i < t->reps; i++)
        timed_s += t->e2e_ms[i] / 1e3;
    double noise = dy_rel_stddev(t->e2e_ms, t->reps);
    bool quiet = rule->max_noise <= 0 || noise <= rule->max_noise;
    if (t->reps >= rule->min_reps && timed_s >= rule->min_time_s && quiet)
        return true;
    double limit = rule->max_time_s > 0 ? rule->max_time_s
                   : rule->max_noise > 0 ? DY_DEFAULT_MAX_TIME_S : 0;
    if (limit <= 0 || elapsed_s < limit || t->reps < 1)
        return false;
    if (!quiet)
        snprintf(note, note_len, "noise %.2f%% above the %.2f%% target after %d repetitions in "
                 "%.0f s", noise * 100, rule->max_noise * 100, t->reps, elapsed_s);
    else
        snprintf(note, note_len, "time limit of %.0f s reached after %d repetitions", limit,
                 t->reps);
    return true;
}
