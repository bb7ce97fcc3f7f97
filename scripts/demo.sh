#!/usr/bin/env bash
# The main job on the embedded default: fetches SmolLM2-135M-Instruct (first use only), builds kcirc, then
# discovers and evaluates the knowledge circuits of six real relations (all four LRE categories) and prints full
# model vs circuit vs random circuits on held-out facts.
# Circuits land in out/circuits/<relation>.json; the JSON Lines summary goes to out/summary.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${CARGO_TARGET_DIR:-}" ] && [ -n "${HOME:-}" ] && mkdir -p "$HOME/.cache/kcirc-target" 2>/dev/null; then
  export CARGO_TARGET_DIR="$HOME/.cache/kcirc-target"
fi
model=$(bash scripts/fetch-models.sh)
cargo build --release --locked >&2
kcirc="${CARGO_TARGET_DIR:-target}/release/kcirc"
mkdir -p out
"$kcirc" discover --model "$model" --config configs/cpu.json --out-dir out/circuits \
  --triples data/country_capital_city.jsonl \
  --triples data/country_largest_city.jsonl \
  --triples data/city_in_country.jsonl \
  --triples data/adj_antonym.jsonl \
  --triples data/task_done_by_tool.jsonl \
  --triples data/occupation_gender.jsonl \
  "$@" > out/summary.jsonl
echo "circuits: out/circuits/, summary: out/summary.jsonl" >&2
