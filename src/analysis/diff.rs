//! Circuit comparison: shared and unique edges and nodes, Jaccard, per-layer node counts, and the heads that
//! join or leave (zero-shot vs in-context circuits, a relation vs its reverse, two seeds).
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::circuit::CircuitFile;
use crate::{Error, Result};

/// Two sets compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetDiff {
    pub shared: usize,
    pub only_a: usize,
    pub only_b: usize,
    /// |A ∩ B| / |A ∪ B| (1 for two empty sets).
    pub jaccard: f64,
}

/// Per layer, how many nodes of that layer (its heads, key/value ports and MLP) each circuit has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerCounts {
    pub layer: usize,
    pub a: usize,
    pub b: usize,
    pub shared: usize,
}

/// Two circuits compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pair {
    pub a: String,
    pub b: String,
    pub edges: SetDiff,
    pub nodes: SetDiff,
    pub per_layer: Vec<LayerCounts>,
    /// Heads (`a{l}.h{h}`) in B and not in A: with A zero-shot and B in-context, the heads that join.
    pub heads_only_b: Vec<String>,
    /// Heads in A and not in B.
    pub heads_only_a: Vec<String>,
}

/// The diff report: every pair, and with more than two files the Jaccard matrices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub files: Vec<String>,
    pub pairs: Vec<Pair>,
    /// `[i][j]`: edge Jaccard of files i and j.
    pub edge_jaccard: Vec<Vec<f64>>,
    pub node_jaccard: Vec<Vec<f64>>,
}

fn set_diff(a: &BTreeSet<&str>, b: &BTreeSet<&str>) -> SetDiff {
    let shared = a.intersection(b).count();
    let union = a.union(b).count();
    SetDiff {
        shared,
        only_a: a.len() - shared,
        only_b: b.len() - shared,
        jaccard: if union == 0 { 1.0 } else { shared as f64 / union as f64 },
    }
}

/// The layer of a node name (`a3.h1`, `a3.kv0`, `m5`); `None` for `input` and `logits`.
pub fn node_layer(name: &str) -> Option<usize> {
    let rest = name.strip_prefix('a').or_else(|| name.strip_prefix('m'))?;
    rest.split('.').next()?.parse().ok()
}

fn is_head(name: &str) -> bool {
    name.starts_with('a') && name.contains(".h")
}

/// Compares `a` with `b` (labels are how the report names them).
pub fn pair(a: (&str, &CircuitFile), b: (&str, &CircuitFile)) -> Pair {
    let edges = |f: &'_ CircuitFile| -> BTreeSet<String> { f.edges.iter().map(|e| e.name.clone()).collect() };
    let (ea, eb) = (edges(a.1), edges(b.1));
    let (ea, eb): (BTreeSet<&str>, BTreeSet<&str>) = (ea.iter().map(String::as_str).collect(), eb.iter().map(String::as_str).collect());
    let na: BTreeSet<&str> = a.1.nodes.iter().map(String::as_str).collect();
    let nb: BTreeSet<&str> = b.1.nodes.iter().map(String::as_str).collect();
    let n_layers = a.1.run.model_shape.n_layers;
    let per_layer = (0..n_layers)
        .map(|l| {
            let of =
                |s: &BTreeSet<&str>| -> BTreeSet<String> { s.iter().filter(|n| node_layer(n) == Some(l)).map(|n| n.to_string()).collect() };
            let (la, lb) = (of(&na), of(&nb));
            LayerCounts { layer: l, a: la.len(), b: lb.len(), shared: la.intersection(&lb).count() }
        })
        .collect();
    // Forward order: the files list nodes so.
    let heads = |x: &CircuitFile, other: &BTreeSet<&str>| -> Vec<String> {
        x.nodes.iter().filter(|n| is_head(n) && !other.contains(n.as_str())).cloned().collect()
    };
    Pair {
        a: a.0.to_string(),
        b: b.0.to_string(),
        edges: set_diff(&ea, &eb),
        nodes: set_diff(&na, &nb),
        per_layer,
        heads_only_b: heads(b.1, &na),
        heads_only_a: heads(a.1, &nb),
    }
}

/// Compares every pair of `files` (at least two, all of one model shape).
pub fn diff(files: &[(String, CircuitFile)]) -> Result<Report> {
    if files.len() < 2 {
        return Err(Error::input("diff needs at least two circuit files"));
    }
    let shape = &files[0].1.run.model_shape;
    for (name, f) in &files[1..] {
        if &f.run.model_shape != shape {
            return Err(Error::input(format!(
                "{name}: a circuit of another model shape ({}) than {} ({})",
                f.run.model, files[0].0, files[0].1.run.model
            )));
        }
    }
    let n = files.len();
    let mut pairs = vec![];
    let mut ej = vec![vec![1.0; n]; n];
    let mut nj = vec![vec![1.0; n]; n];
    for i in 0..n {
        for j in i + 1..n {
            let p = pair((&files[i].0, &files[i].1), (&files[j].0, &files[j].1));
            ej[i][j] = p.edges.jaccard;
            ej[j][i] = p.edges.jaccard;
            nj[i][j] = p.nodes.jaccard;
            nj[j][i] = p.nodes.jaccard;
            pairs.push(p);
        }
    }
    Ok(Report { files: files.iter().map(|(n, _)| n.clone()).collect(), pairs, edge_jaccard: ej, node_jaccard: nj })
}

impl Report {
    /// Text: each pair's counts and joining heads; with more than two files, the Jaccard matrices.
    pub fn table(&self) -> String {
        let mut out = String::new();
        for p in &self.pairs {
            out.push_str(&format!("{} vs {}\n", p.a, p.b));
            for (what, d) in [("edges", &p.edges), ("nodes", &p.nodes)] {
                out.push_str(&format!(
                    "  {what:<5}  shared {:>6}  only A {:>6}  only B {:>6}  Jaccard {:.3}\n",
                    d.shared, d.only_a, d.only_b, d.jaccard
                ));
            }
            let layers: Vec<String> =
                p.per_layer.iter().filter(|c| c.a + c.b > 0).map(|c| format!("{}:{}/{}/{}", c.layer, c.a, c.b, c.shared)).collect();
            out.push_str(&format!("  nodes per layer (layer:A/B/shared)  {}\n", layers.join(" ")));
            out.push_str(&format!("  heads only in B ({}): {}\n", p.heads_only_b.len(), p.heads_only_b.join(" ")));
            out.push_str(&format!("  heads only in A ({}): {}\n", p.heads_only_a.len(), p.heads_only_a.join(" ")));
        }
        if self.files.len() > 2 {
            for (what, m) in [("edge", &self.edge_jaccard), ("node", &self.node_jaccard)] {
                out.push_str(&format!("\n{what} Jaccard\n"));
                for (i, row) in m.iter().enumerate() {
                    let cells: Vec<String> = row.iter().map(|v| format!("{v:.3}")).collect();
                    out.push_str(&format!("  [{i}] {}  {}\n", cells.join("  "), self.files[i]));
                }
            }
        }
        out
    }
}
