# shellcheck shell=bash
# Sourced by scripts/check-cuda.sh and scripts/gpu-check.sh: a CUDA toolkit for `cargo build --features cuda`.
#
# With KCIRC_SYSTEM_CUDA=1 and an `nvcc` on PATH (a GPU machine with its own toolkit) that toolkit is used as it
# is. Otherwise the toolkit comes from PyPI wheels, pinned below, installed with `pip install --target` into
# $CUDA_WHEELS_DIR (default ~/.cache/kcirc-cuda/wheels; about 1.2 GB): CUDA 13.0 update 2. CUDA 12 is not an
# option: the nvidia-cuda-nvcc-cu12 wheels (12.0 to 12.9) ship ptxas and libnvvm but no `nvcc` driver program;
# the CUDA 13 wheels ship the whole compiler and all install into one toolkit root, nvidia/cu13/{bin,include,lib,nvvm}.
# 13.0 rather than the newest 13.x: a CUDA 13 build needs an NVIDIA driver of release 580 or newer to load its
# PTX, and 13.0 asks for the oldest such driver. cudarc 0.19 (candle's CUDA bindings) supports 13.0 to 13.4.
#
# What the build needs and where it comes from:
#   nvcc, cudafe++, ptxas, fatbinary, nvlink  nvidia-cuda-nvcc    candle-kernels' PTX and its static MoE library
#   nvvm/bin/cicc, libdevice                  nvidia-nvvm         (nvcc's device front end)
#   include/crt/*.h                           nvidia-cuda-crt
#   cuda.h, cuda_runtime.h, libcudart.so      nvidia-cuda-runtime  headers; candle-kernels links cudart
#   include/cccl (cub, thrust, cuda/std)      nvidia-cuda-cccl    candle's .cu files
#   libcublas.so, libcublasLt.so              nvidia-cublas       cudarc links them (dynamic-linking)
#   libcurand.so                              nvidia-curand
#   libnvrtc.so                               nvidia-cuda-nvrtc
#   libcuda.so (the driver API)               none: the driver is not on PyPI. A stub with every `cu*` symbol
#                                             that cudarc declares is compiled here (lib/stubs/libcuda.so, soname
#                                             libcuda.so.1), as the CUDA toolkit's own lib64/stubs/libcuda.so does:
#                                             it satisfies the linker; at run time the driver's libcuda.so.1 loads.
# The wheels carry only versioned libraries (libcublas.so.13); the unversioned names the linker looks for are
# made as symlinks beside them.
#
# Exports: CUDA_ROOT CUDA_HOME CUDA_PATH (cudarc's link search and cudaforge's nvcc lookup), PATH (nvcc first),
# CUDA_COMPUTE_CAP (only if unset and there is no nvidia-smi; see below), KCIRC_CUDA_LIB (the runtime libraries'
# folder, for LD_LIBRARY_PATH when running the binary).

CUDA_WHEELS=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
  nvidia-cuda-nvrtc==13.0.88
  nvidia-cublas==13.1.0.3
  nvidia-curand==10.4.0.35
)

cuda_env_log() { printf '[cuda-env] %s\n' "$*" >&2; }

# The stub driver library: one no-op function per `cu*` entry point cudarc declares (returning 999,
# CUDA_ERROR_UNKNOWN, should anything ever call it).
cuda_env_stub() {
  local root=$1 lock=$2
  local stub="$root/lib/stubs/libcuda.so"
  [ -s "$stub" ] && return 0
  local ver
  ver=$(awk '/^name = "cudarc"/ { getline; gsub(/[^0-9.]/, ""); print; exit }' "$lock")
  [ -n "$ver" ] || { cuda_env_log "no cudarc in $lock"; return 1; }
  cargo fetch --locked >/dev/null 2>&1 || true
  local src
  src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"cudarc-$ver" 2>/dev/null | head -n 1)
  [ -n "$src" ] || { cuda_env_log "cudarc $ver source not found under ${CARGO_HOME:-$HOME/.cargo}/registry"; return 1; }
  mkdir -p "$root/lib/stubs"
  grep -ohE '^pub unsafe fn cu[A-Za-z0-9_]+' "$src/src/driver/sys/mod.rs" | sed 's/^pub unsafe fn //' | sort -u |
    awk '{ printf "int %s(void) { return 999; }\n", $1 }' >"$root/lib/stubs/libcuda-stub.c"
  "${CC:-cc}" -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stub" "$root/lib/stubs/libcuda-stub.c"
  cuda_env_log "stub driver library: $stub ($(wc -l <"$root/lib/stubs/libcuda-stub.c") symbols from cudarc $ver)"
}

cuda_env_setup() {
  local repo=$1
  if [ "${KCIRC_SYSTEM_CUDA:-0}" = 1 ] && command -v nvcc >/dev/null 2>&1; then
    local nvcc_path
    nvcc_path=$(command -v nvcc)
    CUDA_ROOT=$(cd "$(dirname "$nvcc_path")/.." && pwd -P)
    KCIRC_CUDA_LIB="$CUDA_ROOT/lib64"
    cuda_env_log "system CUDA toolkit at $CUDA_ROOT"
  else
    local dir="${CUDA_WHEELS_DIR:-$HOME/.cache/kcirc-cuda/wheels}"
    local want
    want=$(printf '%s\n' "${CUDA_WHEELS[@]}")
    if [ ! -x "$dir/nvidia/cu13/bin/nvcc" ] || [ "$(cat "$dir/.kcirc-wheels" 2>/dev/null)" != "$want" ]; then
      cuda_env_log "installing ${#CUDA_WHEELS[@]} CUDA wheels into $dir"
      "${PYTHON:-python3}" -m pip install --quiet --disable-pip-version-check --no-deps --upgrade --target "$dir" \
        "${CUDA_WHEELS[@]}"
      printf '%s\n' "$want" >"$dir/.kcirc-wheels"
    fi
    CUDA_ROOT="$dir/nvidia/cu13"
    KCIRC_CUDA_LIB="$CUDA_ROOT/lib"
    local f
    for f in "$CUDA_ROOT"/lib/lib*.so.*; do
      case "$f" in *alt.so*|*builtins*) continue ;; esac
      ln -sf "$(basename "$f")" "${f%%.so.*}.so"
    done
    # cudaforge and some tools look for lib64.
    [ -e "$CUDA_ROOT/lib64" ] || ln -s lib "$CUDA_ROOT/lib64"
    cuda_env_stub "$CUDA_ROOT" "$repo/Cargo.lock"
  fi
  export CUDA_ROOT KCIRC_CUDA_LIB
  export CUDA_HOME="$CUDA_ROOT" CUDA_PATH="$CUDA_ROOT"
  export PATH="$CUDA_ROOT/bin:$PATH"
  # candle-kernels compiles its kernels for one compute capability, asked of nvidia-smi when CUDA_COMPUTE_CAP is
  # unset. Without a GPU: 80 (Ampere). Its PTX is JIT-compiled by the driver for any newer GPU too (A100, L4/L40
  # sm_89, H100/H200 sm_90, Blackwell), while 90 would give sm_90a PTX that loads on Hopper only. (Its MoE
  # kernels, compiled to sm_80 machine code, run on the 8.x family only; kcirc does not use them.)
  if [ -z "${CUDA_COMPUTE_CAP:-}" ] && ! command -v nvidia-smi >/dev/null 2>&1; then
    export CUDA_COMPUTE_CAP=80
  fi
  cuda_env_log "nvcc: $(nvcc --version | grep -o 'release [0-9.]*'), CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-from nvidia-smi}"
}
