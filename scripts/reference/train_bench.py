#!/usr/bin/env python3
"""PyTorch training-throughput reference for latte's models (issue 6: "next to the PyTorch reference").

Builds the same decoder as latte from a latte YAML config (MHA/GQA and the MLA family's latent-position
variants: mla, egmla with gate.position latent) as an nn.Module using F.scaled_dot_product_attention,
then times training steps (bf16 autocast, fused AdamW, fp32 master weights) eager and with torch.compile
on random tokens of the same batch shape latte uses (--accum N: N micro-batches per optimizer step). Prints one JSON line per mode:
    {"config": ..., "mode": "eager"|"compile", "tokens_per_s": ..., "step_ms": ..., "peak_mem_gb": ...}

    python3 scripts/reference/train_bench.py configs/models/egmla-125m.yaml --batch 16 --seq 1024 --steps 20
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from latte_ref import Config, inv_freq, load_model_section  # noqa: E402


def rope(x, cos, sin):
    """Rotate-half RoPE on the whole last dim of x (B, T, H, r); cos/sin (T, r/2)."""
    r = x.shape[-1] // 2
    x1, x2 = x[..., :r], x[..., r:]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], -1)


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.w, self.eps = nn.Parameter(torch.ones(d)), eps

    def forward(self, x):
        return F.rms_norm(x, (x.shape[-1],), self.w, self.eps)


class Attention(nn.Module):
    def __init__(self, cfg, a, layer):
        super().__init__()
        d, self.a, self.layer = cfg.d_model, a, layer
        lin = lambda i, o: nn.Linear(i, o, bias=False)  # noqa: E731
        if a.kind == "mha":
            self.wq, self.wk, self.wv = lin(d, a.n_heads * a.head_dim), lin(d, a.n_kv_heads * a.head_dim), lin(d, a.n_kv_heads * a.head_dim)
            self.wo = lin(a.n_heads * a.head_dim, d)
            self.rope_width = a.head_dim
        else:
            assert a.kind in ("mla", "egmla") and getattr(a, "gate_position", "latent") == "latent", a.kind
            H, dn, dr, dv, dc = a.n_heads, a.nope_dim, a.rope_dim, a.v_dim, a.kv_rank
            if a.q_rank:
                self.wq_a, self.q_norm, self.wq_b = lin(d, a.q_rank), RMSNorm(a.q_rank, cfg.norm_eps), lin(a.q_rank, H * (dn + dr))
            else:
                self.wq = lin(d, H * (dn + dr))
            self.wkv_a = lin(d, dc + dr)
            self.kv_norm = RMSNorm(dc, cfg.norm_eps) if a.kind == "mla" else nn.LayerNorm(dc, eps=cfg.norm_eps)
            if a.kind == "egmla":
                self.wgate = lin(a.gate_embed_dim, dc)
            self.wkv_b = lin(dc, H * (dn + dv))
            self.wo = lin(H * dv, d)
            self.rope_width = dr

    def forward(self, x, cos, sin, gate_e):
        a, (B, T, _) = self.a, x.shape
        if a.kind == "mha":
            q = rope(self.wq(x).view(B, T, a.n_heads, a.head_dim), cos, sin)
            k = rope(self.wk(x).view(B, T, a.n_kv_heads, a.head_dim), cos, sin)
            v = self.wv(x).view(B, T, a.n_kv_heads, a.head_dim)
            o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True,
                                               enable_gqa=a.n_kv_heads != a.n_heads)
            return self.wo(o.transpose(1, 2).reshape(B, T, -1))
        H, dn, dr, dv, dc = a.n_heads, a.nope_dim, a.rope_dim, a.v_dim, a.kv_rank
        q = (self.wq_b(self.q_norm(self.wq_a(x))) if a.q_rank else self.wq(x)).view(B, T, H, dn + dr)
        q = torch.cat([q[..., :dn], rope(q[..., dn:], cos, sin)], -1)
        kv_a = self.wkv_a(x)
        c, k_r = kv_a[..., :dc], rope(kv_a[..., dc:].view(B, T, 1, dr), cos, sin)
        c = self.kv_norm(c * self.wgate(gate_e)) if a.kind == "egmla" else self.kv_norm(c)
        kv = self.wkv_b(c).view(B, T, H, dn + dv)
        k = torch.cat([kv[..., :dn], k_r.expand(B, T, H, dr)], -1)
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), kv[..., dn:].transpose(1, 2), is_causal=True)
        return self.wo(o.transpose(1, 2).reshape(B, T, -1))


class Block(nn.Module):
    def __init__(self, cfg, i):
        super().__init__()
        self.attn_norm, self.attn = RMSNorm(cfg.d_model, cfg.norm_eps), Attention(cfg, cfg.layer(i), i)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.w_gate, self.w_up = nn.Linear(cfg.d_model, cfg.ffn_dim, bias=False), nn.Linear(cfg.d_model, cfg.ffn_dim, bias=False)
        self.w_down = nn.Linear(cfg.ffn_dim, cfg.d_model, bias=False)

    def forward(self, h, cos, sin, gate_e):
        h = h + self.attn(self.attn_norm(h), cos, sin, gate_e)
        x = self.mlp_norm(h)
        return h + self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))


class Model(nn.Module):
    def __init__(self, cfg, seq):
        super().__init__()
        self.cfg = cfg
        self.tok_embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        a = cfg.attention
        self.gates = nn.ModuleList([nn.Embedding(cfg.vocab_size, a.gate_embed_dim)
                                    for _ in range(math.ceil(cfg.n_layers / a.gate_share))]) if a.kind == "egmla" else None
        self.layers = nn.ModuleList([Block(cfg, i) for i in range(cfg.n_layers)])
        self.final_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        inv = inv_freq(self.layers[0].attn.rope_width, cfg.rope_base, cfg.rope_scaling)
        ang = torch.arange(seq, dtype=torch.float32)[:, None] * inv[None, :]
        self.register_buffer("cos", ang.cos(), persistent=False)
        self.register_buffer("sin", ang.sin(), persistent=False)
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, ids, targets):
        h = self.tok_embed(ids)
        gate_e = None
        for i, layer in enumerate(self.layers):
            if self.gates is not None and i % self.cfg.attention.gate_share == 0:
                gate_e = self.gates[i // self.cfg.attention.gate_share](ids)
            h = layer(h, self.cos, self.sin, gate_e)
        h = self.final_norm(h)
        logits = h @ (self.tok_embed.weight if self.lm_head is None else self.lm_head.weight).T
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.view(-1))


def bench(cfg, args, compile_model):
    torch.manual_seed(0)
    model = Model(cfg, args.seq).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    step_fn = torch.compile(model) if compile_model else model
    ids = torch.randint(0, 50257, (args.batch, args.seq + 1), device="cuda")
    x, y = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()

    def step():
        for _ in range(args.accum):  # gradient accumulation: the loss of each micro-batch scaled by 1/accum
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = step_fn(x, y)
            (loss / args.accum).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(args.steps):
        step()
    end.record()
    torch.cuda.synchronize()
    ms = start.elapsed_time(end) / args.steps
    if args.profile:
        profile_kernels(step, args.profile, "compile" if compile_model else "eager")
    return {"config": args.config, "mode": "compile" if compile_model else "eager", "batch": args.batch, "seq": args.seq,
            "accum": args.accum, "step_ms": round(ms, 2), "tokens_per_s": round(args.batch * args.seq * args.accum / ms * 1e3),
            "peak_mem_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1)}


def kernel_category(name):
    """Groups CUDA kernels the way latte's op profiler groups ops, so the two tables can be read side by side."""
    n = name.lower()
    if any(k in n for k in ("gemm", "nvjet", "xmma", "cutlass", "sm90_", "ampere_", "splitk")):
        return "matmul"
    if any(k in n for k in ("flash", "fmha", "cudnn", "attention", "sdpa", "efficient")):
        return "attention"
    if "triton" in n:
        return "triton (fused elementwise/norm/loss)"
    if "adam" in n or "foreach" in n or "multi_tensor" in n:
        return "optimizer / grad norm"
    if "embedding" in n or "index" in n or "scatter" in n or "gather" in n:
        return "embedding"
    if "reduce" in n or "norm" in n:
        return "reduce / norm"
    return "other elementwise / copy"


def profile_kernels(step, steps, mode):
    """Device time per step of every CUDA kernel over `steps` steps (torch.profiler), by category and the top 25,
    on stderr: where PyTorch's step goes, to compare with latte's LATTE_PROFILE_OPS table."""
    from torch.profiler import ProfilerActivity, profile
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    totals, calls = {}, {}
    for e in prof.events():
        if e.device_type != torch.autograd.DeviceType.CUDA:
            continue
        us = e.device_time if hasattr(e, "device_time") else e.cuda_time
        totals[e.name] = totals.get(e.name, 0.0) + us
        calls[e.name] = calls.get(e.name, 0) + 1
    cats = {}
    for name, us in totals.items():
        c = kernel_category(name)
        cats[c] = cats.get(c, 0.0) + us
    all_ms = sum(totals.values()) / 1e3 / steps
    print(f"torch {mode}: kernels {all_ms:.2f} ms/step over {steps} steps, by category:", file=sys.stderr)
    for c, us in sorted(cats.items(), key=lambda kv: -kv[1]):
        print(f"  {us / 1e3 / steps:8.3f} ms  {c}", file=sys.stderr)
    print("  top kernels (ms/step, calls/step, name):", file=sys.stderr)
    for name, us in sorted(totals.items(), key=lambda kv: -kv[1])[:25]:
        print(f"  {us / 1e3 / steps:8.3f} {calls[name] / steps:6.1f}  {name[:110]}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--accum", type=int, default=1, help="micro-batches per optimizer step (gradient accumulation)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--modes", default="eager,compile")
    ap.add_argument("--profile", type=int, default=0, metavar="STEPS",
                    help="after timing, profile this many steps and print device time by kernel to stderr")
    args = ap.parse_args()
    cfg = Config(load_model_section(args.config))
    torch.backends.cuda.matmul.allow_tf32 = True
    for mode in args.modes.split(","):
        print(json.dumps(bench(cfg, args, mode == "compile")), flush=True)


if __name__ == "__main__":
    main()
