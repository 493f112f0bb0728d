#!/usr/bin/env python3
"""A ViT checkpoint in Hugging Face's ViTModel layout, pixels, and the last
hidden state computed independently in float64 with PyTorch.

usage: vit_reference.py OUTDIR [--dtype f32|bf16] [--seed S] [--image-size PX]
writes OUTDIR/config.json, OUTDIR/model.safetensors, OUTDIR/pixels.f32 and
OUTDIR/expected.f32 (batch x tokens x hidden, float32). The checkpoint
depends on the seed alone; with --image-size the pixels are of that size
and the position embeddings are interpolated as transformers' ViTModel does
with interpolate_pos_encoding=True."""
import argparse
import json
import os
import struct

import torch

CFG = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
           image_size=32, patch_size=8, num_channels=3, layer_norm_eps=1e-12, qkv_bias=True,
           hidden_act="gelu", architectures=["ViTModel"], model_type="vit")


def tensors(g, dtype):
    h, i, c, p = CFG["hidden_size"], CFG["intermediate_size"], CFG["num_channels"], CFG["patch_size"]
    t = (CFG["image_size"] // p) ** 2 + 1
    w = {}

    def r(*shape, scale=0.2, offset=0.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale + offset).to(dtype)

    w["embeddings.cls_token"] = r(1, 1, h, scale=1.0)
    w["embeddings.position_embeddings"] = r(1, t, h, scale=0.5)
    w["embeddings.patch_embeddings.projection.weight"] = r(h, c, p, p, scale=0.1)
    w["embeddings.patch_embeddings.projection.bias"] = r(h)
    for l in range(CFG["num_hidden_layers"]):
        pre = "encoder.layer.%d." % l
        for ln in ("layernorm_before", "layernorm_after"):
            w[pre + ln + ".weight"] = r(h, scale=0.1, offset=1.0)
            w[pre + ln + ".bias"] = r(h, scale=0.1)
        for name in ("query", "key", "value"):
            w[pre + "attention.attention.%s.weight" % name] = r(h, h, scale=0.15)
            w[pre + "attention.attention.%s.bias" % name] = r(h)
        w[pre + "attention.output.dense.weight"] = r(h, h, scale=0.15)
        w[pre + "attention.output.dense.bias"] = r(h)
        w[pre + "intermediate.dense.weight"] = r(i, h, scale=0.15)
        w[pre + "intermediate.dense.bias"] = r(i)
        w[pre + "output.dense.weight"] = r(h, i, scale=0.1)
        w[pre + "output.dense.bias"] = r(h)
    w["layernorm.weight"] = r(h, scale=0.1, offset=1.0)
    w["layernorm.bias"] = r(h, scale=0.1)
    return w


def save_safetensors(path, w):
    header, blobs, offset = {}, [], 0
    for name, t in w.items():
        if t.dtype == torch.bfloat16:
            raw, code = t.contiguous().view(torch.int16).numpy().tobytes(), "BF16"
        else:
            raw, code = t.contiguous().numpy().tobytes(), "F32"
        header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def layer_norm(x, w, b):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + CFG["layer_norm_eps"]) * w + b


def interpolate_pos_encoding(pos, size):
    """transformers' ViTEmbeddings.interpolate_pos_encoding for square images
    of `size` pixels: the patch rows resampled bicubically to the new grid
    with F.interpolate(size=...), align_corners=False; the CLS row kept."""
    side, new = int((pos.shape[1] - 1) ** 0.5), size // CFG["patch_size"]
    if new == side:
        return pos
    grid = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    grid = torch.nn.functional.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
    return torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, new * new, -1)], 1)


def forward(w, pixels):
    d = {k: v.to(torch.float64) for k, v in w.items()}
    h, heads, p = CFG["hidden_size"], CFG["num_attention_heads"], CFG["patch_size"]
    n = pixels.shape[0]
    patches = torch.nn.functional.conv2d(pixels, d["embeddings.patch_embeddings.projection.weight"],
                                         d["embeddings.patch_embeddings.projection.bias"], stride=p)
    x = patches.flatten(2).transpose(1, 2)
    pos = interpolate_pos_encoding(d["embeddings.position_embeddings"], pixels.shape[-1])
    x = torch.cat([d["embeddings.cls_token"].expand(n, 1, h), x], 1) + pos
    hd = h // heads
    for l in range(CFG["num_hidden_layers"]):
        pre = "encoder.layer.%d." % l
        y = layer_norm(x, d[pre + "layernorm_before.weight"], d[pre + "layernorm_before.bias"])

        def proj(name):
            out = y @ d[pre + "attention.attention.%s.weight" % name].T + d[pre + "attention.attention.%s.bias" % name]
            return out.view(n, -1, heads, hd).transpose(1, 2)
        q, k, v = proj("query"), proj("key"), proj("value")
        a = torch.softmax(q @ k.transpose(-1, -2) / hd ** 0.5, -1) @ v
        a = a.transpose(1, 2).reshape(n, -1, h)
        x = x + a @ d[pre + "attention.output.dense.weight"].T + d[pre + "attention.output.dense.bias"]
        y = layer_norm(x, d[pre + "layernorm_after.weight"], d[pre + "layernorm_after.bias"])
        y = torch.nn.functional.gelu(y @ d[pre + "intermediate.dense.weight"].T + d[pre + "intermediate.dense.bias"])
        x = x + y @ d[pre + "output.dense.weight"].T + d[pre + "output.dense.bias"]
    return layer_norm(x, d["layernorm.weight"], d["layernorm.bias"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--image-size", type=int, default=CFG["image_size"])
    args = ap.parse_args()
    os.makedirs(args.outdir, exist_ok=True)
    g = torch.Generator().manual_seed(args.seed)
    w = tensors(g, torch.float32 if args.dtype == "f32" else torch.bfloat16)
    save_safetensors(os.path.join(args.outdir, "model.safetensors"), w)
    with open(os.path.join(args.outdir, "config.json"), "w") as f:
        json.dump(dict(CFG, torch_dtype="float32" if args.dtype == "f32" else "bfloat16"), f, indent=1)
    s, c = args.image_size, CFG["num_channels"]
    pixels = torch.rand(2, c, s, s, generator=g, dtype=torch.float64) * 2 - 1
    pixels.to(torch.float32).numpy().tofile(os.path.join(args.outdir, "pixels.f32"))
    out = forward(w, pixels.to(torch.float32).to(torch.float64))
    out.to(torch.float32).numpy().tofile(os.path.join(args.outdir, "expected.f32"))


if __name__ == "__main__":
    main()
