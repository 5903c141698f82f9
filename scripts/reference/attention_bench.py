#!/usr/bin/env python3
"""PyTorch reference for bench/attention.cu: scaled_dot_product_attention forward and backward TFLOP/s at the
training shape (B=4, T=4096, 16 heads, causal, bf16) for (d_qk, d_v) in (64,64), (128,128), (192,128), with
PyTorch's default backend choice and with the cuDNN backend forced (torch.nn.attention.sdpa_kernel).

Tensors are made in latte's (B, T, H, D) layout and viewed as (B, H, T, D), as a model would pass them.
FLOPs as in bench/attention.cu: forward 2 B H T T (d_qk + d_v) / 2 (causal), backward 2.5x the forward.
Timing: CUDA events, warm-up, median of repeats; the backward is timed alone (torch.autograd.grad on a fresh
forward graph). Prints "RESULT name value" lines and a small table.
"""
import math
import sys

import torch
import torch.nn.functional as F

try:
    from torch.nn.attention import SDPBackend, sdpa_kernel
except ImportError:  # older PyTorch
    SDPBackend = None
    sdpa_kernel = None


def median_ms(fn, warmup=3, reps=20):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def bench(dqk, dv, backend):
    B, T, H = 4, 4096, 16
    dev = "cuda"
    q = torch.randn(B, T, H, dqk, device=dev, dtype=torch.bfloat16).transpose(1, 2).requires_grad_()
    k = torch.randn(B, T, H, dqk, device=dev, dtype=torch.bfloat16).transpose(1, 2).requires_grad_()
    v = torch.randn(B, T, H, dv, device=dev, dtype=torch.bfloat16).transpose(1, 2).requires_grad_()
    dout = torch.randn(B, T, H, dv, device=dev, dtype=torch.bfloat16).transpose(1, 2)
    scale = 1.0 / math.sqrt(dqk)

    def run(fn):
        if backend == "cudnn":
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                return fn()
        return fn()

    def fwd():
        with torch.no_grad():
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)

    f_ms = run(lambda: median_ms(fwd))
    holder = {}

    def make_graph():
        holder["o"] = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)

    def bwd_timed():
        times = []
        for i in range(23):
            make_graph()
            a = torch.cuda.Event(enable_timing=True)
            b = torch.cuda.Event(enable_timing=True)
            a.record()
            torch.autograd.grad(holder["o"], (q, k, v), dout)
            b.record()
            b.synchronize()
            if i >= 3:
                times.append(a.elapsed_time(b))
        times.sort()
        return times[len(times) // 2]

    b_ms = run(bwd_timed)
    fwd_flops = 2.0 * B * H * T * T * (dqk + dv) / 2.0
    return f_ms, b_ms, fwd_flops / (f_ms * 1e-3) / 1e12, 2.5 * fwd_flops / (b_ms * 1e-3) / 1e12


def main():
    if not torch.cuda.is_available():
        print("attention_bench.py: no CUDA device")
        return 0
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, cudnn {torch.backends.cudnn.version()}")
    rows = []
    for dqk, dv in [(64, 64), (128, 128), (192, 128)]:
        for backend in ["default", "cudnn"]:
            if backend == "cudnn" and sdpa_kernel is None:
                continue
            try:
                f_ms, b_ms, f_tf, b_tf = bench(dqk, dv, backend)
            except Exception as e:  # a backend may refuse a shape (e.g. d_qk != d_v)
                print(f"torch {backend} ({dqk},{dv}): not run: {str(e).splitlines()[0][:200]}")
                continue
            tag = f"{dqk}_{dv}"
            print(f"RESULT torch_{backend}_fwd_{tag} {f_tf:.4f}")
            print(f"RESULT torch_{backend}_bwd_{tag} {b_tf:.4f}")
            rows.append((backend, dqk, dv, f_ms, b_ms, f_tf, b_tf))
            torch.cuda.empty_cache()
    print(f"\n{'torch sdpa':<12} {'dims':<10} {'fwd ms':>9} {'bwd ms':>9} {'fwd TF/s':>9} {'bwd TF/s':>9}")
    for backend, dqk, dv, f_ms, b_ms, f_tf, b_tf in rows:
        print(f"{backend:<12} {f'({dqk},{dv})':<10} {f_ms:9.3f} {b_ms:9.3f} {f_tf:9.1f} {b_tf:9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
