//! The circuit file: what `kcirc discover` writes and every later command reads. JSON, fields in a fixed
//! order, no timings or host details, so the same inputs give byte-identical files.
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::{Source, Triple};
use crate::discover::{ChosenSize, Circuit, Task};
use crate::graph::{Graph, Node, Selection};
use crate::intervene::Ablation;
use crate::metric::Metric;
use crate::model::Config;
use crate::split::MeanOver;
use crate::{Error, Result};

/// Version of the circuit file layout. 2 added the run's every parameter (`triples`, `ig_steps`, `selection`,
/// `candidates`, `k`, `filter_known`, `n_examples`, `kcirc_version`; `threshold`/`signed` only where they
/// apply) and `metric_empty`; version 1 files still read.
pub const FORMAT: u32 = 2;

/// The model a circuit belongs to, enough to refuse a circuit from another model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelShape {
    pub family: String,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub d_model: usize,
    pub vocab_size: usize,
}

impl ModelShape {
    /// Fails unless `cfg` has this shape; `what` names the file (`circuit`, `scores file`) in the message.
    pub fn check(&self, what: &str, model: &str, cfg: &Config) -> Result<()> {
        let shape = ModelShape::from(cfg);
        if shape != *self {
            return Err(Error::input(format!(
                "{what} is for model `{model}` ({} layers × {} heads, d_model {}), not this one ({} layers × {} heads, d_model {})",
                self.n_layers, self.n_heads, self.d_model, shape.n_layers, shape.n_heads, shape.d_model
            )));
        }
        Ok(())
    }
}

impl From<&Config> for ModelShape {
    fn from(c: &Config) -> Self {
        ModelShape {
            family: c.family.clone(),
            n_layers: c.n_layers,
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            d_model: c.d_model,
            vocab_size: c.vocab_size,
        }
    }
}

/// One kept edge. Unknown fields are refused (as the schema says): a mistyped `effect` would otherwise read as
/// an edge never tested.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeRecord {
    pub name: String,
    pub sender: String,
    pub receiver: String,
    /// Δ metric measured when the edge was tested (or its attribution score); `null` if never tested.
    pub effect: Option<f64>,
}

/// What a discovery run was, apart from the circuit it found: every setting that made it (so `kcirc discover
/// --rerun` can make it again, byte for byte) and the discovery triples. The circuit file's leading fields, and
/// the header of a scores file (`kcirc discover --scores`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub model: String,
    pub model_shape: ModelShape,
    pub relation: String,
    /// The relation file the facts came from (path as given and content digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triples: Option<Source>,
    pub method: String,
    pub ablation: Ablation,
    pub metric: Metric,
    /// ACDC's τ (acdc, hybrid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// ACDC's sign rule: `Δ < τ` when true, `|Δ| < τ` when false (acdc, hybrid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed: Option<bool>,
    /// EAP-IG interpolation steps (eap-ig, hybrid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ig_steps: Option<usize>,
    /// Which edges attribution kept (eap, eap-ig).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<Selection>,
    /// EAP-IG candidate edges handed to exact ablation (hybrid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidates: Option<usize>,
    pub seed: u64,
    /// k of the known-fact filter and of the held-out Hit@k.
    #[serde(default = "default_k")]
    pub k: usize,
    /// Whether only facts the full model knows (rank < k) were used.
    #[serde(default = "default_true")]
    pub filter_known: bool,
    /// Discovery examples asked for (the length of `examples`).
    #[serde(default)]
    pub n_examples: usize,
    /// The kcirc that made the file.
    #[serde(default)]
    pub kcirc_version: String,
    /// Whether a second, disjoint split was discovered to measure stability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stability: Option<bool>,
    /// Demonstrations prepended to every prompt (in-context learning), when there were any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demonstrations: Option<usize>,
    /// The knowledge edits applied to the model in memory before discovery (`--edits`), when there were any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edits: Option<crate::model::EditRecord>,
    /// Mean ablation: which prompts the means were taken over (absent in files from before kcirc had a
    /// choice: see [`RunInfo::mean_over`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_over: Option<MeanOver>,
    /// Mean ablation: how many prompts the means were taken over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_reference: Option<usize>,
    /// The discovery triples.
    pub examples: Vec<Triple>,
    /// Mean ablation's reference facts: with `mean_over` relation, facts of the relation outside the held-out
    /// split (ones the model does not know), whose prompts enter the means with the discovery prompts; with
    /// corpus, the corpus facts, the whole set the means were taken over; empty when the means are the
    /// discovery prompts' alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reference: Vec<Triple>,
}

impl RunInfo {
    /// Which prompts mean ablation averaged over. Files from before the choice do not say: theirs were the
    /// discovery prompts and `reference` ([`MeanOver::Relation`]), the discovery prompts alone
    /// ([`MeanOver::Discovery`]) when they list no reference facts.
    pub fn mean_over(&self) -> MeanOver {
        match self.mean_over {
            Some(m) => m,
            None if self.reference.is_empty() => MeanOver::Discovery,
            None => MeanOver::Relation,
        }
    }

    /// Mean ablation's reference facts as the run saw them: tokenised, with the run's demonstrations (from the
    /// discovery facts) prepended to the relation's own facts (corpus prompts stay bare).
    pub fn reference_examples(&self, tok: &crate::tokenizer::Tokenizer) -> Result<Vec<crate::data::Example>> {
        let zero_shot = self.reference.iter().map(|t| crate::data::example(t, tok)).collect::<Result<Vec<_>>>()?;
        match self.mean_over() {
            MeanOver::Corpus => Ok(zero_shot),
            _ => crate::data::in_context(zero_shot, &self.examples, self.demonstrations.unwrap_or(0), self.seed, tok),
        }
    }

    /// Every prompt mean ablation's means are taken over (`discover::mean_prompts` decides which).
    pub fn mean_prompts(&self, tok: &crate::tokenizer::Tokenizer) -> Result<Vec<Vec<u32>>> {
        Ok(crate::discover::mean_prompts(&self.discovery_examples(tok)?, &self.reference_examples(tok)?, self.mean_over()))
    }

    /// The discovery examples as the run saw them: tokenised, with the run's demonstrations (if any) prepended.
    pub fn discovery_examples(&self, tok: &crate::tokenizer::Tokenizer) -> Result<Vec<crate::data::Example>> {
        let zero_shot = self.examples.iter().map(|t| crate::data::example(t, tok)).collect::<Result<Vec<_>>>()?;
        crate::data::in_context(zero_shot, &self.examples, self.demonstrations.unwrap_or(0), self.seed, tok)
    }
}

fn default_k() -> usize {
    10
}
fn default_true() -> bool {
    true
}

/// The circuit file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CircuitFile {
    pub format: u32,
    /// The run's settings and discovery triples (never scored by `kcirc eval`).
    #[serde(flatten)]
    pub run: RunInfo,
    /// The metric of the full model on the discovery examples (0 by definition; measured).
    pub metric_full: f64,
    /// The metric with every edge removed: the scale `metric_circuit` is read against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_empty: Option<f64>,
    pub metric_circuit: f64,
    /// How a faithfulness target chose the circuit's size (attribution with `target_faithfulness`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chosen_size: Option<ChosenSize>,
    pub n_edges_total: usize,
    pub n_edges: usize,
    pub nodes: Vec<String>,
    pub edges: Vec<EdgeRecord>,
    /// How much a circuit from other facts shares with this one (`discover --stability`).
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "stability_report")]
    pub stability: Option<Stability>,
    /// Held-out evaluation report, when `discover` ran one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<serde_json::Value>,
}

/// A circuit against one discovered, with the same settings, from as many other facts of the relation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stability {
    /// Discovery facts of the second circuit (disjoint from the first's).
    pub n_examples: usize,
    pub n_edges_other: usize,
    /// |A ∩ B| / |A ∪ B| of the kept edges.
    pub edge_jaccard: f64,
    /// The same over the circuits' nodes.
    pub node_jaccard: f64,
}

/// Names of the graph nodes a circuit touches: senders with a kept outgoing edge, receivers with a kept
/// incoming edge (a head's query port counts as the head; key/value ports as themselves, `a3.kv1`, under
/// grouped-query attention), sorted in forward order.
pub fn circuit_nodes(g: &Graph, c: &Circuit) -> Vec<String> {
    let mut seen = std::collections::BTreeMap::new();
    let key = |n: Node| -> (usize, usize, String) {
        let name = match n {
            Node::HeadInput { port: crate::graph::Port::Q, layer, index } => g.node_name(Node::Head { layer, head: index }),
            Node::HeadInput { layer, index, .. } if g.n_kv_heads == g.n_heads => g.node_name(Node::Head { layer, head: index }),
            Node::HeadInput { layer, index, .. } => format!("a{layer}.kv{index}"),
            other => g.node_name(other),
        };
        let order = match n {
            Node::Input => (0, 0),
            Node::Head { layer, head } => (1 + 2 * layer, head),
            Node::HeadInput { layer, index, .. } => (1 + 2 * layer, index),
            Node::Mlp { layer } => (2 + 2 * layer, 0),
            Node::Logits => (usize::MAX, 0),
        };
        (order.0, order.1, name)
    };
    for e in c.kept() {
        let edge = &g.edges[e];
        seen.insert(key(g.sender(edge.sender)), ());
        seen.insert(key(g.receiver(edge.receiver)), ());
    }
    let mut names: Vec<String> = vec![];
    for (_, _, n) in seen.into_keys() {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    names
}

/// The kept edges as records, in graph order.
pub fn edge_records(g: &Graph, c: &Circuit) -> Vec<EdgeRecord> {
    c.kept()
        .map(|e| {
            let edge = &g.edges[e];
            EdgeRecord {
                name: edge.name.clone(),
                sender: g.sender_name(edge.sender),
                receiver: g.receiver_name(edge.receiver),
                effect: c.effect[e],
            }
        })
        .collect()
}

impl CircuitFile {
    /// The file of circuit `c` (on graph `g`) found by `run`; no held-out report yet, the full model's metric
    /// taken as 0 and the empty circuit's unknown (see [`CircuitFile::measured`]).
    pub fn new(run: RunInfo, g: &Graph, c: &Circuit) -> CircuitFile {
        CircuitFile {
            format: FORMAT,
            run,
            metric_full: 0.0,
            metric_empty: None,
            metric_circuit: c.metric,
            chosen_size: c.chosen.clone(),
            n_edges_total: g.edges.len(),
            n_edges: c.n_kept(),
            nodes: circuit_nodes(g, c),
            edges: edge_records(g, c),
            stability: None,
            eval: None,
        }
    }

    /// [`CircuitFile::new`] with the full model's and the empty circuit's metric measured on `task`.
    pub fn measured(run: RunInfo, task: &Task, c: &Circuit) -> Result<CircuitFile> {
        let mut f = CircuitFile::new(run, &task.graph, c);
        let n = task.graph.edges.len();
        f.metric_full = task.score(&vec![false; n])?;
        f.metric_empty = Some(task.score(&vec![true; n])?);
        Ok(f)
    }

    pub fn read(path: &Path) -> Result<CircuitFile> {
        CircuitFile::parse(&read_text(path)?, &path.display().to_string())
    }

    /// A circuit file's text, read from `label`: format 1 or 2; a newer format is refused by name.
    pub fn parse(text: &str, label: &str) -> Result<CircuitFile> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| Error::input(format!("{label}: not JSON: {e}")))?;
        match value.get("format").and_then(serde_json::Value::as_u64) {
            None => return Err(Error::input(format!("{label}: not a circuit file (no `format`)"))),
            Some(v) if v > FORMAT as u64 => {
                return Err(Error::input(format!(
                    "{label}: circuit format {v} is newer than this kcirc reads (1 to {FORMAT}): upgrade kcirc"
                )))
            }
            Some(0) => return Err(Error::input(format!("{label}: circuit format 0 is not a kcirc format"))),
            Some(_) => {}
        }
        let file: CircuitFile = serde_json::from_value(value).map_err(|e| Error::input(format!("{label}: not a circuit file: {e}")))?;
        file.check_edges(label)?;
        Ok(file)
    }

    /// The edge list holds together, as kcirc writes it: each edge's name is `sender->receiver`, no edge is
    /// listed twice, and `n_edges` counts them. (Whether the edges are in the model's graph is checked against
    /// the model: [`CircuitFile::removed`].) A hand-edited file that breaks one would be read as another circuit
    /// than it says (the name decides which edge is kept; `diff` counts names).
    fn check_edges(&self, label: &str) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        for (i, e) in self.edges.iter().enumerate() {
            if e.name != format!("{}->{}", e.sender, e.receiver) {
                return Err(Error::input(format!(
                    "{label}: edge {} `{}` does not run from `{}` to `{}`",
                    i + 1,
                    e.name,
                    e.sender,
                    e.receiver
                )));
            }
            if !seen.insert(e.name.as_str()) {
                return Err(Error::input(format!("{label}: edge {} `{}` is listed twice", i + 1, e.name)));
            }
        }
        if self.n_edges != self.edges.len() {
            return Err(Error::input(format!("{label}: n_edges is {} but {} edges are listed", self.n_edges, self.edges.len())));
        }
        Ok(())
    }

    /// The removed-edge flags of this circuit on `graph`; fails if the circuit belongs to another model.
    pub fn removed(&self, graph: &Graph, cfg: &Config) -> Result<Vec<bool>> {
        self.run.model_shape.check("circuit", &self.run.model, cfg)?;
        let mut removed = vec![true; graph.edges.len()];
        for e in &self.edges {
            let id =
                graph.edge_id(&e.name).ok_or_else(|| Error::input(format!("circuit edge `{}` is not in this model's graph", e.name)))?;
            removed[id] = false;
        }
        Ok(removed)
    }

    /// JSON text (pretty, stable field order).
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| Error::bug(e.to_string()))
    }
}

/// The circuit as Graphviz DOT: input, heads, MLPs and logits; edge width by |effect|.
pub fn to_dot(file: &CircuitFile) -> String {
    let mut s = String::from("digraph circuit {\n  rankdir=BT;\n  node [shape=box, style=rounded, fontname=\"Helvetica\"];\n");
    let max = file.edges.iter().filter_map(|e| e.effect.map(f64::abs)).fold(0.0, f64::max).max(1e-12);
    let node_of = |port: &str| -> String { port.split('<').next().unwrap_or(port).to_string() };
    for n in &file.nodes {
        let color = if n.starts_with('m') {
            "lightblue"
        } else if n.starts_with('a') {
            "lightyellow"
        } else {
            "lightgrey"
        };
        s += &format!("  \"{n}\" [fillcolor={color}, style=\"rounded,filled\"];\n");
    }
    for e in &file.edges {
        let w = 0.5 + 4.5 * e.effect.map(f64::abs).unwrap_or(0.0) / max;
        let port = e.receiver.split('<').nth(1).map(|p| p.trim_end_matches('>')).unwrap_or("");
        let label = if port.is_empty() { String::new() } else { format!(", label=\"{port}\"") };
        s += &format!("  \"{}\" -> \"{}\" [penwidth={w:.2}{label}];\n", node_of(&e.sender), node_of(&e.receiver));
    }
    s += "}\n";
    s
}

/// A text file's contents; the error names the path (and, for bytes that are not UTF-8, their line).
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    crate::data::utf8(&bytes, &path.display().to_string())?;
    // Checked just above: the conversion cannot fail, and it keeps the buffer.
    String::from_utf8(bytes).map_err(|e| Error::bug(e.to_string()))
}

/// The folder a file `path` goes in (`.` for a bare file name).
fn folder_of(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Fails, naming `path`, unless a file can be written there: its folder exists and `path` is not a folder.
/// Commands check every output path before any work: a mistyped `--out` then fails at once, not after the run,
/// and never after another of the run's outputs was written.
pub fn check_writable(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(Error::input(format!("{}: is a folder; give a file name to write", path.display())));
    }
    let dir = folder_of(path);
    if !dir.is_dir() {
        let what = if dir.exists() { "is not a folder" } else { "does not exist" };
        return Err(Error::input(format!("{}: cannot write there: {} {what}", path.display(), dir.display())));
    }
    Ok(())
}

/// Writes `text` to `path` atomically: a temporary file beside it, renamed into place, so a failed run
/// leaves no partial output (and, when the write or the rename fails, no temporary file either).
pub fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let dir = folder_of(path);
    let tmp = dir.join(format!(".{}.tmp-{}", path.file_name().and_then(|n| n.to_str()).unwrap_or("out"), std::process::id()));
    // Errors name `path`, the file the user asked for, not the temporary name.
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(path, e))?;
    let written = f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(|e| Error::io(path, e));
    drop(f);
    let done = written.and_then(|_| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}
