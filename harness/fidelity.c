/* What a lossy setting (a quantized KV cache, eviction, quantized weights)
 * costs in output: the point's decoder and a reference decoder (KV cache in
 * f32, nothing evicted, the unquantized weights; same prompts and seed) run
 * side by side. The reference
 * generates greedily; the tested decoder is fed the reference's tokens
 * (teacher forcing), so every step compares the two next-token
 * distributions on the same history: the share of steps whose argmax
 * agrees, and the mean KL(reference || tested). */
#include <math.h>
#include <stdlib.h>

#include "harness.h"

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

int dy_fidelity(dy_ctx *ctx, const struct dy_model_config *cfg, const struct dy_llm_weights *ref_w,
                const struct dy_llm_weights *w, const struct dy_llm_options *tested, const int32_t *prompts, int batch, int prompt_len,
                int steps, double *agreement, double *kl_mean)
{
    *agreement = *kl_mean = NAN;
    struct dy_llm_options ref_opt = *tested;
    ref_opt.kv_dtype = DY_F32;
    ref_opt.evict = DY_EVICT_NONE;
    size_t n = (size_t)batch * cfg->vocab;
    float *ref_logits = malloc(n * sizeof(float)), *test_logits = malloc(n * sizeof(float));
    int32_t *tokens = malloc((size_t)batch * sizeof(int32_t));
    struct dy_llm *ref = NULL, *test = NULL;
    int st = DY_E_NOMEM;
    if (!ref_logits || !test_logits || !tokens)
        goto out;
    if ((st = dy_llm_create(ctx, cfg, ref_w, &ref_opt, &ref)) || (st = dy_llm_create(ctx, cfg, w, tested, &test)) ||
        (st = dy_llm_prefill(ref, prompts, batch, prompt_len)) ||
        (st = dy_llm_prefill(test, prompts, batch, prompt_len)))
        goto out;
    double kl = 0;
    long agree = 0, compared = 0;
    for (int s = 0; s <= steps; s++) {
        if (s > 0 && ((st = dy_llm_force_tokens(test, tokens)) || (st = dy_llm_decode(ref)) ||
                      (st = dy_llm_decode(test))))
            goto out;
        if ((st = dy_llm_read_logits(ref, ref_logits)) || (st = dy_llm_read_logits(test, test_logits)) ||
            (st = dy_llm_read_tokens(ref, tokens)))
            goto out;
        for (int b = 0; b < batch; b++) {
            const float *pr = ref_logits + (size_t)b * cfg->vocab, *pt = test_logits + (size_t)b * cfg->vocab;
            kl += kl_of_logits(pr, pt, cfg->vocab);
            agree += argmax_of(pt, cfg->vocab) == tokens[b];
            compared++;
        }
    }
    *agreement = (double)agree / compared;
    *kl_mean = kl / compared;
out:
    dy_llm_destroy(ref);
    dy_llm_destroy(test);
    free(ref_logits);
    free(test_logits);
    free(tokens);
    return st;
}
