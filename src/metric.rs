//! How much a circuit loses against the full model on the discovery examples (brief §3). 0 for the full model;
//! larger is worse.
use candle_core::{DType, Tensor, D};
use serde::{Deserialize, Serialize};

use crate::model::Model;
use crate::Result;

/// The discovery metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// `mean(logit_full[t] − logit_C[t])`: the target-entity logit drop.
    Logit,
    /// `mean(−log p_C[t] + log p_full[t])` (not divided by the sequence length).
    Nll,
    /// `mean KL(p_full ‖ p_C)` over the next-token distribution at the last position.
    Kl,
}

impl Metric {
    pub const ALL: [Metric; 3] = [Metric::Logit, Metric::Nll, Metric::Kl];
}

impl std::str::FromStr for Metric {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Metric> {
        Metric::ALL
            .into_iter()
            .find(|m| m.to_string() == s)
            .ok_or_else(|| crate::Error::input(format!("unknown metric `{s}` (logit, nll, kl)")))
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Metric::Logit => "logit",
            Metric::Nll => "nll",
            Metric::Kl => "kl",
        })
    }
}

/// The full model's numbers on the discovery examples, which every circuit is compared with.
#[derive(Debug, Clone)]
pub struct FullReference {
    /// Target token per example.
    pub targets: Vec<u32>,
    /// `[n]` target logits.
    pub target_logit: Vec<f64>,
    /// `[n]` target log-probabilities.
    pub target_logprob: Vec<f64>,
    /// `[n, V]` log-probabilities (for KL).
    pub logprobs: Tensor,
}

impl FullReference {
    /// From the full model's normalised last-position residual `[n, D]` ([`crate::model::Logits::Hidden`]).
    pub fn new(model: &Model, hidden: &Tensor, targets: &[u32]) -> Result<Self> {
        let logits = model.logits_of_hidden(hidden)?;
        let logprobs = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
        Ok(FullReference {
            targets: targets.to_vec(),
            target_logit: model.target_logits(hidden, targets)?.to_dtype(DType::F64)?.to_vec1::<f64>()?,
            target_logprob: gather(&logprobs, targets, 1)?,
            logprobs,
        })
    }

    /// The metric's term for every row of `hidden` (`[copies·n, D]`, the normalised last-position residual of
    /// `copies` circuits, copy-major): `[copies·n]` f32, differentiable when `hidden` is. The one implementation
    /// of the three metrics; [`score`](Self::score) and [`loss`](Self::loss) average it.
    pub fn per_row(&self, metric: Metric, model: &Model, hidden: &Tensor) -> Result<Tensor> {
        let n = self.targets.len();
        let copies = hidden.dim(0)? / n;
        let tiled = |v: &[f64]| -> Result<Tensor> {
            let t: Vec<f32> = (0..copies).flat_map(|_| v.iter().map(|&x| x as f32)).collect();
            Ok(Tensor::from_vec(t, copies * n, hidden.device())?)
        };
        Ok(match metric {
            // Reads only the target columns of the unembedding.
            Metric::Logit => (tiled(&self.target_logit)? - model.target_logits(hidden, &self.targets)?)?,
            Metric::Nll => {
                let lp = candle_nn::ops::log_softmax(&model.logits_of_hidden(hidden)?, D::Minus1)?;
                let idx: Vec<u32> = (0..copies).flat_map(|_| self.targets.iter().copied()).collect();
                let idx = Tensor::from_vec(idx, (copies * n, 1), hidden.device())?;
                (tiled(&self.target_logprob)? - lp.gather(&idx, 1)?.flatten_all()?)?
            }
            Metric::Kl => {
                let lp = candle_nn::ops::log_softmax(&model.logits_of_hidden(hidden)?, D::Minus1)?;
                let v = lp.dim(1)?;
                let full = self.logprobs.unsqueeze(0)?;
                let lp = lp.reshape((copies, n, v))?;
                full.exp()?.broadcast_mul(&full.broadcast_sub(&lp)?)?.sum(D::Minus1)?.flatten_all()?
                // [copies·n]
            }
        })
    }

    /// The metric of each of `copies` circuits, from their normalised last-position residual `[copies·n, D]`.
    pub fn score(&self, metric: Metric, model: &Model, hidden: &Tensor) -> Result<Vec<f64>> {
        let n = self.targets.len();
        let per_row = self.per_row(metric, model, hidden)?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        Ok(per_row.chunks(n).map(|c| c.iter().sum::<f64>() / n as f64).collect())
    }

    /// The metric of one circuit as a differentiable scalar, from `hidden [n, D]`.
    pub fn loss(&self, metric: Metric, model: &Model, hidden: &Tensor) -> Result<Tensor> {
        let n = self.targets.len() as f64;
        Ok(self.per_row(metric, model, hidden)?.sum_all()?.affine(1.0 / n, 0.0)?)
    }
}

/// `x[r, targets[r % n]]` for every row of `x [copies·n, V]`, as f64.
fn gather(x: &Tensor, targets: &[u32], copies: usize) -> Result<Vec<f64>> {
    let idx: Vec<u32> = (0..copies).flat_map(|_| targets.iter().copied()).collect();
    let idx = Tensor::from_vec(idx, (copies * targets.len(), 1), x.device())?;
    Ok(x.contiguous()?.gather(&idx, 1)?.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?)
}
