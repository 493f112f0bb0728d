/* How close the OpenCL backend runs to each OpenCL device's limits.
 *
 * On every device of the opencl plugin: copy bandwidth through buf_copy
 * (bytes read + written, the harness's ceiling), and on a device that is
 * the host's memory (PoCL) the `cpu` backend's buf_copy too, the host's
 * copy bandwidth on every core; then the memory-bound ops against them:
 * the decode GEMV (m = 1, 4, 8 with bf16 weights, m = 1 with f16, fp8,
 * int8 and int4) at Llama-3.2-1B's shapes as weight bytes read per second;
 * paged decode attention as KV bytes read per second; RMSNorm, SiLU-mul,
 * add, RoPE and KV append at prefill sizes as bytes read + written per
 * second, and their time at one token; f32 GEMM throughput at prefill
 * shapes (CLBlast where it is installed). The plugin is found as dyno
 * finds it, so from a build tree:
 *
 *   DYNO_PLUGIN_PATH=build/backends/opencl build/bench/opencl_bench [--chain N] [SECTION...]
 *
 * SECTION is gemv, qgemv, attention, small or gemm (default: all).
 *
 * A round runs the ceilings and the measured op once each, so that both
 * see the same state of a machine whose bandwidth drifts (a VM's
 * neighbours); each figure is the best of REPEATS rounds after a warm-up
 * round, as STREAM reports. Weights are rotated over enough copies to pass
 * twice the device's last-level cache. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backends/backend.h"

#define REPEATS 7

/* Calls of an op between one pair of events (--chain N): 1 times a call
 * alone on an idle queue, more the rate of calls back to back, as a
 * decode step issues them. */
static int chain = 1;
#define COPY_BYTES ((size_t)256 << 20)
#define MAX_COPIES 8

typedef int (*op_fn)(dy_ctx *ctx, void *arg);

/* One op to time: `op(ctx, arg)`. */
struct timed {
    dy_ctx *ctx;
    op_fn op;
    void *arg;
};

/* The ceilings measured beside every op. host_ctx is NULL where the device
 * is not the host's memory. */
struct ceilings {
    dy_ctx *ctx, *host_ctx;
    struct copy_arg {
        dy_buf src, dst;
        size_t bytes;
    } copy, host_copy;
    uint64_t cache_bytes;
};

static bool wanted(int argc, char **argv, const char *section)
{
    if (argc < 2)
        return true;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], section) == 0)
            return true;
    return false;
}

static int do_copy(dy_ctx *ctx, void *arg)
{
    const struct copy_arg *a = arg;
    return dy_buf_copy(ctx, a->dst, a->src, a->bytes);
}

/* Times `count` ops in REPEATS rounds after a warm-up round; best[i] is op
 * i's fewest ns. False (the error printed) when one fails. */
static bool time_rounds(const struct timed *ops, int count, uint64_t *best)
{
    void *e0[4] = { 0 }, *e1[4] = { 0 };
    bool ok = false;
    if (count > 4)
        return false;
    for (int i = 0; i < count; i++) {
        best[i] = 0;
        if (dy_event_create(ops[i].ctx, &e0[i]) != DY_OK ||
            dy_event_create(ops[i].ctx, &e1[i]) != DY_OK) {
            fprintf(stderr, "opencl_bench: %s\n", dy_ctx_error(ops[i].ctx));
            goto done;
        }
    }
    for (int rep = 0; rep <= REPEATS; rep++)
        for (int i = 0; i < count; i++) {
            uint64_t ns;
            dy_ctx *ctx = ops[i].ctx;
            bool run = dy_event_record(ctx, e0[i]) == DY_OK;
            for (int c = 0; run && c < chain; c++)
                run = ops[i].op(ctx, ops[i].arg) == DY_OK;
            if (!run || dy_event_record(ctx, e1[i]) != DY_OK ||
                dy_event_elapsed_ns(ctx, e0[i], e1[i], &ns) != DY_OK) {
                fprintf(stderr, "opencl_bench: %s\n", dy_ctx_error(ctx));
                goto done;
            }
            ns /= (uint64_t)chain;
            if (rep > 0 && (best[i] == 0 || ns < best[i]))
                best[i] = ns;
            /* the cpu backend's OpenMP threads spin a while after a
             * parallel region: let them sleep before PoCL's threads run */
            if (dy_ctx_backend(ctx) != dy_ctx_backend(ops[0].ctx))
                usleep(20000);
        }
    ok = true;
done:
    for (int i = 0; i < count; i++) {
        dy_event_destroy(ops[i].ctx, e0[i]);
        dy_event_destroy(ops[i].ctx, e1[i]);
    }
    return ok;
}

/* A measured op's bytes over its time, as a ratio to each ceiling of the
 * same rounds. */
struct figure {
    uint64_t ns;
    double gbps, of_copy, of_host;
};

/* Runs `op` beside the ceilings; `bytes` is what one call moves. */
static struct figure measure(const struct ceilings *cl, op_fn op, void *arg, double bytes)
{
    struct timed ops[3] = {
        { cl->ctx, op, arg },
        { cl->ctx, do_copy, (void *)&cl->copy },
        { cl->host_ctx, do_copy, (void *)&cl->host_copy },
    };
    uint64_t best[3];
    struct figure f = { 0 };
    if (!time_rounds(ops, cl->host_ctx ? 3 : 2, best))
        return f;
    f.ns = best[0];
    f.gbps = bytes / (double)best[0];
    f.of_copy = f.gbps / (2.0 * (double)cl->copy.bytes / (double)best[1]);
    if (cl->host_ctx)
        f.of_host = f.gbps / (2.0 * (double)cl->host_copy.bytes / (double)best[2]);
    return f;
}

static void print_figure(const char *what, struct figure f, bool host)
{
    printf("| %s | %.1f | %.1f | %.2f |", what, f.ns / 1e3, f.gbps, f.of_copy);
    if (host)
        printf(" %.2f |", f.of_host);
    printf("\n");
}

static void print_header(const char *what, bool host)
{
    printf("\n| %s | time us | GB/s | of copy |%s\n|---|--:|--:|--:|%s\n", what,
           host ? " of host copy |" : "", host ? "--:|" : "");
}

/* Two buffers of `bytes` for a copy, halving the size until both fit. */
static bool copy_bufs(dy_ctx *ctx, struct copy_arg *a)
{
    a->bytes = COPY_BYTES;
    while (dy_buf_alloc(ctx, a->bytes, &a->src) != DY_OK ||
           dy_buf_alloc(ctx, a->bytes, &a->dst) != DY_OK) {
        dy_buf_free(ctx, &a->src);
        if (a->bytes <= ((size_t)1 << 20))
            return false;
        a->bytes /= 2;
    }
    return dy_buf_fill(ctx, a->src, 1, a->bytes) == DY_OK;
}

static bool fill(dy_ctx *ctx, dy_buf b, size_t count, enum dy_dtype t, uint64_t stream, float scale)
{
    struct dy_fill_random_desc d = { .dst = b, .count = count, .dtype = t, .seed = 1,
                                     .stream = stream, .scale = scale };
    return dy_fill_random(ctx, &d) == DY_OK;
}

/* Bytes of random values for quantized weights: an xorshift's. */
static void random_bytes(uint8_t *p, size_t n, uint64_t seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (uint8_t)(x >> 24);
    }
}

/* Copies of the weights a GEMV case rotates over, each call the next. */
struct gemv_arg {
    struct dy_gemm_desc d;
    dy_buf b[MAX_COPIES], scale[MAX_COPIES], zero[MAX_COPIES];
    int copies, next;
};

static int do_gemv(dy_ctx *ctx, void *arg)
{
    struct gemv_arg *g = arg;
    int i = g->next++ % g->copies;
    g->d.b = g->b[i];
    g->d.bq.scale = g->scale[i];
    g->d.bq.zero = g->zero[i];
    return dy_gemm(ctx, &g->d);
}

static void free_gemv(dy_ctx *ctx, struct gemv_arg *g)
{
    dy_buf_free(ctx, &g->d.a);
    dy_buf_free(ctx, &g->d.c);
    for (int i = 0; i < MAX_COPIES; i++) {
        dy_buf_free(ctx, &g->b[i]);
        dy_buf_free(ctx, &g->scale[i]);
        dy_buf_free(ctx, &g->zero[i]);
    }
}

#define INT4_GROUP 128

/* C[m,n] = A[m,k] . B[n,k]^T with random A and B (int4: symmetric, groups
 * of INT4_GROUP); false when it cannot be set up. *bytes: B's with its
 * scales. */
static bool setup_gemv(const struct ceilings *cl, struct gemv_arg *g, int m, int n, int k,
                       enum dy_dtype bt, double *bytes)
{
    dy_ctx *ctx = cl->ctx;
    memset(g, 0, sizeof *g);
    g->d = (struct dy_gemm_desc){ .m = m, .n = n, .k = k, .lda = k, .ldb = k, .ldc = n,
                                  .a_dtype = DY_F32, .b_dtype = bt, .c_dtype = DY_F32,
                                  .bq = { .group = INT4_GROUP, .bias_dtype = DY_F32 } };
    size_t b_bytes = dy_dtype_bytes(bt, (size_t)n * k);
    size_t scales = dy_dtype_quantized(bt) ? dy_quant_scales(bt, n, k, INT4_GROUP) : 0;
    *bytes = (double)(b_bytes + scales * sizeof(float));
    g->copies = (int)((2 * cl->cache_bytes + b_bytes - 1) / b_bytes);
    g->copies = g->copies < 1 ? 1 : g->copies > MAX_COPIES ? MAX_COPIES : g->copies;
    if (dy_buf_alloc(ctx, (size_t)m * k * 4, &g->d.a) != DY_OK ||
        dy_buf_alloc(ctx, (size_t)m * n * 4, &g->d.c) != DY_OK ||
        !fill(ctx, g->d.a, (size_t)m * k, DY_F32, 1, 1.0f))
        return false;
    uint8_t *host = NULL;
    float *host_scales = NULL;
    if (scales) {
        host = malloc(b_bytes);
        host_scales = malloc(scales * sizeof(float));
        if (!host || !host_scales) {
            free(host);
            free(host_scales);
            return false;
        }
        random_bytes(host, b_bytes, 2);
        for (size_t i = 0; i < scales; i++)
            host_scales[i] = 1.0f / 64;
    }
    bool ok = true;
    for (int i = 0; ok && i < g->copies; i++) {
        ok = dy_buf_alloc(ctx, b_bytes, &g->b[i]) == DY_OK;
        if (ok && !scales)
            ok = fill(ctx, g->b[i], (size_t)n * k, bt, 2 + (uint64_t)i, 0.05f);
        else if (ok)
            ok = dy_buf_write(ctx, g->b[i], host, b_bytes) == DY_OK &&
                 dy_buf_alloc(ctx, scales * sizeof(float), &g->scale[i]) == DY_OK &&
                 dy_buf_write(ctx, g->scale[i], host_scales, scales * sizeof(float)) == DY_OK;
    }
    free(host);
    free(host_scales);
    return ok;
}

/* Decode GEMVs of Llama-3.2-1B: qkv, o, gate + up, down, LM head. */
static const int gemv_shapes[][2] = {
    { 3072, 2048 }, { 2048, 2048 }, { 16384, 2048 }, { 2048, 8192 }, { 128256, 2048 },
};

/* An environment variable's value for a heading ("" when unset). */
static const char *env_or_empty(const char *name)
{
    const char *v = getenv(name);
    return v ? v : "";
}

static void bench_gemv(const struct ceilings *cl, bool quantized)
{
    static const struct { enum dy_dtype dtype; int m; } dense[] = {
        { DY_BF16, 1 }, { DY_F16, 1 }, { DY_BF16, 4 }, { DY_BF16, 8 },
    }, quant[] = {
        { DY_BF16, 1 }, { DY_FP8, 1 }, { DY_I8, 1 }, { DY_I4, 1 },
    };
    printf("\n%s GEMV (weights read once; GB/s of weights and scales; DYNO_OCL_GEMV=%s, "
           "DYNO_OCL_OPS=%s)\n",
           quantized ? "Quantized" : "Decode", env_or_empty("DYNO_OCL_GEMV"),
           env_or_empty("DYNO_OCL_OPS"));
    print_header("weights, m, n x k", cl->host_ctx);
    for (size_t t = 0; t < 4; t++) {
        enum dy_dtype wt = quantized ? quant[t].dtype : dense[t].dtype;
        int m = quantized ? quant[t].m : dense[t].m;
        for (size_t s = 0; s < sizeof gemv_shapes / sizeof gemv_shapes[0]; s++) {
            int n = gemv_shapes[s][0], k = gemv_shapes[s][1];
            struct gemv_arg g;
            double bytes;
            char what[64];
            struct figure f = { 0 };
            if (setup_gemv(cl, &g, m, n, k, wt, &bytes))
                f = measure(cl, do_gemv, &g, bytes);
            else
                fprintf(stderr, "opencl_bench: %s\n", dy_ctx_error(cl->ctx));
            free_gemv(cl->ctx, &g);
            snprintf(what, sizeof what, "%s, %d, %d x %d", dy_dtype_name(wt), m, n, k);
            print_figure(what, f, cl->host_ctx);
        }
    }
}

static int do_decode(dy_ctx *ctx, void *arg)
{
    return dy_attention_decode(ctx, arg);
}

/* Paged decode attention with Llama-3-8B's heads (32 query, 8 KV, 128
 * wide), every sequence `len` long, beside the ceilings. */
static struct figure time_decode(const struct ceilings *cl, int batch, int len,
                                 enum dy_dtype cache_dtype)
{
    const int heads = 32, kv_heads = 8, head_dim = 128, block = 16;
    dy_ctx *ctx = cl->ctx;
    int blocks_per_seq = (len + block - 1) / block, blocks = batch * blocks_per_seq;
    size_t cache_bytes = (size_t)blocks * block * kv_heads * head_dim * dy_dtype_size(cache_dtype);
    struct dy_attention_decode_desc d = {
        .q_stride = heads * head_dim, .out_stride = heads * head_dim, .batch = batch,
        .heads = heads, .kv_heads = kv_heads, .head_dim = head_dim, .block_size = block,
        .max_blocks_per_seq = blocks_per_seq, .max_context = len, .scale = 0.088f,
        .dtype = DY_F32, .cache_dtype = cache_dtype,
    };
    int32_t *table = malloc(sizeof(int32_t) * (size_t)blocks);
    int32_t *lens = malloc(sizeof(int32_t) * (size_t)batch);
    struct figure f = { 0 };
    dy_buf *bufs[] = { &d.q, &d.out, &d.k_cache, &d.v_cache, &d.block_table, &d.context_lens };
    size_t sizes[] = { (size_t)batch * heads * head_dim * 4, (size_t)batch * heads * head_dim * 4,
                       cache_bytes, cache_bytes, (size_t)blocks * 4, (size_t)batch * 4 };
    if (!table || !lens)
        goto done;
    for (int i = 0; i < blocks; i++)
        table[i] = i;
    for (int b = 0; b < batch; b++)
        lens[b] = len;
    for (size_t i = 0; i < 6; i++)
        if (dy_buf_alloc(ctx, sizes[i], bufs[i]) != DY_OK ||
            dy_buf_fill(ctx, *bufs[i], 0, sizes[i]) != DY_OK)
            goto done;
    if (dy_buf_write(ctx, d.block_table, table, sizes[4]) == DY_OK &&
        dy_buf_write(ctx, d.context_lens, lens, sizes[5]) == DY_OK)
        f = measure(cl, do_decode, &d, 2.0 * (double)cache_bytes);
done:
    if (!f.ns)
        fprintf(stderr, "opencl_bench: %s\n", dy_ctx_error(ctx));
    for (size_t i = 0; i < 6; i++)
        dy_buf_free(ctx, bufs[i]);
    free(table);
    free(lens);
    return f;
}

static void bench_attention(const struct ceilings *cl)
{
    static const int shapes[][2] = { { 1, 4096 }, { 1, 32768 }, { 16, 4096 } };
    printf("\nDecode attention (32 / 8 heads of 128; GB/s of K and V read; batch 1 x 4096 "
           "is 16 MiB of KV, cache-sized; DYNO_OCL_OPS=%s)\n",
           env_or_empty("DYNO_OCL_OPS"));
    print_header("cache, batch x context", cl->host_ctx);
    for (int t = DY_F16; t <= DY_BF16; t++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            char what[64];
            snprintf(what, sizeof what, "%s, %d x %d", dy_dtype_name((enum dy_dtype)t),
                     shapes[s][0], shapes[s][1]);
            print_figure(what, time_decode(cl, shapes[s][0], shapes[s][1], (enum dy_dtype)t),
                         cl->host_ctx);
        }
}

/* The small ops of a Llama-3.2-1B layer over `tokens` rows of f32
 * activations (f16 KV cache). */
struct small_arg {
    struct dy_norm_desc norm;
    struct dy_eltwise_desc silu, add;
    struct dy_rope_desc rope;
    struct dy_kv_append_desc kv;
    dy_buf bufs[8];
};

static int do_norm(dy_ctx *ctx, void *arg) { return dy_norm(ctx, &((struct small_arg *)arg)->norm); }
static int do_silu(dy_ctx *ctx, void *arg) { return dy_eltwise(ctx, &((struct small_arg *)arg)->silu); }
static int do_add(dy_ctx *ctx, void *arg) { return dy_eltwise(ctx, &((struct small_arg *)arg)->add); }
static int do_rope(dy_ctx *ctx, void *arg) { return dy_rope(ctx, &((struct small_arg *)arg)->rope); }
static int do_kv(dy_ctx *ctx, void *arg) { return dy_kv_append(ctx, &((struct small_arg *)arg)->kv); }

enum { HIDDEN = 2048, FFN = 8192, HEADS = 32, KV_HEADS = 8, HEAD_DIM = 64 };

static bool setup_small(dy_ctx *ctx, struct small_arg *s, int tokens)
{
    /* x, y and out: [tokens, FFN] f32 (the norm, add and RoPE use less of
     * each row); weight [HIDDEN]; positions (the slots too); inv_freq;
     * the K and V caches */
    size_t act = (size_t)tokens * FFN;
    size_t sizes[8] = { act * 4, act * 4, act * 4, HIDDEN * 4, (size_t)tokens * 4,
                        HEAD_DIM / 2 * 4, (size_t)tokens * KV_HEADS * HEAD_DIM * 2,
                        (size_t)tokens * KV_HEADS * HEAD_DIM * 2 };
    memset(s, 0, sizeof *s);
    for (int i = 0; i < 8; i++)
        if (dy_buf_alloc(ctx, sizes[i], &s->bufs[i]) != DY_OK ||
            dy_buf_fill(ctx, s->bufs[i], 0, sizes[i]) != DY_OK)
            return false;
    int32_t *ids = malloc((size_t)tokens * 4);
    float *inv_freq = malloc(HEAD_DIM / 2 * 4);
    if (!ids || !inv_freq) {
        free(ids);
        free(inv_freq);
        return false;
    }
    for (int t = 0; t < tokens; t++)
        ids[t] = t;
    for (int i = 0; i < HEAD_DIM / 2; i++)
        inv_freq[i] = 1.0f / (float)(1 << (i % 16));
    bool ok = dy_buf_write(ctx, s->bufs[4], ids, (size_t)tokens * 4) == DY_OK &&
              dy_buf_write(ctx, s->bufs[5], inv_freq, HEAD_DIM / 2 * 4) == DY_OK &&
              fill(ctx, s->bufs[0], act, DY_F32, 5, 1.0f) && fill(ctx, s->bufs[1], act, DY_F32, 6, 1.0f) &&
              fill(ctx, s->bufs[3], HIDDEN, DY_F32, 7, 1.0f);
    free(ids);
    free(inv_freq);
    dy_buf x = s->bufs[0], y = s->bufs[1], out = s->bufs[2];
    s->norm = (struct dy_norm_desc){ .kind = DY_NORM_RMS, .x = x, .weight = s->bufs[3], .out = out,
                                     .rows = tokens, .dim = HIDDEN, .x_stride = HIDDEN,
                                     .out_stride = HIDDEN, .eps = 1e-5f, .dtype = DY_F32,
                                     .weight_dtype = DY_F32, .out_dtype = DY_F32 };
    s->silu = (struct dy_eltwise_desc){ .op = DY_ELT_SILU_MUL, .a = x, .b = y, .out = out,
                                        .rows = tokens, .cols = FFN, .a_stride = FFN,
                                        .b_stride = FFN, .out_stride = FFN, .dtype = DY_F32 };
    s->add = s->silu;
    s->add.op = DY_ELT_ADD;
    s->add.cols = s->add.a_stride = s->add.b_stride = s->add.out_stride = HIDDEN;
    s->rope = (struct dy_rope_desc){ .x = out, .positions = s->bufs[4], .inv_freq = s->bufs[5],
                                     .tokens = tokens, .heads = HEADS, .head_dim = HEAD_DIM,
                                     .row_stride = HEADS * HEAD_DIM, .dtype = DY_F32 };
    s->kv = (struct dy_kv_append_desc){ .k = x, .v = y, .src_stride = KV_HEADS * HEAD_DIM,
                                        .slots = s->bufs[4], .k_cache = s->bufs[6],
                                        .v_cache = s->bufs[7], .tokens = tokens,
                                        .kv_heads = KV_HEADS, .head_dim = HEAD_DIM,
                                        .src_dtype = DY_F32, .cache_dtype = DY_F16 };
    return ok;
}

static void bench_small(const struct ceilings *cl)
{
    /* large enough that every op's bytes pass the cache */
    const int tokens = 4096;
    struct small_arg big, one;
    static const struct {
        const char *name;
        op_fn op;
        /* bytes read + written per token (f32 activations, f16 cache) */
        double bytes;
    } ops[] = {
        { "RMSNorm 2048", do_norm, 2.0 * HIDDEN * 4 },
        { "SiLU-mul 8192", do_silu, 3.0 * FFN * 4 },
        { "add 2048", do_add, 3.0 * HIDDEN * 4 },
        { "RoPE 32 x 64 (in place)", do_rope, 2.0 * HEADS * HEAD_DIM * 4 },
        { "KV append 8 x 64, f32 -> f16", do_kv, 2.0 * KV_HEADS * HEAD_DIM * (4 + 2) },
    };
    bool ok = setup_small(cl->ctx, &big, tokens) && setup_small(cl->ctx, &one, 1);
    printf("\nSmall ops, f32 activations: %d tokens (GB/s of bytes read + written), and "
           "the time of one token; DYNO_OCL_OPS=%s\n",
           tokens, env_or_empty("DYNO_OCL_OPS"));
    printf("\n| op | time us | GB/s | of copy |%s one token us |\n|---|--:|--:|--:|%s--:|\n",
           cl->host_ctx ? " of host copy |" : "", cl->host_ctx ? "--:|" : "");
    for (size_t i = 0; ok && i < sizeof ops / sizeof ops[0]; i++) {
        struct figure f = measure(cl, ops[i].op, &big, ops[i].bytes * tokens);
        struct timed t = { cl->ctx, ops[i].op, &one };
        uint64_t one_ns = 0;
        time_rounds(&t, 1, &one_ns);
        printf("| %s | %.1f | %.1f | %.2f |", ops[i].name, f.ns / 1e3, f.gbps, f.of_copy);
        if (cl->host_ctx)
            printf(" %.2f |", f.of_host);
        printf(" %.1f |\n", one_ns / 1e3);
    }
    if (!ok)
        fprintf(stderr, "opencl_bench: %s\n", dy_ctx_error(cl->ctx));
    for (int i = 0; i < 8; i++) {
        dy_buf_free(cl->ctx, &big.bufs[i]);
        dy_buf_free(cl->ctx, &one.bufs[i]);
    }
}

static int do_gemm(dy_ctx *ctx, void *arg)
{
    return dy_gemm(ctx, arg);
}

static void bench_gemm(dy_ctx *ctx)
{
    printf("\n| GEMM | weights | m | n | k | time ms | TFLOP/s |\n|---|---|--:|--:|--:|--:|--:|\n");
    /* the larger shape only where the smaller one is quick (not on CPUs) */
    static const int shapes[][3] = { { 512, 4096, 4096 }, { 2048, 4096, 4096 } };
    uint64_t slowest = 0;
    for (size_t s = 0; s < 2 && slowest < 100000000ull; s++)
        for (size_t t = 0; t < 2; t++) {
            enum dy_dtype bt = t ? DY_BF16 : DY_F32;
            int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
            struct dy_gemm_desc d = { .m = m, .n = n, .k = k, .lda = k, .ldb = k, .ldc = n,
                                      .a_dtype = DY_F32, .b_dtype = bt, .c_dtype = DY_F32 };
            uint64_t ns = 0;
            struct timed op = { ctx, do_gemm, &d };
            if (dy_buf_alloc(ctx, (size_t)m * k * 4, &d.a) == DY_OK &&
                dy_buf_alloc(ctx, (size_t)n * k * dy_dtype_size(bt), &d.b) == DY_OK &&
                dy_buf_alloc(ctx, (size_t)m * n * 4, &d.c) == DY_OK &&
                fill(ctx, d.a, (size_t)m * k, DY_F32, 1, 1.0f) &&
                fill(ctx, d.b, (size_t)n * k, bt, 2, 0.05f))
                time_rounds(&op, 1, &ns);
            else
                fprintf(stderr, "opencl_bench: %s\n", dy_ctx_error(ctx));
            dy_buf_free(ctx, &d.a);
            dy_buf_free(ctx, &d.b);
            dy_buf_free(ctx, &d.c);
            slowest = ns > slowest ? ns : slowest;
            printf("| | %s | %d | %d | %d | %.2f | %.2f |\n", dy_dtype_name(bt), m, n, k, ns / 1e6,
                   ns ? 2.0 * m * n * (double)k / (double)ns / 1e3 : 0.0);
        }
}

static void bench_device(const struct dy_backend *be, int device, int argc, char **argv)
{
    struct dy_device_info info;
    struct ceilings cl = { 0 };
    char why[512];
    if (be->device_info(device, &info) != DY_OK || dy_ctx_create(be, device, &cl.ctx) != DY_OK) {
        printf("device %d: cannot open\n", device);
        return;
    }
    cl.cache_bytes = info.l2_bytes;
    printf("\n## opencl:%d %s (%s), %d compute units, %.0f MiB cache; each figure a call of %d "
           "back to back\n\n",
           device, info.name, info.driver_version, info.compute_units, info.l2_bytes / 1048576.0,
           chain);
    if (!copy_bufs(cl.ctx, &cl.copy)) {
        printf("cannot allocate the copy buffers: %s\n", dy_ctx_error(cl.ctx));
        goto done;
    }
    const struct dy_backend *cpu = NULL;
    if ((info.caps & DY_CAP_UNIFIED) && (cpu = dy_registry_find("cpu", why, sizeof why)) &&
        (dy_ctx_create(cpu, 0, &cl.host_ctx) != DY_OK || !copy_bufs(cl.host_ctx, &cl.host_copy))) {
        printf("no host ceiling: %s\n", cl.host_ctx ? dy_ctx_error(cl.host_ctx) : "cpu backend");
        dy_ctx_destroy(cl.host_ctx);
        cl.host_ctx = NULL;
    }
    printf("Ceilings, measured in every round beside the op: `copy` is buf_copy through "
           "OpenCL (read + written)%s.\n",
           cl.host_ctx ? "; `host copy` the cpu backend's buf_copy on every core" : "");
    if (wanted(argc, argv, "gemv"))
        bench_gemv(&cl, false);
    if (wanted(argc, argv, "qgemv"))
        bench_gemv(&cl, true);
    if (wanted(argc, argv, "attention"))
        bench_attention(&cl);
    if (wanted(argc, argv, "small"))
        bench_small(&cl);
    if (wanted(argc, argv, "gemm"))
        bench_gemm(cl.ctx);
done:
    dy_ctx_destroy(cl.host_ctx);
    dy_ctx_destroy(cl.ctx);
}

int main(int argc, char **argv)
{
    char why[512];
    const struct dy_backend *be = dy_registry_find("opencl", why, sizeof why);
    int count = 0;
    if (argc > 2 && strcmp(argv[1], "--chain") == 0) {
        chain = atoi(argv[2]);
        if (chain < 1 || chain > 1000) {
            fprintf(stderr, "opencl_bench: --chain takes 1 to 1000 calls, not '%s'\n", argv[2]);
            return 2;
        }
        argv[2] = argv[0];
        argv += 2;
        argc -= 2;
    }
    if (!be) {
        fprintf(stderr, "opencl_bench: %s\n", why);
        return 1;
    }
    if (be->device_count(&count) != DY_OK || count == 0) {
        fprintf(stderr, "opencl_bench: no OpenCL device\n");
        return 1;
    }
    for (int device = 0; device < count; device++)
        bench_device(be, device, argc, argv);
    return 0;
}
