/* The CUDA backend: table, devices, memory, events. libdyno-cuda.so, and
 * libdyno-hip.so when hipcc builds it through gpu_compat.h. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

#define STAGING_BYTES ((size_t)8 << 20)

int dy_cuda_fail(struct cuda_ctx *c, cudaError_t e, const char *what)
{
    snprintf(c->err, sizeof c->err, "%s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
    cudaGetLastError(); /* clear a non-sticky error */
    return e == cudaErrorMemoryAllocation ? DY_E_NOMEM : DY_E_DEVICE;
}

int dy_cuda_check_launch(struct cuda_ctx *c, const char *what)
{
    cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? DY_OK : dy_cuda_fail(c, e, what);
}

int dy_cuda_reserve(struct cuda_ctx *c, void **buf, size_t *size, size_t bytes)
{
    if (*size >= bytes)
        return DY_OK;
    /* the old scratch may still be read by queued work */
    cudaError_t e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess)
        return dy_cuda_fail(c, e, "cudaStreamSynchronize");
    cudaFree(*buf);
    *buf = NULL;
    *size = 0;
    e = cudaMalloc(buf, bytes);
    if (e != cudaSuccess)
        return dy_cuda_fail(c, e, "cudaMalloc(scratch)");
    *size = bytes;
    return DY_OK;
}

/* A tuning switch set to "0" in the environment (on when unset). */
static bool switched_off(const char *name)
{
    const char *v = getenv(name);
    return v && strcmp(v, "0") == 0;
}

/* A numeric switch: *v from the environment where set, else unchanged. */
static void env_int(const char *name, int *v)
{
    const char *e = getenv(name);
    if (e && *e)
        *v = atoi(e);
}

static int cuda_probe(char *why, size_t len)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        snprintf(why, len, "no " DY_GPU_API " device: " DY_GPU_API_PREFIX "GetDeviceCount: %s (%s, %d)",
                 cudaGetErrorString(e), cudaGetErrorName(e), (int)e);
        return DY_E_NODEVICE;
    }
    if (n == 0) {
        snprintf(why, len, "no " DY_GPU_API " device: the driver reports none");
        return DY_E_NODEVICE;
    }
    why[0] = '\0';
    return DY_OK;
}

static int cuda_device_count(int *count)
{
    return cudaGetDeviceCount(count) == cudaSuccess ? DY_OK : DY_E_NODEVICE;
}

static int cuda_device_info(int device, struct dy_device_info *info)
{
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, device) != cudaSuccess)
        return DY_E_INVALID;
    memset(info, 0, sizeof *info);
    snprintf(info->name, sizeof info->name, "%s", p.name);
    snprintf(info->vendor, sizeof info->vendor, DY_GPU_VENDOR);
    int driver = 0, runtime = 0, clock_khz = 0;
    cudaDriverGetVersion(&driver);
    cudaRuntimeGetVersion(&runtime);
    cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, device);
#if DY_HIP
    /* HIP encodes versions as major * 10^7 + minor * 10^5 + patch */
    snprintf(info->driver_version, sizeof info->driver_version, "HIP driver %d.%d, %s",
             driver / 10000000, driver / 100000 % 100, p.gcnArchName);
    snprintf(info->runtime_version, sizeof info->runtime_version, "HIP runtime %d.%d",
             runtime / 10000000, runtime / 100000 % 100);
#else
    snprintf(info->driver_version, sizeof info->driver_version, "CUDA driver %d.%d, sm_%d%d",
             driver / 1000, driver % 1000 / 10, p.major, p.minor);
    snprintf(info->runtime_version, sizeof info->runtime_version, "CUDA runtime %d.%d",
             runtime / 1000, runtime % 1000 / 10);
#endif
    info->mem_total_bytes = p.totalGlobalMem;
    info->l2_bytes = (uint64_t)p.l2CacheSize;
    info->compute_units = p.multiProcessorCount;
    info->clock_mhz = clock_khz / 1000;
    info->caps = DY_CAP_F16 | DY_CAP_BF16;
    return DY_OK;
}

static void cuda_ctx_destroy(void *ctx)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (!c)
        return;
    cudaSetDevice(c->device);
    if (c->stream)
        cudaStreamSynchronize(c->stream);
#if DY_GPU_BLAS
    if (c->blas)
        cublasDestroy(c->blas);
#endif
    dy_cuda_quant_release(c);
    cudaFree(c->scratch);
    cudaFree(c->partials);
    cudaFree(c->argmax_scratch);
    cudaFree(c->sort_scratch);
    cudaFree(c->route_count);
    cudaFreeHost(c->staging);
    if (c->nvml_lib)
        dlclose(c->nvml_lib); /* NVML stays initialised: other contexts may use it */
    if (c->stream)
        cudaStreamDestroy(c->stream);
    free(c);
}

static int cuda_ctx_create(int device, void **out)
{
    struct cuda_ctx *c = (struct cuda_ctx *)calloc(1, sizeof *c);
    if (!c)
        return DY_E_NOMEM;
    c->device = device;
    int st = DY_E_DEVICE, warp = 0;
    if (cudaSetDevice(device) != cudaSuccess ||
        cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking) != cudaSuccess ||
        cudaMallocHost((void **)&c->staging, STAGING_BYTES) != cudaSuccess ||
        cudaDeviceGetAttribute(&c->sm_count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
        cudaDeviceGetAttribute(&c->smem_per_block, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess ||
        cudaDeviceGetAttribute(&warp, cudaDevAttrWarpSize, device) != cudaSuccess ||
        cudaMalloc((void **)&c->route_count, sizeof(unsigned)) != cudaSuccess ||
        cudaMemsetAsync(c->route_count, 0, sizeof(unsigned), c->stream) != cudaSuccess)
        goto fail;
    /* the kernels' launches and lane arithmetic were built for DY_WARP
     * lanes (a wave32 AMD chip needs a build with -DDY_WARP=32) */
    if (warp != DY_WARP) {
        st = DY_E_UNSUPPORTED;
        goto fail;
    }
    c->staging_size = STAGING_BYTES;
    c->gelu_epilogue = !switched_off("DYNO_CUDA_GELU_EPILOGUE");
    c->swiglu_gemv = !switched_off("DYNO_CUDA_SWIGLU_GEMV");
    c->norm_warp = !switched_off("DYNO_CUDA_NORM_WARP");
    c->rope_fused = !switched_off("DYNO_CUDA_ROPE_FUSED");
    c->router_fused = !switched_off("DYNO_CUDA_ROUTER_FUSED");
    c->gemm_parts = GEMM_PART_NORM | GEMM_PART_NORM_ROPE | GEMM_PART_NORM_SWIGLU | GEMM_PART_APPEND;
    env_int("DYNO_CUDA_GEMM_PARTS", (int *)&c->gemm_parts);
    c->rope_gemv = !switched_off("DYNO_CUDA_ROPE_GEMV");
    c->fuse_moe = FUSE_TOPK_SORT | FUSE_SWIGLU | FUSE_SCATTER;
    env_int("DYNO_CUDA_MOE_FUSE", (int *)&c->fuse_moe);
    env_int("DYNO_CUDA_SCATTER", &c->scatter_variant);
#if !DY_HIP
    {
        int major = 0, minor = 0;
        c->pdl = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess &&
                 major >= 9 && !switched_off("DYNO_CUDA_PDL");
        c->flash_wgmma = 2;
        env_int("DYNO_CUDA_FLASH_WGMMA", &c->flash_wgmma);
        env_int("DYNO_CUDA_FLASH_BLOCKS", &c->flash_blocks);
        env_int("DYNO_CUDA_DECODE_MMA", &c->decode_mma);
        if (major < 8)
            c->decode_mma = 0;
        if (major != 9 || cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess ||
            minor != 0)
            c->flash_wgmma = 0;
        c->prefetch = c->pdl && !switched_off("DYNO_CUDA_PREFETCH");
        c->early_kv = c->pdl && !switched_off("DYNO_CUDA_EARLY_KV");
        c->qgemv_early = c->pdl && !switched_off("DYNO_CUDA_QGEMV_EARLY");
        const char *bytes = getenv("DYNO_CUDA_PREFETCH_BYTES");
        c->prefetch_bytes = bytes && atoi(bytes) > 0 ? atoi(bytes) : DY_PREFETCH_BYTES;
    }
#endif
#if DY_GPU_BLAS
    if (cublasCreate(&c->blas) != CUBLAS_STATUS_SUCCESS ||
        cublasSetStream(c->blas, c->stream) != CUBLAS_STATUS_SUCCESS)
        goto fail;
#endif
    *out = c;
    return DY_OK;
fail:
    cudaGetLastError();
    cuda_ctx_destroy(c);
    return st;
}

static const char *cuda_last_error(void *ctx)
{
    return ((struct cuda_ctx *)ctx)->err;
}

static int cuda_buf_alloc(void *ctx, size_t bytes, void **impl)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    cudaError_t e = cudaMalloc(impl, bytes);
    if (e != cudaSuccess) {
        char what[64];
        snprintf(what, sizeof what, "cudaMalloc(%zu)", bytes);
        return dy_cuda_fail(c, e, what);
    }
    return DY_OK;
}

static void cuda_buf_free(void *ctx, void *impl)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    /* queued work may still use it */
    cudaStreamSynchronize(c->stream);
    cudaFree(impl);
}

static int cuda_buf_write(void *ctx, dy_buf dst, const void *src, size_t bytes)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    cudaError_t e;
    if (bytes <= c->staging_size / 4) {
        if (c->staging_used + bytes > c->staging_size) {
            /* wrapping: earlier staged copies must have left the ring */
            if ((e = cudaStreamSynchronize(c->stream)) != cudaSuccess)
                return dy_cuda_fail(c, e, "cudaStreamSynchronize");
            c->staging_used = 0;
        }
        char *stage = c->staging + c->staging_used;
        memcpy(stage, src, bytes);
        c->staging_used += (bytes + 255) & ~(size_t)255;
        e = cudaMemcpyAsync(dy_cuda_ptr(dst), stage, bytes, cudaMemcpyHostToDevice, c->stream);
    } else {
        e = cudaMemcpyAsync(dy_cuda_ptr(dst), src, bytes, cudaMemcpyHostToDevice, c->stream);
        if (e == cudaSuccess)
            e = cudaStreamSynchronize(c->stream);
    }
    return e == cudaSuccess ? DY_OK : dy_cuda_fail(c, e, "buf_write");
}

static int cuda_buf_read(void *ctx, dy_buf src, void *dst, size_t bytes)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    cudaError_t e = cudaMemcpyAsync(dst, dy_cuda_ptr(src), bytes, cudaMemcpyDeviceToHost, c->stream);
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(c->stream);
    return e == cudaSuccess ? DY_OK : dy_cuda_fail(c, e, "buf_read");
}

static int cuda_buf_copy(void *ctx, dy_buf dst, dy_buf src, size_t bytes)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    cudaError_t e = cudaMemcpyAsync(dy_cuda_ptr(dst), dy_cuda_ptr(src), bytes,
                                    cudaMemcpyDeviceToDevice, c->stream);
    return e == cudaSuccess ? DY_OK : dy_cuda_fail(c, e, "buf_copy");
}

static int cuda_buf_fill(void *ctx, dy_buf dst, uint8_t byte, size_t bytes)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    cudaError_t e = cudaMemsetAsync(dy_cuda_ptr(dst), byte, bytes, c->stream);
    return e == cudaSuccess ? DY_OK : dy_cuda_fail(c, e, "buf_fill");
}

static int cuda_mem_info(void *ctx, struct dy_mem_info *info)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    size_t free_b = 0, total_b = 0;
    cudaError_t e = cudaMemGetInfo(&free_b, &total_b);
    if (e != cudaSuccess)
        return dy_cuda_fail(c, e, "cudaMemGetInfo");
    info->free_bytes = free_b;
    info->total_bytes = total_b;
    return DY_OK;
}

static int cuda_sync(void *ctx)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    cudaError_t e = cudaStreamSynchronize(c->stream);
    if (e == cudaSuccess)
        c->staging_used = 0;
    return e == cudaSuccess ? DY_OK : dy_cuda_fail(c, e, "cudaStreamSynchronize");
}

static int cuda_event_create(void *ctx, void **event)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    cudaError_t e = cudaEventCreate((cudaEvent_t *)event);
    return e == cudaSuccess ? DY_OK : dy_cuda_fail(c, e, "cudaEventCreate");
}

static void cuda_event_destroy(void *ctx, void *event)
{
    cudaEventDestroy((cudaEvent_t)event);
}

static int cuda_event_record(void *ctx, void *event)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    cudaError_t e = cudaEventRecord((cudaEvent_t)event, c->stream);
    return e == cudaSuccess ? DY_OK : dy_cuda_fail(c, e, "cudaEventRecord");
}

static int cuda_event_elapsed_ns(void *ctx, void *start, void *end, uint64_t *ns)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    float ms = 0.0f;
    cudaError_t e = cudaEventSynchronize((cudaEvent_t)end);
    if (e == cudaSuccess)
        e = cudaEventElapsedTime(&ms, (cudaEvent_t)start, (cudaEvent_t)end);
    if (e != cudaSuccess)
        return dy_cuda_fail(c, e, "cudaEventElapsedTime");
    *ns = (uint64_t)((double)ms * 1e6);
    return DY_OK;
}

/* Graphs: stream capture of the ops a caller enqueues, replayed whole. */
static int cuda_graph_begin(void *ctx)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    cudaError_t e = cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal);
    return e == cudaSuccess ? DY_OK : dy_cuda_fail(c, e, "cudaStreamBeginCapture");
}

static int cuda_graph_end(void *ctx, void **graph)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    cudaGraph_t g = NULL;
    cudaGraphExec_t exec = NULL;
    cudaError_t e = cudaStreamEndCapture(c->stream, &g);
    if (e == cudaSuccess)
        e = cudaGraphInstantiateWithFlags(&exec, g, 0);
    if (g)
        cudaGraphDestroy(g);
    if (e != cudaSuccess)
        return dy_cuda_fail(c, e, "graph capture");
    *graph = exec;
    return DY_OK;
}

static int cuda_graph_launch(void *ctx, void *graph)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    cudaError_t e = cudaGraphLaunch((cudaGraphExec_t)graph, c->stream);
    return e == cudaSuccess ? DY_OK : dy_cuda_fail(c, e, "cudaGraphLaunch");
}

static void cuda_graph_destroy(void *ctx, void *graph)
{
    cudaGraphExecDestroy((cudaGraphExec_t)graph);
}

#if !DY_HIP
/* ---- telemetry: NVML, loaded with dlopen so that the plugin needs no
 * NVML at build time or on a machine without the driver ---- */
typedef int (*nvml_init_fn)(void);
typedef int (*nvml_by_bus_fn)(const char *bus_id, void **device);
typedef int (*nvml_energy_fn)(void *device, unsigned long long *millijoules);

/* The device's NVML handle and energy query, found on first use; false
 * (and never asked again) where NVML, the device or its counter (Volta and
 * later) is missing. */
static bool nvml_open(struct cuda_ctx *c)
{
    if (c->nvml_state)
        return c->nvml_state > 0;
    c->nvml_state = -1;
    char bus[32];
    void *lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib)
        return false;
    nvml_init_fn init = (nvml_init_fn)dlsym(lib, "nvmlInit_v2");
    nvml_by_bus_fn by_bus = (nvml_by_bus_fn)dlsym(lib, "nvmlDeviceGetHandleByPciBusId_v2");
    nvml_energy_fn energy = (nvml_energy_fn)dlsym(lib, "nvmlDeviceGetTotalEnergyConsumption");
    unsigned long long mj;
    if (!init || !by_bus || !energy || init() != 0 ||
        cudaDeviceGetPCIBusId(bus, sizeof bus, c->device) != cudaSuccess || by_bus(bus, &c->nvml_device) != 0 ||
        energy(c->nvml_device, &mj) != 0) {
        dlclose(lib);
        return false;
    }
    c->nvml_lib = lib;
    c->nvml_energy = (void *)energy;
    c->nvml_state = 1;
    return true;
}

static int cuda_energy_read(void *ctx, double *joules)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    unsigned long long mj;
    *joules = 0.0;
    if (!nvml_open(c) || ((nvml_energy_fn)c->nvml_energy)(c->nvml_device, &mj) != 0)
        return DY_E_UNSUPPORTED;
    *joules = mj / 1e3;
    return DY_OK;
}
#endif

static struct dy_backend table;

extern "C" __attribute__((visibility("default"))) const struct dy_backend *dy_backend_entry(void)
{
    table.abi_version = DY_BACKEND_ABI;
    table.name = DY_GPU_NAME;
#if DY_HIP
    table.description = "HIP kernels (the CUDA sources through gpu_compat.h)";
#else
    table.description = "CUDA kernels and cuBLAS";
#endif
    table.probe = cuda_probe;
    table.device_count = cuda_device_count;
    table.device_info = cuda_device_info;
    table.ctx_create = cuda_ctx_create;
    table.ctx_destroy = cuda_ctx_destroy;
    table.last_error = cuda_last_error;
    table.buf_alloc = cuda_buf_alloc;
    table.buf_free = cuda_buf_free;
    table.buf_write = cuda_buf_write;
    table.buf_read = cuda_buf_read;
    table.buf_copy = cuda_buf_copy;
    table.buf_fill = cuda_buf_fill;
    table.mem_info = cuda_mem_info;
    table.sync = cuda_sync;
    table.event_create = cuda_event_create;
    table.event_destroy = cuda_event_destroy;
    table.event_record = cuda_event_record;
    table.event_elapsed_ns = cuda_event_elapsed_ns;
    table.fill_random = dy_cuda_fill_random;
    table.gemm = dy_cuda_gemm;
    /* GELU: cuBLASLt's epilogue, SwiGLU and RoPE: the decode GEMV;
     * declined elsewhere */
    table.gemm_acts = 1u << DY_ACT_GELU | 1u << DY_ACT_SWIGLU | 1u << DY_ACT_ROPE;
    /* each where its kernel takes the call, declined (composed) elsewhere */
    table.grouped_acts = 1u << DY_ACT_SWIGLU;
    table.grouped_scatter = table.topk_sort = table.rope_fused = table.topk_router = true;
    table.gemm_norm = table.gemm_append = true; /* the decode GEMV's */
    table.norm = dy_cuda_norm;
    table.rope = dy_cuda_rope;
    table.eltwise = dy_cuda_eltwise;
    table.gather_rows = dy_cuda_gather_rows;
    table.kv_append = dy_cuda_kv_append;
    table.attention_prefill = dy_cuda_attention_prefill;
    table.attention_decode = dy_cuda_attention_decode;
    table.argmax = dy_cuda_argmax;
    table.convert = dy_cuda_convert;
    table.softmax_topk = dy_cuda_softmax_topk;
    table.moe_sort = dy_cuda_moe_sort;
    table.gemm_grouped = dy_cuda_gemm_grouped;
    table.scatter_add_rows = dy_cuda_scatter_add_rows;
    table.kv_block_scores = dy_cuda_kv_block_scores;
    table.graph_begin = cuda_graph_begin;
    table.graph_end = cuda_graph_end;
    table.graph_launch = cuda_graph_launch;
    table.graph_destroy = cuda_graph_destroy;
    table.dequantize = dy_cuda_dequantize;
#if !DY_HIP
    table.energy_read = cuda_energy_read;
#endif
    return &table;
}
