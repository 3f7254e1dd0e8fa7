#!/usr/bin/env bash
# Times one full DiT training step (forward, ε-MSE, backward, clip, AdamW) in
# `fine` and in PyTorch (scripts/torch_bench_step.py, same architecture, batch,
# threads, f32) in the same run, and prints the ratio fine / PyTorch.
#
# Needs: a release build (cargo build --release) and `pip install torch numpy`.
# Usage: scripts/bench-vs-torch.sh [BATCH] [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
batch=${1:-8}
steps=${2:-10}
threads=$(nproc)
fine=./target/release/fine
[ -x "$fine" ] || cargo build --release -p fine-cli

run() { # name graph torch-args...
  local name=$1 graph=$2; shift 2
  local ours torch
  ours=$("$fine" bench step --graph "$graph" --batch "$batch" --steps "$steps" --warmup 2)
  torch=$(python3 scripts/torch_bench_step.py "$@" --batch "$batch" --steps "$steps" --warmup 2 --threads "$threads")
  python3 - "$name" "$ours" "$torch" <<'PY'
import json, sys
name, a, b = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
print(f"{name:22s} fine {a['step_ms']:8.1f} ms   pytorch {b['torch']} {b['step_ms']:8.1f} ms   ratio {a['step_ms']/b['step_ms']:.2f}x")
PY
}

echo "batch $batch, $steps timed steps, $threads threads, f32, $(date -u +%F)"
run fmnist-w128-d4-p4 graphs/fmnist-w128-d4-p4.ron --channels 1 --size 28 --patch 4 --hidden 128 --depth 4 --heads 4 --classes 10
run dit-s-2 graphs/dit-s-2.ron --channels 4 --size 32 --patch 2 --hidden 384 --depth 12 --heads 6 --classes 1000
