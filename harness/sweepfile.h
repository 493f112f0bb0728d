/* Sweep files (`dyno sweep FILE`): INI, each section a block of the same
 * keys as the axes of `dyno run`, with the same lists and ranges. */
#ifndef DY_SWEEPFILE_H
#define DY_SWEEPFILE_H

#include <stddef.h>

#include "sweep.h"

struct dy_sweep_file {
    struct dy_sweep *sections;   /* in file order */
    char **names;
    int count;
};

/* Loads FILE. Keys before the first section are defaults for every section
 * (or, in a file without sections, the one sweep). Errors name FILE:LINE.
 * Caller frees with dy_sweep_file_free. */
int dy_sweep_file_load(const char *path, struct dy_sweep_file *out, char *err, size_t err_len);
void dy_sweep_file_free(struct dy_sweep_file *f);

#endif
