#!/usr/bin/env bash
# The evidence for FINE on full Fashion-MNIST (60k train images, Debian package
# dataset-fashion-mnist): one FINE ancestry (width 64, depth 6), then for every
# descendant size and seed
#   FINE    = fine init (σ-only phase 2, SIGMA steps on a 2000-image subset)
#             + K steps of ordinary training (fine train --from),
#   scratch = K steps of ordinary training from DiT's init,
# same batch, learning rate, seed (hence the same batches, timesteps, noises).
# Each run ends with the held-out ε-MSE on the first 2000 test images (fixed
# timesteps and noise, live weights). Sizes: depths 2, 4, 6 at the ancestry's
# width; the Σ-init ablation at depth 4 (random / identical / linear, σ not
# trained, vs FINE's trained σ); other widths 32 and 128 at depth 4 (learned
# width projections). Prints mean ± std over seeds and writes summary.md.
#
# Usage: scripts/fine-evidence.sh [OUT] [K] [SIGMA] [SEEDS] [ANC_STEPS] [WIDTH_SEEDS]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/fine-evidence}
K=${2:-300}
SIGMA=${3:-200}
SEEDS=${4:-"0 1 2"}
ANC=${5:-2000}
WIDTH_SEEDS=${6:-$SEEDS}
fine=${FINE:-./target/release/fine}
[ -x "$fine" ] || cargo build --release -p fine-cli
common=(--data fashion-mnist --batch 32 --lr 1e-3 --ema-decay 0.995)
mkdir -p "$out"
t0=$(date +%s)
[ -f "$out/anc/checkpoint.safetensors" ] || $fine pretrain --strategy fine --graph graphs/fmnist-w64-d6-p4.ron \
  --out "$out/anc" --steps "$ANC" --warmup 100 --seed 0 "${common[@]}"
lg="$out/learngene.safetensors"
[ -f "$lg" ] || $fine learngene extract --run "$out/anc" --out "$lg"
t1=$(date +%s)

# run NAME GRAPH SEED [init options...]: FINE (with init options) or scratch (none).
run() {
  local name=$1 graph=$2 seed=$3; shift 3
  local dir="$out/$name-s$seed"
  [ -f "$dir/heldout.json" ] || [ -f "$dir/train/heldout.json" ] && return 0
  rm -rf "$dir"
  if [ "$#" -gt 0 ]; then
    $fine init --learngene "$lg" --graph "$graph" --out "$dir" --subset 2000 --lr 1e-2 --seed "$seed" \
      --data fashion-mnist --batch 32 "$@" > "$dir.log" 2>&1
    $fine train --from "$dir" --steps "$K" --seed "$seed" --heldout 2000 "${common[@]}" >> "$dir.log" 2>&1
  else
    $fine train --graph "$graph" --out "$dir" --steps "$K" --seed "$seed" --heldout 2000 "${common[@]}" > "$dir.log" 2>&1
  fi
  echo "$name seed $seed: $(tail -n 5 "$dir.log" | grep held-out)"
}

for seed in $SEEDS; do
  for d in 2 4 6; do
    g=graphs/fmnist-w64-d$d-p4.ron
    run "fine-d$d" "$g" "$seed" --sigma-steps "$SIGMA" --strategy-opts "seed=$seed"
    run "scratch-d$d" "$g" "$seed"
  done
  for m in random identical linear; do
    run "sigma-$m-d4" graphs/fmnist-w64-d4-p4.ron "$seed" --sigma-steps 0 --strategy-opts "sigma_init=$m,seed=$seed"
  done
  for w in 32 128; do
    [[ " $WIDTH_SEEDS " == *" $seed "* ]] || continue
    g=graphs/fmnist-w$w-d4-p4.ron
    run "fine-w$w" "$g" "$seed" --sigma-steps "$SIGMA" --strategy-opts "seed=$seed"
    run "scratch-w$w" "$g" "$seed"
  done
done
t2=$(date +%s)
python3 - "$out" "$K" "$SIGMA" $((t1 - t0)) $((t2 - t1)) <<'PY'
import glob, json, os, statistics as st, sys
out, K, S, ta, td = sys.argv[1:]
def ms(name):
    v = []
    for p in glob.glob(f"{out}/{name}-s*/heldout.json") + glob.glob(f"{out}/{name}-s*/train/heldout.json"):
        v.append(json.load(open(p))["live"])
    if not v: return "—"
    return f"{st.mean(v):.4f} ± {st.stdev(v):.4f} (n={len(v)})" if len(v) > 1 else f"{v[0]:.4f} (n=1)"
lines = [f"Held-out ε-MSE (first 2000 Fashion-MNIST test images, fixed t and ε; live weights) after K = {K} training steps; FINE's phase 2 = {S} σ-steps. Mean ± std over seeds.", "",
         "| size | scratch | FINE |", "|---|---|---|"]
for d in (2, 4, 6):
    lines.append(f"| w64 depth {d} | {ms(f'scratch-d{d}')} | {ms(f'fine-d{d}')} |")
for w in (32, 128):
    lines.append(f"| width {w} depth 4 (ancestry width 64) | {ms(f'scratch-w{w}')} | {ms(f'fine-w{w}')} |")
lines += ["", "Σ-init ablation, depth 4 (σ not trained in phase 2 except for FINE):", "", "| Σ init | held-out ε-MSE |", "|---|---|"]
for m in ("random", "identical", "linear"):
    lines.append(f"| {m} | {ms(f'sigma-{m}-d4')} |")
lines.append(f"| trained (FINE) | {ms('fine-d4')} |")
lines.append(f"| scratch | {ms('scratch-d4')} |")
lines += ["", f"ancestry {ta} s, descendants {td} s"]
text = "\n".join(lines)
print(text)
open(f"{out}/summary.md", "w").write(text + "\n")
PY
