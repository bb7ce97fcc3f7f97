#!/usr/bin/env python3
"""A size chosen by cross-fitted Hit@k (examples/cross_fit_size.rs), against the held-out facts.

  python3 scripts/cross-fit-size.py CROSSFIT_DIR CURVES_DIR [-v]

CROSSFIT_DIR holds one `cross_fit_size` output per relation (<relation>.json, run on CURVES_DIR's sizes);
CURVES_DIR the `kcirc curve` outputs of the same relations on the same sizes (docs/curves/size-rules), whose
held-out points say what the full-fact ranking keeps at the size the rule picks. A rule takes the first size
whose out-of-fold Hit@k reaches it (the last size if none). Counted: relations with more than 10 distinct
answers and at least 8 held-out facts (the issue-11 bar's relations). -v: one line per relation.
"""
import json, os, sys

from bar import counted, distinct_objects, summary


def main():
    cf_dir, curve_dir = sys.argv[1], sys.argv[2]
    rows = {}
    for f in sorted(os.listdir(curve_dir)):
        c = json.load(open(os.path.join(curve_dir, f)))
        p = os.path.join(cf_dir, c["relation"] + ".json")
        if os.path.exists(p):
            rows[c["relation"]] = (c, json.load(open(p)), f[:-5])

    rows = {r: v for r, v in rows.items() if counted(distinct_objects(os.path.join("data", v[2] + ".jsonl")), v[0]["n_held_out"])}
    print(f"{len(rows)} relations")
    print("| rule: out-of-fold Hit@10 ≥ | circuit/full Hit@10, mean | min | median size | random Hit@10, mean |")
    print("|---|---|---|---|---|")
    for target in [0.75, 0.8, 0.85, 0.9, 0.95, 1.0]:
        ratios, sizes, randoms, lines = [], [], [], []
        for r, (c, cf, _) in rows.items():
            pts = c["points"][1:]
            assert len(pts) == len(cf), r
            i = next((i for i, q in enumerate(cf) if q["hits"] >= target * q["n"] - 1e-9), len(pts) - 1)
            p, full = pts[i], c["points"][-1]["held_out"]["hit_at_k"]
            ratios.append(p["held_out"]["hit_at_k"] / full)
            sizes.append(p["size"])
            randoms.append(p["random"]["held_out_mean"]["hit_at_k"])
            lines.append(f"{r} {100 * p['size']:.2f}% (out-of-fold {cf[i]['hits']}/{cf[i]['n']}) → {ratios[-1]:.2f}")
        mean, low, size, rnd = summary(ratios, sizes, randoms)
        print(f"| {target:.2f} | {mean:.3f} | {low:.3f} | {100 * size:.2f}% | {rnd:.3f} |")
        if "-v" in sys.argv:
            print("    " + "; ".join(lines))


if __name__ == "__main__":
    main()
