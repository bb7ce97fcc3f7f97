//! The computation graph (brief §1) as a petgraph DAG: senders (`input`, heads `a{l}.h{h}`, MLPs `m{l}`) wired
//! to receivers (head query/key/value inputs, MLP inputs, `logits`). It is the one source of truth for which
//! edges exist and in which order; a [`Circuit`](crate::discover::Circuit) is a kept/removed flag per edge of it.
//!
//! Naming: query inputs `a{l}.h{h}<q>`; key/value inputs `a{l}.h{h}<k>`/`<v>` under multi-head attention and
//! `a{l}.kv{g}<k>`/`<v>` for key/value head `g` under grouped-query attention (one port shared by the query
//! heads of its group, never ungrouped). Edges are `sender->receiver`, e.g. `a3.h1->m5`, `m2->a7.h0<k>`.
use std::collections::HashMap;

use candle_core::Tensor;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::{Dfs, EdgeFiltered, Reversed};
use serde::Serialize;

use crate::model::{Activations, Config};
use crate::{Error, Result};

/// The three inputs of an attention head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Port {
    Q,
    K,
    V,
}

/// A vertex of the DAG.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Node {
    /// The embedding: a sender.
    Input,
    /// Head `head` of `layer`: a sender (its output), fed by its ports.
    Head { layer: usize, head: usize },
    /// A head input: a receiver. `index` is the query head for `Q`, the key/value head for `K`/`V`.
    HeadInput { layer: usize, port: Port, index: usize },
    /// An MLP: receiver (its input) and sender (its output) at once.
    Mlp { layer: usize },
    /// The final residual stream: a receiver.
    Logits,
}

/// What a DAG edge is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// An ablatable edge, index into [`Graph::edges`].
    Edge(usize),
    /// A head input feeding its head: internal, never ablated.
    Internal,
}

/// One ablatable edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    /// Dense sender index (see [`Graph::sender_name`]).
    pub sender: usize,
    /// Dense receiver index (see [`Graph::receiver_name`]).
    pub receiver: usize,
    pub name: String,
}

/// The computation graph of one model configuration.
#[derive(Debug, Clone)]
pub struct Graph {
    pub dag: DiGraph<Node, Wire>,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    /// Every ablatable edge, grouped by receiver in forward order, senders in forward order.
    pub edges: Vec<Edge>,
    /// DAG vertex of each dense sender index.
    pub sender_nodes: Vec<NodeIndex>,
    /// DAG vertex of each dense receiver index.
    pub receiver_nodes: Vec<NodeIndex>,
    /// Edge ids into each receiver, by receiver index, in sender order (entry `s` is the edge from sender `s`).
    pub edges_into: Vec<Vec<usize>>,
    /// Edge ids out of each sender, by sender index.
    pub edges_from: Vec<Vec<usize>>,
    by_name: HashMap<String, usize>,
}

/// Node, sender, receiver and edge counts, as `kcirc graph` prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GraphCounts {
    pub nodes: usize,
    pub edges: usize,
    pub senders: usize,
    pub receivers: usize,
}

impl Graph {
    /// Builds the graph of `cfg`. Senders are indexed `input`, then per layer its heads and its MLP;
    /// receivers per layer: query ports, key ports, value ports, the MLP, and finally `logits`.
    pub fn new(cfg: &Config) -> Graph {
        let (nl, h, kv) = (cfg.n_layers, cfg.n_heads, cfg.n_kv_heads);
        let mut g = Graph {
            dag: DiGraph::new(),
            n_layers: nl,
            n_heads: h,
            n_kv_heads: kv,
            edges: vec![],
            sender_nodes: vec![],
            receiver_nodes: vec![],
            edges_into: vec![],
            edges_from: vec![],
            by_name: HashMap::new(),
        };
        let input = g.dag.add_node(Node::Input);
        g.sender_nodes.push(input);
        for layer in 0..nl {
            let ports: Vec<(Port, usize)> =
                (0..h).map(|i| (Port::Q, i)).chain((0..kv).map(|i| (Port::K, i))).chain((0..kv).map(|i| (Port::V, i))).collect();
            let heads: Vec<NodeIndex> = (0..h).map(|head| g.dag.add_node(Node::Head { layer, head })).collect();
            for (port, index) in ports {
                let r = g.add_receiver(Node::HeadInput { layer, port, index });
                match port {
                    Port::Q => {
                        g.dag.add_edge(r, heads[index], Wire::Internal);
                    }
                    Port::K | Port::V => {
                        let group = h / kv;
                        for &head in &heads[index * group..(index + 1) * group] {
                            g.dag.add_edge(r, head, Wire::Internal);
                        }
                    }
                }
            }
            g.sender_nodes.extend(&heads);
            let mlp = g.add_receiver(Node::Mlp { layer });
            g.sender_nodes.push(mlp);
        }
        g.add_receiver(Node::Logits);
        g.edges_from = vec![vec![]; g.sender_nodes.len()];
        for (id, e) in g.edges.iter().enumerate() {
            g.edges_from[e.sender].push(id);
        }
        g
    }

    /// Adds a receiver and its edges from every sender that exists so far (all earlier in forward order).
    fn add_receiver(&mut self, node: Node) -> NodeIndex {
        let r = self.dag.add_node(node);
        let ri = self.receiver_nodes.len();
        self.receiver_nodes.push(r);
        let mut into = vec![];
        for si in 0..self.sender_nodes.len() {
            let s = self.sender_nodes[si];
            // Every sender added so far comes earlier in forward order: a layer's heads are added after its
            // attention ports and before its MLP, so no head feeds its own layer's attention.
            let id = self.edges.len();
            let name = format!("{}->{}", self.node_name(self.dag[s]), self.node_name(node));
            self.by_name.insert(name.clone(), id);
            self.edges.push(Edge { sender: si, receiver: ri, name });
            self.dag.add_edge(s, r, Wire::Edge(id));
            into.push(id);
        }
        self.edges_into.push(into);
        r
    }

    /// Name of a vertex, as the brief spells it.
    pub fn node_name(&self, n: Node) -> String {
        let grouped = self.n_kv_heads != self.n_heads;
        match n {
            Node::Input => "input".into(),
            Node::Head { layer, head } => format!("a{layer}.h{head}"),
            Node::HeadInput { layer, port: Port::Q, index } => format!("a{layer}.h{index}<q>"),
            Node::HeadInput { layer, port, index } => {
                let p = if port == Port::K { "k" } else { "v" };
                if grouped {
                    format!("a{layer}.kv{index}<{p}>")
                } else {
                    format!("a{layer}.h{index}<{p}>")
                }
            }
            Node::Mlp { layer } => format!("m{layer}"),
            Node::Logits => "logits".into(),
        }
    }

    pub fn n_senders(&self) -> usize {
        self.sender_nodes.len()
    }
    pub fn n_receivers(&self) -> usize {
        self.receiver_nodes.len()
    }
    pub fn sender_name(&self, s: usize) -> String {
        self.node_name(self.dag[self.sender_nodes[s]])
    }
    pub fn receiver_name(&self, r: usize) -> String {
        self.node_name(self.dag[self.receiver_nodes[r]])
    }
    pub fn sender(&self, s: usize) -> Node {
        self.dag[self.sender_nodes[s]]
    }
    pub fn receiver(&self, r: usize) -> Node {
        self.dag[self.receiver_nodes[r]]
    }
    /// Edge id by name (`a3.h1->m5`).
    pub fn edge_id(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }
    /// Number of attention input ports per layer (queries, keys, values).
    pub fn ports_per_layer(&self) -> usize {
        self.n_heads + 2 * self.n_kv_heads
    }
    /// Dense sender index of head `h` of layer `l`.
    pub fn head_sender(&self, l: usize, h: usize) -> usize {
        1 + l * (self.n_heads + 1) + h
    }
    /// Dense sender index of MLP `l`.
    pub fn mlp_sender(&self, l: usize) -> usize {
        1 + l * (self.n_heads + 1) + self.n_heads
    }
    /// Senders that exist before layer `l`'s attention (they are the first `n` indices).
    pub fn senders_before_layer(&self, l: usize) -> usize {
        1 + l * (self.n_heads + 1)
    }
    /// Dense receiver index of attention port `p` (0..P) of layer `l`.
    pub fn attn_receiver(&self, l: usize, p: usize) -> usize {
        l * (self.ports_per_layer() + 1) + p
    }
    pub fn mlp_receiver(&self, l: usize) -> usize {
        l * (self.ports_per_layer() + 1) + self.ports_per_layer()
    }
    /// Sender blocks in forward order: the embedding, then per layer its heads and its MLP.
    pub fn n_blocks(&self) -> usize {
        1 + 2 * self.n_layers
    }
    /// The first sender of block `id` (block ids as [`Block::id`]); [`Graph::n_senders`] for `id = n_blocks`.
    pub fn block_start(&self, id: usize) -> usize {
        match id {
            id if id >= self.n_blocks() => self.n_senders(),
            id => Block::from_id(id).senders(self).start,
        }
    }
    /// The output of dense sender `s` (`input`, a head, an MLP) in `acts`, `[B, T, D]`.
    pub fn sender_output(&self, acts: &Activations, s: usize) -> Result<Tensor> {
        Ok(match self.sender(s) {
            Node::Input => acts.embed.clone(),
            Node::Head { layer, head } => acts.heads(layer)?.get(head)?,
            Node::Mlp { layer } => acts.mlps[layer].clone(),
            other => return Err(Error::bug(format!("{other:?} is not a sender"))),
        })
    }
    pub fn logits_receiver(&self) -> usize {
        self.n_layers * (self.ports_per_layer() + 1)
    }

    pub fn counts(&self) -> GraphCounts {
        GraphCounts {
            nodes: 2 + self.n_layers * (self.n_heads + 1),
            edges: self.edges.len(),
            senders: self.n_senders(),
            receivers: self.n_receivers(),
        }
    }
}

/// A block of senders that live in one tensor: the embedding, one layer's heads, or one layer's MLP. Ids run in
/// forward order: `input` 0, the heads of layer `l` `1 + 2l`, its MLP `2 + 2l`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    Embed,
    Heads(usize),
    Mlp(usize),
}

impl Block {
    pub fn id(self) -> usize {
        match self {
            Block::Embed => 0,
            Block::Heads(l) => 1 + 2 * l,
            Block::Mlp(l) => 2 + 2 * l,
        }
    }
    pub fn from_id(id: usize) -> Block {
        match id {
            0 => Block::Embed,
            id if id % 2 == 1 => Block::Heads((id - 1) / 2),
            id => Block::Mlp((id - 2) / 2),
        }
    }
    /// Dense sender indices of the block.
    pub fn senders(self, g: &Graph) -> std::ops::Range<usize> {
        match self {
            Block::Embed => 0..1,
            Block::Heads(l) => g.head_sender(l, 0)..g.head_sender(l, 0) + g.n_heads,
            Block::Mlp(l) => g.mlp_sender(l)..g.mlp_sender(l) + 1,
        }
    }
    /// The block's outputs in `acts` as `[S_b, R, T, D]`.
    pub fn outputs(self, acts: &Activations) -> Result<Tensor> {
        Ok(match self {
            Block::Embed => acts.embed.unsqueeze(0)?,
            Block::Heads(l) => acts.heads(l)?,
            Block::Mlp(l) => acts.mlps[l].unsqueeze(0)?,
        })
    }
    /// Blocks whose senders come before the attention (`mlp = false`) or the MLP of layer `l`; `l = n_layers`
    /// gives every block (what `logits` reads).
    pub fn before(l: usize, mlp: bool) -> Vec<Block> {
        let mut v = vec![Block::Embed];
        for i in 0..l {
            v.push(Block::Heads(i));
            v.push(Block::Mlp(i));
        }
        if mlp {
            v.push(Block::Heads(l));
        }
        v
    }
}

/// Which edges an attribution keeps, by |score|. In files: `{"top_n": 500}`, `{"score_threshold": 0.1}`,
/// `{"top_fraction": 0.05}`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Selection {
    /// The `n` edges with the largest |score|.
    #[serde(rename = "top_n")]
    TopN(usize),
    /// Every edge with |score| ≥ x.
    #[serde(rename = "score_threshold")]
    Threshold(f64),
    /// The top fraction of all edges by |score|.
    #[serde(rename = "top_fraction")]
    Fraction(f64),
    /// The smallest top-n whose faithfulness on the discovery facts reaches this (needs a task to measure it:
    /// `discover::eap::choose_size` turns it into `TopN`).
    #[serde(rename = "target_faithfulness")]
    TargetFaithfulness(f64),
}

impl Graph {
    /// Keeps an edge only if its sender is reachable from `input` and its receiver still reaches `logits`
    /// through kept edges (petgraph walks over the kept subgraph, internal head wires included).
    pub fn prune_unconnected(&self, removed: &mut [bool]) {
        let kept = EdgeFiltered::from_fn(&self.dag, |e| match *e.weight() {
            Wire::Edge(id) => !removed[id],
            Wire::Internal => true,
        });
        let input = self.sender_nodes[0];
        let logits = self.receiver_nodes[self.logits_receiver()];
        let mut from_input = vec![false; self.dag.node_count()];
        let mut dfs = Dfs::new(&kept, input);
        while let Some(n) = dfs.next(&kept) {
            from_input[n.index()] = true;
        }
        let mut to_logits = vec![false; self.dag.node_count()];
        let rev = Reversed(&kept);
        let mut dfs = Dfs::new(rev, logits);
        while let Some(n) = dfs.next(rev) {
            to_logits[n.index()] = true;
        }
        for (id, e) in self.edges.iter().enumerate() {
            let (s, r) = (self.sender_nodes[e.sender], self.receiver_nodes[e.receiver]);
            if !(from_input[s.index()] && to_logits[r.index()]) {
                removed[id] = true;
            }
        }
    }

    /// The removed-edge flags of `selection` over `scores` (one per edge, graph order), unconnected edges
    /// pruned. Ties in |score| go to the earlier edge, so the choice is deterministic.
    pub fn select(&self, scores: &[f64], selection: Selection) -> Result<Vec<bool>> {
        if scores.len() != self.edges.len() {
            return Err(Error::bug(format!("{} scores for {} edges", scores.len(), self.edges.len())));
        }
        let n = match selection {
            Selection::TopN(0) => return Err(Error::input("selection: top n must be at least 1")),
            Selection::Threshold(x) if !x.is_finite() || x < 0.0 => {
                return Err(Error::input(format!("selection: score threshold must be a finite number ≥ 0, got {x}")))
            }
            Selection::Fraction(f) if !(f > 0.0 && f <= 1.0) => {
                return Err(Error::input(format!("selection: top fraction must be in (0, 1], got {f}")))
            }
            Selection::TopN(n) => Some(n),
            Selection::Fraction(f) => Some((f * scores.len() as f64).round() as usize),
            Selection::Threshold(_) => None,
            Selection::TargetFaithfulness(_) => {
                return Err(Error::bug("a faithfulness target is chosen on a task (discover::eap::choose_size)"))
            }
        };
        let mut removed = vec![true; scores.len()];
        match (n, selection) {
            (Some(n), _) => {
                let mut idx: Vec<usize> = (0..scores.len()).collect();
                idx.sort_by(|&a, &b| scores[b].abs().total_cmp(&scores[a].abs()).then(a.cmp(&b)));
                for &e in idx.iter().take(n) {
                    removed[e] = false;
                }
            }
            (None, Selection::Threshold(x)) => {
                for (e, s) in scores.iter().enumerate() {
                    if s.abs() >= x {
                        removed[e] = false;
                    }
                }
            }
            (None, _) => return Err(Error::bug("only a threshold selects without a count")),
        }
        self.prune_unconnected(&mut removed);
        Ok(removed)
    }
}
