#!/usr/bin/env bash
# Compiles kcirc with `--features cuda` on a machine without a GPU: the CUDA compiler, headers and libraries come
# from PyPI wheels (scripts/cuda-env.sh says which, pinned: CUDA 13.0 update 2), then
#   cargo build  --release --locked --features cuda              (library + binary; runs candle-kernels' nvcc)
#   cargo clippy --release --locked --features cuda --all-targets -- -D warnings   (tests and benches type-checked)
#   cargo test   --release --locked --features cuda --test cuda --no-run    (tests/cuda.rs, which gpu-check.sh runs)
# in a target directory of its own ($CUDA_TARGET_DIR, default target/cuda-check; the CPU build is untouched), and
# checks that the binary asks for the driver and that `--device cuda` without a usable GPU is a clean error.
#
# No GPU is used or needed; scripts/gpu-check.sh is the check on a machine with one.
# Environment: JOBS (cargo -j, default 2), CUDA_TARGET_DIR, CUDA_WHEELS_DIR, CUDA_COMPUTE_CAP (default 80 when
# there is no nvidia-smi; see cuda-env.sh), PYTHON.
#
# Time on the project's 2-core machine (shared with four other builds at the time), -j 2, cold target directory:
# wheel download and install 16-23 s (1.2 GB), `cargo build` 49 min (about 30 min of it nvcc on candle-kernels'
# quantized-matmul and MoE sources, one file at a time), clippy 4 min; warm reruns 10 s.
# Not part of scripts/test.sh: far too slow for CI.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd -P)
# shellcheck source=scripts/cuda-env.sh
source scripts/cuda-env.sh
cuda_env_setup "$repo"

export CARGO_TARGET_DIR="${CUDA_TARGET_DIR:-$repo/target/cuda-check}"
jobs="${JOBS:-2}"
start=$(date +%s)
echo "== cargo build --release --locked --features cuda -j $jobs (target: $CARGO_TARGET_DIR)"
cargo build --release --locked --features cuda -j "$jobs"
built=$(date +%s)
echo "== cargo clippy --release --locked --features cuda --all-targets -- -D warnings"
cargo clippy --release --locked --features cuda --all-targets -j "$jobs" -- -D warnings
linted=$(date +%s)
echo "== cargo test --release --locked --features cuda --test cuda --no-run   (the parity tests gpu-check.sh runs)"
cargo test --release --locked --features cuda -j "$jobs" --test cuda --no-run

bin="$CARGO_TARGET_DIR/release/kcirc"
echo "== $bin"
# The binary must depend on the driver and CUDA libraries (dynamic linking, as cudarc is configured by candle).
needed=$(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
echo "needs: $needed"
for lib in libcuda.so.1 libcublas.so libcurand.so libcudart.so; do
  case " $needed" in *" $lib"*) ;; *) echo "FAIL: $bin does not link $lib" >&2; exit 1 ;; esac
done
# Without a GPU (here: the stub driver, whose every call fails) `--device cuda` must end with a one-line error,
# not a panic, and write nothing.
if ! command -v nvidia-smi >/dev/null 2>&1; then
  fake=$(mktemp -d)
  trap 'rm -rf "$fake"' EXIT
  ln -s "$CUDA_ROOT/lib/stubs/libcuda.so" "$fake/libcuda.so.1"
  set +e
  LD_LIBRARY_PATH="$fake:$KCIRC_CUDA_LIB" "$bin" --quiet predict --device cuda \
    --model tests/fixtures/gpt2-tiny --prompt "The capital of France is" >"$fake/out" 2>"$fake/err"
  rc=$?
  set -e
  echo "--device cuda without a GPU: exit $rc: $(head -c 300 "$fake/err")"
  if [ "$rc" = 0 ] || [ "$rc" = 101 ] || grep -q panicked "$fake/err"; then
    echo "FAIL: expected a clean error" >&2
    exit 1
  fi
fi
printf 'check-cuda: OK (build %d s, clippy %d s, -j %s, CUDA_COMPUTE_CAP=%s)\n' \
  $((built - start)) $((linted - built)) "$jobs" "${CUDA_COMPUTE_CAP:-from nvidia-smi}"
