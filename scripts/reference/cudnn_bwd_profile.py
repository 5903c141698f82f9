"""PyTorch's cuDNN SDPA forward + backward at B=4, T=4096, H=16, (64,64), causal, three times, for a profiler.

Sets PyTorch's cuDNN kernels beside latte's own cuDNN call of the same shape (`bench_attention --profile
cudnn_bwd64`), e.g. on the GPU machine:
    ncu --metrics gpu__time_duration.sum --kernel-name regex:flash_bprop --csv --page raw \
        python3 scripts/reference/cudnn_bwd_profile.py
The tensors have latte's memory layout (B, T, H, D), seen by SDPA as (B, H, T, D) through a transpose.
"""
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

B, T, H, D = 4, 4096, 16, 64


def bshd():
    return torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16).transpose(1, 2)


def main():
    q, k, v, dout = bshd().requires_grad_(), bshd().requires_grad_(), bshd().requires_grad_(), bshd()
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        for _ in range(3):
            q.grad = k.grad = v.grad = None
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.125)
            out.backward(dout)
    torch.cuda.synchronize()
    print("dq strides", q.grad.stride(), "out strides", out.stride())


if __name__ == "__main__":
    main()
