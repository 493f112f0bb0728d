/* libdyno-faulty.so: cpu-ref behind a plugin boundary, failing on purpose.
 * It proves plugin loading for real and lets tests drive every error path:
 *   DYNO_FAULT_OP=NAME:N        the Nth call of op NAME fails with a device error
 *   DYNO_FAULT_ALLOC_ABOVE=B    allocations of more than B bytes fail with
 *                               out-of-memory
 *   DYNO_FAULT_MEM=B            a device of B bytes: mem_info says B less
 *                               what is allocated is free (allocations
 *                               beyond it still succeed)
 *   DYNO_FAULT_POWER=W          an energy counter (energy_read) of a device
 *                               drawing W watts all the time: joules are W
 *                               times the seconds since the first read
 * Counts are per process, from 1. */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../backends/cpu_ref/cpu_ref.h"

static struct dy_backend table;
static long alloc_fault_above;
static uint64_t mem_bytes, mem_in_use;
static char fault_text[128];


static double power_w;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int faulty_energy_read(void *ctx, double *joules)
{
    static double t0;
    (void)ctx;
    if (t0 == 0)
        t0 = now_s();
    *joules = power_w * (now_s() - t0);
    return DY_OK;
}

static const char *faulty_last_error(void *ctx)
{
    return fault_text[0] ? fault_text : dy_backend_cpu_ref.last_error(ctx);
}

static int faulty_alloc(void *ctx, size_t bytes, void **impl)
{
    if (alloc_fault_above > 0 && bytes > (size_t)alloc_fault_above) {
        snprintf(fault_text, sizeof fault_text, "injected out-of-memory: %zu bytes > %ld", bytes,
                 alloc_fault_above);
        return DY_E_NOMEM;
    }
    int st = dy_backend_cpu_ref.buf_alloc(ctx, bytes, impl);
    if (st == DY_OK) /* cpu-ref's buffers come from aligned_alloc */
        mem_in_use += malloc_usable_size(*impl);
    return st;
}

static void faulty_free(void *ctx, void *impl)
{
    mem_in_use -= malloc_usable_size(impl);
    dy_backend_cpu_ref.buf_free(ctx, impl);
}

static int faulty_mem_info(void *ctx, struct dy_mem_info *info)
{
    int st = dy_backend_cpu_ref.mem_info(ctx, info);
    if (st == DY_OK && mem_bytes) {
        info->total_bytes = mem_bytes;
        info->free_bytes = mem_in_use < mem_bytes ? mem_bytes - mem_in_use : 0;
    }
    return st;
}

/* True when this call of `op` is the one DYNO_FAULT_OP names. */
static int op_fault(const char *op, long *calls)
{
    const char *spec = getenv("DYNO_FAULT_OP");
    size_t len = strlen(op);
    ++*calls;
    if (!spec || strncmp(spec, op, len) || spec[len] != ':' || atol(spec + len + 1) != *calls)
        return 0;
    snprintf(fault_text, sizeof fault_text, "injected device fault at call %ld of %s", *calls, op);
    return 1;
}

#define FAULTY_OP(op)                                                           \
    static int faulty_##op(void *ctx, const struct dy_##op##_desc *d)           \
    {                                                                           \
        static long calls;                                                      \
        return op_fault(#op, &calls) ? DY_E_DEVICE : dy_backend_cpu_ref.op(ctx, d); \
    }
FAULTY_OP(fill_random)
FAULTY_OP(gemm)
FAULTY_OP(norm)
FAULTY_OP(rope)
FAULTY_OP(eltwise)
FAULTY_OP(gather_rows)
FAULTY_OP(kv_append)
FAULTY_OP(attention_prefill)
FAULTY_OP(attention_decode)
FAULTY_OP(argmax)
FAULTY_OP(convert)
FAULTY_OP(softmax_topk)
FAULTY_OP(moe_sort)
FAULTY_OP(gemm_grouped)
FAULTY_OP(scatter_add_rows)

const struct dy_backend *dy_backend_entry(void)
{
    table = dy_backend_cpu_ref;
    table.name = "faulty";
    table.description = "cpu-ref as a plugin with injected faults (tests only)";
    table.last_error = faulty_last_error;
    table.buf_alloc = faulty_alloc;
    table.buf_free = faulty_free;
    table.mem_info = faulty_mem_info;
    table.fill_random = faulty_fill_random;
    table.gemm = faulty_gemm;
    table.norm = faulty_norm;
    table.rope = faulty_rope;
    table.eltwise = faulty_eltwise;
    table.gather_rows = faulty_gather_rows;
    table.kv_append = faulty_kv_append;
    table.attention_prefill = faulty_attention_prefill;
    table.attention_decode = faulty_attention_decode;
    table.argmax = faulty_argmax;
    table.convert = faulty_convert;
    table.softmax_topk = faulty_softmax_topk;
    table.moe_sort = faulty_moe_sort;
    table.gemm_grouped = faulty_gemm_grouped;
    table.scatter_add_rows = faulty_scatter_add_rows;
    const char *above = getenv("DYNO_FAULT_ALLOC_ABOVE");
    alloc_fault_above = above ? atol(above) : 0;
    const char *mem = getenv("DYNO_FAULT_MEM");
    mem_bytes = mem ? strtoull(mem, NULL, 10) : 0;
    const char *power = getenv("DYNO_FAULT_POWER");
    power_w = power ? atof(power) : 0.0;
    if (power_w > 0)
        table.energy_read = faulty_energy_read;
    return &table;
}
