#!/usr/bin/env python3
"""Parity of `latte import-hf` against Hugging Face transformers on small random Llama models.

For each case (GQA untied, MHA tied, MQA with llama3 rope scaling over a long sequence, an explicit
head_dim != hidden/heads, a bf16 checkpoint, a sharded checkpoint), builds a LlamaForCausalLM with random
weights (norm gains perturbed too, so a mis-mapped norm shows), saves it with save_pretrained, runs

    latte import-hf <hf dir> --out <dir> --logits-for ids.safetensors [--device D --logits-dtype T]

and compares latte's logits over the original vocabulary with transformers' (float32),
printing the max relative error max|latte - hf| / max|hf|. Works with transformers 4.4x (rope_theta +
rope_scaling) and 5.x (rope_parameters). No network access is needed.

    python scripts/reference/hf_parity.py --latte build/latte [--device cpu|cuda] [--dtype f32|bf16] [--keep DIR]

f32 must agree to ~1e-4 (bound below) and bf16 (--device cuda --dtype bf16) to ~5e-2. Exit code 1 when
any case is over its bound.
"""
import argparse
import copy
import inspect
import os
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM

BOUNDS = {"f32": 1e-4, "bf16": 5e-2}

CASES = [
    # name, config overrides, extra options
    dict(name="gqa-untied", vocab=1000, hidden=64, layers=2, heads=4, kv=2, head_dim=16, ffn=160, tied=False,
         theta=10000.0, rope=None, seq=24),
    dict(name="mha-tied", vocab=512, hidden=64, layers=2, heads=4, kv=4, head_dim=16, ffn=128, tied=True,
         theta=10000.0, rope=None, seq=24),
    dict(name="mqa-llama3-rope", vocab=777, hidden=64, layers=2, heads=4, kv=1, head_dim=16, ffn=128, tied=False,
         theta=500000.0, rope={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                "original_max_position_embeddings": 32}, seq=200),
    dict(name="head-dim-32", vocab=300, hidden=64, layers=2, heads=4, kv=2, head_dim=32, ffn=96, tied=True,
         theta=10000.0, rope=None, seq=16),
    dict(name="bf16-checkpoint", vocab=640, hidden=64, layers=2, heads=4, kv=2, head_dim=16, ffn=128, tied=False,
         theta=10000.0, rope=None, seq=24, save_dtype=torch.bfloat16),
    dict(name="sharded", vocab=1000, hidden=64, layers=3, heads=4, kv=2, head_dim=16, ffn=160, tied=False,
         theta=10000.0, rope=None, seq=24, shard="200KB"),
]


def make_config(c):
    """A LlamaConfig for either transformers 4 (rope_theta/rope_scaling) or 5 (rope_parameters)."""
    kwargs = dict(vocab_size=c["vocab"], hidden_size=c["hidden"], intermediate_size=c["ffn"],
                  num_hidden_layers=c["layers"], num_attention_heads=c["heads"], num_key_value_heads=c["kv"],
                  head_dim=c["head_dim"], max_position_embeddings=256, rms_norm_eps=1e-5,
                  tie_word_embeddings=c["tied"], attention_bias=False, mlp_bias=False, hidden_act="silu",
                  initializer_range=0.05)
    params = inspect.signature(LlamaConfig.__init__).parameters
    if "rope_parameters" in params:
        rope = {"rope_type": "default", "rope_theta": c["theta"]}
        if c["rope"]:
            rope = dict(c["rope"], rope_theta=c["theta"])
        kwargs["rope_parameters"] = rope
    else:
        kwargs["rope_theta"] = c["theta"]
        kwargs["rope_scaling"] = dict(c["rope"]) if c["rope"] else None
    cfg = LlamaConfig(**kwargs)
    return cfg


def run_case(c, latte, device, dtype, root):
    torch.manual_seed(1234)
    model = LlamaForCausalLM(make_config(c)).float().eval()
    with torch.no_grad():  # perturb every parameter (norm gains start at 1, which would hide a swapped norm)
        g = torch.Generator().manual_seed(7)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    save_dtype = c.get("save_dtype", torch.float32)
    if save_dtype != torch.float32:
        # The reference runs the rounded weights in float32; casting the module itself would also round
        # its RoPE inv_freq buffer, which no bf16 checkpoint carries.
        model.load_state_dict({k: v.to(save_dtype).float() for k, v in model.state_dict().items()})
    hf_dir = os.path.join(root, c["name"], "hf")
    kwargs = {"max_shard_size": c["shard"]} if c.get("shard") else {}
    copy.deepcopy(model).to(save_dtype).save_pretrained(hf_dir, **kwargs)
    if c.get("shard"):
        assert os.path.exists(os.path.join(hf_dir, "model.safetensors.index.json")), "expected a sharded checkpoint"

    ids = torch.randint(0, c["vocab"], (2, c["seq"]), generator=torch.Generator().manual_seed(3))
    ids_path = os.path.join(root, c["name"], "ids.safetensors")
    save_file({"ids": ids.to(torch.int32).contiguous()}, ids_path)
    out = os.path.join(root, c["name"], "latte")
    cmd = [latte, "import-hf", hf_dir, "--out", out, "--logits-for", ids_path, "--device", device,
           "--logits-dtype", dtype]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    got = load_file(os.path.join(out, "logits.safetensors"))["logits"].double()
    with torch.no_grad():
        ref = model(ids).logits.double()
    assert got.shape == ref.shape, f"{c['name']}: latte logits {tuple(got.shape)} vs transformers {tuple(ref.shape)}"
    return float((got - ref).abs().max() / ref.abs().max())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latte", default="build/latte")
    ap.add_argument("--device", default="cpu", help="device latte runs the imported model on (cpu or cuda)")
    ap.add_argument("--dtype", default="f32", choices=sorted(BOUNDS), help="latte's compute dtype (bf16 needs cuda)")
    ap.add_argument("--keep", help="directory to keep the checkpoints in (default: a temporary one)")
    args = ap.parse_args()
    import transformers
    print(f"transformers {transformers.__version__}, torch {torch.__version__}; latte on {args.device} in {args.dtype}")
    root = args.keep or tempfile.mkdtemp(prefix="latte_hf_parity_")
    os.makedirs(root, exist_ok=True)
    bound = BOUNDS[args.dtype]
    failed = 0
    print(f"{'case':<18} {'max rel err':>12}  (bound {bound:g})")
    for c in CASES:
        err = run_case(c, args.latte, args.device, args.dtype, root)
        ok = err <= bound
        failed += not ok
        print(f"{c['name']:<18} {err:12.3e}  {'ok' if ok else 'FAIL'}")
    print("all cases agree" if not failed else f"{failed} case(s) over the bound")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
