"""The issue-11 bar, shared by the scripts that measure it (size-rules.py, choose-target.py, cross-fit-size.py,
relations-table.py; import it from a script in this folder: `from bar import ...`).

The bar counts the relations where Hit@10 can tell a circuit from chance: more than 10 distinct answers and at
least 8 held-out facts. Over them it asks for the circuit's held-out Hit@10 against the full model's (mean ≥ 0.9,
minimum ≥ 0.75), the median circuit size (≤ 5% of the edges) and random circuits' Hit@10 (mean ≤ 0.05).
"""
import json, os, statistics


def distinct_objects(path):
    """Distinct objects of a JSON Lines relation file; 0 when the file is missing."""
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return len({json.loads(l)["object"] for l in f if l.strip()})


def counted(n_objects, n_held_out):
    """Whether the bar counts a relation with these many distinct answers and held-out facts."""
    return n_objects > 10 and n_held_out >= 8


def summary(ratios, sizes, randoms):
    """(mean and minimum circuit/full Hit@10, median size, mean random Hit@10) over the counted relations."""
    return statistics.mean(ratios), min(ratios), statistics.median(sizes), statistics.mean(randoms)
