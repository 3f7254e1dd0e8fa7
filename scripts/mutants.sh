#!/usr/bin/env bash
# Mutation testing with cargo-mutants over the code whose bugs the suite must
# catch: samplers, noise and learning-rate schedules, the loss, guidance, the
# optimizer and the benchmark report. Each mutant (an operator flipped, a
# function body replaced) is built and tested; one that no test fails on is
# "missed". Too slow for CI (a rebuild per mutant); run before changing these
# files' tests and after large changes. Results: target/mutants/<group>/mutants.out
# (missed.txt, caught.txt, unviable.txt, timeout.txt); the review of every
# missed mutant is in docs/results/mutants.md.
#
#   scripts/mutants.sh                 # every group (samplers, schedules, guidance, optimizer, report, fine, peers)
#   scripts/mutants.sh samplers report # some groups
#
# cargo-mutants copies the tree and builds it afresh (≈10 min on 2 cores). To reuse
# a warm target folder, run it in a scratch copy of the tree with
# MUTANTS_ARGS=--in-place (it edits the files it mutates, so never in your own
# checkout). Each core group runs only the unit tests that cover its functions.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-mutants >/dev/null || cargo install cargo-mutants --locked
run() {
    local name=$1
    shift
    mkdir -p "target/mutants/$name"
    # Exit 2 (some mutants missed) and 3 (some timed out) are results, not failures.
    # shellcheck disable=SC2086
    cargo mutants --no-shuffle ${MUTANTS_ARGS:-} --output "target/mutants/$name" "$@" || {
        rc=$?
        [ $rc -eq 2 ] || [ $rc -eq 3 ] || exit $rc
    }
    echo "== $name: $(wc -l <"target/mutants/$name/mutants.out/missed.txt") missed, $(wc -l <"target/mutants/$name/mutants.out/caught.txt") caught"
}
for g in "${@:-samplers schedules guidance optimizer report fine peers}"; do
    for g in $g; do
        case $g in
        samplers)
            run samplers -f plugins/sampler-ddpm/src/lib.rs -f plugins/sampler-ddim/src/lib.rs \
                -f plugins/sampler-euler/src/lib.rs -f plugins/sampler-dpm-solver/src/lib.rs
            ;;
        schedules) # the learning-rate and EMA schedules, the forward process: fine-core's unit tests
            run schedules -f core/src/train/config.rs -f core/src/diffusion/schedule.rs \
                -F 'lr_at|ema_decay_at|ema_init_share|add_noise|from_betas' --cargo-test-arg=--lib -- -- train:: diffusion::
            ;;
        optimizer) # AdamW, clipping, the EMA update, the loss
            run optimizer -f core/src/train/optim.rs -f core/src/train/ema.rs -f core/src/train/loss.rs \
                -F 'AdamW::update|clip|global_norm|ema.rs.*update|eps_mse|OptState' --cargo-test-arg=--lib -- -- train::
            ;;
        guidance) # classifier-free guidance in the denoiser
            run guidance -f core/src/sample/mod.rs -F 'Denoiser.*::eps' --cargo-test-arg=--lib -- -- sample::
            ;;
        report) # the benchmark's table, means and paired differences: the cli crate's unit tests
            run report -f cli/src/bench_learngene/report.rs -F 'mean_std|paired_cell|cell|Column::of' \
                --cargo-test-arg=--bin --cargo-test-arg=fine
            ;;
        fine) # FINE's ancestry, extract and descendant: the strategy crate's unit tests
            run fine -f plugins/strategy-fine/src/lib.rs --cargo-test-arg=--lib
            ;;
        peers) # the peer strategies' ancestry, extract and descendant: each strategy crate's unit tests
            run peers -f plugins/strategy-tleg/src/lib.rs -f plugins/strategy-heur/src/lib.rs \
                -f plugins/strategy-sws/src/lib.rs -f plugins/strategy-svd-independent/src/lib.rs \
                -f plugins/strategy-stitch/src/lib.rs --cargo-test-arg=--lib
            ;;
        *)
            echo "unknown group $g (samplers, schedules, guidance, optimizer, report, fine, peers)" >&2
            exit 1
            ;;
        esac
    done
done
