/* The OpenCL backend: discovery over every platform, contexts, memory,
 * events and the table. The kernels (the .cl files in kernels/) are
 * embedded at build time and built once per context; ops live in
 * opencl_ops.c and opencl_gemm.c.
 *
 * Devices are numbered flat across platforms in the order the ICD loader
 * lists them (PoCL's CPU first, then "NVIDIA CUDA" on the GPU machine). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opencl_internal.h"

#define MAX_PLATFORMS 16
#define MAX_DEVICES 64

/* The kernel sources, concatenated and embedded by meson.build. */
extern const char dy_opencl_kernels[];

/* No -cl-fast-relaxed-math or -cl-mad-enable: fill_random must round like
 * the host, and conformance compares against double-precision results.
 * CPU devices get DY_OCL_CPU too: kernels/common.cl's prefetch_bytes is
 * a hint to them and nothing elsewhere. */
static const char build_options[] = "-cl-std=CL1.2";
static const char cpu_build_options[] = "-cl-std=CL1.2 -DDY_OCL_CPU";

#define DY_OCL_ERRORS(X)                                                       \
    X(CL_DEVICE_NOT_FOUND) X(CL_DEVICE_NOT_AVAILABLE) X(CL_COMPILER_NOT_AVAILABLE) \
    X(CL_MEM_OBJECT_ALLOCATION_FAILURE) X(CL_OUT_OF_RESOURCES)                 \
    X(CL_OUT_OF_HOST_MEMORY) X(CL_PROFILING_INFO_NOT_AVAILABLE)                \
    X(CL_MEM_COPY_OVERLAP) X(CL_BUILD_PROGRAM_FAILURE) X(CL_MAP_FAILURE)       \
    X(CL_MISALIGNED_SUB_BUFFER_OFFSET)                                         \
    X(CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST) X(CL_INVALID_VALUE)        \
    X(CL_INVALID_DEVICE_TYPE) X(CL_INVALID_PLATFORM) X(CL_INVALID_DEVICE)      \
    X(CL_INVALID_CONTEXT) X(CL_INVALID_QUEUE_PROPERTIES)                       \
    X(CL_INVALID_COMMAND_QUEUE) X(CL_INVALID_HOST_PTR) X(CL_INVALID_MEM_OBJECT) \
    X(CL_INVALID_BINARY) X(CL_INVALID_BUILD_OPTIONS) X(CL_INVALID_PROGRAM)     \
    X(CL_INVALID_PROGRAM_EXECUTABLE) X(CL_INVALID_KERNEL_NAME)                 \
    X(CL_INVALID_KERNEL_DEFINITION) X(CL_INVALID_KERNEL) X(CL_INVALID_ARG_INDEX) \
    X(CL_INVALID_ARG_VALUE) X(CL_INVALID_ARG_SIZE) X(CL_INVALID_KERNEL_ARGS)   \
    X(CL_INVALID_WORK_DIMENSION) X(CL_INVALID_WORK_GROUP_SIZE)                 \
    X(CL_INVALID_WORK_ITEM_SIZE) X(CL_INVALID_GLOBAL_OFFSET)                   \
    X(CL_INVALID_EVENT_WAIT_LIST) X(CL_INVALID_EVENT) X(CL_INVALID_OPERATION)  \
    X(CL_INVALID_BUFFER_SIZE) X(CL_INVALID_GLOBAL_WORK_SIZE)                   \
    X(CL_INVALID_PROPERTY)

const char *dy_ocl_error_name(cl_int code)
{
    switch (code) {
#define DY_OCL_ERROR_CASE(name) case name: return #name;
        DY_OCL_ERRORS(DY_OCL_ERROR_CASE)
#undef DY_OCL_ERROR_CASE
    case -1001: return "CL_PLATFORM_NOT_FOUND_KHR"; /* the ICD loader's: no platform */
    default: return "unknown OpenCL error";
    }
}

static int status_of(cl_int code)
{
    switch (code) {
    case CL_MEM_OBJECT_ALLOCATION_FAILURE:
    case CL_OUT_OF_HOST_MEMORY:
    case CL_INVALID_BUFFER_SIZE:
        return DY_E_NOMEM;
    case CL_DEVICE_NOT_FOUND:
    case CL_DEVICE_NOT_AVAILABLE:
    case -1001:
        return DY_E_NODEVICE;
    default:
        return DY_E_DEVICE;
    }
}

int dy_ocl_fail(struct dy_ocl_ctx *c, cl_int code, const char *call)
{
    snprintf(c->err, sizeof c->err, "%s: %s (%d)", call, dy_ocl_error_name(code), (int)code);
    return status_of(code);
}

int dy_ocl_failf(struct dy_ocl_ctx *c, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
    return status;
}

/* ---- discovery ---- */

/* Device `index` of the flat list (or the list's length with index < 0).
 * On failure `why` says what is missing. */
static int find_device(int index, cl_platform_id *platform, cl_device_id *device, int *count,
                       char *why, size_t why_len)
{
    cl_platform_id platforms[MAX_PLATFORMS];
    cl_uint np = 0;
    cl_int err = clGetPlatformIDs(MAX_PLATFORMS, platforms, &np);
    if (err != CL_SUCCESS || np == 0) {
        snprintf(why, why_len, "no OpenCL platform (clGetPlatformIDs: %d %s)", (int)err,
                 err != CL_SUCCESS ? dy_ocl_error_name(err) : "none listed");
        return DY_E_NODEVICE;
    }
    int seen = 0;
    for (cl_uint p = 0; p < np && p < MAX_PLATFORMS; p++) {
        cl_device_id devices[MAX_DEVICES];
        cl_uint nd = 0;
        /* a platform without devices answers CL_DEVICE_NOT_FOUND */
        cl_int err = clGetDeviceIDs(platforms[p], CL_DEVICE_TYPE_ALL, MAX_DEVICES, devices, &nd);
        if (err != CL_SUCCESS)
            continue;
        if (nd > MAX_DEVICES)
            nd = MAX_DEVICES;
        if (index >= seen && index < seen + (int)nd) {
            *platform = platforms[p];
            *device = devices[index - seen];
            return DY_OK;
        }
        seen += (int)nd;
    }
    if (count)
        *count = seen;
    if (index < 0 && seen > 0)
        return DY_OK;
    if (seen == 0)
        snprintf(why, why_len, "no OpenCL device on %u platform(s)", (unsigned)np);
    else
        snprintf(why, why_len, "no OpenCL device %d (%d found)", index, seen);
    return seen == 0 ? DY_E_NODEVICE : DY_E_INVALID;
}

static int ocl_probe(char *why, size_t why_len)
{
    int count = 0;
    char local[256];
    int st = find_device(-1, NULL, NULL, &count, local, sizeof local);
    if (why_len)
        snprintf(why, why_len, "%s", st == DY_OK ? "" : local);
    return st;
}

static int ocl_device_count(int *count)
{
    char why[256];
    *count = 0;
    int st = find_device(-1, NULL, NULL, count, why, sizeof why);
    return st == DY_E_NODEVICE ? DY_OK : st;
}

/* Read whole, then truncated: a buffer shorter than the string is an
 * error for clGetDeviceInfo. */
static void device_string(cl_device_id dev, cl_device_info what, char *out, size_t len)
{
    char full[1024];
    if (clGetDeviceInfo(dev, what, sizeof full, full, NULL) != CL_SUCCESS)
        snprintf(full, sizeof full, "unknown");
    full[sizeof full - 1] = '\0';
    snprintf(out, len, "%s", full);
}

static uint64_t device_u64(cl_device_id dev, cl_device_info what)
{
    cl_ulong v = 0;
    return clGetDeviceInfo(dev, what, sizeof v, &v, NULL) == CL_SUCCESS ? (uint64_t)v : 0;
}

static int device_uint(cl_device_id dev, cl_device_info what)
{
    cl_uint v = 0;
    return clGetDeviceInfo(dev, what, sizeof v, &v, NULL) == CL_SUCCESS ? (int)v : 0;
}

static int ocl_device_info(int index, struct dy_device_info *info)
{
    cl_platform_id platform;
    cl_device_id dev;
    char why[256];
    memset(info, 0, sizeof *info);
    if (index < 0)
        return DY_E_INVALID;
    int st = find_device(index, &platform, &dev, NULL, why, sizeof why);
    if (st != DY_OK)
        return st;
    char platform_name[256], device_name[256];
    if (clGetPlatformInfo(platform, CL_PLATFORM_NAME, sizeof platform_name, platform_name, NULL))
        snprintf(platform_name, sizeof platform_name, "unknown platform");
    platform_name[sizeof platform_name - 1] = '\0';
    device_string(dev, CL_DEVICE_NAME, device_name, sizeof device_name);
    snprintf(info->name, sizeof info->name, "%.60s / %.60s", platform_name, device_name);
    device_string(dev, CL_DEVICE_VENDOR, info->vendor, sizeof info->vendor);
    device_string(dev, CL_DRIVER_VERSION, info->driver_version, sizeof info->driver_version);
    device_string(dev, CL_DEVICE_VERSION, info->runtime_version, sizeof info->runtime_version);
    info->mem_total_bytes = device_u64(dev, CL_DEVICE_GLOBAL_MEM_SIZE);
    info->l2_bytes = device_u64(dev, CL_DEVICE_GLOBAL_MEM_CACHE_SIZE);
    info->compute_units = device_uint(dev, CL_DEVICE_MAX_COMPUTE_UNITS);
    info->clock_mhz = device_uint(dev, CL_DEVICE_MAX_CLOCK_FREQUENCY);
    /* no DY_CAP_F16 or DY_CAP_BF16: the kernels compute in f32 whatever
     * the device offers (cl_khr_fp16 is rare, and absent on NVIDIA) */
    cl_bool unified = CL_FALSE;
    if (clGetDeviceInfo(dev, CL_DEVICE_HOST_UNIFIED_MEMORY, sizeof unified, &unified, NULL) ==
            CL_SUCCESS && unified)
        info->caps |= DY_CAP_UNIFIED;
    return DY_OK;
}

/* ---- contexts ---- */

/* CLBlast caches compiled programs per context for the whole process; the
 * cache is dropped when the last context goes, so that a released context
 * is not kept alive by it. */
static int live_contexts;

static void ocl_ctx_destroy(void *ctx)
{
    struct dy_ocl_ctx *c = ctx;
    if (!c)
        return;
    if (c->queue)
        clFinish(c->queue);
    for (int i = 0; i < DY_OCL_STAGE_SLOTS; i++) {
        if (c->stage[i].done)
            clReleaseEvent(c->stage[i].done);
        free(c->stage[i].host);
    }
    if (c->scratch)
        clReleaseMemObject(c->scratch);
    for (int i = 0; i < DY_OCL_KERNEL_COUNT; i++)
        if (c->kernels[i])
            clReleaseKernel(c->kernels[i]);
    if (c->program)
        clReleaseProgram(c->program);
    if (c->queue)
        clReleaseCommandQueue(c->queue);
    if (c->context) {
        clReleaseContext(c->context);
        if (--live_contexts == 0)
            dy_ocl_gemm_release_cache();
    }
    free(c);
}

/* A failed build is a bug or a driver's quirk: its log goes to stderr, as
 * does the reason for any failure of ctx_create, whose caller has no
 * context to ask for text. */
static void report_build_log(struct dy_ocl_ctx *c, const char *what)
{
    size_t len = 0;
    clGetProgramBuildInfo(c->program, c->device, CL_PROGRAM_BUILD_LOG, 0, NULL, &len);
    char *log = len ? malloc(len + 1) : NULL;
    if (log && clGetProgramBuildInfo(c->program, c->device, CL_PROGRAM_BUILD_LOG, len, log,
                                     NULL) == CL_SUCCESS) {
        log[len] = '\0';
        fprintf(stderr, "dyno: opencl: kernel build %s:\n%s\n", what, log);
    }
    free(log);
}

static const char *const kernel_names[] = {
#define DY_OCL_KERNEL_NAME(name) #name,
    DY_OCL_KERNELS(DY_OCL_KERNEL_NAME)
#undef DY_OCL_KERNEL_NAME
};

/* Makes one context, one in-order profiling queue and the program for
 * device `index`; *ctx is freed by ctx_destroy with everything in it. */
/* Whether the environment turns a default-on choice off (NAME=0). */
static bool switched_off(const char *name)
{
    const char *v = getenv(name);
    return v && strcmp(v, "0") == 0;
}

static int ocl_ctx_create(int index, void **ctx)
{
    cl_platform_id platform;
    char why[256];
    *ctx = NULL;
    struct dy_ocl_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return DY_E_NOMEM;
    int st = find_device(index, &platform, &c->device, NULL, why, sizeof why);
    if (st != DY_OK)
        goto fail;
    cl_context_properties props[] = { CL_CONTEXT_PLATFORM, (cl_context_properties)platform, 0 };
    cl_int err;
    c->context = clCreateContext(props, 1, &c->device, NULL, NULL, &err);
    if (!c->context) {
        st = dy_ocl_fail(c, err, "clCreateContext");
        goto fail;
    }
    live_contexts++;
    c->queue = clCreateCommandQueue(c->context, c->device, CL_QUEUE_PROFILING_ENABLE, &err);
    if (!c->queue) {
        st = dy_ocl_fail(c, err, "clCreateCommandQueue");
        goto fail;
    }
    const char *source = dy_opencl_kernels;
    c->program = clCreateProgramWithSource(c->context, 1, &source, NULL, &err);
    if (!c->program) {
        st = dy_ocl_fail(c, err, "clCreateProgramWithSource");
        goto fail;
    }
    cl_device_type type = 0;
    clGetDeviceInfo(c->device, CL_DEVICE_TYPE, sizeof type, &type, NULL);
    bool cpu = (type & CL_DEVICE_TYPE_CPU) != 0;
    /* DYNO_OCL_BUILD_OPTIONS adds to the options (a vendor's, such as
     * NVIDIA's -cl-nv-verbose or -cl-nv-maxrregcount=N); DYNO_OCL_BUILD_LOG=1
     * prints the compiler's log after a build that succeeded too */
    char options[512];
    const char *extra = getenv("DYNO_OCL_BUILD_OPTIONS");
    if (snprintf(options, sizeof options, "%s %s", cpu ? cpu_build_options : build_options, extra ? extra : "") >=
        (int)sizeof options) {
        st = dy_ocl_failf(c, DY_E_INVALID, "DYNO_OCL_BUILD_OPTIONS: the build options come to more than %zu "
                          "characters", sizeof options - 1);
        goto fail;
    }
    err = clBuildProgram(c->program, 1, &c->device, options, NULL, NULL);
    const char *show_log = getenv("DYNO_OCL_BUILD_LOG");
    if (err == CL_SUCCESS && show_log && strcmp(show_log, "1") == 0)
        report_build_log(c, "log");
    if (err != CL_SUCCESS) {
        report_build_log(c, "failed");
        st = dy_ocl_fail(c, err, "clBuildProgram");
        goto fail;
    }
    for (int i = 0; i < DY_OCL_KERNEL_COUNT; i++) {
        c->kernels[i] = clCreateKernel(c->program, kernel_names[i], &err);
        if (!c->kernels[i]) {
            st = dy_ocl_fail(c, err, "clCreateKernel");
            goto fail;
        }
    }
    c->mem_total = device_u64(c->device, CL_DEVICE_GLOBAL_MEM_SIZE);
    c->max_alloc = device_u64(c->device, CL_DEVICE_MAX_MEM_ALLOC_SIZE);
    c->local_mem = device_u64(c->device, CL_DEVICE_LOCAL_MEM_SIZE);
    c->compute_units = device_uint(c->device, CL_DEVICE_MAX_COMPUTE_UNITS);
    /* a CPU runs a work-group's items one after another: one item per row
     * of B reads it front to back (kernels/gemm.cl's gemv_lanes) */
    c->gemv_lanes = cpu ? 1 : 32;
    /* GPUs keep the kernels before gemv_lanes: on an H100 through NVIDIA's
     * OpenCL they were as fast at one row of A and up to 1.5x faster at
     * 4-8 rows; DYNO_OCL_GEMV=old or new picks either anywhere */
    const char *gemv = getenv("DYNO_OCL_GEMV");
    c->gemv_old = gemv ? strcmp(gemv, "old") == 0 : !cpu;
    c->swiglu_gemv = !switched_off("DYNO_OCL_SWIGLU_GEMV");
    /* with them, one row of A goes to gemv1_gpu, which also takes a
     * GEMV's norm, RoPE and KV append; DYNO_OCL_GEMV1=0 keeps gemv1_old,
     * the ops composed */
    c->gemv1_gpu = c->gemv_old && !switched_off("DYNO_OCL_GEMV1");
    c->gemv1_norm = !switched_off("DYNO_OCL_GEMV1_NORM");
    c->gemv1_rope = !switched_off("DYNO_OCL_GEMV1_ROPE");
    c->gemv1_append = !switched_off("DYNO_OCL_GEMV1_APPEND");
    /* the same for the element-wise ops and norms: an item per element
     * (GPUs) or per span of a row (kernels/ops.cl's span layout, CPUs);
     * DYNO_OCL_OPS=item or span picks either anywhere */
    const char *ops = getenv("DYNO_OCL_OPS");
    c->spans = ops ? strcmp(ops, "span") == 0 : cpu;
    /* decode attention a work-group per KV head where heads share one
     * (kernels/attention.cl's attention_decode_gqa); DYNO_OCL_GQA_DECODE=0
     * keeps a work-group per query head */
    c->gqa_decode = !switched_off("DYNO_OCL_GQA_DECODE");
    *ctx = c;
    return DY_OK;
fail:
    if (c->err[0])
        fprintf(stderr, "dyno: opencl: device %d: %s\n", index, c->err);
    ocl_ctx_destroy(c);
    return st;
}

static const char *ocl_last_error(void *ctx)
{
    return ((struct dy_ocl_ctx *)ctx)->err;
}

/* ---- memory ---- */

static int alloc_buffer(struct dy_ocl_ctx *c, size_t bytes, cl_mem *out)
{
    if (bytes > c->max_alloc)
        return dy_ocl_failf(c, DY_E_NOMEM,
                            "allocation of %zu bytes exceeds the device's max allocation %llu",
                            bytes, (unsigned long long)c->max_alloc);
    /* drivers allocate lazily: without this check an oversubscribed device
     * fails later, inside some op, instead of here */
    if (c->allocated + bytes > c->mem_total)
        return dy_ocl_failf(c, DY_E_NOMEM,
                            "allocation of %zu bytes exceeds the %llu bytes of device memory "
                            "this context has not allocated",
                            bytes, (unsigned long long)(c->mem_total - c->allocated));
    cl_int err;
    *out = clCreateBuffer(c->context, CL_MEM_READ_WRITE, bytes, NULL, &err);
    if (!*out)
        return dy_ocl_fail(c, err, "clCreateBuffer");
    c->allocated += bytes;
    return DY_OK;
}

static void release_buffer(struct dy_ocl_ctx *c, cl_mem mem)
{
    size_t bytes = 0;
    if (clGetMemObjectInfo(mem, CL_MEM_SIZE, sizeof bytes, &bytes, NULL) == CL_SUCCESS)
        c->allocated -= bytes;
    /* OpenCL defers the release until queued commands using it are done */
    clReleaseMemObject(mem);
}

static int ocl_buf_alloc(void *ctx, size_t bytes, void **impl)
{
    cl_mem mem;
    int st = alloc_buffer(ctx, bytes, &mem);
    *impl = st == DY_OK ? mem : NULL;
    return st;
}

static void ocl_buf_free(void *ctx, void *impl)
{
    release_buffer(ctx, impl);
}

int dy_ocl_scratch(struct dy_ocl_ctx *c, size_t bytes, cl_mem *out)
{
    if (c->scratch_bytes < bytes) {
        if (c->scratch)
            release_buffer(c, c->scratch);
        c->scratch = NULL;
        c->scratch_bytes = 0;
        int st = alloc_buffer(c, bytes, &c->scratch);
        if (st != DY_OK)
            return st;
        c->scratch_bytes = bytes;
    }
    *out = c->scratch;
    return DY_OK;
}

/* The caller may reuse `src` as soon as we return: a small write leaves
 * from a copy in the staging ring without blocking (a blocking write first
 * waits for everything queued before it, so a decode step's inputs would
 * drain the queue between steps); a large one blocks. */
static int ocl_buf_write(void *ctx, dy_buf dst, const void *src, size_t bytes)
{
    struct dy_ocl_ctx *c = ctx;
    if (bytes == 0)
        return DY_OK;
    cl_int err;
    if (bytes <= DY_OCL_STAGE_BYTES) {
        struct dy_ocl_stage *s = &c->stage[c->stage_next++ % DY_OCL_STAGE_SLOTS];
        if (s->done) {
            err = clWaitForEvents(1, &s->done);
            clReleaseEvent(s->done);
            s->done = NULL;
            if (err != CL_SUCCESS)
                return dy_ocl_fail(c, err, "clWaitForEvents (staged write)");
        }
        if (!s->host && !(s->host = malloc(DY_OCL_STAGE_BYTES)))
            return dy_ocl_failf(c, DY_E_NOMEM, "staging buffer of %d bytes", DY_OCL_STAGE_BYTES);
        memcpy(s->host, src, bytes);
        err = clEnqueueWriteBuffer(c->queue, dy_ocl_mem(dst), CL_FALSE, dst.off, bytes, s->host, 0, NULL,
                                   &s->done);
    } else {
        err = clEnqueueWriteBuffer(c->queue, dy_ocl_mem(dst), CL_TRUE, dst.off, bytes, src, 0, NULL, NULL);
    }
    return err == CL_SUCCESS ? DY_OK : dy_ocl_fail(c, err, "clEnqueueWriteBuffer");
}

static int ocl_buf_read(void *ctx, dy_buf src, void *dst, size_t bytes)
{
    struct dy_ocl_ctx *c = ctx;
    if (bytes == 0)
        return DY_OK;
    cl_int err = clEnqueueReadBuffer(c->queue, dy_ocl_mem(src), CL_TRUE, src.off, bytes, dst, 0,
                                     NULL, NULL);
    return err == CL_SUCCESS ? DY_OK : dy_ocl_fail(c, err, "clEnqueueReadBuffer");
}

/* Overlapping ranges of one buffer (memmove's case) are an error for
 * clEnqueueCopyBuffer: they go through a temporary buffer. */
static int ocl_buf_copy(void *ctx, dy_buf dst, dy_buf src, size_t bytes)
{
    struct dy_ocl_ctx *c = ctx;
    cl_mem d = dy_ocl_mem(dst), s = dy_ocl_mem(src);
    if (bytes == 0)
        return DY_OK;
    cl_int err;
    if (d == s && dst.off < src.off + bytes && src.off < dst.off + bytes) {
        cl_mem tmp;
        int st = alloc_buffer(c, bytes, &tmp);
        if (st != DY_OK)
            return st;
        err = clEnqueueCopyBuffer(c->queue, s, tmp, src.off, 0, bytes, 0, NULL, NULL);
        if (err == CL_SUCCESS)
            err = clEnqueueCopyBuffer(c->queue, tmp, d, 0, dst.off, bytes, 0, NULL, NULL);
        release_buffer(c, tmp);
    } else {
        err = clEnqueueCopyBuffer(c->queue, s, d, src.off, dst.off, bytes, 0, NULL, NULL);
    }
    return err == CL_SUCCESS ? DY_OK : dy_ocl_fail(c, err, "clEnqueueCopyBuffer");
}

static int ocl_buf_fill(void *ctx, dy_buf dst, uint8_t byte, size_t bytes)
{
    struct dy_ocl_ctx *c = ctx;
    if (bytes == 0)
        return DY_OK;
    cl_int err = clEnqueueFillBuffer(c->queue, dy_ocl_mem(dst), &byte, 1, dst.off, bytes, 0, NULL,
                                     NULL);
    return err == CL_SUCCESS ? DY_OK : dy_ocl_fail(c, err, "clEnqueueFillBuffer");
}

/* OpenCL does not say how much memory is free: total less what this
 * context holds. */
static int ocl_mem_info(void *ctx, struct dy_mem_info *info)
{
    struct dy_ocl_ctx *c = ctx;
    info->total_bytes = c->mem_total;
    info->free_bytes = c->allocated < c->mem_total ? c->mem_total - c->allocated : 0;
    return DY_OK;
}

/* ---- ordering and timing ---- */

static int ocl_sync(void *ctx)
{
    struct dy_ocl_ctx *c = ctx;
    cl_int err = clFinish(c->queue);
    return err == CL_SUCCESS ? DY_OK : dy_ocl_fail(c, err, "clFinish");
}

/* An event is a marker in the queue; NULL until recorded. */
static int ocl_event_create(void *ctx, void **event)
{
    *event = calloc(1, sizeof(cl_event));
    return *event ? DY_OK : DY_E_NOMEM;
}

static void ocl_event_destroy(void *ctx, void *event)
{
    cl_event *ev = event;
    if (*ev)
        clReleaseEvent(*ev);
    free(ev);
}

static int ocl_event_record(void *ctx, void *event)
{
    struct dy_ocl_ctx *c = ctx;
    cl_event *ev = event;
    if (*ev)
        clReleaseEvent(*ev);
    *ev = NULL;
    cl_int err = clEnqueueMarkerWithWaitList(c->queue, 0, NULL, ev);
    return err == CL_SUCCESS ? DY_OK : dy_ocl_fail(c, err, "clEnqueueMarkerWithWaitList");
}

/* The markers' end times: the in-order queue finishes everything before a
 * marker before the marker itself. */
static int ocl_event_elapsed_ns(void *ctx, void *start, void *end, uint64_t *ns)
{
    struct dy_ocl_ctx *c = ctx;
    cl_event a = *(cl_event *)start, b = *(cl_event *)end;
    *ns = 0;
    if (!a || !b)
        return dy_ocl_failf(c, DY_E_INVALID, "event_elapsed_ns: event not recorded");
    cl_int err = clWaitForEvents(1, &b);
    if (err != CL_SUCCESS)
        return dy_ocl_fail(c, err, "clWaitForEvents");
    cl_ulong t0, t1;
    err = clGetEventProfilingInfo(a, CL_PROFILING_COMMAND_END, sizeof t0, &t0, NULL);
    if (err == CL_SUCCESS)
        err = clGetEventProfilingInfo(b, CL_PROFILING_COMMAND_END, sizeof t1, &t1, NULL);
    if (err != CL_SUCCESS)
        return dy_ocl_fail(c, err, "clGetEventProfilingInfo");
    *ns = t1 > t0 ? (uint64_t)(t1 - t0) : 0;
    return DY_OK;
}

/* ---- kernels ---- */

int dy_ocl_launch(struct dy_ocl_ctx *c, enum dy_ocl_kernel k, cl_uint dims, const size_t *global,
                  const size_t *local, const struct dy_ocl_arg *args, cl_uint nargs)
{
    size_t rounded[3];
    for (cl_uint i = 0; i < dims; i++) {
        if (global[i] == 0)
            return DY_OK;
        rounded[i] = local ? (global[i] + local[i] - 1) / local[i] * local[i] : global[i];
    }
    cl_kernel kernel = c->kernels[k];
    char call[96];
    for (cl_uint i = 0; i < nargs; i++) {
        cl_int err = clSetKernelArg(kernel, i, args[i].size, args[i].value);
        if (err != CL_SUCCESS) {
            snprintf(call, sizeof call, "clSetKernelArg(%s, %u)", kernel_names[k], (unsigned)i);
            return dy_ocl_fail(c, err, call);
        }
    }
    cl_int err = clEnqueueNDRangeKernel(c->queue, kernel, dims, NULL, rounded, local, 0, NULL,
                                        NULL);
    if (err != CL_SUCCESS) {
        snprintf(call, sizeof call, "clEnqueueNDRangeKernel(%s)", kernel_names[k]);
        return dy_ocl_fail(c, err, call);
    }
    return DY_OK;
}

static const struct dy_backend opencl_backend = {
    .abi_version = DY_BACKEND_ABI,
    .name = "opencl",
    .description = "OpenCL 1.2 C kernels, CLBlast for f32 GEMM; any vendor's driver, PoCL on CPUs",
    .probe = ocl_probe,
    .device_count = ocl_device_count,
    .device_info = ocl_device_info,
    .ctx_create = ocl_ctx_create,
    .ctx_destroy = ocl_ctx_destroy,
    .last_error = ocl_last_error,
    .buf_alloc = ocl_buf_alloc,
    .buf_free = ocl_buf_free,
    .buf_write = ocl_buf_write,
    .buf_read = ocl_buf_read,
    .buf_copy = ocl_buf_copy,
    .buf_fill = ocl_buf_fill,
    .mem_info = ocl_mem_info,
    .sync = ocl_sync,
    .event_create = ocl_event_create,
    .event_destroy = ocl_event_destroy,
    .event_record = ocl_event_record,
    .event_elapsed_ns = ocl_event_elapsed_ns,
    .fill_random = dy_ocl_fill_random,
    .gemm = dy_ocl_gemm,
    /* in the GPU GEMV (RoPE and the norm at one row of A); declined elsewhere */
    .gemm_acts = 1u << DY_ACT_SWIGLU | 1u << DY_ACT_ROPE,
    .gemm_norm = true,
    .gemm_append = true,
    .norm = dy_ocl_norm,
    .rope = dy_ocl_rope,
    .eltwise = dy_ocl_eltwise,
    .gather_rows = dy_ocl_gather_rows,
    .kv_append = dy_ocl_kv_append,
    .attention_prefill = dy_ocl_attention_prefill,
    .attention_decode = dy_ocl_attention_decode,
    .argmax = dy_ocl_argmax,
    .convert = dy_ocl_convert,
    .softmax_topk = dy_ocl_softmax_topk,
    .moe_sort = dy_ocl_moe_sort,
    .gemm_grouped = dy_ocl_gemm_grouped,
    .scatter_add_rows = dy_ocl_scatter_add_rows,
    .kv_block_scores = dy_ocl_kv_block_scores,
    .dequantize = dy_ocl_dequantize,
};

__attribute__((visibility("default"))) const struct dy_backend *dy_backend_entry(void)
{
    return &opencl_backend;
}
