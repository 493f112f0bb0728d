#!/usr/bin/env python3
"""Hugging Face transformers as the peer, same card, same shapes, random
bf16 weights: decode step time of Llama-3.1-8B at batch 1 with a 1024-token
context, and TTFT of a batch of 16 x 1024-token prompts. Also the card's
ceilings through PyTorch (device copy, bf16 GEMM) to cross-check dyno's."""
import time

import torch
import transformers


def timed(fn, reps):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def ceilings():
    n = 1 << 30
    a = torch.empty(n, dtype=torch.uint8, device='cuda')
    b = torch.empty_like(a)
    ms = timed(lambda: b.copy_(a), 10)
    x = torch.randn(8192, 8192, dtype=torch.bfloat16, device='cuda')
    y = torch.randn(8192, 8192, dtype=torch.bfloat16, device='cuda')
    gms = timed(lambda: x @ y, 10)
    print('torch ceilings: copy %.0f GB/s, bf16 GEMM %.0f TFLOP/s' % (2 * n / ms / 1e6, 2 * 8192 ** 3 / gms / 1e9))
    del a, b, x, y


def main():
    ceilings()
    cfg = transformers.LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                   num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                                   max_position_embeddings=8192, rope_theta=500000.0)
    t0 = time.time()
    with torch.device('cuda'):
        model = transformers.LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    print('built the model in %.1f s' % (time.time() - t0))
    with torch.no_grad():
        prompt = torch.randint(0, 128256, (1, 1024), device='cuda')
        out = model(prompt, use_cache=True)
        past = out.past_key_values
        tok = out.logits[:, -1:].argmax(-1)

        def step():
            nonlocal past, tok
            o = model(tok, past_key_values=past, use_cache=True)
            past = o.past_key_values
            tok = o.logits[:, -1:].argmax(-1)
        ms = timed(step, 20)
        print('transformers decode step, batch 1, context ~1024: %.2f ms (%.1f tok/s)' % (ms, 1e3 / ms))
        prompts = torch.randint(0, 128256, (16, 1024), device='cuda')
        ttft = timed(lambda: model(prompts, use_cache=True, logits_to_keep=1), 3)
        print('transformers TTFT batch 16 x 1024: %.3f s (%.0f tok/s)' % (ttft / 1e3, 16 * 1024 / ttft * 1e3))


if __name__ == '__main__':
    main()
