//! The edge-score file: what `kcirc discover --scores` writes and `kcirc select` reads. JSON Lines: a header
//! object first, `{"kcirc_scores": 1, …the circuit file's run fields…, "corrupted", "n_edges_total"}` (`method`
//! being the attribution that computed the scores: `eap` or `eap-ig`, which `hybrid` also writes; `ig_steps`
//! its steps), then one `{"name", "sender", "receiver", "score"}` line per edge of the graph, in graph order.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::circuit::{write_atomic, CircuitFile, RunInfo};
use crate::data::Triple;
use crate::discover::eap::selected_circuit;
use crate::discover::{EdgeScores, Task};
use crate::graph::{Graph, Selection};
use crate::model::{Config, Model};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// Version of the scores file layout (the header's `kcirc_scores`).
pub const SCORES_FORMAT: u32 = 1;

/// First line of a scores file: everything needed to rebuild the circuit an attribution run keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Layout version; the key marks the file as a kcirc scores file.
    pub kcirc_scores: u32,
    /// The attribution run (`method` and `ig_steps` those of the scores).
    #[serde(flatten)]
    pub run: RunInfo,
    /// Per discovery example, its corruption partner (resample ablation only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrupted: Option<Vec<Triple>>,
    pub n_edges_total: usize,
}

impl Header {
    /// The discovery task the scores were computed on: the header's examples, corruption partners, ablation and
    /// metric, on `model`.
    pub fn task<'m>(&self, model: &'m Model, tok: &Tokenizer) -> Result<Task<'m>> {
        let tokenize = |ts: &[Triple]| -> Result<Vec<crate::data::Example>> { ts.iter().map(|t| crate::data::example(t, tok)).collect() };
        let corrupted = match &self.corrupted {
            Some(c) => Some(tokenize(c)?.into_iter().map(|e| e.tokens).collect()),
            None => None,
        };
        let reference = self.run.reference_examples(tok)?;
        let examples = self.run.discovery_examples(tok)?;
        Task::with_reference(model, examples, &reference, self.run.mean_over(), self.run.ablation, corrupted, self.run.metric)
    }

    /// The header of `scores`, computed by the run `run`: its method becomes the attribution's, and settings
    /// of exact ablation (a hybrid run's) are dropped.
    pub fn new(run: RunInfo, scores: &EdgeScores, corrupted: Option<Vec<Triple>>) -> Header {
        let attribution = run.method == scores.method;
        let run = RunInfo {
            method: scores.method.to_string(),
            ig_steps: scores.ig_steps,
            threshold: None,
            signed: None,
            candidates: None,
            selection: if attribution { run.selection } else { None },
            ..run
        };
        Header { kcirc_scores: SCORES_FORMAT, run, corrupted, n_edges_total: scores.scores.len() }
    }
}

/// One edge's line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreLine {
    pub name: String,
    pub sender: String,
    pub receiver: String,
    pub score: f64,
}

/// A scores file as read: the header and each edge line with its line number.
#[derive(Debug, Clone)]
pub struct ScoresFile {
    pub path: PathBuf,
    pub header: Header,
    pub lines: Vec<(usize, ScoreLine)>,
}

/// The scores file's text: `header`, then `scores` (one per edge of `g`, graph order).
pub fn render(header: &Header, g: &Graph, scores: &[f64]) -> Result<String> {
    fn line<T: Serialize>(v: &T) -> Result<String> {
        serde_json::to_string(v).map(|s| s + "\n").map_err(|e| Error::bug(e.to_string()))
    }
    let mut text = line(header)?;
    for (edge, &score) in g.edges.iter().zip(scores) {
        let name = edge.name.clone();
        text += &line(&ScoreLine { name, sender: g.sender_name(edge.sender), receiver: g.receiver_name(edge.receiver), score })?;
    }
    Ok(text)
}

/// Writes the scores file atomically.
pub fn write(path: &Path, header: &Header, g: &Graph, scores: &[f64]) -> Result<()> {
    write_atomic(path, &render(header, g, scores)?)
}

impl ScoresFile {
    /// Reads and parses a scores file; an error names the file and the line at fault.
    pub fn read(path: &Path) -> Result<ScoresFile> {
        let text = crate::circuit::read_text(path)?;
        ScoresFile::parse(&text, path)
    }

    /// Parses a scores file's text read from `path` (`-` for standard input).
    pub fn parse(text: &str, path: &Path) -> Result<ScoresFile> {
        let at = |line: usize, msg: String| Error::input(format!("{}: line {line}: {msg}", path.display()));
        let mut rows = text.lines().enumerate().map(|(i, l)| (i + 1, l)).filter(|(_, l)| !l.trim().is_empty());
        let (n, first) = rows.next().ok_or_else(|| Error::input(format!("{}: empty scores file", path.display())))?;
        let value: serde_json::Value = serde_json::from_str(first).map_err(|e| at(n, format!("not JSON: {e}")))?;
        match value.get("kcirc_scores") {
            None => return Err(at(n, "no kcirc scores header (a file from an older kcirc? run `kcirc discover --scores` again)".into())),
            Some(v) if v.as_u64() != Some(SCORES_FORMAT as u64) => {
                return Err(at(n, format!("scores format {v} (this kcirc reads {SCORES_FORMAT})")));
            }
            Some(_) => {}
        }
        let header: Header = serde_json::from_value(value).map_err(|e| at(n, format!("bad header: {e}")))?;
        if header.run.examples.is_empty() {
            return Err(at(n, "bad header: no discovery examples (the facts the scores were computed on)".into()));
        }
        let lines = rows
            .map(|(n, l)| serde_json::from_str::<ScoreLine>(l).map(|s| (n, s)).map_err(|e| at(n, format!("not an edge score: {e}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(ScoresFile { path: path.to_path_buf(), header, lines })
    }

    /// Every edge's score in graph order; fails unless the file belongs to this model (shape, edge count,
    /// every edge scored exactly once under its name, sender and receiver).
    pub fn scores(&self, g: &Graph, cfg: &Config) -> Result<Vec<f64>> {
        let h = &self.header;
        let file = self.path.display();
        h.run.model_shape.check(&format!("{file}: scores file"), &h.run.model, cfg)?;
        if h.n_edges_total != g.edges.len() {
            return Err(Error::input(format!("{file}: scores for {} edges, this model's graph has {}", h.n_edges_total, g.edges.len())));
        }
        let mut scores: Vec<Option<f64>> = vec![None; g.edges.len()];
        for (n, s) in &self.lines {
            let at = |msg: String| Error::input(format!("{file}: line {n}: {msg}"));
            let id = g.edge_id(&s.name).ok_or_else(|| at(format!("edge `{}` is not in this model's graph", s.name)))?;
            let edge = &g.edges[id];
            if g.sender_name(edge.sender) != s.sender || g.receiver_name(edge.receiver) != s.receiver {
                return Err(at(format!("edge `{}` does not run from `{}` to `{}`", s.name, s.sender, s.receiver)));
            }
            if scores[id].replace(s.score).is_some() {
                return Err(at(format!("edge `{}` scored twice", s.name)));
            }
        }
        if let Some(first) = scores.iter().position(Option::is_none) {
            let missing = scores.iter().filter(|s| s.is_none()).count();
            return Err(Error::input(format!(
                "{file}: {missing} of {} edges have no score (first: `{}`)",
                g.edges.len(),
                g.edges[first].name
            )));
        }
        Ok(scores.into_iter().flatten().collect())
    }
}

/// The circuit file an attribution run with `selection` would have written (before its held-out report):
/// the same edges, chosen by [`Graph::select`] over `scores`, and the circuit's metric measured again on the
/// header's discovery examples. `model_name` is recorded as the circuit's model.
pub fn select_circuit(
    header: &Header,
    scores: &[f64],
    model: &Model,
    tok: &Tokenizer,
    model_name: &str,
    selection: Selection,
) -> Result<CircuitFile> {
    let task = header.task(model, tok)?;
    let circuit = selected_circuit(&task, scores, selection)?;
    let run =
        RunInfo { model: model_name.to_string(), selection: Some(selection), kcirc_version: crate::VERSION.into(), ..header.run.clone() };
    CircuitFile::measured(run, &task, &circuit)
}
