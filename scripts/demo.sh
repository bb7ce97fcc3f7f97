#!/usr/bin/env bash
# The main job on the embedded default: fetches SmolLM2-135M-Instruct (first use only), builds kcirc, and runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${CARGO_TARGET_DIR:-}" ] && [ -n "${HOME:-}" ] && mkdir -p "$HOME/.cache/kcirc-target" 2>/dev/null; then
  export CARGO_TARGET_DIR="$HOME/.cache/kcirc-target"
fi
model=$(bash scripts/fetch-models.sh)
cargo build --release --locked >&2
kcirc="${CARGO_TARGET_DIR:-target}/release/kcirc"
"$kcirc" predict --model "$model" --format text --top-k 5 \
  --prompt "The capital city of France is" --prompt "The Eiffel Tower is located in the city of"
"$kcirc" graph --model "$model"
