#!/usr/bin/env python3
"""Which faithfulness target makes a good default: from `kcirc curve` outputs (one JSON per relation, in DIR),
for each candidate target the size it would choose (the first curve size whose discovery faithfulness reaches
it) and the held-out Hit@10 there, over the relations with more than 10 distinct answers and at least 8
held-out facts (the others cannot separate a circuit from chance with Hit@10).

  python3 scripts/choose-target.py DIR [--form kl|logit] [--data data/] [--detail TARGET]

--detail TARGET: also one line per relation at that target (size, circuit/full Hit@10, random and empty-circuit
Hit@10 there).
"""
import json, os, statistics, sys

from bar import counted, distinct_objects, summary


def main():
    args = sys.argv[1:]
    d = args[0]
    form = args[args.index("--form") + 1] if "--form" in args else "kl"
    data = args[args.index("--data") + 1] if "--data" in args else "data"
    curves = {}
    for f in sorted(os.listdir(d)):
        if f.endswith(".json"):
            try:
                curves[f[:-5]] = json.load(open(os.path.join(d, f)))
            except Exception:
                pass
    eligible = {r: c for r, c in curves.items() if counted(distinct_objects(os.path.join(data, r + ".jsonl")), c["n_held_out"])}
    print(f"{len(curves)} curves, {len(eligible)} eligible: {', '.join(eligible)}")
    detail = float(args[args.index("--detail") + 1]) if "--detail" in args else None
    empties = [c["points"][0]["held_out"]["hit_at_k"] for c in eligible.values()]
    if empties:
        print(f"empty circuit Hit@10, mean over the eligible relations: {statistics.mean(empties):.3f}")
    for target in [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98]:
        ratios, sizes, rnd = [], [], []
        for r, c in eligible.items():
            pts = c["points"]
            full = pts[-1]["held_out"]["hit_at_k"]
            p = next(p for p in pts if p["faithfulness"][form] >= target)
            ratios.append(p["held_out"]["hit_at_k"] / full if full else 0)
            sizes.append(p["size"])
            rnd.append(p["random"]["held_out_mean"]["hit_at_k"])
            if detail is not None and abs(target - detail) < 1e-9:
                print(f"  {r}: size {p['size']}, circuit/full Hit@10 {ratios[-1]:.3f}, random {rnd[-1]:.3f}, "
                      f"empty {pts[0]['held_out']['hit_at_k']:.3f}")
        mean, low, size, random = summary(ratios, sizes, rnd)
        print(f"target {target:.2f}: mean ratio {mean:.3f}, min {low:.3f}, median size {size:.3f}, mean random {random:.3f}")

main()
