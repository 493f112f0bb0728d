/* What a lossy setting (a quantized KV cache, eviction, quantized weights)
 * costs in output. A reference decoder (KV cache in f32, nothing evicted,
 * the unquantized weights; same prompts and seed) generates greedily first,
 * its next-token logits and tokens of every step kept on the host; once it
 * is destroyed, the tested decoder runs on the same prompts fed the
 * reference's tokens (teacher forcing), so every step compares the two
 * next-token distributions on the same history: the share of steps whose
 * argmax agrees, and the mean KL(reference || tested). One decoder at a
 * time: the device never holds the reference's f32 cache beside the tested
 * one, and everything is computed as when the two ran in lockstep. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "harness.h"

/* Sequences and decode steps the comparison covers (the first of the point's). */
enum { FIDELITY_SEQS = 8, FIDELITY_STEPS = 64 };

/* KL(p || q) of the softmaxes of two logit rows, in double. */
static double kl_of_logits(const float *p_logits, const float *q_logits, int n)
{
    double pmax = -INFINITY, qmax = -INFINITY, psum = 0, qsum = 0, kl = 0;
    for (int i = 0; i < n; i++) {
        pmax = fmax(pmax, p_logits[i]);
        qmax = fmax(qmax, q_logits[i]);
    }
    for (int i = 0; i < n; i++) {
        psum += exp(p_logits[i] - pmax);
        qsum += exp(q_logits[i] - qmax);
    }
    double plog = pmax + log(psum), qlog = qmax + log(qsum);
    for (int i = 0; i < n; i++) {
        double lp = p_logits[i] - plog, lq = q_logits[i] - qlog;
        kl += exp(lp) * (lp - lq);
    }
    return kl > 0 ? kl : 0; /* rounding can leave a tiny negative */
}

static int argmax_of(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

/* What one fidelity pass compares: batch sequences of prompt_len tokens
 * and `steps` decode steps after the prefill. */
struct pass {
    dy_ctx *ctx;
    const struct dy_model_config *cfg;
    const int32_t *prompts;
    int batch, prompt_len, steps;
};

static size_t step_logits(const struct pass *ps)
{
    return (size_t)ps->batch * ps->cfg->vocab;
}

/* The reference's prefill and greedy decode steps; logits [steps + 1][batch
 * * vocab] and tokens [steps + 1][batch] of every step (the prefill's
 * first). */
static int run_reference(const struct pass *ps, const struct dy_llm_weights *w,
                         const struct dy_llm_options *opt, float *logits, int32_t *tokens)
{
    struct dy_llm *ref = NULL;
    int st = dy_llm_create(ps->ctx, ps->cfg, w, opt, &ref);
    if (st == DY_OK)
        st = dy_llm_prefill(ref, ps->prompts, ps->batch, ps->prompt_len);
    for (int s = 0; st == DY_OK && s <= ps->steps; s++) {
        if (s > 0 && (st = dy_llm_decode(ref)))
            break;
        if ((st = dy_llm_read_logits(ref, logits + s * step_logits(ps))) == DY_OK)
            st = dy_llm_read_tokens(ref, tokens + (size_t)s * ps->batch);
    }
    dy_llm_destroy(ref);
    return st;
}

/* The tested decoder's prefill and decode steps, each fed the reference's
 * token of the step before, against the reference's logits and tokens;
 * `logits` holds one step's ([batch * vocab]). */
static int run_tested(const struct pass *ps, const struct dy_llm_weights *w, const struct dy_llm_options *opt,
                      const float *ref_logits, const int32_t *ref_tokens, float *logits, double *agreement,
                      double *kl_mean)
{
    int vocab = ps->cfg->vocab;
    struct dy_llm *test = NULL;
    int st = dy_llm_create(ps->ctx, ps->cfg, w, opt, &test);
    if (st == DY_OK)
        st = dy_llm_prefill(test, ps->prompts, ps->batch, ps->prompt_len);
    double kl = 0;
    long agree = 0, compared = 0;
    for (int s = 0; st == DY_OK && s <= ps->steps; s++) {
        const int32_t *tokens = ref_tokens + (size_t)s * ps->batch;
        if (s > 0 && ((st = dy_llm_force_tokens(test, tokens - ps->batch)) || (st = dy_llm_decode(test))))
            break;
        if ((st = dy_llm_read_logits(test, logits)))
            break;
        for (int b = 0; b < ps->batch; b++) {
            const float *pr = ref_logits + s * step_logits(ps) + (size_t)b * vocab;
            const float *pt = logits + (size_t)b * vocab;
            kl += kl_of_logits(pr, pt, vocab);
            agree += argmax_of(pt, vocab) == tokens[b];
            compared++;
        }
    }
    if (st == DY_OK) {
        *agreement = (double)agree / compared;
        *kl_mean = kl / compared;
    }
    dy_llm_destroy(test);
    return st;
}

/* Sequences per prefill pass (0: all). */
static int seqs_per_pass(const struct dy_llm_options *opt)
{
    return opt->prefill_seqs > 0 && opt->prefill_seqs < opt->max_batch ? opt->prefill_seqs : opt->max_batch;
}

/* Prefill passes that let each decoder fit the device alone, the same for
 * both so that the two differ only in the lossy setting. False (and why in
 * p->reason) when one does not fit even one sequence per pass. */
static bool fit_decoders(const struct pass *ps, struct dy_llm_options *ref_opt, struct dy_llm_options *test_opt,
                         struct dy_point *p)
{
    struct dy_mem_info mem;
    if (dy_mem_info(ps->ctx, &mem) != DY_OK || !mem.free_bytes)
        return true; /* unknown: try, as the point does */
    dy_fit_prefill_seqs(ps->cfg, ref_opt, mem.free_bytes);
    dy_fit_prefill_seqs(ps->cfg, test_opt, mem.free_bytes);
    int ref_seqs = seqs_per_pass(ref_opt), test_seqs = seqs_per_pass(test_opt);
    ref_opt->prefill_seqs = test_opt->prefill_seqs = ref_seqs < test_seqs ? ref_seqs : test_seqs;
    uint64_t ref_need = dy_llm_state_bytes(ps->cfg, ref_opt), test_need = dy_llm_state_bytes(ps->cfg, test_opt);
    if (ref_need <= mem.free_bytes && test_need <= mem.free_bytes)
        return true;
    snprintf(p->reason, sizeof p->reason,
             "fidelity not measured: over %d sequences, %d per prefill pass, the reference decoder (f32 KV cache) "
             "needs %.2f GiB and the tested one %.2f GiB, %s has %.2f GiB free beside the weights",
             ps->batch, ref_opt->prefill_seqs, ref_need / 1073741824.0, test_need / 1073741824.0, p->device,
             mem.free_bytes / 1073741824.0);
    return false;
}

static void not_measured(dy_ctx *ctx, struct dy_point *p, const char *which, int st)
{
    snprintf(p->reason, sizeof p->reason, "fidelity not measured: the %s decoder: %s", which,
             dy_ctx_error(ctx)[0] ? dy_ctx_error(ctx) : dy_strerror(st));
}

int dy_fidelity_point(dy_ctx *ctx, const struct dy_model_config *cfg, const struct dy_llm_weights *ref_w,
                      const struct dy_llm_weights *w, const struct dy_llm_options *opt, const int32_t *prompts,
                      struct dy_point *p)
{
    if (opt->kv_dtype != DY_FP8 && opt->kv_dtype != DY_I8 && opt->evict == DY_EVICT_NONE && w == ref_w)
        return DY_OK;
    int steps = (int)p->output_len - 1;
    struct pass ps = {
        .ctx = ctx, .cfg = cfg, .prompts = prompts,
        .batch = p->batch < FIDELITY_SEQS ? (int)p->batch : FIDELITY_SEQS,
        .prompt_len = (int)p->input_len,
        .steps = steps < FIDELITY_STEPS ? steps : FIDELITY_STEPS,
    };
    struct dy_llm_options test_opt = *opt;
    test_opt.max_batch = ps.batch;
    test_opt.prefill_seqs = 0; /* chosen for these sequences, not the point's */
    struct dy_llm_options ref_opt = test_opt;
    ref_opt.kv_dtype = DY_F32;
    ref_opt.evict = DY_EVICT_NONE;
    if (!fit_decoders(&ps, &ref_opt, &test_opt, p))
        return DY_E_NOMEM;
    size_t rows = (size_t)(ps.steps + 1) * ps.batch;
    float *ref_logits = malloc(rows * cfg->vocab * sizeof(float));
    float *test_logits = malloc(step_logits(&ps) * sizeof(float));
    int32_t *ref_tokens = malloc(rows * sizeof(int32_t));
    int st = DY_E_NOMEM;
    if (!ref_logits || !test_logits || !ref_tokens)
        snprintf(p->reason, sizeof p->reason,
                 "fidelity not measured: no host memory for the reference's logits (%.2f GiB: %d steps x %d "
                 "sequences x %d floats)", rows * cfg->vocab * sizeof(float) / 1073741824.0, ps.steps + 1,
                 ps.batch, cfg->vocab);
    else if ((st = run_reference(&ps, ref_w, &ref_opt, ref_logits, ref_tokens)))
        not_measured(ctx, p, "reference", st);
    else if ((st = run_tested(&ps, w, &test_opt, ref_logits, ref_tokens, test_logits, &p->token_agreement,
                              &p->kl_mean)))
        not_measured(ctx, p, "tested", st);
    free(ref_logits);
    free(test_logits);
    free(ref_tokens);
    return st;
}
