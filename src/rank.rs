//! Scoring predictions: ranks of target tokens, Hit@k, MRR (brief §5).
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::data::Example;
use crate::model::{Logits, Model};
use crate::Result;

/// Per-example outcome at the last prompt position.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Number of vocabulary entries whose logit is strictly greater than the target's, plus the other entries
    /// tied with it: a tie never counts in the target's favour (an empty circuit under zero ablation gives every
    /// token the same logit, and must not score Hit@1 = 1).
    pub rank: usize,
    pub target_logit: f64,
    pub target_prob: f64,
}

/// Outcomes from last-position logits `[n, V]` and the targets.
pub fn outcomes(logits: &Tensor, targets: &[u32]) -> Result<Vec<Outcome>> {
    let logits = logits.to_dtype(DType::F32)?;
    let probs = candle_nn::ops::softmax_last_dim(&logits)?.to_vec2::<f32>()?;
    let rows = logits.to_vec2::<f32>()?;
    Ok(rows
        .iter()
        .zip(&probs)
        .zip(targets)
        .map(|((row, p), &t)| {
            let tl = row[t as usize];
            let rank = rank_in(row, t as usize);
            Outcome { rank, target_logit: tl as f64, target_prob: p[t as usize] as f64 }
        })
        .collect())
}

/// The rank of entry `t` in `row` (0 = top): entries strictly above it plus the entries tied with it (see
/// [`Outcome::rank`]).
pub fn rank_in(row: &[f32], t: usize) -> usize {
    let tl = row[t];
    row.iter().enumerate().filter(|&(i, &v)| v > tl || (v == tl && i != t)).count()
}

/// `ln Σ exp(row)`, computed stably in f64.
pub fn log_sum_exp(row: &[f32]) -> f64 {
    let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    m + row.iter().map(|&v| ((v as f64) - m).exp()).sum::<f64>().ln()
}

/// The probabilities of a row of logits, in f64.
pub fn softmax(row: &[f32]) -> Vec<f64> {
    let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let e: Vec<f64> = row.iter().map(|&v| ((v as f64) - m).exp()).collect();
    let z: f64 = e.iter().sum();
    e.into_iter().map(|x| x / z).collect()
}

/// The examples the full model ranks below `k`, in order.
pub fn known(model: &Model, examples: Vec<Example>, k: usize) -> Result<Vec<Example>> {
    let o = full_model_outcomes(model, &examples)?;
    Ok(examples.into_iter().zip(o).filter(|(_, o)| o.rank < k).map(|(e, _)| e).collect())
}

/// The full model's outcomes on `examples` (chunked and parallel, see [`Model::forward_prompts`]).
pub fn full_model_outcomes(model: &Model, examples: &[Example]) -> Result<Vec<Outcome>> {
    if examples.is_empty() {
        return Ok(vec![]);
    }
    let prompts: Vec<Vec<u32>> = examples.iter().map(|e| e.tokens.clone()).collect();
    let logits = model.forward_prompts(&prompts, Logits::Last)?;
    outcomes(&logits, &examples.iter().map(|e| e.target).collect::<Vec<_>>())
}

/// The 95% Wilson score interval of `hits` successes in `n` trials: how far a Hit@k measured on a few held-out
/// facts may be from the rate over all such facts (`(0, 1)` when `n` is 0). Wilson's rather than the normal
/// approximation's, because it stays inside [0, 1] and does not collapse to a point at 0 or `n` hits.
pub fn wilson_interval(hits: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    const Z: f64 = 1.959963984540054; // the 97.5% quantile of the standard normal
    let (n, p) = (n as f64, hits.min(n) as f64 / n as f64);
    let z2 = Z * Z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / (1.0 + z2 / n);
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Summary metrics of a set of outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub hit_at_1: f64,
    pub hit_at_k: f64,
    pub mrr: f64,
    pub target_logit: f64,
    pub target_prob: f64,
}

impl Metrics {
    pub fn new(o: &[Outcome], k: usize) -> Metrics {
        let n = o.len().max(1) as f64;
        Metrics {
            hit_at_1: o.iter().filter(|x| x.rank < 1).count() as f64 / n,
            hit_at_k: o.iter().filter(|x| x.rank < k).count() as f64 / n,
            mrr: o.iter().map(|x| 1.0 / (x.rank as f64 + 1.0)).sum::<f64>() / n,
            target_logit: o.iter().map(|x| x.target_logit).sum::<f64>() / n,
            target_prob: o.iter().map(|x| x.target_prob).sum::<f64>() / n,
        }
    }
}
