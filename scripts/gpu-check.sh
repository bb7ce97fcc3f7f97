#!/usr/bin/env bash
# CPU-vs-CUDA check on a machine WITH an NVIDIA GPU: builds `--features cuda`, fetches SmolLM2, then
#   1. parity tests (tests/cuda.rs, ignored without a GPU): logits of the tiny GPT-2 fixture and of SmolLM2 on
#      both devices and against transformers' reference, last-position top-10, a padded batch, EAP and EAP-IG
#      edge scores. Tolerances and why: the header of tests/cuda.rs (logits 1e-3 absolute, scores 1e-3 of the
#      largest |score|).
#   2. circuit metrics: one EAP-IG circuit of country_capital_city (discovered on CPU) evaluated with `kcirc eval`
#      on both devices: Hit@1 and Hit@10 of the full model, the circuit, the empty circuit and the random
#      circuits identical, faithfulness and mean target logits within 1e-3 (the logit tolerance: faithfulness is
#      a ratio of mean target-logit differences several units wide), target probabilities within 1e-3.
#      A Hit@k can legitimately flip only if a target's logit ties another token's within 1e-3 at the k-th rank;
#      the report then says so and the check fails, to be looked at.
#   3. the same discovery on CUDA: its edges against the CPU's (Jaccard ≥ 0.9: scores agree to 1e-3 relative,
#      so only edges that tie at the top-n cut may swap), and exact ACDC (`--method acdc --threshold 0.5
#      --examples 8 --ablation mean`) on both devices, compared (a warning, not a failure, if they differ: ACDC
#      is greedy, and one decision within rounding of the threshold changes the rest of the search).
#   4. a table of wall-clock times, CPU (all cores) and CUDA, each command run once after a warm-up load.
# Fails (non-zero exit, FAIL lines) on any parity mismatch.
# Not yet run on a GPU. Its flow (sections 2-4: comparisons and table) was dry-run on the 2-core machine with
# `--device cpu` on both sides, a fake nvidia-smi and the stub driver: exit 0, eval identical, EAP-IG and ACDC
# circuits identical (16 ACDC edges), in about 18 minutes.
#
# Toolkit: an `nvcc` on PATH is used as it is (best: the toolkit that matches the driver); otherwise the CUDA 13.0
# wheels of scripts/cuda-env.sh, which need driver release ≥ 580. The kernels are built for the GPU's own compute
# capability (nvidia-smi) unless CUDA_COMPUTE_CAP is set.
# Environment: JOBS (cargo -j, default all cores), GPU_TARGET_DIR (default target/gpu-check), KCIRC_SMOLLM2,
# TRIPLES (default data/country_capital_city.jsonl), CUDA_WHEELS_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd -P)
fail() { echo "FAIL: $*" >&2; exit 1; }

command -v nvidia-smi >/dev/null 2>&1 || {
  echo "gpu-check: no nvidia-smi here; this check needs an NVIDIA GPU (scripts/check-cuda.sh builds without one)" >&2
  exit 2
}
gpu=$(nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv,noheader | head -n 1)
echo "GPU: $gpu"
if command -v nvcc >/dev/null 2>&1; then
  export KCIRC_SYSTEM_CUDA="${KCIRC_SYSTEM_CUDA:-1}"
else
  driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -n 1)
  [ "${driver%%.*}" -ge 580 ] || fail "driver $driver is older than 580, the oldest that runs CUDA 13 (the wheels' toolkit); put a CUDA 12 toolkit matching the driver on PATH (nvcc) and rerun"
fi
# shellcheck source=scripts/cuda-env.sh
source scripts/cuda-env.sh
cuda_env_setup "$repo"
export LD_LIBRARY_PATH="$KCIRC_CUDA_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export CARGO_TARGET_DIR="${GPU_TARGET_DIR:-$repo/target/gpu-check}"
jobs="${JOBS:-$(nproc)}"

echo "== build"
cargo build --release --locked --features cuda -j "$jobs"
bin="$CARGO_TARGET_DIR/release/kcirc"
model="${KCIRC_SMOLLM2:-$(bash scripts/fetch-models.sh)}"
export KCIRC_SMOLLM2="$model"
triples="${TRIPLES:-data/country_capital_city.jsonl}"

echo "== 1. parity tests (tests/cuda.rs)"
cargo test --release --locked --features cuda -j "$jobs" --test cuda -- --ignored --test-threads=1 --nocapture ||
  fail "CPU-vs-CUDA parity tests (above)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rows=()
# timed LABEL DEVICE OUT CMD...: runs `kcirc --quiet --device DEVICE CMD...` with stdout to OUT, records the time.
timed() {
  local label=$1 dev=$2 out=$3
  shift 3
  local t0 t1
  t0=$(date +%s.%N)
  "$bin" --quiet --device "$dev" "$@" >"$out" || fail "$label on $dev: kcirc exited $?"
  t1=$(date +%s.%N)
  rows+=("$label|$dev|$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')")
}
# A warm-up: the first CUDA call pays for the context and the PTX JIT (cached by the driver afterwards).
"$bin" --quiet --device cuda predict --model "$model" --prompt "The capital city of France is" >/dev/null ||
  fail "kcirc predict --device cuda"

echo "== 2. circuit metrics: kcirc eval of one circuit on both devices"
ig=(discover --model "$model" --triples "$triples" --method eap-ig --metric logit --top-n 300 --no-eval)
timed "discover eap-ig, top-n 300" cpu "$work/cpu.json" "${ig[@]}"
timed "discover eap-ig, top-n 300" cuda "$work/cuda.json" "${ig[@]}"
for dev in cpu cuda; do
  timed "eval (5 random circuits)" "$dev" "$work/eval-$dev.json" eval --model "$model" --circuit "$work/cpu.json" \
    --triples "$triples" --format json
done
python3 - "$work/eval-cpu.json" "$work/eval-cuda.json" <<'EOF' || fail "kcirc eval differs between CPU and CUDA (above)"
import json, sys
cpu, gpu = (json.load(open(p)) for p in sys.argv[1:3])
bad = []
for key in ["n_triples", "n_edges", "n_nodes", "n_dropped_unknown", "n_skipped_discovery"]:
    if cpu.get(key) != gpu.get(key):
        bad.append(f"{key}: CPU {cpu.get(key)} CUDA {gpu.get(key)}")
def metrics(r):
    return {"full": r["full"], "circuit": r["circuit"], "empty": r["empty"], "random": r["random"]["mean"]}
for part, mc in metrics(cpu).items():
    mg = metrics(gpu)[part]
    for k in ["hit_at_1", "hit_at_k"]:
        if mc[k] != mg[k]:
            bad.append(f"{part} {k}: CPU {mc[k]} CUDA {mg[k]} (only a tie within 1e-3 at the k-th rank may do this)")
    for k in ["target_logit", "target_prob", "mrr"]:
        if abs(mc[k] - mg[k]) > 1e-3:
            bad.append(f"{part} {k}: CPU {mc[k]} CUDA {mg[k]}, |diff| > 1e-3")
d = abs(cpu["faithfulness"] - gpu["faithfulness"])
print(f"eval: faithfulness CPU {cpu['faithfulness']:.6f} CUDA {gpu['faithfulness']:.6f} (|diff| {d:.1e}); "
      f"circuit Hit@{cpu['k']} CPU {cpu['circuit']['hit_at_k']} CUDA {gpu['circuit']['hit_at_k']}")
if d > 1e-3:
    bad.append(f"faithfulness |diff| {d:.2e} > 1e-3")
for b in bad:
    print("MISMATCH", b)
sys.exit(1 if bad else 0)
EOF

echo "== 3. discovery on CUDA against CPU"
acdc=(discover --model "$model" --triples "$triples" --method acdc --metric logit --threshold 0.5 --examples 8 --ablation mean --no-eval)
timed "discover acdc, tau 0.5, 8 facts, mean" cpu "$work/acdc-cpu.json" "${acdc[@]}"
timed "discover acdc, tau 0.5, 8 facts, mean" cuda "$work/acdc-cuda.json" "${acdc[@]}"
python3 - "$work" <<'EOF' || fail "EAP-IG circuits differ between CPU and CUDA beyond the top-n cut's ties (above)"
import json, sys
w = sys.argv[1]
def edges(p):
    return {e["name"] for e in json.load(open(f"{w}/{p}"))["edges"]}
def jac(a, b):
    return len(a & b) / max(1, len(a | b))
ig = jac(edges("cpu.json"), edges("cuda.json"))
ac, ag = edges("acdc-cpu.json"), edges("acdc-cuda.json")
print(f"EAP-IG top-300 edges CPU vs CUDA: Jaccard {ig:.3f}")
print(f"ACDC edges: CPU {len(ac)}, CUDA {len(ag)}, Jaccard {jac(ac, ag):.3f}")
if ac != ag:
    print("WARNING: ACDC circuits differ (CPU only: %s; CUDA only: %s)" % (sorted(ac - ag)[:10], sorted(ag - ac)[:10]))
sys.exit(0 if ig >= 0.9 else 1)
EOF

echo "== 4. times (s, wall clock; $gpu; CPU: $(nproc) threads)"
printf '%-42s %8s %8s\n' "command (SmolLM2-135M, $(basename "$triples" .jsonl))" cpu cuda
for label in "discover eap-ig, top-n 300" "eval (5 random circuits)" "discover acdc, tau 0.5, 8 facts, mean"; do
  c=$(printf '%s\n' "${rows[@]}" | awk -F'|' -v l="$label" '$1 == l && $2 == "cpu" { print $3; exit }')
  g=$(printf '%s\n' "${rows[@]}" | awk -F'|' -v l="$label" '$1 == l && $2 == "cuda" { print $3; exit }')
  printf '%-42s %8s %8s\n' "$label" "$c" "$g"
done
echo "gpu-check: OK"
