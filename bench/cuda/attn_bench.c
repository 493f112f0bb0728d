/* The CUDA backend's prefill attention alone, timed as bench/cuda/sdpa_peer.py
 * times PyTorch's SDPA: 20 calls back to back between two events on the
 * shapes issue 3 and issue 9 compare (Llama-3.1-8B's 32 query and 8 KV heads
 * at dim 128, causal, 16 x 1,024 and 4 x 4,096; ViT-L/16's 16 heads at dim 64
 * over 197 tokens, 256 images), bf16, Q, K and V in the workload's fused
 * rows. TFLOP/s count 4 b h s^2 d, halved when causal, as sdpa_peer.py does.
 * Inside a forward pass the card may be held at its power cap by the GEMMs
 * around the kernel; alone it runs at the clocks SDPA's calls get, so this is
 * the figure to set beside sdpa_peer.py's, run in the same device call.
 *
 * Built by bench/cuda/pack_bench.sh attn_bench; run on the device machine as
 * .carry/attn_bench/attn_bench (DYNO_PLUGIN_PATH at the carried plugin). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "backends/backend.h"

#define REPS 7
#define CALLS 20
#define BENCH_SEED 11
#include "bench/cuda/bench_util.h"

static void do_prefill(void *arg, int i)
{
    (void)i;
    CHECK(dy_attention_prefill(ctx, arg));
}

static void shape(int batch, int seq, int heads, int kvh, int hd, bool causal)
{
    int stride = (heads + 2 * kvh) * hd;
    size_t rows = (size_t)batch * seq;
    dy_buf qkv = alloc(rows * stride * 2), out = alloc(rows * heads * hd * 2);
    fill(qkv, rows * stride, DY_BF16, 1, 2.0f, -1.0f);
    struct dy_attention_prefill_desc d = {
        .q = qkv, .k = dy_buf_at(qkv, (size_t)heads * hd * 2), .v = dy_buf_at(qkv, (size_t)(heads + kvh) * hd * 2),
        .out = out, .batch = batch, .seq_len = seq, .heads = heads, .kv_heads = kvh, .head_dim = hd,
        .q_stride = stride, .kv_stride = stride, .out_stride = heads * hd, .scale = 1.0f / sqrtf((float)hd),
        .causal = causal, .dtype = DY_BF16, .compute_dtype = DY_BF16,
    };
    double s = time_calls(do_prefill, &d, CALLS);
    double flop = 4.0 * batch * heads * (double)seq * seq * hd * (causal ? 0.5 : 1.0);
    printf("attention b%d h%d/%d s%d d%d causal=%d: %.3f ms = %.0f TFLOP/s\n", batch, heads, kvh, seq, hd, causal,
           s * 1e3, flop / s * 1e-12);
    dy_buf_free(ctx, &qkv);
    dy_buf_free(ctx, &out);
}

int main(void)
{
    if (!open_cuda("attn_bench"))
        return 77;
    shape(16, 1024, 32, 8, 128, true);
    shape(4, 4096, 32, 8, 128, true);
    shape(256, 197, 16, 16, 64, false);
    dy_ctx_destroy(ctx);
    return 0;
}
