#!/usr/bin/env bash
# FINE's Σ-init ablation on the learngene made by scripts/fine-vs-scratch.sh:
# depth-4 descendants whose σ is random / identical / linear and not trained
# (--sigma-steps 0), each then trained normally for STEPS steps with the same
# seed as the FINE and scratch runs of fine-vs-scratch.sh. Prints the mean
# training loss over the first and last 100 steps of every run.
#
# Usage: scripts/fine-sigma-ablation.sh [OUT (as given to fine-vs-scratch.sh)] [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/fine-vs-scratch}
steps=${2:-600}
fine=./target/release/fine
[ -f "$out/learngene.safetensors" ] || { echo "run scripts/fine-vs-scratch.sh $out first" >&2; exit 1; }
for mode in random identical linear; do
  $fine init --learngene "$out/learngene.safetensors" --graph graphs/fmnist-w64-d4-p4.ron --out "$out/abl-$mode" \
    --sigma-steps 0 --strategy-opts "sigma_init=$mode" --batch 32 --seed 0
  $fine train --from "$out/abl-$mode" --out "$out/abl-$mode/train" --steps "$steps" --lr 1e-3 --batch 32 --seed 0
done
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
def first_last(p):
    l = [json.loads(x)["loss"] for x in open(p)]
    return sum(l[:100]) / 100, sum(l[-100:]) / 100
runs = [(f"{m}, σ not trained", f"{out}/abl-{m}/train/metrics.jsonl") for m in ("random", "identical", "linear")]
runs += [("random + σ-steps (FINE)", f"{out}/fine-d4/train/metrics.jsonl"), ("scratch", f"{out}/scratch-d4/metrics.jsonl")]
print(f"{'depth-4 descendant':<26} {'first 100':>10} {'last 100':>10}")
for name, p in runs:
    a, b = first_last(p)
    print(f"{name:<26} {a:10.4f} {b:10.4f}")
PY
