//! The pipeline every command runs: a relation's facts → known-fact filter and split → task → discovery →
//! held-out evaluation → circuit file (and edge scores). One function per step a command needs, taking any
//! [`Model`]: `kcirc discover` calls [`discover`] (or `batch::discover_batch` for many relations), `kcirc
//! select` [`select`], `discover --rerun` [`Settings::from_run`] then [`discover`]; an edit-then-rediscover run
//! calls [`discover`] on the edited model. The binary only turns flags into [`Settings`] and prints.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::circuit::{check_writable, to_dot, write_atomic, CircuitFile, ModelShape, RunInfo};
use crate::data::Relation;
use crate::discover::acdc::Acdc;
use crate::discover::eap::Eap;
use crate::discover::hybrid::Hybrid;
use crate::discover::{Discovery, Task};
use crate::eval::{evaluate, EvalOptions, Report};
use crate::graph::{Graph, Selection};
use crate::intervene::Ablation;
use crate::metric::Metric;
use crate::model::Model;
use crate::progress::Progress;
use crate::scores::{self, Header, ScoresFile};
use crate::split::{prepare, MeanOver, Prepared, SplitRule};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// Discovery settings: a `--config` preset (JSON, any subset of the fields) overridden by flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub method: String,
    pub threshold: f64,
    pub signed: bool,
    pub metric: Metric,
    pub ablation: Ablation,
    /// Discovery examples; `None`: half the facts the model knows, at most 32 (`split::AUTO_EXAMPLES`).
    pub examples: Option<usize>,
    pub seed: u64,
    /// Keep only facts the full model ranks below `k` (and say how many were dropped).
    pub filter_known: bool,
    pub k: usize,
    /// Attribution: keep the top-n edges by |score| (`eap`, `eap-ig`).
    pub top_n: Option<usize>,
    /// Attribution: keep edges with |score| ≥ this instead.
    pub score_threshold: Option<f64>,
    /// Attribution: keep this fraction of all edges.
    pub top_fraction: Option<f64>,
    /// Attribution without `top_n`, `score_threshold` or `top_fraction`: the smallest top-n whose faithfulness
    /// on the discovery facts (`1 − m(C)/m(∅)` under `metric`) reaches this.
    pub target_faithfulness: Option<f64>,
    /// EAP-IG interpolation steps.
    pub ig_steps: usize,
    /// Hybrid: EAP-IG candidate edges handed to exact ablation.
    pub candidates: usize,
    /// Also discover from a second split disjoint from the first and report how much the circuits share.
    pub stability: bool,
    /// Demonstrations prepended to every prompt (in-context learning): other facts of the discovery split with
    /// their answers, one per line.
    pub demonstrations: usize,
    /// Mean ablation: which prompts the means are taken over (`split::MeanOver`; default the relation's own
    /// prompts: docs/results.md, session 9, measures the corpus against them).
    pub mean_over: MeanOver,
}

/// The default size rule of attribution: the smallest circuit whose faithfulness on the discovery facts reaches
/// this (chosen by measuring every shipped relation: docs/results.md).
pub const DEFAULT_TARGET_FAITHFULNESS: f64 = 0.85;

/// The discovery methods, as `method` names them.
pub const METHODS: [&str; 4] = ["acdc", "eap", "eap-ig", "hybrid"];

impl Default for Settings {
    fn default() -> Self {
        // EAP-IG with mean ablation over the relation's reference set — the best held-out Hit@10 per minute
        // measured on SmolLM2 (docs/results.md, "Choosing a method") —, sized by faithfulness on the discovery
        // facts (session 4), in KL form: the paper's target-logit metric keeps less of the held-out Hit@10 at
        // every target (session 4, and session 11 on relations written after the defaults).
        Settings {
            method: "eap-ig".into(),
            threshold: 0.05,
            signed: false,
            metric: Metric::Kl,
            ablation: Ablation::Mean,
            examples: None,
            seed: 0,
            filter_known: true,
            k: 10,
            top_n: None,
            score_threshold: None,
            top_fraction: None,
            target_faithfulness: Some(DEFAULT_TARGET_FAITHFULNESS),
            ig_steps: 5,
            candidates: 3000,
            stability: false,
            demonstrations: 0,
            mean_over: MeanOver::default(),
        }
    }
}

impl Settings {
    /// Reads a preset file.
    pub fn from_file(path: &Path) -> Result<Settings> {
        let text = crate::circuit::read_text(path)?;
        serde_json::from_str(&text).map_err(|e| Error::input(format!("{}: {e}", path.display())))
    }

    /// Checks every value (names as in preset files); discovery fails before loading a model.
    pub fn validate(&self) -> Result<()> {
        if !METHODS.contains(&self.method.as_str()) {
            return Err(Error::input(format!("unknown method `{}` (available: {})", self.method, METHODS.join(", "))));
        }
        if !self.threshold.is_finite() || self.threshold < 0.0 {
            return Err(Error::input(format!("threshold must be a finite number ≥ 0, got {}", self.threshold)));
        }
        let at_least_one =
            [("examples", self.examples.unwrap_or(1)), ("k", self.k), ("ig_steps", self.ig_steps), ("candidates", self.candidates)];
        if let Some((name, _)) = at_least_one.iter().find(|(_, v)| *v == 0) {
            return Err(Error::input(format!("{name} must be at least 1")));
        }
        if self.top_n == Some(0) {
            return Err(Error::input("top_n must be at least 1"));
        }
        if self.score_threshold.is_some_and(|x| !x.is_finite() || x < 0.0) {
            return Err(Error::input("score_threshold must be a finite number ≥ 0"));
        }
        if self.top_fraction.is_some_and(|f| !(f > 0.0 && f <= 1.0)) {
            return Err(Error::input("top_fraction must be in (0, 1]"));
        }
        if self.target_faithfulness.is_some_and(|f| !(f > 0.0 && f <= 1.0)) {
            return Err(Error::input("target_faithfulness must be in (0, 1]"));
        }
        Ok(())
    }

    /// The attribution selection: a score threshold, else top-n, else a top fraction, else the faithfulness
    /// target (else 5% of the edges).
    pub fn selection(&self) -> Selection {
        match (self.score_threshold, self.top_n, self.top_fraction, self.target_faithfulness) {
            (Some(x), ..) => Selection::Threshold(x),
            (None, Some(n), ..) => Selection::TopN(n),
            (None, None, Some(f), _) => Selection::Fraction(f),
            (None, None, None, Some(t)) => Selection::TargetFaithfulness(t),
            (None, None, None, None) => Selection::Fraction(0.05),
        }
    }

    /// The discovery method these settings describe.
    pub fn method(&self) -> Result<Box<dyn Discovery>> {
        let selection = self.selection();
        Ok(match self.method.as_str() {
            "acdc" => Box::new(Acdc::new(self.threshold, self.signed)?),
            "eap" => Box::new(Eap { ig_steps: None, selection }),
            "eap-ig" => Box::new(Eap { ig_steps: Some(self.ig_steps), selection }),
            "hybrid" => {
                Box::new(Hybrid { candidates: self.candidates, ig_steps: self.ig_steps, acdc: Acdc::new(self.threshold, self.signed)? })
            }
            other => return Err(Error::input(format!("unknown method `{other}` (available: {})", METHODS.join(", ")))),
        })
    }

    /// How the relation's facts are split.
    pub fn split_rule(&self) -> SplitRule {
        SplitRule {
            examples: self.examples,
            seed: self.seed,
            filter_known: self.filter_known,
            k: self.k,
            ablation: self.ablation,
            demonstrations: self.demonstrations,
            mean_over: self.mean_over,
        }
    }

    /// The run record of these settings: each method's own parameters only (`threshold`/`signed` for exact
    /// ablation, `ig_steps` for EAP-IG, the selection for attribution, `candidates` for hybrid), the discovery
    /// facts `examples` and mean ablation's further reference facts `reference`.
    pub fn run_info(
        &self,
        model_name: &str,
        model: &Model,
        relation: &Relation,
        examples: Vec<crate::data::Triple>,
        reference: Vec<crate::data::Triple>,
    ) -> RunInfo {
        let m = self.method.as_str();
        let exact = matches!(m, "acdc" | "hybrid");
        RunInfo {
            model: model_name.to_string(),
            model_shape: ModelShape::from(&model.cfg),
            relation: relation.name.clone(),
            triples: relation.source.clone(),
            method: self.method.clone(),
            ablation: self.ablation,
            metric: self.metric,
            threshold: exact.then_some(self.threshold),
            signed: exact.then_some(self.signed),
            ig_steps: matches!(m, "eap-ig" | "hybrid").then_some(self.ig_steps),
            selection: matches!(m, "eap" | "eap-ig").then(|| self.selection()),
            candidates: (m == "hybrid").then_some(self.candidates),
            seed: self.seed,
            k: self.k,
            filter_known: self.filter_known,
            n_examples: examples.len(),
            kcirc_version: crate::VERSION.into(),
            stability: self.stability.then_some(true),
            demonstrations: (self.demonstrations > 0).then_some(self.demonstrations),
            edits: model.edits.clone(),
            mean_over: (self.ablation == Ablation::Mean).then_some(self.mean_over),
            n_reference: (self.ablation == Ablation::Mean)
                .then(|| self.mean_over.sets(&examples, &reference).iter().map(|s| s.len()).sum()),
            examples,
            reference,
        }
    }

    /// The settings that made a circuit file (what `discover --rerun` runs again).
    pub fn from_run(run: &RunInfo) -> Result<Settings> {
        let d = Settings::default();
        let (top_n, score_threshold, top_fraction, target_faithfulness) = match run.selection {
            Some(Selection::TopN(n)) => (Some(n), None, None, None),
            Some(Selection::Threshold(x)) => (None, Some(x), None, None),
            Some(Selection::Fraction(f)) => (None, None, Some(f), None),
            Some(Selection::TargetFaithfulness(t)) => (None, None, None, Some(t)),
            None => (None, None, d.top_fraction, d.target_faithfulness),
        };
        let n_examples = if run.n_examples > 0 { run.n_examples } else { run.examples.len() };
        let s = Settings {
            method: run.method.clone(),
            threshold: run.threshold.unwrap_or(d.threshold),
            signed: run.signed.unwrap_or(d.signed),
            metric: run.metric,
            ablation: run.ablation,
            examples: Some(n_examples),
            seed: run.seed,
            filter_known: run.filter_known,
            k: run.k,
            top_n,
            score_threshold,
            top_fraction,
            target_faithfulness,
            ig_steps: run.ig_steps.unwrap_or(d.ig_steps),
            candidates: run.candidates.unwrap_or(d.candidates),
            stability: run.stability.unwrap_or(false),
            demonstrations: run.demonstrations.unwrap_or(0),
            mean_over: run.mean_over(),
        };
        s.validate()?;
        Ok(s)
    }
}

/// One relation's discovery: the circuit file (with its held-out report when one ran), the edge scores when the
/// method computed them, and the split it was discovered on.
pub struct Discovered {
    pub file: CircuitFile,
    /// The model's computation graph (the scores' edge order).
    pub graph: Graph,
    /// The scores file's header and every edge's score (graph order).
    pub scores: Option<(Header, Vec<f64>)>,
    pub prepared: Prepared,
    /// The held-out report (also in `file.eval`).
    pub report: Option<Report>,
}

/// Discovers the circuit of `relation` on `model` with `settings` (recorded under the name `model_name`) and,
/// with `eval`, scores it on the held-out facts. Reports the split and the table through `progress`.
pub fn discover(
    model: &Model,
    tok: &Tokenizer,
    model_name: &str,
    relation: &Relation,
    settings: &Settings,
    eval: Option<&EvalOptions>,
    progress: &dyn Progress,
) -> Result<Discovered> {
    settings.validate()?;
    let method = settings.method()?;
    let prepared = prepare(model, tok, relation, &settings.split_rule())?;
    progress.info(&prepared.summary(&relation.name));
    if prepared.dropped_no_partner > 0 {
        progress.warn(&format!(
            "{}: {} without a same-length partner for resample ablation skipped",
            relation.name, prepared.dropped_no_partner
        ));
    }
    let task = task_of(model, &prepared, settings)?;
    let (circuit, scores) = method.discover_scored(&task, progress)?;
    let triples = |es: &[crate::data::Example]| es.iter().map(|e| e.triple.clone()).collect();
    let run = settings.run_info(model_name, model, relation, triples(&prepared.discovery), triples(&prepared.reference));
    let mut file = CircuitFile::measured(run.clone(), &task, &circuit)?;
    if let Some(c) = &file.chosen_size {
        progress.info(&size_line(c, task.n_examples()));
    }
    let scores = scores.map(|s| {
        let corrupted = prepared.corrupted.as_ref().map(|c| c.iter().map(|e| e.triple.clone()).collect());
        (Header::new(run, &s, corrupted), s.scores)
    });
    if settings.stability {
        let st = stability(model, tok, relation, settings, &prepared, &task.graph, &circuit, method.as_ref(), progress)?;
        progress.info(&format!(
            "stability: a circuit from {} other facts shares edges with Jaccard {:.3}, nodes {:.3}",
            st.n_examples, st.edge_jaccard, st.node_jaccard
        ));
        file.stability = Some(st);
    }
    let report = match eval {
        Some(opts) if !prepared.test.is_empty() => Some(attach_report(&mut file, model, tok, relation, opts, progress)?),
        _ => None,
    };
    Ok(Discovered { file, graph: task.graph, scores, prepared, report })
}

/// The discovery task of a split: its discovery facts, mean ablation's means over them and the split's
/// reference facts (what `discover` and `curve` measure circuits on; public for experiments on the library,
/// e.g. `examples/cross_fit_size.rs`).
pub fn task_of<'m>(model: &'m Model, prepared: &Prepared, settings: &Settings) -> Result<Task<'m>> {
    Task::with_reference(
        model,
        prepared.discovery.clone(),
        &prepared.reference,
        settings.mean_over,
        settings.ablation,
        prepared.corrupted_prompts(),
        settings.metric,
    )
}

/// How much a circuit depends on its discovery facts: the same method on as many other facts of the relation
/// (the first of the held-out split, so the two discovery sets are disjoint; mean ablation's further reference
/// facts are the first split's), compared edge by edge and node by node.
#[allow(clippy::too_many_arguments)]
fn stability(
    model: &Model,
    tok: &Tokenizer,
    relation: &Relation,
    settings: &Settings,
    prepared: &Prepared,
    graph: &Graph,
    circuit: &crate::discover::Circuit,
    method: &dyn Discovery,
    progress: &dyn Progress,
) -> Result<crate::circuit::Stability> {
    let n = prepared.discovery.len().min(prepared.test.len());
    if n == 0 {
        return Err(Error::input(format!("relation `{}`: no facts left for a second, disjoint discovery split", relation.name)));
    }
    let other: Vec<crate::data::Example> = prepared.test[..n].to_vec();
    let corrupted = match settings.ablation {
        Ablation::Resample => {
            let all = relation.examples(tok)?;
            let p = crate::split::partners(&other, &all, settings.seed);
            Some(
                p.iter()
                    .map(|p| p.map(|e| e.tokens.clone()))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| Error::bug("held-out facts have partners"))?,
            )
        }
        _ => None,
    };
    progress.message("stability: a second split");
    let task = Task::with_reference(model, other, &prepared.reference, settings.mean_over, settings.ablation, corrupted, settings.metric)?;
    let second = method.discover(&task, progress)?;
    let jaccard = |a: &[String], b: &[String]| -> f64 {
        let (a, b): (std::collections::BTreeSet<&String>, std::collections::BTreeSet<&String>) = (a.iter().collect(), b.iter().collect());
        let union = a.union(&b).count();
        if union == 0 {
            1.0
        } else {
            a.intersection(&b).count() as f64 / union as f64
        }
    };
    let names = |c: &crate::discover::Circuit| -> Vec<String> { c.kept().map(|e| graph.edges[e].name.clone()).collect() };
    let (ea, eb) = (names(circuit), names(&second));
    let (na, nb) = (crate::circuit::circuit_nodes(graph, circuit), crate::circuit::circuit_nodes(graph, &second));
    Ok(crate::circuit::Stability {
        n_examples: n,
        n_edges_other: second.n_kept(),
        edge_jaccard: jaccard(&ea, &eb),
        node_jaccard: jaccard(&na, &nb),
    })
}

/// Scores `file` on the held-out facts of `relation` and puts the report into the file; the table goes to
/// `progress` as information, its warnings as warnings.
pub fn attach_report(
    file: &mut CircuitFile,
    model: &Model,
    tok: &Tokenizer,
    relation: &Relation,
    opts: &EvalOptions,
    progress: &dyn Progress,
) -> Result<Report> {
    let report = evaluate(model, tok, file, relation, opts)?;
    progress.info(report.table().trim_end());
    for w in report.warnings() {
        progress.warn(&w);
    }
    file.eval = Some(serde_json::to_value(&report).map_err(|e| Error::bug(e.to_string()))?);
    Ok(report)
}

/// Why a circuit has its size, in one line.
pub fn size_line(c: &crate::discover::ChosenSize, n_examples: usize) -> String {
    format!(
        "size: the smallest top-n whose faithfulness on the {n_examples} discovery facts reaches {}: top {} edges, faithfulness {:.3} ({} sizes measured)",
        c.target,
        c.top_n,
        c.faithfulness,
        c.searched.len()
    )
}

/// What a circuit kept, in one line (after a discovery or a selection).
pub fn kept_line(file: &CircuitFile) -> String {
    format!(
        "kept {} of {} edges ({:.2}%), {} nodes, {} {:.4} (full model {:.4}{})",
        file.n_edges,
        file.n_edges_total,
        100.0 * file.n_edges as f64 / file.n_edges_total.max(1) as f64,
        file.nodes.len(),
        file.run.metric,
        file.metric_circuit,
        file.metric_full,
        file.metric_empty.map(|e| format!(", empty circuit {e:.4}")).unwrap_or_default()
    )
}

/// Fails unless `relation` is the one a scores file was computed for: its held-out facts would be measured and
/// labelled as if they were that relation's.
fn same_relation(relation: &Relation, scored: &str) -> Result<()> {
    if relation.name != scored {
        let file = relation.source.as_ref().map_or(String::new(), |s| format!("{}: ", s.path));
        return Err(Error::input(format!("{file}relation `{}`, but the scores are for relation `{scored}`", relation.name)));
    }
    Ok(())
}

/// The circuit an attribution run with `selection` keeps, from a scores file (`kcirc select`), evaluated on
/// the held-out facts of `held_out`'s relation (with that many random circuits) when one is given.
pub fn select(
    model: &Model,
    tok: &Tokenizer,
    model_name: &str,
    scores_file: &ScoresFile,
    selection: Selection,
    held_out: Option<(&Relation, usize)>,
    progress: &dyn Progress,
) -> Result<(CircuitFile, Option<Report>)> {
    let scores = scores_file.scores(&Graph::new(&model.cfg), &model.cfg)?;
    let h = &scores_file.header;
    if let Some((rel, _)) = held_out {
        same_relation(rel, &h.run.relation)?;
    }
    let mut file = scores::select_circuit(h, &scores, model, tok, model_name, selection)?;
    let report = match held_out {
        Some((rel, random)) => {
            let opts = EvalOptions {
                k: h.run.k,
                random,
                seed: h.run.seed,
                filter_known: h.run.filter_known,
                demonstrations: h.run.demonstrations.unwrap_or(0),
            };
            Some(attach_report(&mut file, model, tok, rel, &opts, progress)?)
        }
        None => None,
    };
    Ok((file, report))
}

/// Where one relation's results go: the circuit file, its DOT and SVG pictures and its edge scores (each
/// optional).
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    pub circuit: Option<PathBuf>,
    pub dot: Option<PathBuf>,
    /// The circuit drawn by kcirc (`crate::report::circuit_svg`, default options).
    pub svg: Option<PathBuf>,
    pub scores: Option<PathBuf>,
}

impl Outputs {
    /// Fails unless every file asked for can be written ([`check_writable`]): callers check before the run, and
    /// [`write()`] before its first file, so a bad path leaves no other output behind.
    pub fn check(&self) -> Result<()> {
        [&self.circuit, &self.dot, &self.svg, &self.scores].into_iter().flatten().try_for_each(|p| check_writable(p))
    }
}

/// Writes what `outputs` asks for, each file atomically (written beside it, then renamed: a killed run leaves
/// no half file under the final name). The circuit file comes last, so a relation whose circuit file is there
/// has its DOT and scores files too (what `discover --resume` relies on). Scores asked of a method without
/// them is an error raised before anything is written.
pub fn write(d: &Discovered, outputs: &Outputs) -> Result<()> {
    if outputs.scores.is_some() && d.scores.is_none() {
        return Err(Error::input(format!("scores: method {} computes no edge scores", d.file.run.method)));
    }
    outputs.check()?;
    if let (Some(p), Some((header, scores))) = (&outputs.scores, &d.scores) {
        scores::write(p, header, &d.graph, scores)?;
    }
    if let Some(p) = &outputs.dot {
        write_atomic(p, &to_dot(&d.file))?;
    }
    if let Some(p) = &outputs.svg {
        write_atomic(p, &crate::report::circuit_svg(&d.file, None, &crate::report::Options::default()))?;
    }
    if let Some(p) = &outputs.circuit {
        write_atomic(p, &(d.file.to_json()? + "\n"))?;
    }
    Ok(())
}

/// The faithfulness curve of one relation (`kcirc curve`): the edges ranked by `settings`' attribution (or by
/// the scores of `scores`, whose header then fixes the discovery facts and ablation), cut at `sizes`, measured
/// on the discovery facts and, with `eval`, on at most that many held-out facts.
#[allow(clippy::too_many_arguments)]
pub fn curve(
    model: &Model,
    tok: &Tokenizer,
    model_name: &str,
    relation: &Relation,
    settings: &Settings,
    scores: Option<&ScoresFile>,
    sizes: &[f64],
    eval: Option<(&EvalOptions, usize)>,
    progress: &dyn Progress,
) -> Result<crate::curve::Curve> {
    crate::curve::check_sizes(sizes)?;
    settings.validate()?;
    let (task, edge_scores, (reference, mean_over), method, seed, k, filter_known, demonstrations) = match scores {
        Some(file) => {
            let h = &file.header;
            same_relation(relation, &h.run.relation)?;
            let task = h.task(model, tok)?;
            let s = file.scores(&task.graph, &model.cfg)?;
            let reference = (h.run.reference_examples(tok)?, h.run.mean_over());
            (task, s, reference, h.run.method.clone(), h.run.seed, h.run.k, h.run.filter_known, h.run.demonstrations.unwrap_or(0))
        }
        None => {
            let ig_steps = match settings.method.as_str() {
                "eap" => None,
                "eap-ig" => Some(settings.ig_steps),
                other => return Err(Error::input(format!("a curve ranks edges by attribution: method eap or eap-ig, not {other}"))),
            };
            let prepared = prepare(model, tok, relation, &settings.split_rule())?;
            progress.info(&prepared.summary(&relation.name));
            let task = task_of(model, &prepared, settings)?;
            progress.message("attribution");
            let s = crate::discover::eap::edge_scores(&task, ig_steps, progress)?;
            (
                task,
                s,
                (prepared.reference, settings.mean_over),
                settings.method.clone(),
                settings.seed,
                settings.k,
                settings.filter_known,
                settings.demonstrations,
            )
        }
    };
    let held = match eval {
        Some((opts, max_held_out)) => {
            let opts = EvalOptions { k, seed, filter_known, demonstrations, ..opts.clone() };
            let mut h = crate::eval::HeldOut::new(
                model,
                tok,
                &task.examples,
                &reference,
                relation,
                relation.examples(tok)?,
                task.ablation,
                mean_over,
                &opts,
                seed,
            )?;
            h.truncate(max_held_out);
            Some(h)
        }
        None => None,
    };
    let random = eval.map_or(0, |(e, _)| e.random);
    let (points, areas) = crate::curve::measure(&task, &edge_scores, sizes, k, held.as_ref(), random.max(1), seed, progress)?;
    Ok(crate::curve::Curve {
        format: crate::curve::CURVE_FORMAT,
        model: model_name.to_string(),
        relation: relation.name.clone(),
        method,
        ablation: task.ablation,
        seed,
        k,
        n_examples: task.n_examples(),
        n_reference: (task.ablation == Ablation::Mean).then_some(task.n_reference),
        n_held_out: held.as_ref().map_or(0, |h| h.test.len()),
        n_edges_total: task.graph.edges.len(),
        random_runs: random.max(1),
        edits: model.edits.clone(),
        points,
        areas,
    })
}

/// A circuit before an edit and the same relation's circuit after it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CircuitChange {
    pub relation: String,
    pub edges_before: usize,
    pub edges_after: usize,
    pub diff: crate::analysis::diff::Pair,
}

/// Rediscovers the circuit of `before` (a circuit file of the unedited model) on `edited` with the same
/// discovery facts (with the answers the file records) and settings, and compares the two. A resample-ablated
/// circuit needs its relation (`relation`, the file it was discovered from: its digest is checked) for the
/// discovery facts' corruption partners, which are chosen again exactly as discovery chose them.
pub fn rediscover(
    edited: &Model,
    tok: &Tokenizer,
    before: &CircuitFile,
    relation: Option<&Relation>,
    progress: &dyn Progress,
) -> Result<(CircuitFile, CircuitChange)> {
    let settings = Settings::from_run(&before.run)?;
    let examples = before.run.discovery_examples(tok)?;
    let corrupted = match settings.ablation {
        Ablation::Resample => {
            let name = &before.run.relation;
            let rel = relation.ok_or_else(|| {
                Error::input(format!(
                    "the circuit is resample-ablated: rediscovering it needs the facts of `{name}` for the corruption partners (give its file with --triples)"
                ))
            })?;
            if let (Some(was), Some(now)) = (&before.run.triples, &rel.source) {
                if was.digest != now.digest {
                    return Err(Error::input(format!(
                        "{}: the relation file has changed since the circuit was discovered ({} then, {} now)",
                        now.path, was.digest, now.digest
                    )));
                }
            }
            let all = rel.examples(tok)?;
            let partners: Option<Vec<Vec<u32>>> =
                crate::split::partners(&examples, &all, settings.seed).iter().map(|p| p.map(|e| e.tokens.clone())).collect();
            Some(
                partners
                    .ok_or_else(|| Error::input(format!("`{name}`: a discovery fact has no corruption partner in the relation file")))?,
            )
        }
        _ => None,
    };
    let reference = before.run.reference_examples(tok)?;
    let task = Task::with_reference(edited, examples, &reference, settings.mean_over, settings.ablation, corrupted, settings.metric)?;
    progress.message("rediscovering the circuit on the edited model");
    let (circuit, _) = settings.method()?.discover_scored(&task, progress)?;
    let after = CircuitFile::measured(before.run.clone(), &task, &circuit)?;
    let diff = crate::analysis::diff::pair(("before", before), ("after", &after));
    let change = CircuitChange { relation: before.run.relation.clone(), edges_before: before.n_edges, edges_after: after.n_edges, diff };
    Ok((after, change))
}
