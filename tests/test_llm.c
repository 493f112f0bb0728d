/* Workload correctness: the paged decode path against full prefills, block
 * sizes, batches, and cpu against cpu-ref on whole generations. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../workloads/llm.h"
#include "dy_test.h"

struct model {
    dy_ctx *ctx;
    struct dy_model_config cfg;
    struct dy_llm_weights w;
};

/* The preset the tests below load: tiny-llama, or an MoE preset shrunk to
 * test size with its architecture's features kept (shared expert, q/k
 * norms, renormalised routing). */
static const char *preset = "tiny-llama";

static void shrink_moe(struct dy_model_config *c)
{
    c->hidden = 128;
    c->heads = 4;
    c->kv_heads = c->kv_heads < c->heads ? 2 : 4; /* GQA stays GQA */
    c->head_dim = 32;
    c->layers = 2;
    c->vocab = 512;
    c->experts = 8;
    c->top_k = c->top_k < 3 ? c->top_k : 3;
    c->moe_ffn = 48;
    c->shared_ffn = c->shared_ffn ? 80 : 0;
}

static void open_model(struct model *m, const char *backend, enum dy_dtype wdtype, int layers)
{
    char path[1024], err[1024];
    DY_REQUIRE(dy_preset_path(preset, path, sizeof path) == DY_OK);
    DY_REQUIRE(dy_config_load(path, &m->cfg, err, sizeof err) == DY_OK);
    if (m->cfg.experts && m->cfg.hidden > 256)
        shrink_moe(&m->cfg);
    if (layers)
        m->cfg.layers = layers;
    const struct dy_backend *be = dy_registry_find(backend, NULL, 0);
    DY_REQUIRE(be != NULL);
    DY_REQUIRE(dy_ctx_create(be, 0, &m->ctx) == DY_OK);
    DY_REQUIRE(dy_llm_weights_random(m->ctx, &m->cfg, wdtype, 3, &m->w) == DY_OK);
}

static void close_model(struct model *m)
{
    dy_llm_weights_free(m->ctx, &m->w);
    dy_ctx_destroy(m->ctx);
}

static struct dy_llm *make_llm(struct model *m, enum dy_dtype kv, int block, int batch, int prompt,
                               int total)
{
    struct dy_llm_options o = { .weight_dtype = m->w.dtype, .kv_dtype = kv, .block_size = block,
                                .max_batch = batch, .max_prompt = prompt, .max_tokens = total };
    struct dy_llm *llm = NULL;
    DY_REQUIRE(dy_llm_create(m->ctx, &m->cfg, &m->w, &o, &llm) == DY_OK);
    return llm;
}

static double rel_err(const float *a, const float *b, size_t n)
{
    double max_ref = 1e-9, max_err = 0;
    for (size_t i = 0; i < n; i++) {
        max_ref = fmax(max_ref, fabs(a[i]));
        max_err = fmax(max_err, fabs(a[i] - b[i]));
    }
    return max_err / max_ref;
}

/* Decode-step logits equal the logits of a prefill of the extended sequence. */
static void decode_matches_prefill(const char *backend, int batch, int block)
{
    struct model m;
    open_model(&m, backend, DY_F32, 0);
    int prompt = 9, steps = 6, vocab = m.cfg.vocab;
    int32_t *seqs = malloc(sizeof(int32_t) * (size_t)batch * (prompt + steps));
    for (int b = 0; b < batch; b++)
        for (int t = 0; t < prompt; t++)
            seqs[(size_t)b * (prompt + steps) + t] = (t * 131 + b * 977 + 11) % vocab;
    float *logits = malloc(sizeof(float) * (size_t)batch * vocab);
    float *again = malloc(sizeof(float) * (size_t)batch * vocab);
    int32_t tokens[8], *flat = malloc(sizeof(int32_t) * (size_t)batch * (prompt + steps));
    struct dy_llm *llm = make_llm(&m, DY_F32, block, batch, prompt, prompt + steps + 1);
    struct dy_llm *full = make_llm(&m, DY_F32, block, batch, prompt + steps, prompt + steps + 1);
    for (int b = 0; b < batch; b++)
        memcpy(flat + (size_t)b * prompt, seqs + (size_t)b * (prompt + steps), sizeof(int32_t) * prompt);
    DY_REQUIRE(dy_llm_prefill(llm, flat, batch, prompt) == DY_OK);
    for (int s = 0; s < steps; s++) {
        DY_REQUIRE(dy_llm_read_tokens(llm, tokens) == DY_OK);
        for (int b = 0; b < batch; b++)
            seqs[(size_t)b * (prompt + steps) + prompt + s] = tokens[b];
        DY_REQUIRE(dy_llm_decode(llm) == DY_OK);
        DY_REQUIRE(dy_llm_read_logits(llm, logits) == DY_OK);
        /* the same sequences, prefilled whole up to and including token s */
        int len = prompt + s + 1;
        for (int b = 0; b < batch; b++)
            memcpy(flat + (size_t)b * len, seqs + (size_t)b * (prompt + steps), sizeof(int32_t) * len);
        DY_REQUIRE(dy_llm_prefill(full, flat, batch, len) == DY_OK);
        DY_REQUIRE(dy_llm_read_logits(full, again) == DY_OK);
        double e = rel_err(again, logits, (size_t)batch * vocab);
        if (!(e < 1e-4))
            printf("# %s batch %d block %d step %d: decode vs prefill logits rel err %.3g\n", backend,
                   batch, block, s, e);
        DY_CHECK(e < 1e-4);
    }
    dy_llm_destroy(llm);
    dy_llm_destroy(full);
    free(seqs);
    free(flat);
    free(logits);
    free(again);
    close_model(&m);
}

static void test_decode_matches_prefill_ref(void) { decode_matches_prefill("cpu-ref", 1, 16); }

/* The MoE models: the decode path against full prefills on cpu-ref (one
 * per architecture), and on cpu for the tiny preset. */
static void test_moe_decode_matches_prefill(void)
{
    static const char *const presets[] = { "tiny-moe", "mixtral-8x7b", "qwen1.5-moe-a2.7b",
                                           "olmoe-1b-7b", "qwen3-30b-a3b" };
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
        preset = presets[i];
        printf("# %s\n", preset);
        decode_matches_prefill("cpu-ref", 2, 16);
    }
    preset = "tiny-moe";
    decode_matches_prefill("cpu", 3, 4);
    preset = "tiny-llama";
}
static void test_decode_matches_prefill_cpu(void) { decode_matches_prefill("cpu", 3, 16); }
static void test_decode_matches_prefill_block4(void) { decode_matches_prefill("cpu", 2, 4); }

/* Greedy tokens of a whole generation. */
static void generate(const char *backend, enum dy_dtype wdtype, enum dy_dtype kv, int block,
                     int batch, int32_t *out, int steps, float *last_logits)
{
    struct model m;
    open_model(&m, backend, wdtype, 0);
    int prompt = 12;
    int32_t *p = malloc(sizeof(int32_t) * (size_t)batch * prompt), tokens[8];
    for (int i = 0; i < batch * prompt; i++)
        p[i] = (i * 7919 + 17) % m.cfg.vocab;
    struct dy_llm *llm = make_llm(&m, kv, block, batch, prompt, prompt + steps);
    DY_REQUIRE(dy_llm_prefill(llm, p, batch, prompt) == DY_OK);
    for (int s = 0; s < steps; s++) {
        if (s)
            DY_REQUIRE(dy_llm_decode(llm) == DY_OK);
        DY_REQUIRE(dy_llm_read_tokens(llm, tokens) == DY_OK);
        for (int b = 0; b < batch; b++)
            out[(size_t)b * steps + s] = tokens[b];
    }
    if (last_logits)
        DY_REQUIRE(dy_llm_read_logits(llm, last_logits) == DY_OK);
    dy_llm_destroy(llm);
    free(p);
    close_model(&m);
}

static void cpu_matches_ref(void)
{
    enum { STEPS = 12, BATCH = 2 };
    int32_t a[BATCH * STEPS], b[BATCH * STEPS];
    int vocab = 4096;
    float *la = malloc(sizeof(float) * BATCH * vocab), *lb = malloc(sizeof(float) * BATCH * vocab);
    generate("cpu-ref", DY_BF16, DY_F16, 16, BATCH, a, STEPS, la);
    generate("cpu", DY_BF16, DY_F16, 16, BATCH, b, STEPS, lb);
    DY_CHECK(memcmp(a, b, sizeof a) == 0);
    double e = rel_err(la, lb, (size_t)BATCH * vocab);
    printf("# %s: cpu vs cpu-ref final logits rel err %.3g\n", preset, e);
    DY_CHECK(e < 1e-3);
    free(la);
    free(lb);
}

static void test_cpu_matches_ref(void)
{
    cpu_matches_ref();
    preset = "tiny-moe";
    cpu_matches_ref();
    preset = "tiny-llama";
}

static void test_block_size_invariant(void)
{
    enum { STEPS = 10 };
    int32_t a[STEPS], b[STEPS], c[STEPS];
    generate("cpu", DY_F32, DY_F32, 16, 1, a, STEPS, NULL);
    generate("cpu", DY_F32, DY_F32, 1, 1, b, STEPS, NULL);
    generate("cpu", DY_F32, DY_F32, 64, 1, c, STEPS, NULL);
    DY_CHECK(memcmp(a, b, sizeof a) == 0);
    DY_CHECK(memcmp(a, c, sizeof a) == 0);
}

/* Each sequence of a batch generates what it generates alone. */
static void test_batch_invariant(void)
{
    enum { STEPS = 8 };
    int32_t batched[3 * STEPS], alone[STEPS];
    generate("cpu", DY_F32, DY_F32, 16, 3, batched, STEPS, NULL);
    generate("cpu", DY_F32, DY_F32, 16, 1, alone, STEPS, NULL);
    DY_CHECK(memcmp(batched, alone, sizeof alone) == 0);
}

/* A prefill in passes of fewer sequences computes what one pass does. */
static void test_chunked_prefill(void)
{
    struct model m;
    open_model(&m, "cpu-ref", DY_BF16, 2);
    enum { BATCH = 3, PROMPT = 10, STEPS = 3 };
    int32_t p[BATCH * PROMPT];
    for (int i = 0; i < BATCH * PROMPT; i++)
        p[i] = (i * 7919 + 17) % m.cfg.vocab;
    size_t n = (size_t)BATCH * m.cfg.vocab;
    float *whole = malloc(n * sizeof(float)), *parts = malloc(n * sizeof(float));
    for (int chunked = 0; chunked <= 1; chunked++) {
        struct dy_llm_options o = { .weight_dtype = m.w.dtype, .kv_dtype = DY_F32, .block_size = 4,
                                    .max_batch = BATCH, .max_prompt = PROMPT,
                                    .max_tokens = PROMPT + STEPS + 1, .prefill_seqs = chunked ? 1 : 0 };
        struct dy_llm *llm = NULL;
        DY_REQUIRE(dy_llm_create(m.ctx, &m.cfg, &m.w, &o, &llm) == DY_OK);
        DY_REQUIRE(dy_llm_prefill(llm, p, BATCH, PROMPT) == DY_OK);
        for (int s = 0; s < STEPS; s++)
            DY_REQUIRE(dy_llm_decode(llm) == DY_OK);
        DY_REQUIRE(dy_llm_read_logits(llm, chunked ? parts : whole) == DY_OK);
        dy_llm_destroy(llm);
    }
    DY_CHECK(memcmp(whole, parts, n * sizeof(float)) == 0);
    free(whole);
    free(parts);
    close_model(&m);
}

/* --layers keeps the weights of the layers that remain. */
static void test_truncation_keeps_weights(void)
{
    struct model full, cut;
    open_model(&full, "cpu", DY_BF16, 0);
    open_model(&cut, "cpu", DY_BF16, 2);
    size_t bytes = full.w.layers[1].qkv.h->bytes;
    void *a = malloc(bytes), *b = malloc(bytes);
    DY_REQUIRE(dy_buf_read(full.ctx, full.w.layers[1].qkv, a, bytes) == DY_OK);
    DY_REQUIRE(dy_buf_read(cut.ctx, cut.w.layers[1].qkv, b, bytes) == DY_OK);
    DY_CHECK(memcmp(a, b, bytes) == 0);
    DY_CHECK(cut.w.bytes < full.w.bytes);
    free(a);
    free(b);
    close_model(&full);
    close_model(&cut);
}

static void test_kv_cache_blocks(void)
{
    struct model m;
    open_model(&m, "cpu-ref", DY_F32, 1);
    struct dy_kv_cache kv;
    DY_REQUIRE(dy_kv_cache_create(m.ctx, &m.cfg, DY_F16, 16, 2, 40, &kv) == DY_OK);
    DY_CHECK(kv.max_blocks_per_seq == 3 && kv.num_blocks == 6);
    int32_t slots[48];
    DY_CHECK(dy_kv_cache_extend(&kv, 0, 17, slots) == DY_OK);
    DY_CHECK(slots[0] == 0 && slots[15] == 15 && slots[16] == 16); /* blocks 0 then 1 */
    DY_CHECK(dy_kv_cache_extend(&kv, 1, 1, slots) == DY_OK);
    DY_CHECK(slots[0] == 32); /* block 2 */
    DY_CHECK(kv.context_lens[0] == 17 && kv.context_lens[1] == 1);
    /* past the per-sequence room */
    DY_CHECK(dy_kv_cache_extend(&kv, 0, 40, slots) == DY_E_INVALID);
    dy_kv_cache_reset(&kv);
    DY_CHECK(kv.free_count == 6 && kv.context_lens[0] == 0);
    dy_kv_cache_free(m.ctx, &kv);
    close_model(&m);
}

DY_TESTS(DY_TEST(test_decode_matches_prefill_ref) DY_TEST(test_moe_decode_matches_prefill)
         DY_TEST(test_decode_matches_prefill_cpu)
         DY_TEST(test_decode_matches_prefill_block4) DY_TEST(test_cpu_matches_ref)
         DY_TEST(test_block_size_invariant) DY_TEST(test_batch_invariant)
         DY_TEST(test_truncation_keeps_weights) DY_TEST(test_kv_cache_blocks)
         DY_TEST(test_chunked_prefill))
