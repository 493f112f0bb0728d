/* The Level Zero backend: discovery, contexts, memory, events and the
 * table. The kernels are the OpenCL backend's .cl files compiled at build
 * time to one SPIR-V module (see meson.build), embedded here and loaded
 * with zeModuleCreate per context; memory, ordering and events live in
 * level_zero_mem.c, ops in level_zero_ops.c and level_zero_gemm.c.
 *
 * Devices are numbered flat across drivers in the order the loader lists
 * them. Sysman (power, free memory) is not used. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "level_zero_internal.h"

/* const char dy_level_zero_spirv[]: the module's bytes plus a NUL that
 * tools/embed.py appends. Included here only, so that sizeof gives the
 * length. */
#include "level_zero_spirv.h"

#define SPIRV_BYTES (sizeof dy_level_zero_spirv - 1)
#define MAX_DRIVERS 16
#define MAX_DEVICES 64

#define DY_ZE_ERRORS(X)                                                        \
    X(ZE_RESULT_NOT_READY) X(ZE_RESULT_ERROR_DEVICE_LOST)                      \
    X(ZE_RESULT_ERROR_OUT_OF_HOST_MEMORY) X(ZE_RESULT_ERROR_OUT_OF_DEVICE_MEMORY) \
    X(ZE_RESULT_ERROR_MODULE_BUILD_FAILURE) X(ZE_RESULT_ERROR_MODULE_LINK_FAILURE) \
    X(ZE_RESULT_ERROR_UNINITIALIZED) X(ZE_RESULT_ERROR_UNSUPPORTED_VERSION)    \
    X(ZE_RESULT_ERROR_UNSUPPORTED_FEATURE) X(ZE_RESULT_ERROR_INVALID_ARGUMENT) \
    X(ZE_RESULT_ERROR_INVALID_NULL_HANDLE) X(ZE_RESULT_ERROR_INVALID_NULL_POINTER) \
    X(ZE_RESULT_ERROR_INVALID_SIZE) X(ZE_RESULT_ERROR_UNSUPPORTED_SIZE)        \
    X(ZE_RESULT_ERROR_UNSUPPORTED_ALIGNMENT) X(ZE_RESULT_ERROR_INVALID_KERNEL_NAME) \
    X(ZE_RESULT_ERROR_INVALID_GROUP_SIZE_DIMENSION)                            \
    X(ZE_RESULT_ERROR_INVALID_KERNEL_ARGUMENT_INDEX)                           \
    X(ZE_RESULT_ERROR_INVALID_KERNEL_ARGUMENT_SIZE) X(ZE_RESULT_ERROR_UNKNOWN)

static const char *error_name(ze_result_t code)
{
    switch (code) {
#define DY_ZE_ERROR_CASE(name) case name: return #name;
        DY_ZE_ERRORS(DY_ZE_ERROR_CASE)
#undef DY_ZE_ERROR_CASE
    default: return "unknown Level Zero error";
    }
}

static int status_of(ze_result_t code)
{
    switch (code) {
    case ZE_RESULT_ERROR_OUT_OF_HOST_MEMORY:
    case ZE_RESULT_ERROR_OUT_OF_DEVICE_MEMORY:
        return DY_E_NOMEM;
    case ZE_RESULT_ERROR_UNINITIALIZED:
        return DY_E_NODEVICE;
    case ZE_RESULT_ERROR_UNSUPPORTED_FEATURE:
        return DY_E_UNSUPPORTED;
    default:
        return DY_E_DEVICE;
    }
}

int dy_ze_fail(struct dy_ze_ctx *c, ze_result_t code, const char *call)
{
    snprintf(c->err, sizeof c->err, "%s: %s (0x%08x)", call, error_name(code), (unsigned)code);
    return status_of(code);
}

int dy_ze_failf(struct dy_ze_ctx *c, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
    return status;
}

/* ---- discovery ---- */

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static ze_result_t init_result;

static void init_driver(void)
{
    init_result = zeInit(0);
}

/* Device `index` of the flat list (or the list's length with index < 0).
 * On failure `why` says what is missing. No other call is made after a
 * failed zeInit: zeDriverGet then crashes Debian's loader where Intel's
 * driver package is installed without a GPU. */
static int find_device(int index, ze_driver_handle_t *driver, ze_device_handle_t *device,
                       int *count, char *why, size_t why_len)
{
    pthread_once(&init_once, init_driver);
    if (init_result != ZE_RESULT_SUCCESS) {
        snprintf(why, why_len, "no Level Zero driver (zeInit: %s, 0x%08x)",
                 error_name(init_result), (unsigned)init_result);
        return DY_E_NODEVICE;
    }
    ze_driver_handle_t drivers[MAX_DRIVERS];
    uint32_t nd = MAX_DRIVERS;
    ze_result_t r = zeDriverGet(&nd, drivers);
    if (r != ZE_RESULT_SUCCESS || nd == 0) {
        snprintf(why, why_len, "no Level Zero driver (zeDriverGet: %s, %u listed)",
                 r != ZE_RESULT_SUCCESS ? error_name(r) : "ok", (unsigned)nd);
        return DY_E_NODEVICE;
    }
    int seen = 0;
    for (uint32_t d = 0; d < nd; d++) {
        ze_device_handle_t devices[MAX_DEVICES];
        uint32_t n = MAX_DEVICES;
        if (zeDeviceGet(drivers[d], &n, devices) != ZE_RESULT_SUCCESS)
            continue;
        if (index >= seen && index < seen + (int)n) {
            *driver = drivers[d];
            *device = devices[index - seen];
            return DY_OK;
        }
        seen += (int)n;
    }
    if (count)
        *count = seen;
    if (index < 0 && seen > 0)
        return DY_OK;
    if (seen == 0)
        snprintf(why, why_len, "no Level Zero device on %u driver(s)", (unsigned)nd);
    else
        snprintf(why, why_len, "no Level Zero device %d (%d found)", index, seen);
    return seen == 0 ? DY_E_NODEVICE : DY_E_INVALID;
}

static int ze_probe(char *why, size_t why_len)
{
    int count = 0;
    char local[256];
    int st = find_device(-1, NULL, NULL, &count, local, sizeof local);
    if (why_len)
        snprintf(why, why_len, "%s", st == DY_OK ? "" : local);
    return st;
}

static int ze_device_count(int *count)
{
    char why[256];
    *count = 0;
    int st = find_device(-1, NULL, NULL, count, why, sizeof why);
    return st == DY_E_NODEVICE ? DY_OK : st;
}

static uint64_t device_memory(ze_device_handle_t dev)
{
    ze_device_memory_properties_t props[8];
    uint32_t n = 8;
    for (uint32_t i = 0; i < n; i++)
        props[i] = (ze_device_memory_properties_t){
            .stype = ZE_STRUCTURE_TYPE_DEVICE_MEMORY_PROPERTIES };
    if (zeDeviceGetMemoryProperties(dev, &n, props) != ZE_RESULT_SUCCESS)
        return 0;
    uint64_t total = 0;
    for (uint32_t i = 0; i < n && i < 8; i++)
        total += props[i].totalSize;
    return total;
}

static uint64_t largest_cache(ze_device_handle_t dev)
{
    ze_device_cache_properties_t props[8];
    uint32_t n = 8;
    for (uint32_t i = 0; i < n; i++)
        props[i] = (ze_device_cache_properties_t){
            .stype = ZE_STRUCTURE_TYPE_DEVICE_CACHE_PROPERTIES };
    if (zeDeviceGetCacheProperties(dev, &n, props) != ZE_RESULT_SUCCESS)
        return 0;
    uint64_t largest = 0;
    for (uint32_t i = 0; i < n && i < 8; i++)
        if (props[i].cacheSize > largest)
            largest = props[i].cacheSize;
    return largest;
}

static int ze_device_info(int index, struct dy_device_info *info)
{
    ze_driver_handle_t driver;
    ze_device_handle_t dev;
    char why[256];
    memset(info, 0, sizeof *info);
    if (index < 0)
        return DY_E_INVALID;
    int st = find_device(index, &driver, &dev, NULL, why, sizeof why);
    if (st != DY_OK)
        return st;
    ze_device_properties_t props = { .stype = ZE_STRUCTURE_TYPE_DEVICE_PROPERTIES };
    if (zeDeviceGetProperties(dev, &props) != ZE_RESULT_SUCCESS)
        return DY_E_DEVICE;
    snprintf(info->name, sizeof info->name, "%s", props.name);
    if (props.vendorId == 0x8086)
        snprintf(info->vendor, sizeof info->vendor, "Intel");
    else
        snprintf(info->vendor, sizeof info->vendor, "PCI vendor 0x%04x", props.vendorId);
    /* the specification promises only a number that grows with releases */
    ze_driver_properties_t driver_props = { .stype = ZE_STRUCTURE_TYPE_DRIVER_PROPERTIES };
    if (zeDriverGetProperties(driver, &driver_props) == ZE_RESULT_SUCCESS)
        snprintf(info->driver_version, sizeof info->driver_version, "%u",
                 driver_props.driverVersion);
    ze_api_version_t api;
    if (zeDriverGetApiVersion(driver, &api) == ZE_RESULT_SUCCESS)
        snprintf(info->runtime_version, sizeof info->runtime_version, "Level Zero %u.%u",
                 ZE_MAJOR_VERSION(api), ZE_MINOR_VERSION(api));
    info->mem_total_bytes = device_memory(dev);
    info->l2_bytes = largest_cache(dev);
    info->compute_units = (int)(props.numSlices * props.numSubslicesPerSlice *
                                props.numEUsPerSubslice);
    info->clock_mhz = (int)props.coreClockRate;
    /* no DY_CAP_F16 or DY_CAP_BF16: the kernels compute in f32 */
    if (props.flags & ZE_DEVICE_PROPERTY_FLAG_INTEGRATED)
        info->caps |= DY_CAP_UNIFIED;
    return DY_OK;
}

/* ---- contexts ---- */

const char *const dy_ze_kernel_names[] = {
#define DY_ZE_KERNEL_NAME(name) #name,
    DY_ZE_KERNELS(DY_ZE_KERNEL_NAME)
#undef DY_ZE_KERNEL_NAME
};

static void ze_ctx_destroy(void *ctx)
{
    struct dy_ze_ctx *c = ctx;
    if (!c)
        return;
    if (c->list && c->fence)
        dy_ze_sync(c);
    if (c->scratch)
        zeMemFree(c->context, c->scratch);
    for (int i = 0; i < DY_ZE_KERNEL_COUNT; i++)
        if (c->kernels[i])
            zeKernelDestroy(c->kernels[i]);
    if (c->module)
        zeModuleDestroy(c->module);
    if (c->fence)
        zeEventDestroy(c->fence);
    if (c->fence_pool)
        zeEventPoolDestroy(c->fence_pool);
    if (c->list)
        zeCommandListDestroy(c->list);
    if (c->context)
        zeContextDestroy(c->context);
    free(c);
}

/* The first queue group that runs compute kernels. */
static uint32_t compute_ordinal(ze_device_handle_t dev)
{
    ze_command_queue_group_properties_t groups[16];
    uint32_t n = 16;
    for (uint32_t i = 0; i < n; i++)
        groups[i] = (ze_command_queue_group_properties_t){
            .stype = ZE_STRUCTURE_TYPE_COMMAND_QUEUE_GROUP_PROPERTIES };
    if (zeDeviceGetCommandQueueGroupProperties(dev, &n, groups) != ZE_RESULT_SUCCESS)
        return 0;
    for (uint32_t i = 0; i < n && i < 16; i++)
        if (groups[i].flags & ZE_COMMAND_QUEUE_GROUP_PROPERTY_FLAG_COMPUTE)
            return i;
    return 0;
}

/* A failed build is a bug or a driver's quirk: its log goes to stderr, as
 * does the reason for any failure of ctx_create, whose caller has no
 * context to ask for text. */
static void report_build_log(ze_module_build_log_handle_t log)
{
    size_t len = 0;
    if (zeModuleBuildLogGetString(log, &len, NULL) != ZE_RESULT_SUCCESS || len == 0)
        return;
    char *text = malloc(len + 1);
    if (text && zeModuleBuildLogGetString(log, &len, text) == ZE_RESULT_SUCCESS) {
        text[len] = '\0';
        fprintf(stderr, "dyno: level_zero: module build failed:\n%s\n", text);
    }
    free(text);
}

static int create_module(struct dy_ze_ctx *c)
{
    ze_module_desc_t desc = {
        .stype = ZE_STRUCTURE_TYPE_MODULE_DESC,
        .format = ZE_MODULE_FORMAT_IL_SPIRV,
        .inputSize = SPIRV_BYTES,
        .pInputModule = (const uint8_t *)dy_level_zero_spirv,
        /* no fast-math flags: fill_random must round like the host */
        .pBuildFlags = "",
    };
    ze_module_build_log_handle_t log = NULL;
    ze_result_t r = zeModuleCreate(c->context, c->device, &desc, &c->module, &log);
    if (r != ZE_RESULT_SUCCESS && log)
        report_build_log(log);
    if (log)
        zeModuleBuildLogDestroy(log);
    if (r != ZE_RESULT_SUCCESS) {
        c->module = NULL;
        return dy_ze_fail(c, r, "zeModuleCreate");
    }
    for (int i = 0; i < DY_ZE_KERNEL_COUNT; i++) {
        ze_kernel_desc_t kd = { .stype = ZE_STRUCTURE_TYPE_KERNEL_DESC,
                                .pKernelName = dy_ze_kernel_names[i] };
        r = zeKernelCreate(c->module, &kd, &c->kernels[i]);
        if (r != ZE_RESULT_SUCCESS) {
            c->kernels[i] = NULL;
            return dy_ze_fail(c, r, dy_ze_kernel_names[i]);
        }
    }
    return DY_OK;
}

static int create_queue(struct dy_ze_ctx *c)
{
    ze_context_desc_t cd = { .stype = ZE_STRUCTURE_TYPE_CONTEXT_DESC };
    ze_result_t r = zeContextCreate(c->driver, &cd, &c->context);
    if (r != ZE_RESULT_SUCCESS)
        return dy_ze_fail(c, r, "zeContextCreate");
    ze_command_queue_desc_t qd = {
        .stype = ZE_STRUCTURE_TYPE_COMMAND_QUEUE_DESC,
        .ordinal = compute_ordinal(c->device),
        .mode = ZE_COMMAND_QUEUE_MODE_ASYNCHRONOUS,
        .priority = ZE_COMMAND_QUEUE_PRIORITY_NORMAL,
    };
    r = zeCommandListCreateImmediate(c->context, c->device, &qd, &c->list);
    if (r != ZE_RESULT_SUCCESS)
        return dy_ze_fail(c, r, "zeCommandListCreateImmediate");
    ze_event_pool_desc_t pd = { .stype = ZE_STRUCTURE_TYPE_EVENT_POOL_DESC,
                                .flags = ZE_EVENT_POOL_FLAG_HOST_VISIBLE, .count = 1 };
    r = zeEventPoolCreate(c->context, &pd, 1, &c->device, &c->fence_pool);
    if (r != ZE_RESULT_SUCCESS)
        return dy_ze_fail(c, r, "zeEventPoolCreate");
    ze_event_desc_t ed = { .stype = ZE_STRUCTURE_TYPE_EVENT_DESC, .index = 0,
                           .signal = ZE_EVENT_SCOPE_FLAG_HOST, .wait = ZE_EVENT_SCOPE_FLAG_HOST };
    r = zeEventCreate(c->fence_pool, &ed, &c->fence);
    return r == ZE_RESULT_SUCCESS ? DY_OK : dy_ze_fail(c, r, "zeEventCreate");
}

/* Makes one context, one immediate command list and the module for device
 * `index`; *ctx is freed by ctx_destroy with everything in it. */
static int ze_ctx_create(int index, void **ctx)
{
    char why[256];
    *ctx = NULL;
    struct dy_ze_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return DY_E_NOMEM;
    int st = find_device(index, &c->driver, &c->device, NULL, why, sizeof why);
    if (st != DY_OK) {
        dy_ze_failf(c, st, "%s", why);
        goto fail;
    }
    if ((st = create_queue(c)) != DY_OK || (st = create_module(c)) != DY_OK)
        goto fail;
    ze_device_properties_t props = { .stype = ZE_STRUCTURE_TYPE_DEVICE_PROPERTIES };
    ze_device_compute_properties_t compute = {
        .stype = ZE_STRUCTURE_TYPE_DEVICE_COMPUTE_PROPERTIES };
    ze_result_t r = zeDeviceGetProperties(c->device, &props);
    if (r == ZE_RESULT_SUCCESS)
        r = zeDeviceGetComputeProperties(c->device, &compute);
    if (r != ZE_RESULT_SUCCESS) {
        st = dy_ze_fail(c, r, "zeDeviceGetProperties");
        goto fail;
    }
    c->mem_total = device_memory(c->device);
    c->max_alloc = props.maxMemAllocSize;
    c->local_mem = compute.maxSharedLocalMemory;
    c->compute_units = (int)(props.numSlices * props.numSubslicesPerSlice *
                             props.numEUsPerSubslice);
    /* with stype ZE_STRUCTURE_TYPE_DEVICE_PROPERTIES the unit is ns */
    c->timer_ns = props.timerResolution;
    c->timestamp_bits = props.timestampValidBits;
    *ctx = c;
    return DY_OK;
fail:
    if (c->err[0])
        fprintf(stderr, "dyno: level_zero: device %d: %s\n", index, c->err);
    ze_ctx_destroy(c);
    return st;
}

static const char *ze_last_error(void *ctx)
{
    return ((struct dy_ze_ctx *)ctx)->err;
}

static const struct dy_backend level_zero_backend = {
    .abi_version = DY_BACKEND_ABI,
    .name = "level_zero",
    .description = "Level Zero on Intel GPUs: the OpenCL backend's kernels as one SPIR-V module",
    .probe = ze_probe,
    .device_count = ze_device_count,
    .device_info = ze_device_info,
    .ctx_create = ze_ctx_create,
    .ctx_destroy = ze_ctx_destroy,
    .last_error = ze_last_error,
    .buf_alloc = dy_ze_buf_alloc,
    .buf_free = dy_ze_buf_free,
    .buf_write = dy_ze_buf_write,
    .buf_read = dy_ze_buf_read,
    .buf_copy = dy_ze_buf_copy,
    .buf_fill = dy_ze_buf_fill,
    .mem_info = dy_ze_mem_info,
    .sync = dy_ze_sync,
    .event_create = dy_ze_event_create,
    .event_destroy = dy_ze_event_destroy,
    .event_record = dy_ze_event_record,
    .event_elapsed_ns = dy_ze_event_elapsed_ns,
    .fill_random = dy_ze_fill_random,
    .gemm = dy_ze_gemm,
    .norm = dy_ze_norm,
    .rope = dy_ze_rope,
    .eltwise = dy_ze_eltwise,
    .gather_rows = dy_ze_gather_rows,
    .kv_append = dy_ze_kv_append,
    .attention_prefill = dy_ze_attention_prefill,
    .attention_decode = dy_ze_attention_decode,
    .argmax = dy_ze_argmax,
    .convert = dy_ze_convert,
    .softmax_topk = dy_ze_softmax_topk,
    .moe_sort = dy_ze_moe_sort,
    .gemm_grouped = dy_ze_gemm_grouped,
    .scatter_add_rows = dy_ze_scatter_add_rows,
    .kv_block_scores = dy_ze_kv_block_scores,
    .dequantize = dy_ze_dequantize,
};

__attribute__((visibility("default"))) const struct dy_backend *dy_backend_entry(void)
{
    return &level_zero_backend;
}
