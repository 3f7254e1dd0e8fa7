#!/usr/bin/env bash
# The measurements behind FINE's open choices (docs/results/fine-fidelity.md):
#  1. ancestry learning rate, warmup and factor init: 1000-step ancestries of
#     fmnist-w64-d6-p4 on the bundled data, factorized (fine) and plain
#     (scratch), scored by held-out ε-MSE of the live and EMA weights (N = 1000);
#  2. the σ phase with `fine init`'s defaults and its alternatives, from the
#     learngene of the lr-1e-3 FINE ancestry, at depths 2, 4, 6, 8.
# Usage: scripts/fine-fidelity.sh OUT_DIR        (about 40 min on 2 cores)
set -euo pipefail
out=${1:?usage: scripts/fine-fidelity.sh OUT_DIR}
cd "$(dirname "$0")/.."
cargo build --release -p fine-cli -q
F=target/release/fine
mkdir -p "$out"
g=graphs/fmnist-w64-d6-p4.ron
ancestry() { # strategy lr warmup factor_init
    local d="$out/anc-$1-$2-$3-$4" o=()
    [ "$1" = fine ] && o=(--strategy-opts "factor_init=$4")
    [ -e "$d/heldout.json" ] || $F pretrain --strategy "$1" "${o[@]}" --graph $g --out "$d" --steps 1000 --batch 32 \
        --lr "$2" --warmup "$3" --ema-decay 0.995 --ckpt-every 1000 --heldout 1000 >"$d.log" 2>&1
    echo "ancestry $1 lr $2 warmup $3 init $4: $(cat "$d/heldout.json")"
}
for lr in 5e-4 1e-3 2e-3 3e-3 5e-3 8e-3; do ancestry fine $lr 100 balanced; done
ancestry fine 2e-3 300 balanced
ancestry fine 5e-3 100 sigma
for lr in 1e-3 2e-3 3e-3 5e-3; do ancestry scratch $lr 100 -; done
lg="$out/lg.safetensors"
[ -e "$lg" ] || $F learngene extract --run "$out/anc-fine-1e-3-100-balanced" --out "$lg"
init() { # name depth options...
    local n=$1 d=$2; shift 2
    [ -e "$out/init-$n/heldout.json" ] || $F init --learngene "$lg" --graph "graphs/fmnist-w64-d$d-p4.ron" \
        --out "$out/init-$n" --subset 2000 --heldout 1000 "$@" >"$out/init-$n.log" 2>&1
    echo "σ phase $n: $(cat "$out/init-$n/heldout.json")"
}
init d6-defaults 6
init d6-scale10 6 --strategy-opts sigma_lr_scale=10
init d6-scale100 6 --strategy-opts sigma_lr_scale=100
init d6-bias-zero 6 --strategy-opts bias_init=zero
init d6-bias-same 6 --strategy-opts bias_init=same
init d6-random 6 --strategy-opts sigma_init=random
init d6-linear-untrained 6 --strategy-opts sigma_init=linear --init-steps 0
for d in 2 4 8; do
    init d$d-defaults $d
    init d$d-linear-untrained $d --strategy-opts sigma_init=linear --init-steps 0
    init d$d-linear-trained $d --strategy-opts sigma_init=linear
done
