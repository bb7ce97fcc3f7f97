//! From a relation file to a discovery task: tokenise, keep the facts the model knows, split by seed, and pick
//! corrupted prompts for resample ablation.
use serde::{Deserialize, Serialize};

use crate::data::{self, Example, Relation};
use crate::eval::full_model_outcomes;
use crate::intervene::Ablation;
use crate::metric::Metric;
use crate::model::Model;
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
    /// Discovery examples.
    pub examples: usize,
    pub seed: u64,
    /// Keep only facts the full model ranks below `k` (and say how many were dropped).
    pub filter_known: bool,
    pub k: usize,
    /// Attribution: keep the top-n edges by |score| (`eap`, `eap-ig`).
    pub top_n: Option<usize>,
    /// Attribution: keep edges with |score| ≥ this instead.
    pub score_threshold: Option<f64>,
    /// Attribution without `top_n` or `score_threshold`: keep this fraction of all edges.
    pub top_fraction: f64,
    /// EAP-IG interpolation steps.
    pub ig_steps: usize,
    /// Hybrid: EAP-IG candidate edges handed to exact ablation.
    pub candidates: usize,
}

impl Default for Settings {
    fn default() -> Self {
        // The CPU default (configs/cpu.json): EAP-IG with mean ablation, 5% of the edges — the best held-out
        // Hit@10 per minute measured on SmolLM2 (README, "Choosing a method").
        Settings {
            method: "eap-ig".into(),
            threshold: 0.05,
            signed: false,
            metric: Metric::Logit,
            ablation: Ablation::Mean,
            examples: 8,
            seed: 0,
            filter_known: true,
            k: 10,
            top_n: None,
            score_threshold: None,
            top_fraction: 0.05,
            ig_steps: 5,
            candidates: 3000,
        }
    }
}

impl Settings {
    /// The discovery method these settings describe.
    pub fn method(&self) -> Result<Box<dyn super::Discovery>> {
        use super::{acdc::Acdc, eap::{Eap, Selection}, hybrid::Hybrid};
        let selection = match (self.top_n, self.score_threshold) {
            (_, Some(x)) => Selection::Threshold(x),
            (Some(n), None) => Selection::TopN(n),
            (None, None) => Selection::Fraction(self.top_fraction),
        };
        Ok(match self.method.as_str() {
            "acdc" => Box::new(Acdc::new(self.threshold, self.signed)?),
            "eap" => Box::new(Eap { ig_steps: None, selection }),
            "eap-ig" => Box::new(Eap { ig_steps: Some(self.ig_steps), selection }),
            "hybrid" => Box::new(Hybrid { candidates: self.candidates, ig_steps: self.ig_steps, acdc: Acdc::new(self.threshold, self.signed)? }),
            other => return Err(Error::input(format!("unknown method `{other}` (available: acdc, eap, eap-ig, hybrid)"))),
        })
    }

    /// Reads a preset file.
    pub fn from_file(path: &std::path::Path) -> Result<Settings> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::input(format!("{}: {e}", path.display())))
    }

    pub fn validate(&self) -> Result<()> {
        if !self.threshold.is_finite() || self.threshold < 0.0 {
            return Err(Error::input(format!("--threshold must be a finite number ≥ 0, got {}", self.threshold)));
        }
        if self.examples == 0 {
            return Err(Error::input("--examples must be at least 1"));
        }
        if self.k == 0 {
            return Err(Error::input("--k must be at least 1"));
        }
        if self.ig_steps == 0 {
            return Err(Error::input("--ig-steps must be at least 1"));
        }
        if self.score_threshold.is_some_and(|x| !x.is_finite() || x < 0.0) {
            return Err(Error::input("--score-threshold must be a finite number ≥ 0"));
        }
        if !(self.top_fraction > 0.0 && self.top_fraction <= 1.0) {
            return Err(Error::input("top_fraction must be in (0, 1]"));
        }
        if self.top_n == Some(0) || self.candidates == 0 {
            return Err(Error::input("--top-n and --candidates must be at least 1"));
        }
        Ok(())
    }
}

/// The prepared data of one relation.
pub struct Prepared {
    pub discovery: Vec<Example>,
    /// Held-out examples (every known fact not used for discovery; under resample ablation, every one with a
    /// corruption partner).
    pub test: Vec<Example>,
    /// Per discovery example, its corruption partner: a fact with a same-length prompt (resample ablation only).
    pub corrupted: Option<Vec<Example>>,
    /// Facts dropped because the full model does not know them (rank ≥ k).
    pub dropped_unknown: usize,
    /// Known facts skipped because no other fact has a prompt of their token length (resample ablation only).
    pub dropped_no_partner: usize,
    pub total: usize,
}

impl Prepared {
    /// The corrupted prompts of the discovery examples, as [`super::Task::new`] takes them.
    pub fn corrupted_prompts(&self) -> Option<Vec<Vec<u32>>> {
        self.corrupted.as_ref().map(|c| c.iter().map(|e| e.tokens.clone()).collect())
    }
}

/// Tokenises `rel`, keeps known facts (unless disabled), shuffles by seed and takes the first
/// `settings.examples` for discovery; the rest are held out. Under resample ablation a fact without a
/// corruption partner (see [`partners`]) can be neither discovery example nor held out: it is skipped and
/// counted, and the discovery examples are the first `settings.examples` facts that have one.
pub fn prepare(model: &Model, tok: &Tokenizer, rel: &Relation, settings: &Settings) -> Result<Prepared> {
    let all: Vec<Example> = rel
        .triples
        .iter()
        .enumerate()
        .map(|(i, t)| data::example(t, tok).map_err(|e| Error::input(format!("triple {} ({}): {e}", i + 1, t.subject))))
        .collect::<Result<_>>()?;
    let known: Vec<bool> = if settings.filter_known {
        full_model_outcomes(model, &all)?.iter().map(|o| o.rank < settings.k).collect()
    } else {
        vec![true; all.len()]
    };
    let dropped_unknown = known.iter().filter(|k| !**k).count();
    let mut order: Vec<usize> = data::shuffled(all.len(), settings.seed).into_iter().filter(|&i| known[i]).collect();
    let n_known = order.len();
    let partner = match settings.ablation {
        Ablation::Resample => {
            let p = partners(&all, &all, settings.seed);
            order.retain(|&i| p[i].is_some());
            Some(p)
        }
        _ => None,
    };
    let dropped_no_partner = n_known - order.len();
    if order.len() < settings.examples {
        let why = if dropped_no_partner > 0 {
            format!(", {dropped_no_partner} of them without a same-length partner for resample ablation")
        } else {
            String::new()
        };
        return Err(Error::input(format!(
            "relation `{}`: {} of {} facts are known to the model (rank < {}){why}, fewer than the {} discovery examples asked for",
            rel.name,
            n_known,
            all.len(),
            settings.k,
            settings.examples
        )));
    }
    let discovery: Vec<Example> = order[..settings.examples].iter().map(|&i| all[i].clone()).collect();
    let test: Vec<Example> = order[settings.examples..].iter().map(|&i| all[i].clone()).collect();
    let corrupted = partner.map(|p| order[..settings.examples].iter().map(|&i| p[i].expect("kept above").clone()).collect());
    Ok(Prepared { discovery, test, corrupted, dropped_unknown, dropped_no_partner, total: all.len() })
}

/// For each example, its corruption partner for resample ablation: another fact of `pool` with the same
/// template, a different subject and target, and the same prompt token length (the first in the seed's
/// order), or `None` when no fact qualifies.
pub fn partners<'p>(examples: &[Example], pool: &'p [Example], seed: u64) -> Vec<Option<&'p Example>> {
    let order = data::shuffled(pool.len(), seed ^ 0x5EED_C0DE);
    examples
        .iter()
        .map(|e| {
            order.iter().map(|&i| &pool[i]).find(|c| {
                c.tokens.len() == e.tokens.len() && c.triple.subject != e.triple.subject && c.target != e.target && c.triple.template == e.triple.template
            })
        })
        .collect()
}
