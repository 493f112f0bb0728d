#!/usr/bin/env python3
"""Checks `dyno generate` against Hugging Face transformers on checkpoints
that transformers itself saves (random weights, small shapes, every supported
architecture). Prints one TAP line per check.

usage: hf_check.py DYNO OUTDIR BACKEND [BACKEND...]
"""
import json
import os
import subprocess
import sys

import torch
import transformers

PROMPT = [5, 17, 42, 7, 99, 3]
NEW = 16


def make(arch, outdir, dtype):
    common = dict(vocab_size=1000, hidden_size=256, intermediate_size=512, num_hidden_layers=3,
                  num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=512,
                  rms_norm_eps=1e-5)
    if arch == 'llama':
        cfg = transformers.LlamaConfig(**common, tie_word_embeddings=True,
                                       rope_scaling={'rope_type': 'llama3', 'factor': 8.0,
                                                     'low_freq_factor': 1.0, 'high_freq_factor': 4.0,
                                                     'original_max_position_embeddings': 64},
                                       rope_theta=500000.0)
    elif arch == 'mistral':
        cfg = transformers.MistralConfig(**common, rope_theta=1e6, sliding_window=None)
    else:
        cfg = transformers.Qwen2Config(**common, rope_theta=1e6, tie_word_embeddings=False)
    torch.manual_seed(1234)
    model = transformers.AutoModelForCausalLM.from_config(cfg).to(dtype).eval()
    # larger weights than the default init, so greedy decoding is not degenerate
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.08)
    path = os.path.join(outdir, '%s-%s' % (arch, str(dtype).split('.')[-1]))
    model.save_pretrained(path)
    with torch.no_grad():
        out = model.generate(torch.tensor([PROMPT]), max_new_tokens=NEW, do_sample=False,
                             min_new_tokens=NEW, eos_token_id=None, pad_token_id=0)
    return path, out[0, len(PROMPT):].tolist()


def dyno_generate(dyno, path, backend):
    r = subprocess.run([dyno, 'generate', '--model-dir', path, '--prompt',
                        ','.join(map(str, PROMPT)), '--max-new-tokens', str(NEW),
                        '--backend', backend], capture_output=True, text=True)
    if r.returncode:
        return None, r.stderr.strip()
    return [int(t) for t in r.stdout.strip().split(',')], ''


def main():
    dyno, outdir, backends = sys.argv[1], sys.argv[2], sys.argv[3:]
    cases = [(a, d) for a in ('llama', 'mistral', 'qwen2') for d in (torch.float32, torch.bfloat16)]
    print('1..%d' % (len(cases) * len(backends)))
    n = failed = 0
    for arch, dtype in cases:
        path, want = make(arch, outdir, dtype)
        layout = 'rope_parameters' if 'rope_parameters' in json.load(open(path + '/config.json')) else 'top-level rope'
        for be in backends:
            n += 1
            got, err = dyno_generate(dyno, path, be)
            same = got is not None and sum(a == b for a, b in zip(got, want))
            # f32 must agree token for token; bf16 rounds activations
            # differently from transformers, so the first 4 tokens must agree
            ok = got == want if dtype == torch.float32 else (got is not None and got[:4] == want[:4])
            print('%s %d - %s %s (%s) on %s: %s/%d tokens agree%s' % (
                'ok' if ok else 'not ok', n, arch, str(dtype).split('.')[-1], layout, be,
                same if got is not None else 0, NEW, '' if ok else ' (dyno %s, transformers %s %s)' % (got, want, err)))
            failed += not ok
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
