/* The Level Zero backend without an Intel GPU.
 *
 * The SPIR-V module libdyno-level_zero.so ships is translated back to SPIR
 * bitcode at build time (llvm-spirv -r; PoCL takes no SPIR-V through
 * clCreateProgramWithIL) and run on PoCL with the argument lists the
 * plugin uses, against host references; so the Intel path's kernels, as
 * compiled for it, are checked here. The plugin itself is loaded and
 * probed: with no driver it must say so, naming zeInit. */
#include <CL/cl.h>
#include <dlfcn.h>
#include <math.h>
#include <stdlib.h>

#include "backends/backend.h"
#include "dy_test.h"

/* const char dy_level_zero_pocl_bc[]: the round-tripped module plus the
 * NUL tools/embed.py appends. */
#include "level_zero_pocl_bc.h"

/* backends/opencl/kernels/common.cl's WG and gemm.cl's rows per group */
#define WG 128
#define GEMV_ROWS (WG / 32)

static cl_context context;
static cl_command_queue queue;
static cl_program program;

/* Builds the program once; skips the case where there is no OpenCL
 * device (the module is then unchecked, which TAP shows). */
static void need_program(void)
{
    static int tried;
    static char why[256];
    if (!tried) {
        tried = 1;
        cl_platform_id platform;
        cl_device_id device;
        cl_int err;
        if (clGetPlatformIDs(1, &platform, NULL) != CL_SUCCESS ||
            clGetDeviceIDs(platform, CL_DEVICE_TYPE_ALL, 1, &device, NULL) != CL_SUCCESS) {
            snprintf(why, sizeof why, "no OpenCL device");
            return;
        }
        context = clCreateContext(NULL, 1, &device, NULL, NULL, &err);
        queue = clCreateCommandQueue(context, device, 0, &err);
        size_t len = sizeof dy_level_zero_pocl_bc - 1;
        const unsigned char *bin = (const unsigned char *)dy_level_zero_pocl_bc;
        cl_int bin_status;
        program = clCreateProgramWithBinary(context, 1, &device, &len, &bin, &bin_status, &err);
        if (program)
            err = clBuildProgram(program, 1, &device, "", NULL, NULL);
        if (err != CL_SUCCESS) {
            char log[4096] = "";
            if (program)
                clGetProgramBuildInfo(program, device, CL_PROGRAM_BUILD_LOG, sizeof log, log,
                                      NULL);
            printf("# the module does not build on this OpenCL device (%d):\n# %s\n", (int)err,
                   log);
            program = NULL;
        }
    }
    if (why[0])
        DY_SKIP(why);
    DY_REQUIRE(program != NULL);
}

struct arg {
    size_t size;
    const void *value;
};
#define ARG(x) ((struct arg){ sizeof(x), &(x) })
#define LOCAL(bytes) ((struct arg){ (bytes), NULL })
#define RUN(name, dims, global, local, ...)                                    \
    run(name, dims, global, local, (const struct arg[]){ __VA_ARGS__ },        \
        sizeof((struct arg[]){ __VA_ARGS__ }) / sizeof(struct arg))

static void run(const char *name, cl_uint dims, const size_t *global, const size_t *local,
                const struct arg *args, size_t nargs)
{
    cl_int err;
    cl_kernel k = clCreateKernel(program, name, &err);
    DY_REQUIRE(k != NULL);
    for (size_t i = 0; i < nargs; i++)
        DY_REQUIRE(clSetKernelArg(k, (cl_uint)i, args[i].size, args[i].value) == CL_SUCCESS);
    size_t rounded[3];
    for (cl_uint i = 0; i < dims; i++)
        rounded[i] = (global[i] + local[i] - 1) / local[i] * local[i];
    err = clEnqueueNDRangeKernel(queue, k, dims, NULL, rounded, local, 0, NULL, NULL);
    clReleaseKernel(k);
    DY_REQUIRE(err == CL_SUCCESS);
    DY_REQUIRE(clFinish(queue) == CL_SUCCESS);
}

static cl_mem upload(const void *data, size_t bytes)
{
    cl_int err;
    cl_mem m = clCreateBuffer(context, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, bytes,
                              (void *)data, &err);
    DY_REQUIRE(m != NULL);
    return m;
}

static void download(cl_mem m, void *out, size_t bytes)
{
    DY_REQUIRE(clEnqueueReadBuffer(queue, m, CL_TRUE, 0, bytes, out, 0, NULL, NULL) ==
               CL_SUCCESS);
}

static float host_random(uint64_t key, size_t i)
{
    return dy_random_unit(key, i);
}

static bool close_to(double got, double want, double tol)
{
    return fabs(got - want) <= tol * (1.0 + fabs(want));
}

/* ---- the plugin ---- */

static const struct dy_backend *load_plugin(void)
{
    void *so = dlopen(DY_LEVEL_ZERO_PLUGIN, RTLD_NOW | RTLD_LOCAL);
    if (!so)
        printf("# %s\n", dlerror());
    DY_REQUIRE(so != NULL);
    dy_backend_entry_fn entry = (dy_backend_entry_fn)dlsym(so, DY_BACKEND_ENTRY_SYMBOL);
    DY_REQUIRE(entry != NULL);
    const struct dy_backend *be = entry();
    DY_REQUIRE(be != NULL && be->abi_version == DY_BACKEND_ABI);
    return be;
}

static void test_plugin_fills_every_slot(void)
{
    const struct dy_backend *be = load_plugin();
    DY_CHECK(strcmp(be->name, "level_zero") == 0);
    /* the slots from probe to kv_block_scores are all function pointers */
    const char *first = (const char *)&be->probe;
    const char *last = (const char *)&be->kv_block_scores;
    for (const char *p = first; p <= last; p += sizeof(void (*)(void))) {
        void (*slot)(void);
        memcpy(&slot, p, sizeof slot);
        DY_CHECK(slot != NULL);
    }
}

static void test_plugin_probe_names_zeinit(void)
{
    const struct dy_backend *be = load_plugin();
    char why[256] = "";
    int st = be->probe(why, sizeof why);
    printf("# probe: %d %s\n", st, why);
    if (st == DY_OK)
        DY_SKIP("a Level Zero device is present");
    DY_CHECK(st == DY_E_NODEVICE);
    DY_CHECK(strstr(why, "zeInit") != NULL);
    int count = -1;
    DY_CHECK(be->device_count(&count) == DY_OK && count == 0);
    void *ctx = NULL;
    DY_CHECK(be->ctx_create(0, &ctx) == DY_E_NODEVICE && ctx == NULL);
}

/* ---- the module's kernels on PoCL ---- */

static void test_module_has_every_kernel(void)
{
    static const char *const names[] = {
        "fill_random", "convert", "eltwise", "gather_rows", "kv_append", "rope", "norm",
        "argmax", "argmax_merge", "gemv", "gemv1", "gemm_tiled", "attention_prefill", "attention_decode",
        "attention_decode_combine", "softmax_topk", "moe_sort_small", "moe_sort_count",
        "moe_sort_scan", "moe_sort_place", "gemv_grouped", "moe_tile_plan",
        "gemm_grouped_tiled", "scatter_add_rows", "kv_append_int8", "kv_block_scores",
        "dequantize", "gemv_q", "gemv_q1", "gemv_grouped_q", "attention_decode_gqa",
    };
    need_program();
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        cl_int err;
        cl_kernel k = clCreateKernel(program, names[i], &err);
        if (!k)
            printf("# %s: %d\n", names[i], (int)err);
        DY_CHECK(k != NULL);
        if (k)
            clReleaseKernel(k);
    }
}

static void fill_random_case(enum dy_dtype dtype)
{
    enum { COUNT = 1000 };
    uint32_t got[COUNT], want[COUNT];
    memset(got, 0, sizeof got);
    memset(want, 0, sizeof want);
    cl_mem dst = upload(got, sizeof got);
    cl_ulong off = 0, count = COUNT, key = dy_random_key(42, 7);
    cl_int dt = dtype;
    cl_uint opaque_zero = 0;
    float scale = 0.02f, offset = 0.5f;
    size_t global = COUNT, local = WG;
    RUN("fill_random", 1, &global, &local, ARG(dst), ARG(off), ARG(count), ARG(dt), ARG(key),
        ARG(scale), ARG(offset), ARG(opaque_zero));
    download(dst, got, sizeof got);
    clReleaseMemObject(dst);
    for (size_t i = 0; i < COUNT; i++) {
        /* rounded apart, as the kernel does (-ffp-contract=off) */
        float scaled = scale * host_random(key, i);
        dy_store_f32(want, dtype, i, offset + scaled);
    }
    DY_CHECK(memcmp(got, want, COUNT * dy_dtype_size(dtype)) == 0);
}

static void test_fill_random_bit_exact(void)
{
    need_program();
    fill_random_case(DY_F32);
    fill_random_case(DY_BF16);
    fill_random_case(DY_F16);
}

/* c[0, :] = a . B^T + bias with f16 weights, through gemv1 and its wide
 * loads, as the plugin launches it for m = 1. */
static void test_gemv_f16_weights(void)
{
    enum { N = 37, K = 64 };
    float a[K], c[N], bias_f[N];
    uint16_t b[N * K], bias[N];
    need_program();
    for (int i = 0; i < K; i++)
        a[i] = host_random(1, (size_t)i);
    for (int i = 0; i < N * K; i++)
        b[i] = dy_f32_to_f16(host_random(2, (size_t)i));
    for (int i = 0; i < N; i++) {
        bias[i] = dy_f32_to_f16(host_random(3, (size_t)i));
        bias_f[i] = dy_f16_to_f32(bias[i]);
    }
    cl_mem am = upload(a, sizeof a), bm = upload(b, sizeof b), biasm = upload(bias, sizeof bias);
    cl_mem cm = upload(c, sizeof c);
    cl_ulong zero = 0;
    cl_int lda = K, ldb = K, ldc = N, f32 = DY_F32, f16 = DY_F16, a_vec = 1, m = 1, n = N, k = K;
    cl_int k_vec = K / 8 * 8;
    float beta = 0.0f;
    /* 32 items per row of B as Level Zero launches it, 1 as on CPUs */
    for (cl_int lanes = 32; lanes >= 1; lanes /= 32) {
        size_t global = (N + WG / lanes - 1) / (WG / lanes) * WG, local = WG;
        RUN("gemv1", 1, &global, &local, ARG(am), ARG(zero), ARG(lda), ARG(f32), ARG(a_vec),
            ARG(bm), ARG(zero), ARG(ldb), ARG(f16), ARG(biasm), ARG(zero), ARG(cm), ARG(zero),
            ARG(ldc), ARG(f32), ARG(beta), ARG(m), ARG(n), ARG(k), ARG(k_vec), ARG(lanes));
        download(cm, c, sizeof c);
        for (int j = 0; j < N; j++) {
            double want = bias_f[j];
            for (int i = 0; i < K; i++)
                want += (double)a[i] * dy_f16_to_f32(b[j * K + i]);
            DY_CHECK(close_to(c[j], want, 1e-5));
        }
    }
    clReleaseMemObject(am);
    clReleaseMemObject(bm);
    clReleaseMemObject(biasm);
    clReleaseMemObject(cm);
}

/* f32 rows normalised into f32 and into bf16 (reduced-precision
 * activations): the register path, whose store depends on out's dtype. */
static void test_rmsnorm(void)
{
    enum { ROWS = 3, DIM = 200 };
    static const enum dy_dtype out_dtypes[] = { DY_F32, DY_BF16 };
    float x[ROWS * DIM], w[DIM], out[ROWS * DIM];
    need_program();
    for (int i = 0; i < ROWS * DIM; i++)
        x[i] = host_random(4, (size_t)i) * (float)(1 + i / DIM);
    for (int i = 0; i < DIM; i++)
        w[i] = 1.0f + host_random(5, (size_t)i) * 0.1f;
    cl_mem xm = upload(x, sizeof x), wm = upload(w, sizeof w), om = upload(out, sizeof out);
    cl_mem no_bias = NULL;
    cl_ulong zero = 0;
    cl_int kind = DY_NORM_RMS, stride = DIM, dim = DIM, f32 = DY_F32;
    float eps = 1e-5f;
    size_t global = ROWS * WG, local = WG;
    for (size_t t = 0; t < sizeof out_dtypes / sizeof out_dtypes[0]; t++) {
        cl_int out_dtype = out_dtypes[t];
        RUN("norm", 1, &global, &local, ARG(kind), ARG(xm), ARG(zero), ARG(stride), ARG(wm),
            ARG(zero), ARG(no_bias), ARG(zero), ARG(f32), ARG(om), ARG(zero), ARG(stride),
            ARG(dim), ARG(eps), ARG(f32), ARG(out_dtype));
        download(om, out, sizeof out);
        double tol = out_dtype == DY_F32 ? 1e-5 : 4e-3;
        for (int r = 0; r < ROWS; r++) {
            double sq = 0;
            for (int i = 0; i < DIM; i++)
                sq += (double)x[r * DIM + i] * x[r * DIM + i];
            double inv = 1.0 / sqrt(sq / DIM + eps);
            for (int i = 0; i < DIM; i++)
                DY_CHECK(close_to(dy_load_f32(out, out_dtypes[t], (size_t)r * DIM + i),
                                  x[r * DIM + i] * inv * w[i], tol));
        }
    }
    clReleaseMemObject(xm);
    clReleaseMemObject(wm);
    clReleaseMemObject(om);
}

/* The first maximum wins: row 1 holds its maximum twice, in different
 * chunks of the two-kernel path (4 chunks a row, then the merge). */
static void test_argmax(void)
{
    enum { ROWS = 4, COLS = 1000 };
    float x[ROWS * COLS];
    int32_t got[ROWS], want[ROWS];
    need_program();
    for (int i = 0; i < ROWS * COLS; i++)
        x[i] = host_random(6, (size_t)i);
    x[1 * COLS + 700] = 5.0f;
    x[1 * COLS + 300] = 5.0f;
    for (int r = 0; r < ROWS; r++) {
        want[r] = 0;
        for (int i = 1; i < COLS; i++)
            if (x[r * COLS + i] > x[r * COLS + want[r]])
                want[r] = i;
    }
    int32_t part[ROWS * 4 * 2] = { 0 };
    cl_mem xm = upload(x, sizeof x), om = upload(got, sizeof got), pm = upload(part, sizeof part);
    cl_ulong zero = 0;
    cl_int stride = COLS, cols = COLS, f32 = DY_F32, chunks = 4;
    size_t global = ROWS * 4 * WG, merge_global = ROWS * WG, local = WG;
    RUN("argmax", 1, &global, &local, ARG(xm), ARG(zero), ARG(stride), ARG(f32), ARG(om),
        ARG(zero), ARG(cols), ARG(chunks), ARG(pm));
    RUN("argmax_merge", 1, &merge_global, &local, ARG(pm), ARG(chunks), ARG(om), ARG(zero));
    download(om, got, sizeof got);
    DY_CHECK(want[1] == 300);
    DY_CHECK(memcmp(got, want, sizeof got) == 0);
    clReleaseMemObject(xm);
    clReleaseMemObject(om);
    clReleaseMemObject(pm);
}

/* Every fp8 byte through the convert kernel's load, and f32 values around
 * every rounding boundary of fp8 through its store: bit for bit as
 * backend.h converts (a NaN as any NaN). */
static void test_fp8_conversions_bit_exact(void)
{
    enum { BOUNDARIES = 1 << 14, SWEEP = 1 << 20, COUNT = 3 * BOUNDARIES + SWEEP };
    static uint32_t in[COUNT];
    static uint8_t got[COUNT];
    uint8_t bytes[256];
    float decoded[256];
    need_program();
    for (int b = 0; b < 256; b++)
        bytes[b] = (uint8_t)b;
    /* the top 14 bits (sign, exponent, four of the mantissa) with nothing
     * below are the ties of both of the encoder's paths; one ulp either side */
    for (uint32_t h = 0; h < BOUNDARIES; h++) {
        in[3 * h] = h << 18;
        in[3 * h + 1] = (h << 18) + 1;
        in[3 * h + 2] = (h << 18) - 1;
    }
    for (uint32_t i = 0; i < SWEEP; i++)
        in[3 * BOUNDARIES + i] = (uint32_t)dy_mix64(i);
    cl_mem bm = upload(bytes, sizeof bytes), dm = upload(decoded, sizeof decoded);
    cl_mem im = upload(in, sizeof in), om = upload(got, sizeof got);
    cl_ulong zero = 0, n_bytes = 256, n_in = COUNT;
    cl_int fp8 = DY_FP8, f32 = DY_F32;
    size_t g_bytes = 256, g_in = COUNT, local = WG;
    RUN("convert", 1, &g_bytes, &local, ARG(bm), ARG(zero), ARG(fp8), ARG(dm), ARG(zero),
        ARG(f32), ARG(n_bytes));
    RUN("convert", 1, &g_in, &local, ARG(im), ARG(zero), ARG(f32), ARG(om), ARG(zero), ARG(fp8),
        ARG(n_in));
    download(dm, decoded, sizeof decoded);
    download(om, got, sizeof got);
    for (int b = 0; b < 256; b++) {
        float want = dy_fp8_to_f32((uint8_t)b);
        bool same = isnan(want) ? isnan(decoded[b]) : memcmp(&want, &decoded[b], 4) == 0;
        if (!same)
            printf("# fp8 0x%02x: %g, want %g\n", b, decoded[b], want);
        DY_CHECK(same);
    }
    size_t wrong = 0;
    for (size_t i = 0; i < COUNT; i++) {
        float f;
        memcpy(&f, &in[i], 4);
        if (got[i] != dy_f32_to_fp8(f) && wrong++ < 5)
            printf("# f32 0x%08x: fp8 0x%02x, want 0x%02x\n", in[i], got[i], dy_f32_to_fp8(f));
    }
    DY_CHECK(wrong == 0);
    clReleaseMemObject(bm);
    clReleaseMemObject(dm);
    clReleaseMemObject(im);
    clReleaseMemObject(om);
}

/* backend.h's int8 rows: scale = max|x| / 127, q = rint(x * (127 / max|x|)). */
static void host_int8_row(const float *x, int n, int8_t *q, float *scale)
{
    float amax = 0.0f;
    for (int i = 0; i < n; i++)
        amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
    float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    for (int i = 0; i < n; i++)
        q[i] = (int8_t)rintf(x[i] * inv);
    *scale = amax / 127.0f;
}

/* The int8 append, exact: the kernel's division is corrected to round as
 * the host's. Token 1's K row for head 0 is all zeros. */
static void test_kv_append_int8(void)
{
    enum { TOKENS = 5, KV_HEADS = 3, HD = 40, STRIDE = KV_HEADS * HD + 8, SLOTS = 16 };
    enum { ROW = KV_HEADS * HD };
    /* zeros in the slots no token goes to, on both sides */
    static float k[TOKENS * STRIDE], v[TOKENS * STRIDE];
    static int8_t kc[SLOTS * ROW], vc[SLOTS * ROW], want_k[SLOTS * ROW], want_v[SLOTS * ROW];
    static float ks[SLOTS * KV_HEADS], vs[SLOTS * KV_HEADS], want_ks[SLOTS * KV_HEADS],
        want_vs[SLOTS * KV_HEADS];
    int32_t slots[TOKENS] = { 9, 2, 15, 0, 6 };
    need_program();
    for (int i = 0; i < TOKENS * STRIDE; i++) {
        k[i] = host_random(13, (size_t)i) * (float)(1 + i % 7);
        v[i] = host_random(14, (size_t)i) * 1e-3f;
    }
    memset(k + STRIDE, 0, HD * sizeof(float));
    for (int t = 0; t < TOKENS; t++)
        for (int h = 0; h < KV_HEADS; h++) {
            size_t src = (size_t)t * STRIDE + h * HD, dst = (size_t)slots[t] * ROW + h * HD;
            size_t si = (size_t)slots[t] * KV_HEADS + h;
            host_int8_row(k + src, HD, want_k + dst, want_ks + si);
            host_int8_row(v + src, HD, want_v + dst, want_vs + si);
        }
    cl_mem km = upload(k, sizeof k), vm = upload(v, sizeof v), sm = upload(slots, sizeof slots);
    cl_mem kcm = upload(kc, sizeof kc), vcm = upload(vc, sizeof vc);
    cl_mem ksm = upload(ks, sizeof ks), vsm = upload(vs, sizeof vs);
    cl_ulong zero = 0;
    cl_int stride = STRIDE, f32 = DY_F32, kv_heads = KV_HEADS, hd = HD;
    size_t global = TOKENS * KV_HEADS * WG, local = WG;
    RUN("kv_append_int8", 1, &global, &local, ARG(km), ARG(zero), ARG(vm), ARG(zero),
        ARG(stride), ARG(f32), ARG(sm), ARG(zero), ARG(kcm), ARG(zero), ARG(vcm), ARG(zero),
        ARG(ksm), ARG(zero), ARG(vsm), ARG(zero), ARG(kv_heads), ARG(hd));
    download(kcm, kc, sizeof kc);
    download(vcm, vc, sizeof vc);
    download(ksm, ks, sizeof ks);
    download(vsm, vs, sizeof vs);
    DY_CHECK(memcmp(kc, want_k, sizeof kc) == 0);
    DY_CHECK(memcmp(vc, want_v, sizeof vc) == 0);
    DY_CHECK(memcmp(ks, want_ks, sizeof ks) == 0);
    DY_CHECK(memcmp(vs, want_vs, sizeof vs) == 0);
    DY_CHECK(want_ks[slots[1] * KV_HEADS] == 0.0f);
    cl_mem bufs[] = { km, vm, sm, kcm, vcm, ksm, vsm };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        clReleaseMemObject(bufs[i]);
}

/* A cache of dtype ct for the decode and scoring tests: values of
 * magnitude up to 2 (int8: integers with scales near 2 / 127). */
static void *host_cache(enum dy_dtype ct, size_t count, uint64_t key, float *scales,
                        size_t scales_n)
{
    void *p = malloc(count * dy_dtype_size(ct));
    float range = ct == DY_I8 ? 127.0f : 2.0f;
    for (size_t i = 0; i < count; i++)
        dy_store_f32(p, ct, i, ct == DY_I8 ? rintf(host_random(key, i) * range)
                                           : host_random(key, i) * range);
    for (size_t i = 0; i < scales_n; i++)
        scales[i] = 0.012f + 0.005f * host_random(key + 1, i);
    return p;
}

static double cache_at(const void *cache, enum dy_dtype ct, const float *scales, size_t i,
                       size_t scale_i)
{
    return dy_load_f32(cache, ct, i) * (ct == DY_I8 ? scales[scale_i] : 1.0);
}

/* Two sequences over a paged cache (blocks out of order), grouped heads,
 * one split as the plugin launches short contexts; head_dim 64 takes the
 * one-byte caches' 16-byte loads, 72 their 8-byte ones. `gqa`: through
 * attention_decode_gqa, a work-group per KV head. */
static void decode_case(enum dy_dtype ct, int hd, bool gqa)
{
    enum { BATCH = 2, HEADS = 4, KV_HEADS = 2, MAX_HD = 72, BLOCK = 16, MAX_BLOCKS = 4 };
    enum { SLOTS = BATCH * MAX_BLOCKS * BLOCK };
    static float q[BATCH * HEADS * MAX_HD], out[BATCH * HEADS * MAX_HD];
    static float ks[SLOTS * KV_HEADS], vs[SLOTS * KV_HEADS];
    int32_t table[BATCH * MAX_BLOCKS] = { 3, 0, 6, 1, 2, 7, 4, 5 };
    int32_t lens[BATCH] = { 37, 50 };
    size_t row = (size_t)KV_HEADS * hd, cache_n = SLOTS * row;
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++)
        q[i] = host_random(7, i);
    void *kc = host_cache(ct, cache_n, 8, ks, SLOTS * KV_HEADS);
    void *vc = host_cache(ct, cache_n, 10, vs, SLOTS * KV_HEADS);
    size_t cache_bytes = cache_n * dy_dtype_size(ct);
    cl_mem qm = upload(q, sizeof q), om = upload(out, sizeof out);
    cl_mem km = upload(kc, cache_bytes), vm = upload(vc, cache_bytes);
    cl_mem ksm = upload(ks, sizeof ks), vsm = upload(vs, sizeof vs);
    cl_mem tm = upload(table, sizeof table), lm = upload(lens, sizeof lens);
    cl_mem no_partial = NULL;
    cl_ulong zero = 0;
    cl_int stride = HEADS * hd, heads = HEADS, kv_heads = KV_HEADS, hdim = hd, block = BLOCK;
    cl_int max_blocks = MAX_BLOCKS, f32 = DY_F32, cdt = ct, vec = 1;
    cl_int split_len = (BLOCK * MAX_BLOCKS + WG - 1) / WG * WG;
    float scale = 1.0f / sqrtf((float)hd);
    size_t global[3] = { (gqa ? KV_HEADS : HEADS) * WG, BATCH, 1 }, local[3] = { WG, 1, 1 };
    size_t q_bytes = (size_t)(gqa ? HEADS / KV_HEADS : 1) * hd * sizeof(float);
    RUN(gqa ? "attention_decode_gqa" : "attention_decode", 3, global, local, ARG(qm), ARG(zero),
        ARG(stride), ARG(om), ARG(zero), ARG(stride), ARG(km), ARG(zero), ARG(vm), ARG(zero),
        ARG(ksm), ARG(zero), ARG(vsm), ARG(zero), ARG(tm), ARG(zero), ARG(lm), ARG(zero),
        ARG(heads), ARG(kv_heads), ARG(hdim), ARG(block), ARG(max_blocks), ARG(scale), ARG(f32),
        ARG(cdt), ARG(vec), ARG(split_len), ARG(no_partial), LOCAL(q_bytes));
    download(om, out, sizeof out);
    for (int b = 0; b < BATCH; b++) {
        for (int h = 0; h < HEADS; h++) {
            int kvh = h / (HEADS / KV_HEADS);
            const float *qh = q + (b * HEADS + h) * hd;
            double score[BLOCK * MAX_BLOCKS], max = -INFINITY, sum = 0;
            size_t slot[BLOCK * MAX_BLOCKS];
            for (int t = 0; t < lens[b]; t++) {
                slot[t] = (size_t)table[b * MAX_BLOCKS + t / BLOCK] * BLOCK + t % BLOCK;
                double s = 0;
                for (int d = 0; d < hd; d++)
                    s += (double)qh[d] * cache_at(kc, ct, ks, slot[t] * row + kvh * hd + d,
                                                  slot[t] * KV_HEADS + kvh);
                score[t] = s * scale;
                max = fmax(max, score[t]);
            }
            for (int t = 0; t < lens[b]; t++)
                sum += exp(score[t] - max);
            for (int d = 0; d < hd; d++) {
                double acc = 0;
                for (int t = 0; t < lens[b]; t++)
                    acc += exp(score[t] - max) / sum *
                           cache_at(vc, ct, vs, slot[t] * row + kvh * hd + d,
                                    slot[t] * KV_HEADS + kvh);
                DY_CHECK(close_to(out[(b * HEADS + h) * hd + d], acc, 1e-4));
            }
        }
    }
    cl_mem bufs[] = { qm, om, km, vm, ksm, vsm, tm, lm };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        clReleaseMemObject(bufs[i]);
    free(kc);
    free(vc);
}

static void test_attention_decode(void)
{
    need_program();
    for (int gqa = 0; gqa < 2; gqa++) {
        decode_case(DY_F32, 64, gqa);
        for (int t = DY_FP8; t <= DY_I8; t++) {
            decode_case((enum dy_dtype)t, 64, gqa);
            decode_case((enum dy_dtype)t, 72, gqa);
        }
    }
}

/* Both kinds of score over bf16 and the one-byte caches. */
static void test_kv_block_scores(void)
{
    enum { BLOCKS = 6, BLOCK = 4, KV_HEADS = 3, HD = 32, COUNT = 3 };
    enum { ROWS = BLOCKS * BLOCK * KV_HEADS, CACHE_N = ROWS * HD };
    static const enum dy_dtype types[] = { DY_BF16, DY_FP8, DY_I8 };
    static float ks[ROWS], vs[ROWS];
    int32_t blocks[COUNT] = { 4, 0, 5 };
    need_program();
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        enum dy_dtype ct = types[t];
        void *kc = host_cache(ct, CACHE_N, 15, ks, ROWS);
        void *vc = host_cache(ct, CACHE_N, 17, vs, ROWS);
        size_t cache_bytes = (size_t)CACHE_N * dy_dtype_size(ct);
        cl_mem km = upload(kc, cache_bytes), vm = upload(vc, cache_bytes);
        cl_mem ksm = upload(ks, sizeof ks), vsm = upload(vs, sizeof vs);
        cl_mem bm = upload(blocks, sizeof blocks);
        for (cl_int kind = DY_KV_SCORE_INV_KEY_NORM; kind <= DY_KV_SCORE_VK_RATIO; kind++) {
            float scores[COUNT] = { 0 };
            cl_mem sm = upload(scores, sizeof scores);
            cl_ulong zero = 0;
            cl_int block = BLOCK, kv_heads = KV_HEADS, hd = HD, cdt = ct, vec = 1;
            size_t global = COUNT * WG, local = WG;
            RUN("kv_block_scores", 1, &global, &local, ARG(km), ARG(zero), ARG(vm), ARG(zero),
                ARG(ksm), ARG(zero), ARG(vsm), ARG(zero), ARG(bm), ARG(zero), ARG(sm), ARG(zero),
                ARG(block), ARG(kv_heads), ARG(hd), ARG(kind), ARG(cdt), ARG(vec));
            download(sm, scores, sizeof scores);
            clReleaseMemObject(sm);
            for (int i = 0; i < COUNT; i++) {
                double want = 0;
                for (int r = blocks[i] * BLOCK * KV_HEADS; r < (blocks[i] + 1) * BLOCK * KV_HEADS;
                     r++) {
                    double kk = 0, vv = 0;
                    for (int d = 0; d < HD; d++) {
                        double kx = cache_at(kc, ct, ks, (size_t)r * HD + d, (size_t)r);
                        double vx = cache_at(vc, ct, vs, (size_t)r * HD + d, (size_t)r);
                        kk += kx * kx;
                        vv += vx * vx;
                    }
                    want += (kind == DY_KV_SCORE_VK_RATIO ? sqrt(vv) : 1.0) / sqrt(kk) / KV_HEADS;
                }
                DY_CHECK(close_to(scores[i], want, 1e-5));
            }
        }
        cl_mem bufs[] = { km, vm, ksm, vsm, bm };
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            clReleaseMemObject(bufs[i]);
        free(kc);
        free(vc);
    }
}

/* ---- MoE ---- */

/* The stable counting sort of the host, as cpu-ref's. */
static void host_moe_sort(const int32_t *ids, int pairs, int experts, int32_t *offsets,
                          int32_t *sorted, int32_t *position)
{
    memset(offsets, 0, ((size_t)experts + 1) * sizeof *offsets);
    for (int p = 0; p < pairs; p++)
        offsets[ids[p] + 1]++;
    for (int e = 0; e < experts; e++)
        offsets[e + 1] += offsets[e];
    int32_t next[64];
    DY_REQUIRE(experts <= 64);
    memcpy(next, offsets, (size_t)experts * sizeof *next);
    for (int p = 0; p < pairs; p++) {
        sorted[next[ids[p]]] = p;
        position[p] = next[ids[p]]++;
    }
}

/* Both ways the plugin sorts, local atomics and scans included: one
 * work-group for few pairs, three launches over chunks for many (chunks
 * of 4 * WG pairs, as kernel_moe.inc's smallest). */
static void test_moe_sort(void)
{
    enum { PAIRS = 3000, EXPERTS = 60, CHUNK = 4 * WG, CHUNKS = (PAIRS + CHUNK - 1) / CHUNK };
    static int32_t ids[PAIRS], sorted[PAIRS], position[PAIRS], want_sorted[PAIRS],
        want_position[PAIRS];
    int32_t offsets[EXPERTS + 1], want_offsets[EXPERTS + 1];
    need_program();
    for (int p = 0; p < PAIRS; p++) { /* a hot expert among uniform ones */
        int uniform = (int)((host_random(10, (size_t)p) + 1.0f) * 0.5f * EXPERTS) % EXPERTS;
        ids[p] = p % 3 ? 7 : uniform;
    }
    cl_mem idm = upload(ids, sizeof ids), om = upload(offsets, sizeof offsets);
    cl_mem sm = upload(sorted, sizeof sorted), pm = upload(position, sizeof position);
    static int32_t counts[EXPERTS * CHUNKS];
    cl_mem cm = upload(counts, sizeof counts);
    cl_ulong zero = 0;
    cl_int experts = EXPERTS, chunk = CHUNK, chunks = CHUNKS;
    size_t local = WG, one = WG, global = (size_t)CHUNKS * WG;
    for (int small = 1; small >= 0; small--) {
        cl_int pairs = small ? 1000 : PAIRS;
        if (small) {
            RUN("moe_sort_small", 1, &one, &local, ARG(idm), ARG(zero), ARG(pairs), ARG(experts),
                ARG(om), ARG(zero), ARG(sm), ARG(zero), ARG(pm), ARG(zero),
                LOCAL(EXPERTS * sizeof(int32_t)));
        } else {
            RUN("moe_sort_count", 1, &global, &local, ARG(idm), ARG(zero), ARG(pairs),
                ARG(experts), ARG(chunk), ARG(cm), LOCAL(EXPERTS * sizeof(int32_t)));
            RUN("moe_sort_scan", 1, &one, &local, ARG(cm), ARG(chunks), ARG(experts), ARG(om),
                ARG(zero));
            RUN("moe_sort_place", 1, &global, &local, ARG(idm), ARG(zero), ARG(pairs),
                ARG(experts), ARG(chunk), ARG(cm), ARG(sm), ARG(zero), ARG(pm), ARG(zero),
                LOCAL(EXPERTS * sizeof(int32_t)));
        }
        download(om, offsets, sizeof offsets);
        download(sm, sorted, (size_t)pairs * sizeof(int32_t));
        download(pm, position, (size_t)pairs * sizeof(int32_t));
        host_moe_sort(ids, pairs, EXPERTS, want_offsets, want_sorted, want_position);
        DY_CHECK(memcmp(offsets, want_offsets, sizeof offsets) == 0);
        DY_CHECK(memcmp(sorted, want_sorted, (size_t)pairs * sizeof(int32_t)) == 0);
        DY_CHECK(memcmp(position, want_position, (size_t)pairs * sizeof(int32_t)) == 0);
    }
    clReleaseMemObject(idm);
    clReleaseMemObject(om);
    clReleaseMemObject(sm);
    clReleaseMemObject(pm);
    clReleaseMemObject(cm);
}

/* Decode through the grouped GEMV: three tokens' two experts each, rows
 * gathered from the sorted pairs, bf16 weights with wide loads. */
static void test_gemv_grouped(void)
{
    enum { TOKENS = 3, TOPK = 2, ROWS = TOKENS * TOPK, EXPERTS = 4, N = 21, K = 64 };
    static const int32_t ids[ROWS] = { 2, 0, 2, 3, 0, 2 };
    int32_t offsets[EXPERTS + 1], sorted[ROWS], position[ROWS];
    float a[TOKENS * K], c[ROWS * N];
    static uint16_t b[EXPERTS * N * K];
    need_program();
    host_moe_sort(ids, ROWS, EXPERTS, offsets, sorted, position);
    for (int i = 0; i < TOKENS * K; i++)
        a[i] = host_random(11, (size_t)i);
    for (int i = 0; i < EXPERTS * N * K; i++)
        b[i] = dy_f32_to_bf16(host_random(12, (size_t)i));
    cl_mem am = upload(a, sizeof a), rm = upload(sorted, sizeof sorted), bm = upload(b, sizeof b);
    cl_mem cm = upload(c, sizeof c), om = upload(offsets, sizeof offsets);
    cl_ulong zero = 0, b_expert_stride = N * K;
    cl_int lda = K, a_vec = 1, div = TOPK, bf16 = DY_BF16, ldc = N, rows = ROWS, n = N, k = K;
    cl_int experts = EXPERTS, k_vec = K;
    /* a work-group per expert, then per sorted row (the kernel takes either
     * whatever the counts; the plugin picks the fewer groups) */
    for (cl_int by_row = 0; by_row <= 1; by_row++) {
        size_t global[2] = { (N + GEMV_ROWS - 1) / GEMV_ROWS * WG, by_row ? ROWS : EXPERTS };
        size_t local[2] = { WG, 1 };
        memset(c, 0, sizeof c);
        DY_REQUIRE(clEnqueueWriteBuffer(queue, cm, CL_TRUE, 0, sizeof c, c, 0, NULL, NULL) ==
                   CL_SUCCESS);
        RUN("gemv_grouped", 2, global, local, ARG(am), ARG(zero), ARG(lda), ARG(a_vec), ARG(rm),
            ARG(zero), ARG(div), ARG(bm), ARG(zero), ARG(b_expert_stride), ARG(bf16), ARG(cm),
            ARG(zero), ARG(ldc), ARG(om), ARG(zero), ARG(rows), ARG(experts), ARG(by_row),
            ARG(n), ARG(k), ARG(k_vec));
        download(cm, c, sizeof c);
        for (int r = 0; r < ROWS; r++) {
            int e = ids[sorted[r]], t = sorted[r] / TOPK;
            for (int j = 0; j < N; j++) {
                double want = 0;
                for (int i = 0; i < K; i++)
                    want += (double)a[t * K + i] * dy_bf16_to_f32(b[((size_t)e * N + j) * K + i]);
                DY_CHECK(close_to(c[r * N + j], want, 1e-5));
            }
        }
    }
    clReleaseMemObject(am);
    clReleaseMemObject(rm);
    clReleaseMemObject(bm);
    clReleaseMemObject(cm);
    clReleaseMemObject(om);
}

/* Quantized weights: dequantize bit for bit as backend.h's dy_dequant
 * (fp8, int8, int4 with zero points), and gemv_q1 over the int4 matrix
 * through its wide loads, as the plugin launches them. */
static void test_quantized_weights(void)
{
    enum { N = 9, K = 64, GROUP = 32, SCALES = N * (K / GROUP) };
    static const enum dy_dtype types[] = { DY_FP8, DY_I8, DY_I4 };
    uint8_t q[N * K], zero[SCALES];
    float scale[SCALES], a[K], c[N], out[N * K];
    need_program();
    for (int i = 0; i < N * K; i++) /* no fp8 NaN */
        q[i] = (dy_mix64((uint64_t)i) & 0x7f) == 0x7f ? 0 : (uint8_t)dy_mix64((uint64_t)i);
    for (int i = 0; i < SCALES; i++) {
        scale[i] = 0.01f + 0.005f * host_random(20, (size_t)i);
        zero[i] = (uint8_t)(dy_mix64((uint64_t)i + 1000) & 15);
    }
    for (int i = 0; i < K; i++)
        a[i] = host_random(21, (size_t)i);
    cl_mem qm = upload(q, sizeof q), sm = upload(scale, sizeof scale);
    cl_mem zm = upload(zero, sizeof zero), om = upload(out, sizeof out);
    cl_mem am = upload(a, sizeof a), cm = upload(c, sizeof c);
    cl_mem none = NULL;
    cl_ulong off = 0;
    cl_int k = K, n = N, group = GROUP, f32 = DY_F32, i4 = DY_I4, a_vec = 1, m = 1, k_vec = K;
    float beta = 0.0f;
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        cl_int qt = types[t];
        size_t global[2] = { K, N }, local[2] = { 64, 1 };
        RUN("dequantize", 2, global, local, ARG(qm), ARG(off), ARG(qt), ARG(sm), ARG(off), ARG(zm),
            ARG(off), ARG(group), ARG(om), ARG(off), ARG(k), ARG(f32), ARG(n), ARG(k));
        download(om, out, sizeof out);
        for (int i = 0; i < N * K; i++) {
            float want =
                dy_dequant(q, types[t], scale, zero, K, GROUP, (size_t)(i / K), (size_t)(i % K));
            DY_CHECK(memcmp(&want, &out[i], sizeof want) == 0);
        }
    }
    for (cl_int lanes = 32; lanes >= 1; lanes /= 32) {
        size_t global = (N + WG / lanes - 1) / (WG / lanes) * WG, local = WG;
        RUN("gemv_q1", 1, &global, &local, ARG(am), ARG(off), ARG(k), ARG(a_vec), ARG(qm),
            ARG(off), ARG(i4), ARG(sm), ARG(off), ARG(zm), ARG(off), ARG(group), ARG(none),
            ARG(off), ARG(f32), ARG(cm), ARG(off), ARG(n), ARG(beta), ARG(m), ARG(n), ARG(k),
            ARG(k_vec), ARG(lanes));
        download(cm, c, sizeof c);
        for (int j = 0; j < N; j++) {
            double want = 0;
            for (int i = 0; i < K; i++)
                want += a[i] * (double)dy_dequant(q, DY_I4, scale, zero, K, GROUP, (size_t)j,
                                                  (size_t)i);
            DY_CHECK(close_to(c[j], want, 1e-5));
        }
    }
    cl_mem bufs[] = { qm, sm, zm, om, am, cm };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        clReleaseMemObject(bufs[i]);
}

DY_TESTS(
    DY_TEST(test_plugin_fills_every_slot)
    DY_TEST(test_plugin_probe_names_zeinit)
    DY_TEST(test_module_has_every_kernel)
    DY_TEST(test_fill_random_bit_exact)
    DY_TEST(test_gemv_f16_weights)
    DY_TEST(test_rmsnorm)
    DY_TEST(test_argmax)
    DY_TEST(test_fp8_conversions_bit_exact)
    DY_TEST(test_kv_append_int8)
    DY_TEST(test_attention_decode)
    DY_TEST(test_kv_block_scores)
    DY_TEST(test_moe_sort)
    DY_TEST(test_gemv_grouped)
    DY_TEST(test_quantized_weights)
)
