#!/usr/bin/env python3
"""timm's ViT-L/16 (random weights, bf16, eager; with --compile also
through torch.compile) on the same card as the peer of
`dyno run --workload vit --model vit-l16`: images/s at batch 256."""
import sys

import timm
import torch


def main():
    compiled = "--compile" in sys.argv[1:]
    model = timm.create_model("vit_large_patch16_224", pretrained=False).cuda().to(torch.bfloat16).eval()
    forward = torch.compile(model.forward_features) if compiled else model.forward_features
    x = torch.randn(256, 3, 224, 224, device="cuda", dtype=torch.bfloat16)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    with torch.no_grad():
        for _ in range(3):
            forward(x)
        torch.cuda.synchronize()
        times = []
        for _ in range(10):
            start.record()
            forward(x)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
    ms = sorted(times)[len(times) // 2]
    print("timm vit_large_patch16_224 %s bf16, batch 256: %.1f ms, %.0f img/s"
          % ("torch.compile" if compiled else "eager", ms, 256e3 / ms))


if __name__ == "__main__":
    main()
