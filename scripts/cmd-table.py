#!/usr/bin/env python3
"""README's "CMD by method" table: from DIR holding, per relation, `kcirc curve` outputs <r>.eap-ig.json and
<r>.eap.json and optionally single-circuit runs <r>.hybrid.json / <r>.acdc.json (`kcirc discover` circuit files
with their held-out report).

CMD is MIB's area under |1 − f| over the size axis (0 is best), f the faithfulness in KL form on the discovery
facts; "held-out" the same area of the target-logit faithfulness on the held-out facts. Hybrid and ACDC make one
circuit, not a ranking: their point (size, discovery faithfulness in KL form, held-out Hit@10) is given beside
EAP-IG's curve at the nearest measured size.

  python3 scripts/cmd-table.py DIR
"""
import json, os, sys

d = sys.argv[1]
rels = sorted({f.split(".")[0] for f in os.listdir(d) if f.endswith(".eap-ig.json")})


def load(name):
    p = os.path.join(d, name)
    try:
        return json.load(open(p)) if os.path.exists(p) else None
    except Exception:
        return None


print("| relation | discovery / held-out facts | CMD EAP-IG (KL / held-out) | CMD EAP (KL / held-out) | CMD random (KL / held-out) | "
      "hybrid: size, f_KL, held-out Hit@10 (full) | EAP-IG at that size: f_KL, Hit@10 | ACDC |")
print("|---|---|---|---|---|---|---|---|")
for r in rels:
    ig, eap = load(f"{r}.eap-ig.json"), load(f"{r}.eap.json")
    if ig is None:
        continue
    a = ig["areas"]
    cell = lambda c, k: f"{c['areas'][k]['cmd']:.3f} / {c['areas']['held_out' if k == 'kl' else 'random_held_out']['cmd']:.3f}" if c else "–"
    eap_cell = cell(eap, "kl")
    rnd = f"{a['random_kl']['cmd']:.3f} / {a['random_held_out']['cmd']:.3f}"

    def point(name):
        c = load(f"{r}.{name}.json")
        if not c or "eval" not in c:
            return "–", ""
        size = c["n_edges"] / c["n_edges_total"]
        f = 1 - c["metric_circuit"] / c["metric_empty"] if c.get("metric_empty") else float("nan")
        e = c["eval"]
        near = min(ig["points"][1:], key=lambda p: abs(p["size"] - size))
        return (
            f"{c['n_edges']:,} ({100 * size:.2f}%), {f:.3f}, {e['circuit']['hit_at_k']:.3f} ({e['full']['hit_at_k']:.3f})",
            f"{100 * near['size']:g}%: {near['faithfulness']['kl']:.3f}, {near['held_out']['hit_at_k']:.3f}",
        )

    hy, near = point("hybrid")
    ac, _ = point("acdc")
    print(f"| {r} | {ig['n_examples']} / {ig['n_held_out']} | {cell(ig, 'kl')} | {eap_cell} | {rnd} | {hy} | {near} | {ac} |")
