#include <math.h>
#include <stdlib.h>

#include "harness.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double dy_percentile(double *values, int count, double pct)
{
    if (count <= 0)
        return NAN;
    qsort(values, (size_t)count, sizeof *values, cmp_double);
    double rank = pct / 100.0 * (count - 1);
    int lo = (int)floor(rank), hi = (int)ceil(rank);
    return values[lo] + (values[hi] - values[lo]) * (rank - lo);
}
