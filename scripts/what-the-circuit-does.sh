#!/usr/bin/env bash
# Every number of the README's "What the capital-city circuit of SmolLM2 does", from the commands it shows:
# the zero-shot and in-context circuits (configs/cpu.json), the logit lens, the head roles and ablation checks,
# a hallucination traced against the right answer, and the circuits' diff. About 8 minutes on 2 cores.
# Usage: scripts/what-the-circuit-does.sh [OUT_DIR]   (default: target/what-the-circuit-does)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/what-the-circuit-does}
mkdir -p "$out"
bash scripts/fetch-models.sh >/dev/null
cargo build --release --locked --quiet
K=${CARGO_TARGET_DIR:-target}/release/kcirc
M=models/SmolLM2-135M-Instruct.Q4_1.gguf
T=data/country_capital_city.jsonl

# The circuits: zero-shot, and with three demonstrations from the discovery split.
$K discover --quiet --model $M --triples $T --config configs/cpu.json --out "$out/capital.json"
$K discover --quiet --model $M --triples $T --config configs/cpu.json --demonstrations 3 --out "$out/capital-icl.json"
for c in capital capital-icl; do
  jq -c --arg c "$c" '{circuit: $c, edges: .n_edges, full: .eval.full | {hit_at_1, hit_at_k}, circuit_hit: .eval.circuit | {hit_at_1, hit_at_k}}' "$out/$c.json"
done

# Where the answer emerges: the mean rank of the target after each block, and where it becomes top-1 for good.
$K lens --quiet --model $M --triples $T --known-only --circuit "$out/capital.json" > "$out/lens.json"
jq -c '.emergence, .circuit_emergence' "$out/lens.json"
jq -c '[.summary[] | select(.point | test("^(m22|a23|m24|m27|m28|a29|m29)$")) | [.point, (.mean_rank | round), .top1]]' "$out/lens.json"
jq -c '[range(21;30) as $l | [$l, ([.facts[].full.dla.layers[$l][0]] | add / length * 100 | round / 100),
        ([.facts[].full.dla.layers[$l][1]] | add / length * 100 | round / 100)]]' "$out/lens.json"

# Head roles and the ablation check (mover heads, relation heads vs random heads of the same layers).
$K heads --quiet --model $M --circuit "$out/capital.json" --triples $T --format text > "$out/heads.txt"
grep -E '^(head|a[0-9]+\.h[0-9]+ +(mover|relation))|heads \(|full model' "$out/heads.txt"

# A hallucination in the data: the model says Sydney for Australia's capital.
$K lens --quiet --model $M --prompt 'The capital of Australia is the city of' --subject Australia --object Canberra \
  --compare-object Sydney > "$out/australia.json"
jq -c '.facts[0].full | {last: .points[-1] | {rank, compare_rank}, m22: .points[46] | {rank, compare_rank},
       a23: .points[47] | {rank, compare_rank}, rival_heads: [.rival_heads[] | [.head, (.compare * 1000 | round / 1000), (.target * 1000 | round / 1000)]]}' \
  "$out/australia.json"

# Zero-shot vs in-context: the heads that join, and what ablating them does on the in-context prompts.
$K diff "$out/capital.json" "$out/capital-icl.json" > "$out/diff.json"
jq -c '.pairs[0] | {edges: .edges, nodes: .nodes, join: .heads_only_b}' "$out/diff.json"
join=$(jq -r '.pairs[0].heads_only_b | join(",")' "$out/diff.json")
$K heads --quiet --model $M --circuit "$out/capital-icl.json" --triples $T --ablate "$join" --format text > "$out/heads-icl.txt"
grep -E 'full model|heads \(' "$out/heads-icl.txt"
