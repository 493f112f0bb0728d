#!/usr/bin/python3
"""Greedy decoding with a minimal forward pass in float64, the oracle that
`dyno generate` is compared against. Llama, Qwen2 and the MoE models Mixtral,
Qwen2-MoE, OLMoE and Qwen3-MoE.

    reference.py DIR --prompt 1,2,3 --max-new-tokens N [--verbose]

Prints the new token ids, comma-separated, on one line. Written from the
model definitions (RMSNorm, rotate-half RoPE, GQA causal attention, SwiGLU,
q/k/v biases for Qwen2 and Qwen2-MoE, q/k RMSNorm for OLMoE and Qwen3-MoE,
softmax top-k routing over SwiGLU experts, Qwen2-MoE's gated shared expert,
tied LM head), independently of dyno and without transformers. Weights are
read as stored (already rounded to their dtype); every step recomputes the
whole sequence, so there is no cache to get wrong.
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
MOE_TYPES = ("mixtral", "qwen2_moe", "olmoe", "qwen3_moe")


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


def swiglu(x, gate, up, down):
    g = x @ gate.T
    return (g * torch.sigmoid(g) * (x @ up.T)) @ down.T


def moe_names(cfg, p):
    """The router's weight name, and a function of the expert index giving
    its (gate, up, down) weight names."""
    if cfg["model_type"] == "mixtral":  # w1: gate, w3: up, w2: down
        block = p + "block_sparse_moe."
        return block + "gate.weight", lambda e: tuple(
            "%sexperts.%d.%s.weight" % (block, e, n) for n in ("w1", "w3", "w2"))
    block = p + "mlp."
    return block + "gate.weight", lambda e: tuple(
        "%sexperts.%d.%s.weight" % (block, e, n) for n in ("gate_proj", "up_proj", "down_proj"))


def is_sparse(cfg, layer):
    """Whether a layer's MLP is the MoE block (Qwen2-MoE and Qwen3-MoE may
    interleave dense layers; Mixtral and OLMoE never do)."""
    if cfg["model_type"] not in MOE_TYPES:
        return False
    if cfg["model_type"] in ("mixtral", "olmoe"):
        return True
    return (layer not in (cfg.get("mlp_only_layers") or [])
            and (layer + 1) % cfg.get("decoder_sparse_step", 1) == 0)


def moe(w, cfg, p, layer, h, margins):
    """Softmax over the router's logits, the k largest (ties: the lower
    expert), their probabilities renormalised to sum 1 for Mixtral and
    where norm_topk_prob says so, Σ p_e · expert_e(h); plus Qwen2-MoE's
    shared expert scaled by sigmoid(h · shared_expert_gate). Appends to
    margins each token's (gap between the k-th and (k+1)-th logit, spread of
    its logits, layer, token)."""
    router_name, expert_names = moe_names(cfg, p)
    experts = cfg.get("num_local_experts") or cfg["num_experts"]
    k = cfg["num_experts_per_tok"]
    renormalize = cfg["model_type"] == "mixtral" or cfg.get("norm_topk_prob", False)

    logits = h @ w[router_name].T  # [tokens, experts]
    ranked = torch.sort(logits, dim=-1, descending=True, stable=True)
    chosen = ranked.indices[:, :k]
    probs = logits.softmax(dim=-1).gather(1, chosen)
    if renormalize:
        probs = probs / probs.sum(dim=-1, keepdim=True)
    mix = torch.zeros(h.shape[0], experts, dtype=h.dtype).scatter(1, chosen, probs)
    for t in range(h.shape[0]):
        row = ranked.values[t]
        gap = float(row[k - 1] - row[k]) if k < experts else math.inf
        margins.append((gap, float(row[0] - row[-1]), layer, t))

    out = torch.zeros_like(h)
    for e in range(experts):
        used = mix[:, e] != 0
        if used.any():
            gate, up, down = (w[n] for n in expert_names(e))
            out[used] += mix[used, e, None] * swiglu(h[used], gate, up, down)
    shared = p + "mlp.shared_expert."
    if shared + "gate_proj.weight" in w:
        out += torch.sigmoid(h @ w[p + "mlp.shared_expert_gate.weight"].T) * swiglu(
            h, w[shared + "gate_proj.weight"], w[shared + "up_proj.weight"], w[shared + "down_proj.weight"])
    return out


def forward(w, cfg, ids, inv, margins):
    """Logits of the last position, float64. Router margins go to margins
    (see moe)."""
    hidden, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    kv_heads = cfg.get("num_key_value_heads") or heads
    head_dim = cfg.get("head_dim") or hidden // heads
    eps = cfg.get("rms_norm_eps", 1e-6)
    model_type = cfg["model_type"]
    biased = model_type in ("qwen2", "qwen2_moe") or cfg.get("attention_bias", False)
    clip = cfg.get("clip_qkv")
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
        q, k, v = proj("self_attn.q_proj", h), proj("self_attn.k_proj", h), proj("self_attn.v_proj", h)
        if model_type == "olmoe":  # one RMSNorm over all heads of q, one over k
            q = rms_norm(q, w[p + "self_attn.q_norm.weight"], eps)
            k = rms_norm(k, w[p + "self_attn.k_norm.weight"], eps)
        if clip is not None:
            q, k, v = q.clamp(-clip, clip), k.clamp(-clip, clip), v.clamp(-clip, clip)
        q = q.view(tokens, heads, head_dim)
        k = k.view(tokens, kv_heads, head_dim)
        v = v.view(tokens, kv_heads, head_dim)
        if model_type == "qwen3_moe":  # an RMSNorm over each head
            q = rms_norm(q, w[p + "self_attn.q_norm.weight"], eps)
            k = rms_norm(k, w[p + "self_attn.k_norm.weight"], eps)
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
        if is_sparse(cfg, i):
            x = x + moe(w, cfg, p, i, h, margins)
        else:
            x = x + swiglu(h, w[p + "mlp.gate_proj.weight"], w[p + "mlp.up_proj.weight"],
                           w[p + "mlp.down_proj.weight"])

    x = rms_norm(x[-1], w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else w["lm_head.weight"]
    return head @ x


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--prompt", required=True, help="comma-separated token ids")
    ap.add_argument("--max-new-tokens", type=int, required=True)
    ap.add_argument("--verbose", action="store_true",
                    help="print to stderr each step's top-two logit gap and, for MoE models, the "
                         "smallest router margin (small ones explain mismatches)")
    args = ap.parse_args()

    with open(os.path.join(args.dir, "config.json")) as f:
        cfg = json.load(f)
    weights = read_checkpoint(args.dir)
    heads = cfg["num_attention_heads"]
    inv = inv_freq(cfg, cfg.get("head_dim") or cfg["hidden_size"] // heads)

    ids = [int(t) for t in args.prompt.split(",")]
    new, margins = [], []
    for _ in range(args.max_new_tokens):
        logits = forward(weights, cfg, ids, inv, margins)
        token = int(torch.argmax(logits))  # the first maximum, as dyno's argmax
        if args.verbose:
            top = torch.topk(logits, 2).values
            gap, spread = float(top[0] - top[1]), float(logits.max() - logits.min())
            print("token %d gap %.3g (%.1f%% of the spread %.3g)" % (token, gap, 100 * gap / spread, spread),
                  file=sys.stderr)
        ids.append(token)
        new.append(token)
    if args.verbose and margins:
        # every step routes the whole sequence again; the worst token of all
        gap, spread, layer, token = min(margins, key=lambda m: m[0] / m[1])
        print("router: smallest gap between the k-th and (k+1)-th expert logit %.3g "
              "(%.2f%% of that token's logit spread %.3g), layer %d position %d"
              % (gap, 100 * gap / spread, spread, layer, token), file=sys.stderr)
    print(",".join(str(t) for t in new))


if __name__ == "__main__":
    main()
