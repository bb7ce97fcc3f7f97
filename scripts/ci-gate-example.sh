#!/usr/bin/env bash
# The README's CI example as a plain script. Once: discover a relation's circuit on the real model and keep its
# file (with its held-out report) as the accepted baseline. On every change: score that circuit again and fail
# (exit 1, every failed gate named) when circuit Hit@10, Hit@1, MRR or faithfulness fell by more than 0.05, when
# the circuit keeps less than 80% of the full model's Hit@10, or when random circuits of its size reach 0.2.
# KCIRC=path/to/kcirc uses that binary (default: build it); WORK=dir keeps the files (default: a temporary folder).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${KCIRC:-}" ]; then
  if [ -z "${CARGO_TARGET_DIR:-}" ] && [ -n "${HOME:-}" ] && mkdir -p "$HOME/.cache/kcirc-target" 2>/dev/null; then
    export CARGO_TARGET_DIR="$HOME/.cache/kcirc-target"
  fi
  cargo build --release --locked >&2
  KCIRC="${CARGO_TARGET_DIR:-target}/release/kcirc"
fi
work="${WORK:-$(mktemp -d)}"
mkdir -p "$work"
model=$(bash scripts/fetch-models.sh)
relation=data/country_capital_city.jsonl

# Once (and whenever a new circuit is accepted): the baseline.
if [ ! -f "$work/accepted.json" ]; then
  "$KCIRC" discover --quiet --model "$model" --config configs/cpu.json --triples "$relation" --out "$work/accepted.json"
fi

# Every change: the gate.
"$KCIRC" eval --quiet --model "$model" --circuit "$work/accepted.json" --triples "$relation" \
  --baseline "$work/accepted.json" --max-drop 0.05 --min-ratio 0.8 --max-random-hit10 0.2 --format jsonl > "$work/report.json"
jq -r '"gate passed: \(.relation): circuit Hit@10 \(.circuit.hit_at_k) of the full model'"'"'s \(.full.hit_at_k), random \(.random.mean.hit_at_k), faithfulness \(.faithfulness)"' "$work/report.json"
