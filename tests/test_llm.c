/* Workload correctness: the paged decode path against full prefills, block
 * sizes, batches, and cpu against cpu-ref on whole generations; KV
 * eviction's prefill choice and per-layer budgets. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../workloads/llm_internal.h" /* the decoder's caches, read back */
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
    /* the prefill's activations are bf16 (bf16 weights): one rounding
     * step, 2^-8, bounds how far the backends may drift apart */
    DY_CHECK(e < 4e-3);
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

/* A prefill in passes of one sequence computes what one pass does: the
 * logits after a few steps are the same bits (cpu-ref; o's batch and
 * prompt, prefill_seqs set here). */
static void check_chunked_equals_whole(struct dy_llm_options o)
{
    struct model m;
    open_model(&m, "cpu-ref", DY_BF16, 2);
    enum { STEPS = 3 };
    int batch = o.max_batch, prompt = o.max_prompt;
    o.weight_dtype = m.w.dtype;
    o.max_tokens = prompt + STEPS + 1;
    int32_t *p = malloc((size_t)batch * prompt * sizeof *p);
    for (int i = 0; i < batch * prompt; i++)
        p[i] = (i * 7919 + 17) % m.cfg.vocab;
    size_t n = (size_t)batch * m.cfg.vocab;
    float *whole = malloc(n * sizeof(float)), *parts = malloc(n * sizeof(float));
    for (int chunked = 0; chunked <= 1; chunked++) {
        o.prefill_seqs = chunked ? 1 : 0;
        struct dy_llm *llm = NULL;
        DY_REQUIRE(dy_llm_create(m.ctx, &m.cfg, &m.w, &o, &llm) == DY_OK);
        DY_REQUIRE(dy_llm_prefill(llm, p, batch, prompt) == DY_OK);
        for (int s = 0; s < STEPS; s++)
            DY_REQUIRE(dy_llm_decode(llm) == DY_OK);
        DY_REQUIRE(dy_llm_read_logits(llm, chunked ? parts : whole) == DY_OK);
        dy_llm_destroy(llm);
    }
    DY_CHECK(memcmp(whole, parts, n * sizeof(float)) == 0);
    free(whole);
    free(parts);
    free(p);
    close_model(&m);
}

static void test_chunked_prefill(void)
{
    check_chunked_equals_whole((struct dy_llm_options){ .kv_dtype = DY_F32, .block_size = 4,
                                                        .max_batch = 3, .max_prompt = 10 });
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

/* ---- KV eviction: PagedEviction's prefill choice, BaKlaVa's budgets ---- */

/* Bytes of one token's K and V rows (and int8 scales) in one layer. */
static size_t layer_token_size(const struct dy_llm *m)
{
    size_t heads = (size_t)m->cfg->kv_heads;
    return 2 * (dy_dtype_bytes(m->opt.kv_dtype, heads * m->cfg->head_dim) +
                (m->opt.kv_dtype == DY_I8 ? heads * sizeof(float) : 0));
}

/* Layer `layer`'s K and V (then int8 scales) of the token at cache
 * position `pos` of sequence `seq`, read back from the device. */
static void read_layer_token(struct dy_llm *m, int layer, int seq, int pos, unsigned char *out)
{
    int index;
    const struct dy_kv_cache *kv = dy_llm_layer_kv(m, layer, &index);
    int block = kv->block_table[(size_t)seq * kv->max_blocks_per_seq + pos / kv->block_size];
    DY_REQUIRE(block >= 0);
    size_t slot = (size_t)block * kv->block_size + pos % kv->block_size;
    size_t heads = (size_t)kv->kv_heads, row = dy_dtype_bytes(kv->dtype, heads * kv->head_dim);
    DY_REQUIRE(dy_buf_read(m->ctx, dy_buf_at(dy_kv_cache_k(kv, index), slot * row), out, row) == DY_OK);
    DY_REQUIRE(dy_buf_read(m->ctx, dy_buf_at(dy_kv_cache_v(kv, index), slot * row), out + row, row) == DY_OK);
    if (kv->dtype == DY_I8) {
        size_t scales = heads * sizeof(float);
        DY_REQUIRE(dy_buf_read(m->ctx, dy_buf_at(dy_kv_cache_k_scale(kv, index), slot * scales), out + 2 * row,
                               scales) == DY_OK);
        DY_REQUIRE(dy_buf_read(m->ctx, dy_buf_at(dy_kv_cache_v_scale(kv, index), slot * scales),
                               out + 2 * row + scales, scales) == DY_OK);
    }
}

/* One layer's score of a token from its K and V (f32, f16 or bf16), in
 * double: ||v|| / ||k|| (paged) or 1 / ||k||, the mean over KV heads. */
static double host_score(const struct dy_llm *m, const unsigned char *token, enum dy_evict evict)
{
    int heads = m->cfg->kv_heads, hd = m->cfg->head_dim;
    enum dy_dtype t = m->opt.kv_dtype;
    const unsigned char *v = token + dy_dtype_bytes(t, (size_t)heads * hd);
    double sum = 0;
    for (int h = 0; h < heads; h++) {
        double kk = 0, vv = 0;
        for (int e = 0; e < hd; e++) {
            double kx = dy_load_f32(token, t, (size_t)h * hd + e), vx = dy_load_f32(v, t, (size_t)h * hd + e);
            kk += kx * kx;
            vv += vx * vx;
        }
        double knorm = fmax(sqrt(kk), 1e-12);
        sum += evict == DY_EVICT_PAGED ? sqrt(vv) / knorm : 1.0 / knorm;
    }
    return sum / heads;
}

/* PagedEviction's prefill on `backend`: a prompt longer than the budget
 * leaves in each tier's cache, in order, the first block, the prompt's last
 * block and the (budget_blocks - 2) * block middle tokens of highest score,
 * bit for bit as a decoder without eviction stores them. Scores are
 * computed here from a decoder without eviction whose cache is in the dtype
 * the tested one scores in (f32 for int8), summed over the tier's layers. */
static void prompt_selection(const char *backend, enum dy_evict evict, enum dy_dtype kv_dtype,
                             const int *layer_budget)
{
    enum { BATCH = 2, PROMPT = 75, BLOCK = 16, BUDGET = 48 };
    struct model m;
    open_model(&m, backend, DY_BF16, 0);
    int layers = m.cfg.layers;
    int32_t prompt[BATCH * PROMPT];
    for (int i = 0; i < BATCH * PROMPT; i++)
        prompt[i] = (i * 7919 + 17) % m.cfg.vocab;
    struct dy_llm_options o = { .weight_dtype = m.w.dtype, .kv_dtype = kv_dtype, .block_size = BLOCK,
                                .max_batch = BATCH, .max_prompt = PROMPT, .max_tokens = PROMPT + 2 };
    struct dy_llm_options scoring_o = o, tested_o = o;
    scoring_o.kv_dtype = kv_dtype == DY_I8 || kv_dtype == DY_FP8 ? DY_F32 : kv_dtype;
    tested_o.evict = evict;
    tested_o.kv_budget = BUDGET;
    tested_o.layer_kv_budget = layer_budget;
    struct dy_llm *ref = NULL, *scoring = NULL, *tested = NULL;
    DY_REQUIRE(dy_llm_create(m.ctx, &m.cfg, &m.w, &o, &ref) == DY_OK);
    DY_REQUIRE(dy_llm_create(m.ctx, &m.cfg, &m.w, &scoring_o, &scoring) == DY_OK);
    DY_REQUIRE(dy_llm_create(m.ctx, &m.cfg, &m.w, &tested_o, &tested) == DY_OK);
    DY_REQUIRE(dy_llm_prefill(ref, prompt, BATCH, PROMPT) == DY_OK);
    DY_REQUIRE(dy_llm_prefill(scoring, prompt, BATCH, PROMPT) == DY_OK);
    DY_REQUIRE(dy_llm_prefill(tested, prompt, BATCH, PROMPT) == DY_OK);
    /* each layer's cache holds its budget's blocks for every sequence, and a trash block */
    uint64_t bytes = 0, slot_bytes = (uint64_t)layer_token_size(tested) * BLOCK;
    for (int l = 0; l < layers; l++) {
        int index, blocks = ((layer_budget ? layer_budget[l] : BUDGET) + BLOCK - 1) / BLOCK;
        DY_CHECK(dy_llm_layer_kv(tested, l, &index)->budget_blocks == blocks);
        bytes += (uint64_t)(blocks * BATCH + 1) * slot_bytes;
    }
    DY_CHECK(dy_llm_kv_bytes(tested) == bytes);
    size_t size = layer_token_size(ref);
    unsigned char *want = malloc((size_t)layers * PROMPT * size), *got = malloc((size_t)layers * size);
    unsigned char *scored = malloc(layer_token_size(scoring));
    double *score = malloc(sizeof(double) * layers * PROMPT);
    DY_REQUIRE(want && got && scored && score);
    for (int b = 0; b < BATCH; b++) {
        for (int l = 0; l < layers; l++)
            for (int t = 0; t < PROMPT; t++) {
                read_layer_token(ref, l, b, t, want + ((size_t)l * PROMPT + t) * size);
                read_layer_token(scoring, l, b, t, scored);
                score[l * PROMPT + t] = host_score(scoring, scored, evict);
            }
        for (int tier = 0; tier < tested->kv_count; tier++) {
            const struct dy_kv_cache *kv = &tested->kv[tier];
            int tail = PROMPT - (PROMPT - 1) / BLOCK * BLOCK, held = kv->context_lens[b];
            int kept[PROMPT], count = 0;
            DY_CHECK(held == BLOCK + (kv->budget_blocks - 2) * BLOCK + tail);
            DY_CHECK(kv->seq_tokens[b] == PROMPT);
            /* the prompt token each cache position holds, by its bytes in
             * every layer of the tier: found in order, or not at all */
            for (int pos = 0, next = 0; pos < held && pos < PROMPT; pos++) {
                for (int l = 0; l < layers; l++)
                    if (tested->layer_tier[l] == tier)
                        read_layer_token(tested, l, b, pos, got + (size_t)l * size);
                int found = -1;
                for (int t = next; t < PROMPT && found < 0; t++) {
                    bool same = true;
                    for (int l = 0; l < layers && same; l++)
                        same = tested->layer_tier[l] != tier ||
                               !memcmp(got + (size_t)l * size, want + ((size_t)l * PROMPT + t) * size, size);
                    found = same ? t : -1;
                }
                DY_REQUIRE(found >= 0);
                kept[count++] = found;
                next = found + 1;
            }
            for (int i = 0; i < BLOCK; i++)
                DY_CHECK(kept[i] == i);
            for (int i = 0; i < tail; i++)
                DY_CHECK(kept[count - tail + i] == PROMPT - tail + i);
            /* every middle token kept scores at least as high as every one dropped */
            bool is_kept[PROMPT] = { false };
            for (int i = BLOCK; i < count - tail; i++)
                is_kept[kept[i]] = true;
            double lowest_kept = INFINITY, highest_dropped = -INFINITY, top = 0;
            for (int t = BLOCK; t < PROMPT - tail; t++) {
                double s = 0;
                for (int l = 0; l < layers; l++)
                    s += tested->layer_tier[l] == tier ? score[l * PROMPT + t] : 0;
                top = fmax(top, fabs(s));
                if (is_kept[t])
                    lowest_kept = fmin(lowest_kept, s);
                else
                    highest_dropped = fmax(highest_dropped, s);
            }
            if (!(lowest_kept >= highest_dropped - 1e-5 * top))
                printf("# %s tier %d seq %d: a kept token scores %.9g, a dropped one %.9g\n", backend, tier, b,
                       lowest_kept, highest_dropped);
            DY_CHECK(lowest_kept >= highest_dropped - 1e-5 * top);
        }
    }
    /* decoding goes on from there */
    DY_CHECK(dy_llm_decode(tested) == DY_OK);
    DY_CHECK(dy_llm_decode(tested) == DY_OK);
    free(want);
    free(got);
    free(scored);
    free(score);
    dy_llm_destroy(ref);
    dy_llm_destroy(scoring);
    dy_llm_destroy(tested);
    close_model(&m);
}

static const char *const kv_backends[] = { "cpu-ref", "cpu", "opencl", "cuda" };

static void test_prompt_selection(void)
{
    static const int tiers[] = { 64, 48, 64, 48 }; /* tiny-llama's four layers in two tiers */
    for (size_t i = 0; i < sizeof kv_backends / sizeof kv_backends[0]; i++) {
        if (!dy_registry_find(kv_backends[i], NULL, 0)) {
            printf("# %s unavailable\n", kv_backends[i]);
            continue;
        }
        prompt_selection(kv_backends[i], DY_EVICT_PAGED, DY_F16, NULL);
        prompt_selection(kv_backends[i], DY_EVICT_INV_KEY_NORM, DY_I8, NULL);
        prompt_selection(kv_backends[i], DY_EVICT_PAGED, DY_BF16, tiers);
    }
}

/* The prefill choice in passes of one sequence (the staging holds one
 * pass) computes what one pass does. */
static void test_selection_chunked(void)
{
    check_chunked_equals_whole((struct dy_llm_options){ .kv_dtype = DY_F16, .block_size = 16,
                                                        .max_batch = 3, .max_prompt = 75,
                                                        .evict = DY_EVICT_PAGED, .kv_budget = 48 });
}

/* A budget above the sequence evicts nothing: the logits of the prefill and
 * of every step equal those without eviction, bit for bit, with one budget
 * (paged) and with per-layer budgets in three tiers. */
static void test_large_budget_changes_nothing(void)
{
    enum { BATCH = 2, PROMPT = 40, STEPS = 6 };
    static const int tiers[] = { 96, 64, 128, 64 };
    for (size_t i = 0; i < sizeof kv_backends / sizeof kv_backends[0]; i++) {
        if (!dy_registry_find(kv_backends[i], NULL, 0))
            continue;
        struct model m;
        open_model(&m, kv_backends[i], DY_BF16, 0);
        int32_t prompt[BATCH * PROMPT];
        for (int j = 0; j < BATCH * PROMPT; j++)
            prompt[j] = (j * 7919 + 17) % m.cfg.vocab;
        size_t n = (size_t)BATCH * m.cfg.vocab;
        float *want = malloc((STEPS + 1) * n * sizeof(float)), *got = malloc(n * sizeof(float));
        for (int variant = 0; variant < 3; variant++) {
            struct dy_llm_options o = { .weight_dtype = m.w.dtype, .kv_dtype = DY_F16, .block_size = 16,
                                        .max_batch = BATCH, .max_prompt = PROMPT,
                                        .max_tokens = PROMPT + STEPS + 1 };
            if (variant) {
                o.evict = DY_EVICT_PAGED;
                o.kv_budget = 64;
                o.layer_kv_budget = variant == 2 ? tiers : NULL;
            }
            struct dy_llm *llm = NULL;
            DY_REQUIRE(dy_llm_create(m.ctx, &m.cfg, &m.w, &o, &llm) == DY_OK);
            DY_CHECK(llm->kv_count == (variant == 2 ? 3 : 1));
            DY_REQUIRE(dy_llm_prefill(llm, prompt, BATCH, PROMPT) == DY_OK);
            for (int s = 0; s <= STEPS; s++) {
                if (s)
                    DY_REQUIRE(dy_llm_decode(llm) == DY_OK);
                DY_REQUIRE(dy_llm_read_logits(llm, variant ? got : want + s * n) == DY_OK);
                if (variant && memcmp(got, want + s * n, n * sizeof(float))) {
                    printf("# %s variant %d step %d: logits differ from no eviction\n", kv_backends[i], variant, s);
                    DY_CHECK(0);
                }
            }
            dy_llm_destroy(llm);
        }
        free(want);
        free(got);
        close_model(&m);
    }
}

/* Tiers by importance: a third up, a third down by half the budget in
 * whole blocks, cut to the policy's least; the sum stays. */
static void test_tier_budgets(void)
{
    static const double importance[7] = { 0.3, 0.9, 0.1, 0.5, 0.9, 0.2, 0.4 };
    static const int paged[7] = { 64, 80, 48, 64, 80, 48, 64 }, window[7] = { 64, 96, 32, 64, 96, 32, 64 };
    int budget[7];
    DY_REQUIRE(dy_kv_tier_budgets(importance, 7, 64, 16, DY_EVICT_PAGED, budget) == DY_OK);
    DY_CHECK(memcmp(budget, paged, sizeof paged) == 0); /* 4 blocks, the step cut to 4 - 3 */
    DY_REQUIRE(dy_kv_tier_budgets(importance, 7, 50, 16, DY_EVICT_WINDOW, budget) == DY_OK);
    DY_CHECK(memcmp(budget, window, sizeof window) == 0); /* 50 tokens: 4 blocks */
    DY_REQUIRE(dy_kv_tier_budgets(importance, 7, 48, 16, DY_EVICT_STREAMING, budget) == DY_OK);
    for (int l = 0; l < 7; l++) /* at the least already: no room to move */
        DY_CHECK(budget[l] == 48);
    DY_CHECK(dy_kv_tier_budgets(importance, 7, 32, 16, DY_EVICT_PAGED, budget) == DY_E_INVALID);
}

/* BaKlaVa's profile: an importance per layer in [0, 2], not all alike, the
 * same on a second run, cpu close to cpu-ref; its budgets sum to the
 * uniform total, differ and keep the least. */
static void test_kv_profile(void)
{
    struct model cpu, ref;
    open_model(&cpu, "cpu", DY_BF16, 0);
    open_model(&ref, "cpu-ref", DY_BF16, 0);
    int layers = cpu.cfg.layers;
    double a[8], again[8], r[8], top = 0;
    DY_REQUIRE(layers <= 8);
    DY_REQUIRE(dy_kv_profile(cpu.ctx, &cpu.cfg, &cpu.w, 0, a) == DY_OK);
    DY_REQUIRE(dy_kv_profile(cpu.ctx, &cpu.cfg, &cpu.w, 0, again) == DY_OK);
    DY_REQUIRE(dy_kv_profile(ref.ctx, &ref.cfg, &ref.w, 0, r) == DY_OK);
    DY_CHECK(memcmp(a, again, (size_t)layers * sizeof(double)) == 0);
    bool alike = true;
    for (int l = 0; l < layers; l++) {
        printf("# layer %d: importance %.6f (cpu-ref %.6f)\n", l, a[l], r[l]);
        DY_CHECK(a[l] >= 0 && a[l] <= 2);
        alike = alike && a[l] == a[0];
        top = fmax(top, a[l]);
    }
    DY_CHECK(!alike);
    for (int l = 0; l < layers; l++)
        DY_CHECK(fabs(a[l] - r[l]) <= 1e-3 * top);
    int budget[8], sum = 0, lowest = 1 << 30, highest = 0;
    DY_REQUIRE(dy_kv_tier_budgets(a, layers, 64, 16, DY_EVICT_PAGED, budget) == DY_OK);
    for (int l = 0; l < layers; l++) {
        sum += budget[l];
        lowest = budget[l] < lowest ? budget[l] : lowest;
        highest = budget[l] > highest ? budget[l] : highest;
    }
    DY_CHECK(sum == layers * 64 && lowest >= 3 * 16 && highest > lowest);
    close_model(&cpu);
    close_model(&ref);
}

DY_TESTS(DY_TEST(test_decode_matches_prefill_ref) DY_TEST(test_moe_decode_matches_prefill)
         DY_TEST(test_decode_matches_prefill_cpu)
         DY_TEST(test_decode_matches_prefill_block4) DY_TEST(test_cpu_matches_ref)
         DY_TEST(test_block_size_invariant) DY_TEST(test_batch_invariant)
         DY_TEST(test_truncation_keeps_weights) DY_TEST(test_kv_cache_blocks)
         DY_TEST(test_chunked_prefill) DY_TEST(test_prompt_selection) DY_TEST(test_selection_chunked)
         DY_TEST(test_large_budget_changes_nothing) DY_TEST(test_tier_budgets)
         DY_TEST(test_kv_profile))
