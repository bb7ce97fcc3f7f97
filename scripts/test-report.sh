#!/usr/bin/env bash
# The report as a person sees it: makes a real report (discover, curve, lens and heads on the tiny GPT-2
# fixture, then `kcirc report`), opens it and its standalone SVG in headless Chromium and checks that the
# screenshot is not blank, that the page makes no network request and logs no console error, and that the SVG
# holds one element per circuit node and per drawn edge (scripts/report-check.cjs).
#
# Chromium: $CHROMIUM, or the Debian package `chromium` (installed here when missing and apt-get can); Node and
# the npm package playwright-core (it drives that Chromium; no browser download) likewise. Skips with a message
# when they cannot be had. `scripts/test.sh` runs this after the cargo tests.
#
#   scripts/test-report.sh [--model M --triples T --config F] [--screenshot out.png] [--keep DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
model=tests/fixtures/gpt2-tiny
triples=data/country_capital_city.jsonl
config=""
screenshot=""
keep=""
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model=$2; shift 2 ;;
    --triples) triples=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    --screenshot) screenshot=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    *) echo "test-report: unknown argument $1" >&2; exit 2 ;;
  esac
done

skip() {
  echo "report in headless Chromium: SKIPPED: $1"
  exit 0
}
can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }
apt_install() {
  can_apt || return 1
  echo "test-report: installing $* (apt-get)" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"; } >/dev/null 2>&1
}

chromium=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
if [ -z "$chromium" ]; then
  apt_install chromium || true
  chromium=$(command -v chromium || true)
fi
[ -n "$chromium" ] || skip "no Chromium (install the Debian package chromium, or set CHROMIUM)"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt_install nodejs npm || true
fi
command -v node >/dev/null && command -v npm >/dev/null || skip "no Node.js/npm to drive Chromium"

# playwright-core, pinned, once per machine (outside the clone).
pw_dir=${KCIRC_PLAYWRIGHT_DIR:-${HOME:-/tmp}/.cache/kcirc-playwright}
pw_version=1.65.1
if [ ! -f "$pw_dir/node_modules/playwright-core/package.json" ] \
  || ! grep -q "\"version\": \"$pw_version\"" "$pw_dir/node_modules/playwright-core/package.json"; then
  mkdir -p "$pw_dir"
  [ -f "$pw_dir/package.json" ] || echo '{"private": true}' >"$pw_dir/package.json"
  (cd "$pw_dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund --silent "playwright-core@$pw_version") >&2 \
    || skip "npm could not install playwright-core"
fi

target=${CARGO_TARGET_DIR:-target}
kcirc=$target/release/kcirc
[ -x "$kcirc" ] || cargo build --release --locked --quiet
work=${keep:-$(mktemp -d)}
mkdir -p "$work"
[ -n "$keep" ] || trap 'rm -rf "$work"' EXIT

# A real report, every section. Outputs already in a --keep folder are reused (the commands are deterministic:
# the same files again).
if [ "$model" = tests/fixtures/gpt2-tiny ]; then
  # The tiny random model knows no facts: keep them all, and fix the circuit's size.
  settings=(--examples 4 --no-filter --ablation mean --seed 1 --top-n 60)
  curve_settings=(--examples 4 --no-filter --ablation mean --seed 1)
  lens_facts=()
  heads_facts=(--no-filter)
else
  settings=(${config:+--config "$config"})
  curve_settings=("${settings[@]}")
  lens_facts=(--known-only)
  heads_facts=()
fi
run() { # run OUTPUT COMMAND...: the command's stdout to OUTPUT, unless OUTPUT is there already
  local out=$1
  shift
  [ -s "$out" ] || { "$@" >"$out.tmp" && mv "$out.tmp" "$out"; }
}
[ -s "$work/circuit.json" ] || "$kcirc" discover --quiet --model "$model" --triples "$triples" "${settings[@]}" --out "$work/circuit.json"
run "$work/curve.json" "$kcirc" curve --quiet --model "$model" --triples "$triples" "${curve_settings[@]}" --random 2 --max-held-out 48
run "$work/lens.json" "$kcirc" lens --quiet --model "$model" --triples "$triples" --circuit "$work/circuit.json" "${lens_facts[@]}"
run "$work/heads.json" "$kcirc" heads --quiet --model "$model" --triples "$triples" --circuit "$work/circuit.json" "${heads_facts[@]}"
edit=()
if [ "$triples" = data/country_capital_city.jsonl ]; then
  run "$work/edit.json" "$kcirc" edit --quiet --model "$model" --subject France --template 'The capital of {} is the city of' \
    --object Paris --new-object Rome --triples "$triples" --lens --circuit "$work/circuit.json"
  edit=(--edit "$work/edit.json")
fi
"$kcirc" report --quiet --circuit "$work/circuit.json" --curve "$work/curve.json" --lens "$work/lens.json" \
  --heads "$work/heads.json" "${edit[@]}" --out "$work/report.html" --svg "$work/circuit.svg"

PLAYWRIGHT_CORE="$pw_dir/node_modules/playwright-core" node scripts/report-check.cjs --chromium "$chromium" \
  --report "$work/report.html" --svg "$work/circuit.svg" --circuit "$work/circuit.json" \
  ${screenshot:+--screenshot "$screenshot"}
# A screenshot for the README: 256 colours (pngquant) keep it small.
if [ -n "$screenshot" ]; then
  command -v pngquant >/dev/null || apt_install pngquant || true
  if command -v pngquant >/dev/null; then
    pngquant --force --speed 1 --output "$screenshot" -- "$screenshot"
  fi
  echo "test-report: screenshot $screenshot ($(($(wc -c <"$screenshot") / 1024)) KB)"
fi
