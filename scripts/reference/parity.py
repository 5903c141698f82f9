#!/usr/bin/env python3
"""Parity of latte against the PyTorch reference (latte_ref.py): logits, loss and one step's gradients.

For each tiny config (every variant, plus EG-MLA with the kv-position gate and an rmsnorm gate), runs
`latte dump` (hidden command: one forward/backward on a deterministic batch, written to safetensors),
then recomputes everything in float64 with latte_ref.py from the same weights and prints the max relative
error ||latte - ref||_inf / ||ref||_inf of the logits, the loss and the worst parameter gradient.

    python scripts/reference/parity.py --latte build/latte [--device cpu|cuda] [--dtypes f32,bf16] [--configs a.yaml ...]

fp32 must agree to ~1e-5 and bf16 to ~2e-2 (bf16 needs --device cuda: the CPU kernels are f32/f64).
Exit code 1 when any number is over its bound.
"""
import argparse
import glob
import os
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import latte_ref  # noqa: E402

BOUNDS = {"f32": 1e-4, "f64": 1e-10, "bf16": 5e-2}


def rel(a, b, floor=1e-30):
    """max |a - b| / max |b|, the denominator at least `floor`."""
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(floor))


def extra_configs(tmp, root):
    """EG-MLA variants that the shipped tiny configs do not cover."""
    import yaml
    out = []
    with open(os.path.join(root, "configs/models/egmla-tiny.yaml")) as f:
        base = yaml.safe_load(f)
    for name, gate in (("egmla-kv", {"position": "kv", "share_layers": 2}), ("egmla-rms", {"norm": "rmsnorm", "init": "small"})):
        cfg = {"model": dict(base["model"])}
        cfg["model"]["attention"] = dict(cfg["model"]["attention"], gate=dict(cfg["model"]["attention"]["gate"], **gate))
        path = os.path.join(tmp, name + "-tiny.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(cfg, f)
        out.append(path)
    return out


def check(latte, config, dtype, device, tmp):
    out = os.path.join(tmp, os.path.basename(config).replace(".yaml", "") + "-" + dtype)
    cmd = [latte, "dump", config, "--out", out, "--dtype", dtype, "--device", device, "--no-zero-init", "--init-std", "0.1",
           "--batch", "2", "--seq", "12"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    cfg = latte_ref.Config(latte_ref.load_model_section(os.path.join(out, "config.yaml")))
    weights, _ = latte_ref.read_safetensors(os.path.join(out, "weights.safetensors"))
    outputs, _ = latte_ref.read_safetensors(os.path.join(out, "outputs.safetensors"))
    ref = latte_ref.Reference(cfg, weights, torch.float64)
    for t in ref.w.values():
        t.requires_grad_(True)
    loss = ref.loss(outputs["ids"], outputs["targets"])
    loss.backward()
    with torch.no_grad():
        logits = ref.logits(outputs["ids"])
    e_logits = rel(outputs["logits"], logits)
    e_loss = rel(outputs["loss"].reshape(()), loss.detach())
    # Some gradients are exactly zero in exact arithmetic (a bias added to every key of a head shifts all its
    # scores equally, and softmax ignores that: EG-MLA(kv)'s gate_norm_k.bias). Both sides are rounding noise
    # there, so such a gradient is measured against the largest gradient of the model instead of itself.
    grads = {name: (w.grad if w.grad is not None else torch.zeros_like(w)) for name, w in ref.w.items()}
    scale = max(float(g.abs().max()) for g in grads.values())
    worst, worst_name = 0.0, ""
    for name, g in grads.items():
        zero_in_exact_arithmetic = float(g.abs().max()) < 1e-9 * scale
        e = rel(outputs["grad." + name], g, scale if zero_in_exact_arithmetic else 1e-30)
        if e > worst:
            worst, worst_name = e, name
    return e_logits, e_loss, worst, worst_name


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latte", default="build/latte", help="the latte binary")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtypes", default=None, help="comma list (default: f32 on cpu, f32,bf16 on cuda)")
    ap.add_argument("--configs", nargs="*", default=None)
    args = ap.parse_args()
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    dtypes = (args.dtypes or ("f32,bf16" if args.device.startswith("cuda") else "f32")).split(",")
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        configs = args.configs or sorted(glob.glob(os.path.join(root, "configs/models/*-tiny.yaml"))) + extra_configs(tmp, root)
        print(f"{'config':<16} {'dtype':<5} {'logits':>10} {'loss':>10} {'grad(max)':>10}  worst gradient")
        for config in configs:
            for dtype in dtypes:
                e_logits, e_loss, e_grad, name = check(args.latte, config, dtype, args.device, tmp)
                bound = BOUNDS[dtype]
                bad = max(e_logits, e_loss, e_grad) > bound
                failed |= bad
                print(f"{os.path.basename(config).replace('.yaml', ''):<16} {dtype:<5} {e_logits:10.2e} {e_loss:10.2e} "
                      f"{e_grad:10.2e}  {name}{'   FAIL (bound %.0e)' % bound if bad else ''}")
    print("parity: FAILED" if failed else "parity: all within bounds")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
