#!/usr/bin/env python3
"""PyTorch reference of latte's decoder LM and its four attention variants (MHA/GQA/MQA, MLA, EG-MLA, MLRA).

Written from spec/attention.md alone (not from latte's C++), so that agreement is evidence that both follow
the spec. It reads a latte YAML config (a model file or an experiment file; its `model:` section) and a
safetensors file with the spec's parameter names, and computes logits and the loss in float64 (or the dtype
asked for). MLRA is written per block, as the spec states it, not with latte's virtual-head trick.

    python scripts/reference/latte_ref.py --config configs/models/mla-tiny.yaml --weights w.safetensors --ids "1 2 3"

Needs torch and PyYAML; safetensors are read with a small built-in reader (no `safetensors` package needed).
"""
import argparse
import json
import math
import struct

import torch
import torch.nn.functional as F

# ---- files ---------------------------------------------------------------------------------------------

_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8}


def read_safetensors(path):
    """Returns ({name: tensor}, metadata) from a safetensors file (CPU tensors)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        dtype = _ST_DTYPES[info["dtype"]]
        buf = bytearray(data[base + begin:base + end])
        t = torch.frombuffer(buf, dtype=dtype) if end > begin else torch.empty(0, dtype=dtype)
        out[name] = t.reshape(info["shape"]).clone()
    return out, meta


def load_model_section(path):
    import yaml  # PyYAML
    with open(path) as f:
        root = yaml.safe_load(f)
    if "model" not in root:
        raise SystemExit(f"{path}: no top-level 'model:' section")
    return root["model"]


# ---- config (defaults exactly as spec/attention.md and latte's parser) ------------------------------------

class Attn:
    def __init__(self, a, d):
        self.kind = a["kind"]
        self.n_heads = a["n_heads"]
        head = d // self.n_heads
        if self.kind == "mha":
            self.n_kv_heads = a.get("n_kv_heads", self.n_heads)
            self.head_dim = a.get("head_dim", head)
        else:
            self.kv_rank = a["kv_rank"]
            self.q_rank = a.get("q_rank", 0)
            self.nope_dim = a.get("nope_dim", head)
            self.rope_dim = a.get("rope_dim", self.nope_dim // 2)
            self.v_dim = a.get("v_dim", self.nope_dim)
            self.latent_scale = bool(a.get("latent_scale", False))
            self.latent_norm = bool(a.get("latent_norm", True))
        self.blocks = a.get("blocks", 4) if self.kind == "mlra" else 1
        self.branches = a.get("branches", 4) if self.kind == "mlra" else 1
        g = a.get("gate", {}) or {}
        self.gate_position = g.get("position", "latent")
        self.gate_norm = g.get("norm", "layernorm")
        self.gate_share = g.get("share_layers", 1)
        self.gate_embed_dim = g.get("embed_dim", getattr(self, "kv_rank", 0))


class Config:
    def __init__(self, m):
        self.vocab_size = m["vocab_size"]
        self.d_model = m["d_model"]
        self.n_layers = m["n_layers"]
        self.ffn_dim = m["ffn_dim"]
        self.norm_eps = float(m.get("norm_eps", 1e-6))
        self.rope_base = float(m.get("rope_base", 10000.0))
        self.rope_scaling = m.get("rope_scaling")
        self.tie_embeddings = bool(m.get("tie_embeddings", True))
        self.attention = Attn(m["attention"], self.d_model)
        self.overrides = {k: Attn(dict(v, kind=k), self.d_model) for k, v in (m.get("attention_overrides") or {}).items()}
        self.layer_kinds = m.get("layer_kinds") or [self.attention.kind] * self.n_layers

    def layer(self, i):
        k = self.layer_kinds[i]
        return self.attention if k == self.attention.kind else self.overrides[k]


# ---- building blocks ---------------------------------------------------------------------------------------

def inv_freq(width, base, scaling):
    """inv_j = base^(-2j/r), with HF's llama3 rescaling when configured; rounded to f32 as latte stores it."""
    inv = [1.0 / base ** (2 * j / width) for j in range(width // 2)]
    if scaling:
        factor, lo, hi = scaling.get("factor", 8.0), scaling.get("low_freq_factor", 1.0), scaling.get("high_freq_factor", 4.0)
        old = scaling.get("original_max_position_embeddings", 8192)
        lo_wl, hi_wl = old / lo, old / hi
        out = []
        for f in inv:
            wl = 2 * math.pi / f
            if wl < hi_wl:
                out.append(f)
            elif wl > lo_wl:
                out.append(f / factor)
            else:
                s = (old / wl - lo) / (hi - lo)
                out.append((1 - s) * f / factor + s * f)
        inv = out
    return torch.tensor(inv, dtype=torch.float64).float()


def rope(x, inv, start=0, offset=0):
    """Rotate-half RoPE on channels [offset, offset + 2 len(inv)) of x (B, T, H, D)."""
    r = inv.numel() * 2
    t = torch.arange(start, start + x.shape[1], dtype=torch.float64)
    ang = (t[:, None] * inv.double()[None, :]).to(x.dtype)  # (T, r/2)
    cos, sin = ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]
    xr = x[..., offset:offset + r]
    x1, x2 = xr[..., :r // 2], xr[..., r // 2:]
    y = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)
    return torch.cat([x[..., :offset], y, x[..., offset + r:]], -1)


def rmsnorm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def gate_norm(x, w, b, eps, kind, groups=1):
    """LayerNorm (weight, bias) or RMSNorm (weight) over `groups` equal groups of the last dim."""
    shape = x.shape
    xg = x.reshape(*shape[:-1], groups, shape[-1] // groups)
    if kind == "layernorm":
        xg = (xg - xg.mean(-1, keepdim=True)) * torch.rsqrt(xg.var(-1, unbiased=False, keepdim=True) + eps)
        return xg.reshape(shape) * w + b
    return (xg * torch.rsqrt(xg.pow(2).mean(-1, keepdim=True) + eps)).reshape(shape) * w


def attend(q, k, v, scale):
    """Causal softmax attention, q (B, T, H, D), k (B, S, H, D), v (B, S, H, Dv); query t sees keys <= t + S - T."""
    T, S = q.shape[1], k.shape[1]
    s = torch.einsum("bthd,bshd->bhts", q, k) * scale
    mask = torch.arange(S)[None, :] <= (torch.arange(T)[:, None] + S - T)
    s = s.masked_fill(~mask, float("-inf"))
    return torch.einsum("bhts,bshd->bthd", s.softmax(-1), v)


# ---- the model ----------------------------------------------------------------------------------------------

class Reference:
    def __init__(self, cfg, weights, dtype=torch.float64):
        self.cfg = cfg
        self.w = {k: v.to(dtype) for k, v in weights.items()}
        self.dtype = dtype

    def p(self, name):
        return self.w[name]

    def mha(self, i, a, x):
        B, T, _ = x.shape
        pre = f"layers.{i}.attn."
        inv = inv_freq(a.head_dim, self.cfg.rope_base, self.cfg.rope_scaling)
        q = rope((x @ self.p(pre + "wq.weight").T).view(B, T, a.n_heads, a.head_dim), inv)
        k = rope((x @ self.p(pre + "wk.weight").T).view(B, T, a.n_kv_heads, a.head_dim), inv)
        v = (x @ self.p(pre + "wv.weight").T).view(B, T, a.n_kv_heads, a.head_dim)
        group = a.n_heads // a.n_kv_heads  # head i reads kv head i // group
        k, v = k.repeat_interleave(group, dim=2), v.repeat_interleave(group, dim=2)
        o = attend(q, k, v, 1 / math.sqrt(a.head_dim))
        return o.reshape(B, T, -1) @ self.p(pre + "wo.weight").T

    def latent_family(self, i, a, x, ids):
        B, T, d = x.shape
        pre = f"layers.{i}.attn."
        dn, dr, dv, dc, H = a.nope_dim, a.rope_dim, a.v_dim, a.kv_rank, a.n_heads
        inv = inv_freq(dr, self.cfg.rope_base, self.cfg.rope_scaling)
        # query
        if a.q_rank == 0:
            q = x @ self.p(pre + "wq.weight").T
        else:
            cq = x @ self.p(pre + "wq_a.weight").T
            if a.latent_norm:
                cq = rmsnorm(cq, self.p(pre + "q_norm.weight"), self.cfg.norm_eps)
            if a.latent_scale:
                cq = cq * math.sqrt(d / a.q_rank)
            q = cq @ self.p(pre + "wq_b.weight").T
        q = rope(q.view(B, T, H, dn + dr), inv, 0, dn)
        kv_a = x @ self.p(pre + "wkv_a.weight").T
        c_raw, k_rope = kv_a[..., :dc], rope(kv_a[..., dc:].unsqueeze(2), inv)  # (B, T, d_c), (B, T, 1, d_r)
        scale = 1 / math.sqrt(dn + dr)

        if a.kind == "mlra":
            L, R = a.blocks, a.branches
            dl, G = dc // L, L // R
            Hb = H // G
            blocks = c_raw.reshape(B, T, L, dl)
            wkv_b = self.p(pre + "wkv_b.weight")  # [L, d_l, H_b (d_n + d_v)], applied as C @ W
            o = torch.zeros(B, T, H, dv, dtype=x.dtype)
            for b in range(L):
                C = blocks[:, :, b]
                if a.latent_norm:
                    C = rmsnorm(C, self.p(pre + f"kv_norms.{b}.weight"), self.cfg.norm_eps)
                if a.latent_scale:
                    C = C * math.sqrt(d / dl)
                kv = (C @ wkv_b[b]).view(B, T, Hb, dn + dv)
                first = (b % G) * Hb  # block b serves heads [first, first + H_b): all heads for MLRA-4, halves for MLRA-2
                k = torch.cat([kv[..., :dn], k_rope.expand(B, T, Hb, dr)], -1)
                o[:, :, first:first + Hb] += attend(q[:, :, first:first + Hb], k, kv[..., dn:], scale)
            o = o / math.sqrt(R)
            return o.reshape(B, T, -1) @ self.p(pre + "wo.weight").T

        gate_on_kv = a.kind == "egmla" and a.gate_position == "kv"
        if a.kind == "egmla":
            e = self.p(f"gates.{i // a.gate_share}.embed.weight")[ids]  # (B, T, d_e)
            g = e @ self.p(pre + "wgate.weight").T
        if a.kind == "egmla" and not gate_on_kv:
            c = gate_norm(c_raw * g, self.p(pre + "gate_norm.weight"), self.w.get(pre + "gate_norm.bias"), self.cfg.norm_eps,
                          a.gate_norm)
        else:
            c = rmsnorm(c_raw, self.p(pre + "kv_norm.weight"), self.cfg.norm_eps) if a.latent_norm else c_raw
        if a.latent_scale:
            c = c * math.sqrt(d / dc)
        kv = (c @ self.p(pre + "wkv_b.weight").T).view(B, T, H, dn + dv)  # per-head rows [k^N | v]
        k_nope, v = kv[..., :dn], kv[..., dn:]
        if gate_on_kv:
            g = g.view(B, T, H, dn + dv)
            k_nope = gate_norm((k_nope * g[..., :dn]).reshape(B, T, H * dn), self.p(pre + "gate_norm_k.weight"),
                               self.w.get(pre + "gate_norm_k.bias"), self.cfg.norm_eps, a.gate_norm, H).view(B, T, H, dn)
            v = gate_norm((v * g[..., dn:]).reshape(B, T, H * dv), self.p(pre + "gate_norm_v.weight"),
                          self.w.get(pre + "gate_norm_v.bias"), self.cfg.norm_eps, a.gate_norm, H).view(B, T, H, dv)
        k = torch.cat([k_nope, k_rope.expand(B, T, H, dr)], -1)
        o = attend(q, k, v, scale)
        return o.reshape(B, T, -1) @ self.p(pre + "wo.weight").T

    def logits(self, ids):
        cfg = self.cfg
        ids = ids.long()
        h = self.p("tok_embed.weight")[ids]
        for i in range(cfg.n_layers):
            a = cfg.layer(i)
            x = rmsnorm(h, self.p(f"layers.{i}.attn_norm.weight"), cfg.norm_eps)
            h = h + (self.mha(i, a, x) if a.kind == "mha" else self.latent_family(i, a, x, ids))
            x = rmsnorm(h, self.p(f"layers.{i}.mlp_norm.weight"), cfg.norm_eps)
            m = f"layers.{i}.mlp."
            h = h + (F.silu(x @ self.p(m + "w_gate.weight").T) * (x @ self.p(m + "w_up.weight").T)) @ self.p(m + "w_down.weight").T
        h = rmsnorm(h, self.p("final_norm.weight"), cfg.norm_eps)
        head = self.p("tok_embed.weight") if cfg.tie_embeddings else self.p("lm_head.weight")
        return h @ head.T

    def loss(self, ids, targets):
        logits = self.logits(ids)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).double(), targets.reshape(-1).long(), ignore_index=-1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--ids", required=True, help='token ids, e.g. "1 2 3"')
    args = ap.parse_args()
    cfg = Config(load_model_section(args.config))
    weights, _ = read_safetensors(args.weights)
    ref = Reference(cfg, weights)
    ids = torch.tensor([[int(t) for t in args.ids.split()]])
    with torch.no_grad():
        logits = ref.logits(ids)
    print("logits", tuple(logits.shape), "last row argmax", int(logits[0, -1].argmax()))
    if ids.shape[1] > 1:
        print("loss (next-token on the ids)", float(ref.loss(ids[:, :-1], ids[:, 1:])))


if __name__ == "__main__":
    main()
