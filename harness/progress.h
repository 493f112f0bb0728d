/* Sweep progress on stderr (progress.c): a bar on a terminal, plain log
 * lines otherwise. One sweep per process. */
#ifndef DY_PROGRESS_H
#define DY_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

#include "runner.h"

void dy_progress_start(uint64_t total);
/* Before point number done + 1 (label: a short description); returns the
 * start time to hand to dy_progress_end. */
double dy_progress_begin(uint64_t done, const char *label);
/* After it: done counts it. */
void dy_progress_end(uint64_t done, const char *label, const struct dy_point *p,
                     enum dy_point_outcome outcome, double started);
void dy_progress_finish(void);

#endif
