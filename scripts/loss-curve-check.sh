#!/usr/bin/env bash
# Numerics check for the CPU kernels: trains the same graph twice on real
# Fashion-MNIST (same seed, so the same batches, timesteps and noise) with two
# `fine` binaries, e.g. the last commit before the fused kernels and now, and
# prints the training loss of both in 50-step windows and the held-out loss.
#
# Usage: scripts/loss-curve-check.sh BEFORE_BIN AFTER_BIN [GRAPH] [STEPS] [OUT]
#   BEFORE_BIN: e.g. built from the commit before the kernels:
#     git worktree add /tmp/before <commit> && (cd /tmp/before && cargo build --release -p fine-cli)
set -euo pipefail
cd "$(dirname "$0")/.."
before=$1
after=$2
graph=${3:-graphs/fmnist-w128-d4-p4.ron}
steps=${4:-500}
out=${5:-runs/loss-curve-check}
rm -rf "$out"
mkdir -p "$out"
for which in before after; do
  bin=$before
  [ "$which" = after ] && bin=$after
  "$bin" train --graph "$graph" --data fashion-mnist --steps "$steps" --batch 32 --lr 1e-3 --warmup 50 \
    --seed 0 --heldout 1000 --out "$out/$which" > "$out/$which.log" 2>&1
done
python3 - "$out" "$steps" <<'PY'
import json, sys
out, steps = sys.argv[1], int(sys.argv[2])
def load(w):
    rows = [json.loads(l) for l in open(f"{out}/{w}/metrics.jsonl") if l.strip()]
    return [r["loss"] for r in rows if "loss" in r]
a, b = load("before"), load("after")
print(f"training loss, mean over 50-step windows ({steps} steps, batch 32, seed 0)")
print("| steps | before | after | after − before |")
print("|---|---:|---:|---:|")
for s in range(0, min(len(a), len(b)), 50):
    ma, mb = sum(a[s:s+50]) / len(a[s:s+50]), sum(b[s:s+50]) / len(b[s:s+50])
    print(f"| {s+1}–{s+50} | {ma:.4f} | {mb:.4f} | {mb-ma:+.4f} |")
rel = [abs(x - y) / abs(x) for x, y in zip(a, b)]
print(f"per-step relative difference: max {max(rel):.2e}, mean {sum(rel) / len(rel):.2e}")
first = next((i for i, (x, y) in enumerate(zip(a, b)) if abs(x - y) > 1e-3 * abs(x)), None)
print(f"steps whose loss agrees to 0.1%: the first {first if first is not None else len(a)}")
for w in ("before", "after"):
    h = json.load(open(f"{out}/{w}/heldout.json"))
    print(f"{w}: held-out ε-MSE {json.dumps(h)}")
PY
