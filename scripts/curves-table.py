#!/usr/bin/env python3
"""docs/results.md's curve table from `kcirc curve` outputs (one JSON per relation in DIR).

  python3 scripts/curves-table.py docs/curves [TARGET]
"""
import json, os, sys

d = sys.argv[1]
target = float(sys.argv[2]) if len(sys.argv) > 2 else 0.85
print(f"| relation | discovery facts | held-out (scored) | CMD EAP-IG (KL, discovery) | CMD EAP-IG (held-out) | CMD random (KL) | CMD random (held-out) | smallest size with f_KL ≥ {target} | held-out Hit@10 there (full) |")
print("|---|---|---|---|---|---|---|---|---|")
for f in sorted(os.listdir(d)):
    if not f.endswith(".json"):
        continue
    c = json.load(open(os.path.join(d, f)))
    a, pts = c["areas"], c["points"]
    p = next(p for p in pts if p["faithfulness"]["kl"] >= target)
    print(f"| {c['relation']} | {c['n_examples']} | {c['n_held_out']} | {a['kl']['cmd']:.3f} | {a['held_out']['cmd']:.3f} | {a['random_kl']['cmd']:.3f} | "
          f"{a['random_held_out']['cmd']:.3f} | {100 * p['size']:g}% | {p['held_out']['hit_at_k']:.3f} ({pts[-1]['held_out']['hit_at_k']:.3f}) |")
