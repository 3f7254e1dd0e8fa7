"""Check that `fine export` writes a state dict facebookresearch DiT loads as is.

    python3 scripts/check-export-torch.py --fine target/release/fine --run runs/demo \
        --dit-models /path/to/a/clone/of/facebookresearch/DiT/models.py

Runs `fine export --run RUN` (EMA and live weights) into a temporary folder, builds the
DiT that `fine export` prints with the given `models.py` (the upstream file, unmodified;
it needs timm), loads the file with `load_state_dict(strict=True)` -- every key present,
none extra, every shape equal -- and runs the upstream forward on fixed random inputs
beside this repository's layout copy (scripts/torch_dit.py, the module the Rust model is
tested against in tests/data). Exit 0 when both loads pass and the two outputs agree to
1e-5; the largest difference is printed.

Requires: torch, numpy, safetensors, timm (pip install torch numpy safetensors timm).
"""

import argparse
import importlib.util
import os
import re
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import load_file

HERE = os.path.dirname(os.path.abspath(__file__))


def load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def constructor_kwargs(printed):
    """The keyword arguments of the `DiT(...)` line `fine export` prints."""
    m = re.search(r"DiT\((.*?)\)", printed, re.S)
    if not m:
        sys.exit(f"fine export printed no DiT(...) constructor:\n{printed}")
    kwargs = {}
    for item in m.group(1).split(","):
        key, value = (s.strip() for s in item.split("="))
        kwargs[key] = {"True": True, "False": False}.get(value) if value in ("True", "False") else (
            float(value) if "." in value else int(value))
    return kwargs


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fine", required=True, help="the fine binary")
    p.add_argument("--run", required=True, help="a run folder with checkpoint.safetensors")
    p.add_argument("--dit-models", required=True, help="facebookresearch/DiT's models.py")
    a = p.parse_args()

    upstream = load_module(a.dit_models, "dit_upstream")
    ours = load_module(os.path.join(HERE, "torch_dit.py"), "dit_ours")
    torch.manual_seed(0)
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for flag in ("", "--live"):
            out = os.path.join(tmp, f"model{flag}.safetensors")
            cmd = [a.fine, "export", "--run", a.run, "--out", out] + ([flag] if flag else [])
            said = subprocess.run(cmd, check=True, capture_output=True, text=True)
            kwargs = constructor_kwargs(said.stdout + said.stderr)
            state = load_file(out)
            models = []
            for module in (upstream, ours):
                model = module.DiT(**kwargs).eval()
                model.load_state_dict(state, strict=True)  # raises on any missing/extra/misshapen key
                models.append(model)
            n, c, h = 4, kwargs["in_channels"], kwargs["input_size"]
            x = torch.randn(n, c, h, h)
            t = torch.tensor([0, 250, 500, 999])
            y = torch.tensor([0, 1, kwargs["num_classes"] - 1, kwargs["num_classes"]])  # last: the null class
            with torch.no_grad():
                got, ref = (m(x, t, y) for m in models)
            diff = (got - ref).abs().max().item()
            worst = max(worst, diff)
            print(f"{'live' if flag else 'ema'}: {len(state)} tensors, strict load ok, "
                  f"output {tuple(got.shape)} (max |out| {ref.abs().max().item():.3g}), "
                  f"max |upstream - torch_dit.py| = {diff:.3g}")
    if worst > 1e-5:
        sys.exit(f"outputs differ by {worst:.3g} (> 1e-5)")
    print("ok: kwargs", kwargs)


if __name__ == "__main__":
    main()
