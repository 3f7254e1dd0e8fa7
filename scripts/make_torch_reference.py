"""Generate PyTorch reference data for the Rust DiT tests.

Regenerate (from the repository root):

    python3 scripts/make_torch_reference.py --out tests/data

Requires: torch, numpy, safetensors (pip install torch numpy safetensors).
Generated with torch 2.15.0, numpy 2.4.6, safetensors 0.8.0.

Writes:
  tests/data/torch_ref_block.safetensors  -- one DiTBlock (hidden 32, heads 4, mlp_ratio 4)
  tests/data/torch_ref_dit.safetensors    -- a whole DiT (1x8x8, patch 2, hidden 32, depth 2,
                                             heads 4, mlp_ratio 4, 3 classes + null class)

Parameters and inputs are drawn in float32 (so the stored values are exact), the
forward/backward pass is computed in float64, results are stored as contiguous float32.
In the DiT file the pos_embed and timestep features are computed in float64 (upstream
DiT computes them in float32: pos_embed equals the f32 one exactly, t_freq differs by
<=3.2e-5 for t=999, which moves the output by ~1.6e-6).
Loss for the gradients in both files: sum(out * R), R stored as input.r.
"""

import argparse
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_dit import DiT, DiTBlock, get_2d_sincos_pos_embed  # noqa: E402


def to_f32(t):
    return t.detach().to(torch.float32).contiguous().clone()


def make_block_reference():
    hidden, heads, mlp_ratio = 32, 4, 4.0
    torch.manual_seed(0)
    block = DiTBlock(hidden, heads, mlp_ratio=mlp_ratio)
    with torch.no_grad():
        for name, p in block.named_parameters():
            if name.endswith("weight"):
                p.normal_(std=0.2)
            elif name.endswith("bias"):
                p.normal_(std=0.1)
            else:
                raise ValueError(name)
    block = block.double()  # parameters were drawn in float32, so they are stored exactly
    # Inputs drawn in float32 then widened, so the stored float32 values are exact.
    x = torch.randn(2, 5, hidden).double().requires_grad_()
    c = torch.randn(2, hidden).double().requires_grad_()
    r = torch.randn(2, 5, hidden).double()

    out = block(x, c)
    loss = (out * r).sum()
    loss.backward()

    tensors = {}
    for name, p in block.named_parameters():
        tensors[f"blocks.0.{name}"] = to_f32(p)
        tensors[f"grad.blocks.0.{name}"] = to_f32(p.grad)
    tensors["input.x"] = to_f32(x)
    tensors["input.c"] = to_f32(c)
    tensors["input.r"] = to_f32(r)
    tensors["output.out"] = to_f32(out)
    tensors["grad.x"] = to_f32(x.grad)
    tensors["grad.c"] = to_f32(c.grad)
    return tensors, loss.item()


def make_dit_reference():
    torch.manual_seed(0)
    model = DiT(
        input_size=8,
        patch_size=2,
        in_channels=1,
        hidden_size=32,
        depth=2,
        num_heads=4,
        mlp_ratio=4.0,
        class_dropout_prob=0.1,
        num_classes=3,
        learn_sigma=False,
    )
    assert model.y_embedder.embedding_table.weight.shape[0] == 4
    # Overwrite every trainable parameter (pos_embed excluded: fixed, requires_grad=False).
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "pos_embed":
                continue
            p.normal_(std=0.1)
    model = model.double()
    model.eval()
    # Full-precision tables for the float64 reference (DiT rounds pos_embed to
    # float32 and computes the timestep features in float32).
    T = model.x_embedder.num_patches
    pe = get_2d_sincos_pos_embed(32, int(T ** 0.5))
    with torch.no_grad():
        model.pos_embed.copy_(torch.from_numpy(pe).unsqueeze(0))
    model.t_embedder.freq_dtype = torch.float64

    x = torch.randn(3, 1, 8, 8).double().requires_grad_()
    t = torch.tensor([1.0, 500.0, 999.0], dtype=torch.float64)
    y = torch.tensor([0, 2, 3], dtype=torch.long)  # 3 == num_classes == null (CFG) class
    r = torch.randn(3, 1, 8, 8).double()

    out = model(x, t, y)
    loss = (out * r).sum()
    loss.backward()

    t_freq = model.t_embedder.timestep_embedding(t, 256, dtype=torch.float64)

    tensors = {}
    for name, p in model.named_parameters():
        if name == "pos_embed":
            continue
        tensors[name] = to_f32(p)
        tensors[f"grad.{name}"] = to_f32(p.grad)
    # Every state-dict entry except pos_embed must have been stored.
    assert set(model.state_dict().keys()) - {"pos_embed"} == {k for k in tensors if not k.startswith("grad.")}
    tensors["input.x"] = to_f32(x)
    tensors["input.t"] = to_f32(t)
    tensors["input.y"] = to_f32(y)
    tensors["input.r"] = to_f32(r)
    tensors["output.out"] = to_f32(out)
    tensors["output.pos_embed"] = to_f32(model.pos_embed[0])
    tensors["output.t_freq"] = to_f32(t_freq)
    tensors["grad.x"] = to_f32(x.grad)
    return tensors, loss.item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    meta = {"torch": torch.__version__, "generator": "scripts/make_torch_reference.py"}

    block, block_loss = make_block_reference()
    path = os.path.join(args.out, "torch_ref_block.safetensors")
    save_file(block, path, metadata={**meta, "loss": repr(block_loss)})
    print(f"wrote {path}: {len(block)} tensors, loss={block_loss:.10g}")

    dit, dit_loss = make_dit_reference()
    path = os.path.join(args.out, "torch_ref_dit.safetensors")
    save_file(dit, path, metadata={**meta, "loss": repr(dit_loss)})
    print(f"wrote {path}: {len(dit)} tensors, loss={dit_loss:.10g}")


if __name__ == "__main__":
    main()
