#!/usr/bin/env python3
"""Which GELU cuBLASLt's epilogue computes: PyTorch's _addmm_activation
(use_gelu=True) runs the GEMM with CUBLASLT_EPILOGUE_GELU_BIAS on CUDA; its
f32 output against the erf and the tanh forms of GELU of the same GEMM."""
import torch
import torch.nn.functional as F

torch.manual_seed(0)
a = torch.randn(512, 256, device="cuda") * 0.2
w = torch.randn(256, 1024, device="cuda") * 0.2
bias = torch.randn(1024, device="cuda")
torch.backends.cuda.matmul.allow_tf32 = False
fused = torch._addmm_activation(bias, a, w, use_gelu=True)
plain = torch.addmm(bias, a, w)
for form in ("none", "tanh"):
    err = (fused - F.gelu(plain, approximate=form)).abs().max().item()
    print("cuBLASLt GELU epilogue vs gelu(approximate=%r): max abs difference %.3g" % (form, err))
