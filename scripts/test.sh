#!/usr/bin/env bash
# The whole test suite on a fresh machine: fetches the real model it needs, checks formatting (rustfmt.toml),
# lints and API docs (clippy and rustdoc, warnings are errors), builds once (release profile, shared by the tests
# and the binary) and runs every test, then the report in headless Chromium (scripts/test-report.sh). `.ci/run`
# runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
# Reuse a target directory outside the clone when the machine has a cache folder: warm CI runs skip the
# dependency build.
if [ -z "${CARGO_TARGET_DIR:-}" ] && [ -n "${HOME:-}" ] && mkdir -p "$HOME/.cache/kcirc-target" 2>/dev/null; then
  export CARGO_TARGET_DIR="$HOME/.cache/kcirc-target"
fi
bash scripts/fetch-models.sh >/dev/null
# Style, lints and the API documentation first: cheap, and a failure names the file and line (a doc link to a
# missing or private item is an error too).
cargo fmt --check
cargo clippy --release --locked --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --quiet
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Library, binary and integration tests (no doc tests: the library has no examples to run).
set +e
cargo test --release --locked --lib --bins --tests "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# The report as a person sees it, in headless Chromium (installed when missing and possible; skipped with a
# message otherwise). Its `test result:` line counts below.
if [ "$status" = 0 ]; then
  bash scripts/test-report.sh 2>&1 | tee -a "$log"
  status=${PIPESTATUS[0]}
fi
set -e
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
