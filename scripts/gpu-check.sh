#!/usr/bin/env bash
# The GPU check: one script, one call on the H100/H200 machine (CUDA 13,
# driver 580, nvcc, no Rust, no network), over a copy of this tree with the
# binary built by scripts/build-cuda.sh (dist/cuda/) on a build machine and
# copied over with the tree; run it from the tree's root: scripts/gpu-check.sh
#
#   1. parity    `fine bench parity`: CPU vs CUDA forward, every gradient and
#                3 AdamW steps from the same weights (relative error ≤ 1e-4, f32)
#   2. pipeline  FINE end to end on a small graph and the bundled data:
#                pretrain → learngene extract → init (σ phase) → train → sample
#   3. timings   ms/step of DiT-S/2 and DiT-B/2 at batch 64 and 256 (fine, and
#                PyTorch fp32 / bf16-autocast eager in the same call when
#                python3 has torch with CUDA); sampling images/s; Inception images/s
#                (the Inception port runs on the CPU; needs its weights)
#   4. profile   per-kernel GPU time of one DiT-S/2 batch-64 step (nsys, else
#                ncu) against its wall time: scripts/gpu_profile_summary.py
#
# Prints a short table last; it lands in $OUT/table.md (default $OUT from the
# environment, else /tmp/gpu-check) with profile.md, and every JSON line and log
# in $OUT/gpu-check-logs.tar.gz. Exit status: 1 when a
# parity check or a pipeline step failed.
#
# Try it on the CPU here (tiny sizes, minutes):
#   FINE=target/release/fine DEV=cpu QUICK=1 scripts/gpu-check.sh
set -uo pipefail
cd "$(dirname "$0")/.."

FINE=${FINE:-dist/cuda/fine}
DEV=${DEV:-cuda:0}
OUT=${OUT:-/tmp/gpu-check}
QUICK=${QUICK:-0}
mkdir -p "$OUT"
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
FAILED=0
ROWS=()

say() { printf '\n== %s\n' "$*" >&2; }
# run NAME SECONDS CMD...: runs with a time limit, keeps stdout in $OUT/NAME.json; returns its status.
run() {
    local name=$1 limit=$2
    shift 2
    timeout "$limit" "$@" >"$OUT/$name.json" 2>"$OUT/$name.log"
    local rc=$?
    if [ $rc -ne 0 ]; then
        echo "   $name: exit $rc; last lines of its log:" >&2
        tail -5 "$OUT/$name.log" >&2
    fi
    return $rc
}
# table: the rows so far as a markdown table; also kept in $OUT/table.md after each
# section, so a call cut off by its time limit still brings back what was done.
table() {
    printf '| check | result | on |\n|---|---|---|\n'
    local r a b c
    for r in "${ROWS[@]}"; do
        IFS='|' read -r a b c <<<"$r"
        printf '| %s | %s | %s |\n' "$a" "$b" "$c"
    done
}
checkpoint() { table >"$OUT/table.md"; }
field() { python3 -c "import json,sys; d=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); print(d.get(sys.argv[2], '?'))" "$1" "$2" 2>/dev/null || echo "?"; }

if [ ! -x "$FINE" ]; then
    echo "gpu-check: no binary at $FINE (build it with scripts/build-cuda.sh and carry dist/cuda)" >&2
    exit 2
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt" >&2
CARD=$(head -1 "$OUT/gpu.txt" 2>/dev/null | cut -d, -f1)
CARD=${CARD:-$DEV}

# SKIP: sections to leave out, e.g. SKIP="pipeline sampling profile" for a
# short call that only re-measures; PARITY_OVERRIDE / TIMED_OVERRIDE replace the lists.
skip() { [[ " ${SKIP:-} " == *" $1 "* ]]; }
if [ "$QUICK" = 1 ]; then
    PARITY_GRAPHS="graphs/fmnist-tiny.ron"
    TIMED="graphs/fmnist-tiny.ron:8"
    PIPE_STEPS=10
else
    PARITY_GRAPHS="graphs/fmnist-tiny.ron graphs/fmnist-w128-d4-p4.ron"
    TIMED="graphs/dit-s-2.ron:64 graphs/dit-s-2.ron:256 graphs/dit-b-2.ron:64 graphs/dit-b-2.ron:256"
    PIPE_STEPS=200
fi
PARITY_GRAPHS=${PARITY_OVERRIDE:-$PARITY_GRAPHS}
TIMED=${TIMED_OVERRIDE:-$TIMED}

# ----- 1. parity -----
say "1. parity of $DEV against the CPU"
for g in $PARITY_GRAPHS; do
    n=parity-$(basename "$g" .ron)
    if run "$n" 300 "$FINE" --device "$DEV" bench parity --graph "$g" --batch 4 --steps 3 --tol 1e-4; then
        ROWS+=("parity $(basename "$g" .ron)|fwd $(field "$OUT/$n.json" forward_rel), grad $(field "$OUT/$n.json" grad_rel), after 3 steps $(field "$OUT/$n.json" params_rel_after_steps)|ok")
    else
        FAILED=1
        ROWS+=("parity $(basename "$g" .ron)|$(tail -1 "$OUT/$n.log" | cut -c1-90)|FAIL")
    fi
done

checkpoint
# ----- 2. the FINE pipeline -----
P="--device $DEV"
t0=$SECONDS
if skip pipeline; then
    :
elif say "2. FINE pipeline on $DEV" && run pipe-pretrain 300 "$FINE" $P pretrain --strategy fine --graph graphs/fmnist-tiny-d3.ron --out "$W/anc" \
        --steps "$PIPE_STEPS" --batch 32 --data bundled --lr 2e-3 &&
    run pipe-extract 120 "$FINE" $P learngene extract --run "$W/anc" --out "$W/lg.safetensors" &&
    run pipe-init 300 "$FINE" $P init --learngene "$W/lg.safetensors" --graph graphs/fmnist-tiny.ron --out "$W/desc" \
        --init-steps 20 --data bundled --batch 32 &&
    run pipe-train 300 "$FINE" $P train --from "$W/desc" --steps "$PIPE_STEPS" --batch 32 --data bundled &&
    run pipe-sample 300 "$FINE" $P sample --run "$W/desc/train" --n 20 --steps 20 --sampler ddim --out "$OUT/pipeline-samples.png"; then
    last=$(tail -1 "$W/desc/train/metrics.jsonl" 2>/dev/null | python3 -c "import json,sys; print(round(json.load(sys.stdin)['loss'],4))" 2>/dev/null)
    ROWS+=("FINE pipeline (tiny, bundled)|pretrain → extract → init → train → sample in $((SECONDS - t0)) s, last loss $last|ok")
else
    FAILED=1
    ROWS+=("FINE pipeline (tiny, bundled)|a step failed (logs in $OUT/pipe-*.log)|FAIL")
fi

checkpoint
# ----- 3. timings -----
say "3. timings"
HAVE_TORCH=0
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null && HAVE_TORCH=1
[ "$DEV" = cpu ] && HAVE_TORCH=0
for spec in $TIMED; do
    g=${spec%%:*}
    b=${spec##*:}
    name=$(basename "$g" .ron)
    n=step-$name-b$b
    if run "$n" 240 "$FINE" --device "$DEV" bench step --graph "$g" --batch "$b" --steps 10 --warmup 3; then
        ms=$(printf "%.1f" "$(field "$OUT/$n.json" step_ms)" 2>/dev/null || echo "?")
        ratio=""
        if [ $HAVE_TORCH = 1 ]; then
            dims=$(python3 - "$g" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
get = lambda k: re.search(k + r"\s*:\s*([0-9.]+)", t).group(1)
print(f"--channels {get('channels')} --size {get('height')} --patch {get('patch_size')} --hidden {get('hidden')} "
      f"--depth {get('depth')} --heads {get('heads')} --classes {get('num_classes')}")
PY
)
            for prec in fp32 bf16; do
                run "torch-$name-b$b-$prec" 240 python3 scripts/torch_bench_step.py $dims --batch "$b" --steps 10 \
                    --warmup 3 --device cuda --precision $prec
            done
            f32=$(field "$OUT/torch-$name-b$b-fp32.json" step_ms)
            bf=$(field "$OUT/torch-$name-b$b-bf16.json" step_ms)
            ratio=$(python3 -c "print(f'{$ms/$f32:.2f}× PyTorch fp32 ($f32 ms), {$ms/$bf:.2f}× bf16 ($bf ms)')" 2>/dev/null || echo "PyTorch: ?")
        else
            ratio="no PyTorch with CUDA here"
        fi
        ROWS+=("step $name batch $b|$ms ms; $ratio|$CARD")
    else
        ROWS+=("step $name batch $b|failed (see $OUT/$n.log)|$CARD")
    fi
    checkpoint
done
# Sampling throughput: a DiT-S/2 (tiny when QUICK) with 1 training step, DDIM 50 steps.
sg=graphs/dit-s-2.ron
sn=256
[ "$QUICK" = 1 ] && sg=graphs/fmnist-tiny.ron && sn=16
if ! skip sampling && run samp-train 300 "$FINE" --device "$DEV" train --graph "$sg" --out "$W/s" --steps 1 --batch 2 --data synthetic; then
    t0=$(date +%s.%N)
    if run samp "$(( QUICK == 1 ? 120 : 300 ))" "$FINE" --device "$DEV" sample --run "$W/s" --n $sn --steps 50 --sampler ddim --cfg 1 --out "$W/s.png"; then
        s=$(python3 -c "import time; print(round($sn/(time.time()-$t0), 1))")
        ROWS+=("sampling $(basename $sg .ron), DDIM 50|$s images/s ($sn images)|$CARD")
    fi
fi
# Inception features (the Rust port runs on the CPU cores of this machine).
if skip inception; then
    :
elif [ -f "${FINE_INCEPTION:-$HOME/.cache/fine/inception/default_1.pt}" ] || [ -f "${FINE_INCEPTION:-}" ]; then
    if run inception 300 "$FINE" bench inception --n 256 --batch 32; then
        ROWS+=("Inception features (CPU port)|$(field "$OUT/inception.json" images_per_s) images/s|$(nproc) CPU threads")
    fi
else
    ROWS+=("Inception features|skipped: no Inception weights on this machine (scripts/fetch-inception.sh)|-")
fi

checkpoint
# ----- 4. profile -----
# Where the GPU time of one DiT-S/2 batch-64 step goes: per-kernel GPU time from
# nsys (or ncu, one metric) against the step's wall time. Skipped when the
# checks above left too little of the call's time (PROFILE_AFTER_S, default 330 s).
if [ "$DEV" != cpu ] && ! skip profile && [ "$SECONDS" -lt "${PROFILE_AFTER_S:-330}" ]; then
    say "4. kernel profile of one DiT-S/2 batch-64 step"
    pg=graphs/dit-s-2.ron
    pb=64
    [ "$QUICK" = 1 ] && pg=graphs/fmnist-tiny.ron && pb=8
    NSYS=$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2>/dev/null | head -1)
    NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
    if [ -n "$NSYS" ]; then
        timeout 150 "$NSYS" profile -o "$W/prof" --force-overwrite true --trace cuda --sample none --cpuctxsw none \
            "$FINE" --device "$DEV" bench step --graph "$pg" --batch $pb --steps 3 --warmup 1 >"$OUT/profile-step.json" 2>"$OUT/profile.log"
        timeout 90 "$NSYS" stats --report cuda_gpu_kern_sum --report cuda_api_sum --format csv --output "$OUT/profile" "$W/prof.nsys-rep" >>"$OUT/profile.log" 2>&1
        ROWS+=("profile (nsys, 4 steps)|$(python3 scripts/gpu_profile_summary.py nsys "$OUT" "$OUT/step-$(basename $pg .ron)-b$pb.json" 2>>"$OUT/profile.log" || echo "failed, see profile.log")|$CARD")
    elif [ -n "$NCU" ]; then
        timeout 150 "$NCU" --metrics gpu__time_duration.sum --csv --page raw -c 20000 \
            "$FINE" --device "$DEV" bench step --graph "$pg" --batch $pb --steps 1 --warmup 0 >"$OUT/profile-ncu.csv" 2>"$OUT/profile.log"
        ROWS+=("profile (ncu, 1 step)|$(python3 scripts/gpu_profile_summary.py ncu "$OUT" "$OUT/step-$(basename $pg .ron)-b$pb.json" 2>>"$OUT/profile.log" || echo "failed, see profile.log")|$CARD")
    else
        ROWS+=("profile|skipped: neither nsys nor ncu found|-")
    fi
fi

checkpoint
# Few files to copy back from the GPU machine: everything but the table and
# the profile goes into one archive.
(cd "$OUT" && tar czf "$W/logs.tar.gz" --exclude=table.md --exclude=profile.md --exclude=gpu.txt . &&
    find . -maxdepth 1 -type f ! -name table.md ! -name profile.md ! -name gpu.txt -delete &&
    mv "$W/logs.tar.gz" gpu-check-logs.tar.gz)

# ----- table -----
printf '\n'
table
exit $FAILED
