/* Decode attention per KV-cache dtype (bf16, fp8, int8) on the CUDA backend,
 * through the dy_* API: Llama-3.1-8B's attention shape (32 query heads,
 * 8 KV heads, dim 128, blocks of 16) at batch 64 x context 2048 and batch
 * 1 x context 8192 (KV_BENCH_SHAPES="BxC,..." picks others). Each figure
 * is the per-call time of LAYERS calls back to back over LAYERS distinct
 * caches (as a decode step walks its layers; together they are far larger
 * than L2), replayed as one graph as a decode step runs them, median of REPS, as GB/s of cache
 * read (K, V and int8's scales) beside the copy bandwidth measured in the
 * same run (buf_copy, bytes read + written), and as time against bf16.
 * Then kv_block_scores over every block of one layer. First, the decode
 * paths the conformance suite does not reach with fp8/int8 (the generic
 * kernel: a head dim of 96, a cache not aligned to 16 bytes) against
 * cpu-ref, bf16 beside them.
 *
 * Built by bench/cuda/pack_bench.sh kv_bench against a build tree's static libraries;
 * on the device machine bench/cuda/kv_check.sh runs it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/backend.h"

#define REPS 9
#define HEADS 32
#define KV_HEADS 8
#define HEAD_DIM 128
#define BLOCK 16
#define MAX_LAYERS 32
#define BENCH_SEED 11
#include "bench/cuda/bench_util.h"

/* LAYERS caches of one dtype and the decode descriptors over them */
struct kv_set {
    int layers;
    struct dy_attention_decode_desc dec[MAX_LAYERS];
    struct dy_kv_block_scores_desc scores;
    dy_buf k[MAX_LAYERS], v[MAX_LAYERS], ks[MAX_LAYERS], vs[MAX_LAYERS];
};

static void do_decode(void *arg, int i)
{
    struct kv_set *s = arg;
    CHECK(dy_attention_decode(ctx, &s->dec[i]));
}

static void do_scores(void *arg, int i)
{
    struct kv_set *s = arg;
    CHECK(dy_kv_block_scores(ctx, &s->scores));
}

static const enum dy_dtype dtypes[] = { DY_BF16, DY_FP8, DY_I8 };
static const char *dtype_names[] = { "bf16", "fp8", "int8" };

static float *host_random(size_t n, float scale, uint64_t *state)
{
    float *p = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        *state = *state * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = ((float)((*state >> 40) & 0xffffff) / 16777216.0f * 2.0f - 1.0f) * scale;
    }
    return p;
}

/* One decode on `on` over caches filled by kv_append from the same f32 rows;
 * the cache starts `misalign` bytes into its allocation. Returns the output. */
static float *decode_once(dy_ctx *on, enum dy_dtype ct, int batch, int context, int hd, int misalign,
                          const float *q, const float *rows)
{
    dy_ctx *saved = ctx;
    ctx = on;
    int blocks_per_seq = (context + BLOCK - 1) / BLOCK, slots = blocks_per_seq * BLOCK * batch;
    size_t row = (size_t)KV_HEADS * hd, q_n = (size_t)batch * HEADS * hd, tokens = (size_t)batch * context;
    int32_t *table = malloc(sizeof(int32_t) * blocks_per_seq * batch), *slot_of = malloc(sizeof(int32_t) * tokens);
    int32_t *lens = malloc(sizeof(int32_t) * batch);
    for (int b = 0; b < batch; b++) {
        lens[b] = context;
        for (int i = 0; i < blocks_per_seq; i++)
            table[b * blocks_per_seq + i] = (i * batch + b * 7) % (blocks_per_seq * batch);
        for (int j = 0; j < context; j++)
            slot_of[(size_t)b * context + j] = table[b * blocks_per_seq + j / BLOCK] * BLOCK + j % BLOCK;
    }
    size_t cb = (size_t)slots * row * dy_dtype_size(ct) + misalign, sb = (size_t)slots * KV_HEADS * 4;
    dy_buf kc = alloc(cb), vc = alloc(cb), ks = { 0 }, vs = { 0 };
    if (ct == DY_I8) {
        ks = alloc(sb);
        vs = alloc(sb);
    }
    dy_buf src = alloc(2 * tokens * row * 4), slot_b = alloc(tokens * 4), qb = alloc(q_n * 4), out = alloc(q_n * 4);
    dy_buf table_b = alloc(sizeof(int32_t) * blocks_per_seq * batch), lens_b = alloc(sizeof(int32_t) * batch);
    CHECK(dy_buf_write(ctx, src, rows, 2 * tokens * row * 4));
    CHECK(dy_buf_write(ctx, slot_b, slot_of, tokens * 4));
    CHECK(dy_buf_write(ctx, qb, q, q_n * 4));
    CHECK(dy_buf_write(ctx, table_b, table, sizeof(int32_t) * blocks_per_seq * batch));
    CHECK(dy_buf_write(ctx, lens_b, lens, sizeof(int32_t) * batch));
    struct dy_kv_append_desc ka = {
        .k = src, .v = dy_buf_at(src, tokens * row * 4), .src_stride = (int)row, .slots = slot_b,
        .k_cache = dy_buf_at(kc, misalign), .v_cache = dy_buf_at(vc, misalign), .tokens = (int)tokens,
        .kv_heads = KV_HEADS, .head_dim = hd, .src_dtype = DY_F32, .cache_dtype = ct, .k_scale = ks, .v_scale = vs,
    };
    CHECK(dy_kv_append(ctx, &ka));
    struct dy_attention_decode_desc d = {
        .q = qb, .out = out, .q_stride = HEADS * hd, .out_stride = HEADS * hd, .k_cache = ka.k_cache,
        .v_cache = ka.v_cache, .block_table = table_b, .context_lens = lens_b, .batch = batch, .heads = HEADS,
        .kv_heads = KV_HEADS, .head_dim = hd, .block_size = BLOCK, .max_blocks_per_seq = blocks_per_seq,
        .max_context = context, .scale = 1.0f / sqrtf((float)hd), .dtype = DY_F32, .cache_dtype = ct,
        .k_scale = ks, .v_scale = vs,
    };
    CHECK(dy_attention_decode(ctx, &d));
    float *host = malloc(q_n * 4);
    CHECK(dy_buf_read(ctx, out, host, q_n * 4));
    dy_buf *bufs[] = { &kc, &vc, &ks, &vs, &src, &slot_b, &qb, &out, &table_b, &lens_b };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        dy_buf_free(ctx, bufs[i]);
    free(table);
    free(slot_of);
    free(lens);
    ctx = saved;
    return host;
}

static void check_generic_paths(void)
{
    char why[256];
    const struct dy_backend *ref_be = dy_registry_find("cpu-ref", why, sizeof why);
    dy_ctx *ref;
    if (!ref_be || dy_ctx_create(ref_be, 0, &ref) != DY_OK) {
        printf("no cpu-ref: %s\n", why);
        return;
    }
    static const struct { int hd, misalign; } cases[] = { { 96, 0 }, { 128, 4 }, { 64, 8 } };
    printf("| check against cpu-ref | cache | head dim | misaligned by | max rel err |\n|---|---|--:|--:|--:|\n");
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int t = 0; t < 3; t++) {
            int batch = 2, context = 77, hd = cases[c].hd;
            uint64_t state = 42 + c;
            size_t row = (size_t)KV_HEADS * hd, q_n = (size_t)batch * HEADS * hd;
            float *q = host_random(q_n, 1.0f, &state), *rows = host_random(2 * (size_t)batch * context * row, 2.0f, &state);
            float *want = decode_once(ref, dtypes[t], batch, context, hd, 0, q, rows);
            float *got = decode_once(ctx, dtypes[t], batch, context, hd, cases[c].misalign, q, rows);
            double max_ref = 1e-6, max_err = 0.0;
            for (size_t i = 0; i < q_n; i++) {
                max_ref = fmax(max_ref, fabs(want[i]));
                double e = fabs((double)want[i] - got[i]);
                max_err = isnan(e) ? INFINITY : fmax(max_err, e);
            }
            printf("| %s | %s | %d | %d | %.2g |\n", max_err / max_ref <= 1e-5 ? "ok" : "FAILED", dtype_names[t], hd,
                   cases[c].misalign, max_err / max_ref);
            free(q);
            free(rows);
            free(want);
            free(got);
        }
    dy_ctx_destroy(ref);
}
static void bench_shape(int batch, int context, double copy)
{
    int blocks_per_seq = (context + BLOCK - 1) / BLOCK, num_blocks = blocks_per_seq * batch;
    size_t slots = (size_t)num_blocks * BLOCK, cache_n = slots * KV_HEADS * HEAD_DIM;
    /* enough layers that bf16's caches together pass 1 GB */
    int layers = (int)ceil(1e9 / (2.0 * cache_n * 2));
    layers = layers < 2 ? 2 : layers > MAX_LAYERS ? MAX_LAYERS : layers;
    int32_t *table = malloc(sizeof(int32_t) * num_blocks), *lens = malloc(sizeof(int32_t) * batch);
    /* blocks handed out step by step across the batch, as prefill does */
    for (int b = 0; b < batch; b++) {
        lens[b] = context;
        for (int i = 0; i < blocks_per_seq; i++)
            table[(size_t)b * blocks_per_seq + i] = i * batch + b;
    }
    dy_buf table_b = alloc(sizeof(int32_t) * num_blocks), lens_b = alloc(sizeof(int32_t) * batch);
    dy_buf block_ids = alloc(sizeof(int32_t) * num_blocks), scores = alloc(sizeof(float) * num_blocks);
    CHECK(dy_buf_write(ctx, table_b, table, sizeof(int32_t) * num_blocks));
    CHECK(dy_buf_write(ctx, lens_b, lens, sizeof(int32_t) * batch));
    for (int i = 0; i < num_blocks; i++)
        table[i] = i;
    CHECK(dy_buf_write(ctx, block_ids, table, sizeof(int32_t) * num_blocks));
    size_t q_n = (size_t)batch * HEADS * HEAD_DIM;
    dy_buf q = alloc(q_n * 4), out = alloc(q_n * 4);
    fill(q, q_n, DY_F32, 1, 1.0f, 0.0f);
    float *host_out = malloc(q_n * 4);
    printf("\n### batch %d x context %d (%d layers of caches rotated)\n\n", batch, context, layers);
    printf("| cache | MB per layer | decode us/layer | GB/s | of copy | vs bf16 time | kv_block_scores us | GB/s |"
           "\n|---|--:|--:|--:|--:|--:|--:|--:|\n");
    double bf16_time = 0.0;
    for (int t = 0; t < 3; t++) {
        enum dy_dtype ct = dtypes[t];
        bool int8 = ct == DY_I8;
        struct kv_set *s = calloc(1, sizeof *s);
        s->layers = layers;
        size_t cb = cache_n * dy_dtype_size(ct), sb = slots * KV_HEADS * sizeof(float);
        for (int l = 0; l < layers; l++) {
            s->k[l] = alloc(cb);
            s->v[l] = alloc(cb);
            float range = int8 ? 127.0f : ct == DY_FP8 ? 2.0f : 1.0f;
            fill(s->k[l], cache_n, ct, 100 + 4 * l, range, 0.0f);
            fill(s->v[l], cache_n, ct, 101 + 4 * l, range, 0.0f);
            if (int8) {
                s->ks[l] = alloc(sb);
                s->vs[l] = alloc(sb);
                fill(s->ks[l], sb / 4, DY_F32, 102 + 4 * l, 0.002f, 0.008f);
                fill(s->vs[l], sb / 4, DY_F32, 103 + 4 * l, 0.002f, 0.008f);
            }
            s->dec[l] = (struct dy_attention_decode_desc){
                .q = q, .out = out, .q_stride = HEADS * HEAD_DIM, .out_stride = HEADS * HEAD_DIM,
                .k_cache = s->k[l], .v_cache = s->v[l], .block_table = table_b, .context_lens = lens_b,
                .batch = batch, .heads = HEADS, .kv_heads = KV_HEADS, .head_dim = HEAD_DIM,
                .block_size = BLOCK, .max_blocks_per_seq = blocks_per_seq, .max_context = context,
                .scale = 1.0f / sqrtf((float)HEAD_DIM), .dtype = DY_F32, .cache_dtype = ct,
                .k_scale = s->ks[l], .v_scale = s->vs[l],
            };
        }
        s->scores = (struct dy_kv_block_scores_desc){
            .k_cache = s->k[0], .v_cache = s->v[0], .k_scale = s->ks[0], .v_scale = s->vs[0],
            .blocks = block_ids, .scores = scores, .count = num_blocks, .block_size = BLOCK,
            .kv_heads = KV_HEADS, .head_dim = HEAD_DIM, .kind = DY_KV_SCORE_VK_RATIO, .cache_dtype = ct,
        };
        /* replayed as a graph, as a decode step runs: launch by launch,
         * the host's launches bound the small shapes */
        double time = time_calls_graph(do_decode, s, layers);
        if (isnan(time))
            time = time_calls(do_decode, s, layers);
        CHECK(dy_buf_read(ctx, out, host_out, q_n * 4));
        size_t bad = 0;
        for (size_t i = 0; i < q_n; i++)
            bad += !isfinite(host_out[i]);
        double bytes = 2.0 * (cb + (int8 ? sb : 0)) * ((double)context * batch / slots);
        double score_time = time_calls(do_scores, s, 4);
        double score_bytes = 2.0 * (cb + (int8 ? sb : 0));
        if (t == 0)
            bf16_time = time;
        printf("| %s | %.0f | %.1f | %.0f | %.2f | %.2f | %.1f | %.0f |%s\n", dtype_names[t], bytes / 1e6,
               time * 1e6, bytes / time * 1e-9, bytes / time * 1e-9 / copy, time / bf16_time, score_time * 1e6,
               score_bytes / score_time * 1e-9, bad ? " NON-FINITE OUTPUT" : "");
        for (int l = 0; l < layers; l++) {
            dy_buf_free(ctx, &s->k[l]);
            dy_buf_free(ctx, &s->v[l]);
            dy_buf_free(ctx, &s->ks[l]);
            dy_buf_free(ctx, &s->vs[l]);
        }
        free(s);
    }
    dy_buf_free(ctx, &q);
    dy_buf_free(ctx, &out);
    dy_buf_free(ctx, &table_b);
    dy_buf_free(ctx, &lens_b);
    dy_buf_free(ctx, &block_ids);
    dy_buf_free(ctx, &scores);
    free(host_out);
    free(table);
    free(lens);
}

int main(void)
{
    if (!open_cuda("kv_bench"))
        return 77;
    double copy = copy_gbps();
    check_generic_paths();
    printf("\ncopy %.0f GB/s (read + written)\n", copy);
    /* KV_BENCH_SHAPES="BxC,BxC..." picks the shapes */
    const char *shapes = getenv("KV_BENCH_SHAPES");
    if (!shapes)
        shapes = "64x2048,1x8192,16x4096";
    for (const char *p = shapes; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL) {
        int batch, context;
        if (sscanf(p, "%dx%d", &batch, &context) == 2 && batch > 0 && context > 0)
            bench_shape(batch, context, copy);
    }
    dy_ctx_destroy(ctx);
    return 0;
}
