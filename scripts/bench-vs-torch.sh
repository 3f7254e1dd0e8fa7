#!/usr/bin/env bash
# Times one full DiT training step (forward, ε-MSE, backward, clip, AdamW, EMA)
# in `fine` and in PyTorch (scripts/torch_bench_step.py: same architecture,
# batch, threads, f32) in the same run, and prints the ratio fine / PyTorch.
#
# Each implementation runs ROUNDS times, interleaved, and the table shows the
# median of the per-round medians (step times on a 2-core machine shared with other work vary by
# ±10% from one minute to the next).
#
#   fine            the default build (packed AVX2 kernel; the `gemm` crate
#                   on CPUs without AVX2)
#   fine+openblas   `--features openblas` (built into target/openblas when
#                   libopenblas is installed: apt-get install libopenblas-dev)
#   before          $FINE_BEFORE, any other `fine` binary (e.g. an older commit)
#
# Needs: cargo, python3 with torch (pip install torch numpy).
# Usage: [FINE_BEFORE=bin] [ROUNDS=3] scripts/bench-vs-torch.sh [BATCH] [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
batch=${1:-8}
steps=${2:-10}
rounds=${ROUNDS:-3}
threads=$(nproc)
cargo build --release -q -p fine-cli
impls=("fine=target/release/fine")
if ldconfig -p | grep -q libopenblas; then
  CARGO_TARGET_DIR=target/openblas cargo build --release -q -p fine-cli --features openblas
  impls+=("fine+openblas=target/openblas/release/fine")
fi
[ -n "${FINE_BEFORE:-}" ] && impls+=("before=$FINE_BEFORE")
out=$(mktemp)
trap 'rm -f "$out"' EXIT

run() { # name graph torch-args...
  local name=$1 graph=$2; shift 2
  for r in $(seq "$rounds"); do
    for impl in "${impls[@]}"; do
      echo "$name ${impl%%=*} $("${impl#*=}" bench step --graph "$graph" --batch "$batch" --steps "$steps" --warmup 2)" >> "$out"
    done
    echo "$name pytorch $(python3 scripts/torch_bench_step.py "$@" --batch "$batch" --steps "$steps" --warmup 2 --threads "$threads")" >> "$out"
  done
}

echo "batch $batch, $steps timed steps after 2 warmup steps, $rounds rounds, $threads threads, f32, $(date -u +%F)"
run fmnist-w128-d4-p4 graphs/fmnist-w128-d4-p4.ron --channels 1 --size 28 --patch 4 --hidden 128 --depth 4 --heads 4 --classes 10
run DiT-S/2 graphs/dit-s-2.ron --channels 4 --size 32 --patch 2 --hidden 384 --depth 12 --heads 6 --classes 1000
python3 - "$out" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    graph, impl, js = line.split(" ", 2)
    rows.setdefault(graph, {}).setdefault(impl, []).append(json.loads(js)["step_ms"])
print("| graph | implementation | step (ms), median of rounds | rounds | ratio to PyTorch |")
print("|---|---|---:|---|---:|")
for graph, impls in rows.items():
    torch = statistics.median(impls["pytorch"])
    for impl, ms in impls.items():
        m = statistics.median(ms)
        print(f"| {graph} | {impl} | {m:.1f} | {', '.join(f'{v:.0f}' for v in ms)} | {m / torch:.2f}× |")
PY
