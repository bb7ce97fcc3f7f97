//! From a relation's facts to a discovery split: tokenise, keep the facts the model knows, split by seed, and
//! pick corrupted prompts for resample ablation.
use crate::data::{self, Example, Relation};
use crate::intervene::Ablation;
use crate::model::Model;
use crate::rank::full_model_outcomes;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// The most discovery examples the automatic split takes: attribution costs seconds, so use the facts a
/// relation has, while at least half of them stay held out.
pub const AUTO_EXAMPLES: usize = 32;

/// The most prompts mean ablation's reference set holds (discovery prompts included): enough for a stable
/// per-position mean, bounded so that a relation with hundreds of facts costs one small extra forward pass.
pub const MAX_REFERENCE: usize = 128;

/// How a relation's facts are split (the fields of the discovery settings that decide it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitRule {
    /// Discovery examples: exactly this many, or (`None`) half the usable facts, at most [`AUTO_EXAMPLES`].
    pub examples: Option<usize>,
    pub seed: u64,
    /// Keep only facts the full model ranks below `k`.
    pub filter_known: bool,
    pub k: usize,
    pub ablation: Ablation,
    /// Demonstrations prepended to every prompt (in-context learning), taken from the discovery facts.
    pub demonstrations: usize,
    /// Mean ablation: which prompts the means are taken over.
    pub mean_over: MeanOver,
}

/// Which prompts mean ablation averages a sender's output over: what a removed edge carries, and so what the
/// empty circuit still knows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MeanOver {
    /// The discovery prompts alone.
    Discovery,
    /// The discovery prompts and the relation's facts outside the held-out split (the ones the model does not
    /// know), at most [`MAX_REFERENCE`]: the empty circuit is the relation's average prompt, which already
    /// ranks the relation's common answers high.
    #[default]
    Relation,
    /// Fact prompts of other relations (the shipped corpus, `data::corpus_for`), never this relation's: the
    /// empty circuit is an average fact-completion prompt, so the circuit must carry the relation too, and
    /// random circuits fall to chance.
    Corpus,
}

impl MeanOver {
    /// Of the discovery facts and the reference facts, the sets whose prompts the means are taken over: the one
    /// place that decides it (the means themselves and the prompt counts the files record both ask here).
    pub fn sets<'a, T>(self, discovery: &'a [T], reference: &'a [T]) -> [&'a [T]; 2] {
        match self {
            MeanOver::Discovery => [discovery, &[]],
            MeanOver::Relation => [discovery, reference],
            MeanOver::Corpus => [&[], reference],
        }
    }
}

impl std::fmt::Display for MeanOver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MeanOver::Discovery => "discovery",
            MeanOver::Relation => "relation",
            MeanOver::Corpus => "corpus",
        })
    }
}

/// The prepared data of one relation.
pub struct Prepared {
    pub discovery: Vec<Example>,
    /// Held-out examples (every known fact not used for discovery; under resample ablation, every one with a
    /// corruption partner).
    pub test: Vec<Example>,
    /// Mean ablation's reference facts: with [`MeanOver::Relation`], the facts beyond the discovery ones, every
    /// fact of the relation outside the held-out split (the held-out split is every known fact not used for
    /// discovery, so these are facts the model does not know: same templates, other subjects), in the seed's
    /// order, at most [`MAX_REFERENCE`] with the discovery facts, with the run's demonstrations; with
    /// [`MeanOver::Corpus`], the corpus facts (no demonstrations), the whole set the means are taken over.
    /// Empty otherwise.
    pub reference: Vec<Example>,
    /// Per discovery example, its corruption partner: a fact with a same-length prompt (resample ablation only).
    pub corrupted: Option<Vec<Example>>,
    /// Facts dropped because the full model does not know them (rank ≥ k).
    pub dropped_unknown: usize,
    /// Known facts skipped because no other fact has a prompt of their token length (resample ablation only).
    pub dropped_no_partner: usize,
    pub total: usize,
    /// The rule the split followed.
    pub rule: SplitRule,
}

impl Prepared {
    /// One line for the user: how many facts, how many the model knows (only when that was checked), how many
    /// went to discovery and how many are held out.
    pub fn summary(&self, relation: &str) -> String {
        let known = match self.rule.filter_known {
            true => format!("{} known (rank < {})", self.total - self.dropped_unknown, self.rule.k),
            false => "known-fact filter off".into(),
        };
        let n_means: usize = self.rule.mean_over.sets(&self.discovery, &self.reference).iter().map(|s| s.len()).sum();
        let reference = match (self.rule.ablation, self.rule.mean_over) {
            (Ablation::Mean, MeanOver::Corpus) => format!(", means over {n_means} corpus prompts"),
            (Ablation::Mean, _) => format!(", means over {n_means} prompts"),
            _ => String::new(),
        };
        format!(
            "{relation} · {} facts, {known}, {} for discovery, {} held out{reference}",
            self.total,
            self.discovery.len(),
            self.test.len()
        )
    }

    /// The corrupted prompts of the discovery examples, as [`crate::discover::Task::new`] takes them.
    pub fn corrupted_prompts(&self) -> Option<Vec<Vec<u32>>> {
        self.corrupted.as_ref().map(|c| c.iter().map(|e| e.tokens.clone()).collect())
    }
}

/// Tokenises `rel`, keeps known facts (unless disabled), shuffles by seed and takes the first
/// `settings.examples` (or half, at most [`AUTO_EXAMPLES`]) for discovery; the rest are held out. Under resample ablation a fact without a
/// corruption partner (see [`partners`]) can be neither discovery example nor held out: it is skipped and
/// counted, and the discovery examples are the first `settings.examples` facts that have one.
pub fn prepare(model: &Model, tok: &Tokenizer, rel: &Relation, settings: &SplitRule) -> Result<Prepared> {
    let all = rel.examples(tok)?;
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
    let n = match settings.examples {
        Some(n) => n,
        None => order.len().div_ceil(2).clamp(1, AUTO_EXAMPLES),
    };
    if order.len() < n {
        let why = if dropped_no_partner > 0 {
            format!(", {dropped_no_partner} of them without a same-length partner for resample ablation")
        } else {
            String::new()
        };
        let usable = match settings.filter_known {
            true => format!("{n_known} of {} facts are known to the model (rank < {})", all.len(), settings.k),
            false => format!("{} facts", all.len()),
        };
        return Err(Error::input(format!("relation `{}`: {usable}{why}, fewer than the {} discovery examples asked for", rel.name, n)));
    }
    let discovery: Vec<Example> = order[..n].iter().map(|&i| all[i].clone()).collect();
    let test: Vec<Example> = order[n..].iter().map(|&i| all[i].clone()).collect();
    // Demonstrations come from the discovery facts only; which facts are known was decided without them, so a
    // zero-shot and an in-context run look at the same facts.
    let pool: Vec<data::Triple> = discovery.iter().map(|e| e.triple.clone()).collect();
    let k = settings.demonstrations;
    if k > 0 && settings.ablation == Ablation::Resample {
        return Err(Error::input("demonstrations with resample ablation are not supported (use mean or zero ablation)"));
    }
    let discovery = data::in_context(discovery, &pool, k, settings.seed, tok)?;
    let test = data::in_context(test, &pool, k, settings.seed, tok)?;
    let reference: Vec<Example> = match (settings.ablation, settings.mean_over) {
        (Ablation::Mean, MeanOver::Relation) => {
            let unknown = data::shuffled(all.len(), settings.seed)
                .into_iter()
                .filter(|&i| !known[i])
                .take(MAX_REFERENCE.saturating_sub(n))
                .map(|i| all[i].clone())
                .collect();
            data::in_context(unknown, &pool, k, settings.seed, tok)?
        }
        (Ablation::Mean, MeanOver::Corpus) => corpus_examples(rel, tok)?,
        _ => vec![],
    };
    // Every fact left in `order` has a partner (the others were dropped above).
    let corrupted = partner.map(|p| order[..n].iter().filter_map(|&i| p[i].cloned()).collect());
    Ok(Prepared { discovery, test, reference, corrupted, dropped_unknown, dropped_no_partner, total: all.len(), rule: *settings })
}

/// The corpus prompts mean ablation averages over for `rel` ([`MeanOver::Corpus`]): the shipped corpus
/// without `rel`'s facts, tokenised, at most [`MAX_REFERENCE`].
pub fn corpus_examples(rel: &Relation, tok: &Tokenizer) -> Result<Vec<Example>> {
    let corpus = data::corpus_for(rel)?;
    if corpus.is_empty() {
        return Err(Error::input(format!("relation `{}`: no corpus prompt left for mean ablation", rel.name)));
    }
    corpus.iter().take(MAX_REFERENCE).map(|t| data::example(t, tok)).collect()
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
                c.tokens.len() == e.tokens.len()
                    && c.triple.subject != e.triple.subject
                    && c.target != e.target
                    && c.triple.template == e.triple.template
            })
        })
        .collect()
}
