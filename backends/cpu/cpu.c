/* The cpu backend's table: discovery, contexts, memory and events. Ops are
 * synchronous (each returns when its OpenMP team is done), so sync is a
 * no-op and an event is the CLOCK_MONOTONIC time at which it was recorded. */
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>

#include "cpu.h"
#include "cpu_internal.h"

/* Below this a copy or fill is not worth waking the OpenMP team. */
#define PARALLEL_BYTES (1u << 20)

int dy_cpu_fail(struct dy_cpu_ctx *ctx, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->error, sizeof ctx->error, fmt, ap);
    va_end(ap);
    return status;
}

void *dy_cpu_aligned_alloc(size_t bytes)
{
    size_t rounded = (bytes + 63) & ~(size_t)63;
    return aligned_alloc(64, rounded ? rounded : 64);
}

void *dy_cpu_scratch(struct dy_cpu_ctx *ctx, int which, size_t bytes)
{
    struct dy_cpu_scratch *s = &ctx->scratch[which];
    if (s->bytes >= bytes)
        return s->ptr;
    free(s->ptr);
    s->ptr = dy_cpu_aligned_alloc(bytes);
    s->bytes = s->ptr ? bytes : 0;
    if (!s->ptr)
        dy_cpu_fail(ctx, DY_E_NOMEM, "cpu: scratch of %zu bytes", bytes);
    return s->ptr;
}

/* ---- discovery ---- */

static int cpu_probe(char *why, size_t why_len)
{
    if (why_len)
        why[0] = '\0';
    return DY_OK;
}

static int cpu_device_count(int *count)
{
    *count = 1;
    return DY_OK;
}

/* The value after "key<spaces>:" on the first matching line of a
 * /proc file, into out; false when absent. */
static bool proc_field(const char *path, const char *key, char *out, size_t out_len)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    char line[512];
    size_t key_len = strlen(key);
    bool found = false;
    while (!found && fgets(line, sizeof line, f)) {
        if (strncmp(line, key, key_len) != 0 || !strchr(line, ':'))
            continue;
        const char *v = strchr(line, ':') + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        snprintf(out, out_len, "%.*s", (int)strcspn(v, "\n"), v);
        found = true;
    }
    fclose(f);
    return found;
}

/* Size in bytes of the last-level cache: sysfs first, because sysconf
 * reports the host's total L3 under some hypervisors. */
static uint64_t last_level_cache_bytes(void)
{
    for (int index = 4; index >= 2; index--) {
        char path[96];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", index);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        unsigned long long size = 0;
        char unit = 0;
        int fields = fscanf(f, "%llu%c", &size, &unit);
        fclose(f);
        if (fields >= 1 && size > 0)
            return size << (unit == 'K' ? 10 : unit == 'M' ? 20 : 0);
    }
    long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE), l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
    return l3 > 0 ? (uint64_t)l3 : l2 > 0 ? (uint64_t)l2 : 0;
}

static uint64_t meminfo_kb(const char *key)
{
    char value[64];
    return proc_field("/proc/meminfo", key, value, sizeof value) ? strtoull(value, NULL, 10) : 0;
}

static int cpu_device_info(int device, struct dy_device_info *info)
{
    if (device != 0)
        return DY_E_INVALID;
    memset(info, 0, sizeof *info);
    if (!proc_field("/proc/cpuinfo", "model name", info->name, sizeof info->name))
        snprintf(info->name, sizeof info->name, "CPU");
    if (!proc_field("/proc/cpuinfo", "vendor_id", info->vendor, sizeof info->vendor))
        snprintf(info->vendor, sizeof info->vendor, "unknown");
    /* openblas_get_config() starts "OpenBLAS 0.3.21" and goes on with build
     * flags too long for the field; the kernel set it chose says more. */
    const char *config = openblas_get_config();
    const char *space = strchr(config, ' ');
    int version_len = space && strchr(space + 1, ' ') ? (int)(strchr(space + 1, ' ') - config)
                                                        : (int)strlen(config);
    snprintf(info->driver_version, sizeof info->driver_version, "%.*s %s", version_len, config,
             openblas_get_corename());
    dy_cpu_kernels_init();
    snprintf(info->runtime_version, sizeof info->runtime_version, "OpenMP %d, %s",
             _OPENMP, dy_cpu_isa());
    uint64_t mem_kb = meminfo_kb("MemTotal");
    uint64_t pages = (uint64_t)sysconf(_SC_PHYS_PAGES), page = (uint64_t)sysconf(_SC_PAGESIZE);
    info->mem_total_bytes = mem_kb ? mem_kb << 10 : pages * page;
    info->l2_bytes = last_level_cache_bytes();
    info->compute_units = omp_get_max_threads();
    char mhz[32];
    if (proc_field("/proc/cpuinfo", "cpu MHz", mhz, sizeof mhz))
        info->clock_mhz = (int)(strtod(mhz, NULL) + 0.5);
    info->caps = DY_CAP_UNIFIED;
    return DY_OK;
}

/* ---- contexts ---- */

/* Allocates *out; cpu_ctx_destroy frees it with its scratch buffers.
 * Buffers are the caller's to free. */
static int cpu_ctx_create(int device, void **out)
{
    if (device != 0)
        return DY_E_INVALID;
    struct dy_cpu_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return DY_E_NOMEM;
    dy_cpu_kernels_init();
    ctx->threads = omp_get_max_threads();
    /* Every sgemm runs single-threaded inside our OpenMP team, each thread
     * on its own block of C. OpenBLAS's own pool would be a second set of
     * threads per core, and both spin after their work (OpenBLAS's for
     * about 0.1 s): on a machine with few cores, each then halves the
     * other's speed in the op that follows. */
    openblas_set_num_threads(1);
    *out = ctx;
    return DY_OK;
}

static void cpu_ctx_destroy(void *opaque)
{
    struct dy_cpu_ctx *ctx = opaque;
    if (!ctx)
        return;
    for (int i = 0; i < DY_CPU_SCRATCH_COUNT; i++)
        free(ctx->scratch[i].ptr);
    free(ctx);
}

static const char *cpu_last_error(void *opaque)
{
    return ((struct dy_cpu_ctx *)opaque)->error;
}

/* ---- memory ---- */

static int cpu_buf_alloc(void *opaque, size_t bytes, void **impl)
{
    void *p = dy_cpu_aligned_alloc(bytes);
    if (!p)
        return dy_cpu_fail(opaque, DY_E_NOMEM, "cpu: aligned_alloc(%zu bytes) failed", bytes);
    *impl = p;
    return DY_OK;
}

static void cpu_buf_free(void *opaque, void *impl)
{
    free(impl);
}

/* memcpy in one chunk per thread, so that a large copy runs at the memory
 * bandwidth of every core rather than one's. */
static void parallel_copy(void *dst, const void *src, size_t bytes)
{
    if (bytes < PARALLEL_BYTES) {
        memcpy(dst, src, bytes);
        return;
    }
#pragma omp parallel
    {
        size_t threads = (size_t)omp_get_num_threads(), t = (size_t)omp_get_thread_num();
        size_t chunk = ((bytes + threads - 1) / threads + 63) & ~(size_t)63;
        size_t begin = t * chunk < bytes ? t * chunk : bytes;
        size_t end = begin + chunk < bytes ? begin + chunk : bytes;
        memcpy((char *)dst + begin, (const char *)src + begin, end - begin);
    }
}

static int cpu_buf_write(void *opaque, dy_buf dst, const void *src, size_t bytes)
{
    parallel_copy(DY_CPU_PTR(dst), src, bytes);
    return DY_OK;
}

static int cpu_buf_read(void *opaque, dy_buf src, void *dst, size_t bytes)
{
    parallel_copy(dst, DY_CPU_PTR(src), bytes);
    return DY_OK;
}

static int cpu_buf_copy(void *opaque, dy_buf dst, dy_buf src, size_t bytes)
{
    void *d = DY_CPU_PTR(dst);
    const void *s = DY_CPU_PTR(src);
    /* overlapping views of one allocation: memmove's order matters */
    if ((const char *)d < (const char *)s + bytes && (const char *)s < (const char *)d + bytes)
        memmove(d, s, bytes);
    else
        parallel_copy(d, s, bytes);
    return DY_OK;
}

static int cpu_buf_fill(void *opaque, dy_buf dst, uint8_t byte, size_t bytes)
{
    char *d = DY_CPU_PTR(dst);
    if (bytes < PARALLEL_BYTES) {
        memset(d, byte, bytes);
        return DY_OK;
    }
#pragma omp parallel
    {
        size_t threads = (size_t)omp_get_num_threads(), t = (size_t)omp_get_thread_num();
        size_t chunk = ((bytes + threads - 1) / threads + 63) & ~(size_t)63;
        size_t begin = t * chunk < bytes ? t * chunk : bytes;
        size_t end = begin + chunk < bytes ? begin + chunk : bytes;
        memset(d + begin, byte, end - begin);
    }
    return DY_OK;
}

static int cpu_mem_info(void *opaque, struct dy_mem_info *info)
{
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    uint64_t total_kb = meminfo_kb("MemTotal"), avail_kb = meminfo_kb("MemAvailable");
    info->total_bytes = total_kb ? total_kb << 10 : (uint64_t)sysconf(_SC_PHYS_PAGES) * page;
    info->free_bytes = avail_kb ? avail_kb << 10 : (uint64_t)sysconf(_SC_AVPHYS_PAGES) * page;
    return DY_OK;
}

/* ---- ordering and timing ---- */

static int cpu_sync(void *opaque)
{
    return DY_OK;
}

static int cpu_event_create(void *opaque, void **event)
{
    uint64_t *ns = calloc(1, sizeof *ns);
    if (!ns)
        return dy_cpu_fail(opaque, DY_E_NOMEM, "cpu: event allocation failed");
    *event = ns;
    return DY_OK;
}

static void cpu_event_destroy(void *opaque, void *event)
{
    free(event);
}

static int cpu_event_record(void *opaque, void *event)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    *(uint64_t *)event = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    return DY_OK;
}

static int cpu_event_elapsed_ns(void *opaque, void *start, void *end, uint64_t *ns)
{
    uint64_t t0 = *(const uint64_t *)start, t1 = *(const uint64_t *)end;
    if (t1 < t0)
        return dy_cpu_fail(opaque, DY_E_INVALID, "cpu: end event recorded before start");
    *ns = t1 - t0;
    return DY_OK;
}

const struct dy_backend dy_backend_cpu = {
    .abi_version = DY_BACKEND_ABI,
    .name = "cpu",
    .description = "OpenBLAS GEMM and OpenMP kernels (AVX2 when available)",
    .probe = cpu_probe,
    .device_count = cpu_device_count,
    .device_info = cpu_device_info,
    .ctx_create = cpu_ctx_create,
    .ctx_destroy = cpu_ctx_destroy,
    .last_error = cpu_last_error,
    .buf_alloc = cpu_buf_alloc,
    .buf_free = cpu_buf_free,
    .buf_write = cpu_buf_write,
    .buf_read = cpu_buf_read,
    .buf_copy = cpu_buf_copy,
    .buf_fill = cpu_buf_fill,
    .mem_info = cpu_mem_info,
    .sync = cpu_sync,
    .event_create = cpu_event_create,
    .event_destroy = cpu_event_destroy,
    .event_record = cpu_event_record,
    .event_elapsed_ns = cpu_event_elapsed_ns,
    .fill_random = dy_cpu_fill_random,
    .gemm = dy_cpu_gemm,
    .norm = dy_cpu_norm,
    .rope = dy_cpu_rope,
    .eltwise = dy_cpu_eltwise,
    .gather_rows = dy_cpu_gather_rows,
    .kv_append = dy_cpu_kv_append,
    .attention_prefill = dy_cpu_attention_prefill,
    .attention_decode = dy_cpu_attention_decode,
    .argmax = dy_cpu_argmax,
    .convert = dy_cpu_convert,
    .softmax_topk = dy_cpu_softmax_topk,
    .moe_sort = dy_cpu_moe_sort,
    .gemm_grouped = dy_cpu_gemm_grouped,
    .scatter_add_rows = dy_cpu_scatter_add_rows,
    .kv_block_scores = dy_cpu_kv_block_scores,
    .dequantize = dy_cpu_dequantize,
};
