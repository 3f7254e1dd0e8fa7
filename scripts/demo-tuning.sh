#!/usr/bin/env bash
# Measures candidate settings for `fine demo`: each line of the table trains one
# graph on the bundled Fashion-MNIST subset with `fine train`, times the
# training, and scores the EMA weights the way the demo does (FID on classifier
# features of 500 DDIM-50 samples, no guidance, against the bundled training
# images). Results: OUT/results.tsv (one row per setting) and the run folders.
#
#   scripts/demo-tuning.sh OUT [SETTINGS_FILE]
#
# SETTINGS_FILE lines: `name graph steps batch lr warmup min_lr ema_decay`
# (# starts a comment); the default list is every setting in docs/results/demo.md
# (about 75 minutes).
# Run it on an otherwise idle machine: the times are the point.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/demo-tuning.sh OUT [SETTINGS_FILE]}
settings=${2:-}
cargo build --release -q -p fine-cli
fine=target/release/fine
mkdir -p "$out"
default_settings() {
    cat <<'EOF'
# name              graph                          steps batch lr    warmup min_lr ema
# about 5 minutes
w64d4-b32-10k       graphs/fmnist-w64-d4-p4.ron    10000 32    1e-3  200    1e-4   0.995
w64d4-b32-10k-lr2   graphs/fmnist-w64-d4-p4.ron    10000 32    2e-3  200    1e-4   0.995
w64d4-b32-10k-ema999 graphs/fmnist-w64-d4-p4.ron   10000 32    1e-3  200    1e-4   0.999
w64d4-b64-6k        graphs/fmnist-w64-d4-p4.ron    6000  64    2e-3  200    1e-4   0.995
w128d4-b32-4k       graphs/fmnist-w128-d4-p4.ron   4000  32    1e-3  200    1e-4   0.995
w64d4-b32-10k-lr3   graphs/fmnist-w64-d4-p4.ron    10000 32    3e-3  200    1e-4   0.995
w128d4-b32-4k-lr2   graphs/fmnist-w128-d4-p4.ron   4000  32    2e-3  200    1e-4   0.995
w64d4-b32-10k-lr5   graphs/fmnist-w64-d4-p4.ron    10000 32    5e-3  200    1e-4   0.995
# about 15 minutes
w64d4-b32-35k-lr3   graphs/fmnist-w64-d4-p4.ron    35000 32    3e-3  200    1e-4   0.995
w128d4-b32-14k-lr2  graphs/fmnist-w128-d4-p4.ron   14000 32    2e-3  200    1e-4   0.995
EOF
}
if [[ -n $settings ]]; then cat "$settings"; else default_settings; fi | while read -r name graph steps batch lr warmup min_lr ema; do
    [[ -z $name || $name == \#* ]] && continue
    run=$out/$name
    if [[ ! -f $run/quality.json ]]; then
        rm -rf "$run"
        t0=$(date +%s.%N)
        "$fine" train --graph "$graph" --out "$run" --data bundled --steps "$steps" --batch "$batch" --lr "$lr" \
            --warmup "$warmup" --cosine-min-lr "$min_lr" --ema-decay "$ema" --ckpt-every "$steps" >"$run.train.log" 2>&1
        t1=$(date +%s.%N)
        "$fine" eval --run "$run" --n 500 --metric cfid --sampler ddim --steps 50 --cfg 1 --json "$run/quality.json" \
            >"$run.eval.log" 2>&1
        t2=$(date +%s.%N)
        python3 - "$run" "$t0" "$t1" "$t2" <<'EOF'
import json, sys
run, t0, t1, t2 = sys.argv[1], *map(float, sys.argv[2:])
doc = json.load(open(f"{run}/quality.json"))
doc["train_s"], doc["eval_s"] = t1 - t0, t2 - t1
json.dump(doc, open(f"{run}/quality.json", "w"), indent=1)
EOF
    fi
    python3 - "$run" "$name" "$graph" "$steps" "$batch" "$lr" "$ema" >>"$out/results.tsv" <<'EOF'
import json, sys
run, name, graph, steps, batch, lr, ema = sys.argv[1:]
d = json.load(open(f"{run}/quality.json"))
print("\t".join([name, graph, steps, batch, lr, ema, f"{d['train_s']:.0f}", f"{d['eval_s']:.0f}", f"{d['scores']['cfid']:.1f}"]))
EOF
    tail -1 "$out/results.tsv"
done
