#!/usr/bin/env python3
"""The per-relation table of a batch run (`kcirc discover --relations data/ --out-dir DIR --stability`) and the
issue-11 bar over the relations where Hit@10 can tell a circuit from chance (more than 10 distinct objects and at
least 8 held-out facts): mean and minimum circuit/full Hit@10, median size, mean random Hit@10, and the mean Hit@10 of the empty circuit
(every edge ablated), the floor under random circuits when the ablation keeps a mean signal.

  python3 scripts/relations-table.py DIR|RUN.jsonl [--curves CURVES_DIR] [--data data/] [--save RUN.jsonl]

DIR: the run's --out-dir (its circuit files); RUN.jsonl: what --save wrote, one line per relation with every
field of the circuit file but its edges, nodes and facts (small enough to commit: docs/runs/).

CURVES_DIR (optional): `kcirc curve` outputs named <relation>.json or <relation>.eap-ig.json, for a CMD column.
--same-means-curves DIR: curves made with the means over the discovery facts alone (session 4's docs/curves),
used only for relations without reference facts, whose means are the same either way (marked †).
"""
import json, math, os, statistics, sys

from bar import counted, distinct_objects, summary


def wilson(rate, n, z=1.959963984540054):
    """95% Wilson interval of a rate measured on n facts (as `kcirc eval` prints it)."""
    if n == 0:
        return 0.0, 1.0
    p = round(rate * n) / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def main():
    args = sys.argv[1:]
    d = args[0]
    curves = args[args.index("--curves") + 1] if "--curves" in args else None
    old = args[args.index("--same-means-curves") + 1] if "--same-means-curves" in args else None
    data = args[args.index("--data") + 1] if "--data" in args else "data"
    save = args[args.index("--save") + 1] if "--save" in args else None
    rows, eligible, saved = [], [], []
    for stem, c in circuits(d):
        if save:
            saved.append({k: v for k, v in c.items() if k not in ("edges", "nodes", "examples", "reference")})
        e = c["eval"]
        path = (c.get("triples") or {}).get("path") or os.path.join(data, stem + ".jsonl")
        objects = distinct_objects(path)
        size = c["n_edges"] / c["n_edges_total"]
        full, circ, rnd = e["full"]["hit_at_k"], e["circuit"]["hit_at_k"], e["random"]["mean"]["hit_at_k"]
        empty = e["empty"]["hit_at_k"]
        st = c.get("stability_report")
        stab = f"{st['edge_jaccard']:.2f} / {st['node_jaccard']:.2f}" if st else "–"
        cmd = "–"
        data_stem = os.path.basename(path).rsplit(".", 1)[0]
        dirs = [(curves, "")] if curves else []
        if old and c.get("n_reference") == c["n_examples"]:
            dirs.append((old, " †"))
        for folder, mark in dirs:
            if cmd != "–":
                break
            for name in (stem + ".json", stem + ".eap-ig.json", data_stem + ".json", data_stem + ".eap-ig.json"):
                p = os.path.join(folder, name)
                try:
                    cmd = f"{json.load(open(p))['areas']['kl']['cmd']:.3f}{mark}"
                    break
                except (OSError, ValueError, KeyError):
                    pass
        few = objects <= 10
        hit1 = f"{e['full']['hit_at_1']:.3f} / {e['circuit']['hit_at_1']:.3f}"
        lo, hi = wilson(circ, e["n_triples"])
        rows.append(
            f"| {c['relation']} | {objects} | {c['n_examples']} | {c.get('n_reference', '–')} | {e['n_triples']} | "
            f"{c['n_edges']:,} ({100 * size:.2f}%) | {full:.3f} | {circ:.3f} [{lo:.2f}, {hi:.2f}] | {rnd:.3f} | {empty:.3f} | "
            f"{hit1}{' ‡' if few else ''} | {e['faithfulness']:.3f} | {cmd} | {stab} |"
        )
        if counted(objects, e["n_triples"]):
            eligible.append((c["relation"], circ / full if full else 0.0, size, rnd, empty))
    if save:
        with open(save, "w") as out:
            out.writelines(json.dumps(r, sort_keys=True) + "\n" for r in saved)
    print("| relation | distinct objects | discovery facts | reference prompts | held-out facts | edges (size) | full Hit@10 | "
          "circuit Hit@10 [95% interval] | random Hit@10 | empty circuit Hit@10 | Hit@1 full / circuit | faithfulness (held-out, logit) | CMD EAP-IG (KL) | "
          "stability: edge / node Jaccard |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print()
    print("‡ ≤ 10 distinct answers: Hit@10 cannot separate a circuit from chance; read Hit@1 and faithfulness.")
    if old:
        print("† no reference facts (the model knows every fact): the curve made with the discovery facts' means is this run's.")
    if eligible:
        mean, low, size, rnd = summary(*([x[i] for x in eligible] for i in (1, 2, 3)))
        print(
            f"\n{len(eligible)} relations with > 10 distinct objects and ≥ 8 held-out facts ({', '.join(n for n, *_ in eligible)}): "
            f"circuit/full Hit@10 mean {mean:.3f}, min {low:.3f} ({min(eligible, key=lambda x: x[1])[0]}); "
            f"median size {100 * size:.2f}%; "
            f"random Hit@10 mean {rnd:.3f}; "
            f"empty circuit Hit@10 mean {statistics.mean(m for *_, m in eligible):.3f}"
        )


def circuits(d):
    """(file stem, circuit) for every complete circuit file of a run folder, or every line of a saved run."""
    if os.path.isfile(d):
        for line in open(d):
            c = json.loads(line)
            yield c["_file"], c
        return
    for f in sorted(os.listdir(d)):
        if not f.endswith(".json"):
            continue
        try:
            c = json.load(open(os.path.join(d, f)))
        except Exception:
            continue
        if "eval" in c and "n_edges" in c:
            c["_file"] = f[:-5]
            yield f[:-5], c


main()
