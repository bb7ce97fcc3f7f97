#!/usr/bin/env bash
# The whole test suite on a fresh machine: fetches the real model it needs, builds once (release profile, shared
# by the tests and the binary) and runs every test. `.ci/run` runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
# Reuse a target directory outside the clone when the machine has a cache folder: warm CI runs skip the
# dependency build.
if [ -z "${CARGO_TARGET_DIR:-}" ] && [ -n "${HOME:-}" ] && mkdir -p "$HOME/.cache/kcirc-target" 2>/dev/null; then
  export CARGO_TARGET_DIR="$HOME/.cache/kcirc-target"
fi
bash scripts/fetch-models.sh >/dev/null
cargo test --release --locked "$@"
