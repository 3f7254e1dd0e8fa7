#!/usr/bin/env bash
# Same-run speed check of this build against another `fine` binary (e.g. one
# built at an older commit): `fine bench step` on each graph, ROUNDS rounds
# with the two binaries interleaved, the median step time of each, and the
# ratio before/now (≥ 1: this build is as fast or faster; within noise ≈ 0.97–1.03).
#
#   git worktree add /tmp/before <rev> && (cd /tmp/before && cargo build --release -p fine-cli)
#   scripts/bench-vs-before.sh /tmp/before/target/release/fine [ROUNDS]
#
# SPECS (optional): the cases, `graph batch steps` separated by `;`
# (default: "graphs/fmnist-w128-d4-p4.ron 32 20; graphs/dit-s-2.ron 8 5").
# NOW (optional): the binary to compare, instead of this checkout's build.
# MODE=train (optional): time `fine train` on the bundled images instead (the
# median step time in metrics.jsonl after the first 20 steps); graphs must
# then take 28×28 single-channel input.
set -euo pipefail
cd "$(dirname "$0")/.."
before=${1:?usage: scripts/bench-vs-before.sh BEFORE_BIN [ROUNDS]}
rounds=${2:-5}
if [[ -n ${NOW:-} ]]; then now=$NOW; else cargo build --release -q -p fine-cli; now=target/release/fine; fi
specs=${SPECS:-graphs/fmnist-w128-d4-p4.ron 32 20; graphs/dit-s-2.ron 8 5}
ms() {
    if [[ ${MODE:-step} == train ]]; then
        local run
        run=$(mktemp -d)
        "$1" train --graph "$2" --out "$run/r" --data bundled --batch "$3" --steps "$4" --ckpt-every "$4" >/dev/null 2>&1
        python3 -c 'import json,statistics,sys; r=[json.loads(l)["step_ms"] for l in open(sys.argv[1]) if "step_ms" in l]; print(statistics.median(r[20:]))' "$run/r/metrics.jsonl"
        rm -rf "$run"
    else
        "$1" bench step --graph "$2" --batch "$3" --steps "$4" --warmup 2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["step_ms"])'
    fi
}
median() { python3 -c 'import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
printf '%-28s %6s %12s %12s %8s\n' graph batch "before ms" "now ms" ratio
IFS=';' read -ra cases <<<"$specs"
for spec in "${cases[@]}"; do
    read -r g b s <<<"$spec"
    a=() n=()
    for _ in $(seq "$rounds"); do
        a+=("$(ms "$before" "$g" "$b" "$s")")
        n+=("$(ms "$now" "$g" "$b" "$s")")
    done
    ma=$(median "${a[@]}") mn=$(median "${n[@]}")
    printf '%-28s %6s %12.1f %12.1f %8.3f\n' "$(basename "$g" .ron)" "$b" "$ma" "$mn" "$(python3 -c "print($ma/$mn)")"
done
