/* How close the OpenCL backend runs to each OpenCL device's limits.
 *
 * On every device of the opencl plugin: copy bandwidth through buf_copy
 * (bytes read + written, the harness's ceiling); the decode GEMV (m = 1
 * with bf16 and f16 weights, m = 8 with bf16) as effective bandwidth,
 * weight bytes read per second, and its ratio to the copy figure; paged
 * decode attention as KV bytes read per second; f32 GEMM throughput at
 * prefill-like shapes (CLBlast where it is installed). The plugin is found
 * as dyno finds it, so from a build tree:
 *
 *   DYNO_PLUGIN_PATH=build/backends/opencl build/bench/opencl_bench
 *
 * Each figure is the best of REPEATS timed runs after a warm-up run, as
 * STREAM reports: the machine's capability, not its noise. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/backend.h"

#define REPEATS 7
#define COPY_BYTES ((size_t)256 << 20)

typedef int (*op_fn)(dy_ctx *ctx, const void *arg);

/* Best device time of `op` over REPEATS runs after one warm-up, in ns;
 * 0 when the op fails (its error is printed). */
static uint64_t best_ns(dy_ctx *ctx, op_fn op, const void *arg)
{
    void *e0 = NULL, *e1 = NULL;
    uint64_t best = 0;
    if (dy_event_create(ctx, &e0) != DY_OK || dy_event_create(ctx, &e1) != DY_OK)
        goto done;
    for (int rep = 0; rep <= REPEATS; rep++) {
        uint64_t ns;
        if (dy_event_record(ctx, e0) != DY_OK || op(ctx, arg) != DY_OK ||
            dy_event_record(ctx, e1) != DY_OK || dy_event_elapsed_ns(ctx, e0, e1, &ns) != DY_OK)
            goto done;
        if (rep > 0 && (best == 0 || ns < best))
            best = ns;
    }
done:
    if (best == 0)
        fprintf(stderr, "opencl_bench: %s\n", dy_ctx_error(ctx));
    dy_event_destroy(ctx, e0);
    dy_event_destroy(ctx, e1);
    return best;
}

struct copy_arg {
    dy_buf src, dst;
    size_t bytes;
};

static int do_copy(dy_ctx *ctx, const void *arg)
{
    const struct copy_arg *a = arg;
    return dy_buf_copy(ctx, a->dst, a->src, a->bytes);
}

static int do_gemm(dy_ctx *ctx, const void *arg)
{
    return dy_gemm(ctx, arg);
}

/* Copy bandwidth in GB/s (read + written), halving the size until two
 * buffers fit. */
static double copy_gbps(dy_ctx *ctx)
{
    struct copy_arg a = { .bytes = COPY_BYTES };
    double gbps = 0.0;
    while (dy_buf_alloc(ctx, a.bytes, &a.src) != DY_OK ||
           dy_buf_alloc(ctx, a.bytes, &a.dst) != DY_OK) {
        dy_buf_free(ctx, &a.src);
        if (a.bytes <= ((size_t)1 << 20))
            return 0.0;
        a.bytes /= 2;
    }
    if (dy_buf_fill(ctx, a.src, 1, a.bytes) == DY_OK) {
        uint64_t ns = best_ns(ctx, do_copy, &a);
        gbps = ns ? 2.0 * (double)a.bytes / (double)ns : 0.0;
    }
    dy_buf_free(ctx, &a.src);
    dy_buf_free(ctx, &a.dst);
    return gbps;
}

/* Runs C[m,n] = A[m,k] . B[n,k]^T with random operands; returns the best
 * time in ns, 0 when it cannot run. */
static uint64_t time_gemm(dy_ctx *ctx, int m, int n, int k, enum dy_dtype b_dtype)
{
    struct dy_gemm_desc d = { .m = m, .n = n, .k = k, .lda = k, .ldb = k, .ldc = n,
                              .a_dtype = DY_F32, .b_dtype = b_dtype, .c_dtype = DY_F32 };
    struct dy_fill_random_desc fa = { .count = (size_t)m * k, .dtype = DY_F32, .seed = 1,
                                      .stream = 1, .scale = 1.0f };
    struct dy_fill_random_desc fb = { .count = (size_t)n * k, .dtype = b_dtype, .seed = 1,
                                      .stream = 2, .scale = 0.05f };
    uint64_t ns = 0;
    if (dy_buf_alloc(ctx, fa.count * 4, &d.a) != DY_OK ||
        dy_buf_alloc(ctx, fb.count * dy_dtype_size(b_dtype), &d.b) != DY_OK ||
        dy_buf_alloc(ctx, (size_t)m * n * 4, &d.c) != DY_OK) {
        fprintf(stderr, "opencl_bench: %s\n", dy_ctx_error(ctx));
        goto done;
    }
    fa.dst = d.a;
    fb.dst = d.b;
    if (dy_fill_random(ctx, &fa) != DY_OK || dy_fill_random(ctx, &fb) != DY_OK) {
        fprintf(stderr, "opencl_bench: %s\n", dy_ctx_error(ctx));
        goto done;
    }
    ns = best_ns(ctx, do_gemm, &d);
done:
    dy_buf_free(ctx, &d.a);
    dy_buf_free(ctx, &d.b);
    dy_buf_free(ctx, &d.c);
    return ns;
}

static int do_decode(dy_ctx *ctx, const void *arg)
{
    return dy_attention_decode(ctx, arg);
}

/* Paged decode attention with Llama-3-8B's heads (32 query, 8 KV, 128
 * wide) and a 16-bit cache, every sequence `len` long; best time in ns. */
static uint64_t time_decode(dy_ctx *ctx, int batch, int len, enum dy_dtype cache_dtype)
{
    const int heads = 32, kv_heads = 8, head_dim = 128, block = 16;
    int blocks_per_seq = (len + block - 1) / block, blocks = batch * blocks_per_seq;
    size_t cache_elems = (size_t)blocks * block * kv_heads * head_dim;
    struct dy_attention_decode_desc d = {
        .q_stride = heads * head_dim, .out_stride = heads * head_dim, .batch = batch,
        .heads = heads, .kv_heads = kv_heads, .head_dim = head_dim, .block_size = block,
        .max_blocks_per_seq = blocks_per_seq, .max_context = len, .scale = 0.088f,
        .dtype = DY_F32, .cache_dtype = cache_dtype,
    };
    int32_t *table = malloc(sizeof(int32_t) * (size_t)blocks);
    int32_t *lens = malloc(sizeof(int32_t) * (size_t)batch);
    uint64_t ns = 0;
    for (int i = 0; i < blocks; i++)
        table[i] = i;
    for (int b = 0; b < batch; b++)
        lens[b] = len;
    dy_buf *bufs[] = { &d.q, &d.out, &d.k_cache, &d.v_cache, &d.block_table, &d.context_lens };
    size_t sizes[] = { (size_t)batch * heads * head_dim * 4, (size_t)batch * heads * head_dim * 4,
                       cache_elems * 2, cache_elems * 2, (size_t)blocks * 4, (size_t)batch * 4 };
    for (size_t i = 0; i < 6; i++)
        if (dy_buf_alloc(ctx, sizes[i], bufs[i]) != DY_OK ||
            dy_buf_fill(ctx, *bufs[i], 0, sizes[i]) != DY_OK)
            goto done;
    if (dy_buf_write(ctx, d.block_table, table, sizes[4]) == DY_OK &&
        dy_buf_write(ctx, d.context_lens, lens, sizes[5]) == DY_OK)
        ns = best_ns(ctx, do_decode, &d);
done:
    if (!ns)
        fprintf(stderr, "opencl_bench: %s\n", dy_ctx_error(ctx));
    for (size_t i = 0; i < 6; i++)
        dy_buf_free(ctx, bufs[i]);
    free(table);
    free(lens);
    return ns;
}

/* Decode GEMVs of Llama-3-8B's shapes: qkv, o, gate/up, down, LM head. */
static const int gemv_shapes[][2] = {
    { 6144, 4096 }, { 4096, 4096 }, { 28672, 4096 }, { 4096, 14336 }, { 128256, 4096 },
};

static void bench_device(const struct dy_backend *be, int device)
{
    struct dy_device_info info;
    dy_ctx *ctx;
    if (be->device_info(device, &info) != DY_OK || dy_ctx_create(be, device, &ctx) != DY_OK) {
        printf("device %d: cannot open\n", device);
        return;
    }
    printf("\n## opencl:%d %s (%s)\n\n", device, info.name, info.driver_version);
    double copy = copy_gbps(ctx);
    printf("copy (buf_copy, read + written): %.1f GB/s\n\n", copy);
    printf("| GEMV | weights | m | n | k | time us | GB/s | of copy |\n"
           "|---|---|--:|--:|--:|--:|--:|--:|\n");
    /* one sequence decoding in both 16-bit dtypes, then a batch of 8 */
    static const struct { enum dy_dtype dtype; int m; } gemv_cases[] = {
        { DY_BF16, 1 }, { DY_F16, 1 }, { DY_BF16, 8 },
    };
    for (size_t t = 0; t < sizeof gemv_cases / sizeof gemv_cases[0]; t++) {
        enum dy_dtype wt = gemv_cases[t].dtype;
        int m = gemv_cases[t].m;
        for (size_t s = 0; s < sizeof gemv_shapes / sizeof gemv_shapes[0]; s++) {
            int n = gemv_shapes[s][0], k = gemv_shapes[s][1];
            uint64_t ns = time_gemm(ctx, m, n, k, wt);
            double gbps = ns ? (double)n * k * dy_dtype_size(wt) / (double)ns : 0.0;
            printf("| | %s | %d | %d | %d | %.1f | %.1f | %.0f%% |\n", dy_dtype_name(wt), m, n, k,
                   ns / 1e3, gbps, copy > 0 ? 100.0 * gbps / copy : 0.0);
        }
    }
    printf("\n| decode attention | cache | batch | context | time us | KV GB/s | of copy |\n"
           "|---|---|--:|--:|--:|--:|--:|\n");
    static const int decode_shapes[][2] = { { 1, 512 }, { 1, 4096 }, { 1, 32768 }, { 16, 4096 } };
    for (int t = DY_F16; t <= DY_BF16; t++) {
        for (size_t s = 0; s < sizeof decode_shapes / sizeof decode_shapes[0]; s++) {
            int batch = decode_shapes[s][0], len = decode_shapes[s][1];
            uint64_t ns = time_decode(ctx, batch, len, (enum dy_dtype)t);
            /* K and V rows of every sequence: 8 KV heads of 128, 2 bytes each */
            double gbps = ns ? 2.0 * batch * len * 8 * 128 * 2 / (double)ns : 0.0;
            printf("| | %s | %d | %d | %.1f | %.1f | %.0f%% |\n", dy_dtype_name((enum dy_dtype)t),
                   batch, len, ns / 1e3, gbps, copy > 0 ? 100.0 * gbps / copy : 0.0);
        }
    }
    printf("\n| GEMM | weights | m | n | k | time ms | TFLOP/s |\n|---|---|--:|--:|--:|--:|--:|\n");
    /* the larger shape only where the smaller one is quick (not on CPUs) */
    static const int gemm_shapes[][3] = { { 512, 4096, 4096 }, { 2048, 4096, 4096 } };
    uint64_t slowest = 0;
    for (size_t s = 0; s < 2 && slowest < 100000000ull; s++) {
        for (size_t t = 0; t < 2; t++) {
            enum dy_dtype bt = t ? DY_BF16 : DY_F32;
            int m = gemm_shapes[s][0], n = gemm_shapes[s][1], k = gemm_shapes[s][2];
            uint64_t ns = time_gemm(ctx, m, n, k, bt);
            slowest = ns > slowest ? ns : slowest;
            printf("| | %s | %d | %d | %d | %.2f | %.2f |\n", dy_dtype_name(bt), m, n, k, ns / 1e6,
                   ns ? 2.0 * m * n * (double)k / (double)ns / 1e3 : 0.0);
        }
    }
    dy_ctx_destroy(ctx);
}

int main(void)
{
    char why[512];
    const struct dy_backend *be = dy_registry_find("opencl", why, sizeof why);
    int count = 0;
    if (!be) {
        fprintf(stderr, "opencl_bench: %s\n", why);
        return 1;
    }
    if (be->device_count(&count) != DY_OK || count == 0) {
        fprintf(stderr, "opencl_bench: no OpenCL device\n");
        return 1;
    }
    for (int device = 0; device < count; device++)
        bench_device(be, device);
    return 0;
}
