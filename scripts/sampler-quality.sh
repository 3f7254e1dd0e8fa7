#!/usr/bin/env bash
# Sample quality of every built-in sampler on one trained run: 1000-step DDPM
# against 50-step DDPM, DDIM (η = 0 and 1), DPM-Solver++(2M) and Euler, the same
# N images (classes cycling, same seed), scored by `fine eval` against the run's
# training set; plus real-vs-real (train vs test, same N) as the floor.
#
# Usage: scripts/sampler-quality.sh RUN [N] [METRICS] [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
run=$1
n=${2:-200}
metrics=${3:-cfid,fid}
out=${4:-$run/sampler-quality}
fine=${FINE:-./target/release/fine}
[ -x "$fine" ] || cargo build --release -p fine-cli
mkdir -p "$out"
data=$(grep -o 'data: "[^"]*"' "$run/run.ron" | head -1 | cut -d'"' -f2)
one() {
  local name=$1; shift
  [ -f "$out/$name.json" ] && return 0
  local t0=$(date +%s)
  $fine eval --metric "$metrics" --n "$n" --json "$out/$name.json.tmp" "$@" > "$out/$name.log" 2>&1
  mv "$out/$name.json.tmp" "$out/$name.json"
  echo "$name: $(( $(date +%s) - t0 )) s"
}
one real-train-vs-test --real "$data:train" --real "$data:test"
one ddpm-1000 --run "$run" --sampler ddpm --steps 1000
one ddpm-50 --run "$run" --sampler ddpm --steps 50
one ddim-50-eta0 --run "$run" --sampler ddim --steps 50 --sampler-opts eta=0
one ddim-50-eta1 --run "$run" --sampler ddim --steps 50 --sampler-opts eta=1
one dpm-solver-50 --run "$run" --sampler dpm-solver --steps 50
one euler-50 --run "$run" --sampler euler --steps 50
python3 - "$out" "$n" <<'PY'
import json, os, sys
out, n = sys.argv[1], sys.argv[2]
rows = ["real-train-vs-test", "ddpm-1000", "ddpm-50", "ddim-50-eta0", "ddim-50-eta1", "dpm-solver-50", "euler-50"]
data = {r: json.load(open(f"{out}/{r}.json")) for r in rows if os.path.exists(f"{out}/{r}.json")}
keys = [k for k in ("fid", "sfid", "cfid", "precision", "recall")
        if any(isinstance(d.get("scores", {}).get(k), (int, float)) for d in data.values())]
print(f"N = {n} per set; reference = the run's training set (real row: train vs test)")
print("| sampler | " + " | ".join(keys) + " |")
print("|---|" + "---:|" * len(keys))
for r, d in data.items():
    s = d.get("scores", {})
    cells = [f"{s[k]:.3f}" if isinstance(s.get(k), (int, float)) else str(s.get(k, "—")) for k in keys]
    print(f"| {r} | " + " | ".join(cells) + " |")
PY
