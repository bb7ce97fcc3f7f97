//! The circuit's picture, placed by kcirc (no graphviz): one row per layer part, bottom to top — `input`, then
//! per layer its attention heads (and key/value ports) and above them its MLP, `logits` at the top — and one
//! column per head index, so a head sits in the same column in every layer and two circuits of one model
//! compare by eye. Rows without nodes are left out. Everything is a function of the circuit file alone: the
//! same file gives the same coordinates, and so the same bytes.
use std::collections::BTreeMap;

use crate::circuit::{CircuitFile, EdgeRecord};

/// Font size of node labels, px; labels use a monospace font so their width is known without font metrics.
pub const FONT: f64 = 11.0;
/// Width of one monospace character at [`FONT`], px (DejaVu Sans Mono and most others: 0.6 em).
pub const CHAR_W: f64 = FONT * 0.6;
/// Node box height, px.
pub const NODE_H: f64 = 18.0;
/// Vertical distance between rows, px.
pub const ROW_PITCH: f64 = 28.0;
/// Room left of the first column for the row labels, px.
pub const AXIS_W: f64 = 64.0;
/// Margin around the drawing, px.
pub const MARGIN: f64 = 12.0;

/// What a node is, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Input,
    /// A name kcirc does not write (a hand-made file): drawn in a row of its own above `input`.
    Other,
    Head {
        layer: usize,
        head: usize,
    },
    /// A key/value input port shared by a group of query heads (`a3.kv1`, grouped-query attention).
    Kv {
        layer: usize,
        index: usize,
    },
    Mlp {
        layer: usize,
    },
    Logits,
}

impl Kind {
    /// The node a name stands for: `input`, `a{l}.h{h}`, `a{l}.kv{i}`, `m{l}`, `logits`; anything else is
    /// [`Kind::Other`].
    pub fn of(name: &str) -> Kind {
        let num = |s: &str| -> Option<usize> { (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten() };
        match name {
            "input" => return Kind::Input,
            "logits" => return Kind::Logits,
            _ => {}
        }
        if let Some(rest) = name.strip_prefix('m') {
            if let Some(layer) = num(rest) {
                return Kind::Mlp { layer };
            }
        }
        if let Some((l, h)) = name.strip_prefix('a').and_then(|r| r.split_once('.')) {
            if let Some(layer) = num(l) {
                if let Some(head) = h.strip_prefix('h').and_then(num) {
                    return Kind::Head { layer, head };
                }
                if let Some(index) = h.strip_prefix("kv").and_then(num) {
                    return Kind::Kv { layer, index };
                }
            }
        }
        Kind::Other
    }

    /// The row a node sits in, bottom first: input 0, other 1, layer l's attention 2 + 2l, its MLP 3 + 2l,
    /// logits last.
    fn row(self) -> usize {
        match self {
            Kind::Input => 0,
            Kind::Other => 1,
            Kind::Head { layer, .. } | Kind::Kv { layer, .. } => 2 + 2 * layer,
            Kind::Mlp { layer } => 3 + 2 * layer,
            Kind::Logits => usize::MAX,
        }
    }

    pub fn layer(self) -> Option<usize> {
        match self {
            Kind::Head { layer, .. } | Kind::Kv { layer, .. } | Kind::Mlp { layer } => Some(layer),
            _ => None,
        }
    }
}

/// A receiver name without its port: `a5.h1<q>` → (`a5.h1`, `q`), `m3` → (`m3`, ``).
pub fn split_port(receiver: &str) -> (&str, &str) {
    match receiver.split_once('<') {
        Some((node, port)) if port.ends_with('>') => (node, &port[..port.len() - 1]),
        _ => (receiver, ""),
    }
}

/// One placed node: its box's centre and width.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeBox {
    pub name: String,
    pub kind: Kind,
    pub x: f64,
    pub y: f64,
    pub w: f64,
}

/// One drawn edge.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgePath {
    /// Index into the circuit file's `edges`.
    pub index: usize,
    /// Rank by |effect|, strongest 0 (ties in file order).
    pub rank: usize,
    /// Indices into [`Layout::nodes`].
    pub from: usize,
    pub to: usize,
    /// The receiver's port (`q`, `k`, `v`), empty for MLPs and `logits`.
    pub port: String,
    /// Start, the two control points and end of a cubic Bézier curve.
    pub points: [(f64, f64); 4],
}

/// A row's label on the left axis.
#[derive(Debug, Clone, PartialEq)]
pub struct RowLabel {
    pub y: f64,
    pub text: String,
}

/// The placed circuit.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// In the file's node order, then endpoints the node list lacks.
    pub nodes: Vec<NodeBox>,
    /// The drawn edges, weakest first (so the strongest are painted on top).
    pub edges: Vec<EdgePath>,
    pub rows: Vec<RowLabel>,
    pub width: f64,
    pub height: f64,
    /// Circuit edges left out (weaker than every drawn one).
    pub n_not_drawn: usize,
    /// Largest |effect| among all the circuit's edges (the width scale), 0 when none has one.
    pub max_effect: f64,
}

/// |effect|, 0 for an edge never measured (and for a non-finite value).
pub fn strength(e: &EdgeRecord) -> f64 {
    e.effect.map(f64::abs).filter(|x| x.is_finite()).unwrap_or(0.0)
}

/// Edge indices by |effect|, strongest first; ties keep the file's order.
pub fn ranked(edges: &[EdgeRecord]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..edges.len()).collect();
    order.sort_by(|&a, &b| strength(&edges[b]).total_cmp(&strength(&edges[a])).then(a.cmp(&b)));
    order
}

/// Places `file`'s nodes and its `max_edges` strongest edges.
pub fn layout(file: &CircuitFile, max_edges: usize) -> Layout {
    // Nodes: the file's list, then any edge endpoint it lacks (a hand-made file), each once.
    let mut names: Vec<String> = vec![];
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    let mut add = |n: &str, names: &mut Vec<String>| -> usize {
        *index.entry(n.to_string()).or_insert_with(|| {
            names.push(n.to_string());
            names.len() - 1
        })
    };
    for n in &file.nodes {
        add(n, &mut names);
    }
    let ends: Vec<(usize, usize)> =
        file.edges.iter().map(|e| (add(&e.sender, &mut names), add(split_port(&e.receiver).0, &mut names))).collect();
    let kinds: Vec<Kind> = names.iter().map(|n| Kind::of(n)).collect();

    // Columns: heads by index; under grouped-query attention each key/value port right after its group's
    // heads. Every column is as wide as the longest label.
    let shape = &file.run.model_shape;
    let grouped = shape.n_kv_heads > 0 && shape.n_kv_heads != shape.n_heads && shape.n_heads % shape.n_kv_heads == 0;
    let group = if grouped { shape.n_heads / shape.n_kv_heads } else { 1 };
    let column = |k: Kind| -> Option<usize> {
        match k {
            Kind::Head { head, .. } if grouped => Some(head + head / group),
            Kind::Head { head, .. } => Some(head),
            Kind::Kv { index, .. } => Some((index + 1) * group + index),
            _ => None,
        }
    };
    let model_columns = shape.n_heads + if grouped { shape.n_kv_heads } else { 0 };
    let n_columns = kinds.iter().filter_map(|&k| column(k)).map(|c| c + 1).max().unwrap_or(0).max(model_columns).max(1);
    let longest = names.iter().map(|n| n.chars().count()).max().unwrap_or(6).clamp(5, 24);
    let box_w = |name: &str| (name.chars().count().clamp(3, 24) as f64) * CHAR_W + 10.0;
    let pitch = longest as f64 * CHAR_W + 18.0;
    let x0 = MARGIN + AXIS_W;
    let width = x0 + n_columns as f64 * pitch + MARGIN;
    let centre = x0 + n_columns as f64 * pitch / 2.0;

    // Rows present, bottom first.
    let mut rows: Vec<usize> = kinds.iter().map(|k| k.row()).collect();
    rows.sort_unstable();
    rows.dedup();
    let top = MARGIN + NODE_H;
    let height = top + (rows.len().max(1) - 1) as f64 * ROW_PITCH + NODE_H + MARGIN;
    let y_of = |row: usize| -> f64 {
        let i = rows.iter().position(|&r| r == row).unwrap_or(0);
        top + (rows.len() - 1 - i) as f64 * ROW_PITCH
    };

    // Nodes without a column (input, logits, MLPs) sit at the centre; `other` nodes side by side.
    let mut n_other = 0usize;
    let others = kinds.iter().filter(|k| **k == Kind::Other).count();
    let nodes: Vec<NodeBox> = names
        .iter()
        .zip(&kinds)
        .map(|(name, &kind)| {
            let x = match (kind, column(kind)) {
                (_, Some(c)) => x0 + (c as f64 + 0.5) * pitch,
                (Kind::Other, _) => {
                    n_other += 1;
                    x0 + (n_other as f64 - 0.5) * (width - x0 - MARGIN) / others as f64
                }
                _ => centre,
            };
            NodeBox { name: name.clone(), kind, x, y: y_of(kind.row()), w: box_w(name) }
        })
        .collect();
    let mut labels: Vec<RowLabel> = rows
        .iter()
        .map(|&r| {
            let text = match r {
                0 => "input".to_string(),
                1 => "other".to_string(),
                usize::MAX => "logits".to_string(),
                r if r % 2 == 0 => format!("L{} attn", (r - 2) / 2),
                r => format!("L{} MLP", (r - 3) / 2),
            };
            RowLabel { y: y_of(r), text }
        })
        .collect();
    labels.reverse();

    // Edges: the strongest `max_edges`, painted weakest first.
    let order = ranked(&file.edges);
    let drawn = order.len().min(max_edges);
    let mut edges: Vec<EdgePath> = order[..drawn]
        .iter()
        .enumerate()
        .map(|(rank, &i)| {
            let (from, to) = ends[i];
            let port = split_port(&file.edges[i].receiver).1.to_string();
            let (s, r) = (&nodes[from], &nodes[to]);
            // Key and value ports enter the box left and right of the query's centre.
            let dx = match port.as_str() {
                "k" => -r.w / 4.0,
                "v" => r.w / 4.0,
                _ => 0.0,
            };
            let start = (s.x, s.y - NODE_H / 2.0);
            let end = (r.x + dx, r.y + NODE_H / 2.0);
            // Upward by construction (receivers come later in forward order); a hand-made edge that runs down or
            // sideways still gets a visible arc.
            let bend = ((start.1 - end.1).abs() * 0.45).max(ROW_PITCH * 0.6);
            let points = [start, (start.0, start.1 - bend), (end.0, end.1 + bend), end];
            EdgePath { index: i, rank, from, to, port, points }
        })
        .collect();
    edges.reverse();
    let max_effect = file.edges.iter().map(strength).fold(0.0, f64::max);
    Layout { nodes, edges, rows: labels, width, height, n_not_drawn: file.edges.len() - drawn, max_effect }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_to_kinds_and_odd_ones_are_other() {
        assert_eq!(Kind::of("input"), Kind::Input);
        assert_eq!(Kind::of("a23.h4"), Kind::Head { layer: 23, head: 4 });
        assert_eq!(Kind::of("a3.kv1"), Kind::Kv { layer: 3, index: 1 });
        assert_eq!(Kind::of("m0"), Kind::Mlp { layer: 0 });
        assert_eq!(Kind::of("logits"), Kind::Logits);
        for odd in ["", "m", "a3", "a3.h", "a.h1", "m-1", "a1.h+2", "<script>", "mlp"] {
            assert_eq!(Kind::of(odd), Kind::Other, "{odd}");
        }
        assert_eq!(split_port("a5.h1<q>"), ("a5.h1", "q"));
        assert_eq!(split_port("a5.kv0<v>"), ("a5.kv0", "v"));
        assert_eq!(split_port("logits"), ("logits", ""));
        assert_eq!(split_port("x<y"), ("x<y", ""));
    }
}
