#!/usr/bin/env bash
# A small FINE-vs-scratch experiment on the bundled Fashion-MNIST subset:
# a FINE ancestry (width 64, depth 6), then descendants of depth 2 and 4
# initialized from its learngene (σ-only phase 2) and trained normally, against
# the same graphs trained from scratch with the same seed, batch and steps
# (hence the same batches, timesteps and noise). Prints the mean training loss
# over the first and last 100 steps of each run.
#
# Usage: scripts/fine-vs-scratch.sh [OUT] [ANCESTRY_STEPS] [SIGMA_STEPS] [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/fine-vs-scratch}
anc_steps=${2:-1500}
sigma_steps=${3:-300}
steps=${4:-600}
fine=./target/release/fine
[ -x "$fine" ] || cargo build --release -p fine-cli
common=(--batch 32 --seed 0)
mkdir -p "$out"
t0=$(date +%s)
[ -f "$out/anc/checkpoint.safetensors" ] || $fine pretrain --strategy fine --graph graphs/fmnist-w64-d6-p4.ron \
  --out "$out/anc" --steps "$anc_steps" --lr 1e-3 --warmup 100 --ema-decay 0.995 "${common[@]}"
$fine learngene extract --run "$out/anc" --out "$out/learngene.safetensors"
$fine learngene info "$out/learngene.safetensors" | tail -7
t1=$(date +%s)
for d in 2 4; do
  g=graphs/fmnist-w64-d$d-p4.ron
  $fine init --learngene "$out/learngene.safetensors" --graph "$g" --out "$out/fine-d$d" \
    --sigma-steps "$sigma_steps" --subset 2000 --lr 1e-2 "${common[@]}"
  $fine train --from "$out/fine-d$d" --out "$out/fine-d$d/train" --steps "$steps" --lr 1e-3 "${common[@]}"
  $fine train --graph "$g" --out "$out/scratch-d$d" --steps "$steps" --lr 1e-3 "${common[@]}"
done
t2=$(date +%s)
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
def losses(p):
    return [json.loads(l)["loss"] for l in open(p)]
print(f"{'run':<12} {'first 100':>10} {'last 100':>10}")
for d in (2, 4):
    for name, p in ((f"fine-d{d}", f"{out}/fine-d{d}/train/metrics.jsonl"), (f"scratch-d{d}", f"{out}/scratch-d{d}/metrics.jsonl")):
        l = losses(p)
        print(f"{name:<12} {sum(l[:100])/100:10.4f} {sum(l[-100:])/100:10.4f}")
PY
echo "ancestry $((t1 - t0)) s, descendants $((t2 - t1)) s"
