//! Exact greedy edge ablation (ACDC, brief §3): remove every edge whose removal changes the metric by less than
//! the threshold.
//!
//! Order (the greedy result depends on it): receivers in reverse topological order — `logits`, then layer
//! L−1 down to 0; inside a layer the MLP first, then the heads from the highest index down, each head's value,
//! key and query inputs (under grouped-query attention a key/value head's inputs are visited just before the
//! queries of its group's highest head). For each receiver its senders from the nearest layer to the farthest,
//! `input` last (the reverse of forward order). A receiver whose node has no kept outgoing edge left has all its
//! incoming edges removed without testing.
//!
//! Fast path, with the sequential result preserved: candidates are scored by the forward-cone evaluator
//! ([`super::cone`]), which holds the current circuit's activations and recomputes only the nodes a tested
//! receiver's edges can reach through kept edges, at the last position wherever no key or value port depends on
//! them; consecutive candidate removals are speculated in one batch (copy j removes the next j edges
//! cumulatively), the first kept edge rolls the rest back, and the last accepted copy's values become the current
//! ones.
use super::cone::{needs, Cone};
use super::{Circuit, Discovery, Task};
use crate::graph::{Node, Port};
use crate::progress::Progress;
use crate::{Error, Result};

/// ACDC settings.
#[derive(Debug, Clone)]
pub struct Acdc {
    /// τ: an edge is pruned when its removal changes the metric by less than this.
    pub threshold: f64,
    /// `Δ < τ` (the reference's rule: removals that help are always pruned) instead of `|Δ| < τ`.
    pub signed: bool,
    /// Most candidate removals evaluated in one speculative batch (1 = no speculation).
    pub max_speculation: usize,
    /// One full forward pass per tested edge through the naive intervention: the reference for tests and
    /// benchmarks.
    pub naive: bool,
    /// Edges removed before the search starts (the hybrid method's non-candidates).
    pub initially_removed: Option<Vec<bool>>,
}

impl Acdc {
    pub fn new(threshold: f64, signed: bool) -> Result<Self> {
        if !threshold.is_finite() || threshold < 0.0 {
            return Err(Error::input(format!("threshold must be a finite number ≥ 0, got {threshold}")));
        }
        Ok(Acdc { threshold, signed, max_speculation: 16, naive: false, initially_removed: None })
    }

    fn prunes(&self, delta: f64) -> bool {
        if self.signed {
            delta < self.threshold
        } else {
            delta.abs() < self.threshold
        }
    }
}

/// Receivers in ACDC's visiting order (dense receiver indices).
pub fn receiver_order(task: &Task) -> Vec<usize> {
    let g = &task.graph;
    let (h, kv) = (g.n_heads, g.n_kv_heads);
    let group = h / kv;
    let mut order = vec![g.logits_receiver()];
    for l in (0..g.n_layers).rev() {
        order.push(g.mlp_receiver(l));
        for head in (0..h).rev() {
            if head % group == group - 1 {
                let kvh = head / group;
                order.push(g.attn_receiver(l, h + kv + kvh)); // value
                order.push(g.attn_receiver(l, h + kvh)); // key
            }
            order.push(g.attn_receiver(l, head)); // query
        }
    }
    order
}

/// Senders whose output receiver `r` feeds (the head(s) behind a port, the MLP itself); empty for `logits`.
fn fed_senders(task: &Task, r: usize) -> Vec<usize> {
    let g = &task.graph;
    match g.receiver(r) {
        Node::HeadInput { layer, port: Port::Q, index } => vec![g.head_sender(layer, index)],
        Node::HeadInput { layer, index, .. } => {
            let group = g.n_heads / g.n_kv_heads;
            (index * group..(index + 1) * group).map(|h| g.head_sender(layer, h)).collect()
        }
        Node::Mlp { layer } => vec![g.mlp_sender(layer)],
        _ => vec![],
    }
}

impl Discovery for Acdc {
    fn name(&self) -> &'static str {
        "acdc"
    }

    fn discover(&self, task: &Task, progress: &dyn Progress) -> Result<Circuit> {
        let g = &task.graph;
        let mut circuit = Circuit::full(g);
        if let Some(init) = &self.initially_removed {
            if init.len() != g.edges.len() {
                return Err(Error::bug("initial circuit does not match the graph"));
            }
            circuit.removed = init.clone();
        }
        // The cone's forward pass is the intervened one `Task::score` runs: its metric is the starting point.
        let (mut cone, mut current) = match self.naive {
            true => (None, task.score_naive(&circuit.removed)?),
            false => {
                let (cone, metric) = Cone::new(task, &circuit.removed)?;
                (Some(cone), metric)
            }
        };
        progress.start(g.edges.len() as u64);
        let mut speculation = self.max_speculation.clamp(1, 4);
        for r in receiver_order(task) {
            progress.message(&format!("{} · kept {}", g.receiver_name(r), circuit.n_kept()));
            let fed = fed_senders(task, r);
            let candidates: Vec<usize> = g.edges_into[r].iter().rev().copied().filter(|&e| !circuit.removed[e]).collect();
            progress.advance((g.edges_into[r].len() - candidates.len()) as u64);
            let dead = !fed.is_empty() && fed.iter().all(|&s| g.edges_from[s].iter().all(|&e| circuit.removed[e]));
            if dead {
                for &e in &candidates {
                    circuit.removed[e] = true;
                }
                progress.advance(candidates.len() as u64);
                continue;
            }
            let need = match cone {
                Some(_) => needs(task, &circuit.removed),
                None => vec![],
            };
            let mut i = 0;
            while i < candidates.len() {
                let k = if self.naive { 1 } else { speculation.min(candidates.len() - i) };
                // Copy j removes candidates i..=i+j on top of the current circuit.
                let mut copies = Vec::with_capacity(k);
                let mut removed = circuit.removed.clone();
                for &e in &candidates[i..i + k] {
                    removed[e] = true;
                    copies.push(removed.clone());
                }
                let (scores, values) = match &cone {
                    Some(c) => {
                        let (s, v) = c.scores(r, &copies, &circuit.removed, &need)?;
                        (s, Some(v))
                    }
                    None => (vec![task.score_naive(&copies[0])?], None),
                };
                let mut accepted = None;
                let mut all_pruned = true;
                for (j, &e) in candidates[i..i + k].iter().enumerate() {
                    let delta = scores[j] - current;
                    circuit.effect[e] = Some(delta);
                    progress.advance(1);
                    if self.prunes(delta) {
                        circuit.removed[e] = true;
                        current = scores[j];
                        accepted = Some(j);
                        i += 1;
                    } else {
                        // Kept: later copies assumed it removed, so they are discarded.
                        i += 1;
                        all_pruned = false;
                        break;
                    }
                }
                if let (Some(j), Some(c), Some(v)) = (accepted, cone.as_mut(), &values) {
                    c.accept(v, j)?;
                }
                speculation = if all_pruned { (speculation * 2).min(self.max_speculation.max(1)) } else { (speculation / 2).max(1) };
            }
        }
        progress.message(&format!("done · kept {}", circuit.n_kept()));
        circuit.metric = current;
        Ok(circuit)
    }
}
