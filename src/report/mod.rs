//! `kcirc report`: one self-contained HTML page of a circuit and whatever was measured about it (held-out
//! report, faithfulness curve, logit lens, head roles, an edit before and after), and the circuit alone as a
//! standalone SVG for a paper. Offline by construction: inline CSS and SVG, a few lines of inline script, no
//! fonts, images or URLs (the SVG namespace is a name, never fetched). The layout is kcirc's own
//! ([`layout`]), so the same files give the same bytes.
use std::collections::BTreeMap;
use std::path::Path;

use serde::de::DeserializeOwned;

use crate::analysis::heads::{self, HeadReport};
use crate::analysis::lens;
use crate::circuit::{read_text, CircuitFile};
use crate::curve::Curve;
use crate::edit::measure;
use crate::eval;
use crate::{Error, Result};

pub mod html;
pub mod layout;
pub mod svg;

/// Edges shown at first (the strongest by |effect|): a circuit stays readable at thousands of edges.
pub const DEFAULT_EDGES: usize = 500;
/// Edges drawn at all in the page (the rest behind the control): bounds the file at a few MB.
pub const DEFAULT_MAX_EDGES: usize = 5000;

/// How much of the circuit to draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Strongest edges shown at first (all the standalone SVG draws).
    pub edges: usize,
    /// Strongest edges drawn in the page; those past `edges` are hidden until the control shows them.
    pub max_edges: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { edges: DEFAULT_EDGES, max_edges: DEFAULT_MAX_EDGES }
    }
}

/// What the page shows: the circuit, and each section whose data was given.
#[derive(Debug, Clone)]
pub struct Sections {
    pub circuit: CircuitFile,
    /// The held-out report: the circuit file's own, or one measured for the page.
    pub eval: Option<eval::Report>,
    pub curve: Option<Curve>,
    pub lens: Option<lens::Report>,
    pub heads: Option<heads::Report>,
    pub edit: Option<measure::Report>,
}

/// A JSON file of type `T`; `what` names the kind in the error (`a curve`, `a lens report`), which names the file.
pub fn read_json<T: DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    parse_json(&read_text(path)?, &path.display().to_string(), what)
}

/// [`read_json`] of a text read from `label`.
pub fn parse_json<T: DeserializeOwned>(text: &str, label: &str, what: &str) -> Result<T> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| Error::input(format!("{label}: not JSON: {e}")))?;
    serde_json::from_value(value).map_err(|e| Error::input(format!("{label}: not {what}: {e}")))
}

/// The last part of a model name (`models/x.gguf` → `x.gguf`, `org/gpt2` → `gpt2`): files made by commands
/// that were given the same model by another path still match.
fn model_key(model: &str) -> &str {
    let m = model.trim_end_matches(['/', '\\']);
    m.rsplit(['/', '\\']).next().unwrap_or(m)
}

impl Sections {
    /// The circuit alone, with the held-out report its file holds (read from `label`).
    pub fn new(circuit: CircuitFile, label: &str) -> Result<Sections> {
        let eval = match &circuit.eval {
            Some(v) => Some(
                serde_json::from_value(v.clone()).map_err(|e| Error::input(format!("{label}: `eval` is not a held-out report: {e}")))?,
            ),
            None => None,
        };
        Ok(Sections { circuit, eval, curve: None, lens: None, heads: None, edit: None })
    }

    /// Fails unless a file made for `model` (and `relation`, when it has one) belongs to this circuit.
    fn check(&self, label: &str, what: &str, model: &str, relation: Option<&str>) -> Result<()> {
        let run = &self.circuit.run;
        if model_key(model) != model_key(&run.model) {
            return Err(Error::input(format!("{label}: this {what} is for model `{model}`, the circuit for `{}`", run.model)));
        }
        if let Some(r) = relation.filter(|r| *r != run.relation) {
            return Err(Error::input(format!("{label}: this {what} is for relation `{r}`, the circuit for `{}`", run.relation)));
        }
        Ok(())
    }

    /// Adds a curve (`kcirc curve`) read from `label`: same model and relation.
    pub fn with_curve(mut self, curve: Curve, label: &str) -> Result<Sections> {
        self.check(label, "curve", &curve.model, Some(&curve.relation))?;
        self.curve = Some(curve);
        Ok(self)
    }

    /// Adds a lens report (`kcirc lens`) read from `label`: same model.
    pub fn with_lens(mut self, lens: lens::Report, label: &str) -> Result<Sections> {
        self.check(label, "lens report", &lens.model, None)?;
        self.lens = Some(lens);
        Ok(self)
    }

    /// Adds a head report (`kcirc heads`) read from `label`: same model, heads that exist in it.
    pub fn with_heads(mut self, report: heads::Report, label: &str) -> Result<Sections> {
        self.check(label, "head report", &report.model, None)?;
        let shape = &self.circuit.run.model_shape;
        if let Some(h) = report.heads.iter().find(|h| h.layer >= shape.n_layers || h.head >= shape.n_heads) {
            return Err(Error::input(format!(
                "{label}: head `{}` is not in the circuit's model ({} layers × {} heads)",
                h.name, shape.n_layers, shape.n_heads
            )));
        }
        self.heads = Some(report);
        Ok(self)
    }

    /// Adds an edit report (`kcirc edit`) read from `label`: same model.
    pub fn with_edit(mut self, report: measure::Report, label: &str) -> Result<Sections> {
        self.check(label, "edit report", &report.model, None)?;
        self.edit = Some(report);
        Ok(self)
    }

    /// The standalone SVG of this circuit, head colours by role when a head report was given.
    pub fn circuit_svg(&self, opts: &Options) -> String {
        circuit_svg(&self.circuit, self.heads.as_ref(), opts)
    }

    /// The report page.
    pub fn html(&self, opts: &Options) -> String {
        html::page(self, opts)
    }
}

/// The caption above the circuit picture.
fn caption(file: &CircuitFile, lay: &layout::Layout, shown: usize) -> String {
    let drawn = lay.edges.len();
    let mut s = format!(
        "{} · {} · {} edges ({} of {}), {} nodes",
        file.run.relation,
        model_key(&file.run.model),
        file.n_edges,
        html::percent(file.n_edges as f64 / file.n_edges_total.max(1) as f64),
        file.n_edges_total,
        lay.nodes.len()
    );
    if shown < drawn || drawn < file.edges.len() {
        s += &format!(" · strongest {} by |effect| shown", shown.min(drawn));
    }
    s
}

/// The standalone SVG of a circuit: its `opts.edges` strongest edges, head colours by role when a head report
/// is given.
pub fn circuit_svg(file: &CircuitFile, heads: Option<&heads::Report>, opts: &Options) -> String {
    let lay = layout::layout(file, opts.edges);
    let rows: Option<BTreeMap<String, &HeadReport>> = heads.map(head_rows);
    let style = svg::CircuitStyle { heads: rows.as_ref(), shown: usize::MAX, caption: caption(file, &lay, opts.edges) };
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{}", svg::circuit(file, &lay, &style))
}

/// Head rows by name, for node colours and hover text.
fn head_rows(r: &heads::Report) -> BTreeMap<String, &HeadReport> {
    r.heads.iter().map(|h| (h.name.clone(), h)).collect()
}
