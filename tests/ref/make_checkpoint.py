#!/usr/bin/python3
"""Writes a tiny random checkpoint as Hugging Face lays it out: config.json
plus safetensors (one file, or shards with an index), the files written by
hand so that no safetensors or transformers package is needed. Dense Llama
and Qwen2, and the MoE models Mixtral, Qwen2-MoE, OLMoE and Qwen3-MoE with
their experts stored one tensor each, as the published checkpoints do.

    make_checkpoint.py OUTDIR --arch ARCH --dtype f32|f16|bf16 --tied 0|1
        --layout toplevel|rope_parameters --rope default|llama3 --shards N --seed S

ARCH is llama, qwen2, mixtral, qwen2_moe, olmoe or qwen3_moe.
"""
import argparse
import json
import os
import struct
import sys

import torch

HIDDEN, INTER, LAYERS, HEADS, KV_HEADS, VOCAB, HEAD_DIM = 64, 128, 2, 4, 2, 256, 16
ROPE_THETA = 10000.0
# Router logits of std ~0.4: a flat softmax, so that the k chosen
# probabilities sum well below 1 and renormalising them or not, or dropping
# the k-th expert, changes the decoded tokens. (Their margins, relative to
# the logits' spread, do not depend on this scale.)
ROUTER_SCALE = 0.05
# Small enough that the prompt spans all three llama3 regions at head_dim 16
# (wavelengths 6 to 20000 against 16 and 64).
LLAMA3 = {"factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 64}
TORCH_DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
ST_DTYPES = {"f32": "F32", "f16": "F16", "bf16": "BF16"}
HF_DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}

# Per architecture: the transformers class, q/k/v biases, the q/k norm
# ("whole": over the full projection, OLMoE; "head": per head, Qwen3), and
# for MoE models the experts, the router's k, an expert's intermediate size
# and the shared expert's (Qwen2-MoE). Qwen3-MoE's head_dim differs from
# hidden / heads, as in the published models, so that the two cannot be
# confused; OLMoE's must equal it (its q_norm is hidden_size wide).
ARCHS = {
    "llama": dict(cls="LlamaForCausalLM"),
    "qwen2": dict(cls="Qwen2ForCausalLM", qkv_bias=True),
    "mixtral": dict(cls="MixtralForCausalLM", experts=8, top_k=2, expert_ffn=48),
    "qwen2_moe": dict(cls="Qwen2MoeForCausalLM", qkv_bias=True, experts=8, top_k=4,
                      expert_ffn=32, shared_ffn=64),
    "olmoe": dict(cls="OlmoeForCausalLM", qk_norm="whole", experts=8, top_k=2, expert_ffn=32),
    "qwen3_moe": dict(cls="Qwen3MoeForCausalLM", qk_norm="head", head_dim=32, experts=8, top_k=4,
                      expert_ffn=48),
}


def expert_names(arch, layer, expert):
    """(gate, up, down) weight names of one expert, as the Hub's checkpoints
    name them: Mixtral's w1 is the gate, w3 the up and w2 the down projection."""
    if arch == "mixtral":
        p = "model.layers.%d.block_sparse_moe.experts.%d." % (layer, expert)
        return p + "w1.weight", p + "w3.weight", p + "w2.weight"
    p = "model.layers.%d.mlp.experts.%d." % (layer, expert)
    return p + "gate_proj.weight", p + "up_proj.weight", p + "down_proj.weight"


def router_name(arch, layer):
    block = "block_sparse_moe" if arch == "mixtral" else "mlp"
    return "model.layers.%d.%s.gate.weight" % (layer, block)


def make_tensors(arch, tied, seed):
    """Name -> float32 tensor, in the order HF's state_dict lists them.

    Scales are chosen so that greedy decoding is not degenerate: with the
    usual ~0.05 the attention is near-uniform and the model repeats one
    token, which would hide RoPE, masking and cache bugs. Sharp q/k make
    the output depend on positions; unit embeddings on the tokens."""
    spec = ARCHS[arch]
    gen = torch.Generator().manual_seed(seed)

    def normal(*shape, scale):
        return torch.randn(*shape, generator=gen, dtype=torch.float32) * scale

    def norm_weight(size=HIDDEN, centre=1.0):
        # around 1 as trained norms are, not exactly 1, so a kernel that
        # ignores the weight is caught
        return centre + normal(size, scale=0.1 * centre)

    head_dim = spec.get("head_dim", HEAD_DIM)
    q_dim, kv_dim = HEADS * head_dim, KV_HEADS * head_dim
    mat, qk = 0.25, 0.5
    out = {"model.embed_tokens.weight": normal(VOCAB, HIDDEN, scale=1.0)}
    for i in range(LAYERS):
        p = "model.layers.%d." % i
        out[p + "input_layernorm.weight"] = norm_weight()
        out[p + "self_attn.q_proj.weight"] = normal(q_dim, HIDDEN, scale=qk)
        out[p + "self_attn.k_proj.weight"] = normal(kv_dim, HIDDEN, scale=qk)
        out[p + "self_attn.v_proj.weight"] = normal(kv_dim, HIDDEN, scale=mat)
        if spec.get("qkv_bias"):
            out[p + "self_attn.q_proj.bias"] = normal(q_dim, scale=0.1)
            out[p + "self_attn.k_proj.bias"] = normal(kv_dim, scale=0.1)
            out[p + "self_attn.v_proj.bias"] = normal(kv_dim, scale=0.1)
        out[p + "self_attn.o_proj.weight"] = normal(HIDDEN, q_dim, scale=mat)
        if spec.get("qk_norm"):
            # a normed q or k has unit RMS whatever the projection's scale:
            # weights around 2.5 keep the attention as sharp as above
            whole = spec["qk_norm"] == "whole"
            out[p + "self_attn.q_norm.weight"] = norm_weight(q_dim if whole else head_dim, 2.5)
            out[p + "self_attn.k_norm.weight"] = norm_weight(kv_dim if whole else head_dim, 2.5)
        out[p + "post_attention_layernorm.weight"] = norm_weight()
        if "experts" not in spec:
            out[p + "mlp.gate_proj.weight"] = normal(INTER, HIDDEN, scale=mat)
            out[p + "mlp.up_proj.weight"] = normal(INTER, HIDDEN, scale=mat)
            out[p + "mlp.down_proj.weight"] = normal(HIDDEN, INTER, scale=mat)
            continue
        out[router_name(arch, i)] = normal(spec["experts"], HIDDEN, scale=ROUTER_SCALE)
        ffn = spec["expert_ffn"]
        for j in range(spec["experts"]):
            gate, up, down = expert_names(arch, i, j)
            out[gate] = normal(ffn, HIDDEN, scale=mat)
            out[up] = normal(ffn, HIDDEN, scale=mat)
            out[down] = normal(HIDDEN, ffn, scale=mat)
        if "shared_ffn" in spec:
            shared = spec["shared_ffn"]
            out[p + "mlp.shared_expert.gate_proj.weight"] = normal(shared, HIDDEN, scale=mat)
            out[p + "mlp.shared_expert.up_proj.weight"] = normal(shared, HIDDEN, scale=mat)
            out[p + "mlp.shared_expert.down_proj.weight"] = normal(HIDDEN, shared, scale=mat)
            out[p + "mlp.shared_expert_gate.weight"] = normal(1, HIDDEN, scale=mat)
    out["model.norm.weight"] = norm_weight()
    if not tied:
        out["lm_head.weight"] = normal(VOCAB, HIDDEN, scale=0.05)
    return out


def tensor_bytes(t, dtype):
    """Little-endian bytes of t rounded to dtype (round to nearest even)."""
    t = t.to(TORCH_DTYPES[dtype]).contiguous()
    if dtype == "bf16":
        t = t.view(torch.int16)  # numpy has no bfloat16
    data = t.numpy().tobytes()
    return data if sys.byteorder == "little" else t.numpy().byteswap().tobytes()


def write_safetensors(path, tensors, dtype):
    header, blobs, offset = {}, [], 0
    for name, t in tensors:
        data = tensor_bytes(t, dtype)
        header[name] = {"dtype": ST_DTYPES[dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # pad as the reference writer does, to align the data
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for data in blobs:
            f.write(data)
    return offset


def moe_fields(arch, spec):
    """The MoE fields of config.json, named and valued as in the published
    configs (Mixtral-8x7B, Qwen1.5-MoE-A2.7B, OLMoE-1B-7B, Qwen3-30B-A3B)."""
    if arch == "mixtral":  # renormalises its top-k always: no norm_topk_prob
        return {"num_local_experts": spec["experts"], "num_experts_per_tok": spec["top_k"],
                "intermediate_size": spec["expert_ffn"], "router_aux_loss_coef": 0.02,
                "output_router_logits": False, "sliding_window": None}
    fields = {"num_experts": spec["experts"], "num_experts_per_tok": spec["top_k"],
              "norm_topk_prob": arch == "qwen3_moe", "router_aux_loss_coef": 0.001,
              "output_router_logits": False}
    if arch == "olmoe":
        fields.update(intermediate_size=spec["expert_ffn"], attention_bias=False, clip_qkv=None,
                      router_aux_loss_coef=0.01)
        return fields
    # Qwen2-MoE and Qwen3-MoE: intermediate_size is for dense layers, of
    # which there are none here (decoder_sparse_step 1, no mlp_only_layers)
    fields.update(intermediate_size=INTER, moe_intermediate_size=spec["expert_ffn"],
                  decoder_sparse_step=1, mlp_only_layers=[], use_sliding_window=False,
                  max_window_layers=LAYERS)
    if arch == "qwen2_moe":  # a window that use_sliding_window false switches off, as Qwen1.5's
        fields.update(shared_expert_intermediate_size=spec["shared_ffn"], sliding_window=32768)
    else:
        fields.update(head_dim=spec["head_dim"], attention_bias=False, sliding_window=None)
    return fields


def make_config(args):
    spec = ARCHS[args.arch]
    cfg = {
        "architectures": [spec["cls"]],
        "model_type": args.arch,
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "intermediate_size": INTER,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": HEAD_DIM,
        "vocab_size": VOCAB,
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-5 if args.arch in ("llama", "mixtral", "olmoe") else 1e-6,
        "tie_word_embeddings": bool(args.tied),
    }
    if args.arch == "llama":
        cfg["attention_bias"] = False
        cfg["mlp_bias"] = False
    elif args.arch == "qwen2":
        cfg["use_sliding_window"] = False
    if "experts" in spec:  # as the published configs: head_dim only where it is not hidden / heads
        del cfg["head_dim"]
        cfg.update(moe_fields(args.arch, spec))
    scaling = dict(LLAMA3, rope_type="llama3") if args.rope == "llama3" else None
    if args.layout == "toplevel":
        cfg["rope_theta"] = ROPE_THETA
        cfg["rope_scaling"] = scaling
        cfg["torch_dtype"] = HF_DTYPES[args.dtype]
    else:  # transformers 5
        cfg["rope_parameters"] = dict(scaling or {"rope_type": "default"}, rope_theta=ROPE_THETA)
        cfg["dtype"] = HF_DTYPES[args.dtype]
    return cfg


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir")
    ap.add_argument("--arch", choices=list(ARCHS), default="llama")
    ap.add_argument("--dtype", choices=sorted(TORCH_DTYPES), default="f32")
    ap.add_argument("--tied", type=int, choices=[0, 1], default=0)
    ap.add_argument("--layout", choices=["toplevel", "rope_parameters"], default="toplevel")
    ap.add_argument("--rope", choices=["default", "llama3"], default="default")
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.shards < 1:
        ap.error("--shards must be at least 1")

    os.makedirs(args.outdir, exist_ok=True)
    with open(os.path.join(args.outdir, "config.json"), "w") as f:
        json.dump(make_config(args), f, indent=2)
        f.write("\n")

    tensors = list(make_tensors(args.arch, args.tied, args.seed).items())
    if args.shards == 1:
        write_safetensors(os.path.join(args.outdir, "model.safetensors"), tensors, args.dtype)
        return
    per_shard = -(-len(tensors) // args.shards)
    weight_map, total = {}, 0
    for i in range(args.shards):
        name = "model-%05d-of-%05d.safetensors" % (i + 1, args.shards)
        chunk = tensors[i * per_shard:(i + 1) * per_shard]
        total += write_safetensors(os.path.join(args.outdir, name), chunk, args.dtype)
        weight_map.update((tname, name) for tname, _ in chunk)
    with open(os.path.join(args.outdir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
