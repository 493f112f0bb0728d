#!/usr/bin/python3
"""Greedy decoding with a minimal Llama / Qwen2 forward pass in float64, the
oracle that `dyno generate` is compared against.

    reference.py DIR --prompt 1,2,3 --max-new-tokens N [--verbose]

Prints the new token ids, comma-separated, on one line. Written from the
model definitions (RMSNorm, rotate-half RoPE, GQA causal attention, SwiGLU,
q/k/v biases for Qwen2, tied LM head), independently of dyno and without
transformers. Weights are read as stored (already rounded to their dtype);
every step recomputes the whole sequence, so there is no cache to get wrong.
"""
import argparse
import glob
import json
import math
import os
import struct
import sys

import torch

ST_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (header_len,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + header_len])
    data = blob[8 + header_len:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        dtype = ST_DTYPES[info["dtype"]]
        raw = bytearray(data[begin:end])  # frombuffer wants a writable buffer
        if dtype == torch.bfloat16:
            t = torch.frombuffer(raw, dtype=torch.int16).view(torch.bfloat16)
        else:
            t = torch.frombuffer(raw, dtype=dtype)
        out[name] = t.reshape(info["shape"]).to(torch.float64)
    return out


def read_checkpoint(ckpt_dir):
    index = os.path.join(ckpt_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    elif os.path.exists(os.path.join(ckpt_dir, "model.safetensors")):
        files = ["model.safetensors"]
    else:
        files = [os.path.basename(p) for p in glob.glob(os.path.join(ckpt_dir, "*.safetensors"))]
    weights = {}
    for name in files:
        weights.update(read_safetensors(os.path.join(ckpt_dir, name)))
    return weights


def rope_settings(cfg):
    """(theta, scaling dict or None) from either config layout."""
    params = cfg.get("rope_parameters")
    if params is not None:
        return params.get("rope_theta", cfg.get("rope_theta", 10000.0)), params
    return cfg.get("rope_theta", 10000.0), cfg.get("rope_scaling")


def inv_freq(cfg, head_dim):
    """As transformers computes it: float32, llama3 rule included, so the
    angles are the ones the model was trained with."""
    theta, scaling = rope_settings(cfg)
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    rope_type = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if rope_type == "linear":
        inv = inv / scaling["factor"]
    elif rope_type == "llama3":
        factor = scaling["factor"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_context = scaling["original_max_position_embeddings"]
        low_freq_wavelen, high_freq_wavelen = old_context / low, old_context / high
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > low_freq_wavelen, inv / factor, inv)
        smooth = (old_context / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
        inv = torch.where(medium, smoothed, scaled)
    elif rope_type != "default":
        raise SystemExit("reference.py: unsupported rope_type %r" % rope_type)
    return inv


def rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def forward(w, cfg, ids, inv):
    """Logits of the last position, float64."""
    hidden, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    kv_heads = cfg.get("num_key_value_heads") or heads
    head_dim = cfg.get("head_dim") or hidden // heads
    eps = cfg.get("rms_norm_eps", 1e-6)
    qwen2 = cfg["architectures"][0] == "Qwen2ForCausalLM"
    biased = qwen2 or cfg.get("attention_bias", False)
    tokens = len(ids)

    # angle = float32(position) * float32(inv_freq), rounded to float32 as
    # transformers computes it; cos and sin then in float64
    positions = torch.arange(tokens, dtype=torch.float32)
    angles = (positions[:, None] * inv[None, :]).to(torch.float64)
    angles = torch.cat((angles, angles), dim=-1)
    cos, sin = angles.cos()[:, None, :], angles.sin()[:, None, :]
    causal = torch.ones(tokens, tokens, dtype=torch.bool).tril()

    x = w["model.embed_tokens.weight"][torch.tensor(ids)]
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % i

        def proj(name, inp):
            y = inp @ w[p + name + ".weight"].T
            bias = w.get(p + name + ".bias")
            return y + bias if biased and bias is not None else y

        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = proj("self_attn.q_proj", h).view(tokens, heads, head_dim)
        k = proj("self_attn.k_proj", h).view(tokens, kv_heads, head_dim)
        v = proj("self_attn.v_proj", h).view(tokens, kv_heads, head_dim)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        group = heads // kv_heads  # query head j reads kv head j // group
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
        scores = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(head_dim)
        scores = scores.masked_fill(~causal, float("-inf"))
        attn = torch.einsum("hqk,khd->qhd", scores.softmax(dim=-1), v).reshape(tokens, heads * head_dim)
        x = x + proj("self_attn.o_proj", attn)

        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        gate = h @ w[p + "mlp.gate_proj.weight"].T
        up = h @ w[p + "mlp.up_proj.weight"].T
        x = x + (gate * torch.sigmoid(gate) * up) @ w[p + "mlp.down_proj.weight"].T

    x = rms_norm(x[-1], w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else w["lm_head.weight"]
    return head @ x


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--prompt", required=True, help="comma-separated token ids")
    ap.add_argument("--max-new-tokens", type=int, required=True)
    ap.add_argument("--verbose", action="store_true",
                    help="print each step's top-two logit gap to stderr (small gaps explain mismatches)")
    args = ap.parse_args()

    with open(os.path.join(args.dir, "config.json")) as f:
        cfg = json.load(f)
    weights = read_checkpoint(args.dir)
    heads = cfg["num_attention_heads"]
    inv = inv_freq(cfg, cfg.get("head_dim") or cfg["hidden_size"] // heads)

    ids = [int(t) for t in args.prompt.split(",")]
    new = []
    for _ in range(args.max_new_tokens):
        logits = forward(weights, cfg, ids, inv)
        token = int(torch.argmax(logits))  # the first maximum, as dyno's argmax
        if args.verbose:
            top = torch.topk(logits, 2).values
            print("token %d gap %.3g" % (token, float(top[0] - top[1])), file=sys.stderr)
        ids.append(token)
        new.append(token)
    print(",".join(str(t) for t in new))


if __name__ == "__main__":
    main()
