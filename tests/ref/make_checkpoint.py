#!/usr/bin/python3
"""Writes a tiny random Llama or Qwen2 checkpoint as Hugging Face lays it out:
config.json plus safetensors (one file, or shards with an index), the files
written by hand so that no safetensors or transformers package is needed.

    make_checkpoint.py OUTDIR --arch llama|qwen2 --dtype f32|f16|bf16 --tied 0|1
        --layout toplevel|rope_parameters --rope default|llama3 --shards N --seed S
"""
import argparse
import json
import os
import struct
import sys

import torch

HIDDEN, INTER, LAYERS, HEADS, KV_HEADS, VOCAB, HEAD_DIM = 64, 128, 2, 4, 2, 256, 16
ROPE_THETA = 10000.0
# Small enough that the prompt spans all three llama3 regions at head_dim 16
# (wavelengths 6 to 20000 against 16 and 64).
LLAMA3 = {"factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 64}
TORCH_DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
ST_DTYPES = {"f32": "F32", "f16": "F16", "bf16": "BF16"}
HF_DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}


def make_tensors(arch, tied, seed):
    """Name -> float32 tensor, in the order HF's state_dict lists them.

    Scales are chosen so that greedy decoding is not degenerate: with the
    usual ~0.05 the attention is near-uniform and the model repeats one
    token, which would hide RoPE, masking and cache bugs. Sharp q/k make
    the output depend on positions; unit embeddings on the tokens."""
    gen = torch.Generator().manual_seed(seed)

    def normal(*shape, scale):
        return torch.randn(*shape, generator=gen, dtype=torch.float32) * scale

    def norm_weight():
        # around 1 as trained norms are, not exactly 1, so a kernel that
        # ignores the weight is caught
        return 1.0 + normal(HIDDEN, scale=0.1)

    q_dim, kv_dim = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
    mat, qk = 0.25, 0.5
    out = {"model.embed_tokens.weight": normal(VOCAB, HIDDEN, scale=1.0)}
    for i in range(LAYERS):
        p = "model.layers.%d." % i
        out[p + "input_layernorm.weight"] = norm_weight()
        out[p + "self_attn.q_proj.weight"] = normal(q_dim, HIDDEN, scale=qk)
        out[p + "self_attn.k_proj.weight"] = normal(kv_dim, HIDDEN, scale=qk)
        out[p + "self_attn.v_proj.weight"] = normal(kv_dim, HIDDEN, scale=mat)
        if arch == "qwen2":
            out[p + "self_attn.q_proj.bias"] = normal(q_dim, scale=0.1)
            out[p + "self_attn.k_proj.bias"] = normal(kv_dim, scale=0.1)
            out[p + "self_attn.v_proj.bias"] = normal(kv_dim, scale=0.1)
        out[p + "self_attn.o_proj.weight"] = normal(HIDDEN, q_dim, scale=mat)
        out[p + "post_attention_layernorm.weight"] = norm_weight()
        out[p + "mlp.gate_proj.weight"] = normal(INTER, HIDDEN, scale=mat)
        out[p + "mlp.up_proj.weight"] = normal(INTER, HIDDEN, scale=mat)
        out[p + "mlp.down_proj.weight"] = normal(HIDDEN, INTER, scale=mat)
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


def make_config(args):
    cfg = {
        "architectures": ["LlamaForCausalLM" if args.arch == "llama" else "Qwen2ForCausalLM"],
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
        "rms_norm_eps": 1e-5 if args.arch == "llama" else 1e-6,
        "tie_word_embeddings": bool(args.tied),
    }
    if args.arch == "llama":
        cfg["attention_bias"] = False
        cfg["mlp_bias"] = False
    else:
        cfg["use_sliding_window"] = False
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
    ap.add_argument("--arch", choices=["llama", "qwen2"], default="llama")
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
