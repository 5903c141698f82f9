#!/usr/bin/env python3
"""PyTorch reference for bench/attention.cu: scaled_dot_product_attention forward and backward TFLOP/s at the
training shape (B=4, T=4096, 16 heads, causal, bf16) for (d_qk, d_v) in (64,64), (128,128), (192,128), with
PyTorch's default backend choice and with the cuDNN backend forced (torch.nn.attention.sdpa_kernel).

Tensors are made in latte's (B, T, H, D) layout and viewed as (B, H, T, D), as a model would pass them.
FLOPs as in bench/attention.cu: forward 2 B H T T (d_qk + d_v) / 2 (causal), backward 2.5x the forward.
Timing: CUDA events, one call between two events, the backends interleaved in rounds (as bench/attention.cu
times latte's implementations), median; the backward is timed alone (torch.autograd.grad on a fresh forward
graph). Prints "RESULT name value" lines, the backend PyTorch's default choice runs at each shape
(torch._fused_sdp_choice: on H100 with cuDNN >= 9.15 PyTorch puts cuDNN first, so "default" and "cudnn" are then
the same library timed twice) and a small table.
"""
import math
import random
import sys

import torch
import torch.nn.functional as F

try:
    from torch.nn.attention import SDPBackend, sdpa_kernel
except ImportError:  # older PyTorch
    SDPBackend = None
    sdpa_kernel = None


def timed_ms(fn, pre=None):
    """One call of fn between two CUDA events (pre, if given, runs untimed before it)."""
    if pre is not None:
        pre()
    a = torch.cuda.Event(enable_timing=True)
    b = torch.cuda.Event(enable_timing=True)
    a.record()
    fn()
    b.record()
    b.synchronize()
    return a.elapsed_time(b)


def interleaved_median_ms(impls, rounds=6, reps=8):
    """impls: {name: (fn, pre)}. Timed in interleaved rounds in shuffled orders (one warm-up call and `reps` timed
    calls of each per round), as bench/attention.cu does; each one's median over all its timed calls. The same
    library timed first in a fixed order was measured up to 6% faster than when timed second."""
    times = {name: [] for name in impls}
    names = list(impls)
    rng = random.Random(12345)
    for _ in range(rounds):
        rng.shuffle(names)  # a new order each round: no fixed predecessor
        for name in names:
            fn, pre = impls[name]
            timed_ms(fn, pre)
            times[name] += [timed_ms(fn, pre) for _ in range(reps)]
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def default_choice(q, k, v, scale):
    """Name of the backend F.scaled_dot_product_attention picks by default for these inputs."""
    try:
        idx = int(torch._fused_sdp_choice(q, k, v, None, 0.0, True, scale=scale))
    except Exception as e:  # private API: may change between versions
        return f"unknown ({str(e).splitlines()[0][:80]})"
    names = {int(v): name for name, v in SDPBackend.__members__.items()} if SDPBackend is not None else {}
    return names.get(idx, str(idx))


def bench(dqk, dv, backends):
    """{backend: (fwd ms, bwd ms)} at (dqk, dv), the backends' calls interleaved."""
    B, T, H = 4, 4096, 16
    dev = "cuda"
    q = torch.randn(B, T, H, dqk, device=dev, dtype=torch.bfloat16).transpose(1, 2).requires_grad_()
    k = torch.randn(B, T, H, dqk, device=dev, dtype=torch.bfloat16).transpose(1, 2).requires_grad_()
    v = torch.randn(B, T, H, dv, device=dev, dtype=torch.bfloat16).transpose(1, 2).requires_grad_()
    dout = torch.randn(B, T, H, dv, device=dev, dtype=torch.bfloat16).transpose(1, 2)
    scale = 1.0 / math.sqrt(dqk)
    print(f"torch default backend at ({dqk},{dv}): {default_choice(q, k, v, scale)}", flush=True)

    def under(backend, fn):
        def call():
            if backend == "cudnn":
                with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                    return fn()
            return fn()
        return call

    def fwd():
        with torch.no_grad():
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)

    holder = {}

    def make_graph():  # the backward is timed alone, on a fresh forward graph made before each timed call
        holder["o"] = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)

    def bwd():
        torch.autograd.grad(holder["o"], (q, k, v), dout)

    ok = []
    for backend in backends:  # a backend may refuse a shape (e.g. d_qk != d_v)
        try:
            under(backend, make_graph)()
            bwd()
            ok.append(backend)
        except Exception as e:
            print(f"torch {backend} ({dqk},{dv}): not run: {str(e).splitlines()[0][:200]}")
    f = interleaved_median_ms({b: (under(b, fwd), None) for b in ok})
    bw = interleaved_median_ms({b: (bwd, under(b, make_graph)) for b in ok})
    return {b: (f[b], bw[b]) for b in ok}


def main():
    if not torch.cuda.is_available():
        print("attention_bench.py: no CUDA device")
        return 0
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, cudnn {torch.backends.cudnn.version()}")
    rows = []
    backends = ["default", "cudnn"] if sdpa_kernel is not None else ["default"]
    for dqk, dv in [(64, 64), (128, 128), (192, 128)]:
        fwd_flops = 2.0 * 4 * 16 * 4096 * 4096 * (dqk + dv) / 2.0
        for backend, (f_ms, b_ms) in bench(dqk, dv, backends).items():
            f_tf, b_tf = fwd_flops / (f_ms * 1e-3) / 1e12, 2.5 * fwd_flops / (b_ms * 1e-3) / 1e12
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
