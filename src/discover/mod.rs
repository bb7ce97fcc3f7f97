//! Circuit discovery. A [`Task`] fixes what is measured (model, discovery examples, ablation, metric); each
//! method (`acdc`, `eap`/`eap-ig`, `hybrid`) is one module behind the [`Discovery`] trait and returns a
//! [`Circuit`].
pub mod acdc;
pub mod cone;
pub mod eap;
pub mod hybrid;

use candle_core::Tensor;

use crate::data::Example;
use crate::graph::Graph;
use crate::intervene::{broadcast_means, reference_means, Ablation, EdgeInputs, NaiveInputs, RecordHeads};
use crate::metric::{FullReference, Metric};
use crate::model::{Activations, Batch, Logits, Model};
use crate::progress::Progress;
use crate::rank::Outcome;
use crate::split::MeanOver;
use crate::{Error, Result};

/// A discovery problem: everything a method needs to score a circuit.
pub struct Task<'a> {
    pub model: &'a Model,
    pub graph: Graph,
    pub examples: Vec<Example>,
    /// The discovery prompts as one left-padded batch (`n` rows).
    pub batch: Batch,
    pub ablation: Ablation,
    /// Ablated sender values (`n` rows), `None` for zero ablation.
    pub ablated: Option<Activations>,
    /// Prompts mean ablation's means were taken over (the discovery prompts and the reference facts); 0 for
    /// zero and resample ablation.
    pub n_reference: usize,
    pub metric: Metric,
    pub full: FullReference,
}

/// The prompts mean ablation averages over: of the discovery `examples` and the `reference` facts, those
/// [`MeanOver::sets`] names (discovery and evaluation both ask here).
pub fn mean_prompts(examples: &[Example], reference: &[Example], mean_over: MeanOver) -> Vec<Vec<u32>> {
    mean_over.sets(examples, reference).into_iter().flatten().map(|e| e.tokens.clone()).collect()
}

impl<'a> Task<'a> {
    /// Sets up a task whose mean ablation takes its means over the discovery prompts only. `corrupted`
    /// (resample ablation only) holds, per example, a prompt of the same token length whose activations replace
    /// removed edges.
    pub fn new(
        model: &'a Model,
        examples: Vec<Example>,
        ablation: Ablation,
        corrupted: Option<Vec<Vec<u32>>>,
        metric: Metric,
    ) -> Result<Self> {
        Task::with_reference(model, examples, &[], MeanOver::Discovery, ablation, corrupted, metric)
    }

    /// [`Task::new`] with mean ablation's means taken as `mean_over` says: over the discovery prompts and
    /// `reference` (other facts of the relation outside its held-out split: a larger set than the discovery
    /// prompts estimates each sender's mean better) for [`MeanOver::Relation`], over `reference` alone (the
    /// corpus) for [`MeanOver::Corpus`]. `reference` is ignored by zero and resample ablation.
    pub fn with_reference(
        model: &'a Model,
        examples: Vec<Example>,
        reference: &[Example],
        mean_over: MeanOver,
        ablation: Ablation,
        corrupted: Option<Vec<Vec<u32>>>,
        metric: Metric,
    ) -> Result<Self> {
        if examples.is_empty() {
            return Err(Error::input("no discovery examples"));
        }
        let prompts: Vec<Vec<u32>> = examples.iter().map(|e| e.tokens.clone()).collect();
        let batch = model.batch(&prompts)?;
        let hidden = model.run(&batch, &crate::model::Clean, Logits::Hidden)?.1;
        let targets: Vec<u32> = examples.iter().map(|e| e.target).collect();
        let full = FullReference::new(model, &hidden, &targets)?;
        let mean_prompts = mean_prompts(&examples, reference, mean_over);
        let ablated = match ablation {
            Ablation::Zero => None,
            Ablation::Mean => Some(broadcast_means(&reference_means(model, &mean_prompts)?, prompts.len(), batch.seq_len)?),
            Ablation::Resample => {
                let c = corrupted.ok_or_else(|| Error::bug("resample ablation needs corrupted prompts"))?;
                if c.len() != prompts.len() || c.iter().zip(&prompts).any(|(a, b)| a.len() != b.len()) {
                    return Err(Error::bug("every corrupted prompt must have its clean prompt's token length"));
                }
                let cb = model.batch(&c)?;
                Some(model.run(&cb, &RecordHeads, Logits::Hidden)?.0)
            }
        };
        let n_reference = match ablation {
            Ablation::Mean => mean_prompts.len(),
            _ => 0,
        };
        Ok(Task { model, graph: Graph::new(&model.cfg), examples, batch, ablation, ablated, n_reference, metric, full })
    }

    pub fn n_examples(&self) -> usize {
        self.examples.len()
    }

    /// The same task on examples `start..start + len` only: every per-example tensor (prompts, ablated sender
    /// values, full-model reference) narrowed to those rows, the padded length kept. Rows never mix in a forward
    /// pass, so each row computes exactly what it did in the whole batch; a mean ablation keeps the mean over
    /// the whole reference set. Attribution splits large tasks with it. The ablated values keep the sender outputs only.
    pub fn rows(&self, start: usize, len: usize) -> Result<Task<'a>> {
        let n = self.n_examples();
        if len == 0 || start + len > n {
            return Err(Error::bug(format!("rows {start}..{} of a task with {n} examples", start + len)));
        }
        let b = &self.batch;
        let t = b.seq_len;
        let batch = Batch {
            tokens: b.tokens.narrow(0, start, len)?,
            positions: b.positions.narrow(0, start * t, len * t)?,
            mask: b.mask.narrow(0, start, len)?,
            rotary: match &b.rotary {
                Some((c, s)) => Some((c.narrow(0, start, len)?, s.narrow(0, start, len)?)),
                None => None,
            },
            lengths: b.lengths[start..start + len].to_vec(),
            seq_len: t,
        };
        let ablated = match &self.ablated {
            None => None,
            Some(a) => Some(Activations::senders(
                a.embed.narrow(0, start, len)?,
                (0..a.n_head_layers()).map(|l| Ok(a.heads(l)?.narrow(1, start, len)?)).collect::<Result<_>>()?,
                a.mlps.iter().map(|m| m.narrow(0, start, len)).collect::<candle_core::Result<_>>()?,
            )),
        };
        let f = &self.full;
        let full = FullReference {
            targets: f.targets[start..start + len].to_vec(),
            target_logit: f.target_logit[start..start + len].to_vec(),
            target_logprob: f.target_logprob[start..start + len].to_vec(),
            logprobs: f.logprobs.narrow(0, start, len)?,
        };
        Ok(Task {
            model: self.model,
            graph: self.graph.clone(),
            examples: self.examples[start..start + len].to_vec(),
            batch,
            ablation: self.ablation,
            ablated,
            n_reference: self.n_reference,
            metric: self.metric,
            full,
        })
    }

    /// The normalised last-position residual `[n, D]` of the circuit whose removed edges are flagged in
    /// `removed`, from one full intervened forward pass.
    fn hidden_of(&self, removed: &[bool]) -> Result<Tensor> {
        let hook = EdgeInputs::new(&self.graph, vec![removed], self.ablated.as_ref(), self.n_examples());
        Ok(self.model.run(&self.batch, &hook, Logits::Hidden)?.1)
    }

    /// Metric of a circuit (edges flagged in `removed`), from one full intervened forward pass.
    pub fn score(&self, removed: &[bool]) -> Result<f64> {
        Ok(self.full.score(self.metric, self.model, &self.hidden_of(removed)?)?[0])
    }

    /// Each circuit's value of each of `metrics`, from one intervened forward pass per circuit (circuits spread
    /// over kcirc's threads; the result does not depend on their number).
    pub fn scores_of(&self, circuits: &[Vec<bool>], metrics: &[Metric]) -> Result<Vec<Vec<f64>>> {
        let out = crate::parallel::map(circuits, |removed| -> Result<Vec<f64>> {
            let hidden = self.hidden_of(removed)?;
            metrics.iter().map(|&m| Ok(self.full.score(m, self.model, &hidden)?[0])).collect()
        });
        out.into_iter().collect()
    }

    /// [`scores_of`](Self::scores_of) with each circuit's outcome (rank of the target) on every discovery
    /// example beside, from the same forward pass: Hit@k on the facts the circuit was found on.
    pub fn scores_and_outcomes(&self, circuits: &[Vec<bool>], metrics: &[Metric]) -> Result<Vec<(Vec<f64>, Vec<Outcome>)>> {
        let out = crate::parallel::map(circuits, |removed| -> Result<(Vec<f64>, Vec<Outcome>)> {
            let hidden = self.hidden_of(removed)?;
            let ms = metrics.iter().map(|&m| Ok(self.full.score(m, self.model, &hidden)?[0])).collect::<Result<Vec<f64>>>()?;
            Ok((ms, crate::rank::outcomes(&self.model.logits_of_hidden(&hidden)?, &self.full.targets)?))
        });
        out.into_iter().collect()
    }

    /// The same metric through the naive reference intervention (every receiver input rebuilt from scratch).
    pub fn score_naive(&self, removed: &[bool]) -> Result<f64> {
        let hook = NaiveInputs { model: self.model, graph: &self.graph, removed, ablated: self.ablated.as_ref() };
        let hidden = self.model.run(&self.batch, &hook, Logits::Hidden)?.1;
        Ok(self.full.score(self.metric, self.model, &hidden)?[0])
    }
}

/// A discovered circuit: which edges are removed, and the effect measured for the edges that were tested.
#[derive(Debug, Clone, PartialEq)]
pub struct Circuit {
    pub removed: Vec<bool>,
    /// Per edge: Δ metric when its removal was tested (ACDC), or its attribution score.
    pub effect: Vec<Option<f64>>,
    /// Metric of the final circuit, as the method measured it.
    pub metric: f64,
    /// How the size was chosen, when a faithfulness target chose it.
    pub chosen: Option<ChosenSize>,
}

/// The size a faithfulness target chose: the smallest top-n whose faithfulness on the discovery facts,
/// `1 − m(C) / m(∅)` under the run's metric, reaches the target.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChosenSize {
    pub target: f64,
    /// Edges selected by |score| before unconnected ones were dropped.
    pub top_n: usize,
    /// Faithfulness of the chosen circuit on the discovery facts.
    pub faithfulness: f64,
    /// Sizes measured on the way, as `[top_n, faithfulness]`.
    pub searched: Vec<(usize, f64)>,
}

impl Circuit {
    /// The full model: no edge removed.
    pub fn full(graph: &Graph) -> Circuit {
        Circuit { removed: vec![false; graph.edges.len()], effect: vec![None; graph.edges.len()], metric: 0.0, chosen: None }
    }
    pub fn n_kept(&self) -> usize {
        self.removed.iter().filter(|r| !**r).count()
    }
    /// Ids of the kept edges.
    pub fn kept(&self) -> impl Iterator<Item = usize> + '_ {
        self.removed.iter().enumerate().filter(|(_, r)| !**r).map(|(i, _)| i)
    }
}

/// Attribution scores of every edge (graph order) and the attribution that computed them.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeScores {
    /// `eap` or `eap-ig`.
    pub method: &'static str,
    /// EAP-IG interpolation steps (`None` for EAP).
    pub ig_steps: Option<usize>,
    pub scores: Vec<f64>,
}

/// A circuit-discovery method.
pub trait Discovery {
    /// Name as it appears in circuit files (`acdc`, …).
    fn name(&self) -> &'static str;
    /// Finds the circuit of `task`, reporting as edges are decided.
    fn discover(&self, task: &Task, progress: &dyn Progress) -> Result<Circuit>;
    /// [`discover`](Self::discover), also returning the attribution scores of every edge when the method
    /// computes them (`eap`, `eap-ig`, and `hybrid`'s EAP-IG candidate scores); `None` for exact ablation.
    fn discover_scored(&self, task: &Task, progress: &dyn Progress) -> Result<(Circuit, Option<EdgeScores>)> {
        Ok((self.discover(task, progress)?, None))
    }
}
