"""PyTorch's scaled_dot_product_attention (FlashAttention / cuDNN inside) on
the prefill shapes dyno's flash kernel is compared with: causal GQA at
Llama-3.1-8B's heads (32 query, 8 KV, dim 128) and ViT-L/16's bidirectional
16 x 197 x 64. Prints TFLOP/s (4 b h s^2 d, halved when causal)."""
import torch
import torch.nn.functional as F

def run(b, h, kvh, s, d, causal):
    q = torch.randn(b, h, s, d, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(b, kvh, s, d, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    if kvh != h:  # expanded views: SDPA's GQA flag is not taken by every backend
        k = k.repeat_interleave(h // kvh, dim=1)
        v = v.repeat_interleave(h // kvh, dim=1)
    f = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    for _ in range(5):
        f()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    reps = 20
    start.record()
    for _ in range(reps):
        f()
    end.record()
    torch.cuda.synchronize()
    ms = start.elapsed_time(end) / reps
    flop = 4.0 * b * h * s * s * d * (0.5 if causal else 1.0)
    print(f"sdpa b{b} h{h}/{kvh} s{s} d{d} causal={int(causal)}: {ms:.3f} ms = {flop / ms / 1e9:.0f} TFLOP/s")

run(16, 32, 8, 1024, 128, True)
run(4, 32, 8, 4096, 128, True)
run(256, 16, 16, 197, 64, False)
