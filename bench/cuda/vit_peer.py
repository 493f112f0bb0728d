#!/usr/bin/env python3
"""timm's ViT-L/16 (random weights, bf16, eager) on the same card as the
peer of `dyno run --workload vit --model vit-l16`: images/s at batch 256."""
import timm
import torch


def main():
    model = timm.create_model("vit_large_patch16_224", pretrained=False).cuda().to(torch.bfloat16).eval()
    x = torch.randn(256, 3, 224, 224, device="cuda", dtype=torch.bfloat16)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    with torch.no_grad():
        for _ in range(3):
            model.forward_features(x)
        torch.cuda.synchronize()
        times = []
        for _ in range(10):
            start.record()
            model.forward_features(x)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
    ms = sorted(times)[len(times) // 2]
    print("timm vit_large_patch16_224 eager bf16, batch 256: %.1f ms, %.0f img/s" % (ms, 256e3 / ms))


if __name__ == "__main__":
    main()
