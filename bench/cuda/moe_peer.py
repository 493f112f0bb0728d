#!/usr/bin/env python3
"""Hugging Face transformers as the MoE peer, same card, random bf16 weights,
the shapes of dyno's presets: OLMoE-1B-7B and Qwen1.5-MoE-A2.7B decode step
at batch 1 after a 128-token prompt, and a 1024-token prefill (tok/s).
Usage: moe_peer.py MODELS_DIR [preset ...]"""
import json
import sys

import torch
import transformers

from hf_peer import timed

CLASSES = {
    'OlmoeForCausalLM': (transformers.OlmoeConfig, transformers.OlmoeForCausalLM),
    'Qwen2MoeForCausalLM': (transformers.Qwen2MoeConfig, transformers.Qwen2MoeForCausalLM),
    'MixtralForCausalLM': (transformers.MixtralConfig, transformers.MixtralForCausalLM),
}


def run(models_dir, preset):
    raw = json.load(open('%s/%s.json' % (models_dir, preset)))
    config_class, model_class = CLASSES[raw['architectures'][0]]
    cfg = config_class(**{k: v for k, v in raw.items() if k not in ('architectures', 'torch_dtype')})
    with torch.device('cuda'):
        model = model_class(cfg).to(torch.bfloat16).eval()
    vocab = cfg.vocab_size
    with torch.no_grad():
        prompt = torch.randint(0, vocab, (1, 128), device='cuda')
        out = model(prompt, use_cache=True)
        past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)

        def step():
            nonlocal past, tok
            o = model(tok, past_key_values=past, use_cache=True)
            past, tok = o.past_key_values, o.logits[:, -1:].argmax(-1)
        ms = timed(step, 20)
        print('transformers %s decode step, batch 1: %.2f ms (%.1f tok/s)' % (preset, ms, 1e3 / ms))
        prompts = torch.randint(0, vocab, (1, 1024), device='cuda')
        ttft = timed(lambda: model(prompts, use_cache=True, logits_to_keep=1), 3)
        print('transformers %s prefill 1 x 1024: %.1f ms (%.0f tok/s)' % (preset, ttft, 1024 / ttft * 1e3))
    del model
    torch.cuda.empty_cache()


if __name__ == '__main__':
    for name in sys.argv[2:] or ['olmoe-1b-7b', 'qwen1.5-moe-a2.7b']:
        try:
            run(sys.argv[1], name)
        except Exception as e:  # a peer that cannot run is reported, not fatal
            print('transformers %s: %s: %s' % (name, type(e).__name__, e))
