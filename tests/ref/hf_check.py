#!/usr/bin/env python3
"""Checks `dyno generate` against Hugging Face transformers on checkpoints
that transformers itself saves (random weights, small shapes, every supported
architecture). Prints one TAP line per check.

For the MoE models (float32 only) it also prints, as TAP diagnostics, the
tensor names and config fields save_pretrained wrote, so that the layout this
transformers version writes (per-expert tensors as on the Hub, or fused 3D
experts) is on record, and the smallest router margin of the decoded
sequence.

usage: hf_check.py DYNO OUTDIR BACKEND [BACKEND...]
"""
import glob
import json
import os
import re
import struct
import subprocess
import sys

import torch
import transformers

PROMPT = [5, 17, 42, 7, 99, 3]
NEW = 16
DENSE = ('llama', 'mistral', 'qwen2')
MOE = ('mixtral', 'qwen2_moe', 'olmoe', 'qwen3_moe')
CONFIG_CLASSES = {'llama': 'LlamaConfig', 'mistral': 'MistralConfig', 'qwen2': 'Qwen2Config',
                  'mixtral': 'MixtralConfig', 'qwen2_moe': 'Qwen2MoeConfig', 'olmoe': 'OlmoeConfig',
                  'qwen3_moe': 'Qwen3MoeConfig'}
EXPERTS = 8
# The gap between the k-th and (k+1)-th router logit, relative to the
# token's logit spread, that a seed must keep everywhere: f32 kernels (TF32
# ones included) move router logits far less, so a mismatch is dyno's.
MIN_ROUTER_MARGIN = 0.01
MOE_SEED_TRIES = 40
# config.json fields that say how the MoE block is read
MOE_FIELDS = ('num_local_experts', 'num_experts', 'num_experts_per_tok', 'intermediate_size',
              'moe_intermediate_size', 'shared_expert_intermediate_size', 'norm_topk_prob',
              'decoder_sparse_step', 'mlp_only_layers', 'head_dim', 'clip_qkv', 'qkv_bias')


def make_config(arch):
    common = dict(vocab_size=1000, hidden_size=256, intermediate_size=512, num_hidden_layers=3,
                  num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=512,
                  rms_norm_eps=1e-5)
    config_class = getattr(transformers, CONFIG_CLASSES[arch])
    if arch == 'llama':
        return config_class(**common, tie_word_embeddings=True,
                            rope_scaling={'rope_type': 'llama3', 'factor': 8.0,
                                          'low_freq_factor': 1.0, 'high_freq_factor': 4.0,
                                          'original_max_position_embeddings': 64},
                            rope_theta=500000.0)
    if arch == 'mistral':
        return config_class(**common, rope_theta=1e6, sliding_window=None)
    if arch == 'qwen2':
        return config_class(**common, rope_theta=1e6, tie_word_embeddings=False)
    # MoE: intermediate_size is an expert's for Mixtral and OLMoE, the dense
    # layers' (there are none) for the Qwen MoE models
    if arch == 'mixtral':
        return config_class(**dict(common, intermediate_size=128), num_local_experts=EXPERTS,
                            num_experts_per_tok=2)
    if arch == 'olmoe':
        return config_class(**dict(common, intermediate_size=128), num_experts=EXPERTS,
                            num_experts_per_tok=2, norm_topk_prob=False)
    if arch == 'qwen2_moe':
        return config_class(**common, num_experts=EXPERTS, num_experts_per_tok=4, moe_intermediate_size=128,
                            shared_expert_intermediate_size=256, norm_topk_prob=False)
    # head_dim 64 against hidden / heads = 32, as Qwen3-30B-A3B's differ too
    return config_class(**common, head_dim=64, num_experts=EXPERTS, num_experts_per_tok=4,
                        moe_intermediate_size=128, norm_topk_prob=True)


def build(cfg, dtype, seed):
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg).to(dtype).eval()
    # larger weights than the default init, so greedy decoding is not
    # degenerate; >= 2 dimensions takes in experts stored as 3D tensors
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.08)
    return model


def generate(model):
    with torch.no_grad():
        out = model.generate(torch.tensor([PROMPT]), max_new_tokens=NEW, do_sample=False,
                             min_new_tokens=NEW, eos_token_id=None, pad_token_id=0)
    return out[0, len(PROMPT):].tolist()


def router_margin(model, ids, k):
    """Smallest gap between the k-th and (k+1)-th router logit over all
    layers and positions of ids, relative to that token's logit spread. The
    logits are recomputed from each router's input and weight, which every
    transformers version has, whatever its router returns."""
    logits = []

    def record(module, inputs, output):
        h = inputs[0].reshape(-1, inputs[0].shape[-1]).double()
        logits.append(h @ module.weight.double().T)

    hooks = [m.register_forward_hook(record) for name, m in model.named_modules()
             if name.endswith('.gate') and getattr(m, 'weight', None) is not None
             and tuple(m.weight.shape) == (EXPERTS, model.config.hidden_size)]
    try:
        with torch.no_grad():
            model(torch.tensor([ids]))
    finally:
        for hook in hooks:
            hook.remove()
    if not logits:
        raise SystemExit('hf_check.py: found no router modules named *.gate in %s' % type(model).__name__)
    ranked = torch.cat(logits).sort(dim=-1, descending=True).values
    return float(((ranked[:, k - 1] - ranked[:, k]) / (ranked[:, 0] - ranked[:, -1])).min())


def written_layout(path):
    """Layer 0's tensor names as save_pretrained wrote them (expert numbers
    as *), with shapes and counts, read from the safetensors headers."""
    seen = {}
    for f in sorted(glob.glob(os.path.join(path, '*.safetensors'))):
        with open(f, 'rb') as fh:
            (n,) = struct.unpack('<Q', fh.read(8))
            header = json.loads(fh.read(n))
        for name, info in header.items():
            if name.startswith('model.layers.0.'):
                key = re.sub(r'\.experts\.\d+\.', '.experts.*.', name)
                seen.setdefault(key, [info['shape'], 0])[1] += 1
    return ['%s %s%s' % (k, s, ' x%d' % c if c > 1 else '') for k, (s, c) in sorted(seen.items())]


def make(arch, outdir, dtype):
    """Saves a random model and decodes PROMPT with transformers: (path,
    tokens, diagnostic lines)."""
    cfg = make_config(arch)
    name = '%s-%s' % (arch, str(dtype).split('.')[-1])
    path = os.path.join(outdir, name)
    notes = []
    if arch in DENSE:
        model = build(cfg, dtype, 1234)
        want = generate(model)
    else:
        # a seed whose router decisions are not near-ties, so that kernel
        # rounding cannot flip them
        for seed in range(1234, 1234 + MOE_SEED_TRIES):
            model = build(cfg, dtype, seed)
            want = generate(model)
            margin = router_margin(model, PROMPT + want[:-1], cfg.num_experts_per_tok)
            if margin >= MIN_ROUTER_MARGIN:
                break
        notes.append('%s: seed %d, smallest router margin %.2f%% of the logit spread%s' % (
            name, seed, 100 * margin, '' if margin >= MIN_ROUTER_MARGIN else
            ' (below %.0f%% after %d seeds: a mismatch may be a near-tie)' % (100 * MIN_ROUTER_MARGIN,
                                                                             MOE_SEED_TRIES)))
    model.save_pretrained(path)
    if arch in MOE:
        with open(os.path.join(path, 'config.json')) as f:
            saved = json.load(f)
        notes.append('%s config.json: %s' % (name, ', '.join(
            '%s=%s' % (k, json.dumps(saved[k])) for k in MOE_FIELDS if k in saved)))
        notes += ['%s wrote %s' % (name, line) for line in written_layout(path)]
    return path, want, notes


def dyno_generate(dyno, path, backend):
    r = subprocess.run([dyno, 'generate', '--model-dir', path, '--prompt',
                        ','.join(map(str, PROMPT)), '--max-new-tokens', str(NEW),
                        '--backend', backend], capture_output=True, text=True)
    if r.returncode:
        return None, r.stderr.strip()
    return [int(t) for t in r.stdout.strip().split(',')], ''


def main():
    dyno, outdir, backends = sys.argv[1], sys.argv[2], sys.argv[3:]
    cases = [(a, d) for a in DENSE for d in (torch.float32, torch.bfloat16)]
    cases += [(a, torch.float32) for a in MOE]
    print('1..%d' % (len(cases) * len(backends)))
    print('# transformers %s, torch %s' % (transformers.__version__, torch.__version__))
    n = failed = 0
    for arch, dtype in cases:
        if not hasattr(transformers, CONFIG_CLASSES[arch]):
            for be in backends:
                n += 1
                print('ok %d - %s on %s # SKIP transformers %s has no %s' % (
                    n, arch, be, transformers.__version__, CONFIG_CLASSES[arch]))
            continue
        path, want, notes = make(arch, outdir, dtype)
        for note in notes:
            print('# ' + note)
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
