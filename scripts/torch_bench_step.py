"""PyTorch baseline (CPU, or CUDA with --device cuda): time one full DiT training step.

Examples (from the repository root):

    # Fashion-MNIST sized DiT
    python3 scripts/torch_bench_step.py --channels 1 --size 28 --patch 4 --hidden 128 \
        --depth 4 --heads 4 --classes 10 --batch 8 --threads 2
    # DiT-S/2 on 32x32x4 latents
    python3 scripts/torch_bench_step.py --channels 4 --size 32 --patch 2 --hidden 384 \
        --depth 12 --heads 6 --classes 1000 --batch 8 --threads 2

A step is: sample t ~ U{0..999}, noise ~ N(0, I), x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise
(linear beta schedule 1e-4..0.02 over 1000 steps, as DiT's diffusion), forward in train
mode (so LabelEmbedder drops labels with p = class_dropout_prob), MSE(eps_pred, noise),
backward, clip_grad_norm_(1.0), AdamW(lr=1e-4, weight_decay=0) step, zero_grad.
x0 and labels are a fixed random batch (no data loading is timed).

On CUDA, --precision picks fp32 (TF32 off), tf32 (TF32 matmuls) or bf16
(autocast to bfloat16 around forward and loss, the usual eager mixed precision);
every timed step ends with torch.cuda.synchronize().

Prints exactly one JSON line on stdout.
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_dit import DiT, Attention  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--patch", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--mlp-ratio", type=float, default=4.0)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--class-dropout", type=float, default=0.1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch default)")
    ap.add_argument("--sdpa", action="store_true",
                    help="use F.scaled_dot_product_attention (as current timm does) instead of explicit softmax")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verbose", action="store_true", help="print per-step times (ms) to stderr")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16"])
    args = ap.parse_args()

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    Attention.fused_attn = args.sdpa
    torch.manual_seed(args.seed)

    model = DiT(
        input_size=args.size,
        patch_size=args.patch,
        in_channels=args.channels,
        hidden_size=args.hidden,
        depth=args.depth,
        num_heads=args.heads,
        mlp_ratio=args.mlp_ratio,
        class_dropout_prob=args.class_dropout,
        num_classes=args.classes,
        learn_sigma=False,
    )
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = args.precision == "tf32"
        torch.backends.cudnn.allow_tf32 = args.precision == "tf32"
    model = model.to(dev)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]  # excludes the frozen pos_embed
    n_params = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)

    num_timesteps = 1000
    betas = np.linspace(1e-4, 0.02, num_timesteps, dtype=np.float64)
    alphas_cumprod = np.cumprod(1.0 - betas)
    sqrt_ab = torch.from_numpy(np.sqrt(alphas_cumprod)).float().to(dev)
    sqrt_1mab = torch.from_numpy(np.sqrt(1.0 - alphas_cumprod)).float().to(dev)

    B = args.batch
    x0 = torch.randn(B, args.channels, args.size, args.size, device=dev)
    y = torch.randint(0, args.classes, (B,), device=dev)
    autocast = torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")

    def step():
        t = torch.randint(0, num_timesteps, (B,), device=dev)
        noise = torch.randn_like(x0)
        x_t = sqrt_ab[t].view(B, 1, 1, 1) * x0 + sqrt_1mab[t].view(B, 1, 1, 1) * noise
        with autocast:
            eps = model(x_t, t, y)
            loss = F.mse_loss(eps.float(), noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        return loss.item()

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    step_ms = statistics.median(times) * 1e3
    if args.verbose:
        print("step times (ms): " + " ".join(f"{x * 1e3:.1f}" for x in times), file=sys.stderr)

    print(json.dumps({
        "impl": "pytorch",
        "torch": torch.__version__,
        "device": str(dev) + (f" ({torch.cuda.get_device_name(dev)})" if cuda else ""),
        "precision": args.precision,
        "threads": torch.get_num_threads(),
        "batch": B,
        "step_ms": round(step_ms, 3),
        "images_per_s": round(B / (step_ms / 1e3), 2),
        "params": n_params,
    }))


if __name__ == "__main__":
    main()
