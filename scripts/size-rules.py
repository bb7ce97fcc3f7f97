#!/usr/bin/env python3
"""Size rules compared on fine-grained `kcirc curve` outputs (one JSON per relation in DIR, with the discovery
facts' Hit@k that `kcirc curve` writes per size): for each rule, the first curve size that meets it, and there the
held-out Hit@10 against the full model's, the random circuits' Hit@10, over the relations with more than 10
distinct answers and at least 8 held-out facts.

  python3 scripts/size-rules.py DIR [--data data/] [-v]

Rules: `kl ≥ F` (faithfulness in KL form on the discovery facts: what `discover --target-faithfulness F` asks),
`hit ≥ H` (the circuit keeps at least H of the discovery facts in its top k), and their conjunctions and
disjunctions; the target's mean probability, MRR or logit on the discovery facts against the full model's; and, as
a bound rather than a rule, the first size whose held-out faithfulness (logit form) reaches 0.9. -v: one line per relation per rule (size / circuit÷full Hit@10).
"""
import json, os, sys

from bar import counted, distinct_objects, summary

RULES = {
    "kl >= 0.85": lambda p, f: p["faithfulness"]["kl"] >= 0.85,
    "kl >= 0.70": lambda p, f: p["faithfulness"]["kl"] >= 0.70,
    "hit >= 0.8": lambda p, f: p["discovery"]["hit_at_k"] >= 0.8,
    "hit >= 0.9": lambda p, f: p["discovery"]["hit_at_k"] >= 0.9,
    "hit = 1": lambda p, f: p["discovery"]["hit_at_k"] >= 1.0 - 1e-9,
    "kl >= 0.85 and hit >= 0.9": lambda p, f: p["faithfulness"]["kl"] >= 0.85 and p["discovery"]["hit_at_k"] >= 0.9,
    "kl >= 0.85 or hit >= 0.9": lambda p, f: p["faithfulness"]["kl"] >= 0.85 or p["discovery"]["hit_at_k"] >= 0.9,
    "kl >= 0.85 or hit = 1": lambda p, f: p["faithfulness"]["kl"] >= 0.85 or p["discovery"]["hit_at_k"] >= 1.0 - 1e-9,
    "kl >= 0.5 and hit = 1": lambda p, f: p["faithfulness"]["kl"] >= 0.5 and p["discovery"]["hit_at_k"] >= 1.0 - 1e-9,
    "logit >= 0.85 and hit >= 0.9": lambda p, f: p["faithfulness"]["logit"] >= 0.85 and p["discovery"]["hit_at_k"] >= 0.9,
    # Against the full model's discovery figures (f: the last point, every edge kept).
    "prob >= 0.9 full": lambda p, f: p["discovery"]["target_prob"] >= 0.9 * f["discovery"]["target_prob"],
    "mrr >= 0.9 full": lambda p, f: p["discovery"]["mrr"] >= 0.9 * f["discovery"]["mrr"],
    "mrr >= 0.95 full": lambda p, f: p["discovery"]["mrr"] >= 0.95 * f["discovery"]["mrr"],
    "target logit >= full - 0.5": lambda p, f: p["discovery"]["target_logit"] >= f["discovery"]["target_logit"] - 0.5,
    # Not a rule (it reads the held-out facts): how far a faithfulness target could go at best.
    "oracle: held-out f_logit >= 0.9": lambda p, f: p["held_out"]["faithfulness"] >= 0.9,
}


def main():
    args = sys.argv[1:]
    d = args[0]
    data = args[args.index("--data") + 1] if "--data" in args else "data"
    curves = {f[:-5]: json.load(open(os.path.join(d, f))) for f in sorted(os.listdir(d)) if f.endswith(".json")}

    eligible = {r: c for r, c in curves.items() if counted(distinct_objects(os.path.join(data, r + ".jsonl")), c["n_held_out"])}
    print(f"{len(curves)} curves, {len(eligible)} eligible")
    print("| rule | circuit/full Hit@10, mean | min | median size | random Hit@10, mean |")
    print("|---|---|---|---|---|")
    for name, rule in RULES.items():
        ratios, sizes, randoms, rows = [], [], [], []
        for r, c in eligible.items():
            pts = [p for p in c["points"][1:] if "discovery" in p]
            p = next((p for p in pts if rule(p, c["points"][-1])), pts[-1])
            full = c["points"][-1]["held_out"]["hit_at_k"]
            ratios.append(p["held_out"]["hit_at_k"] / full)
            sizes.append(p["size"])
            randoms.append(p["random"]["held_out_mean"]["hit_at_k"])
            rows.append(f"{r} {100 * p['size']:.2f}%/{ratios[-1]:.2f}")
        mean, low, size, rnd = summary(ratios, sizes, randoms)
        print(f"| {name} | {mean:.3f} | {low:.3f} | {100 * size:.2f}% | {rnd:.3f} |")
        if "-v" in args:
            print("    " + ", ".join(rows))


if __name__ == "__main__":
    main()
