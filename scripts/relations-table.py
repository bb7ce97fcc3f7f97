#!/usr/bin/env python3
"""The README's per-relation table: from a `kcirc discover --relations data/ --out-dir DIR --stability` run (the
circuit files, each with its held-out report) and the `kcirc curve` outputs in CURVES, one markdown row per
relation, and the issue-11 criteria over the relations with more than 10 distinct answers and at least 8 held-out
facts.

  python3 scripts/relations-table.py DIR CURVES
"""
import json, os, statistics, sys

CATEGORY = {}
for cat, rels in {
    "factual": "city_in_country company_hq country_capital_city country_currency country_language country_largest_city food_from_country landmark_in_country person_occupation person_plays_instrument product_by_company star_constellation superhero_person",
    "commonsense": "fruit_inside_color object_superclass substance_phase task_done_by_tool",
    "linguistic": "adj_antonym adj_comparative verb_past_tense word_first_letter",
    "bias": "characteristic_gender name_religion occupation_gender",
}.items():
    for r in rels.split():
        CATEGORY[r] = cat

def main():
    out, curves = sys.argv[1], sys.argv[2]
    rows, eligible = [], []
    print("| relation (category) | answers | held-out | edges (%) | full Hit@10 | circuit Hit@10 | random Hit@10 | Hit@1 full / circuit | faithfulness | CMD (KL / held-out) | stability (edges / nodes) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    summary = {json.loads(l).get("file", ""): json.loads(l) for l in open(os.path.join(out, "summary.jsonl")) if l.strip()}
    for stem in sorted(CATEGORY):
        path = os.path.join(out, stem + ".json")
        curve_path = os.path.join(curves, stem + ".json")
        cmd = "–"
        if os.path.exists(curve_path):
            try:
                a = json.load(open(curve_path))["areas"]
                cmd = f"{a['kl']['cmd']:.3f} / {a['held_out']['cmd']:.3f}" if a.get("held_out") else f"{a['kl']['cmd']:.3f}"
            except Exception:
                pass
        files = [f for f in os.listdir(out) if f.endswith(".json")]
        match = None
        for f in files:
            c = json.load(open(os.path.join(out, f)))
            tr = (c.get("triples") or {}).get("path", "")
            if os.path.basename(tr).startswith(stem + "."):
                match = c
        if match is None:
            err = next((v["error"] for k, v in summary.items() if os.path.basename(k).startswith(stem + ".")), "failed")
            print(f"| {stem} ({CATEGORY[stem]}) | | | | | | | | | {cmd} | failed: {err} |")
            continue
        c, e = match, match.get("eval")
        st = c.get("stability_report")
        stab = f"{st['edge_jaccard']:.2f} / {st['node_jaccard']:.2f}" if st else "–"
        size = f"{c['n_edges']:,} ({100 * c['n_edges'] / c['n_edges_total']:.2f}%)"
        if e is None:
            print(f"| {stem} ({CATEGORY[stem]}) | | 0 | {size} | | | | | | {cmd} | {stab} |")
            continue
        full, circ, rnd = e["full"]["hit_at_k"], e["circuit"]["hit_at_k"], e["random"]["mean"]["hit_at_k"]
        ok = e["n_distinct_targets"] > 10 and e["n_triples"] >= 8
        mark = "" if ok else " †"
        print(f"| {stem} ({CATEGORY[stem]}){mark} | {e['n_distinct_targets']} | {e['n_triples']} | {size} | {full:.3f} | {circ:.3f} | {rnd:.3f} | {e['full']['hit_at_1']:.3f} / {e['circuit']['hit_at_1']:.3f} | {e['faithfulness']:.3f} | {cmd} | {stab} |")
        if ok:
            eligible.append((stem, circ / full if full else 0.0, c["n_edges"] / c["n_edges_total"], rnd))
    if eligible:
        ratios = [r for _, r, _, _ in eligible]
        print()
        print(f"Eligible relations (> 10 answers, ≥ 8 held-out facts): {len(eligible)}. Circuit/full Hit@10: mean {statistics.mean(ratios):.3f}, "
              f"min {min(ratios):.3f} ({min(eligible, key=lambda x: x[1])[0]}); median size {100 * statistics.median([s for _, _, s, _ in eligible]):.2f}% of edges; "
              f"random Hit@10 mean {statistics.mean([x for *_, x in eligible]):.3f}.")

main()
