/* The fast CPU backend: OpenBLAS for large GEMMs, OpenMP kernels with AVX2
 * (chosen at run time) for everything else. Ops run synchronously on the
 * calling thread's OpenMP team; buffers are host memory. */
#ifndef DY_CPU_H
#define DY_CPU_H

#include "backends/backend.h"

extern const struct dy_backend dy_backend_cpu;

#endif
